/* worker.h - the worker processes an experiment is made of (`corral worker --role
 * learner|env|actor`), started by an agent's supervisor, one process per role
 * instance.
 *
 * learner  hosts the experiment's replay buffer (DIR/buffer.db) and the learning
 *          algorithm together, as the buffer lives on the learner's node. It creates
 *          the channel "transitions" in its hub and writes where it can be reached
 *          to DIR/learner.where; it stores every transition it receives in the
 *          buffer and acknowledges it to its env worker only after the commit; it
 *          trains at the configured update-to-data ratio through the buffer's rate
 *          limiter; it publishes policy weights by version (weight sync); it writes
 *          checkpoints (DIR/checkpoints/ckpt-<updates>/) and resumes from the newest
 *          complete one with its counters continuing.
 * env      (and `actor`, the same process: env and policy share a node and no
 *          observation is copied) opens one robot through the HAL, runs the newest
 *          policy it holds at the robot's control rate, tags every transition with
 *          that policy's version, and sends transitions at least once: what the
 *          learner has not acknowledged is kept and sent again to a restarted
 *          learner. It takes new weights at episode boundaries, pauses while its
 *          policy lags the learner's by more than algorithm.max_staleness versions,
 *          and runs deterministic evaluation episodes whose success rate it reports.
 *
 * Both read the experiment spec (YAML plus --set overrides; the worker's settings
 * table is in worker_spec.c) and write progress to DIR/status/<role>[-<index>].json,
 * replaced atomically about twice a second (the agent forwards it to the
 * controller, agents/progress.h):
 *   learner.json: state (running|done|stopped|failed; done is written as soon as a
 *     stop condition holds, before the envs are told), pid, generation, env_steps,
 *     episodes, success_rate (last 100 training episodes), eval_success_rate (newest
 *     complete evaluation round, -1 before any), eval_mean_return (its mean episode
 *     return), eval_round, updates, updates_per_s,
 *     policy_version, staleness (mean versions between the acting policy and the
 *     learner's at insert), envs (connected), checkpoint (newest), time_ns;
 *   env-<i>.json: state, index, pid, generation, robot, producer, acked (every seq
 *     <= acked is committed in buffer.db), last_seq, unacked, env_steps, episodes,
 *     success_rate, policy_version, learner_version, learner_updates, eval_round,
 *     eval_success_rate, steps_per_s, paused_s, reconnects, time_ns.
 * Exit status: 0
 * when the experiment is done or on SIGTERM / SIGINT (after a final checkpoint and
 * status), 1 on bad input (spec, flags), 3 on a runtime failure (the supervisor
 * restarts the worker). */
#ifndef CORRAL_AGENTS_WORKER_H
#define CORRAL_AGENTS_WORKER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef enum agent_worker_role {
    AGENT_WORKER_LEARNER = 0, /* learner and buffer */
    AGENT_WORKER_ENV,         /* env and actor */
} agent_worker_role_t;

#define AGENT_WORKER_MAX_SETS 64
#define AGENT_WORKER_MAX_ROBOT_OPTS 32

/* Everything a worker is started with; strings are borrowed for the run. */
typedef struct agent_worker_opts {
    agent_worker_role_t role;
    const char *spec_path;          /* experiment YAML (required) */
    const char *const *sets;        /* "a.b=value" overrides of the spec */
    size_t n_sets;
    const char *dir;                /* experiment directory on this node; default
                                       STATE_DIR/experiments/EXPERIMENT */
    const char *experiment;         /* the experiment's name (as the agent knows it) */
    const char *state_dir;          /* the agent's state directory */
    int64_t generation;             /* the experiment's run number (reported) */
    const char *node;               /* this node's name (default "local") */
    int index;                      /* env: which env worker of the experiment (>= 0) */
    /* learner: direct-route listen address ("0.0.0.0:0"), NULL for one node only. */
    const char *listen;
    const char *advertise;
    /* env: where the learner is: DIR/learner.where when it exists (one node, or a
     * shared experiment directory), else this: "NODE@HOST:PORT" or "HOST:PORT" (a
     * learner on another node). learner: listen there when --listen is not given. */
    const char *learner;
    /* The node's data-plane settings, from the agent: the controller (the relay for
     * tunnelled channels and the channel directory; NULL: none), how to dial it
     * (security "insecure" | "tls" | "mtls", the node's certificate directory, the
     * name in the controller's certificate), and whether the node accepts no
     * inbound connection: then the worker serves no direct route (--listen is
     * refused) and peers on other nodes reach it through the relay. An --advertise
     * without --listen (an inbound node) serves the direct route on a port of its
     * own on that host. */
    const char *controller;
    const char *rpc_security;
    const char *rpc_cert_dir;
    const char *rpc_server_name;
    const char *rpc_token;          /* the node's bearer token for it, or NULL (`corral
                                       worker` takes it from $CORRAL_NODE_TOKEN) */
    int no_inbound;
    /* env: the robot, as the agent knows it: name, driver, model (driver and model
     * default to the spec's robots.driver and robots.model), options. */
    const char *robot_name;
    const char *robot_driver;
    const char *robot_model;
    const char *const *robot_opts;  /* "key=value" */
    size_t n_robot_opts;
    /* Tuning with defaults (0: default). */
    int64_t publish_every;          /* learner: updates between weight versions (100) */
    int64_t max_unacked;            /* env: transitions kept unacknowledged before the
                                       env pauses (4096) */
    int64_t status_ms;              /* status file period (500) */
    /* Synchronous collection and training (for comparison; off by default): the
     * learner trains only on data already collected (algorithm.utd updates per env
     * step) and publishes when caught up; an env starts its next episode only after
     * the learner has trained on everything it sent and published new weights. */
    int sync;
    /* learner: no update-to-data cap (the learner trains as fast as it can on what
     * the buffer holds; for comparisons). */
    int no_rate_limit;
    int threads;                    /* BLAS threads (default 1: small matrices, and
                                       threads fight on a shared CPU) */
} agent_worker_opts_t;

/* "learner" | "env" | "actor" ("actor" runs the env role: env and actor in one
 * process); CR_ENOTSUP for "buffer" (it runs inside the learner), CR_EINVAL
 * otherwise. */
int agent_worker_role_parse(const char *s, agent_worker_role_t *out);

/* Runs the role until the experiment is done, *stop becomes non-zero (a signal
 * handler sets it), or a failure. Returns 0, CR_EINVAL for bad input (the message
 * names the file, flag or field) or another negative code for a runtime failure. */
int agent_worker_run(const agent_worker_opts_t *o, volatile sig_atomic_t *stop, cr_err_t *err);

#endif
