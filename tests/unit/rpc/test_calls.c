/* test_calls.c - the RPC layer in one process over loopback: unary calls and
 * their statuses, deadlines, each stream kind, back-pressure of the bounded send
 * queue, cancellation, bad input (malformed bytes, oversized messages, tokens,
 * unknown methods) and shutdown with streams open. */
#define _GNU_SOURCE
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"
#include "fixture.h"
#include "tests/harness.h"

static void test_codes(void)
{
    /* the pairs the issue names, both ways */
    ASSERT_INT_EQ(rpc_code_from_err(CR_ENOENT), RPC_NOT_FOUND);
    ASSERT_INT_EQ(rpc_code_from_err(CR_EEXIST), RPC_ALREADY_EXISTS);
    ASSERT_INT_EQ(rpc_code_from_err(CR_EINVAL), RPC_INVALID_ARGUMENT);
    ASSERT_INT_EQ(rpc_code_from_err(CR_EUNAVAIL), RPC_UNAVAILABLE);
    ASSERT_INT_EQ(rpc_code_from_err(CR_ETIMEDOUT), RPC_DEADLINE_EXCEEDED);
    ASSERT_INT_EQ(rpc_code_from_err(CR_EPERM), RPC_PERMISSION_DENIED);
    ASSERT_INT_EQ(rpc_code_from_err(0), RPC_OK);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_NOT_FOUND), CR_ENOENT);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_ALREADY_EXISTS), CR_EEXIST);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_INVALID_ARGUMENT), CR_EINVAL);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_UNAVAILABLE), CR_EUNAVAIL);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_DEADLINE_EXCEEDED), CR_ETIMEDOUT);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_PERMISSION_DENIED), CR_EPERM);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_UNAUTHENTICATED), CR_EPERM);
    ASSERT_INT_EQ(rpc_code_to_err(RPC_OK), 0);
    ASSERT_STR_EQ(rpc_code_name(RPC_UNAUTHENTICATED), "UNAUTHENTICATED");
    ASSERT_STR_EQ(rpc_code_name((rpc_code_t)99), "UNKNOWN");
    /* every CR code maps to a status that maps back to a CR code */
    for (int c = -1; c >= CR_EINTERNAL; c--) ASSERT_TRUE(rpc_code_to_err(rpc_code_from_err(c)) < 0);
}

static void unary_ok_with(unsigned flags)
{
    fx_server_t f;
    fx_server_start(&f, NULL, flags);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    cr_err_t err = {0};
    rpc_code_t st;
    for (int i = 0; i < 20; i++) ASSERT_OK(fx_echo(ch, "hello", 0, 0, 4096, 2000, &st, NULL, 0, &err), &err);
    ASSERT_INT_EQ(st, RPC_OK);
    ASSERT_INT_EQ(atomic_load(&f.echo.started), 20);
    ASSERT_TRUE(fx_wait_atomic(&f.echo.done, 20, 2000));
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_unary_ok(void) { unary_ok_with(0); }
static void test_unary_ok_inline(void) { unary_ok_with(RPC_METHOD_INLINE); }

typedef struct hammer {
    rpc_channel_t *ch;
    int ok;
} hammer_t;

static void *hammer_main(void *arg)
{
    hammer_t *h = arg;
    cr_err_t err = {0};
    rpc_code_t st;
    for (int i = 0; i < 200; i++)
        if (fx_echo(h->ch, "many", 0, 0, 100, 5000, &st, NULL, 0, &err) == 0) h->ok++;
    return NULL;
}

static void test_unary_concurrent(void)
{
    /* several queue threads and client threads at once, one shared channel */
    rpc_opts_t o = {.queue_threads = 2, .pool_threads = 3};
    fx_server_t f;
    fx_server_start(&f, &o, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    hammer_t h[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (hammer_t){ch, 0};
        pthread_create(&t[i], NULL, hammer_main, &h[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++) ASSERT_INT_EQ(h[i].ok, 200);
    ASSERT_TRUE(fx_wait_atomic(&f.echo.done, 800, 3000));
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_unary_errors(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    cr_err_t err = {0};
    rpc_code_t st;
    int rc = fx_echo(ch, "no robot r1", RPC_NOT_FOUND, 0, 0, 2000, &st, NULL, 0, &err);
    ASSERT_INT_EQ(rc, CR_ENOENT);
    ASSERT_INT_EQ(st, RPC_NOT_FOUND);
    ASSERT_TRUE(strncmp(err.msg, "NOT_FOUND: no robot r1", 22) == 0);
    rc = fx_echo(ch, "robot r1 exists", RPC_ALREADY_EXISTS, 0, 0, 2000, &st, NULL, 0, &err);
    ASSERT_INT_EQ(rc, CR_EEXIST);
    rc = fx_echo(ch, "busy", RPC_UNAVAILABLE, 0, 0, 2000, &st, NULL, 0, &err);
    ASSERT_INT_EQ(rc, CR_EUNAVAIL);
    /* the server is unaffected */
    ASSERT_OK(fx_echo(ch, "fine", 0, 0, 0, 2000, &st, NULL, 0, &err), &err);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_unary_deadline(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    cr_err_t err = {0};
    rpc_code_t st;
    int64_t t0 = cr_now_ns();
    int rc = fx_echo(ch, "slow", 0, 600, 0, 100, &st, NULL, 0, &err);
    int64_t ms = (cr_now_ns() - t0) / CR_NS_PER_MS;
    ASSERT_INT_EQ(rc, CR_ETIMEDOUT);
    ASSERT_INT_EQ(st, RPC_DEADLINE_EXCEEDED);
    ASSERT_TRUE(ms >= 90 && ms < 500);
    ASSERT_OK(fx_echo(ch, "next", 0, 0, 0, 2000, &st, NULL, 0, &err), &err);
    /* the slow handler ends, sees its call gone and on_done reports CANCELLED */
    ASSERT_TRUE(fx_wait_atomic(&f.echo.cancelled, 1, 3000));
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void send_reqs(rpc_stream_t *st, int n, size_t payload)
{
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    uint8_t *buf = calloc(1, payload ? payload : 1);
    q.payload.data = buf;
    q.payload.len = payload;
    cr_err_t err = {0};
    for (int i = 0; i < n; i++) {
        q.seq = (uint64_t)i;
        ASSERT_OK(rpc_stream_send(st, &q.base, -1, &err), &err);
    }
    free(buf);
}

static void test_client_stream(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *st;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &st, RPC_ECHO_COLLECT, &corral__v1__echo_reply__descriptor, &cbs, 5000, &err), &err);
    send_reqs(st, 300, 1000);
    ASSERT_OK(rpc_stream_close_send(st, &err), &err);
    ASSERT_INT_EQ(rpc_stream_send(st, &(echo_req_t)CORRAL__V1__ECHO_REQUEST__INIT.base, 0, &err), CR_ECLOSED);
    rpc_code_t code;
    ASSERT_OK(rpc_stream_wait(st, 5000, &code, &err), &err);
    ASSERT_INT_EQ(r.n, 1);
    ASSERT_INT_EQ(r.last_count, 300);
    ASSERT_INT_EQ(r.last_bytes, 300000);
    ASSERT_INT_EQ(r.closed, 1);
    ASSERT_INT_EQ(r.code, RPC_OK);
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_server_stream(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *st;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &st, RPC_ECHO_EXPAND, &corral__v1__echo_reply__descriptor, &cbs, 5000, &err), &err);
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    q.count = 500;
    ASSERT_OK(rpc_stream_send(st, &q.base, -1, &err), &err);
    ASSERT_OK(rpc_stream_close_send(st, &err), &err);
    ASSERT_OK(rpc_stream_wait(st, 5000, NULL, &err), &err);
    ASSERT_INT_EQ(r.n, 500);
    ASSERT_INT_EQ(r.out_of_order, 0);
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void bidi_with(unsigned flags)
{
    fx_server_t f;
    fx_server_start(&f, NULL, flags);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *st;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &st, RPC_ECHO_CHAT, &corral__v1__echo_reply__descriptor, &cbs, 5000, &err), &err);
    /* ping-pong first: each request is answered before the next is sent */
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    for (int i = 0; i < 50; i++) {
        q.seq = (uint64_t)i;
        ASSERT_OK(rpc_stream_send(st, &q.base, -1, &err), &err);
        ASSERT_TRUE(fx_rec_wait(&r, i + 1, 2000));
    }
    send_reqs(st, 0, 0);
    ASSERT_OK(rpc_stream_close_send(st, &err), &err);
    ASSERT_OK(rpc_stream_wait(st, 5000, NULL, &err), &err);
    ASSERT_INT_EQ(r.n, 50);
    ASSERT_INT_EQ(r.out_of_order, 0);
    ASSERT_TRUE(fx_wait_atomic(&f.echo.done, 1, 2000));
    ASSERT_INT_EQ(atomic_load(&f.echo.cancelled), 0);
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_bidi(void) { bidi_with(0); }
static void test_bidi_inline(void) { bidi_with(RPC_METHOD_INLINE); }

/* ---- back-pressure: a server-stream handler outruns a client that stalls ---- */

#define FLOOD_TOTAL 400
#define FLOOD_CAP 4

static atomic_long flood_accepted_before_busy, flood_max_queued, flood_busy;
static volatile int flood_gate;

static void flood(rpc_call_t *c, const ProtobufCMessage *m)
{
    (void)m;
    echo_reply_t r;
    corral__v1__echo_reply__init(&r);
    static uint8_t payload[64 << 10];
    r.payload.data = payload;
    r.payload.len = sizeof payload;
    cr_err_t err = {0};
    for (int i = 0; i < FLOOD_TOTAL; i++) {
        r.seq = (uint64_t)i;
        int rc = rpc_call_send(c, &r.base, 0, &err);
        if (rc == CR_EBUSY) {
            if (!atomic_load(&flood_busy)) atomic_store(&flood_accepted_before_busy, i);
            atomic_store(&flood_busy, 1);
            flood_gate = 1;   /* let the client read again */
            rc = rpc_call_send(c, &r.base, 5000, &err);   /* now wait for room */
        }
        if (rc != 0) {
            rpc_call_finish(c, RPC_INTERNAL, "send %d: %s", i, err.msg);
            return;
        }
        long q = rpc_call_send_queued(c);
        if (q > atomic_load(&flood_max_queued)) atomic_store(&flood_max_queued, q);
    }
    rpc_call_finish(c, RPC_OK, NULL);
}

static void test_backpressure(void)
{
    rpc_method_t m = {.name = "/corral.v1.Test/Flood", .kind = RPC_SERVER_STREAM,
                      .input = &corral__v1__echo_request__descriptor,
                      .output = &corral__v1__echo_reply__descriptor, .on_message = flood};
    rpc_opts_t o = {.send_queue = FLOOD_CAP};
    rpc_server_t *srv;
    cr_err_t err = {0};
    ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", &o, &m, 1, &err), &err);
    ASSERT_OK(rpc_server_start(srv, &err), &err);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv));
    rpc_channel_t *ch = fx_channel(target, NULL);
    fx_rec_t r;
    fx_rec_init(&r);
    flood_gate = 0;
    r.gate = &flood_gate;   /* the client reads nothing until the server saw EBUSY */
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *st;
    ASSERT_OK(rpc_stream_open(ch, &st, "/corral.v1.Test/Flood", &corral__v1__echo_reply__descriptor, &cbs,
                              20000, &err), &err);
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    ASSERT_OK(rpc_stream_send(st, &q.base, -1, &err), &err);
    ASSERT_OK(rpc_stream_close_send(st, &err), &err);
    ASSERT_OK(rpc_stream_wait(st, 20000, NULL, &err), &err);
    fprintf(stderr, "  flood: %ld of %d accepted before EBUSY, max queued %ld\n",
            atomic_load(&flood_accepted_before_busy), FLOOD_TOTAL, atomic_load(&flood_max_queued));
    ASSERT_INT_EQ(atomic_load(&flood_busy), 1);
    ASSERT_TRUE(atomic_load(&flood_accepted_before_busy) < FLOOD_TOTAL);
    ASSERT_TRUE(atomic_load(&flood_max_queued) <= FLOOD_CAP);
    ASSERT_INT_EQ(r.n, FLOOD_TOTAL);   /* nothing accepted was lost */
    ASSERT_INT_EQ(r.out_of_order, 0);
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch);
    rpc_server_destroy(srv);
}

static void test_cancel(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *st;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &st, RPC_ECHO_CHAT, &corral__v1__echo_reply__descriptor, &cbs, 0, &err), &err);
    send_reqs(st, 3, 10);
    ASSERT_TRUE(fx_rec_wait(&r, 3, 2000));
    rpc_stream_cancel(st);
    rpc_code_t code;
    ASSERT_INT_EQ(rpc_stream_wait(st, 2000, &code, &err), CR_ECANCELLED);
    ASSERT_INT_EQ(code, RPC_CANCELLED);
    ASSERT_INT_EQ(r.closed, 1);
    ASSERT_INT_EQ(rpc_stream_send(st, &(echo_req_t)CORRAL__V1__ECHO_REQUEST__INIT.base, 0, &err), CR_ECLOSED);
    /* the server sees the cancel: on_done(CANCELLED) */
    ASSERT_TRUE(fx_wait_atomic(&f.echo.cancelled, 1, 2000));
    rpc_code_t st2;
    ASSERT_OK(fx_echo(ch, "still here", 0, 0, 0, 2000, &st2, NULL, 0, &err), &err);
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

/* Sends raw bytes as a request, below the layer, the way a broken peer would. */
static grpc_status_code raw_call(const char *target, const char *method, const void *bytes, size_t n)
{
    grpc_init();
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_channel *chan = grpc_channel_create(target, cr, NULL);
    grpc_channel_credentials_release(cr);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = grpc_channel_create_call(chan, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(method), NULL,
                                               gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                            gpr_time_from_millis(3000, GPR_TIMESPAN)),
                                               NULL);
    grpc_slice s = grpc_slice_from_copied_buffer(bytes, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_metadata_array md1, md2;
    grpc_metadata_array_init(&md1);
    grpc_metadata_array_init(&md2);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_OK;
    grpc_slice details;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md1;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &md2;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    int tag;
    ASSERT_INT_EQ(grpc_call_start_batch(call, ops, 6, &tag, NULL), GRPC_CALL_OK);
    grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md1);
    grpc_metadata_array_destroy(&md2);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(chan);
    grpc_shutdown();
    return status;
}

static void test_malformed(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    fx_log_capture();
    /* field 1 (bytes) claims 2^32 bytes follow; then a truncated varint */
    static const uint8_t bad[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    ASSERT_INT_EQ(raw_call(f.target, RPC_ECHO_UNARY, bad, sizeof bad), GRPC_STATUS_INVALID_ARGUMENT);
    /* a wire-type the field cannot have */
    static const uint8_t bad2[] = {0x18, 0x80};
    ASSERT_INT_EQ(raw_call(f.target, RPC_ECHO_UNARY, bad2, sizeof bad2), GRPC_STATUS_INVALID_ARGUMENT);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    cr_err_t err = {0};
    rpc_code_t st;
    ASSERT_OK(fx_echo(ch, "after", 0, 0, 0, 2000, &st, NULL, 0, &err), &err);
    fx_log_release();
    ASSERT_TRUE(fx_log_has("malformed corral.v1.EchoRequest (7 bytes)"));
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_oversized(void)
{
    rpc_opts_t so = {.max_message = 1 << 20};
    fx_server_t f;
    fx_server_start(&f, &so, 0);
    fx_log_capture();
    rpc_opts_t co = {.max_message = 8 << 20};
    rpc_channel_t *big = fx_channel(f.target, &co);
    cr_err_t err = {0};
    rpc_code_t st;
    /* over the limit: the layer's own check, with a log line naming size and limit */
    int rc = fx_echo(big, "big", 0, 0, 1536 << 10, 3000, &st, NULL, 0, &err);
    ASSERT_INT_EQ(st, RPC_RESOURCE_EXHAUSTED);
    ASSERT_INT_EQ(rc, CR_ETOOBIG);
    fprintf(stderr, "  oversized: %s\n", err.msg);
    /* far over: gRPC refuses it before the layer sees it; same status */
    rc = fx_echo(big, "huge", 0, 0, 3 << 20, 3000, &st, NULL, 0, &err);
    ASSERT_INT_EQ(st, RPC_RESOURCE_EXHAUSTED);
    ASSERT_INT_EQ(rc, CR_ETOOBIG);
    fprintf(stderr, "  far oversized: %s\n", err.msg);
    /* a client with the server's limit refuses before sending anything */
    rpc_channel_t *small = fx_channel(f.target, &so);
    rc = fx_echo(small, "big", 0, 0, 2 << 20, 3000, &st, NULL, 0, &err);
    ASSERT_INT_EQ(rc, CR_ETOOBIG);
    ASSERT_TRUE(strstr(err.msg, "exceeds the message limit") != NULL);
    ASSERT_OK(fx_echo(big, "small", 0, 0, 1000, 2000, &st, NULL, 0, &err), &err);
    /* the same inside a stream, after a few good messages */
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *s;
    ASSERT_OK(rpc_stream_open(big, &s, RPC_ECHO_COLLECT, &corral__v1__echo_reply__descriptor, &cbs, 5000, &err), &err);
    send_reqs(s, 3, 1000);
    send_reqs(s, 1, 1536 << 10);
    rpc_code_t code;
    ASSERT_TRUE(rpc_stream_wait(s, 5000, &code, &err) != 0);
    fprintf(stderr, "  oversized in a stream: %s\n", err.msg);
    ASSERT_INT_EQ(code, RPC_RESOURCE_EXHAUSTED);
    rpc_stream_destroy(s);
    ASSERT_OK(fx_echo(big, "small", 0, 0, 1000, 2000, &st, NULL, 0, &err), &err);
    fx_log_release();
    ASSERT_TRUE(fx_log_has("Unary from ipv4:127.0.0.1:"));
    ASSERT_TRUE(fx_log_has("Unary from ipv4:127.0.0.1:") && fx_log_has("message 1 of 15728"));
    ASSERT_TRUE(fx_log_has("Collect from ipv4:127.0.0.1:"));
    ASSERT_TRUE(fx_log_has("bytes exceeds the limit of 1048576 bytes: answered RESOURCE_EXHAUSTED") && fx_log_has("message 4 of 15728"));
    ASSERT_INT_EQ(fx_log_has("no request message"), 0);
    rpc_channel_destroy(small);
    rpc_channel_destroy(big);
    fx_server_stop(&f);
}

static void test_token(void)
{
    rpc_opts_t so = {.token = "s3cret"};
    fx_server_t f;
    fx_server_start(&f, &so, 0);
    fx_log_capture();
    cr_err_t err = {0};
    rpc_code_t st;
    rpc_opts_t wrong = {.token = "guess"};
    rpc_channel_t *ch = fx_channel(f.target, &wrong);
    ASSERT_INT_EQ(fx_echo(ch, "x", 0, 0, 0, 2000, &st, NULL, 0, &err), CR_EPERM);
    ASSERT_INT_EQ(st, RPC_UNAUTHENTICATED);
    rpc_channel_destroy(ch);
    ch = fx_channel(f.target, NULL);
    ASSERT_INT_EQ(fx_echo(ch, "x", 0, 0, 0, 2000, &st, NULL, 0, &err), CR_EPERM);
    ASSERT_INT_EQ(st, RPC_UNAUTHENTICATED);
    /* streams are checked the same way */
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *s;
    ASSERT_OK(rpc_stream_open(ch, &s, RPC_ECHO_CHAT, &corral__v1__echo_reply__descriptor, &cbs, 2000, &err), &err);
    rpc_code_t code;
    ASSERT_INT_EQ(rpc_stream_wait(s, 2000, &code, &err), CR_EPERM);
    ASSERT_INT_EQ(code, RPC_UNAUTHENTICATED);
    rpc_stream_destroy(s);
    rpc_channel_destroy(ch);
    rpc_opts_t right = {.token = "s3cret"};
    ch = fx_channel(f.target, &right);
    ASSERT_OK(fx_echo(ch, "x", 0, 0, 0, 2000, &st, NULL, 0, &err), &err);
    ASSERT_INT_EQ(atomic_load(&f.echo.started), 1);   /* rejected calls never reached it */
    fx_log_release();
    ASSERT_TRUE(fx_log_has("rejected: wrong bearer token"));
    ASSERT_TRUE(fx_log_has("rejected: no bearer token"));
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

/* One Unary Echo call with token tok (NULL: none) on a fresh channel: the status,
 * and the error message into msg. */
static rpc_code_t echo_with(const char *target, const char *tok, char *msg, size_t cap)
{
    rpc_opts_t o = {.token = tok};
    rpc_channel_t *ch = fx_channel(target, &o);
    cr_err_t err = {0};
    rpc_code_t st = RPC_UNKNOWN;
    fx_echo(ch, "x", 0, 0, 0, 2000, &st, NULL, 0, &err);
    snprintf(msg, cap, "%s", err.msg);
    rpc_channel_destroy(ch);
    return st;
}

/* Tokens by scope: a method takes the tokens of its scopes only; the token of
 * another scope is PERMISSION_DENIED naming both; a scope without a token guards
 * nothing; the every-method token opens everything. */
static void test_token_scopes(void)
{
    rpc_echo_t echo = {0};
    rpc_method_t m[RPC_ECHO_N_METHODS];
    rpc_echo_methods(m, &echo, 0);
    m[0].scopes = 1u << 0;                /* Unary: admin */
    m[3].scopes = 1u << 1;                /* Chat: join */
    rpc_opts_t so = {.tokens = {{"admin", "admin-secret-0123456789"}, {"join", "join-secret-0123456789"}}};
    rpc_server_t *srv = NULL;
    cr_err_t err = {0};
    ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", &so, m, RPC_ECHO_N_METHODS, &err), &err);
    ASSERT_OK(rpc_server_start(srv, &err), &err);
    char target[64], msg[CR_ERR_MSG_MAX];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv));

    ASSERT_INT_EQ(echo_with(target, "admin-secret-0123456789", msg, sizeof msg), RPC_OK);
    ASSERT_INT_EQ(echo_with(target, "join-secret-0123456789", msg, sizeof msg), RPC_PERMISSION_DENIED);
    ASSERT_TRUE(strstr(msg, "the join token may not call /corral.v1.Echo/Unary: it needs the admin token") != NULL);
    ASSERT_INT_EQ(echo_with(target, "admin-secret-012345678X", msg, sizeof msg), RPC_UNAUTHENTICATED);
    ASSERT_TRUE(strstr(msg, "wrong bearer token: /corral.v1.Echo/Unary needs the admin token") != NULL);
    ASSERT_INT_EQ(echo_with(target, NULL, msg, sizeof msg), RPC_UNAUTHENTICATED);
    ASSERT_TRUE(strstr(msg, "no bearer token") != NULL);
    ASSERT_INT_EQ(atomic_load(&echo.started), 1);   /* refused calls never reached it */

    /* Chat (a stream) takes the join token, not the admin one. */
    const char *toks[2] = {"admin-secret-0123456789", "join-secret-0123456789"};
    for (int i = 0; i < 2; i++) {
        rpc_opts_t co = {.token = toks[i]};
        rpc_channel_t *ch = fx_channel(target, &co);
        fx_rec_t r;
        fx_rec_init(&r);
        rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
        rpc_stream_t *st = NULL;
        ASSERT_OK(rpc_stream_open(ch, &st, RPC_ECHO_CHAT, &corral__v1__echo_reply__descriptor, &cbs, 2000, &err),
                  &err);
        ASSERT_OK(rpc_stream_close_send(st, &err), &err);
        rpc_code_t code = RPC_UNKNOWN;
        rpc_stream_wait(st, 2000, &code, &err);
        ASSERT_INT_EQ(code, i == 0 ? RPC_PERMISSION_DENIED : RPC_OK);
        rpc_stream_destroy(st);
        rpc_channel_destroy(ch);
    }
    /* Collect and Expand have no scopes and the server no every-method token: open. */
    rpc_server_destroy(srv);

    /* Without a join token, join-only methods are open; admin ones stay guarded. */
    rpc_opts_t half = {.tokens = {{"admin", "admin-secret-0123456789"}, {"join", NULL}}};
    rpc_method_t u[RPC_ECHO_N_METHODS];
    rpc_echo_methods(u, &echo, 0);
    u[0].scopes = 1u << 1;                /* Unary: join, which has no token here */
    ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", &half, u, RPC_ECHO_N_METHODS, &err), &err);
    ASSERT_OK(rpc_server_start(srv, &err), &err);
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv));
    ASSERT_INT_EQ(echo_with(target, NULL, msg, sizeof msg), RPC_OK);
    rpc_server_destroy(srv);
    u[0].scopes = 1u << 0;                /* admin, which has one */
    ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", &half, u, RPC_ECHO_N_METHODS, &err), &err);
    ASSERT_OK(rpc_server_start(srv, &err), &err);
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv));
    ASSERT_INT_EQ(echo_with(target, NULL, msg, sizeof msg), RPC_UNAUTHENTICATED);
    rpc_server_destroy(srv);
}

static void test_unknown_method(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    ProtobufCMessage *resp;
    cr_err_t err = {0};
    rpc_code_t st;
    ASSERT_INT_EQ(rpc_unary_code(ch, "/corral.v1.Echo/Nope", &q.base, &corral__v1__echo_reply__descriptor,
                                 &resp, 2000, &st, &err), CR_ENOTSUP);
    ASSERT_INT_EQ(st, RPC_UNIMPLEMENTED);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_bad_config(void)
{
    rpc_method_t m = {.name = "NoSlash", .kind = RPC_UNARY, .input = &corral__v1__echo_request__descriptor,
                      .output = &corral__v1__echo_reply__descriptor};
    rpc_server_t *s;
    cr_err_t err = {0};
    ASSERT_INT_EQ(rpc_server_create(&s, "127.0.0.1:0", NULL, &m, 1, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "NoSlash") != NULL);
    rpc_opts_t o = {.security = RPC_MTLS, .cert_dir = "/nonexistent-dir"};
    fx_server_t f;
    rpc_echo_methods(f.methods, &f.echo, 0);
    ASSERT_INT_EQ(rpc_server_create(&s, "127.0.0.1:0", &o, f.methods, RPC_ECHO_N_METHODS, &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "/nonexistent-dir/") != NULL);
    /* a port already taken */
    fx_server_start(&f, NULL, 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(f.srv));
    rpc_opts_t plain = {0};
    rpc_server_t *s2 = NULL;
    ASSERT_INT_EQ(rpc_server_create(&s2, addr, &plain, f.methods, RPC_ECHO_N_METHODS, &err), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(err.msg, addr) != NULL);
    /* created but never started: destroy must still be clean */
    ASSERT_OK(rpc_server_create(&s2, "127.0.0.1:0", &plain, f.methods, RPC_ECHO_N_METHODS, &err), &err);
    rpc_server_destroy(s2);
    fx_server_stop(&f);
}

static void test_shutdown_open_streams(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    fx_rec_t r[3];
    rpc_stream_t *st[3];
    const char *methods[3] = {RPC_ECHO_CHAT, RPC_ECHO_COLLECT, RPC_ECHO_EXPAND};
    cr_err_t err = {0};
    for (int i = 0; i < 3; i++) {
        fx_rec_init(&r[i]);
        rpc_stream_cbs_t cbs = fx_rec_cbs(&r[i]);
        ASSERT_OK(rpc_stream_open(ch, &st[i], methods[i], &corral__v1__echo_reply__descriptor, &cbs, 0, &err), &err);
        echo_req_t q;
        corral__v1__echo_request__init(&q);
        q.count = 1000000;   /* Expand: effectively endless */
        q.sleep_ms = i == 2 ? 1 : 0;
        ASSERT_OK(rpc_stream_send(st[i], &q.base, -1, &err), &err);
    }
    ASSERT_TRUE(fx_rec_wait(&r[0], 1, 2000));
    ASSERT_TRUE(fx_rec_wait(&r[2], 5, 2000));
    ASSERT_TRUE(fx_wait_atomic(&f.echo.started, 3, 2000));
    int64_t t0 = cr_now_ns();
    fx_server_stop(&f);
    ASSERT_TRUE(cr_now_ns() - t0 < 3 * CR_NS_PER_S);
    for (int i = 0; i < 3; i++) {
        ASSERT_TRUE(fx_rec_wait(&r[i], -1, 3000));
        ASSERT_TRUE(r[i].code != RPC_OK);
    }
    ASSERT_INT_EQ(atomic_load(&f.echo.done), 3);
    ASSERT_INT_EQ(atomic_load(&f.echo.cancelled), 3);
    for (int i = 0; i < 3; i++) rpc_stream_destroy(st[i]);
    rpc_channel_destroy(ch);
}

static void test_channel_destroy_open_streams(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *st;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &st, RPC_ECHO_CHAT, &corral__v1__echo_reply__descriptor, &cbs, 0, &err), &err);
    send_reqs(st, 1, 0);
    ASSERT_TRUE(fx_rec_wait(&r, 1, 2000));
    rpc_channel_destroy(ch);   /* cancels the stream */
    ASSERT_INT_EQ(r.closed, 1);
    ASSERT_INT_EQ(r.code, RPC_CANCELLED);
    rpc_stream_destroy(st);    /* still the caller's to free */
    ASSERT_TRUE(fx_wait_atomic(&f.echo.cancelled, 1, 2000));
    fx_server_stop(&f);
}

static void test_backoff(void)
{
    rpc_backoff_t b;
    rpc_backoff_init(&b, 100, 1000);
    int prev = 0, last = 0;
    for (int i = 0; i < 20; i++) {
        int ms = rpc_backoff_next_ms(&b);
        ASSERT_TRUE(ms >= 80 && ms <= 1200);
        if (i == 0) ASSERT_TRUE(ms <= 120);
        if (i == 5) prev = ms;
        last = ms;
    }
    ASSERT_TRUE(prev > 300 && last >= 800);
    rpc_backoff_reset(&b);
    ASSERT_TRUE(rpc_backoff_next_ms(&b) <= 120);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"codes", test_codes},
        {"unary_ok", test_unary_ok},
        {"unary_ok_inline", test_unary_ok_inline},
        {"unary_concurrent", test_unary_concurrent},
        {"unary_errors", test_unary_errors},
        {"unary_deadline", test_unary_deadline},
        {"client_stream", test_client_stream},
        {"server_stream", test_server_stream},
        {"bidi", test_bidi},
        {"bidi_inline", test_bidi_inline},
        {"backpressure", test_backpressure},
        {"cancel", test_cancel},
        {"malformed", test_malformed},
        {"oversized", test_oversized},
        {"token", test_token},
        {"token_scopes", test_token_scopes},
        {"unknown_method", test_unknown_method},
        {"bad_config", test_bad_config},
        {"shutdown_open_streams", test_shutdown_open_streams},
        {"channel_destroy_open_streams", test_channel_destroy_open_streams},
        {"backoff", test_backoff},
        {NULL, NULL}};
    return test_main("rpc.calls", cases, argc, argv);
}
