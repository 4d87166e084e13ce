/* cpu_misc.c - the small ops algorithms glue layers with (concatenation, ensemble
 * reductions, TD targets, Polyak averaging, reductions) and the Adam(W) update,
 * CPU reference. */
#include "policies/nn/cpu.h"

#include <math.h>
#include <string.h>

void cpu_concat_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb)
{
    for (int r = 0; r < B; r++) {
        memcpy(out + (size_t)r * (Ca + Cb), a + (size_t)r * Ca, (size_t)Ca * sizeof(float));
        memcpy(out + (size_t)r * (Ca + Cb) + Ca, b + (size_t)r * Cb, (size_t)Cb * sizeof(float));
    }
}

void cpu_concat_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb)
{
    for (int r = 0; r < B; r++) {
        const float *d = dout + (size_t)r * (Ca + Cb);
        if (da) for (int c = 0; c < Ca; c++) da[(size_t)r * Ca + c] += d[c];
        if (db) for (int c = 0; c < Cb; c++) db[(size_t)r * Cb + c] += d[Ca + c];
    }
}

void cpu_rows_min(float *out, const float *q, const int *rows, int K, int B)
{
    for (int b = 0; b < B; b++) {
        float m = q[(size_t)rows[0] * B + b];
        for (int k = 1; k < K; k++) {
            float v = q[(size_t)rows[k] * B + b];
            m = v < m ? v : m;
        }
        out[b] = m;
    }
}

void cpu_rows_mean(float *out, const float *q, int N, int B)
{
    for (int b = 0; b < B; b++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += q[(size_t)n * B + b];
        out[b] = s / N;
    }
}

void cpu_td_target(float *y, const float *reward, const float *done, const float *qnext,
                   const float *logp, float gamma, float alpha, int B)
{
    for (int b = 0; b < B; b++)
        y[b] = reward[b] + gamma * (1.0f - done[b]) * (qnext[b] - alpha * logp[b]);
}

/* Eight float lanes, each folded into double every block: vectorisable, with a
 * fixed summation order so results are reproducible run to run. */
#define LANES 8
#define BLOCK 1024

double cpu_sum(const float *x, size_t N)
{
    double s = 0.0;
    for (size_t b = 0; b < N; b += BLOCK) {
        size_t e = b + BLOCK < N ? b + BLOCK : N, i = b;
        float acc[LANES] = {0};
        for (; i + LANES <= e; i += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += x[i + l];
        for (; i < e; i++) acc[0] += x[i];
        for (int l = 0; l < LANES; l++) s += acc[l];
    }
    return s;
}

double cpu_sumsq(const float *x, size_t N)
{
    double s = 0.0;
    for (size_t b = 0; b < N; b += BLOCK) {
        size_t e = b + BLOCK < N ? b + BLOCK : N, i = b;
        float acc[LANES] = {0};
        for (; i + LANES <= e; i += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += x[i + l] * x[i + l];
        for (; i < e; i++) acc[0] += x[i] * x[i];
        for (int l = 0; l < LANES; l++) s += acc[l];
    }
    return s;
}

void cpu_scale(float *x, float s, size_t N)
{
    for (size_t i = 0; i < N; i++) x[i] *= s;
}

void cpu_lerp(float *target, const float *src, float tau, size_t N)
{
    for (size_t i = 0; i < N; i++) target[i] += tau * (src[i] - target[i]);
}

void cpu_adam_update(float *param, const float *grad, float *m, float *v, size_t N,
                     float lr, float beta1, float beta2, float eps, float wd,
                     float grad_scale, long t)
{
    float c1 = 1.0f - powf(beta1, (float)t), c2 = 1.0f - powf(beta2, (float)t);
    for (size_t i = 0; i < N; i++) {
        float g = grad[i] * grad_scale;
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        float mh = m[i] / c1, vh = v[i] / c2;
        param[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * param[i]);
    }
}
