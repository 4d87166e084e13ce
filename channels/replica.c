/* replica.c - the replica side of a replicated channel: every message this node's
 * producers put is forwarded to every other replica, one thread per peer, through
 * ordinary producers that keep the origin's (producer id, seq), so each replica
 * drops what it already has and the copies crossing nodes are one per replica.
 *
 * A peer is LIVE, then maybe GONE: a peer that acknowledges nothing for
 * peer_timeout_ms while messages wait, or refuses the channel, is dropped from the
 * set (its queue freed, logged once) and never waited for again; a replica that
 * comes back is a new process and is named again by ch_channel_replicate.
 *
 * Invariants, under r->mu: for each live peer, n + reserved is at most max_pending
 * when a reservation is taken (ch_replica_reserve) and every reservation ends in
 * exactly one commit, so a put that got room is forwarded to every peer that was
 * live when it got it; a peer's queue holds messages in the order the channel
 * accepted them, so each origin's seq grows along it; a message is freed when the
 * last queue holding it lets go (refs). A peer's producers belong to its thread. */
#include "channels/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#define DEFAULT_PEER_TIMEOUT_MS 10000
#define DEFAULT_MAX_PENDING 4096
#define SEND_SLICE_MS 100
#define MAX_PEERS 64

typedef struct origin {
    uint64_t id;
    ch_producer_t *p;
} origin_t;

typedef struct peer {
    ch_replica_t *r;
    char node[CH_NAME_MAX], addr[160];
    ch_where_t where;        /* node and addr point into this struct */
    ch_fwd_t **q;            /* ring of messages to forward, oldest at head */
    size_t cap, head, n, reserved;
    size_t inflight;         /* sent and not yet acknowledged (the thread's count) */
    uint64_t forwarded;      /* acknowledged by the peer */
    int busy;                /* the thread is sending the head */
    int gone, stop;
    pthread_t thread;
    origin_t *origins;       /* the thread's own */
    size_t norigins;
} peer_t;

struct ch_replica {
    ch_channel_t *c;
    ch_hub_t *h;
    pthread_mutex_t mu;
    pthread_cond_t room, work;
    peer_t *peers[MAX_PEERS];
    size_t npeers;
    ch_replica_opts_t o;
    int stop, waiters;
};

ch_fwd_t *ch_fwd_new(const ch_msg_t *m)
{
    ch_fwd_t *f = malloc(sizeof *f + (m->len ? m->len : 1));
    if (!f) return NULL;
    atomic_init(&f->refs, 1);
    f->producer = m->producer;
    f->seq = m->seq;
    f->weight = m->weight;
    f->len = m->len;
    if (m->len) memcpy(f->data, m->data, m->len);
    return f;
}

void ch_fwd_unref(ch_fwd_t *f)
{
    if (f && atomic_fetch_sub(&f->refs, 1) == 1) free(f);
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static int wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) return pthread_cond_wait(cv, mu);
    if (deadline_ns == 0 || cr_now_ns() >= deadline_ns) return ETIMEDOUT;
    struct timespec ts = {.tv_sec = deadline_ns / CR_NS_PER_S, .tv_nsec = deadline_ns % CR_NS_PER_S};
    return pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- a peer's queue (under r->mu) ---- */

static int q_push(peer_t *p, ch_fwd_t *f)
{
    if (p->n == p->cap) {
        size_t ncap = p->cap ? 2 * p->cap : 64;
        ch_fwd_t **nq = malloc(ncap * sizeof *nq);
        if (!nq) return -1;
        for (size_t i = 0; i < p->n; i++) nq[i] = p->q[(p->head + i) % p->cap];
        free(p->q);
        p->q = nq;
        p->head = 0;
        p->cap = ncap;
    }
    atomic_fetch_add(&f->refs, 1);
    p->q[(p->head + p->n) % p->cap] = f;
    p->n++;
    return 0;
}

static void q_pop(peer_t *p)
{
    ch_fwd_unref(p->q[p->head]);
    p->q[p->head] = NULL;
    p->head = (p->head + 1) % p->cap;
    p->n--;
}

static void mark_gone(peer_t *p, const char *why)
{
    if (p->gone) return;
    p->gone = 1;
    CR_WARN("channels", "channel %s: replica on node %s dropped from the set (%s); %zu message(s) it had "
            "not acknowledged are not sent to it", ch_channel_name(p->r->c), p->node, why, p->n + p->inflight);
    while (p->n) q_pop(p);
    p->reserved = 0;
    pthread_cond_broadcast(&p->r->room);
}

/* ---- reservations and commits (the channel's puts) ---- */

static int has_room(ch_replica_t *r)
{
    for (size_t i = 0; i < r->npeers; i++) {
        peer_t *p = r->peers[i];
        if (!p->gone && p->n + p->reserved >= r->o.max_pending) return 0;
    }
    return 1;
}

int ch_replica_reserve(ch_replica_t *r, int64_t deadline_ns, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    r->waiters++;
    int rc = 0;
    while (!r->stop && !has_room(r)) {
        if (wait_until(&r->room, &r->mu, deadline_ns) == ETIMEDOUT) {
            rc = cr_err_set(err, CR_ETIMEDOUT, "channel %s: a replica on another node is slow (%zu messages "
                            "waiting to be forwarded)", ch_channel_name(r->c), r->o.max_pending);
            break;
        }
    }
    if (r->stop) rc = cr_err_set(err, CR_ECLOSED, "channel %s is closed", ch_channel_name(r->c));
    if (rc == 0)
        for (size_t i = 0; i < r->npeers; i++)
            if (!r->peers[i]->gone) r->peers[i]->reserved++;
    if (--r->waiters == 0 && r->stop) pthread_cond_broadcast(&r->room);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void ch_replica_commit(ch_replica_t *r, ch_fwd_t *f)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->npeers; i++) {
        peer_t *p = r->peers[i];
        if (p->gone) continue;
        if (p->reserved) p->reserved--;
        if (f && !r->stop && q_push(p, f) != 0) mark_gone(p, "out of memory for its queue");
    }
    pthread_cond_broadcast(&r->work);
    if (!f) pthread_cond_broadcast(&r->room);
    pthread_mutex_unlock(&r->mu);
    ch_fwd_unref(f);
}

/* ---- a peer's thread ---- */

static ch_producer_t *origin_producer(peer_t *p, const ch_fwd_t *f, cr_err_t *err)
{
    for (size_t i = 0; i < p->norigins; i++)
        if (p->origins[i].id == f->producer) return p->origins[i].p;
    origin_t *no = realloc(p->origins, (p->norigins + 1) * sizeof *no);
    if (!no) {
        cr_err_set(err, CR_ENOMEM, "out of memory");
        return NULL;
    }
    p->origins = no;
    ch_producer_opts_t po = {.id = f->producer, .next_seq = f->seq, .max_msg_bytes = ch_channel_max_msg(p->r->c)};
    ch_producer_t *prod;
    if (ch_producer_open(p->r->h, ch_channel_name(p->r->c), &p->where, &po, &prod, err) != 0) return NULL;
    p->origins[p->norigins++] = (origin_t){f->producer, prod};
    return prod;
}

/* The longest any of the peer's producers has waited for an acknowledgement, and
 * how many messages wait. Thread only, r->mu not held. */
static int64_t origins_stalled(peer_t *p, size_t *inflight)
{
    int64_t worst = 0;
    *inflight = 0;
    for (size_t i = 0; i < p->norigins; i++) {
        int64_t s = ch_producer_stalled_ns(p->origins[i].p);
        if (s > worst) worst = s;
        *inflight += ch_producer_unacked(p->origins[i].p);
    }
    return worst;
}

static void *peer_main(void *arg)
{
    peer_t *p = arg;
    ch_replica_t *r = p->r;
    uint64_t put_total = 0; /* messages handed to the peer's producers */
    pthread_mutex_lock(&r->mu);
    while (!p->stop) {
        int64_t timeout_ns = r->o.peer_timeout_ms * CR_NS_PER_MS;
        if (p->gone) {
            wait_until(&r->work, &r->mu, cr_now_ns() + SEND_SLICE_MS * CR_NS_PER_MS);
            continue;
        }
        if (p->n == 0) { /* idle: watch what is in flight */
            pthread_mutex_unlock(&r->mu);
            size_t inflight;
            int64_t stalled = origins_stalled(p, &inflight);
            pthread_mutex_lock(&r->mu);
            p->inflight = inflight;
            p->forwarded = put_total - inflight;
            if (stalled > timeout_ns) {
                mark_gone(p, "no acknowledgement within the peer time-out");
                continue;
            }
            if (p->n == 0 && !p->stop)
                wait_until(&r->work, &r->mu, cr_now_ns() + (inflight ? 10 : SEND_SLICE_MS) * CR_NS_PER_MS);
            continue;
        }
        ch_fwd_t *f = p->q[p->head];
        p->busy = 1;
        pthread_mutex_unlock(&r->mu);
        cr_err_t e = {0};
        ch_producer_t *prod = origin_producer(p, f, &e);
        int rc = prod ? ch_put_seq(prod, f->seq, f->data, f->len, f->weight, SEND_SLICE_MS, &e) : e.code;
        int64_t stalled = 0;
        size_t inflight = 0;
        if (prod) stalled = origins_stalled(p, &inflight);
        pthread_mutex_lock(&r->mu);
        p->busy = 0;
        p->inflight = inflight;
        if (rc == 0) {
            if (p->n && p->q[p->head] == f) q_pop(p);
            put_total++;
            p->forwarded = put_total - inflight;
            pthread_cond_broadcast(&r->room);
        } else if (rc == CR_ETIMEDOUT) {
            if (stalled > timeout_ns) mark_gone(p, "no acknowledgement within the peer time-out");
        } else {
            mark_gone(p, e.msg[0] ? e.msg : "refused");
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < p->norigins; i++) ch_producer_close(p->origins[i].p);
    free(p->origins);
    p->origins = NULL;
    p->norigins = 0;
    return NULL;
}

/* ---- the set ---- */

int ch_replica_create(ch_channel_t *c, ch_hub_t *h, ch_replica_t **out, cr_err_t *err)
{
    ch_replica_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", ch_channel_name(c));
    r->c = c;
    r->h = h;
    r->o.peer_timeout_ms = DEFAULT_PEER_TIMEOUT_MS;
    r->o.max_pending = DEFAULT_MAX_PENDING;
    pthread_mutex_init(&r->mu, NULL);
    cond_init_mono(&r->room);
    cond_init_mono(&r->work);
    *out = r;
    return 0;
}

static void peer_free(peer_t *p)
{
    while (p->n) q_pop(p);
    free(p->q);
    free(p);
}

/* Stops and frees the peers in list; r->mu not held. */
static void peers_end(peer_t **list, size_t n)
{
    for (size_t i = 0; i < n; i++) pthread_join(list[i]->thread, NULL);
    for (size_t i = 0; i < n; i++) peer_free(list[i]);
}

int ch_replica_set(ch_replica_t *r, const ch_where_t *replicas, size_t n, const ch_replica_opts_t *o,
                   cr_err_t *err)
{
    const char *me = ch_hub_node(r->h), *name = ch_channel_name(r->c);
    if (n > MAX_PEERS) return cr_err_set(err, CR_EINVAL, "channel %s: %zu replicas (at most %d)", name, n, MAX_PEERS);
    for (size_t i = 0; i < n; i++) {
        if (!replicas[i].node || !cr_name_valid(replicas[i].node))
            return cr_err_set(err, CR_EINVAL, "channel %s: replica %zu has no valid node name", name, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(replicas[i].node, replicas[j].node) == 0)
                return cr_err_set(err, CR_EINVAL, "channel %s: two replicas on node %s (one per node)", name,
                                  replicas[i].node);
    }
    peer_t *removed[MAX_PEERS];
    size_t nremoved = 0, nadded = 0;
    pthread_mutex_lock(&r->mu);
    if (o && o->peer_timeout_ms > 0) r->o.peer_timeout_ms = o->peer_timeout_ms;
    if (o && o->max_pending > 0) r->o.max_pending = o->max_pending;
    /* Peers not named any more (or named with another process: a new replica). */
    for (size_t i = 0; i < r->npeers;) {
        peer_t *p = r->peers[i];
        int keep = 0;
        for (size_t j = 0; j < n && !keep; j++)
            keep = strcmp(replicas[j].node, p->node) == 0 && replicas[j].process == p->where.process;
        if (keep) {
            i++;
            continue;
        }
        p->stop = 1;
        removed[nremoved++] = p;
        r->peers[i] = r->peers[--r->npeers];
    }
    int rc = 0;
    for (size_t j = 0; j < n && rc == 0; j++) {
        if (strcmp(replicas[j].node, me) == 0) continue;
        int known = 0;
        for (size_t i = 0; i < r->npeers && !known; i++) known = strcmp(r->peers[i]->node, replicas[j].node) == 0;
        if (known) continue;
        peer_t *p = calloc(1, sizeof *p);
        if (!p) {
            rc = cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", name);
            break;
        }
        p->r = r;
        snprintf(p->node, sizeof p->node, "%s", replicas[j].node);
        snprintf(p->addr, sizeof p->addr, "%s", replicas[j].addr ? replicas[j].addr : "");
        p->where = (ch_where_t){.node = p->node, .process = replicas[j].process, .addr = p->addr,
                                .inbound = replicas[j].inbound};
        if (pthread_create(&p->thread, NULL, peer_main, p) != 0) {
            free(p);
            rc = cr_err_set(err, CR_EIO, "channel %s: cannot start a forwarding thread", name);
            break;
        }
        r->peers[r->npeers++] = p;
        nadded++;
    }
    pthread_cond_broadcast(&r->work);
    pthread_cond_broadcast(&r->room);
    pthread_mutex_unlock(&r->mu);
    peers_end(removed, nremoved);
    if (nadded) CR_INFO("channels", "channel %s: replica on %s, forwarding to %zu other node(s)", name, me, r->npeers);
    return rc;
}

size_t ch_replica_stats(ch_replica_t *r, ch_replica_peer_stats_t *out, size_t max)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->npeers;
    for (size_t i = 0; i < n && i < max; i++) {
        peer_t *p = r->peers[i];
        snprintf(out[i].node, sizeof out[i].node, "%s", p->node);
        out[i].forwarded = p->forwarded;
        out[i].pending = p->n + p->inflight;
        out[i].gone = p->gone;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

int ch_replica_flush(ch_replica_t *r, int64_t deadline_ns, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    for (;;) {
        const char *busy = NULL;
        for (size_t i = 0; i < r->npeers && !busy; i++) {
            peer_t *p = r->peers[i];
            if (!p->gone && (p->n || p->busy || p->inflight)) busy = p->node;
        }
        if (!busy) break;
        pthread_cond_broadcast(&r->work);
        if (deadline_ns >= 0 && cr_now_ns() >= deadline_ns) {
            int rc = cr_err_set(err, CR_ETIMEDOUT, "channel %s: the replica on node %s has not acknowledged "
                                "everything yet", ch_channel_name(r->c), busy);
            pthread_mutex_unlock(&r->mu);
            return rc;
        }
        pthread_mutex_unlock(&r->mu);
        cr_sleep_ns(5 * CR_NS_PER_MS);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void ch_replica_stop(ch_replica_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->room);
    while (r->waiters) pthread_cond_wait(&r->room, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

void ch_replica_destroy(ch_replica_t *r)
{
    if (!r) return;
    ch_replica_stop(r);
    pthread_mutex_lock(&r->mu);
    peer_t *list[MAX_PEERS];
    size_t n = r->npeers;
    for (size_t i = 0; i < n; i++) {
        list[i] = r->peers[i];
        list[i]->stop = 1;
    }
    r->npeers = 0;
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->mu);
    peers_end(list, n);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->room);
    pthread_cond_destroy(&r->work);
    free(r);
}
