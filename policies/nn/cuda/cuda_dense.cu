/* cuda_dense.cu - linear layers through cuBLAS sgemm, bias and elementwise
 * activations; the CUDA twins of cpu_dense.c.
 *
 * cuBLAS is column-major: a row-major X[R][C] is the column-major X^T, so every
 * row-major product below is written as its transpose (the llm.c convention). */
#include "policies/nn/cuda/cuda_common.cuh"

#include <math.h>

static const float one = 1.0f, zero = 0.0f;

/* out[B][C] = bias[C], the starting value a gemm with beta = 1 adds to */
static __global__ void bias_fill_kernel(float *out, const float *bias, int B, int C)
{
    size_t i = CU_TID();
    if (i < (size_t)B * C) out[i] = bias[i % C];
}

void cu_bias_fill(float *out, const float *bias, int B, int C)
{
    size_t n = (size_t)B * C;
    if (n) LAUNCH(bias_fill_kernel, cu_blocks(n), NN_THREADS, out, bias, B, C);
}

void cu_linear_forward(float *out, const float *inp, const float *w, const float *bias,
                       int B, int C, int OC)
{
    if (B <= 0 || OC <= 0) return;
    if (bias) {
        cu_bias_fill(out, bias, B, OC);
    }
    /* out^T[OC][B] = w[OC][C] . inp^T[C][B]; w is column-major C x OC, hence OP_T */
    CUBLAS_CHECK(cublasSgemm(cu_blas(), CUBLAS_OP_T, CUBLAS_OP_N, OC, B, C, &one, w, C, inp, C,
                             bias ? &one : &zero, out, OC));
}

void cu_linear_backward(float *dinp, float *dw, float *dbias, const float *dout,
                        const float *inp, const float *w, int B, int C, int OC)
{
    if (B <= 0 || OC <= 0 || C <= 0) return;
    /* dinp[B][C] += dout[B][OC] . w[OC][C]  <=>  dinp^T = w^T . dout^T */
    if (dinp && CUBLAS_CHECK(cublasSgemm(cu_blas(), CUBLAS_OP_N, CUBLAS_OP_N, C, B, OC, &one, w, C,
                                         dout, OC, &one, dinp, C)))
        return;
    /* dw[OC][C] += dout^T[OC][B] . inp[B][C]  <=>  dw^T = inp^T . dout */
    if (dw && CUBLAS_CHECK(cublasSgemm(cu_blas(), CUBLAS_OP_N, CUBLAS_OP_T, C, OC, B, &one, inp, C,
                                       dout, OC, &one, dw, C)))
        return;
    if (dbias) cu_bias_backward(dbias, dout, B, OC);
}

static __global__ void bias_fwd_kernel(float *out, const float *bias, int B, int C)
{
    size_t i = CU_TID();
    if (i < (size_t)B * C) out[i] += bias[i % C];
}

void cu_bias_forward(float *out, const float *bias, int B, int C)
{
    size_t n = (size_t)B * C;
    if (n) LAUNCH(bias_fwd_kernel, cu_blocks(n), NN_THREADS, out, bias, B, C);
}

/* dbias[C] += column sums of dout[B][C]: one thread per column, so no atomics */
static __global__ void bias_bwd_kernel(float *dbias, const float *dout, int B, int C)
{
    size_t c = CU_TID();
    if (c >= (size_t)C) return;
    float s = 0.0f;
    for (int b = 0; b < B; b++) s += dout[(size_t)b * C + c];
    dbias[c] += s;
}

void cu_bias_backward(float *dbias, const float *dout, int B, int C)
{
    if (C > 0 && B > 0) LAUNCH(bias_bwd_kernel, cu_blocks(C), NN_THREADS, dbias, dout, B, C);
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

static __global__ void act_fwd_kernel(float *out, const float *inp, nn_act_t act, size_t N)
{
    size_t i = CU_TID();
    if (i >= N) return;
    float x = inp[i];
    switch (act) {
    case NN_ACT_RELU: out[i] = x < 0.0f ? 0.0f : x; break;   /* NaN passes, as on the CPU */
    case NN_ACT_TANH: out[i] = tanhf(x); break;
    case NN_ACT_GELU: out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x))); break;
    case NN_ACT_SILU: out[i] = x / (1.0f + expf(-x)); break;
    }
}

static __global__ void act_bwd_kernel(float *dinp, const float *dout, const float *inp,
                                      const float *out, nn_act_t act, size_t N)
{
    size_t i = CU_TID();
    if (i >= N) return;
    float x = inp[i], d = dout[i];
    switch (act) {
    case NN_ACT_RELU: dinp[i] += x > 0.0f ? d : 0.0f; break;
    case NN_ACT_TANH: dinp[i] += d * (1.0f - out[i] * out[i]); break;
    case NN_ACT_GELU: {
        float t = tanhf(GELU_K * (x + 0.044715f * x * x * x));
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += d * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
        break;
    }
    case NN_ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        dinp[i] += d * s * (1.0f + x * (1.0f - s));
        break;
    }
    }
}

void cu_act_forward(float *out, const float *inp, nn_act_t act, size_t N)
{
    if (N) LAUNCH(act_fwd_kernel, cu_blocks(N), NN_THREADS, out, inp, act, N);
}

void cu_act_backward(float *dinp, const float *dout, const float *inp, const float *out,
                     nn_act_t act, size_t N)
{
    if (N) LAUNCH(act_bwd_kernel, cu_blocks(N), NN_THREADS, dinp, dout, inp, out, act, N);
}
