/* test_bytes.c - messages as bytes (rpc_out_t, rpc_bytes_t, on_raw): a client sends
 * EchoRequests it packed from a copied header and a lent payload, a raw server
 * method bounces each one back by reference to the slices it arrived in, and the
 * client reads the replies raw. Checked: the bytes arrive intact across many
 * slices, every lent piece is released exactly once (after a normal send, a
 * refused send, an oversized one, and a cancelled stream with sends queued), a
 * raw handler sees nothing over the size limit, and an inline raw handler that
 * would block gets the same message again on a handler thread, in order. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"
#include "fixture.h"
#include "tests/harness.h"

#define BOUNCE "/corral.v1.Echo/Chat" /* a bidi method; served raw here */

typedef struct lent {
    atomic_long released;
} lent_t;

static void on_release(void *user) { atomic_fetch_add(&((lent_t *)user)->released, 1); }

/* EchoRequest {payload = 1, seq = 6} as a header in head and the payload after it:
 * seq first, then the payload's tag and length, so the payload's bytes go last. */
static size_t request_head(uint8_t *head, uint64_t seq, size_t len)
{
    size_t n = 0;
    head[n++] = 6 << 3 | 0;
    for (uint64_t v = seq; ; v >>= 7) {
        head[n++] = (uint8_t)(v >= 0x80 ? (v | 0x80) : v);
        if (v < 0x80) break;
    }
    head[n++] = 1 << 3 | 2;
    for (uint64_t v = len; ; v >>= 7) {
        head[n++] = (uint8_t)(v >= 0x80 ? (v | 0x80) : v);
        if (v < 0x80) break;
    }
    return n;
}

static int send_request(rpc_stream_t *st, uint64_t seq, const uint8_t *payload, size_t len, lent_t *l,
                        int64_t timeout_ms, cr_err_t *err)
{
    uint8_t head[32];
    rpc_out_t *o = rpc_out_create();
    ASSERT_TRUE(o != NULL);
    ASSERT_OK(rpc_out_copy(o, head, request_head(head, seq, len)), err);
    ASSERT_OK(rpc_out_ref(o, payload, len, on_release, l), err);
    return rpc_stream_send_out(st, o, timeout_ms, err);
}

/* ---- the raw server: bounces every message back, by reference ---- */

typedef struct srv_state {
    atomic_long got;
    atomic_long bytes;
} srv_state_t;

static int bounce_raw(rpc_call_t *call, rpc_bytes_t *msg)
{
    srv_state_t *s = rpc_call_method(call)->user;
    size_t len = rpc_bytes_len(msg);
    rpc_out_t *o = rpc_out_create();
    rpc_out_bytes(o, msg, 0, len);
    rpc_bytes_free(msg); /* the out holds its own references to the slices */
    cr_err_t err = {0};
    if (rpc_call_send_out(call, o, -1, &err) == 0) {
        atomic_fetch_add(&s->got, 1);
        atomic_fetch_add(&s->bytes, (long)len);
    }
    return 0;
}

typedef struct raw_server {
    rpc_server_t *srv;
    rpc_method_t m;
    srv_state_t st;
    char target[64];
} raw_server_t;

static void raw_start(raw_server_t *r, size_t max_message)
{
    memset(r, 0, sizeof *r);
    r->m = (rpc_method_t){.name = BOUNCE, .kind = RPC_BIDI, .input = &corral__v1__echo_request__descriptor,
                          .output = &corral__v1__echo_request__descriptor, .user = &r->st,
                          .on_raw = bounce_raw};
    rpc_opts_t o = {.max_message = max_message, .bulk = 1};
    cr_err_t err = {0};
    ASSERT_OK(rpc_server_create(&r->srv, "127.0.0.1:0", &o, &r->m, 1, &err), &err);
    ASSERT_OK(rpc_server_start(r->srv, &err), &err);
    snprintf(r->target, sizeof r->target, "127.0.0.1:%d", rpc_server_port(r->srv));
}

/* ---- the client's raw reader: checks each reply against the pattern ---- */

typedef struct reader {
    pthread_mutex_t mu;
    long n, bad;
    uint64_t next_seq;
    size_t len;
    int closed;
} reader_t;

static uint8_t pattern(uint64_t seq, size_t i) { return (uint8_t)(seq * 131 + i * 7); }

static void reader_raw(rpc_stream_t *st, rpc_bytes_t *msg, void *user)
{
    reader_t *r = user;
    size_t n = rpc_bytes_len(msg);
    uint8_t *buf = malloc(n ? n : 1);
    size_t got = rpc_bytes_read(msg, 0, buf, n);
    rpc_bytes_free(msg);
    Corral__V1__EchoRequest *q = corral__v1__echo_request__unpack(NULL, got, buf);
    int ok = got == n && q && q->payload.len == r->len;
    for (size_t i = 0; ok && i < q->payload.len; i++) ok = q->payload.data[i] == pattern(q->seq, i);
    pthread_mutex_lock(&r->mu);
    if (!ok || q->seq != r->next_seq) r->bad++;
    if (q) r->next_seq = q->seq + 1;
    r->n++;
    pthread_mutex_unlock(&r->mu);
    if (q) corral__v1__echo_request__free_unpacked(q, NULL);
    free(buf);
}

static void reader_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    reader_t *r = user;
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    pthread_mutex_unlock(&r->mu);
}

static long reader_count(reader_t *r)
{
    pthread_mutex_lock(&r->mu);
    long n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void test_roundtrip(void)
{
    raw_server_t s;
    raw_start(&s, 4u << 20);
    rpc_opts_t co = {.max_message = 4u << 20, .bulk = 1};
    rpc_channel_t *ch = fx_channel(s.target, &co);
    enum { N = 120, LEN = 300000 };
    reader_t r = {.len = LEN};
    pthread_mutex_init(&r.mu, NULL);
    rpc_stream_cbs_t cbs = {.on_raw = reader_raw, .on_close = reader_close, .user = &r};
    rpc_stream_t *st;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &st, BOUNCE, &corral__v1__echo_request__descriptor, &cbs, 20000, &err), &err);
    uint8_t *bufs[N];
    lent_t l = {0};
    for (uint64_t i = 0; i < N; i++) {
        bufs[i] = malloc(LEN);
        for (size_t k = 0; k < LEN; k++) bufs[i][k] = pattern(i, k);
        ASSERT_OK(send_request(st, i, bufs[i], LEN, &l, -1, &err), &err);
    }
    int64_t end = cr_now_ns() + 15 * CR_NS_PER_S;
    while (reader_count(&r) < N && cr_now_ns() < end) cr_sleep_ns(5 * CR_NS_PER_MS);
    ASSERT_INT_EQ(reader_count(&r), N);
    ASSERT_INT_EQ(r.bad, 0);
    ASSERT_INT_EQ(atomic_load(&s.st.got), N);
    /* Written and acknowledged by the peer's replies: every lent payload is back. */
    ASSERT_INT_EQ(atomic_load(&l.released), N);
    ASSERT_OK(rpc_stream_close_send(st, &err), &err);
    ASSERT_OK(rpc_stream_wait(st, 5000, NULL, &err), &err);
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch);
    rpc_server_destroy(s.srv);
    for (int i = 0; i < N; i++) free(bufs[i]);
    pthread_mutex_destroy(&r.mu);
}

static void test_release_on_failure(void)
{
    raw_server_t s;
    raw_start(&s, 1u << 20);
    rpc_opts_t co = {.max_message = 1u << 20};
    rpc_channel_t *ch = fx_channel(s.target, &co);
    reader_t r = {.len = 1000};
    pthread_mutex_init(&r.mu, NULL);
    rpc_stream_cbs_t cbs = {.on_raw = reader_raw, .on_close = reader_close, .user = &r};
    rpc_stream_t *st;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &st, BOUNCE, &corral__v1__echo_request__descriptor, &cbs, 20000, &err), &err);
    static uint8_t big[(1u << 20) + 10], small[1000];
    lent_t l = {0};
    /* Over the limit: refused before anything is queued, the piece given back. */
    ASSERT_INT_EQ(send_request(st, 0, big, sizeof big, &l, 0, &err), CR_ETOOBIG);
    ASSERT_INT_EQ(atomic_load(&l.released), 1);
    /* A zero-length lent piece is given back at once. */
    rpc_out_t *o = rpc_out_create();
    ASSERT_OK(rpc_out_ref(o, small, 0, on_release, &l), &err);
    ASSERT_INT_EQ(atomic_load(&l.released), 2);
    rpc_out_destroy(o);
    /* Queued and never sent: the stream is cancelled with the queue full. */
    int queued = 0;
    for (int i = 0; i < 64; i++) {
        int rc = send_request(st, (uint64_t)i, small, sizeof small, &l, 0, &err);
        if (rc == 0) queued++;
    }
    ASSERT_TRUE(queued > 0);
    rpc_stream_cancel(st);
    rpc_stream_wait(st, 5000, NULL, &err);
    /* After the stream: sends are refused and the piece still comes back. */
    ASSERT_INT_EQ(send_request(st, 99, small, sizeof small, &l, 0, &err), CR_ECLOSED);
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch); /* gRPC lets go of what it still held */
    int64_t end = cr_now_ns() + 5 * CR_NS_PER_S;
    long want = 64 + 3; /* every attempt's piece: refused, empty, 64 queued or busy, closed */
    while (atomic_load(&l.released) < want && cr_now_ns() < end) cr_sleep_ns(5 * CR_NS_PER_MS);
    ASSERT_INT_EQ(atomic_load(&l.released), want);
    rpc_server_destroy(s.srv);
    pthread_mutex_destroy(&r.mu);
}

static void test_raw_oversized(void)
{
    /* The server's limit is below what the client may send: the layer refuses
     * the message before the raw handler; the call ends RESOURCE_EXHAUSTED. */
    raw_server_t s;
    raw_start(&s, 64u << 10);
    rpc_opts_t co = {.max_message = 1u << 20};
    rpc_channel_t *ch = fx_channel(s.target, &co);
    reader_t r = {.len = 0};
    pthread_mutex_init(&r.mu, NULL);
    rpc_stream_cbs_t cbs = {.on_raw = reader_raw, .on_close = reader_close, .user = &r};
    rpc_stream_t *st;
    cr_err_t err = {0};
    fx_log_capture();
    ASSERT_OK(rpc_stream_open(ch, &st, BOUNCE, &corral__v1__echo_request__descriptor, &cbs, 20000, &err), &err);
    static uint8_t big[100000];
    lent_t l = {0};
    ASSERT_OK(send_request(st, 0, big, sizeof big, &l, -1, &err), &err);
    rpc_code_t code = RPC_OK;
    rpc_stream_wait(st, 10000, &code, &err);
    ASSERT_INT_EQ(code, RPC_RESOURCE_EXHAUSTED);
    ASSERT_INT_EQ(atomic_load(&s.st.got), 0);
    ASSERT_TRUE(fx_log_has("exceeds the limit"));
    fx_log_release();
    rpc_stream_destroy(st);
    rpc_channel_destroy(ch);
    rpc_server_destroy(s.srv);
    ASSERT_INT_EQ(atomic_load(&l.released), 1);
    pthread_mutex_destroy(&r.mu);
}

/* ---- an inline raw handler that leaves some messages for the pool ---- */

typedef struct later_state {
    pthread_mutex_t mu;
    long handled, deferred, out_of_order, on_pool;
    uint64_t next;
} later_state_t;

static int later_raw(rpc_call_t *call, rpc_bytes_t *msg)
{
    later_state_t *s = rpc_call_method(call)->user;
    uint8_t buf[256];
    size_t n = rpc_bytes_read(msg, 0, buf, sizeof buf);
    Corral__V1__EchoRequest *q = corral__v1__echo_request__unpack(NULL, n, buf);
    uint64_t seq = q ? q->seq : UINT64_MAX;
    if (q) corral__v1__echo_request__free_unpacked(q, NULL);
    int may_block = rpc_call_may_block(call);
    pthread_mutex_lock(&s->mu);
    if (seq % 3 == 0 && !may_block) { /* "would block": the same message again, on the pool */
        s->deferred++;
        pthread_mutex_unlock(&s->mu);
        return RPC_RAW_LATER;
    }
    if (seq != s->next) s->out_of_order++;
    s->next = seq + 1;
    s->handled++;
    s->on_pool += may_block;
    pthread_mutex_unlock(&s->mu);
    rpc_bytes_free(msg);
    return 0;
}

static void test_inline_later(void)
{
    later_state_t st = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_method_t m = {.name = BOUNCE, .kind = RPC_BIDI, .input = &corral__v1__echo_request__descriptor,
                      .output = &corral__v1__echo_request__descriptor, .user = &st,
                      .flags = RPC_METHOD_INLINE, .on_raw = later_raw};
    rpc_server_t *srv;
    cr_err_t err = {0};
    ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", NULL, &m, 1, &err), &err);
    ASSERT_OK(rpc_server_start(srv, &err), &err);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv));
    rpc_channel_t *ch = fx_channel(target, NULL);
    rpc_stream_cbs_t cbs = {0};
    rpc_stream_t *stm;
    ASSERT_OK(rpc_stream_open(ch, &stm, BOUNCE, &corral__v1__echo_request__descriptor, &cbs, 20000, &err), &err);
    enum { N = 90 };
    for (int i = 0; i < N; i++) {
        echo_req_t q;
        corral__v1__echo_request__init(&q);
        q.seq = (uint64_t)i;
        ASSERT_OK(rpc_stream_send(stm, &q.base, -1, &err), &err);
    }
    ASSERT_OK(rpc_stream_close_send(stm, &err), &err);
    ASSERT_OK(rpc_stream_wait(stm, 10000, NULL, &err), &err);
    ASSERT_INT_EQ(st.handled, N);          /* each once */
    ASSERT_INT_EQ(st.deferred, N / 3);     /* every third left for later ... */
    ASSERT_INT_EQ(st.on_pool, N / 3);      /* ... and handled on a handler thread */
    ASSERT_INT_EQ(st.out_of_order, 0);     /* before any later message */
    rpc_stream_destroy(stm);
    rpc_channel_destroy(ch);
    rpc_server_destroy(srv);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"roundtrip", test_roundtrip},
        {"release_on_failure", test_release_on_failure},
        {"raw_oversized", test_raw_oversized},
        {"inline_later", test_inline_later},
        {NULL, NULL}};
    return test_main("rpc.bytes", cases, argc, argv);
}
