/* workq.h - one worker thread running jobs in FIFO order (private to controller/).
 * AgentLink callbacks run on gRPC queue threads and must never wait for SQLite;
 * they hand inventories and session ends to this queue, whose order keeps each
 * session's jobs in the order its messages arrived. */
#ifndef CORRAL_CONTROLLER_WORKQ_H
#define CORRAL_CONTROLLER_WORKQ_H

#include "common/err.h"

typedef struct ctl_workq ctl_workq_t;

int ctl_workq_create(ctl_workq_t **out, cr_err_t *err);
/* Queues fn(arg); returns CR_ENOMEM (the job did not run) or 0. */
int ctl_workq_push(ctl_workq_t *q, void (*fn)(void *arg), void *arg);
/* Runs every queued job, then stops the thread and frees. NULL is a no-op. */
void ctl_workq_destroy(ctl_workq_t *q);

#endif
