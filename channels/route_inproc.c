/* route_inproc.c - the in-process route: the producer pushes straight into the
 * consumer's queue, so a message is acknowledged the moment put returns. */
#include "channels/internal.h"

#include <string.h>

static int inproc_put(ch_producer_t *p, uint64_t seq, const void *data, size_t len, double weight,
                      int64_t deadline_ns, cr_err_t *err)
{
    ch_msg_t *m = ch_msg_alloc(len);
    if (!m) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory for %zu bytes", p->name, len);
    m->producer = p->id;
    m->seq = seq;
    m->weight = weight;
    if (len) memcpy(m->data, data, len);
    int rc = ch_channel_push(p->route, m, deadline_ns, err);
    return rc == 1 ? 0 : rc;
}

static int inproc_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err) { return 0; }
static size_t inproc_unacked(ch_producer_t *p) { return 0; }
static void inproc_close(ch_producer_t *p) { ch_channel_release(p->route); }

static const ch_route_ops_t inproc_ops = {inproc_put, inproc_flush, inproc_unacked, inproc_close};

int ch_route_inproc_open(ch_producer_t *p, cr_err_t *err)
{
    ch_channel_t *c;
    int rc = ch_channel_acquire(p->hub, p->name, &c, err);
    if (rc) return rc;
    p->route = c;
    p->ops = &inproc_ops;
    return 0;
}
