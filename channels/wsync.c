/* wsync.c - versioned weight sync: one learner publishes weight blobs, many actors
 * receive them through ordinary channels, in chunks.
 *
 * Publisher: ch_wsync_publish snapshots the tensors and returns; a thread sends the
 * newest snapshot to every subscriber round-robin, one chunk at a time, under a
 * token bucket (bytes/s over all subscribers) and a cap on unacknowledged chunks per
 * subscriber, so the learner's own threads keep the CPU and the network. A newer
 * snapshot abandons an older one mid-way. In delta mode a subscriber that holds a
 * complete version d gets only the tensors whose bytes changed after d.
 *
 * Subscriber: a thread reads chunks from the channel and assembles one version at a
 * time; chunks of a newer version drop a partial older one. A complete version
 * becomes the base for the next delta and is offered to the actor, which takes it
 * at a safe point (ch_wsync_sub_take). Chunks from a bad peer are refused with a
 * log line and counted; the subscriber keeps its last complete version.
 *
 * A chunk is a fixed header, the tensor's name, then the data; the header says how
 * many chunks the version has, so completion needs no end marker. */
#include "channels/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/time.h"

#define WS_MAGIC 0x43525753u /* "CRWS" */
#define WS_FULL 1
#define WS_DELTA 2
#define WS_NONE UINT32_MAX   /* tensor_idx of the one chunk of an empty delta */
#define WS_NAME_MAX 256

typedef struct chunk_hdr {
    uint32_t magic;
    uint16_t kind, name_len;
    uint64_t version, base;
    uint32_t ntensors, tensor_idx;
    uint64_t nchunks;       /* chunks this version is sent in */
    uint64_t tensor_bytes, offset;
    uint32_t len, pad;
} chunk_hdr_t;

/* ---- shared weights (refcounted, read-only once complete) ---- */

typedef struct weights_box {
    ch_weights_t w;
    atomic_int refs;
} weights_box_t;

static weights_box_t *weights_new(uint64_t version, size_t n)
{
    weights_box_t *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->w.version = version;
    b->w.n = n;
    b->w.t = calloc(n ? n : 1, sizeof *b->w.t);
    if (!b->w.t) {
        free(b);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    return b;
}

void ch_weights_free(ch_weights_t *w)
{
    if (!w) return;
    weights_box_t *b = (weights_box_t *)w;
    if (atomic_fetch_sub(&b->refs, 1) != 1) return;
    for (size_t i = 0; i < w->n; i++) {
        free((void *)w->t[i].name);
        free((void *)w->t[i].data);
    }
    free(w->t);
    free(b);
}

/* ---- publisher ---- */

typedef struct snapshot {
    uint64_t version;
    size_t n;
    char **names;
    uint8_t **data;
    size_t *bytes;
    uint64_t *changed_at;   /* version in which each tensor last changed */
    uint64_t layout_version; /* version in which the tensor set last changed */
    int refs;               /* under pub->mu */
} snapshot_t;

typedef struct sub_state {
    ch_producer_t *prod;
    snapshot_t *snap;       /* being sent, or NULL */
    uint32_t *plan;         /* tensor indices to send */
    size_t nplan, ti;       /* plan position */
    uint64_t off, nchunks, sent_chunks, base;
    uint64_t done_version;  /* every chunk of it was put */
    uint64_t acked_version; /* ... and acknowledged */
    int64_t retry_ns;
} sub_state_t;

struct ch_wsync_pub {
    ch_wsync_opts_t o;
    sub_state_t *subs;
    size_t n;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    snapshot_t *latest;     /* newest published, not yet diffed */
    snapshot_t *current;    /* newest diffed: what subscribers are sent */
    uint64_t last_version;
    int stop;
    pthread_t thread;
    _Atomic uint64_t bytes_sent;
    double tokens;
    int64_t tokens_at;
};

static void snap_unref(ch_wsync_pub_t *p, snapshot_t *s)
{
    if (!s) return;
    pthread_mutex_lock(&p->mu);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (!last) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->names[i]);
        free(s->data[i]);
    }
    free(s->names);
    free(s->data);
    free(s->bytes);
    free(s->changed_at);
    free(s);
}

static snapshot_t *snap_new(uint64_t version, const ch_tensor_t *t, size_t n)
{
    snapshot_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->version = version;
    s->n = n;
    s->refs = 1;
    s->names = calloc(n ? n : 1, sizeof *s->names);
    s->data = calloc(n ? n : 1, sizeof *s->data);
    s->bytes = calloc(n ? n : 1, sizeof *s->bytes);
    s->changed_at = calloc(n ? n : 1, sizeof *s->changed_at);
    int ok = s->names && s->data && s->bytes && s->changed_at;
    for (size_t i = 0; ok && i < n; i++) {
        s->names[i] = strdup(t[i].name);
        s->data[i] = malloc(t[i].bytes ? t[i].bytes : 1);
        s->bytes[i] = t[i].bytes;
        ok = s->names[i] && s->data[i];
        if (ok && t[i].bytes) memcpy(s->data[i], t[i].data, t[i].bytes);
    }
    if (!ok) {
        for (size_t i = 0; s->names && s->data && i < n; i++) {
            free(s->names[i]);
            free(s->data[i]);
        }
        free(s->names);
        free(s->data);
        free(s->bytes);
        free(s->changed_at);
        free(s);
        return NULL;
    }
    return s;
}

/* Marks which tensors of s changed relative to prev (the previous diffed snapshot). */
static void snap_diff(snapshot_t *s, const snapshot_t *prev)
{
    int same_layout = prev && prev->n == s->n;
    for (size_t i = 0; same_layout && i < s->n; i++)
        same_layout = prev->bytes[i] == s->bytes[i] && strcmp(prev->names[i], s->names[i]) == 0;
    s->layout_version = same_layout ? prev->layout_version : s->version;
    for (size_t i = 0; i < s->n; i++) {
        int same = same_layout && memcmp(prev->data[i], s->data[i], s->bytes[i]) == 0;
        s->changed_at[i] = same ? prev->changed_at[i] : s->version;
    }
}

static size_t chunks_of(size_t bytes, size_t chunk)
{
    return bytes == 0 ? 1 : (bytes + chunk - 1) / chunk;
}

/* Starts sending snapshot s to subscriber u: full, or a delta over its last
 * complete version when the layout still matches. */
static int plan_start(ch_wsync_pub_t *p, sub_state_t *u, snapshot_t *s)
{
    free(u->plan);
    u->plan = calloc(s->n ? s->n : 1, sizeof *u->plan);
    if (!u->plan) return -1;
    int delta = p->o.delta && u->done_version && u->done_version >= s->layout_version;
    u->base = delta ? u->done_version : 0;
    u->nplan = 0;
    u->nchunks = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (delta && s->changed_at[i] <= u->done_version) continue;
        u->plan[u->nplan++] = (uint32_t)i;
        u->nchunks += chunks_of(s->bytes[i], p->o.chunk_bytes);
    }
    if (u->nplan == 0) u->nchunks = 1; /* one empty chunk says "no change" */
    u->ti = 0;
    u->off = 0;
    u->sent_chunks = 0;
    u->snap = s;
    return 0;
}

/* Token bucket over all subscribers: how long to wait before len bytes may go. */
static int64_t rate_wait_ns(ch_wsync_pub_t *p, size_t len)
{
    if (p->o.max_bytes_per_s <= 0) return 0;
    int64_t now = cr_now_ns();
    p->tokens += (double)(now - p->tokens_at) * p->o.max_bytes_per_s / 1e9;
    p->tokens_at = now;
    double burst = (double)p->o.chunk_bytes;
    if (p->tokens > burst) p->tokens = burst;
    if (p->tokens >= (double)len || p->tokens >= burst) return 0;
    return (int64_t)(((double)len - p->tokens) * 1e9 / p->o.max_bytes_per_s) + 1;
}

/* Sends the next chunk to u. 1 sent, 0 not now (cap or channel full), <0 error. */
static int send_chunk(ch_wsync_pub_t *p, sub_state_t *u, int64_t *wait_ns)
{
    snapshot_t *s = u->snap;
    if (ch_producer_unacked(u->prod) >= p->o.max_inflight) return 0;
    chunk_hdr_t h = {.magic = WS_MAGIC, .kind = u->base ? WS_DELTA : WS_FULL, .version = s->version,
                     .base = u->base, .ntensors = (uint32_t)s->n, .nchunks = u->nchunks,
                     .tensor_idx = WS_NONE};
    const char *name = "";
    const uint8_t *src = NULL;
    if (u->nplan) {
        uint32_t i = u->plan[u->ti];
        name = s->names[i];
        h.tensor_idx = i;
        h.tensor_bytes = s->bytes[i];
        h.offset = u->off;
        size_t left = s->bytes[i] - u->off;
        h.len = (uint32_t)(left < p->o.chunk_bytes ? left : p->o.chunk_bytes);
        src = s->data[i] + u->off;
    }
    size_t nl = strlen(name);
    if (nl > WS_NAME_MAX) nl = WS_NAME_MAX;
    h.name_len = (uint16_t)nl;
    int64_t w = rate_wait_ns(p, h.len);
    if (w > 0) {
        if (*wait_ns == 0 || w < *wait_ns) *wait_ns = w;
        return 0;
    }
    /* Written in place, into the ring or the buffer the route sends from. */
    size_t total = sizeof h + nl + h.len;
    uint8_t *buf;
    cr_err_t e = {0};
    int rc = ch_put_reserve(u->prod, total, (void **)&buf, 0, &e);
    if (rc == CR_ETIMEDOUT) return 0;
    if (rc == 0) {
        memcpy(buf, &h, sizeof h);
        memcpy(buf + sizeof h, name, nl);
        if (h.len) memcpy(buf + sizeof h + nl, src, h.len);
        rc = ch_put_commit(u->prod, total, 1.0, &e);
    }
    if (rc) {
        CR_WARN("wsync", "version %llu: chunk not sent: %s", (unsigned long long)s->version, e.msg);
        return rc;
    }
    p->tokens -= h.len;
    atomic_fetch_add(&p->bytes_sent, h.len);
    u->sent_chunks++;
    if (u->nplan) {
        u->off += h.len;
        if (u->off >= s->bytes[u->plan[u->ti]]) {
            u->ti++;
            u->off = 0;
        }
    }
    return 1;
}

/* Takes the newest published snapshot (diffing it against the previous one). */
static void adopt_latest(ch_wsync_pub_t *p)
{
    pthread_mutex_lock(&p->mu);
    snapshot_t *s = p->latest;
    p->latest = NULL;
    snapshot_t *prev = p->current;
    pthread_mutex_unlock(&p->mu);
    if (!s) return;
    snap_diff(s, prev);
    pthread_mutex_lock(&p->mu);
    p->current = s;
    pthread_mutex_unlock(&p->mu);
    snap_unref(p, prev);
}

/* One round over the subscribers; returns whether anything was sent. */
static int pub_round(ch_wsync_pub_t *p, int64_t *wait_ns)
{
    int sent = 0;
    snapshot_t *cur = p->current;
    for (size_t k = 0; k < p->n; k++) {
        sub_state_t *u = &p->subs[k];
        if (u->done_version > u->acked_version && ch_producer_unacked(u->prod) == 0) {
            pthread_mutex_lock(&p->mu);
            u->acked_version = u->done_version;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
        }
        if (!cur || u->done_version >= cur->version) continue;
        if (u->retry_ns && cr_now_ns() < u->retry_ns) continue;
        if (u->snap != cur) {
            if (u->snap) snap_unref(p, u->snap);
            pthread_mutex_lock(&p->mu);
            cur->refs++;
            pthread_mutex_unlock(&p->mu);
            if (plan_start(p, u, cur) < 0) {
                snap_unref(p, cur);
                u->snap = NULL;
                continue;
            }
        }
        int rc = send_chunk(p, u, wait_ns);
        if (rc < 0) {
            u->retry_ns = cr_now_ns() + 100 * CR_NS_PER_MS;
            continue;
        }
        u->retry_ns = 0;
        sent |= rc;
        if (u->sent_chunks == u->nchunks) {
            u->done_version = u->snap->version;
            snap_unref(p, u->snap);
            u->snap = NULL;
        }
    }
    return sent;
}

static void *pub_main(void *arg)
{
    ch_wsync_pub_t *p = arg;
    p->tokens_at = cr_now_ns();
    /* Background work: on a busy node the learner's own threads go first (Linux
     * nice values are per thread). Failing to lower it is harmless. */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) != 0)
        CR_DEBUG("wsync", "publisher thread keeps its priority");
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int stop = p->stop;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        adopt_latest(p);
        int64_t wait_ns = 0;
        if (pub_round(p, &wait_ns)) continue;
        /* Nothing could go: wait for tokens, acks (polled) or a new version. */
        if (wait_ns == 0 || wait_ns > 2 * CR_NS_PER_MS) wait_ns = 2 * CR_NS_PER_MS;
        pthread_mutex_lock(&p->mu);
        if (!p->stop && !p->latest) {
            int64_t dl = cr_now_ns() + wait_ns;
            struct timespec ts = {.tv_sec = dl / CR_NS_PER_S, .tv_nsec = dl % CR_NS_PER_S};
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

int ch_wsync_pub_create(const ch_wsync_opts_t *o, ch_producer_t **subs, size_t n,
                        ch_wsync_pub_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_wsync_pub_t *p = calloc(1, sizeof *p);
    if (!p) return cr_err_set(err, CR_ENOMEM, "wsync: out of memory");
    if (o) p->o = *o;
    if (!p->o.chunk_bytes) p->o.chunk_bytes = 1u << 20;
    if (!p->o.max_inflight) p->o.max_inflight = 4;
    p->subs = calloc(n ? n : 1, sizeof *p->subs);
    if (!p->subs) {
        free(p);
        return cr_err_set(err, CR_ENOMEM, "wsync: out of memory");
    }
    p->n = n;
    for (size_t i = 0; i < n; i++) p->subs[i].prod = subs[i];
    pthread_mutex_init(&p->mu, NULL);
    cond_init_mono(&p->cv);
    if (pthread_create(&p->thread, NULL, pub_main, p) != 0) {
        free(p->subs);
        free(p);
        return cr_err_set(err, CR_EIO, "wsync: cannot start the publisher thread");
    }
    *out = p;
    return 0;
}

void ch_wsync_pub_destroy(ch_wsync_pub_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    for (size_t i = 0; i < p->n; i++) {
        snap_unref(p, p->subs[i].snap);
        free(p->subs[i].plan);
    }
    snap_unref(p, p->latest);
    snap_unref(p, p->current);
    free(p->subs);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int ch_wsync_publish(ch_wsync_pub_t *p, uint64_t version, const ch_tensor_t *t, size_t n,
                     cr_err_t *err)
{
    for (size_t i = 0; i < n; i++)
        if (!t[i].name || strlen(t[i].name) > WS_NAME_MAX || (t[i].bytes && !t[i].data))
            return cr_err_set(err, CR_EINVAL, "wsync: tensor %zu has no name, a name over %d bytes or no data",
                              i, WS_NAME_MAX);
    pthread_mutex_lock(&p->mu);
    uint64_t last = p->last_version;
    pthread_mutex_unlock(&p->mu);
    if (version <= last)
        return cr_err_set(err, CR_EINVAL, "wsync: version %llu is not newer than %llu",
                          (unsigned long long)version, (unsigned long long)last);
    snapshot_t *s = snap_new(version, t, n);
    if (!s) return cr_err_set(err, CR_ENOMEM, "wsync: out of memory for version %llu", (unsigned long long)version);
    pthread_mutex_lock(&p->mu);
    snapshot_t *old = p->latest;
    p->latest = s;
    p->last_version = version;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    snap_unref(p, old);
    return 0;
}

int ch_wsync_pub_wait(ch_wsync_pub_t *p, uint64_t version, int64_t timeout_ms, cr_err_t *err)
{
    int64_t dl = timeout_ms < 0 ? -1 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        size_t behind = 0;
        for (size_t i = 0; i < p->n; i++) behind += p->subs[i].acked_version < version;
        if (!behind) break;
        int rc;
        if (dl < 0) {
            rc = pthread_cond_wait(&p->cv, &p->mu);
        } else {
            struct timespec ts = {.tv_sec = dl / CR_NS_PER_S, .tv_nsec = dl % CR_NS_PER_S};
            rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        if (rc == ETIMEDOUT) {
            pthread_mutex_unlock(&p->mu);
            return cr_err_set(err, CR_ETIMEDOUT, "wsync: %zu of %zu subscribers lack version %llu",
                              behind, p->n, (unsigned long long)version);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return 0;
}

uint64_t ch_wsync_pub_bytes_sent(ch_wsync_pub_t *p) { return atomic_load(&p->bytes_sent); }

/* ---- subscriber ---- */

struct ch_wsync_sub {
    ch_channel_t *c;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    weights_box_t *base;   /* newest complete: the base of the next delta */
    weights_box_t *ready;  /* newest complete, for the actor (same box as base) */
    weights_box_t *asm_;   /* the version being assembled */
    chunk_hdr_t first;     /* header of its first chunk: later ones must agree */
    uint64_t got;          /* chunks received of it */
    _Atomic uint64_t rejected;
};

static void sub_drop_assembly(ch_wsync_sub_t *s)
{
    ch_weights_free(s->asm_ ? &s->asm_->w : NULL);
    s->asm_ = NULL;
    s->got = 0;
}

static int reject(ch_wsync_sub_t *s, const char *why, uint64_t version)
{
    atomic_fetch_add(&s->rejected, 1);
    CR_WARN("wsync", "channel %s: chunk of version %llu refused: %s", ch_channel_name(s->c),
            (unsigned long long)version, why);
    sub_drop_assembly(s);
    return -1;
}

/* Begins assembling the version h announces. */
static int sub_begin(ch_wsync_sub_t *s, const chunk_hdr_t *h)
{
    sub_drop_assembly(s);
    if (h->kind == WS_DELTA) {
        if (!s->base || s->base->w.version != h->base)
            return reject(s, "a delta over a version this actor does not hold", h->version);
        if (s->base->w.n != h->ntensors) return reject(s, "a delta with another tensor count", h->version);
    }
    s->asm_ = weights_new(h->version, h->ntensors);
    if (!s->asm_) return reject(s, "out of memory", h->version);
    s->first = *h;
    return 0;
}

/* Copies the base's tensors that a delta left out, then publishes the version. */
static int sub_complete(ch_wsync_sub_t *s)
{
    ch_weights_t *w = &s->asm_->w;
    for (size_t i = 0; i < w->n; i++) {
        if (w->t[i].name) continue;
        if (s->first.kind != WS_DELTA) return reject(s, "a full version with a tensor missing", w->version);
        const ch_tensor_t *b = &s->base->w.t[i];
        void *d = malloc(b->bytes ? b->bytes : 1);
        char *nm = strdup(b->name);
        if (!d || !nm) {
            free(d);
            free(nm);
            return reject(s, "out of memory", w->version);
        }
        memcpy(d, b->data, b->bytes);
        w->t[i] = (ch_tensor_t){nm, d, b->bytes};
    }
    pthread_mutex_lock(&s->mu);
    weights_box_t *old_base = s->base, *old_ready = s->ready;
    s->base = s->asm_;
    atomic_fetch_add(&s->asm_->refs, 1);
    s->ready = s->asm_;
    s->asm_ = NULL;
    s->got = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    ch_weights_free(old_base ? &old_base->w : NULL);
    ch_weights_free(old_ready ? &old_ready->w : NULL);
    return 0;
}

static int sub_chunk(ch_wsync_sub_t *s, const ch_msg_t *m)
{
    chunk_hdr_t h;
    if (m->len < sizeof h) return reject(s, "shorter than a chunk header", 0);
    memcpy(&h, m->data, sizeof h);
    if (h.magic != WS_MAGIC || (h.kind != WS_FULL && h.kind != WS_DELTA) || h.name_len > WS_NAME_MAX ||
        sizeof h + h.name_len + (size_t)h.len != m->len || h.nchunks == 0)
        return reject(s, "bad header (magic, kind or lengths)", h.version);
    if (s->base && h.version <= s->base->w.version) return 0; /* stale: already have newer */
    if (!s->asm_ || h.version > s->asm_->w.version) {
        if (sub_begin(s, &h) != 0) return -1;
    } else if (h.version < s->asm_->w.version) {
        return 0; /* an abandoned older version */
    }
    const chunk_hdr_t *f = &s->first;
    if (h.kind != f->kind || h.base != f->base || h.ntensors != f->ntensors || h.nchunks != f->nchunks)
        return reject(s, "chunks of one version disagree", h.version);
    ch_weights_t *w = &s->asm_->w;
    if (h.tensor_idx != WS_NONE) {
        const char *name = (const char *)m->data + sizeof h;
        if (h.tensor_idx >= w->n || h.offset > h.tensor_bytes || h.len > h.tensor_bytes - h.offset)
            return reject(s, "tensor index or range out of bounds", h.version);
        ch_tensor_t *t = &w->t[h.tensor_idx];
        if (!t->name) {
            char *nm = strndup(name, h.name_len);
            void *d = malloc(h.tensor_bytes ? h.tensor_bytes : 1);
            if (!nm || !d) {
                free(nm);
                free(d);
                return reject(s, "out of memory", h.version);
            }
            *t = (ch_tensor_t){nm, d, h.tensor_bytes};
        } else if (t->bytes != h.tensor_bytes || strncmp(t->name, name, h.name_len) != 0) {
            return reject(s, "a tensor changed size or name mid-version", h.version);
        }
        memcpy((uint8_t *)t->data + h.offset, (const uint8_t *)m->data + sizeof h + h.name_len, h.len);
    }
    if (++s->got == f->nchunks) return sub_complete(s);
    return 0;
}

static void *sub_main(void *arg)
{
    ch_wsync_sub_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        ch_msg_t *m;
        cr_err_t e = {0};
        int rc = ch_get_view(s->c, &m, 50, &e); /* read in place, copied once into the version */
        if (rc == CR_ETIMEDOUT) continue;
        if (rc) break; /* channel closed */
        sub_chunk(s, m);
        ch_msg_free(m);
    }
    return NULL;
}

int ch_wsync_sub_create(ch_channel_t *c, ch_wsync_sub_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_wsync_sub_t *s = calloc(1, sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "wsync: out of memory");
    s->c = c;
    pthread_mutex_init(&s->mu, NULL);
    cond_init_mono(&s->cv);
    if (pthread_create(&s->thread, NULL, sub_main, s) != 0) {
        free(s);
        return cr_err_set(err, CR_EIO, "wsync: cannot start the subscriber thread");
    }
    *out = s;
    return 0;
}

void ch_wsync_sub_destroy(ch_wsync_sub_t *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    sub_drop_assembly(s);
    ch_weights_free(s->base ? &s->base->w : NULL);
    ch_weights_free(s->ready ? &s->ready->w : NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int ch_wsync_sub_take(ch_wsync_sub_t *s, uint64_t have, ch_weights_t **out)
{
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    weights_box_t *r = s->ready;
    if (r && r->w.version > have) {
        s->ready = NULL;
        *out = &r->w;
    }
    pthread_mutex_unlock(&s->mu);
    return *out != NULL;
}

int ch_wsync_sub_wait(ch_wsync_sub_t *s, uint64_t v, int64_t timeout_ms, cr_err_t *err)
{
    int64_t dl = timeout_ms < 0 ? -1 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&s->mu);
    while (!s->base || s->base->w.version < v) {
        int rc;
        if (dl < 0) {
            rc = pthread_cond_wait(&s->cv, &s->mu);
        } else {
            struct timespec ts = {.tv_sec = dl / CR_NS_PER_S, .tv_nsec = dl % CR_NS_PER_S};
            rc = pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        if (rc == ETIMEDOUT) {
            uint64_t have = s->base ? s->base->w.version : 0;
            pthread_mutex_unlock(&s->mu);
            return cr_err_set(err, CR_ETIMEDOUT, "wsync: version %llu not complete (have %llu)",
                              (unsigned long long)v, (unsigned long long)have);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

uint64_t ch_wsync_sub_rejected(ch_wsync_sub_t *s) { return atomic_load(&s->rejected); }
