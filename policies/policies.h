/* policies.h - the public API of the policies component: algorithm and reward
 * plugins (built-in or loaded from shared objects) behind the versioned ABI of
 * corral/plugin.h, and thin helpers to drive an algorithm instance. The nn layer
 * (policies/nn/nn.h) and the safetensors codec (policies/nn/safetensors.h) are
 * included for callers that handle weights directly.
 *
 * Built-in plugins: algorithms "sac", "rlpd", "bc", "hg-dagger", "flow-bc",
 * "flow-rl", "vla-bc", "vla"; reward "reach-distance". User plugins are opened
 * with pol_plugin_open. */
#ifndef CORRAL_POLICIES_POLICIES_H
#define CORRAL_POLICIES_POLICIES_H

#include "common/err.h"
#include "corral/plugin.h"
#include "policies/nn/nn.h"
#include "policies/nn/safetensors.h"

/* ---- plugins ---- */

/* A loaded plugin. desc is borrowed from the plugin's static storage and stays
 * valid until pol_plugin_close; dl is NULL for built-ins. */
typedef struct pol_plugin {
    const corral_plugin_t *desc;
    void *dl;
} pol_plugin_t;

/* Checks a descriptor: ABI version, kind, name, vtable size and that every
 * required function is present. Errors name the field at fault. */
int pol_plugin_validate(const corral_plugin_t *desc, cr_err_t *err);

/* dlopens path, resolves CORRAL_PLUGIN_ENTRY, validates what it returns.
 * CR_ENOENT (no file), CR_EINVAL (not a loadable object / missing symbol),
 * CR_EVERSION (other ABI version) with a message naming the path. */
int pol_plugin_open(const char *path, pol_plugin_t *out, cr_err_t *err);
void pol_plugin_close(pol_plugin_t *p);

/* Built-in plugins, registered through the same descriptors. */
int pol_builtin_count(void);
const corral_plugin_t *pol_builtin_at(int i);
/* kind 0 matches any kind; NULL when absent. */
const corral_plugin_t *pol_builtin_find(const char *name, uint32_t kind);

/* ---- an algorithm instance ---- */
typedef struct pol_algo {
    const corral_plugin_t *desc;   /* borrowed */
    void *self;                    /* owned; freed by pol_algo_destroy */
} pol_algo_t;

int pol_algo_create(pol_algo_t *a, const corral_plugin_t *desc, const corral_kv_t *cfg,
                    size_t ncfg, const corral_spec_t *spec, cr_err_t *err);
int pol_algo_update(pol_algo_t *a, const corral_batch_t *batch, corral_metrics_t *m, cr_err_t *err);
int pol_algo_act(pol_algo_t *a, const float *obs, int deterministic, float *action, cr_err_t *err);
/* Exports into a malloc'd blob the caller frees. */
int pol_algo_export(pol_algo_t *a, void **blob, size_t *len, cr_err_t *err);
int pol_algo_import(pol_algo_t *a, const void *blob, size_t len, cr_err_t *err);
int pol_algo_save(pol_algo_t *a, const char *path, cr_err_t *err);
int pol_algo_load(pol_algo_t *a, const char *path, cr_err_t *err);
void pol_algo_destroy(pol_algo_t *a);

/* ---- instructions ---- */
/* A language instruction as the VLA algorithms read it: ctx byte-level token ids
 * (0 PAD, 1 BOS, 2 + byte) written as floats into ids[ctx], appended by an env
 * worker to the robot's observation vector. An instruction that does not fit is
 * CR_EINVAL naming both lengths; nothing is cut. */
int pol_instruction_tokens(const char *text, float *ids, int ctx, cr_err_t *err);

/* ---- metrics ---- */
/* Sets (or adds) a metric; silently ignores overflow past CORRAL_METRICS_MAX. */
void pol_metric_set(corral_metrics_t *m, const char *name, double value);
/* NaN when absent. */
double pol_metric_get(const corral_metrics_t *m, const char *name);

#endif
