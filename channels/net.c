/* net.c - the consumer side of the routes between nodes, for one hub: a gRPC server
 * for the direct route (corral.v1.Channel/Stream) and an outbound link to the relay
 * (corral.v1.Relay/Link) through which tunnelled frames arrive when this node accepts
 * no inbound connection. The link dials with the hub's relay security (the node's
 * certificate when the controller serves mutual TLS), and says why when it cannot
 * connect (ch_hub_relay_wait, one log line per new reason).
 *
 * Both read each frame as the bytes gRPC received (wire.c finds the small fields),
 * copy its data once into the message the consumer gets, hand it to the channel
 * (ch_channel_push_remote: a replica does not forward what another node sent) and
 * acknowledge it afterwards, so an acknowledgement means "queued". A frame for an
 * unknown channel or malformed is refused to its sender only, with a message
 * naming what was wrong; other streams and channels go on. A message over the
 * channel's size limit is refused alone: an ERROR frame naming its producer and
 * seq, and the stream goes on with the next message.
 *
 * Back-pressure. A direct stream carries one producer's frames: its handler runs on
 * the server's queue thread while the channel has room (no thread hop per message)
 * and moves to a handler thread that blocks while the channel is full, which stalls
 * that stream only (the rpc layer reads its next message after the handler
 * returns). The relay link instead carries the frames of every tunnelled producer
 * of every channel of the hub, so it never waits for a channel: a frame for a
 * channel with room is delivered on the link's callback thread at once; one for a
 * full channel is copied into that channel's inbox and delivered by the inbox's own
 * thread when room comes, and acknowledged only then. A full channel so holds back
 * its own producers alone (their windows of unacknowledged messages fill and their
 * puts wait) while the other channels' traffic flows; an inbox holds at most the
 * producers' windows (plus INBOX_MAX_BYTES as a guard against a peer that ignores
 * its window).
 *
 * Inbox invariants (all under ch_net_t.mu): frames leave an inbox in the order they
 * arrived, and while it holds any (or its thread is delivering one, `busy`) every
 * new frame of its channel queues behind them, so each producer's order holds. Per
 * producer the inbox keeps `next`, one past the newest seq delivered or queued: a
 * frame below it is a resend (acknowledged when the channel already has it, else
 * dropped: the queued copy will be acknowledged), a frame above it follows one the
 * inbox dropped at its limit and is dropped too, until the producer, missing
 * acknowledgements, resends from its oldest unacknowledged message. So no seq is
 * skipped (the channel's duplicate filter would then lose the older one). */
#include "channels/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/id.h"
#include "common/log.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "channels/wire.h"
#include "corral/v1/channel.pb-c.h"

void ch_rpc_opts(rpc_opts_t *o, size_t max_msg, int64_t backoff_ms);

#define INBOX_MAX_BYTES ((size_t)512 << 20)   /* per channel, see the top */
#define INBOX_LINGER_NS (2 * CR_NS_PER_S)      /* an idle inbox thread ends after this */
#define ROOM_SLICE_NS (200 * CR_NS_PER_MS)     /* an inbox thread checks for stop this often */
#define READY_WAIT_MS 5000                     /* one connection attempt to the relay */

typedef struct ch_net ch_net_t;

/* A tunnelled frame waiting in an inbox: its data already copied out of gRPC's
 * buffers (a kept frame must not pin a large read buffer). */
typedef struct inframe {
    struct inframe *next;
    ch_msg_t *m;
    char src[40]; /* the producer's relay endpoint, where the acknowledgement goes */
} inframe_t;

typedef struct inseq {
    uint64_t producer, next;
} inseq_t;

/* The frames for one channel that found it full (see the top). */
typedef struct inbox {
    struct inbox *next;
    ch_net_t *n;
    char channel[64];
    inframe_t *head, *tail;
    size_t bytes;
    int busy;              /* its thread is delivering a frame taken off the head */
    int running, joinable; /* its thread runs / has run and is not joined yet */
    int warned;            /* logged that it dropped frames at its limit */
    pthread_t thread;
    pthread_cond_t cv;
    inseq_t *seqs;
    size_t nseqs, capseqs;
} inbox_t;

struct ch_net {
    ch_hub_t *h;
    rpc_server_t *srv;
    rpc_method_t method;
    char addr[160];
    /* relay link */
    rpc_channel_t *rch;
    char relay[160];
    rpc_opts_t ro;         /* security fields only matter here (strings: the hub's) */
    char self[40];
    pthread_t link_thread;
    int link_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* link_main's wake-ups and ch_net_relay_wait */
    int stop, link_dead, link_up;
    char link_err[CR_ERR_MSG_MAX]; /* why the last attempt failed; "" while up */
    rpc_stream_t *live;    /* the link's stream while up: inbox threads ack on it */
    uint64_t gen;
    inbox_t *inboxes;
};

static int frame_check(const ch_wire_frame_t *f, cr_err_t *err);

/* Delivers one DATA frame to its channel, copying its data once, from the bytes
 * gRPC received into the message the consumer gets; without may_block CR_EBUSY
 * when the channel is full (nothing done). 0 when queued or a duplicate, else a
 * CR_E* code with the reason in err. The channel is held only for the call, so a
 * consumer can destroy it while streams stay open (they then get NOT_FOUND). */
static int deliver(ch_hub_t *h, const ch_wire_frame_t *f, const rpc_bytes_t *b, int may_block, cr_err_t *err)
{
    if (frame_check(f, err) != 0) return err ? err->code : CR_EINVAL;
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

static void ack_seq(Corral__V1__ChFrame *a, uint64_t producer, uint64_t seq)
{
    corral__v1__ch_frame__init(a);
    a->kind = CORRAL__V1__CH_FRAME__KIND__ACK;
    a->producer = producer;
    a->seq = seq;
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
    ack_seq(&a, f.producer, f.seq);
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
    ch_listen_addr(listen, advertise, rpc_server_port(n->srv), n->addr, sizeof n->addr);
    return 0;
}

void ch_listen_addr(const char *listen, const char *advertise, int port, char *out, size_t n)
{
    char host[128];
    snprintf(host, sizeof host, "%s", listen);
    char *colon = strrchr(host, ':');
    if (colon) *colon = 0;
    if (advertise)
        snprintf(host, sizeof host, "%s", advertise);
    else if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0 || host[0] == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    snprintf(out, n, "%s:%d", host, port);
}

/* ---- relay link (tunnel, consumer side) ---- */

typedef struct link_ctx {
    ch_net_t *n;
    uint64_t gen;
    rpc_stream_t *st;
} link_ctx_t;

/* Sends one reply frame on st to dst. Never waits (the callback thread and the
 * inbox threads must not): a lost ack is recovered by the producer's ack time-out
 * and resend (the duplicate is acknowledged again). */
static void link_reply(rpc_stream_t *st, const char *dst, Corral__V1__ChFrame *f)
{
    Corral__V1__RelayFrame rf = CORRAL__V1__RELAY_FRAME__INIT;
    rf.dst = (char *)dst;
    rf.frame = f;
    cr_err_t e = {0};
    if (rpc_stream_send(st, &rf.base, 0, &e) != 0)
        CR_DEBUG("channels", "relay link: reply to %s not sent: %s", dst, e.msg);
}

static void error_frame(Corral__V1__ChFrame *a, const cr_err_t *e)
{
    corral__v1__ch_frame__init(a);
    a->kind = CORRAL__V1__CH_FRAME__KIND__ERROR;
    a->code = e->code;
    a->message = (char *)e->msg;
}

/* Under n->mu: the reply of an inbox thread, on whichever link stream is up now
 * (the producer's endpoint name outlives reconnects of either side). */
static void reply_live(ch_net_t *n, const char *dst, Corral__V1__ChFrame *f)
{
    if (n->live) link_reply(n->live, dst, f);
}

/* ---- inboxes ---- */

static inbox_t *inbox_find(ch_net_t *n, const char *channel)
{
    for (inbox_t *ib = n->inboxes; ib; ib = ib->next)
        if (strcmp(ib->channel, channel) == 0) return ib;
    return NULL;
}

/* Under n->mu: the inbox of channel, made when it has none; NULL when out of memory. */
static inbox_t *inbox_get(ch_net_t *n, const char *channel)
{
    inbox_t *ib = inbox_find(n, channel);
    if (ib) return ib;
    ib = calloc(1, sizeof *ib);
    if (!ib) return NULL;
    ib->n = n;
    snprintf(ib->channel, sizeof ib->channel, "%s", channel);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&ib->cv, &a);
    pthread_condattr_destroy(&a);
    ib->next = n->inboxes;
    n->inboxes = ib;
    return ib;
}

static inseq_t *seq_find(inbox_t *ib, uint64_t producer)
{
    for (size_t i = 0; i < ib->nseqs; i++)
        if (ib->seqs[i].producer == producer) return &ib->seqs[i];
    return NULL;
}

/* Under n->mu: next becomes seq + 1 for producer. CR_ENOMEM or 0. */
static int seq_note(inbox_t *ib, uint64_t producer, uint64_t seq, cr_err_t *err)
{
    inseq_t *s = seq_find(ib, producer);
    if (s) {
        if (seq + 1 > s->next) s->next = seq + 1;
        return 0;
    }
    if (ib->nseqs == ib->capseqs) {
        size_t cap = ib->capseqs ? 2 * ib->capseqs : 8;
        inseq_t *ns = realloc(ib->seqs, cap * sizeof *ns);
        if (!ns) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", ib->channel);
        ib->seqs = ns;
        ib->capseqs = cap;
    }
    ib->seqs[ib->nseqs++] = (inseq_t){producer, seq + 1};
    return 0;
}

static void wait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ns)
{
    int64_t dl = cr_now_ns() + ns;
    struct timespec ts = {.tv_sec = dl / CR_NS_PER_S, .tv_nsec = dl % CR_NS_PER_S};
    pthread_cond_timedwait(cv, mu, &ts);
}

static int stopping(ch_net_t *n)
{
    pthread_mutex_lock(&n->mu);
    int s = n->stop;
    pthread_mutex_unlock(&n->mu);
    return s;
}

/* Hands m to the channel, waiting for room in slices so a stopping hub is
 * noticed. 0 when queued or a duplicate, CR_ECANCELLED when the hub stops first
 * (m is still the caller's), else the channel's error (m freed). */
static int inbox_push(ch_net_t *n, const char *channel, ch_msg_t *m, cr_err_t *err)
{
    for (;;) {
        ch_channel_t *c;
        int rc = ch_channel_acquire(n->h, channel, &c, err);
        if (rc) {
            ch_msg_free(m);
            return rc;
        }
        rc = ch_channel_try_push_remote(c, m, err);
        if (rc == CR_EBUSY) ch_channel_wait_room(c, cr_now_ns() + ROOM_SLICE_NS, NULL);
        ch_channel_release(c);
        if (rc != CR_EBUSY) return rc == 1 ? 0 : rc;
        if (stopping(n)) return CR_ECANCELLED;
    }
}

/* Under n->mu: fails every frame still queued with e (their channel is gone) and
 * forgets the producers, so a channel made again under the name starts afresh. */
static void inbox_fail_all(inbox_t *ib, const cr_err_t *e)
{
    Corral__V1__ChFrame a;
    error_frame(&a, e);
    while (ib->head) {
        inframe_t *fr = ib->head;
        ib->head = fr->next;
        reply_live(ib->n, fr->src, &a);
        ch_msg_free(fr->m);
        free(fr);
    }
    ib->tail = NULL;
    ib->bytes = 0;
    ib->nseqs = 0;
}

/* An inbox's thread: delivers its frames in order, each as soon as the channel has
 * room, and acknowledges them; ends after INBOX_LINGER_NS without work. */
static void *inbox_main(void *arg)
{
    inbox_t *ib = arg;
    ch_net_t *n = ib->n;
    pthread_mutex_lock(&n->mu);
    int64_t idle_since = cr_now_ns();
    while (!n->stop) {
        inframe_t *fr = ib->head;
        if (!fr) {
            if (cr_now_ns() - idle_since > INBOX_LINGER_NS) break;
            wait_ns(&ib->cv, &n->mu, INBOX_LINGER_NS / 4);
            continue;
        }
        ib->head = fr->next;
        if (!ib->head) ib->tail = NULL;
        ib->busy = 1;
        uint64_t producer = fr->m->producer, seq = fr->m->seq;
        size_t len = fr->m->len;
        pthread_mutex_unlock(&n->mu);
        cr_err_t e = {0};
        int rc = inbox_push(n, ib->channel, fr->m, &e);
        pthread_mutex_lock(&n->mu);
        ib->busy = 0;
        if (rc == CR_ECANCELLED) { /* stopping: ch_net_stop frees it with the rest */
            fr->next = ib->head;
            ib->head = fr;
            if (!ib->tail) ib->tail = fr;
            break;
        }
        ib->bytes -= len;
        Corral__V1__ChFrame a;
        if (rc == 0) {
            ack_seq(&a, producer, seq);
        } else {
            CR_WARN("channels", "tunnelled stream from %s refused: %s", fr->src, e.msg);
            error_frame(&a, &e);
        }
        reply_live(n, fr->src, &a);
        if (rc == CR_ENOENT || rc == CR_ECLOSED) inbox_fail_all(ib, &e);
        free(fr);
        idle_since = cr_now_ns();
    }
    ib->running = 0;
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

/* Under n->mu: makes sure the inbox's thread runs. */
static int inbox_wake(inbox_t *ib, cr_err_t *err)
{
    if (!ib->running) {
        if (ib->joinable) pthread_join(ib->thread, NULL); /* it has ended or is ending */
        ib->joinable = 0;
        if (pthread_create(&ib->thread, NULL, inbox_main, ib) != 0)
            return cr_err_set(err, CR_EIO, "channel %s: cannot start a delivery thread", ib->channel);
        ib->running = ib->joinable = 1;
    }
    pthread_cond_signal(&ib->cv);
    return 0;
}

/* Under n->mu: the inbox of a channel the hub does not have is freed when idle
 * (frames naming made-up channels leave nothing behind), else emptied of its
 * producers, so a channel made again under the name starts afresh. */
static void inbox_forget(ch_net_t *n, inbox_t *ib)
{
    ib->nseqs = 0;
    if (ib->head || ib->busy || ib->running) return;
    for (inbox_t **p = &n->inboxes; *p; p = &(*p)->next) {
        if (*p == ib) {
            *p = ib->next;
            break;
        }
    }
    if (ib->joinable) pthread_join(ib->thread, NULL); /* ended: running is 0 */
    pthread_cond_destroy(&ib->cv);
    free(ib->seqs);
    free(ib);
}

/* The checks every DATA frame passes before it is delivered. */
static int frame_check(const ch_wire_frame_t *f, cr_err_t *err)
{
    if (f->kind != CORRAL__V1__CH_FRAME__KIND__DATA)
        return cr_err_set(err, CR_EINVAL, "expected a DATA frame, got kind %d", f->kind);
    if (!cr_name_valid(f->channel)) return cr_err_set(err, CR_EINVAL, "frame names no valid channel");
    if (f->producer == 0 || f->seq == 0)
        return cr_err_set(err, CR_EINVAL, "frame for channel %s lacks a producer id or seq", f->channel);
    return 0;
}

/* Whether the channel already holds (producer, seq): a resend to acknowledge again. */
static int already_delivered(ch_hub_t *h, const ch_wire_frame_t *f)
{
    ch_channel_t *c;
    if (ch_channel_acquire(h, f->channel, &c, NULL) != 0) return 0;
    int seen = ch_channel_seen(c, f->producer, f->seq);
    ch_channel_release(c);
    return seen;
}

/* A tunnelled DATA frame on the link's callback thread: delivered now when its
 * channel has room and nothing of it waits, else queued in the channel's inbox.
 * 0 with *ack set when it is to be acknowledged now; a CR_E* code to refuse it. */
static int link_take(ch_net_t *n, const ch_wire_frame_t *f, const rpc_bytes_t *b, const char *src, int *ack,
                     cr_err_t *err)
{
    *ack = 0;
    pthread_mutex_lock(&n->mu);
    inbox_t *ib = inbox_get(n, f->channel);
    if (!ib) {
        pthread_mutex_unlock(&n->mu);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", f->channel);
    }
    inseq_t *s = seq_find(ib, f->producer);
    if (s && f->seq != s->next) {
        pthread_mutex_unlock(&n->mu);
        if (f->seq < s->next) *ack = already_delivered(n->h, f); /* else the queued copy is acked */
        return 0;                                                /* above: see the top */
    }
    int rc;
    if (!ib->head && !ib->busy) {
        /* Only this thread queues frames, so no inbox thread delivers meanwhile. */
        pthread_mutex_unlock(&n->mu);
        rc = deliver(n->h, f, b, 0, err);
        pthread_mutex_lock(&n->mu);
        if (rc != CR_EBUSY) {
            if (rc == 0) rc = seq_note(ib, f->producer, f->seq, err);
            else if (rc == CR_ENOENT) inbox_forget(n, ib);
            pthread_mutex_unlock(&n->mu);
            *ack = rc == 0;
            return rc;
        }
    }
    if (ib->head && ib->bytes + f->data_len > INBOX_MAX_BYTES) {
        if (!ib->warned)
            CR_WARN("channels", "channel %s: over %zu MiB wait for room; frames from %s dropped until "
                    "resent", f->channel, INBOX_MAX_BYTES >> 20, src);
        ib->warned = 1;
        pthread_mutex_unlock(&n->mu);
        return 0;
    }
    inframe_t *fr = calloc(1, sizeof *fr);
    ch_msg_t *m = fr ? ch_msg_alloc(f->data_len) : NULL;
    if (!m || (rc = seq_note(ib, f->producer, f->seq, err)) != 0 || (rc = inbox_wake(ib, err)) != 0) {
        pthread_mutex_unlock(&n->mu);
        free(fr);
        ch_msg_free(m);
        return m ? rc : cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", f->channel);
    }
    m->producer = f->producer;
    m->seq = f->seq;
    m->weight = f->weight;
    rpc_bytes_read(b, f->data_off, m->data, f->data_len);
    fr->m = m;
    snprintf(fr->src, sizeof fr->src, "%s", src);
    if (ib->tail) ib->tail->next = fr;
    else ib->head = fr;
    ib->tail = fr;
    ib->bytes += f->data_len;
    pthread_mutex_unlock(&n->mu);
    return 0;
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
    int ack = 0;
    rc = ch_wire_parse_frame(msg, rf.frame_off, rf.frame_len, &rf.f, &e);
    if (rc == 0) rc = frame_check(&rf.f, &e);
    if (rc == 0) rc = link_take(x->n, &rf.f, msg, rf.src, &ack, &e);
    rpc_bytes_free(msg);
    Corral__V1__ChFrame a;
    if (rc) {
        CR_WARN("channels", "tunnelled stream from %s refused: %s", rf.src, e.msg);
        refusal_frame(&a, &rf.f, rc, e.msg);
    } else if (ack) {
        ack_seq(&a, rf.f.producer, rf.f.seq);
    } else {
        return;
    }
    link_reply(x->st, rf.src, &a);
}

static void link_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    link_ctx_t *x = user;
    pthread_mutex_lock(&x->n->mu);
    if (x->gen == x->n->gen) {
        x->n->link_dead = 1;
        if (!x->n->stop)
            snprintf(x->n->link_err, sizeof x->n->link_err, "relay %s ended the link (%s: %s)", x->n->relay,
                     rpc_code_name(code), details);
        CR_DEBUG("channels", "relay link closed (%s: %s)", rpc_code_name(code), details);
        pthread_cond_broadcast(&x->n->cv);
    }
    pthread_mutex_unlock(&x->n->mu);
}

/* Whether something accepts TCP connections at target ("host:port"), within 1 s;
 * when not, why in why. */
static int tcp_answers(const char *target, char *why, size_t n)
{
    char host[160];
    snprintf(host, sizeof host, "%s", target);
    char *colon = strrchr(host, ':');
    if (!colon) return snprintf(why, n, "no port in the address"), 0;
    *colon = 0;
    const char *port = colon + 1, *hp = host;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:7070 */
        host[strlen(host) - 1] = 0;
        hp = host + 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(hp, port, &hints, &ai);
    if (g) return snprintf(why, n, "%s", gai_strerror(g)), 0;
    int ok = 0;
    snprintf(why, n, "no address");
    for (struct addrinfo *a = ai; a && !ok; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int soerr = ETIMEDOUT;
            socklen_t sl = sizeof soerr;
            if (poll(&pf, 1, 1000) == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc == 0) ok = 1;
        else snprintf(why, n, "%s", strerror(errno));
        close(fd);
    }
    freeaddrinfo(ai);
    return ok;
}

/* A sentence on why a connection to the relay at target failed (details: what
 * gRPC said), for logs and errors: whether anything accepts TCP there, and if so,
 * that the TLS handshake or the lack of TLS is what was refused. */
static void diagnose(const char *target, int secure, const char *cert_dir, const char *details, char *out,
                     size_t n)
{
    char why[128];
    if (!tcp_answers(target, why, sizeof why))
        snprintf(out, n, "nothing accepts connections at relay %s (%s)", target, why);
    else if (secure)
        snprintf(out, n, "relay %s accepts connections but refused the TLS handshake: it does not accept this "
                 "node's certificate (%s/cert.pem, from another CA?), or the node does not trust the relay's "
                 "(%s/ca.pem) [%s]", target, cert_dir ? cert_dir : "?", cert_dir ? cert_dir : "?", details);
    else
        snprintf(out, n, "relay %s accepts connections but refused this link without TLS: a controller serving "
                 "mutual TLS takes only nodes that present their certificate (relay_rpc) [%s]", target, details);
}

/* Under n->mu: records why an attempt failed; a new reason is logged once. */
static void link_failed(ch_net_t *n, const cr_err_t *e)
{
    char why[CR_ERR_MSG_MAX];
    pthread_mutex_unlock(&n->mu); /* the probe takes up to a second */
    diagnose(n->relay, n->ro.security != RPC_INSECURE, n->ro.cert_dir, e->msg, why, sizeof why);
    pthread_mutex_lock(&n->mu);
    /* The same reason with other words from gRPC (in brackets) is not news. */
    size_t k = strcspn(why, "[");
    if ((strncmp(why, n->link_err, k) != 0 || strcspn(n->link_err, "[") != k) && !n->stop)
        CR_WARN("channels", "hub %s: relay link down: %s", ch_hub_node(n->h), why);
    snprintf(n->link_err, sizeof n->link_err, "%s", why);
    pthread_cond_broadcast(&n->cv);
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
        /* Connected first (the handshake done), so a refusal is told apart from a
         * relay that ends the stream, and has its own reason. */
        int rc = rpc_channel_wait_ready(n->rch, READY_WAIT_MS, &e);
        /* x->st is set before any callback can send: replies come only after hello. */
        if (rc == 0)
            rc = rpc_stream_open(n->rch, &x->st, "/corral.v1.Relay/Link", &corral__v1__relay_frame__descriptor,
                                 &cbs, 0, &e);
        if (rc == 0) {
            Corral__V1__RelayFrame hello = CORRAL__V1__RELAY_FRAME__INIT;
            hello.hello = n->self;
            rc = rpc_stream_send(x->st, &hello.base, 1000, &e);
        }
        pthread_mutex_lock(&n->mu);
        if (rc == 0) {
            int64_t up_since = cr_now_ns();
            if (!n->link_dead) {
                n->live = x->st;
                n->link_up = 1;
                n->link_err[0] = 0;
                pthread_cond_broadcast(&n->cv);
            }
            while (!n->stop && !n->link_dead) pthread_cond_wait(&n->cv, &n->mu);
            n->live = NULL;
            n->link_up = 0;
            if (cr_now_ns() - up_since > 2 * CR_NS_PER_S) rpc_backoff_reset(&bo);
        } else if (!n->stop) {
            link_failed(n, &e);
        }
        int closing = n->stop && !n->link_dead;
        n->gen++;
        pthread_mutex_unlock(&n->mu);
        if (closing && x->st && rpc_stream_close_send(x->st, NULL) == 0) rpc_stream_wait(x->st, 1000, NULL, NULL);
        rpc_stream_destroy(x->st);
        free(x);
        if (!n->stop) cr_sleep_ns((int64_t)rpc_backoff_next_ms(&bo) * CR_NS_PER_MS);
        pthread_mutex_lock(&n->mu);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

int ch_net_relay_wait(void *p, int64_t timeout_ms, cr_err_t *err)
{
    ch_net_t *n = p;
    int64_t dl = cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&n->mu);
    while (!n->link_up && cr_now_ns() < dl) {
        struct timespec ts = {.tv_sec = dl / CR_NS_PER_S, .tv_nsec = dl % CR_NS_PER_S};
        pthread_cond_timedwait(&n->cv, &n->mu, &ts);
    }
    int rc = 0;
    if (!n->link_up)
        rc = n->link_err[0] ? cr_err_set(err, CR_EUNAVAIL, "hub %s: %s", ch_hub_node(n->h), n->link_err)
                            : cr_err_set(err, CR_ETIMEDOUT, "hub %s: still connecting to relay %s",
                                         ch_hub_node(n->h), n->relay);
    pthread_mutex_unlock(&n->mu);
    return rc;
}

void ch_net_relay_error(void *p, char *buf, size_t len)
{
    ch_net_t *n = p;
    pthread_mutex_lock(&n->mu);
    snprintf(buf, len, "%s", n->link_up ? "" : n->link_err);
    pthread_mutex_unlock(&n->mu);
}

static int link_start(ch_net_t *n, const char *relay, cr_err_t *err)
{
    snprintf(n->self, sizeof n->self, "h-%016llx", (unsigned long long)ch_hub_id(n->h));
    snprintf(n->relay, sizeof n->relay, "%s", relay);
    ch_rpc_opts(&n->ro, CH_DEFAULT_MAX_MSG, ch_hub_reconnect_ms(n->h));
    ch_hub_relay_security(n->h, &n->ro);
    n->ro.send_queue = 1024; /* acks from the callback thread must not find it full */
    int rc = rpc_channel_create(&n->rch, relay, &n->ro, err);
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
    pthread_mutex_lock(&n->mu);
    n->stop = 1;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (n->link_started) {
        pthread_join(n->link_thread, NULL); /* it cancels and frees its stream */
        rpc_channel_destroy(n->rch);
    }
    while (n->inboxes) { /* their threads saw stop; what they still hold was never acknowledged */
        inbox_t *ib = n->inboxes;
        n->inboxes = ib->next;
        pthread_mutex_lock(&n->mu);
        pthread_cond_broadcast(&ib->cv);
        pthread_mutex_unlock(&n->mu);
        if (ib->joinable) pthread_join(ib->thread, NULL);
        for (inframe_t *fr = ib->head, *nx; fr; fr = nx) {
            nx = fr->next;
            ch_msg_free(fr->m);
            free(fr);
        }
        pthread_cond_destroy(&ib->cv);
        free(ib->seqs);
        free(ib);
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
