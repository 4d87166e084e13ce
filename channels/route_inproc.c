/* route_inproc.c - the in-process route: the producer writes straight into a
 * message of the consumer's queue (a slot of which reserve holds), so a message is
 * acknowledged the moment it is committed. */
#include "channels/internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct inproc {
    ch_channel_t *c;
    ch_msg_t *resv; /* the message being written, between reserve and commit */
} inproc_t;

static int inproc_reserve(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err)
{
    inproc_t *r = p->route;
    r->resv = ch_msg_alloc(len);
    if (!r->resv) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory for %zu bytes", p->name, len);
    int rc = ch_channel_reserve(r->c, deadline_ns, err);
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
    int rc = ch_channel_push_reserved(r->c, m, err);
    return rc == 1 ? 0 : rc;
}

static void inproc_abort(ch_producer_t *p)
{
    inproc_t *r = p->route;
    ch_msg_free(r->resv);
    r->resv = NULL;
    ch_channel_unreserve(r->c);
}

static int inproc_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err) { return 0; }
static size_t inproc_unacked(ch_producer_t *p) { return 0; }

static void inproc_close(ch_producer_t *p)
{
    inproc_t *r = p->route;
    ch_channel_release(r->c);
    free(r);
}

static const ch_route_ops_t inproc_ops = {inproc_reserve, inproc_commit, inproc_abort,
                                          inproc_flush, inproc_unacked, inproc_close, NULL};

int ch_route_inproc_open(ch_producer_t *p, cr_err_t *err)
{
    inproc_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    int rc = ch_channel_acquire(p->hub, p->name, &r->c, err);
    if (rc) {
        free(r);
        return rc;
    }
    p->route = r;
    p->ops = &inproc_ops;
    return 0;
}
