/* workercmd.h - what a node agent does with the worker commands of the AgentLink
 * stream (corral/v1/workers.proto): start and stop workers through the
 * supervisor, report their states, list them after a reconnect, and serve log
 * slices for `corral exp logs`.
 *
 * Everything here is input from the network: names are checked with
 * cr_name_valid before they become paths, sizes are capped, and a bad command is
 * an error for that command only.
 *
 * A started worker runs
 *     CORRAL worker --role R --experiment E --index I --generation G
 *                   --spec <state>/experiments/E/spec.yaml --state-dir <state>
 *                   [--robot NAME] [--buffer ADDR] [--learner ADDR]
 *                   [--node NODE --controller ADDR [--rpc-security S --rpc-cert-dir DIR
 *                    --rpc-server-name NAME] --no-inbound | --advertise HOST] ARGS...
 * with CUDA_VISIBLE_DEVICES set to its GPUs ("" for the CPU) and the spec's
 * environment additions; the experiment file is written there atomically first.
 * The bracketed node part comes from the agent (agent_wcmd_node_t): the worker's
 * hub dials the controller as its tunnel relay and channel directory with the
 * node's own security settings, and on a node that accepts no inbound connection
 * it serves no direct route, so peers on other nodes reach it through the relay. */
#ifndef CORRAL_AGENTS_WORKERCMD_H
#define CORRAL_AGENTS_WORKERCMD_H

#include "agents/supervisor.h"
#include "common/err.h"
#include "corral/v1/workers.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define AGENT_LOG_CHUNK_MAX (1u << 20) /* bytes per ReadLog answer */
#define AGENT_WCMD_TOKEN_ENV "CORRAL_NODE_TOKEN" /* agent_wcmd_node_t.token, for the worker */

/* What the agent tells every worker it starts about the node (all borrowed). */
typedef struct agent_wcmd_node {
    const char *node;          /* the node's name */
    const char *controller;    /* host:port: the tunnel relay and channel directory */
    const char *security;      /* "insecure", "tls" or "mtls": how the agent dials it */
    const char *cert_dir;      /* TLS: the node's certificates, or NULL */
    const char *server_name;   /* TLS: the name in the controller's certificate, or NULL */
    const char *token;         /* the node's bearer token for the controller (the join
                                  token, which its relay and directory take), or NULL;
                                  given in the environment (AGENT_WCMD_TOKEN_ENV), never
                                  on the command line, which every local user can read */
    int inbound;               /* 1: peers may dial this node at advertise_host */
    const char *advertise_host; /* inbound: the host part of the agent's --advertise */
} agent_wcmd_node_t;

/* Starts the worker of a StartWorker command. corral is the path of the corral
 * binary (or, in tests, any program taking the same arguments); state_dir is the
 * agent's state directory (the supervisor's); node is what the worker is told of
 * its node, or NULL for nothing (the worker's defaults: one node, no relay).
 * Errors: CR_EINVAL (a bad field, named), CR_EEXIST (already running), and the
 * supervisor's. */
int agent_wcmd_start(agent_sup_t *sup, const char *state_dir, const char *corral,
                     const agent_wcmd_node_t *node, const Corral__V1__WorkerSpec *spec, cr_err_t *err);

/* Stops one worker, or all of an experiment's when cmd->role is "". */
int agent_wcmd_stop(agent_sup_t *sup, const Corral__V1__StopWorker *cmd, cr_err_t *err);

/* Fills *out (initialised here) from a supervisor snapshot; out's strings point
 * into info, which must outlive it. */
void agent_wcmd_status(const agent_worker_info_t *info, Corral__V1__WorkerStatus *out);

/* Every worker the supervisor knows, for the WorkerList sent after the Inventory.
 * *out is malloc'd with everything it points to; free with agent_wcmd_list_free. */
int agent_wcmd_list(const agent_sup_t *sup, Corral__V1__WorkerList **out, cr_err_t *err);
void agent_wcmd_list_free(Corral__V1__WorkerList *list);

/* Answers a ReadLog: fills *out (initialised here) with up to
 * min(cmd->max_bytes, AGENT_LOG_CHUNK_MAX) bytes read into buf (cap bytes, the
 * caller's; out->data points into it). A problem (bad name, no such log) is
 * reported in out->error (pointing into errbuf) and returns its code. */
int agent_wcmd_read_log(const char *state_dir, const Corral__V1__ReadLog *cmd, uint8_t *buf, size_t cap,
                        Corral__V1__LogChunk *out, char errbuf[256]);

#endif
