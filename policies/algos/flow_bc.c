/* flow_bc.c - behaviour cloning of a flow-matching action-chunk policy, behind
 * the plugin ABI as "flow-bc".
 *
 * Update: the flow-matching loss (gen.h) on the batch's action chunks. With
 * horizon H = 1 a batch is the usual one transition per row. With H > 1 the
 * batch holds size / H samples of H consecutive transitions of one episode each
 * (rows s*H .. s*H+H-1, as a sequence sampler returns them; an episode's end is
 * padded by repeating its last action): the sample's observation is its first
 * row's, its chunk the H actions.
 * Act: K Euler steps from x_0 = 0 (deterministic) or x_0 ~ N(0, I); the first
 * action of the chunk is returned, so each call replans (receding horizon with
 * one executed step; callers that execute whole chunks use the model directly).
 * State: the velocity network, its Adam moments and step, the RNG, counters,
 * in one safetensors file. Vector observations only. */
#include "policies/algos/algo.h"
#include "policies/models/gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLOW_CKPT_VERSION "1"

typedef struct fbc_cfg {
    char hidden[SET_STR_MAX], backend[SET_STR_MAX];
    long horizon, steps, seed;
    float lr, weight_decay, grad_clip;
} fbc_cfg_t;

#define OFF(f) offsetof(fbc_cfg_t, f)
static const pol_setting_t fbc_settings[] = {
    {"hidden", SET_STR, "256,256", 0, 0, OFF(hidden), "hidden widths of the velocity network"},
    {"horizon", SET_INT, "1", 1, 64, OFF(horizon), "actions per chunk"},
    {"steps", SET_INT, "10", 1, POL_FLOW_MAX_STEPS, OFF(steps), "Euler integration steps"},
    {"lr", SET_FLOAT, "1e-3", 0, 1, OFF(lr), "learning rate"},
    {"weight_decay", SET_FLOAT, "0", 0, 1, OFF(weight_decay), "AdamW decoupled weight decay"},
    {"grad_clip", SET_FLOAT, "1", 0, 1e9, OFF(grad_clip), "global gradient norm limit (0: off)"},
    {"seed", SET_INT, "0", 0, 9e15, OFF(seed), "random seed"},
    {"backend", SET_STR, "cpu", 0, 0, OFF(backend), "cpu, cuda or auto"},
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
#undef OFF

typedef struct fbc {
    fbc_cfg_t cfg;
    corral_spec_t spec;
    int hidden[POL_MLP_MAX_LAYERS], nhidden;
    const nn_backend_t *be;
    pol_flow_t flow;
    nn_adam_t opt;
    nn_rng_t rng;
    uint64_t updates, skipped_nan;
    int cap;
    float *obs, *chunk, *out;        /* host scratch */
} fbc_t;

static int reserve(fbc_t *s, int B, cr_err_t *err)
{
    int rc = pol_flow_reserve(&s->flow, B, err);
    if (rc || B <= s->cap) return rc;
    free(s->obs); free(s->chunk); free(s->out);
    s->obs = malloc(sizeof(float) * (size_t)B * s->spec.obs_dim);
    s->chunk = malloc(sizeof(float) * (size_t)B * s->flow.D);
    s->out = malloc(sizeof(float) * (size_t)B * s->flow.D);
    if (!s->obs || !s->chunk || !s->out) {
        free(s->obs); free(s->chunk); free(s->out);
        s->obs = s->chunk = s->out = NULL;
        s->cap = 0;
        return cr_err_set(err, CR_ENOMEM, "flow-bc: cannot allocate scratch for batch %d", B);
    }
    s->cap = B;
    return 0;
}

static int fbc_update(void *self, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    int H = (int)s->cfg.horizon, O = s->spec.obs_dim, A = s->spec.act_dim;
    if (!b || b->struct_size < sizeof(corral_batch_t) || b->size <= 0 || !b->obs || !b->action)
        return cr_err_set(err, CR_EINVAL, "flow-bc: batch needs size > 0, obs and action");
    if (b->size % H)
        return cr_err_set(err, CR_EINVAL, "flow-bc: batch of %d rows is not whole chunks of horizon %d", b->size, H);
    int B = b->size / H, rc = reserve(s, B, err);
    if (rc) return rc;
    for (int i = 0; i < B; i++) {
        memcpy(s->obs + (size_t)i * O, b->obs + (size_t)i * H * O, sizeof(float) * O);
        memcpy(s->chunk + (size_t)i * H * A, b->action + (size_t)i * H * A, sizeof(float) * H * A);
    }
    nn_params_zero_grad(&s->flow.params);
    double loss = pol_flow_bc_step(&s->flow, s->obs, s->chunk, B, &s->rng), gn = 0;
    int bad = !isfinite(loss) || nn_adam_step(&s->opt, &s->flow.params, &gn) != 0;
    if (bad) {
        s->skipped_nan++;
        pol_warn_skips("flow-bc", s->skipped_nan - 1, s->skipped_nan);
    } else {
        s->updates++;
    }
    pol_metric_set(m, "flow_loss", loss);
    pol_metric_set(m, "grad_norm", gn);
    pol_metric_set(m, "updates", (double)s->updates);
    pol_metric_set(m, "skipped_nan", (double)s->skipped_nan);
    pol_metric_set(m, "skipped_now", bad);
    return 0;
}

static int fbc_act(void *self, const float *obs, int deterministic, float *action, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    for (int i = 0; i < s->spec.obs_dim; i++)
        if (!isfinite(obs[i])) return cr_err_set(err, CR_EINVAL, "flow-bc: observation[%d] is not finite", i);
    int rc = reserve(s, 1, err);
    if (rc) return rc;
    pol_flow_sample(&s->flow, obs, 1, deterministic ? NULL : &s->rng, 0, NULL, NULL, s->out);
    for (int j = 0; j < s->spec.act_dim; j++) {
        if (!isfinite(s->out[j])) return cr_err_set(err, CR_EINVAL, "flow-bc: non-finite action");
        action[j] = s->out[j];
    }
    return 0;
}

static void put_meta(const fbc_t *s, nn_st_writer_t *w, const char *format)
{
    char buf[96];
    nn_st_writer_meta(w, "format", format, NULL);
    nn_st_writer_meta(w, "version", FLOW_CKPT_VERSION, NULL);
    nn_st_writer_meta(w, "algo", "flow-bc", NULL);
    snprintf(buf, sizeof buf, "%d,%d,%ld,%ld,%s", s->spec.obs_dim, s->spec.act_dim, s->cfg.horizon, s->cfg.steps,
             s->cfg.hidden);
    nn_st_writer_meta(w, "shape", buf, NULL);
}

static int check_meta(const fbc_t *s, const nn_st_t *st, const char *format, cr_err_t *err)
{
    const char *f = nn_st_meta(st, "format"), *v = nn_st_meta(st, "version"), *a = nn_st_meta(st, "algo");
    const char *sh = nn_st_meta(st, "shape");
    if (!f || strcmp(f, format) || !a || strcmp(a, "flow-bc"))
        return cr_err_set(err, CR_ECORRUPT, "not a flow-bc %s", format);
    if (!v || strcmp(v, FLOW_CKPT_VERSION))
        return cr_err_set(err, CR_EVERSION, "%s version '%s', this build reads %s", format, v ? v : "(none)",
                          FLOW_CKPT_VERSION);
    char want[96];
    snprintf(want, sizeof want, "%d,%d,%ld,%ld,%s", s->spec.obs_dim, s->spec.act_dim, s->cfg.horizon, s->cfg.steps,
             s->cfg.hidden);
    if (!sh || strcmp(sh, want))
        return cr_err_set(err, CR_EINVAL, "%s for obs,act,horizon,steps,hidden %s, this instance has %s", format,
                          sh ? sh : "?", want);
    return 0;
}

static int fbc_export(void *self, void *buf, size_t cap, size_t *len, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    nn_st_writer_t *w = nn_st_writer_create();
    if (!w) return cr_err_set(err, CR_ENOMEM, "flow-bc: out of memory");
    pol_io_keep_t keep = {0};
    pol_io_arena_t a = {"policy", &s->flow.params};
    void *blob = NULL;
    size_t n = 0;
    put_meta(s, w, "corral-policy");
    int rc = pol_io_add_arena(w, &keep, &a, err);
    if (!rc) rc = nn_st_writer_to_mem(w, &blob, &n, err);
    pol_io_keep_free(&keep);
    nn_st_writer_destroy(w);
    if (rc) return rc;
    *len = n;
    if (!buf || cap < n) rc = cr_err_set(err, CR_ETOOBIG, "flow-bc: policy blob needs %zu bytes", n);
    else memcpy(buf, blob, n);
    free(blob);
    return rc;
}

static int fbc_import(void *self, const void *blob, size_t len, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    nn_st_t *st;
    int rc = nn_st_parse(&st, blob, len, err);
    if (rc) return cr_err_wrap(err, "policy blob");
    pol_io_arena_t a = {"policy", &s->flow.params};
    rc = check_meta(s, st, "corral-policy", err);
    if (!rc) rc = pol_io_read_arena(st, &a, 1, err);
    if (!rc) rc = pol_io_read_arena(st, &a, 0, err);
    nn_st_free(st);
    return rc ? cr_err_wrap(err, "policy blob") : 0;
}

static int fbc_save(void *self, const char *path, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    nn_st_writer_t *w = nn_st_writer_create();
    if (!w) return cr_err_set(err, CR_ENOMEM, "flow-bc: out of memory");
    pol_io_keep_t keep = {0};
    pol_io_arena_t a = {"flow", &s->flow.params};
    pol_io_adam_t o = {"optim.flow", &s->opt};
    put_meta(s, w, "corral-checkpoint");
    char rng[80], state[256];
    pol_rng_format(&s->rng, rng, sizeof rng);
    snprintf(state, sizeof state, "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%s\"}",
             (unsigned long long)s->updates, (unsigned long long)s->skipped_nan, s->opt.t, rng);
    int rc = nn_st_writer_meta(w, "state", state, err);
    if (!rc) rc = pol_io_add_arena(w, &keep, &a, err);
    if (!rc) rc = pol_io_add_adam(w, &keep, &o, s->be, err);
    if (!rc) rc = nn_st_writer_to_file(w, path, err);
    pol_io_keep_free(&keep);
    nn_st_writer_destroy(w);
    return rc;
}

static int fbc_load(void *self, const char *path, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    nn_st_t *st;
    int rc = nn_st_read_file(&st, path, err);
    if (rc) return rc;
    pol_io_arena_t a = {"flow", &s->flow.params};
    pol_io_adam_t o = {"optim.flow", &s->opt};
    unsigned long long u, k;
    long t = -1;
    char rs[80];
    nn_rng_t rng;
    rc = check_meta(s, st, "corral-checkpoint", err);
    const char *js = nn_st_meta(st, "state");
    if (!rc && (!js || sscanf(js, "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%79[0-9a-f,]\"}", &u, &k,
                              &t, rs) != 4 || t < 0 || pol_rng_parse(&rng, rs) != 0))
        rc = cr_err_set(err, CR_ECORRUPT, "checkpoint: metadata 'state' is missing or malformed");
    for (int check = 1; check >= 0 && !rc; check--) {
        rc = pol_io_read_arena(st, &a, check, err);
        if (!rc) rc = pol_io_read_adam(st, &o, s->be, check, err);
    }
    nn_st_free(st);
    if (rc) return cr_err_wrap(err, "%s", path);
    s->updates = u;
    s->skipped_nan = k;
    s->opt.t = t;
    s->rng = rng;
    return 0;
}

static void fbc_destroy(void *self)
{
    fbc_t *s = self;
    if (!s) return;
    if (s->be) {
        pol_flow_destroy(&s->flow);
        nn_adam_destroy(&s->opt, s->be);
    }
    free(s->obs); free(s->chunk); free(s->out);
    free(s);
}

static int fbc_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self, corral_err_t *cerr)
{
    cr_err_t *err = pol_err(cerr);
    *self = NULL;
    if (!spec || spec->struct_size < sizeof(corral_spec_t) || spec->obs_dim <= 0 || spec->act_dim <= 0 ||
        spec->act_dim > 64)
        return cr_err_set(err, CR_EINVAL, "flow-bc: spec needs obs_dim > 0 and act_dim in 1..64");
    if (spec->img_c > 0) return cr_err_set(err, CR_ENOTSUP, "flow-bc: image observations are not supported");
    fbc_t *s = calloc(1, sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "flow-bc: out of memory");
    s->spec = *spec;
    int rc = pol_settings_apply(fbc_settings, &s->cfg, NULL, 0, cfg, n, err);
    if (!rc) rc = nn_backend_get(s->cfg.backend, &s->be, err);
    if (!rc && (rc = pol_parse_widths(s->cfg.hidden, s->hidden, POL_MLP_MAX_LAYERS - 1, err)) >= 0) {
        s->nhidden = rc;
        rc = 0;
    }
    if (!rc) {
        nn_rng_seed(&s->rng, (uint64_t)s->cfg.seed);
        rc = pol_flow_create(&s->flow, s->be, spec->obs_dim, spec->act_dim, (int)s->cfg.horizon, (int)s->cfg.steps,
                             s->hidden, s->nhidden, 0, 0, 0, 0, &s->rng, err);
    }
    if (!rc) rc = nn_adam_init(&s->opt, &s->flow.params, s->cfg.lr, s->cfg.weight_decay, s->cfg.grad_clip, err);
    if (rc) {
        cr_err_wrap(err, "flow-bc");
        fbc_destroy(s);
        return rc;
    }
    *self = s;
    return 0;
}

static const corral_algo_vtable_t fbc_vt = {
    .struct_size = sizeof(corral_algo_vtable_t), .create = fbc_create, .update = fbc_update, .act = fbc_act,
    .export_policy = fbc_export, .import_policy = fbc_import, .save = fbc_save, .load = fbc_load,
    .destroy = fbc_destroy,
};

const corral_plugin_t pol_flow_bc_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION, .kind = CORRAL_PLUGIN_ALGO, .name = "flow-bc",
    .description = "behaviour cloning of a flow-matching action-chunk policy", .algo = &fbc_vt,
};
