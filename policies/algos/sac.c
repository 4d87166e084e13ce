/* sac.c - Soft Actor-Critic with a Q ensemble, and RLPD as a preset of it.
 *
 * State (everything a checkpoint holds): actor, critic ensemble and its Polyak
 * target, optional CNN encoder and its target (image observations, DrQ random
 * shifts), Adam moments and step counts of each optimiser, log temperature and
 * its Adam moments, the RNG, and the counters (updates, critic updates, skipped
 * non-finite steps). save() writes all of it into one safetensors file; load()
 * restores it so that later updates are bit-identical to an uninterrupted run.
 *
 * One update(batch) call: the batch is split into `utd` minibatches; each gets a
 * critic step (TD target from the target critics' minimum over a random subset
 * of `num_min_q` heads, Polyak update after it); the last minibatch then gets
 * the actor step and the temperature step. RLPD = this with LayerNorm critics, a
 * 10-head ensemble and a high utd; its 50/50 online/demo mixing is done by the
 * buffer's sampler, and the demo fraction of each batch is reported.
 *
 * A non-finite loss or gradient skips that step (parameters, moments and step
 * count unchanged), increments skipped_nan and is reported in the metrics.
 *
 * With `threads` > 1 (CPU backend) an update runs the critic heads, row blocks
 * of the actor's batch, independent gradient products and the elementwise
 * optimiser passes on that many lanes (nn_pool). Each piece writes its own
 * memory, so the results, and the checkpoints, do not depend on the count. */
#include "policies/algos/algo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAC_CKPT_VERSION "1"

typedef struct sac_cfg {
    char hidden[SET_STR_MAX];
    long num_q, num_min_q, utd, seed, encoder_feat, aug_pad, threads;
    int layernorm, auto_alpha, backup_entropy;
    float gamma, tau, actor_lr, critic_lr, alpha_lr, init_alpha, target_entropy;
    float grad_clip, weight_decay;
    char actor_q[SET_STR_MAX], backend[SET_STR_MAX];
} sac_cfg_t;

#define OFF(f) offsetof(sac_cfg_t, f)
static const pol_setting_t sac_settings[] = {
    {"hidden", SET_STR, "256,256", 0, 0, OFF(hidden), "hidden widths of actor and critics"},
    {"num_q", SET_INT, "2", 1, POL_MAX_Q, OFF(num_q), "critics in the ensemble"},
    {"num_min_q", SET_INT, "2", 1, POL_MAX_Q, OFF(num_min_q), "random subset size for the target minimum"},
    {"layernorm", SET_BOOL, "false", 0, 1, OFF(layernorm), "LayerNorm in the critics"},
    {"utd", SET_INT, "1", 1, 1000, OFF(utd), "critic updates per update() (the batch is split)"},
    {"gamma", SET_FLOAT, "0.99", 0, 1, OFF(gamma), "discount"},
    {"tau", SET_FLOAT, "0.005", 0, 1, OFF(tau), "Polyak rate of the target critics"},
    {"actor_lr", SET_FLOAT, "3e-4", 0, 1, OFF(actor_lr), "actor learning rate"},
    {"critic_lr", SET_FLOAT, "3e-4", 0, 1, OFF(critic_lr), "critic (and encoder) learning rate"},
    {"alpha_lr", SET_FLOAT, "3e-4", 0, 1, OFF(alpha_lr), "temperature learning rate"},
    {"init_alpha", SET_FLOAT, "1.0", 1e-8, 1e4, OFF(init_alpha), "initial temperature"},
    {"auto_alpha", SET_BOOL, "true", 0, 1, OFF(auto_alpha), "tune the temperature"},
    {"target_entropy", SET_FLOAT, "auto", -1e6, 1e6, OFF(target_entropy), "auto: -act_dim"},
    {"backup_entropy", SET_BOOL, "true", 0, 1, OFF(backup_entropy), "entropy term in the TD target"},
    {"grad_clip", SET_FLOAT, "0", 0, 1e9, OFF(grad_clip), "global gradient norm limit (0: off)"},
    {"weight_decay", SET_FLOAT, "0", 0, 1, OFF(weight_decay), "AdamW decoupled weight decay"},
    {"actor_q", SET_STR, "min", 0, 0, OFF(actor_q), "min or mean over the ensemble for the actor"},
    {"seed", SET_INT, "0", 0, 9e15, OFF(seed), "random seed"},
    {"encoder_feat", SET_INT, "50", 1, 4096, OFF(encoder_feat), "image features (image specs only)"},
    {"aug_pad", SET_INT, "4", 0, 64, OFF(aug_pad), "random-shift padding in pixels (0: off)"},
    {"backend", SET_STR, "cpu", 0, 0, OFF(backend), "cpu, cuda or auto"},
    {"threads", SET_INT, "1", 1, 64, OFF(threads), "CPU threads per update (results do not depend on it)"},
    {NULL, 0, NULL, 0, 0, 0, NULL},
};
#undef OFF

typedef struct sac {
    const char *algo;                /* "sac" or "rlpd" */
    sac_cfg_t cfg;
    int hidden[POL_MLP_MAX_LAYERS], nhidden;
    corral_spec_t spec;
    const nn_backend_t *be;
    nn_pool_t *pool;                 /* lanes for the critic heads and row blocks */
    int img, prop, in_dim;           /* image floats per obs, proprio dims, head input dims */
    pol_actor_t actor;
    pol_critic_t critic, target;
    nn_adam_t actor_opt, critic_opt;
    nn_params_t enc_p, enc_tp;       /* image encoder and its target (img > 0) */
    pol_encoder_t enc, enc_t;
    pol_imgobs_t io;                 /* image rows -> head inputs, for enc and enc_t */
    nn_adam_t enc_opt;
    float log_alpha, alpha_m, alpha_v;
    long alpha_t;
    nn_rng_t rng;
    uint64_t updates, critic_updates, skipped_nan;
    /* scratch: backend memory for cap rows, host mirrors */
    int cap;
    float *obs, *act, *rew, *next, *done, *y, *qmin, *dq, *dact, *dlogp, *act_next, *logp_next;
    float *x, *x_next, *dx;
    float *h_eps, *h_q, *h_dq, *h_logp;
    uint64_t *h_raw;                 /* raw draws behind h_eps */
} sac_t;

static float alpha_of(const sac_t *s) { return expf(s->log_alpha); }

/* ---- scratch ---- */

static void free_scratch(sac_t *s)
{
    const nn_backend_t *be = s->be;
    float **dev[] = {&s->obs, &s->act, &s->rew, &s->next, &s->done, &s->y, &s->qmin, &s->dq, &s->dact,
                     &s->dlogp, &s->act_next, &s->logp_next, &s->x, &s->x_next, &s->dx};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (*dev[i]) { be->free(*dev[i]); *dev[i] = NULL; }
    free(s->h_eps); free(s->h_q); free(s->h_dq); free(s->h_logp); free(s->h_raw);
    s->h_eps = s->h_q = s->h_dq = s->h_logp = NULL;
    s->h_raw = NULL;
    s->cap = 0;
}

static int reserve(sac_t *s, int B, cr_err_t *err)
{
    int rc = pol_actor_reserve(&s->actor, B, err);
    if (!rc) rc = pol_critic_reserve(&s->critic, B, err);
    if (!rc) rc = pol_critic_reserve(&s->target, B, err);
    if (!rc && s->img) rc = pol_encoder_reserve(&s->enc, B, err);
    if (!rc && s->img) rc = pol_encoder_reserve(&s->enc_t, B, err);
    if (!rc && s->img) rc = pol_imgobs_reserve(&s->io, B, err);
    if (rc || B <= s->cap) return rc;
    free_scratch(s);
    const nn_backend_t *be = s->be;
    size_t f = sizeof(float), O = (size_t)s->spec.obs_dim, A = (size_t)s->spec.act_dim;
    size_t N = (size_t)s->cfg.num_q, I = (size_t)s->in_dim, b = (size_t)B;
    int ok = 1;
    ok &= !!(s->obs = be->alloc(b * O * f));
    ok &= !!(s->next = be->alloc(b * O * f));
    ok &= !!(s->act = be->alloc(b * A * f));
    ok &= !!(s->act_next = be->alloc(b * A * f));
    ok &= !!(s->dact = be->alloc(b * A * f));
    ok &= !!(s->rew = be->alloc(b * f));
    ok &= !!(s->done = be->alloc(b * f));
    ok &= !!(s->y = be->alloc(b * f));
    ok &= !!(s->qmin = be->alloc(b * f));
    ok &= !!(s->dlogp = be->alloc(b * f));
    ok &= !!(s->logp_next = be->alloc(b * f));
    ok &= !!(s->dq = be->alloc(N * b * f));
    ok &= !!(s->h_eps = malloc(b * A * f));
    ok &= !!(s->h_raw = malloc(2 * b * A * sizeof(uint64_t)));
    ok &= !!(s->h_q = malloc(N * b * f));
    ok &= !!(s->h_dq = malloc(N * b * f));
    ok &= !!(s->h_logp = malloc(b * f));
    if (s->img) {
        ok &= !!(s->x = be->alloc(b * I * f));
        ok &= !!(s->x_next = be->alloc(b * I * f));
        ok &= !!(s->dx = be->alloc(b * I * f));
    }
    if (!ok) {
        free_scratch(s);
        return cr_err_set(err, CR_ENOMEM, "%s: cannot allocate scratch for batch %d", s->algo, B);
    }
    s->cap = B;
    return 0;
}

/* ---- observations to head inputs ---- */

/* Head input [B][in_dim] for observations obs (backend memory): obs itself, or
 * with images the encoder's features (through enc) beside the proprioception. */
static const float *features(sac_t *s, pol_encoder_t *enc, const float *obs, int B, int augment, float *out)
{
    return s->img ? pol_imgobs_forward(&s->io, enc, obs, B, augment, &s->rng, out) : obs;
}

static void sample_noise(sac_t *s, int B, int deterministic)
{
    size_t n = (size_t)B * s->spec.act_dim;
    if (deterministic) memset(s->h_eps, 0, n * sizeof(float));
    else nn_rng_normals(&s->rng, s->h_eps, n, s->h_raw, s->pool);
    s->be->upload(s->actor.eps, s->h_eps, n * sizeof(float));
}

/* ---- the three steps ---- */

typedef struct lerp_job {
    const nn_backend_t *be;
    float *dst;
    const float *src;
    float tau;
    size_t n;
    int parts;
} lerp_job_t;

static void lerp_task(void *arg, int i)
{
    lerp_job_t *j = arg;
    size_t lo = j->n * (size_t)i / (size_t)j->parts, hi = j->n * (size_t)(i + 1) / (size_t)j->parts;
    j->be->lerp(j->dst + lo, j->src + lo, j->tau, hi - lo);
}

/* Polyak averaging of the target critics, elementwise: split across the lanes */
static void polyak(sac_t *s, float *dst, const float *src, size_t n)
{
    lerp_job_t j = {s->be, dst, src, s->cfg.tau, n, nn_pool_lanes(s->pool)};
    nn_pool_run(s->pool, j.parts, lerp_task, &j);
}

static void critic_step(sac_t *s, int B, corral_metrics_t *m)
{
    const nn_backend_t *be = s->be;
    int N = (int)s->cfg.num_q, K = (int)s->cfg.num_min_q, A = s->spec.act_dim;
    float alpha = alpha_of(s);
    /* target: y = r + gamma (1 - d) (min_K Q'(s', a') - alpha log pi(a'|s')) */
    const float *xn = features(s, &s->enc_t, s->next, B, 1, s->x_next);
    sample_noise(s, B, 0);
    pol_actor_forward(&s->actor, xn, B);
    be->copy(s->act_next, s->actor.action, (size_t)B * A * sizeof(float));
    be->copy(s->logp_next, s->actor.logp, (size_t)B * sizeof(float));
    pol_critic_forward(&s->target, xn, s->act_next, B);
    int rows[POL_MAX_Q];
    for (int i = 0; i < N; i++) rows[i] = i;
    for (int i = 0; i < K; i++) {   /* partial Fisher-Yates: a random K-subset */
        int j = i + (int)nn_rng_below(&s->rng, (uint32_t)(N - i));
        int t = rows[i]; rows[i] = rows[j]; rows[j] = t;
    }
    be->rows_min(s->qmin, s->target.q, rows, K, B);
    be->td_target(s->y, s->rew, s->done, s->qmin, s->logp_next, s->cfg.gamma,
                  s->cfg.backup_entropy ? alpha : 0.0f, B);

    /* loss = sum over heads of mean (Q_i(s, a) - y)^2 */
    const float *x = features(s, &s->enc, s->obs, B, 1, s->x);
    pol_critic_forward(&s->critic, x, s->act, B);
    double loss = 0.0;
    be->fill(s->dq, 0.0f, (size_t)N * B);
    for (int i = 0; i < N; i++) {
        loss += be->mse_forward(s->critic.q + (size_t)i * B, s->y, NULL, (size_t)B);
        be->mse_backward(s->dq + (size_t)i * B, s->critic.q + (size_t)i * B, s->y, NULL, 1.0f / B, (size_t)B);
    }
    nn_params_zero_grad(&s->critic.params);
    if (s->img) {
        nn_params_zero_grad(&s->enc_p);
        be->fill(s->dx, 0.0f, (size_t)B * s->in_dim);
    }
    pol_critic_backward(&s->critic, s->dq, s->img ? s->dx : NULL, NULL, B, 1);
    if (s->img) pol_imgobs_backward(&s->io, &s->enc, s->dx, B);
    double gn = nn_grad_norm(&s->critic.params);
    double en = s->img ? nn_grad_norm(&s->enc_p) : 0.0;
    pol_metric_set(m, "critic_loss", loss / N);
    pol_metric_set(m, "critic_grad_norm", gn);
    pol_metric_set(m, "q_mean", be->sum(s->critic.q, (size_t)N * B) / ((double)N * B));
    if (!isfinite(loss) || !isfinite(gn) || !isfinite(en)) {
        s->skipped_nan++;
        return;
    }
    nn_adam_step_norm(&s->critic_opt, &s->critic.params, gn, s->pool);
    if (s->img) nn_adam_step_norm(&s->enc_opt, &s->enc_p, en, s->pool);
    polyak(s, s->target.params.data, s->critic.params.data, s->critic.params.numel);
    if (s->img) be->lerp(s->enc_tp.data, s->enc_p.data, s->cfg.tau, s->enc_p.numel);
    s->critic_updates++;
}

static void actor_step(sac_t *s, int B, corral_metrics_t *m)
{
    const nn_backend_t *be = s->be;
    int N = (int)s->cfg.num_q, A = s->spec.act_dim;
    float alpha = alpha_of(s);
    int use_min = strcmp(s->cfg.actor_q, "min") == 0;
    /* the actor sees the critic step's features, detached from the encoder (DrQ) */
    const float *x = s->img ? s->x : s->obs;
    sample_noise(s, B, 0);
    pol_actor_forward(&s->actor, x, B);
    pol_critic_forward(&s->critic, x, s->actor.action, B);
    be->download(s->h_q, s->critic.q, (size_t)N * B * sizeof(float));
    be->download(s->h_logp, s->actor.logp, (size_t)B * sizeof(float));
    /* loss = mean_b (alpha log pi - Q(s, a)), Q the min or mean over the ensemble */
    double loss = 0.0, logp_sum = 0.0;
    memset(s->h_dq, 0, (size_t)N * B * sizeof(float));
    for (int b = 0; b < B; b++) {
        double q;
        if (use_min) {
            int arg = 0;
            for (int i = 1; i < N; i++)
                if (s->h_q[(size_t)i * B + b] < s->h_q[(size_t)arg * B + b]) arg = i;
            q = s->h_q[(size_t)arg * B + b];
            s->h_dq[(size_t)arg * B + b] = -1.0f / B;
        } else {
            q = 0.0;
            for (int i = 0; i < N; i++) {
                q += s->h_q[(size_t)i * B + b];
                s->h_dq[(size_t)i * B + b] = -1.0f / ((float)N * B);
            }
            q /= N;
        }
        loss += alpha * s->h_logp[b] - q;
        logp_sum += s->h_logp[b];
    }
    loss /= B;
    double mean_logp = logp_sum / B;
    be->upload(s->dq, s->h_dq, (size_t)N * B * sizeof(float));
    be->fill(s->dact, 0.0f, (size_t)B * A);
    pol_critic_backward(&s->critic, s->dq, NULL, s->dact, B, 0);
    be->fill(s->dlogp, alpha / B, (size_t)B);
    nn_params_zero_grad(&s->actor.params);
    pol_actor_backward(&s->actor, s->dact, s->dlogp, B);
    double gn = nn_grad_norm(&s->actor.params);
    pol_metric_set(m, "actor_loss", loss);
    pol_metric_set(m, "actor_grad_norm", gn);
    pol_metric_set(m, "entropy", -mean_logp);
    if (!isfinite(loss) || !isfinite(gn)) {
        s->skipped_nan++;
        return;
    }
    nn_adam_step_norm(&s->actor_opt, &s->actor.params, gn, s->pool);

    /* temperature: loss = -log_alpha (log pi + target_entropy), Adam on the host */
    if (s->cfg.auto_alpha) {
        double g = -(mean_logp + s->cfg.target_entropy);
        if (!isfinite(g)) { s->skipped_nan++; return; }
        const float b1 = 0.9f, b2 = 0.999f;
        s->alpha_t++;
        s->alpha_m = b1 * s->alpha_m + (1 - b1) * (float)g;
        s->alpha_v = b2 * s->alpha_v + (1 - b2) * (float)(g * g);
        float mh = s->alpha_m / (1 - powf(b1, (float)s->alpha_t));
        float vh = s->alpha_v / (1 - powf(b2, (float)s->alpha_t));
        s->log_alpha -= s->cfg.alpha_lr * mh / (sqrtf(vh) + 1e-8f);
    }
}

/* ---- vtable ---- */

static int check_batch(const sac_t *s, const corral_batch_t *b, cr_err_t *err)
{
    if (!b || b->struct_size < sizeof(corral_batch_t))
        return cr_err_set(err, CR_EINVAL, "%s: batch struct too small", s->algo);
    if (b->size <= 0 || !b->obs || !b->action || !b->reward || !b->next_obs || !b->done)
        return cr_err_set(err, CR_EINVAL, "%s: batch of %d rows with missing arrays", s->algo, b->size);
    if (b->size % s->cfg.utd != 0)
        return cr_err_set(err, CR_EINVAL, "%s: batch of %d rows does not split into utd=%ld minibatches",
                          s->algo, b->size, s->cfg.utd);
    return 0;
}

static int sac_update(void *self, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *cerr)
{
    sac_t *s = self;
    cr_err_t *err = pol_err(cerr);
    int rc = check_batch(s, b, err);
    if (rc) return rc;
    int mb = b->size / (int)s->cfg.utd;
    if ((rc = reserve(s, mb, err)) != 0) return rc;
    const nn_backend_t *be = s->be;
    size_t O = (size_t)s->spec.obs_dim, A = (size_t)s->spec.act_dim, f = sizeof(float);
    uint64_t skipped0 = s->skipped_nan;
    for (long u = 0; u < s->cfg.utd; u++) {
        size_t r0 = (size_t)u * mb;
        be->upload(s->obs, b->obs + r0 * O, mb * O * f);
        be->upload(s->next, b->next_obs + r0 * O, mb * O * f);
        be->upload(s->act, b->action + r0 * A, mb * A * f);
        be->upload(s->rew, b->reward + r0, mb * f);
        be->upload(s->done, b->done + r0, mb * f);
        critic_step(s, mb, m);
    }
    actor_step(s, mb, m);
    s->updates++;
    int demo = 0;
    if (b->flags)
        for (int i = 0; i < b->size; i++) demo += (b->flags[i] & CORRAL_SAMPLE_DEMO) != 0;
    pol_metric_set(m, "alpha", alpha_of(s));
    pol_metric_set(m, "demo_frac", (double)demo / b->size);
    pol_metric_set(m, "updates", (double)s->updates);
    pol_metric_set(m, "skipped_nan", (double)s->skipped_nan);
    pol_metric_set(m, "skipped_now", (double)(s->skipped_nan - skipped0));
    pol_warn_skips(s->algo, skipped0, s->skipped_nan);
    return 0;
}

static int sac_act(void *self, const float *obs, int deterministic, float *action, corral_err_t *cerr)
{
    sac_t *s = self;
    cr_err_t *err = pol_err(cerr);
    int rc = reserve(s, 1, err);
    for (int i = 0; !rc && i < s->spec.obs_dim; i++)
        if (!isfinite(obs[i]))
            return cr_err_set(err, CR_EINVAL, "%s: observation[%d] is not finite", s->algo, i);
    if (rc) return rc;
    const nn_backend_t *be = s->be;
    be->upload(s->obs, obs, (size_t)s->spec.obs_dim * sizeof(float));
    const float *x = features(s, &s->enc, s->obs, 1, 0, s->x);
    sample_noise(s, 1, deterministic);
    pol_actor_forward(&s->actor, x, 1);
    be->download(action, s->actor.action, (size_t)s->spec.act_dim * sizeof(float));
    for (int i = 0; i < s->spec.act_dim; i++)
        if (!isfinite(action[i]))
            return cr_err_set(err, CR_EINVAL, "%s: non-finite action (observation has NaN/Inf?)", s->algo);
    return 0;
}

/* ---- blobs and checkpoints ---- */

static void meta_common(const sac_t *s, nn_st_writer_t *w, const char *format)
{
    char buf[64];
    nn_st_writer_meta(w, "format", format, NULL);
    nn_st_writer_meta(w, "version", SAC_CKPT_VERSION, NULL);
    nn_st_writer_meta(w, "algo", s->algo, NULL);
    nn_st_writer_meta(w, "hidden", s->cfg.hidden, NULL);
    snprintf(buf, sizeof buf, "%d,%d,%d,%d,%d", s->spec.obs_dim, s->spec.act_dim, s->spec.img_c,
             s->spec.img_h, s->spec.img_w);
    nn_st_writer_meta(w, "spec", buf, NULL);
}

static int check_meta(const sac_t *s, const nn_st_t *st, const char *format, cr_err_t *err)
{
    const char *f = nn_st_meta(st, "format"), *v = nn_st_meta(st, "version");
    const char *a = nn_st_meta(st, "algo"), *h = nn_st_meta(st, "hidden"), *sp = nn_st_meta(st, "spec");
    if (!f || strcmp(f, format) != 0)
        return cr_err_set(err, CR_ECORRUPT, "not a %s (format '%s')", format, f ? f : "(none)");
    if (!v || strcmp(v, SAC_CKPT_VERSION) != 0)
        return cr_err_set(err, CR_EVERSION, "%s version '%s', this build reads %s", format, v ? v : "(none)",
                          SAC_CKPT_VERSION);
    /* sac and rlpd share a layout: only the network shapes must agree */
    if (!a || (strcmp(a, "sac") != 0 && strcmp(a, "rlpd") != 0))
        return cr_err_set(err, CR_EINVAL, "%s from algorithm '%s', expected sac or rlpd", format, a ? a : "(none)");
    char want[64];
    snprintf(want, sizeof want, "%d,%d,%d,%d,%d", s->spec.obs_dim, s->spec.act_dim, s->spec.img_c,
             s->spec.img_h, s->spec.img_w);
    if (!sp || strcmp(sp, want) != 0 || !h || strcmp(h, s->cfg.hidden) != 0)
        return cr_err_set(err, CR_EINVAL, "%s for spec %s hidden %s, this instance has spec %s hidden %s", format,
                          sp ? sp : "?", h ? h : "?", want, s->cfg.hidden);
    return 0;
}

static int build_policy_blob(sac_t *s, void **buf, size_t *len, cr_err_t *err)
{
    nn_st_writer_t *w = nn_st_writer_create();
    if (!w) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", s->algo);
    pol_io_keep_t keep = {0};
    meta_common(s, w, "corral-policy");
    pol_io_arena_t actor = {"policy", &s->actor.params}, enc = {"policy.encoder", &s->enc_p};
    int rc = pol_io_add_arena(w, &keep, &actor, err);
    if (!rc && s->img) rc = pol_io_add_arena(w, &keep, &enc, err);
    if (!rc) rc = nn_st_writer_to_mem(w, buf, len, err);
    pol_io_keep_free(&keep);
    nn_st_writer_destroy(w);
    return rc;
}

static int sac_export(void *self, void *buf, size_t cap, size_t *len, corral_err_t *cerr)
{
    sac_t *s = self;
    cr_err_t *err = pol_err(cerr);
    void *blob;
    size_t n;
    int rc = build_policy_blob(s, &blob, &n, err);
    if (rc) return rc;
    *len = n;
    if (!buf || cap < n) {
        free(blob);
        return cr_err_set(err, CR_ETOOBIG, "%s: policy blob needs %zu bytes, buffer has %zu", s->algo, n, cap);
    }
    memcpy(buf, blob, n);
    free(blob);
    return 0;
}

static int sac_import(void *self, const void *blob, size_t len, corral_err_t *cerr)
{
    sac_t *s = self;
    cr_err_t *err = pol_err(cerr);
    nn_st_t *st;
    int rc = nn_st_parse(&st, blob, len, err);
    if (rc) return cr_err_wrap(err, "policy blob");
    pol_io_arena_t actor = {"policy", &s->actor.params}, enc = {"policy.encoder", &s->enc_p};
    rc = check_meta(s, st, "corral-policy", err);
    for (int check = 1; check >= 0 && !rc; check--) {
        rc = pol_io_read_arena(st, &actor, check, err);
        if (!rc && s->img) rc = pol_io_read_arena(st, &enc, check, err);
    }
    nn_st_free(st);
    return rc ? cr_err_wrap(err, "policy blob") : 0;
}

#define N_ARENAS 5
#define N_ADAMS 3

static int io_lists(sac_t *s, pol_io_arena_t *ar, pol_io_adam_t *ad, int *nar, int *nad)
{
    int a = 0, d = 0;
    ar[a++] = (pol_io_arena_t){"actor", &s->actor.params};
    ar[a++] = (pol_io_arena_t){"critic", &s->critic.params};
    ar[a++] = (pol_io_arena_t){"target", &s->target.params};
    ad[d++] = (pol_io_adam_t){"optim.actor", &s->actor_opt};
    ad[d++] = (pol_io_adam_t){"optim.critic", &s->critic_opt};
    if (s->img) {
        ar[a++] = (pol_io_arena_t){"encoder", &s->enc_p};
        ar[a++] = (pol_io_arena_t){"encoder_target", &s->enc_tp};
        ad[d++] = (pol_io_adam_t){"optim.encoder", &s->enc_opt};
    }
    *nar = a;
    *nad = d;
    return 0;
}

static int sac_save(void *self, const char *path, corral_err_t *cerr)
{
    sac_t *s = self;
    cr_err_t *err = pol_err(cerr);
    nn_st_writer_t *w = nn_st_writer_create();
    if (!w) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", s->algo);
    pol_io_keep_t keep = {0};
    pol_io_arena_t ar[N_ARENAS];
    pol_io_adam_t ad[N_ADAMS];
    int nar, nad, rc = 0;
    io_lists(s, ar, ad, &nar, &nad);
    meta_common(s, w, "corral-checkpoint");
    for (int i = 0; i < nar && !rc; i++) rc = pol_io_add_arena(w, &keep, &ar[i], err);
    for (int i = 0; i < nad && !rc; i++) rc = pol_io_add_adam(w, &keep, &ad[i], s->be, err);
    /* the temperature and its moments as a tensor: floats saved bit-exactly */
    float alpha[3] = {s->log_alpha, s->alpha_m, s->alpha_v};
    int64_t three = 3;
    if (!rc) rc = nn_st_writer_add(w, "alpha", NN_DT_F32, 1, &three, alpha, err);
    char rng[80], state[512];
    pol_rng_format(&s->rng, rng, sizeof rng);
    snprintf(state, sizeof state,
             "{\"updates\":%llu,\"critic_updates\":%llu,\"skipped_nan\":%llu,\"actor_t\":%ld,"
             "\"critic_t\":%ld,\"encoder_t\":%ld,\"alpha_t\":%ld,\"rng\":\"%s\"}",
             (unsigned long long)s->updates, (unsigned long long)s->critic_updates,
             (unsigned long long)s->skipped_nan, s->actor_opt.t, s->critic_opt.t,
             s->img ? s->enc_opt.t : 0L, s->alpha_t, rng);
    if (!rc) rc = nn_st_writer_meta(w, "state", state, err);
    if (!rc) rc = nn_st_writer_to_file(w, path, err);
    pol_io_keep_free(&keep);
    nn_st_writer_destroy(w);
    return rc;
}

static int parse_state(const char *js, uint64_t *u, long *t, nn_rng_t *rng, cr_err_t *err)
{
    unsigned long long a, b, c;
    char rs[80];
    if (!js || sscanf(js, "{\"updates\":%llu,\"critic_updates\":%llu,\"skipped_nan\":%llu,\"actor_t\":%ld,"
                      "\"critic_t\":%ld,\"encoder_t\":%ld,\"alpha_t\":%ld,\"rng\":\"%79[0-9a-f,]\"}",
                      &a, &b, &c, &t[0], &t[1], &t[2], &t[3], rs) != 8)
        return cr_err_set(err, CR_ECORRUPT, "checkpoint: metadata 'state' is missing or malformed");
    if (pol_rng_parse(rng, rs) != 0) return cr_err_set(err, CR_ECORRUPT, "checkpoint: bad rng state '%s'", rs);
    for (int i = 0; i < 4; i++)
        if (t[i] < 0) return cr_err_set(err, CR_ECORRUPT, "checkpoint: negative step count");
    u[0] = a; u[1] = b; u[2] = c;
    return 0;
}

static int sac_load(void *self, const char *path, corral_err_t *cerr)
{
    sac_t *s = self;
    cr_err_t *err = pol_err(cerr);
    nn_st_t *st;
    int rc = nn_st_read_file(&st, path, err);
    if (rc) return rc;
    pol_io_arena_t ar[N_ARENAS];
    pol_io_adam_t ad[N_ADAMS];
    int nar, nad;
    io_lists(s, ar, ad, &nar, &nad);
    uint64_t u[3] = {0};
    long t[4] = {0};
    nn_rng_t rng = {{0}};
    float alpha[3] = {0};
    rc = check_meta(s, st, "corral-checkpoint", err);
    if (!rc) rc = parse_state(nn_st_meta(st, "state"), u, t, &rng, err);
    if (!rc) rc = nn_st_get_f32(st, "alpha", alpha, 3, err);
    /* check everything first, then copy: a bad file changes nothing */
    for (int check = 1; check >= 0 && !rc; check--) {
        for (int i = 0; i < nar && !rc; i++) rc = pol_io_read_arena(st, &ar[i], check, err);
        for (int i = 0; i < nad && !rc; i++) rc = pol_io_read_adam(st, &ad[i], s->be, check, err);
    }
    nn_st_free(st);
    if (rc) return cr_err_wrap(err, "%s", path);
    s->updates = u[0]; s->critic_updates = u[1]; s->skipped_nan = u[2];
    s->actor_opt.t = t[0]; s->critic_opt.t = t[1];
    if (s->img) s->enc_opt.t = t[2];
    s->alpha_t = t[3];
    s->rng = rng;
    s->log_alpha = alpha[0]; s->alpha_m = alpha[1]; s->alpha_v = alpha[2];
    return 0;
}

static void sac_destroy(void *self)
{
    sac_t *s = self;
    if (!s) return;
    if (s->be) {
        free_scratch(s);
        pol_actor_destroy(&s->actor);
        pol_critic_destroy(&s->critic);
        pol_critic_destroy(&s->target);
        nn_adam_destroy(&s->actor_opt, s->be);
        nn_adam_destroy(&s->critic_opt, s->be);
        if (s->img) {
            pol_encoder_destroy(&s->enc);
            pol_encoder_destroy(&s->enc_t);
            pol_imgobs_destroy(&s->io);
            nn_params_destroy(&s->enc_p);
            nn_params_destroy(&s->enc_tp);
            nn_adam_destroy(&s->enc_opt, s->be);
        }
    }
    nn_pool_destroy(s->pool);
    free(s);
}

static int build(sac_t *s, cr_err_t *err)
{
    const corral_spec_t *sp = &s->spec;
    int rc;
    if ((rc = nn_backend_get(s->cfg.backend, &s->be, err)) != 0) return rc;
    if (s->cfg.num_min_q > s->cfg.num_q)
        return cr_err_set(err, CR_EINVAL, "num_min_q %ld exceeds num_q %ld", s->cfg.num_min_q, s->cfg.num_q);
    if (strcmp(s->cfg.actor_q, "min") && strcmp(s->cfg.actor_q, "mean"))
        return cr_err_set(err, CR_EINVAL, "setting actor_q: '%s' (min or mean)", s->cfg.actor_q);
    if ((rc = pol_parse_widths(s->cfg.hidden, s->hidden, POL_MLP_MAX_LAYERS - 1, err)) < 0) return rc;
    s->nhidden = rc;
    if (isnan(s->cfg.target_entropy)) s->cfg.target_entropy = -(float)sp->act_dim;
    s->log_alpha = logf(s->cfg.init_alpha);
    nn_rng_seed(&s->rng, (uint64_t)s->cfg.seed);
    s->img = sp->img_c > 0 ? sp->img_c * sp->img_h * sp->img_w : 0;
    s->prop = sp->obs_dim - s->img;
    s->in_dim = s->img ? (int)s->cfg.encoder_feat + s->prop : sp->obs_dim;
    if ((rc = pol_actor_create(&s->actor, s->be, s->in_dim, sp->act_dim, s->hidden, s->nhidden, &s->rng, err)))
        return rc;
    if ((rc = pol_critic_create(&s->critic, s->be, (int)s->cfg.num_q, s->in_dim, sp->act_dim, s->hidden,
                                s->nhidden, s->cfg.layernorm, &s->rng, err)))
        return rc;
    if ((rc = pol_critic_create(&s->target, s->be, (int)s->cfg.num_q, s->in_dim, sp->act_dim, s->hidden,
                                s->nhidden, s->cfg.layernorm, &s->rng, err)))
        return rc;
    nn_params_copy(&s->target.params, &s->critic.params, NULL);
    /* Always a pool, of one lane when single-threaded: the row blocks are then the
     * same at any thread count, and so are the results. Other backends run one
     * lane: their ops queue on one device stream anyway. */
    int lanes = s->be == nn_backend_cpu() ? (int)s->cfg.threads : 1;
    if ((rc = nn_pool_create(&s->pool, lanes, err))) return rc;
    pol_actor_set_pool(&s->actor, s->pool);
    pol_critic_set_pool(&s->critic, s->pool);
    pol_critic_set_pool(&s->target, s->pool);
    if ((rc = nn_adam_init(&s->actor_opt, &s->actor.params, s->cfg.actor_lr, s->cfg.weight_decay,
                           s->cfg.grad_clip, err)))
        return rc;
    if ((rc = nn_adam_init(&s->critic_opt, &s->critic.params, s->cfg.critic_lr, s->cfg.weight_decay,
                           s->cfg.grad_clip, err)))
        return rc;
    if (s->img) {
        nn_params_init(&s->enc_p, s->be);
        nn_params_init(&s->enc_tp, s->be);
        int F = (int)s->cfg.encoder_feat;
        if ((rc = pol_encoder_declare(&s->enc, &s->enc_p, "enc", sp->img_c, sp->img_h, sp->img_w, F, err)) ||
            (rc = pol_encoder_declare(&s->enc_t, &s->enc_tp, "enc", sp->img_c, sp->img_h, sp->img_w, F, err)) ||
            (rc = nn_params_alloc(&s->enc_p, err)) || (rc = nn_params_alloc(&s->enc_tp, err)))
            return rc;
        if ((rc = pol_imgobs_init(&s->io, s->be, sp->img_c, sp->img_h, sp->img_w, sp->obs_dim, F,
                                  (int)s->cfg.aug_pad, err)))
            return rc;
        pol_encoder_init(&s->enc, &s->rng);
        nn_params_copy(&s->enc_tp, &s->enc_p, NULL);
        if ((rc = nn_adam_init(&s->enc_opt, &s->enc_p, s->cfg.critic_lr, s->cfg.weight_decay,
                               s->cfg.grad_clip, err)))
            return rc;
    }
    return 0;
}

static int check_spec(const corral_spec_t *sp, cr_err_t *err)
{
    if (!sp || sp->struct_size < sizeof(corral_spec_t))
        return cr_err_set(err, CR_EINVAL, "spec: missing or too small");
    if (sp->obs_dim <= 0 || sp->act_dim <= 0 || sp->obs_dim > (1 << 24) || sp->act_dim > 4096)
        return cr_err_set(err, CR_EINVAL, "spec: obs_dim %d, act_dim %d", sp->obs_dim, sp->act_dim);
    if (sp->img_c < 0 || sp->img_h < 0 || sp->img_w < 0 ||
        (long)sp->img_c * sp->img_h * sp->img_w > sp->obs_dim ||
        (sp->img_c > 0 && (sp->img_h < 8 || sp->img_w < 8)))
        return cr_err_set(err, CR_EINVAL, "spec: image %dx%dx%d does not fit obs_dim %d (min 8x8)", sp->img_c,
                          sp->img_h, sp->img_w, sp->obs_dim);
    return 0;
}

static int create_common(const char *algo, const corral_kv_t *preset, size_t npreset,
                         const corral_kv_t *cfg, size_t ncfg, const corral_spec_t *spec, void **self,
                         corral_err_t *cerr)
{
    cr_err_t *err = pol_err(cerr);
    *self = NULL;
    int rc = check_spec(spec, err);
    if (rc) return cr_err_wrap(err, "%s", algo);
    sac_t *s = calloc(1, sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", algo);
    s->algo = algo;
    s->spec = *spec;
    s->spec.struct_size = sizeof(corral_spec_t);
    rc = pol_settings_apply(sac_settings, &s->cfg, preset, npreset, cfg, ncfg, err);
    if (!rc) rc = build(s, err);
    if (rc) {
        cr_err_wrap(err, "%s", algo);
        sac_destroy(s);
        return rc;
    }
    *self = s;
    return 0;
}

static int sac_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self,
                      corral_err_t *err)
{
    return create_common("sac", NULL, 0, cfg, n, spec, self, err);
}

/* RLPD (Ball et al. 2023): LayerNorm critics, a 10-critic ensemble with a random
 * pair for the target, a high update-to-data ratio and the ensemble mean for the
 * actor; demo mixing comes from the sampler. */
static const corral_kv_t rlpd_preset[] = {
    {"num_q", "10"}, {"num_min_q", "2"}, {"layernorm", "true"}, {"utd", "20"},
    {"actor_q", "mean"}, {"backup_entropy", "false"}, {"weight_decay", "0"},
};

static int rlpd_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self,
                       corral_err_t *err)
{
    return create_common("rlpd", rlpd_preset, sizeof rlpd_preset / sizeof rlpd_preset[0], cfg, n, spec,
                         self, err);
}

static const corral_algo_vtable_t sac_vt = {
    .struct_size = sizeof(corral_algo_vtable_t),
    .create = sac_create,
    .update = sac_update,
    .act = sac_act,
    .export_policy = sac_export,
    .import_policy = sac_import,
    .save = sac_save,
    .load = sac_load,
    .destroy = sac_destroy,
};

static const corral_algo_vtable_t rlpd_vt = {
    .struct_size = sizeof(corral_algo_vtable_t),
    .create = rlpd_create,
    .update = sac_update,
    .act = sac_act,
    .export_policy = sac_export,
    .import_policy = sac_import,
    .save = sac_save,
    .load = sac_load,
    .destroy = sac_destroy,
};

const corral_plugin_t pol_sac_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION,
    .kind = CORRAL_PLUGIN_ALGO,
    .name = "sac",
    .description = "Soft Actor-Critic with a Q ensemble, automatic temperature, optional image encoder (DrQ)",
    .algo = &sac_vt,
};

const corral_plugin_t pol_rlpd_plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION,
    .kind = CORRAL_PLUGIN_ALGO,
    .name = "rlpd",
    .description = "RLPD: SAC with LayerNorm critics, 10-critic ensemble, high update-to-data ratio",
    .algo = &rlpd_vt,
};
