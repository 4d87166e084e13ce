/* sampler.c - drawing batches: per-source quotas, uniform / recent / prioritised
 * draws, n-step returns, gathers from the RAM cache, and the prefetch thread that
 * reads older transitions from SQLite.
 *
 * A draw picks a transition of one source by the configured distribution. When its
 * rows are cached, it is gathered at once. When they are not, the draw is served from
 * that source's prefetch pool: transitions the prefetcher drew from the same
 * distribution restricted to rows on disk (rejection sampling) and read ahead, so a
 * learner rarely waits for SQLite. A pool item stands in for the draw it replaces;
 * both come from the same conditional distribution (priorities may be as old as the
 * pool's fill, as with Reverb's sampler workers). When a pool is empty the sampler
 * leaves the key it drew as a request and waits for the prefetcher to read it.
 *
 * Pool ring: [head, head+count) ready, the next `reserved` slots being read by the
 * prefetcher (its only writer); samplers only pop from head, which keeps the
 * reserved slots' positions fixed while the prefetcher reads without mu. */
#define _GNU_SOURCE
#include "buffer/internal.h"

#include "common/log.h"
#include "common/time.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define POOL_BYTES (64u << 20)  /* per source */
#define FETCH_CHUNK 32

uint64_t buf_rng_next(uint64_t s[4])  /* xoshiro256** */
{
    uint64_t r = s[1] * 5;
    r = ((r << 7) | (r >> 57)) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return r;
}

static double unit(uint64_t s[4]) { return (double)(buf_rng_next(s) >> 11) * 0x1.0p-53; }

static size_t img_bytes(const buf_t *b)
{
    size_t n = 0;
    for (int i = 0; i < b->layout.n_cams; i++) n += buf_layout_cam_bytes(&b->layout, i);
    return n;
}

/* ---- batches ---------------------------------------------------------------- */

int buf_batch_create(const buf_t *b, int size, buf_batch_t **out, cr_err_t *err)
{
    *out = NULL;
    if (size < 1 || size > 1 << 20) return cr_err_set(err, CR_EINVAL, "batch size %d", size);
    buf_batch_t *bt = calloc(1, sizeof *bt);
    if (!bt) return cr_err_set(err, CR_ENOMEM, "batch");
    size_t n = (size_t)size;
    bt->size = size;
    bt->obs_dim = b->obs_dim;
    bt->act_dim = b->layout.act_dim;
    bt->n_cams = b->layout.n_cams;
    bt->obs = calloc(n * (size_t)(b->obs_dim ? b->obs_dim : 1), sizeof(float));
    bt->next_obs = calloc(n * (size_t)(b->obs_dim ? b->obs_dim : 1), sizeof(float));
    bt->action = calloc(n * (size_t)bt->act_dim, sizeof(float));
    bt->reward = calloc(n, sizeof(float));
    bt->done = calloc(n, sizeof(float));
    bt->discount = calloc(n, sizeof(float));
    bt->weight = calloc(n, sizeof(float));
    bt->key = calloc(n, sizeof(uint64_t));
    bt->source = calloc(n, 1);
    bt->policy_version = calloc(n, sizeof(int64_t));
    int ok = bt->obs && bt->next_obs && bt->action && bt->reward && bt->done && bt->discount &&
             bt->weight && bt->key && bt->source && bt->policy_version;
    for (int i = 0; i < bt->n_cams && ok; i++) {
        size_t cb = buf_layout_cam_bytes(&b->layout, i);
        ok = (bt->image[i] = malloc(n * cb)) && (bt->next_image[i] = malloc(n * cb));
    }
    if (!ok) {
        buf_batch_destroy(bt);
        return cr_err_set(err, CR_ENOMEM, "batch of %d", size);
    }
    *out = bt;
    return 0;
}

void buf_batch_destroy(buf_batch_t *bt)
{
    if (!bt) return;
    free(bt->obs); free(bt->next_obs); free(bt->action); free(bt->reward); free(bt->done);
    free(bt->discount); free(bt->weight); free(bt->key); free(bt->source); free(bt->policy_version);
    for (int i = 0; i < BUF_MAX_CAMS; i++) { free(bt->image[i]); free(bt->next_image[i]); }
    free(bt);
}

/* ---- pools -------------------------------------------------------------------- */

int buf_pools_init(buf_t *b, cr_err_t *err)
{
    size_t pb = (size_t)b->obs_dim * sizeof(float), ab = (size_t)b->layout.act_dim * sizeof(float);
    size_t item = 2 * pb + ab + 2 * img_bytes(b) + 64;
    int64_t cap = b->cfg.prefetch_depth;
    if ((size_t)cap * item > POOL_BYTES) cap = (int64_t)(POOL_BYTES / item);
    if (cap < FETCH_CHUNK) cap = FETCH_CHUNK;
    for (int c = 0; c < BUF_SRC_COUNT; c++) {
        pool_t *p = &b->pool[c];
        p->cap = cap;
        p->item = calloc((size_t)cap, sizeof *p->item);
        p->want = calloc((size_t)cap, sizeof *p->want);
        if (!p->item || !p->want) return cr_err_set(err, CR_ENOMEM, "prefetch pool");
        for (int64_t i = 0; i < cap; i++) {
            pitem_t *it = &p->item[i];
            it->obs = malloc(pb + 4);
            it->next_obs = malloc(pb + 4);
            it->action = malloc(ab);
            if (!it->obs || !it->next_obs || !it->action) return cr_err_set(err, CR_ENOMEM, "prefetch pool");
            for (int k = 0; k < b->layout.n_cams; k++) {
                size_t cb = buf_layout_cam_bytes(&b->layout, k);
                if (!(it->image[k] = malloc(cb)) || !(it->next_image[k] = malloc(cb)))
                    return cr_err_set(err, CR_ENOMEM, "prefetch pool");
            }
        }
    }
    return 0;
}

void buf_pools_free(buf_t *b)
{
    for (int c = 0; c < BUF_SRC_COUNT; c++) {
        pool_t *p = &b->pool[c];
        for (int64_t i = 0; p->item && i < p->cap; i++) {
            pitem_t *it = &p->item[i];
            free(it->obs); free(it->next_obs); free(it->action);
            for (int k = 0; k < BUF_MAX_CAMS; k++) { free(it->image[k]); free(it->next_image[k]); }
        }
        free(p->item);
        free(p->want);
        memset(p, 0, sizeof *p);
    }
}

/* ---- draws -------------------------------------------------------------------- */

/* A drawn transition, resolved to the rows a batch needs (mu held). */
typedef struct draw {
    uint64_t key;
    int dbi, cls;
    int64_t row, next_row;
    float reward, done, discount, weight;
} draw_t;

static void quotas(const buf_t *b, int size, int q[BUF_SRC_COUNT])
{
    double w[BUF_SRC_COUNT], total = 0;
    for (int c = 0; c < BUF_SRC_COUNT; c++) total += w[c] = buf_src_live(&b->src[c]) > 0 ? b->ratio[c] : 0;
    if (total <= 0)  /* only sources with weight 0 hold data: share by count */
        for (int c = 0; c < BUF_SRC_COUNT; c++) total += w[c] = (double)buf_src_live(&b->src[c]);
    int given = 0;
    double frac[BUF_SRC_COUNT];
    for (int c = 0; c < BUF_SRC_COUNT; c++) {
        double x = total > 0 ? size * w[c] / total : 0;
        q[c] = (int)x;
        frac[c] = w[c] > 0 ? x - q[c] : -1;
        given += q[c];
    }
    while (given < size && total > 0) {  /* largest remainders first */
        int best = 0;
        for (int c = 1; c < BUF_SRC_COUNT; c++) if (frac[c] > frac[best]) best = c;
        q[best]++;
        frac[best] = -1;
        given++;
        if (frac[0] < 0 && frac[1] < 0 && frac[2] < 0)
            for (int c = 0; c < BUF_SRC_COUNT; c++) frac[c] = w[c] > 0 ? 0 : -1;
    }
}

static void resolve(const buf_t *b, uint64_t key, float weight, draw_t *d)
{
    d->key = key;
    d->dbi = (int)(key >> KEY_DB_SHIFT);
    const tr_t *trs = b->db[d->dbi].tr, *t = &trs[key & KEY_TID_MASK];
    d->cls = t->cls;
    d->row = t->row;
    float g = (float)b->cfg.gamma, disc = g, ret = t->reward;
    int done = t->done;
    for (int k = 1; k < b->cfg.n_step && !done && t->succ >= 0; k++) {
        t = &trs[t->succ];
        ret += disc * t->reward;
        disc *= g;
        done = t->done;
    }
    d->next_row = t->next_row;
    d->reward = ret;
    d->done = (float)done;
    d->discount = disc;
    d->weight = weight;
}

/* Importance weight of a key under the prioritised sampler (1 otherwise). */
static float weight_of(const buf_t *b, uint64_t key)
{
    if (b->cfg.sampler != BUF_SAMPLE_PRIORITIZED) return 1;
    const tr_t *t = &b->db[key >> KEY_DB_SHIFT].tr[key & KEY_TID_MASK];
    const srclist_t *s = &b->src[t->cls];
    double total = buf_sumtree_total(&s->tree);
    if (total <= 0 || t->pos < 0) return 1;
    return (float)pow((double)buf_src_live(s) * buf_sumtree_get(&s->tree, t->pos) / total, -b->cfg.beta);
}

/* Draws one transition of source c (which holds some) with rng. */
static void draw_one(buf_t *b, int c, uint64_t rng[4], draw_t *d)
{
    const srclist_t *s = &b->src[c];
    int64_t pos, live = buf_src_live(s);
    float weight = 1;
    if (b->cfg.sampler == BUF_SAMPLE_RECENT) {
        int64_t w = live < b->cfg.recent_window ? live : b->cfg.recent_window;
        pos = s->n - 1 - (int64_t)(buf_rng_next(rng) % (uint64_t)w);
    } else if (b->cfg.sampler == BUF_SAMPLE_PRIORITIZED && buf_sumtree_total(&s->tree) > 0) {
        double total = buf_sumtree_total(&s->tree);
        pos = buf_sumtree_find(&s->tree, unit(rng) * total);
        if (pos < s->start) pos = s->start;   /* rounding onto an evicted leaf */
        double p = buf_sumtree_get(&s->tree, pos) / total;
        weight = (float)pow((double)live * p, -b->cfg.beta);
    } else {
        pos = s->start + (int64_t)(buf_rng_next(rng) % (uint64_t)live);
    }
    resolve(b, s->key[pos], weight, d);
}

static int cached(const buf_t *b, const draw_t *d, int64_t *s0, int64_t *s1)
{
    const cache_t *c = &b->db[d->dbi].cache;
    *s0 = buf_cache_slot(c, d->row);
    *s1 = buf_cache_slot(c, d->next_row);
    return *s0 >= 0 && *s1 >= 0;
}

static void fill_scalars(buf_batch_t *bt, int i, const draw_t *d)
{
    bt->key[i] = d->key;
    bt->source[i] = (uint8_t)d->cls;
    bt->reward[i] = d->reward;
    bt->done[i] = d->done;
    bt->discount[i] = d->discount;
    bt->weight[i] = d->weight;
}

static void gather_cached(const buf_t *b, buf_batch_t *bt, int i, const draw_t *d, int64_t s0, int64_t s1)
{
    const cache_t *c = &b->db[d->dbi].cache;
    size_t od = (size_t)c->obs_dim, ad = (size_t)c->act_dim;
    memcpy(bt->obs + i * od, c->proprio + s0 * (int64_t)od, od * sizeof(float));
    memcpy(bt->next_obs + i * od, c->proprio + s1 * (int64_t)od, od * sizeof(float));
    memcpy(bt->action + i * ad, c->action + s0 * (int64_t)ad, ad * sizeof(float));
    for (int k = 0; k < c->n_cams; k++) {
        size_t cb = c->cam_bytes[k];
        memcpy(bt->image[k] + (size_t)i * cb, c->image[k] + (size_t)s0 * cb, cb);
        memcpy(bt->next_image[k] + (size_t)i * cb, c->image[k] + (size_t)s1 * cb, cb);
    }
    bt->policy_version[i] = c->policy_version[s0];
    fill_scalars(bt, i, d);
}

static void gather_pooled(const buf_t *b, buf_batch_t *bt, int i, pool_t *p)
{
    pitem_t *it = &p->item[p->head];
    size_t od = (size_t)b->obs_dim, ad = (size_t)b->layout.act_dim;
    memcpy(bt->obs + i * od, it->obs, od * sizeof(float));
    memcpy(bt->next_obs + i * od, it->next_obs, od * sizeof(float));
    memcpy(bt->action + i * ad, it->action, ad * sizeof(float));
    for (int k = 0; k < b->layout.n_cams; k++) {
        size_t cb = buf_layout_cam_bytes(&b->layout, k);
        memcpy(bt->image[k] + (size_t)i * cb, it->image[k], cb);
        memcpy(bt->next_image[k] + (size_t)i * cb, it->next_image[k], cb);
    }
    bt->policy_version[i] = it->policy_version;
    bt->key[i] = it->key;
    bt->source[i] = (uint8_t)(p - b->pool);
    bt->reward[i] = it->reward;
    bt->done[i] = it->done;
    bt->discount[i] = it->discount;
    bt->weight[i] = it->weight;
    p->head = (p->head + 1) % p->cap;
    p->count--;
}

static int64_t transitions(const buf_t *b)
{
    return buf_src_live(&b->src[0]) + buf_src_live(&b->src[1]) + buf_src_live(&b->src[2]);
}

int buf_sample(buf_t *b, buf_batch_t *bt, int64_t timeout_ms, cr_err_t *err)
{
    int n = bt->size;
    if (bt->obs_dim != b->obs_dim || bt->act_dim != b->layout.act_dim || bt->n_cams != b->layout.n_cams)
        return cr_err_set(err, CR_EINVAL, "sample: the batch was made for another layout");
    if (b->lim.spi > 0 && 2 * b->lim.error_buffer < b->lim.spi + n)
        return cr_err_set(err, CR_EINVAL, "sample: error_buffer %g is too small for batches of %d at "
                          "%g samples per insert (need >= %g)", b->lim.error_buffer, n, b->lim.spi,
                          (b->lim.spi + n) / 2);
    int64_t deadline = timeout_ms < 0 ? 0 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping && (transitions(b) == 0 || !buf_limiter_can_sample(&b->lim, n))) {
        int64_t now = cr_now_ns();
        if (deadline && now >= deadline) {
            int64_t t = transitions(b), ins = b->lim.inserts, smp = b->lim.samples;
            pthread_mutex_unlock(&b->mu);
            return cr_err_set(err, CR_ETIMEDOUT, "sample: %s (transitions %lld, inserts %lld, samples %lld)",
                              t == 0 ? "no transitions yet" : "the rate limiter holds samples",
                              (long long)t, (long long)ins, (long long)smp);
        }
        struct timespec ts;
        int64_t until = deadline ? deadline : now + CR_NS_PER_S;
        ts.tv_sec = until / CR_NS_PER_S;
        ts.tv_nsec = until % CR_NS_PER_S;
        pthread_cond_timedwait(&b->sample_cv, &b->mu, &ts);
    }
    if (b->stopping) {
        pthread_mutex_unlock(&b->mu);
        return cr_err_set(err, CR_ECLOSED, "sample: buffer is closing");
    }
    b->lim.samples += n;
    pthread_cond_broadcast(&b->put_cv);
    int q[BUF_SRC_COUNT], i = 0, code = 0;
    quotas(b, n, q);
    for (int c = 0; c < BUF_SRC_COUNT && !code; c++) {
        for (int k = 0; k < q[c] && !code; k++, i++) {
            draw_t d;
            int64_t s0, s1;
            draw_one(b, c, b->rng, &d);
            if (cached(b, &d, &s0, &s1)) { gather_cached(b, bt, i, &d, s0, s1); continue; }
            pool_t *p = &b->pool[c];
            if (p->count == 0) {
                if (p->n_want < p->cap) p->want[p->n_want++] = d.key;
                pthread_cond_signal(&b->fetch_cv);
            }
            while (p->count == 0 && !b->stopping) {
                int64_t until = deadline ? deadline : cr_now_ns() + CR_NS_PER_S;
                if (deadline && cr_now_ns() >= deadline) break;
                struct timespec ts = {.tv_sec = until / CR_NS_PER_S, .tv_nsec = until % CR_NS_PER_S};
                pthread_cond_timedwait(&b->sample_cv, &b->mu, &ts);
            }
            if (p->count == 0) {
                code = b->stopping ? cr_err_set(err, CR_ECLOSED, "sample: buffer is closing")
                                   : cr_err_set(err, CR_ETIMEDOUT, "sample: waiting for rows from disk");
                break;
            }
            gather_pooled(b, bt, i, p);
            pthread_cond_signal(&b->fetch_cv);
        }
    }
    if (code) b->lim.samples -= n;
    pthread_mutex_unlock(&b->mu);
    if (!code && b->cfg.sampler == BUF_SAMPLE_PRIORITIZED) {
        float mx = 0;
        for (int k = 0; k < n; k++) if (bt->weight[k] > mx) mx = bt->weight[k];
        for (int k = 0; k < n && mx > 0; k++) bt->weight[k] /= mx;
    }
    return code;
}

int buf_update_priorities(buf_t *b, const uint64_t *key, const float *priority, int n, cr_err_t *err)
{
    if (b->cfg.sampler != BUF_SAMPLE_PRIORITIZED) return 0;
    int code = 0;
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < n; i++) {
        int dbi = (int)(key[i] >> KEY_DB_SHIFT);
        int64_t tid = (int64_t)(key[i] & KEY_TID_MASK);
        if (dbi >= b->n_db || tid >= b->db[dbi].n_tr) {
            code = cr_err_set(err, CR_EINVAL, "update priorities: unknown key %llx", (unsigned long long)key[i]);
            break;
        }
        if (!(priority[i] >= 0) || !isfinite(priority[i])) {
            code = cr_err_set(err, CR_EINVAL, "update priorities: priority %g of key %llx", priority[i],
                              (unsigned long long)key[i]);
            break;
        }
        const tr_t *t = &b->db[dbi].tr[tid];
        srclist_t *s = &b->src[t->cls];
        if (t->pos < 0) continue;   /* evicted: its priority no longer matters */
        /* A small floor keeps every transition reachable, as PER does. */
        double p = (double)priority[i] + 1e-6;
        if (p > s->max_prio) s->max_prio = p;
        buf_sumtree_set(&s->tree, t->pos, pow(p, b->cfg.alpha));
    }
    pthread_mutex_unlock(&b->mu);
    return code;
}

/* ---- the prefetch thread --------------------------------------------------------- */

/* Picks a source with disk work and reserves up to FETCH_CHUNK pool slots for draws
 * on disk (mu held). Returns the number of jobs, 0 when there is nothing to do. */
static int plan(buf_t *b, uint64_t rng[4], int *cls, draw_t *job)
{
    for (int c = 0; c < BUF_SRC_COUNT; c++) {
        pool_t *p = &b->pool[c];
        if (buf_src_live(&b->src[c]) == 0) { p->n_want = 0; continue; }
        int64_t room = p->cap - p->count - p->reserved;
        if (room <= 0) continue;
        int k = 0;
        while (p->n_want > 0 && k < FETCH_CHUNK && k < room) {
            uint64_t key = p->want[--p->n_want];
            resolve(b, key, weight_of(b, key), &job[k]);
            k++;
        }
        if (k == 0 && !b->fetch_idle[c]) {
            for (int tries = 0; tries < 4 * FETCH_CHUNK && k < FETCH_CHUNK && k < room; tries++) {
                int64_t s0, s1;
                draw_one(b, c, rng, &job[k]);
                if (!cached(b, &job[k], &s0, &s1)) k++;
            }
            if (k == 0) b->fetch_idle[c] = 1;
        }
        if (k > 0) {
            p->reserved += k;
            *cls = c;
            return k;
        }
    }
    return 0;
}

static int fetch(buf_t *b, const draw_t *d, pitem_t *it, cr_err_t *err)
{
    bufdb_t *db = &b->db[d->dbi];
    int code = buf_read_row(b, db, d->row, it->obs, it->image, it->action, &it->policy_version, err);
    if (!code) code = buf_read_row(b, db, d->next_row, it->next_obs, it->next_image, NULL, NULL, err);
    if (code) return code;
    it->key = d->key;
    it->reward = d->reward;
    it->done = d->done;
    it->discount = d->discount;
    it->weight = d->weight;
    return 0;
}

void *buf_prefetch_main(void *arg)
{
    buf_t *b = arg;
    pthread_setname_np(pthread_self(), "buf-prefetch");
    uint64_t rng[4];
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < 4; i++) rng[i] = buf_rng_next(b->rng) | 1;
    draw_t job[FETCH_CHUNK];
    while (!b->stopping) {
        int c = 0, k = plan(b, rng, &c, job);
        if (k == 0) {
            int64_t until = cr_now_ns() + 100 * CR_NS_PER_MS;
            struct timespec ts = {.tv_sec = until / CR_NS_PER_S, .tv_nsec = until % CR_NS_PER_S};
            pthread_cond_timedwait(&b->fetch_cv, &b->mu, &ts);
            continue;
        }
        pool_t *p = &b->pool[c];
        int64_t first = (p->head + p->count + p->reserved - k) % p->cap;
        pthread_mutex_unlock(&b->mu);
        int done = 0;
        cr_err_t err = {0};
        for (; done < k; done++)
            if (fetch(b, &job[done], &p->item[(first + done) % p->cap], &err)) break;
        if (done < k) CR_ERROR("buffer", "prefetch: %s", err.msg);
        pthread_mutex_lock(&b->mu);
        p->reserved -= k;
        p->count += done;
        b->disk_reads += 2 * done;
        pthread_cond_broadcast(&b->sample_cv);
        if (done < k) {  /* do not spin on a failing read */
            int64_t until = cr_now_ns() + 100 * CR_NS_PER_MS;
            struct timespec ts = {.tv_sec = until / CR_NS_PER_S, .tv_nsec = until % CR_NS_PER_S};
            pthread_cond_timedwait(&b->fetch_cv, &b->mu, &ts);
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}
