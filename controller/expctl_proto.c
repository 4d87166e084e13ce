/* expctl_proto.c - worker commands into AgentLink messages; see expctl_proto.h. */
#include "controller/expctl_proto.h"

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
