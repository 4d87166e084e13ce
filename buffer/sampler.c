/* sampler.c - drawing batches: per-source quotas, uniform / recent / prioritised
 * draws, n-step returns, chunks of consecutive transitions, gathers from the RAM
 * cache, and the prefetch thread that reads older transitions from SQLite.
 *
 * The unit of a draw is an item: one transition, or with cfg.chunk H > 1 a chunk
 * of H transitions of one episode following the drawn start through the index's
 * succ links (padded past the episode's last transition; buffer.h has the rule).
 * Everything below works on items: quotas count them, the cache serves an item
 * when all of its rows are cached, pool entries hold whole items.
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
    if (size % b->cfg.chunk)
        return cr_err_set(err, CR_EINVAL, "batch size %d is not whole chunks of %d rows", size, b->cfg.chunk);
    buf_batch_t *bt = calloc(1, sizeof *bt);
    if (!bt) return cr_err_set(err, CR_ENOMEM, "batch");
    size_t n = (size_t)size;
    bt->size = size;
    bt->chunk = b->cfg.chunk;
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
    bt->pad = calloc(n, 1);
    int ok = bt->obs && bt->next_obs && bt->action && bt->reward && bt->done && bt->discount &&
             bt->weight && bt->key && bt->source && bt->policy_version && bt->pad;
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
    free(bt->pad);
    for (int i = 0; i < BUF_MAX_CAMS; i++) { free(bt->image[i]); free(bt->next_image[i]); }
    free(bt);
}

/* ---- pools -------------------------------------------------------------------- */

static void pitem_free(pitem_t *it)
{
    free(it->key); free(it->reward); free(it->done); free(it->discount); free(it->weight);
    free(it->policy_version); free(it->cls); free(it->pad);
    free(it->obs); free(it->next_obs); free(it->action);
    for (int k = 0; k < BUF_MAX_CAMS; k++) { free(it->image[k]); free(it->next_image[k]); }
}

static int pitem_alloc(const buf_t *b, pitem_t *it)
{
    size_t H = (size_t)b->cfg.chunk;
    size_t pb = (size_t)b->obs_dim * sizeof(float), ab = (size_t)b->layout.act_dim * sizeof(float);
    it->key = malloc(H * sizeof *it->key);
    it->reward = malloc(H * sizeof(float));
    it->done = malloc(H * sizeof(float));
    it->discount = malloc(H * sizeof(float));
    it->weight = malloc(H * sizeof(float));
    it->policy_version = malloc(H * sizeof(int64_t));
    it->cls = malloc(H);
    it->pad = malloc(H);
    it->obs = malloc(H * pb + 4);
    it->next_obs = malloc(H * pb + 4);
    it->action = malloc(H * ab);
    int ok = it->key && it->reward && it->done && it->discount && it->weight && it->policy_version && it->cls &&
             it->pad && it->obs && it->next_obs && it->action;
    for (int k = 0; k < b->layout.n_cams && ok; k++) {
        size_t cb = buf_layout_cam_bytes(&b->layout, k);
        ok = (it->image[k] = malloc(H * cb)) && (it->next_image[k] = malloc(H * cb));
    }
    return ok ? 0 : -1;
}

int buf_pools_init(buf_t *b, cr_err_t *err)
{
    size_t pb = (size_t)b->obs_dim * sizeof(float), ab = (size_t)b->layout.act_dim * sizeof(float);
    size_t item = (size_t)b->cfg.chunk * (2 * pb + ab + 2 * img_bytes(b) + 64);
    int64_t cap = b->cfg.prefetch_depth;
    if ((size_t)cap * item > POOL_BYTES) cap = (int64_t)(POOL_BYTES / item);
    if (cap < FETCH_CHUNK) cap = FETCH_CHUNK;
    for (int c = 0; c < BUF_SRC_COUNT; c++) {
        pool_t *p = &b->pool[c];
        p->cap = cap;
        p->item = calloc((size_t)cap, sizeof *p->item);
        p->want = calloc((size_t)cap, sizeof *p->want);
        if (!p->item || !p->want) return cr_err_set(err, CR_ENOMEM, "prefetch pool");
        for (int64_t i = 0; i < cap; i++)
            if (pitem_alloc(b, &p->item[i])) return cr_err_set(err, CR_ENOMEM, "prefetch pool");
    }
    return 0;
}

void buf_pools_free(buf_t *b)
{
    for (int c = 0; c < BUF_SRC_COUNT; c++) {
        pool_t *p = &b->pool[c];
        for (int64_t i = 0; p->item && i < p->cap; i++) pitem_free(&p->item[i]);
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

/* A drawn chunk: cfg.chunk transitions, d[0] the drawn start; pad[k] marks rows
 * that repeat the episode's last transition. */
typedef struct chunk {
    draw_t d[BUF_MAX_CHUNK];
    uint8_t pad[BUF_MAX_CHUNK];
} chunk_t;

/* Draws of a start before a chunk that would run into an open episode's unknown
 * future is taken anyway (padded). */
#define CHUNK_TRIES 16

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

/* The chunk starting at key: the start's successors in its episode, padded past
 * the episode's last transition. Returns 0 (ch unusable) when the episode is still
 * open and ends before the chunk does, unless force. */
static int resolve_chunk(const buf_t *b, uint64_t key, float weight, int force, chunk_t *ch)
{
    int H = b->cfg.chunk, k = 1;
    uint64_t db = key & ~KEY_TID_MASK;
    const tr_t *trs = b->db[key >> KEY_DB_SHIFT].tr, *t = &trs[key & KEY_TID_MASK];
    resolve(b, key, weight, &ch->d[0]);
    ch->pad[0] = 0;
    for (; k < H && t->succ >= 0; k++) {
        resolve(b, db | (uint64_t)t->succ, weight, &ch->d[k]);
        ch->pad[k] = 0;
        t = &trs[t->succ];
    }
    if (k < H && !t->last && !force) return 0;
    for (; k < H; k++) {
        ch->d[k] = ch->d[k - 1];
        ch->pad[k] = 1;
    }
    return 1;
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

/* Draws the start of one item of source c (which holds some) with rng: its key
 * and importance weight. */
static uint64_t draw_start(buf_t *b, int c, uint64_t rng[4], float *weight)
{
    const srclist_t *s = &b->src[c];
    int64_t pos, live = buf_src_live(s);
    *weight = 1;
    if (b->cfg.sampler == BUF_SAMPLE_RECENT) {
        int64_t w = live < b->cfg.recent_window ? live : b->cfg.recent_window;
        pos = s->n - 1 - (int64_t)(buf_rng_next(rng) % (uint64_t)w);
    } else if (b->cfg.sampler == BUF_SAMPLE_PRIORITIZED && buf_sumtree_total(&s->tree) > 0) {
        double total = buf_sumtree_total(&s->tree);
        pos = buf_sumtree_find(&s->tree, unit(rng) * total);
        if (pos < s->start) pos = s->start;   /* rounding onto an evicted leaf */
        double p = buf_sumtree_get(&s->tree, pos) / total;
        *weight = (float)pow((double)live * p, -b->cfg.beta);
    } else {
        pos = s->start + (int64_t)(buf_rng_next(rng) % (uint64_t)live);
    }
    return s->key[pos];
}

/* Draws one item (a transition, or a chunk) of source c. */
static void draw_one(buf_t *b, int c, uint64_t rng[4], chunk_t *ch)
{
    for (int tries = 1;; tries++) {
        float w;
        uint64_t key = draw_start(b, c, rng, &w);
        if (resolve_chunk(b, key, w, tries >= CHUNK_TRIES, ch)) return;
    }
}

static int cached(const buf_t *b, const chunk_t *ch)
{
    const cache_t *c = &b->db[ch->d[0].dbi].cache;
    for (int k = 0; k < b->cfg.chunk; k++)
        if (!ch->pad[k] && (buf_cache_slot(c, ch->d[k].row) < 0 || buf_cache_slot(c, ch->d[k].next_row) < 0))
            return 0;
    return 1;
}

static void gather_cached(const buf_t *b, buf_batch_t *bt, int i, const draw_t *d, int pad)
{
    const cache_t *c = &b->db[d->dbi].cache;
    int64_t s0 = buf_cache_slot(c, d->row), s1 = buf_cache_slot(c, d->next_row);
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
    bt->key[i] = d->key;
    bt->source[i] = (uint8_t)d->cls;
    bt->reward[i] = d->reward;
    bt->done[i] = d->done;
    bt->discount[i] = d->discount;
    bt->weight[i] = d->weight;
    bt->pad[i] = (uint8_t)pad;
}

/* Row k of pool item it into batch row i. */
static void gather_pooled_row(const buf_t *b, buf_batch_t *bt, int i, const pitem_t *it, int k)
{
    size_t od = (size_t)b->obs_dim, ad = (size_t)b->layout.act_dim;
    memcpy(bt->obs + i * od, it->obs + k * od, od * sizeof(float));
    memcpy(bt->next_obs + i * od, it->next_obs + k * od, od * sizeof(float));
    memcpy(bt->action + i * ad, it->action + k * ad, ad * sizeof(float));
    for (int c = 0; c < b->layout.n_cams; c++) {
        size_t cb = buf_layout_cam_bytes(&b->layout, c);
        memcpy(bt->image[c] + (size_t)i * cb, it->image[c] + (size_t)k * cb, cb);
        memcpy(bt->next_image[c] + (size_t)i * cb, it->next_image[c] + (size_t)k * cb, cb);
    }
    bt->policy_version[i] = it->policy_version[k];
    bt->key[i] = it->key[k];
    bt->source[i] = it->cls[k];
    bt->reward[i] = it->reward[k];
    bt->done[i] = it->done[k];
    bt->discount[i] = it->discount[k];
    bt->weight[i] = it->weight[k];
    bt->pad[i] = it->pad[k];
}

static void gather_pooled(const buf_t *b, buf_batch_t *bt, int i, pool_t *p)
{
    for (int k = 0; k < b->cfg.chunk; k++) gather_pooled_row(b, bt, i + k, &p->item[p->head], k);
    p->head = (p->head + 1) % p->cap;
    p->count--;
}

static int64_t transitions(const buf_t *b)
{
    return buf_src_live(&b->src[0]) + buf_src_live(&b->src[1]) + buf_src_live(&b->src[2]);
}

int buf_sample(buf_t *b, buf_batch_t *bt, int64_t timeout_ms, cr_err_t *err)
{
    int n = bt->size, H = b->cfg.chunk;
    if (bt->obs_dim != b->obs_dim || bt->act_dim != b->layout.act_dim || bt->n_cams != b->layout.n_cams)
        return cr_err_set(err, CR_EINVAL, "sample: the batch was made for another layout");
    if (bt->chunk != H || n % H)
        return cr_err_set(err, CR_EINVAL, "sample: the batch was made for chunks of %d, the buffer draws %d",
                          bt->chunk, H);
    if (b->lim.spi > 0 && 2 * b->lim.error_buffer < b->lim.spi + n)
        return cr_err_set(err, CR_EINVAL, "sample: error_buffer %g is too small for batches of %d at "
                          "%g samples per insert (need >= %g)", b->lim.error_buffer, n, b->lim.spi,
                          (b->lim.spi + n) / 2);
    chunk_t *ch = malloc(sizeof *ch);
    if (!ch) return cr_err_set(err, CR_ENOMEM, "sample");
    int64_t deadline = timeout_ms < 0 ? 0 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping && (transitions(b) == 0 || !buf_limiter_can_sample(&b->lim, n))) {
        int64_t now = cr_now_ns();
        if (deadline && now >= deadline) {
            int64_t t = transitions(b), ins = b->lim.inserts, smp = b->lim.samples;
            pthread_mutex_unlock(&b->mu);
            free(ch);
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
        free(ch);
        return cr_err_set(err, CR_ECLOSED, "sample: buffer is closing");
    }
    b->lim.samples += n;
    pthread_cond_broadcast(&b->put_cv);
    int q[BUF_SRC_COUNT], i = 0, code = 0;
    quotas(b, n / H, q);
    for (int c = 0; c < BUF_SRC_COUNT && !code; c++) {
        for (int k = 0; k < q[c] && !code; k++, i += H) {
            draw_one(b, c, b->rng, ch);
            if (cached(b, ch)) {
                for (int r = 0; r < H; r++) gather_cached(b, bt, i + r, &ch->d[r], ch->pad[r]);
                continue;
            }
            pool_t *p = &b->pool[c];
            if (p->count == 0) {
                if (p->n_want < p->cap) p->want[p->n_want++] = ch->d[0].key;
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
    free(ch);
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
static int plan(buf_t *b, uint64_t rng[4], int *cls, chunk_t *job)
{
    for (int c = 0; c < BUF_SRC_COUNT; c++) {
        pool_t *p = &b->pool[c];
        if (buf_src_live(&b->src[c]) == 0) { p->n_want = 0; continue; }
        int64_t room = p->cap - p->count - p->reserved;
        if (room <= 0) continue;
        int k = 0;
        while (p->n_want > 0 && k < FETCH_CHUNK && k < room) {
            uint64_t key = p->want[--p->n_want];
            /* the sampler took this start: its chunk as it is now, padded if it must */
            resolve_chunk(b, key, weight_of(b, key), 1, &job[k]);
            k++;
        }
        if (k == 0 && !b->fetch_idle[c]) {
            for (int tries = 0; tries < 4 * FETCH_CHUNK && k < FETCH_CHUNK && k < room; tries++) {
                draw_one(b, c, rng, &job[k]);
                if (!cached(b, &job[k])) k++;
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

/* Reads the rows of one chunk into a pool item. Consecutive transitions share a
 * row (one's next row is the next one's row), which is read once; padded rows
 * copy the row before. Returns the rows read, or a negative code. */
static int fetch(buf_t *b, const chunk_t *ch, pitem_t *it, cr_err_t *err)
{
    int H = b->cfg.chunk, n_cams = b->layout.n_cams, reads = 0;
    bufdb_t *db = &b->db[ch->d[0].dbi];
    size_t od = (size_t)b->obs_dim, ad = (size_t)b->layout.act_dim, cb[BUF_MAX_CAMS];
    for (int c = 0; c < n_cams; c++) cb[c] = buf_layout_cam_bytes(&b->layout, c);
    for (int k = 0; k < H; k++) {
        const draw_t *d = &ch->d[k];
        uint8_t *img[BUF_MAX_CAMS] = {0}, *nimg[BUF_MAX_CAMS] = {0};
        for (int c = 0; c < n_cams; c++) {
            img[c] = it->image[c] + (size_t)k * cb[c];
            nimg[c] = it->next_image[c] + (size_t)k * cb[c];
        }
        if (ch->pad[k]) {   /* the episode's last transition again */
            memcpy(it->obs + k * od, it->obs + (k - 1) * od, od * sizeof(float));
            memcpy(it->next_obs + k * od, it->next_obs + (k - 1) * od, od * sizeof(float));
            memcpy(it->action + k * ad, it->action + (k - 1) * ad, ad * sizeof(float));
            for (int c = 0; c < n_cams; c++) {
                memcpy(img[c], img[c] - cb[c], cb[c]);
                memcpy(nimg[c], nimg[c] - cb[c], cb[c]);
            }
            it->policy_version[k] = it->policy_version[k - 1];
        } else {
            int code = buf_read_row(b, db, d->row, it->obs + k * od, img, it->action + k * ad,
                                    &it->policy_version[k], err);
            if (code) return code;
            reads++;
            if (k > 0 && ch->d[k - 1].next_row == d->row) {  /* the previous transition's next row */
                memcpy(it->next_obs + (k - 1) * od, it->obs + k * od, od * sizeof(float));
                for (int c = 0; c < n_cams; c++) memcpy(nimg[c] - cb[c], img[c], cb[c]);
            }
            int shared = k + 1 < H && !ch->pad[k + 1] && ch->d[k + 1].row == d->next_row;
            if (!shared) {
                if ((code = buf_read_row(b, db, d->next_row, it->next_obs + k * od, nimg, NULL, NULL, err)))
                    return code;
                reads++;
            }
        }
        it->key[k] = d->key;
        it->cls[k] = (uint8_t)d->cls;
        it->pad[k] = ch->pad[k];
        it->reward[k] = d->reward;
        it->done[k] = d->done;
        it->discount[k] = d->discount;
        it->weight[k] = d->weight;
    }
    return reads;
}

void *buf_prefetch_main(void *arg)
{
    buf_t *b = arg;
    pthread_setname_np(pthread_self(), "buf-prefetch");
    uint64_t rng[4];
    /* FETCH_CHUNK chunks of up to BUF_MAX_CHUNK draws: too large for a thread's stack */
    chunk_t *job = malloc(FETCH_CHUNK * sizeof *job);
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < 4; i++) rng[i] = buf_rng_next(b->rng) | 1;
    if (!job) CR_ERROR("buffer", "prefetch: out of memory; rows on disk cannot be sampled");
    while (!b->stopping && job) {
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
        int done = 0, reads = 0, r = 0;
        cr_err_t err = {0};
        for (; done < k; done++, reads += r)
            if ((r = fetch(b, &job[done], &p->item[(first + done) % p->cap], &err)) < 0) break;
        if (done < k) CR_ERROR("buffer", "prefetch: %s", err.msg);
        pthread_mutex_lock(&b->mu);
        p->reserved -= k;
        p->count += done;
        b->disk_reads += reads;
        pthread_cond_broadcast(&b->sample_cv);
        if (done < k) {  /* do not spin on a failing read */
            int64_t until = cr_now_ns() + 100 * CR_NS_PER_MS;
            struct timespec ts = {.tv_sec = until / CR_NS_PER_S, .tv_nsec = until % CR_NS_PER_S};
            pthread_cond_timedwait(&b->fetch_cv, &b->mu, &ts);
        }
    }
    pthread_mutex_unlock(&b->mu);
    free(job);
    return NULL;
}
