/* controller.h - the public API of the control plane: the controller daemon, its
 * registry (registry.h) and the client calls the CLI and tools use to reach it.
 *
 * The daemon serves these gRPC services of package corral.v1 on one port:
 *   Registry   unary calls over robots, GPUs and nodes (registry.proto)
 *   AgentLink  Session, one bidirectional stream per node agent (agentlink.proto)
 *   Experiments  the experiment lifecycle (expservice.h)
 *   Relay, ChannelDirectory  the data plane's tunnel relay and the directory of
 *              channel replicas (channels/relay.h, channels/directory.h)
 * Who may call what (ctl_opts_t): Registry and Experiments take the admin token
 * (the CLI), AgentLink the join token (agents), Relay and ChannelDirectory either
 * (an agent's workers dial them with the node's credentials); mutual TLS comes
 * from rpc_opts_t.
 * All state lives in DIR/state.db (see registry.h); liveness (which agent speaks
 * for which node, heartbeats) lives in memory and is rebuilt when agents
 * reconnect after a restart. */
#ifndef CORRAL_CONTROLLER_CONTROLLER_H
#define CORRAL_CONTROLLER_CONTROLLER_H

#include "common/err.h"
#include "common/rpc/rpc.h"
#include "controller/registry.h"

#include <stddef.h>

#define CTL_DEFAULT_LISTEN "127.0.0.1:7070"
#define CTL_DEFAULT_STATE_DIR "./corral-state"
#define CTL_DEFAULT_HEARTBEAT_MS 1000
#define CTL_DEFAULT_MISSED 3

/* Full method names, for clients. */
#define CTL_M_REGISTER_ROBOT "/corral.v1.Registry/RegisterRobot"
#define CTL_M_LIST_ROBOTS    "/corral.v1.Registry/ListRobots"
#define CTL_M_GET_ROBOT      "/corral.v1.Registry/GetRobot"
#define CTL_M_REMOVE_ROBOT   "/corral.v1.Registry/RemoveRobot"
#define CTL_M_ESTOP_ROBOT    "/corral.v1.Registry/EstopRobot"
#define CTL_M_REGISTER_GPU   "/corral.v1.Registry/RegisterGpu"
#define CTL_M_LIST_GPUS      "/corral.v1.Registry/ListGpus"
#define CTL_M_LIST_NODES     "/corral.v1.Registry/ListNodes"
#define CTL_M_GET_NODE       "/corral.v1.Registry/GetNode"
#define CTL_M_DRAIN_NODE     "/corral.v1.Registry/DrainNode"
#define CTL_M_SESSION        "/corral.v1.AgentLink/Session"

typedef struct ctl_opts {
    const char *listen;        /* NULL: CTL_DEFAULT_LISTEN; "127.0.0.1:0" picks a port */
    const char *state_dir;     /* NULL: CTL_DEFAULT_STATE_DIR */
    int heartbeat_ms;          /* interval agents are told to use; 0: default */
    int missed;                /* heartbeats missed before a node is lost; 0: default */
    rpc_opts_t rpc;            /* security, threads; zero for the defaults. Its
                                  every-method token, if set, opens every call */
    const char *admin_token;   /* NULL: none; else Registry and Experiments calls (the
                                  CLI's) must present it, and the data plane's take it */
    const char *join_token;    /* NULL: none; else AgentLink sessions (agents) must
                                  present it, and the data plane's (Relay, channel
                                  directory: an agent's workers) take it. The two
                                  must differ: a join token never works as the admin
                                  token, nor the other way round */
} ctl_opts_t;

/* The token scopes of the controller's server (rpc_opts_t.tokens). */
enum { CTL_SCOPE_ADMIN = 0, CTL_SCOPE_JOIN = 1 };

typedef struct ctl_server ctl_server_t;

/* Opens the registry and binds the port; strings in opts are copied. */
int ctl_server_create(const ctl_opts_t *opts, ctl_server_t **out, cr_err_t *err);
/* The port bound. */
int ctl_server_port(const ctl_server_t *srv);
/* Starts serving (and the liveness sweep). */
int ctl_server_start(ctl_server_t *srv, cr_err_t *err);
/* Stops taking calls, ends every session without marking nodes lost, waits for
 * handlers to finish. Idempotent. */
void ctl_server_stop(ctl_server_t *srv);
/* Stops if needed and frees everything. NULL is a no-op. */
void ctl_server_destroy(ctl_server_t *srv);
/* The registry the server uses; borrowed. */
ctl_registry_t *ctl_server_registry(ctl_server_t *srv);
/* Agent sessions currently live. */
size_t ctl_server_sessions(ctl_server_t *srv);

/* CR_E* -> gRPC status as the control plane uses them: EBUSY (a contradiction or a
 * state that forbids the change) and EVERSION are FAILED_PRECONDITION, EIO is
 * INTERNAL, the rest as rpc_code_from_err. */
rpc_code_t ctl_status_from_err(int cr_code);

/* ---- client --------------------------------------------------------------- */

/* Opens a channel to the controller at addr (NULL: $CORRAL_CONTROLLER, else
 * CTL_DEFAULT_LISTEN) and waits up to timeout_ms for it to be reachable:
 * CR_EUNAVAIL with a message naming addr when it is not. timeout_ms 0 does not
 * wait: the first call then fails at once with UNAVAILABLE if nobody answers. */
int ctl_client_connect(const char *addr, const rpc_opts_t *opts, int64_t timeout_ms,
                       rpc_channel_t **out, cr_err_t *err);

/* One Registry call: method is a CTL_M_* name. On 0 *resp (of resp_desc) is the
 * caller's (protobuf_c_message_free_unpacked). *code gets the exact status. */
int ctl_client_call(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                    int64_t timeout_ms, rpc_code_t *code, cr_err_t *err);

#endif
