/* buffer.c - benchmark of the replay buffer against raw SQLite and raw memory, in
 * one run on the same machine:
 *   1. durable inserts/s of proprioceptive transitions (32 floats) and of image
 *      transitions (2 x 128x128x3 uint8), against a raw SQLite loop inserting the
 *      same rows in batched transactions with the same durability (WAL, fsync);
 *   2. batch-256 sample latency p50/p99 from the cache (against a bare gather of
 *      the same rows from one array) and from disk (against 512 raw point reads);
 *   3. RAM and disk bytes per transition (disk against the raw payload size).
 * usage: build/bench/buffer [DIR]   (DIR for the database files; default $TMPDIR) */
#define _GNU_SOURCE
#include "bench/benchutil.h"
#include "buffer/buffer.h"
#include "common/time.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OBS 32
#define ACT 8
#define EP_LEN 100
#define CAM 128

static char dir[4096];

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
    char side[4200];
    unlink(out);
    snprintf(side, sizeof side, "%s-wal", out);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", out);
    unlink(side);
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench buffer: %s: %s\n", what, msg);
    exit(1);
}

static buf_layout_t layout_of(int cams)
{
    buf_layout_t l = {.n_proprio = 1, .proprio_dim = {OBS}, .act_dim = ACT, .n_cams = cams};
    for (int i = 0; i < cams; i++) { l.cam_h[i] = CAM; l.cam_w[i] = CAM; l.cam_c[i] = 3; }
    return l;
}

/* Step i: deterministic contents, an episode every EP_LEN + 1 rows. */
static void fill(buf_step_t *s, float *obs, float *act, uint64_t i)
{
    for (int k = 0; k < OBS; k++) obs[k] = (float)i + (float)k * 0.001f;
    for (int k = 0; k < ACT; k++) act[k] = (float)k;
    uint64_t t = i % (EP_LEN + 1);
    s->producer = 1;
    s->seq = i;
    s->episode = i / (EP_LEN + 1);
    s->proprio = obs;
    s->action = t == EP_LEN ? NULL : act;
    s->reward = 1;
    s->done = t == EP_LEN - 1;
}

static atomic_long acks;
static void on_ack(void *ctx, const buf_ack_t *a)
{
    (void)ctx;
    if (a->status) die("ack", cr_err_str(a->status));
    atomic_fetch_add(&acks, 1);
}

/* Rows/s through the buffer: one producer, asynchronous puts, all acked. */
static double buffer_inserts(const char *path, int cams, long n, uint8_t *img, buf_counters_t *k)
{
    buf_layout_t l = layout_of(cams);
    buf_config_t c;
    buf_config_default(&c);
    c.cache_bytes = 64u << 20;
    cr_err_t err = {0};
    buf_t *b;
    if (buf_open(path, &l, &c, &b, &err)) die("open", err.msg);
    float obs[OBS], act[ACT];
    atomic_store(&acks, 0);
    double t0 = cr_now_s();
    for (long i = 0; i < n; i++) {
        buf_step_t s = {0};
        fill(&s, obs, act, (uint64_t)i);
        for (int k2 = 0; k2 < cams; k2++) s.image[k2] = img + (size_t)k2 * CAM * CAM * 3;
        if (buf_put(b, &s, on_ack, NULL, -1, &err)) die("put", err.msg);
    }
    buf_flush(b, &err);
    double dt = cr_now_s() - t0;
    if (atomic_load(&acks) != n) die("acks", "count differs");
    if (k) buf_counters(b, k);
    buf_close(b);
    return (double)n / dt;
}

/* The same rows through a plain prepared-statement loop, 4096 rows per commit (the buffer's max_batch_rows). */
static double raw_inserts(const char *path, int cams, long n, uint8_t *img)
{
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) die("raw open", sqlite3_errmsg(db));
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                 "CREATE TABLE steps(id INTEGER PRIMARY KEY, episode INTEGER, t INTEGER, producer INTEGER,"
                 " seq INTEGER, reward REAL, done INTEGER, intervention INTEGER, policy_version INTEGER,"
                 " action BLOB, proprio BLOB, images BLOB)", NULL, NULL, NULL);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "INSERT INTO steps(episode, t, producer, seq, reward, done, intervention,"
                       " policy_version, action, proprio, images) VALUES(?,?,?,?,?,?,?,?,?,?,?)", -1, &st, NULL);
    float obs[OBS], act[ACT];
    size_t ib = (size_t)cams * CAM * CAM * 3;
    double t0 = cr_now_s();
    for (long i = 0; i < n; i++) {
        if (i % 4096 == 0) sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        buf_step_t s = {0};
        fill(&s, obs, act, (uint64_t)i);
        sqlite3_bind_int64(st, 1, (int64_t)s.episode);
        sqlite3_bind_int64(st, 2, i % (EP_LEN + 1));
        sqlite3_bind_int64(st, 3, 1);
        sqlite3_bind_int64(st, 4, i);
        sqlite3_bind_double(st, 5, s.reward);
        sqlite3_bind_int(st, 6, s.done);
        sqlite3_bind_int(st, 7, 0);
        sqlite3_bind_int64(st, 8, 0);
        if (s.action) sqlite3_bind_blob(st, 9, act, sizeof act, SQLITE_STATIC);
        else sqlite3_bind_null(st, 9);
        sqlite3_bind_blob(st, 10, obs, sizeof obs, SQLITE_STATIC);
        if (ib) sqlite3_bind_blob(st, 11, img, (int)ib, SQLITE_STATIC);
        else sqlite3_bind_zeroblob(st, 11, 0);
        if (sqlite3_step(st) != SQLITE_DONE) die("raw insert", sqlite3_errmsg(db));
        sqlite3_reset(st);
        if (i % 4096 == 4095 || i == n - 1) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    double dt = cr_now_s() - t0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return (double)n / dt;
}

static int64_t file_bytes(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

/* Batch-256 latency through buf_sample, in ms; fills p50 and p99. */
static void sample_latency(buf_t *b, int reps, double *p50, double *p99)
{
    cr_err_t err = {0};
    buf_batch_t *bt;
    if (buf_batch_create(b, 256, &bt, &err)) die("batch", err.msg);
    double *ms = malloc((size_t)reps * sizeof *ms);
    for (int r = 0; r < 20; r++) buf_sample(b, bt, 10000, &err);  /* warm up */
    for (int r = 0; r < reps; r++) {
        int64_t t0 = cr_now_ns();
        if (buf_sample(b, bt, 10000, &err)) die("sample", err.msg);
        ms[r] = (double)(cr_now_ns() - t0) / 1e6;
    }
    *p50 = bench_percentile(ms, (size_t)reps, 50);
    *p99 = bench_percentile(ms, (size_t)reps, 99);
    free(ms);
    buf_batch_destroy(bt);
}

/* The floor of a cache gather: 256 random (obs, next_obs, action) rows by memcpy. */
static void raw_gather_latency(long n, int reps, double *p50, double *p99)
{
    float *obs = malloc((size_t)n * OBS * sizeof(float)), *act = malloc((size_t)n * ACT * sizeof(float));
    float *bo = malloc(256 * OBS * sizeof(float)), *bn = malloc(256 * OBS * sizeof(float));
    float *ba = malloc(256 * ACT * sizeof(float));
    for (long i = 0; i < n * OBS; i++) obs[i] = (float)i;
    for (long i = 0; i < n * ACT; i++) act[i] = (float)i;
    double *ms = malloc((size_t)reps * sizeof *ms);
    uint64_t x = 88172645463325252ULL;
    for (int r = 0; r < reps; r++) {
        int64_t t0 = cr_now_ns();
        for (int i = 0; i < 256; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            long j = (long)(x % (uint64_t)(n - 1));
            memcpy(bo + i * OBS, obs + j * OBS, OBS * sizeof(float));
            memcpy(bn + i * OBS, obs + (j + 1) * OBS, OBS * sizeof(float));
            memcpy(ba + i * ACT, act + j * ACT, ACT * sizeof(float));
        }
        ms[r] = (double)(cr_now_ns() - t0) / 1e6;
    }
    *p50 = bench_percentile(ms, (size_t)reps, 50);
    *p99 = bench_percentile(ms, (size_t)reps, 99);
    free(obs); free(act); free(bo); free(bn); free(ba); free(ms);
}

/* The floor of a disk gather: 512 point reads (row and next row) by id. */
static void raw_read_latency(const char *path, long n, int reps, double *p50, double *p99)
{
    sqlite3 *db;
    sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT proprio, images, action, policy_version FROM steps WHERE id=?", -1, &st, NULL);
    float o[OBS];
    double *ms = malloc((size_t)reps * sizeof *ms);
    uint64_t x = 88172645463325252ULL;
    for (int r = 0; r < reps; r++) {
        int64_t t0 = cr_now_ns();
        for (int i = 0; i < 512; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            sqlite3_bind_int64(st, 1, 1 + (int64_t)(x % (uint64_t)n));
            if (sqlite3_step(st) == SQLITE_ROW) memcpy(o, sqlite3_column_blob(st, 0), sizeof o);
            sqlite3_reset(st);
        }
        ms[r] = (double)(cr_now_ns() - t0) / 1e6;
    }
    *p50 = bench_percentile(ms, (size_t)reps, 50);
    *p99 = bench_percentile(ms, (size_t)reps, 99);
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(ms);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/corral-bench-buffer-%d", base && *base ? base : "/tmp", (int)getpid());
    if (mkdir(dir, 0755) != 0) die("mkdir", dir);
    char pbuf[4300], praw[4300], pimg[4300], prawimg[4300];
    path_of(pbuf, sizeof pbuf, "proprio.db");
    path_of(praw, sizeof praw, "proprio-raw.db");
    path_of(pimg, sizeof pimg, "image.db");
    path_of(prawimg, sizeof prawimg, "image-raw.db");
    size_t img_bytes = 2 * CAM * CAM * 3;
    uint8_t *img = malloc(img_bytes);
    for (size_t i = 0; i < img_bytes; i++) img[i] = (uint8_t)(i * 31 + (i >> 9));

    printf("buffer benchmark: WAL + fsync per commit (synchronous=FULL) for both sides\n\n");
    /* 1. inserts */
    long np = 60000, ni = 1500;
    double raw_p = raw_inserts(praw, 0, np, NULL);
    buf_counters_t kp;
    double buf_p = buffer_inserts(pbuf, 0, np, NULL, &kp);
    double raw_i = raw_inserts(prawimg, 2, ni, img);
    buf_counters_t ki;
    double buf_i = buffer_inserts(pimg, 2, ni, img, &ki);
    printf("%-44s %12s %12s %8s\n", "durable inserts/s", "buffer", "raw sqlite", "ratio");
    printf("%-44s %12.0f %12.0f %8.2f   (%lld commits)\n", "proprio transitions (32 floats)", buf_p, raw_p,
           buf_p / raw_p, (long long)kp.commits);
    printf("%-44s %12.0f %12.0f %8.2f   (%lld commits)\n", "image transitions (2 x 128x128x3 uint8)", buf_i,
           raw_i, buf_i / raw_i, (long long)ki.commits);

    /* 2. sample latency: cache, then disk (cache too small for anything). */
    buf_layout_t l = layout_of(0);
    buf_config_t c;
    buf_config_default(&c);
    c.seed = 1;
    cr_err_t err = {0};
    buf_t *b;
    if (buf_open(pbuf, &l, &c, &b, &err)) die("reopen", err.msg);
    buf_counters_t k;
    buf_counters(b, &k);
    double c50, c99, r50, r99;
    sample_latency(b, 2000, &c50, &c99);
    raw_gather_latency(np, 2000, &r50, &r99);
    long n_tr = (long)k.transitions[0];
    /* One cache row plus the transition's share of the (doubling) index arrays. */
    double ram_per_tr = (double)k.cache_bytes / (double)k.cache_capacity + (double)k.index_bytes / (double)n_tr;
    buf_close(b);
    c.cache_bytes = 1;  /* no row fits: every gather goes through the prefetcher */
    if (buf_open(pbuf, &l, &c, &b, &err)) die("reopen", err.msg);
    double d50, d99, q50, q99;
    sample_latency(b, 300, &d50, &d99);
    buf_counters(b, &k);
    buf_close(b);
    raw_read_latency(pbuf, np, 300, &q50, &q99);
    printf("\n%-44s %12s %12s %8s\n", "batch-256 sample latency (ms)", "buffer", "baseline", "ratio");
    printf("%-44s %12.4f %12.4f %8.2f   (baseline: memcpy gather)\n", "cache p50", c50, r50, c50 / r50);
    printf("%-44s %12.4f %12.4f %8.2f\n", "cache p99", c99, r99, c99 / r99);
    printf("%-44s %12.4f %12.4f %8.2f   (baseline: 512 sqlite point reads)\n", "disk p50", d50, q50, d50 / q50);
    printf("%-44s %12.4f %12.4f %8.2f   (%lld rows read by the prefetcher)\n", "disk p99", d99, q99, d99 / q99,
           (long long)k.disk_reads);

    /* 3. bytes per transition. After close the WAL is checkpointed into the file. */
    double payload_p = OBS * 4 + ACT * 4, payload_i = payload_p + (double)img_bytes;
    double disk_p = (double)file_bytes(pbuf) / (double)np, disk_i = (double)file_bytes(pimg) / (double)ni;
    double rawdisk_i = (double)file_bytes(prawimg) / (double)ni;
    printf("\n%-44s %12s %12s %8s\n", "bytes per stored step", "buffer", "raw payload", "ratio");
    printf("%-44s %12.0f %12.0f %8.3f\n", "disk, proprio", disk_p, payload_p, disk_p / payload_p);
    printf("%-44s %12.0f %12.0f %8.3f   (raw sqlite table: %.0f)\n", "disk, image", disk_i, payload_i,
           disk_i / payload_i, rawdisk_i);
    printf("%-44s %12.0f %12.0f %8.3f   (cache row + index)\n", "RAM, proprio (per cached transition)",
           ram_per_tr, payload_p, ram_per_tr / payload_p);
    double ram_i = (double)ki.cache_bytes / (double)ki.cache_capacity +
                   (double)ki.index_bytes / (double)(ki.transitions[0] ? ki.transitions[0] : 1);
    printf("%-44s %12.0f %12.0f %8.3f\n", "RAM, image (per cached transition)", ram_i, payload_i,
           ram_i / payload_i);
    printf("\n");
    bench_target("buffer_proprio_insert_ratio", buf_p / raw_p, ">=0.50");
    bench_target("buffer_cache_sample256_p50_ms", c50, "<=0.2");
    bench_target("buffer_image_disk_ratio", disk_i / payload_i, "<=1.05");

    const char *paths[] = {pbuf, praw, pimg, prawimg};
    for (int i = 0; i < 4; i++) {
        char side[4400];
        unlink(paths[i]);
        snprintf(side, sizeof side, "%s-wal", paths[i]);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", paths[i]);
        unlink(side);
    }
    rmdir(dir);
    free(img);
    return 0;
}
