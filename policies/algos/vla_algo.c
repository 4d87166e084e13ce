/* vla_algo.c - the VLA (policies/models/vla.c) behind the plugin ABI: "vla-bc"
 * (behaviour cloning by flow matching) and "vla" (behaviour cloning for
 * bc_updates updates, then RL fine-tuning of the action expert's last
 * integration step, gen_rl.c, exactly as flow-rl does for the MLP flow).
 *
 * Observation layout (obs_dim floats, the plugin ABI's convention extended by
 * one trailing block):
 *     [ image: img_c x img_h x img_w floats in [0, 1], CHW, when the spec has one ]
 *     [ proprio: obs_dim - image - ctx floats; its last objects x object_dim
 *       floats are object tokens when `objects` is set, each slot with a learned
 *       embedding of its own (object_slots) since a robot lists its objects in a
 *       fixed order and their features need not say which is which ]
 *     [ instruction: ctx token ids (pol_tokenize: 0 PAD, 1 BOS, 2 + byte) as floats ]
 * so an env worker appends the tokenized instruction to the robot's vector and
 * the learner's buffer stores it like any other vector. A token id that is not
 * an integer in 0..257 is refused with its position named. Images get a DrQ
 * random shift (augment_pad pixels) in BC updates. `init` loads weights by the
 * documented tensor-name mapping (gen.h) with strict errors; `image` (CxHxW)
 * states the image the weights expect, refused by name when the robot's differs.
 * State: the model (and in the RL phase its frozen and behaviour copies, the
 * noise and the value MLP), optimiser moments, RNG, counters, phase (gen_phase.c). */
#include "policies/algos/algo.h"
#include "policies/algos/gen_rl.h"
#include "policies/models/gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VLA_CKPT_VERSION "1"

typedef struct vla_cfg {
    char backend[SET_STR_MAX], init[SET_STR_MAX * 4], init_prefix[SET_STR_MAX], image[SET_STR_MAX];
    long ctx, dim, heads, layers, mlp, head_hidden, patch, horizon, steps, objects, object_dim, object_slots;
    long augment_pad, seed;
    float lr, weight_decay, grad_clip;
    pol_genphase_opts_t rl;
} vla_cfg_t;

#define OFF(f) offsetof(vla_cfg_t, f)
#define VLA_SETTINGS                                                                                               \
    {"ctx", SET_INT, "24", 1, 512, OFF(ctx), "instruction tokens at the end of each observation"},               \
    {"dim", SET_INT, "32", 1, 4096, OFF(dim), "transformer width"},                                               \
    {"heads", SET_INT, "2", 1, 64, OFF(heads), "attention heads"},                                                \
    {"layers", SET_INT, "2", 1, POL_VLA_MAX_LAYERS, OFF(layers), "transformer blocks"},                           \
    {"mlp", SET_INT, "64", 1, 65536, OFF(mlp), "MLP width inside a block"},                                       \
    {"head_hidden", SET_INT, "128", 0, 65536, OFF(head_hidden), "action head MLP width (0: linear head)"},       \
    {"patch", SET_INT, "8", 1, 256, OFF(patch), "image patch size, pixels"},                                      \
    {"horizon", SET_INT, "1", 1, 64, OFF(horizon), "actions per chunk"},                                          \
    {"steps", SET_INT, "4", 1, POL_FLOW_MAX_STEPS, OFF(steps), "Euler integration steps"},                       \
    {"objects", SET_INT, "0", 0, 64, OFF(objects), "object tokens at the end of the proprio block"},             \
    {"object_dim", SET_INT, "3", 1, 256, OFF(object_dim), "floats per object token"},                            \
    {"object_slots", SET_INT, "1", 0, 1, OFF(object_slots), "a learned embedding per object slot (0: any order)"}, \
    {"augment_pad", SET_INT, "4", 0, 64, OFF(augment_pad), "DrQ random shift of images in BC, pixels (0: off)"}, \
    {"image", SET_STR, "", 0, 0, OFF(image), "the image the weights expect, CxHxW (\"\": the robot's)"},        \
    {"init", SET_STR, "", 0, 0, OFF(init), "safetensors weights to start from"},                                  \
    {"init_prefix", SET_STR, "", 0, 0, OFF(init_prefix), "tensor name prefix in init (e.g. model.)"},           \
    {"lr", SET_FLOAT, "1e-3", 0, 1, OFF(lr), "learning rate"},                                                    \
    {"weight_decay", SET_FLOAT, "0", 0, 1, OFF(weight_decay), "AdamW decoupled weight decay"},                    \
    {"grad_clip", SET_FLOAT, "1", 0, 1e9, OFF(grad_clip), "global gradient norm limit (0: off)"},                \
    {"seed", SET_INT, "0", 0, 9e15, OFF(seed), "random seed"},                                                    \
    {"backend", SET_STR, "cpu", 0, 0, OFF(backend), "cpu, cuda or auto"}
static const pol_setting_t bc_settings[] = {
    VLA_SETTINGS,
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
static const pol_setting_t rl_settings[] = {
    VLA_SETTINGS,
    POL_GENPHASE_SETTINGS(vla_cfg_t, rl),
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
#undef OFF

typedef struct vla_alg {
    pol_genphase_t ph;               /* first: algo, phase, optimiser, RNG, counters, state */
    vla_cfg_t cfg;
    corral_spec_t spec;
    int img, prop, nobj;             /* floats: image, proprio token, object block */
    pol_vla_t v, frozen, old;
    int cap;
    float *img_h, *aug, *prop_h, *obj_h, *chunk, *out, *vin, *vnext;
    int32_t *ids, *shifts;
    uint8_t *use, *take;
} vla_alg_t;

static void free_scratch(vla_alg_t *s)
{
    free(s->img_h); free(s->aug); free(s->prop_h); free(s->obj_h); free(s->chunk); free(s->out);
    free(s->vin); free(s->vnext); free(s->ids); free(s->shifts); free(s->use); free(s->take);
    s->img_h = s->aug = s->prop_h = s->obj_h = s->chunk = s->out = s->vin = s->vnext = NULL;
    s->ids = s->shifts = NULL;
    s->use = s->take = NULL;
    s->cap = 0;
}

static int reserve(vla_alg_t *s, int B, cr_err_t *err)
{
    int rl = s->ph.rl, rc = pol_vla_reserve(&s->v, B, err);
    if (!rc && rl) rc = pol_vla_reserve(&s->frozen, B, err);
    if (!rc && rl) rc = pol_vla_reserve(&s->old, B, err);
    if (!rc && rl) rc = pol_genrl_reserve(&s->ph.g, B, err);
    if (rc || B <= s->cap) return rc;
    free_scratch(s);
    size_t b = (size_t)B, f = sizeof(float), vi = (size_t)(s->spec.obs_dim - s->img);
    int ok = !!(s->img_h = malloc(b * (s->img + 1) * f));
    ok &= !!(s->aug = malloc(b * (s->img + 1) * f));
    ok &= !!(s->prop_h = malloc(b * s->prop * f));
    ok &= !!(s->obj_h = malloc(b * (s->nobj + 1) * f));
    ok &= !!(s->chunk = malloc(b * s->v.D * f));
    ok &= !!(s->out = malloc(b * s->v.D * f));
    ok &= !!(s->vin = malloc(b * vi * f));
    ok &= !!(s->vnext = malloc(b * vi * f));
    ok &= !!(s->ids = malloc(b * s->cfg.ctx * sizeof(int32_t)));
    ok &= !!(s->shifts = malloc(b * 2 * sizeof(int32_t)));
    ok &= !!(s->use = malloc(b));
    ok &= !!(s->take = malloc(b));
    if (!ok) {
        free_scratch(s);
        return cr_err_set(err, CR_ENOMEM, "%s: cannot allocate scratch for batch %d", s->ph.algo, B);
    }
    s->cap = B;
    return 0;
}

/* Splits obs rows (only those with keep[r], or all when keep is NULL) into the
 * model's inputs; the instruction ids must be integers 0..257. Returns the rows
 * taken or a negative code. */
static int decode(vla_alg_t *s, const float *obs, int B, const uint8_t *keep, pol_vla_obs_t *o, cr_err_t *err)
{
    int O = s->spec.obs_dim, ctx = (int)s->cfg.ctx, n = 0;
    for (int r = 0; r < B; r++) {
        if (keep && !keep[r]) continue;
        const float *row = obs + (size_t)r * O, *tok = row + O - ctx;
        for (int i = 0; i < ctx; i++) {
            float t = tok[i];
            if (!(t >= 0 && t < POL_TOK_VOCAB) || t != floorf(t))
                return cr_err_set(err, CR_EINVAL, "%s: observation[%d] (instruction token %d of %d) is %g, not a "
                                  "token id 0..%d", s->ph.algo, O - ctx + i, i, ctx, t, POL_TOK_VOCAB - 1);
            s->ids[(size_t)n * ctx + i] = (int32_t)t;
        }
        memcpy(s->img_h + (size_t)n * s->img, row, sizeof(float) * s->img);
        memcpy(s->prop_h + (size_t)n * s->prop, row + s->img, sizeof(float) * s->prop);
        memcpy(s->obj_h + (size_t)n * s->nobj, row + s->img + s->prop, sizeof(float) * s->nobj);
        n++;
    }
    *o = (pol_vla_obs_t){s->img ? s->img_h : NULL, s->ids, s->prop_h, s->nobj ? s->obj_h : NULL};
    return n;
}

static const float *vla_vel(void *self, const void *obs, const float *x, const float *t, int B)
{
    return pol_vla_velocity(self, obs, x, t, B);
}
static void vla_back(void *self, const float *dv, int B) { pol_vla_velocity_backward(self, dv, B); }

static int bc_update(vla_alg_t *s, const corral_batch_t *b, corral_metrics_t *m, cr_err_t *err)
{
    int H = (int)s->cfg.horizon, A = s->spec.act_dim;
    if (b->size % H)
        return cr_err_set(err, CR_EINVAL, "%s: batch of %d rows is not whole chunks of horizon %d", s->ph.algo,
                          b->size, H);
    int S = b->size / H, rc = reserve(s, b->size, err);
    if (rc) return rc;
    /* one sample per chunk: its first row */
    pol_genphase_bc_begin(&s->ph, b, H, S, s->take);
    memset(s->use, 0, (size_t)b->size);
    int B = 0;
    for (int i = 0; i < S; i++) {
        if (!s->take[i]) continue;
        s->use[(size_t)i * H] = 1;
        memcpy(s->chunk + (size_t)B * H * A, b->action + (size_t)i * H * A, sizeof(float) * H * A);
        B++;
    }
    pol_vla_obs_t o;
    int n = decode(s, b->obs, b->size, s->use, &o, err);
    if (n < 0) return n;
    if (s->img && s->cfg.augment_pad > 0) {   /* DrQ: shift each image by up to augment_pad pixels (host arrays) */
        int pad = (int)s->cfg.augment_pad;
        for (int i = 0; i < B * 2; i++) s->shifts[i] = (int32_t)nn_rng_below(&s->ph.rng, (uint32_t)(2 * pad + 1));
        nn_backend_cpu()->random_shift(s->aug, s->img_h, s->shifts, B, (int)s->v.c.img_c, (int)s->v.c.img_h,
                                       (int)s->v.c.img_w, pad);
        o.img = s->aug;
    }
    nn_params_zero_grad(&s->v.params);
    double loss = pol_vla_bc_step(&s->v, &o, s->chunk, B, &s->ph.rng);
    return pol_genphase_bc_end(&s->ph, loss, B, m, err);
}

static int rl_update(vla_alg_t *s, const corral_batch_t *b, corral_metrics_t *m, cr_err_t *err)
{
    if (!b->reward || !b->next_obs || !b->done)
        return cr_err_set(err, CR_EINVAL, "%s: RL needs reward, next_obs and done in the batch", s->ph.algo);
    int B = b->size, O = s->spec.obs_dim, vi = O - s->img, rc = reserve(s, B, err);
    if (rc) return rc;
    pol_vla_obs_t o;
    int n = decode(s, b->obs, B, NULL, &o, err);
    if (n < 0) return n;
    for (int i = 0; i < B; i++) {
        s->use[i] = pol_genphase_rl_row(b, i);
        memcpy(s->vin + (size_t)i * vi, b->obs + (size_t)i * O + s->img, sizeof(float) * vi);
        memcpy(s->vnext + (size_t)i * vi, b->next_obs + (size_t)i * O + s->img, sizeof(float) * vi);
    }
    nn_params_zero_grad(&s->v.params);
    corral_metrics_t mm = {0};
    rc = pol_genrl_update(&s->ph.g, &o, s->vin, s->vnext, b->action, b->reward, b->done, s->use, B, &mm, err);
    if (rc) return rc;
    pol_genphase_rl_end(&s->ph, &mm, m);
    return 0;
}

static int vla_update(void *self, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *cerr)
{
    vla_alg_t *s = self;
    cr_err_t *err = pol_err(cerr);
    if (!b || b->struct_size < sizeof(corral_batch_t) || b->size <= 0 || !b->obs || !b->action)
        return cr_err_set(err, CR_EINVAL, "%s: batch needs size > 0, obs and action", s->ph.algo);
    pol_metric_set(m, "phase", s->ph.phase);
    return s->ph.phase ? rl_update(s, b, m, err) : bc_update(s, b, m, err);
}

static int vla_act(void *self, const float *obs, int deterministic, float *action, corral_err_t *cerr)
{
    vla_alg_t *s = self;
    cr_err_t *err = pol_err(cerr);
    for (int i = 0; i < s->spec.obs_dim; i++)
        if (!isfinite(obs[i])) return cr_err_set(err, CR_EINVAL, "%s: observation[%d] is not finite", s->ph.algo, i);
    int rc = reserve(s, 1, err);
    if (rc) return rc;
    pol_vla_obs_t o;
    int n = decode(s, obs, 1, NULL, &o, err);
    if (n < 0) return n;
    nn_rng_t *rng = deterministic ? NULL : &s->ph.rng;
    if (s->ph.phase) pol_genrl_sample(&s->ph.g, &o, rng, s->out);
    else pol_vla_sample(&s->v, &o, 1, rng, s->out);
    for (int j = 0; j < s->spec.act_dim; j++) {
        if (!isfinite(s->out[j])) return cr_err_set(err, CR_EINVAL, "%s: non-finite action", s->ph.algo);
        action[j] = s->out[j];
    }
    return 0;
}

static void vla_destroy(void *self)
{
    vla_alg_t *s = self;
    if (!s) return;
    if (s->ph.be) {
        if (s->v.be) pol_vla_destroy(&s->v);
        if (s->frozen.be) pol_vla_destroy(&s->frozen);
        if (s->old.be) pol_vla_destroy(&s->old);
    }
    pol_genphase_destroy(&s->ph);
    free_scratch(s);
    free(s);
}

/* The model's configuration from the spec and the settings; errors name the
 * setting or the spec field. */
static int model_cfg(vla_alg_t *s, pol_vla_cfg_t *c, cr_err_t *err)
{
    const corral_spec_t *sp = &s->spec;
    const vla_cfg_t *k = &s->cfg;
    s->img = sp->img_c > 0 ? sp->img_c * sp->img_h * sp->img_w : 0;
    s->nobj = (int)(k->objects * k->object_dim);
    s->prop = sp->obs_dim - s->img - (int)k->ctx - s->nobj;
    if (s->prop < 1)
        return cr_err_set(err, CR_EINVAL, "observation of %d floats: image %d + instruction ctx %ld + objects %d leave "
                          "%d for proprioception (need >= 1)", sp->obs_dim, s->img, k->ctx, s->nobj, s->prop);
    *c = (pol_vla_cfg_t){.img_c = sp->img_c > 0 ? sp->img_c : 0, .img_h = sp->img_h, .img_w = sp->img_w,
                         .patch = (int)k->patch, .ctx = (int)k->ctx, .proprio = s->prop, .n_obj = (int)k->objects,
                         .obj_dim = k->objects ? (int)k->object_dim : 0,
                         .obj_slots = k->objects ? (int)k->object_slots : 0, .act_dim = sp->act_dim,
                         .horizon = (int)k->horizon, .steps = (int)k->steps, .dim = (int)k->dim,
                         .heads = (int)k->heads, .layers = (int)k->layers, .mlp = (int)k->mlp,
                         .head_hidden = (int)k->head_hidden};
    if (!c->img_c) c->img_h = c->img_w = 0;
    return 0;
}

/* `image`: "CxHxW" the weights expect; the spec's image must be that one. */
static int check_image(vla_alg_t *s, cr_err_t *err)
{
    if (!s->cfg.image[0]) return 0;
    int c, h, w;
    char tail;
    if (sscanf(s->cfg.image, "%dx%dx%d%c", &c, &h, &w, &tail) != 3 || c < 1 || h < 1 || w < 1)
        return cr_err_set(err, CR_EINVAL, "setting image '%s': expected CxHxW such as 3x32x32", s->cfg.image);
    if (s->spec.img_c <= 0)
        return cr_err_set(err, CR_EINVAL, "setting image %s: the robot sends no image (add a camera to the task)",
                          s->cfg.image);
    return pol_vla_check_image(&s->v, c, h, w, err) ? cr_err_set(err, CR_EINVAL, "the robot's image is %dx%dx%d (CxHxW), "
                               "the weights expect %s", s->spec.img_c, s->spec.img_h, s->spec.img_w, s->cfg.image) : 0;
}

static int create_common(const char *algo, int rl, const corral_kv_t *cfg, size_t n, const corral_spec_t *spec,
                         void **self, corral_err_t *cerr)
{
    cr_err_t *err = pol_err(cerr);
    *self = NULL;
    if (!spec || spec->struct_size < sizeof(corral_spec_t) || spec->obs_dim <= 0 || spec->act_dim <= 0 ||
        spec->act_dim > POL_GENRL_MAX_ACT)
        return cr_err_set(err, CR_EINVAL, "%s: spec needs obs_dim > 0 and act_dim in 1..%d", algo, POL_GENRL_MAX_ACT);
    if (spec->img_c > 0 && (spec->img_h <= 0 || spec->img_w <= 0 ||
                            (long)spec->img_c * spec->img_h * spec->img_w >= spec->obs_dim))
        return cr_err_set(err, CR_EINVAL, "%s: image %dx%dx%d does not fit an observation of %d floats", algo,
                          spec->img_c, spec->img_h, spec->img_w, spec->obs_dim);
    vla_alg_t *s = calloc(1, sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", algo);
    pol_genphase_t *ph = &s->ph;
    ph->algo = algo;
    ph->rl = rl;
    s->spec = *spec;
    pol_vla_cfg_t mc;
    int rc = pol_settings_apply(rl ? rl_settings : bc_settings, &s->cfg, NULL, 0, cfg, n, err);
    if (!rc) rc = nn_backend_get(s->cfg.backend, &ph->be, err);
    if (!rc) rc = model_cfg(s, &mc, err);
    if (!rc && rl && mc.steps < 2)
        rc = cr_err_set(err, CR_EINVAL, "steps %d: RL fine-tuning needs at least 2 integration steps", mc.steps);
    if (!rc) {
        nn_rng_seed(&ph->rng, (uint64_t)s->cfg.seed);
        rc = pol_vla_create(&s->v, ph->be, &mc, &ph->rng, err);
    }
    if (!rc) rc = check_image(s, err);
    if (!rc && s->cfg.init[0]) rc = pol_vla_load(&s->v, s->cfg.init, s->cfg.init_prefix, err);
    if (!rc && rl) {
        rc = pol_vla_create(&s->frozen, ph->be, &mc, &ph->rng, err);
        if (!rc) rc = pol_vla_create(&s->old, ph->be, &mc, &ph->rng, err);
    }
    if (!rc) {
        ph->cur = &s->v.params;
        ph->frozen = &s->frozen.params;
        ph->old = &s->old.params;
        ph->lr = s->cfg.lr;
        ph->weight_decay = s->cfg.weight_decay;
        ph->grad_clip = s->cfg.grad_clip;
        ph->o = s->cfg.rl;
        pol_genrl_model_t cur = {&s->v, vla_vel, vla_back}, fr = {&s->frozen, vla_vel, vla_back},
                          old = {&s->old, vla_vel, vla_back};
        rc = pol_genphase_setup(ph, &cur, &fr, &old, s->v.D, spec->act_dim, mc.steps, spec->obs_dim - s->img, err);
    }
    if (rc) {
        cr_err_wrap(err, "%s", algo);
        vla_destroy(s);
        return rc;
    }
    pol_genphase_describe(ph, "vla", VLA_CKPT_VERSION);
    const pol_vla_cfg_t *c = &s->v.c;
    pol_state_key(&ph->st, "shape", "image CxHxW/patch,ctx,proprio,objects x dim,act,horizon,steps,dim,heads,layers,"
                  "mlp,head", "%dx%dx%d/%d,%d,%d,%dx%d%s,%d,%d,%d,%d,%d,%d,%d,%d", c->img_c, c->img_h, c->img_w,
                  c->patch, c->ctx, c->proprio, c->n_obj, c->obj_dim, c->obj_slots ? "+slots" : "", c->act_dim,
                  c->horizon, c->steps, c->dim, c->heads, c->layers, c->mlp, c->head_hidden);
    *self = s;
    return 0;
}

static int bc_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self, corral_err_t *err)
{
    return create_common("vla-bc", 0, cfg, n, spec, self, err);
}

static int rl_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self, corral_err_t *err)
{
    return create_common("vla", 1, cfg, n, spec, self, err);
}

static const corral_algo_vtable_t bc_vt = POL_GENPHASE_VTABLE(bc_create, vla_update, vla_act, vla_destroy);
static const corral_algo_vtable_t rl_vt = POL_GENPHASE_VTABLE(rl_create, vla_update, vla_act, vla_destroy);

const corral_plugin_t pol_vla_bc_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION, .kind = CORRAL_PLUGIN_ALGO, .name = "vla-bc",
    .description = "vision-language-action transformer with a flow-matching action head: behaviour cloning",
    .algo = &bc_vt,
};

const corral_plugin_t pol_vla_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION, .kind = CORRAL_PLUGIN_ALGO, .name = "vla",
    .description = "vision-language-action transformer: behaviour cloning, then RL over the exact likelihood of its "
                   "noisy last step",
    .algo = &rl_vt,
};
