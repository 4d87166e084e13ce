/* replica.c - the replica side of a replicated channel: every message this node's
 * producers put is forwarded to every other replica, one thread per peer, through
 * ordinary producers that keep the origin's (producer id, seq), so each replica
 * drops what it already has and the copies crossing nodes are one per replica.
 *
 * A local producer's message is acknowledged only once every live peer has it:
 * each peer holds a reference to the message's copy (ch_fwd_t) from the moment it
 * is queued until the peer acknowledged it, and the last reference runs the
 * producer's acknowledgement. So a replica whose process dies right after a put was
 * acknowledged leaves that message at every other live replica. The local
 * producer's window (the shared-memory ring, or the in-process route's window)
 * keeps many messages in flight, so throughput does not fall to one round trip
 * per message.
 *
 * A peer is LIVE, then maybe GONE: a peer that acknowledges nothing for
 * peer_timeout_ms while messages wait, or refuses the channel, is dropped from the
 * set (its queue and in-flight messages let go, logged once) and never waited for
 * again; a replica that comes back is a new process and is named again by
 * ch_channel_replicate (the channel directory does that: dirclient.c). A peer that
 * refuses one message (too large for it) only skips that message: it is counted
 * (refused), logged, and the peer stays.
 *
 * Invariants, under r->mu: for each live peer, n + reserved is at most max_pending
 * when a reservation is taken (ch_replica_reserve) and every reservation ends in
 * exactly one commit, so a put that got room is forwarded to every peer that was
 * live when it got it; a peer's queue holds messages in the order the channel
 * accepted them, so each origin's seq grows along it; a message is freed, and its
 * producer acknowledged, when the last queue or in-flight list holding it lets go
 * (refs). A peer's producers and in-flight lists belong to its thread. */
#include "channels/internal.h"

#include <errno.h>
#include <stdint.h>
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
    ch_fwd_t **fifo;         /* handed to p and not yet acknowledged, oldest first */
    size_t cap, head, n;
} origin_t;

typedef struct peer {
    ch_replica_t *r;
    char node[CH_NAME_MAX], addr[160];
    ch_where_t where;        /* node and addr point into this struct */
    ch_fwd_t **q;            /* ring of messages to forward, oldest at head */
    size_t cap, head, n, reserved;
    size_t inflight;         /* sent and not yet acknowledged (the thread's count) */
    uint64_t forwarded;      /* acknowledged by the peer */
    uint64_t refused;        /* single messages the peer refused (too large there) */
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
    f->done = NULL;
    f->done_user = NULL;
    f->done_arg = 0;
    f->producer = m->producer;
    f->seq = m->seq;
    f->weight = m->weight;
    f->len = m->len;
    if (m->len) memcpy(f->data, m->data, m->len);
    return f;
}

void ch_fwd_unref(ch_fwd_t *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) != 1) return;
    if (f->done) f->done(f->done_user, f->done_arg); /* every peer has it, or is gone */
    free(f);
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

size_t ch_replica_limit(ch_replica_t *r, char *node, size_t node_len)
{
    size_t limit = SIZE_MAX;
    if (node_len) node[0] = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->npeers; i++) {
        peer_t *p = r->peers[i];
        if (!p->gone && p->where.max_msg && p->where.max_msg < limit) {
            limit = p->where.max_msg;
            snprintf(node, node_len, "%s", p->node);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return limit;
}

void ch_replica_poke(void *arg)
{
    ch_replica_t *r = arg;
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->work);
    pthread_mutex_unlock(&r->mu);
}

/* ---- a peer's thread ---- */

/* Appends f to o's in-flight list with a reference of its own; -1 when out of
 * memory (the message is then let go early: acknowledged before the peer has it). */
static int fifo_push(origin_t *o, ch_fwd_t *f)
{
    if (o->n == o->cap) {
        size_t ncap = o->cap ? 2 * o->cap : 64;
        ch_fwd_t **nq = malloc(ncap * sizeof *nq);
        if (!nq) return -1;
        for (size_t i = 0; i < o->n; i++) nq[i] = o->fifo[(o->head + i) % o->cap];
        free(o->fifo);
        o->fifo = nq;
        o->head = 0;
        o->cap = ncap;
    }
    atomic_fetch_add(&f->refs, 1);
    o->fifo[(o->head + o->n) % o->cap] = f;
    o->n++;
    return 0;
}

static void fifo_pop(origin_t *o)
{
    ch_fwd_unref(o->fifo[o->head]);
    o->fifo[o->head] = NULL;
    o->head = (o->head + 1) % o->cap;
    o->n--;
}

static origin_t *origin_of(peer_t *p, const ch_fwd_t *f, cr_err_t *err)
{
    for (size_t i = 0; i < p->norigins; i++)
        if (p->origins[i].id == f->producer) return &p->origins[i];
    origin_t *no = realloc(p->origins, (p->norigins + 1) * sizeof *no);
    if (!no) {
        cr_err_set(err, CR_ENOMEM, "out of memory");
        return NULL;
    }
    p->origins = no;
    size_t max = ch_channel_max_msg(p->r->c);
    if (p->where.max_msg && p->where.max_msg < max) max = p->where.max_msg;
    ch_producer_opts_t po = {.id = f->producer, .next_seq = f->seq, .max_msg_bytes = max, .window = 128};
    ch_producer_t *prod;
    if (ch_producer_open(p->r->h, ch_channel_name(p->r->c), &p->where, &po, &prod, err) != 0) return NULL;
    prod->on_ack = ch_replica_poke;
    prod->on_ack_user = p->r;
    p->origins[p->norigins] = (origin_t){.id = f->producer, .p = prod};
    return &p->origins[p->norigins++];
}

/* Lets go of what the peer acknowledged (acknowledgements of one producer are
 * cumulative and in order, so the oldest n - unacked of its list are done), which
 * acknowledges those messages to their local producers once no other peer holds
 * them. Returns the messages still in flight; *stalled is the longest any of the
 * peer's producers has waited for an acknowledgement, *refused how many single
 * messages the peer refused. Thread only, r->mu not held. */
static size_t origins_settle(peer_t *p, int64_t *stalled, uint64_t *refused)
{
    size_t inflight = 0;
    *stalled = 0;
    *refused = 0;
    for (size_t i = 0; i < p->norigins; i++) {
        origin_t *o = &p->origins[i];
        size_t unacked = ch_producer_unacked(o->p);
        while (o->n > unacked) fifo_pop(o);
        inflight += o->n;
        int64_t s = ch_producer_stalled_ns(o->p);
        if (s > *stalled) *stalled = s;
        *refused += atomic_load(&o->p->refused);
    }
    return inflight;
}

/* Closes the peer's producers and lets go of everything in flight (the peer is
 * gone or stopped: it is waited for no more). Thread only, r->mu not held. */
static void origins_end(peer_t *p)
{
    for (size_t i = 0; i < p->norigins; i++) {
        ch_producer_close(p->origins[i].p);
        while (p->origins[i].n) fifo_pop(&p->origins[i]);
        free(p->origins[i].fifo);
    }
    free(p->origins);
    p->origins = NULL;
    p->norigins = 0;
}

static void *peer_main(void *arg)
{
    peer_t *p = arg;
    ch_replica_t *r = p->r;
    uint64_t put_total = 0; /* messages handed to the peer's producers */
    uint64_t skipped = 0;   /* refused here before sending (too large for the peer) */
    pthread_mutex_lock(&r->mu);
    while (!p->stop) {
        int64_t timeout_ns = r->o.peer_timeout_ms * CR_NS_PER_MS;
        if (p->gone) {
            if (p->norigins) {
                pthread_mutex_unlock(&r->mu);
                origins_end(p);
                pthread_mutex_lock(&r->mu);
                p->inflight = 0;
                continue;
            }
            wait_until(&r->work, &r->mu, cr_now_ns() + SEND_SLICE_MS * CR_NS_PER_MS);
            continue;
        }
        if (p->n == 0) { /* idle: watch what is in flight */
            pthread_mutex_unlock(&r->mu);
            int64_t stalled;
            uint64_t refused;
            size_t inflight = origins_settle(p, &stalled, &refused);
            pthread_mutex_lock(&r->mu);
            p->inflight = inflight;
            p->forwarded = put_total - inflight - refused;
            p->refused = refused + skipped;
            if (stalled > timeout_ns) {
                mark_gone(p, "no acknowledgement within the peer time-out");
                continue;
            }
            if (p->n == 0 && !p->stop)
                wait_until(&r->work, &r->mu, cr_now_ns() + (inflight ? 10 : SEND_SLICE_MS) * CR_NS_PER_MS);
            continue;
        }
        ch_fwd_t *f = p->q[p->head];
        atomic_fetch_add(&f->refs, 1); /* the thread's own: the queue may let go meanwhile (mark_gone) */
        p->busy = 1;
        pthread_mutex_unlock(&r->mu);
        cr_err_t e = {0};
        origin_t *o = origin_of(p, f, &e);
        int rc = o ? 0 : e.code, sent = 0;
        if (o && f->seq >= o->p->next_seq) { /* else sent already: numbers only grow */
            rc = ch_put_seq(o->p, f->seq, f->data, f->len, f->weight, SEND_SLICE_MS, &e);
            sent = rc == 0;
            if (sent && fifo_push(o, f) != 0)
                CR_WARN("channels", "channel %s: out of memory tracking a message forwarded to node %s; it is "
                        "acknowledged before that node has it", ch_channel_name(r->c), p->node);
        }
        int64_t stalled = 0;
        uint64_t refused = 0;
        size_t inflight = o ? origins_settle(p, &stalled, &refused) : 0;
        pthread_mutex_lock(&r->mu);
        p->busy = 0;
        p->inflight = inflight;
        if (rc == 0) {
            if (p->n && p->q[p->head] == f) q_pop(p);
            put_total += sent;
            p->forwarded = put_total - inflight - refused;
            p->refused = refused + skipped;
            pthread_cond_broadcast(&r->room);
        } else if (rc == CR_ETIMEDOUT) {
            if (stalled > timeout_ns) mark_gone(p, "no acknowledgement within the peer time-out");
        } else if (rc == CR_ETOOBIG || rc == CR_EINVAL) {
            /* About this message, not about the peer: skip it there, keep the peer. */
            CR_WARN("channels", "channel %s: the replica on node %s does not take message %llu of producer "
                    "%016llx: %s", ch_channel_name(r->c), p->node, (unsigned long long)f->seq,
                    (unsigned long long)f->producer, e.msg);
            if (p->n && p->q[p->head] == f) q_pop(p);
            p->refused = refused + ++skipped;
            pthread_cond_broadcast(&r->room);
        } else {
            mark_gone(p, e.msg[0] ? e.msg : "refused");
        }
        ch_fwd_unref(f);
    }
    pthread_mutex_unlock(&r->mu);
    origins_end(p);
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
        for (size_t j = 0; j < n && !keep; j++) {
            keep = strcmp(replicas[j].node, p->node) == 0 && replicas[j].process == p->where.process;
            if (keep) p->where.max_msg = replicas[j].max_msg; /* the limit may be known now */
        }
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
                                .inbound = replicas[j].inbound, .max_msg = replicas[j].max_msg};
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
        out[i].refused = p->refused;
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
