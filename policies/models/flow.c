/* flow.c - the flow-matching action-chunk policy: a velocity MLP over
 * [observation | noisy chunk x_t | sinusoidal embedding of t], trained by flow
 * matching, sampled by K Euler steps, and (for RL) given learnable Gaussian noise
 * at every integration step so that the chain x_0 -> x_K has an exact
 * log-likelihood (the Flow-Noise / ReinFlow construction): step k is
 *     x_{k+1} ~ N(x_k + v(obs, x_k, t_k) dt, diag(sigma_k^2)),
 * so log p(x_1..x_K | x_0, obs) = sum_k log N(...) in closed form, with gradients
 * into v through the mean and into sigma directly. The time embedding, which
 * the nn layer lacks, is a forward/backward pair here. Everything the callers
 * pass and receive is host memory; the network runs on the backend. */
#include "policies/models/gen.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void pol_time_embed_forward(float *out, const float *t, int B, int E)
{
    int h = E / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < h; i++) {
            float f = powf(100.0f, (float)i / (float)h);
            out[(size_t)b * E + i] = sinf(t[b] * f);
            out[(size_t)b * E + h + i] = cosf(t[b] * f);
        }
}

void pol_time_embed_backward(float *dt, const float *dout, const float *t, int B, int E)
{
    int h = E / 2;
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int i = 0; i < h; i++) {
            float f = powf(100.0f, (float)i / (float)h);
            s += dout[(size_t)b * E + i] * f * cosf(t[b] * f) - dout[(size_t)b * E + h + i] * f * sinf(t[b] * f);
        }
        dt[b] += (float)s;
    }
}

static void free_scratch(pol_flow_t *f)
{
    const nn_backend_t *be = f->params.be;
    if (f->in) be->free(f->in);
    if (f->dv) be->free(f->dv);
    free(f->h_in);
    free(f->h_v);
    free(f->h_x);
    free(f->h_t);
    f->in = f->dv = f->h_in = f->h_v = f->h_x = f->h_t = NULL;
    f->cap = 0;
}

int pol_flow_create(pol_flow_t *f, const nn_backend_t *be, int obs_dim, int act_dim, int horizon, int steps,
                    const int *hidden, int nhidden, int noise, float lo, float hi, float init_log_std,
                    nn_rng_t *rng, cr_err_t *err)
{
    memset(f, 0, sizeof *f);
    if (obs_dim <= 0 || act_dim <= 0 || horizon <= 0 || horizon * act_dim > 4096)
        return cr_err_set(err, CR_EINVAL, "flow: obs_dim %d, act_dim %d, horizon %d (need > 0, chunk <= 4096)",
                          obs_dim, act_dim, horizon);
    if (steps < 1 || steps > POL_FLOW_MAX_STEPS)
        return cr_err_set(err, CR_EINVAL, "flow: %d integration steps, must be 1..%d", steps, POL_FLOW_MAX_STEPS);
    if (noise && !(lo < hi && init_log_std >= lo && init_log_std <= hi))
        return cr_err_set(err, CR_EINVAL, "flow: noise log std bounds [%g, %g] must contain the initial %g", lo, hi,
                          init_log_std);
    f->obs_dim = obs_dim;
    f->act_dim = act_dim;
    f->horizon = horizon;
    f->steps = steps;
    f->D = horizon * act_dim;
    f->in_dim = obs_dim + f->D + POL_FLOW_TEMB;
    f->noise = noise;
    f->x0_scale = 1.0f;
    f->log_std_lo = lo;
    f->log_std_hi = hi;
    f->ilog_std = -1;
    nn_params_init(&f->params, be);
    int rc = pol_mlp_declare(&f->vel, &f->params, "vel", f->in_dim, hidden, nhidden, f->D, 1, err);
    if (rc) return rc;
    f->vel.act = NN_ACT_GELU;
    if (noise) {
        int shape[2] = {steps, f->D};
        if ((f->ilog_std = nn_params_add(&f->params, "noise.log_std", 2, shape, err)) < 0) return f->ilog_std;
    }
    if ((rc = nn_params_alloc(&f->params, err))) return rc;
    pol_mlp_init(&f->vel, &f->params, rng);
    if (noise) {
        float u = 2.0f * (init_log_std - lo) / (hi - lo) - 1.0f;
        u = u > 0.999f ? 0.999f : u < -0.999f ? -0.999f : u;
        be->fill(nn_params_data(&f->params, f->ilog_std), atanhf(u), (size_t)steps * f->D);
    }
    return 0;
}

void pol_flow_destroy(pol_flow_t *f)
{
    if (!f->params.be) return;
    free_scratch(f);
    pol_mlp_destroy(&f->vel);
    nn_params_destroy(&f->params);
    memset(f, 0, sizeof *f);
}

int pol_flow_reserve(pol_flow_t *f, int B, cr_err_t *err)
{
    int rc = pol_mlp_reserve(&f->vel, B, err);
    if (rc || B <= f->cap) return rc;
    free_scratch(f);
    const nn_backend_t *be = f->params.be;
    size_t b = (size_t)B, fs = sizeof(float);
    int ok = !!(f->in = be->alloc(b * f->in_dim * fs));
    ok &= !!(f->dv = be->alloc(b * f->D * fs));
    ok &= !!(f->h_in = malloc(b * f->in_dim * fs));
    ok &= !!(f->h_v = malloc(b * f->D * fs));
    ok &= !!(f->h_x = malloc(b * f->D * fs));
    ok &= !!(f->h_t = malloc(b * fs));
    if (!ok) {
        free_scratch(f);
        return cr_err_set(err, CR_ENOMEM, "flow: cannot allocate scratch for batch %d", B);
    }
    f->cap = B;
    return 0;
}

const float *pol_flow_velocity(pol_flow_t *f, const float *obs, const float *x, const float *t, int B)
{
    assert(B <= f->cap);
    int O = f->obs_dim, D = f->D, I = f->in_dim;
    for (int b = 0; b < B; b++) {
        float *row = f->h_in + (size_t)b * I;
        memcpy(row, obs + (size_t)b * O, sizeof(float) * O);
        memcpy(row + O, x + (size_t)b * D, sizeof(float) * D);
        pol_time_embed_forward(row + O + D, t + b, 1, POL_FLOW_TEMB);
    }
    const nn_backend_t *be = f->params.be;
    be->upload(f->in, f->h_in, (size_t)B * I * sizeof(float));
    const float *v = pol_mlp_forward(&f->vel, &f->params, f->in, B);
    be->download(f->h_v, v, (size_t)B * D * sizeof(float));
    return f->h_v;
}

void pol_flow_velocity_backward(pol_flow_t *f, const float *dv, int B)
{
    f->params.be->upload(f->dv, dv, (size_t)B * f->D * sizeof(float));
    pol_mlp_backward(&f->vel, &f->params, NULL, f->dv, B, 1);
}

double pol_flow_bc_step(pol_flow_t *f, const float *obs, const float *chunk, int B, nn_rng_t *rng)
{
    assert(B <= f->cap);
    int D = f->D;
    size_t n = (size_t)B * D;
    float *target = malloc(n * sizeof(float)), *x = f->h_x;
    if (!target) return NAN;
    for (int b = 0; b < B; b++) {
        float t = nn_rng_uniform(rng);
        f->h_t[b] = t;
        for (int d = 0; d < D; d++) {
            size_t i = (size_t)b * D + d;
            float x0 = nn_rng_normal(rng);
            x[i] = (1.0f - t) * x0 + t * chunk[i];
            target[i] = chunk[i] - x0;
        }
    }
    /* velocity() stages x and t into its input before it writes h_v */
    const float *v = pol_flow_velocity(f, obs, x, f->h_t, B);
    double loss = 0;
    float *dv = target;
    for (size_t i = 0; i < n; i++) {
        float e = v[i] - target[i];
        loss += (double)e * e;
        dv[i] = 2.0f * e / (float)n;
    }
    pol_flow_velocity_backward(f, dv, B);
    free(target);
    return loss / (double)n;
}

static float log_std_of(const pol_flow_t *f, float raw)
{
    return f->log_std_lo + 0.5f * (f->log_std_hi - f->log_std_lo) * (tanhf(raw) + 1.0f);
}

int pol_flow_freeze_prefix(pol_flow_t *f, pol_flow_t *frozen, int rl_from, cr_err_t *err)
{
    if (rl_from < 0 || rl_from >= f->steps)
        return cr_err_set(err, CR_EINVAL, "flow: first fine-tuned step %d outside 0..%d", rl_from, f->steps - 1);
    if (frozen && (frozen->params.numel != f->params.numel || frozen->D != f->D || frozen->obs_dim != f->obs_dim))
        return cr_err_set(err, CR_EINVAL, "flow: the frozen copy has %zu parameters, the policy %zu",
                          frozen->params.numel, f->params.numel);
    if (rl_from > 0 && !frozen) return cr_err_set(err, CR_EINVAL, "flow: steps before %d need a frozen copy", rl_from);
    f->frozen = frozen;
    f->rl_from = rl_from;
    return 0;
}

void pol_flow_sigma(const pol_flow_t *f, float *sigma)
{
    size_t n = (size_t)f->steps * f->D;
    if (!f->noise) {
        memset(sigma, 0, n * sizeof(float));
        return;
    }
    f->params.be->download(sigma, nn_params_data(&f->params, f->ilog_std), n * sizeof(float));
    for (size_t i = 0; i < n; i++) sigma[i] = expf(log_std_of(f, sigma[i]));
}

#define HALF_LOG_2PI 0.91893853320467274f

void pol_flow_sample(pol_flow_t *f, const float *obs, int B, nn_rng_t *rng, int noisy, float *chain,
                     float *logp, float *out)
{
    assert(B <= f->cap);
    int D = f->D, K = f->steps;
    float dt = 1.0f / (float)K;
    float sigma[POL_FLOW_MAX_STEPS * 64], *sg = sigma;
    float *heap = NULL;
    if ((size_t)K * D > sizeof sigma / sizeof sigma[0]) sg = heap = malloc((size_t)K * D * sizeof(float));
    int use_noise = rng && noisy && f->noise;
    if (use_noise) pol_flow_sigma(f, sg);
    float *x = out;   /* integrate in place in the caller's buffer */
    for (size_t i = 0; i < (size_t)B * D; i++) x[i] = rng && f->x0_scale > 0 ? f->x0_scale * nn_rng_normal(rng) : 0.0f;
    if (logp) memset(logp, 0, sizeof(float) * B);
    for (int k = 0; k < K; k++) {
        if (chain)
            for (int b = 0; b < B; b++)
                memcpy(chain + ((size_t)b * (K + 1) + k) * D, x + (size_t)b * D, sizeof(float) * D);
        pol_flow_t *net = f->frozen && k < f->rl_from ? f->frozen : f;
        for (int b = 0; b < B; b++) net->h_t[b] = (float)k * dt;
        const float *v = pol_flow_velocity(net, obs, x, net->h_t, B);
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++) {
                size_t i = (size_t)b * D + d;
                x[i] += v[i] * dt;
                if (use_noise && k >= f->rl_from) {
                    float s = sg[(size_t)k * D + d], e = nn_rng_normal(rng);
                    x[i] += s * e;
                    if (logp) logp[b] += -0.5f * e * e - logf(s) - HALF_LOG_2PI;
                }
            }
    }
    if (chain)
        for (int b = 0; b < B; b++)
            memcpy(chain + ((size_t)b * (K + 1) + K) * D, x + (size_t)b * D, sizeof(float) * D);
    for (size_t i = 0; i < (size_t)B * D; i++) x[i] = x[i] > 1.0f ? 1.0f : x[i] < -1.0f ? -1.0f : x[i];
    free(heap);
}

void pol_flow_chain_logp(pol_flow_t *f, const float *obs, const float *chain, int B, float *logp,
                         const float *dlogp)
{
    int D = f->D, K = f->steps, O = f->obs_dim, k0 = f->rl_from, KR = K - k0, R = B * KR;
    assert(R <= f->cap && f->noise);
    float dt = 1.0f / (float)K;
    size_t nk = (size_t)K * D;
    float *raw = malloc(nk * sizeof(float)), *obs_r = malloc((size_t)R * O * sizeof(float));
    float *x_r = calloc((size_t)R * D + 1, sizeof(float)), *t_r = calloc((size_t)R + 1, sizeof(float));
    float *dv = calloc((size_t)R * D, sizeof(float)), *draw = calloc(nk, sizeof(float));
    if (!raw || !obs_r || !x_r || !t_r || !dv || !draw) abort();   /* scratch of a few KB */
    f->params.be->download(raw, nn_params_data(&f->params, f->ilog_std), nk * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int k = k0; k < K; k++) {
            int r = b * KR + k - k0;
            memcpy(obs_r + (size_t)r * O, obs + (size_t)b * O, sizeof(float) * O);
            memcpy(x_r + (size_t)r * D, chain + ((size_t)b * (K + 1) + k) * D, sizeof(float) * D);
            t_r[r] = (float)k * dt;
        }
    const float *v = pol_flow_velocity(f, obs_r, x_r, t_r, R);
    float half = 0.5f * (f->log_std_hi - f->log_std_lo);
    for (int b = 0; b < B; b++) {
        double lp = 0;
        for (int k = k0; k < K; k++) {
            int r = b * KR + k - k0;
            const float *xk = chain + ((size_t)b * (K + 1) + k) * D, *xn = xk + D;
            for (int d = 0; d < D; d++) {
                float ls = log_std_of(f, raw[(size_t)k * D + d]), s = expf(ls);
                float z = (xn[d] - xk[d] - v[(size_t)r * D + d] * dt) / s;
                lp += -0.5 * z * z - ls - HALF_LOG_2PI;
                if (dlogp) {
                    dv[(size_t)r * D + d] = dlogp[b] * z / s * dt;
                    float th = tanhf(raw[(size_t)k * D + d]);
                    draw[(size_t)k * D + d] += dlogp[b] * (z * z - 1.0f) * half * (1.0f - th * th);
                }
            }
        }
        logp[b] = (float)lp;
    }
    if (dlogp) {
        pol_flow_velocity_backward(f, dv, R);
        /* the noise tensor's grads: stage, add, store back (host-side +=) */
        float *g = malloc(nk * sizeof(float));
        if (!g) abort();
        float *gd = nn_params_grad(&f->params, f->ilog_std);
        f->params.be->download(g, gd, nk * sizeof(float));
        for (size_t i = 0; i < nk; i++) g[i] += draw[i];
        f->params.be->upload(gd, g, nk * sizeof(float));
        free(g);
    }
    free(raw); free(obs_r); free(x_r); free(t_r); free(dv); free(draw);
}

double pol_flow_flops_forward(const pol_flow_t *f, int B)
{
    double fl = 0;
    for (int l = 0; l < f->vel.nl; l++) fl += 2.0 * f->vel.width[l] * f->vel.width[l + 1];
    return fl * B;
}
