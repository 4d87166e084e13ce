/* cpu_dense.c - linear layers (OpenBLAS sgemm), bias and elementwise activations
 * on the CPU: the reference every other backend is checked against. */
#include "policies/nn/cpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void cpu_linear_forward(float *out, const float *inp, const float *w, const float *bias,
                        int B, int C, int OC)
{
    /* out[B][OC] = inp[B][C] . w[OC][C]^T + bias[OC] */
    if (B == 1) {
        /* batch 1 is the actor's hot path: gemv avoids sgemm's packing cost */
        if (bias) memcpy(out, bias, (size_t)OC * sizeof(float));
        cblas_sgemv(CblasRowMajor, CblasNoTrans, OC, C, 1.0f, w, C, inp, 1,
                    bias ? 1.0f : 0.0f, out, 1);
        return;
    }
    if (bias)
        for (int b = 0; b < B; b++) memcpy(out + (size_t)b * OC, bias, (size_t)OC * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OC, C, 1.0f, inp, C, w, C,
                bias ? 1.0f : 0.0f, out, OC);
}

void cpu_linear_backward(float *dinp, float *dw, float *dbias, const float *dout,
                         const float *inp, const float *w, int B, int C, int OC)
{
    /* dinp[B][C] += dout[B][OC] . w[OC][C] */
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, C, OC, 1.0f, dout, OC, w, C,
                    1.0f, dinp, C);
    /* dw[OC][C] += dout^T[OC][B] . inp[B][C] */
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, B, 1.0f, dout, OC, inp, C,
                    1.0f, dw, C);
    if (dbias) cpu_bias_backward(dbias, dout, B, OC);
}

void cpu_linear_backward_input(float *dinp, const float *dout, const float *w, int B, int C, int OC)
{
    /* dinp[B][C] = dout[B][OC] . w[OC][C]: beta 0, so dinp needs no clearing */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, C, OC, 1.0f, dout, OC, w, C, 0.0f, dinp, C);
}

void cpu_bias_forward(float *out, const float *bias, int B, int C)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) out[(size_t)b * C + c] += bias[c];
}

void cpu_bias_backward(float *dbias, const float *dout, int B, int C)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) dbias[c] += dout[(size_t)b * C + c];
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

/* tanh through one expf: glibc's tanhf goes through expm1f and was a third of
 * a VLA training step. Absolute error ~1e-7; saturates cleanly (expf -> inf
 * gives 1, expf -> 0 gives -1). */
static inline float gelu_tanh(float u) { return 1.0f - 2.0f / (1.0f + expf(2.0f * u)); }

/* d gelu(x) / dx; one definition for the accumulating and the in-place backward,
 * which must give the same bits. */
static inline float gelu_grad(float x)
{
    float u = GELU_K * (x + 0.044715f * x * x * x);
    float t = gelu_tanh(u);
    float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
}

void cpu_act_forward(float *out, const float *inp, nn_act_t act, size_t N)
{
    switch (act) {
    case NN_ACT_RELU:
        /* written so that NaN propagates (as in PyTorch): a NaN must reach the loss */
        for (size_t i = 0; i < N; i++) { float x = inp[i]; out[i] = x < 0.0f ? 0.0f : x; }
        break;
    case NN_ACT_TANH:
        for (size_t i = 0; i < N; i++) out[i] = tanhf(inp[i]);
        break;
    case NN_ACT_GELU:
        for (size_t i = 0; i < N; i++) {
            float x = inp[i];
            out[i] = 0.5f * x * (1.0f + gelu_tanh(GELU_K * (x + 0.044715f * x * x * x)));
        }
        break;
    case NN_ACT_SILU:
        for (size_t i = 0; i < N; i++) out[i] = inp[i] / (1.0f + expf(-inp[i]));
        break;
    }
}

void cpu_act_backward(float *dinp, const float *dout, const float *inp, const float *out,
                      nn_act_t act, size_t N)
{
    switch (act) {
    case NN_ACT_RELU:
        for (size_t i = 0; i < N; i++) { float d = dout[i]; dinp[i] += inp[i] > 0.0f ? d : 0.0f; }
        break;
    case NN_ACT_TANH:
        for (size_t i = 0; i < N; i++) dinp[i] += dout[i] * (1.0f - out[i] * out[i]);
        break;
    case NN_ACT_GELU:
        for (size_t i = 0; i < N; i++) dinp[i] += dout[i] * gelu_grad(inp[i]);
        break;
    case NN_ACT_SILU:
        for (size_t i = 0; i < N; i++) {
            float s = 1.0f / (1.0f + expf(-inp[i]));
            dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
        }
        break;
    }
}

void cpu_bias_act_forward(float *out, float *pre, const float *bias, nn_act_t act, int B, int C)
{
    /* row by row, so the activation reads the row the bias pass just wrote while
     * it is in L1 */
    for (int b = 0; b < B; b++) {
        float *p = pre + (size_t)b * C;
        for (int c = 0; c < C; c++) p[c] += bias[c];
        cpu_act_forward(out + (size_t)b * C, p, act, (size_t)C);
    }
}

void cpu_act_backward_inplace(float *d, const float *inp, const float *out, nn_act_t act, size_t N)
{
    /* the same expressions as cpu_act_backward, so the results are the same bits */
    switch (act) {
    case NN_ACT_RELU:
        for (size_t i = 0; i < N; i++) d[i] = inp[i] > 0.0f ? d[i] : 0.0f;
        break;
    case NN_ACT_TANH:
        for (size_t i = 0; i < N; i++) d[i] = d[i] * (1.0f - out[i] * out[i]);
        break;
    case NN_ACT_GELU:
        for (size_t i = 0; i < N; i++) d[i] = d[i] * gelu_grad(inp[i]);
        break;
    case NN_ACT_SILU:
        for (size_t i = 0; i < N; i++) {
            float sg = 1.0f / (1.0f + expf(-inp[i]));
            d[i] = d[i] * sg * (1.0f + inp[i] * (1.0f - sg));
        }
        break;
    }
}
