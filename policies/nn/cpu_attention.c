/* cpu_attention.c - token embedding and multi-head scaled dot-product attention
 * (the part between the QKV and output projections, which are linear layers), CPU
 * reference. Layout as in GPT-2: qkv[B][T][3C] holds q, k, v side by side and head
 * h uses features h*HS .. (h+1)*HS of each, HS = C / NH. */
#include "policies/nn/cpu.h"

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

void cpu_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C,
                           int NH, int causal)
{
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * HS;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                int tmax = causal ? t : T - 1;
                float mx = -INFINITY;
                for (int t2 = 0; t2 <= tmax; t2++) {
                    const float *k = qkv + ((size_t)b * T + t2) * C3 + C + h * HS;
                    float dot = 0.0f;
                    for (int i = 0; i < HS; i++) dot += q[i] * k[i];
                    a[t2] = dot * scale;
                    mx = a[t2] > mx ? a[t2] : mx;
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= tmax; t2++) { a[t2] = expf(a[t2] - mx); sum += a[t2]; }
                for (int t2 = 0; t2 < T; t2++) a[t2] = t2 <= tmax ? a[t2] / sum : 0.0f;
                float *o = out + ((size_t)b * T + t) * C + h * HS;
                for (int i = 0; i < HS; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= tmax; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * HS;
                    for (int i = 0; i < HS; i++) o[i] += a[t2] * v[i];
                }
            }
}

void cpu_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                            const float *att, int B, int T, int C, int NH, int causal)
{
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                float *da = datt + (((size_t)b * NH + h) * T + t) * T;
                const float *d = dout + ((size_t)b * T + t) * C + h * HS;
                int tmax = causal ? t : T - 1;
                /* through out = att . v */
                for (int t2 = 0; t2 <= tmax; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * HS;
                    float *dv = dqkv + ((size_t)b * T + t2) * C3 + 2 * C + h * HS;
                    float s = 0.0f;
                    for (int i = 0; i < HS; i++) { s += d[i] * v[i]; dv[i] += a[t2] * d[i]; }
                    da[t2] = s;
                }
                /* through the softmax */
                float dot = 0.0f;
                for (int t2 = 0; t2 <= tmax; t2++) dot += a[t2] * da[t2];
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * HS;
                float *dq = dqkv + ((size_t)b * T + t) * C3 + h * HS;
                for (int t2 = 0; t2 <= tmax; t2++) {
                    float dpre = a[t2] * (da[t2] - dot) * scale;
                    const float *k = qkv + ((size_t)b * T + t2) * C3 + C + h * HS;
                    float *dk = dqkv + ((size_t)b * T + t2) * C3 + C + h * HS;
                    for (int i = 0; i < HS; i++) { dq[i] += dpre * k[i]; dk[i] += dpre * q[i]; }
                }
            }
}
