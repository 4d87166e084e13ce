/* client.c - the client end: channels, blocking unary calls, asynchronous
 * streams with callbacks.
 *
 * A channel owns a gRPC channel (which reconnects by itself with the backoff set
 * in its arguments) and, from its first stream on, one thread serving a
 * completion queue for its streams.
 * A unary call uses a private pluck queue, so it blocks only its caller.
 *
 * A stream has four operations, each with its own tag and at most one in flight:
 *   send    SEND_INITIAL_METADATA at open, then SEND_MESSAGE of the send queue's
 *           head, then SEND_CLOSE_FROM_CLIENT after close_send once the queue drains.
 *   recv    RECV_INITIAL_METADATA + RECV_MESSAGE, reposted after on_message returns.
 *   status  RECV_STATUS_ON_CLIENT, posted at open: completes when the call ends.
 * Invariants: on_close runs exactly once, when send, recv and status have all
 * completed; the grpc_call is released and the stream leaves the channel's list
 * before `closed` is set, so rpc_stream_destroy never races the channel thread. */
#define _GNU_SOURCE
#include "common/rpc/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

enum { TAG_SEND = 1, TAG_RECV, TAG_STATUS };
enum { SEND_MD = 1, SEND_MSG, SEND_CLOSE };

struct rpc_channel {
    grpc_channel *gc;
    grpc_completion_queue *cq;
    pthread_t thread;
    int thread_running;            /* started with the first stream */
    char *target;
    char *auth;                    /* "Bearer <token>" or NULL */
    size_t max_message;
    int send_cap;
    int wait_for_ready;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_stream_t *open;            /* streams whose call is not over */
    grpc_completion_queue *idle_cq[8];   /* pluck queues kept for unary calls */
    int n_idle_cq;
};

struct rpc_stream {
    rpc_tag_t t_send, t_recv, t_status;
    rpc_channel_t *ch;
    rpc_stream_t *next, *prev;     /* in ch->open */
    char *method;
    const ProtobufCMessageDescriptor *resp_desc;
    rpc_stream_cbs_t cbs;
    grpc_call *gc;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int send_pending, recv_pending, status_pending;
    int send_kind;                 /* what the send op in flight is: SEND_* */
    int got_initial_md, broken, close_send_asked, close_send_sent, ended, closed;
    rpc_sendq_t sendq;
    int waiters;                   /* senders blocked on a full queue */
    grpc_metadata_array md_initial, md_trailing;
    grpc_byte_buffer *recv_bb;
    grpc_status_code status;
    grpc_slice details;
    rpc_code_t code;
    char *details_str;
    grpc_metadata auth_md;
};

/* ---- channel ------------------------------------------------------------- */

static void stream_event(rpc_tag_t *t, int ok);

static void *channel_main(void *arg)
{
    rpc_channel_t *ch = arg;
    rpc_on_queue_thread = 1;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(ch->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) stream_event(ev.tag, ev.success);
    }
    return NULL;
}

int rpc_channel_create(rpc_channel_t **out, const char *target, const rpc_opts_t *opts, cr_err_t *err)
{
    *out = NULL;
    rpc_opts_t none = {0};
    if (!opts) opts = &none;
    if (!target || !*target) return cr_err_set(err, CR_EINVAL, "no target address");
    grpc_channel_credentials *creds = NULL;
    int rc = rpc_channel_creds(opts, &creds, err);
    if (rc) return rc;
    rpc_channel_t *ch = calloc(1, sizeof *ch);
    if (!ch) {
        grpc_channel_credentials_release(creds);
        return cr_err_set(err, CR_ENOMEM, "no memory for a channel");
    }
    rpc_lib_acquire();
    ch->target = strdup(target);
    if (opts->token && asprintf(&ch->auth, "Bearer %s", opts->token) < 0) ch->auth = NULL;
    ch->max_message = rpc_opts_max_message(opts);
    ch->send_cap = rpc_opts_send_queue(opts);
    ch->wait_for_ready = opts->wait_for_ready;
    pthread_mutex_init(&ch->mu, NULL);
    pthread_cond_init(&ch->cv, NULL);
    rpc_args_t args;
    rpc_args_build(&args, opts, 0);
    ch->gc = grpc_channel_create(target, creds, &args.set);
    grpc_channel_credentials_release(creds);
    ch->cq = grpc_completion_queue_create_for_next(NULL);
    if (!ch->gc || !ch->cq) {
        if (ch->gc) grpc_channel_destroy(ch->gc);
        if (ch->cq) {
            grpc_completion_queue_shutdown(ch->cq);
            grpc_completion_queue_destroy(ch->cq);
        }
        free(ch->target);
        free(ch->auth);
        free(ch);
        rpc_lib_release();
        return cr_err_set(err, CR_EINVAL, "cannot create a channel to %s", target);
    }
    *out = ch;
    return 0;
}

/* A pluck queue for one unary call: reused, since creating one per call costs
 * more than the rest of the layer's work on a small call. */
static grpc_completion_queue *cq_get(rpc_channel_t *ch)
{
    grpc_completion_queue *cq = NULL;
    pthread_mutex_lock(&ch->mu);
    if (ch->n_idle_cq) cq = ch->idle_cq[--ch->n_idle_cq];
    pthread_mutex_unlock(&ch->mu);
    return cq ? cq : grpc_completion_queue_create_for_pluck(NULL);
}

static void cq_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
}

static void cq_put(rpc_channel_t *ch, grpc_completion_queue *cq)
{
    pthread_mutex_lock(&ch->mu);
    int kept = ch->n_idle_cq < (int)(sizeof ch->idle_cq / sizeof ch->idle_cq[0]);
    if (kept) ch->idle_cq[ch->n_idle_cq++] = cq;
    pthread_mutex_unlock(&ch->mu);
    if (!kept) cq_destroy(cq);
}

void rpc_channel_destroy(rpc_channel_t *ch)
{
    if (!ch) return;
    pthread_mutex_lock(&ch->mu);
    for (rpc_stream_t *st = ch->open; st; st = st->next) grpc_call_cancel(st->gc, NULL);
    while (ch->open) pthread_cond_wait(&ch->cv, &ch->mu);
    pthread_mutex_unlock(&ch->mu);
    while (ch->n_idle_cq) cq_destroy(ch->idle_cq[--ch->n_idle_cq]);
    grpc_channel_destroy(ch->gc);
    grpc_completion_queue_shutdown(ch->cq);
    if (ch->thread_running) {
        pthread_join(ch->thread, NULL);
    } else {
        while (grpc_completion_queue_next(ch->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {}
    }
    grpc_completion_queue_destroy(ch->cq);
    pthread_mutex_destroy(&ch->mu);
    pthread_cond_destroy(&ch->cv);
    free(ch->target);
    free(ch->auth);
    free(ch);
    rpc_lib_release();
}

int rpc_channel_wait_ready(rpc_channel_t *ch, int64_t timeout_ms, cr_err_t *err)
{
    int64_t end = cr_now_ns() + (timeout_ms > 0 ? timeout_ms : 0) * CR_NS_PER_MS;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_connectivity_state s = grpc_channel_check_connectivity_state(ch->gc, 1);
    int attempted = 0; /* a connection attempt was seen under way during this wait */
    while (s != GRPC_CHANNEL_READY) {
        int64_t left = (end - cr_now_ns()) / CR_NS_PER_MS;
        if (left <= 0 || s == GRPC_CHANNEL_SHUTDOWN) break;
        /* An attempt made while we waited failed (refused, unreachable, handshake):
         * say so now rather than sit out the time-out until the next attempt. */
        if (s == GRPC_CHANNEL_TRANSIENT_FAILURE && attempted) break;
        if (s == GRPC_CHANNEL_CONNECTING) attempted = 1;
        int tag;
        grpc_channel_watch_connectivity_state(ch->gc, s, rpc_deadline(left), cq, &tag);
        grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        s = grpc_channel_check_connectivity_state(ch->gc, 1);
    }
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    if (s == GRPC_CHANNEL_READY) return 0;
    if (s == GRPC_CHANNEL_TRANSIENT_FAILURE && attempted)
        return cr_err_set(err, CR_EUNAVAIL, "%s: connection failed (refused, unreachable, or the handshake failed)",
                          ch->target);
    return cr_err_set(err, CR_ETIMEDOUT, "%s: not connected after %lld ms", ch->target, (long long)timeout_ms);
}

static size_t init_md(const rpc_channel_t *ch, grpc_metadata *md)
{
    if (!ch->auth) return 0;
    memset(md, 0, sizeof *md);
    md->key = grpc_slice_from_static_string("authorization");
    md->value = grpc_slice_from_static_string(ch->auth);
    return 1;
}

static int status_err(const char *target, const char *method, grpc_status_code st, grpc_slice det,
                      cr_err_t *err)
{
    return cr_err_set(err, rpc_code_to_err((rpc_code_t)st), "%s: %.*s (%s %s)",
                      rpc_code_name((rpc_code_t)st), (int)GRPC_SLICE_LENGTH(det),
                      (const char *)GRPC_SLICE_START_PTR(det), target, method);
}

/* ---- unary ----------------------------------------------------------------- */

int rpc_unary_code(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                   int64_t timeout_ms, rpc_code_t *code, cr_err_t *err)
{
    *resp = NULL;
    if (code) *code = RPC_INTERNAL;
    grpc_byte_buffer *send = rpc_msg_pack(req, NULL, ch->max_message, err);
    if (!send) {
        if (code) *code = rpc_code_from_err(err ? err->code : CR_EINVAL);
        return err ? err->code : CR_EINVAL;
    }
    grpc_completion_queue *cq = cq_get(ch);
    grpc_slice mslice = grpc_slice_from_static_string(method);
    grpc_call *call = grpc_channel_create_call(ch->gc, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice, NULL,
                                               rpc_deadline(timeout_ms), NULL);
    grpc_metadata md;
    grpc_metadata_array md_init, md_trail;
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = init_md(ch, &md);
    ops[0].data.send_initial_metadata.metadata = &md;
    ops[0].flags = ch->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &md_trail;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    int tag;
    int rc = 0;
    if (grpc_call_start_batch(call, ops, 6, &tag, NULL) != GRPC_CALL_OK) {
        rc = cr_err_set(err, CR_EINTERNAL, "%s: could not start the call", method);
    } else {
        grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (code) *code = (rpc_code_t)status;
        if (status != GRPC_STATUS_OK) {
            rc = status_err(ch->target, method, status, details, err);
        } else if (!recv) {
            rc = cr_err_set(err, CR_EPROTO, "%s %s: the server sent no reply message", ch->target, method);
        } else {
            size_t len;
            *resp = rpc_msg_unpack(recv, resp_desc, &len);
            if (!*resp) {
                CR_WARN("rpc", "%s %s: malformed %s in the reply (%zu bytes)", ch->target, method,
                        resp_desc->name, len);
                rc = cr_err_set(err, CR_EPROTO, "%s %s: malformed %s in the reply (%zu bytes)", ch->target,
                                method, resp_desc->name, len);
            }
        }
    }
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    grpc_call_unref(call);
    cq_put(ch, cq);
    return rc;
}

int rpc_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              int64_t timeout_ms, cr_err_t *err)
{
    return rpc_unary_code(ch, method, req, resp_desc, resp, timeout_ms, NULL, err);
}

/* ---- streams ----------------------------------------------------------------- */

static void stream_free(rpc_stream_t *st)
{
    rpc_sendq_free(&st->sendq);
    grpc_metadata_array_destroy(&st->md_initial);
    grpc_metadata_array_destroy(&st->md_trailing);
    grpc_slice_unref(st->details);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st->details_str);
    free(st->method);
    free(st);
}

/* With st->mu held: starts the next send op if none is in flight. */
static void pump_locked(rpc_stream_t *st)
{
    if (st->send_pending || st->ended || st->broken) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    if (st->sendq.count) {
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = rpc_sendq_head(&st->sendq);
        /* more are queued behind it: let gRPC coalesce them into fewer writes */
        if (st->sendq.count > 1) op.flags = GRPC_WRITE_BUFFER_HINT;
        st->send_kind = SEND_MSG;
    } else if (st->close_send_asked && !st->close_send_sent) {
        op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        st->close_send_sent = 1;
        st->send_kind = SEND_CLOSE;
    } else {
        return;
    }
    if (grpc_call_start_batch(st->gc, &op, 1, &st->t_send, NULL) == GRPC_CALL_OK) st->send_pending = 1;
    else CR_ERROR("rpc", "%s: could not start a send (our bug)", st->method);
}

static void post_recv_locked(rpc_stream_t *st)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!st->got_initial_md) {   /* the first receive also takes the initial metadata */
        st->got_initial_md = 1;
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &st->md_initial;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &st->recv_bb;
    n++;
    if (grpc_call_start_batch(st->gc, ops, n, &st->t_recv, NULL) == GRPC_CALL_OK) st->recv_pending = 1;
    else CR_ERROR("rpc", "%s: could not start a receive (our bug)", st->method);
}

/* Runs on_close once every operation is over, then retires the call. */
static void maybe_close(rpc_stream_t *st)
{
    pthread_mutex_lock(&st->mu);
    int due = !st->closed && !st->send_pending && !st->recv_pending && !st->status_pending;
    pthread_mutex_unlock(&st->mu);
    if (!due) return;
    if (st->cbs.on_close) st->cbs.on_close(st, st->code, st->details_str, st->cbs.user);
    rpc_channel_t *ch = st->ch;
    pthread_mutex_lock(&ch->mu);
    if (st->prev) st->prev->next = st->next;
    else ch->open = st->next;
    if (st->next) st->next->prev = st->prev;
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
    pthread_mutex_lock(&st->mu);
    grpc_call *gc = st->gc;
    st->gc = NULL;
    rpc_sendq_clear(&st->sendq);
    pthread_mutex_unlock(&st->mu);
    grpc_call_unref(gc);
    pthread_mutex_lock(&st->mu);
    st->closed = 1;   /* the last touch: rpc_stream_destroy may free st from here on */
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void on_send(rpc_stream_t *st, int ok)
{
    pthread_mutex_lock(&st->mu);
    st->send_pending = 0;
    if (st->send_kind == SEND_MSG) rpc_sendq_pop(&st->sendq);
    if (!ok) {   /* the call is over; its status will say why */
        st->broken = 1;
        rpc_sendq_clear(&st->sendq);
    }
    pump_locked(st);
    /* Wake blocked senders once the queue is half empty, not per message. */
    if (st->waiters && (st->broken || st->sendq.count <= st->sendq.cap / 2)) pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void on_recv(rpc_stream_t *st, int ok)
{
    pthread_mutex_lock(&st->mu);
    grpc_byte_buffer *bb = st->recv_bb;
    st->recv_bb = NULL;
    pthread_mutex_unlock(&st->mu);
    int more = 0;
    if (bb && ok && st->cbs.on_raw) {
        rpc_bytes_t *b = rpc_bytes_wrap(bb);   /* the callback owns it from here */
        bb = NULL;
        if (b) st->cbs.on_raw(st, b, st->cbs.user);
        else grpc_call_cancel_with_status(st->gc, GRPC_STATUS_RESOURCE_EXHAUSTED, "client out of memory", NULL);
        more = b != NULL;
    } else if (bb && ok) {
        size_t len;
        ProtobufCMessage *msg = rpc_msg_unpack(bb, st->resp_desc, &len);
        if (!msg) {
            CR_WARN("rpc", "%s %s: malformed %s from the server (%zu bytes): stream cancelled",
                    st->ch->target, st->method, st->resp_desc->name, len);
            grpc_call_cancel_with_status(st->gc, GRPC_STATUS_INTERNAL, "malformed message from the server", NULL);
        } else {
            if (st->cbs.on_message) st->cbs.on_message(st, msg, st->cbs.user);
            protobuf_c_message_free_unpacked(msg, NULL);
            more = 1;
        }
    }
    if (bb) grpc_byte_buffer_destroy(bb);
    pthread_mutex_lock(&st->mu);
    st->recv_pending = 0;
    if (more) post_recv_locked(st);
    pthread_mutex_unlock(&st->mu);
}

static void on_status(rpc_stream_t *st)
{
    pthread_mutex_lock(&st->mu);
    st->status_pending = 0;
    st->ended = 1;
    st->code = (rpc_code_t)st->status;
    if (asprintf(&st->details_str, "%.*s", (int)GRPC_SLICE_LENGTH(st->details),
                 (const char *)GRPC_SLICE_START_PTR(st->details)) < 0)
        st->details_str = NULL;
    if (!st->details_str) st->details_str = strdup("");
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void stream_event(rpc_tag_t *t, int ok)
{
    rpc_stream_t *st = t->obj;
    switch (t->kind) {
    case TAG_SEND: on_send(st, ok); break;
    case TAG_RECV: on_recv(st, ok); break;
    case TAG_STATUS: on_status(st); break;
    }
    maybe_close(st);
}

int rpc_stream_open(rpc_channel_t *ch, rpc_stream_t **out, const char *method,
                    const ProtobufCMessageDescriptor *resp_desc, const rpc_stream_cbs_t *cbs,
                    int64_t timeout_ms, cr_err_t *err)
{
    *out = NULL;
    if (!method || method[0] != '/' || !resp_desc)
        return cr_err_set(err, CR_EINVAL, "stream needs a /package.Service/Method name and a reply type");
    /* The stream thread starts with the first stream: a thread blocked on a
     * completion queue joins gRPC's polling, and an idle one only adds hand-offs
     * to every unary call of a channel that never streams. */
    pthread_mutex_lock(&ch->mu);
    if (!ch->thread_running && pthread_create(&ch->thread, NULL, channel_main, ch) == 0)
        ch->thread_running = 1;
    int running = ch->thread_running;
    pthread_mutex_unlock(&ch->mu);
    if (!running) return cr_err_set(err, CR_ENOMEM, "cannot start the stream thread of %s", ch->target);
    rpc_stream_t *st = calloc(1, sizeof *st);
    if (!st || rpc_sendq_init(&st->sendq, ch->send_cap) != 0) {
        free(st);
        return cr_err_set(err, CR_ENOMEM, "no memory for a stream");
    }
    st->ch = ch;
    st->method = strdup(method);
    st->resp_desc = resp_desc;
    if (cbs) st->cbs = *cbs;
    st->t_send = (rpc_tag_t){TAG_SEND, st};
    st->t_recv = (rpc_tag_t){TAG_RECV, st};
    st->t_status = (rpc_tag_t){TAG_STATUS, st};
    st->details = grpc_empty_slice();
    st->code = RPC_UNKNOWN;
    grpc_metadata_array_init(&st->md_initial);
    grpc_metadata_array_init(&st->md_trailing);
    pthread_mutex_init(&st->mu, NULL);
    rpc_cond_init_monotonic(&st->cv);
    /* A refcounted copy: gRPC keeps a "static" slice's bytes beyond the call (the
     * HPACK compressor indexes the path), and st->method dies with the stream. */
    grpc_slice path = grpc_slice_from_copied_string(method);
    st->gc = grpc_channel_create_call(ch->gc, NULL, GRPC_PROPAGATE_DEFAULTS, ch->cq, path, NULL,
                                      rpc_deadline(timeout_ms), NULL);
    grpc_slice_unref(path);

    pthread_mutex_lock(&ch->mu);
    st->next = ch->open;
    if (ch->open) ch->open->prev = st;
    ch->open = st;
    pthread_mutex_unlock(&ch->mu);

    pthread_mutex_lock(&st->mu);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &st->md_trailing;
    op.data.recv_status_on_client.status = &st->status;
    op.data.recv_status_on_client.status_details = &st->details;
    if (grpc_call_start_batch(st->gc, &op, 1, &st->t_status, NULL) == GRPC_CALL_OK) st->status_pending = 1;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    op.data.send_initial_metadata.count = init_md(ch, &st->auth_md);
    op.data.send_initial_metadata.metadata = &st->auth_md;
    op.flags = ch->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    st->send_kind = SEND_MD;
    if (grpc_call_start_batch(st->gc, &op, 1, &st->t_send, NULL) == GRPC_CALL_OK) st->send_pending = 1;
    post_recv_locked(st);
    int ok = st->status_pending && st->send_pending && st->recv_pending;
    pthread_mutex_unlock(&st->mu);
    if (!ok) {   /* cannot happen with a valid call; cancel and let it close */
        rpc_stream_destroy(st);
        return cr_err_set(err, CR_EINTERNAL, "%s: could not start the stream", method);
    }
    *out = st;
    return 0;
}

/* Queues a packed message (taking bb in every case), waiting for room as
 * rpc_stream_send describes. */
static int stream_queue(rpc_stream_t *st, grpc_byte_buffer *bb, int64_t timeout_ms, cr_err_t *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->ended || st->broken || st->closed || st->close_send_asked) {
            pthread_mutex_unlock(&st->mu);
            grpc_byte_buffer_destroy(bb);
            return cr_err_set(err, CR_ECLOSED, "%s: stream %s", st->method,
                              st->close_send_asked ? "half-closed" : "ended");
        }
        if (st->sendq.count < st->sendq.cap) break;
        int timed_out = timeout_ms == 0 || rpc_on_queue_thread;
        if (!timed_out) {
            st->waiters++;
            timed_out = rpc_cond_wait_until(&st->cv, &st->mu, deadline) != 0;
            st->waiters--;
        }
        if (timed_out) {
            if (st->sendq.count < st->sendq.cap) break;
            pthread_mutex_unlock(&st->mu);
            grpc_byte_buffer_destroy(bb);
            return cr_err_set(err, CR_EBUSY, "%s: send queue full (%d messages)", st->method, st->sendq.cap);
        }
    }
    rpc_sendq_push(&st->sendq, bb);
    pump_locked(st);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

int rpc_stream_send(rpc_stream_t *st, const ProtobufCMessage *msg, int64_t timeout_ms, cr_err_t *err)
{
    grpc_byte_buffer *bb = rpc_msg_pack(msg, NULL, st->ch->max_message, err);
    if (!bb) return err ? err->code : CR_EINVAL;
    return stream_queue(st, bb, timeout_ms, err);
}

int rpc_stream_send_out(rpc_stream_t *st, rpc_out_t *o, int64_t timeout_ms, cr_err_t *err)
{
    size_t n = rpc_out_len(o);
    if (n > st->ch->max_message) {
        rpc_out_destroy(o);
        return cr_err_set(err, CR_ETOOBIG, "%s: message of %zu bytes exceeds the message limit of %zu bytes",
                          st->method, n, st->ch->max_message);
    }
    return stream_queue(st, rpc_out_take(o), timeout_ms, err);
}

int rpc_stream_send_queued(const rpc_stream_t *st)
{
    rpc_stream_t *m = (rpc_stream_t *)st;
    pthread_mutex_lock(&m->mu);
    int n = m->sendq.count;
    pthread_mutex_unlock(&m->mu);
    return n;
}

int rpc_stream_close_send(rpc_stream_t *st, cr_err_t *err)
{
    pthread_mutex_lock(&st->mu);
    if (st->ended || st->closed || st->close_send_asked) {
        pthread_mutex_unlock(&st->mu);
        return cr_err_set(err, CR_ECLOSED, "%s: stream already %s", st->method,
                          st->close_send_asked ? "half-closed" : "ended");
    }
    st->close_send_asked = 1;
    pump_locked(st);
    pthread_mutex_unlock(&st->mu);
    return 0;
}

void rpc_stream_cancel(rpc_stream_t *st)
{
    pthread_mutex_lock(&st->mu);
    if (st->gc && !st->ended) grpc_call_cancel(st->gc, NULL);
    pthread_mutex_unlock(&st->mu);
}

int rpc_stream_wait(rpc_stream_t *st, int64_t timeout_ms, rpc_code_t *code, cr_err_t *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&st->mu);
    while (!st->closed && rpc_cond_wait_until(&st->cv, &st->mu, deadline) == 0) {}
    int closed = st->closed;
    pthread_mutex_unlock(&st->mu);
    if (!closed) return cr_err_set(err, CR_ETIMEDOUT, "%s: stream still open after %lld ms", st->method,
                                   (long long)timeout_ms);
    if (code) *code = st->code;
    if (st->code == RPC_OK) return 0;
    return cr_err_set(err, rpc_code_to_err(st->code), "%s: %s (%s)", rpc_code_name(st->code),
                      st->details_str, st->method);
}

void rpc_stream_destroy(rpc_stream_t *st)
{
    if (!st) return;
    rpc_stream_cancel(st);
    pthread_mutex_lock(&st->mu);
    while (!st->closed) pthread_cond_wait(&st->cv, &st->mu);
    pthread_mutex_unlock(&st->mu);
    stream_free(st);
}
