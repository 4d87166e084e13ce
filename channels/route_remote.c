/* route_remote.c - the producer side of the two routes between nodes: a direct
 * gRPC stream to the consumer's node (corral.v1.Channel/Stream) and the same frames
 * tunnelled through the relay (corral.v1.Relay/Link) when the consumer's node
 * accepts no inbound connection. They differ only in where the stream goes and in
 * the envelope, so one sender serves both. A tunnel dials the relay as its hub's
 * own link does (the node's certificate when the controller serves mutual TLS), and
 * a put or flush that times out there says why the hub cannot reach the relay.
 *
 * State machine of the sender thread (one per producer):
 *   DOWN --open stream--> UP --stream ends / no ack for ACK_TIMEOUT--> DOWN (backoff)
 *   any --consumer refuses the stream (unknown channel, bad frame)--> FAILED
 * A message the consumer refuses on its own (too large for its channel: an ERROR
 * frame naming its seq) is only that message's failure: it counts as answered (it
 * is never resent), ch_producer_flush reports it once, and the stream goes on.
 * Invariants: `pend` holds every message put and not yet acknowledged, in seq order;
 * put blocks while it holds `window` messages; on every (re)connect the sender starts
 * again from the oldest unacknowledged message, so nothing acknowledged is resent
 * needlessly and nothing unacknowledged is lost (the consumer drops duplicates).
 * The stream callbacks only record acks and the end of the stream. Sending is done
 * by the sender thread, or by put itself when the stream is up and idle, one send
 * at a time (`sending`), never while holding the state lock. */
#include "channels/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "channels/wire.h"
#include "corral/v1/channel.pb-c.h"

#define ACK_TIMEOUT_NS (5 * CR_NS_PER_S)
#define SEND_SLICE_MS 100

/* A message's bytes, shared by the pending list (until acknowledged) and gRPC
 * (until written): the route lends them to the rpc layer instead of copying. */
typedef struct rbuf {
    atomic_int refs;
    uint8_t data[];
} rbuf_t;

static rbuf_t *rbuf_new(size_t len)
{
    rbuf_t *b = malloc(sizeof *b + (len ? len : 1));
    if (b) atomic_init(&b->refs, 1);
    return b;
}

static void rbuf_unref(void *u)
{
    rbuf_t *b = u;
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}

typedef struct pend {
    uint64_t seq;
    double weight;
    size_t len;
    rbuf_t *buf;
} pend_t;

typedef struct remote {
    ch_producer_t *p;
    int tunnel;
    char dst[40];       /* tunnel: the consumer hub's endpoint */
    char self[40];      /* tunnel: this producer's endpoint */
    rpc_channel_t *rch;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* stream ends, new messages, all acknowledged (flush) */
    pthread_cond_t room; /* put may go on: the window is half empty, or it failed */
    pend_t *pend;       /* ring of `window` entries */
    size_t first, n;
    uint64_t acked;     /* highest seq acknowledged */
    uint64_t sent_upto; /* highest seq sent on the current stream */
    int64_t last_progress_ns;
    int stream_dead;    /* set by on_close of the current stream */
    int stop;
    int fatal;          /* CR_E* code once the consumer refused the stream */
    char fatal_msg[CR_ERR_MSG_MAX];
    int refused;        /* CR_E* code of a single message refused since the last flush */
    char refused_msg[CR_ERR_MSG_MAX];
    uint64_t gen;       /* stream generation, so callbacks of an old stream are ignored */
    uint64_t sending;   /* seq being sent outside the lock (by the sender thread or
                           by put itself), or 0: one send at a time keeps the order */
    rpc_stream_t *live; /* the current stream while put may send on it, else NULL */
    rbuf_t *resv;       /* the message being written between reserve and commit */
} remote_t;

typedef struct stream_ctx {
    remote_t *r;
    uint64_t gen;
} stream_ctx_t;

static int64_t now(void) { return cr_now_ns(); }

static int timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) return pthread_cond_wait(cv, mu);
    if (now() >= deadline_ns) return ETIMEDOUT;
    struct timespec ts = {.tv_sec = deadline_ns / CR_NS_PER_S, .tv_nsec = deadline_ns % CR_NS_PER_S};
    return pthread_cond_timedwait(cv, mu, &ts);
}

static int is_fatal(rpc_code_t code)
{
    return code == RPC_NOT_FOUND || code == RPC_RESOURCE_EXHAUSTED || code == RPC_INVALID_ARGUMENT ||
           code == RPC_PERMISSION_DENIED || code == RPC_UNAUTHENTICATED || code == RPC_UNIMPLEMENTED;
}

/* Under r->mu: frees acknowledged messages, except one the sender is sending. */
static void gc(remote_t *r)
{
    while (r->n && r->pend[r->first].seq <= r->acked && r->pend[r->first].seq != r->sending) {
        rbuf_unref(r->pend[r->first].buf);
        r->pend[r->first].buf = NULL;
        r->first = (r->first + 1) % r->p->window;
        r->n--;
    }
}

/* Under r->mu: wakes a put waiting for room once the window is half empty (not
 * at every acknowledgement: one wake-up per half window instead of per message),
 * or when the route failed or closes. */
static void wake_room(remote_t *r)
{
    if (r->n <= r->p->window / 2 || r->fatal || r->stop) pthread_cond_broadcast(&r->room);
}

/* Under r->mu: records an acknowledgement of every seq <= seq. */
static void note_ack(remote_t *r, uint64_t seq)
{
    if (seq <= r->acked) return;
    r->acked = seq;
    gc(r);
    r->last_progress_ns = now();
    wake_room(r);
    if (r->n == 0) pthread_cond_broadcast(&r->cv); /* flush */
    if (r->p->on_ack) r->p->on_ack(r->p->on_ack_user);
}

/* Under r->mu: the consumer refused message seq alone; the stream goes on. */
static void note_refused(remote_t *r, uint64_t seq, int code, const char *msg)
{
    atomic_fetch_add(&r->p->refused, 1);
    CR_WARN("channels", "channel %s: the consumer refused message %llu of producer %016llx: %s", r->p->name,
            (unsigned long long)seq, (unsigned long long)r->p->id, msg);
    if (!r->refused) {
        r->refused = code;
        snprintf(r->refused_msg, sizeof r->refused_msg, "channel %s: message %llu refused by the consumer: %s",
                 r->p->name, (unsigned long long)seq, msg);
    }
    if (seq > r->acked) note_ack(r, seq); /* answered: never resent */
}

static void set_fatal(remote_t *r, int code, const char *msg)
{
    if (!r->fatal) {
        r->fatal = code ? code : CR_EPROTO;
        snprintf(r->fatal_msg, sizeof r->fatal_msg, "channel %s: %s", r->p->name, msg);
        CR_ERROR("channels", "%s", r->fatal_msg);
    }
    pthread_cond_broadcast(&r->cv);
    wake_room(r);
}

static void on_frame(remote_t *r, uint64_t gen, const Corral__V1__ChFrame *f)
{
    pthread_mutex_lock(&r->mu);
    if (gen == r->gen && f) {
        if (f->kind == CORRAL__V1__CH_FRAME__KIND__ACK && f->producer == r->p->id)
            note_ack(r, f->seq);
        else if (f->kind == CORRAL__V1__CH_FRAME__KIND__ERROR && f->seq && f->producer == r->p->id)
            note_refused(r, f->seq, f->code < 0 ? f->code : CR_EPROTO, f->message ? f->message : "refused");
        else if (f->kind == CORRAL__V1__CH_FRAME__KIND__ERROR)
            set_fatal(r, f->code < 0 ? f->code : CR_EPROTO, f->message ? f->message : "refused");
    }
    pthread_mutex_unlock(&r->mu);
}

static void on_message(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    stream_ctx_t *x = user;
    if (x->r->tunnel) {
        const Corral__V1__RelayFrame *rf = (const Corral__V1__RelayFrame *)msg;
        on_frame(x->r, x->gen, rf->frame);
    } else {
        on_frame(x->r, x->gen, (const Corral__V1__ChFrame *)msg);
    }
}

static void on_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    stream_ctx_t *x = user;
    remote_t *r = x->r;
    pthread_mutex_lock(&r->mu);
    if (x->gen == r->gen) {
        r->stream_dead = 1;
        if (is_fatal(code)) {
            char m[CR_ERR_MSG_MAX];
            snprintf(m, sizeof m, "%s: %s", rpc_code_name(code), details);
            set_fatal(r, rpc_code_to_err(code), m);
        } else {
            CR_DEBUG("channels", "channel %s: stream ended (%s: %s); reconnecting", r->p->name,
                     rpc_code_name(code), details);
        }
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

/* Sends one DATA frame (wrapped for the relay on the tunnel): a few header bytes,
 * then the message's own buffer, lent to gRPC rather than copied. */
static int send_data(remote_t *r, rpc_stream_t *st, const pend_t *e, cr_err_t *err, int64_t wait_ms)
{
    uint8_t head[CH_WIRE_HEAD_MAX];
    size_t n = ch_wire_data_head(head, r->tunnel ? r->dst : NULL, r->p->name, r->p->id, e->seq, e->weight, e->len);
    rpc_out_t *o = rpc_out_create();
    if (!o) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", r->p->name);
    rpc_out_copy(o, head, n);
    atomic_fetch_add(&e->buf->refs, 1); /* gRPC's, given back by rbuf_unref */
    rpc_out_ref(o, e->buf->data, e->len, rbuf_unref, e->buf);
    return rpc_stream_send_out(st, o, wait_ms, err);
}

static rpc_stream_t *open_stream(remote_t *r, stream_ctx_t *ctx, cr_err_t *err)
{
    rpc_stream_cbs_t cbs = {.on_message = on_message, .on_close = on_close, .user = ctx};
    rpc_stream_t *st = NULL;
    const char *method = r->tunnel ? "/corral.v1.Relay/Link" : "/corral.v1.Channel/Stream";
    const ProtobufCMessageDescriptor *d =
        r->tunnel ? &corral__v1__relay_frame__descriptor : &corral__v1__ch_frame__descriptor;
    if (rpc_stream_open(r->rch, &st, method, d, &cbs, 0, err) != 0) return NULL;
    if (r->tunnel) {
        Corral__V1__RelayFrame hello = CORRAL__V1__RELAY_FRAME__INIT;
        hello.hello = r->self;
        if (rpc_stream_send(st, &hello.base, 1000, err) != 0) {
            rpc_stream_destroy(st);
            return NULL;
        }
    }
    return st;
}

/* Under r->mu: the oldest pending message not yet sent on this stream, or NULL. */
static pend_t *next_unsent(remote_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        pend_t *e = &r->pend[(r->first + i) % r->p->window];
        if (e->seq > r->sent_upto) return e;
    }
    return NULL;
}

/* Under r->mu: the bookkeeping after a send of seq returned rc. */
static void after_send(remote_t *r, uint64_t seq, int rc, const cr_err_t *err)
{
    r->sending = 0;
    gc(r);
    wake_room(r);
    if (rc == 0) {
        r->sent_upto = seq;
    } else if (rc == CR_ETOOBIG) {
        set_fatal(r, rc, err->msg);
    } else if (rc != CR_EBUSY && rc != CR_ETIMEDOUT) {
        r->stream_dead = 1;
    }
    pthread_cond_broadcast(&r->cv);
}

/* Under r->mu: takes the stream away from put and waits until no send uses it. */
static void retire_stream(remote_t *r)
{
    r->live = NULL;
    r->gen++;
    while (r->sending) timed_wait(&r->cv, &r->mu, now() + 10 * CR_NS_PER_MS);
}

/* Sleeps ms (a back-off) unless the producer is closed meanwhile. r->mu not held. */
static void nap(remote_t *r, int ms)
{
    int64_t dl = now() + (int64_t)ms * CR_NS_PER_MS;
    pthread_mutex_lock(&r->mu);
    while (!r->stop && timed_wait(&r->cv, &r->mu, dl) != ETIMEDOUT) {}
    pthread_mutex_unlock(&r->mu);
}

static void *sender_main(void *arg)
{
    remote_t *r = arg;
    rpc_backoff_t bo;
    int64_t first = ch_hub_reconnect_ms(r->p->hub);
    rpc_backoff_init(&bo, (int)first, 2000);
    rpc_stream_t *st = NULL;
    stream_ctx_t *ctx = NULL;
    int connected_once = 0;
    uint64_t acked_at_connect = 0;
    pthread_mutex_lock(&r->mu);
    while (!r->stop && !r->fatal) {
        if (st && (r->stream_dead ||
                   (r->n && r->sent_upto >= r->pend[(r->first + r->n - 1) % r->p->window].seq &&
                    now() - r->last_progress_ns > ACK_TIMEOUT_NS))) {
            retire_stream(r);
            pthread_mutex_unlock(&r->mu);
            rpc_stream_destroy(st);
            free(ctx);
            st = NULL;
            ctx = NULL;
            nap(r, rpc_backoff_next_ms(&bo));
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (!st) {
            uint64_t gen = ++r->gen;
            r->stream_dead = 0;
            pthread_mutex_unlock(&r->mu);
            cr_err_t e = {0};
            ctx = malloc(sizeof *ctx);
            if (ctx) *ctx = (stream_ctx_t){r, gen};
            st = ctx ? open_stream(r, ctx, &e) : NULL;
            if (!st) {
                free(ctx);
                ctx = NULL;
                CR_DEBUG("channels", "channel %s: cannot open stream: %s", r->p->name, e.msg);
                nap(r, rpc_backoff_next_ms(&bo));
                pthread_mutex_lock(&r->mu);
                continue;
            }
            pthread_mutex_lock(&r->mu);
            if (connected_once) atomic_fetch_add(&r->p->reconnects, 1);
            connected_once = 1;
            r->sent_upto = r->acked; /* resend everything not acknowledged */
            acked_at_connect = r->acked;
            r->last_progress_ns = now();
            r->live = st;
            continue;
        }
        if (r->acked != acked_at_connect) { /* the consumer answers: a good stream */
            acked_at_connect = r->acked;
            rpc_backoff_reset(&bo);
        }
        pend_t *e = r->sending ? NULL : next_unsent(r);
        if (!e) {
            timed_wait(&r->cv, &r->mu, now() + SEND_SLICE_MS * CR_NS_PER_MS);
            continue;
        }
        pend_t copy = *e;
        r->sending = copy.seq; /* keeps gc off its data while unlocked */
        pthread_mutex_unlock(&r->mu);
        cr_err_t err = {0};
        int rc = send_data(r, st, &copy, &err, SEND_SLICE_MS);
        pthread_mutex_lock(&r->mu);
        after_send(r, copy.seq, rc, &err);
    }
    if (st) retire_stream(r);
    pthread_mutex_unlock(&r->mu);
    if (st) {
        /* A clean goodbye (half-close, then the server's OK) rather than a cancel. */
        if (rpc_stream_close_send(st, NULL) == 0) rpc_stream_wait(st, 1000, NULL, NULL);
        rpc_stream_destroy(st);
    }
    free(ctx);
    return NULL;
}

/* Why acknowledgements may not come, for a time-out's message: a tunnel whose hub
 * cannot reach the relay says why (a refused certificate, nothing listening). */
static const char *unreached(remote_t *r, char *buf, size_t n)
{
    buf[0] = 0;
    if (r->tunnel) ch_hub_relay_error(r->p->hub, buf, n);
    if (!buf[0]) snprintf(buf, n, "consumer slow or unreachable");
    return buf;
}

static int remote_reserve(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err)
{
    remote_t *r = p->route;
    pthread_mutex_lock(&r->mu);
    while (!r->fatal && r->n == p->window) {
        if (timed_wait(&r->room, &r->mu, deadline_ns) == ETIMEDOUT) {
            if (!r->fatal && r->n < p->window) break; /* room came, short of the wake-up mark */
            pthread_mutex_unlock(&r->mu);
            char why[CR_ERR_MSG_MAX];
            return cr_err_set(err, CR_ETIMEDOUT, "channel %s: %zu messages unacknowledged (%s)", p->name,
                              p->window, unreached(r, why, sizeof why));
        }
    }
    int code = r->fatal;
    pthread_mutex_unlock(&r->mu);
    if (code) return cr_err_set(err, code, "%s", r->fatal_msg);
    /* Only this producer's thread adds to pend: the room stays until commit. */
    r->resv = rbuf_new(len);
    if (!r->resv) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory for %zu bytes", p->name, len);
    *buf = r->resv->data;
    return 0;
}

static void remote_abort(ch_producer_t *p)
{
    remote_t *r = p->route;
    rbuf_unref(r->resv);
    r->resv = NULL;
}

static int remote_commit(ch_producer_t *p, uint64_t seq, size_t len, double weight, cr_err_t *err)
{
    remote_t *r = p->route;
    pend_t e = {seq, weight, len, r->resv};
    r->resv = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->fatal) {
        int code = r->fatal;
        pthread_mutex_unlock(&r->mu);
        rbuf_unref(e.buf);
        return cr_err_set(err, code, "%s", r->fatal_msg);
    }
    if (r->n == 0) r->last_progress_ns = now();
    r->pend[(r->first + r->n) % p->window] = e;
    r->n++;
    /* When the stream is up and idle, send from this thread (one hop less); never
     * wait here for room in the stream: the sender thread retries. */
    if (r->live && !r->sending && !r->stream_dead && r->sent_upto == seq - 1) {
        rpc_stream_t *st = r->live;
        r->sending = seq;
        pthread_mutex_unlock(&r->mu);
        cr_err_t se = {0};
        int rc = send_data(r, st, &e, &se, 0);
        pthread_mutex_lock(&r->mu);
        after_send(r, seq, rc, &se);
    } else {
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static int remote_flush(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err)
{
    remote_t *r = p->route;
    pthread_mutex_lock(&r->mu);
    while (!r->fatal && r->n) {
        if (timed_wait(&r->cv, &r->mu, deadline_ns) == ETIMEDOUT) {
            size_t n = r->n;
            pthread_mutex_unlock(&r->mu);
            char why[CR_ERR_MSG_MAX];
            return cr_err_set(err, CR_ETIMEDOUT, "channel %s: %zu messages still unacknowledged (%s)", p->name, n,
                              unreached(r, why, sizeof why));
        }
    }
    int code = r->fatal;
    if (code) {
        pthread_mutex_unlock(&r->mu);
        return cr_err_set(err, code, "%s", r->fatal_msg);
    }
    code = r->refused; /* reported once */
    if (code) cr_err_set(err, code, "%s", r->refused_msg);
    r->refused = 0;
    pthread_mutex_unlock(&r->mu);
    return code;
}

static size_t remote_unacked(ch_producer_t *p)
{
    remote_t *r = p->route;
    pthread_mutex_lock(&r->mu);
    size_t n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void remote_close(ch_producer_t *p)
{
    remote_t *r = p->route;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->cv);
    wake_room(r);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    rpc_channel_destroy(r->rch);
    for (size_t i = 0; i < r->n; i++) rbuf_unref(r->pend[(r->first + i) % p->window].buf);
    rbuf_unref(r->resv);
    free(r->pend);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->room);
    free(r);
}

static int64_t remote_stalled_ns(ch_producer_t *p)
{
    remote_t *r = p->route;
    pthread_mutex_lock(&r->mu);
    int64_t s = r->n ? now() - r->last_progress_ns : 0;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static const ch_route_ops_t remote_ops = {remote_reserve, remote_commit, remote_abort, remote_flush,
                                          remote_unacked, remote_close, remote_stalled_ns};

/* Options for every data-plane rpc channel: room for the largest message plus the
 * frame around it, fast reconnects, keepalive on (a dead peer shows in ~2 s), and
 * bulk flow control (fixed large windows; common/rpc/conn.c says why). */
void ch_rpc_opts(rpc_opts_t *o, size_t max_msg, int64_t backoff_ms)
{
    memset(o, 0, sizeof *o);
    o->max_message = max_msg + 4096;
    if (o->max_message < RPC_DEFAULT_MAX_MESSAGE) o->max_message = RPC_DEFAULT_MAX_MESSAGE;
    o->backoff_initial_ms = (int)backoff_ms;
    o->backoff_max_ms = 2000;
    o->send_queue = 32;
    o->bulk = 1;
}

int ch_route_remote_open(ch_producer_t *p, const ch_where_t *to, cr_err_t *err)
{
    remote_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    r->p = p;
    r->tunnel = p->kind == CH_ROUTE_TUNNEL;
    const char *target = to->addr;
    if (r->tunnel) {
        target = ch_hub_relay(p->hub);
        if (!target)
            return free(r), cr_err_set(err, CR_EUNAVAIL, "channel %s: node %s accepts no inbound "
                                       "connection and this hub has no relay", p->name, to->node);
        snprintf(r->dst, sizeof r->dst, "h-%016llx", (unsigned long long)to->process);
        snprintf(r->self, sizeof r->self, "p-%016llx", (unsigned long long)p->id);
    }
    r->pend = calloc(p->window, sizeof *r->pend);
    if (!r->pend) return free(r), cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", p->name);
    rpc_opts_t o;
    ch_rpc_opts(&o, p->max_msg, ch_hub_reconnect_ms(p->hub));
    if (r->tunnel) ch_hub_relay_security(p->hub, &o); /* the node's certificate for a secure relay */
    int rc = rpc_channel_create(&r->rch, target, &o, err);
    if (rc) {
        free(r->pend);
        free(r);
        return cr_err_wrap(err, "channel %s", p->name);
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &a);
    pthread_cond_init(&r->room, &a);
    pthread_condattr_destroy(&a);
    r->acked = p->next_seq - 1;
    r->sent_upto = r->acked;
    p->route = r;
    p->ops = &remote_ops;
    if (pthread_create(&r->thread, NULL, sender_main, r) != 0) {
        rpc_channel_destroy(r->rch);
        free(r->pend);
        free(r);
        return cr_err_set(err, CR_EIO, "channel %s: cannot start the sender thread", p->name);
    }
    return 0;
}
