/* test_replica.c - a replicated channel over real routes on loopback: replicas on
 * three nodes (direct gRPC between them), producers on a replica's node (one in
 * the same process, one in another "process" of that node, over shared memory) and
 * one on a node without a replica (it writes to all). Every replica must receive
 * every message exactly once, in order per producer; when a replica goes away
 * mid-transfer (its channel closed, or its process SIGKILLed) the others still get
 * everything and nobody waits for it much longer than the peer time-out. */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/channel.h"
#include "common/time.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { NREP = 3, NPROD = 3 };

typedef struct cluster {
    ch_hub_t *hub[NREP];        /* replica nodes a, b, c */
    ch_channel_t *c[NREP];
    ch_where_t where[NREP];
    ch_hub_t *ha2, *hd;         /* another process on node a; node d without a replica */
    ch_producer_t *p[NPROD];    /* on a (shm), on b (in-process), on d (fan-out) */
} cluster_t;

static const char *nodes[NREP] = {"a", "b", "c"};

static void cluster_start(cluster_t *k, int64_t peer_timeout_ms)
{
    cr_err_t e = {0};
    ch_opts_t co = {.capacity = 4096};
    for (int i = 0; i < NREP; i++) {
        ch_hub_opts_t ho = {.node = nodes[i], .listen = "127.0.0.1:0", .reconnect_ms = 50};
        ASSERT_OK(ch_hub_create(&ho, &k->hub[i], &e), &e);
        ASSERT_OK(ch_channel_create(k->hub[i], "w", &co, &k->c[i], &e), &e);
        ch_hub_where(k->hub[i], &k->where[i]);
    }
    ch_replica_opts_t ro = {.peer_timeout_ms = peer_timeout_ms};
    for (int i = 0; i < NREP; i++) ASSERT_OK(ch_channel_replicate(k->c[i], k->where, NREP, &ro, &e), &e);
    ch_hub_opts_t a2 = {.node = "a", .reconnect_ms = 50}, d = {.node = "d", .shm = -1, .reconnect_ms = 50};
    ASSERT_OK(ch_hub_create(&a2, &k->ha2, &e), &e);
    ASSERT_OK(ch_hub_create(&d, &k->hd, &e), &e);
    ch_producer_opts_t po = {.peer_timeout_ms = peer_timeout_ms, .window = 128};
    ASSERT_OK(ch_producer_open_replicated(k->ha2, "w", k->where, NREP, &po, &k->p[0], &e), &e);
    ASSERT_OK(ch_producer_open_replicated(k->hub[1], "w", k->where, NREP, &po, &k->p[1], &e), &e);
    ASSERT_OK(ch_producer_open_replicated(k->hd, "w", k->where, NREP, &po, &k->p[2], &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(k->p[0])), "shm");
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(k->p[1])), "inproc");
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(k->p[2])), "fanout");
}

static void cluster_stop(cluster_t *k)
{
    for (int i = 0; i < NPROD; i++) ch_producer_close(k->p[i]);
    ch_hub_destroy(k->hd);
    ch_hub_destroy(k->ha2);
    for (int i = 0; i < NREP; i++) {
        ch_channel_destroy(k->c[i]);
        ch_hub_destroy(k->hub[i]);
    }
}

/* Producer k's message i: i first, then bytes that depend on both, 100..5000 long. */
static size_t msg_len(int k, int i) { return 100 + (size_t)((i * 37 + k * 11) % 4900); }

static void put_range(cluster_t *k, int from, int to)
{
    cr_err_t e = {0};
    uint8_t buf[5000];
    for (int i = from; i < to; i++) {
        for (int j = 0; j < NPROD; j++) {
            size_t len = msg_len(j, i);
            memset(buf, (i + j) & 0xff, len);
            memcpy(buf, &i, sizeof i);
            ASSERT_OK(ch_put(k->p[j], buf, len, 1, 10000, &e), &e);
        }
    }
}

/* Reads n messages of each producer from replica r, each once and in order. */
static void expect_all(cluster_t *k, int r, int n)
{
    cr_err_t e = {0};
    int next[NPROD] = {0};
    for (int got = 0; got < NPROD * n; got++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(k->c[r], &m, 15000, &e), &e);
        int j = -1;
        for (int q = 0; q < NPROD; q++)
            if (m->producer == ch_producer_id(k->p[q])) j = q;
        ASSERT_TRUE(j >= 0);
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, next[j]);
        ASSERT_INT_EQ(m->seq, (uint64_t)v + 1);
        ASSERT_INT_EQ(m->len, msg_len(j, v));
        ASSERT_INT_EQ(((uint8_t *)m->data)[m->len - 1], (uint8_t)((v + j) & 0xff));
        next[j]++;
        ch_msg_free(m);
    }
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(k->c[r], &m, 300, &e), CR_ETIMEDOUT); /* nothing twice */
}

static void test_every_replica_gets_everything(void)
{
    cluster_t k;
    cluster_start(&k, 10000);
    const int n = 300;
    put_range(&k, 0, n);
    cr_err_t e = {0};
    for (int j = 0; j < NPROD; j++) ASSERT_OK(ch_producer_flush(k.p[j], 15000, &e), &e);
    for (int i = 0; i < NREP; i++) ASSERT_OK(ch_channel_replica_flush(k.c[i], 15000, &e), &e);
    for (int i = 0; i < NREP; i++) expect_all(&k, i, n);
    /* Node a's replica forwarded its own producer's messages (and only those) to
     * b and c; the fan-out producer's messages crossed to each replica once. */
    ch_replica_peer_stats_t st[4];
    ASSERT_INT_EQ(ch_channel_replica_stats(k.c[0], st, 4), 2);
    for (int i = 0; i < 2; i++) {
        ASSERT_INT_EQ(st[i].forwarded, n);
        ASSERT_INT_EQ(st[i].gone, 0);
        ASSERT_INT_EQ(st[i].pending, 0);
    }
    ch_stats_t cs;
    ch_channel_stats(k.c[2], &cs);
    ASSERT_INT_EQ(cs.accepted, NPROD * n);
    cluster_stop(&k);
}

static void test_replica_channel_gone(void)
{
    cluster_t k;
    cluster_start(&k, 1000);
    const int n = 200;
    put_range(&k, 0, n / 2);
    cr_err_t e = {0};
    /* Node c's replica closes (its channel refuses the streams from now on). */
    ch_channel_destroy(k.c[2]);
    ch_hub_destroy(k.hub[2]);
    k.c[2] = NULL;
    k.hub[2] = NULL;
    int64_t t0 = cr_now_ns();
    put_range(&k, n / 2, n);
    for (int j = 0; j < NPROD; j++) ASSERT_OK(ch_producer_flush(k.p[j], 15000, &e), &e);
    for (int i = 0; i < 2; i++) ASSERT_OK(ch_channel_replica_flush(k.c[i], 15000, &e), &e);
    double s = (double)(cr_now_ns() - t0) / CR_NS_PER_S;
    fprintf(stderr, "  the others went on %.1f s after node c's channel closed (peer time-out 1 s)\n", s);
    ASSERT_TRUE(s < 8);
    for (int i = 0; i < 2; i++) expect_all(&k, i, n);
    ch_replica_peer_stats_t st[4];
    size_t np = ch_channel_replica_stats(k.c[0], st, 4);
    int c_gone = 0;
    for (size_t i = 0; i < np; i++)
        if (strcmp(st[i].node, "c") == 0) c_gone = st[i].gone;
        else ASSERT_INT_EQ(st[i].gone, 0);
    ASSERT_INT_EQ(c_gone, 1);
    cluster_stop(&k);
}

/* Starts replica c as a process of its own (ch_netns_node replica), replicated with
 * a and b; fills where[2] (its strings in static storage). */
static pid_t spawn_replica_c(cluster_t *k)
{
    static char addr[160], id[3][20], cid_s[20];
    int out[2];
    ASSERT_TRUE(pipe(out) == 0);
    for (int i = 0; i < 2; i++) snprintf(id[i], sizeof id[i], "%016llx", (unsigned long long)k->where[i].process);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        execl(test_build_path("tests/ch_netns_node"), "ch_netns_node", "replica", "c", "w", "a",
              k->where[0].addr, id[0], "b", k->where[1].addr, id[1], (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    ASSERT_TRUE(f != NULL);
    ASSERT_INT_EQ(fscanf(f, "%159s %19s", addr, cid_s), 2);
    fclose(f);
    k->where[2] = (ch_where_t){.node = "c", .process = strtoull(cid_s, NULL, 16), .addr = addr, .inbound = 1};
    return pid;
}

static void test_replica_node_killed(void)
{
    /* Replica c is a process of its own; SIGKILL takes its node away mid-transfer:
     * its connections die and nothing answers there any more. */
    cluster_t k;
    memset(&k, 0, sizeof k);
    cr_err_t e = {0};
    ch_opts_t co = {.capacity = 4096};
    for (int i = 0; i < 2; i++) {
        ch_hub_opts_t ho = {.node = nodes[i], .listen = "127.0.0.1:0", .reconnect_ms = 50};
        ASSERT_OK(ch_hub_create(&ho, &k.hub[i], &e), &e);
        ASSERT_OK(ch_channel_create(k.hub[i], "w", &co, &k.c[i], &e), &e);
        ch_hub_where(k.hub[i], &k.where[i]);
    }
    pid_t kid = spawn_replica_c(&k);
    ch_replica_opts_t ro = {.peer_timeout_ms = 1000};
    for (int i = 0; i < 2; i++) ASSERT_OK(ch_channel_replicate(k.c[i], k.where, NREP, &ro, &e), &e);
    ch_hub_opts_t a2 = {.node = "a", .reconnect_ms = 50}, d = {.node = "d", .shm = -1, .reconnect_ms = 50};
    ASSERT_OK(ch_hub_create(&a2, &k.ha2, &e), &e);
    ASSERT_OK(ch_hub_create(&d, &k.hd, &e), &e);
    ch_producer_opts_t po = {.peer_timeout_ms = 1000, .window = 128};
    ASSERT_OK(ch_producer_open_replicated(k.ha2, "w", k.where, NREP, &po, &k.p[0], &e), &e);
    ASSERT_OK(ch_producer_open_replicated(k.hub[1], "w", k.where, NREP, &po, &k.p[1], &e), &e);
    ASSERT_OK(ch_producer_open_replicated(k.hd, "w", k.where, NREP, &po, &k.p[2], &e), &e);
    const int n = 200;
    put_range(&k, 0, n / 2);
    for (int j = 0; j < NPROD; j++) ASSERT_OK(ch_producer_flush(k.p[j], 15000, &e), &e);
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    int64_t t0 = cr_now_ns();
    put_range(&k, n / 2, n);
    for (int j = 0; j < NPROD; j++) ASSERT_OK(ch_producer_flush(k.p[j], 15000, &e), &e);
    for (int i = 0; i < 2; i++) ASSERT_OK(ch_channel_replica_flush(k.c[i], 15000, &e), &e);
    double s = (double)(cr_now_ns() - t0) / CR_NS_PER_S;
    fprintf(stderr, "  the others went on %.1f s after node c's process was killed (peer time-out 1 s)\n", s);
    ASSERT_TRUE(s >= 0.9 && s < 8); /* c was waited for, not for ever */
    for (int i = 0; i < 2; i++) expect_all(&k, i, n);
    for (int i = 0; i < 2; i++) {
        ch_replica_peer_stats_t st[4];
        size_t np = ch_channel_replica_stats(k.c[i], st, 4);
        ASSERT_INT_EQ(np, 2);
        for (size_t q = 0; q < np; q++) ASSERT_INT_EQ(st[q].gone, strcmp(st[q].node, "c") == 0);
    }
    for (int i = 0; i < NPROD; i++) ch_producer_close(k.p[i]);
    ch_hub_destroy(k.hd);
    ch_hub_destroy(k.ha2);
    for (int i = 0; i < 2; i++) {
        ch_channel_destroy(k.c[i]);
        ch_hub_destroy(k.hub[i]);
    }
}

static void test_bad_replica_sets(void)
{
    ch_hub_opts_t ho = {.node = "a", .shm = -1};
    ch_hub_t *h;
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_hub_create(&ho, &h, &e), &e);
    ASSERT_OK(ch_channel_create(h, "w", NULL, &c, &e), &e);
    ch_where_t two_on_b[2] = {{.node = "b", .addr = "127.0.0.1:1", .inbound = 1},
                              {.node = "b", .addr = "127.0.0.1:2", .inbound = 1}};
    ASSERT_INT_EQ(ch_channel_replicate(c, two_on_b, 2, NULL, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "two replicas on node b") != NULL);
    ch_where_t bad_name[1] = {{.node = "B A D"}};
    ASSERT_INT_EQ(ch_channel_replicate(c, bad_name, 1, NULL, &e), CR_EINVAL);
    ch_producer_t *p;
    ASSERT_INT_EQ(ch_producer_open_replicated(h, "w", NULL, 0, NULL, &p, &e), CR_EINVAL);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"every_replica_gets_everything", test_every_replica_gets_everything},
        {"replica_channel_gone", test_replica_channel_gone},
        {"replica_node_killed", test_replica_node_killed},
        {"bad_replica_sets", test_bad_replica_sets},
        {NULL, NULL},
    };
    return test_main("channels_replica", cases, argc, argv);
}
