/* internal.h - the buffer's private state, shared by its files and by no one else.
 *
 * Invariants (all under buf_t.mu unless said otherwise):
 * - A row is in RAM (cache) only after the transaction that wrote it committed; the
 *   transition index, the limiter's insert counter and the cache are updated together,
 *   after the commit, so a sampler never sees a step that could still be lost.
 * - A transition (row -> next_row) exists once both rows are committed and row carries
 *   an action. Transitions of one database are numbered densely in commit order (the
 *   writer predicts the numbers of the ones its open transaction creates).
 * - Rows are immutable once committed, so a row read from disk never goes stale.
 * - The open-episode table belongs to the writer thread alone; it is snapshotted at
 *   the start of each transaction and restored if the transaction rolls back.
 * - Sampling keys are (database << 48 | transition number); database 0 is the
 *   buffer's own, 1.. are attached demo buffers.
 * - A transition's succ links it to the next one of its episode; `last` says its
 *   episode has no more (the next row is the final one, or the episode was found
 *   unfinished when the database was opened). A chunk follows succ and pads only
 *   at `last`, so it never runs into another episode nor guesses an open one's
 *   future. A recovered episode that is resumed gets its succ link and goes on. */
#ifndef CORRAL_BUFFER_INTERNAL_H
#define CORRAL_BUFFER_INTERNAL_H

#include "buffer/buffer.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>

#define BUF_MAX_DBS 8
#define KEY_DB_SHIFT 48
#define KEY_TID_MASK ((1ULL << KEY_DB_SHIFT) - 1)

/* ---- schema.c: the database file ------------------------------------------- */

/* Opens (creating when layout != NULL and the file is missing) and validates the
 * schema and the stored layout. readonly: no writes at all. */
int buf_schema_open(const char *path, const buf_layout_t *layout, int readonly,
                    int sync_full, const char *vfs, sqlite3 **out, buf_layout_t *stored,
                    cr_err_t *err);
/* Maps a SQLite failure to a CR_E* code with a message naming what was done. */
int buf_sql_err(sqlite3 *db, int rc, cr_err_t *err, const char *what);
int buf_meta_get_i64(sqlite3 *db, const char *key, int64_t *out);
int buf_meta_set_i64(sqlite3 *db, const char *key, int64_t v);
int buf_exec(sqlite3 *db, const char *sql, cr_err_t *err);

/* ---- cache.c: the newest rows of one database, in RAM ----------------------- */

typedef struct cache {
    int64_t cap;                /* rows */
    int obs_dim, act_dim, n_cams;
    size_t cam_bytes[BUF_MAX_CAMS];
    int64_t *slot_row;          /* [cap]; row held by each slot, 0 when empty */
    float *proprio;             /* [cap][obs_dim] */
    float *action;              /* [cap][act_dim] */
    int64_t *policy_version;    /* [cap] */
    uint8_t *image[BUF_MAX_CAMS]; /* [cap][cam_bytes] */
    int64_t rows;               /* rows currently held */
} cache_t;

/* Capacity from a byte budget (0 rows is allowed: everything from disk). */
int buf_cache_init(cache_t *c, const buf_layout_t *l, size_t budget, cr_err_t *err);
void buf_cache_free(cache_t *c);
size_t buf_cache_row_bytes(const buf_layout_t *l);
size_t buf_cache_bytes(const cache_t *c);
/* Stores one row (overwriting the oldest in its slot). */
void buf_cache_put(cache_t *c, int64_t row, const float *proprio, const uint8_t *const *image,
                   const float *action, int64_t policy_version);
/* Slot of row, or -1 when not cached. */
static inline int64_t buf_cache_slot(const cache_t *c, int64_t row)
{
    if (c->cap == 0 || row <= 0) return -1;
    int64_t s = row % c->cap;
    return c->slot_row[s] == row ? s : -1;
}

/* ---- sumtree.c: priorities ------------------------------------------------- */

typedef struct sumtree {
    int64_t cap, n;
    double *node;               /* [2*cap]; leaves at cap + i */
} sumtree_t;

int buf_sumtree_push(sumtree_t *t, double value);     /* appends a leaf */
void buf_sumtree_set(sumtree_t *t, int64_t i, double value);
double buf_sumtree_get(const sumtree_t *t, int64_t i);
double buf_sumtree_total(const sumtree_t *t);
int64_t buf_sumtree_find(const sumtree_t *t, double u);  /* u in [0, total) */
void buf_sumtree_free(sumtree_t *t);

/* ---- limiter.c: samples per insert ------------------------------------------ */

typedef struct limiter {
    double spi, error_buffer;
    int64_t min_size;
    int64_t inserts, samples;   /* persisted: inserts from the rows, samples in meta */
    int64_t pending;            /* inserts admitted and queued, not yet committed */
    int64_t preloaded;          /* transitions of attached demo buffers: they count
                                 * towards min_size (offline learning can start), not
                                 * towards the samples-per-insert band */
} limiter_t;

void buf_limiter_init(limiter_t *l, const buf_config_t *cfg);
int buf_limiter_can_insert(const limiter_t *l, int64_t n);
int buf_limiter_can_sample(const limiter_t *l, int64_t n);

/* ---- the index of transitions and the buffer itself -------------------------- */

typedef struct tr {
    int64_t row, next_row;
    int64_t succ;               /* transition starting at next_row, -1 none (yet) */
    int64_t pos;                /* position in its source's list; -1: evicted */
    float reward;
    uint8_t done, cls;
    uint8_t last;               /* no transition follows in its episode (see above) */
} tr_t;

typedef struct bufdb {
    sqlite3 *rd;                /* read connection (prefetcher and recovery) */
    sqlite3_stmt *rd_row;       /* SELECT proprio, images, action, policy_version by id */
    tr_t *tr;
    int64_t n_tr, cap_tr;
    cache_t cache;
    char path[1024];
} bufdb_t;

typedef struct srclist {
    uint64_t *key;              /* [n]; [start, n) are sampled, older ones evicted */
    int64_t n, cap, start;
    sumtree_t tree;             /* priority^alpha per position (prioritised only) */
    double max_prio;
} srclist_t;

/* A chunk (chunk rows; one transition when chunk is 1) read from disk and
 * waiting in a prefetch pool; every array holds chunk rows. */
typedef struct pitem {
    uint64_t *key;
    float *reward, *done, *discount, *weight;
    int64_t *policy_version;
    uint8_t *cls, *pad;
    float *obs, *action, *next_obs;
    uint8_t *image[BUF_MAX_CAMS], *next_image[BUF_MAX_CAMS];
} pitem_t;

typedef struct pool {
    pitem_t *item;              /* ring of cap items, [head, head+count) ready */
    int64_t cap, head, count, reserved;
    uint64_t *want;             /* keys samplers asked for (missed with an empty pool) */
    int64_t n_want;
} pool_t;

/* An episode being written: the writer's own table. */
typedef struct openep {
    uint64_t producer, ep_no;
    int64_t id, t;
    int64_t last_row, last_tid;
    double ret;
    float last_reward;
    uint8_t last_done, last_cls, last_has_action, source;
} openep_t;

typedef struct putitem putitem_t;

struct buf {
    buf_config_t cfg;
    buf_layout_t layout;
    int obs_dim;
    char path[1024];
    sqlite3 *wdb;               /* writer connection */
    int lock_fd;                /* flock on PATH.lock: one writing process per buffer */
    pthread_mutex_t mu;
    pthread_cond_t put_cv;      /* queue has room / limiter admits inserts */
    pthread_cond_t work_cv;     /* writer: queue non-empty */
    pthread_cond_t done_cv;     /* a batch was acknowledged */
    pthread_cond_t sample_cv;   /* limiter admits samples / pool got items */
    pthread_cond_t fetch_cv;    /* prefetcher: pools below depth or wanted keys */
    int stopping;
    pthread_t writer, prefetcher;
    int writer_started, prefetcher_started;

    /* queue (mu) */
    putitem_t *q_head, *q_tail;
    int64_t q_len, q_enqueued, q_done;
    size_t q_bytes;

    /* writer-only */
    openep_t *ep;
    int64_t n_ep, cap_ep;
    int64_t w_ntr;              /* predicted count of db 0 transitions */

    /* index, cache, sampling (mu) */
    bufdb_t db[BUF_MAX_DBS];
    int n_db;
    srclist_t src[BUF_SRC_COUNT];
    int cls_map[BUF_SRC_COUNT]; /* raw source -> sampling source */
    double ratio[BUF_SRC_COUNT];
    pool_t pool[BUF_SRC_COUNT];
    int fetch_idle[BUF_SRC_COUNT]; /* random draws found nothing on disk lately */
    limiter_t lim;
    uint64_t rng[4];
    int64_t commits, duplicates, disk_reads;
    int64_t samples_saved;      /* limiter samples last written to meta */
    size_t demo_budget_left;
};

/* Transitions a source samples from. */
static inline int64_t buf_src_live(const srclist_t *s) { return s->n - s->start; }

/* store.c */
/* last: next_row is its episode's final row. */
int buf_index_add(buf_t *b, int dbi, int64_t row, int64_t next_row, float reward, int done,
                  int cls, int last, int64_t link_from, cr_err_t *err);
int buf_raw_class(int source, int intervention);

/* writer.c */
void *buf_writer_main(void *arg);

/* sampler.c */
void *buf_prefetch_main(void *arg);
int buf_pools_init(buf_t *b, cr_err_t *err);
void buf_pools_free(buf_t *b);
uint64_t buf_rng_next(uint64_t s[4]);

/* readrow.c: one row from disk into caller buffers (any may be NULL). */
int buf_row_decode(const buf_layout_t *l, sqlite3_stmt *st, int first, int64_t row,
                   float *proprio, uint8_t *const *image, float *action,
                   int64_t *policy_version, cr_err_t *err);
int buf_read_row(buf_t *b, bufdb_t *d, int64_t row, float *proprio, uint8_t *const *image,
                 float *action, int64_t *policy_version, cr_err_t *err);

#endif
