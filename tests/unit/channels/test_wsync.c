/* test_wsync.c - weight sync over the in-process and shared-memory routes:
 * chunked versions arrive whole, the newest complete version wins, delta mode sends
 * only changed tensors, the bytes/s cap and the chunks-in-flight cap hold, and
 * chunks from a bad peer are refused while the subscriber keeps its version. */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/channel.h"
#include "common/time.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct rig {
    ch_hub_t *h;
    ch_channel_t *c[3];
    ch_producer_t *p[3];
    ch_wsync_sub_t *s[3];
    ch_wsync_pub_t *pub;
    int n;
} rig_t;

static void rig_up(rig_t *r, int n, const ch_wsync_opts_t *o)
{
    memset(r, 0, sizeof *r);
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = "n1", .shm = -1};
    ASSERT_OK(ch_hub_create(&ho, &r->h, &e), &e);
    ch_where_t w;
    ch_hub_where(r->h, &w);
    r->n = n;
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        ch_opts_t co = {.capacity = 8};
        ASSERT_OK(ch_channel_create(r->h, name, &co, &r->c[i], &e), &e);
        ASSERT_OK(ch_producer_open(r->h, name, &w, NULL, &r->p[i], &e), &e);
        ASSERT_OK(ch_wsync_sub_create(r->c[i], &r->s[i], &e), &e);
    }
    ASSERT_OK(ch_wsync_pub_create(o, r->p, (size_t)n, &r->pub, &e), &e);
}

static void rig_down(rig_t *r)
{
    ch_wsync_pub_destroy(r->pub);
    for (int i = 0; i < r->n; i++) {
        ch_wsync_sub_destroy(r->s[i]);
        ch_producer_close(r->p[i]);
        ch_channel_destroy(r->c[i]);
    }
    ch_hub_destroy(r->h);
}

/* Three tensors of sizes a, b, c filled with (seed + i) bytes. */
typedef struct blob {
    uint8_t *d[3];
    size_t sz[3];
    ch_tensor_t t[3];
} blob_t;

static void blob_make(blob_t *b, size_t a, size_t bb, size_t c, int seed)
{
    size_t sz[3] = {a, bb, c};
    static const char *names[3] = {"actor.w", "actor.b", "critic.w"};
    for (int i = 0; i < 3; i++) {
        b->sz[i] = sz[i];
        b->d[i] = malloc(sz[i] ? sz[i] : 1);
        for (size_t k = 0; k < sz[i]; k++) b->d[i][k] = (uint8_t)(seed + i + k * 7);
        b->t[i] = (ch_tensor_t){names[i], b->d[i], sz[i]};
    }
}

static void blob_free(blob_t *b)
{
    for (int i = 0; i < 3; i++) free(b->d[i]);
}

static void check_weights(const ch_weights_t *w, const blob_t *b, uint64_t version)
{
    ASSERT_INT_EQ(w->version, version);
    ASSERT_INT_EQ(w->n, 3);
    for (int i = 0; i < 3; i++) {
        ASSERT_STR_EQ(w->t[i].name, b->t[i].name);
        ASSERT_INT_EQ(w->t[i].bytes, b->sz[i]);
        ASSERT_TRUE(memcmp(w->t[i].data, b->d[i], b->sz[i]) == 0);
    }
}

static void test_full_version_in_chunks(void)
{
    rig_t r;
    ch_wsync_opts_t o = {.chunk_bytes = 4096};
    rig_up(&r, 3, &o);
    blob_t b;
    blob_make(&b, 100000, 0, 33333, 1);
    cr_err_t e = {0};
    ASSERT_OK(ch_wsync_publish(r.pub, 1, b.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(r.pub, 1, 10000, &e), &e);
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(ch_wsync_sub_wait(r.s[i], 1, 10000, &e), &e);
        ch_weights_t *w;
        ASSERT_INT_EQ(ch_wsync_sub_take(r.s[i], 0, &w), 1);
        check_weights(w, &b, 1);
        ch_weights_free(w);
        /* Nothing newer yet. */
        ASSERT_INT_EQ(ch_wsync_sub_take(r.s[i], 1, &w), 0);
    }
    ASSERT_INT_EQ(ch_wsync_pub_bytes_sent(r.pub), 3 * (100000 + 33333));
    ASSERT_INT_EQ(ch_wsync_publish(r.pub, 1, b.t, 3, &e), CR_EINVAL); /* not newer */
    blob_free(&b);
    rig_down(&r);
}

static void test_newest_complete_wins(void)
{
    rig_t r;
    /* Slow enough that version 1 is still on its way when 2 and 3 come. */
    ch_wsync_opts_t o = {.chunk_bytes = 8192, .max_bytes_per_s = 20e6};
    rig_up(&r, 1, &o);
    blob_t b[3];
    cr_err_t e = {0};
    for (int v = 0; v < 3; v++) {
        blob_make(&b[v], 400000, 1000, 10, 10 * v);
        ASSERT_OK(ch_wsync_publish(r.pub, (uint64_t)v + 1, b[v].t, 3, &e), &e);
    }
    ASSERT_OK(ch_wsync_sub_wait(r.s[0], 3, 10000, &e), &e);
    ch_weights_t *w;
    ASSERT_INT_EQ(ch_wsync_sub_take(r.s[0], 0, &w), 1);
    check_weights(w, &b[2], 3);
    ch_weights_free(w);
    /* Older versions were abandoned: far fewer than 3 versions' bytes went out. */
    ASSERT_TRUE(ch_wsync_pub_bytes_sent(r.pub) < 2 * 401010);
    for (int v = 0; v < 3; v++) blob_free(&b[v]);
    rig_down(&r);
}

static void test_delta_sends_only_changes(void)
{
    rig_t r;
    ch_wsync_opts_t o = {.chunk_bytes = 16384, .delta = 1};
    rig_up(&r, 2, &o);
    blob_t b;
    blob_make(&b, 200000, 300000, 1000, 3);
    cr_err_t e = {0};
    ASSERT_OK(ch_wsync_publish(r.pub, 1, b.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(r.pub, 1, 10000, &e), &e);
    uint64_t full = ch_wsync_pub_bytes_sent(r.pub);
    ASSERT_INT_EQ(full, 2 * 501000);
    /* Change one byte of the small tensor only. */
    b.d[2][5] ^= 0xff;
    ASSERT_OK(ch_wsync_publish(r.pub, 2, b.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(r.pub, 2, 10000, &e), &e);
    ASSERT_INT_EQ(ch_wsync_pub_bytes_sent(r.pub) - full, 2 * 1000);
    /* No change at all: a version with no bytes, still complete. */
    ASSERT_OK(ch_wsync_publish(r.pub, 3, b.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(r.pub, 3, 10000, &e), &e);
    ASSERT_INT_EQ(ch_wsync_pub_bytes_sent(r.pub) - full, 2 * 1000);
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(ch_wsync_sub_wait(r.s[i], 3, 10000, &e), &e);
        ch_weights_t *w;
        ASSERT_INT_EQ(ch_wsync_sub_take(r.s[i], 1, &w), 1);
        check_weights(w, &b, 3); /* the unchanged tensors came from version 1 */
        ch_weights_free(w);
    }
    /* A new layout goes out in full again. */
    blob_t b2;
    blob_make(&b2, 1000, 2000, 3000, 9);
    uint64_t before = ch_wsync_pub_bytes_sent(r.pub);
    ASSERT_OK(ch_wsync_publish(r.pub, 4, b2.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(r.pub, 4, 10000, &e), &e);
    ASSERT_INT_EQ(ch_wsync_pub_bytes_sent(r.pub) - before, 2 * 6000);
    ASSERT_OK(ch_wsync_sub_wait(r.s[0], 4, 10000, &e), &e);
    ch_weights_t *w;
    ASSERT_INT_EQ(ch_wsync_sub_take(r.s[0], 3, &w), 1);
    check_weights(w, &b2, 4);
    ch_weights_free(w);
    blob_free(&b2);
    blob_free(&b);
    rig_down(&r);
}

static void test_rate_cap(void)
{
    rig_t r;
    ch_wsync_opts_t o = {.chunk_bytes = 65536, .max_bytes_per_s = 10e6};
    rig_up(&r, 2, &o);
    blob_t b;
    blob_make(&b, 1000000, 500000, 0, 1); /* 2 x 1.5 MB at 10 MB/s: >= 0.29 s */
    cr_err_t e = {0};
    int64_t t0 = cr_now_ns();
    ASSERT_OK(ch_wsync_publish(r.pub, 1, b.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(r.pub, 1, 10000, &e), &e);
    double s = (double)(cr_now_ns() - t0) / 1e9;
    double rate = 3e6 / s;
    if (rate > 11e6) fprintf(stderr, "  rate %.1f MB/s over the cap\n", rate / 1e6);
    ASSERT_TRUE(rate <= 11e6);
    blob_free(&b);
    rig_down(&r);
}

static void test_inflight_cap(void)
{
    /* Two hubs of one node talk through a shared-memory ring, where a chunk is
     * acknowledged only when the consumer's queue took it. Nobody reads: one chunk
     * sits in the queue (capacity 1), and the publisher stops after max_inflight
     * more are unacknowledged, however much room the ring has. */
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = "n1"};
    ch_hub_t *hc, *hp;
    ASSERT_OK(ch_hub_create(&ho, &hc, &e), &e);
    ASSERT_OK(ch_hub_create(&ho, &hp, &e), &e);
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 1};
    ASSERT_OK(ch_channel_create(hc, "w", &co, &c, &e), &e);
    ch_where_t wh;
    ch_hub_where(hc, &wh);
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(hp, "w", &wh, NULL, &p, &e), &e);
    ASSERT_INT_EQ(ch_producer_route(p), CH_ROUTE_SHM);
    ch_wsync_opts_t o = {.chunk_bytes = 1000, .max_inflight = 2};
    ch_wsync_pub_t *pub;
    ASSERT_OK(ch_wsync_pub_create(&o, &p, 1, &pub, &e), &e);
    blob_t b;
    blob_make(&b, 10000, 0, 0, 1);
    ASSERT_OK(ch_wsync_publish(pub, 1, b.t, 3, &e), &e);
    cr_sleep_ns(150 * CR_NS_PER_MS);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.queued, 1);
    ASSERT_INT_EQ(ch_wsync_pub_bytes_sent(pub), 3000);
    ASSERT_INT_EQ(ch_wsync_pub_wait(pub, 1, 50, &e), CR_ETIMEDOUT);
    /* A reader drains it and the rest follows. */
    ch_wsync_sub_t *s;
    ASSERT_OK(ch_wsync_sub_create(c, &s, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(pub, 1, 10000, &e), &e);
    ASSERT_OK(ch_wsync_sub_wait(s, 1, 10000, &e), &e);
    ASSERT_INT_EQ(ch_wsync_pub_bytes_sent(pub), 10000 + 0 + 0);
    ch_wsync_pub_destroy(pub);
    ch_wsync_sub_destroy(s);
    blob_free(&b);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(hp);
    ch_hub_destroy(hc);
}

static void test_bad_chunks_refused(void)
{
    rig_t r;
    ch_wsync_opts_t o = {.chunk_bytes = 4096};
    rig_up(&r, 1, &o);
    blob_t b;
    blob_make(&b, 5000, 10, 10, 1);
    cr_err_t e = {0};
    ASSERT_OK(ch_wsync_publish(r.pub, 1, b.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_sub_wait(r.s[0], 1, 10000, &e), &e);
    /* A second producer on the same channel sends garbage. */
    ch_where_t w;
    ch_hub_where(r.h, &w);
    ch_producer_t *bad;
    ASSERT_OK(ch_producer_open(r.h, "w0", &w, NULL, &bad, &e), &e);
    ASSERT_OK(ch_put(bad, "hello", 5, 1, 1000, &e), &e);
    uint8_t junk[200];
    memset(junk, 0x5a, sizeof junk);
    ASSERT_OK(ch_put(bad, junk, sizeof junk, 1, 1000, &e), &e);
    for (int i = 0; i < 100 && ch_wsync_sub_rejected(r.s[0]) < 2; i++) cr_sleep_ns(5 * CR_NS_PER_MS);
    ASSERT_INT_EQ(ch_wsync_sub_rejected(r.s[0]), 2);
    ch_weights_t *wt;
    ASSERT_INT_EQ(ch_wsync_sub_take(r.s[0], 0, &wt), 1);
    check_weights(wt, &b, 1);
    ch_weights_free(wt);
    /* And the next real version still arrives. */
    b.d[0][0] ^= 1;
    ASSERT_OK(ch_wsync_publish(r.pub, 2, b.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_sub_wait(r.s[0], 2, 10000, &e), &e);
    ch_producer_close(bad);
    blob_free(&b);
    rig_down(&r);
}

static void test_over_shared_memory(void)
{
    /* The actor is another process: it reports what it assembled through its exit
     * status (0 = both versions arrived and matched). */
    cr_err_t e = {0};
    int fds[2];
    ASSERT_TRUE(pipe(fds) == 0);
    pid_t kid = fork();
    if (kid == 0) {
        ch_hub_opts_t ho = {.node = "n1"};
        ch_hub_t *h;
        ch_channel_t *c;
        ch_wsync_sub_t *s;
        if (ch_hub_create(&ho, &h, NULL) || ch_channel_create(h, "weights", NULL, &c, NULL) ||
            ch_wsync_sub_create(c, &s, NULL))
            _exit(1);
        uint64_t id = ch_hub_id(h);
        if (write(fds[1], &id, sizeof id) != sizeof id) _exit(2);
        if (ch_wsync_sub_wait(s, 2, 20000, NULL)) _exit(3);
        ch_weights_t *w;
        if (ch_wsync_sub_take(s, 0, &w) != 1 || w->version != 2 || w->n != 3) _exit(4);
        blob_t b;
        blob_make(&b, 3000000, 100, 7, 2);
        for (int i = 0; i < 3; i++)
            if (memcmp(w->t[i].data, b.d[i], b.sz[i]) != 0) _exit(5);
        ch_weights_free(w);
        blob_free(&b);
        ch_wsync_sub_destroy(s);
        ch_channel_destroy(c); /* removes its ring file */
        ch_hub_destroy(h);
        _exit(0);
    }
    uint64_t id;
    ASSERT_INT_EQ(read(fds[0], &id, sizeof id), sizeof id);
    ch_hub_opts_t ho = {.node = "n1"};
    ch_hub_t *h;
    ASSERT_OK(ch_hub_create(&ho, &h, &e), &e);
    ch_where_t to = {.node = "n1", .process = id};
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(h, "weights", &to, NULL, &p, &e), &e);
    ASSERT_INT_EQ(ch_producer_route(p), CH_ROUTE_SHM);
    ch_wsync_opts_t o = {.delta = 1};
    ch_wsync_pub_t *pub;
    ASSERT_OK(ch_wsync_pub_create(&o, &p, 1, &pub, &e), &e);
    blob_t b1, b2;
    blob_make(&b1, 3000000, 100, 7, 1);
    blob_make(&b2, 3000000, 100, 7, 2);
    ASSERT_OK(ch_wsync_publish(pub, 1, b1.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(pub, 1, 20000, &e), &e);
    ASSERT_OK(ch_wsync_publish(pub, 2, b2.t, 3, &e), &e);
    ASSERT_OK(ch_wsync_pub_wait(pub, 2, 20000, &e), &e);
    int st;
    waitpid(kid, &st, 0);
    ASSERT_TRUE(WIFEXITED(st));
    ASSERT_INT_EQ(WEXITSTATUS(st), 0);
    ch_wsync_pub_destroy(pub);
    ch_producer_close(p);
    ch_hub_destroy(h);
    blob_free(&b1);
    blob_free(&b2);
    close(fds[0]);
    close(fds[1]);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"full_version_in_chunks", test_full_version_in_chunks},
        {"newest_complete_wins", test_newest_complete_wins},
        {"delta_sends_only_changes", test_delta_sends_only_changes},
        {"rate_cap", test_rate_cap},
        {"inflight_cap", test_inflight_cap},
        {"bad_chunks_refused", test_bad_chunks_refused},
        {"over_shared_memory", test_over_shared_memory},
        {NULL, NULL},
    };
    return test_main("channels_wsync", cases, argc, argv);
}
