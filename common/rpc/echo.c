/* echo.c - the Echo service of proto/corral/v1/testing.proto, served through the
 * RPC layer like any other service; see echo.h for what each method does. */
#include "common/rpc/echo.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

typedef Corral__V1__EchoRequest req_t;
typedef Corral__V1__EchoReply reply_t;

/* Per-call state of Collect. */
typedef struct collect {
    uint64_t count, bytes, last_seq;
} collect_t;

static rpc_echo_t *state_of(rpc_call_t *c) { return rpc_call_method(c)->user; }

static void fill_reply(rpc_call_t *c, reply_t *r, const req_t *q)
{
    corral__v1__echo_reply__init(r);
    r->payload = q->payload;
    r->text = q->text;
    r->seq = q->seq;
    const char *cn = rpc_call_peer(c)->cert_cn;
    r->peer = (char *)(cn ? cn : "");
}

static int fail_if_asked(rpc_call_t *c, const req_t *q)
{
    if (q->code == 0) return 0;
    rpc_call_finish(c, (rpc_code_t)q->code, "%s", q->text);
    return 1;
}

static void unary(rpc_call_t *c, const ProtobufCMessage *m)
{
    const req_t *q = (const req_t *)m;
    atomic_fetch_add(&state_of(c)->started, 1);
    atomic_fetch_add(&state_of(c)->messages, 1);
    if (q->sleep_ms > 0) cr_sleep_ns(q->sleep_ms * CR_NS_PER_MS);
    if (fail_if_asked(c, q)) return;
    reply_t r;
    fill_reply(c, &r, q);
    cr_err_t err = {0};
    if (rpc_call_reply(c, &r.base, &err) != 0 && err.code != CR_ECLOSED)
        CR_WARN("echo", "reply failed: %s", err.msg);
}

static void collect_start(rpc_call_t *c)
{
    atomic_fetch_add(&state_of(c)->started, 1);
    collect_t *s = calloc(1, sizeof *s);
    rpc_call_set_data(c, s);
    if (!s) rpc_call_finish(c, RPC_RESOURCE_EXHAUSTED, "no memory");
}

static void collect_msg(rpc_call_t *c, const ProtobufCMessage *m)
{
    const req_t *q = (const req_t *)m;
    collect_t *s = rpc_call_data(c);
    atomic_fetch_add(&state_of(c)->messages, 1);
    if (fail_if_asked(c, q)) return;
    if (q->sleep_ms > 0) cr_sleep_ns(q->sleep_ms * CR_NS_PER_MS);
    s->count++;
    s->bytes += q->payload.len;
    s->last_seq = q->seq;
}

static void collect_end(rpc_call_t *c)
{
    collect_t *s = rpc_call_data(c);
    reply_t r;
    corral__v1__echo_reply__init(&r);
    r.count = s->count;
    r.bytes = s->bytes;
    r.seq = s->last_seq;
    const char *cn = rpc_call_peer(c)->cert_cn;
    r.peer = (char *)(cn ? cn : "");
    rpc_call_reply(c, &r.base, NULL);
}

static void done(rpc_call_t *c, rpc_code_t code)
{
    rpc_echo_t *e = state_of(c);
    atomic_fetch_add(&e->done, 1);
    if (code == RPC_CANCELLED) atomic_fetch_add(&e->cancelled, 1);
    if (rpc_call_method(c)->on_start == collect_start) free(rpc_call_data(c));
}

static void expand(rpc_call_t *c, const ProtobufCMessage *m)
{
    const req_t *q = (const req_t *)m;
    atomic_fetch_add(&state_of(c)->started, 1);
    atomic_fetch_add(&state_of(c)->messages, 1);
    if (fail_if_asked(c, q)) return;
    reply_t r;
    fill_reply(c, &r, q);
    cr_err_t err = {0};
    for (int i = 0; i < q->count; i++) {
        r.seq = (uint64_t)i;
        if (rpc_call_send(c, &r.base, -1, &err) != 0) return;   /* the call ended */
        if (q->sleep_ms > 0) cr_sleep_ns(q->sleep_ms * CR_NS_PER_MS);
    }
    rpc_call_finish(c, RPC_OK, NULL);
}

static void chat_start(rpc_call_t *c) { atomic_fetch_add(&state_of(c)->started, 1); }

static void chat(rpc_call_t *c, const ProtobufCMessage *m)
{
    const req_t *q = (const req_t *)m;
    atomic_fetch_add(&state_of(c)->messages, 1);
    if (fail_if_asked(c, q)) return;
    if (q->sleep_ms > 0) cr_sleep_ns(q->sleep_ms * CR_NS_PER_MS);
    reply_t r;
    fill_reply(c, &r, q);
    int n = q->count > 0 ? q->count : 1;
    cr_err_t err = {0};
    for (int i = 0; i < n; i++)
        if (rpc_call_send(c, &r.base, -1, &err) != 0) {
            if (err.code == CR_EBUSY)   /* inline: cannot wait; the client outran us */
                rpc_call_finish(c, RPC_RESOURCE_EXHAUSTED, "send queue full");
            return;
        }
}

size_t rpc_echo_methods(rpc_method_t out[RPC_ECHO_N_METHODS], rpc_echo_t *state, unsigned flags)
{
    const ProtobufCMessageDescriptor *in = &corral__v1__echo_request__descriptor;
    const ProtobufCMessageDescriptor *o = &corral__v1__echo_reply__descriptor;
    out[0] = (rpc_method_t){.name = RPC_ECHO_UNARY, .kind = RPC_UNARY, .input = in, .output = o,
                            .flags = flags, .user = state, .on_message = unary, .on_done = done};
    out[1] = (rpc_method_t){.name = RPC_ECHO_COLLECT, .kind = RPC_CLIENT_STREAM, .input = in, .output = o,
                            .flags = flags, .user = state, .on_start = collect_start,
                            .on_message = collect_msg, .on_half_close = collect_end, .on_done = done};
    out[2] = (rpc_method_t){.name = RPC_ECHO_EXPAND, .kind = RPC_SERVER_STREAM, .input = in, .output = o,
                            .flags = 0, .user = state, .on_message = expand, .on_done = done};
    out[3] = (rpc_method_t){.name = RPC_ECHO_CHAT, .kind = RPC_BIDI, .input = in, .output = o,
                            .flags = flags, .user = state, .on_start = chat_start, .on_message = chat,
                            .on_done = done};
    return RPC_ECHO_N_METHODS;
}
