/* gen_rl.c - RL fine-tuning of a flow-matching generator on replay-buffer
 * transitions, with the exact likelihood of the executed action.
 *
 * Policy. After BC the generator's K Euler steps are split: a frozen copy of the
 * BC model runs steps 0..K-2 from x_0 = 0 without noise, so x_{K-1}(obs) is a
 * fixed function of the observation that no trained parameter touches; the
 * trainable model takes the last step and learnable Gaussian noise is added:
 *     mu = x_{K-1} + v_theta(obs, x_{K-1}, t_{K-1}) / K,   x_K = mu + sigma * eps,
 * sigma = exp(log_std), log_std tanh-bounded to [lo, hi], one per executed action
 * dim. The first action of the chunk, clipped to [-1, 1], is executed (receding
 * horizon). Its density is exact and needs nothing but (obs, action): a
 * diagonal Gaussian on the dims inside (-1, 1), and the Gaussian's tail mass
 * for a dim clipped at -1 or +1 (a censored Gaussian). This is the last-step
 * case of Flow-Noise / ReinFlow (flow_rl.c has the whole-chain version, which
 * needs the chain x_0..x_K of every step and so cannot travel through a buffer
 * of single transitions); the deterministic mode is mu.
 *
 * Learning, per batch: a value MLP fitted by TD(0), y = r + gamma (1 - done)
 * V(s') (V(s') held fixed); the one-step advantage A = y - V(s), normalised over
 * the batch; PPO's clipped surrogate min(r A, clip(r, 1 - c, 1 + c) A) with
 * r = pi_theta(a|s) / pi_old(a|s), where pi_old is the policy last handed to the
 * actors (the owner snapshots it at each export). Both densities are exact; the
 * ratio is the true importance ratio for transitions that policy collected and a
 * trust region around it for older ones, so the buffer should sample recent
 * experience (buffer.sampler: recent). Rows that are demonstrations or
 * interventions (use = 0) do not enter the surrogate or the value fit.
 * Gradients reach v_theta through mu and the noise through log_std. */
#include "policies/algos/gen_rl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HALF_LOG_2PI 0.91893853320467274

static float log_std_of(const pol_genrl_t *g, float raw)
{
    return g->cfg.log_std_lo + 0.5f * (g->cfg.log_std_hi - g->cfg.log_std_lo) * (tanhf(raw) + 1.0f);
}

static int noise_arena(nn_params_t *p, const nn_backend_t *be, int A, float raw, cr_err_t *err)
{
    nn_params_init(p, be);
    int shape[1] = {A};
    int rc = nn_params_add(p, "log_std", 1, shape, err);
    if (rc < 0) return rc;
    if ((rc = nn_params_alloc(p, err))) return rc;
    be->fill(p->data, raw, (size_t)A);
    return 0;
}

int pol_genrl_create(pol_genrl_t *g, const nn_backend_t *be, int D, int A, int K, int value_in,
                     const pol_genrl_cfg_t *cfg, nn_rng_t *rng, cr_err_t *err)
{
    memset(g, 0, sizeof *g);
    if (A < 1 || A > POL_GENRL_MAX_ACT || D < A || K < 2 || value_in < 1)
        return cr_err_set(err, CR_EINVAL, "flow RL: action %d of chunk %d, %d steps, value input %d (need 1 <= "
                          "action <= %d, action <= chunk, steps >= 2)", A, D, K, value_in, POL_GENRL_MAX_ACT);
    if (!(cfg->log_std_lo < cfg->log_std_hi && cfg->log_std_init >= cfg->log_std_lo &&
          cfg->log_std_init <= cfg->log_std_hi))
        return cr_err_set(err, CR_EINVAL, "flow RL: log_std_init %g outside [log_std_min %g, log_std_max %g]",
                          cfg->log_std_init, cfg->log_std_lo, cfg->log_std_hi);
    g->cfg = *cfg;
    g->D = D;
    g->A = A;
    g->K = K;
    g->value_in = value_in;
    float u = 2.0f * (cfg->log_std_init - cfg->log_std_lo) / (cfg->log_std_hi - cfg->log_std_lo) - 1.0f;
    u = u > 0.999f ? 0.999f : u < -0.999f ? -0.999f : u;
    int rc = noise_arena(&g->noise, be, A, atanhf(u), err);
    if (!rc) rc = noise_arena(&g->old_noise, be, A, atanhf(u), err);
    if (!rc) rc = nn_adam_init(&g->nopt, &g->noise, cfg->lr_noise, 0, 1.0f, err);
    nn_params_init(&g->vparams, be);
    int hidden[2] = {cfg->value_hidden, cfg->value_hidden};
    if (!rc) rc = pol_mlp_declare(&g->value, &g->vparams, "value", value_in, hidden, 2, 1, 0, err);
    if (!rc) rc = nn_params_alloc(&g->vparams, err);
    if (!rc) {
        g->value.act = NN_ACT_TANH;
        pol_mlp_init(&g->value, &g->vparams, rng);
        rc = nn_adam_init(&g->vopt, &g->vparams, cfg->lr_value, 0, 1.0f, err);
    }
    if (rc) pol_genrl_destroy(g);
    return rc;
}

static void free_scratch(pol_genrl_t *g)
{
    const nn_backend_t *be = g->vparams.be;
    free(g->x);
    free(g->t);
    free(g->dv);
    if (g->vin_d) be->free(g->vin_d);
    if (g->vdout_d) be->free(g->vdout_d);
    g->x = g->t = g->dv = g->vin_d = g->vdout_d = NULL;
    g->cap = 0;
}

void pol_genrl_destroy(pol_genrl_t *g)
{
    const nn_backend_t *be = g->vparams.be;
    if (!be) return;
    free_scratch(g);
    pol_mlp_destroy(&g->value);
    nn_adam_destroy(&g->vopt, be);
    nn_adam_destroy(&g->nopt, be);
    nn_params_destroy(&g->vparams);
    if (g->noise.be) nn_params_destroy(&g->noise);
    if (g->old_noise.be) nn_params_destroy(&g->old_noise);
    memset(g, 0, sizeof *g);
}

int pol_genrl_reserve(pol_genrl_t *g, int B, cr_err_t *err)
{
    int rc = pol_mlp_reserve(&g->value, B, err);
    if (rc || B <= g->cap) return rc;
    free_scratch(g);
    const nn_backend_t *be = g->vparams.be;
    size_t b = (size_t)B, f = sizeof(float);
    int ok = !!(g->x = malloc(b * g->D * f));
    ok &= !!(g->t = malloc(b * f));
    ok &= !!(g->dv = malloc(b * g->D * f));
    ok &= !!(g->vin_d = be->alloc(b * g->value_in * f));
    ok &= !!(g->vdout_d = be->alloc(b * f));
    if (!ok) {
        free_scratch(g);
        return cr_err_set(err, CR_ENOMEM, "flow RL: cannot allocate scratch for batch %d", B);
    }
    g->cap = B;
    return 0;
}

void pol_genrl_prefix(pol_genrl_t *g, const void *obs, int B, float *x)
{
    int D = g->D;
    float dt = 1.0f / (float)g->K;
    memset(x, 0, sizeof(float) * (size_t)B * D);
    for (int k = 0; k < g->K - 1; k++) {
        for (int b = 0; b < B; b++) g->t[b] = (float)k * dt;
        const float *v = g->frozen.velocity(g->frozen.self, obs, x, g->t, B);
        for (size_t i = 0; i < (size_t)B * D; i++) x[i] += v[i] * dt;
    }
}

/* Host copy of sigma (A floats) from a noise arena. */
static void sigmas(const pol_genrl_t *g, const nn_params_t *p, float *ls, float *s)
{
    float raw[POL_GENRL_MAX_ACT];
    p->be->download(raw, p->data, sizeof(float) * (size_t)g->A);
    for (int j = 0; j < g->A; j++) {
        ls[j] = log_std_of(g, raw[j]);
        s[j] = expf(ls[j]);
    }
}

double pol_genrl_sigma_mean(const pol_genrl_t *g)
{
    float ls[POL_GENRL_MAX_ACT], s[POL_GENRL_MAX_ACT];
    sigmas(g, &g->noise, ls, s);
    double m = 0;
    for (int j = 0; j < g->A; j++) m += s[j] / g->A;
    return m;
}

void pol_genrl_sample(pol_genrl_t *g, const void *obs, nn_rng_t *rng, float *out)
{
    float dt = 1.0f / (float)g->K;
    pol_genrl_prefix(g, obs, 1, g->x);
    g->t[0] = (float)(g->K - 1) * dt;
    const float *v = g->cur.velocity(g->cur.self, obs, g->x, g->t, 1);
    float ls[POL_GENRL_MAX_ACT], s[POL_GENRL_MAX_ACT];
    if (rng) sigmas(g, &g->noise, ls, s);
    for (int d = 0; d < g->D; d++) {
        float y = g->x[d] + v[d] * dt;
        if (rng && d < g->A) y += s[d] * nn_rng_normal(rng);
        out[d] = y > 1.0f ? 1.0f : y < -1.0f ? -1.0f : y;
    }
}

/* log of the standard normal's upper tail Q(u) and the hazard phi(u) / Q(u). */
static double log_q(double u, double *hazard)
{
    double q = 0.5 * erfc(u / M_SQRT2);
    if (q > 1e-300) {
        *hazard = exp(-0.5 * u * u - HALF_LOG_2PI) / q;
        return log(q);
    }
    *hazard = u;   /* Mills ratio asymptote */
    return -0.5 * u * u - log(u) - HALF_LOG_2PI;
}

/* Censored Gaussian log-density of action a given mean mu and log std ls, and
 * its derivatives in mu and ls. */
static double clogp(float a, float mu, float ls, double *dmu, double *dls)
{
    double s = exp(ls), h;
    if (a >= 1.0f) {           /* everything above +1 was clipped to +1 */
        double u = (1.0 - mu) / s, lp = log_q(u, &h);
        *dmu = h / s;
        *dls = h * u;
        return lp;
    }
    if (a <= -1.0f) {          /* and everything below -1 to -1 */
        double l = (-1.0 - mu) / s, lp = log_q(-l, &h);
        *dmu = -h / s;
        *dls = -h * l;
        return lp;
    }
    double z = (a - mu) / s;
    *dmu = z / s;
    *dls = z * z - 1.0;
    return -0.5 * z * z - ls - HALF_LOG_2PI;
}

int pol_genrl_update(pol_genrl_t *g, const void *obs, const float *vin, const float *vnext, const float *act,
                     const float *reward, const float *done, const uint8_t *use, int B, corral_metrics_t *m,
                     cr_err_t *err)
{
    int rc = pol_genrl_reserve(g, B, err);
    if (rc) return rc;
    int D = g->D, A = g->A, n = 0;
    for (int b = 0; b < B; b++) n += use[b] != 0;
    pol_metric_set(m, "rl_rows", n);
    if (n < 2) return 0;   /* nothing of the policy's own to learn from */
    const nn_backend_t *be = g->vparams.be;
    float dt = 1.0f / (float)g->K;
    size_t bd = (size_t)B * D;
    float *mu_old = malloc(sizeof(float) * bd), *vn = malloc(sizeof(float) * B), *vs = malloc(sizeof(float) * B);
    float *adv = malloc(sizeof(float) * B), *dvv = malloc(sizeof(float) * B);
    double *dls_sum = calloc((size_t)A, sizeof(double));
    if (!mu_old || !vn || !vs || !adv || !dvv || !dls_sum) {
        rc = cr_err_set(err, CR_ENOMEM, "flow RL: out of memory for batch %d", B);
        goto out;
    }
    /* the value of s' (held fixed), then of s (kept for the backward) */
    be->upload(g->vin_d, vnext, sizeof(float) * (size_t)B * g->value_in);
    be->download(vn, pol_mlp_forward(&g->value, &g->vparams, g->vin_d, B), sizeof(float) * B);
    be->upload(g->vin_d, vin, sizeof(float) * (size_t)B * g->value_in);
    be->download(vs, pol_mlp_forward(&g->value, &g->vparams, g->vin_d, B), sizeof(float) * B);
    double mean = 0, var = 0, vloss = 0;
    for (int b = 0; b < B; b++) {
        float y = reward[b] + g->cfg.gamma * (1.0f - done[b]) * vn[b];
        adv[b] = y - vs[b];
        dvv[b] = use[b] ? -2.0f * adv[b] / (float)n : 0.0f;
        if (use[b]) {
            mean += adv[b] / n;
            vloss += (double)adv[b] * adv[b] / n;
        }
    }
    for (int b = 0; b < B; b++)
        if (use[b]) var += (adv[b] - mean) * (adv[b] - mean) / n;
    float sd = (float)sqrt(var) + 1e-6f;
    /* both policies share the frozen prefix */
    pol_genrl_prefix(g, obs, B, g->x);
    for (int b = 0; b < B; b++) g->t[b] = (float)(g->K - 1) * dt;
    const float *vo = g->old.velocity(g->old.self, obs, g->x, g->t, B);
    for (size_t i = 0; i < bd; i++) mu_old[i] = g->x[i] + vo[i] * dt;
    const float *v = g->cur.velocity(g->cur.self, obs, g->x, g->t, B);
    float ls[POL_GENRL_MAX_ACT], s[POL_GENRL_MAX_ACT], lso[POL_GENRL_MAX_ACT], so[POL_GENRL_MAX_ACT];
    sigmas(g, &g->noise, ls, s);
    sigmas(g, &g->old_noise, lso, so);
    double pl = 0, kl = 0, clipped = 0;
    float c = g->cfg.clip;
    memset(g->dv, 0, sizeof(float) * bd);
    for (int b = 0; b < B; b++) {
        if (!use[b]) continue;
        double lp = 0, lpo = 0, dmu[POL_GENRL_MAX_ACT], dls[POL_GENRL_MAX_ACT], x1, x2;
        for (int j = 0; j < A; j++) {
            float a = act[(size_t)b * A + j];
            lp += clogp(a, g->x[(size_t)b * D + j] + v[(size_t)b * D + j] * dt, ls[j], &dmu[j], &dls[j]);
            lpo += clogp(a, mu_old[(size_t)b * D + j], lso[j], &x1, &x2);
        }
        float An = (float)((adv[b] - mean) / sd);
        double ratio = exp(lp - lpo);
        double cr = ratio < 1 - c ? 1 - c : ratio > 1 + c ? 1 + c : ratio;
        int active = An >= 0 ? ratio < 1 + c : ratio > 1 - c;
        pl += -fmin(ratio * An, cr * An) / n;
        kl += (lpo - lp) / n;
        clipped += !active;
        if (!active) continue;
        double dlogp = -An * ratio / n;   /* d(loss) / d(log pi) */
        for (int j = 0; j < A; j++) {
            g->dv[(size_t)b * D + j] = (float)(dlogp * dmu[j] * dt);
            dls_sum[j] += dlogp * dls[j];
        }
    }
    g->cur.backward(g->cur.self, g->dv, B);
    /* the noise: d log_std / d raw = half (1 - tanh^2) */
    float raw[POL_GENRL_MAX_ACT], gr[POL_GENRL_MAX_ACT];
    be->download(raw, g->noise.data, sizeof(float) * (size_t)A);
    float half = 0.5f * (g->cfg.log_std_hi - g->cfg.log_std_lo);
    for (int j = 0; j < A; j++) {
        float th = tanhf(raw[j]);
        gr[j] = (float)(dls_sum[j] * half * (1.0f - th * th));
    }
    be->upload(g->noise.grad, gr, sizeof(float) * (size_t)A);
    if (isfinite(pl)) nn_adam_step(&g->nopt, &g->noise, NULL);
    /* the value: squared TD error on the policy's rows */
    be->upload(g->vdout_d, dvv, sizeof(float) * B);
    nn_params_zero_grad(&g->vparams);
    pol_mlp_backward(&g->value, &g->vparams, NULL, g->vdout_d, B, 1);
    if (isfinite(vloss)) nn_adam_step(&g->vopt, &g->vparams, NULL);
    pol_metric_set(m, "policy_loss", pl);
    pol_metric_set(m, "value_loss", vloss);
    pol_metric_set(m, "approx_kl", kl);
    pol_metric_set(m, "clip_frac", clipped / n);
    pol_metric_set(m, "sigma_mean", pol_genrl_sigma_mean(g));
out:
    free(mu_old); free(vn); free(vs); free(adv); free(dvv); free(dls_sum);
    return rc;
}

void pol_genrl_snapshot(pol_genrl_t *g)
{
    g->noise.be->copy(g->old_noise.data, g->noise.data, sizeof(float) * (size_t)g->A);
}
