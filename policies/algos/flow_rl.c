/* flow_rl.c - RL fine-tuning of a flow-matching policy with exact per-step
 * Gaussian log-likelihoods (the Flow-Noise idea of pi_RL and ReinFlow).
 *
 * Method. A deterministic flow policy has no tractable action likelihood. We make
 * each of its K Euler steps stochastic with a learnable, observation-independent
 * standard deviation sigma_k[d] (log std bounded by tanh to [lo, hi]):
 *     x_0 ~ N(0, I),   x_{k+1} = x_k + v_theta(obs, x_k, t_k) / K + sigma_k * eps_k.
 * The rollout records the whole chain x_0..x_K; the environment executes the
 * first action of clip(x_K). The chain is a K-step Markov policy whose density
 *     log pi(x_1..x_K | x_0, obs) = sum_k sum_d log N(x_{k+1,d}; x_{k,d} + v_d / K, sigma_{k,d}^2)
 * is exact (x_0's density does not depend on the parameters), so PPO's ratio
 * pi_new / pi_old of a stored chain is exact too. Gradients reach v through the
 * Gaussian means at the stored x_k (the chain is data, not re-sampled) and the
 * noise through sigma directly.
 *
 * Learning: returns with GAE(gamma, lambda) from a value MLP fitted by squared
 * error; advantages normalised per update; the clipped surrogate
 * min(r A, clip(r, 1 - c, 1 + c) A) over minibatches for a few epochs, stopped
 * early when the mean KL estimate (logp_old - logp_new) passes target_kl; Adam
 * with a global gradient-norm clip on each network; then value_epochs passes of
 * value regression. The first value_warmup
 * updates fit the value only, so the fresh critic does not push a good BC policy
 * around with noise. Deterministic evaluation runs the same flow with x_0 = 0 and
 * no noise.
 *
 * Which steps learn: by default all K steps are noisy and trainable (Flow-Noise
 * proper). With pol_flow_freeze_prefix the first rl_from steps run a frozen copy
 * of the BC network without noise (DPPO's "fine-tune the last denoising steps"):
 * x_{rl_from} is then a function of x_0 that no parameter touches, so the chain
 * likelihood over the remaining noisy steps is still exact, while the ratio
 * covers only the steps whose noise reaches the action most directly.
 *
 * GRPO variant (pol_flow_grpo_update): with G rollouts from each of several
 * identical starts, an episode's advantage is its return standardised within
 * its group, so the start's difficulty cancels and no value function is needed;
 * the same clipped update over the exact chain likelihood follows. */
#include "policies/algos/flow_rl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void pol_flow_ppo_defaults(pol_flow_ppo_cfg_t *c)
{
    *c = (pol_flow_ppo_cfg_t){.lr = 3e-4f, .value_lr = 1e-3f, .clip = 0.2f, .gamma = 0.99f, .lambda = 0.95f,
                              .target_kl = 0.02f, .grad_clip = 1.0f, .epochs = 4, .minibatch = 100, .value_epochs = 10,
                              .value_hidden = 64, .value_warmup = 2, .seed = 0};
}

int pol_rollout_init(pol_rollout_t *r, int cap, int obs_dim, int chain_dim, cr_err_t *err)
{
    memset(r, 0, sizeof *r);
    size_t c = (size_t)cap, f = sizeof(float);
    r->obs = malloc(c * obs_dim * f);
    r->chain = malloc(c * chain_dim * f);
    r->logp = malloc(c * f);
    r->value = malloc(c * f);
    r->reward = malloc(c * f);
    r->end = malloc(c * f);
    if (!r->obs || !r->chain || !r->logp || !r->value || !r->reward || !r->end) {
        pol_rollout_free(r);
        return cr_err_set(err, CR_ENOMEM, "rollout: cannot hold %d steps", cap);
    }
    r->cap = cap;
    r->obs_dim = obs_dim;
    r->chain_dim = chain_dim;
    return 0;
}

void pol_rollout_free(pol_rollout_t *r)
{
    free(r->obs); free(r->chain); free(r->logp); free(r->value); free(r->reward); free(r->end);
    memset(r, 0, sizeof *r);
}

void pol_rollout_reward(pol_rollout_t *r, float reward, int end)
{
    if (r->n <= 0) return;
    r->reward[r->n - 1] = reward;
    r->end[r->n - 1] = end ? 1.0f : 0.0f;
}

static void free_scratch(pol_flow_ppo_t *p)
{
    const nn_backend_t *be = p->vparams.be;
    if (p->vin) be->free(p->vin);
    if (p->vdout) be->free(p->vdout);
    p->vin = p->vdout = NULL;
    p->cap = 0;
}

static int reserve(pol_flow_ppo_t *p, int B, cr_err_t *err)
{
    int rc = pol_mlp_reserve(&p->value, B, err);
    if (!rc) rc = pol_flow_reserve(p->flow, B * p->flow->steps, err);
    if (rc || B <= p->cap) return rc;
    free_scratch(p);
    const nn_backend_t *be = p->vparams.be;
    p->vin = be->alloc((size_t)B * p->flow->obs_dim * sizeof(float));
    p->vdout = be->alloc((size_t)B * sizeof(float));
    if (!p->vin || !p->vdout) {
        free_scratch(p);
        return cr_err_set(err, CR_ENOMEM, "flow-ppo: cannot allocate scratch for batch %d", B);
    }
    p->cap = B;
    return 0;
}

int pol_flow_ppo_create(pol_flow_ppo_t *p, pol_flow_t *flow, const pol_flow_ppo_cfg_t *cfg, cr_err_t *err)
{
    memset(p, 0, sizeof *p);
    if (!flow->noise)
        return cr_err_set(err, CR_EINVAL, "flow-ppo: the flow policy has no noise tensor (create it with noise=1)");
    if (cfg->epochs < 1 || cfg->value_epochs < 1 || cfg->minibatch < 1 || !(cfg->clip > 0) || !(cfg->lr > 0) || cfg->value_hidden < 1)
        return cr_err_set(err, CR_EINVAL, "flow-ppo: epochs, minibatch, clip, lr and value_hidden must be > 0");
    p->cfg = *cfg;
    p->flow = flow;
    nn_rng_seed(&p->rng, (uint64_t)cfg->seed);
    nn_params_init(&p->vparams, flow->params.be);
    int hidden[2] = {cfg->value_hidden, cfg->value_hidden};
    int rc = pol_mlp_declare(&p->value, &p->vparams, "value", flow->obs_dim, hidden, 2, 1, 0, err);
    if (!rc) rc = nn_params_alloc(&p->vparams, err);
    if (!rc) {
        p->value.act = NN_ACT_TANH;
        pol_mlp_init(&p->value, &p->vparams, &p->rng);
        rc = nn_adam_init(&p->opt, &flow->params, cfg->lr, 0, cfg->grad_clip, err);
    }
    if (!rc) rc = nn_adam_init(&p->vopt, &p->vparams, cfg->value_lr, 0, cfg->grad_clip, err);
    if (rc) pol_flow_ppo_destroy(p);
    return rc;
}

void pol_flow_ppo_destroy(pol_flow_ppo_t *p)
{
    if (!p->vparams.be) return;
    const nn_backend_t *be = p->vparams.be;
    free_scratch(p);
    pol_mlp_destroy(&p->value);
    nn_adam_destroy(&p->opt, be);
    nn_adam_destroy(&p->vopt, be);
    nn_params_destroy(&p->vparams);
    memset(p, 0, sizeof *p);
}

/* values[B] (host) for host obs[B][O] */
static void value_forward(pol_flow_ppo_t *p, const float *obs, int B, float *values)
{
    const nn_backend_t *be = p->vparams.be;
    be->upload(p->vin, obs, (size_t)B * p->flow->obs_dim * sizeof(float));
    const float *v = pol_mlp_forward(&p->value, &p->vparams, p->vin, B);
    be->download(values, v, (size_t)B * sizeof(float));
}

int pol_flow_ppo_act(pol_flow_ppo_t *p, const float *obs, float *action, pol_rollout_t *r, cr_err_t *err)
{
    pol_flow_t *f = p->flow;
    if (r->n >= r->cap) return cr_err_set(err, CR_ENOSPC, "flow-ppo: rollout full (%d steps)", r->cap);
    if (r->obs_dim != f->obs_dim || r->chain_dim != (f->steps + 1) * f->D)
        return cr_err_set(err, CR_EINVAL, "flow-ppo: rollout shaped for obs %d chain %d, policy has %d and %d",
                          r->obs_dim, r->chain_dim, f->obs_dim, (f->steps + 1) * f->D);
    for (int i = 0; i < f->obs_dim; i++)
        if (!isfinite(obs[i])) return cr_err_set(err, CR_EINVAL, "flow-ppo: observation[%d] is not finite", i);
    int rc = reserve(p, 1, err);
    if (rc) return rc;
    int i = r->n++;
    memcpy(r->obs + (size_t)i * f->obs_dim, obs, sizeof(float) * f->obs_dim);
    float chunk[4096];
    pol_flow_sample(f, obs, 1, &p->rng, 1, r->chain + (size_t)i * r->chain_dim, r->logp + i, chunk);
    value_forward(p, obs, 1, r->value + i);
    r->reward[i] = 0;
    r->end[i] = 0;
    memcpy(action, chunk, sizeof(float) * f->D);
    return 0;
}

/* GAE over episodes that end at r->end; a value beyond an episode's end is 0. */
static void advantages(const pol_flow_ppo_t *p, const pol_rollout_t *r, float *adv, float *ret)
{
    float next_v = 0, next_a = 0;
    for (int i = r->n - 1; i >= 0; i--) {
        if (r->end[i] != 0) next_v = next_a = 0;
        float delta = r->reward[i] + p->cfg.gamma * next_v - r->value[i];
        next_a = delta + p->cfg.gamma * p->cfg.lambda * next_a;
        adv[i] = next_a;
        ret[i] = next_a + r->value[i];
        next_v = r->value[i];
    }
}

static void shuffle(nn_rng_t *rng, int *idx, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)nn_rng_below(rng, (uint32_t)(i + 1)), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* One value regression step on the minibatch; returns the loss. */
static double value_step(pol_flow_ppo_t *p, const float *obs, const float *ret, int B)
{
    const nn_backend_t *be = p->vparams.be;
    float v[B], dv[B];
    value_forward(p, obs, B, v);
    double loss = 0;
    for (int b = 0; b < B; b++) {
        float e = v[b] - ret[b];
        loss += (double)e * e / B;
        dv[b] = 2.0f * e / (float)B;
    }
    be->upload(p->vdout, dv, sizeof dv);
    nn_params_zero_grad(&p->vparams);
    pol_mlp_backward(&p->value, &p->vparams, NULL, p->vdout, B, 1);
    nn_adam_step(&p->vopt, &p->vparams, NULL);
    return loss;
}

/* Group-relative advantages: each episode's return against its group. */
static int group_advantages(const pol_rollout_t *r, const int *group, float *adv, cr_err_t *err)
{
    int n = r->n, ngroups = 0;
    for (int i = 0, ep = 0; i < n; i++) {
        if (group[ep] < 0) return cr_err_set(err, CR_EINVAL, "flow-grpo: episode %d has group %d", ep, group[ep]);
        ngroups = group[ep] + 1 > ngroups ? group[ep] + 1 : ngroups;
        if (r->end[i] != 0) ep++;
    }
    double *sum = calloc((size_t)ngroups, sizeof(double)), *sq = calloc((size_t)ngroups, sizeof(double));
    int *cnt = calloc((size_t)ngroups, sizeof(int));
    float *eret = malloc(sizeof(float) * (size_t)n);
    if (!sum || !sq || !cnt || !eret) {
        free(sum); free(sq); free(cnt); free(eret);
        return cr_err_set(err, CR_ENOMEM, "flow-grpo: out of memory");
    }
    /* episode returns, written at every step of the episode */
    for (int i = 0, start = 0, ep = 0; i < n; i++) {
        if (r->end[i] == 0) continue;
        double ret = 0;
        for (int j = start; j <= i; j++) ret += r->reward[j];
        for (int j = start; j <= i; j++) eret[j] = (float)ret;
        sum[group[ep]] += ret;
        sq[group[ep]] += ret * ret;
        cnt[group[ep]]++;
        start = i + 1;
        ep++;
    }
    for (int i = 0, ep = 0; i < n; i++) {
        int g = group[ep];
        double mean = sum[g] / cnt[g], var = sq[g] / cnt[g] - mean * mean;
        adv[i] = (float)((eret[i] - mean) / (sqrt(var > 0 ? var : 0) + 1e-6));
        if (r->end[i] != 0) ep++;
    }
    free(sum); free(sq); free(cnt); free(eret);
    return 0;
}

static int update(pol_flow_ppo_t *p, pol_rollout_t *r, const int *group, corral_metrics_t *m, cr_err_t *err);

int pol_flow_ppo_update(pol_flow_ppo_t *p, pol_rollout_t *r, corral_metrics_t *m, cr_err_t *err)
{
    return update(p, r, NULL, m, err);
}

int pol_flow_grpo_update(pol_flow_ppo_t *p, pol_rollout_t *r, const int *group, corral_metrics_t *m,
                         cr_err_t *err)
{
    if (!group) return cr_err_set(err, CR_EINVAL, "flow-grpo: no group ids");
    return update(p, r, group, m, err);
}

static int update(pol_flow_ppo_t *p, pol_rollout_t *r, const int *group, corral_metrics_t *m, cr_err_t *err)
{
    pol_flow_t *f = p->flow;
    int n = r->n, O = f->obs_dim, C = r->chain_dim;
    if (n < 2 || r->end[n - 1] == 0)
        return cr_err_set(err, CR_EINVAL, "flow-ppo: update needs whole episodes (%d steps, last %s)", n,
                          n ? "not an episode end" : "missing");
    int M = p->cfg.minibatch < n ? p->cfg.minibatch : n;
    int rc = reserve(p, M, err);
    if (rc) return rc;
    float *adv = malloc(sizeof(float) * n), *ret = malloc(sizeof(float) * n);
    float *mo = malloc(sizeof(float) * (size_t)M * O), *mc = malloc(sizeof(float) * (size_t)M * C);
    float *ma = malloc(sizeof(float) * M), *mr = malloc(sizeof(float) * M), *mold = malloc(sizeof(float) * M);
    float *lp = malloc(sizeof(float) * M), *dlp = malloc(sizeof(float) * M);
    int *idx = malloc(sizeof(int) * n);
    if (!adv || !ret || !mo || !mc || !ma || !mr || !mold || !lp || !dlp || !idx) {
        rc = cr_err_set(err, CR_ENOMEM, "flow-ppo: out of memory for %d steps", n);
        goto out;
    }
    if (group) {
        if ((rc = group_advantages(r, group, adv, err))) goto out;
        for (int i = 0; i < n; i++) ret[i] = r->value[i];   /* no value regression target */
    } else {
        advantages(p, r, adv, ret);
    }
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += adv[i] / n;
    for (int i = 0; i < n; i++) var += (adv[i] - mean) * (adv[i] - mean) / n;
    float sd = (float)sqrt(var) + 1e-6f;
    for (int i = 0; i < n; i++) idx[i] = i;
    int train_policy = group || p->updates >= p->cfg.value_warmup, epochs = 0;
    double pl = 0, vl = 0, kl = 0, cf = 0;
    int batches = 0;
    for (int e = 0; e < p->cfg.epochs; e++) {
        shuffle(&p->rng, idx, n);
        double ekl = 0;
        int eb = 0;
        for (int s = 0; s + M <= n; s += M) {
            for (int b = 0; b < M; b++) {
                int i = idx[s + b];
                memcpy(mo + (size_t)b * O, r->obs + (size_t)i * O, sizeof(float) * O);
                memcpy(mc + (size_t)b * C, r->chain + (size_t)i * C, sizeof(float) * C);
                ma[b] = (float)((adv[i] - mean) / sd);
                mr[b] = ret[i];
                mold[b] = r->logp[i];
            }
            if (train_policy) {
                pol_flow_chain_logp(f, mo, mc, M, lp, NULL);
                double bl = 0, bkl = 0, clipped = 0;
                for (int b = 0; b < M; b++) {
                    float ratio = expf(lp[b] - mold[b]), A = ma[b];
                    float cr = ratio < 1 - p->cfg.clip ? 1 - p->cfg.clip : ratio > 1 + p->cfg.clip ? 1 + p->cfg.clip : ratio;
                    int active = A >= 0 ? ratio < 1 + p->cfg.clip : ratio > 1 - p->cfg.clip;
                    bl += -fmin(ratio * A, cr * A) / M;
                    bkl += (mold[b] - lp[b]) / M;
                    clipped += !active;
                    dlp[b] = active ? -A * ratio / (float)M : 0.0f;
                }
                nn_params_zero_grad(&f->params);
                pol_flow_chain_logp(f, mo, mc, M, lp, dlp);
                if (isfinite(bl)) nn_adam_step(&p->opt, &f->params, NULL);
                pl += bl;
                ekl += bkl;
                cf += clipped / M;
                eb++;
                batches++;
                /* a chain of K*D Gaussians makes the ratio sensitive: stop
                 * within the epoch once one minibatch has moved too far */
                if (bkl > 1.5 * p->cfg.target_kl) break;
            }
        }
        epochs++;
        if (!train_policy) break;
        kl = eb ? ekl / eb : 0;
        if (kl > p->cfg.target_kl) break;
    }
    /* the value regresses onto the returns after the policy step, so the
     * advantages above used the value the rollout was collected with */
    int vbatches = 0;
    for (int e = 0; !group && e < p->cfg.value_epochs; e++) {
        shuffle(&p->rng, idx, n);
        for (int s = 0; s + M <= n; s += M) {
            for (int b = 0; b < M; b++) {
                int i = idx[s + b];
                memcpy(mo + (size_t)b * O, r->obs + (size_t)i * O, sizeof(float) * O);
                mr[b] = ret[i];
            }
            vl += value_step(p, mo, mr, M);
            vbatches++;
        }
    }
    p->updates++;
    float sig[POL_FLOW_MAX_STEPS * 64];
    double sm = 0;
    if ((size_t)f->steps * f->D <= sizeof sig / sizeof sig[0]) {
        pol_flow_sigma(f, sig);
        for (int i = 0; i < f->steps * f->D; i++) sm += sig[i] / (f->steps * f->D);
    }
    pol_metric_set(m, "policy_loss", batches ? pl / batches : 0);
    pol_metric_set(m, "value_loss", vbatches ? vl / vbatches : 0);
    pol_metric_set(m, "approx_kl", kl);
    pol_metric_set(m, "clip_frac", batches ? cf / batches : 0);
    pol_metric_set(m, "sigma_mean", sm);
    pol_metric_set(m, "epochs", epochs);
    r->n = 0;
out:
    free(adv); free(ret); free(mo); free(mc); free(ma); free(mr); free(mold); free(lp); free(dlp); free(idx);
    return rc;
}
