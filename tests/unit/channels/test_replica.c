/* test_replica.c - a replicated channel over real routes on loopback: replicas on
 * three nodes (direct gRPC between them), producers on a replica's node (one in
 * the same process, one in another "process" of that node, over shared memory) and
 * one on a node without a replica (it writes to all). Every replica must receive
 * every message exactly once, in order per producer; when a replica goes away
 * mid-transfer (its channel closed, or its process SIGKILLed) the others still get
 * everything and nobody waits for it much longer than the peer time-out. A
 * replica acknowledges its own node's producers only once every live peer has the
 * message: killed right after a flush, it leaves every acknowledged message at the
 * other replica. A replica that refuses one message (too large for it) only fails
 * that message: it stays in the set and later messages reach it. */
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

/* Replica a runs in a process of its own with two producers of its node (one in
 * its process, one through shared memory); it prints once every put is flushed
 * (acknowledged), and is SIGKILLed at once. Every acknowledged message must be at
 * replica b, which is here. */
static void test_acked_survives_replica_kill(void)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = "b", .listen = "127.0.0.1:0", .reconnect_ms = 50};
    ch_hub_t *hb;
    ch_channel_t *cb;
    ch_opts_t co = {.capacity = 8192};
    ASSERT_OK(ch_hub_create(&ho, &hb, &e), &e);
    ASSERT_OK(ch_channel_create(hb, "w", &co, &cb, &e), &e);
    ch_where_t wb;
    ch_hub_where(hb, &wb);
    char idb[20];
    snprintf(idb, sizeof idb, "%016llx", (unsigned long long)wb.process);
    const int n = 3000;
    char count[16];
    snprintf(count, sizeof count, "%d", n);
    int out[2];
    ASSERT_TRUE(pipe(out) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        execl(test_build_path("tests/ch_netns_node"), "ch_netns_node", "rput", "a", "w", count, "b", wb.addr, idb,
              (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    FILE *f = fdopen(out[0], "r");
    ASSERT_TRUE(f != NULL);
    char id0[20], id1[20];
    int got_n = 0;
    double rate = 0;
    /* Replica a's peer b is this process: b must be told about a for the direct
     * route back, but b forwards nothing (it has no local producer). */
    int fields = fscanf(f, "acked %19s %19s %d %lf", id0, id1, &got_n, &rate);
    kill(pid, SIGKILL); /* right after the acknowledgements */
    waitpid(pid, NULL, 0);
    fclose(f);
    ASSERT_INT_EQ(fields, 4);
    ASSERT_INT_EQ(got_n, n);
    fprintf(stderr, "  replica a acknowledged %d messages of each of its 2 producers (%.0f msg/s), then was "
            "killed\n", n, rate);
    uint64_t ids[2] = {strtoull(id0, NULL, 16), strtoull(id1, NULL, 16)};
    int next[2] = {0, 0};
    for (int got = 0; got < 2 * n; got++) {
        ch_msg_t *m;
        int rc = ch_get(cb, &m, 3000, &e);
        if (rc) fprintf(stderr, "  replica b holds only %d/%d of %d acknowledged messages: %s\n", next[0], next[1], n,
                        e.msg);
        ASSERT_OK(rc, &e);
        int k = m->producer == ids[0] ? 0 : m->producer == ids[1] ? 1 : -1;
        ASSERT_TRUE(k >= 0);
        int64_t v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, next[k]);
        next[k]++;
        ch_msg_free(m);
    }
    ch_channel_destroy(cb);
    ch_hub_destroy(hb);
}

static int has_value(ch_channel_t *c, uint8_t v, size_t len)
{
    ch_msg_t *m;
    cr_err_t e = {0};
    if (ch_get(c, &m, 5000, &e) != 0) return 0;
    int ok = m->len == len && ((uint8_t *)m->data)[0] == v;
    if (!ok) fprintf(stderr, "  got %zu bytes starting %u, expected %zu starting %u\n", m->len,
                     ((uint8_t *)m->data)[0], len, v);
    ch_msg_free(m);
    return ok;
}

/* Replica b takes messages of at most 1000 bytes, replica a up to the default. A
 * 2000-byte message is refused by b alone: the fan-out producer on d gets an error
 * for it (from flush while b's limit is unknown, from put once it is known), b
 * stays in the set, and later messages reach both. The same for a's forwarding of
 * its own producer's messages to b. */
static void test_refused_message_only(void)
{
    cr_err_t e = {0};
    ch_hub_t *ha, *hb, *hd;
    ch_channel_t *ca, *cb;
    ch_hub_opts_t oa = {.node = "a", .listen = "127.0.0.1:0", .reconnect_ms = 50};
    ch_hub_opts_t ob = {.node = "b", .listen = "127.0.0.1:0", .reconnect_ms = 50};
    ch_hub_opts_t od = {.node = "d", .shm = -1, .reconnect_ms = 50};
    ASSERT_OK(ch_hub_create(&oa, &ha, &e), &e);
    ASSERT_OK(ch_hub_create(&ob, &hb, &e), &e);
    ASSERT_OK(ch_hub_create(&od, &hd, &e), &e);
    ch_opts_t big = {.capacity = 64}, small = {.capacity = 64, .max_msg_bytes = 1000};
    ASSERT_OK(ch_channel_create(ha, "w", &big, &ca, &e), &e);
    ASSERT_OK(ch_channel_create(hb, "w", &small, &cb, &e), &e);
    ch_where_t w[2];
    ch_hub_where(ha, &w[0]);
    ch_hub_where(hb, &w[1]);
    ch_replica_opts_t ro = {.peer_timeout_ms = 2000};
    ASSERT_OK(ch_channel_replicate(ca, w, 2, &ro, &e), &e);
    ASSERT_OK(ch_channel_replicate(cb, w, 2, &ro, &e), &e);
    static uint8_t buf[2000];
    /* Fan-out, b's limit unknown: the refusal comes back through flush. */
    ch_producer_opts_t po = {.peer_timeout_ms = 2000};
    ch_producer_t *pd, *pa;
    ASSERT_OK(ch_producer_open_replicated(hd, "w", w, 2, &po, &pd, &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(pd)), "fanout");
    memset(buf, 1, sizeof buf);
    ASSERT_OK(ch_put(pd, buf, 500, 1, 5000, &e), &e);
    memset(buf, 2, sizeof buf);
    ASSERT_OK(ch_put(pd, buf, 2000, 1, 5000, &e), &e);
    memset(buf, 3, sizeof buf);
    ASSERT_OK(ch_put(pd, buf, 500, 1, 5000, &e), &e);
    ASSERT_INT_EQ(ch_producer_flush(pd, 10000, &e), CR_ETOOBIG);
    fprintf(stderr, "  fan-out flush: %s\n", e.msg);
    ASSERT_TRUE(strstr(e.msg, "node b") != NULL && strstr(e.msg, "message 2 ") != NULL);
    ASSERT_OK(ch_producer_flush(pd, 10000, &e), &e); /* reported once */
    ASSERT_INT_EQ(ch_producer_refused(pd), 1);
    memset(buf, 4, sizeof buf);
    ASSERT_OK(ch_put(pd, buf, 500, 1, 5000, &e), &e);
    ASSERT_OK(ch_producer_flush(pd, 10000, &e), &e);
    ASSERT_TRUE(has_value(ca, 1, 500) && has_value(ca, 2, 2000) && has_value(ca, 3, 500) && has_value(ca, 4, 500));
    ASSERT_TRUE(has_value(cb, 1, 500) && has_value(cb, 3, 500) && has_value(cb, 4, 500));
    ch_producer_close(pd);
    /* Forwarding from replica a to b, b's limit unknown: b skips the message, stays. */
    ASSERT_OK(ch_producer_open_replicated(ha, "w", w, 2, &po, &pa, &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(pa)), "inproc");
    memset(buf, 5, sizeof buf);
    ASSERT_OK(ch_put(pa, buf, 2000, 1, 5000, &e), &e);
    memset(buf, 6, sizeof buf);
    ASSERT_OK(ch_put(pa, buf, 500, 1, 5000, &e), &e);
    ASSERT_OK(ch_producer_flush(pa, 10000, &e), &e);
    ASSERT_TRUE(has_value(ca, 5, 2000) && has_value(ca, 6, 500));
    ASSERT_TRUE(has_value(cb, 6, 500));
    ch_replica_peer_stats_t st[2];
    ASSERT_OK(ch_channel_replica_flush(ca, 10000, &e), &e);
    int64_t deadline = cr_now_ns() + 5 * CR_NS_PER_S; /* the peer's thread counts after the fact */
    do {
        ASSERT_INT_EQ(ch_channel_replica_stats(ca, st, 2), 1);
    } while ((st[0].forwarded != 1 || st[0].refused != 1) && cr_now_ns() < deadline && (cr_sleep_ns(CR_NS_PER_MS), 1));
    ASSERT_INT_EQ(st[0].gone, 0);
    ASSERT_INT_EQ(st[0].refused, 1);
    ASSERT_INT_EQ(st[0].forwarded, 1);
    /* b's limit known (as the directory tells it): refused at put, for that message only. */
    w[1].max_msg = 1000;
    ASSERT_OK(ch_channel_replicate(ca, w, 2, &ro, &e), &e);
    memset(buf, 7, sizeof buf);
    ASSERT_INT_EQ(ch_put(pa, buf, 2000, 1, 5000, &e), CR_ETOOBIG);
    ASSERT_TRUE(strstr(e.msg, "node b") != NULL);
    memset(buf, 8, sizeof buf);
    ASSERT_OK(ch_put(pa, buf, 500, 1, 5000, &e), &e);
    ASSERT_OK(ch_producer_flush(pa, 10000, &e), &e);
    ASSERT_TRUE(has_value(ca, 8, 500) && has_value(cb, 8, 500));
    ch_producer_close(pa);
    ASSERT_OK(ch_producer_open_replicated(hd, "w", w, 2, &po, &pd, &e), &e);
    memset(buf, 9, sizeof buf);
    ASSERT_INT_EQ(ch_put(pd, buf, 2000, 1, 5000, &e), CR_ETOOBIG);
    memset(buf, 10, sizeof buf);
    ASSERT_OK(ch_put(pd, buf, 500, 1, 5000, &e), &e);
    ASSERT_OK(ch_producer_flush(pd, 10000, &e), &e);
    ASSERT_TRUE(has_value(ca, 10, 500) && has_value(cb, 10, 500));
    ch_producer_close(pd);
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(ca, &m, 200, &e), CR_ETIMEDOUT);
    ASSERT_INT_EQ(ch_get(cb, &m, 200, &e), CR_ETIMEDOUT);
    ch_channel_destroy(ca);
    ch_channel_destroy(cb);
    ch_hub_destroy(ha);
    ch_hub_destroy(hb);
    ch_hub_destroy(hd);
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
        {"acked_survives_replica_kill", test_acked_survives_replica_kill},
        {"refused_message_only", test_refused_message_only},
        {"bad_replica_sets", test_bad_replica_sets},
        {NULL, NULL},
    };
    return test_main("channels_replica", cases, argc, argv);
}
