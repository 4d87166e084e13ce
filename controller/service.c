/* service.c - the Registry gRPC service: each unary method unpacks its request,
 * calls the registry and replies, or ends the call with the status that names
 * what was wrong. Handlers run on the rpc layer's pool threads (never on a queue
 * thread) because every one of them waits for SQLite. */
#include "controller/server_int.h"
#include "common/id.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

#define RESP(type, init, var) \
    type *var = calloc(1, sizeof *var); \
    if (!var) return cr_err_set(err, CR_ENOMEM, "reply"); \
    init(var)

static int register_robot(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                          cr_err_t *err)
{
    const Corral__V1__RegisterRobotRequest *req = (const void *)m;
    Corral__V1__Robot *r = NULL;
    int rc = ctl_reg_robot_register(srv->reg, req, &r, err);
    if (rc) return rc;
    RESP(Corral__V1__RegisterRobotResponse, corral__v1__register_robot_response__init, resp);
    resp->robot = r;
    *out = &resp->base;
    CR_INFO("registry", "robot %s registered (driver %s, node %s)", r->name, r->driver,
            *r->node ? r->node : "-");
    return 0;
}

static int list_robots(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                       cr_err_t *err)
{
    const Corral__V1__ListRobotsRequest *req = (const void *)m;
    Corral__V1__ListRobotsResponse *resp = NULL;
    int rc = ctl_reg_robot_list(srv->reg, req->node, &resp, err);
    if (!rc) *out = &resp->base;
    return rc;
}

static int get_robot(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                     cr_err_t *err)
{
    const Corral__V1__GetRobotRequest *req = (const void *)m;
    Corral__V1__Robot *r = NULL;
    int rc = ctl_reg_robot_get(srv->reg, req->name, &r, err);
    if (rc) return rc;
    RESP(Corral__V1__GetRobotResponse, corral__v1__get_robot_response__init, resp);
    resp->robot = r;
    *out = &resp->base;
    return 0;
}

static int remove_robot(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                        cr_err_t *err)
{
    const Corral__V1__RemoveRobotRequest *req = (const void *)m;
    int rc = ctl_reg_robot_remove(srv->reg, req->name, err);
    if (rc) return rc;
    RESP(Corral__V1__RemoveRobotResponse, corral__v1__remove_robot_response__init, resp);
    *out = &resp->base;
    CR_INFO("registry", "robot %s removed", req->name);
    return 0;
}

static int estop_robot(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                       cr_err_t *err)
{
    const Corral__V1__EstopRobotRequest *req = (const void *)m;
    Corral__V1__Robot *r = NULL;
    char node[64];
    int rc = ctl_reg_robot_estop(srv->reg, req->name, req->release, &r, node, err);
    if (rc) return rc;
    RESP(Corral__V1__EstopRobotResponse, corral__v1__estop_robot_response__init, resp);
    resp->robot = r;
    if (*node) {
        Corral__V1__EstopCommand cmd = CORRAL__V1__ESTOP_COMMAND__INIT;
        cmd.command_id = cr_id_new();
        cmd.robot = req->name;
        cmd.release = req->release;
        Corral__V1__ControllerMessage msg = CORRAL__V1__CONTROLLER_MESSAGE__INIT;
        msg.body_case = CORRAL__V1__CONTROLLER_MESSAGE__BODY_ESTOP;
        msg.estop = &cmd;
        cr_err_t e2 = {0};
        resp->delivered = ctl_liveness_send(srv->lv, node, &msg.base, &e2) == 0;
        if (!resp->delivered)
            CR_WARN("registry", "e-stop of robot %s latched in the registry but not delivered: %s",
                    req->name, e2.msg);
    }
    CR_WARN("registry", "robot %s e-stop %s", req->name, req->release ? "released" : "LATCHED");
    *out = &resp->base;
    return 0;
}

static int register_gpu(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                        cr_err_t *err)
{
    const Corral__V1__RegisterGpuRequest *req = (const void *)m;
    Corral__V1__Gpu *g = NULL;
    int rc = ctl_reg_gpu_register(srv->reg, req, &g, err);
    if (rc) return rc;
    RESP(Corral__V1__RegisterGpuResponse, corral__v1__register_gpu_response__init, resp);
    resp->gpu = g;
    *out = &resp->base;
    CR_INFO("registry", "GPU %u of node %s registered (%s)", g->index, g->node, g->model);
    return 0;
}

static int list_gpus(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                     cr_err_t *err)
{
    const Corral__V1__ListGpusRequest *req = (const void *)m;
    Corral__V1__ListGpusResponse *resp = NULL;
    int rc = ctl_reg_gpu_list(srv->reg, req->node, &resp, err);
    if (!rc) *out = &resp->base;
    return rc;
}

/* The registry records last_seen at session changes only (heartbeats stay in
 * memory); a live node's last heartbeat comes from the liveness table. */
static void fill_last_seen(ctl_server_t *srv, Corral__V1__Node *n)
{
    int64_t ms = srv->lv ? ctl_liveness_last_seen_ms(srv->lv, n->name) : 0;
    if (ms > n->last_seen_unix_ms) n->last_seen_unix_ms = ms;
}

static int list_nodes(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                      cr_err_t *err)
{
    Corral__V1__ListNodesResponse *resp = NULL;
    int rc = ctl_reg_node_list(srv->reg, &resp, err);
    if (rc) return rc;
    for (size_t i = 0; i < resp->n_nodes; i++) fill_last_seen(srv, resp->nodes[i]);
    *out = &resp->base;
    return 0;
}

static int get_node(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                    cr_err_t *err)
{
    const Corral__V1__GetNodeRequest *req = (const void *)m;
    Corral__V1__Node *n = NULL;
    int rc = ctl_reg_node_get(srv->reg, req->name, &n, err);
    if (rc) return rc;
    fill_last_seen(srv, n);
    RESP(Corral__V1__GetNodeResponse, corral__v1__get_node_response__init, resp);
    resp->node = n;
    *out = &resp->base;
    return 0;
}

static int drain_node(ctl_server_t *srv, const ProtobufCMessage *m, ProtobufCMessage **out,
                      cr_err_t *err)
{
    const Corral__V1__DrainNodeRequest *req = (const void *)m;
    Corral__V1__Node *n = NULL;
    int rc = ctl_reg_node_drain(srv->reg, req->name, req->undo, &n, err);
    if (rc) return rc;
    RESP(Corral__V1__DrainNodeResponse, corral__v1__drain_node_response__init, resp);
    resp->node = n;
    *out = &resp->base;
    CR_INFO("registry", "node %s %s", req->name, req->undo ? "takes work again" : "draining");
    return 0;
}

rpc_code_t ctl_status_from_err(int cr_code)
{
    switch (cr_code) {
    case CR_EBUSY:
    case CR_EVERSION: return RPC_FAILED_PRECONDITION;
    case CR_EIO: return RPC_INTERNAL;
    default: return rpc_code_from_err(cr_code);
    }
}

static void on_message(rpc_call_t *call, const ProtobufCMessage *msg)
{
    const rpc_method_t *m = rpc_call_method(call);
    const ctl_handler_t *h = m->user;
    ctl_server_t *srv = h->srv;
    ProtobufCMessage *resp = NULL;
    cr_err_t err = {0};
    int rc = h->fn(srv, msg, &resp, &err);
    if (rc) {
        if (rc == CR_EIO || rc == CR_EINTERNAL) CR_ERROR("registry", "%s: %s", m->name, err.msg);
        rpc_call_finish(call, ctl_status_from_err(rc), "%s", err.msg);
        return;
    }
    cr_err_t e2 = {0};
    if (rpc_call_reply(call, resp, &e2))
        CR_WARN("registry", "%s: reply not sent: %s", m->name, e2.msg);
    protobuf_c_message_free_unpacked(resp, NULL);
}

size_t ctl_service_methods(ctl_server_t *srv, rpc_method_t *out)
{
    static int (*const fns[CTL_REGISTRY_METHODS])(ctl_server_t *, const ProtobufCMessage *,
                                                    ProtobufCMessage **, cr_err_t *) = {
        register_robot, list_robots, get_robot, remove_robot, estop_robot,
        register_gpu, list_gpus, list_nodes, get_node, drain_node,
    };
    static const struct { const char *name; const ProtobufCMessageDescriptor *in, *out; } t[] = {
        {CTL_M_REGISTER_ROBOT, &corral__v1__register_robot_request__descriptor,
         &corral__v1__register_robot_response__descriptor},
        {CTL_M_LIST_ROBOTS, &corral__v1__list_robots_request__descriptor,
         &corral__v1__list_robots_response__descriptor},
        {CTL_M_GET_ROBOT, &corral__v1__get_robot_request__descriptor,
         &corral__v1__get_robot_response__descriptor},
        {CTL_M_REMOVE_ROBOT, &corral__v1__remove_robot_request__descriptor,
         &corral__v1__remove_robot_response__descriptor},
        {CTL_M_ESTOP_ROBOT, &corral__v1__estop_robot_request__descriptor,
         &corral__v1__estop_robot_response__descriptor},
        {CTL_M_REGISTER_GPU, &corral__v1__register_gpu_request__descriptor,
         &corral__v1__register_gpu_response__descriptor},
        {CTL_M_LIST_GPUS, &corral__v1__list_gpus_request__descriptor,
         &corral__v1__list_gpus_response__descriptor},
        {CTL_M_LIST_NODES, &corral__v1__list_nodes_request__descriptor,
         &corral__v1__list_nodes_response__descriptor},
        {CTL_M_GET_NODE, &corral__v1__get_node_request__descriptor,
         &corral__v1__get_node_response__descriptor},
        {CTL_M_DRAIN_NODE, &corral__v1__drain_node_request__descriptor,
         &corral__v1__drain_node_response__descriptor},
    };
    for (size_t i = 0; i < CTL_REGISTRY_METHODS; i++) {
        srv->handlers[i].srv = srv;
        srv->handlers[i].fn = fns[i];
        memset(&out[i], 0, sizeof out[i]);
        out[i].name = t[i].name;
        out[i].kind = RPC_UNARY;
        out[i].input = t[i].in;
        out[i].output = t[i].out;
        out[i].user = &srv->handlers[i];
        out[i].on_message = on_message;
    }
    return CTL_REGISTRY_METHODS;
}
