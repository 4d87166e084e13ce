/* route_named.c - a producer of a channel opened by name (ch_producer_open_named):
 * the channel directory says where the channel's replicas are, and this route
 * follows every change of that set, writing through an inner producer that the
 * router picks for the set of the moment: the replica on this node (in-process or
 * shared memory) when there is one, else the one replica plainly (direct or
 * tunnel) when there is one, else every replica (fan-out). The inner producer
 * keeps this producer's id and numbering, so replicas drop duplicates across a
 * change.
 *
 * A change is taken up at the next put (reserve), never in between a reserve and
 * its commit:
 *   - a replica joined or left elsewhere, no replica here: the fan-out adds or
 *     closes the one replica (ch_route_fanout_update); the others carry on;
 *   - a replica appeared on this node, or the set grew from one replica to more or
 *     shrank to one: what is in flight to replicas that stay is flushed first (so
 *     they lose nothing), then puts go the new way;
 *   - the replica here is another process now, or gone: its route is dead, so
 *     what it had not acknowledged is lost with it (ch_producer_flush said so, it
 *     was never acknowledged); puts go to the new one, or to every replica left;
 *   - no replica at all: puts wait (up to their time-out) for one to join.
 * A put that finds the replica here gone (closed, or its process dead) waits for
 * the directory's next set and goes on there. */
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

#define SLICE_MS 100

/* What inner writes to. */
enum { TO_NONE = 0, TO_LOCAL, TO_PLAIN, TO_FANOUT };

typedef struct named {
    ch_dir_watch_t *w;
    uint64_t version;      /* the set (its version, ch_dir_set_t) inner follows */
    ch_producer_t *inner;  /* NULL while the set is empty */
    int to;                /* TO_*: the replica here, the one replica elsewhere, or all */
    char node[CH_NAME_MAX];/* TO_LOCAL, TO_PLAIN: that replica */
    uint64_t process;
    ch_producer_opts_t o;
    ch_dir_set_t set;      /* scratch, large: not on the stack */
} named_t;

/* Whether a put's error means the replica on this node is gone (not the message). */
static int replica_gone(int rc) { return rc == CR_EUNAVAIL || rc == CR_ECLOSED || rc == CR_ENOENT; }

static int64_t ms_left(int64_t deadline_ns)
{
    if (deadline_ns < 0) return -1;
    int64_t left = (deadline_ns - cr_now_ns()) / CR_NS_PER_MS;
    return left < 0 ? 0 : left;
}

static void close_inner(named_t *n)
{
    ch_producer_close(n->inner);
    n->inner = NULL;
    n->to = TO_NONE;
}

/* Whether inner's one replica (TO_LOCAL, TO_PLAIN) is still in the set. */
static int target_in_set(const named_t *n)
{
    for (size_t i = 0; i < n->set.n; i++)
        if (strcmp(n->set.w[i].node, n->node) == 0 && n->set.w[i].process == n->process) return 1;
    return 0;
}

/* Opens inner to `to` (t: its one replica, or NULL for all), numbered from p's
 * next seq. */
static int open_inner(ch_producer_t *p, named_t *n, int to, const ch_where_t *t, cr_err_t *err)
{
    ch_producer_opts_t o = n->o;
    o.id = p->id;
    o.next_seq = p->next_seq;
    int rc = t ? ch_producer_open(p->hub, p->name, t, &o, &n->inner, err)
               : ch_producer_open_replicated(p->hub, p->name, n->set.w, n->set.n, &o, &n->inner, err);
    if (rc) return rc;
    n->to = to;
    snprintf(n->node, sizeof n->node, "%s", t ? t->node : "");
    n->process = t ? t->process : 0;
    p->kind = n->inner->kind;
    CR_INFO("channels", "channel %s: producer %016llx writes %s%s over %s (replica set generation %llu, %zu "
            "replica(s))", p->name, (unsigned long long)p->id,
            to == TO_LOCAL ? "to the replica on this node" : to == TO_PLAIN ? "to the one replica, on node " :
            "to every replica", to == TO_PLAIN ? t->node : "", ch_route_name(p->kind),
            (unsigned long long)n->set.gen, n->set.n);
    return 0;
}

/* Brings inner in line with the directory's newest set. */
static int follow(ch_producer_t *p, named_t *n, int64_t deadline_ns, cr_err_t *err)
{
    if (n->inner && ch_dir_watch_version(n->w) == n->version) return 0;
    ch_dir_watch_get(n->w, &n->set);
    int i = ch_replica_pick(n->set.w, n->set.n, ch_hub_node(p->hub));
    int want = n->set.n == 0 ? TO_NONE : i >= 0 ? TO_LOCAL : n->set.n == 1 ? TO_PLAIN : TO_FANOUT;
    const ch_where_t *t = want == TO_LOCAL ? &n->set.w[i] : want == TO_PLAIN ? &n->set.w[0] : NULL;
    int rc = 0;
    if (n->inner && want == n->to && (!t || (strcmp(t->node, n->node) == 0 && t->process == n->process))) {
        if (want == TO_FANOUT) rc = ch_route_fanout_update(n->inner, n->set.w, n->set.n, err);
    } else {
        /* Switching: the replicas that stay get what is in flight to them first;
         * what a replica that left had not acknowledged goes with it. */
        if (n->to == TO_FANOUT) {
            rc = ch_route_fanout_update(n->inner, n->set.w, n->set.n, err);
            if (rc == 0) rc = ch_producer_flush(n->inner, ms_left(deadline_ns), err);
        } else if (n->to == TO_PLAIN && target_in_set(n)) {
            rc = ch_producer_flush(n->inner, ms_left(deadline_ns), err);
        }
        if (rc == CR_ETIMEDOUT) return rc;
        rc = 0;
        if (n->inner) close_inner(n);
        if (want != TO_NONE) rc = open_inner(p, n, want, t, err);
    }
    if (rc == 0) n->version = n->set.version;
    return rc;
}

static int named_reserve(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err)
{
    named_t *n = p->route;
    for (;;) {
        uint64_t seen = ch_dir_watch_version(n->w);
        int rc = follow(p, n, deadline_ns, err);
        if (rc && replica_gone(rc)) { /* the replica here died and the directory does not know yet */
            if (ch_dir_watch_wait(n->w, seen, deadline_ns, NULL) != 0) return rc;
            continue;
        }
        if (rc) return rc;
        if (!n->inner) { /* no replica: wait for one */
            if (ch_dir_watch_wait(n->w, seen, deadline_ns, err) != 0)
                return cr_err_set(err, CR_ETIMEDOUT, "channel %s: no replica in the directory's set", p->name);
            continue;
        }
        n->inner->next_seq = p->next_seq;
        /* In slices, so a put held up by a replica that left moves on with the set. */
        int64_t slice = ms_left(deadline_ns);
        if (slice < 0 || slice > SLICE_MS) slice = SLICE_MS;
        rc = ch_put_reserve(n->inner, len, buf, slice, err);
        if (rc == CR_ETIMEDOUT && (deadline_ns < 0 || cr_now_ns() < deadline_ns)) continue;
        if (rc == 0 || n->to != TO_LOCAL || !replica_gone(rc)) return rc;
        /* The replica on this node is gone: the directory's next set says where to go. */
        CR_INFO("channels", "channel %s: producer %016llx: the replica on this node is gone; waiting for the "
                "directory's next set", p->name, (unsigned long long)p->id);
        if (ch_dir_watch_version(n->w) == n->version && ch_dir_watch_wait(n->w, n->version, deadline_ns, NULL) != 0)
            return cr_err_set(err, CR_ETIMEDOUT, "channel %s: the replica on this node is gone and the "
                              "directory named no other in time", p->name);
    }
}

static int named_commit(ch_producer_t *p, uint64_t seq, size_t len, double weight, cr_err_t *err)
{
    named_t *n = p->route;
    n->inner->next_seq = seq;
    return ch_put_commit(n->inner, len, weight, err);
}

static void named_abort(ch_producer_t *p)
{
    named_t *n = p->route;
    if (n->inner) ch_put_abort(n->inner);
}

static int named_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err)
{
    named_t *n = p->route;
    if (!n->inner) return 0;
    int rc = ch_producer_flush(n->inner, ms_left(deadline_ns), err);
    atomic_store(&p->refused, ch_producer_refused(n->inner));
    return rc;
}

static size_t named_unacked(ch_producer_t *p)
{
    named_t *n = p->route;
    return n->inner ? ch_producer_unacked(n->inner) : 0;
}

static int64_t named_stalled_ns(ch_producer_t *p)
{
    named_t *n = p->route;
    return n->inner ? ch_producer_stalled_ns(n->inner) : 0;
}

static void named_close(ch_producer_t *p)
{
    named_t *n = p->route;
    ch_producer_close(n->inner);
    free(n);
}

static const ch_route_ops_t named_ops = {named_reserve, named_commit, named_abort, named_flush,
                                         named_unacked, named_close, named_stalled_ns};

int ch_route_named_open(ch_producer_t *p, ch_dir_watch_t *w, const ch_producer_opts_t *o, cr_err_t *err)
{
    named_t *n = calloc(1, sizeof *n);
    if (!n) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    n->w = w;
    if (o) n->o = *o;
    p->route = n;
    p->ops = &named_ops;
    p->kind = CH_ROUTE_FANOUT;
    cr_err_t e = {0}; /* the route of the moment; the first put tries again when this fails */
    if (follow(p, n, cr_now_ns(), &e) == CR_ENOMEM) {
        free(n);
        return cr_err_set(err, CR_ENOMEM, "%s", e.msg);
    }
    return 0;
}
