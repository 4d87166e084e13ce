/* test_remote.c - the routes between nodes over real gRPC on loopback: the direct
 * stream and the stream tunnelled through a relay. Order and completeness, bad input
 * (unknown channel, message over the consumer's limit, a peer sending malformed
 * frames, a peer that stalls) answered to that peer only, and a relay restart in the
 * middle of a transfer: the producers reconnect, resend what was not acknowledged,
 * and the consumer holds every message exactly once. One full channel behind the
 * relay holds back only its own producers: the hub's other tunnelled channels go
 * on, and the stuck one, drained later, has each message once. */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/channel.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "corral/v1/channel.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static ch_hub_t *hub(const char *node, const char *listen, const char *relay)
{
    ch_hub_opts_t o = {.node = node, .shm = -1, .listen = listen, .relay = relay, .reconnect_ms = 50};
    ch_hub_t *h;
    cr_err_t e = {0};
    ASSERT_OK(ch_hub_create(&o, &h, &e), &e);
    return h;
}

static ch_producer_t *producer(ch_hub_t *from, ch_hub_t *to, const char *name, ch_route_kind_t want)
{
    ch_where_t w;
    ch_hub_where(to, &w);
    ch_producer_t *p;
    cr_err_t e = {0};
    ASSERT_OK(ch_producer_open(from, name, &w, NULL, &p, &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(p)), ch_route_name(want));
    return p;
}

/* Reads n messages of producer p and checks they are 0..n-1 in order. */
static void expect_seq(ch_channel_t *c, ch_producer_t *p, int n)
{
    cr_err_t e = {0};
    for (int i = 0; i < n; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 10000, &e), &e);
        ASSERT_INT_EQ(m->producer, ch_producer_id(p));
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, i);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ch_msg_free(m);
    }
}

static void put_n(ch_producer_t *p, int from, int to, size_t len)
{
    cr_err_t e = {0};
    char *buf = calloc(1, len);
    for (int i = from; i < to; i++) {
        memcpy(buf, &i, sizeof i);
        ASSERT_OK(ch_put(p, buf, len, 1, 10000, &e), &e);
    }
    free(buf);
}

static void test_direct_in_order(void)
{
    ch_hub_t *hc = hub("gpu1", "127.0.0.1:0", NULL);
    ch_hub_t *hp = hub("robot1", NULL, NULL);
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 32};
    ASSERT_OK(ch_channel_create(hc, "tr", &o, &c, &e), &e);
    ch_producer_t *p = producer(hp, hc, "tr", CH_ROUTE_DIRECT);
    put_n(p, 0, 20, 64);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    ASSERT_INT_EQ(ch_producer_unacked(p), 0);
    expect_seq(c, p, 20);
    /* More than the queue holds: back-pressure through the stream, nothing lost. */
    ch_producer_t *q = producer(hp, hc, "tr", CH_ROUTE_DIRECT);
    put_n(q, 0, 20, 100);
    int64_t t0 = cr_now_ns();
    ASSERT_INT_EQ(ch_put(q, "x", 1, 1, 50, &e), 0);
    (void)t0;
    expect_seq(c, q, 20);
    ch_msg_t *m;
    ASSERT_OK(ch_get(c, &m, 5000, &e), &e);
    ASSERT_INT_EQ(m->len, 1);
    ch_msg_free(m);
    ch_producer_close(q);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
}

/* A TCP proxy between producer and consumer whose connections the test can cut,
 * as a broken network would: both ends see the connection die mid-stream. */
typedef struct proxy {
    int ls;
    char addr[64];
    struct sockaddr_in up;
    pthread_t thread;
    atomic_int stop, cut;
} proxy_t;

static void *proxy_main(void *arg)
{
    proxy_t *x = arg;
    int a = -1, b = -1;
    static char buf[1 << 16];
    while (!atomic_load(&x->stop)) {
        if (atomic_exchange(&x->cut, 0) && a >= 0) {
            close(a);
            close(b);
            a = b = -1;
        }
        struct pollfd pf[3] = {{x->ls, POLLIN, 0}, {a, POLLIN, 0}, {b, POLLIN, 0}};
        if (poll(pf, 3, 20) <= 0) continue;
        if (pf[0].revents & POLLIN) {
            int c = accept(x->ls, NULL, NULL);
            if (a >= 0) { /* one connection at a time: a new one replaces the old */
                close(a);
                close(b);
            }
            a = c;
            b = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(b, (struct sockaddr *)&x->up, sizeof x->up) != 0) {
                close(a);
                close(b);
                a = b = -1;
            }
            continue;
        }
        for (int i = 1; i <= 2; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            int from = i == 1 ? a : b, to = i == 1 ? b : a;
            ssize_t n = read(from, buf, sizeof buf);
            if (n <= 0 || write(to, buf, (size_t)n) != n) {
                close(a);
                close(b);
                a = b = -1;
                break;
            }
        }
    }
    if (a >= 0) {
        close(a);
        close(b);
    }
    return NULL;
}

static void proxy_start(proxy_t *x, const char *upstream)
{
    memset(x, 0, sizeof *x);
    char host[64];
    snprintf(host, sizeof host, "%s", upstream);
    char *colon = strrchr(host, ':');
    *colon = 0;
    x->up.sin_family = AF_INET;
    x->up.sin_port = htons((uint16_t)atoi(colon + 1));
    inet_pton(AF_INET, host, &x->up.sin_addr);
    x->ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    ASSERT_TRUE(bind(x->ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(x->ls, 4) == 0 &&
                getsockname(x->ls, (struct sockaddr *)&a, &al) == 0);
    snprintf(x->addr, sizeof x->addr, "127.0.0.1:%d", ntohs(a.sin_port));
    pthread_create(&x->thread, NULL, proxy_main, x);
}

static void proxy_stop(proxy_t *x)
{
    atomic_store(&x->stop, 1);
    pthread_join(x->thread, NULL);
    close(x->ls);
}

static void test_direct_reconnects_and_resends(void)
{
    ch_hub_t *hc = hub("gpu1", "127.0.0.1:0", NULL);
    ch_hub_t *hp = hub("robot1", NULL, NULL);
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 8};
    ASSERT_OK(ch_channel_create(hc, "tr", &o, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(hc, &w);
    proxy_t px;
    proxy_start(&px, w.addr);
    w.addr = px.addr;
    ch_producer_opts_t po = {.window = 32};
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(hp, "tr", &w, &po, &p, &e), &e);
    ASSERT_INT_EQ(ch_producer_route(p), CH_ROUTE_DIRECT);
    /* The queue fills (8) and more wait unacknowledged in the window; then the
     * connection breaks. */
    put_n(p, 0, 30, 512);
    cr_sleep_ns(200 * CR_NS_PER_MS);
    ASSERT_TRUE(ch_producer_unacked(p) > 0);
    atomic_store(&px.cut, 1);
    cr_sleep_ns(100 * CR_NS_PER_MS);
    put_n(p, 30, 40, 512);
    /* Reading resumes: everything arrives once, in order, over a new connection. */
    expect_seq(c, p, 40);
    ASSERT_OK(ch_producer_flush(p, 20000, &e), &e);
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(c, &m, 200, &e), CR_ETIMEDOUT);
    ASSERT_TRUE(ch_producer_reconnects(p) >= 1);
    /* The message the old stream delivered but could not acknowledge came again
     * and was dropped. */
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.accepted, 40);
    ASSERT_TRUE(st.duplicates >= 1);
    ch_producer_close(p);
    proxy_stop(&px);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
}

static void test_direct_bad_input(void)
{
    ch_hub_t *hc = hub("gpu1", "127.0.0.1:0", NULL);
    ch_hub_t *hp = hub("robot1", NULL, NULL);
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.max_msg_bytes = 1000};
    ASSERT_OK(ch_channel_create(hc, "tr", &o, &c, &e), &e);
    /* Unknown channel: an error naming it, from put or flush. */
    ch_producer_t *p = producer(hp, hc, "nosuch", CH_ROUTE_DIRECT);
    int rc = ch_put(p, "a", 1, 1, 1000, &e);
    if (rc == 0) rc = ch_producer_flush(p, 10000, &e);
    ASSERT_INT_EQ(rc, CR_ENOENT);
    ASSERT_TRUE(strstr(e.msg, "nosuch") != NULL);
    ch_producer_close(p);
    /* Over the consumer's limit (the producer's own limit is larger). */
    p = producer(hp, hc, "tr", CH_ROUTE_DIRECT);
    static char big[5000];
    ASSERT_OK(ch_put(p, big, sizeof big, 1, 1000, &e), &e);
    ASSERT_INT_EQ(ch_producer_flush(p, 10000, &e), CR_ETOOBIG);
    ASSERT_TRUE(strstr(e.msg, "5000") != NULL);
    ch_producer_close(p);
    /* A peer speaking the protocol wrongly: a frame without producer id. */
    rpc_opts_t ro = {0};
    rpc_channel_t *rch;
    ch_where_t w;
    ch_hub_where(hc, &w);
    ASSERT_OK(rpc_channel_create(&rch, w.addr, &ro, &e), &e);
    rpc_stream_cbs_t cbs = {0};
    rpc_stream_t *st;
    ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.Channel/Stream", &corral__v1__ch_frame__descriptor,
                              &cbs, 10000, &e), &e);
    Corral__V1__ChFrame f = CORRAL__V1__CH_FRAME__INIT;
    f.channel = "tr";
    f.seq = 1;
    ASSERT_OK(rpc_stream_send(st, &f.base, 1000, &e), &e);
    rpc_code_t code;
    rpc_stream_wait(st, 10000, &code, &e);
    ASSERT_INT_EQ(code, RPC_INVALID_ARGUMENT);
    ASSERT_TRUE(strstr(e.msg, "producer") != NULL);
    rpc_stream_destroy(st);
    /* A peer sending bytes that are no frame at all. */
    ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.Channel/Stream", &corral__v1__ch_frame__descriptor,
                              &cbs, 10000, &e), &e);
    rpc_out_t *junk = rpc_out_create();
    static const uint8_t garbage[] = {0x12, 0x7f, 'x', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    rpc_out_copy(junk, garbage, sizeof garbage);
    ASSERT_OK(rpc_stream_send_out(st, junk, 1000, &e), &e);
    rpc_stream_wait(st, 10000, &code, &e);
    ASSERT_INT_EQ(code, RPC_INVALID_ARGUMENT);
    ASSERT_TRUE(strstr(e.msg, "malformed") != NULL || strstr(e.msg, "channel") != NULL);
    rpc_stream_destroy(st);
    /* A peer that opens a stream and stalls holds nobody else up. */
    ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.Channel/Stream", &corral__v1__ch_frame__descriptor,
                              &cbs, 0, &e), &e);
    p = producer(hp, hc, "tr", CH_ROUTE_DIRECT);
    put_n(p, 0, 10, 16);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    expect_seq(c, p, 10);
    rpc_stream_destroy(st);
    rpc_channel_destroy(rch);
    ch_producer_close(p);
    ch_stats_t s;
    ch_channel_stats(c, &s);
    ASSERT_INT_EQ(s.rejected, 1);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
}

static void test_consumer_that_never_reads(void)
{
    ch_hub_t *hc = hub("gpu1", "127.0.0.1:0", NULL);
    ch_hub_t *hp = hub("robot1", NULL, NULL);
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 2};
    ASSERT_OK(ch_channel_create(hc, "tr", &o, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(hc, &w);
    ch_producer_opts_t po = {.window = 4};
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(hp, "tr", &w, &po, &p, &e), &e);
    int rc = 0, sent = 0;
    while (sent < 100 && (rc = ch_put(p, &sent, sizeof sent, 1, 200, &e)) == 0) sent++;
    ASSERT_INT_EQ(rc, CR_ETIMEDOUT);
    ASSERT_TRUE(strstr(e.msg, "unacknowledged") != NULL);
    ASSERT_TRUE(sent >= 4 && sent <= 8);
    expect_seq(c, p, sent);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
}

static void test_tunnel_in_order(void)
{
    ch_relay_t *r;
    cr_err_t e = {0};
    ASSERT_OK(ch_relay_create("127.0.0.1:0", &r, &e), &e);
    ch_hub_t *hc = hub("robot1", NULL, ch_relay_addr(r)); /* behind NAT: no listen */
    ch_hub_t *hp = hub("gpu1", NULL, ch_relay_addr(r));
    ch_channel_t *c;
    ch_opts_t o = {.capacity = 256};
    ASSERT_OK(ch_channel_create(hc, "act", &o, &c, &e), &e);
    ch_producer_t *p = producer(hp, hc, "act", CH_ROUTE_TUNNEL);
    put_n(p, 0, 200, 256);
    expect_seq(c, p, 200);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    /* Unknown channel through the tunnel: the error comes back by the same way. */
    ch_producer_t *q = producer(hp, hc, "nosuch", CH_ROUTE_TUNNEL);
    int rc = ch_put(q, "a", 1, 1, 1000, &e);
    if (rc == 0) rc = ch_producer_flush(q, 10000, &e);
    ASSERT_INT_EQ(rc, CR_ENOENT);
    ASSERT_TRUE(strstr(e.msg, "nosuch") != NULL);
    ch_producer_close(q);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
    ch_relay_destroy(r);
}

typedef struct putter {
    ch_producer_t *p;
    int from, to;
    int rc;
    cr_err_t e;
} putter_t;

static void *putter_main(void *arg)
{
    putter_t *t = arg;
    for (int i = t->from; i < t->to && t->rc == 0; i++) t->rc = ch_put(t->p, &i, sizeof i, 1, 20000, &t->e);
    return NULL;
}

/* Two channels tunnelled to one hub through one relay link, and the consumer of
 * one never reads. Its producer is held back (the channel and then the window
 * fill, put times out); the other channel's traffic keeps flowing all the while,
 * past the stuck producer's ack time-out, when it reconnects and resends its
 * window. Drained at last, the stuck channel has every message once, in order. */
static void test_tunnel_full_channel_isolated(void)
{
    ch_relay_t *r;
    cr_err_t e = {0};
    ASSERT_OK(ch_relay_create("127.0.0.1:0", &r, &e), &e);
    ch_hub_t *hc = hub("robot1", NULL, ch_relay_addr(r));
    ch_hub_t *hp = hub("gpu1", NULL, ch_relay_addr(r));
    ch_channel_t *stuck, *flow;
    ch_opts_t so = {.capacity = 4}, fo = {.capacity = 16};
    ASSERT_OK(ch_channel_create(hc, "stuck", &so, &stuck, &e), &e);
    ASSERT_OK(ch_channel_create(hc, "flow", &fo, &flow, &e), &e);
    ch_where_t w;
    ch_hub_where(hc, &w);
    ch_producer_opts_t po = {.window = 8};
    ch_producer_t *ps, *pf;
    ASSERT_OK(ch_producer_open(hp, "stuck", &w, &po, &ps, &e), &e);
    ASSERT_OK(ch_producer_open(hp, "flow", &w, NULL, &pf, &e), &e);
    ASSERT_INT_EQ(ch_producer_route(ps), CH_ROUTE_TUNNEL);

    /* 4 fill the channel, 8 wait unacknowledged at the hub, the next put waits. */
    int sent = 0, rc;
    while (sent < 100 && (rc = ch_put(ps, &sent, sizeof sent, 1, 1000, &e)) == 0) sent++;
    ASSERT_INT_EQ(rc, CR_ETIMEDOUT);
    ASSERT_INT_EQ(sent, 12);

    /* The other channel flows, for longer than the stuck producer's ack time-out. */
    size_t len = 64 << 10;
    uint8_t *buf = calloc(1, len);
    uint64_t next = 1;
    int64_t t0 = cr_now_ns();
    while (cr_now_ns() - t0 < 6500 * CR_NS_PER_MS) {
        for (int k = 0; k < 8; k++) {
            memcpy(buf, &next, sizeof next);
            ASSERT_OK(ch_put(pf, buf, len, 1, 5000, &e), &e);
        }
        for (int k = 0; k < 8; k++, next++) {
            ch_msg_t *m;
            ASSERT_OK(ch_get(flow, &m, 5000, &e), &e);
            ASSERT_INT_EQ(m->seq, next);
            ASSERT_INT_EQ(m->len, len);
            ch_msg_free(m);
        }
    }
    ASSERT_OK(ch_producer_flush(pf, 5000, &e), &e);
    ASSERT_TRUE(ch_producer_reconnects(ps) >= 1); /* it timed out and resent its window */
    ASSERT_INT_EQ(ch_producer_unacked(ps), 8);
    ch_stats_t st;
    ch_channel_stats(stuck, &st);
    ASSERT_INT_EQ(st.accepted, 4);
    ASSERT_INT_EQ(st.queued, 4);

    /* Drained while its producer goes on: each message once, in order. */
    putter_t t = {.p = ps, .from = 12, .to = 40};
    pthread_t th;
    pthread_create(&th, NULL, putter_main, &t);
    for (int i = 0; i < 40; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(stuck, &m, 15000, &e), &e);
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, i);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ch_msg_free(m);
    }
    pthread_join(th, NULL);
    ASSERT_OK(t.rc, &t.e);
    ASSERT_OK(ch_producer_flush(ps, 10000, &e), &e);
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(stuck, &m, 300, &e), CR_ETIMEDOUT);
    ch_channel_stats(stuck, &st);
    ASSERT_INT_EQ(st.accepted, 40);
    ch_channel_stats(flow, &st);
    ASSERT_INT_EQ(st.accepted, next - 1);
    ASSERT_INT_EQ(st.duplicates, 0);

    free(buf);
    ch_producer_close(ps);
    ch_producer_close(pf);
    ch_channel_destroy(stuck);
    ch_channel_destroy(flow);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
    ch_relay_destroy(r);
}

typedef struct acks_seen {
    pthread_mutex_t mu;
    int n;          /* ACK frames received */
    uint64_t high;  /* highest seq acknowledged */
} acks_seen_t;

static void record_acks(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    acks_seen_t *a = user;
    const Corral__V1__RelayFrame *rf = (const Corral__V1__RelayFrame *)msg;
    if (!rf->frame || rf->frame->kind != CORRAL__V1__CH_FRAME__KIND__ACK) return;
    pthread_mutex_lock(&a->mu);
    a->n++;
    if (rf->frame->seq > a->high) a->high = rf->frame->seq;
    pthread_mutex_unlock(&a->mu);
}

/* Waits up to 5 s until the peer has seen n acks; returns what it has seen. */
static acks_seen_t acks_wait(acks_seen_t *a, int n)
{
    int64_t end = cr_now_ns() + 5 * CR_NS_PER_S;
    acks_seen_t now;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        now = *a;
        pthread_mutex_unlock(&a->mu);
        if (now.n >= n || cr_now_ns() > end) return now;
        cr_sleep_ns(5 * CR_NS_PER_MS);
    }
}

static void raw_data(rpc_stream_t *st, const char *dst, uint64_t seq)
{
    Corral__V1__ChFrame f = CORRAL__V1__CH_FRAME__INIT;
    f.kind = CORRAL__V1__CH_FRAME__KIND__DATA;
    f.channel = "act";
    f.producer = 77;
    f.seq = seq;
    f.weight = 1;
    f.data.data = (uint8_t *)&seq;
    f.data.len = sizeof seq;
    Corral__V1__RelayFrame rf = CORRAL__V1__RELAY_FRAME__INIT;
    rf.dst = (char *)dst;
    rf.frame = &f;
    cr_err_t e = {0};
    ASSERT_OK(rpc_stream_send(st, &rf.base, 1000, &e), &e);
}

static uint64_t get_seq(ch_channel_t *c)
{
    ch_msg_t *m;
    cr_err_t e = {0};
    ASSERT_OK(ch_get(c, &m, 5000, &e), &e);
    uint64_t seq = m->seq, v;
    memcpy(&v, m->data, sizeof v);
    ASSERT_INT_EQ(v, seq);
    ch_msg_free(m);
    return seq;
}

/* Returns once the relay forwards to hub `to`: a put through the tunnel from a
 * hub of its own, acknowledged. (The hub's link is up once its hello is sent; a
 * raw peer writing to it before the relay has read that hello would be cut off.) */
static void relay_knows(ch_relay_t *r, ch_hub_t *to)
{
    cr_err_t e = {0};
    ch_hub_t *hp = hub("warmup", NULL, ch_relay_addr(r));
    ch_channel_t *c;
    ASSERT_OK(ch_channel_create(to, "warmup", NULL, &c, &e), &e);
    ch_producer_t *p = producer(hp, to, "warmup", CH_ROUTE_TUNNEL);
    int one = 1;
    ASSERT_OK(ch_put(p, &one, sizeof one, 1, 10000, &e), &e);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
}

/* What a hub does with one producer's frames while their channel is full, driven
 * by a raw peer on the relay: they wait in order, each acknowledged only once
 * queued; a resend of one still waiting gets no ack (its waiting copy will), a
 * resend of one delivered is acknowledged again, and a frame past a gap is dropped
 * until what is missing comes, so the channel gets each seq once, in order. */
static void test_tunnel_inbox_order(void)
{
    ch_relay_t *r;
    cr_err_t e = {0};
    ASSERT_OK(ch_relay_create("127.0.0.1:0", &r, &e), &e);
    ch_hub_t *hc = hub("robot1", NULL, ch_relay_addr(r));
    ASSERT_OK(ch_hub_relay_wait(hc, 5000, &e), &e);
    relay_knows(r, hc);
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 1};
    ASSERT_OK(ch_channel_create(hc, "act", &co, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(hc, &w);
    char dst[40];
    snprintf(dst, sizeof dst, "h-%016llx", (unsigned long long)w.process);
    rpc_opts_t ro = {0};
    rpc_channel_t *rch;
    ASSERT_OK(rpc_channel_create(&rch, ch_relay_addr(r), &ro, &e), &e);
    acks_seen_t acks = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    rpc_stream_cbs_t cbs = {.on_message = record_acks, .user = &acks};
    rpc_stream_t *st;
    ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.Relay/Link", &corral__v1__relay_frame__descriptor, &cbs,
                              30000, &e), &e);
    Corral__V1__RelayFrame hello = CORRAL__V1__RELAY_FRAME__INIT;
    hello.hello = "p-rawpeer";
    ASSERT_OK(rpc_stream_send(st, &hello.base, 1000, &e), &e);

    /* 1 fills the channel; 2 and 3 wait at the hub, unacknowledged. */
    for (uint64_t s = 1; s <= 3; s++) raw_data(st, dst, s);
    acks_seen_t a = acks_wait(&acks, 1);
    ASSERT_INT_EQ(a.high, 1);
    cr_sleep_ns(200 * CR_NS_PER_MS);
    a = acks_wait(&acks, 0);
    ASSERT_INT_EQ(a.n, 1);
    /* Resends: 2 waits already (no ack), 1 was delivered (acked again). */
    raw_data(st, dst, 2);
    raw_data(st, dst, 1);
    a = acks_wait(&acks, 2);
    ASSERT_INT_EQ(a.n, 2);
    ASSERT_INT_EQ(a.high, 1);
    /* 5 comes before 4: dropped, as if lost; then 4. */
    raw_data(st, dst, 5);
    raw_data(st, dst, 4);
    for (uint64_t s = 1; s <= 4; s++) ASSERT_INT_EQ(get_seq(c), s);
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(c, &m, 300, &e), CR_ETIMEDOUT);
    a = acks_wait(&acks, 5);
    ASSERT_INT_EQ(a.high, 4);
    /* Sent again, as a producer does when acknowledgements stop at 4. */
    raw_data(st, dst, 5);
    ASSERT_INT_EQ(get_seq(c), 5);
    a = acks_wait(&acks, 6);
    ASSERT_INT_EQ(a.high, 5);
    ch_stats_t stt;
    ch_channel_stats(c, &stt);
    ASSERT_INT_EQ(stt.accepted, 5);
    rpc_stream_destroy(st);
    rpc_channel_destroy(rch);
    ch_channel_destroy(c);
    ch_hub_destroy(hc);
    ch_relay_destroy(r);
}

/* Opens a raw Link stream, sends f, and returns the status the relay ended it with. */
static rpc_code_t relay_verdict(const char *addr, const Corral__V1__RelayFrame *f, cr_err_t *e)
{
    rpc_opts_t ro = {0};
    rpc_channel_t *rch;
    ASSERT_OK(rpc_channel_create(&rch, addr, &ro, e), e);
    rpc_stream_cbs_t cbs = {0};
    rpc_stream_t *st;
    ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.Relay/Link", &corral__v1__relay_frame__descriptor,
                              &cbs, 10000, e), e);
    ASSERT_OK(rpc_stream_send(st, &f->base, 1000, e), e);
    rpc_code_t code = RPC_OK;
    rpc_stream_wait(st, 10000, &code, e);
    rpc_stream_destroy(st);
    rpc_channel_destroy(rch);
    return code;
}

static void test_relay_refuses_bad_peers(void)
{
    ch_relay_t *r;
    cr_err_t e = {0};
    ASSERT_OK(ch_relay_create("127.0.0.1:0", &r, &e), &e);
    ch_hub_t *hc = hub("robot1", NULL, ch_relay_addr(r));
    ch_hub_t *hp = hub("gpu1", NULL, ch_relay_addr(r));
    ch_channel_t *c;
    ASSERT_OK(ch_channel_create(hc, "act", NULL, &c, &e), &e);
    /* A frame before hello. */
    Corral__V1__ChFrame body = CORRAL__V1__CH_FRAME__INIT;
    Corral__V1__RelayFrame f = CORRAL__V1__RELAY_FRAME__INIT;
    f.dst = "h-0000000000000001";
    f.frame = &body;
    ASSERT_INT_EQ(relay_verdict(ch_relay_addr(r), &f, &e), RPC_FAILED_PRECONDITION);
    ASSERT_TRUE(strstr(e.msg, "hello") != NULL);
    /* A name that is far too long. */
    Corral__V1__RelayFrame h = CORRAL__V1__RELAY_FRAME__INIT;
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    h.hello = longname;
    ASSERT_INT_EQ(relay_verdict(ch_relay_addr(r), &h, &e), RPC_INVALID_ARGUMENT);
    /* Bytes that are no RelayFrame. */
    {
        rpc_opts_t ro = {0};
        rpc_channel_t *rch;
        ASSERT_OK(rpc_channel_create(&rch, ch_relay_addr(r), &ro, &e), &e);
        rpc_stream_cbs_t cbs = {0};
        rpc_stream_t *st;
        ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.Relay/Link", &corral__v1__relay_frame__descriptor,
                                  &cbs, 10000, &e), &e);
        rpc_out_t *junk = rpc_out_create();
        static const uint8_t garbage[] = {0x0b, 0x22, 0xff}; /* a group start, then a cut-off field */
        rpc_out_copy(junk, garbage, sizeof garbage);
        ASSERT_OK(rpc_stream_send_out(st, junk, 1000, &e), &e);
        rpc_code_t code = RPC_OK;
        rpc_stream_wait(st, 10000, &code, &e);
        ASSERT_INT_EQ(code, RPC_INVALID_ARGUMENT);
        ASSERT_TRUE(strstr(e.msg, "malformed RelayFrame") != NULL);
        rpc_stream_destroy(st);
        rpc_channel_destroy(rch);
    }
    /* The tunnel keeps working for everyone else. */
    ch_producer_t *p = producer(hp, hc, "act", CH_ROUTE_TUNNEL);
    put_n(p, 0, 20, 100);
    expect_seq(c, p, 20);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
    ch_relay_destroy(r);
}

static void test_tunnel_relay_restart(void)
{
    ch_relay_t *r;
    cr_err_t e = {0};
    ASSERT_OK(ch_relay_create("127.0.0.1:0", &r, &e), &e);
    char addr[64];
    snprintf(addr, sizeof addr, "%s", ch_relay_addr(r));
    ch_hub_t *hc = hub("robot1", NULL, addr);
    ch_hub_t *hp = hub("gpu1", NULL, addr);
    ch_channel_t *c;
    ASSERT_OK(ch_channel_create(hc, "act", NULL, &c, &e), &e);
    ch_producer_t *p = producer(hp, hc, "act", CH_ROUTE_TUNNEL);
    put_n(p, 0, 100, 1000);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    /* The relay dies with messages in flight, and comes back on the same port. */
    put_n(p, 100, 130, 1000);
    ch_relay_destroy(r);
    put_n(p, 130, 150, 1000); /* accepted into the window while the relay is down */
    cr_sleep_ns(300 * CR_NS_PER_MS);
    ASSERT_OK(ch_relay_create(addr, &r, &e), &e);
    put_n(p, 150, 300, 1000);
    ASSERT_OK(ch_producer_flush(p, 20000, &e), &e);
    expect_seq(c, p, 300); /* every one, in order, once */
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(c, &m, 100, &e), CR_ETIMEDOUT);
    ASSERT_TRUE(ch_producer_reconnects(p) >= 1);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
    ch_relay_destroy(r);
}

/* Writes n messages in place through p: each reserved at 2 x len, committed at
 * len, the first int the index. */
static void put_in_place(ch_producer_t *p, int from, int to, size_t len)
{
    cr_err_t e = {0};
    for (int i = from; i < to; i++) {
        uint8_t *buf;
        ASSERT_OK(ch_put_reserve(p, 2 * len, (void **)&buf, 10000, &e), &e);
        memset(buf, (int)(i & 0xff), 2 * len);
        memcpy(buf, &i, sizeof i);
        ASSERT_OK(ch_put_commit(p, len, 1, &e), &e);
    }
}

static void test_remote_in_place(void)
{
    /* Written in place on both remote routes: the bytes the route sends from and
     * keeps for resending are the ones the producer wrote. */
    ch_relay_t *r;
    cr_err_t e = {0};
    ASSERT_OK(ch_relay_create("127.0.0.1:0", &r, &e), &e);
    ch_hub_t *hd = hub("gpu1", "127.0.0.1:0", NULL);
    ch_hub_t *ht = hub("robot1", NULL, ch_relay_addr(r));
    ch_hub_t *hp = hub("gpu2", NULL, ch_relay_addr(r));
    ch_channel_t *cd, *ct;
    ch_opts_t o = {.capacity = 64};
    ASSERT_OK(ch_channel_create(hd, "img", &o, &cd, &e), &e);
    ASSERT_OK(ch_channel_create(ht, "img", &o, &ct, &e), &e);
    ch_producer_t *pd = producer(hp, hd, "img", CH_ROUTE_DIRECT);
    ch_producer_t *pt = producer(hp, ht, "img", CH_ROUTE_TUNNEL);
    put_in_place(pd, 0, 40, 150000);
    put_in_place(pt, 0, 40, 150000);
    /* An abandoned reservation sends nothing and uses no number. */
    void *buf;
    ASSERT_OK(ch_put_reserve(pd, 100, &buf, 1000, &e), &e);
    ch_put_abort(pd);
    put_in_place(pd, 40, 41, 150000);
    ch_channel_t *cs[2] = {cd, ct};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < (k ? 40 : 41); i++) {
            ch_msg_t *m;
            ASSERT_OK(ch_get_view(cs[k], &m, 10000, &e), &e);
            int v;
            memcpy(&v, m->data, sizeof v);
            ASSERT_INT_EQ(v, i);
            ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
            ASSERT_INT_EQ(m->len, 150000);
            ASSERT_INT_EQ(((uint8_t *)m->data)[m->len - 1], (uint8_t)(i & 0xff));
            ch_msg_free(m);
        }
    }
    ASSERT_OK(ch_producer_flush(pd, 10000, &e), &e);
    ASSERT_OK(ch_producer_flush(pt, 10000, &e), &e);
    ch_producer_close(pd);
    ch_producer_close(pt);
    ch_channel_destroy(cd);
    ch_channel_destroy(ct);
    ch_hub_destroy(hp);
    ch_hub_destroy(ht);
    ch_hub_destroy(hd);
    ch_relay_destroy(r);
}

typedef struct errors_seen {
    pthread_mutex_t mu;
    int n;
    char msg[256];
} errors_seen_t;

static void count_errors(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    errors_seen_t *s = user;
    const Corral__V1__RelayFrame *rf = (const Corral__V1__RelayFrame *)msg;
    if (!rf->frame || rf->frame->kind != CORRAL__V1__CH_FRAME__KIND__ERROR) return;
    pthread_mutex_lock(&s->mu);
    s->n++;
    snprintf(s->msg, sizeof s->msg, "%s", rf->frame->message ? rf->frame->message : "");
    pthread_mutex_unlock(&s->mu);
}

static void test_tunnel_bad_frame(void)
{
    /* A producer behind the relay sends a frame its consumer cannot read: the
     * error comes back to that producer through the relay; the link stays up for
     * the others. */
    ch_relay_t *r;
    cr_err_t e = {0};
    ASSERT_OK(ch_relay_create("127.0.0.1:0", &r, &e), &e);
    ch_hub_t *hc = hub("robot1", NULL, ch_relay_addr(r));
    ch_hub_t *hp = hub("gpu1", NULL, ch_relay_addr(r));
    ch_channel_t *c;
    ASSERT_OK(ch_channel_create(hc, "act", NULL, &c, &e), &e);
    ch_producer_t *p = producer(hp, hc, "act", CH_ROUTE_TUNNEL);
    put_n(p, 0, 5, 100); /* the consumer's link is up once these arrive */
    expect_seq(c, p, 5);
    ch_where_t w;
    ch_hub_where(hc, &w);
    rpc_opts_t ro = {0};
    rpc_channel_t *rch;
    ASSERT_OK(rpc_channel_create(&rch, ch_relay_addr(r), &ro, &e), &e);
    errors_seen_t seen = {PTHREAD_MUTEX_INITIALIZER, 0, ""};
    rpc_stream_cbs_t cbs = {.on_message = count_errors, .user = &seen};
    rpc_stream_t *st;
    ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.Relay/Link", &corral__v1__relay_frame__descriptor,
                              &cbs, 20000, &e), &e);
    Corral__V1__RelayFrame hello = CORRAL__V1__RELAY_FRAME__INIT;
    hello.hello = "p-badpeer";
    ASSERT_OK(rpc_stream_send(st, &hello.base, 1000, &e), &e);
    char dst[40];
    snprintf(dst, sizeof dst, "h-%016llx", (unsigned long long)w.process);
    /* A RelayFrame {dst, frame = bytes that are no ChFrame}. */
    uint8_t junk[64];
    size_t n = 0;
    junk[n++] = 3 << 3 | 2;
    junk[n++] = (uint8_t)strlen(dst);
    memcpy(junk + n, dst, strlen(dst));
    n += strlen(dst);
    junk[n++] = 4 << 3 | 2;
    junk[n++] = 3;
    junk[n++] = 0x22; /* producer (field 4) with the wrong wire type */
    junk[n++] = 0x01;
    junk[n++] = 'a';
    rpc_out_t *o = rpc_out_create();
    rpc_out_copy(o, junk, n);
    ASSERT_OK(rpc_stream_send_out(st, o, 1000, &e), &e);
    int64_t end = cr_now_ns() + 10 * CR_NS_PER_S;
    int errors = 0;
    while (!errors && cr_now_ns() < end) {
        cr_sleep_ns(10 * CR_NS_PER_MS);
        pthread_mutex_lock(&seen.mu);
        errors = seen.n;
        pthread_mutex_unlock(&seen.mu);
    }
    ASSERT_INT_EQ(errors, 1);
    ASSERT_TRUE(strstr(seen.msg, "malformed ChFrame") != NULL);
    rpc_stream_destroy(st);
    rpc_channel_destroy(rch);
    put_n(p, 5, 20, 100);
    for (int i = 5; i < 20; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 10000, &e), &e);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ch_msg_free(m);
    }
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
    ch_relay_destroy(r);
}

static void test_wsync_over_direct(void)
{
    ch_hub_t *hc = hub("gpu2", "127.0.0.1:0", NULL);
    ch_hub_t *hp = hub("gpu1", NULL, NULL);
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(hc, "weights", NULL, &c, &e), &e);
    ch_wsync_sub_t *s;
    ASSERT_OK(ch_wsync_sub_create(c, &s, &e), &e);
    ch_producer_t *p = producer(hp, hc, "weights", CH_ROUTE_DIRECT);
    ch_wsync_pub_t *pub;
    ch_wsync_opts_t o = {.chunk_bytes = 65536};
    ASSERT_OK(ch_wsync_pub_create(&o, &p, 1, &pub, &e), &e);
    size_t n = 1000000;
    uint8_t *d = malloc(n);
    for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(i * 13);
    ch_tensor_t t = {"w", d, n};
    ASSERT_OK(ch_wsync_publish(pub, 1, &t, 1, &e), &e);
    ASSERT_OK(ch_wsync_sub_wait(s, 1, 20000, &e), &e);
    ch_weights_t *w;
    ASSERT_INT_EQ(ch_wsync_sub_take(s, 0, &w), 1);
    ASSERT_INT_EQ(w->t[0].bytes, n);
    ASSERT_TRUE(memcmp(w->t[0].data, d, n) == 0);
    ch_weights_free(w);
    ch_wsync_pub_destroy(pub);
    ch_wsync_sub_destroy(s);
    free(d);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"direct_in_order", test_direct_in_order},
        {"direct_bad_input", test_direct_bad_input},
        {"direct_reconnects_and_resends", test_direct_reconnects_and_resends},
        {"consumer_that_never_reads", test_consumer_that_never_reads},
        {"tunnel_in_order", test_tunnel_in_order},
        {"tunnel_full_channel_isolated", test_tunnel_full_channel_isolated},
        {"tunnel_inbox_order", test_tunnel_inbox_order},
        {"relay_refuses_bad_peers", test_relay_refuses_bad_peers},
        {"tunnel_relay_restart", test_tunnel_relay_restart},
        {"wsync_over_direct", test_wsync_over_direct},
        {"remote_in_place", test_remote_in_place},
        {"tunnel_bad_frame", test_tunnel_bad_frame},
        {NULL, NULL},
    };
    return test_main("channels_remote", cases, argc, argv);
}
