/* worker.c - the entry of `corral worker`: parses the role, loads the experiment
 * spec with its overrides, checks the flags every role needs, and runs the role
 * (worker_learner.c or worker_env.c). */
#include "agents/worker_int.h"
#include "common/id.h"

#include <string.h>

int agent_worker_role_parse(const char *s, agent_worker_role_t *out)
{
    if (s && !strcmp(s, "learner")) return *out = AGENT_WORKER_LEARNER, 0;
    if (s && (!strcmp(s, "env") || !strcmp(s, "actor"))) return *out = AGENT_WORKER_ENV, 0;
    return CR_EINVAL;
}

int agent_worker_run(const agent_worker_opts_t *o, volatile sig_atomic_t *stop, cr_err_t *err)
{
    if (!o->spec_path) return cr_err_set(err, CR_EINVAL, "--spec FILE is required");
    if (!o->dir) return cr_err_set(err, CR_EINVAL, "--dir DIR (the experiment directory) is required");
    if (o->node && !cr_name_valid(o->node))
        return cr_err_set(err, CR_EINVAL, "--node '%s': use 1-63 of a-z 0-9 _ -", o->node);
    if (o->index < 0) return cr_err_set(err, CR_EINVAL, "--index must be >= 0");
    agent_worker_opts_t oo = *o;
    if (!oo.node) oo.node = "local";
    int rc = wk_mkdirs(oo.dir, err);
    if (rc) return rc;
    wk_spec_t spec;
    rc = wk_spec_load(&spec, oo.spec_path, oo.sets, oo.n_sets, err);
    if (rc) return rc;
    if (oo.role == AGENT_WORKER_LEARNER) rc = wk_learner_run(&oo, &spec, stop, err);
    else rc = wk_env_run(&oo, &spec, stop, err);
    wk_spec_free(&spec);
    return rc;
}
