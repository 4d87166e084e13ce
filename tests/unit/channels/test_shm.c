/* test_shm.c - the shared-memory route between processes of one node, with real
 * processes (fork): order and completeness, back-pressure across processes, a
 * consumer killed with SIGKILL (the producer gets an error, not a hang), a producer
 * killed while holding the writers' lock, garbage written into the ring, and the
 * zero-copy pair: messages written in place and read as views, copies from ch_get,
 * and a consumer that holds views up to the ring's budget without stalling. */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/channel.h"
#include "channels/internal.h"
#include "common/time.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static ch_hub_t *hub(const char *node)
{
    ch_hub_opts_t o = {.node = node};
    ch_hub_t *h;
    cr_err_t e = {0};
    ASSERT_OK(ch_hub_create(&o, &h, &e), &e);
    return h;
}

/* Child: a process of its own with its own hub, putting n messages of len bytes. */
static int child_produce_f(ch_where_t to, const char *name, int n, size_t len, int64_t timeout_ms, int flush)
{
    ch_hub_opts_t o = {.node = to.node};
    ch_hub_t *h;
    cr_err_t e = {0};
    if (ch_hub_create(&o, &h, &e)) return 10;
    ch_producer_t *p;
    if (ch_producer_open(h, name, &to, NULL, &p, &e)) {
        fprintf(stderr, "child: %s\n", e.msg);
        return 11;
    }
    if (ch_producer_route(p) != CH_ROUTE_SHM) return 12;
    char *buf = calloc(1, len < 8 ? 8 : len);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        memcpy(buf, &i, sizeof i);
        buf[len - 1] = (char)i;
        if (ch_put(p, buf, len, 1.0, timeout_ms, &e)) {
            fprintf(stderr, "child: put %d: %s\n", i, e.msg);
            rc = e.code == CR_EUNAVAIL ? 20 : e.code == CR_ETIMEDOUT ? 21 : 13;
        }
    }
    if (!rc && flush && ch_producer_flush(p, 5000, &e)) rc = 14;
    free(buf);
    ch_producer_close(p);
    ch_hub_destroy(h);
    return rc;
}

static int child_produce(ch_where_t to, const char *name, int n, size_t len, int64_t timeout_ms)
{
    return child_produce_f(to, name, n, len, timeout_ms, 1);
}

static int wait_child(pid_t pid)
{
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

static void test_two_processes_in_order(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 16};
    ASSERT_OK(ch_channel_create(h, "obs", &o, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(h, &w);
    const int n = 2000;
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) _exit(child_produce(w, "obs", n, k ? 300000 : 100, 10000));
    }
    int next[2] = {0, 0};
    uint64_t ids[2] = {0, 0};
    for (int got = 0; got < 2 * n; got++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 10000, &e), &e);
        int k = m->len == 100 ? 0 : 1;
        if (!ids[k]) ids[k] = m->producer;
        ASSERT_INT_EQ(m->producer, ids[k]);
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, next[k]); /* each producer's order holds */
        ASSERT_INT_EQ(((char *)m->data)[m->len - 1], (char)v);
        ASSERT_INT_EQ(m->seq, (uint64_t)v + 1);
        next[k]++;
        ch_msg_free(m);
    }
    ASSERT_INT_EQ(wait_child(kids[0]), 0);
    ASSERT_INT_EQ(wait_child(kids[1]), 0);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.accepted, 2 * n);
    ASSERT_INT_EQ(st.queued, 0);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_unknown_channel_and_too_big(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.max_msg_bytes = 1000};
    ASSERT_OK(ch_channel_create(h, "small", &o, &c, &e), &e);
    ch_hub_t *h2 = hub("n1");
    ch_where_t w;
    ch_hub_where(h, &w);
    ch_producer_t *p;
    ASSERT_INT_EQ(ch_producer_open(h2, "nosuch", &w, NULL, &p, &e), CR_ENOENT);
    ASSERT_TRUE(strstr(e.msg, "nosuch") != NULL);
    ASSERT_OK(ch_producer_open(h2, "small", &w, NULL, &p, &e), &e);
    ASSERT_INT_EQ(ch_producer_route(p), CH_ROUTE_SHM);
    char buf[2000] = {0};
    ASSERT_INT_EQ(ch_put(p, buf, 1500, 1, 0, &e), CR_ETOOBIG);
    ASSERT_OK(ch_put(p, buf, 10, 1, 0, &e), &e);
    ch_msg_t *m;
    ASSERT_OK(ch_get(c, &m, 2000, &e), &e);
    ASSERT_INT_EQ(m->len, 10);
    ch_msg_free(m);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(h2);
    ch_hub_destroy(h);
}

static void test_consumer_killed(void)
{
    /* The consumer is the child; the parent produces until the ring is full. */
    int pipefd[2];
    ASSERT_TRUE(pipe(pipefd) == 0);
    pid_t kid = fork();
    if (kid == 0) {
        ch_hub_opts_t o = {.node = "n1"};
        ch_hub_t *h;
        ch_channel_t *c;
        ch_opts_t co = {.capacity = 2, .max_msg_bytes = 1 << 20};
        if (ch_hub_create(&o, &h, NULL) || ch_channel_create(h, "obs", &co, &c, NULL)) _exit(1);
        uint64_t id = ch_hub_id(h);
        if (write(pipefd[1], &id, sizeof id) != sizeof id) _exit(2);
        pause(); /* never reads */
        _exit(0);
    }
    uint64_t id = 0;
    ASSERT_INT_EQ(read(pipefd[0], &id, sizeof id), sizeof id);
    ch_hub_t *h = hub("n1");
    ch_where_t w = {.node = "n1", .process = id};
    ch_producer_t *p;
    cr_err_t e = {0};
    ASSERT_OK(ch_producer_open(h, "obs", &w, NULL, &p, &e), &e);
    static char buf[1 << 20];
    int rc = 0, sent = 0;
    while ((rc = ch_put(p, buf, sizeof buf, 1, 100, &e)) == 0) sent++;
    ASSERT_INT_EQ(rc, CR_ETIMEDOUT); /* ring full: back-pressure */
    ASSERT_TRUE(sent >= 2);
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    int64_t t0 = cr_now_ns();
    rc = ch_put(p, buf, sizeof buf, 1, 10000, &e);
    ASSERT_INT_EQ(rc, CR_EUNAVAIL);
    ASSERT_TRUE(cr_now_ns() - t0 < 2 * CR_NS_PER_S);
    ASSERT_TRUE(strstr(e.msg, "gone") != NULL);
    ch_producer_close(p);
    ch_hub_destroy(h);
    /* The dead consumer could not unlink its ring: the next hub removes it. */
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/corral-ch-%016llx-obs", (unsigned long long)id);
    ASSERT_INT_EQ(access(path, F_OK), 0);
    ch_hub_destroy(hub("n1"));
    ASSERT_TRUE(access(path, F_OK) != 0);
    close(pipefd[0]);
    close(pipefd[1]);
}

static void test_producer_killed_holding_lock(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(h, "obs", NULL, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(h, &w);
    pid_t kid = fork();
    if (kid == 0) {
        /* Take the writers' lock by hand and die holding it. */
        ch_ring_t *r;
        if (ch_ring_attach(w.process, "obs", &r, NULL)) _exit(1);
        ch_ring_test_lock(r);
        raise(SIGKILL);
        _exit(0);
    }
    ASSERT_INT_EQ(wait_child(kid), 100 + SIGKILL);
    kid = fork();
    if (kid == 0) _exit(child_produce(w, "obs", 10, 64, 5000));
    for (int i = 0; i < 10; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 5000, &e), &e);
        ch_msg_free(m);
    }
    ASSERT_INT_EQ(wait_child(kid), 0);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_producer_stalled_in_place(void)
{
    /* A producer (another process) that reserved room and stalls before its
     * commit holds up the other producers of the channel, who get a time-out that
     * says so; when it commits, everything flows, in order. */
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(h, "obs", NULL, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(h, &w);
    int ready[2], go[2];
    ASSERT_TRUE(pipe(ready) == 0 && pipe(go) == 0);
    pid_t kid = fork();
    if (kid == 0) {
        ch_hub_opts_t o = {.node = "n1"};
        ch_hub_t *hk;
        ch_producer_t *p;
        void *buf;
        if (ch_hub_create(&o, &hk, &e) || ch_producer_open(hk, "obs", &w, NULL, &p, &e) ||
            ch_put_reserve(p, 100, &buf, 1000, &e))
            _exit(1);
        memcpy(buf, "stalled", 8);
        char x;
        if (write(ready[1], "r", 1) != 1 || read(go[0], &x, 1) != 1) _exit(2); /* stall here */
        if (ch_put_commit(p, 8, 1, &e) || ch_producer_flush(p, 5000, &e)) _exit(3);
        ch_producer_close(p);
        ch_hub_destroy(hk);
        _exit(0);
    }
    char x;
    ASSERT_INT_EQ(read(ready[0], &x, 1), 1);
    ch_hub_t *h2 = hub("n1");
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(h2, "obs", &w, NULL, &p, &e), &e);
    ASSERT_INT_EQ(ch_put(p, "other", 6, 1, 200, &e), CR_ETIMEDOUT);
    ASSERT_TRUE(strstr(e.msg, "another producer holds the ring") != NULL);
    ASSERT_INT_EQ(write(go[1], "c", 1), 1); /* the stalled one commits */
    ASSERT_INT_EQ(wait_child(kid), 0);
    ASSERT_OK(ch_put(p, "other", 6, 1, 2000, &e), &e);
    ch_msg_t *m;
    ASSERT_OK(ch_get(c, &m, 2000, &e), &e);
    ASSERT_STR_EQ((char *)m->data, "stalled");
    ch_msg_free(m);
    ASSERT_OK(ch_get(c, &m, 2000, &e), &e);
    ASSERT_STR_EQ((char *)m->data, "other");
    ch_msg_free(m);
    ch_producer_close(p);
    ch_hub_destroy(h2);
    close(go[0]);
    close(go[1]);
    close(ready[0]);
    close(ready[1]);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_garbage_in_ring(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(h, "obs", NULL, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(h, &w);
    /* A writer that bypasses the protocol: bytes that are not a record. */
    ch_ring_t *r;
    ASSERT_OK(ch_ring_attach(w.process, "obs", &r, &e), &e);
    ASSERT_OK(ch_ring_test_garbage(r, 4096, &e), &e);
    for (int i = 0; i < 100; i++) {
        ch_stats_t st;
        ch_channel_stats(c, &st);
        if (st.rejected) break;
        cr_sleep_ns(10 * CR_NS_PER_MS);
    }
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.rejected, 1);
    ch_ring_destroy(r);
    /* The channel still works for a well-behaved producer. */
    pid_t kid = fork();
    if (kid == 0) _exit(child_produce(w, "obs", 5, 64, 5000));
    for (int i = 0; i < 5; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 5000, &e), &e);
        ch_msg_free(m);
    }
    ASSERT_INT_EQ(wait_child(kid), 0);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_large_message_outlives_channel(void)
{
    /* A 1 MiB message is read in place from the ring; holding it past the channel's
     * end must keep its bytes valid, and freeing it afterwards must be clean. */
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ASSERT_OK(ch_channel_create(h, "big", NULL, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(h, &w);
    pid_t kid = fork();
    /* No flush: a message read in place is acknowledged only when it is freed. */
    if (kid == 0) _exit(child_produce_f(w, "big", 3, 1 << 20, 5000, 0));
    ch_msg_t *m[3];
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(ch_get_view(c, &m[i], 5000, &e), &e);
        ASSERT_TRUE(m[i]->data != (void *)(m[i] + 1)); /* a view, not a copy */
    }
    ASSERT_INT_EQ(wait_child(kid), 0);
    ch_msg_free(m[1]); /* out of order: the ring is released only past m[0] later */
    ch_channel_destroy(c);
    ch_hub_destroy(h);
    for (int i = 0; i < 3; i += 2) {
        int v;
        memcpy(&v, m[i]->data, sizeof v);
        ASSERT_INT_EQ(v, i);
        ASSERT_INT_EQ(m[i]->len, 1 << 20);
        ASSERT_INT_EQ(((char *)m[i]->data)[m[i]->len - 1], (char)i);
        ch_msg_free(m[i]);
    }
}

/* Child: writes n messages in place, each reserved at len and committed at
 * len - i % 7 bytes (the bytes: i, then a pattern), then flushes. */
static int child_produce_in_place(ch_where_t to, const char *name, int n, size_t len)
{
    ch_hub_opts_t o = {.node = to.node};
    ch_hub_t *h;
    cr_err_t e = {0};
    ch_producer_t *p;
    if (ch_hub_create(&o, &h, &e) || ch_producer_open(h, name, &to, NULL, &p, &e)) return 10;
    for (int i = 0; i < n; i++) {
        uint8_t *buf;
        if (ch_put_reserve(p, len, (void **)&buf, 5000, &e)) return 11;
        size_t used = len - (size_t)(i % 7);
        memcpy(buf, &i, sizeof i);
        for (size_t k = sizeof i; k < used; k++) buf[k] = (uint8_t)(k + (size_t)i);
        if (i == 3) { /* an abandoned reservation publishes nothing */
            ch_put_abort(p);
            if (ch_put_reserve(p, len, (void **)&buf, 5000, &e)) return 12;
            memcpy(buf, &i, sizeof i);
            for (size_t k = sizeof i; k < used; k++) buf[k] = (uint8_t)(k + (size_t)i);
        }
        if (ch_put_commit(p, used, (double)i, &e)) return 13;
    }
    int rc = ch_producer_flush(p, 10000, &e) ? 14 : 0;
    ch_producer_close(p);
    ch_hub_destroy(h);
    return rc;
}

static void check_in_place(const ch_msg_t *m, int i, size_t len)
{
    int v;
    memcpy(&v, m->data, sizeof v);
    ASSERT_INT_EQ(v, i);
    ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
    ASSERT_INT_EQ(m->len, len - (size_t)(i % 7));
    ASSERT_NEAR(m->weight, (double)i, 0);
    const uint8_t *b = m->data;
    for (size_t k = sizeof v; k < m->len; k += 997) ASSERT_INT_EQ(b[k], (uint8_t)(k + (size_t)i));
    ASSERT_INT_EQ(b[m->len - 1], (uint8_t)(m->len - 1 + (size_t)i));
}

static void test_zero_copy_in_place(void)
{
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 8, .max_msg_bytes = 1 << 20};
    ASSERT_OK(ch_channel_create(h, "img", &o, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(h, &w);
    const int n = 60;
    const size_t len = 200000;
    pid_t kid = fork();
    if (kid == 0) _exit(child_produce_in_place(w, "img", n, len));
    for (int i = 0; i < n; i++) {
        ch_msg_t *m;
        /* Odd ones through the copying call: the caller's own bytes; even ones
         * as views into the ring. Both read the same. */
        if (i % 2) {
            ASSERT_OK(ch_get(c, &m, 10000, &e), &e);
            ASSERT_TRUE(m->data == (void *)(m + 1));
        } else {
            ASSERT_OK(ch_get_view(c, &m, 10000, &e), &e);
            ASSERT_TRUE(m->data != (void *)(m + 1));
        }
        check_in_place(m, i, len);
        ch_msg_free(m);
    }
    ASSERT_INT_EQ(wait_child(kid), 0);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.accepted, n);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

static void test_view_kept_pins_ring(void)
{
    /* A view kept pins the ring: the producer goes round it once, then waits
     * (back-pressure, not an error), and goes on when the view is freed. */
    ch_hub_t *h = hub("n1");
    ch_channel_t *c;
    cr_err_t e = {0};
    ch_opts_t o = {.capacity = 64, .max_msg_bytes = 1 << 20};
    ASSERT_OK(ch_channel_create(h, "img", &o, &c, &e), &e);
    ch_where_t w;
    ch_hub_where(h, &w);
    const int n = 24; /* 24 MiB: three times the ring (8 MiB) */
    pid_t kid = fork();
    if (kid == 0) _exit(child_produce_f(w, "img", n, 1 << 20, 20000, 0));
    ch_msg_t *first, *m;
    ASSERT_OK(ch_get_view(c, &first, 10000, &e), &e);
    int got = 1;
    while (ch_get_view(c, &m, 500, &e) == 0) { /* the others are freed at once */
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, got);
        got++;
        ch_msg_free(m);
    }
    ASSERT_INT_EQ(e.code, CR_ETIMEDOUT);
    ASSERT_TRUE(got >= 4 && got < n); /* about one ring's worth, then nothing */
    ASSERT_INT_EQ(((char *)first->data)[first->len - 1], 0);
    ch_msg_free(first);
    for (; got < n; got++) {
        ASSERT_OK(ch_get_view(c, &m, 10000, &e), &e);
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, got);
        ch_msg_free(m);
    }
    ASSERT_INT_EQ(wait_child(kid), 0);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"two_processes_in_order", test_two_processes_in_order},
        {"unknown_channel_and_too_big", test_unknown_channel_and_too_big},
        {"consumer_killed", test_consumer_killed},
        {"producer_killed_holding_lock", test_producer_killed_holding_lock},
        {"producer_stalled_in_place", test_producer_stalled_in_place},
        {"garbage_in_ring", test_garbage_in_ring},
        {"large_message_outlives_channel", test_large_message_outlives_channel},
        {"zero_copy_in_place", test_zero_copy_in_place},
        {"view_kept_pins_ring", test_view_kept_pins_ring},
        {NULL, NULL},
    };
    return test_main("channels_shm", cases, argc, argv);
}
