/* route_shm.c - the shared-memory route between processes of one node.
 *
 * Consumer side: each channel of a hub with shm on owns a ring in /dev/shm and a
 * drain thread that moves records from the ring into the channel's queue: small
 * ones as copies, large ones (>= 64 KiB) as views into the ring. ch_get_view hands
 * a view to the consumer, who reads in place, so a message written in place
 * (ch_put_reserve) is never copied at all; ch_get copies it out then. A record is
 * released from the ring only once the queue took its copy, or once its view was
 * freed, and in ring order; so a full queue, or a view kept, fills the ring and
 * the writers block: back-pressure crosses the process boundary. On a replica
 * (replica.c) a record is also held until every live peer replica acknowledged its
 * copy, so the release position passing a message means every replica has it.
 * Producer side: a message is written into the ring; it counts as acknowledged when
 * the ring's release position passes its end. */
#include "channels/internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

/* Messages of at least this size are handed to the consumer as views into the
 * ring (no copy); smaller ones are copied, which costs less than the book-keeping. */
#define VIEW_MIN (64u << 10)


typedef struct pend_rec {
    uint64_t end;  /* ring position just past the record */
    int holds;     /* until copied out (or its view freed), and until every peer
                      replica acknowledged it: released at 0 */
} pend_rec_t;

/* Consumer state of one channel's ring. The ring is released in record order, so
 * `pend` lists the records read and not yet released; the tail advances over the
 * prefix with no holds left. refs: 1 for the channel, 1 per view a caller holds, 1
 * per record waiting for the peer replicas; the last one unmaps the ring (views
 * and peers' acknowledgements may outlive the channel). */
typedef struct shm_export {
    ch_channel_t *c;
    ch_ring_t *ring;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu;
    pend_rec_t *pend;
    size_t first, n, cap;
    int refs;
} shm_export_t;

typedef struct shm_view {
    ch_msg_t m;
    shm_export_t *x;
    uint64_t end;
} shm_view_t;

void *ch_shm_export_start(ch_hub_t *h, ch_channel_t *c, cr_err_t *err);
void ch_shm_export_stop(void *x);

static void export_free(shm_export_t *x)
{
    ch_ring_destroy(x->ring);
    pthread_mutex_destroy(&x->mu);
    free(x->pend);
    free(x);
}

/* Under x->mu: remembers a record read; -1 when out of memory. */
static int pend_add(shm_export_t *x, uint64_t end, int holds)
{
    if (x->n == x->cap) {
        size_t ncap = x->cap ? 2 * x->cap : 64;
        pend_rec_t *p = malloc(ncap * sizeof *p);
        if (!p) return -1;
        for (size_t i = 0; i < x->n; i++) p[i] = x->pend[(x->first + i) % x->cap];
        free(x->pend);
        x->pend = p;
        x->first = 0;
        x->cap = ncap;
    }
    x->pend[(x->first + x->n) % x->cap] = (pend_rec_t){end, holds};
    x->n++;
    return 0;
}

/* Under x->mu: gives back one hold of the record ending at end and releases the
 * prefix of records with none left. */
static void pend_free(shm_export_t *x, uint64_t end)
{
    for (size_t i = 0; i < x->n; i++) {
        pend_rec_t *p = &x->pend[(x->first + i) % x->cap];
        if (p->end == end) {
            if (p->holds > 0) p->holds--;
            break;
        }
    }
    uint64_t tail = 0;
    while (x->n && x->pend[x->first].holds == 0) {
        tail = x->pend[x->first].end;
        x->first = (x->first + 1) % x->cap;
        x->n--;
    }
    if (tail) ch_ring_release_to(x->ring, tail);
}

void ch_shm_view_free(ch_msg_t *m)
{
    shm_view_t *v = (shm_view_t *)m;
    shm_export_t *x = v->x;
    pthread_mutex_lock(&x->mu);
    pend_free(x, v->end);
    int last = --x->refs == 0;
    pthread_mutex_unlock(&x->mu);
    free(v);
    if (last) export_free(x);
}

/* The record as a message: a view into the ring when it is large, else a copy.
 * NULL when out of memory. */
static ch_msg_t *take_record(shm_export_t *x, const ch_ring_rec_t *r)
{
    ch_msg_t *m = NULL;
    int view = r->len >= VIEW_MIN;
    pthread_mutex_lock(&x->mu);
    if (pend_add(x, r->end, 2) == 0) {
        x->refs++; /* for the peers' acknowledgement (peers_acked) */
        if (view) {
            shm_view_t *v = malloc(sizeof *v);
            if (v) {
                v->x = x;
                v->end = r->end;
                m = &v->m;
                m->data = (void *)r->data;
                x->refs++;
            }
        } else {
            m = ch_msg_alloc(r->len);
            if (m) memcpy(m->data, r->data, r->len);
        }
    }
    if (!m) { /* forget the record: it is read again */
        x->n--;
        x->refs--;
    }
    pthread_mutex_unlock(&x->mu);
    if (!m) return NULL;
    m->producer = r->producer;
    m->seq = r->seq;
    m->weight = r->weight;
    m->len = r->len;
    return m;
}

/* The peers' hold on a record: runs once every live peer replica acknowledged it
 * (or at once). May be the last user of the export. */
static void peers_acked(void *user, uint64_t end)
{
    shm_export_t *x = user;
    pthread_mutex_lock(&x->mu);
    pend_free(x, end);
    int last = --x->refs == 0;
    pthread_mutex_unlock(&x->mu);
    if (last) export_free(x);
}

static void *drain_main(void *arg)
{
    shm_export_t *x = arg;
    while (!atomic_load(&x->stop)) {
        ch_ring_rec_t r;
        cr_err_t e = {0};
        int rc = ch_ring_read(x->ring, &r, cr_now_ns() + 100 * CR_NS_PER_MS, &e);
        if (rc == CR_ETIMEDOUT) continue;
        if (rc == CR_ECORRUPT) {
            CR_ERROR("channels", "channel %s: %s", ch_channel_name(x->c), e.msg);
            ch_channel_count_rejected(x->c);
            pthread_mutex_lock(&x->mu);
            if (pend_add(x, r.end, 1) == 0) pend_free(x, r.end);
            pthread_mutex_unlock(&x->mu);
            continue;
        }
        ch_msg_t *m = rc ? NULL : take_record(x, &r);
        if (!m) {
            CR_ERROR("channels", "channel %s: out of memory reading the shm ring", ch_channel_name(x->c));
            cr_sleep_ns(10 * CR_NS_PER_MS); /* the record stays: retried */
            continue;
        }
        int is_view = m->data != (void *)(m + 1);
        /* A view is released when freed; every record also once the peer replicas
         * have it (at once when the channel is not replicated). */
        rc = ch_channel_push_acked(x->c, m, -1, peers_acked, x, r.end, &e);
        if (rc < 0 && rc != CR_ECLOSED)
            CR_ERROR("channels", "channel %s: shm message refused: %s", ch_channel_name(x->c), e.msg);
        if (!is_view) { /* a copy: acknowledged now that the queue took it */
            pthread_mutex_lock(&x->mu);
            pend_free(x, r.end);
            pthread_mutex_unlock(&x->mu);
        }
        if (rc == CR_ECLOSED) break;
    }
    return NULL;
}

void *ch_shm_export_start(ch_hub_t *h, ch_channel_t *c, cr_err_t *err)
{
    shm_export_t *x = calloc(1, sizeof *x);
    if (!x) {
        cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", ch_channel_name(c));
        return NULL;
    }
    x->c = c;
    x->refs = 1;
    pthread_mutex_init(&x->mu, NULL);
    if (ch_ring_create(ch_hub_id(h), ch_channel_name(c), ch_channel_max_msg(c), &x->ring, err) != 0) {
        pthread_mutex_destroy(&x->mu);
        free(x);
        return NULL;
    }
    if (pthread_create(&x->thread, NULL, drain_main, x) != 0) {
        ch_ring_close(x->ring);
        export_free(x);
        cr_err_set(err, CR_EIO, "channel %s: cannot start the shm drain thread", ch_channel_name(c));
        return NULL;
    }
    return x;
}

void ch_shm_export_stop(void *p)
{
    shm_export_t *x = p;
    ch_ring_close(x->ring);
    atomic_store(&x->stop, 1);
    pthread_join(x->thread, NULL);
    pthread_mutex_lock(&x->mu);
    int last = --x->refs == 0;
    pthread_mutex_unlock(&x->mu);
    if (last) export_free(x);
}

/* ---- producer side ---- */

typedef struct shm_route {
    ch_ring_t *ring;
    uint64_t *ends; /* end marks of the last `window` writes, oldest first */
    size_t n, first;
    uint64_t last_end;
} shm_route_t;

/* Forgets writes the consumer has released. */
static void prune(ch_producer_t *p, shm_route_t *s)
{
    uint64_t tail = ch_ring_tail(s->ring);
    while (s->n && s->ends[s->first] <= tail) {
        s->first = (s->first + 1) % p->window;
        s->n--;
    }
}

static int shm_reserve(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err)
{
    shm_route_t *s = p->route;
    int rc = ch_ring_reserve(s->ring, len, deadline_ns, buf, err);
    return rc ? cr_err_wrap(err, "channel %s", p->name) : 0;
}

static void shm_abort(ch_producer_t *p)
{
    shm_route_t *s = p->route;
    ch_ring_abort(s->ring);
}

static int shm_commit(ch_producer_t *p, uint64_t seq, size_t len, double weight, cr_err_t *err)
{
    shm_route_t *s = p->route;
    uint64_t end;
    ch_ring_commit(s->ring, p->id, seq, weight, len, &end);
    prune(p, s);
    if (s->n == p->window) { /* keep the newest marks; the oldest matter least */
        s->first = (s->first + 1) % p->window;
        s->n--;
    }
    s->ends[(s->first + s->n) % p->window] = end;
    s->n++;
    s->last_end = end;
    return 0;
}

static int shm_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err)
{
    shm_route_t *s = p->route;
    while (ch_ring_tail(s->ring) < s->last_end) {
        if (ch_ring_closed(s->ring))
            return cr_err_set(err, CR_EUNAVAIL, "channel %s: the consumer closed or died", p->name);
        if (deadline_ns >= 0 && cr_now_ns() >= deadline_ns)
            return cr_err_set(err, CR_ETIMEDOUT, "channel %s: not all messages consumed", p->name);
        cr_sleep_ns(200 * CR_NS_PER_US);
    }
    return 0;
}

static size_t shm_unacked(ch_producer_t *p)
{
    shm_route_t *s = p->route;
    prune(p, s);
    return s->n;
}

static void shm_close(ch_producer_t *p)
{
    shm_route_t *s = p->route;
    ch_ring_destroy(s->ring);
    free(s->ends);
    free(s);
}

static const ch_route_ops_t shm_ops = {shm_reserve, shm_commit, shm_abort, shm_flush, shm_unacked, shm_close, NULL};

int ch_route_shm_open(ch_producer_t *p, const ch_where_t *to, cr_err_t *err)
{
    shm_route_t *s = calloc(1, sizeof *s);
    if (s) s->ends = calloc(p->window, sizeof *s->ends);
    if (!s || !s->ends) {
        if (s) free(s);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    }
    int rc = ch_ring_attach(to->process, p->name, &s->ring, err);
    if (rc) {
        free(s->ends);
        free(s);
        return rc;
    }
    if (ch_ring_max_msg(s->ring) < p->max_msg) p->max_msg = ch_ring_max_msg(s->ring);
    p->route = s;
    p->ops = &shm_ops;
    return 0;
}
