/* net.c - the consumer side of the routes between nodes, for one hub: a gRPC server
 * for the direct route (corral.v1.Channel/Stream) and an outbound link to the relay
 * (corral.v1.Relay/Link) through which tunnelled frames arrive when this node accepts
 * no inbound connection.
 *
 * Both read each frame as the bytes gRPC received (wire.c finds the small fields),
 * copy its data once into the message the consumer gets, hand it to the channel
 * (ch_channel_push_remote: a replica does not forward what another node sent) and
 * acknowledge it afterwards, so an acknowledgement means "queued". A frame for an
 * unknown channel or malformed is refused to its sender only, with a message
 * naming what was wrong (its stream ends); other streams and channels go on. A
 * message over the channel's size limit is refused alone: an ERROR frame naming
 * its producer and seq, and the stream goes on with the next message. The
 * direct route's handler runs on the server's queue thread while the channel has
 * room (no thread hop per message) and moves to a handler thread when it must
 * wait. Handlers block while a channel is full:
 * that stalls the one stream (the rpc layer reads its next message only after the
 * handler returns), which is the back-pressure a producer sees. */
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/log.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "channels/wire.h"
#include "corral/v1/channel.pb-c.h"

void ch_rpc_opts(rpc_opts_t *o, size_t max_msg, int64_t backoff_ms);

typedef struct ch_net {
    ch_hub_t *h;
    rpc_server_t *srv;
    rpc_method_t method;
    char addr[160];
    /* relay link */
    rpc_channel_t *rch;
    char self[40];
    pthread_t link_thread;
    int link_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, link_dead;
    uint64_t gen;
} ch_net_t;

/* Delivers one DATA frame to its channel, copying its data once, from the bytes
 * gRPC received into the message the consumer gets. 0 when queued or a duplicate,
 * else a CR_E* code with the reason in err. The channel is held only for the
 * call, so a consumer can destroy it while streams stay open (they then get
 * NOT_FOUND). */
static int deliver(ch_hub_t *h, const ch_wire_frame_t *f, const rpc_bytes_t *b, int may_block, cr_err_t *err)
{
    if (f->kind != CORRAL__V1__CH_FRAME__KIND__DATA)
        return cr_err_set(err, CR_EINVAL, "expected a DATA frame, got kind %d", f->kind);
    if (!cr_name_valid(f->channel)) return cr_err_set(err, CR_EINVAL, "frame names no valid channel");
    if (f->producer == 0 || f->seq == 0)
        return cr_err_set(err, CR_EINVAL, "frame for channel %s lacks a producer id or seq", f->channel);
    ch_channel_t *c;
    int rc = ch_channel_acquire(h, f->channel, &c, err);
    if (rc) return rc;
    if (f->data_len > ch_channel_max_msg(c)) {
        ch_channel_count_rejected(c);
        rc = cr_err_set(err, CR_ETOOBIG, "channel %s: message of %zu bytes is over the limit of %zu",
                        f->channel, f->data_len, ch_channel_max_msg(c));
    } else if (!may_block && ch_channel_full(c)) {
        rc = cr_err_set(err, CR_EBUSY, "channel %s is full", f->channel); /* nothing done: later */
    } else if (!ch_channel_seen(c, f->producer, f->seq)) {
        ch_msg_t *m = ch_msg_alloc(f->data_len);
        if (!m) {
            rc = cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", f->channel);
        } else {
            m->producer = f->producer;
            m->seq = f->seq;
            m->weight = f->weight;
            rpc_bytes_read(b, f->data_off, m->data, f->data_len);
            rc = may_block ? ch_channel_push_remote(c, m, -1, err) : ch_channel_try_push_remote(c, m, err);
            if (rc == CR_EBUSY) ch_msg_free(m); /* filled up meanwhile: copied again later */
            if (rc == 1) rc = 0;
        }
    }
    ch_channel_release(c);
    return rc;
}

static void ack_frame(Corral__V1__ChFrame *a, const ch_wire_frame_t *f)
{
    corral__v1__ch_frame__init(a);
    a->kind = CORRAL__V1__CH_FRAME__KIND__ACK;
    a->producer = f->producer;
    a->seq = f->seq;
}

/* Whether a refusal is about the one message (its size), not about the stream. */
static int refuses_message_only(int rc) { return rc == CR_ETOOBIG; }

static void refusal_frame(Corral__V1__ChFrame *a, const ch_wire_frame_t *f, int rc, const char *msg)
{
    corral__v1__ch_frame__init(a);
    a->kind = CORRAL__V1__CH_FRAME__KIND__ERROR;
    a->code = rc;
    a->message = (char *)msg;
    if (refuses_message_only(rc)) { /* names the message: the producer goes on */
        a->producer = f->producer;
        a->seq = f->seq;
    }
}

/* ---- direct route server ---- */

static int srv_message(rpc_call_t *call, rpc_bytes_t *msg)
{
    ch_net_t *n = rpc_call_method(call)->user;
    ch_wire_frame_t f;
    cr_err_t e = {0};
    int rc = ch_wire_parse_frame(msg, 0, rpc_bytes_len(msg), &f, &e);
    if (rc == 0) rc = deliver(n->h, &f, msg, rpc_call_may_block(call), &e);
    if (rc == CR_EBUSY) return RPC_RAW_LATER; /* full: again on a handler thread, which waits */
    rpc_bytes_free(msg);
    Corral__V1__ChFrame a;
    if (rc && refuses_message_only(rc)) {
        CR_WARN("channels", "direct stream from %s: message refused: %s", rpc_call_peer(call)->address, e.msg);
        refusal_frame(&a, &f, rc, e.msg);
        rpc_call_send(call, &a.base, -1, NULL);
        return 0;
    }
    if (rc) {
        CR_WARN("channels", "direct stream from %s refused: %s", rpc_call_peer(call)->address, e.msg);
        rpc_call_fail(call, &e);
        return 0;
    }
    /* Acknowledgements are cumulative: if the queue thread finds the send queue
     * full, the next one covers this message too. */
    ack_frame(&a, &f);
    rpc_call_send(call, &a.base, -1, NULL);
    return 0;
}

static int server_start(ch_net_t *n, const char *listen, const char *advertise, cr_err_t *err)
{
    n->method = (rpc_method_t){.name = "/corral.v1.Channel/Stream", .kind = RPC_BIDI,
                               .input = &corral__v1__ch_frame__descriptor,
                               .output = &corral__v1__ch_frame__descriptor, .user = n,
                               .flags = RPC_METHOD_INLINE, .on_raw = srv_message};
    rpc_opts_t o;
    ch_rpc_opts(&o, CH_DEFAULT_MAX_MSG, 100);
    o.pool_threads = 8; /* a handler blocked on a full channel holds one */
    int rc = rpc_server_create(&n->srv, listen, &o, &n->method, 1, err);
    if (rc == 0) rc = rpc_server_start(n->srv, err);
    if (rc) return cr_err_wrap(err, "hub %s: direct route on %s", ch_hub_node(n->h), listen);
    char host[128];
    snprintf(host, sizeof host, "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon) *colon = 0;
    if (advertise)
        snprintf(host, sizeof host, "%s", advertise);
    else if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0 || host[0] == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    snprintf(n->addr, sizeof n->addr, "%s:%d", host, rpc_server_port(n->srv));
    return 0;
}

/* ---- relay link (tunnel, consumer side) ---- */

typedef struct link_ctx {
    ch_net_t *n;
    uint64_t gen;
    rpc_stream_t *st;
} link_ctx_t;

static void link_reply(link_ctx_t *x, const char *dst, Corral__V1__ChFrame *f)
{
    Corral__V1__RelayFrame rf = CORRAL__V1__RELAY_FRAME__INIT;
    rf.dst = (char *)dst;
    rf.frame = f;
    cr_err_t e = {0};
    /* The callback thread never waits; a lost ack is recovered by the producer's
     * ack time-out and resend (the duplicate is acknowledged again). */
    if (rpc_stream_send(x->st, &rf.base, 0, &e) != 0)
        CR_DEBUG("channels", "relay link: reply to %s not sent: %s", dst, e.msg);
}

static void link_message(rpc_stream_t *st, rpc_bytes_t *msg, void *user)
{
    link_ctx_t *x = user;
    ch_wire_relay_t rf;
    cr_err_t e = {0};
    int rc = ch_wire_parse_relay(msg, 0, &rf, &e);
    if (rc || !rf.has_frame || !rf.src[0]) {
        /* The envelope is the relay's own, so there is no sender to answer. */
        CR_WARN("channels", "relay link: frame ignored: %s", rc ? e.msg : "no sender or body");
        rpc_bytes_free(msg);
        return;
    }
    rc = ch_wire_parse_frame(msg, rf.frame_off, rf.frame_len, &rf.f, &e);
    if (rc == 0) rc = deliver(x->n->h, &rf.f, msg, 1, &e);
    rpc_bytes_free(msg);
    Corral__V1__ChFrame a;
    if (rc) {
        CR_WARN("channels", "tunnelled stream from %s refused: %s", rf.src, e.msg);
        refusal_frame(&a, &rf.f, rc, e.msg);
    } else {
        ack_frame(&a, &rf.f);
    }
    link_reply(x, rf.src, &a);
}

static void link_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    link_ctx_t *x = user;
    pthread_mutex_lock(&x->n->mu);
    if (x->gen == x->n->gen) {
        x->n->link_dead = 1;
        CR_DEBUG("channels", "relay link closed (%s: %s)", rpc_code_name(code), details);
        pthread_cond_broadcast(&x->n->cv);
    }
    pthread_mutex_unlock(&x->n->mu);
}

static void *link_main(void *arg)
{
    ch_net_t *n = arg;
    rpc_backoff_t bo;
    rpc_backoff_init(&bo, (int)ch_hub_reconnect_ms(n->h), 2000);
    pthread_mutex_lock(&n->mu);
    while (!n->stop) {
        link_ctx_t *x = calloc(1, sizeof *x);
        if (!x) break;
        x->n = n;
        x->gen = ++n->gen;
        n->link_dead = 0;
        pthread_mutex_unlock(&n->mu);
        rpc_stream_cbs_t cbs = {.on_raw = link_message, .on_close = link_close, .user = x};
        cr_err_t e = {0};
        /* x->st is set before any callback can send: replies come only after hello. */
        int rc = rpc_stream_open(n->rch, &x->st, "/corral.v1.Relay/Link",
                                 &corral__v1__relay_frame__descriptor, &cbs, 0, &e);
        if (rc == 0) {
            Corral__V1__RelayFrame hello = CORRAL__V1__RELAY_FRAME__INIT;
            hello.hello = n->self;
            rc = rpc_stream_send(x->st, &hello.base, 1000, &e);
        }
        pthread_mutex_lock(&n->mu);
        if (rc == 0) {
            int64_t up_since = cr_now_ns();
            while (!n->stop && !n->link_dead) pthread_cond_wait(&n->cv, &n->mu);
            if (cr_now_ns() - up_since > 2 * CR_NS_PER_S) rpc_backoff_reset(&bo);
        } else {
            CR_DEBUG("channels", "relay link: %s", e.msg);
        }
        int closing = n->stop && !n->link_dead;
        n->gen++;
        pthread_mutex_unlock(&n->mu);
        if (closing && rpc_stream_close_send(x->st, NULL) == 0) rpc_stream_wait(x->st, 1000, NULL, NULL);
        rpc_stream_destroy(x->st);
        free(x);
        if (!n->stop) cr_sleep_ns((int64_t)rpc_backoff_next_ms(&bo) * CR_NS_PER_MS);
        pthread_mutex_lock(&n->mu);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

static int link_start(ch_net_t *n, const char *relay, cr_err_t *err)
{
    snprintf(n->self, sizeof n->self, "h-%016llx", (unsigned long long)ch_hub_id(n->h));
    rpc_opts_t o;
    ch_rpc_opts(&o, CH_DEFAULT_MAX_MSG, ch_hub_reconnect_ms(n->h));
    o.send_queue = 1024; /* acks from the callback thread must not find it full */
    int rc = rpc_channel_create(&n->rch, relay, &o, err);
    if (rc) return cr_err_wrap(err, "hub %s: relay %s", ch_hub_node(n->h), relay);
    if (pthread_create(&n->link_thread, NULL, link_main, n) != 0) {
        rpc_channel_destroy(n->rch);
        n->rch = NULL;
        return cr_err_set(err, CR_EIO, "hub %s: cannot start the relay link thread", ch_hub_node(n->h));
    }
    n->link_started = 1;
    return 0;
}

int ch_net_start(ch_hub_t *h, const char *listen, const char *advertise, const char *relay, void **out,
                 cr_err_t *err)
{
    ch_net_t *n = calloc(1, sizeof *n);
    if (!n) return cr_err_set(err, CR_ENOMEM, "hub: out of memory");
    n->h = h;
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    int rc = 0;
    if (listen) rc = server_start(n, listen, advertise, err);
    if (rc == 0 && relay) rc = link_start(n, relay, err);
    if (rc) {
        rpc_server_destroy(n->srv);
        pthread_mutex_destroy(&n->mu);
        pthread_cond_destroy(&n->cv);
        free(n);
        return rc;
    }
    *out = n;
    return 0;
}

void ch_net_stop(void *p)
{
    ch_net_t *n = p;
    if (n->link_started) {
        pthread_mutex_lock(&n->mu);
        n->stop = 1;
        pthread_cond_broadcast(&n->cv);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->link_thread, NULL); /* it cancels and frees its stream */
        rpc_channel_destroy(n->rch);
    }
    rpc_server_destroy(n->srv);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}

const char *ch_net_addr(void *p)
{
    ch_net_t *n = p;
    return n->srv ? n->addr : "";
}
