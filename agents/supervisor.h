/* supervisor.h - the agent's worker supervisor: starts, watches, restarts and
 * stops the processes an experiment is made of, and adopts them after an agent
 * restart.
 *
 * A worker is identified by (experiment, role, index). The supervisor fork/execs
 * its argv (usually `corral worker --role ...`) in a new session, so a signal to
 * the agent's terminal does not reach it and stopping it reaches its whole
 * process group; stdout and stderr are appended to
 *     <state_dir>/experiments/<experiment>/logs/<role>-<index>.log
 * A worker that exits non-zero or dies of a signal is restarted after an
 * exponential back-off (backoff_initial_ms doubling up to backoff_max_ms); a run
 * shorter than fast_run_ms counts as a fast crash and after max_fast_crashes in a
 * row the worker is FAILED. A worker that exits 0 has finished (EXITED).
 *
 * Every running worker (pid, kernel start time, hash of its command line, argv,
 * environment additions) is recorded in a registry file written atomically
 * (<state_dir>/agent/workers.json unless registry_path says otherwise). A new
 * supervisor reads it and adopts each worker whose pid still names the same
 * process (kernel start time and command line both match, so a reused pid is
 * never mistaken for ours; a worker must not exec another command line); adopted workers are watched through a pidfd and restarted
 * like any other when they die. agent_sup_destroy leaves workers running on
 * purpose: the agent may be restarting. Use agent_sup_stop_all to end them.
 *
 * Threading: not thread-safe. One thread (the agent's main loop) calls every
 * function; it must call agent_sup_poll at least every poll interval (or sooner,
 * agent_sup_next_wakeup_ns says when) to reap, restart and escalate stops. The
 * supervisor reaps only its own children (waitpid by pid), never others of the
 * agent's. Event callbacks run inside the call that caused them. */
#ifndef CORRAL_AGENTS_SUPERVISOR_H
#define CORRAL_AGENTS_SUPERVISOR_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum agent_worker_state {
    AGENT_WORKER_RUNNING = 0, /* process alive */
    AGENT_WORKER_BACKOFF,     /* crashed; waiting to restart */
    AGENT_WORKER_STOPPING,    /* SIGTERM sent; SIGKILL after the grace period */
    AGENT_WORKER_STOPPED,     /* ended on request */
    AGENT_WORKER_EXITED,      /* exited 0 by itself: its job is done */
    AGENT_WORKER_FAILED,      /* too many fast crashes, or cannot be started */
} agent_worker_state_t;

/* "running", "backoff", "stopping", "stopped", "exited", "failed". */
const char *agent_worker_state_name(agent_worker_state_t s);

#define AGENT_NAME_MAX 64

/* What to run. Borrowed during agent_sup_start only (copied). */
typedef struct agent_worker_spec {
    const char *experiment;  /* a valid resource name (cr_name_valid) */
    const char *role;        /* "env", "actor", "learner", "buffer", or another valid name */
    int index;               /* >= 0 */
    int64_t generation;      /* the experiment's run number, reported back as is */
    char *const *argv;       /* NULL-terminated; argv[0] a path or a name looked up in PATH */
    char *const *env;        /* NULL-terminated "K=V" additions to the agent's environment, or NULL */
    const char *cwd;         /* working directory, or NULL for the experiment directory */
} agent_worker_spec_t;

/* A snapshot of one worker, for callbacks and listings. */
typedef struct agent_worker_info {
    char experiment[AGENT_NAME_MAX];
    char role[AGENT_NAME_MAX];
    int index;
    int64_t generation;
    agent_worker_state_t state;
    pid_t pid;              /* 0 when not running */
    int adopted;            /* this supervisor did not start it */
    unsigned restarts;      /* restarts since agent_sup_start (not counting adoption) */
    int last_exit_code;     /* -1 when unknown (adopted workers, signals) */
    int last_signal;        /* 0 when none */
    int64_t started_wall_ms;
    char log_path[4096];
    char message[256];      /* why the last state change happened */
} agent_worker_info_t;

/* Called on each state change (and on adoption, with old == new == RUNNING). */
typedef void (*agent_sup_event_fn)(void *ud, const agent_worker_info_t *w,
                                   agent_worker_state_t old_state);

typedef struct agent_sup_config {
    const char *state_dir;       /* required: experiment logs go under it */
    const char *registry_path;   /* NULL: <state_dir>/agent/workers.json */
    int64_t backoff_initial_ms;  /* 0: 500 */
    int64_t backoff_max_ms;      /* 0: 30000 */
    int64_t fast_run_ms;         /* 0: 10000 (a run shorter than this is a fast crash) */
    int max_fast_crashes;        /* 0: 5 */
    int64_t stop_grace_ms;       /* 0: 5000 (SIGTERM, then SIGKILL) */
    agent_sup_event_fn on_event; /* may be NULL */
    void *ud;
} agent_sup_config_t;

typedef struct agent_sup agent_sup_t;

/* Creates the supervisor and adopts the still-running workers named in the
 * registry file (a missing file is fine; a corrupt one is reported and
 * ignored, since the workers it named cannot be verified). */
int agent_sup_create(const agent_sup_config_t *cfg, agent_sup_t **out, cr_err_t *err);
/* Frees the supervisor; workers keep running (see above). */
void agent_sup_destroy(agent_sup_t *sup);

/* Starts a worker. CR_EEXIST when the same (experiment, role, index) is running,
 * in back-off or stopping; a finished entry (stopped, exited, failed) is
 * replaced. CR_ENOENT / CR_EPERM when argv[0] cannot be executed (reported
 * synchronously, nothing is left running). */
int agent_sup_start(agent_sup_t *sup, const agent_worker_spec_t *spec, cr_err_t *err);

/* Asks a worker to stop: SIGTERM to its process group now, SIGKILL after the
 * grace period (agent_sup_poll escalates). A worker in back-off is stopped at
 * once. CR_ENOENT for an unknown worker; stopping a finished one is a no-op. */
int agent_sup_stop(agent_sup_t *sup, const char *experiment, const char *role, int index,
                   cr_err_t *err);
/* Stops every worker of experiment (NULL: of every experiment). */
int agent_sup_stop_experiment(agent_sup_t *sup, const char *experiment, cr_err_t *err);
/* Stops every worker and waits (polling) until all have ended or timeout_ms
 * passed; CR_ETIMEDOUT then. */
int agent_sup_stop_all(agent_sup_t *sup, int64_t timeout_ms, cr_err_t *err);

/* Reaps, restarts and escalates; returns the number of state changes. */
int agent_sup_poll(agent_sup_t *sup);
/* Monotonic time (cr_now_ns) by which agent_sup_poll should next run; 0 when
 * nothing is pending other than watching for exits (poll at your own pace). */
int64_t agent_sup_next_wakeup_ns(const agent_sup_t *sup);

/* Copies up to cap worker snapshots into out (sorted by experiment, role,
 * index); returns how many workers there are (may exceed cap). */
size_t agent_sup_list(const agent_sup_t *sup, agent_worker_info_t *out, size_t cap);
/* One worker's snapshot: 0 or CR_ENOENT. */
int agent_sup_get(const agent_sup_t *sup, const char *experiment, const char *role, int index,
                  agent_worker_info_t *out);
/* Drops a finished worker's entry (stopped, exited, failed): 0, CR_ENOENT, CR_EBUSY. */
int agent_sup_forget(agent_sup_t *sup, const char *experiment, const char *role, int index,
                     cr_err_t *err);

/* Helpers shared with the adoption check; exposed for tests. The kernel start
 * time of pid (clock ticks since boot, /proc/<pid>/stat field 22) and the
 * FNV-1a 64 hash of /proc/<pid>/cmdline: 0 or CR_ENOENT (no such live process). */
int agent_proc_identity(pid_t pid, uint64_t *start_ticks, uint64_t *cmdline_hash);
/* The hash agent_proc_identity gives for a process exec'd with argv. */
uint64_t agent_argv_hash(char *const *argv);

#endif
