/* worker.c - the entry of `corral worker`: parses the role, loads the experiment
 * spec with its overrides, checks the flags every role needs, and runs the role
 * (worker_learner.c or worker_env.c). It also turns the node's data-plane flags
 * (controller, security, inbound) into the hub options both roles use. */
#include "agents/worker_int.h"
#include "common/id.h"

#include <stdio.h>
#include <string.h>

int wk_hub_opts(const agent_worker_opts_t *o, const char *listen, ch_hub_opts_t *ho, rpc_opts_t *rpc,
                char *listen_buf, size_t cap, cr_err_t *err)
{
    memset(ho, 0, sizeof *ho);
    memset(rpc, 0, sizeof *rpc);
    ho->node = o->node;
    ho->advertise = o->advertise;
    if (o->no_inbound) {
        /* Behind NAT: nothing may be dialled here; peers come through the relay. */
        if (o->listen)
            return cr_err_set(err, CR_EINVAL, "--listen %s and --no-inbound contradict each other", o->listen);
        listen = NULL;
    } else if (o->listen) {
        listen = o->listen;
    } else if (!listen && o->advertise && *o->advertise) {
        /* A port of its own on the advertised host only: the direct route has no
         * TLS of its own, so it is not offered on interfaces nobody named. */
        if ((size_t)snprintf(listen_buf, cap, "%s:0", o->advertise) >= cap)
            return cr_err_set(err, CR_EINVAL, "--advertise '%.80s': too long", o->advertise);
        listen = listen_buf;
    }
    ho->listen = listen;
    if (!o->controller || !*o->controller) {
        if (o->no_inbound)
            return cr_err_set(err, CR_EINVAL, "--no-inbound needs --controller ADDR: the relay through which peers "
                              "on other nodes reach this worker");
        return 0;
    }
    if (!strchr(o->controller, ':'))
        return cr_err_set(err, CR_EINVAL, "--controller '%s': expected HOST:PORT", o->controller);
    const char *sec = o->rpc_security ? o->rpc_security : "insecure";
    if (!strcmp(sec, "insecure")) rpc->security = RPC_INSECURE;
    else if (!strcmp(sec, "tls")) rpc->security = RPC_TLS;
    else if (!strcmp(sec, "mtls")) rpc->security = RPC_MTLS;
    else return cr_err_set(err, CR_EINVAL, "--rpc-security '%s': expected insecure, tls or mtls", sec);
    if (rpc->security != RPC_INSECURE && !o->rpc_cert_dir)
        return cr_err_set(err, CR_EINVAL, "--rpc-security %s needs --rpc-cert-dir DIR (the node's certificates)", sec);
    rpc->cert_dir = o->rpc_cert_dir;
    rpc->server_name = o->rpc_server_name;
    rpc->token = o->rpc_token && *o->rpc_token ? o->rpc_token : NULL;
    ho->relay = o->controller;
    ho->directory = o->controller;
    ho->relay_rpc = rpc;
    return 0;
}

int agent_worker_role_parse(const char *s, agent_worker_role_t *out)
{
    if (s && !strcmp(s, "learner")) return *out = AGENT_WORKER_LEARNER, 0;
    if (s && (!strcmp(s, "env") || !strcmp(s, "actor"))) return *out = AGENT_WORKER_ENV, 0;
    return s && !strcmp(s, "buffer") ? CR_ENOTSUP : CR_EINVAL;
}

int agent_worker_run(const agent_worker_opts_t *o, volatile sig_atomic_t *stop, cr_err_t *err)
{
    if (!o->spec_path) return cr_err_set(err, CR_EINVAL, "--spec FILE is required");
    char dir[4096];
    if (!o->dir && o->state_dir && o->experiment) {
        if (!cr_name_valid(o->experiment))
            return cr_err_set(err, CR_EINVAL, "--experiment '%s': not a valid name", o->experiment);
        snprintf(dir, sizeof dir, "%s/experiments/%s", o->state_dir, o->experiment);
    } else if (o->dir) {
        snprintf(dir, sizeof dir, "%s", o->dir);
    } else {
        return cr_err_set(err, CR_EINVAL, "--dir DIR (or --state-dir DIR with --experiment NAME) is required");
    }
    if (o->node && !cr_name_valid(o->node))
        return cr_err_set(err, CR_EINVAL, "--node '%s': use 1-63 of a-z 0-9 _ -", o->node);
    if (o->index < 0) return cr_err_set(err, CR_EINVAL, "--index must be >= 0");
    agent_worker_opts_t oo = *o;
    if (!oo.node) oo.node = "local";
    oo.dir = dir;
    int rc = wk_mkdirs(oo.dir, err);
    if (rc) return rc;
    nn_cpu_set_threads(oo.threads > 0 ? oo.threads : 1);
    exp_spec_t spec;
    rc = exp_spec_load_file(&spec, oo.spec_path, oo.sets, oo.n_sets, err);
    if (rc) return rc;
    /* The robot's driver and model from the spec when the flags leave them out. */
    if (!oo.robot_driver && *spec.robots.driver) oo.robot_driver = spec.robots.driver;
    if (!oo.robot_model && *spec.robots.model) oo.robot_model = spec.robots.model;
    if (oo.role == AGENT_WORKER_LEARNER) rc = wk_learner_run(&oo, &spec, stop, err);
    else rc = wk_env_run(&oo, &spec, stop, err);
    exp_spec_free(&spec);
    return rc;
}
