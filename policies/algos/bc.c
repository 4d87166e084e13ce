/* bc.c - behaviour cloning and HG-DAgger over the squashed Gaussian actor.
 *
 * BC regresses the actor's mode tanh(mu(obs)) onto the batch's actions (mean
 * squared error). HG-DAgger is the same regression restricted to the samples a
 * human produced: those flagged CORRAL_SAMPLE_INTERVENTION (a takeover segment)
 * or CORRAL_SAMPLE_DEMO; the robot's own samples in the aggregated dataset get
 * weight 0. A batch with no such sample changes nothing and says so in the
 * metrics ("samples_used" = 0).
 *
 * Image observations (spec img_c > 0: rows [image | proprio]) go through the
 * same CNN encoder SAC uses, with DrQ random shifts while training; the encoder
 * learns from the same loss, with its own Adam moments stepped together with
 * the actor's (one step count for both).
 *
 * State: the actor (and encoder), their Adam moments and step count, the RNG,
 * the counters; all saved to and restored from one safetensors file (state.c). */
#include "policies/algos/algo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BC_CKPT_VERSION "1"

typedef struct bc_cfg {
    char hidden[SET_STR_MAX], backend[SET_STR_MAX];
    float lr, weight_decay, grad_clip;
    long seed, encoder_feat, aug_pad;
} bc_cfg_t;

#define OFF(f) offsetof(bc_cfg_t, f)
static const pol_setting_t bc_settings[] = {
    {"hidden", SET_STR, "256,256", 0, 0, OFF(hidden), "hidden widths of the actor"},
    {"lr", SET_FLOAT, "1e-3", 0, 1, OFF(lr), "learning rate"},
    {"weight_decay", SET_FLOAT, "0", 0, 1, OFF(weight_decay), "AdamW decoupled weight decay"},
    {"grad_clip", SET_FLOAT, "0", 0, 1e9, OFF(grad_clip), "global gradient norm limit (0: off)"},
    {"seed", SET_INT, "0", 0, 9e15, OFF(seed), "random seed"},
    {"backend", SET_STR, "cpu", 0, 0, OFF(backend), "cpu, cuda or auto"},
    {"encoder_feat", SET_INT, "50", 1, 4096, OFF(encoder_feat), "image features (image specs only)"},
    {"aug_pad", SET_INT, "4", 0, 64, OFF(aug_pad), "random-shift padding in pixels (0: off)"},
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
#undef OFF

typedef struct bc {
    const char *algo;                 /* "bc" or "hg-dagger" */
    int human_only;
    bc_cfg_t cfg;
    int hidden[POL_MLP_MAX_LAYERS], nhidden;
    corral_spec_t spec;
    const nn_backend_t *be;
    pol_actor_t actor;
    nn_adam_t opt;
    int img, in_dim;                  /* image floats per obs (0: vector obs), actor input dims */
    nn_params_t enc_p;                /* image encoder (img > 0) */
    pol_encoder_t enc;
    pol_imgobs_t io;
    nn_adam_t enc_opt;
    nn_rng_t rng;
    uint64_t updates, skipped_nan;
    int cap;
    float *obs, *target, *w, *daction, *h_w, *h_eps;
    float *x, *dx;                    /* actor inputs and their gradient (img > 0) */
    pol_state_t st;
} bc_t;

static void free_scratch(bc_t *s)
{
    float **dev[] = {&s->obs, &s->target, &s->w, &s->daction, &s->x, &s->dx};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (*dev[i]) { s->be->free(*dev[i]); *dev[i] = NULL; }
    free(s->h_w);
    free(s->h_eps);
    s->h_w = s->h_eps = NULL;
    s->cap = 0;
}

static int reserve(bc_t *s, int B, cr_err_t *err)
{
    int rc = pol_actor_reserve(&s->actor, B, err);
    if (!rc && s->img) rc = pol_encoder_reserve(&s->enc, B, err);
    if (!rc && s->img) rc = pol_imgobs_reserve(&s->io, B, err);
    if (rc || B <= s->cap) return rc;
    free_scratch(s);
    size_t f = sizeof(float), O = (size_t)s->spec.obs_dim, A = (size_t)s->spec.act_dim, b = (size_t)B;
    int ok = !!(s->obs = s->be->alloc(b * O * f));
    ok &= !!(s->target = s->be->alloc(b * A * f));
    ok &= !!(s->w = s->be->alloc(b * A * f));
    ok &= !!(s->daction = s->be->alloc(b * A * f));
    ok &= !!(s->h_w = malloc(b * A * f));
    ok &= !!(s->h_eps = calloc(b * A, f));
    if (s->img) {
        ok &= !!(s->x = s->be->alloc(b * s->in_dim * f));
        ok &= !!(s->dx = s->be->alloc(b * s->in_dim * f));
    }
    if (!ok) {
        free_scratch(s);
        return cr_err_set(err, CR_ENOMEM, "%s: cannot allocate scratch for batch %d", s->algo, B);
    }
    s->cap = B;
    return 0;
}

static int bc_update(void *self, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *cerr)
{
    bc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    if (!b || b->struct_size < sizeof(corral_batch_t) || b->size <= 0 || !b->obs || !b->action)
        return cr_err_set(err, CR_EINVAL, "%s: batch needs size > 0, obs and action", s->algo);
    int B = b->size, A = s->spec.act_dim, rc = reserve(s, B, err);
    if (rc) return rc;
    const nn_backend_t *be = s->be;
    /* per-element weights: 1 for the samples this algorithm learns from */
    int used = 0;
    for (int r = 0; r < B; r++) {
        int keep = !s->human_only ||
                   (b->flags && (b->flags[r] & (CORRAL_SAMPLE_INTERVENTION | CORRAL_SAMPLE_DEMO)));
        used += keep;
        for (int j = 0; j < A; j++) s->h_w[(size_t)r * A + j] = keep ? 1.0f : 0.0f;
    }
    pol_metric_set(m, "samples_used", used);
    pol_metric_set(m, "updates", (double)s->updates);
    pol_metric_set(m, "skipped_nan", (double)s->skipped_nan);
    if (used == 0) {
        pol_metric_set(m, "skipped_now", 0);
        return 0;
    }
    size_t f = sizeof(float);
    be->upload(s->obs, b->obs, (size_t)B * s->spec.obs_dim * f);
    be->upload(s->target, b->action, (size_t)B * A * f);
    be->upload(s->w, s->h_w, (size_t)B * A * f);
    be->upload(s->actor.eps, s->h_eps, (size_t)B * A * f);   /* zero noise: the mode */
    const float *x = s->img ? pol_imgobs_forward(&s->io, &s->enc, s->obs, B, 1, &s->rng, s->x) : s->obs;
    pol_actor_forward(&s->actor, x, B);
    size_t n = (size_t)B * A;
    double loss = be->mse_forward(s->actor.action, s->target, s->w, n) * (double)n / ((double)used * A);
    be->fill(s->daction, 0.0f, n);
    be->mse_backward(s->daction, s->actor.action, s->target, s->w, 1.0f / ((float)used * A), n);
    nn_params_zero_grad(&s->actor.params);
    if (s->img) {
        nn_params_zero_grad(&s->enc_p);
        be->fill(s->dx, 0.0f, (size_t)B * s->in_dim);
    }
    pol_actor_backward_obs(&s->actor, s->img ? s->dx : NULL, s->daction, NULL, B);
    if (s->img) pol_imgobs_backward(&s->io, &s->enc, s->dx, B);
    /* both norms first: the actor and the encoder step together or not at all */
    double gn = nn_grad_norm(&s->actor.params), en = s->img ? nn_grad_norm(&s->enc_p) : 0.0;
    int bad = !isfinite(loss) || !isfinite(gn) || !isfinite(en);
    if (!bad) {
        nn_adam_step(&s->opt, &s->actor.params, NULL);
        if (s->img) nn_adam_step(&s->enc_opt, &s->enc_p, NULL);
    }
    if (bad) {
        s->skipped_nan++;
        pol_warn_skips(s->algo, s->skipped_nan - 1, s->skipped_nan);
    } else {
        s->updates++;
    }
    pol_metric_set(m, "bc_loss", loss);
    pol_metric_set(m, "grad_norm", gn);
    pol_metric_set(m, "updates", (double)s->updates);
    pol_metric_set(m, "skipped_nan", (double)s->skipped_nan);
    pol_metric_set(m, "skipped_now", bad);
    return 0;
}

static int bc_act(void *self, const float *obs, int deterministic, float *action, corral_err_t *cerr)
{
    bc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    int rc = reserve(s, 1, err), A = s->spec.act_dim;
    for (int i = 0; !rc && i < s->spec.obs_dim; i++)
        if (!isfinite(obs[i]))
            return cr_err_set(err, CR_EINVAL, "%s: observation[%d] is not finite", s->algo, i);
    if (rc) return rc;
    float eps[64];
    for (int j = 0; j < A && j < 64; j++) eps[j] = deterministic ? 0.0f : nn_rng_normal(&s->rng);
    s->be->upload(s->obs, obs, (size_t)s->spec.obs_dim * sizeof(float));
    s->be->upload(s->actor.eps, eps, (size_t)(A < 64 ? A : 64) * sizeof(float));
    const float *x = s->img ? pol_imgobs_forward(&s->io, &s->enc, s->obs, 1, 0, &s->rng, s->x) : s->obs;
    pol_actor_forward(&s->actor, x, 1);
    s->be->download(action, s->actor.action, (size_t)A * sizeof(float));
    for (int j = 0; j < A; j++)
        if (!isfinite(action[j])) return cr_err_set(err, CR_EINVAL, "%s: non-finite action", s->algo);
    return 0;
}

/* "obs,act" for vector observations (as before images were supported), else
 * "obs,act,C,H,W" */
static int bc_export(void *self, void *buf, size_t cap, size_t *len, corral_err_t *cerr)
{
    bc_t *s = self;
    return pol_state_export(&s->st, buf, cap, len, NULL, pol_err(cerr));
}

static int bc_import(void *self, const void *blob, size_t len, corral_err_t *cerr)
{
    bc_t *s = self;
    return pol_state_import(&s->st, blob, len, NULL, 0, pol_err(cerr));
}

static int bc_save(void *self, const char *path, corral_err_t *cerr)
{
    bc_t *s = self;
    char rng[80], state[256];
    pol_rng_format(&s->rng, rng, sizeof rng);
    snprintf(state, sizeof state, "{\"updates\":%llu,\"skipped_nan\":%llu,\"actor_t\":%ld,\"rng\":\"%s\"}",
             (unsigned long long)s->updates, (unsigned long long)s->skipped_nan, s->opt.t, rng);
    return pol_state_save(&s->st, path, state, pol_err(cerr));
}

static int parse_state(void *ctx, const char *js)
{
    bc_t *s = ctx;
    unsigned long long u, k;
    long t = -1;
    char rs[80];
    nn_rng_t rng;
    if (sscanf(js, "{\"updates\":%llu,\"skipped_nan\":%llu,\"actor_t\":%ld,\"rng\":\"%79[0-9a-f,]\"}", &u, &k, &t,
               rs) != 4 || t < 0 || pol_rng_parse(&rng, rs) != 0)
        return CR_ECORRUPT;
    s->updates = u;
    s->skipped_nan = k;
    s->opt.t = t;
    s->enc_opt.t = t;   /* the encoder steps with the actor */
    s->rng = rng;
    return 0;
}

static int bc_load(void *self, const char *path, corral_err_t *cerr)
{
    bc_t *s = self;
    return pol_state_load(&s->st, path, parse_state, s, pol_err(cerr));
}

/* What a blob and a checkpoint hold. The files of any algorithm with the same
 * keys are read (bc and hg-dagger each other's, a SAC policy of the same spec). */
static void describe_state(bc_t *s)
{
    pol_state_t *st = &s->st;
    st->algo = s->algo;
    st->algo_alias = "*";
    st->version = BC_CKPT_VERSION;
    st->be = s->be;
    pol_state_key(st, "hidden", "hidden", "%s", s->cfg.hidden);
    if (s->img)
        pol_state_key(st, "spec", "spec", "%d,%d,%d,%d,%d", s->spec.obs_dim, s->spec.act_dim, s->spec.img_c,
                      s->spec.img_h, s->spec.img_w);
    else
        pol_state_key(st, "spec", "spec", "%d,%d", s->spec.obs_dim, s->spec.act_dim);
    st->policy[st->npolicy++] = (pol_io_arena_t){"policy", &s->actor.params};
    st->arenas[st->narenas++] = (pol_io_arena_t){"actor", &s->actor.params};
    st->adams[st->nadams++] = (pol_io_adam_t){"optim.actor", &s->opt};
    if (!s->img) return;
    st->policy[st->npolicy++] = (pol_io_arena_t){"policy.encoder", &s->enc_p};
    st->arenas[st->narenas++] = (pol_io_arena_t){"encoder", &s->enc_p};
    st->adams[st->nadams++] = (pol_io_adam_t){"optim.encoder", &s->enc_opt};
}

static void bc_destroy(void *self)
{
    bc_t *s = self;
    if (!s) return;
    if (s->be) {
        free_scratch(s);
        pol_actor_destroy(&s->actor);
        nn_adam_destroy(&s->opt, s->be);
        if (s->img) {
            pol_encoder_destroy(&s->enc);
            pol_imgobs_destroy(&s->io);
            nn_params_destroy(&s->enc_p);
            nn_adam_destroy(&s->enc_opt, s->be);
        }
    }
    free(s);
}

/* the encoder in its own arena, initialised after the actor (seeded order) */
static int create_encoder(bc_t *s, cr_err_t *err)
{
    const corral_spec_t *sp = &s->spec;
    int F = (int)s->cfg.encoder_feat, rc;
    nn_params_init(&s->enc_p, s->be);
    if ((rc = pol_encoder_declare(&s->enc, &s->enc_p, "enc", sp->img_c, sp->img_h, sp->img_w, F, err)) ||
        (rc = nn_params_alloc(&s->enc_p, err)) ||
        (rc = pol_imgobs_init(&s->io, s->be, sp->img_c, sp->img_h, sp->img_w, sp->obs_dim, F, (int)s->cfg.aug_pad,
                              err)))
        return rc;
    pol_encoder_init(&s->enc, &s->rng);
    return nn_adam_init(&s->enc_opt, &s->enc_p, s->cfg.lr, s->cfg.weight_decay, s->cfg.grad_clip, err);
}

static int create_common(const char *algo, int human_only, const corral_kv_t *cfg, size_t n,
                         const corral_spec_t *spec, void **self, corral_err_t *cerr)
{
    cr_err_t *err = pol_err(cerr);
    *self = NULL;
    if (!spec || spec->struct_size < sizeof(corral_spec_t) || spec->obs_dim <= 0 || spec->act_dim <= 0 ||
        spec->act_dim > 64)
        return cr_err_set(err, CR_EINVAL, "%s: spec needs obs_dim > 0 and act_dim in 1..64", algo);
    if (spec->img_c < 0 || spec->img_h < 0 || spec->img_w < 0 ||
        (long)spec->img_c * spec->img_h * spec->img_w > spec->obs_dim ||
        (spec->img_c > 0 && (spec->img_h < 8 || spec->img_w < 8)))
        return cr_err_set(err, CR_EINVAL, "%s: spec image %dx%dx%d does not fit obs_dim %d (min 8x8)", algo,
                          spec->img_c, spec->img_h, spec->img_w, spec->obs_dim);
    bc_t *s = calloc(1, sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", algo);
    s->algo = algo;
    s->human_only = human_only;
    s->spec = *spec;
    int rc = pol_settings_apply(bc_settings, &s->cfg, NULL, 0, cfg, n, err);
    if (!rc) rc = nn_backend_get(s->cfg.backend, &s->be, err);
    if (!rc && (rc = pol_parse_widths(s->cfg.hidden, s->hidden, POL_MLP_MAX_LAYERS - 1, err)) >= 0) {
        s->nhidden = rc;
        rc = 0;
    }
    if (!rc) {
        nn_rng_seed(&s->rng, (uint64_t)s->cfg.seed);
        s->img = spec->img_c > 0 ? spec->img_c * spec->img_h * spec->img_w : 0;
        s->in_dim = s->img ? (int)s->cfg.encoder_feat + spec->obs_dim - s->img : spec->obs_dim;
        rc = pol_actor_create(&s->actor, s->be, s->in_dim, spec->act_dim, s->hidden, s->nhidden, &s->rng, err);
    }
    if (!rc) rc = nn_adam_init(&s->opt, &s->actor.params, s->cfg.lr, s->cfg.weight_decay, s->cfg.grad_clip, err);
    if (!rc && s->img) rc = create_encoder(s, err);
    if (rc) {
        cr_err_wrap(err, "%s", algo);
        bc_destroy(s);
        return rc;
    }
    describe_state(s);
    *self = s;
    return 0;
}

static int bc_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self, corral_err_t *err)
{
    return create_common("bc", 0, cfg, n, spec, self, err);
}

static int dagger_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self,
                         corral_err_t *err)
{
    return create_common("hg-dagger", 1, cfg, n, spec, self, err);
}

static const corral_algo_vtable_t bc_vt = {
    .struct_size = sizeof(corral_algo_vtable_t), .create = bc_create, .update = bc_update,
    .act = bc_act, .export_policy = bc_export, .import_policy = bc_import, .save = bc_save,
    .load = bc_load, .destroy = bc_destroy,
};

static const corral_algo_vtable_t dagger_vt = {
    .struct_size = sizeof(corral_algo_vtable_t), .create = dagger_create, .update = bc_update,
    .act = bc_act, .export_policy = bc_export, .import_policy = bc_import, .save = bc_save,
    .load = bc_load, .destroy = bc_destroy,
};

const corral_plugin_t pol_bc_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION, .kind = CORRAL_PLUGIN_ALGO, .name = "bc",
    .description = "behaviour cloning (MSE on the squashed mode)", .algo = &bc_vt,
};

const corral_plugin_t pol_dagger_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION, .kind = CORRAL_PLUGIN_ALGO, .name = "hg-dagger",
    .description = "HG-DAgger: behaviour cloning on human intervention and demo samples", .algo = &dagger_vt,
};
