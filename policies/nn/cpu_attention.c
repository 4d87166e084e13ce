/* cpu_attention.c - token embedding and multi-head scaled dot-product attention
 * (the part between the QKV and output projections, which are linear layers), CPU
 * reference. Layout as in GPT-2: qkv[B][T][3C] holds q, k, v side by side and head
 * h uses features h*HS .. (h+1)*HS of each, HS = C / NH. */
#include "policies/nn/cpu.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void cpu_embedding_forward(float *out, const int32_t *idx, const float *table, int B, int C)
{
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * C, table + (size_t)idx[b] * C, (size_t)C * sizeof(float));
}

void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *idx, int B, int C)
{
    for (int b = 0; b < B; b++) {
        float *d = dtable + (size_t)idx[b] * C;
        for (int c = 0; c < C; c++) d[c] += dout[(size_t)b * C + c];
    }
}

/* Per (sample, head) the scores, the weighted values and every gradient are
 * small matrix products over strided views of qkv: OpenBLAS does them (the scalar
 * loops they replace were latency-bound float reductions, a third of a VLA step).
 * A row's softmax runs over its unmasked keys; masked weights are exactly 0. */
static void softmax_rows(float *a, int T, int causal)
{
    for (int t = 0; t < T; t++) {
        float *r = a + (size_t)t * T, mx = -INFINITY, sum = 0.0f;
        int tmax = causal ? t : T - 1;
        for (int t2 = 0; t2 <= tmax; t2++) mx = r[t2] > mx ? r[t2] : mx;
        for (int t2 = 0; t2 <= tmax; t2++) { r[t2] = expf(r[t2] - mx); sum += r[t2]; }
        float inv = 1.0f / sum;
        for (int t2 = 0; t2 < T; t2++) r[t2] = t2 <= tmax ? r[t2] * inv : 0.0f;
    }
}

void cpu_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C,
                           int NH, int causal)
{
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * HS, *k = q + C, *v = q + 2 * C;
            float *a = att + ((size_t)b * NH + h) * T * T;
            /* a[T][T] = scale q k^T, softmax by row; out_h[T][HS] = a v */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, scale, q, C3, k, C3, 0.0f, a, T);
            softmax_rows(a, T, causal);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, a, T, v, C3, 0.0f,
                        out + (size_t)b * T * C + h * HS, C);
        }
}

void cpu_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                            const float *att, int B, int T, int C, int NH, int causal)
{
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * HS, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + (size_t)b * T * C3 + h * HS, *dk = dq + C, *dv = dq + 2 * C;
            const float *a = att + ((size_t)b * NH + h) * T * T, *d = dout + (size_t)b * T * C + h * HS;
            float *da = datt + ((size_t)b * NH + h) * T * T;
            /* through out = a v: da = d v^T, dv += a^T d */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, 1.0f, d, C, v, C3, 0.0f, da, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, a, T, d, C, 1.0f, dv, C3);
            /* through the softmax, in place: ds = a (da - a.da) scale (0 where masked, as a is) */
            for (int t = 0; t < T; t++) {
                const float *ar = a + (size_t)t * T;
                float *dr = da + (size_t)t * T, dot = 0.0f;
                for (int t2 = 0; t2 < T; t2++) dot += ar[t2] * dr[t2];
                for (int t2 = 0; t2 < T; t2++) dr[t2] = ar[t2] * (dr[t2] - dot) * scale;
            }
            /* through s = q k^T: dq += ds k, dk += ds^T q */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, da, T, k, C3, 1.0f, dq, C3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, da, T, q, C3, 1.0f, dk, C3);
        }
    (void)causal;   /* masked weights are 0 in att, so their gradients vanish on their own */
}
