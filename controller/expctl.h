/* expctl.h - the controller's experiment logic, between the Experiments service,
 * the registry's inventory and the agents.
 *
 * Each call takes the state database (experiment.h's tables), the current
 * inventory where placement is involved (as the registry sees it; robots and GPUs
 * held by active experiments are marked from the placements table here, so the
 * caller need not), and appends the worker commands the agents must carry out to
 * *cmds. The caller (the gRPC layer) sends each command to the agent of cmd.node;
 * commands are idempotent (a START of a running worker is refused by the agent
 * with EEXIST, which is success; a STOP of an ended one is a no-op), so a command
 * lost with a connection is simply sent again after the next event.
 *
 * Refusals at submit and resume change nothing: no experiment row is created (or
 * the stopped one stays stopped), no command is produced, and other experiments
 * are untouched. */
#ifndef CORRAL_CONTROLLER_EXPCTL_H
#define CORRAL_CONTROLLER_EXPCTL_H

#include "common/err.h"
#include "controller/experiment.h"
#include "controller/scheduler.h"

#include <stddef.h>
#include <stdint.h>

typedef enum ctl_cmd_kind { CTL_CMD_START = 0, CTL_CMD_STOP } ctl_cmd_kind_t;

typedef struct ctl_worker_cmd {
    ctl_cmd_kind_t kind;
    char node[CTL_NAME_MAX];         /* the agent that carries it out */
    char experiment[CTL_NAME_MAX];
    int64_t generation;
    char role[16];                   /* STOP with "": every worker of the experiment on node */
    int index;
    char robot[CTL_NAME_MAX];
    int n_gpus;
    int gpus[CTL_SLOT_MAX_GPUS];
    char buffer_node[CTL_NAME_MAX];  /* peers, resolved to addresses by the caller */
    char learner_node[CTL_NAME_MAX];
} ctl_worker_cmd_t;

/* A growing list of commands; zero-initialise, free with ctl_cmds_free. */
typedef struct ctl_cmds {
    ctl_worker_cmd_t *v;
    size_t n, cap;
} ctl_cmds_t;
void ctl_cmds_free(ctl_cmds_t *c);

/* Checks that a plugin loads (dlopen and the ABI version); what is the field
 * ("task.reward", "algorithm.type"). NULL skips the check. */
typedef int (*ctl_plugin_check_fn)(void *ud, const char *what, const char *path, cr_err_t *err);

/* The message of the stopping state when the stop condition was reached: the
 * experiment then ends done instead of stopped. */
#define CTL_EXP_GOAL_MSG "stop condition reached"

/* Validates the experiment file (with overrides), checks its plugins, places it
 * and records it scheduled, with one START per worker. name_out (may be NULL)
 * receives its name. Errors: the spec's (CR_EINVAL "FILE:LINE:COL: path: ..."),
 * the plugin check's, CR_EEXIST, and the scheduler's refusals. */
int ctl_expctl_submit(sqlite3 *db, const ctl_inventory_t *inv, const char *source, const char *yaml,
                      size_t len, const char *const *sets, size_t nsets, ctl_plugin_check_fn check,
                      void *ud, int64_t now_ms, char name_out[CTL_NAME_MAX], ctl_cmds_t *cmds,
                      cr_err_t *err);

/* Asks an experiment to stop (goal: its stop condition was reached, so it ends
 * done): STOP commands to every node it runs on. A submitted experiment stops at
 * once; a stopping one gets its commands again; one whose workers have all ended
 * already becomes stopped (or done) at once. */
int ctl_expctl_stop(sqlite3 *db, const char *name, int goal, int64_t now_ms, ctl_cmds_t *cmds,
                    cr_err_t *err);

/* Resumes a stopped or failed experiment with its stored spec and overrides plus
 * sets (appended): generation + 1, placed again, STARTs for every worker. */
int ctl_expctl_resume(sqlite3 *db, const ctl_inventory_t *inv, const char *name, const char *const *sets,
                      size_t nsets, ctl_plugin_check_fn check, void *ud, int64_t now_ms, ctl_cmds_t *cmds,
                      cr_err_t *err);

/* A worker's state reported by the agent of node. Moves the experiment: all up
 * -> running; a worker failed -> failed (STOPs for the rest); a worker exited by
 * itself (exit status 0, not asked to stop) -> stopping, as the goal when a
 * worker of the experiment reported progress state "done" (the learner says so
 * before it tells the envs), else as a stop; all ended while stopping -> stopped
 * or done. A report that does not match the placement (an earlier run, another
 * node, an ended experiment) gets a STOP for that worker. */
int ctl_expctl_worker_status(sqlite3 *db, const char *node, const char *experiment, int64_t generation,
                             const char *role, int index, const char *state, int pid, unsigned restarts,
                             int64_t now_ms, ctl_cmds_t *cmds, cr_err_t *err);

/* One worker's progress report (WorkerProgress) as the agent of a node sends it. */
typedef struct ctl_progress_report {
    const char *experiment;
    int64_t generation;
    const char *role;
    int index;
    const char *dir;                 /* the experiment directory on the node, or "" */
    ctl_worker_progress_t p;
} ctl_progress_report_t;

/* Progress reports from the agent of node. Each is kept with its worker's
 * placement row (reports that do not match the placement, as above, are
 * ignored); then, per experiment reported on, the counters are aggregated into
 * the experiment's: env_steps, episodes, updates, policy version, success rates,
 * staleness and the learner's updates/s from the learner (its env_steps are the
 * transitions committed in the buffer, which survive any restart), env steps/s
 * summed over the env workers (and their steps and episodes summed until the
 * learner reports). A newer checkpoint of the learner is recorded. When a
 * worker reports state "done" or the aggregate meets a stop condition of the
 * spec (updates, env_steps, an evaluation at stop.success_rate, running time
 * at stop.wall_time), the experiment stops as done (ctl_expctl_stop with goal).
 * Errors of one experiment leave the others' reports applied; the first is
 * returned. */
int ctl_expctl_progress(sqlite3 *db, const char *node, const ctl_progress_report_t *r, size_t n,
                        int64_t now_ms, ctl_cmds_t *cmds, cr_err_t *err);

/* Nodes were lost or came back (inv is the new inventory): every active
 * experiment is repaired (ctl_sched_repair). Moved workers get a START on their
 * new node; workers whose node is back get a START (adopted ones answer EEXIST);
 * the experiment becomes degraded or running. */
int ctl_expctl_nodes_changed(sqlite3 *db, const ctl_inventory_t *inv, int64_t now_ms, ctl_cmds_t *cmds,
                             cr_err_t *err);

#endif
