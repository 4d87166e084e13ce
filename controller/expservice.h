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
 * experiment reached stopped, failed or done, or when the client goes away. */
#ifndef CORRAL_CONTROLLER_EXPSERVICE_H
#define CORRAL_CONTROLLER_EXPSERVICE_H

#include "common/err.h"
#include "common/rpc/rpc.h"
#include "controller/expctl.h"
#include "corral/v1/experiments.pb-c.h"

typedef int (*ctl_exp_state_fn)(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds,
                                cr_err_t *err);

typedef struct ctl_exp_host {
    /* Runs fn(arg, db, inv, cmds, err) with the state lock held; returns its code. */
    int (*with_state)(void *ud, ctl_exp_state_fn fn, void *arg, ctl_cmds_t *cmds, cr_err_t *err);
    /* Delivers commands (called without the lock, after with_state returned 0). */
    void (*send)(void *ud, const ctl_cmds_t *cmds);
    ctl_plugin_check_fn plugin_check; /* may be NULL */
    void *ud;
    int watch_period_ms;              /* 0: 500 */
} ctl_exp_host_t;

typedef struct ctl_exp_service ctl_exp_service_t;

#define CTL_EXP_METHODS 6  /* Submit, List, Get, Stop, Resume, Watch */

/* host is copied. */
int ctl_exp_service_create(const ctl_exp_host_t *host, ctl_exp_service_t **out, cr_err_t *err);
/* Call after the rpc server stopped: waits for the Watch threads to end. */
void ctl_exp_service_destroy(ctl_exp_service_t *svc);
/* Fills out[0..CTL_EXP_METHODS) with the service's methods; returns the count. */
size_t ctl_exp_service_methods(ctl_exp_service_t *svc, rpc_method_t *out);

/* One experiment as the Experiment message (state, progress, goal from its spec,
 * placements with worker states). *out is freed with
 * protobuf_c_message_free_unpacked(&(*out)->base, NULL). */
int ctl_exp_to_proto(sqlite3 *db, const char *name, Corral__V1__Experiment **out, cr_err_t *err);

#endif
