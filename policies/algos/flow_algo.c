/* flow_algo.c - the flow-matching action-chunk policy behind the plugin ABI:
 * "flow-bc" (behaviour cloning) and "flow-rl" (behaviour cloning for bc_updates
 * updates, then RL fine-tuning, gen_rl.c).
 *
 * BC update: the flow-matching loss (gen.h) on the batch's action chunks. With
 * horizon H = 1 a batch is the usual one transition per row. With H > 1 the
 * batch holds size / H samples of H consecutive transitions of one episode each
 * (rows s*H .. s*H+H-1, as a sequence sampler returns them; an episode's end is
 * padded by repeating its last action): the sample's observation is its first
 * row's, its chunk the H actions. flow-rl clones only the demonstration rows of a
 * batch when it has any (CORRAL_SAMPLE_DEMO), else every row.
 * RL update (flow-rl, from update bc_updates on): each row is one transition;
 * the first K-1 integration steps run a frozen copy of the BC network, the last
 * step is trained with learnable noise by a clipped policy gradient over the
 * exact likelihood of the executed action, against the policy last exported
 * (the one the actors hold). Exporting the policy makes it that behaviour policy.
 * Act: during BC, K Euler steps from x_0 = 0 (deterministic) or x_0 ~ N(0, I);
 * during RL, the frozen prefix from x_0 = 0 and the trained last step, plus its
 * noise unless deterministic. The first action of the chunk is returned, so each
 * call replans (receding horizon with one executed step).
 * State: the networks, optimiser moments and steps, the RNG, the counters and the
 * phase, in one safetensors file (gen_phase.c). Vector observations only. */
#include "policies/algos/algo.h"
#include "policies/algos/gen_rl.h"
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
    pol_genphase_opts_t rl;          /* flow-rl */
} fbc_cfg_t;

#define OFF(f) offsetof(fbc_cfg_t, f)
#define FLOW_SETTINGS                                                                                          \
    {"hidden", SET_STR, "256,256", 0, 0, OFF(hidden), "hidden widths of the velocity network"},               \
    {"horizon", SET_INT, "1", 1, 64, OFF(horizon), "actions per chunk"},                                       \
    {"steps", SET_INT, "10", 1, POL_FLOW_MAX_STEPS, OFF(steps), "Euler integration steps"},                    \
    {"lr", SET_FLOAT, "1e-3", 0, 1, OFF(lr), "learning rate"},                                                 \
    {"weight_decay", SET_FLOAT, "0", 0, 1, OFF(weight_decay), "AdamW decoupled weight decay"},                 \
    {"grad_clip", SET_FLOAT, "1", 0, 1e9, OFF(grad_clip), "global gradient norm limit (0: off)"},             \
    {"seed", SET_INT, "0", 0, 9e15, OFF(seed), "random seed"},                                                 \
    {"backend", SET_STR, "cpu", 0, 0, OFF(backend), "cpu, cuda or auto"}
static const pol_setting_t fbc_settings[] = {
    FLOW_SETTINGS,
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
static const pol_setting_t frl_settings[] = {
    FLOW_SETTINGS,
    POL_GENPHASE_SETTINGS(fbc_cfg_t, rl),
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
#undef OFF

typedef struct fbc {
    pol_genphase_t ph;               /* first: algo, phase, optimiser, RNG, counters, state */
    fbc_cfg_t cfg;
    corral_spec_t spec;
    int hidden[POL_MLP_MAX_LAYERS], nhidden;
    pol_flow_t flow, frozen, old;    /* frozen and old: flow-rl only */
    int cap;
    float *obs, *chunk, *out;        /* host scratch */
    uint8_t *use;
} fbc_t;

static int reserve(fbc_t *s, int B, cr_err_t *err)
{
    int rc = pol_flow_reserve(&s->flow, B, err);
    if (!rc && s->ph.rl) rc = pol_flow_reserve(&s->frozen, B, err);
    if (!rc && s->ph.rl) rc = pol_flow_reserve(&s->old, B, err);
    if (!rc && s->ph.rl) rc = pol_genrl_reserve(&s->ph.g, B, err);
    if (rc || B <= s->cap) return rc;
    free(s->obs); free(s->chunk); free(s->out); free(s->use);
    s->obs = malloc(sizeof(float) * (size_t)B * s->spec.obs_dim);
    s->chunk = malloc(sizeof(float) * (size_t)B * s->flow.D);
    s->out = malloc(sizeof(float) * (size_t)B * s->flow.D);
    s->use = malloc((size_t)B);
    if (!s->obs || !s->chunk || !s->out || !s->use) {
        free(s->obs); free(s->chunk); free(s->out); free(s->use);
        s->obs = s->chunk = s->out = NULL;
        s->use = NULL;
        s->cap = 0;
        return cr_err_set(err, CR_ENOMEM, "%s: cannot allocate scratch for batch %d", s->ph.algo, B);
    }
    s->cap = B;
    return 0;
}

/* The gen_rl view of a pol_flow_t. */
static const float *flow_vel(void *self, const void *obs, const float *x, const float *t, int B)
{
    return pol_flow_velocity(self, obs, x, t, B);
}
static void flow_back(void *self, const float *dv, int B) { pol_flow_velocity_backward(self, dv, B); }

static int bc_update(fbc_t *s, const corral_batch_t *b, corral_metrics_t *m, cr_err_t *err)
{
    int H = (int)s->cfg.horizon, O = s->spec.obs_dim, A = s->spec.act_dim;
    if (b->size % H)
        return cr_err_set(err, CR_EINVAL, "%s: batch of %d rows is not whole chunks of horizon %d", s->ph.algo,
                          b->size, H);
    int S = b->size / H, rc = reserve(s, S, err);
    if (rc) return rc;
    pol_genphase_bc_begin(&s->ph, b, H, S, s->use);
    int B = 0;
    for (int i = 0; i < S; i++) {
        if (!s->use[i]) continue;
        memcpy(s->obs + (size_t)B * O, b->obs + (size_t)i * H * O, sizeof(float) * O);
        memcpy(s->chunk + (size_t)B * H * A, b->action + (size_t)i * H * A, sizeof(float) * H * A);
        B++;
    }
    nn_params_zero_grad(&s->flow.params);
    double loss = pol_flow_bc_step(&s->flow, s->obs, s->chunk, B, &s->ph.rng);
    return pol_genphase_bc_end(&s->ph, loss, B, m, err);
}

static int rl_update(fbc_t *s, const corral_batch_t *b, corral_metrics_t *m, cr_err_t *err)
{
    if (!b->reward || !b->next_obs || !b->done)
        return cr_err_set(err, CR_EINVAL, "%s: RL needs reward, next_obs and done in the batch", s->ph.algo);
    int B = b->size, rc = reserve(s, B, err);
    if (rc) return rc;
    for (int i = 0; i < B; i++)
        s->use[i] = pol_genphase_rl_row(b, i);
    nn_params_zero_grad(&s->flow.params);
    corral_metrics_t mm = {0};
    rc = pol_genrl_update(&s->ph.g, b->obs, b->obs, b->next_obs, b->action, b->reward, b->done, s->use, B, &mm,
                          err);
    if (rc) return rc;
    pol_genphase_rl_end(&s->ph, &mm, m);
    return 0;
}

static int fbc_update(void *self, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    if (!b || b->struct_size < sizeof(corral_batch_t) || b->size <= 0 || !b->obs || !b->action)
        return cr_err_set(err, CR_EINVAL, "%s: batch needs size > 0, obs and action", s->ph.algo);
    pol_metric_set(m, "phase", s->ph.phase);
    return s->ph.phase ? rl_update(s, b, m, err) : bc_update(s, b, m, err);
}

static int fbc_act(void *self, const float *obs, int deterministic, float *action, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    for (int i = 0; i < s->spec.obs_dim; i++)
        if (!isfinite(obs[i])) return cr_err_set(err, CR_EINVAL, "%s: observation[%d] is not finite", s->ph.algo, i);
    int rc = reserve(s, 1, err);
    if (rc) return rc;
    nn_rng_t *rng = deterministic ? NULL : &s->ph.rng;
    if (s->ph.phase) pol_genrl_sample(&s->ph.g, obs, rng, s->out);
    else pol_flow_sample(&s->flow, obs, 1, rng, 0, NULL, NULL, s->out);
    for (int j = 0; j < s->spec.act_dim; j++) {
        if (!isfinite(s->out[j])) return cr_err_set(err, CR_EINVAL, "%s: non-finite action", s->ph.algo);
        action[j] = s->out[j];
    }
    return 0;
}

static void fbc_destroy(void *self)
{
    fbc_t *s = self;
    if (!s) return;
    if (s->ph.be) {
        pol_flow_destroy(&s->flow);
        pol_flow_destroy(&s->frozen);
        pol_flow_destroy(&s->old);
    }
    pol_genphase_destroy(&s->ph);
    free(s->obs); free(s->chunk); free(s->out); free(s->use);
    free(s);
}

static int create_common(const char *algo, int rl, const corral_kv_t *cfg, size_t n, const corral_spec_t *spec,
                         void **self, corral_err_t *cerr)
{
    cr_err_t *err = pol_err(cerr);
    *self = NULL;
    if (!spec || spec->struct_size < sizeof(corral_spec_t) || spec->obs_dim <= 0 || spec->act_dim <= 0 ||
        spec->act_dim > 64)
        return cr_err_set(err, CR_EINVAL, "%s: spec needs obs_dim > 0 and act_dim in 1..64", algo);
    if (spec->img_c > 0)
        return cr_err_set(err, CR_ENOTSUP, "%s: image observations are not supported (the vla algorithm takes them)",
                          algo);
    fbc_t *s = calloc(1, sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", algo);
    pol_genphase_t *ph = &s->ph;
    ph->algo = algo;
    ph->rl = rl;
    s->spec = *spec;
    int rc = pol_settings_apply(rl ? frl_settings : fbc_settings, &s->cfg, NULL, 0, cfg, n, err);
    if (!rc) rc = nn_backend_get(s->cfg.backend, &ph->be, err);
    if (!rc && (rc = pol_parse_widths(s->cfg.hidden, s->hidden, POL_MLP_MAX_LAYERS - 1, err)) >= 0) {
        s->nhidden = rc;
        rc = 0;
    }
    if (!rc && rl && s->cfg.steps < 2)
        rc = cr_err_set(err, CR_EINVAL, "steps %ld: RL fine-tuning needs at least 2 integration steps", s->cfg.steps);
    int H = (int)s->cfg.horizon, K = (int)s->cfg.steps;
    if (!rc) {
        nn_rng_seed(&ph->rng, (uint64_t)s->cfg.seed);
        rc = pol_flow_create(&s->flow, ph->be, spec->obs_dim, spec->act_dim, H, K, s->hidden, s->nhidden, 0, 0, 0, 0,
                             &ph->rng, err);
    }
    if (!rc && rl) {
        rc = pol_flow_create(&s->frozen, ph->be, spec->obs_dim, spec->act_dim, H, K, s->hidden, s->nhidden, 0, 0, 0,
                             0, &ph->rng, err);
        if (!rc) rc = pol_flow_create(&s->old, ph->be, spec->obs_dim, spec->act_dim, H, K, s->hidden, s->nhidden, 0,
                                      0, 0, 0, &ph->rng, err);
    }
    if (!rc) {
        ph->cur = &s->flow.params;
        ph->frozen = &s->frozen.params;
        ph->old = &s->old.params;
        ph->lr = s->cfg.lr;
        ph->weight_decay = s->cfg.weight_decay;
        ph->grad_clip = s->cfg.grad_clip;
        ph->o = s->cfg.rl;
        pol_genrl_model_t cur = {&s->flow, flow_vel, flow_back}, fr = {&s->frozen, flow_vel, flow_back},
                          old = {&s->old, flow_vel, flow_back};
        rc = pol_genphase_setup(ph, &cur, &fr, &old, s->flow.D, spec->act_dim, K, spec->obs_dim, err);
    }
    if (rc) {
        cr_err_wrap(err, "%s", algo);
        fbc_destroy(s);
        return rc;
    }
    pol_genphase_describe(ph, "flow", FLOW_CKPT_VERSION);
    pol_state_key(&ph->st, "shape", "obs,act,horizon,steps,hidden", "%d,%d,%ld,%ld,%s", spec->obs_dim,
                  spec->act_dim, s->cfg.horizon, s->cfg.steps, s->cfg.hidden);
    *self = s;
    return 0;
}

static int fbc_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self, corral_err_t *err)
{
    return create_common("flow-bc", 0, cfg, n, spec, self, err);
}

static int frl_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self, corral_err_t *err)
{
    return create_common("flow-rl", 1, cfg, n, spec, self, err);
}

static const corral_algo_vtable_t fbc_vt = POL_GENPHASE_VTABLE(fbc_create, fbc_update, fbc_act, fbc_destroy);
static const corral_algo_vtable_t frl_vt = POL_GENPHASE_VTABLE(frl_create, fbc_update, fbc_act, fbc_destroy);

const corral_plugin_t pol_flow_bc_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION, .kind = CORRAL_PLUGIN_ALGO, .name = "flow-bc",
    .description = "behaviour cloning of a flow-matching action-chunk policy", .algo = &fbc_vt,
};

const corral_plugin_t pol_flow_rl_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION, .kind = CORRAL_PLUGIN_ALGO, .name = "flow-rl",
    .description = "flow-matching policy: behaviour cloning, then RL over the exact likelihood of its noisy last "
                   "step",
    .algo = &frl_vt,
};
