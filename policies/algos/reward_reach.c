/* reward_reach.c - the built-in "reach-distance" reward: minus the length of a
 * vector the observation carries (for reaching tasks, fingertip minus target),
 * with success when it is shorter than a threshold, and an optional bonus while
 * it is (a dense distance term alone is flat near the goal). Configured with the
 * vector's offset and length in the observation. */
#include "policies/algos/algo.h"

#include <math.h>
#include <stdlib.h>

typedef struct reach_cfg {
    long offset, dims;
    float threshold, scale, bonus;
} reach_cfg_t;

#define OFF(f) offsetof(reach_cfg_t, f)
static const pol_setting_t reach_settings[] = {
    {"offset", SET_INT, "0", 0, 1 << 24, OFF(offset), "first index of the vector in the observation"},
    {"dims", SET_INT, "2", 1, 16, OFF(dims), "length of the vector"},
    {"threshold", SET_FLOAT, "0.02", 0, 1e6, OFF(threshold), "success distance"},
    {"scale", SET_FLOAT, "1", 0, 1e6, OFF(scale), "reward = -scale * distance"},
    {"bonus", SET_FLOAT, "0", -1e6, 1e6, OFF(bonus), "added while within the threshold"},
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
#undef OFF

static int reach_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self,
                        corral_err_t *cerr)
{
    cr_err_t *err = pol_err(cerr);
    reach_cfg_t c;
    int rc = pol_settings_apply(reach_settings, &c, NULL, 0, cfg, n, err);
    if (rc) return cr_err_wrap(err, "reach-distance");
    if (!spec || c.offset + c.dims > spec->obs_dim)
        return cr_err_set(err, CR_EINVAL, "reach-distance: offset %ld + dims %ld exceeds obs_dim %d", c.offset,
                          c.dims, spec ? spec->obs_dim : 0);
    reach_cfg_t *s = malloc(sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "reach-distance: out of memory");
    *s = c;
    *self = s;
    return 0;
}

static int reach_compute(void *self, const float *obs, const float *action, const float *next_obs,
                         float *reward, int *success, corral_err_t *err)
{
    const reach_cfg_t *c = self;
    double d2 = 0.0;
    for (long i = 0; i < c->dims; i++) d2 += (double)next_obs[c->offset + i] * next_obs[c->offset + i];
    double d = sqrt(d2);
    if (!isfinite(d)) return cr_err_set(pol_err(err), CR_EINVAL, "reach-distance: non-finite observation");
    *success = d < c->threshold;
    *reward = (float)(-c->scale * d + (*success ? c->bonus : 0.0f));
    return 0;
}

static void reach_destroy(void *self) { free(self); }

static const corral_reward_vtable_t reach_vt = {
    .struct_size = sizeof(corral_reward_vtable_t),
    .create = reach_create,
    .compute = reach_compute,
    .destroy = reach_destroy,
};

const corral_plugin_t pol_reach_reward_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION,
    .kind = CORRAL_PLUGIN_REWARD,
    .name = "reach-distance",
    .description = "minus the distance carried in the observation; success under a threshold",
    .reward = &reach_vt,
};
