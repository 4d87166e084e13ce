/* test_buffer.c - unit tests of the replay buffer: storage and layout, exactly-once
 * puts, group commit, recovery, cache and disk gathers, source mixing, samplers,
 * n-step returns, chunks of consecutive transitions, the rate limiter, statistics,
 * and bad input (corrupt, foreign and newer files, failing writes through a VFS
 * shim, a file-size limit). */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "tests/unit/buffer/bufutil.h"
#include "tests/unit/buffer/faultvfs.h"
#include "common/time.h"
#include "buffer/internal.h"  /* the sum tree, tested directly */

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *db_path(const char *name)
{
    static char p[8][4300];  /* a few alive at once */
    static int next;
    char *out = p[next++ % 8];
    snprintf(out, sizeof p[0], "%s/%s", test_tmpdir(), name);
    return out;
}

static buf_config_t fast_config(void)
{
    buf_config_t c;
    buf_config_default(&c);
    c.commit_window_us = 500;
    c.sync_full = 0;
    c.cache_bytes = 1 << 20;
    c.seed = 42;
    return c;
}

/* Puts one episode of n action steps (+ its final row) for producer p. */
static void put_episode(buf_t *b, uint64_t p, uint64_t *seq, uint64_t ep, int n, const float *rewards,
                        int end, cr_err_t *err)
{
    tu_step_t x;
    for (int t = 0; t < n; t++) {
        tu_fill(&x, p, (*seq)++, ep, t, 0, rewards ? rewards[t] : 1.0f);
        x.s.done = end && t == n - 1;
        ASSERT_OK(buf_put_wait(b, &x.s, 5000, NULL, err), err);
    }
    if (end) {
        tu_fill(&x, p, (*seq)++, ep, n, 1, 0);
        x.s.success = 1;
        ASSERT_OK(buf_put_wait(b, &x.s, 5000, NULL, err), err);
    }
}

/* Every sampled transition must be consistent with how tu_fill built it. */
static void check_batch(const buf_batch_t *bt)
{
    for (int i = 0; i < bt->size; i++) {
        const float *o = bt->obs + i * bt->obs_dim, *no = bt->next_obs + i * bt->obs_dim;
        ASSERT_NEAR(bt->action[i * bt->act_dim], o[0], 0);       /* action from the same row */
        ASSERT_NEAR(no[1], o[1] + 1, 0);                          /* next step of ... */
        ASSERT_NEAR(no[2], o[2], 0);                              /* ... the same episode */
        ASSERT_INT_EQ(bt->image[0][i * TU_CAM_BYTES], ((int)o[1]) & 255);
        ASSERT_INT_EQ(bt->next_image[0][i * TU_CAM_BYTES + 5], ((int)no[1]) & 255);
        ASSERT_INT_EQ(bt->policy_version[i], 7);
    }
}

static void test_create_and_layout(void)
{
    cr_err_t err = {0};
    const char *path = db_path("a.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_INT_EQ(buf_open(path, NULL, &c, &b, &err), CR_ENOENT);
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    ASSERT_INT_EQ(buf_layout_obs_dim(buf_layout(b)), 4);
    buf_close(b);
    ASSERT_OK(buf_open(path, NULL, &c, &b, &err), &err);  /* layout read back */
    ASSERT_INT_EQ(buf_layout(b)->cam_c[0], 3);
    /* A second writer process is refused while the first holds the buffer. */
    pid_t pid = fork();
    if (pid == 0) {
        buf_t *b2;
        _exit(buf_open(path, NULL, &c, &b2, &err) == CR_EBUSY ? 0 : 1);
    }
    int status;
    ASSERT_INT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    buf_close(b);
    buf_layout_t other = l;
    other.act_dim = 3;
    ASSERT_INT_EQ(buf_open(path, &other, &c, &b, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "a2") && strstr(err.msg, "a3"));
    buf_layout_t bad = l;
    bad.cam_h[0] = 0;
    ASSERT_INT_EQ(buf_open(db_path("b.db"), &bad, &c, &b, &err), CR_EINVAL);
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode='wal'"), 1);
}

static void test_obs_stored_once(void)
{
    cr_err_t err = {0};
    const char *path = db_path("once.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 1;
    put_episode(b, 1, &seq, 0, 5, NULL, 1, &err);
    /* 5 transitions from 6 rows: each observation is one row. */
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM steps"), 6);
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM steps WHERE action IS NULL"), 1);
    ASSERT_INT_EQ(tu_query(path, "SELECT ended FROM episodes"), 1);
    ASSERT_INT_EQ(tu_query(path, "SELECT success FROM episodes"), 1);
    ASSERT_INT_EQ(tu_query(path, "SELECT CAST(ret AS INTEGER) FROM episodes"), 5);
    ASSERT_INT_EQ(tu_query(path, "SELECT length(images) FROM steps LIMIT 1"), TU_CAM_BYTES);
    buf_counters_t k;
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.transitions[BUF_SRC_ONLINE], 5);
    ASSERT_INT_EQ(k.inserts, 5);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 64, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    check_batch(bt);
    int terminal = 0;
    for (int i = 0; i < bt->size; i++) {
        int t = (int)bt->obs[i * 4 + 1];
        ASSERT_INT_EQ((int)bt->done[i], t == 4);
        terminal += t == 4;
        ASSERT_NEAR(bt->discount[i], 0.99, 1e-6);
    }
    ASSERT_TRUE(terminal > 0);
    buf_batch_destroy(bt);
    buf_close(b);
}

static void test_duplicates_ignored(void)
{
    cr_err_t err = {0};
    const char *path = db_path("dup.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    tu_step_t x;
    int dup = -1;
    for (int t = 0; t < 3; t++) {
        tu_fill(&x, 9, (uint64_t)t, 0, t, 0, 1);
        ASSERT_OK(buf_put_wait(b, &x.s, 1000, &dup, &err), &err);
        ASSERT_INT_EQ(dup, 0);
    }
    tu_fill(&x, 9, 1, 0, 1, 0, 1);  /* redelivered */
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, &dup, &err), &err);
    ASSERT_INT_EQ(dup, 1);
    buf_close(b);
    /* Redelivery after a restart, of a step of an ended episode too. */
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    tu_fill(&x, 9, 2, 0, 2, 0, 1);
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, &dup, &err), &err);
    ASSERT_INT_EQ(dup, 1);
    tu_fill(&x, 9, 3, 0, 3, 1, 0);
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, &dup, &err), &err);
    ASSERT_INT_EQ(dup, 0);
    tu_fill(&x, 9, 0, 0, 0, 0, 1);
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, &dup, &err), &err);
    ASSERT_INT_EQ(dup, 1);
    buf_counters_t k;
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.duplicates, 2);
    ASSERT_INT_EQ(k.transitions[0], 3);
    buf_close(b);
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM steps"), 4);
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM episodes"), 1);
}

static atomic_int acked, ack_errors;
static void count_ack(void *ctx, const buf_ack_t *a)
{
    (void)ctx;
    if (a->status) atomic_fetch_add(&ack_errors, 1);
    else atomic_fetch_add(&acked, 1);
}

static void test_group_commit(void)
{
    cr_err_t err = {0};
    const char *path = db_path("gc.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.commit_window_us = 5000;
    c.sync_full = 1;
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    atomic_store(&acked, 0);
    atomic_store(&ack_errors, 0);
    tu_step_t x;
    for (int i = 0; i < 2000; i++) {
        tu_fill(&x, 3, (uint64_t)i, (uint64_t)(i / 100), i % 100, 0, 1);
        ASSERT_OK(buf_put(b, &x.s, count_ack, NULL, 1000, &err), &err);
    }
    ASSERT_OK(buf_flush(b, &err), &err);
    ASSERT_INT_EQ(atomic_load(&acked), 2000);
    ASSERT_INT_EQ(atomic_load(&ack_errors), 0);
    buf_counters_t k;
    buf_counters(b, &k);
    ASSERT_TRUE(k.commits >= 1 && k.commits < 200);  /* many puts share a commit */
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM steps"), 2000);
    buf_close(b);
}

static void test_recovery_truncates(void)
{
    cr_err_t err = {0};
    const char *path = db_path("rec.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    put_episode(b, 1, &seq, 0, 4, NULL, 1, &err);
    put_episode(b, 1, &seq, 1, 3, NULL, 0, &err);  /* unfinished */
    buf_close(b);
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    ASSERT_INT_EQ(tu_query(path, "SELECT truncated FROM episodes WHERE ep_no=1"), 1);
    ASSERT_INT_EQ(tu_query(path, "SELECT truncated FROM episodes WHERE ep_no=0"), 0);
    buf_counters_t k;
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.transitions[0], 4 + 2);
    ASSERT_INT_EQ(k.inserts, 7);
    ASSERT_INT_EQ(k.cached_rows, 5 + 3);
    /* The producer resumes the episode: the link across the restart holds. */
    tu_step_t x;
    tu_fill(&x, 1, seq++, 1, 3, 1, 0);
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, NULL, &err), &err);
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.transitions[0], 7);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 128, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    check_batch(bt);
    buf_batch_destroy(bt);
    buf_close(b);
    ASSERT_INT_EQ(tu_query(path, "SELECT ended FROM episodes WHERE ep_no=1"), 1);
    ASSERT_TRUE(tu_integrity_ok(path));
}

static void test_disk_gathers(void)
{
    cr_err_t err = {0};
    const char *path = db_path("disk.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.cache_bytes = 50 * (2 * 8 + 6 * 4 + TU_CAM_BYTES);  /* ~50 rows */
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    atomic_store(&acked, 0);
    tu_step_t x;
    uint64_t seq = 0;
    for (int e = 0; e < 20; e++)
        for (int t = 0; t <= 50; t++) {
            tu_fill(&x, 2, seq++, (uint64_t)e, t, t == 50, 1);
            ASSERT_OK(buf_put(b, &x.s, count_ack, NULL, 1000, &err), &err);
        }
    ASSERT_OK(buf_flush(b, &err), &err);
    buf_counters_t k;
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.cache_capacity, 50);
    ASSERT_INT_EQ(k.transitions[0], 1000);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 256, &bt, &err), &err);
    int64_t old = 0;
    for (int r = 0; r < 10; r++) {
        ASSERT_OK(buf_sample(b, bt, 5000, &err), &err);
        check_batch(bt);
        for (int i = 0; i < bt->size; i++) old += bt->obs[i * 4 + 2] < 19;
    }
    ASSERT_TRUE(old > 2000);  /* ~95% of the draws live on disk only */
    buf_counters(b, &k);
    ASSERT_TRUE(k.disk_reads > 0);
    buf_batch_destroy(bt);
    buf_close(b);
}

static void make_demo(const char *path, int episodes, cr_err_t *err)
{
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, err), err);
    uint64_t seq = 0;
    for (int e = 0; e < episodes; e++) put_episode(b, 50, &seq, (uint64_t)e, 10, NULL, 1, err);
    buf_close(b);
}

static void test_source_mixing(void)
{
    cr_err_t err = {0};
    const char *demo = db_path("demo.db");
    make_demo(demo, 3, &err);
    const char *path = db_path("mix.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    put_episode(b, 1, &seq, 0, 20, NULL, 1, &err);
    /* An intervention step: sampled as online by default. */
    tu_step_t x;
    tu_fill(&x, 1, seq++, 1, 0, 0, 1);
    x.s.intervention = 1;
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, NULL, &err), &err);
    tu_fill(&x, 1, seq++, 1, 1, 1, 0);
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, NULL, &err), &err);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 256, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    for (int i = 0; i < bt->size; i++) ASSERT_INT_EQ(bt->source[i], BUF_SRC_ONLINE);
    ASSERT_OK(buf_attach_demo(b, demo, &err), &err);
    ASSERT_INT_EQ(buf_attach_demo(b, db_path("none.db"), &err), CR_ENOENT);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    int n[BUF_SRC_COUNT] = {0};
    for (int i = 0; i < bt->size; i++) {
        n[bt->source[i]]++;
        float producer = (float)(int)(bt->obs[i * 4] / 100000);
        ASSERT_NEAR(producer, bt->source[i] == BUF_SRC_DEMO ? 50 : 1, 0);
    }
    check_batch(bt);
    ASSERT_INT_EQ(n[BUF_SRC_ONLINE], 128);
    ASSERT_INT_EQ(n[BUF_SRC_DEMO], 128);
    buf_batch_destroy(bt);
    buf_close(b);

    /* Configured ratios, interventions on their own. */
    c.ratio[BUF_SRC_ONLINE] = 0.5;
    c.ratio[BUF_SRC_DEMO] = 0.25;
    c.ratio[BUF_SRC_INTERVENTION] = 0.25;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    ASSERT_OK(buf_attach_demo(b, demo, &err), &err);
    ASSERT_OK(buf_batch_create(b, 100, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    memset(n, 0, sizeof n);
    for (int i = 0; i < bt->size; i++) n[bt->source[i]]++;
    ASSERT_INT_EQ(n[BUF_SRC_ONLINE], 50);
    ASSERT_INT_EQ(n[BUF_SRC_DEMO], 25);
    ASSERT_INT_EQ(n[BUF_SRC_INTERVENTION], 25);
    buf_batch_destroy(bt);
    buf_close(b);
}

/* Behaviour cloning from earlier buffers: no online data at all. */
static void test_offline_only(void)
{
    cr_err_t err = {0};
    const char *demo = db_path("demo2.db");
    make_demo(demo, 2, &err);
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.min_size = 5;
    buf_t *b;
    ASSERT_OK(buf_open(db_path("offline.db"), &l, &c, &b, &err), &err);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 32, &bt, &err), &err);
    ASSERT_INT_EQ(buf_sample(b, bt, 10, &err), CR_ETIMEDOUT);
    ASSERT_OK(buf_attach_demo(b, demo, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    for (int i = 0; i < bt->size; i++) ASSERT_INT_EQ(bt->source[i], BUF_SRC_DEMO);
    check_batch(bt);
    buf_batch_destroy(bt);
    buf_close(b);
}

static void test_nstep_returns(void)
{
    cr_err_t err = {0};
    const char *path = db_path("nstep.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.n_step = 3;
    c.gamma = 0.5;
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    const float r[5] = {1, 2, 3, 4, 5};
    put_episode(b, 1, &seq, 0, 5, r, 1, &err);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 200, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    int seen[5] = {0};
    for (int i = 0; i < bt->size; i++) {
        int t = (int)bt->obs[i * 4 + 1];
        int m = t + 3 <= 5 ? 3 : 5 - t;  /* steps summed before the terminal */
        double want = 0;
        for (int k = 0; k < m; k++) want += r[t + k] * (1.0 / (1 << k));
        ASSERT_NEAR(bt->reward[i], want, 1e-5);
        ASSERT_NEAR(bt->discount[i], 1.0 / (1 << m), 1e-6);
        ASSERT_NEAR(bt->next_obs[i * 4 + 1], t + m, 0);
        ASSERT_INT_EQ((int)bt->done[i], t + m == 5);
        seen[t]++;
    }
    for (int t = 0; t < 5; t++) ASSERT_TRUE(seen[t] > 0);
    buf_batch_destroy(bt);
    buf_close(b);
}

static void test_prioritized(void)
{
    cr_err_t err = {0};
    const char *path = db_path("per.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.sampler = BUF_SAMPLE_PRIORITIZED;
    c.alpha = 1;
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    put_episode(b, 1, &seq, 0, 10, NULL, 1, &err);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 256, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    /* Collect the ten keys, then favour the one for t == 3 by 1000:1. */
    uint64_t key[10];
    int have[10] = {0};
    for (int i = 0; i < bt->size; i++) {
        int t = (int)bt->obs[i * 4 + 1];
        key[t] = bt->key[i];
        have[t] = 1;
    }
    float prio[10];
    for (int t = 0; t < 10; t++) { ASSERT_TRUE(have[t]); prio[t] = t == 3 ? 1000.0f : 1.0f; }
    ASSERT_OK(buf_update_priorities(b, key, prio, 10, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    int hits = 0;
    float w3 = 0, wother = 0;
    for (int i = 0; i < bt->size; i++) {
        if ((int)bt->obs[i * 4 + 1] == 3) { hits++; w3 = bt->weight[i]; }
        else wother = bt->weight[i];
    }
    ASSERT_TRUE(hits > 230);
    ASSERT_TRUE(w3 > 0 && (wother == 0 || w3 < wother));  /* frequent ones weigh less */
    uint64_t bogus = 1ULL << 40;
    ASSERT_INT_EQ(buf_update_priorities(b, &bogus, prio, 1, &err), CR_EINVAL);
    float nan = 0.0f / 0.0f;
    ASSERT_INT_EQ(buf_update_priorities(b, key, &nan, 1, &err), CR_EINVAL);
    buf_batch_destroy(bt);
    buf_close(b);
}

static void test_recent_window(void)
{
    cr_err_t err = {0};
    const char *path = db_path("recent.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.sampler = BUF_SAMPLE_RECENT;
    c.recent_window = 10;
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    put_episode(b, 1, &seq, 0, 100, NULL, 1, &err);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 256, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    for (int i = 0; i < bt->size; i++) ASSERT_TRUE(bt->obs[i * 4 + 1] >= 90);
    buf_batch_destroy(bt);
    buf_close(b);
}

/* With a capacity, only the newest transitions are sampled, with every sampler,
 * after the index compacts its evicted front, and again after a reopen. */
static void test_capacity(void)
{
    const buf_sampler_t samplers[] = {BUF_SAMPLE_UNIFORM, BUF_SAMPLE_PRIORITIZED};
    for (int si = 0; si < 2; si++) {
        cr_err_t err = {0};
        const char *path = db_path(si ? "cap-per.db" : "cap.db");
        buf_layout_t l = tu_layout();
        buf_config_t c = fast_config();
        c.sampler = samplers[si];
        c.capacity = 2000;
        for (int round = 0; round < 2; round++) {
            buf_t *b;
            ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
            if (round == 0) {
                /* Nine episodes of 1000 transitions: the newest 2000 are episodes 7
                 * and 8, and 7000 evicted ones are enough to compact the index. */
                uint64_t seq = 0;
                for (int ep = 0; ep < 9; ep++) put_episode(b, 1, &seq, (uint64_t)ep, 1000, NULL, 1, &err);
            }
            buf_counters_t k;
            buf_counters(b, &k);
            ASSERT_INT_EQ(k.transitions[BUF_SRC_ONLINE], 2000);
            buf_batch_t *bt;
            ASSERT_OK(buf_batch_create(b, 256, &bt, &err), &err);
            int seen7 = 0, seen8 = 0;
            for (int rep = 0; rep < 8; rep++) {
                ASSERT_OK(buf_sample(b, bt, 2000, &err), &err);
                check_batch(bt);
                for (int i = 0; i < bt->size; i++) {
                    int ep = (int)bt->obs[i * 4 + 2];
                    ASSERT_TRUE(ep >= 7);
                    seen7 |= ep == 7;
                    seen8 |= ep == 8;
                }
                if (samplers[si] == BUF_SAMPLE_PRIORITIZED) {
                    float prio[256];
                    for (int i = 0; i < bt->size; i++) prio[i] = 1.0f + (float)(i % 7);
                    ASSERT_OK(buf_update_priorities(b, bt->key, prio, bt->size, &err), &err);
                }
            }
            ASSERT_TRUE(seen7 && seen8);
            buf_batch_destroy(bt);
            buf_close(b);
        }
    }
    /* A negative capacity is a configuration error. */
    cr_err_t err = {0};
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.capacity = -1;
    buf_t *b = NULL;
    ASSERT_INT_EQ(buf_open(db_path("cap-bad.db"), &l, &c, &b, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "capacity") != NULL);
}

/* ---- chunks --------------------------------------------------------------------- */

/* Step t of an episode of n action steps (n -1: not known, the episode is open),
 * with proprio[3] = n so a sampled row tells where its episode ends. */
static void put_ep_step(buf_t *b, uint64_t p, uint64_t seq, uint64_t ep, int t, int n, int final,
                        buf_source_t src, int intervention, cr_err_t *err)
{
    tu_step_t x;
    tu_fill(&x, p, seq, ep, t, final, 1);
    x.proprio[3] = (float)n;
    x.s.source = src;
    x.s.intervention = intervention;
    x.s.done = n > 0 && t == n - 1;
    ASSERT_OK(buf_put_wait(b, &x.s, 5000, NULL, err), err);
}

static int producer_of(const float *o) { return (int)(o[0] / 100000); }

/* Every chunk of H rows: one episode (producer and episode number), consecutive
 * steps, each row a transition of its own (action from its row, next_obs the next
 * step), padded only past the episode's end: an ended episode's final row, or for
 * an episode of unknown length (proprio[3] -1) its newest stored row, which must be
 * row open_rows - 1 (open_rows -1: no padding allowed there), or row was_rows - 1
 * for chunks read ahead from disk before the episode went on. Returns pads. */
static int check_chunks(const buf_batch_t *bt, int H, int open_rows, int was_rows)
{
    int od = bt->obs_dim, ad = bt->act_dim, pads = 0;
    ASSERT_INT_EQ(bt->chunk, H);
    for (int s = 0; s < bt->size / H; s++) {
        const float *o0 = bt->obs + (size_t)s * H * od;
        ASSERT_INT_EQ(bt->pad[s * H], 0);
        for (int k = 0; k < H; k++) {
            int i = s * H + k;
            const float *o = bt->obs + (size_t)i * od, *no = bt->next_obs + (size_t)i * od;
            ASSERT_NEAR(bt->action[i * ad], o[0], 0);
            ASSERT_NEAR(bt->action[i * ad + 1], o[1], 0);
            ASSERT_NEAR(no[1], o[1] + 1, 0);
            ASSERT_NEAR(no[2], o[2], 0);
            ASSERT_INT_EQ(producer_of(o), producer_of(o0));   /* never another episode */
            ASSERT_NEAR(o[2], o0[2], 0);
            ASSERT_INT_EQ(bt->image[0][i * TU_CAM_BYTES], ((int)o[1]) & 255);
            if (!bt->pad[i]) {
                ASSERT_NEAR(o[1], o0[1] + k, 0);               /* consecutive */
                if (k > 0) {
                    ASSERT_INT_EQ(bt->pad[i - 1], 0);
                    ASSERT_NEAR(o[1], bt->next_obs[(size_t)(i - 1) * od + 1], 0);
                    ASSERT_INT_EQ(bt->next_image[0][(i - 1) * TU_CAM_BYTES + 3], ((int)o[1]) & 255);
                }
                continue;
            }
            pads++;
            ASSERT_TRUE(k > 0);
            /* a copy of the row before, which is its episode's last transition */
            ASSERT_TRUE(memcmp(o, o - od, sizeof(float) * od) == 0);
            ASSERT_TRUE(memcmp(no, no - od, sizeof(float) * od) == 0);
            ASSERT_TRUE(memcmp(bt->action + i * ad, bt->action + (i - 1) * ad, sizeof(float) * ad) == 0);
            ASSERT_INT_EQ(bt->key[i], bt->key[i - 1]);
            ASSERT_NEAR(bt->reward[i], bt->reward[i - 1], 0);
            ASSERT_NEAR(bt->done[i], bt->done[i - 1], 0);
            if (bt->pad[i - 1]) continue;
            if (o[3] > 0) {
                ASSERT_NEAR(o[1] + 1, o[3], 0);                 /* into the final row */
                ASSERT_NEAR(bt->done[i], 1, 0);
            } else {
                ASSERT_TRUE(open_rows > 0);                     /* into the newest stored row */
                ASSERT_TRUE(o[1] + 1 == open_rows - 1 || o[1] + 1 == was_rows - 1);
            }
        }
    }
    return pads;
}

static void test_chunks(void)
{
    cr_err_t err = {0};
    const char *path = db_path("chunks.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.chunk = 4;
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    buf_batch_t *bt;
    ASSERT_INT_EQ(buf_batch_create(b, 30, &bt, &err), CR_EINVAL);   /* not whole chunks */
    ASSERT_TRUE(strstr(err.msg, "chunks of 4") != NULL);
    ASSERT_OK(buf_batch_create(b, 64, &bt, &err), &err);
    /* Three producers interleaved row by row, so neighbouring rows of the database
     * belong to other episodes: producer 1 five episodes of 10 steps, producer 2 ten
     * of 2 (shorter than a chunk), producer 3 one episode still open at 9 steps. */
    uint64_t seq[4] = {0};
    int t3 = 0;
    for (int r = 0; r < 55; r++) {
        int e1 = r / 11, t1 = r % 11;
        put_ep_step(b, 1, seq[1]++, (uint64_t)e1, t1, 10, t1 == 10, BUF_SRC_ONLINE, 0, &err);
        if (r < 30) {
            int e2 = r / 3, t2 = r % 3;
            put_ep_step(b, 2, seq[2]++, (uint64_t)e2, t2, 2, t2 == 2, BUF_SRC_ONLINE, 0, &err);
        }
        if (r < 10) { put_ep_step(b, 3, seq[3]++, 0, t3, -1, 0, BUF_SRC_ONLINE, 0, &err); t3++; }
    }
    buf_counters_t k;
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.transitions[BUF_SRC_ONLINE], 50 + 20 + 9);
    int pads = 0, late3 = 0, starts[4] = {0};
    for (int r = 0; r < 60; r++) {
        ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
        pads += check_chunks(bt, 4, -1, -1);   /* the open episode is never padded */
        for (int s = 0; s < 16; s++) {
            const float *o = bt->obs + (size_t)s * 4 * bt->obs_dim;
            starts[producer_of(o)]++;
            late3 += producer_of(o) == 3 && o[1] > 5;   /* would need steps not written yet */
        }
    }
    ASSERT_INT_EQ(late3, 0);
    ASSERT_TRUE(pads > 0);
    ASSERT_TRUE(starts[1] > 0 && starts[2] > 0 && starts[3] > 0);
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.samples, 60 * 64);   /* the limiter counts rows */
    buf_batch_destroy(bt);
    buf_close(b);

    /* Reopened with a cache of ~20 rows: most chunks come from SQLite through the
     * prefetcher. The unfinished episode ends, for chunks, at its newest row... */
    c.cache_bytes = 20 * (2 * 8 + 6 * 4 + TU_CAM_BYTES);
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    ASSERT_OK(buf_batch_create(b, 64, &bt, &err), &err);
    late3 = 0;
    for (int r = 0; r < 60; r++) {
        ASSERT_OK(buf_sample(b, bt, 5000, &err), &err);
        check_chunks(bt, 4, 10, 10);
        for (int s = 0; s < 16; s++) {
            const float *o = bt->obs + (size_t)s * 4 * bt->obs_dim;
            late3 += producer_of(o) == 3 && o[1] > 5;
        }
    }
    ASSERT_TRUE(late3 > 0);
    buf_counters(b, &k);
    ASSERT_TRUE(k.disk_reads > 0);
    /* ... until its producer goes on with it: chunks then run across the restart. */
    for (int t = 10; t <= 16; t++, t3++) put_ep_step(b, 3, seq[3]++, 0, t, -1, t == 16, BUF_SRC_ONLINE, 0, &err);
    int across = 0;
    for (int r = 0; r < 100; r++) {
        ASSERT_OK(buf_sample(b, bt, 5000, &err), &err);
        check_chunks(bt, 4, 17, 10);
        for (int s = 0; s < 16; s++) {
            const float *o = bt->obs + (size_t)s * 4 * bt->obs_dim;
            across += producer_of(o) == 3 && o[1] >= 7 && o[1] <= 8 && !bt->pad[s * 4 + 3];
        }
    }
    ASSERT_TRUE(across > 0);
    buf_batch_destroy(bt);
    buf_close(b);
    ASSERT_INT_EQ(buf_open(db_path("chunk65.db"), &l, &(buf_config_t){.chunk = 65}, &b, &err), CR_EINVAL);
}

/* Chunks of every source in the configured shares, counted by their first row;
 * demonstrations from an attached buffer and scripted ones recorded in this one. */
static void test_chunk_sources(void)
{
    cr_err_t err = {0};
    const char *demo = db_path("chunkdemo.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(demo, &l, &c, &b, &err), &err);
    for (int r = 0; r < 3 * 11; r++)   /* producer 50: three episodes of 10 */
        put_ep_step(b, 50, (uint64_t)r, (uint64_t)(r / 11), r % 11, 10, r % 11 == 10, BUF_SRC_ONLINE, 0, &err);
    buf_close(b);
    const char *path = db_path("chunkmix.db");
    c.chunk = 4;
    c.ratio[BUF_SRC_ONLINE] = 0.5;
    c.ratio[BUF_SRC_DEMO] = 0.25;
    c.ratio[BUF_SRC_INTERVENTION] = 0.25;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    ASSERT_OK(buf_attach_demo(b, demo, &err), &err);
    uint64_t seq = 0, seq60 = 0;
    for (int e = 0; e < 4; e++) {
        /* an online episode whose steps 4..7 a human took over, and a scripted one */
        for (int t = 0; t <= 12; t++) {
            put_ep_step(b, 1, seq++, (uint64_t)e, t, 12, t == 12, BUF_SRC_ONLINE, t >= 4 && t < 8, &err);
            put_ep_step(b, 60, seq60++, (uint64_t)e, t, 12, t == 12, BUF_SRC_DEMO, 0, &err);
        }
    }
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 400, &bt, &err), &err);
    int attached = 0, scripted = 0;
    for (int r = 0; r < 10; r++) {
        ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
        check_chunks(bt, 4, -1, -1);
        int n[BUF_SRC_COUNT] = {0};
        for (int s = 0; s < 100; s++) {
            int i = s * 4, src = bt->source[i], p = producer_of(bt->obs + (size_t)i * bt->obs_dim);
            n[src]++;
            if (src == BUF_SRC_DEMO) {
                ASSERT_TRUE(p == 50 || p == 60);
                attached += p == 50;
                scripted += p == 60;
                for (int k = 1; k < 4; k++) ASSERT_INT_EQ(bt->source[i + k], BUF_SRC_DEMO);
            } else {
                ASSERT_INT_EQ(p, 1);
                float t = bt->obs[(size_t)i * bt->obs_dim + 1];
                ASSERT_INT_EQ(src, t >= 4 && t < 8 ? BUF_SRC_INTERVENTION : BUF_SRC_ONLINE);
                for (int k = 1; k < 4; k++) {   /* each row keeps its own source */
                    float tk = bt->obs[(size_t)(i + k) * bt->obs_dim + 1];
                    ASSERT_INT_EQ(bt->source[i + k], tk >= 4 && tk < 8 ? BUF_SRC_INTERVENTION : BUF_SRC_ONLINE);
                }
            }
        }
        ASSERT_INT_EQ(n[BUF_SRC_ONLINE], 50);
        ASSERT_INT_EQ(n[BUF_SRC_DEMO], 25);
        ASSERT_INT_EQ(n[BUF_SRC_INTERVENTION], 25);
    }
    ASSERT_TRUE(attached > 0 && scripted > 0);
    /* Ended episodes per robot and source, as a restarted env worker is told them;
     * an attached demo buffer is another file and not counted. */
    int64_t n = -1;
    put_ep_step(b, 60, seq60++, 4, 0, 12, 0, BUF_SRC_DEMO, 0, &err);   /* not ended */
    ASSERT_OK(buf_count_episodes(path, "arm0", BUF_SRC_DEMO, &n, &err), &err);
    ASSERT_INT_EQ(n, 4);
    ASSERT_OK(buf_count_episodes(path, "arm0", BUF_SRC_ONLINE, &n, &err), &err);
    ASSERT_INT_EQ(n, 4);
    ASSERT_OK(buf_count_episodes(path, "arm9", BUF_SRC_DEMO, &n, &err), &err);
    ASSERT_INT_EQ(n, 0);
    ASSERT_INT_EQ(buf_count_episodes(db_path("nothing.db"), "arm0", BUF_SRC_DEMO, &n, &err), CR_ENOENT);
    buf_batch_destroy(bt);
    buf_close(b);
}

static void test_rate_limiter(void)
{
    cr_err_t err = {0};
    const char *path = db_path("lim.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.samples_per_insert = 4;
    c.min_size = 10;
    c.error_buffer = 8;  /* inserts*4 - samples within [32, 48] */
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 4, &bt, &err), &err);
    ASSERT_INT_EQ(buf_sample(b, bt, 20, &err), CR_ETIMEDOUT);  /* nothing yet */
    tu_step_t x;
    uint64_t seq = 0;
    for (int t = 0; t < 12; t++) {  /* 12*4 = 48: the top of the band */
        tu_fill(&x, 1, seq++, 0, t, 0, 1);
        ASSERT_OK(buf_put_wait(b, &x.s, 200, NULL, &err), &err);
    }
    tu_fill(&x, 1, seq, 0, 12, 0, 1);
    int64_t t0 = cr_now_ns();
    ASSERT_INT_EQ(buf_put_wait(b, &x.s, 50, NULL, &err), CR_ETIMEDOUT);
    ASSERT_TRUE(cr_now_ns() - t0 >= 40 * CR_NS_PER_MS);
    ASSERT_OK(buf_sample(b, bt, 200, &err), &err);  /* 48 - 4 = 44 */
    ASSERT_OK(buf_put_wait(b, &x.s, 200, NULL, &err), &err);  /* 52 - 4 = 48 */
    seq++;
    ASSERT_OK(buf_sample(b, bt, 200, &err), &err);  /* 44 */
    ASSERT_OK(buf_sample(b, bt, 200, &err), &err);  /* 40 */
    ASSERT_OK(buf_sample(b, bt, 200, &err), &err);  /* 36 */
    ASSERT_OK(buf_sample(b, bt, 200, &err), &err);  /* 32 */
    ASSERT_INT_EQ(buf_sample(b, bt, 30, &err), CR_ETIMEDOUT);  /* 28 < 32 */
    buf_counters_t k;
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.inserts, 13);
    ASSERT_INT_EQ(k.samples, 20);
    buf_batch_t *big;
    ASSERT_OK(buf_batch_create(b, 64, &big, &err), &err);
    ASSERT_INT_EQ(buf_sample(b, big, 10, &err), CR_EINVAL);  /* band too narrow for 64 */
    buf_batch_destroy(big);
    buf_close(b);
    /* The counters survive a restart. */
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    buf_counters(b, &k);
    ASSERT_INT_EQ(k.inserts, 13);
    ASSERT_INT_EQ(k.samples, 20);
    ASSERT_INT_EQ(buf_sample(b, bt, 30, &err), CR_ETIMEDOUT);
    buf_batch_destroy(bt);
    buf_close(b);
}

static void test_stats(void)
{
    cr_err_t err = {0};
    const char *path = db_path("stats.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    put_episode(b, 1, &seq, 0, 4, NULL, 1, &err);
    put_episode(b, 1, &seq, 1, 2, NULL, 0, &err);
    tu_step_t x;
    tu_fill(&x, 2, 0, 0, 0, 0, 1);
    x.s.source = BUF_SRC_DEMO;
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, NULL, &err), &err);
    tu_fill(&x, 2, 1, 0, 1, 1, 0);
    x.s.success = 0;
    ASSERT_OK(buf_put_wait(b, &x.s, 1000, NULL, &err), &err);
    buf_stats_t s;
    ASSERT_OK(buf_stats(path, &s, &err), &err);  /* while open: read-only, concurrent */
    ASSERT_INT_EQ(s.episodes[BUF_SRC_ONLINE], 2);
    ASSERT_INT_EQ(s.episodes[BUF_SRC_DEMO], 1);
    ASSERT_INT_EQ(s.steps[BUF_SRC_ONLINE], 5 + 2);
    ASSERT_INT_EQ(s.steps[BUF_SRC_DEMO], 2);
    ASSERT_INT_EQ(s.episodes_ended, 2);
    ASSERT_NEAR(s.success_rate, 0.5, 1e-9);
    ASSERT_TRUE(s.db_bytes + s.wal_bytes > 0);
    ASSERT_INT_EQ(s.layout.act_dim, 2);
    buf_close(b);
    ASSERT_INT_EQ(buf_stats(db_path("nope.db"), &s, &err), CR_ENOENT);
}

/* `corral buffer stats PATH --json` on the same file, parsed back. */
static void test_cli_stats(void)
{
    const char *corral = test_build_path("corral");
    TEST_SKIP_IF(access(corral, X_OK) != 0, "%s is not built", corral);
    cr_err_t err = {0};
    const char *path = db_path("cli.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    put_episode(b, 1, &seq, 0, 6, NULL, 1, &err);
    put_episode(b, 1, &seq, 1, 2, NULL, 0, &err);
    buf_close(b);
    char cmd[9000], out[16384];
    snprintf(cmd, sizeof cmd, "'%s' buffer stats '%s' --json", corral, path);
    FILE *p = popen(cmd, "r");
    ASSERT_TRUE(p != NULL);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    ASSERT_INT_EQ(pclose(p), 0);
    cJSON *j = cJSON_Parse(out);
    ASSERT_TRUE(j != NULL);
    cJSON *eps = cJSON_GetObjectItem(j, "episodes"), *steps = cJSON_GetObjectItem(j, "steps");
    ASSERT_INT_EQ(cJSON_GetObjectItem(eps, "online")->valueint, 2);
    ASSERT_INT_EQ(cJSON_GetObjectItem(eps, "ended")->valueint, 1);
    ASSERT_INT_EQ(cJSON_GetObjectItem(steps, "total")->valueint, 7 + 2);
    ASSERT_NEAR(cJSON_GetObjectItem(j, "success_rate")->valuedouble, 1.0, 1e-9);
    ASSERT_TRUE(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "disk_bytes"), "total")->valuedouble > 0);
    cJSON_Delete(j);
    /* Plain text, and a clear failure on a file that is not a buffer. */
    snprintf(cmd, sizeof cmd, "'%s' buffer stats '%s' 2>&1", corral, corral);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    ASSERT_TRUE(strstr(out, "not") != NULL);
}

static void write_file(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ASSERT_TRUE(f != NULL);
    ASSERT_INT_EQ(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void test_bad_files(void)
{
    cr_err_t err = {0};
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    buf_t *b = NULL;
    /* Not a database at all. */
    const char *junk = db_path("junk.db");
    char data[8192];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (char)(i * 7 + 3);
    write_file(junk, data, sizeof data);
    ASSERT_INT_EQ(buf_open(junk, &l, &c, &b, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "junk.db") != NULL);
    buf_stats_t s;
    ASSERT_INT_EQ(buf_stats(junk, &s, &err), CR_ECORRUPT);
    /* Someone else's database. */
    const char *foreign = db_path("foreign.db");
    sqlite3 *db;
    ASSERT_INT_EQ(sqlite3_open(foreign, &db), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_exec(db, "CREATE TABLE t(x); INSERT INTO t VALUES(1);", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ASSERT_INT_EQ(buf_open(foreign, &l, &c, &b, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "not a corral buffer") != NULL);
    ASSERT_INT_EQ(tu_query(foreign, "SELECT x FROM t"), 1);  /* left untouched, */
    ASSERT_INT_EQ(tu_query(foreign, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode='delete'"), 1);
    /* A newer schema. */
    const char *newer = db_path("newer.db");
    ASSERT_OK(buf_open(newer, &l, &c, &b, &err), &err);
    buf_close(b);
    ASSERT_INT_EQ(sqlite3_open(newer, &db), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_exec(db, "PRAGMA user_version=99; UPDATE meta SET value=99 WHERE key='schema_version';",
                               NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ASSERT_INT_EQ(buf_open(newer, &l, &c, &b, &err), CR_EVERSION);
    ASSERT_TRUE(strstr(err.msg, "99") != NULL);
    /* A truncated file: the header survives, the pages do not. */
    const char *cut = db_path("cut.db");
    ASSERT_OK(buf_open(cut, &l, &c, &b, &err), &err);
    uint64_t seq = 0;
    put_episode(b, 1, &seq, 0, 200, NULL, 1, &err);
    buf_close(b);
    ASSERT_INT_EQ(truncate(cut, 4096 + 100), 0);
    int rc = buf_open(cut, &l, &c, &b, &err);
    ASSERT_TRUE(rc == CR_ECORRUPT || rc == CR_EIO);
    /* A corrupt row: blob sizes that do not fit the layout. */
    const char *badrow = db_path("badrow.db");
    ASSERT_OK(buf_open(badrow, &l, &c, &b, &err), &err);
    seq = 0;
    put_episode(b, 1, &seq, 0, 3, NULL, 1, &err);
    buf_close(b);
    ASSERT_INT_EQ(sqlite3_open(badrow, &db), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_exec(db, "UPDATE steps SET proprio=x'00' WHERE id=2", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ASSERT_INT_EQ(buf_open(badrow, &l, &c, &b, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "row 2") != NULL);
}

static void test_failing_writes(void)
{
    cr_err_t err = {0};
    ASSERT_INT_EQ(fault_vfs_register(), SQLITE_OK);
    const char *path = db_path("fault.db");
    buf_layout_t l = tu_layout();
    buf_config_t c = fast_config();
    c.vfs = FAULT_VFS_NAME;
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    tu_step_t x;
    uint64_t seq = 0;
    int stored = 0;
    /* Fail every write after N more, for several N: puts fail with a clear error,
     * the buffer keeps serving, and whatever was acked is on disk afterwards. */
    for (long n = 0; n < 12; n += 3) {
        fault_vfs_arm(n);
        int failed = 0;
        for (int t = 0; t < 10; t++) {
            tu_fill(&x, 4, seq, (uint64_t)n, t, 0, 1);
            int rc = buf_put_wait(b, &x.s, 1000, NULL, &err);
            if (rc == 0) { stored++; seq++; }
            else { ASSERT_INT_EQ(rc, CR_ENOSPC); failed++; }
        }
        ASSERT_TRUE(failed > 0);
        fault_vfs_arm(-1);
        for (int t = 10; t < 13; t++) {  /* retried and new puts go through again */
            tu_fill(&x, 4, seq, (uint64_t)n, t, 0, 1);
            ASSERT_OK(buf_put_wait(b, &x.s, 1000, NULL, &err), &err);
            stored++;
            seq++;
        }
    }
    ASSERT_TRUE(fault_vfs_failures() > 0);
    buf_batch_t *bt;
    ASSERT_OK(buf_batch_create(b, 32, &bt, &err), &err);
    ASSERT_OK(buf_sample(b, bt, 1000, &err), &err);
    buf_batch_destroy(bt);
    buf_close(b);
    ASSERT_TRUE(tu_integrity_ok(path));
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM steps"), stored);
    ASSERT_INT_EQ(tu_query(path, "SELECT count(DISTINCT seq) FROM steps"), stored);
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    buf_close(b);
}

/* A file-size limit in a child: writes fail with EFBIG (SIGXFSZ ignored). */
static void test_file_size_limit(void)
{
    cr_err_t err = {0};
    const char *path = db_path("full.db");
    buf_layout_t l = tu_layout();
    l.cam_h[0] = 64;
    l.cam_w[0] = 64;
    int fd[2];
    ASSERT_INT_EQ(pipe(fd), 0);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 2 << 20, .rlim_max = 2 << 20};
        setrlimit(RLIMIT_FSIZE, &rl);
        buf_config_t c = fast_config();
        buf_t *b;
        if (buf_open(path, &l, &c, &b, &err)) _exit(3);
        static float prop[4], act[2];
        static uint8_t img[64 * 64 * 3];
        int code = 0;
        for (uint64_t s = 0; s < 2000 && !code; s++) {
            prop[0] = (float)s;
            buf_step_t st = {.producer = 1, .seq = s, .episode = s / 50, .proprio = prop,
                             .image = {img}, .action = act};
            code = buf_put_wait(b, &st, 1000, NULL, &err);
            if (!code && write(fd[1], &s, sizeof s) != sizeof s) _exit(4);
        }
        int32_t rc = code;
        (void)!write(fd[1], &rc, sizeof rc);  /* 4 bytes: the final status */
        buf_close(b);
        _exit(code == CR_ENOSPC ? 0 : 5);
    }
    close(fd[1]);
    uint64_t acked_n = 0;
    char buf8[8];
    ssize_t r;
    int32_t final = 0;
    while ((r = read(fd[0], buf8, 8)) > 0) {
        if (r == 8) acked_n++;
        else if (r == 4) memcpy(&final, buf8, 4);
    }
    close(fd[0]);
    int status;
    ASSERT_INT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));  /* no crash */
    ASSERT_INT_EQ(WEXITSTATUS(status), 0);
    ASSERT_INT_EQ(final, CR_ENOSPC);
    ASSERT_TRUE(acked_n > 10 && acked_n < 2000);
    /* Reopened without the limit: every acknowledged step is there. */
    buf_config_t c = fast_config();
    buf_t *b;
    ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
    buf_close(b);
    ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM steps"), (long long)acked_n);
    ASSERT_TRUE(tu_integrity_ok(path));
}

/* The sum tree against a linear scan, across growth and updates. */
static void test_sumtree(void)
{
    sumtree_t t = {0};
    double v[5000];
    uint64_t x = 7;
    for (int i = 0; i < 5000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        v[i] = (i % 7 == 0) ? 0 : (double)(x % 1000) / 10;
        ASSERT_INT_EQ(buf_sumtree_push(&t, v[i]), 0);
    }
    for (int i = 0; i < 5000; i += 3) { v[i] = (double)(i % 11); buf_sumtree_set(&t, i, v[i]); }
    double total = 0;
    for (int i = 0; i < 5000; i++) total += v[i];
    ASSERT_NEAR(buf_sumtree_total(&t), total, 1e-6 * total);
    for (int k = 0; k < 2000; k++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        double u = (double)(x >> 11) * 0x1.0p-53 * total, acc = 0;
        int want = 0;
        while (want < 4999 && acc + v[want] <= u) acc += v[want++];
        int64_t got = buf_sumtree_find(&t, u);
        ASSERT_TRUE(v[got] > 0);
        ASSERT_TRUE(got == want || fabs(acc - u) < 1e-6);  /* boundaries may round either way */
    }
    buf_sumtree_free(&t);
}

static void test_bad_args(void)
{
    cr_err_t err = {0};
    buf_config_t c = fast_config();
    c.n_step = 0;
    buf_layout_t l = tu_layout();
    buf_t *b;
    ASSERT_INT_EQ(buf_open(db_path("x.db"), &l, &c, &b, &err), CR_EINVAL);
    c = fast_config();
    ASSERT_OK(buf_open(db_path("y.db"), &l, &c, &b, &err), &err);
    tu_step_t x;
    tu_fill(&x, 1, 0, 0, 0, 0, 1);
    x.s.image[0] = NULL;
    ASSERT_INT_EQ(buf_put(b, &x.s, NULL, NULL, 10, &err), CR_EINVAL);
    tu_fill(&x, 1, 0, 0, 0, 0, 0.0f / 0.0f);
    ASSERT_INT_EQ(buf_put(b, &x.s, NULL, NULL, 10, &err), CR_EINVAL);
    buf_close(b);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"create_and_layout", test_create_and_layout},
        {"obs_stored_once", test_obs_stored_once},
        {"duplicates_ignored", test_duplicates_ignored},
        {"group_commit", test_group_commit},
        {"recovery_truncates", test_recovery_truncates},
        {"disk_gathers", test_disk_gathers},
        {"source_mixing", test_source_mixing},
        {"offline_only", test_offline_only},
        {"nstep_returns", test_nstep_returns},
        {"prioritized", test_prioritized},
        {"recent_window", test_recent_window},
        {"capacity", test_capacity},
        {"rate_limiter", test_rate_limiter},
        {"stats", test_stats},
        {"bad_files", test_bad_files},
        {"failing_writes", test_failing_writes},
        {"file_size_limit", test_file_size_limit},
        {"sumtree", test_sumtree},
        {"bad_args", test_bad_args},
        {"cli_stats", test_cli_stats},
        {"chunks", test_chunks},
        {"chunk_sources", test_chunk_sources},
        {NULL, NULL}};
    return test_main("buffer", cases, argc, argv);
}
