/* server.c - the RPC server: queue threads that own completion queues, the
 * per-call state machine, and the shutdown order that gRPC 1.51 survives.
 *
 * Each queue thread owns one completion queue and keeps one request outstanding
 * per method on it (plus one for unknown methods). An arriving call gets an
 * rpc_call_t and four operations, each with its own tag and at most one in flight:
 *   close   RECV_CLOSE_ON_SERVER, posted first: completes when the call is over;
 *           its cancelled flag is the only way to tell a client cancel, a deadline
 *           or a dead peer from a normal end.
 *   recv    RECV_MESSAGE, posted only after the previous message's handler has
 *           returned (flow control toward a fast client; handlers run in order).
 *   send    SEND_MESSAGE of the send queue's head (one in flight; bounded queue).
 *   status  SEND_STATUS_FROM_SERVER once finish is asked and the queue is empty
 *           (unary reply: message and status in one batch).
 * Callbacks (start, message, half-close, done) run one at a time per call
 * (in_handler), on the pool or inline on the queue thread.
 *
 * Invariants: on_done runs exactly once, when close, recv, send and status have
 * all completed and no callback is running; the grpc_call is released right after
 * and the server's live count drops; the rpc_call_t itself lives until its last
 * reference goes (rpc_call_ref). Once close has completed or finish was asked,
 * sends return CR_ECLOSED and no new operation is started except the status.
 *
 * Shutdown (FACTS.md): shutdown_and_notify, cancel_all_calls, wait for the notify
 * tag, wait until live (calls holding a grpc_call plus outstanding requests) is 0,
 * grpc_server_destroy, shut down and drain every queue, join, destroy queues. */
#define _GNU_SOURCE
#include "common/rpc/internal.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/time.h"

enum { TAG_REQUEST = 1, TAG_CLOSE, TAG_RECV, TAG_SEND, TAG_STATUS, TAG_SHUTDOWN };
enum { W_START = 1, W_MESSAGE, W_RAW, W_HALF_CLOSE, W_DONE };

typedef struct queue {
    rpc_server_t *srv;
    int index;
    grpc_completion_queue *cq;
    pthread_t thread;
    int running;
} queue_t;

/* One outstanding grpc_server_request_(registered_)call. */
typedef struct req_slot {
    rpc_tag_t tag;
    rpc_server_t *srv;
    queue_t *q;
    int method;                    /* index, or -1 for the unknown-method catcher */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;     /* unknown methods only */
} req_slot_t;

struct rpc_server {
    grpc_server *gs;
    const rpc_method_t *methods;
    size_t n_methods;
    void **reg;
    char *token;                   /* every method accepts it; NULL = none */
    char *scope_secret[RPC_TOKEN_SCOPES];   /* rpc_opts_t.tokens, copied; NULL = none */
    char *scope_name[RPC_TOKEN_SCOPES];
    size_t max_message;
    int send_cap;
    int port;
    int n_queues, n_pool;
    queue_t *queues;
    rpc_pool_t pool;
    rpc_tag_t shutdown_tag;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    long live;                     /* requests outstanding + calls holding a grpc_call */
    int started, stopping, stopped, shutdown_notified;
};

struct rpc_call {
    rpc_tag_t t_close, t_recv, t_send, t_status;
    rpc_work_t work;
    rpc_server_t *srv;             /* not to be touched once on_done has run */
    size_t max_message;
    const rpc_method_t *m;         /* NULL: unknown method, answered UNIMPLEMENTED */
    char *unknown_name;
    grpc_call *gc;
    gpr_timespec deadline;
    rpc_peer_t peer;
    void *data;
    atomic_int refs;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* operations in flight */
    int close_pending, recv_pending, send_pending, status_pending;
    int cancelled;                 /* written by RECV_CLOSE_ON_SERVER */
    int close_done, md_sent, finishing, status_started, half_closed, done_dispatched, in_handler;
    rpc_code_t code;               /* the status to send / sent */
    grpc_slice details;
    int details_set;
    grpc_byte_buffer *recv_bb;
    grpc_byte_buffer *reply_bb;    /* unary fast path: sent with the status */
    rpc_sendq_t sendq;
    int waiters;                   /* senders blocked on a full queue */
    int work_kind;
    grpc_byte_buffer *work_bb;
    rpc_bytes_t *work_raw;         /* a message an inline on_raw left for the pool */
    long n_messages;
};

/* ---- helpers ------------------------------------------------------------ */

static const char *call_name(const rpc_call_t *c)
{
    return c->m ? c->m->name : c->unknown_name ? c->unknown_name : "?";
}

static void live_add(rpc_server_t *s, long d)
{
    pthread_mutex_lock(&s->mu);
    s->live += d;
    if (s->live == 0) pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int start_batch(rpc_call_t *c, const grpc_op *ops, size_t n, rpc_tag_t *tag)
{
    grpc_call_error e = grpc_call_start_batch(c->gc, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        CR_ERROR("rpc", "%s: grpc_call_start_batch failed: %d (our bug)", call_name(c), (int)e);
        return -1;
    }
    return 0;
}

static void call_free(rpc_call_t *c)
{
    rpc_sendq_free(&c->sendq);
    if (c->details_set) grpc_slice_unref(c->details);
    free((char *)c->peer.address);
    free((char *)c->peer.cert_cn);
    free((char *)c->peer.token);
    free(c->unknown_name);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

void rpc_call_ref(rpc_call_t *c) { atomic_fetch_add(&c->refs, 1); }

void rpc_call_unref(rpc_call_t *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1) call_free(c);
}

static void dispatch(rpc_call_t *c);

/* Called with c->mu held: starts the next send, or the status when the queue is
 * empty and finish was asked. */
static void pump_locked(rpc_call_t *c)
{
    if (c->send_pending || c->status_pending || c->close_done) return;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    if (c->sendq.count) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = rpc_sendq_head(&c->sendq);
        /* more are queued behind it: let gRPC coalesce them into fewer writes */
        if (c->sendq.count > 1) ops[n].flags = GRPC_WRITE_BUFFER_HINT;
        n++;
        c->md_sent = 1;
        if (start_batch(c, ops, n, &c->t_send) == 0) c->send_pending = 1;
        return;
    }
    if (!c->finishing || c->status_started) return;
    if (c->reply_bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply_bb;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)c->code;
    ops[n].data.send_status_from_server.status_details = c->details_set ? &c->details : NULL;
    n++;
    c->md_sent = 1;
    c->status_started = 1;
    if (start_batch(c, ops, n, &c->t_status) == 0) c->status_pending = 1;
}

/* Called with c->mu held: is the call over and its on_done due? */
static int done_due_locked(rpc_call_t *c)
{
    if (c->done_dispatched || c->in_handler) return 0;
    if (!c->close_done || c->recv_pending || c->send_pending || c->status_pending) return 0;
    c->done_dispatched = 1;
    c->in_handler = 1;
    c->work_kind = W_DONE;
    return 1;
}

/* Unary and server-stream calls read exactly one request. */
static int one_request(const rpc_call_t *c)
{
    return c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM;
}

/* Called with c->mu held: posts the next receive if the call still wants one. */
static void want_recv_locked(rpc_call_t *c)
{
    if (c->recv_pending || c->half_closed || c->finishing || c->close_done) return;
    if (one_request(c) && c->n_messages > 0) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    if (start_batch(c, &op, 1, &c->t_recv) == 0) c->recv_pending = 1;
}

static int finish_locked(rpc_call_t *c, rpc_code_t code, const char *msg)
{
    if (c->finishing || c->close_done) return CR_ECLOSED;
    c->finishing = 1;
    c->code = code;
    if (msg && *msg) {
        c->details = grpc_slice_from_copied_string(msg);
        c->details_set = 1;
    }
    pthread_cond_broadcast(&c->cv);   /* blocked senders give up */
    pump_locked(c);
    return 0;
}

/* ---- callbacks ------------------------------------------------------------ */

static void log_bad_message(rpc_call_t *c, size_t len)
{
    CR_WARN("rpc", "%s from %s: malformed %s (%zu bytes) as message %ld: answered INVALID_ARGUMENT",
            call_name(c), c->peer.address, c->m->input->name, len, c->n_messages + 1);
}

/* Unpacks and hands one request to on_message (or the bytes to on_raw); 0 when
 * the handler ran, 1 when an inline on_raw left the message for the pool
 * (c->work_raw), -1 when the layer refused it. */
static int deliver(rpc_call_t *c, grpc_byte_buffer *bb)
{
    size_t len = grpc_byte_buffer_length(bb);
    if (len > c->max_message) {
        grpc_byte_buffer_destroy(bb);
        CR_WARN("rpc", "%s from %s: message %ld of %zu bytes exceeds the limit of %zu bytes: "
                "answered RESOURCE_EXHAUSTED", call_name(c), c->peer.address, c->n_messages + 1, len,
                c->max_message);
        rpc_call_finish(c, RPC_RESOURCE_EXHAUSTED, "message of %zu bytes exceeds the limit of %zu bytes",
                        len, c->max_message);
        return -1;
    }
    if (c->m->on_raw) {
        rpc_bytes_t *b = rpc_bytes_wrap(bb);   /* the handler owns it from here */
        if (!b) {
            rpc_call_finish(c, RPC_RESOURCE_EXHAUSTED, "server out of memory");
            return -1;
        }
        c->n_messages++;
        if (c->m->on_raw(c, b) != RPC_RAW_LATER) return 0;
        if (rpc_on_queue_thread) {
            c->work_raw = b;
            return 1;
        }
        CR_ERROR("rpc", "%s: on_raw asked for later on a handler thread (our bug): message dropped", call_name(c));
        rpc_bytes_free(b);
        return 0;
    }
    ProtobufCMessage *msg = rpc_msg_unpack(bb, c->m->input, &len);
    grpc_byte_buffer_destroy(bb);
    if (!msg) {
        log_bad_message(c, len);
        rpc_call_finish(c, RPC_INVALID_ARGUMENT, "malformed %s (%zu bytes)", c->m->input->name, len);
        return -1;
    }
    c->n_messages++;
    if (c->m->on_message) c->m->on_message(c, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}

static void release(rpc_call_t *c)
{
    rpc_server_t *s = c->srv;
    pthread_mutex_lock(&c->mu);
    rpc_sendq_clear(&c->sendq);
    if (c->reply_bb) grpc_byte_buffer_destroy(c->reply_bb);
    c->reply_bb = NULL;
    grpc_call *gc = c->gc;
    c->gc = NULL;
    pthread_mutex_unlock(&c->mu);
    grpc_call_unref(gc);
    rpc_call_unref(c);
    live_add(s, -1);
}

static void run_work(rpc_work_t *w)
{
    rpc_call_t *c = (rpc_call_t *)((char *)w - offsetof(rpc_call_t, work));
    int kind = c->work_kind;
    switch (kind) {
    case W_START:
        c->m->on_start(c);
        break;
    case W_MESSAGE: {
        grpc_byte_buffer *bb = c->work_bb;
        c->work_bb = NULL;
        if (deliver(c, bb) == 1) { /* the same message, again, where it may block */
            c->work_kind = W_RAW;
            rpc_pool_submit(&c->srv->pool, &c->work);
            return;
        }
        break;
    }
    case W_RAW: {
        rpc_bytes_t *b = c->work_raw;
        c->work_raw = NULL;
        if (c->m->on_raw(c, b) == RPC_RAW_LATER) {
            CR_ERROR("rpc", "%s: on_raw asked for later on a handler thread (our bug): message dropped",
                     call_name(c));
            rpc_bytes_free(b);
        }
        break;
    }
    case W_HALF_CLOSE:
        if (one_request(c) && c->n_messages == 0) {
            CR_WARN("rpc", "%s from %s: no request message: answered INVALID_ARGUMENT",
                    call_name(c), c->peer.address);
            rpc_call_finish(c, RPC_INVALID_ARGUMENT, "no request message");
        } else if (c->m->on_half_close) {
            c->m->on_half_close(c);
        } else if (!one_request(c)) {
            rpc_call_finish(c, RPC_OK, NULL);
        }
        break;
    case W_DONE: {
        rpc_code_t code = c->cancelled ? RPC_CANCELLED : c->code;
        if (c->m && c->m->on_done) c->m->on_done(c, code);
        release(c);
        return;
    }
    }
    pthread_mutex_lock(&c->mu);
    c->in_handler = 0;
    if (kind != W_HALF_CLOSE) want_recv_locked(c);
    int done = done_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (done) dispatch(c);
}

static void dispatch(rpc_call_t *c)
{
    if (c->m && (c->m->flags & RPC_METHOD_INLINE)) {
        run_work(&c->work);
        return;
    }
    if (!c->m && c->work_kind == W_DONE) {   /* nothing of the application's to run */
        run_work(&c->work);
        return;
    }
    rpc_pool_submit(&c->srv->pool, &c->work);
}

/* ---- events from the completion queue -------------------------------------- */

static void on_close(rpc_call_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->close_pending = 0;
    c->close_done = 1;
    if (c->cancelled) {
        int stopping = c->srv->stopping;
        int64_t left = rpc_deadline_left_ms(c->deadline);
        /* A client ends a stream by cancelling it as often as by half-closing, so
         * for streams this is routine (debug); a unary call that ends without its
         * reply is worth a line. gRPC does not say which of the reasons it was. */
        int routine = c->m && c->m->kind != RPC_UNARY;
        if (stopping)
            CR_INFO("rpc", "%s from %s: cancelled by server shutdown", call_name(c), c->peer.address);
        else
            cr_log(routine ? CR_LOG_DEBUG : CR_LOG_INFO, "rpc", "%s from %s: call ended early after %ld messages: %s",
                   call_name(c), c->peer.address, c->n_messages,
                   left == 0 ? "its deadline passed"
                             : "the client cancelled, the connection was lost, or a message exceeded the size limit");
    }
    pthread_cond_broadcast(&c->cv);
    int done = done_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (done) dispatch(c);
}

static void on_recv(rpc_call_t *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    c->recv_pending = 0;
    grpc_byte_buffer *bb = c->recv_bb;
    c->recv_bb = NULL;
    int work = 0;
    if (bb && ok && !c->finishing && !c->close_done) {
        c->work_bb = bb;
        work = W_MESSAGE;
    } else {
        if (bb) grpc_byte_buffer_destroy(bb);
        /* !ok: the call failed (cancel, lost peer, a message gRPC refused); close
         * will say so. ok with no message: the client half-closed. */
        if (ok && !c->half_closed && !c->finishing && !c->close_done) work = W_HALF_CLOSE;
        c->half_closed = 1;
    }
    int done = 0;
    if (work) {
        c->in_handler = 1;
        c->work_kind = work;
    } else {
        done = done_due_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    if (work || done) dispatch(c);
}

static void on_send(rpc_call_t *c, int ok)
{
    pthread_mutex_lock(&c->mu);
    c->send_pending = 0;
    rpc_sendq_pop(&c->sendq);
    if (!ok) rpc_sendq_clear(&c->sendq);   /* the call is gone; close will tell */
    /* Wake blocked senders once the queue is half empty, not per message. */
    if (c->waiters && (!ok || c->sendq.count <= c->sendq.cap / 2)) pthread_cond_broadcast(&c->cv);
    pump_locked(c);
    int done = done_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (done) dispatch(c);
}

static void on_status(rpc_call_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->status_pending = 0;
    if (c->reply_bb) {
        grpc_byte_buffer_destroy(c->reply_bb);
        c->reply_bb = NULL;
    }
    int done = done_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (done) dispatch(c);
}

/* "the admin token" / "the admin or join token", for refusals. */
static void scope_names(const rpc_server_t *s, unsigned scopes, char *out, size_t n)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < RPC_TOKEN_SCOPES; i++) {
        if (!(scopes & (1u << i))) continue;
        int w = snprintf(out + len, n - len, "%s%s", len ? " or " : "the ", s->scope_name[i]);
        if (w < 0 || (size_t)w >= n - len) break;
        len += (size_t)w;
    }
    if (len && len + 7 < n) strcat(out, " token");
}

/* Whether the call's bearer token (tok, NULL: none) lets it call its method
 * (rpc_method_t.scopes says how): RPC_OK, or the refusal's status with why. */
static rpc_code_t check_token(rpc_call_t *c, const char *tok, size_t toklen, char *why, size_t why_len)
{
    const rpc_server_t *s = c->srv;
    unsigned scopes = c->m ? c->m->scopes : 0;
    c->peer.token_scope = -1;
    int all_scopes = scopes != 0;
    for (int i = 0; i < RPC_TOKEN_SCOPES; i++)
        if ((scopes & (1u << i)) && !s->scope_secret[i]) all_scopes = 0;
    int guarded = c->m && (s->token || all_scopes);
    /* Every secret is compared, matched or not, so timing tells nothing of which. */
    int every = 0, match = -1;
    if (tok) {
        every = s->token && rpc_token_equal(tok, toklen, s->token, strlen(s->token));
        for (int i = 0; i < RPC_TOKEN_SCOPES; i++)
            if (s->scope_secret[i] &&
                rpc_token_equal(tok, toklen, s->scope_secret[i], strlen(s->scope_secret[i])) && match < 0)
                match = i;
    }
    if (every || (match >= 0 && (scopes & (1u << match)))) {
        c->peer.token_ok = 1;
        c->peer.token_scope = every ? -1 : match;
        return RPC_OK;
    }
    if (!guarded) return RPC_OK;
    char want[160];
    if (scopes) scope_names(s, scopes, want, sizeof want);
    else snprintf(want, sizeof want, "the server's token");
    if (match >= 0) {
        snprintf(why, why_len, "the %s token may not call %s: it needs %s", s->scope_name[match], call_name(c),
                 want);
        return RPC_PERMISSION_DENIED;
    }
    snprintf(why, why_len, "%s bearer token: %s needs %s", tok ? "wrong" : "no", call_name(c), want);
    return RPC_UNAUTHENTICATED;
}

/* Reads identity from metadata and the auth context; RPC_OK when allowed, else
 * the refusal's status with why. */
static rpc_code_t check_peer(rpc_call_t *c, const grpc_metadata_array *md, char *why, size_t why_len)
{
    char *addr = grpc_call_get_peer(c->gc);
    c->peer.address = strdup(addr ? addr : "unknown peer");
    gpr_free(addr);

    grpc_auth_context *ac = grpc_call_auth_context(c->gc);
    if (ac) {
        grpc_auth_property_iterator it =
            grpc_auth_context_find_properties_by_name(ac, GRPC_X509_CN_PROPERTY_NAME);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p && p->value) c->peer.cert_cn = strndup(p->value, p->value_length);
        grpc_auth_context_release(ac);
    }

    const char *tok = NULL;
    size_t toklen = 0;
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice *k = &md->metadata[i].key, *v = &md->metadata[i].value;
        if (GRPC_SLICE_LENGTH(*k) == 13 && memcmp(GRPC_SLICE_START_PTR(*k), "authorization", 13) == 0 &&
            GRPC_SLICE_LENGTH(*v) > 7 && memcmp(GRPC_SLICE_START_PTR(*v), "Bearer ", 7) == 0) {
            tok = (const char *)GRPC_SLICE_START_PTR(*v) + 7;
            toklen = GRPC_SLICE_LENGTH(*v) - 7;
        }
    }
    if (tok) c->peer.token = strndup(tok, toklen);
    return check_token(c, tok, toklen, why, why_len);
}

static void post_request(req_slot_t *r);

static void on_request(req_slot_t *r, int ok)
{
    rpc_server_t *s = r->srv;
    if (!ok) {   /* the server is shutting down: this request will not come back */
        grpc_metadata_array_destroy(&r->md);
        if (r->method < 0) grpc_call_details_destroy(&r->details);
        free(r);
        live_add(s, -1);
        return;
    }
    rpc_call_t *c = calloc(1, sizeof *c);
    int refused = !c || rpc_sendq_init(&c->sendq, s->send_cap) != 0;
    if (refused) {
        CR_ERROR("rpc", "no memory for an incoming call: refused");
        grpc_call_cancel_with_status(r->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "server out of memory", NULL);
        grpc_call_unref(r->call);
        if (c) free(c);
    } else {
        c->srv = s;
        c->max_message = s->max_message;
        c->m = r->method >= 0 ? &s->methods[r->method] : NULL;
        c->gc = r->call;
        c->deadline = r->deadline;
        c->code = RPC_OK;
        atomic_init(&c->refs, 1);
        pthread_mutex_init(&c->mu, NULL);
        rpc_cond_init_monotonic(&c->cv);
        c->t_close = (rpc_tag_t){TAG_CLOSE, c};
        c->t_recv = (rpc_tag_t){TAG_RECV, c};
        c->t_send = (rpc_tag_t){TAG_SEND, c};
        c->t_status = (rpc_tag_t){TAG_STATUS, c};
        c->work.fn = run_work;
        if (!c->m)
            c->unknown_name = strndup((const char *)GRPC_SLICE_START_PTR(r->details.method),
                                      GRPC_SLICE_LENGTH(r->details.method));
        live_add(s, 1);
    }
    r->call = NULL;
    grpc_metadata_array md = r->md;
    grpc_metadata_array_init(&r->md);
    if (r->method < 0) {
        grpc_call_details_destroy(&r->details);
        grpc_call_details_init(&r->details);
    }
    post_request(r);   /* take the next call of this method before serving this one */
    if (refused) {
        grpc_metadata_array_destroy(&md);
        return;
    }

    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    pthread_mutex_lock(&c->mu);
    if (start_batch(c, &op, 1, &c->t_close) == 0) c->close_pending = 1;
    else c->close_done = 1;
    char why[320];
    rpc_code_t refused_code = check_peer(c, &md, why, sizeof why);
    if (refused_code != RPC_OK)
        CR_WARN("rpc", "%s from %s: rejected: %s: answered %s", call_name(c), c->peer.address, why,
                rpc_code_name(refused_code));
    grpc_metadata_array_destroy(&md);
    int work = 0;
    if (!c->m) {
        CR_WARN("rpc", "%s from %s: no such method: answered UNIMPLEMENTED", call_name(c), c->peer.address);
        finish_locked(c, RPC_UNIMPLEMENTED, "no such method");
    } else if (refused_code != RPC_OK) {
        finish_locked(c, refused_code, why);   /* the client reads why as the status details */
    } else if (c->m->on_start) {
        c->in_handler = 1;
        c->work_kind = work = W_START;
    } else {
        want_recv_locked(c);   /* nothing to run first: read the first request now */
    }
    int done = work ? 0 : done_due_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (work || done) dispatch(c);
}

static void post_request(req_slot_t *r)
{
    rpc_server_t *s = r->srv;
    grpc_call_error e;
    pthread_mutex_lock(&s->mu);
    int stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stopping) {
        e = GRPC_CALL_ERROR;
    } else if (r->method >= 0) {
        e = grpc_server_request_registered_call(s->gs, s->reg[r->method], &r->call, &r->deadline, &r->md,
                                                NULL, r->q->cq, r->q->cq, &r->tag);
    } else {
        e = grpc_server_request_call(s->gs, &r->call, &r->details, &r->md, r->q->cq, r->q->cq, &r->tag);
    }
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&r->md);
        if (r->method < 0) grpc_call_details_destroy(&r->details);
        free(r);
        live_add(s, -1);
    }
}

static void *queue_main(void *arg)
{
    queue_t *q = arg;
    rpc_on_queue_thread = 1;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        rpc_tag_t *t = ev.tag;
        switch (t->kind) {
        case TAG_REQUEST: on_request(t->obj, ev.success); break;
        case TAG_CLOSE: on_close(t->obj); break;
        case TAG_RECV: on_recv(t->obj, ev.success); break;
        case TAG_SEND: on_send(t->obj, ev.success); break;
        case TAG_STATUS: on_status(t->obj); break;
        case TAG_SHUTDOWN: {
            rpc_server_t *s = t->obj;
            pthread_mutex_lock(&s->mu);
            s->shutdown_notified = 1;
            pthread_cond_broadcast(&s->cv);
            pthread_mutex_unlock(&s->mu);
            break;
        }
        }
    }
    return NULL;
}

/* ---- handler-facing API ----------------------------------------------------- */

const rpc_peer_t *rpc_call_peer(const rpc_call_t *c) { return &c->peer; }
int rpc_call_may_block(const rpc_call_t *c) { return !rpc_on_queue_thread; }
const rpc_method_t *rpc_call_method(const rpc_call_t *c) { return c->m; }
int64_t rpc_call_deadline_left_ms(const rpc_call_t *c) { return rpc_deadline_left_ms(c->deadline); }
void rpc_call_set_data(rpc_call_t *c, void *data) { c->data = data; }
void *rpc_call_data(const rpc_call_t *c) { return c->data; }

int rpc_call_send_queued(const rpc_call_t *c)
{
    rpc_call_t *mc = (rpc_call_t *)c;
    pthread_mutex_lock(&mc->mu);
    int n = mc->sendq.count;
    pthread_mutex_unlock(&mc->mu);
    return n;
}

/* Queues a packed message (taking bb in every case), waiting for room as
 * rpc_call_send describes. */
static int call_queue(rpc_call_t *c, grpc_byte_buffer *bb, int64_t timeout_ms, cr_err_t *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->finishing || c->close_done || !c->gc) {
            pthread_mutex_unlock(&c->mu);
            grpc_byte_buffer_destroy(bb);
            return cr_err_set(err, CR_ECLOSED, "%s: call already finished or cancelled", call_name(c));
        }
        if (c->sendq.count < c->sendq.cap) break;
        int timed_out = timeout_ms == 0 || rpc_on_queue_thread;
        if (!timed_out) {
            c->waiters++;
            timed_out = rpc_cond_wait_until(&c->cv, &c->mu, deadline) != 0;
            c->waiters--;
        }
        if (timed_out) {
            if (c->sendq.count < c->sendq.cap) break;
            pthread_mutex_unlock(&c->mu);
            grpc_byte_buffer_destroy(bb);
            return cr_err_set(err, CR_EBUSY, "%s: send queue full (%d messages)", call_name(c), c->sendq.cap);
        }
    }
    rpc_sendq_push(&c->sendq, bb);
    pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int rpc_call_send(rpc_call_t *c, const ProtobufCMessage *msg, int64_t timeout_ms, cr_err_t *err)
{
    if (!c->m) return cr_err_set(err, CR_EINVAL, "call has no method");
    grpc_byte_buffer *bb = rpc_msg_pack(msg, c->m->output, c->max_message, err);
    if (!bb) return err ? err->code : CR_EINVAL;
    return call_queue(c, bb, timeout_ms, err);
}

int rpc_call_send_out(rpc_call_t *c, rpc_out_t *o, int64_t timeout_ms, cr_err_t *err)
{
    size_t n = rpc_out_len(o);
    if (!c->m || n > c->max_message) {
        rpc_out_destroy(o);
        if (!c->m) return cr_err_set(err, CR_EINVAL, "call has no method");
        return cr_err_set(err, CR_ETOOBIG, "%s: message of %zu bytes exceeds the message limit of %zu bytes",
                          call_name(c), n, c->max_message);
    }
    return call_queue(c, rpc_out_take(o), timeout_ms, err);
}

int rpc_call_reply(rpc_call_t *c, const ProtobufCMessage *msg, cr_err_t *err)
{
    if (!c->m) return cr_err_set(err, CR_EINVAL, "call has no method");
    grpc_byte_buffer *bb = rpc_msg_pack(msg, c->m->output, c->max_message, err);
    if (!bb) {
        int code = err ? err->code : CR_EINVAL;
        CR_ERROR("rpc", "%s: reply not sent: %s", call_name(c), err ? err->msg : "pack failed");
        rpc_call_finish(c, RPC_INTERNAL, "reply could not be sent");
        return code;
    }
    pthread_mutex_lock(&c->mu);
    if (c->finishing || c->close_done) {
        pthread_mutex_unlock(&c->mu);
        grpc_byte_buffer_destroy(bb);
        return cr_err_set(err, CR_ECLOSED, "%s: call already finished or cancelled", call_name(c));
    }
    if (c->sendq.count == 0 && !c->send_pending) c->reply_bb = bb;   /* one batch */
    else if (c->sendq.count < c->sendq.cap) rpc_sendq_push(&c->sendq, bb);
    else c->reply_bb = bb;   /* after the queue drains, with the status */
    finish_locked(c, RPC_OK, NULL);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int rpc_call_finish(rpc_call_t *c, rpc_code_t code, const char *fmt, ...)
{
    char msg[CR_ERR_MSG_MAX] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_lock(&c->mu);
    int rc = finish_locked(c, code, msg);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int rpc_call_fail(rpc_call_t *c, const cr_err_t *e)
{
    int code = e ? e->code : CR_EINTERNAL;
    return rpc_call_finish(c, rpc_code_from_err(code), "%s", e && e->msg[0] ? e->msg : cr_err_str(code));
}

/* ---- server lifecycle --------------------------------------------------------- */

static int check_methods(const rpc_method_t *m, size_t n, cr_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!m[i].name || m[i].name[0] != '/' || !strchr(m[i].name + 1, '/'))
            return cr_err_set(err, CR_EINVAL, "method %zu: name \"%s\" is not /package.Service/Method",
                              i, m[i].name ? m[i].name : "(null)");
        if (!m[i].input || !m[i].output)
            return cr_err_set(err, CR_EINVAL, "method %s: input and output descriptors are required", m[i].name);
        if ((unsigned)m[i].kind > RPC_BIDI)
            return cr_err_set(err, CR_EINVAL, "method %s: unknown kind %d", m[i].name, (int)m[i].kind);
        if (m[i].scopes >> RPC_TOKEN_SCOPES)
            return cr_err_set(err, CR_EINVAL, "method %s: token scopes 0x%x name a scope past the last (%d)",
                              m[i].name, m[i].scopes, RPC_TOKEN_SCOPES - 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(m[i].name, m[j].name) == 0)
                return cr_err_set(err, CR_EINVAL, "method %s listed twice", m[i].name);
    }
    return 0;
}

int rpc_server_create(rpc_server_t **out, const char *addr, const rpc_opts_t *opts,
                      const rpc_method_t *methods, size_t n_methods, cr_err_t *err)
{
    *out = NULL;
    rpc_opts_t none = {0};
    if (!opts) opts = &none;
    int rc = check_methods(methods, n_methods, err);
    if (rc) return rc;
    grpc_server_credentials *creds = NULL;
    rc = rpc_server_creds(opts, &creds, err);
    if (rc) return rc;

    rpc_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        grpc_server_credentials_release(creds);
        return cr_err_set(err, CR_ENOMEM, "no memory for a server");
    }
    rpc_lib_acquire();
    s->methods = methods;
    s->n_methods = n_methods;
    s->max_message = rpc_opts_max_message(opts);
    s->send_cap = rpc_opts_send_queue(opts);
    s->token = opts->token ? strdup(opts->token) : NULL;
    for (int i = 0; i < RPC_TOKEN_SCOPES; i++) {
        char dflt[16];
        snprintf(dflt, sizeof dflt, "scope %d", i);
        s->scope_secret[i] = opts->tokens[i].secret ? strdup(opts->tokens[i].secret) : NULL;
        s->scope_name[i] = strdup(opts->tokens[i].name ? opts->tokens[i].name : dflt);
    }
    s->n_queues = opts->queue_threads > 0 ? opts->queue_threads : 1;
    s->n_pool = opts->pool_threads > 0 ? opts->pool_threads : 2;
    s->shutdown_tag = (rpc_tag_t){TAG_SHUTDOWN, s};
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);

    rpc_args_t args;
    rpc_args_build(&args, opts, 1);
    s->gs = grpc_server_create(&args.set, NULL);
    s->reg = calloc(n_methods ? n_methods : 1, sizeof *s->reg);
    s->queues = calloc((size_t)s->n_queues, sizeof *s->queues);
    for (int i = 0; i < s->n_queues && s->queues; i++) {
        s->queues[i].srv = s;
        s->queues[i].index = i;
        s->queues[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(s->gs, s->queues[i].cq, NULL);
    }
    /* Requests are read with RECV_MESSAGE for every kind (not as the call's
     * initial payload), so a request gRPC refuses still surfaces as a call we log. */
    for (size_t i = 0; i < n_methods && s->reg; i++)
        s->reg[i] = grpc_server_register_method(s->gs, methods[i].name, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    if (!s->reg || !s->queues) {
        grpc_server_credentials_release(creds);
        rpc_server_destroy(s);
        return cr_err_set(err, CR_ENOMEM, "no memory for a server");
    }
    s->port = grpc_server_add_http2_port(s->gs, addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        rpc_server_destroy(s);
        return cr_err_set(err, CR_EUNAVAIL, "cannot listen on %s (address in use or invalid)", addr);
    }
    *out = s;
    return 0;
}

int rpc_server_port(const rpc_server_t *s) { return s->port; }

int rpc_server_start(rpc_server_t *s, cr_err_t *err)
{
    if (s->started) return cr_err_set(err, CR_EINVAL, "server already started");
    int rc = rpc_pool_start(&s->pool, s->n_pool, err);
    if (rc) return rc;
    grpc_server_start(s->gs);
    s->started = 1;
    for (int i = 0; i < s->n_queues; i++) {
        for (int m = -1; m < (int)s->n_methods; m++) {
            req_slot_t *r = calloc(1, sizeof *r);
            if (!r) continue;   /* that method just gets fewer slots */
            r->tag = (rpc_tag_t){TAG_REQUEST, r};
            r->srv = s;
            r->q = &s->queues[i];
            r->method = m;
            grpc_metadata_array_init(&r->md);
            if (m < 0) grpc_call_details_init(&r->details);
            live_add(s, 1);
            post_request(r);
        }
        if (pthread_create(&s->queues[i].thread, NULL, queue_main, &s->queues[i]) != 0) {
            CR_ERROR("rpc", "cannot start queue thread %d", i);
            continue;
        }
        s->queues[i].running = 1;
    }
    return 0;
}

void rpc_server_stop(rpc_server_t *s)
{
    if (!s || s->stopped) return;
    if (!s->started) {
        /* gRPC insists on a shutdown before destroy once a port was added */
        grpc_server_shutdown_and_notify(s->gs, s->queues[0].cq, &s->shutdown_tag);
        while (grpc_completion_queue_next(s->queues[0].cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).tag !=
               &s->shutdown_tag) {}
        s->stopped = 1;
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_mutex_unlock(&s->mu);
    grpc_server_shutdown_and_notify(s->gs, s->queues[0].cq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->gs);
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown_notified || s->live > 0) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    s->stopped = 1;
}

void rpc_server_destroy(rpc_server_t *s)
{
    if (!s) return;
    if (s->gs && s->queues) rpc_server_stop(s);
    if (s->gs) grpc_server_destroy(s->gs);
    for (int i = 0; s->queues && i < s->n_queues; i++) {
        queue_t *q = &s->queues[i];
        if (!q->cq) continue;
        grpc_completion_queue_shutdown(q->cq);
        if (q->running) {
            pthread_join(q->thread, NULL);
        } else {
            while (grpc_completion_queue_next(q->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN) {}
        }
        grpc_completion_queue_destroy(q->cq);
    }
    rpc_pool_stop(&s->pool);
    free(s->queues);
    free(s->reg);
    free(s->token);
    for (int i = 0; i < RPC_TOKEN_SCOPES; i++) {
        if (s->scope_secret[i]) explicit_bzero(s->scope_secret[i], strlen(s->scope_secret[i]));
        free(s->scope_secret[i]);
        free(s->scope_name[i]);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    rpc_lib_release();
}
