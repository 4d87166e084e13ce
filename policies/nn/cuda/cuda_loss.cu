/* cuda_loss.cu - mean squared error and the tanh-squashed Gaussian policy head;
 * the CUDA twins of cpu_loss.c (same formulas, same stable log(1 - tanh^2)). */
#include "policies/nn/cuda/cuda_common.cuh"

#include <math.h>

/* parts[NN_RED_PARTS]: each thread's share of sum w*(pred - target)^2, in double */
static __global__ void mse_kernel(double *parts, const float *pred, const float *target,
                                  const float *weight, size_t N)
{
    size_t tid = CU_TID();
    double s = 0.0;
    for (size_t i = tid; i < N; i += NN_RED_PARTS) {
        double d = (double)pred[i] - target[i];
        s += (weight ? weight[i] : 1.0) * d * d;
    }
    parts[tid] = s;
}

double cu_mse_forward(const float *pred, const float *target, const float *weight, size_t N)
{
    if (!N) return 0.0;
    double *parts = cu_red_lock();
    if (LAUNCH(mse_kernel, NN_RED_BLOCKS, NN_THREADS, parts, pred, target, weight, N)) {
        cu_red_finish(parts);
        return NAN;
    }
    return cu_red_finish(parts) / (double)N;
}

static __global__ void mse_bwd_kernel(float *dpred, const float *pred, const float *target,
                                      const float *weight, float scale, size_t N)
{
    size_t i = CU_TID();
    if (i < N) dpred[i] += scale * 2.0f * (weight ? weight[i] : 1.0f) * (pred[i] - target[i]);
}

void cu_mse_backward(float *dpred, const float *pred, const float *target,
                     const float *weight, float scale, size_t N)
{
    if (N) LAUNCH(mse_bwd_kernel, cu_blocks(N), NN_THREADS, dpred, pred, target, weight, scale, N);
}

#define HALF_LOG_2PI 0.91893853320467274f
#define LOG2 0.69314718055994531f

static __device__ inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* one thread per row b: its A actions and the summed log-probability */
static __global__ void gauss_fwd_kernel(float *action, float *logp, const float *head,
                                        const float *eps, int B, int A, float lo, float hi)
{
    size_t b = CU_TID();
    if (b >= (size_t)B) return;
    const float *mu = head + b * 2 * A, *raw = mu + A;
    float lp = 0.0f;
    for (int j = 0; j < A; j++) {
        float ls = lo + 0.5f * (hi - lo) * (tanhf(raw[j]) + 1.0f);
        float e = eps[b * A + j];
        float u = mu[j] + expf(ls) * e;
        action[b * A + j] = tanhf(u);
        /* log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) */
        lp += -0.5f * e * e - ls - HALF_LOG_2PI - 2.0f * (LOG2 - u - softplus(-2.0f * u));
    }
    if (logp) logp[b] = lp;
}

/* one thread per (b, j): the gradients of mu and raw log std of one action */
static __global__ void gauss_bwd_kernel(float *dhead, const float *daction, const float *dlogp,
                                        const float *head, const float *eps, const float *action,
                                        int B, int A, float lo, float hi)
{
    size_t k = CU_TID();
    if (k >= (size_t)B * A) return;
    size_t b = k / A, j = k % A;
    const float *raw = head + b * 2 * A + A;
    float dl = dlogp ? dlogp[b] : 0.0f;
    float th = tanhf(raw[j]);
    float sd = expf(lo + 0.5f * (hi - lo) * (th + 1.0f));
    float a = action[k];
    /* d logp / du = 2 tanh(u); d logp / d log_std (direct) = -1 */
    float du = (daction ? daction[k] * (1.0f - a * a) : 0.0f) + dl * 2.0f * a;
    float dls = du * sd * eps[k] - dl;
    dhead[b * 2 * A + j] += du;
    dhead[b * 2 * A + A + j] += dls * 0.5f * (hi - lo) * (1.0f - th * th);
}

void cu_gauss_tanh_forward(float *action, float *logp, const float *head, const float *eps,
                           int B, int A, float lo, float hi)
{
    if (B > 0 && A > 0)
        LAUNCH(gauss_fwd_kernel, cu_blocks(B), NN_THREADS, action, logp, head, eps, B, A, lo, hi);
}

void cu_gauss_tanh_backward(float *dhead, const float *daction, const float *dlogp,
                            const float *head, const float *eps, const float *action,
                            int B, int A, float lo, float hi)
{
    size_t n = (size_t)B * A;
    if (n)
        LAUNCH(gauss_bwd_kernel, cu_blocks(n), NN_THREADS, dhead, daction, dlogp, head, eps,
               action, B, A, lo, hi);
}
