/* progress.h - what a node agent tells the controller about its workers' progress:
 * the status files the workers keep (worker.h: <state>/experiments/<experiment>/
 * status/learner.json and env-<index>.json, replaced atomically) read back into
 * WorkerProgress messages (corral/v1/workers.proto).
 *
 * The agent calls agent_progress_collect once per heartbeat: it reads the status
 * file of every worker the supervisor knows and keeps those written since the
 * previous call (by the worker's own time stamp), so an idle cluster sends
 * nothing. `force` sends them all: after a new session (a restarted controller
 * learns every counter at once) and right before a worker's final state goes out
 * (so the controller sees "done" before "exited"). A file of an earlier run of
 * the experiment (another generation) is never sent; a missing or half-written
 * file is skipped until the next call.
 *
 * Not thread-safe: the agent's loop thread owns it. */
#ifndef CORRAL_AGENTS_PROGRESS_H
#define CORRAL_AGENTS_PROGRESS_H

#include "agents/supervisor.h"
#include "common/err.h"
#include "corral/v1/workers.pb-c.h"

typedef struct agent_progress agent_progress_t;

/* state_dir is copied. */
int agent_progress_create(const char *state_dir, agent_progress_t **out, cr_err_t *err);
void agent_progress_destroy(agent_progress_t *pr);

/* Reads one worker's status file into *out (initialised here; its strings are
 * malloc'd: free them with agent_progress_clear). 0; CR_ENOENT when there is no
 * file yet; CR_ECORRUPT when it is not a status file; CR_EBUSY when it belongs
 * to another run (generation) than info's. */
int agent_progress_read(const char *state_dir, const agent_worker_info_t *info, Corral__V1__WorkerProgress *out,
                        cr_err_t *err);
/* Frees the strings agent_progress_read put into *p (not p itself). */
void agent_progress_clear(Corral__V1__WorkerProgress *p);

/* A ProgressReport of the workers of sup (of experiment only, when not NULL)
 * whose status changed since they were last collected (every one when force);
 * *out is NULL when there is nothing to send. Free with agent_progress_report_free. */
int agent_progress_collect(agent_progress_t *pr, const agent_sup_t *sup, const char *experiment, int force,
                           Corral__V1__ProgressReport **out, cr_err_t *err);
void agent_progress_report_free(Corral__V1__ProgressReport *r);

#endif
