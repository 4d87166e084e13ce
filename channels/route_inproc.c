/* route_inproc.c - the in-process route: the producer writes straight into a
 * message of the consumer's queue (a slot of which reserve holds). A message is
 * acknowledged the moment it is committed, unless the channel is a replica: then
 * only once every live peer replica has it (replica.c), and up to `window`
 * messages may wait for that before put blocks, so the producer keeps its pace.
 *
 * The acknowledgement count lives in its own reference-counted block: peers may
 * acknowledge after the producer was closed. */
#include "channels/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"

typedef struct acks {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t unacked;
    int refs; /* the route's, and one per message waiting */
} acks_t;

typedef struct inproc {
    ch_channel_t *c;
    ch_msg_t *resv; /* the message being written, between reserve and commit */
    acks_t *acks;
} inproc_t;

static void acks_unref_locked(acks_t *a)
{
    if (--a->refs > 0) {
        pthread_mutex_unlock(&a->mu);
        return;
    }
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}

static void acked(void *user, uint64_t arg)
{
    (void)arg;
    acks_t *a = user;
    pthread_mutex_lock(&a->mu);
    a->unacked--;
    pthread_cond_broadcast(&a->cv);
    acks_unref_locked(a);
}

/* Waits until at most `most` messages wait for an acknowledgement. */
static int acks_wait(ch_producer_t *p, acks_t *a, size_t most, int64_t deadline_ns, cr_err_t *err)
{
    pthread_mutex_lock(&a->mu);
    while (a->unacked > most) {
        int rc = 0;
        if (deadline_ns < 0) {
            pthread_cond_wait(&a->cv, &a->mu);
        } else if (cr_now_ns() >= deadline_ns) {
            rc = ETIMEDOUT;
        } else {
            struct timespec ts = {.tv_sec = deadline_ns / CR_NS_PER_S, .tv_nsec = deadline_ns % CR_NS_PER_S};
            rc = pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
        if (rc == ETIMEDOUT && a->unacked > most) {
            size_t n = a->unacked;
            pthread_mutex_unlock(&a->mu);
            return cr_err_set(err, CR_ETIMEDOUT, "channel %s: %zu messages not yet acknowledged by every replica",
                              p->name, n);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static int inproc_reserve(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err)
{
    inproc_t *r = p->route;
    int rc = acks_wait(p, r->acks, p->window - 1, deadline_ns, err);
    if (rc) return rc;
    r->resv = ch_msg_alloc(len);
    if (!r->resv) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory for %zu bytes", p->name, len);
    rc = ch_channel_reserve(r->c, deadline_ns, err);
    if (rc) {
        ch_msg_free(r->resv);
        r->resv = NULL;
        return rc;
    }
    *buf = r->resv->data;
    return 0;
}

static int inproc_commit(ch_producer_t *p, uint64_t seq, size_t len, double weight, cr_err_t *err)
{
    inproc_t *r = p->route;
    ch_msg_t *m = r->resv;
    r->resv = NULL;
    m->producer = p->id;
    m->seq = seq;
    m->weight = weight;
    if (len < m->len) m->len = len;
    pthread_mutex_lock(&r->acks->mu);
    r->acks->unacked++;
    r->acks->refs++;
    pthread_mutex_unlock(&r->acks->mu);
    int rc = ch_channel_push_reserved_acked(r->c, m, acked, r->acks, 0, err);
    return rc == 1 ? 0 : rc;
}

static void inproc_abort(ch_producer_t *p)
{
    inproc_t *r = p->route;
    ch_msg_free(r->resv);
    r->resv = NULL;
    ch_channel_unreserve(r->c);
}

static int inproc_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err)
{
    inproc_t *r = p->route;
    return acks_wait(p, r->acks, 0, deadline_ns, err);
}

static size_t inproc_unacked(ch_producer_t *p)
{
    inproc_t *r = p->route;
    pthread_mutex_lock(&r->acks->mu);
    size_t n = r->acks->unacked;
    pthread_mutex_unlock(&r->acks->mu);
    return n;
}

static void inproc_close(ch_producer_t *p)
{
    inproc_t *r = p->route;
    ch_channel_release(r->c);
    pthread_mutex_lock(&r->acks->mu);
    acks_unref_locked(r->acks);
    free(r);
}

static const ch_route_ops_t inproc_ops = {inproc_reserve, inproc_commit, inproc_abort,
                                          inproc_flush, inproc_unacked, inproc_close, NULL};

int ch_route_inproc_open(ch_producer_t *p, cr_err_t *err)
{
    inproc_t *r = calloc(1, sizeof *r);
    if (r) r->acks = calloc(1, sizeof *r->acks);
    if (!r || !r->acks) {
        free(r);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    }
    int rc = ch_channel_acquire(p->hub, p->name, &r->c, err);
    if (rc) {
        free(r->acks);
        free(r);
        return rc;
    }
    pthread_mutex_init(&r->acks->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->acks->cv, &ca);
    pthread_condattr_destroy(&ca);
    r->acks->refs = 1;
    p->route = r;
    p->ops = &inproc_ops;
    return 0;
}
