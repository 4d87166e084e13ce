/* cpu_norm.c - LayerNorm and softmax over rows, CPU reference. */
#include "policies/nn/cpu.h"

#include <math.h>

#define LN_EPS 1e-5f

void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int B, int C)
{
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)b * C;
        float *o = out + (size_t)b * C;
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
}

void cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const float *mean,
                            const float *rstd, int B, int C)
{
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)b * C;
        const float *d = dout + (size_t)b * C;
        float m = mean[b], s = rstd[b];
        /* two reductions give the gradient through mean and variance */
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int i = 0; i < C; i++) {
            float n = (x[i] - m) * s;
            float dn = weight[i] * d[i];
            dnorm_mean += dn;
            dnorm_norm_mean += dn * n;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        for (int i = 0; i < C; i++) {
            float n = (x[i] - m) * s;
            float dn = weight[i] * d[i];
            if (dbias) dbias[i] += d[i];
            if (dweight) dweight[i] += n * d[i];
            if (dinp) dinp[(size_t)b * C + i] += (dn - dnorm_mean - n * dnorm_norm_mean) * s;
        }
    }
}

void cpu_softmax_forward(float *out, const float *inp, int B, int C)
{
    for (int b = 0; b < B; b++) {
        const float *x = inp + (size_t)b * C;
        float *o = out + (size_t)b * C;
        float mx = -INFINITY;
        for (int i = 0; i < C; i++) mx = x[i] > mx ? x[i] : mx;
        float sum = 0.0f;
        for (int i = 0; i < C; i++) { o[i] = expf(x[i] - mx); sum += o[i]; }
        for (int i = 0; i < C; i++) o[i] /= sum;
    }
}

void cpu_softmax_backward(float *dinp, const float *dout, const float *out, int B, int C)
{
    for (int b = 0; b < B; b++) {
        const float *y = out + (size_t)b * C, *d = dout + (size_t)b * C;
        float dot = 0.0f;
        for (int i = 0; i < C; i++) dot += d[i] * y[i];
        for (int i = 0; i < C; i++) dinp[(size_t)b * C + i] += y[i] * (d[i] - dot);
    }
}
