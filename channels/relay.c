/* relay.c - the tunnel relay (corral.v1.Relay/Link), hosted by the controller.
 *
 * Every participant of a tunnelled channel dials out to the relay and opens one
 * Link stream; its first frame names it (hello: "h-<hub id>" for a consumer hub,
 * "p-<producer id>" for a producer). Later frames carry a destination; the relay
 * stamps the sender's name as src and forwards the frame on the destination's
 * stream. The relay keeps no messages: when it cannot forward (destination not
 * connected, or too slow for 5 s) it ends the sender's stream with UNAVAILABLE, and
 * when a hub leaves it ends every producer's stream that was sending to it, so they
 * reconnect and resend what was not acknowledged (a producer that leaves ends
 * nothing: hubs only acknowledge to it). It never drops a frame silently
 * inside a live stream, which keeps each producer's order intact.
 *
 * Mounted on the controller's port, the relay is as secure as that port: with
 * mutual TLS only nodes holding a certificate of the cluster's CA reach it (hubs
 * dial with ch_hub_opts_t.relay_rpc). Endpoint names are not tied to certificate
 * names: any admitted node may register any name.
 *
 * Invariant: `eps` holds one entry per registered name, each holding a call
 * reference that on_done gives back. */
#include "channels/relay.h"
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channels/wire.h"
#include "common/log.h"
#include "corral/v1/channel.pb-c.h"

#define FORWARD_WAIT_MS 5000

void ch_rpc_opts(rpc_opts_t *o, size_t max_msg, int64_t backoff_ms);

typedef struct endpoint {
    char name[40];
    char last_dst[40];
    rpc_call_t *call;
    struct endpoint *next;
} endpoint_t;

struct ch_relay {
    pthread_mutex_t mu;
    endpoint_t *eps;
    rpc_server_t *srv;
    rpc_method_t method;
    char addr[64];
};

static endpoint_t *find_name(ch_relay_t *r, const char *name)
{
    for (endpoint_t *e = r->eps; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    return NULL;
}

static endpoint_t *find_call(ch_relay_t *r, rpc_call_t *call)
{
    for (endpoint_t *e = r->eps; e; e = e->next)
        if (e->call == call) return e;
    return NULL;
}

static void do_hello(ch_relay_t *r, rpc_call_t *call, const char *name)
{
    if (strlen(name) >= sizeof ((endpoint_t *)0)->name || name[0] == 0) {
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "relay: endpoint name \"%.40s\" is empty or too long", name);
        return;
    }
    endpoint_t *e = calloc(1, sizeof *e);
    if (!e) {
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, "relay: out of memory");
        return;
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    e->call = call;
    rpc_call_ref(call);
    pthread_mutex_lock(&r->mu);
    endpoint_t *old = find_name(r, name);
    rpc_call_t *old_call = NULL;
    if (old) { /* a reconnect: the newer stream wins */
        old_call = old->call;
        old->call = call;
        free(e);
    } else {
        e->next = r->eps;
        r->eps = e;
    }
    pthread_mutex_unlock(&r->mu);
    if (old_call) {
        rpc_call_finish(old_call, RPC_UNAVAILABLE, "relay: endpoint %s connected again", name);
        rpc_call_unref(old_call);
    }
}

/* Forwards a frame without unpacking it: the frame's bytes go out by reference to
 * the slices they arrived in, behind a new envelope naming the sender. */
static int relay_message(rpc_call_t *call, rpc_bytes_t *msg)
{
    ch_relay_t *r = rpc_call_method(call)->user;
    ch_wire_relay_t f;
    cr_err_t e = {0};
    if (ch_wire_parse_relay(msg, 0, &f, &e) != 0) {
        rpc_bytes_free(msg);
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "relay: %s", e.msg);
        return 0;
    }
    if (f.hello[0]) {
        rpc_bytes_free(msg);
        do_hello(r, call, f.hello);
        return 0;
    }
    char src[40];
    pthread_mutex_lock(&r->mu);
    endpoint_t *me = find_call(r, call);
    if (me) snprintf(src, sizeof src, "%s", me->name);
    pthread_mutex_unlock(&r->mu);
    if (!me) {
        rpc_bytes_free(msg);
        rpc_call_finish(call, RPC_FAILED_PRECONDITION, "relay: the first frame must be hello");
        return 0;
    }
    if (!f.dst[0] || !f.has_frame) {
        rpc_bytes_free(msg);
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "relay: frame from %s has no destination or body", src);
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    me = find_call(r, call);
    if (me) snprintf(me->last_dst, sizeof me->last_dst, "%s", f.dst);
    endpoint_t *to = find_name(r, f.dst);
    rpc_call_t *to_call = to ? to->call : NULL;
    if (to_call) rpc_call_ref(to_call);
    pthread_mutex_unlock(&r->mu);
    if (!to_call) {
        rpc_bytes_free(msg);
        rpc_call_finish(call, RPC_UNAVAILABLE, "relay: endpoint %s is not connected", f.dst);
        return 0;
    }
    uint8_t head[CH_WIRE_HEAD_MAX];
    rpc_out_t *out = rpc_out_create();
    int rc = CR_ENOMEM, may_block = rpc_call_may_block(call);
    if (out) {
        rpc_out_copy(out, head, ch_wire_relay_head(head, src, f.frame_len));
        rpc_out_bytes(out, msg, f.frame_off, f.frame_len);
        rc = rpc_call_send_out(to_call, out, may_block ? FORWARD_WAIT_MS : 0, &e);
    } else {
        cr_err_set(&e, rc, "out of memory");
    }
    rpc_call_unref(to_call);
    if (rc == CR_EBUSY && !may_block) return RPC_RAW_LATER; /* the receiver is behind: wait on the pool */
    rpc_bytes_free(msg); /* the forwarded slices hold their own references */
    if (rc) rpc_call_finish(call, RPC_UNAVAILABLE, "relay: cannot forward to %s: %s", f.dst, e.msg);
    return 0;
}

static void relay_done(rpc_call_t *call, rpc_code_t code)
{
    ch_relay_t *r = rpc_call_method(call)->user;
    rpc_call_t *senders[64];
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    endpoint_t *me = NULL;
    for (endpoint_t **p = &r->eps; *p; p = &(*p)->next) {
        if ((*p)->call == call) {
            me = *p;
            *p = me->next;
            break;
        }
    }
    if (me && strncmp(me->name, "h-", 2) == 0) {
        /* Producers sending to the hub that left must reconnect and resend. A
         * producer that leaves ends nothing: the hubs it wrote to only sent it
         * acknowledgements, and ending a hub's link would cut every other tunnelled
         * producer of that hub for a moment. */
        for (endpoint_t *e = r->eps; e && n < 64; e = e->next) {
            if (strcmp(e->last_dst, me->name) == 0) {
                rpc_call_ref(e->call);
                senders[n++] = e->call;
            }
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (size_t i = 0; i < n; i++) {
        rpc_call_finish(senders[i], RPC_UNAVAILABLE, "relay: endpoint %s left", me->name);
        rpc_call_unref(senders[i]);
    }
    if (me) {
        rpc_call_unref(me->call);
        free(me);
    }
}

void ch_relay_method(ch_relay_t *r, rpc_method_t *out)
{
    *out = (rpc_method_t){.name = "/corral.v1.Relay/Link", .kind = RPC_BIDI,
                          .input = &corral__v1__relay_frame__descriptor,
                          .output = &corral__v1__relay_frame__descriptor, .user = r,
                          .flags = RPC_METHOD_INLINE, .on_raw = relay_message, .on_done = relay_done};
}

int ch_relay_create(const char *listen, ch_relay_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_relay_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "relay: out of memory");
    pthread_mutex_init(&r->mu, NULL);
    ch_relay_method(r, &r->method);
    if (listen) {
        rpc_opts_t o;
        ch_rpc_opts(&o, CH_DEFAULT_MAX_MSG, 100);
        o.pool_threads = 8;
        int rc = rpc_server_create(&r->srv, listen, &o, &r->method, 1, err);
        if (rc == 0) rc = rpc_server_start(r->srv, err);
        if (rc) {
            rpc_server_destroy(r->srv);
            pthread_mutex_destroy(&r->mu);
            free(r);
            return cr_err_wrap(err, "relay on %s", listen);
        }
        ch_listen_addr(listen, NULL, rpc_server_port(r->srv), r->addr, sizeof r->addr);
    }
    *out = r;
    return 0;
}

const char *ch_relay_addr(const ch_relay_t *r) { return r->addr; }

void ch_relay_destroy(ch_relay_t *r)
{
    if (!r) return;
    rpc_server_destroy(r->srv); /* every call's on_done runs: the list empties */
    pthread_mutex_lock(&r->mu);
    while (r->eps) {
        endpoint_t *e = r->eps;
        r->eps = e->next;
        rpc_call_unref(e->call);
        free(e);
    }
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
