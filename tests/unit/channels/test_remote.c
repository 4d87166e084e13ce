/* test_remote.c - the routes between nodes over real gRPC on loopback: the direct
 * stream and the stream tunnelled through a relay. Order and completeness, bad input
 * (unknown channel, message over the consumer's limit, a peer sending malformed
 * frames, a peer that stalls) answered to that peer only, and a relay restart in the
 * middle of a transfer: the producers reconnect, resend what was not acknowledged,
 * and the consumer holds every message exactly once. */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/channel.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "corral/v1/channel.pb-c.h"

#include <stdlib.h>

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
        {"consumer_that_never_reads", test_consumer_that_never_reads},
        {"tunnel_in_order", test_tunnel_in_order},
        {"tunnel_relay_restart", test_tunnel_relay_restart},
        {"wsync_over_direct", test_wsync_over_direct},
        {NULL, NULL},
    };
    return test_main("channels_remote", cases, argc, argv);
}
