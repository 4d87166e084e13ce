/* echo.h - the Echo service (proto/corral/v1/testing.proto) served over the RPC
 * layer: a live server for tests and benchmarks of any component that talks RPC.
 *
 *   Unary    replies with the request's payload, text and seq; code != 0 ends the
 *            call with that status and text as details; sleep_ms sleeps first.
 *   Collect  counts requests and payload bytes, replies once at half-close
 *            (count, bytes, seq of the last request); code != 0 in a request ends
 *            the call with that status at once.
 *   Expand   sends count replies (payload echoed, seq = index), then OK.
 *   Chat     answers each request with max(count, 1) replies, OK at half-close.
 * Every reply's peer field is the caller's certificate CN (or ""). */
#ifndef CORRAL_COMMON_RPC_ECHO_H
#define CORRAL_COMMON_RPC_ECHO_H

#include <stdatomic.h>

#include "common/rpc/rpc.h"
#include "corral/v1/testing.pb-c.h"

#define RPC_ECHO_UNARY   "/corral.v1.Echo/Unary"
#define RPC_ECHO_COLLECT "/corral.v1.Echo/Collect"
#define RPC_ECHO_EXPAND  "/corral.v1.Echo/Expand"
#define RPC_ECHO_CHAT    "/corral.v1.Echo/Chat"
#define RPC_ECHO_N_METHODS 4

/* Counters the tests read; caller-owned, zero-initialised. */
typedef struct rpc_echo {
    atomic_long started;     /* calls that reached a handler */
    atomic_long done;        /* on_done calls */
    atomic_long cancelled;   /* ... of which with CANCELLED */
    atomic_long messages;    /* requests handled */
} rpc_echo_t;

/* Fills out[0..3] (Unary, Collect, Expand, Chat) with state as their user pointer;
 * flags (RPC_METHOD_INLINE) apply to Unary, Collect and Chat (Expand waits for room
 * in the send queue, so it always runs on the pool). Returns RPC_ECHO_N_METHODS. */
size_t rpc_echo_methods(rpc_method_t out[RPC_ECHO_N_METHODS], rpc_echo_t *state, unsigned flags);

#endif
