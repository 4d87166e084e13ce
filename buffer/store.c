/* store.c - opening, recovering and closing a buffer, and its transition index.
 *
 * Recovery is the same path as every open: the database is the only truth. Opening
 * (1) validates the file (schema.c), (2) marks every episode without its final row
 * truncated, (3) rebuilds the transition index by one scan of the step rows in id
 * order (scalars only: the blobs sit in overflow pages the scan never touches),
 * (4) refills the cache with the newest rows, (5) restores the limiter (inserts are
 * counted from the rows, samples come from meta), and (6) rebuilds the writer's table
 * of open episodes, so a producer that resumes an episode continues it. Nothing in
 * RAM is needed to recover, so a SIGKILL at any moment loses only unacknowledged puts. */
#include "buffer/internal.h"

#include "common/log.h"
#include "common/time.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int buf_layout_obs_dim(const buf_layout_t *l)
{
    int n = 0;
    for (int i = 0; i < l->n_proprio; i++) n += l->proprio_dim[i];
    return n;
}

size_t buf_layout_cam_bytes(const buf_layout_t *l, int cam)
{
    return (size_t)l->cam_h[cam] * (size_t)l->cam_w[cam] * (size_t)l->cam_c[cam];
}

const char *buf_source_name(buf_source_t s)
{
    switch (s) {
    case BUF_SRC_ONLINE: return "online";
    case BUF_SRC_DEMO: return "demo";
    case BUF_SRC_INTERVENTION: return "intervention";
    default: return "?";
    }
}

void buf_config_default(buf_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->commit_window_us = 5000;
    cfg->max_batch_rows = 4096;
    cfg->max_pending_bytes = 256u << 20;
    cfg->sync_full = 1;
    cfg->cache_bytes = 512u << 20;
    cfg->sampler = BUF_SAMPLE_UNIFORM;
    cfg->recent_window = 100000;
    cfg->alpha = 0.6;
    cfg->beta = 0.4;
    cfg->chunk = 1;
    cfg->n_step = 1;
    cfg->gamma = 0.99;
    cfg->min_size = 1;
    cfg->error_buffer = -1;     /* derived from samples_per_insert */
    cfg->prefetch_depth = 1024;
}

static int check_config(buf_config_t *c, cr_err_t *err)
{
    if (c->commit_window_us < 0 || c->commit_window_us > 1000000)
        return cr_err_set(err, CR_EINVAL, "buffer config: commit_window_us %lld not in 0..1000000",
                          (long long)c->commit_window_us);
    if (c->max_batch_rows < 1) return cr_err_set(err, CR_EINVAL, "buffer config: max_batch_rows < 1");
    if (c->n_step < 1 || c->n_step > 1000) return cr_err_set(err, CR_EINVAL, "buffer config: n_step %d", c->n_step);
    if (c->chunk == 0) c->chunk = 1;
    if (c->chunk < 1 || c->chunk > BUF_MAX_CHUNK)
        return cr_err_set(err, CR_EINVAL, "buffer config: chunk %d not in 1..%d", c->chunk, BUF_MAX_CHUNK);
    if (!(c->gamma >= 0 && c->gamma <= 1)) return cr_err_set(err, CR_EINVAL, "buffer config: gamma %g", c->gamma);
    if (!(c->alpha >= 0) || !(c->beta >= 0)) return cr_err_set(err, CR_EINVAL, "buffer config: alpha/beta < 0");
    if (!(c->samples_per_insert >= 0)) return cr_err_set(err, CR_EINVAL, "buffer config: samples_per_insert < 0");
    if (c->capacity < 0)
        return cr_err_set(err, CR_EINVAL, "buffer config: capacity %lld < 0", (long long)c->capacity);
    if (c->sampler == BUF_SAMPLE_RECENT && c->recent_window < 1)
        return cr_err_set(err, CR_EINVAL, "buffer config: recent_window < 1");
    for (int s = 0; s < BUF_SRC_COUNT; s++)
        if (!(c->ratio[s] >= 0 && isfinite(c->ratio[s])))
            return cr_err_set(err, CR_EINVAL, "buffer config: ratio[%s] %g", buf_source_name(s), c->ratio[s]);
    if (c->error_buffer < 0) c->error_buffer = (c->samples_per_insert > 1 ? c->samples_per_insert : 1) * 100;
    if (c->demo_cache_bytes == 0) c->demo_cache_bytes = c->cache_bytes / 4;
    if (c->min_size < 1) c->min_size = 1;
    if (c->prefetch_depth < 1) c->prefetch_depth = 1;
    if (c->max_pending_bytes == 0) c->max_pending_bytes = 1;
    return 0;
}

/* Which sampling source a step falls in, before cls_map: demo episodes are demo,
 * steps a human chose are interventions, the rest online. */
int buf_raw_class(int source, int intervention)
{
    if (source == BUF_SRC_DEMO) return BUF_SRC_DEMO;
    if (source == BUF_SRC_INTERVENTION || intervention) return BUF_SRC_INTERVENTION;
    return BUF_SRC_ONLINE;
}

static void set_ratios(buf_t *b)
{
    double *r = b->cfg.ratio;
    int any = r[0] > 0 || r[1] > 0 || r[2] > 0;
    for (int s = 0; s < BUF_SRC_COUNT; s++) {
        b->ratio[s] = any ? r[s] : (s == BUF_SRC_INTERVENTION ? 0 : 0.5);
        b->cls_map[s] = b->ratio[s] > 0 || s == BUF_SRC_ONLINE ? s : BUF_SRC_ONLINE;
    }
}

/* Drops the evicted front of s's key list once it outweighs the live part, so
 * the list's memory follows the capacity (mu held). Positions shift down, so the
 * transitions' positions and the priority tree move with them. */
static void compact(buf_t *b, srclist_t *s)
{
    int64_t live = buf_src_live(s), k0 = s->start;
    if (k0 < 4096 || k0 < live) return;
    memmove(s->key, s->key + k0, (size_t)live * sizeof *s->key);
    for (int64_t i = 0; i < live; i++) {
        uint64_t key = s->key[i];
        b->db[key >> KEY_DB_SHIFT].tr[key & KEY_TID_MASK].pos = i;
    }
    if (b->cfg.sampler == BUF_SAMPLE_PRIORITIZED) {
        for (int64_t i = 0; i < live; i++) buf_sumtree_set(&s->tree, i, buf_sumtree_get(&s->tree, i + k0));
        for (int64_t i = live; i < s->n; i++) buf_sumtree_set(&s->tree, i, 0);
        s->tree.n = live;
    }
    s->n = live;
    s->start = 0;
}

/* Evicts the oldest transitions of s beyond the capacity (mu held). */
static void evict(buf_t *b, int cls, srclist_t *s)
{
    if (b->cfg.capacity <= 0 || cls == BUF_SRC_DEMO) return;
    while (buf_src_live(s) > b->cfg.capacity) {
        uint64_t key = s->key[s->start];
        b->db[key >> KEY_DB_SHIFT].tr[key & KEY_TID_MASK].pos = -1;
        if (b->cfg.sampler == BUF_SAMPLE_PRIORITIZED) buf_sumtree_set(&s->tree, s->start, 0);
        s->start++;
    }
    compact(b, s);
}

/* Appends transition row -> next_row of database dbi (mu held, or before threads). */
int buf_index_add(buf_t *b, int dbi, int64_t row, int64_t next_row, float reward, int done,
                  int cls, int last, int64_t link_from, cr_err_t *err)
{
    bufdb_t *d = &b->db[dbi];
    srclist_t *s = &b->src[cls];
    if (d->n_tr == d->cap_tr) {
        int64_t cap = d->cap_tr ? d->cap_tr * 2 : 4096;
        tr_t *t = realloc(d->tr, (size_t)cap * sizeof *t);
        if (!t) return cr_err_set(err, CR_ENOMEM, "transition index of %lld", (long long)cap);
        d->tr = t;
        d->cap_tr = cap;
    }
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *k = realloc(s->key, (size_t)cap * sizeof *k);
        if (!k) return cr_err_set(err, CR_ENOMEM, "source index of %lld", (long long)cap);
        s->key = k;
        s->cap = cap;
    }
    if (b->cfg.sampler == BUF_SAMPLE_PRIORITIZED) {
        if (s->max_prio <= 0) s->max_prio = 1;
        if (buf_sumtree_push(&s->tree, pow(s->max_prio, b->cfg.alpha)))
            return cr_err_set(err, CR_ENOMEM, "priority tree");
    }
    int64_t tid = d->n_tr++;
    d->tr[tid] = (tr_t){.row = row, .next_row = next_row, .succ = -1, .pos = s->n,
                        .reward = reward, .done = (uint8_t)(done != 0), .cls = (uint8_t)cls,
                        .last = (uint8_t)(last != 0)};
    s->key[s->n++] = ((uint64_t)dbi << KEY_DB_SHIFT) | (uint64_t)tid;
    if (link_from >= 0 && link_from < tid) d->tr[link_from].succ = tid;
    evict(b, cls, s);
    return 0;
}

/* Per-episode state while scanning rows in id order. */
typedef struct scan_ep {
    int64_t last_row, last_tid, t;
    double ret;
    float last_reward;
    uint8_t last_done, last_has_action, last_cls, source, ended, seen;
    uint64_t producer, ep_no;
} scan_ep_t;

static int scan_episodes(sqlite3 *db, scan_ep_t **out, int64_t *n_out, cr_err_t *err)
{
    sqlite3_stmt *st;
    int64_t max_id = 0;
    int rc = sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM episodes", -1, &st, NULL);
    if (rc != SQLITE_OK) return buf_sql_err(db, rc, err, "read episodes");
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) max_id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return buf_sql_err(db, rc, err, "read episodes");
    scan_ep_t *ep = calloc((size_t)max_id + 1, sizeof *ep);
    if (!ep) return cr_err_set(err, CR_ENOMEM, "episode table of %lld", (long long)max_id);
    rc = sqlite3_prepare_v2(db, "SELECT id, source, ended, producer, ep_no FROM episodes", -1, &st, NULL);
    if (rc != SQLITE_OK) { free(ep); return buf_sql_err(db, rc, err, "read episodes"); }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        int src = sqlite3_column_int(st, 1);
        if (id < 1 || id > max_id || src < 0 || src >= BUF_SRC_COUNT) {
            sqlite3_finalize(st);
            free(ep);
            return cr_err_set(err, CR_ECORRUPT, "episode %lld has source %d", (long long)id, src);
        }
        ep[id] = (scan_ep_t){.last_row = -1, .last_tid = -1, .source = (uint8_t)src,
                             .ended = (uint8_t)(sqlite3_column_int(st, 2) != 0), .seen = 1,
                             .producer = (uint64_t)sqlite3_column_int64(st, 3),
                             .ep_no = (uint64_t)sqlite3_column_int64(st, 4)};
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) { free(ep); return buf_sql_err(db, rc, err, "read episodes"); }
    *out = ep;
    *n_out = max_id;
    return 0;
}

/* One pass over the step rows of db into the index of dbi; all_demo for attached
 * buffers. Fills ep (per-episode state) and counts rows carrying an action. */
static int scan_steps(buf_t *b, int dbi, sqlite3 *db, scan_ep_t *ep, int64_t n_ep, int all_demo,
                      int64_t *inserts, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "SELECT id, episode, action IS NOT NULL, reward, done, "
                                "intervention FROM steps ORDER BY id", -1, &st, NULL);
    if (rc != SQLITE_OK) return buf_sql_err(db, rc, err, "scan steps");
    int code = 0;
    *inserts = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t row = sqlite3_column_int64(st, 0), e = sqlite3_column_int64(st, 1);
        if (e < 1 || e > n_ep || !ep[e].seen) {
            code = cr_err_set(err, CR_ECORRUPT, "step row %lld names episode %lld, which does "
                              "not exist", (long long)row, (long long)e);
            break;
        }
        scan_ep_t *s = &ep[e];
        int has_action = sqlite3_column_int(st, 2);
        if (s->last_row > 0 && s->last_has_action) {
            int64_t tid = b->db[dbi].n_tr;
            if ((code = buf_index_add(b, dbi, s->last_row, row, s->last_reward, s->last_done,
                                      s->last_cls, !has_action, s->last_tid, err))) break;
            s->last_tid = tid;
        } else {
            s->last_tid = -1;
        }
        s->last_row = row;
        s->last_has_action = (uint8_t)has_action;
        s->last_reward = (float)sqlite3_column_double(st, 3);
        s->last_done = (uint8_t)(sqlite3_column_int(st, 4) != 0);
        int raw = all_demo ? BUF_SRC_DEMO : buf_raw_class(s->source, sqlite3_column_int(st, 5));
        s->last_cls = (uint8_t)(all_demo ? BUF_SRC_DEMO : b->cls_map[raw]);
        if (s->last_has_action) { s->ret += s->last_reward; (*inserts)++; }
        s->t++;
    }
    sqlite3_finalize(st);
    if (!code && rc != SQLITE_DONE) code = buf_sql_err(db, rc, err, "scan steps");
    return code;
}

/* The newest transition of each unfinished episode of database dbi is its last
 * for chunks: nothing is known to follow it (a producer that resumes the episode
 * links the next one through succ, which chunks follow first). */
static void mark_open_tails(buf_t *b, int dbi, const scan_ep_t *ep, int64_t n_ep)
{
    for (int64_t e = 1; e <= n_ep; e++)
        if (ep[e].seen && !ep[e].ended && ep[e].last_tid >= 0 && ep[e].last_tid < b->db[dbi].n_tr)
            b->db[dbi].tr[ep[e].last_tid].last = 1;
}

/* Marks unfinished episodes truncated (with their return so far) and hands them to
 * the writer's table of open episodes. */
static int recover_open_episodes(buf_t *b, scan_ep_t *ep, int64_t n_ep, cr_err_t *err)
{
    sqlite3 *db = b->wdb;
    sqlite3_stmt *st;
    int code = buf_exec(db, "BEGIN IMMEDIATE", err);
    if (code) return code;
    int rc = sqlite3_prepare_v2(db, "UPDATE episodes SET truncated=1, ret=?, nsteps=? WHERE id=?",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) { code = buf_sql_err(db, rc, err, "mark truncated"); goto out; }
    for (int64_t e = 1; e <= n_ep && !code; e++) {
        scan_ep_t *s = &ep[e];
        if (!s->seen || s->ended) continue;
        if (b->n_ep == b->cap_ep) {
            int64_t cap = b->cap_ep ? b->cap_ep * 2 : 64;
            openep_t *o = realloc(b->ep, (size_t)cap * sizeof *o);
            if (!o) { code = cr_err_set(err, CR_ENOMEM, "open episodes"); break; }
            b->ep = o;
            b->cap_ep = cap;
        }
        b->ep[b->n_ep++] = (openep_t){.producer = s->producer, .ep_no = s->ep_no, .id = e, .t = s->t,
            .last_row = s->last_row, .last_tid = s->last_tid, .ret = s->ret,
            .last_reward = s->last_reward, .last_done = s->last_done, .last_cls = s->last_cls,
            .last_has_action = s->last_has_action, .source = s->source};
        sqlite3_reset(st);
        sqlite3_bind_double(st, 1, s->ret);
        sqlite3_bind_int64(st, 2, s->t);
        sqlite3_bind_int64(st, 3, e);
        if ((rc = sqlite3_step(st)) != SQLITE_DONE) code = buf_sql_err(db, rc, err, "mark truncated");
    }
    sqlite3_finalize(st);
out:
    if (code) { sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL); return code; }
    return buf_exec(db, "COMMIT", err);
}

static int load_cache(buf_t *b, bufdb_t *d, cr_err_t *err)
{
    cache_t *c = &d->cache;
    if (c->cap == 0) return 0;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(d->rd, "SELECT id, proprio, images, action, policy_version FROM steps "
                                "WHERE id > (SELECT coalesce(max(id), 0) FROM steps) - ? ORDER BY id",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return buf_sql_err(d->rd, rc, err, "load cache");
    sqlite3_bind_int64(st, 1, c->cap);
    int code = 0;
    float *prop = malloc((size_t)(c->obs_dim + 1) * sizeof(float));
    float *act = malloc((size_t)c->act_dim * sizeof(float));
    uint8_t *img[BUF_MAX_CAMS] = {0};
    int ok = prop && act;
    for (int i = 0; i < c->n_cams && ok; i++) ok = (img[i] = malloc(c->cam_bytes[i])) != NULL;
    if (!ok) code = cr_err_set(err, CR_ENOMEM, "load cache");
    while (!code && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t row = sqlite3_column_int64(st, 0), pv;
        if ((code = buf_row_decode(&b->layout, st, 1, row, prop, img, act, &pv, err))) break;
        buf_cache_put(c, row, prop, (const uint8_t *const *)img,
                      sqlite3_column_type(st, 3) == SQLITE_NULL ? NULL : act, pv);
    }
    if (!code && rc != SQLITE_DONE) code = buf_sql_err(d->rd, rc, err, "load cache");
    sqlite3_finalize(st);
    free(prop);
    free(act);
    for (int i = 0; i < BUF_MAX_CAMS; i++) free(img[i]);
    return code;
}

static int open_reader(buf_t *b, bufdb_t *d, const char *path, cr_err_t *err)
{
    snprintf(d->path, sizeof d->path, "%s", path);
    buf_layout_t stored;
    int code = buf_schema_open(path, &b->layout, 1, 0, b->cfg.vfs, &d->rd, &stored, err);
    if (code) return code;
    int rc = sqlite3_prepare_v3(d->rd, "SELECT proprio, images, action, policy_version FROM steps "
                                "WHERE id=?", -1, SQLITE_PREPARE_PERSISTENT, &d->rd_row, NULL);
    if (rc != SQLITE_OK) return buf_sql_err(d->rd, rc, err, "prepare row read");
    return 0;
}

static void close_db(bufdb_t *d)
{
    sqlite3_finalize(d->rd_row);
    sqlite3_close(d->rd);
    free(d->tr);
    buf_cache_free(&d->cache);
    memset(d, 0, sizeof *d);
}

static int recover(buf_t *b, cr_err_t *err)
{
    scan_ep_t *ep = NULL;
    int64_t n_ep = 0, inserts = 0, samples = 0;
    int code = scan_episodes(b->wdb, &ep, &n_ep, err);
    if (!code) code = scan_steps(b, 0, b->wdb, ep, n_ep, 0, &inserts, err);
    if (!code) mark_open_tails(b, 0, ep, n_ep);
    if (!code) code = recover_open_episodes(b, ep, n_ep, err);
    free(ep);
    if (code) return code;
    b->w_ntr = b->db[0].n_tr;
    int rc = buf_meta_get_i64(b->wdb, "limiter_samples", &samples);
    if (rc != SQLITE_OK && rc != SQLITE_NOTFOUND) return buf_sql_err(b->wdb, rc, err, "read meta.limiter_samples");
    b->lim.inserts = inserts;
    b->lim.samples = samples;
    b->samples_saved = samples;
    if ((code = load_cache(b, &b->db[0], err))) return code;
    if (b->n_ep)
        CR_INFO("buffer", "%s: %lld unfinished episode(s) marked truncated", b->path, (long long)b->n_ep);
    return 0;
}

/* Two processes writing one buffer would each index only their own rows: the second
 * is refused. The kernel drops the lock when its holder dies, so a SIGKILLed
 * writer never blocks its successor. (A lock on the database file itself would be
 * released by SQLite's POSIX locks' close semantics, hence the side file.) */
static int lock_buffer(buf_t *b, cr_err_t *err)
{
    char lock[1100];
    snprintf(lock, sizeof lock, "%s.lock", b->path);
    b->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (b->lock_fd < 0)
        return cr_err_set(err, errno == EACCES || errno == EROFS ? CR_EPERM : CR_EIO,
                          "%s: %s", lock, strerror(errno));
    if (flock(b->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return cr_err_set(err, errno == EWOULDBLOCK ? CR_EBUSY : CR_EIO,
                          "%s is open for writing in another process (%s)", b->path, strerror(errno));
    return 0;
}

int buf_open(const char *path, const buf_layout_t *layout, const buf_config_t *cfg,
             buf_t **out, cr_err_t *err)
{
    *out = NULL;
    buf_t *b = calloc(1, sizeof *b);
    if (!b) return cr_err_set(err, CR_ENOMEM, "buffer");
    if (cfg) b->cfg = *cfg;
    else buf_config_default(&b->cfg);
    int code = check_config(&b->cfg, err);
    if (code) { free(b); return code; }
    snprintf(b->path, sizeof b->path, "%s", path);
    b->lock_fd = -1;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_t *cvs[] = {&b->put_cv, &b->work_cv, &b->done_cv, &b->sample_cv, &b->fetch_cv};
    for (size_t i = 0; i < sizeof cvs / sizeof cvs[0]; i++) pthread_cond_init(cvs[i], &ca);
    pthread_condattr_destroy(&ca);
    set_ratios(b);
    buf_limiter_init(&b->lim, &b->cfg);
    uint64_t seed = b->cfg.seed ? b->cfg.seed : (uint64_t)cr_wall_ns();
    for (int i = 0; i < 4; i++) {  /* splitmix64 seeding of xoshiro */
        seed += 0x9e3779b97f4a7c15ULL;
        uint64_t z = seed;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        b->rng[i] = z ^ (z >> 31);
    }
    b->n_db = 1;
    if ((code = lock_buffer(b, err))) goto fail;
    if ((code = buf_schema_open(path, layout, 0, b->cfg.sync_full, b->cfg.vfs, &b->wdb, &b->layout, err)))
        goto fail;
    b->obs_dim = buf_layout_obs_dim(&b->layout);
    if ((code = open_reader(b, &b->db[0], path, err))) goto fail;
    if ((code = buf_cache_init(&b->db[0].cache, &b->layout, b->cfg.cache_bytes, err))) goto fail;
    b->demo_budget_left = b->cfg.demo_cache_bytes;
    if ((code = recover(b, err))) { cr_err_wrap(err, "recover %s", path); goto fail; }
    if ((code = buf_pools_init(b, err))) goto fail;
    if (pthread_create(&b->writer, NULL, buf_writer_main, b) != 0) {
        code = cr_err_set(err, CR_ENOMEM, "start the writer thread");
        goto fail;
    }
    b->writer_started = 1;
    if (pthread_create(&b->prefetcher, NULL, buf_prefetch_main, b) != 0) {
        code = cr_err_set(err, CR_ENOMEM, "start the prefetch thread");
        goto fail;
    }
    b->prefetcher_started = 1;
    *out = b;
    return 0;
fail:
    buf_close(b);
    return code;
}

void buf_close(buf_t *b)
{
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->work_cv);
    pthread_cond_broadcast(&b->fetch_cv);
    pthread_cond_broadcast(&b->put_cv);
    pthread_cond_broadcast(&b->sample_cv);
    pthread_mutex_unlock(&b->mu);
    /* The writer drains its queue before it exits: everything queued is acked. */
    if (b->writer_started) pthread_join(b->writer, NULL);
    if (b->prefetcher_started) pthread_join(b->prefetcher, NULL);
    if (b->wdb && b->lim.samples != b->samples_saved) {
        if (buf_meta_set_i64(b->wdb, "limiter_samples", b->lim.samples) != SQLITE_OK)
            CR_WARN("buffer", "%s: could not save the limiter counters: %s", b->path,
                    sqlite3_errmsg(b->wdb));
    }
    buf_pools_free(b);
    for (int i = 0; i < BUF_MAX_DBS; i++) close_db(&b->db[i]);
    for (int s = 0; s < BUF_SRC_COUNT; s++) {
        free(b->src[s].key);
        buf_sumtree_free(&b->src[s].tree);
    }
    sqlite3_close(b->wdb);
    if (b->lock_fd >= 0) close(b->lock_fd);  /* releases the flock */
    free(b->ep);
    pthread_cond_t *cvs[] = {&b->put_cv, &b->work_cv, &b->done_cv, &b->sample_cv, &b->fetch_cv};
    for (size_t i = 0; i < sizeof cvs / sizeof cvs[0]; i++) pthread_cond_destroy(cvs[i]);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int buf_attach_demo(buf_t *b, const char *path, cr_err_t *err)
{
    bufdb_t d;
    memset(&d, 0, sizeof d);
    int code = open_reader(b, &d, path, err);
    scan_ep_t *ep = NULL;
    int64_t n_ep = 0, inserts = 0;
    if (!code) code = scan_episodes(d.rd, &ep, &n_ep, err);
    if (code) { close_db(&d); return cr_err_wrap(err, "attach %s", path); }
    /* Attaching happens before sampling starts, so holding mu through the scan only
     * delays the writer's bookkeeping, never a learner. */
    pthread_mutex_lock(&b->mu);
    int dbi = b->n_db;
    if (dbi >= BUF_MAX_DBS) {
        pthread_mutex_unlock(&b->mu);
        free(ep);
        close_db(&d);
        return cr_err_set(err, CR_EINVAL, "attach %s: at most %d demo buffers", path, BUF_MAX_DBS - 1);
    }
    b->db[dbi] = d;
    int64_t keys_before = b->src[BUF_SRC_DEMO].n;
    code = scan_steps(b, dbi, d.rd, ep, n_ep, 1, &inserts, err);
    if (!code) mark_open_tails(b, dbi, ep, n_ep);
    if (!code) {
        size_t budget = b->demo_budget_left;
        size_t want = (size_t)(b->db[dbi].n_tr + n_ep) * buf_cache_row_bytes(&b->layout);
        code = buf_cache_init(&b->db[dbi].cache, &b->layout, want < budget ? want : budget, err);
    }
    if (!code) code = load_cache(b, &b->db[dbi], err);
    if (code) {
        srclist_t *s = &b->src[BUF_SRC_DEMO];
        s->n = keys_before;
        while (s->tree.n > s->n) buf_sumtree_set(&s->tree, --s->tree.n, 0);
        close_db(&b->db[dbi]);
    } else {
        b->demo_budget_left -= buf_cache_bytes(&b->db[dbi].cache);
        b->lim.preloaded += b->db[dbi].n_tr;
        b->n_db = dbi + 1;
        pthread_cond_broadcast(&b->sample_cv);
    }
    int64_t n_tr = b->db[dbi].n_tr;
    pthread_mutex_unlock(&b->mu);
    free(ep);
    if (code) return cr_err_wrap(err, "attach %s", path);
    CR_INFO("buffer", "attached %s as demo: %lld transitions", path, (long long)n_tr);
    return 0;
}

const buf_layout_t *buf_layout(const buf_t *b) { return &b->layout; }

void buf_counters(buf_t *b, buf_counters_t *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&b->mu);
    o->inserts = b->lim.inserts;
    o->samples = b->lim.samples;
    for (int s = 0; s < BUF_SRC_COUNT; s++) o->transitions[s] = buf_src_live(&b->src[s]);
    o->cached_rows = b->db[0].cache.rows;
    o->cache_capacity = b->db[0].cache.cap;
    o->commits = b->commits;
    o->duplicates = b->duplicates;
    o->pending = b->q_len;
    o->disk_reads = b->disk_reads;
    for (int i = 0; i < b->n_db; i++) {
        o->cache_bytes += buf_cache_bytes(&b->db[i].cache);
        o->index_bytes += (size_t)b->db[i].cap_tr * sizeof(tr_t);
    }
    for (int s = 0; s < BUF_SRC_COUNT; s++)
        o->index_bytes += (size_t)b->src[s].cap * sizeof(uint64_t) + (size_t)b->src[s].tree.cap * 2 * sizeof(double);
    o->ram_bytes = o->cache_bytes + o->index_bytes;
    pthread_mutex_unlock(&b->mu);
}
