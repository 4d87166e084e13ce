/* expctl_proto.c - worker commands into AgentLink messages; see expctl_proto.h. */
#include "controller/expctl_proto.h"

#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(int) == sizeof(int32_t), "ctl_worker_cmd_t.gpus doubles as the proto's int32 array");

void ctl_cmd_start_proto(const ctl_worker_cmd_t *c, uint64_t command_id, const char *spec_yaml,
                         const char *buffer_addr, const char *learner_addr, Corral__V1__StartWorker *out,
                         Corral__V1__WorkerSpec *spec)
{
    corral__v1__start_worker__init(out);
    corral__v1__worker_spec__init(spec);
    out->command_id = command_id;
    out->spec = spec;
    spec->experiment = (char *)c->experiment;
    spec->generation = c->generation;
    spec->role = (char *)c->role;
    spec->index = c->index;
    spec->spec_yaml = (char *)(spec_yaml ? spec_yaml : "");
    spec->robot = (char *)c->robot;
    spec->gpus = (int32_t *)c->gpus;
    spec->n_gpus = (size_t)c->n_gpus;
    spec->buffer_address = (char *)(buffer_addr ? buffer_addr : "");
    spec->learner_address = (char *)(learner_addr ? learner_addr : "");
}

void ctl_cmd_stop_proto(const ctl_worker_cmd_t *c, uint64_t command_id, Corral__V1__StopWorker *out)
{
    corral__v1__stop_worker__init(out);
    out->command_id = command_id;
    out->experiment = (char *)c->experiment;
    out->role = (char *)c->role;
    out->index = c->index;
}

void ctl_progress_from_proto(const Corral__V1__WorkerProgress *w, ctl_progress_report_t *out)
{
    memset(out, 0, sizeof *out);
    out->experiment = w->experiment;
    out->generation = w->generation;
    out->role = w->role;
    out->index = w->index;
    out->dir = w->dir;
    ctl_worker_progress_t *p = &out->p;
    snprintf(p->state, sizeof p->state, "%s", w->state);
    p->env_steps = w->env_steps;
    p->episodes = w->episodes;
    p->updates = w->updates;
    p->policy_version = w->policy_version;
    p->checkpoint = w->checkpoint;
    p->eval_round = w->eval_round;
    p->success_rate = w->success_rate;
    p->eval_success_rate = w->eval_success_rate;
    p->mean_return = w->mean_return;
    p->staleness = w->staleness;
    p->steps_per_s = w->steps_per_s;
    p->updates_per_s = w->updates_per_s;
    p->time_ms = w->time_unix_ms > 0 ? w->time_unix_ms : 1; /* "reported" */
}
