/* cuda_norm.cu - LayerNorm and softmax over rows; the CUDA twins of cpu_norm.c.
 * One thread owns a row (forward, input gradients) or a column (parameter
 * gradients), so every sum is computed in the CPU reference's order and no two
 * threads write the same float. */
#include "policies/nn/cuda/cuda_common.cuh"

#include <math.h>

#define LN_EPS 1e-5f

static __global__ void ln_fwd_kernel(float *out, float *mean, float *rstd, const float *inp,
                                     const float *weight, const float *bias, int B, int C)
{
    size_t b = CU_TID();
    if (b >= (size_t)B) return;
    const float *x = inp + b * C;
    float *o = out + b * C;
    float m = 0.0f;
    for (int i = 0; i < C; i++) m += x[i];
    m /= C;
    float v = 0.0f;
    for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
    v /= C;
    float s = 1.0f / sqrtf(v + LN_EPS);
    for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * weight[i] + bias[i];
    mean[b] = m;
    rstd[b] = s;
}

/* dinp of one row: the gradient through the row's mean and variance */
static __global__ void ln_bwd_inp_kernel(float *dinp, const float *dout, const float *inp,
                                         const float *weight, const float *mean,
                                         const float *rstd, int B, int C)
{
    size_t b = CU_TID();
    if (b >= (size_t)B) return;
    const float *x = inp + b * C, *d = dout + b * C;
    float m = mean[b], s = rstd[b];
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    for (int i = 0; i < C; i++) {
        float dn = weight[i] * d[i];
        dnorm_mean += dn;
        dnorm_norm_mean += dn * (x[i] - m) * s;
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    for (int i = 0; i < C; i++) {
        float n = (x[i] - m) * s;
        dinp[b * C + i] += (weight[i] * d[i] - dnorm_mean - n * dnorm_norm_mean) * s;
    }
}

/* dweight, dbias of one column: sums over the B rows */
static __global__ void ln_bwd_param_kernel(float *dweight, float *dbias, const float *dout,
                                           const float *inp, const float *mean,
                                           const float *rstd, int B, int C)
{
    size_t i = CU_TID();
    if (i >= (size_t)C) return;
    float dw = 0.0f, db = 0.0f;
    for (int b = 0; b < B; b++) {
        size_t k = (size_t)b * C + i;
        db += dout[k];
        dw += (inp[k] - mean[b]) * rstd[b] * dout[k];
    }
    if (dbias) dbias[i] += db;
    if (dweight) dweight[i] += dw;
}

void cu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int B, int C)
{
    if (B > 0 && C > 0)
        LAUNCH(ln_fwd_kernel, cu_blocks(B), NN_THREADS, out, mean, rstd, inp, weight, bias, B, C);
}

void cu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int B, int C)
{
    if (B <= 0 || C <= 0) return;
    if (dinp && LAUNCH(ln_bwd_inp_kernel, cu_blocks(B), NN_THREADS, dinp, dout, inp, weight, mean,
                       rstd, B, C))
        return;
    if (dweight || dbias)
        LAUNCH(ln_bwd_param_kernel, cu_blocks(C), NN_THREADS, dweight, dbias, dout, inp, mean,
               rstd, B, C);
}

static __global__ void softmax_fwd_kernel(float *out, const float *inp, int B, int C)
{
    size_t b = CU_TID();
    if (b >= (size_t)B) return;
    const float *x = inp + b * C;
    float *o = out + b * C;
    float mx = -INFINITY;
    for (int i = 0; i < C; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0.0f;
    for (int i = 0; i < C; i++) {
        o[i] = expf(x[i] - mx);
        sum += o[i];
    }
    for (int i = 0; i < C; i++) o[i] /= sum;
}

static __global__ void softmax_bwd_kernel(float *dinp, const float *dout, const float *out,
                                          int B, int C)
{
    size_t b = CU_TID();
    if (b >= (size_t)B) return;
    const float *y = out + b * C, *d = dout + b * C;
    float dot = 0.0f;
    for (int i = 0; i < C; i++) dot += d[i] * y[i];
    for (int i = 0; i < C; i++) dinp[b * C + i] += y[i] * (d[i] - dot);
}

void cu_softmax_forward(float *out, const float *inp, int B, int C)
{
    if (B > 0 && C > 0) LAUNCH(softmax_fwd_kernel, cu_blocks(B), NN_THREADS, out, inp, B, C);
}

void cu_softmax_backward(float *dinp, const float *dout, const float *out, int B, int C)
{
    if (B > 0 && C > 0) LAUNCH(softmax_bwd_kernel, cu_blocks(B), NN_THREADS, dinp, dout, out, B, C);
}
