/* experiment.h - the lifecycle of experiments, kept in SQLite.
 *
 * Three tables of their own (experiments, placements, experiment_events) in a
 * database the caller opens, so they can live in the controller's state.db beside
 * the registry. Every call is one SAVEPOINT: it changes everything it says or
 * nothing. The handle is borrowed; calls must not run concurrently on one handle
 * (the controller serialises them under its registry lock).
 *
 * States and who moves between them (experiment.c documents the invariants):
 *
 *   submitted ──schedule──> scheduled ──> running <──> degraded
 *       │                       │           │            │
 *       │                       └───────────┴─────┬──────┘
 *       │                                         v
 *       └─────────────────────────────────────> stopping ──> stopped | failed | done
 *   any active state ──> failed;   stopped, failed ──resume──> submitted
 *
 * Errors: CR_EINVAL (bad name or argument), CR_ENOENT (no such experiment),
 * CR_EEXIST (name taken), CR_EBUSY (the current state forbids the change; the
 * message names both states), CR_EIO (SQLite failed), CR_ECORRUPT (a row this
 * module did not write). */
#ifndef CORRAL_CONTROLLER_EXPERIMENT_H
#define CORRAL_CONTROLLER_EXPERIMENT_H

#include "common/err.h"
#include "controller/scheduler.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sqlite3 sqlite3;

typedef enum ctl_exp_state {
    CTL_EXP_SUBMITTED = 0,
    CTL_EXP_SCHEDULED,
    CTL_EXP_RUNNING,
    CTL_EXP_DEGRADED,
    CTL_EXP_STOPPING,
    CTL_EXP_STOPPED,
    CTL_EXP_FAILED,
    CTL_EXP_DONE,
} ctl_exp_state_t;

#define CTL_EXP_NSTATES 8

/* "submitted", "scheduled", ...; parse returns -1 when unknown. */
const char *ctl_exp_state_name(ctl_exp_state_t s);
int ctl_exp_state_parse(const char *s);
/* Whether the lifecycle allows from -> to. */
int ctl_exp_transition_ok(ctl_exp_state_t from, ctl_exp_state_t to);
/* Whether the experiment holds resources in state s (scheduled .. stopping). */
int ctl_exp_state_active(ctl_exp_state_t s);

/* The experiment's counters, aggregated from its workers' reports; what `exp
 * status` shows. */
typedef struct ctl_exp_progress {
    int64_t env_steps, episodes, updates, policy_version;
    double success_rate, mean_return;  /* of the newest evaluation */
    int64_t staleness;  /* policy versions between acting and learning (the learner's mean, rounded) */
    double train_success_rate;         /* recent training episodes */
    double env_steps_per_s, updates_per_s;
    int64_t running_ms; /* time spent active with workers reporting; kept by ctl_exp_progress */
} ctl_exp_progress_t;

/* One worker's own report (WorkerProgress on the wire). */
typedef struct ctl_worker_progress {
    char state[16];     /* the worker's: running, done, stopped, failed; "" when never reported */
    int64_t env_steps, episodes, updates, policy_version, checkpoint, eval_round;
    double success_rate, eval_success_rate, mean_return, staleness, steps_per_s, updates_per_s;
    int64_t time_ms;    /* when the worker wrote it; 0 when never reported */
} ctl_worker_progress_t;

typedef struct ctl_exp {
    char name[CTL_NAME_MAX];
    ctl_exp_state_t state;
    char *spec;                 /* the submitted YAML (or JSON) text; malloc'd */
    char *sets;                 /* its --set overrides, one "key=value" per line; malloc'd */
    int64_t generation;         /* 1 at submit, +1 at each resume */
    int64_t created_ms, updated_ms;
    char message[512];          /* why it entered its state */
    ctl_exp_progress_t progress;
    int64_t ckpt_n;             /* newest complete checkpoint, 0 when none */
    int64_t ckpt_updates;       /* the update counter that checkpoint holds */
    char learner_node[CTL_NAME_MAX]; /* where the learner last reported from ("" before) */
    char dir[512];              /* the experiment directory its learner reported */
} ctl_exp_t;

/* Frees what an ctl_exp_t owns (spec, sets) and zeroes it. */
void ctl_exp_clear(ctl_exp_t *e);

typedef struct ctl_exp_event {
    int64_t id, time_ms;
    char experiment[CTL_NAME_MAX];
    char kind[32];              /* "state", "placement", "worker", "checkpoint" */
    char from_state[16], to_state[16];
    char message[512];
} ctl_exp_event_t;

/* Creates the tables when missing; safe to call on every open. */
int ctl_exp_schema(sqlite3 *db, cr_err_t *err);

/* A new experiment in state submitted. name must satisfy cr_name_valid. */
int ctl_exp_create(sqlite3 *db, const char *name, const char *spec, int64_t now_ms, cr_err_t *err);

int ctl_exp_get(sqlite3 *db, const char *name, ctl_exp_t *out, cr_err_t *err);
/* Every experiment, by name; free with ctl_exp_list_free. */
int ctl_exp_list(sqlite3 *db, ctl_exp_t **out, size_t *n, cr_err_t *err);
void ctl_exp_list_free(ctl_exp_t *list, size_t n);

/* Moves to state `to` with a reason. Entering stopped, failed or done drops the
 * placement (its robots and GPUs are free again); submitted is reached only
 * through ctl_exp_resume and scheduled only through ctl_exp_schedule. */
int ctl_exp_transition(sqlite3 *db, const char *name, ctl_exp_state_t to, const char *why,
                       int64_t now_ms, cr_err_t *err);

/* submitted -> scheduled, recording the gang placement in the same transaction. */
int ctl_exp_schedule(sqlite3 *db, const char *name, const ctl_placement_t *p, int64_t now_ms,
                     cr_err_t *err);

/* A repaired placement (ctl_sched_repair) for a scheduled/running/degraded
 * experiment; moves running <-> degraded as `degraded` says (a scheduled one
 * stays scheduled). */
int ctl_exp_replace(sqlite3 *db, const char *name, const ctl_placement_t *p, int degraded,
                    int64_t now_ms, cr_err_t *err);

/* Records the --set overrides that go with the spec ("key=value" lines). */
int ctl_exp_set_overrides(sqlite3 *db, const char *name, const char *sets, cr_err_t *err);

int ctl_exp_get_placement(sqlite3 *db, const char *name, ctl_placement_t **out, cr_err_t *err);

/* One placed worker with its last report, for `exp status`. */
typedef struct ctl_exp_worker {
    ctl_slot_t slot;
    char state[16];             /* "pending" until its agent reports */
    int pid;
    unsigned restarts;
    int64_t updated_ms;
    ctl_worker_progress_t progress; /* its last progress report */
} ctl_exp_worker_t;

/* The placed workers of an experiment (none when it holds no resources), in
 * placement order; free *out with free(). */
int ctl_exp_workers(sqlite3 *db, const char *name, ctl_exp_worker_t **out, size_t *n, cr_err_t *err);

/* stopped | failed -> submitted, generation + 1; the spec may be replaced
 * (spec NULL keeps it). A done experiment is refused: submit a new one. */
int ctl_exp_resume(sqlite3 *db, const char *name, const char *spec, int64_t now_ms, cr_err_t *err);

/* A worker's state as its agent reports it ("running", "backoff", ... as the
 * supervisor names them). Reports of another generation are refused (CR_EBUSY):
 * they come from workers of an earlier run that an agent still had. */
int ctl_exp_worker_report(sqlite3 *db, const char *name, int64_t generation, ctl_role_t role,
                          int index, const char *state, int pid, unsigned restarts, int64_t now_ms,
                          cr_err_t *err);
/* Whether every placed worker reports "running" (the gang is up): 0 or 1 in *all. */
int ctl_exp_workers_running(sqlite3 *db, const char *name, int *all, cr_err_t *err);

/* Whether every placed worker has ended (stopped, exited or failed): *all 0 or 1. */
int ctl_exp_workers_ended(sqlite3 *db, const char *name, int *all, cr_err_t *err);

/* New counters. The update counter may fall back after a crash, but never below
 * the newest checkpoint's (CR_EINVAL says by how much). running_ms is not taken
 * from p: while the experiment is active each call adds the time since the
 * previous one (at most 5 s, so a controller that was down counts nothing). */
int ctl_exp_progress(sqlite3 *db, const char *name, const ctl_exp_progress_t *p, int64_t now_ms,
                     cr_err_t *err);

/* A worker's own progress report, kept with its placement row (a report of an
 * earlier run, or of a slot the placement does not have, is refused: CR_EBUSY,
 * CR_ENOENT). dir (may be NULL) is the experiment directory on node, recorded for
 * `exp logs` and, for the learner, as the experiment's dir and learner_node. */
int ctl_exp_worker_progress(sqlite3 *db, const char *name, int64_t generation, ctl_role_t role, int index,
                            const ctl_worker_progress_t *p, const char *node, const char *dir, cr_err_t *err);

/* Every node a worker of the experiment was ever placed on (placements are
 * dropped when it ends; its logs stay on those nodes). fn is called per (role,
 * index, node), newest placement first for each worker; role NULL: any, index < 0:
 * any. */
typedef void (*ctl_exp_worker_node_fn)(void *ud, ctl_role_t role, int index, const char *node,
                                       const char *dir);
int ctl_exp_worker_nodes(sqlite3 *db, const char *name, const char *role, int index, ctl_exp_worker_node_fn fn,
                         void *ud, cr_err_t *err);
/* A complete checkpoint was written: its number and the update counter it holds.
 * Checkpoint numbers only grow. */
int ctl_exp_checkpointed(sqlite3 *db, const char *name, int64_t ckpt_n, int64_t updates,
                         int64_t now_ms, cr_err_t *err);

/* Events with id > after_id, oldest first, at most max (the Watch stream and
 * `exp status` read these). name NULL: of every experiment. Free with free(). */
int ctl_exp_events(sqlite3 *db, const char *name, int64_t after_id, size_t max,
                   ctl_exp_event_t **out, size_t *n, cr_err_t *err);

/* Robots and GPUs held by active experiments, for building the scheduler's
 * inventory: fn is called once per (experiment, node, robot or "", gpu index or
 * -1). */
typedef void (*ctl_exp_holder_fn)(void *ud, const char *experiment, const char *node,
                                  const char *robot, int gpu);
int ctl_exp_holders(sqlite3 *db, ctl_exp_holder_fn fn, void *ud, cr_err_t *err);

/* Checks the invariants over every row (tests call it after each step). */
int ctl_exp_check(sqlite3 *db, cr_err_t *err);

#endif
