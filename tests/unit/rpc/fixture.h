/* fixture.h - what the RPC test suites share: an Echo server on a free loopback
 * port, a channel to it, stream callbacks that record what arrived, log capture
 * (to check that bad input is logged), and helper processes (rpc_peer) for the
 * tests that kill or freeze a peer. */
#ifndef CORRAL_TESTS_RPC_FIXTURE_H
#define CORRAL_TESTS_RPC_FIXTURE_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/rpc/echo.h"
#include "common/rpc/rpc.h"

typedef Corral__V1__EchoRequest echo_req_t;
typedef Corral__V1__EchoReply echo_reply_t;

typedef struct fx_server {
    rpc_server_t *srv;
    rpc_echo_t echo;
    rpc_method_t methods[RPC_ECHO_N_METHODS];
    char target[64];
} fx_server_t;

/* Starts an Echo server on 127.0.0.1:0 with opts (may be NULL); asserts. */
void fx_server_start(fx_server_t *f, const rpc_opts_t *opts, unsigned flags);
void fx_server_stop(fx_server_t *f);

/* A channel to target with opts (may be NULL); asserts. */
rpc_channel_t *fx_channel(const char *target, const rpc_opts_t *opts);

/* One unary Echo call: returns the rc; *code the status; reply text into text. */
int fx_echo(rpc_channel_t *ch, const char *text, int code, int64_t sleep_ms, size_t payload,
            int64_t timeout_ms, rpc_code_t *st, char *peer_out, size_t peer_cap, cr_err_t *err);

/* Stream recorder: counts messages, checks their seq order, records the close. */
typedef struct fx_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long n;
    uint64_t next_seq;
    int out_of_order;
    uint64_t last_count, last_bytes;
    char last_peer[64];
    int closed;
    rpc_code_t code;
    char details[256];
    int64_t closed_ns;
    /* optional: on_message blocks while *gate is 0 */
    volatile int *gate;
} fx_rec_t;

void fx_rec_init(fx_rec_t *r);
rpc_stream_cbs_t fx_rec_cbs(fx_rec_t *r);
/* Waits until r has n messages (or closed when n < 0), up to ms; 1 when reached. */
int fx_rec_wait(fx_rec_t *r, long n, int64_t ms);

/* Waits until *v >= want, up to ms; 1 when reached. */
int fx_wait_atomic(atomic_long *v, long want, int64_t ms);

/* Log capture into a file under the test's tmpdir; fx_log_has checks a substring. */
void fx_log_capture(void);
int fx_log_has(const char *needle);
void fx_log_release(void);

/* rpc_peer helper processes (exec'd, never just forked: gRPC does not survive
 * fork). serve: prints its port; returns the pid and the port. */
pid_t fx_peer_serve(int port, const char *mtls_dir, int *port_out);
pid_t fx_peer_stream(const char *target);
void fx_peer_kill(pid_t pid);

#endif
