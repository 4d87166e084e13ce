/* registry.c - the built-in plugins (registered through the same corral_plugin_t
 * descriptors a user plugin exports) and the pol_algo_* helpers that drive any
 * algorithm instance through its vtable, plus the metrics helpers. */
#include "policies/algos/algo.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(corral_err_t) == sizeof(cr_err_t), "corral_err_t must mirror cr_err_t");
_Static_assert(offsetof(corral_err_t, msg) == offsetof(cr_err_t, msg), "corral_err_t must mirror cr_err_t");
_Static_assert((int)CORRAL_EINVAL == (int)CR_EINVAL && (int)CORRAL_ENOENT == (int)CR_ENOENT &&
               (int)CORRAL_ENOMEM == (int)CR_ENOMEM && (int)CORRAL_EIO == (int)CR_EIO &&
               (int)CORRAL_ECORRUPT == (int)CR_ECORRUPT && (int)CORRAL_EVERSION == (int)CR_EVERSION &&
               (int)CORRAL_ETOOBIG == (int)CR_ETOOBIG && (int)CORRAL_ENOTSUP == (int)CR_ENOTSUP,
               "plugin error codes must equal the internal ones");

static const corral_plugin_t *const builtins[] = {
    &pol_sac_plugin, &pol_rlpd_plugin, &pol_bc_plugin, &pol_dagger_plugin, &pol_reach_reward_plugin,
    &pol_flow_bc_plugin, &pol_flow_rl_plugin, &pol_vla_bc_plugin, &pol_vla_plugin,
};
#define NBUILTIN ((int)(sizeof builtins / sizeof builtins[0]))

int pol_builtin_count(void) { return NBUILTIN; }
const corral_plugin_t *pol_builtin_at(int i) { return i >= 0 && i < NBUILTIN ? builtins[i] : NULL; }

const corral_plugin_t *pol_builtin_find(const char *name, uint32_t kind)
{
    for (int i = 0; i < NBUILTIN; i++)
        if (strcmp(builtins[i]->name, name) == 0 && (!kind || builtins[i]->kind == kind)) return builtins[i];
    return NULL;
}

/* Plugins write into corral_err_t; make sure a failure always carries a message. */
static int fix(int rc, cr_err_t *err, const pol_algo_t *a, const char *what)
{
    if (rc == 0) return 0;
    if (err && !err->msg[0]) cr_err_set(err, rc, "%s: %s failed (%s)", a->desc->name, what, cr_err_str(rc));
    if (err) err->code = rc;
    return rc;
}

int pol_algo_create(pol_algo_t *a, const corral_plugin_t *desc, const corral_kv_t *cfg, size_t ncfg,
                    const corral_spec_t *spec, cr_err_t *err)
{
    a->desc = desc;
    a->self = NULL;
    if (desc->kind != CORRAL_PLUGIN_ALGO)
        return cr_err_set(err, CR_EINVAL, "plugin '%s' is not an algorithm", desc->name);
    cr_err_clear(err);
    int rc = desc->algo->create(cfg, ncfg, spec, &a->self, (corral_err_t *)err);
    if (rc == 0 && !a->self) return cr_err_set(err, CR_EINTERNAL, "%s: create returned no instance", desc->name);
    return fix(rc, err, a, "create");
}

int pol_algo_update(pol_algo_t *a, const corral_batch_t *batch, corral_metrics_t *m, cr_err_t *err)
{
    return fix(a->desc->algo->update(a->self, batch, m, (corral_err_t *)err), err, a, "update");
}

int pol_algo_act(pol_algo_t *a, const float *obs, int deterministic, float *action, cr_err_t *err)
{
    return fix(a->desc->algo->act(a->self, obs, deterministic, action, (corral_err_t *)err), err, a, "act");
}

int pol_algo_export(pol_algo_t *a, void **blob, size_t *len, cr_err_t *err)
{
    *blob = NULL;
    size_t need = 0;
    cr_err_t probe = {0};
    int rc = a->desc->algo->export_policy(a->self, NULL, 0, &need, (corral_err_t *)&probe);
    if (rc != CORRAL_ETOOBIG && rc != 0) {
        if (err) *err = probe;
        return fix(rc, err, a, "export_policy");
    }
    void *buf = malloc(need ? need : 1);
    if (!buf) return cr_err_set(err, CR_ENOMEM, "%s: no memory for a %zu-byte policy", a->desc->name, need);
    rc = a->desc->algo->export_policy(a->self, buf, need, len, (corral_err_t *)err);
    if (rc) { free(buf); return fix(rc, err, a, "export_policy"); }
    *blob = buf;
    return 0;
}

int pol_algo_import(pol_algo_t *a, const void *blob, size_t len, cr_err_t *err)
{
    return fix(a->desc->algo->import_policy(a->self, blob, len, (corral_err_t *)err), err, a, "import_policy");
}

int pol_algo_save(pol_algo_t *a, const char *path, cr_err_t *err)
{
    return fix(a->desc->algo->save(a->self, path, (corral_err_t *)err), err, a, "save");
}

int pol_algo_load(pol_algo_t *a, const char *path, cr_err_t *err)
{
    return fix(a->desc->algo->load(a->self, path, (corral_err_t *)err), err, a, "load");
}

void pol_algo_destroy(pol_algo_t *a)
{
    if (a->self) a->desc->algo->destroy(a->self);
    a->self = NULL;
}

void pol_metric_set(corral_metrics_t *m, const char *name, double value)
{
    if (!m) return;
    for (int i = 0; i < m->count; i++)
        if (strcmp(m->item[i].name, name) == 0) { m->item[i].value = value; return; }
    if (m->count >= CORRAL_METRICS_MAX) return;
    snprintf(m->item[m->count].name, CORRAL_METRIC_NAME_MAX, "%s", name);
    m->item[m->count++].value = value;
}

double pol_metric_get(const corral_metrics_t *m, const char *name)
{
    for (int i = 0; i < m->count; i++)
        if (strcmp(m->item[i].name, name) == 0) return m->item[i].value;
    return NAN;
}
