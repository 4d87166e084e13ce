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
 * phase, in one safetensors file. Vector observations only. */
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
    /* flow-rl */
    long bc_updates, value_hidden;
    float rl_lr, value_lr, gamma, clip, log_std_init, log_std_min, log_std_max;
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
/* flow-rl: the same, plus the fine-tuning phase; shared with the VLA */
#define RL_SETTINGS                                                                                            \
    {"bc_updates", SET_INT, "1000", 0, 1e15, OFF(bc_updates), "behaviour-cloning updates before RL starts"}, \
    {"rl_lr", SET_FLOAT, "1e-4", 0, 1, OFF(rl_lr), "learning rate of the policy during RL"},                 \
    {"value_lr", SET_FLOAT, "1e-3", 0, 1, OFF(value_lr), "learning rate of the value MLP"},                  \
    {"value_hidden", SET_INT, "64", 1, 4096, OFF(value_hidden), "width of the value MLP"},                    \
    {"gamma", SET_FLOAT, "0.99", 0, 1, OFF(gamma), "discount"},                                              \
    {"clip", SET_FLOAT, "0.2", 0.01, 1, OFF(clip), "PPO ratio clip"},                                        \
    {"log_std_init", SET_FLOAT, "-1.5", -10, 2, OFF(log_std_init), "initial log std of the action noise"},  \
    {"log_std_min", SET_FLOAT, "-4", -10, 2, OFF(log_std_min), "lower bound of the noise log std"},          \
    {"log_std_max", SET_FLOAT, "-0.5", -10, 2, OFF(log_std_max), "upper bound of the noise log std"}
static const pol_setting_t frl_settings[] = {
    FLOW_SETTINGS,
    RL_SETTINGS,
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
#undef OFF

typedef struct fbc {
    const char *algo;                /* "flow-bc" or "flow-rl" */
    int rl;                          /* flow-rl */
    int phase;                       /* 0: BC, 1: RL */
    fbc_cfg_t cfg;
    corral_spec_t spec;
    int hidden[POL_MLP_MAX_LAYERS], nhidden;
    const nn_backend_t *be;
    pol_flow_t flow, frozen, old;    /* frozen and old: flow-rl only */
    pol_genrl_t g;
    nn_adam_t opt;
    nn_rng_t rng;
    uint64_t updates, skipped_nan;
    int cap;
    float *obs, *chunk, *out;        /* host scratch */
    uint8_t *use;
    pol_state_t st;
} fbc_t;

static int reserve(fbc_t *s, int B, cr_err_t *err)
{
    int rc = pol_flow_reserve(&s->flow, B, err);
    if (!rc && s->rl) rc = pol_flow_reserve(&s->frozen, B, err);
    if (!rc && s->rl) rc = pol_flow_reserve(&s->old, B, err);
    if (!rc && s->rl) rc = pol_genrl_reserve(&s->g, B, err);
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
        return cr_err_set(err, CR_ENOMEM, "%s: cannot allocate scratch for batch %d", s->algo, B);
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

/* BC ends: the frozen prefix and the behaviour snapshot are the BC network, and
 * the optimiser starts over at the RL rate. */
static int start_rl(fbc_t *s, cr_err_t *err)
{
    int rc = nn_params_copy(&s->frozen.params, &s->flow.params, err);
    if (!rc) rc = nn_params_copy(&s->old.params, &s->flow.params, err);
    if (rc) return rc;
    pol_genrl_snapshot(&s->g);
    nn_adam_destroy(&s->opt, s->be);
    rc = nn_adam_init(&s->opt, &s->flow.params, s->cfg.rl_lr, s->cfg.weight_decay, s->cfg.grad_clip, err);
    if (rc) return rc;
    s->phase = 1;
    return 0;
}

static int bc_update(fbc_t *s, const corral_batch_t *b, corral_metrics_t *m, cr_err_t *err)
{
    int H = (int)s->cfg.horizon, O = s->spec.obs_dim, A = s->spec.act_dim;
    if (b->size % H)
        return cr_err_set(err, CR_EINVAL, "%s: batch of %d rows is not whole chunks of horizon %d", s->algo, b->size,
                          H);
    int S = b->size / H, rc = reserve(s, S, err), demos = 0;
    if (rc) return rc;
    for (int i = 0; s->rl && b->flags && i < S; i++) demos += (b->flags[(size_t)i * H] & CORRAL_SAMPLE_DEMO) != 0;
    int B = 0;
    for (int i = 0; i < S; i++) {
        if (demos && !(b->flags[(size_t)i * H] & CORRAL_SAMPLE_DEMO)) continue;
        memcpy(s->obs + (size_t)B * O, b->obs + (size_t)i * H * O, sizeof(float) * O);
        memcpy(s->chunk + (size_t)B * H * A, b->action + (size_t)i * H * A, sizeof(float) * H * A);
        B++;
    }
    nn_params_zero_grad(&s->flow.params);
    double loss = pol_flow_bc_step(&s->flow, s->obs, s->chunk, B, &s->rng);
    pol_step_finish(s->algo, loss, &s->opt, &s->flow.params, &s->updates, &s->skipped_nan, "flow_loss", m);
    pol_metric_set(m, "bc_rows", B);
    if (s->rl && s->updates >= (uint64_t)s->cfg.bc_updates) return start_rl(s, err);
    return 0;
}

static int rl_update(fbc_t *s, const corral_batch_t *b, corral_metrics_t *m, cr_err_t *err)
{
    if (!b->reward || !b->next_obs || !b->done)
        return cr_err_set(err, CR_EINVAL, "%s: RL needs reward, next_obs and done in the batch", s->algo);
    int B = b->size, rc = reserve(s, B, err);
    if (rc) return rc;
    for (int i = 0; i < B; i++)
        s->use[i] = !b->flags || !(b->flags[i] & (CORRAL_SAMPLE_DEMO | CORRAL_SAMPLE_INTERVENTION | CORRAL_SAMPLE_PAD));
    nn_params_zero_grad(&s->flow.params);
    corral_metrics_t mm = {0};
    rc = pol_genrl_update(&s->g, b->obs, b->obs, b->next_obs, b->action, b->reward, b->done, s->use, B, &mm, err);
    if (rc) return rc;
    double loss = pol_metric_get(&mm, "policy_loss");
    for (int i = 0; i < mm.count; i++) pol_metric_set(m, mm.item[i].name, mm.item[i].value);
    if (isnan(loss)) {   /* no row of the policy's own: nothing to learn */
        pol_metric_set(m, "updates", (double)s->updates);
        return 0;
    }
    pol_step_finish(s->algo, loss, &s->opt, &s->flow.params, &s->updates, &s->skipped_nan, "policy_loss", m);
    return 0;
}

static int fbc_update(void *self, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    if (!b || b->struct_size < sizeof(corral_batch_t) || b->size <= 0 || !b->obs || !b->action)
        return cr_err_set(err, CR_EINVAL, "%s: batch needs size > 0, obs and action", s->algo);
    pol_metric_set(m, "phase", s->phase);
    return s->phase ? rl_update(s, b, m, err) : bc_update(s, b, m, err);
}

static int fbc_act(void *self, const float *obs, int deterministic, float *action, corral_err_t *cerr)
{
    fbc_t *s = self;
    cr_err_t *err = pol_err(cerr);
    for (int i = 0; i < s->spec.obs_dim; i++)
        if (!isfinite(obs[i])) return cr_err_set(err, CR_EINVAL, "%s: observation[%d] is not finite", s->algo, i);
    int rc = reserve(s, 1, err);
    if (rc) return rc;
    if (s->phase) pol_genrl_sample(&s->g, obs, deterministic ? NULL : &s->rng, s->out);
    else pol_flow_sample(&s->flow, obs, 1, deterministic ? NULL : &s->rng, 0, NULL, NULL, s->out);
    for (int j = 0; j < s->spec.act_dim; j++) {
        if (!isfinite(s->out[j])) return cr_err_set(err, CR_EINVAL, "%s: non-finite action", s->algo);
        action[j] = s->out[j];
    }
    return 0;
}

static int fbc_export(void *self, void *buf, size_t cap, size_t *len, corral_err_t *cerr)
{
    fbc_t *s = self;
    char extra[16];
    snprintf(extra, sizeof extra, "phase=%d", s->phase);
    int rc = pol_state_export(&s->st, buf, cap, len, extra, pol_err(cerr));
    if (rc == 0 && s->phase) {   /* the actors now hold this policy: the ratio's reference */
        cr_err_t e = {0};
        if (nn_params_copy(&s->old.params, &s->flow.params, &e) == 0) pol_genrl_snapshot(&s->g);
    }
    return rc;
}

static int fbc_import(void *self, const void *blob, size_t len, corral_err_t *cerr)
{
    fbc_t *s = self;
    char extra[32];
    int rc = pol_state_import(&s->st, blob, len, extra, sizeof extra, pol_err(cerr));
    if (rc == 0 && s->rl) s->phase = strcmp(extra, "phase=1") == 0;
    return rc;
}

static void state_string(const fbc_t *s, char *buf, size_t cap)
{
    char rng[80];
    pol_rng_format(&s->rng, rng, sizeof rng);
    if (!s->rl)
        snprintf(buf, cap, "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%s\"}",
                 (unsigned long long)s->updates, (unsigned long long)s->skipped_nan, s->opt.t, rng);
    else
        snprintf(buf, cap,
                 "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%s\",\"phase\":%d,\"noise_t\":%ld,"
                 "\"value_t\":%ld}",
                 (unsigned long long)s->updates, (unsigned long long)s->skipped_nan, s->opt.t, rng, s->phase,
                 s->g.nopt.t, s->g.vopt.t);
}

static int parse_state(void *ctx, const char *js)
{
    fbc_t *s = ctx;
    unsigned long long u, k;
    long t = -1, nt = 0, vt = 0;
    int phase = 0;
    char rs[80];
    nn_rng_t rng;
    int n = s->rl ? sscanf(js, "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%79[0-9a-f,]\",\"phase\":%d,"
                               "\"noise_t\":%ld,\"value_t\":%ld}", &u, &k, &t, rs, &phase, &nt, &vt)
                  : sscanf(js, "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%79[0-9a-f,]\"}", &u, &k, &t, rs);
    if (n != (s->rl ? 7 : 4) || t < 0 || nt < 0 || vt < 0 || (phase != 0 && phase != 1) || pol_rng_parse(&rng, rs))
        return CR_ECORRUPT;
    s->updates = u;
    s->skipped_nan = k;
    s->opt.t = t;
    s->rng = rng;
    s->phase = phase;
    s->g.nopt.t = nt;
    s->g.vopt.t = vt;
    if (phase) s->opt.lr = s->cfg.rl_lr;
    return 0;
}

static int fbc_save(void *self, const char *path, corral_err_t *cerr)
{
    fbc_t *s = self;
    char state[512];
    state_string(s, state, sizeof state);
    return pol_state_save(&s->st, path, state, pol_err(cerr));
}

static int fbc_load(void *self, const char *path, corral_err_t *cerr)
{
    fbc_t *s = self;
    return pol_state_load(&s->st, path, parse_state, s, pol_err(cerr));
}

static void fbc_destroy(void *self)
{
    fbc_t *s = self;
    if (!s) return;
    if (s->be) {
        pol_flow_destroy(&s->flow);
        pol_flow_destroy(&s->frozen);
        pol_flow_destroy(&s->old);
        pol_genrl_destroy(&s->g);
        nn_adam_destroy(&s->opt, s->be);
    }
    free(s->obs); free(s->chunk); free(s->out); free(s->use);
    free(s);
}

/* What a blob and a checkpoint hold. */
static void describe_state(fbc_t *s)
{
    pol_state_t *st = &s->st;
    st->algo = s->algo;
    st->version = FLOW_CKPT_VERSION;
    st->be = s->be;
    st->shape_names = "obs,act,horizon,steps,hidden";
    snprintf(st->shape, sizeof st->shape, "%d,%d,%ld,%ld,%s", s->spec.obs_dim, s->spec.act_dim, s->cfg.horizon,
             s->cfg.steps, s->cfg.hidden);
    st->policy[st->npolicy++] = (pol_io_arena_t){"policy", &s->flow.params};
    st->arenas[st->narenas++] = (pol_io_arena_t){"flow", &s->flow.params};
    st->adams[st->nadams++] = (pol_io_adam_t){"optim.flow", &s->opt};
    if (!s->rl) return;
    st->policy[st->npolicy++] = (pol_io_arena_t){"frozen", &s->frozen.params};
    st->policy[st->npolicy++] = (pol_io_arena_t){"noise", &s->g.noise};
    st->arenas[st->narenas++] = (pol_io_arena_t){"frozen", &s->frozen.params};
    st->arenas[st->narenas++] = (pol_io_arena_t){"old", &s->old.params};
    st->arenas[st->narenas++] = (pol_io_arena_t){"noise", &s->g.noise};
    st->arenas[st->narenas++] = (pol_io_arena_t){"old_noise", &s->g.old_noise};
    st->arenas[st->narenas++] = (pol_io_arena_t){"value", &s->g.vparams};
    st->adams[st->nadams++] = (pol_io_adam_t){"optim.noise", &s->g.nopt};
    st->adams[st->nadams++] = (pol_io_adam_t){"optim.value", &s->g.vopt};
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
    s->algo = algo;
    s->rl = rl;
    s->spec = *spec;
    int rc = pol_settings_apply(rl ? frl_settings : fbc_settings, &s->cfg, NULL, 0, cfg, n, err);
    if (!rc) rc = nn_backend_get(s->cfg.backend, &s->be, err);
    if (!rc && (rc = pol_parse_widths(s->cfg.hidden, s->hidden, POL_MLP_MAX_LAYERS - 1, err)) >= 0) {
        s->nhidden = rc;
        rc = 0;
    }
    if (!rc && rl && s->cfg.steps < 2)
        rc = cr_err_set(err, CR_EINVAL, "steps %ld: RL fine-tuning needs at least 2 integration steps", s->cfg.steps);
    int H = (int)s->cfg.horizon, K = (int)s->cfg.steps;
    if (!rc) {
        nn_rng_seed(&s->rng, (uint64_t)s->cfg.seed);
        rc = pol_flow_create(&s->flow, s->be, spec->obs_dim, spec->act_dim, H, K, s->hidden, s->nhidden, 0, 0, 0, 0,
                             &s->rng, err);
    }
    if (!rc && rl) {
        rc = pol_flow_create(&s->frozen, s->be, spec->obs_dim, spec->act_dim, H, K, s->hidden, s->nhidden, 0, 0, 0, 0,
                             &s->rng, err);
        if (!rc) rc = pol_flow_create(&s->old, s->be, spec->obs_dim, spec->act_dim, H, K, s->hidden, s->nhidden, 0, 0,
                                      0, 0, &s->rng, err);
        pol_genrl_cfg_t gc = {.lr_noise = s->cfg.rl_lr, .lr_value = s->cfg.value_lr, .gamma = s->cfg.gamma,
                              .clip = s->cfg.clip, .log_std_init = s->cfg.log_std_init,
                              .log_std_lo = s->cfg.log_std_min, .log_std_hi = s->cfg.log_std_max,
                              .value_hidden = (int)s->cfg.value_hidden};
        if (!rc) rc = pol_genrl_create(&s->g, s->be, s->flow.D, spec->act_dim, K, spec->obs_dim, &gc, &s->rng, err);
        s->g.cur = (pol_genrl_model_t){&s->flow, flow_vel, flow_back};
        s->g.frozen = (pol_genrl_model_t){&s->frozen, flow_vel, flow_back};
        s->g.old = (pol_genrl_model_t){&s->old, flow_vel, flow_back};
    }
    if (!rc) rc = nn_adam_init(&s->opt, &s->flow.params, s->cfg.lr, s->cfg.weight_decay, s->cfg.grad_clip, err);
    if (!rc && rl && s->cfg.bc_updates == 0) rc = start_rl(s, err);
    if (rc) {
        cr_err_wrap(err, "%s", algo);
        fbc_destroy(s);
        return rc;
    }
    describe_state(s);
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

static const corral_algo_vtable_t fbc_vt = {
    .struct_size = sizeof(corral_algo_vtable_t), .create = fbc_create, .update = fbc_update, .act = fbc_act,
    .export_policy = fbc_export, .import_policy = fbc_import, .save = fbc_save, .load = fbc_load,
    .destroy = fbc_destroy,
};

static const corral_algo_vtable_t frl_vt = {
    .struct_size = sizeof(corral_algo_vtable_t), .create = frl_create, .update = fbc_update, .act = fbc_act,
    .export_policy = fbc_export, .import_policy = fbc_import, .save = fbc_save, .load = fbc_load,
    .destroy = fbc_destroy,
};

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
