/* buffer.h - the replay buffer: a crash-recoverable, SQLite-backed store of robot
 * experience with a RAM cache, mixed-source sampling and a rate limiter.
 *
 * One buffer is one SQLite database (WAL mode) per experiment. Producers (actors)
 * deliver steps at least once, each tagged with (producer id, sequence number); the
 * buffer stores every step exactly once and acknowledges it only after the
 * transaction holding it has committed (group commit: puts arriving within a short
 * window share one commit). A step row holds one observation and the action taken
 * from it, so each observation is stored once: the next observation of a transition
 * is the next row of the same episode. An episode ends with a final row that carries
 * the last observation and no action.
 *
 * Sampling returns contiguous arrays laid out for a learner, mixed from the sources
 * (online, demo, intervention) by configured ratios, drawn uniformly, from a recent
 * window, or by priority. The newest rows live in a RAM cache; older rows are read
 * from SQLite by a prefetch thread. A samples-per-insert rate limiter (Reverb's
 * semantics) can block either side, with time-outs; its counters survive restarts.
 *
 * Threads: buf_put / buf_put_wait may be called from any thread (a channel consumer);
 * buf_sample and buf_update_priorities from any thread (usually the learner's). The
 * buffer runs two threads of its own: the writer (group commit, acks) and the
 * prefetcher (disk reads). Ownership: the caller owns every pointer it passes in; the
 * buffer copies what it keeps. Objects returned by _create / _open are freed by the
 * matching _destroy / _close. */
#ifndef CORRAL_BUFFER_BUFFER_H
#define CORRAL_BUFFER_BUFFER_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

#define BUF_SCHEMA_VERSION 1
#define BUF_MAX_CAMS 4
#define BUF_MAX_PROPRIO 8
#define BUF_MAX_CHUNK 64

/* Where an episode (or step) came from. A step of an online episode with its
 * intervention flag set counts as an intervention step when sampling. */
typedef enum buf_source {
    BUF_SRC_ONLINE = 0,
    BUF_SRC_DEMO = 1,
    BUF_SRC_INTERVENTION = 2,
    BUF_SRC_COUNT
} buf_source_t;

typedef enum buf_sampler {
    BUF_SAMPLE_UNIFORM = 0,
    BUF_SAMPLE_RECENT,       /* uniform over the newest recent_window transitions of each source */
    BUF_SAMPLE_PRIORITIZED   /* proportional to priority^alpha (sum tree), weights with beta */
} buf_sampler_t;

/* What one observation and one action look like; declared at creation, stored in
 * the database, and checked on every later open. */
typedef struct buf_layout {
    int n_proprio;                  /* proprioceptive vectors, concatenated in obs */
    int proprio_dim[BUF_MAX_PROPRIO];
    int n_cams;                     /* uint8 images, H x W x C each */
    int cam_h[BUF_MAX_CAMS], cam_w[BUF_MAX_CAMS], cam_c[BUF_MAX_CAMS];
    int act_dim;
} buf_layout_t;

/* Sum of proprio_dim, and bytes of one camera image. */
int buf_layout_obs_dim(const buf_layout_t *l);
size_t buf_layout_cam_bytes(const buf_layout_t *l, int cam);

typedef struct buf_config {
    int64_t commit_window_us;   /* group-commit window; default 5000 (5 ms) */
    int max_batch_rows;         /* most rows in one commit; default 4096 */
    size_t max_pending_bytes;   /* puts queued beyond this block; default 256 MiB */
    int sync_full;              /* 1 (default): fsync the WAL at each commit (power-loss
                                 * safe); 0: synchronous=NORMAL (process-crash safe) */
    size_t cache_bytes;         /* RAM for the newest rows; default 512 MiB */
    size_t demo_cache_bytes;    /* RAM for attached demo buffers; default cache_bytes/4 */
    buf_sampler_t sampler;      /* default uniform */
    int64_t recent_window;      /* BUF_SAMPLE_RECENT: default 100000 transitions */
    /* Most transitions the online and intervention sources sample from; 0
     * (default): all of them. The oldest fall out first, as from a ring-buffer
     * replay memory, but stay in the database: it is the experiment's record.
     * Demo sources are kept whole. */
    int64_t capacity;
    double alpha, beta;         /* BUF_SAMPLE_PRIORITIZED: defaults 0.6, 0.4 */
    /* Share of each batch per source. All zero (default): online 0.5 and demo 0.5
     * when demos exist (as RLPD does), intervention steps counted as online. A
     * source with weight 0 while another is positive: its steps are sampled with
     * the online source. Shares of empty sources go to the others. */
    double ratio[BUF_SRC_COUNT];
    /* Rows per sampled item: 1 (default) draws single transitions; H > 1 draws
     * chunks of H consecutive transitions of one episode (buf_sample says how an
     * episode's end is handled). Batches are then whole chunks. 1..BUF_MAX_CHUNK. */
    int chunk;
    int n_step;                 /* n-step returns; default 1 */
    double gamma;               /* discount for n-step returns; default 0.99 */
    /* Rate limiter (Reverb): samples_per_insert 0 disables the ratio check. A sample
     * waits until at least min_size transitions exist; then inserts*spi - samples
     * stays within spi*min_size +- error_buffer. Samples count batch rows (a
     * chunk counts its H rows, so the ratio stays transitions per transition).
     * Transitions of attached demo buffers count towards min_size only. */
    double samples_per_insert;
    int64_t min_size;           /* default 1 */
    double error_buffer;        /* default max(1, spi) * 100 */
    int prefetch_depth;         /* disk transitions kept ready per source; default 1024 */
    uint64_t seed;              /* sampling RNG; 0: from the clock */
    const char *vfs;            /* SQLite VFS name (fault injection); NULL: default */
} buf_config_t;

void buf_config_default(buf_config_t *cfg);

typedef struct buf buf_t;

/* Creates path (which must not exist) with layout, or opens an existing buffer and
 * recovers it: unfinished episodes are marked truncated, the cache, the transition
 * index and the rate limiter are rebuilt. A layout given for an existing buffer must
 * match the stored one (CR_EINVAL otherwise); NULL accepts the stored one. Errors:
 * CR_ECORRUPT (not a database, or not a corral buffer), CR_EVERSION (newer schema),
 * CR_EBUSY (another process has it open: one writing process per buffer, held by a
 * flock on PATH.lock), CR_EIO, CR_ENOSPC. cfg NULL: defaults. */
int buf_open(const char *path, const buf_layout_t *layout, const buf_config_t *cfg,
             buf_t **out, cr_err_t *err);

/* Commits everything queued (acking it), stops the threads, saves the limiter
 * counters and frees b. NULL is a no-op. */
void buf_close(buf_t *b);

/* Attaches an earlier buffer read-only; all of its transitions become the demo
 * source. Its layout must match. Call before sampling starts. */
int buf_attach_demo(buf_t *b, const char *path, cr_err_t *err);

/* The layout in use (borrowed, valid until buf_close). */
const buf_layout_t *buf_layout(const buf_t *b);

/* ---- producing ------------------------------------------------------------ */

/* One step as a producer delivers it. Pointers are borrowed for the call only. */
typedef struct buf_step {
    uint64_t producer;          /* actor id */
    uint64_t seq;               /* unique per producer; repeats are ignored */
    uint64_t episode;           /* producer's episode number */
    const char *robot;          /* read with the first step of an episode; may be NULL */
    buf_source_t source;        /* episode source, read with its first step */
    const float *proprio;       /* obs_dim floats */
    const uint8_t *image[BUF_MAX_CAMS]; /* one per camera, H*W*C bytes */
    const float *action;        /* act_dim floats; NULL: final observation, ends the episode */
    float reward;               /* reward for action */
    int done;                   /* the transition from this step is terminal */
    int intervention;           /* a human chose action */
    int64_t policy_version;
    int success, truncated;     /* read with the final observation */
} buf_step_t;

/* What an acknowledgement says: status 0 means stored durably (duplicate 1 when it
 * had been stored before); a negative CR_E* code means not stored (retry later). */
typedef struct buf_ack {
    uint64_t producer, seq;
    int status;
    int duplicate;
} buf_ack_t;
typedef void (*buf_ack_fn)(void *ctx, const buf_ack_t *ack);

/* Queues a copy of step and returns; ack(ctx, ...) runs on the writer thread after
 * the commit (or the failure). Blocks while the queue is full or the rate limiter
 * holds inserts, up to timeout_ms (<0: forever) -> CR_ETIMEDOUT, and then ack is
 * never called. CR_EINVAL for a step that does not fit the layout. */
int buf_put(buf_t *b, const buf_step_t *step, buf_ack_fn ack, void *ctx,
            int64_t timeout_ms, cr_err_t *err);

/* buf_put that returns after the commit: 0 when stored (or already stored), or the
 * error that kept it out. *duplicate (may be NULL) tells which. */
int buf_put_wait(buf_t *b, const buf_step_t *step, int64_t timeout_ms, int *duplicate,
                 cr_err_t *err);

/* Blocks until every put queued before the call has been committed or failed. */
int buf_flush(buf_t *b, cr_err_t *err);

/* ---- sampling ------------------------------------------------------------- */

/* A batch for a learner: contiguous arrays, row i is sample i. With chunks of H
 * (buf_config_t.chunk), rows s*H .. s*H+H-1 are chunk s, in episode order. */
typedef struct buf_batch {
    int size, obs_dim, act_dim, n_cams;
    int chunk;                  /* rows per chunk (the buffer's chunk) */
    float *obs;                 /* [size][obs_dim] */
    float *action;              /* [size][act_dim] */
    float *reward;              /* [size]; n-step discounted sum */
    float *next_obs;            /* [size][obs_dim] */
    float *done;                /* [size]; 1 when the n-step chain hit a terminal */
    float *discount;            /* [size]; gamma^m for the m steps summed */
    float *weight;              /* [size]; importance weight (1 unless prioritised) */
    uint8_t *image[BUF_MAX_CAMS];      /* [size][H][W][C] */
    uint8_t *next_image[BUF_MAX_CAMS]; /* [size][H][W][C] */
    uint64_t *key;              /* [size]; for buf_update_priorities */
    uint8_t *source;            /* [size]; buf_source_t */
    int64_t *policy_version;    /* [size] */
    uint8_t *pad;               /* [size]; 1: a chunk row past its episode's end, a copy
                                 * of the episode's last transition (see buf_sample) */
} buf_batch_t;

/* size rows; a multiple of the buffer's chunk (CR_EINVAL otherwise). */
int buf_batch_create(const buf_t *b, int size, buf_batch_t **out, cr_err_t *err);
void buf_batch_destroy(buf_batch_t *batch);

/* Fills batch. Waits (up to timeout_ms; <0 forever) for the rate limiter and for
 * enough data -> CR_ETIMEDOUT.
 *
 * Chunks (chunk H > 1): each item starts at a drawn transition (the sampler's
 * distribution, the per-source quotas counting chunks by their first row's
 * source) and follows the same episode for H transitions; a chunk never crosses
 * into another episode. When the episode ends first (its final row, or the newest
 * stored step of an episode cut short by a crash), the chunk is padded: each
 * missing row repeats the episode's last transition (same obs, action, reward,
 * next_obs, done) with pad = 1, so the chunk's actions hold the last one and every
 * row stays a real transition. A start whose episode is still being written and
 * has fewer than H transitions left is drawn again (its continuation is not
 * known yet); only when a source holds nothing else after a few draws is such a
 * chunk padded too. Each row keeps its own key and source; the importance weight
 * is the start's. */
int buf_sample(buf_t *b, buf_batch_t *batch, int64_t timeout_ms, cr_err_t *err);

/* Sets the priorities of sampled keys (prioritised sampler; others ignore them).
 * Priorities must be finite and >= 0. Unknown keys -> CR_EINVAL. */
int buf_update_priorities(buf_t *b, const uint64_t *key, const float *priority, int n,
                          cr_err_t *err);

/* ---- counters and statistics ---------------------------------------------- */

typedef struct buf_counters {
    int64_t inserts;            /* stored steps with an action (limiter inserts) */
    int64_t samples;            /* sampled items (limiter samples) */
    int64_t transitions[BUF_SRC_COUNT]; /* sampleable, per sampling source */
    int64_t cached_rows, cache_capacity;
    int64_t commits, duplicates, pending;
    int64_t disk_reads;         /* rows read by the prefetcher */
    size_t cache_bytes;         /* allocated for the caches */
    size_t index_bytes;         /* allocated for the transition index and priorities */
    size_t ram_bytes;           /* cache + index */
} buf_counters_t;

void buf_counters(buf_t *b, buf_counters_t *out);

typedef struct buf_stats {
    int schema_version;
    buf_layout_t layout;
    int64_t episodes[BUF_SRC_COUNT];
    int64_t steps[BUF_SRC_COUNT];   /* rows, per episode source */
    int64_t intervention_steps;
    int64_t episodes_ended, episodes_success, episodes_truncated;
    double success_rate;        /* success / ended episodes; 0 when none */
    int64_t limiter_inserts, limiter_samples;
    int64_t db_bytes, wal_bytes;
} buf_stats_t;

/* Reads statistics of the buffer at path without writing to it. */
int buf_stats(const char *path, buf_stats_t *out, cr_err_t *err);

/* Counts the ended episodes (those with their final row) of source whose robot is
 * robot in the buffer at path, without writing to it; what another process (or
 * the buffer's own writer) committed is counted, what is still queued is not. */
int buf_count_episodes(const char *path, const char *robot, buf_source_t source, int64_t *out, cr_err_t *err);

const char *buf_source_name(buf_source_t s);

#endif
