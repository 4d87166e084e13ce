/* agentlink.c - the AgentLink.Session stream, the controller's end of each node
 * agent's one connection.
 *
 * Protocol (agentlink.proto): the first message must be an Inventory; it is
 * checked and applied (liveness.c decides whether this session may speak for the
 * node) and answered with SessionAccepted, or the stream is ended with the status
 * and message that say what was wrong. Then Heartbeats, each answered with a
 * HeartbeatAck; a later Inventory updates the registry; worker events and command
 * results are logged until the experiments work consumes them. When the stream
 * ends for any reason, liveness.c marks the node lost if this was its current
 * session. Bad messages end this one stream; the daemon keeps serving. */
#include "controller/server_int.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct session {
    ctl_server_t *srv;
    char node[64];
    uint64_t id;            /* liveness session id; 0 until the inventory is accepted */
    int half_closed;        /* the agent said it will send no more */
    char why[160];          /* why the session ended, when we know better than the code */
} session_t;

static void on_start(rpc_call_t *call)
{
    session_t *s = calloc(1, sizeof *s);
    if (!s) {
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, "controller out of memory");
        return;
    }
    s->srv = rpc_call_method(call)->user;
    rpc_call_set_data(call, s);
}

static void fail(rpc_call_t *call, session_t *s, int rc, const cr_err_t *err)
{
    snprintf(s->why, sizeof s->why, "session refused: %s", err->msg);
    rpc_call_finish(call, ctl_status_from_err(rc), "%s", err->msg);
}

static void on_inventory(rpc_call_t *call, session_t *s, const Corral__V1__Inventory *inv)
{
    cr_err_t err = {0};
    const char *peer = rpc_call_peer(call)->address;
    if (!inv->node || !*inv->node) {
        cr_err_set(&err, CR_EINVAL, "inventory has no node name");
        fail(call, s, CR_EINVAL, &err);
        return;
    }
    if (s->id) {
        if (strcmp(s->node, inv->node) != 0) {
            cr_err_set(&err, CR_EINVAL, "this session speaks for node %s, not %.64s", s->node, inv->node);
            fail(call, s, CR_EINVAL, &err);
            return;
        }
        int rc = ctl_liveness_update(s->srv->lv, inv, s->id, &err);
        if (rc) {
            CR_WARN("agentlink", "node %s: inventory update refused: %s", s->node, err.msg);
            fail(call, s, rc, &err);
        }
        return;
    }
    uint64_t id = 0;
    int rc = ctl_liveness_claim(s->srv->lv, inv, call, &id, &err);
    if (rc) {
        CR_WARN("agentlink", "refused session from %s (node %.64s): %s", peer ? peer : "?", inv->node,
                err.msg);
        fail(call, s, rc, &err);
        return;
    }
    snprintf(s->node, sizeof s->node, "%s", inv->node);
    s->id = id;
    CR_INFO("agentlink", "node %s up from %s: %zu robots, %zu GPUs", s->node, peer ? peer : "?",
            inv->n_robots, inv->n_gpus);
    Corral__V1__SessionAccepted acc = CORRAL__V1__SESSION_ACCEPTED__INIT;
    acc.session_id = id;
    acc.heartbeat_interval_ms = (uint32_t)s->srv->heartbeat_ms;
    Corral__V1__ControllerMessage out = CORRAL__V1__CONTROLLER_MESSAGE__INIT;
    out.body_case = CORRAL__V1__CONTROLLER_MESSAGE__BODY_ACCEPTED;
    out.accepted = &acc;
    if (rpc_call_send(call, &out.base, 0, &err))
        CR_WARN("agentlink", "node %s: cannot send SessionAccepted: %s", s->node, err.msg);
}

static void on_heartbeat(rpc_call_t *call, session_t *s, const Corral__V1__Heartbeat *hb)
{
    if (!s->id) {
        rpc_call_finish(call, RPC_FAILED_PRECONDITION, "send an inventory before heartbeats");
        return;
    }
    if (ctl_liveness_beat(s->srv->lv, s->node, s->id) != 0) {
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
        on_inventory(call, s, m->inventory);
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
    if (s->id) {
        char why[200];
        if (s->why[0]) snprintf(why, sizeof why, "%s", s->why);
        else if (s->half_closed && code == RPC_OK) snprintf(why, sizeof why, "agent closed its session");
        else snprintf(why, sizeof why, "session ended (%s: agent gone or connection lost)", rpc_code_name(code));
        ctl_liveness_release(s->srv->lv, s->node, s->id, why);
    }
    free(s);
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
}
