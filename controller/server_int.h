/* server_int.h - the controller's server object as its own files see it (private
 * to controller/): server.c owns it, service.c and agentlink.c fill method tables. */
#ifndef CORRAL_CONTROLLER_SERVER_INT_H
#define CORRAL_CONTROLLER_SERVER_INT_H

#include "channels/directory.h"
#include "channels/relay.h"
#include "controller/controller.h"
#include "controller/expservice.h"
#include "controller/liveness.h"
#include "controller/workq.h"

#include <pthread.h>
#include <stdatomic.h>

#define CTL_REGISTRY_METHODS 10

typedef struct ctl_server ctl_server_t;

/* A Registry method's user pointer: which server, which handler. */
typedef struct ctl_handler {
    ctl_server_t *srv;
    int (*fn)(ctl_server_t *srv, const ProtobufCMessage *req, ProtobufCMessage **resp,
              cr_err_t *err);
} ctl_handler_t;

struct ctl_server {
    char listen[256];
    char state_dir[4096];
    int heartbeat_ms, missed;
    ctl_registry_t *reg;
    ctl_liveness_t *lv;
    ctl_workq_t *wq;          /* SQLite work handed off by AgentLink callbacks */
    rpc_server_t *rpc;
    rpc_method_t methods[CTL_REGISTRY_METHODS + 1 + CTL_EXP_METHODS + 2];
    ch_relay_t *relay;        /* the data plane's tunnel relay, on the same port */
    ch_directory_t *chdir;    /* the data plane's channel directory, on the same port */
    ctl_handler_t handlers[CTL_REGISTRY_METHODS];
    int started, stopped;
    int lock_fd;              /* DIR/controller.lock, flock'ed while we run */
    atomic_long heartbeats;
    ctl_exp_service_t *exp;   /* the Experiments service (exphost.c) */
    pthread_mutex_t exp_mu;   /* serialises experiment changes; before the registry's lock */
    int exp_mu_init;
    _Atomic uint64_t next_cmd; /* command ids of worker commands */
    struct ctl_log_waits *logs; /* ReadLogs waiting for their LogChunk (exphost.c) */
};

/* Fills out[0..CTL_REGISTRY_METHODS-1] with the Registry service; returns the count. */
size_t ctl_service_methods(ctl_server_t *srv, rpc_method_t *out);
/* Fills *out with AgentLink.Session. */
void ctl_agentlink_method(ctl_server_t *srv, rpc_method_t *out);

/* exphost.c: creates the Experiments service over the registry's state.db and
 * appends its methods at methods[*n]; destroy after the rpc server stopped. */
int ctl_exphost_create(ctl_server_t *srv, rpc_method_t *methods, size_t *n, cr_err_t *err);
void ctl_exphost_destroy(ctl_server_t *srv);
/* An agent reported a worker (its WorkerStatus, or one entry of its WorkerList):
 * the experiment moves, and the commands that follow are sent. May wait for SQLite. */
void ctl_exphost_worker_status(ctl_server_t *srv, const char *node, const Corral__V1__WorkerStatus *ws);
/* An agent's ProgressReport: the workers' counters are recorded and aggregated,
 * and an experiment that reached its goal is stopped. May wait for SQLite. */
void ctl_exphost_progress(ctl_server_t *srv, const char *node, const Corral__V1__ProgressReport *rep);
/* An agent's LogChunk: handed to the Logs call waiting for it (never waits). */
void ctl_exphost_log_chunk(ctl_server_t *srv, const Corral__V1__LogChunk *chunk);
/* After the rpc server stopped: ends waiting log reads and waits for the
 * Experiments streams, which use the liveness table, to finish. */
void ctl_exphost_stop(ctl_server_t *srv);
/* A node came up or was lost (after the registry recorded it): active
 * experiments are repaired and their commands sent. May wait for SQLite. */
void ctl_exphost_nodes_changed(ctl_server_t *srv);

#endif
