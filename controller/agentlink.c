/* agentlink.c - the AgentLink.Session stream, the controller's end of each node
 * agent's one connection.
 *
 * Protocol (agentlink.proto): the first message must be an Inventory; it is
 * checked and applied (liveness.c decides whether this session may speak for the
 * node) and answered with SessionAccepted, or the stream is ended with the status
 * and message that say what was wrong. Then Heartbeats, each answered with a
 * HeartbeatAck; a later Inventory updates the registry. WorkerStatus reports (and
 * the WorkerList an agent sends after each Inventory, which lets a restarted
 * controller adopt running workers) and ProgressReports go to the experiments
 * (exphost.c), LogChunks to the Logs call that asked for them; an accepted
 * session repairs the experiments that wait for its node. Worker events and
 * command results are logged. When the stream ends for any reason, liveness.c
 * marks the node lost if this was its current session. Bad messages end this one
 * stream; the daemon keeps serving.
 *
 * Threads: the callbacks run inline on the gRPC queue thread (RPC_METHOD_INLINE),
 * so a heartbeat costs no thread hop and never waits behind a slow Registry call
 * on the pool. Everything that touches SQLite (an inventory, the end of a session)
 * is handed to the controller's work queue, one FIFO thread, which keeps a
 * session's jobs in arrival order and frees the session after its last job. */
#include "controller/server_int.h"
#include "common/log.h"
#include "controller/workq.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct session {
    ctl_server_t *srv;
    rpc_call_t *call;         /* referenced from on_start until the release job */
    char node[64];            /* written by the worker before id is published */
    _Atomic uint64_t id;      /* liveness session id; 0 until the inventory is accepted */
    atomic_int pending;       /* inventories queued, not yet handled */
    int half_closed;          /* the agent said it will send no more */
    char why[160];            /* why the session ended, when we know better than the code */
    rpc_code_t end_code;
} session_t;

typedef struct inv_job {
    session_t *s;
    Corral__V1__Inventory *inv;   /* our own copy: the callback's message is borrowed */
} inv_job_t;

typedef struct msg_job {
    session_t *s;
    ProtobufCMessage *msg;        /* our own copy of a WorkerStatus, WorkerList or ProgressReport */
} msg_job_t;

static void fail(session_t *s, int rc, const cr_err_t *err)
{
    snprintf(s->why, sizeof s->why, "session refused: %s", err->msg);
    rpc_call_finish(s->call, ctl_status_from_err(rc), "%s", err->msg);
}

/* ---- jobs on the work queue (may wait for SQLite) ------------------------------ */

static void inventory_job(void *arg)
{
    inv_job_t *j = arg;
    session_t *s = j->s;
    const Corral__V1__Inventory *inv = j->inv;
    cr_err_t err = {0};
    const char *peer = rpc_call_peer(s->call)->address;
    uint64_t cur = atomic_load(&s->id);
    if (!inv->node || !*inv->node) {
        cr_err_set(&err, CR_EINVAL, "inventory has no node name");
        fail(s, CR_EINVAL, &err);
    } else if (cur && strcmp(s->node, inv->node) != 0) {
        cr_err_set(&err, CR_EINVAL, "this session speaks for node %s, not %.64s", s->node, inv->node);
        fail(s, CR_EINVAL, &err);
    } else if (cur) {
        int rc = ctl_liveness_update(s->srv->lv, inv, cur, &err);
        if (rc) {
            CR_WARN("agentlink", "node %s: inventory update refused: %s", s->node, err.msg);
            fail(s, rc, &err);
        }
    } else {
        uint64_t id = 0;
        int rc = ctl_liveness_claim(s->srv->lv, inv, s->call, &id, &err);
        if (rc) {
            CR_WARN("agentlink", "refused session from %s (node %.64s): %s", peer ? peer : "?", inv->node, err.msg);
            fail(s, rc, &err);
        } else {
            snprintf(s->node, sizeof s->node, "%s", inv->node);
            atomic_store(&s->id, id);
            CR_INFO("agentlink", "node %s up from %s: %zu robots, %zu GPUs", s->node, peer ? peer : "?",
                    inv->n_robots, inv->n_gpus);
            Corral__V1__SessionAccepted acc = CORRAL__V1__SESSION_ACCEPTED__INIT;
            acc.session_id = id;
            acc.heartbeat_interval_ms = (uint32_t)s->srv->heartbeat_ms;
            Corral__V1__ControllerMessage out = CORRAL__V1__CONTROLLER_MESSAGE__INIT;
            out.body_case = CORRAL__V1__CONTROLLER_MESSAGE__BODY_ACCEPTED;
            out.accepted = &acc;
            if (rpc_call_send(s->call, &out.base, 0, &err))
                CR_WARN("agentlink", "node %s: cannot send SessionAccepted: %s", s->node, err.msg);
            ctl_exphost_nodes_changed(s->srv);
        }
    }
    atomic_fetch_sub(&s->pending, 1);
    corral__v1__inventory__free_unpacked(j->inv, NULL);
    free(j);
}

/* Reports from a session not (or no longer) accepted are dropped: its node may
 * belong to another agent. */
static void worker_job(void *arg)
{
    msg_job_t *j = arg;
    session_t *s = j->s;
    if (atomic_load(&s->id)) {
        if (j->msg->descriptor == &corral__v1__worker_status__descriptor) {
            ctl_exphost_worker_status(s->srv, s->node, (const Corral__V1__WorkerStatus *)j->msg);
        } else if (j->msg->descriptor == &corral__v1__progress_report__descriptor) {
            ctl_exphost_progress(s->srv, s->node, (const Corral__V1__ProgressReport *)j->msg);
        } else {
            const Corral__V1__WorkerList *l = (const void *)j->msg;
            if (l->n_workers) CR_INFO("agentlink", "node %s runs %zu workers", s->node, l->n_workers);
            for (size_t i = 0; i < l->n_workers; i++) ctl_exphost_worker_status(s->srv, s->node, l->workers[i]);
        }
    }
    protobuf_c_message_free_unpacked(j->msg, NULL);
    free(j);
}

static void release_job(void *arg)
{
    session_t *s = arg;
    uint64_t id = atomic_load(&s->id);
    if (id) {
        char why[200];
        if (s->why[0]) snprintf(why, sizeof why, "%s", s->why);
        else if (s->half_closed && s->end_code == RPC_OK) snprintf(why, sizeof why, "agent closed its session");
        else snprintf(why, sizeof why, "session ended (%s: agent gone or connection lost)", rpc_code_name(s->end_code));
        ctl_liveness_release(s->srv->lv, s->node, id, why);
    }
    rpc_call_unref(s->call);
    free(s);
}

/* ---- callbacks (queue thread: never wait) ------------------------------------------ */

static void on_start(rpc_call_t *call)
{
    session_t *s = calloc(1, sizeof *s);
    if (!s) {
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, "controller out of memory");
        return;
    }
    s->srv = rpc_call_method(call)->user;
    s->call = call;
    rpc_call_ref(call);
    rpc_call_set_data(call, s);
}

/* Copies the borrowed inventory (pack, unpack) and queues it. */
static void on_inventory(session_t *s, const Corral__V1__Inventory *inv)
{
    size_t len = corral__v1__inventory__get_packed_size(inv);
    uint8_t *buf = malloc(len ? len : 1);
    inv_job_t *j = calloc(1, sizeof *j);
    if (buf && j) {
        corral__v1__inventory__pack(inv, buf);
        j->inv = corral__v1__inventory__unpack(NULL, len, buf);
    }
    free(buf);
    if (!j || !j->inv) {
        free(j);
        rpc_call_finish(s->call, RPC_RESOURCE_EXHAUSTED, "controller out of memory");
        return;
    }
    j->s = s;
    atomic_fetch_add(&s->pending, 1);
    if (ctl_workq_push(s->srv->wq, inventory_job, j) != 0) {
        atomic_fetch_sub(&s->pending, 1);
        corral__v1__inventory__free_unpacked(j->inv, NULL);
        free(j);
        rpc_call_finish(s->call, RPC_RESOURCE_EXHAUSTED, "controller out of memory");
    }
}

/* Copies a borrowed worker report and queues it behind the session's inventory. */
static void on_worker_msg(session_t *s, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    msg_job_t *j = calloc(1, sizeof *j);
    if (buf && j) {
        protobuf_c_message_pack(msg, buf);
        j->msg = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    }
    free(buf);
    if (j && j->msg) {
        j->s = s;
        if (ctl_workq_push(s->srv->wq, worker_job, j) == 0) return;
        protobuf_c_message_free_unpacked(j->msg, NULL);
    }
    free(j);
    rpc_call_finish(s->call, RPC_RESOURCE_EXHAUSTED, "controller out of memory");
}

static void on_heartbeat(rpc_call_t *call, session_t *s, const Corral__V1__Heartbeat *hb)
{
    uint64_t id = atomic_load(&s->id);
    if (!id) {
        if (atomic_load(&s->pending)) return;  /* sent before the answer to its inventory: early, harmless */
        rpc_call_finish(call, RPC_FAILED_PRECONDITION, "send an inventory before heartbeats");
        return;
    }
    if (ctl_liveness_beat(s->srv->lv, s->node, id) != 0) {
        snprintf(s->why, sizeof s->why, "session replaced or expired");
        rpc_call_finish(call, RPC_ABORTED, "this session no longer speaks for node %s; reconnect", s->node);
        return;
    }
    atomic_fetch_add(&s->srv->heartbeats, 1);
    Corral__V1__HeartbeatAck ack = CORRAL__V1__HEARTBEAT_ACK__INIT;
    ack.seq = hb->seq;
    Corral__V1__ControllerMessage out = CORRAL__V1__CONTROLLER_MESSAGE__INIT;
    out.body_case = CORRAL__V1__CONTROLLER_MESSAGE__BODY_HEARTBEAT_ACK;
    out.heartbeat_ack = &ack;
    rpc_call_send(call, &out.base, 0, NULL);  /* a full queue drops an ack, never blocks */
}

static void on_message(rpc_call_t *call, const ProtobufCMessage *msg)
{
    session_t *s = rpc_call_data(call);
    if (!s) return;
    const Corral__V1__AgentMessage *m = (const void *)msg;
    switch (m->body_case) {
    case CORRAL__V1__AGENT_MESSAGE__BODY_INVENTORY:
        on_inventory(s, m->inventory);
        break;
    case CORRAL__V1__AGENT_MESSAGE__BODY_HEARTBEAT:
        on_heartbeat(call, s, m->heartbeat);
        break;
    case CORRAL__V1__AGENT_MESSAGE__BODY_WORKER_EVENT:
        CR_INFO("agentlink", "node %s: worker %s %s (%s)", s->node, m->worker_event->worker_id,
                m->worker_event->event, m->worker_event->message);
        break;
    case CORRAL__V1__AGENT_MESSAGE__BODY_COMMAND_RESULT:
        CR_INFO("agentlink", "node %s: command %llu %s: %s", s->node,
                (unsigned long long)m->command_result->command_id,
                m->command_result->ok ? "done" : "failed", m->command_result->message);
        break;
    case CORRAL__V1__AGENT_MESSAGE__BODY_WORKER_STATUS:
        on_worker_msg(s, &m->worker_status->base);
        break;
    case CORRAL__V1__AGENT_MESSAGE__BODY_WORKER_LIST:
        on_worker_msg(s, &m->worker_list->base);
        break;
    case CORRAL__V1__AGENT_MESSAGE__BODY_PROGRESS:
        on_worker_msg(s, &m->progress->base);
        break;
    case CORRAL__V1__AGENT_MESSAGE__BODY_LOG_CHUNK:
        /* Only for a Logs call waiting on it: a copy and a signal, no SQLite. */
        if (atomic_load(&s->id)) ctl_exphost_log_chunk(s->srv, m->log_chunk);
        break;
    default:
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "agent message with no body");
        break;
    }
}

static void on_half_close(rpc_call_t *call)
{
    /* A cancelling client can look like a half-close; on_done's code tells them
     * apart (OK only for a real goodbye). */
    session_t *s = rpc_call_data(call);
    if (s) s->half_closed = 1;
    rpc_call_finish(call, RPC_OK, NULL);
}

static void on_done(rpc_call_t *call, rpc_code_t code)
{
    session_t *s = rpc_call_data(call);
    if (!s) return;
    rpc_call_set_data(call, NULL);
    s->end_code = code;
    if (ctl_workq_push(s->srv->wq, release_job, s) != 0) release_job(s);  /* out of memory: do it here */
}

void ctl_agentlink_method(ctl_server_t *srv, rpc_method_t *out)
{
    memset(out, 0, sizeof *out);
    out->name = CTL_M_SESSION;
    out->kind = RPC_BIDI;
    out->input = &corral__v1__agent_message__descriptor;
    out->output = &corral__v1__controller_message__descriptor;
    out->user = srv;
    out->on_start = on_start;
    out->on_message = on_message;
    out->on_half_close = on_half_close;
    out->on_done = on_done;
    out->flags = RPC_METHOD_INLINE;
}
