/* writer.c - the put path: a bounded queue, and the writer thread that group-commits
 * it and acknowledges each put after its transaction committed.
 *
 * State of a put: queued (in q_head..q_tail, counted in q_bytes and, when it carries
 * an action, in the limiter's pending inserts) -> taken by the writer (one batch: all
 * puts waiting when the commit window closes, at most max_batch_rows) -> written in one
 * transaction -> committed: the cache, the transition index and the limiter learn the
 * new rows under mu, then every put of the batch is acked (status 0, duplicate or
 * not) -> or failed: the transaction is rolled back, the writer's episode table is
 * restored from its snapshot, and every put of the batch is acked with the error (the
 * producer retries; nothing acknowledged is affected). A repeated (producer, seq) is
 * caught by the UNIQUE index and acked as a duplicate without a second row. */
#define _GNU_SOURCE
#include "buffer/internal.h"

#include "common/log.h"
#include "common/time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct putitem {
    putitem_t *next;
    buf_step_t step;            /* pointers into data[] */
    char robot[128];
    buf_ack_fn ack;
    void *ctx;
    size_t bytes;
    int64_t enq_no, enq_ns;
    uint64_t data[];            /* proprio, action, images */
};

/* What a committed put changes in RAM. */
typedef struct effect {
    int dup, insert, new_tr;
    int64_t row, tr_row, link_from;
    float tr_reward;
    int tr_done, tr_cls, tr_last;
} effect_t;

typedef struct wstmts {
    sqlite3_stmt *dup, *ep_ins, *ep_get, *step_ins, *ep_end, *meta;
} wstmts_t;

/* ---- producers' side ------------------------------------------------------- */

static int check_step(const buf_t *b, const buf_step_t *s, cr_err_t *err)
{
    if (b->obs_dim && !s->proprio)
        return cr_err_set(err, CR_EINVAL, "step %llu/%llu: no proprio vector (layout has %d floats)",
                          (unsigned long long)s->producer, (unsigned long long)s->seq, b->obs_dim);
    for (int i = 0; i < b->layout.n_cams; i++)
        if (!s->image[i])
            return cr_err_set(err, CR_EINVAL, "step %llu/%llu: no image for camera %d",
                              (unsigned long long)s->producer, (unsigned long long)s->seq, i);
    if ((int)s->source < 0 || s->source >= BUF_SRC_COUNT)
        return cr_err_set(err, CR_EINVAL, "step %llu/%llu: source %d", (unsigned long long)s->producer,
                          (unsigned long long)s->seq, (int)s->source);
    if (!isfinite(s->reward))
        return cr_err_set(err, CR_EINVAL, "step %llu/%llu: reward is not finite",
                          (unsigned long long)s->producer, (unsigned long long)s->seq);
    if (s->producer > INT64_MAX || s->seq > INT64_MAX || s->episode > INT64_MAX)
        return cr_err_set(err, CR_EINVAL, "step: producer, seq and episode must be < 2^63");
    return 0;
}

static putitem_t *copy_step(const buf_t *b, const buf_step_t *s)
{
    size_t pb = (size_t)b->obs_dim * sizeof(float), ab = (size_t)b->layout.act_dim * sizeof(float);
    size_t ib = 0;
    for (int i = 0; i < b->layout.n_cams; i++) ib += buf_layout_cam_bytes(&b->layout, i);
    size_t bytes = sizeof(putitem_t) + pb + ab + ib;
    putitem_t *it = malloc(bytes);
    if (!it) return NULL;
    memset(it, 0, sizeof *it);
    it->bytes = bytes;
    it->step = *s;
    uint8_t *p = (uint8_t *)it->data;
    if (pb) memcpy(p, s->proprio, pb);
    it->step.proprio = (const float *)p;
    p += pb;
    if (s->action) {
        memcpy(p, s->action, ab);
        it->step.action = (const float *)p;
    }
    p += ab;
    for (int i = 0; i < b->layout.n_cams; i++) {
        size_t n = buf_layout_cam_bytes(&b->layout, i);
        memcpy(p, s->image[i], n);
        it->step.image[i] = p;
        p += n;
    }
    snprintf(it->robot, sizeof it->robot, "%s", s->robot ? s->robot : "");
    it->step.robot = it->robot;
    return it;
}

static int64_t deadline_of(int64_t timeout_ms)
{
    return timeout_ms < 0 ? 0 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
}

/* Waits on cv until the monotonic deadline (0: none); returns 0 when it passed. */
static int wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline)
{
    if (deadline == 0) { pthread_cond_wait(cv, mu); return 1; }
    int64_t now = cr_now_ns();
    if (now >= deadline) return 0;
    struct timespec ts = {.tv_sec = deadline / CR_NS_PER_S, .tv_nsec = deadline % CR_NS_PER_S};
    pthread_cond_timedwait(cv, mu, &ts);
    return 1;
}

int buf_put(buf_t *b, const buf_step_t *step, buf_ack_fn ack, void *ctx, int64_t timeout_ms,
            cr_err_t *err)
{
    int code = check_step(b, step, err);
    if (code) return code;
    putitem_t *it = copy_step(b, step);
    if (!it) return cr_err_set(err, CR_ENOMEM, "copy of a step");
    it->ack = ack;
    it->ctx = ctx;
    int insert = step->action != NULL;
    int64_t deadline = deadline_of(timeout_ms);
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->stopping) { code = cr_err_set(err, CR_ECLOSED, "buffer %s is closing", b->path); break; }
        int room = b->q_len == 0 || b->q_bytes + it->bytes <= b->cfg.max_pending_bytes;
        if (room && (!insert || buf_limiter_can_insert(&b->lim, 1))) break;
        if (!wait_until(&b->put_cv, &b->mu, deadline)) {
            code = cr_err_set(err, CR_ETIMEDOUT, room ? "put: the rate limiter holds inserts "
                              "(samples_per_insert %g)" : "put: the queue is full", b->lim.spi);
            break;
        }
    }
    if (code) {
        pthread_mutex_unlock(&b->mu);
        free(it);
        return code;
    }
    if (insert) b->lim.pending++;
    it->enq_no = ++b->q_enqueued;
    it->enq_ns = cr_now_ns();
    if (b->q_tail) b->q_tail->next = it;
    else b->q_head = it;
    b->q_tail = it;
    b->q_len++;
    b->q_bytes += it->bytes;
    /* Wake the writer for the first put of a batch and for a full batch only: waking
     * it for every put would cost a context switch per row inside the window. */
    if (b->q_len == 1 || b->q_len >= b->cfg.max_batch_rows) pthread_cond_signal(&b->work_cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

typedef struct waiter {
    buf_t *b;
    int done, status, duplicate;
} waiter_t;

static void wake_waiter(void *ctx, const buf_ack_t *ack)
{
    waiter_t *w = ctx;
    pthread_mutex_lock(&w->b->mu);
    w->done = 1;
    w->status = ack->status;
    w->duplicate = ack->duplicate;
    pthread_cond_broadcast(&w->b->done_cv);
    pthread_mutex_unlock(&w->b->mu);
}

int buf_put_wait(buf_t *b, const buf_step_t *step, int64_t timeout_ms, int *duplicate, cr_err_t *err)
{
    waiter_t w = {.b = b};
    int code = buf_put(b, step, wake_waiter, &w, timeout_ms, err);
    if (code) return code;
    /* Once queued, the writer always acks (commit, failure or close). */
    pthread_mutex_lock(&b->mu);
    while (!w.done) pthread_cond_wait(&b->done_cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    if (duplicate) *duplicate = w.duplicate;
    if (w.status)
        return cr_err_set(err, w.status, "step %llu/%llu not stored: %s", (unsigned long long)step->producer,
                          (unsigned long long)step->seq, cr_err_str(w.status));
    return 0;
}

int buf_flush(buf_t *b, cr_err_t *err)
{
    pthread_mutex_lock(&b->mu);
    int64_t upto = b->q_enqueued;
    while (b->q_done < upto) pthread_cond_wait(&b->done_cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

/* ---- the writer thread ------------------------------------------------------ */

static int prepare(sqlite3 *db, wstmts_t *w, cr_err_t *err)
{
    struct { sqlite3_stmt **st; const char *sql; } list[] = {
        {&w->dup, "SELECT 1 FROM steps WHERE producer=? AND seq=?"},
        {&w->ep_ins, "INSERT OR IGNORE INTO episodes(producer, ep_no, robot, source, policy_version, "
                     "start_ns) VALUES(?, ?, ?, ?, ?, ?)"},
        {&w->ep_get, "SELECT id, source, nsteps, ret FROM episodes WHERE producer=? AND ep_no=?"},
        {&w->step_ins, "INSERT OR IGNORE INTO steps(episode, t, producer, seq, reward, done, "
                       "intervention, policy_version, action, proprio, images) "
                       "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"},
        {&w->ep_end, "UPDATE episodes SET end_ns=?, nsteps=?, ret=?, success=?, truncated=?, ended=1 "
                     "WHERE id=?"},
        {&w->meta, "INSERT OR REPLACE INTO meta(key, value) VALUES('limiter_samples', ?)"},
    };
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        int rc = sqlite3_prepare_v3(db, list[i].sql, -1, SQLITE_PREPARE_PERSISTENT, list[i].st, NULL);
        if (rc != SQLITE_OK) return buf_sql_err(db, rc, err, list[i].sql);
    }
    return 0;
}

static void finalize(wstmts_t *w)
{
    sqlite3_finalize(w->dup);
    sqlite3_finalize(w->ep_ins);
    sqlite3_finalize(w->ep_get);
    sqlite3_finalize(w->step_ins);
    sqlite3_finalize(w->ep_end);
    sqlite3_finalize(w->meta);
}

static int step_done(sqlite3 *db, sqlite3_stmt *st, int rc_want, cr_err_t *err, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != rc_want) return buf_sql_err(db, rc, err, what);
    return 0;
}

static openep_t *find_ep(buf_t *b, uint64_t producer, uint64_t ep_no)
{
    for (int64_t i = b->n_ep - 1; i >= 0; i--)
        if (b->ep[i].producer == producer && b->ep[i].ep_no == ep_no) return &b->ep[i];
    return NULL;
}

static openep_t *add_ep(buf_t *b)
{
    if (b->n_ep == b->cap_ep) {
        int64_t cap = b->cap_ep ? b->cap_ep * 2 : 64;
        openep_t *o = realloc(b->ep, (size_t)cap * sizeof *o);
        if (!o) return NULL;
        b->ep = o;
        b->cap_ep = cap;
    }
    openep_t *e = &b->ep[b->n_ep++];
    memset(e, 0, sizeof *e);
    e->last_row = e->last_tid = -1;
    return e;
}

/* Finds or starts the episode of s; sets *dup when s is known to be stored already. */
static int episode_of(buf_t *b, wstmts_t *w, const buf_step_t *s, openep_t **out, int *dup, cr_err_t *err)
{
    sqlite3 *db = b->wdb;
    *out = find_ep(b, s->producer, s->episode);
    if (*out) return 0;
    /* Not open: a new episode, or a repeat of a step of an ended one. */
    sqlite3_bind_int64(w->dup, 1, (int64_t)s->producer);
    sqlite3_bind_int64(w->dup, 2, (int64_t)s->seq);
    int rc = sqlite3_step(w->dup);
    sqlite3_reset(w->dup);
    if (rc == SQLITE_ROW) { *dup = 1; return 0; }
    if (rc != SQLITE_DONE) return buf_sql_err(db, rc, err, "look up a step");
    sqlite3_bind_int64(w->ep_ins, 1, (int64_t)s->producer);
    sqlite3_bind_int64(w->ep_ins, 2, (int64_t)s->episode);
    sqlite3_bind_text(w->ep_ins, 3, s->robot, -1, SQLITE_STATIC);
    sqlite3_bind_int(w->ep_ins, 4, (int)s->source);
    sqlite3_bind_int64(w->ep_ins, 5, s->policy_version);
    sqlite3_bind_int64(w->ep_ins, 6, cr_wall_ns());
    int code = step_done(db, w->ep_ins, SQLITE_DONE, err, "insert an episode");
    if (code) return code;
    openep_t *e = add_ep(b);
    if (!e) return cr_err_set(err, CR_ENOMEM, "open episode table");
    e->producer = s->producer;
    e->ep_no = s->episode;
    e->source = (uint8_t)s->source;
    if (sqlite3_changes(db) == 1) {
        e->id = sqlite3_last_insert_rowid(db);
    } else {
        /* The episode ended before: a producer kept sending after its final row. Its
         * new rows are stored, but not linked to the old ones. */
        sqlite3_bind_int64(w->ep_get, 1, (int64_t)s->producer);
        sqlite3_bind_int64(w->ep_get, 2, (int64_t)s->episode);
        rc = sqlite3_step(w->ep_get);
        if (rc == SQLITE_ROW) {
            e->id = sqlite3_column_int64(w->ep_get, 0);
            e->source = (uint8_t)sqlite3_column_int(w->ep_get, 1);
            e->t = sqlite3_column_int64(w->ep_get, 2);
            e->ret = sqlite3_column_double(w->ep_get, 3);
        }
        sqlite3_reset(w->ep_get);
        if (rc != SQLITE_ROW) { b->n_ep--; return buf_sql_err(db, rc, err, "look up an episode"); }
        CR_WARN("buffer", "producer %llu sent step %llu to episode %llu after its end",
                (unsigned long long)s->producer, (unsigned long long)s->seq, (unsigned long long)s->episode);
    }
    *out = e;
    return 0;
}

static int write_step(buf_t *b, wstmts_t *w, const putitem_t *it, effect_t *eff, cr_err_t *err)
{
    sqlite3 *db = b->wdb;
    const buf_step_t *s = &it->step;
    openep_t *e = NULL;
    memset(eff, 0, sizeof *eff);
    int code = episode_of(b, w, s, &e, &eff->dup, err);
    if (code || eff->dup) return code;
    sqlite3_stmt *st = w->step_ins;
    size_t ib = 0;
    for (int i = 0; i < b->layout.n_cams; i++) ib += buf_layout_cam_bytes(&b->layout, i);
    sqlite3_bind_int64(st, 1, e->id);
    sqlite3_bind_int64(st, 2, e->t);
    sqlite3_bind_int64(st, 3, (int64_t)s->producer);
    sqlite3_bind_int64(st, 4, (int64_t)s->seq);
    sqlite3_bind_double(st, 5, s->reward);
    sqlite3_bind_int(st, 6, s->done != 0);
    sqlite3_bind_int(st, 7, s->intervention != 0);
    sqlite3_bind_int64(st, 8, s->policy_version);
    if (s->action) sqlite3_bind_blob(st, 9, s->action, b->layout.act_dim * (int)sizeof(float), SQLITE_STATIC);
    else sqlite3_bind_null(st, 9);
    if (b->obs_dim) sqlite3_bind_blob(st, 10, s->proprio, b->obs_dim * (int)sizeof(float), SQLITE_STATIC);
    else sqlite3_bind_zeroblob(st, 10, 0);
    /* Images are contiguous in the put's copy: one blob, no second copy. */
    if (ib) sqlite3_bind_blob64(st, 11, s->image[0], ib, SQLITE_STATIC);
    else sqlite3_bind_zeroblob(st, 11, 0);
    if ((code = step_done(db, st, SQLITE_DONE, err, "insert a step"))) return code;
    if (sqlite3_changes(db) == 0) { eff->dup = 1; return 0; }
    eff->row = sqlite3_last_insert_rowid(db);
    eff->insert = s->action != NULL;
    if (e->last_row > 0 && e->last_has_action) {
        eff->new_tr = 1;
        eff->tr_row = e->last_row;
        eff->tr_reward = e->last_reward;
        eff->tr_done = e->last_done;
        eff->tr_cls = e->last_cls;
        eff->tr_last = s->action == NULL;   /* into the final row: the episode's last */
        eff->link_from = e->last_tid;
        e->last_tid = b->w_ntr++;
    } else {
        e->last_tid = -1;
    }
    e->last_row = eff->row;
    e->last_has_action = s->action != NULL;
    e->last_reward = s->reward;
    e->last_done = (uint8_t)(s->done != 0);
    e->last_cls = (uint8_t)b->cls_map[buf_raw_class(e->source, s->intervention)];
    e->t++;
    if (s->action) e->ret += s->reward;
    if (!s->action) {
        sqlite3_bind_int64(w->ep_end, 1, cr_wall_ns());
        sqlite3_bind_int64(w->ep_end, 2, e->t);
        sqlite3_bind_double(w->ep_end, 3, e->ret);
        sqlite3_bind_int(w->ep_end, 4, s->success != 0);
        sqlite3_bind_int(w->ep_end, 5, s->truncated != 0);
        sqlite3_bind_int64(w->ep_end, 6, e->id);
        if ((code = step_done(db, w->ep_end, SQLITE_DONE, err, "end an episode"))) return code;
        *e = b->ep[--b->n_ep];
    }
    return 0;
}

/* Applies the effects of a committed batch (mu held). */
static void apply(buf_t *b, putitem_t *batch, effect_t *eff)
{
    bufdb_t *d = &b->db[0];
    int i = 0;
    for (putitem_t *it = batch; it; it = it->next, i++) {
        effect_t *e = &eff[i];
        if (it->step.action) b->lim.pending--;
        if (e->dup) { b->duplicates++; continue; }
        if (e->insert) b->lim.inserts++;
        buf_cache_put(&d->cache, e->row, it->step.proprio, it->step.image, it->step.action,
                      it->step.policy_version);
        if (e->new_tr) {
            cr_err_t err = {0};
            if (buf_index_add(b, 0, e->tr_row, e->row, e->tr_reward, e->tr_done, e->tr_cls, e->tr_last,
                              e->link_from, &err))
                CR_ERROR("buffer", "%s: %s; the transition stays on disk only", b->path, err.msg);
        }
    }
    b->w_ntr = d->n_tr;
    b->commits++;
}

static void ack_all(buf_t *b, putitem_t *batch, effect_t *eff, int status)
{
    int i = 0, n = 0;
    for (putitem_t *it = batch, *next; it; it = next, i++, n++) {
        next = it->next;
        buf_ack_t a = {.producer = it->step.producer, .seq = it->step.seq, .status = status,
                       .duplicate = !status && eff && eff[i].dup};
        if (it->ack) it->ack(it->ctx, &a);
        free(it);
    }
    pthread_mutex_lock(&b->mu);
    b->q_done += n;
    pthread_cond_broadcast(&b->done_cv);
    pthread_mutex_unlock(&b->mu);
}

static int commit_batch(buf_t *b, wstmts_t *w, putitem_t *batch, int n, int64_t samples,
                        openep_t *snap, effect_t *eff)
{
    cr_err_t err = {0};
    int64_t n_ep0 = b->n_ep, ntr0 = b->w_ntr;
    if (n_ep0) memcpy(snap, b->ep, (size_t)n_ep0 * sizeof *snap);
    int code = buf_exec(b->wdb, "BEGIN IMMEDIATE", &err);
    int i = 0;
    for (putitem_t *it = batch; it && !code; it = it->next, i++) code = write_step(b, w, it, &eff[i], &err);
    if (!code && samples != b->samples_saved) {
        sqlite3_bind_int64(w->meta, 1, samples);
        code = step_done(b->wdb, w->meta, SQLITE_DONE, &err, "save the limiter counters");
    }
    if (!code) code = buf_exec(b->wdb, "COMMIT", &err);
    if (code) {
        if (!sqlite3_get_autocommit(b->wdb)) sqlite3_exec(b->wdb, "ROLLBACK", NULL, NULL, NULL);
        if (n_ep0) memcpy(b->ep, snap, (size_t)n_ep0 * sizeof *snap);
        b->n_ep = n_ep0;
        b->w_ntr = ntr0;
        CR_ERROR("buffer", "%s: %d put(s) not stored: %s", b->path, n, err.msg);
        pthread_mutex_lock(&b->mu);
        for (putitem_t *it = batch; it; it = it->next)
            if (it->step.action) b->lim.pending--;
        pthread_cond_broadcast(&b->put_cv);
        pthread_mutex_unlock(&b->mu);
        ack_all(b, batch, NULL, code);
        return code;
    }
    pthread_mutex_lock(&b->mu);
    b->samples_saved = samples;
    apply(b, batch, eff);
    pthread_cond_broadcast(&b->put_cv);
    pthread_cond_broadcast(&b->sample_cv);
    /* New rows pushed old ones out of the cache: there may be disk work again. */
    for (int c = 0; c < BUF_SRC_COUNT; c++) b->fetch_idle[c] = 0;
    pthread_cond_broadcast(&b->fetch_cv);
    pthread_mutex_unlock(&b->mu);
    ack_all(b, batch, eff, 0);
    return 0;
}

static void save_samples(buf_t *b, wstmts_t *w, int64_t samples)
{
    sqlite3_bind_int64(w->meta, 1, samples);
    int rc = sqlite3_step(w->meta);
    sqlite3_reset(w->meta);
    if (rc == SQLITE_DONE) {
        pthread_mutex_lock(&b->mu);
        b->samples_saved = samples;
        pthread_mutex_unlock(&b->mu);
    }
}

void *buf_writer_main(void *arg)
{
    buf_t *b = arg;
    pthread_setname_np(pthread_self(), "buf-writer");
    wstmts_t w = {0};
    cr_err_t err = {0};
    int ready = prepare(b->wdb, &w, &err) == 0;
    if (!ready) CR_ERROR("buffer", "%s: writer cannot start: %s", b->path, err.msg);
    int cap = b->cfg.max_batch_rows;
    effect_t *eff = malloc((size_t)cap * sizeof *eff);
    openep_t *snap = NULL;
    int64_t snap_cap = 0;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->q_head && !b->stopping) {
            int64_t idle = cr_now_ns() + 200 * CR_NS_PER_MS;
            wait_until(&b->work_cv, &b->mu, idle);
            /* Samples move the limiter too: keep them on disk while no puts come. */
            if (!b->q_head && ready && b->lim.samples != b->samples_saved && cr_now_ns() >= idle) {
                int64_t s = b->lim.samples;
                pthread_mutex_unlock(&b->mu);
                save_samples(b, &w, s);
                pthread_mutex_lock(&b->mu);
            }
        }
        if (!b->q_head) break;  /* stopping and drained */
        int64_t close_at = b->q_head->enq_ns + b->cfg.commit_window_us * CR_NS_PER_US;
        while (!b->stopping && b->q_len < cap && wait_until(&b->work_cv, &b->mu, close_at)) {}
        putitem_t *batch = b->q_head, *last = batch;
        int n = 1;
        b->q_bytes -= last->bytes;
        while (n < cap && last->next) { last = last->next; b->q_bytes -= last->bytes; n++; }
        b->q_head = last->next;
        if (!b->q_head) b->q_tail = NULL;
        last->next = NULL;
        b->q_len -= n;
        int64_t samples = b->lim.samples;
        pthread_cond_broadcast(&b->put_cv);
        pthread_mutex_unlock(&b->mu);
        if (snap_cap < b->n_ep + 1) {
            snap_cap = (b->n_ep + 1) * 2;
            free(snap);
            snap = malloc((size_t)snap_cap * sizeof *snap);
        }
        if (!ready || !eff || !snap) {
            pthread_mutex_lock(&b->mu);
            for (putitem_t *it = batch; it; it = it->next)
                if (it->step.action) b->lim.pending--;
            pthread_mutex_unlock(&b->mu);
            ack_all(b, batch, NULL, ready ? CR_ENOMEM : CR_EIO);
        } else {
            commit_batch(b, &w, batch, n, samples, snap, eff);
        }
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    finalize(&w);
    free(eff);
    free(snap);
    return NULL;
}
