/* expservice.h - the controller's Experiments gRPC service
 * (corral/v1/experiments.proto) over expctl.h.
 *
 * The service does not own the state: the controller hands it a host, whose
 * with_state runs a function under the controller's state lock with the
 * database and a fresh inventory, and whose send delivers the resulting worker
 * commands to the agents once the change is committed. Refusals are gRPC
 * statuses mapped from the CR_E* code (rpc_code_from_err, except that busy or
 * unavailable resources and forbidding states are FAILED_PRECONDITION, never
 * UNAVAILABLE, which clients read as "controller unreachable") with the message
 * that says what to change as details.
 *
 * Watch streams run one thread each: every watch_period_ms they send the new
 * journal events and, when it changed, a snapshot; a stream ends OK after the
 * experiment reached stopped, failed or done, or when the client goes away.
 *
 * Logs streams run one thread each too: for every worker that matches (role and
 * index; actor and buffer have no log of their own, they run inside env and
 * learner), on every node it was ever placed on, the file is read piece by piece
 * through host.read_log and streamed; a node that does not answer or has no such
 * file gives one response with `error` set, and the stream goes on. NOT_FOUND
 * when nothing matched at all. */
#ifndef CORRAL_CONTROLLER_EXPSERVICE_H
#define CORRAL_CONTROLLER_EXPSERVICE_H

#include "common/err.h"
#include "common/rpc/rpc.h"
#include "controller/expctl.h"
#include "corral/v1/experiments.pb-c.h"
#include "corral/v1/workers.pb-c.h"

typedef int (*ctl_exp_state_fn)(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds,
                                cr_err_t *err);

typedef struct ctl_exp_host {
    /* Runs fn(arg, db, inv, cmds, err) with the state lock held; returns its code. */
    int (*with_state)(void *ud, ctl_exp_state_fn fn, void *arg, ctl_cmds_t *cmds, cr_err_t *err);
    /* Delivers commands (called without the lock, after with_state returned 0). */
    void (*send)(void *ud, const ctl_cmds_t *cmds);
    ctl_plugin_check_fn plugin_check; /* may be NULL */
    /* Asks the agent of node for a piece of a log (req's command_id is the
     * host's to set) and waits up to timeout_ms for the answer, which *out
     * receives (free with corral__v1__log_chunk__free_unpacked). NULL: the Logs
     * method answers UNIMPLEMENTED. */
    int (*read_log)(void *ud, const char *node, const Corral__V1__ReadLog *req, int timeout_ms,
                    Corral__V1__LogChunk **out, cr_err_t *err);
    void *ud;
    int watch_period_ms;              /* 0: 500 */
} ctl_exp_host_t;

typedef struct ctl_exp_service ctl_exp_service_t;

#define CTL_EXP_METHODS 7  /* Submit, List, Get, Stop, Resume, Watch, Logs */

/* host is copied. */
int ctl_exp_service_create(const ctl_exp_host_t *host, ctl_exp_service_t **out, cr_err_t *err);
/* Waits for the Watch and Logs threads to end (after the rpc server stopped,
 * their sends fail and they end; a Logs thread may first finish a read_log). */
void ctl_exp_service_drain(ctl_exp_service_t *svc);
/* Call after the rpc server stopped: drains, then frees. */
void ctl_exp_service_destroy(ctl_exp_service_t *svc);
/* Fills out[0..CTL_EXP_METHODS) with the service's methods; returns the count. */
size_t ctl_exp_service_methods(ctl_exp_service_t *svc, rpc_method_t *out);

/* One experiment as the Experiment message (state, progress, goal from its spec,
 * placements with worker states). *out is freed with
 * protobuf_c_message_free_unpacked(&(*out)->base, NULL). */
int ctl_exp_to_proto(sqlite3 *db, const char *name, Corral__V1__Experiment **out, cr_err_t *err);

#endif
