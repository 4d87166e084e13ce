/* reach_bonus.c - an example reward plugin for corral, built against
 * <corral/plugin.h> only: reward = -|d|^2 + bonus when |d| < threshold, where d
 * is a vector the observation carries (e.g. fingertip minus target) at `offset`
 * with `dims` entries. Success is |d| < threshold.
 *
 * Build: cc -std=c11 -shared -fPIC -I<corral>/include reach_bonus.c -o reach_bonus.so -lm
 * Settings: offset (0), dims (2), threshold (0.02), bonus (1). */
#include <corral/plugin.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reach {
    long offset, dims;
    double threshold, bonus;
} reach_t;

static int fail(corral_err_t *err, int code, const char *msg)
{
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "reach-bonus: %s", msg);
    return code;
}

static int rb_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self, corral_err_t *err)
{
    reach_t r = {0, 2, 0.02, 1.0};
    for (size_t i = 0; i < n; i++) {
        char *end;
        double v = strtod(cfg[i].value, &end);
        if (*end || end == cfg[i].value) return fail(err, CORRAL_EINVAL, "settings are numbers");
        if (!strcmp(cfg[i].key, "offset")) r.offset = (long)v;
        else if (!strcmp(cfg[i].key, "dims")) r.dims = (long)v;
        else if (!strcmp(cfg[i].key, "threshold")) r.threshold = v;
        else if (!strcmp(cfg[i].key, "bonus")) r.bonus = v;
        else return fail(err, CORRAL_EINVAL, "unknown setting (known: offset, dims, threshold, bonus)");
    }
    if (!spec || r.offset < 0 || r.dims < 1 || r.offset + r.dims > spec->obs_dim)
        return fail(err, CORRAL_EINVAL, "offset + dims must lie inside the observation");
    reach_t *s = malloc(sizeof *s);
    if (!s) return fail(err, CORRAL_ENOMEM, "out of memory");
    *s = r;
    *self = s;
    return 0;
}

static int rb_compute(void *self, const float *obs, const float *action, const float *next_obs, float *reward,
                      int *success, corral_err_t *err)
{
    const reach_t *r = self;
    (void)obs;
    (void)action;
    double d2 = 0.0;
    for (long i = 0; i < r->dims; i++) d2 += (double)next_obs[r->offset + i] * next_obs[r->offset + i];
    if (!isfinite(d2)) return fail(err, CORRAL_EINVAL, "non-finite observation");
    *success = sqrt(d2) < r->threshold;
    *reward = (float)(-d2 + (*success ? r->bonus : 0.0));
    return 0;
}

static void rb_destroy(void *self) { free(self); }

static const corral_reward_vtable_t vt = {
    .struct_size = sizeof(corral_reward_vtable_t),
    .create = rb_create,
    .compute = rb_compute,
    .destroy = rb_destroy,
};

static const corral_plugin_t plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION,
    .kind = CORRAL_PLUGIN_REWARD,
    .name = "reach-bonus",
    .description = "example: negative squared distance plus a success bonus",
    .reward = &vt,
};

CORRAL_PLUGIN_EXPORT const corral_plugin_t *corral_plugin_entry(void) { return &plugin; }
