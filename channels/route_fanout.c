/* route_fanout.c - the producer side of a replicated channel for a producer on a
 * node without a replica: every message goes to every replica, through one
 * ordinary producer per replica, all with this producer's id and numbering, so a
 * replica that also gets the message forwarded keeps it once.
 *
 * A replica that acknowledges nothing for the peer time-out while messages wait
 * for it (its node went away), or that refuses the channel, is dropped, with a log
 * line; the others go on. Only when every replica is dropped do puts fail. A
 * replica that refuses one message (too large for it) is not dropped: when its
 * limit is known (ch_where_t.max_msg, from the channel directory) put refuses the
 * message at once with CR_ETOOBIG; otherwise the replica's refusal comes back
 * later and ch_producer_flush reports it, naming the message. Either way later
 * messages flow to every replica.
 *
 * The set can change while the producer lives (ch_route_fanout_update, from the
 * channel directory): a replica that joined gets this producer's messages from the
 * next one on, one that left is closed. A dropped replica stays known (by node and
 * process) so an update does not bring it back with a gap in its messages.
 * Writing in place: reserve takes room in every live replica's producer and hands
 * out the first one's buffer; commit copies the bytes into the others, then sends. */
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

#define SLICE_MS 100

typedef struct sub {
    ch_producer_t *p;     /* NULL once dropped */
    char node[CH_NAME_MAX];
    uint64_t process;
    void *buf;            /* its reserved buffer, or NULL */
} sub_t;

typedef struct fanout {
    sub_t *subs;
    size_t n;
    int first;            /* the sub whose buffer the caller writes into */
    int64_t timeout_ns;
    ch_producer_opts_t o; /* what each sub is opened with (id and seq set per open) */
} fanout_t;

static void drop(ch_producer_t *p, fanout_t *f, size_t i, const char *why)
{
    CR_WARN("channels", "channel %s: producer %016llx drops the replica on node %s (%s)", p->name,
            (unsigned long long)p->id, f->subs[i].node, why);
    ch_producer_close(f->subs[i].p);
    f->subs[i].p = NULL;
    f->subs[i].buf = NULL;
}

static int none_left(ch_producer_t *p, fanout_t *f, cr_err_t *err)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i].p) return 0;
    return cr_err_set(err, CR_EUNAVAIL, "channel %s: no replica is reachable any more", p->name);
}

/* Whether a sub's error is about one message, not about the replica. */
static int message_only(int rc) { return rc == CR_ETOOBIG || rc == CR_EINVAL || rc == CR_ENOMEM; }

static void abort_reserved(fanout_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i].p && f->subs[i].buf) {
            ch_put_abort(f->subs[i].p);
            f->subs[i].buf = NULL;
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

/* The outer producer's limit: the smallest of its live subs'. */
static void update_limit(ch_producer_t *p, fanout_t *f)
{
    size_t most = f->o.max_msg_bytes ? f->o.max_msg_bytes : CH_DEFAULT_MAX_MSG;
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i].p && f->subs[i].p->max_msg < most) most = f->subs[i].p->max_msg;
    p->max_msg = most;
}

static int fanout_reserve(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err)
{
    fanout_t *f = p->route;
    f->first = -1;
    for (size_t i = 0; i < f->n; i++) {
        sub_t *s = &f->subs[i];
        while (s->p) {
            cr_err_t e = {0};
            int rc = ch_put_reserve(s->p, len, &s->buf, slice_ms(deadline_ns), &e);
            if (rc == 0) break;
            if (rc == CR_ETIMEDOUT && ch_producer_stalled_ns(s->p) > f->timeout_ns) {
                drop(p, f, i, "no acknowledgement within the peer time-out");
            } else if (rc == CR_ETIMEDOUT) {
                if (deadline_ns >= 0 && cr_now_ns() >= deadline_ns) {
                    abort_reserved(f);
                    return cr_err_set(err, CR_ETIMEDOUT, "channel %s: replica on node %s: %s", p->name, s->node,
                                      e.msg);
                }
            } else if (message_only(rc)) {
                abort_reserved(f); /* about this message, not about the replica */
                return cr_err_set(err, rc, "channel %s: replica on node %s: %s", p->name, s->node, e.msg);
            } else {
                drop(p, f, i, e.msg);
            }
        }
        if (s->p && f->first < 0) f->first = (int)i;
    }
    if (f->first < 0) return none_left(p, f, err);
    *buf = f->subs[f->first].buf;
    return 0;
}

static int fanout_commit(ch_producer_t *p, uint64_t seq, size_t len, double weight, cr_err_t *err)
{
    fanout_t *f = p->route;
    const void *src = f->subs[f->first].buf;
    /* Copies first: once committed, a buffer belongs to its route. */
    for (size_t i = 0; i < f->n; i++)
        if (f->subs[i].p && f->subs[i].buf && (int)i != f->first && len) memcpy(f->subs[i].buf, src, len);
    for (size_t i = 0; i < f->n; i++) {
        sub_t *s = &f->subs[i];
        if (!s->p || !s->buf) continue;
        s->p->next_seq = seq; /* every replica sees this producer's numbers */
        s->buf = NULL;
        cr_err_t e = {0};
        if (ch_put_commit(s->p, len, weight, &e) != 0) drop(p, f, i, e.msg);
    }
    f->first = -1;
    return none_left(p, f, err);
}

static void fanout_abort(ch_producer_t *p) { abort_reserved(p->route); }

static int fanout_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err)
{
    fanout_t *f = p->route;
    int refused = 0;
    for (size_t i = 0; i < f->n; i++) {
        sub_t *s = &f->subs[i];
        while (s->p) {
            cr_err_t e = {0};
            int rc = ch_producer_flush(s->p, slice_ms(deadline_ns), &e);
            if (rc == 0) break;
            if (rc == CR_ETIMEDOUT && ch_producer_stalled_ns(s->p) > f->timeout_ns) {
                drop(p, f, i, "no acknowledgement within the peer time-out");
            } else if (rc == CR_ETIMEDOUT) {
                if (deadline_ns >= 0 && cr_now_ns() >= deadline_ns)
                    return cr_err_set(err, CR_ETIMEDOUT, "channel %s: replica on node %s: %s", p->name, s->node,
                                      e.msg);
            } else if (message_only(rc)) {
                /* A message this replica refused, reported once; the replica stays. */
                if (!refused) refused = cr_err_set(err, rc, "replica on node %s: %s", s->node, e.msg);
            } else {
                drop(p, f, i, e.msg);
            }
        }
    }
    uint64_t most = 0;
    for (size_t i = 0; i < f->n; i++) {
        uint64_t r = f->subs[i].p ? ch_producer_refused(f->subs[i].p) : 0;
        if (r > most) most = r;
    }
    if (most > atomic_load(&p->refused)) atomic_store(&p->refused, most);
    if (refused) return refused;
    return none_left(p, f, err);
}

static size_t fanout_unacked(ch_producer_t *p)
{
    fanout_t *f = p->route;
    size_t most = 0;
    for (size_t i = 0; i < f->n; i++) {
        size_t u = f->subs[i].p ? ch_producer_unacked(f->subs[i].p) : 0;
        if (u > most) most = u;
    }
    return most;
}

static int64_t fanout_stalled_ns(ch_producer_t *p)
{
    fanout_t *f = p->route;
    int64_t most = 0;
    for (size_t i = 0; i < f->n; i++) {
        int64_t s = f->subs[i].p ? ch_producer_stalled_ns(f->subs[i].p) : 0;
        if (s > most) most = s;
    }
    return most;
}

static void fanout_free(fanout_t *f)
{
    for (size_t i = 0; i < f->n; i++) ch_producer_close(f->subs[i].p);
    free(f->subs);
    free(f);
}

static void fanout_close(ch_producer_t *p) { fanout_free(p->route); }

static const ch_route_ops_t fanout_ops = {fanout_reserve, fanout_commit, fanout_abort, fanout_flush,
                                          fanout_unacked, fanout_close, fanout_stalled_ns};

/* Opens the producer of one replica into s, numbered from p's next seq. */
static int sub_open(ch_producer_t *p, fanout_t *f, sub_t *s, const ch_where_t *w, cr_err_t *err)
{
    ch_producer_opts_t so = f->o;
    so.id = p->id;
    so.next_seq = p->next_seq;
    if (w->max_msg && (!so.max_msg_bytes || w->max_msg < so.max_msg_bytes)) so.max_msg_bytes = w->max_msg;
    memset(s, 0, sizeof *s);
    snprintf(s->node, sizeof s->node, "%s", w->node);
    s->process = w->process;
    return ch_producer_open(p->hub, p->name, w, &so, &s->p, err);
}

int ch_route_fanout_open(ch_producer_t *p, const ch_where_t *replicas, size_t n, int64_t peer_timeout_ms,
                         const ch_producer_opts_t *o, cr_err_t *err)
{
    fanout_t *f = calloc(1, sizeof *f);
    if (f) f->subs = calloc(n ? n : 1, sizeof *f->subs);
    if (!f || !f->subs) {
        if (f) fanout_free(f);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    }
    f->first = -1;
    f->timeout_ns = peer_timeout_ms * CR_NS_PER_MS;
    if (o) f->o = *o;
    for (size_t i = 0; i < n; i++) {
        int rc = sub_open(p, f, &f->subs[i], &replicas[i], err);
        if (rc) {
            fanout_free(f);
            return cr_err_wrap(err, "replica %zu", i);
        }
        f->n++;
    }
    update_limit(p, f);
    p->route = f;
    p->ops = &fanout_ops;
    return 0;
}

int ch_route_fanout_update(ch_producer_t *p, const ch_where_t *replicas, size_t n, cr_err_t *err)
{
    fanout_t *f = p->route;
    /* Replicas that left: closed (what they had not acknowledged is theirs to lose). */
    for (size_t i = 0; i < f->n;) {
        int keep = 0;
        for (size_t j = 0; j < n && !keep; j++)
            keep = strcmp(replicas[j].node, f->subs[i].node) == 0 && replicas[j].process == f->subs[i].process;
        if (keep) {
            i++;
            continue;
        }
        if (f->subs[i].p)
            CR_INFO("channels", "channel %s: producer %016llx: the replica on node %s left the set", p->name,
                    (unsigned long long)p->id, f->subs[i].node);
        ch_producer_close(f->subs[i].p);
        f->subs[i] = f->subs[--f->n];
    }
    for (size_t j = 0; j < n; j++) {
        int known = 0;
        for (size_t i = 0; i < f->n && !known; i++)
            known = strcmp(replicas[j].node, f->subs[i].node) == 0 && replicas[j].process == f->subs[i].process;
        if (known) continue;
        sub_t *ns = realloc(f->subs, (f->n + 1) * sizeof *ns);
        if (!ns) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
        f->subs = ns;
        int rc = sub_open(p, f, &f->subs[f->n], &replicas[j], err);
        if (rc) return cr_err_wrap(err, "channel %s: replica on node %s", p->name, replicas[j].node);
        CR_INFO("channels", "channel %s: producer %016llx also writes to the replica on node %s from message %llu on",
                p->name, (unsigned long long)p->id, replicas[j].node, (unsigned long long)p->next_seq);
        f->n++;
    }
    update_limit(p, f);
    return 0;
}
