/* route_fanout.c - the producer side of a replicated channel for a producer on a
 * node without a replica: every message goes to every replica, through one
 * ordinary producer per replica, all with this producer's id and numbering, so a
 * replica that also gets the message forwarded keeps it once.
 *
 * A replica that acknowledges nothing for the peer time-out while messages wait
 * for it (its node went away), or that refuses the channel, is dropped, with a log
 * line; the others go on. Only when every replica is dropped do puts fail.
 * Writing in place: reserve takes room in every live replica's producer and hands
 * out the first one's buffer; commit copies the bytes into the others, then sends. */
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

#define SLICE_MS 100

typedef struct fanout {
    ch_producer_t **subs; /* NULL once dropped */
    char (*nodes)[CH_NAME_MAX];
    void **bufs;          /* each sub's reserved buffer, or NULL */
    size_t n;
    int first;            /* the sub whose buffer the caller writes into */
    int64_t timeout_ns;
} fanout_t;

static void drop(ch_producer_t *p, fanout_t *f, size_t i, const char *why)
{
    CR_WARN("channels", "channel %s: producer %016llx drops the replica on node %s (%s)", p->name,
            (unsigned long long)p->id, f->nodes[i], why);
    ch_producer_close(f->subs[i]);
    f->subs[i] = NULL;
    f->bufs[i] = NULL;
}

static int none_left(ch_producer_t *p, fanout_t *f, cr_err_t *err)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i]) return 0;
    return cr_err_set(err, CR_EUNAVAIL, "channel %s: no replica is reachable any more", p->name);
}

static void abort_reserved(fanout_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i] && f->bufs[i]) {
            ch_put_abort(f->subs[i]);
            f->bufs[i] = NULL;
        }
    f->first = -1;
}

/* Milliseconds to wait in one slice before the deadline (-1 forever, 0 none). */
static int64_t slice_ms(int64_t deadline_ns)
{
    if (deadline_ns < 0) return SLICE_MS;
    int64_t left = (deadline_ns - cr_now_ns()) / CR_NS_PER_MS;
    return left <= 0 ? 0 : left < SLICE_MS ? left : SLICE_MS;
}

static int fanout_reserve(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err)
{
    fanout_t *f = p->route;
    f->first = -1;
    for (size_t i = 0; i < f->n; i++) {
        while (f->subs[i]) {
            cr_err_t e = {0};
            int rc = ch_put_reserve(f->subs[i], len, &f->bufs[i], slice_ms(deadline_ns), &e);
            if (rc == 0) break;
            if (rc == CR_ETIMEDOUT && ch_producer_stalled_ns(f->subs[i]) > f->timeout_ns) {
                drop(p, f, i, "no acknowledgement within the peer time-out");
            } else if (rc == CR_ETIMEDOUT) {
                if (deadline_ns >= 0 && cr_now_ns() >= deadline_ns) {
                    abort_reserved(f);
                    return cr_err_set(err, CR_ETIMEDOUT, "channel %s: replica on node %s: %s", p->name,
                                      f->nodes[i], e.msg);
                }
            } else if (rc == CR_ETOOBIG || rc == CR_EINVAL || rc == CR_ENOMEM) {
                abort_reserved(f); /* about this message, not about the replica */
                return cr_err_set(err, rc, "%s", e.msg);
            } else {
                drop(p, f, i, e.msg);
            }
        }
        if (f->subs[i] && f->first < 0) f->first = (int)i;
    }
    if (f->first < 0) return none_left(p, f, err);
    *buf = f->bufs[f->first];
    return 0;
}

static int fanout_commit(ch_producer_t *p, uint64_t seq, size_t len, double weight, cr_err_t *err)
{
    fanout_t *f = p->route;
    /* Copies first: once committed, a buffer belongs to its route. */
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i] && f->bufs[i] && (int)i != f->first && len) memcpy(f->bufs[i], f->bufs[f->first], len);
    for (size_t i = 0; i < f->n; i++) {
        if (!f->subs[i] || !f->bufs[i]) continue;
        f->subs[i]->next_seq = seq; /* every replica sees this producer's numbers */
        f->bufs[i] = NULL;
        cr_err_t e = {0};
        if (ch_put_commit(f->subs[i], len, weight, &e) != 0) drop(p, f, i, e.msg);
    }
    f->first = -1;
    return none_left(p, f, err);
}

static void fanout_abort(ch_producer_t *p) { abort_reserved(p->route); }

static int fanout_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err)
{
    fanout_t *f = p->route;
    for (size_t i = 0; i < f->n; i++) {
        while (f->subs[i]) {
            cr_err_t e = {0};
            int rc = ch_producer_flush(f->subs[i], slice_ms(deadline_ns), &e);
            if (rc == 0) break;
            if (rc == CR_ETIMEDOUT && ch_producer_stalled_ns(f->subs[i]) > f->timeout_ns) {
                drop(p, f, i, "no acknowledgement within the peer time-out");
            } else if (rc == CR_ETIMEDOUT) {
                if (deadline_ns >= 0 && cr_now_ns() >= deadline_ns)
                    return cr_err_set(err, CR_ETIMEDOUT, "channel %s: replica on node %s: %s", p->name,
                                      f->nodes[i], e.msg);
            } else {
                drop(p, f, i, e.msg);
            }
        }
    }
    return none_left(p, f, err);
}

static size_t fanout_unacked(ch_producer_t *p)
{
    fanout_t *f = p->route;
    size_t most = 0;
    for (size_t i = 0; i < f->n; i++) {
        size_t u = f->subs[i] ? ch_producer_unacked(f->subs[i]) : 0;
        if (u > most) most = u;
    }
    return most;
}

static int64_t fanout_stalled_ns(ch_producer_t *p)
{
    fanout_t *f = p->route;
    int64_t most = 0;
    for (size_t i = 0; i < f->n; i++) {
        int64_t s = f->subs[i] ? ch_producer_stalled_ns(f->subs[i]) : 0;
        if (s > most) most = s;
    }
    return most;
}

static void fanout_free(fanout_t *f)
{
    for (size_t i = 0; i < f->n; i++) ch_producer_close(f->subs[i]);
    free(f->subs);
    free(f->nodes);
    free(f->bufs);
    free(f);
}

static void fanout_close(ch_producer_t *p) { fanout_free(p->route); }

static const ch_route_ops_t fanout_ops = {fanout_reserve, fanout_commit, fanout_abort, fanout_flush,
                                          fanout_unacked, fanout_close, fanout_stalled_ns};

int ch_route_fanout_open(ch_producer_t *p, const ch_where_t *replicas, size_t n, int64_t peer_timeout_ms,
                         const ch_producer_opts_t *o, cr_err_t *err)
{
    fanout_t *f = calloc(1, sizeof *f);
    if (f) {
        f->subs = calloc(n, sizeof *f->subs);
        f->nodes = calloc(n, sizeof *f->nodes);
        f->bufs = calloc(n, sizeof *f->bufs);
    }
    if (!f || !f->subs || !f->nodes || !f->bufs) {
        if (f) fanout_free(f);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    }
    f->n = n;
    f->first = -1;
    f->timeout_ns = peer_timeout_ms * CR_NS_PER_MS;
    ch_producer_opts_t so = o ? *o : (ch_producer_opts_t){0};
    so.id = p->id;
    so.next_seq = p->next_seq;
    for (size_t i = 0; i < n; i++) {
        int rc = ch_producer_open(p->hub, p->name, &replicas[i], &so, &f->subs[i], err);
        if (rc) {
            fanout_free(f);
            return cr_err_wrap(err, "replica %zu", i);
        }
        snprintf(f->nodes[i], sizeof f->nodes[i], "%s", replicas[i].node);
        if (f->subs[i]->max_msg < p->max_msg) p->max_msg = f->subs[i]->max_msg;
    }
    p->route = f;
    p->ops = &fanout_ops;
    return 0;
}
