/* spec_request.c - maps the experiment YAML's robots, learner and placement
 * sections onto a ctl_sched_request_t, the only input the scheduler takes, so the
 * scheduler stays free of YAML and the spec free of placement logic. */
#include "controller/spec_request.h"

#include <string.h>

void ctl_sched_request_from_spec(const exp_spec_t *spec, ctl_sched_request_t *req)
{
    memset(req, 0, sizeof *req);
    req->experiment = spec->name;
    req->robot_names = (const char *const *)spec->robots.names;
    req->n_robot_names = spec->robots.n_names;
    req->robot_driver = spec->robots.driver;
    req->robot_model = spec->robots.model;
    req->robot_labels = (const char *const *)spec->robots.labels;
    req->n_robot_labels = spec->robots.n_labels;
    req->robot_count = spec->robots.count;
    req->learner_gpus = spec->learner.gpus;
    req->learner_gpu_mem = spec->learner.gpu_memory;
    req->learner_node = spec->placement.learner_node && *spec->placement.learner_node
                            ? spec->placement.learner_node : NULL;
    req->actor_cpu = spec->placement.actor == EXP_ACTOR_CPU;
    req->state_movable = spec->placement.state_shared;
}
