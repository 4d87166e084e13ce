/* test_queue.c - the channel queue and the in-process route: FIFO order, back-
 * pressure with time-outs, latest-wins, batches by count and by weight,
 * duplicates dropped by (producer, seq), writing in place (reserve / commit /
 * abort), bad input, and the pure router. */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/channel.h"
#include "common/time.h"

#include <pthread.h>
#include <stdlib.h>

static ch_hub_t *hub(const char *node)
{
    ch_hub_opts_t o = {.node = node, .shm = -1};
    ch_hub_t *h;
    cr_err_t e = {0};
    ASSERT_OK(ch_hub_create(&o, &h, &e), &e);
    return h;
}

static ch_producer_t *local_producer(ch_hub_t *h, const char *name, const ch_producer_opts_t *po)
{
    ch_where_t w;
    ch_hub_where(h, &w);
    ch_producer_t *p;
    cr_err_t e = {0};
    ASSERT_OK(ch_producer_open(h, name, &w, po, &p, &e), &e);
    ASSERT_INT_EQ(ch_producer_route(p), CH_ROUTE_INPROC);
    return p;
}

static void test_fifo_and_timeouts(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 4};
    ASSERT_OK(ch_channel_create(h, "obs", &o, &c, &e), &e);
    ch_producer_t *p = local_producer(h, "obs", NULL);
    for (int i = 0; i < 4; i++) ASSERT_OK(ch_put(p, &i, sizeof i, 1, 0, &e), &e);
    /* Full: put waits for room, then says so. */
    int64_t t0 = cr_now_ns();
    int v = 99;
    ASSERT_INT_EQ(ch_put(p, &v, sizeof v, 1, 50, &e), CR_ETIMEDOUT);
    ASSERT_TRUE(cr_now_ns() - t0 >= 45 * CR_NS_PER_MS);
    ASSERT_TRUE(strstr(e.msg, "full") != NULL);
    for (int i = 0; i < 4; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 0, &e), &e);
        ASSERT_INT_EQ(*(int *)m->data, i);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ASSERT_INT_EQ(m->producer, ch_producer_id(p));
        ch_msg_free(m);
    }
    ch_msg_t *m;
    t0 = cr_now_ns();
    ASSERT_INT_EQ(ch_get(c, &m, 30, &e), CR_ETIMEDOUT);
    ASSERT_TRUE(cr_now_ns() - t0 >= 25 * CR_NS_PER_MS);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

typedef struct slow_reader { ch_channel_t *c; int got; } slow_reader_t;

static void *reader_main(void *arg)
{
    slow_reader_t *r = arg;
    cr_err_t e = {0};
    for (;;) {
        ch_msg_t *m;
        cr_sleep_ns(1 * CR_NS_PER_MS);
        if (ch_get(r->c, &m, 2000, &e) != 0) break;
        int v = *(int *)m->data;
        ch_msg_free(m);
        if (v != r->got) break;
        if (++r->got == 200) break;
    }
    return NULL;
}

static void test_backpressure_blocks_then_flows(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 2};
    ASSERT_OK(ch_channel_create(h, "obs", &o, &c, &e), &e);
    ch_producer_t *p = local_producer(h, "obs", NULL);
    slow_reader_t r = {c, 0};
    pthread_t t;
    pthread_create(&t, NULL, reader_main, &r);
    for (int i = 0; i < 200; i++) ASSERT_OK(ch_put(p, &i, sizeof i, 1, 5000, &e), &e);
    pthread_join(t, NULL);
    ASSERT_INT_EQ(r.got, 200);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_latest_wins(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.latest_wins = 1};
    ASSERT_OK(ch_channel_create(h, "weights", &o, &c, &e), &e);
    ch_producer_t *p = local_producer(h, "weights", NULL);
    for (int i = 0; i < 10; i++) ASSERT_OK(ch_put(p, &i, sizeof i, 1, 0, &e), &e); /* never blocks */
    ch_msg_t *m;
    ASSERT_OK(ch_get(c, &m, 0, &e), &e);
    ASSERT_INT_EQ(*(int *)m->data, 9);
    ch_msg_free(m);
    ASSERT_INT_EQ(ch_get(c, &m, 0, &e), CR_ETIMEDOUT);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.replaced, 9);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_reserve_commit(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 2};
    ASSERT_OK(ch_channel_create(h, "obs", &o, &c, &e), &e);
    ch_producer_t *p = local_producer(h, "obs", NULL);
    ch_producer_t *q = local_producer(h, "obs", NULL);
    void *buf;
    /* Commit before reserve, reserve twice, commit more than reserved: refused. */
    ASSERT_INT_EQ(ch_put_commit(p, 1, 1, &e), CR_EINVAL);
    ASSERT_OK(ch_put_reserve(p, 100, &buf, 0, &e), &e);
    ASSERT_INT_EQ(ch_put_reserve(p, 10, &buf, 0, &e), CR_EINVAL);
    ASSERT_INT_EQ(ch_put(p, "x", 1, 1, 0, &e), CR_EINVAL); /* no other put meanwhile */
    memcpy(buf, "hello", 5);
    ASSERT_OK(ch_put_commit(p, 5, 2.0, &e), &e); /* fewer bytes than reserved */
    /* A reservation holds its slot: with one message queued and one slot held,
     * another producer finds the channel full. */
    ASSERT_OK(ch_put_reserve(p, 8, &buf, 0, &e), &e);
    ASSERT_INT_EQ(ch_put(q, "y", 1, 1, 20, &e), CR_ETIMEDOUT);
    ch_put_abort(p); /* the slot is free again, nothing was queued */
    ASSERT_OK(ch_put(q, "y", 1, 1, 0, &e), &e);
    ASSERT_INT_EQ(ch_put_commit(p, 1, 1, &e), CR_EINVAL);
    ASSERT_INT_EQ(ch_put_reserve(p, (16u << 20) + 1, &buf, 0, &e), CR_ETOOBIG);
    ch_msg_t *m;
    ASSERT_OK(ch_get(c, &m, 0, &e), &e);
    ASSERT_INT_EQ(m->len, 5);
    ASSERT_TRUE(memcmp(m->data, "hello", 5) == 0);
    ASSERT_INT_EQ(m->seq, 1);
    ASSERT_NEAR(m->weight, 2.0, 0);
    ch_msg_free(m);
    ASSERT_OK(ch_get(c, &m, 0, &e), &e);
    ASSERT_INT_EQ(m->producer, ch_producer_id(q));
    ch_msg_free(m);
    /* The aborted reservation used no sequence number. */
    ASSERT_OK(ch_put(p, "z", 1, 1, 0, &e), &e);
    ASSERT_OK(ch_get(c, &m, 0, &e), &e);
    ASSERT_INT_EQ(m->seq, 2);
    ch_msg_free(m);
    /* Closing a producer with a reservation open gives the slot back. */
    ASSERT_OK(ch_put_reserve(q, 8, &buf, 0, &e), &e);
    ch_producer_close(q);
    ASSERT_OK(ch_put(p, "a", 1, 1, 0, &e), &e);
    ASSERT_OK(ch_put(p, "b", 1, 1, 0, &e), &e);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.queued, 2);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_get_batch_count_and_weight(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(h, "tr", NULL, &c, &e), &e);
    ch_producer_t *p = local_producer(h, "tr", NULL);
    double w[] = {1, 2, 3, 4, 10, 1};
    for (int i = 0; i < 6; i++) ASSERT_OK(ch_put(p, &i, sizeof i, w[i], 0, &e), &e);
    ch_msg_t *out[8];
    size_t n;
    /* By count. */
    ASSERT_OK(ch_get_batch(c, out, 2, 0, 0, &n, &e), &e);
    ASSERT_INT_EQ(n, 2);
    ASSERT_INT_EQ(*(int *)out[1]->data, 1);
    for (size_t i = 0; i < n; i++) ch_msg_free(out[i]);
    /* By weight: 3 + 4 = 7 <= 8; 10 would exceed it. */
    ASSERT_OK(ch_get_batch(c, out, 8, 8.0, 0, &n, &e), &e);
    ASSERT_INT_EQ(n, 2);
    ASSERT_INT_EQ(*(int *)out[0]->data, 2);
    for (size_t i = 0; i < n; i++) ch_msg_free(out[i]);
    /* A single message heavier than the limit still comes out, alone. */
    ASSERT_OK(ch_get_batch(c, out, 8, 5.0, 0, &n, &e), &e);
    ASSERT_INT_EQ(n, 1);
    ASSERT_INT_EQ(*(int *)out[0]->data, 4);
    ch_msg_free(out[0]);
    /* Not full by count: waits the time-out, then returns what is there. */
    int64_t t0 = cr_now_ns();
    ASSERT_OK(ch_get_batch(c, out, 8, 0, 40, &n, &e), &e);
    ASSERT_TRUE(cr_now_ns() - t0 >= 35 * CR_NS_PER_MS);
    ASSERT_INT_EQ(n, 1);
    ch_msg_free(out[0]);
    ASSERT_INT_EQ(ch_get_batch(c, out, 8, 0, 10, &n, &e), CR_ETIMEDOUT);
    ASSERT_INT_EQ(n, 0);
    ASSERT_INT_EQ(ch_get_batch(c, out, 0, 0, 10, &n, &e), CR_EINVAL);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_duplicates_dropped(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(h, "tr", NULL, &c, &e), &e);
    /* A producer restarted with the same id resends seq 2..3 and goes on to 4. */
    ch_producer_opts_t po = {.id = 42};
    ch_producer_t *p = local_producer(h, "tr", &po);
    for (int i = 1; i <= 3; i++) ASSERT_OK(ch_put(p, &i, sizeof i, 1, 0, &e), &e);
    ch_producer_close(p);
    po.next_seq = 2;
    p = local_producer(h, "tr", &po);
    for (int i = 2; i <= 4; i++) ASSERT_OK(ch_put(p, &i, sizeof i, 1, 0, &e), &e);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.accepted, 4);
    ASSERT_INT_EQ(st.duplicates, 2);
    for (int i = 1; i <= 4; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 0, &e), &e);
        ASSERT_INT_EQ(*(int *)m->data, i);
        ASSERT_INT_EQ(m->seq, (uint64_t)i);
        ch_msg_free(m);
    }
    /* Another producer's seq 1 is not a duplicate. */
    ch_producer_t *q = local_producer(h, "tr", NULL);
    ASSERT_OK(ch_put(q, "x", 1, 1, 0, &e), &e);
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.queued, 1);
    ch_producer_close(q);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_bad_input(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_INT_EQ(ch_channel_create(h, "Bad Name", NULL, &c, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "Bad Name") != NULL);
    ch_opts_t o = {.max_msg_bytes = 100};
    ASSERT_OK(ch_channel_create(h, "small", &o, &c, &e), &e);
    ch_channel_t *c2;
    ASSERT_INT_EQ(ch_channel_create(h, "small", NULL, &c2, &e), CR_EEXIST);
    ch_where_t w;
    ch_hub_where(h, &w);
    ch_producer_t *p;
    ASSERT_INT_EQ(ch_producer_open(h, "nosuch", &w, NULL, &p, &e), CR_ENOENT);
    ASSERT_TRUE(strstr(e.msg, "nosuch") != NULL);
    ASSERT_INT_EQ(ch_channel_find(h, "nosuch", &c2, &e), CR_ENOENT);
    /* The producer's own limit, then the channel's. */
    ch_producer_opts_t po = {.max_msg_bytes = 1000};
    p = local_producer(h, "small", &po);
    char buf[2000] = {0};
    ASSERT_INT_EQ(ch_put(p, buf, 1500, 1, 0, &e), CR_ETOOBIG);
    ASSERT_INT_EQ(ch_put(p, buf, 500, 1, 0, &e), CR_ETOOBIG);
    ASSERT_TRUE(strstr(e.msg, "500 bytes") != NULL);
    /* And the channel keeps working. */
    ASSERT_OK(ch_put(p, buf, 50, 1, 0, &e), &e);
    ch_msg_t *m;
    ASSERT_OK(ch_get(c, &m, 0, &e), &e);
    ASSERT_INT_EQ(m->len, 50);
    ch_msg_free(m);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.rejected, 1);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

typedef struct closer { ch_channel_t *c; int rc; } closer_t;

static void *blocked_get(void *arg)
{
    closer_t *x = arg;
    ch_msg_t *m;
    x->rc = ch_get(x->c, &m, -1, NULL);
    return NULL;
}

static void test_destroy_wakes_getters(void)
{
    ch_hub_t *h = hub("n1");
    cr_err_t e = {0};
    closer_t x = {0};
    ASSERT_OK(ch_channel_create(h, "tr", NULL, &x.c, &e), &e);
    pthread_t t;
    pthread_create(&t, NULL, blocked_get, &x);
    cr_sleep_ns(20 * CR_NS_PER_MS);
    /* destroy frees the channel; the getter must have left first: close by hand. */
    ch_channel_destroy(x.c);
    pthread_join(t, NULL);
    ASSERT_INT_EQ(x.rc, CR_ECLOSED);
    ch_hub_destroy(h);
}

static void test_router(void)
{
    ch_where_t cons = {.node = "gpu1", .process = 7, .addr = "10.0.0.1:7000", .inbound = 1};
    ch_where_t same_proc = {.node = "gpu1", .process = 7};
    ch_where_t same_node = {.node = "gpu1", .process = 8};
    ch_where_t other = {.node = "robot1", .process = 9};
    ASSERT_INT_EQ(ch_route_pick(&same_proc, &cons), CH_ROUTE_INPROC);
    ASSERT_INT_EQ(ch_route_pick(&same_node, &cons), CH_ROUTE_SHM);
    ASSERT_INT_EQ(ch_route_pick(&other, &cons), CH_ROUTE_DIRECT);
    ch_where_t nat = {.node = "robot2", .process = 3, .addr = "", .inbound = 0};
    ASSERT_INT_EQ(ch_route_pick(&cons, &nat), CH_ROUTE_TUNNEL);
    /* Inbound without an address cannot be dialled either. */
    nat.inbound = 1;
    ASSERT_INT_EQ(ch_route_pick(&cons, &nat), CH_ROUTE_TUNNEL);
    /* Behind NAT still talks shared memory to its own node. */
    ch_where_t nat_peer = {.node = "robot2", .process = 4};
    ASSERT_INT_EQ(ch_route_pick(&nat_peer, &nat), CH_ROUTE_SHM);
    ASSERT_STR_EQ(ch_route_name(CH_ROUTE_TUNNEL), "tunnel");
}

static void test_replica_pick(void)
{
    ch_where_t reps[3] = {{.node = "gpu1"}, {.node = "robot1"}, {.node = "robot2"}};
    ASSERT_INT_EQ(ch_replica_pick(reps, 3, "robot1"), 1);
    ASSERT_INT_EQ(ch_replica_pick(reps, 3, "robot2"), 2);
    ASSERT_INT_EQ(ch_replica_pick(reps, 0, "robot2"), -1);
    /* No replica on the producer's node: none is "its" replica (it writes to all). */
    ASSERT_INT_EQ(ch_replica_pick(reps, 3, "robot9"), -1);
    ASSERT_STR_EQ(ch_route_name(CH_ROUTE_FANOUT), "fanout");
}

static void test_replicated_producer_uses_local(void)
{
    ch_hub_t *h = hub("robot1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(h, "act", NULL, &c, &e), &e);
    ch_where_t reps[2] = {{.node = "gpu1", .process = 1, .addr = "10.0.0.1:1", .inbound = 1}};
    ch_hub_where(h, &reps[1]);
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open_replicated(h, "act", reps, 2, NULL, &p, &e), &e);
    ASSERT_INT_EQ(ch_producer_route(p), CH_ROUTE_INPROC);
    ASSERT_OK(ch_put(p, "a", 1, 1, 0, &e), &e);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.queued, 1);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"fifo_and_timeouts", test_fifo_and_timeouts},
        {"backpressure_blocks_then_flows", test_backpressure_blocks_then_flows},
        {"latest_wins", test_latest_wins},
        {"reserve_commit", test_reserve_commit},
        {"get_batch_count_and_weight", test_get_batch_count_and_weight},
        {"duplicates_dropped", test_duplicates_dropped},
        {"bad_input", test_bad_input},
        {"destroy_wakes_getters", test_destroy_wakes_getters},
        {"router", test_router},
        {"replica_pick", test_replica_pick},
        {"replicated_producer_uses_local", test_replicated_producer_uses_local},
        {NULL, NULL},
    };
    return test_main("channels_queue", cases, argc, argv);
}
