/* producer.c - the producer side of a channel: asks the router for a route, numbers
 * messages (producer id, seq) and checks them before the route sees them. The route
 * behind p->ops does the sending; callers never branch on which route it is. */
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/time.h"

static int64_t deadline_of(int64_t timeout_ms)
{
    if (timeout_ms < 0) return -1;
    return cr_now_ns() + timeout_ms * CR_NS_PER_MS;
}

/* A producer object numbered as o says, not yet bound to a route. */
static int producer_new(ch_hub_t *h, const char *name, const ch_producer_opts_t *o, ch_producer_t **out,
                        cr_err_t *err)
{
    *out = NULL;
    if (!h || !name) return cr_err_set(err, CR_EINVAL, "producer: hub and channel name are required");
    if (!cr_name_valid(name)) return cr_err_set(err, CR_EINVAL, "channel name \"%s\" is not valid", name);
    ch_producer_t *p = calloc(1, sizeof *p);
    if (!p) return cr_err_set(err, CR_ENOMEM, "producer %s: out of memory", name);
    p->hub = h;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->id = o && o->id ? o->id : cr_id_new();
    p->next_seq = o && o->next_seq ? o->next_seq : 1;
    p->window = o && o->window ? o->window : CH_DEFAULT_WINDOW;
    p->max_msg = o && o->max_msg_bytes ? o->max_msg_bytes : CH_DEFAULT_MAX_MSG;
    *out = p;
    return 0;
}

int ch_producer_open(ch_hub_t *h, const char *name, const ch_where_t *to,
                     const ch_producer_opts_t *o, ch_producer_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!to || !to->node)
        return cr_err_set(err, CR_EINVAL, "producer: hub, channel name and consumer node are required");
    ch_producer_t *p;
    int rc = producer_new(h, name, o, &p, err);
    if (rc) return rc;
    ch_where_t from;
    ch_hub_where(h, &from);
    p->kind = ch_route_pick(&from, to);
    switch (p->kind) {
    case CH_ROUTE_INPROC: rc = ch_route_inproc_open(p, err); break;
    case CH_ROUTE_SHM: rc = ch_route_shm_open(p, to, err); break;
    default: rc = ch_route_remote_open(p, to, err); break;
    }
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int ch_producer_open_replicated(ch_hub_t *h, const char *name, const ch_where_t *replicas,
                                size_t n, const ch_producer_opts_t *o, ch_producer_t **out,
                                cr_err_t *err)
{
    *out = NULL;
    if (n == 0) return cr_err_set(err, CR_EINVAL, "channel %s has no replica", name ? name : "(null)");
    int i = ch_replica_pick(replicas, n, h ? ch_hub_node(h) : NULL);
    if (i >= 0) return ch_producer_open(h, name, &replicas[i], o, out, err);
    /* No replica here: this producer writes to every one of them itself. */
    ch_producer_t *p;
    int rc = producer_new(h, name, o, &p, err);
    if (rc) return rc;
    p->kind = CH_ROUTE_FANOUT;
    int64_t timeout = o && o->peer_timeout_ms > 0 ? o->peer_timeout_ms : 10000;
    rc = ch_route_fanout_open(p, replicas, n, timeout, o, err);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int ch_producer_open_named(ch_hub_t *h, const char *name, const ch_producer_opts_t *o, int64_t timeout_ms,
                           ch_producer_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_dirclient_t *dc = h ? ch_hub_dir(h) : NULL;
    if (h && !dc)
        return cr_err_set(err, CR_EINVAL, "channel %s: hub of node %s has no channel directory (hub option "
                          "directory)", name ? name : "(null)", ch_hub_node(h));
    ch_producer_t *p;
    int rc = producer_new(h, name, o, &p, err);
    if (rc) return rc;
    ch_dir_watch_t *w;
    rc = ch_dirclient_watch(dc, name, deadline_of(timeout_ms), &w, err);
    if (rc == 0) rc = ch_route_named_open(p, w, o, err);
    if (rc) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void ch_producer_close(ch_producer_t *p)
{
    if (!p) return;
    if (p->has_resv) ch_put_abort(p);
    p->ops->close(p);
    free(p);
}

int ch_put_reserve(ch_producer_t *p, size_t len, void **buf, int64_t timeout_ms, cr_err_t *err)
{
    if (p->has_resv)
        return cr_err_set(err, CR_EINVAL, "channel %s: a reserved message is not committed yet", p->name);
    if (len > p->max_msg)
        return cr_err_set(err, CR_ETOOBIG, "channel %s: message of %zu bytes is over the limit of %zu",
                          p->name, len, p->max_msg);
    int rc = p->ops->reserve(p, len, buf, deadline_of(timeout_ms), err);
    if (rc) return rc;
    p->has_resv = 1;
    p->reserved = len;
    return 0;
}

int ch_put_commit(ch_producer_t *p, size_t len, double weight, cr_err_t *err)
{
    if (!p->has_resv) return cr_err_set(err, CR_EINVAL, "channel %s: nothing reserved to commit", p->name);
    if (len > p->reserved) {
        ch_put_abort(p);
        return cr_err_set(err, CR_EINVAL, "channel %s: commit of %zu bytes, %zu were reserved (dropped)",
                          p->name, len, p->reserved);
    }
    p->has_resv = 0;
    int rc = p->ops->commit(p, p->next_seq, len, weight, err);
    if (rc == 0) p->next_seq++;
    return rc;
}

void ch_put_abort(ch_producer_t *p)
{
    if (!p->has_resv) return;
    p->has_resv = 0;
    p->ops->abort(p);
}

int ch_put(ch_producer_t *p, const void *data, size_t len, double weight, int64_t timeout_ms,
           cr_err_t *err)
{
    if (len && !data) return cr_err_set(err, CR_EINVAL, "channel %s: NULL data", p->name);
    void *buf;
    int rc = ch_put_reserve(p, len, &buf, timeout_ms, err);
    if (rc) return rc;
    if (len) memcpy(buf, data, len);
    return ch_put_commit(p, len, weight, err);
}

int ch_put_seq(ch_producer_t *p, uint64_t seq, const void *data, size_t len, double weight,
               int64_t timeout_ms, cr_err_t *err)
{
    if (seq < p->next_seq) return 0; /* sent already (numbers only grow) */
    p->next_seq = seq;
    return ch_put(p, data, len, weight, timeout_ms, err);
}

int64_t ch_producer_stalled_ns(ch_producer_t *p)
{
    return p->ops->stalled_ns ? p->ops->stalled_ns(p) : 0;
}

int ch_producer_flush(ch_producer_t *p, int64_t timeout_ms, cr_err_t *err)
{
    return p->ops->flush(p, deadline_of(timeout_ms), err);
}

size_t ch_producer_unacked(ch_producer_t *p) { return p->ops->unacked(p); }
ch_route_kind_t ch_producer_route(const ch_producer_t *p) { return p->kind; }
uint64_t ch_producer_id(const ch_producer_t *p) { return p->id; }
uint64_t ch_producer_reconnects(const ch_producer_t *p) { return atomic_load(&((ch_producer_t *)p)->reconnects); }
uint64_t ch_producer_refused(const ch_producer_t *p) { return atomic_load(&((ch_producer_t *)p)->refused); }
