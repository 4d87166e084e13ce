/* route_shm.c - the shared-memory route between processes of one node.
 *
 * Consumer side: each channel of a hub with shm on owns a ring in /dev/shm and a
 * drain thread that moves records from the ring into the channel's queue. A record
 * is released from the ring only once the queue took it, so a full queue fills the
 * ring and the writers block: back-pressure crosses the process boundary.
 * Producer side: a message is written into the ring; it counts as acknowledged when
 * the ring's release position passes its end. */
#include "channels/internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

typedef struct shm_export {
    ch_channel_t *c;
    ch_ring_t *ring;
    pthread_t thread;
    atomic_int stop;
} shm_export_t;

void *ch_shm_export_start(ch_hub_t *h, ch_channel_t *c, cr_err_t *err);
void ch_shm_export_stop(void *x);

static void *drain_main(void *arg)
{
    shm_export_t *x = arg;
    while (!atomic_load(&x->stop)) {
        ch_msg_t *m;
        cr_err_t e = {0};
        int rc = ch_ring_read(x->ring, &m, cr_now_ns() + 100 * CR_NS_PER_MS, &e);
        if (rc == CR_ETIMEDOUT) continue;
        if (rc) {
            CR_ERROR("channels", "channel %s: %s", ch_channel_name(x->c), e.msg);
            ch_channel_count_rejected(x->c);
            continue;
        }
        rc = ch_channel_push(x->c, m, -1, &e);
        if (rc == CR_ECLOSED) break;
        if (rc < 0) CR_ERROR("channels", "channel %s: shm message refused: %s", ch_channel_name(x->c), e.msg);
        ch_ring_release(x->ring);
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
    if (ch_ring_create(ch_hub_id(h), ch_channel_name(c), ch_channel_max_msg(c), &x->ring, err) != 0) {
        free(x);
        return NULL;
    }
    if (pthread_create(&x->thread, NULL, drain_main, x) != 0) {
        ch_ring_close(x->ring);
        ch_ring_destroy(x->ring);
        free(x);
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
    ch_ring_destroy(x->ring);
    free(x);
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

static int shm_put(ch_producer_t *p, uint64_t seq, const void *data, size_t len, double weight,
                   int64_t deadline_ns, cr_err_t *err)
{
    shm_route_t *s = p->route;
    uint64_t end;
    int rc = ch_ring_write(s->ring, p->id, seq, weight, data, len, deadline_ns, &end, err);
    if (rc) return cr_err_wrap(err, "channel %s", p->name);
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

static const ch_route_ops_t shm_ops = {shm_put, shm_flush, shm_unacked, shm_close};

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
