/* cpu_loss.c - mean squared error and the tanh-squashed Gaussian policy head
 * (sample, log-probability and their gradients), CPU reference. */
#include "policies/nn/cpu.h"

#include <math.h>

double cpu_mse_forward(const float *pred, const float *target, const float *weight, size_t N)
{
    double s = 0.0;
    for (size_t i = 0; i < N; i++) {
        double d = (double)pred[i] - target[i];
        s += (weight ? weight[i] : 1.0) * d * d;
    }
    return N ? s / (double)N : 0.0;
}

void cpu_mse_backward(float *dpred, const float *pred, const float *target,
                      const float *weight, float scale, size_t N)
{
    for (size_t i = 0; i < N; i++)
        dpred[i] += scale * 2.0f * (weight ? weight[i] : 1.0f) * (pred[i] - target[i]);
}

#define HALF_LOG_2PI 0.91893853320467274f
#define LOG2 0.69314718055994531f

static float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

void cpu_gauss_tanh_forward(float *action, float *logp, const float *head, const float *eps,
                            int B, int A, float lo, float hi)
{
    for (int b = 0; b < B; b++) {
        const float *mu = head + (size_t)b * 2 * A, *raw = mu + A;
        float lp = 0.0f;
        for (int j = 0; j < A; j++) {
            float ls = lo + 0.5f * (hi - lo) * (tanhf(raw[j]) + 1.0f);
            float e = eps[(size_t)b * A + j];
            float u = mu[j] + expf(ls) * e;
            action[(size_t)b * A + j] = tanhf(u);
            /* log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), exact and stable */
            lp += -0.5f * e * e - ls - HALF_LOG_2PI - 2.0f * (LOG2 - u - softplus(-2.0f * u));
        }
        if (logp) logp[b] = lp;
    }
}

void cpu_gauss_tanh_backward(float *dhead, const float *daction, const float *dlogp,
                             const float *head, const float *eps, const float *action,
                             int B, int A, float lo, float hi)
{
    for (int b = 0; b < B; b++) {
        const float *mu = head + (size_t)b * 2 * A, *raw = mu + A;
        float *dmu = dhead + (size_t)b * 2 * A, *draw = dmu + A;
        float dl = dlogp ? dlogp[b] : 0.0f;
        for (int j = 0; j < A; j++) {
            size_t k = (size_t)b * A + j;
            float th = tanhf(raw[j]);
            float ls = lo + 0.5f * (hi - lo) * (th + 1.0f);
            float sd = expf(ls);
            float a = action[k];
            /* d logp / du = 2 tanh(u); d logp / d log_std (direct) = -1 */
            float du = (daction ? daction[k] * (1.0f - a * a) : 0.0f) + dl * 2.0f * a;
            float dls = du * sd * eps[k] - dl;
            dmu[j] += du;
            draw[j] += dls * 0.5f * (hi - lo) * (1.0f - th * th);
        }
    }
}
