/* agent.h - the node agent: the daemon on every robot PC and GPU node that dials
 * out to the controller, keeps one AgentLink.Session stream open, reports what the
 * node offers and heartbeats.
 *
 * The agent needs no inbound port. It sends its inventory first on every session
 * (GPUs from the GPU probe, the robots configured on the node, host facts), then a
 * heartbeat at the interval the controller fixes in SessionAccepted. When the
 * stream ends (controller restart, network loss, a refused inventory) it reconnects
 * with exponential backoff and jitter and sends its inventory again.
 *
 * With workers on, the agent also runs the experiments' worker processes through
 * its supervisor (supervisor.h, workercmd.h): StartWorker / StopWorker / ReadLog
 * from the controller are carried out on the agent's thread, each state change is
 * reported as a WorkerStatus, and every session starts with the Inventory then a
 * WorkerList, so a restarted controller adopts what runs. Workers outlive the
 * agent (a restarted agent adopts them); agent_stop_workers ends them. Every
 * worker is told the node's name, the controller's address (its channels' tunnel
 * relay and directory), the agent's security settings for it (rpc: security,
 * cert_dir, server_name, and its token in the worker's environment) and whether the node accepts inbound connections, so
 * the data plane tunnels traffic to the workers of a node behind NAT. */
#ifndef CORRAL_AGENTS_AGENT_H
#define CORRAL_AGENTS_AGENT_H

#include "common/err.h"
#include "common/rpc/rpc.h"
#include "corral/v1/agentlink.pb-c.h"

#include <stddef.h>
#include <stdint.h>

#define AGENT_DEFAULT_STATE_DIR "./corral-agent"
#define AGENT_VERSION "0.1.0"

typedef struct agent_opts {
    const char *controller;       /* host:port; NULL: $CORRAL_CONTROLLER, else 127.0.0.1:7070 */
    const char *node;             /* the node's name, required ([a-z0-9_-], <= 63) */
    const char *state_dir;        /* NULL: AGENT_DEFAULT_STATE_DIR; holds the agent's id */
    const char *advertise;        /* host:port peers may dial this node at; NULL: it
                                     accepts no inbound connections */
    int no_inbound;               /* 1: the node accepts no inbound connection (behind
                                     NAT), said outright; refused with advertise */
    const char *const *robots;    /* robot specs "name:driver[:model[:port]]" */
    size_t n_robots;
    const char *const *robot_labels; /* "name:label": a label for a robot of robots[] */
    size_t n_robot_labels;
    int probe_gpus;               /* 1: report GPUs from the probe (the daemon); 0: none */
    rpc_opts_t rpc;               /* security and backoff of the channel */
    rpc_channel_t *channel;       /* optional, borrowed: share one channel among many
                                     agents (the load benchmark); NULL: the agent owns one */
    int backoff_max_ms;           /* cap on the reconnect delay; 0: 5000 */
    int workers;                  /* 1: supervise experiment workers (the daemon); 0: none */
    const char *worker_exe;       /* program run as `EXE worker --role ...`; NULL: this binary */
    /* Optional, run on the channel's thread: a heartbeat was acknowledged. */
    void (*on_ack)(void *user, int64_t rtt_ns);
    void *user;
} agent_opts_t;

typedef struct agent agent_t;

typedef struct agent_stats {
    int connected;                /* a session is accepted right now */
    long sessions;                /* sessions accepted so far */
    long heartbeats;              /* heartbeats sent */
    long acks;                    /* heartbeat acks received */
    long refusals;                /* sessions the controller refused */
    long estops;                  /* e-stop commands received */
    char last_error[256];         /* why the last session ended or failed; "" */
} agent_stats_t;

/* Validates opts, loads (or creates) the agent id in state_dir and builds the
 * inventory. Strings and robots are copied. */
int agent_create(const agent_opts_t *opts, agent_t **out, cr_err_t *err);
/* Starts the session thread; it connects and reconnects on its own. */
int agent_start(agent_t *a, cr_err_t *err);
/* Closes the session cleanly (the controller records the node as gone) and
 * joins the thread, waiting at most ~2 s for the controller. Idempotent. */
void agent_stop(agent_t *a);
/* Stops if needed and frees. NULL is a no-op. */
void agent_destroy(agent_t *a);

void agent_get_stats(agent_t *a, agent_stats_t *out);
/* The inventory sent at the start of every session; borrowed, valid until destroy. */
const Corral__V1__Inventory *agent_inventory(const agent_t *a);
/* The agent's persistent id (agent_instance in the inventory). */
uint64_t agent_id(const agent_t *a);

/* Stops the workers a (stopped) agent of state_dir left running, waiting at most
 * timeout_ms for them to end: 0, CR_ETIMEDOUT, or the supervisor's errors. */
int agent_stop_workers(const char *state_dir, int64_t timeout_ms, cr_err_t *err);

/* ---- inventory pieces (inventory.c) ---------------------------------------- */

/* Parses "name:driver[:model[:port]]" into out (strings malloc'd; free with
 * protobuf_c_message_free_unpacked). Checks the name's syntax; the controller
 * checks the driver. */
int agent_robot_parse(const char *spec, Corral__V1__RobotInfo **out, cr_err_t *err);

/* Host facts: cores, memory, hostname, and advertise (NULL: no inbound). */
int agent_host_facts(const char *advertise, Corral__V1__HostFacts **out, cr_err_t *err);

/* GPUs of this node from hal_gpu_probe: *gpus is a malloc'd array of *n malloc'd
 * GpuInfo (uuid "<source>-<index>", e.g. "sim-0", "nvml-1"). */
int agent_gpu_probe(Corral__V1__GpuInfo ***gpus, size_t *n, cr_err_t *err);

#endif
