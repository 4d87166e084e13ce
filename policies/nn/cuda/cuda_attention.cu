/* cuda_attention.cu - token embedding and multi-head scaled dot-product attention;
 * the CUDA twins of cpu_attention.c, same layout: qkv[B][T][3C] holds q, k, v side
 * by side, head h uses features h*HS .. (h+1)*HS of each, HS = C / NH,
 * att[B][NH][T][T] the softmax weights.
 *
 * One thread per (b, h, query t) computes its row of scores, softmax and output.
 * The backward pass is split in two so that no two threads write the same float:
 * per query row, the score gradients (into datt, scratch) and dq; then per key row
 * t2, dk and dv summed over the queries that saw it. */
#include "policies/nn/cuda/cuda_common.cuh"

#include <math.h>

static __global__ void emb_fwd_kernel(float *out, const int32_t *idx, const float *table,
                                      int B, int C)
{
    size_t i = CU_TID();
    if (i < (size_t)B * C) out[i] = table[(size_t)idx[i / C] * C + i % C];
}

/* one thread per column c walks the B rows in order, so repeated indices add up
 * without atomics */
static __global__ void emb_bwd_kernel(float *dtable, const float *dout, const int32_t *idx,
                                      int B, int C)
{
    size_t c = CU_TID();
    if (c >= (size_t)C) return;
    for (int b = 0; b < B; b++) dtable[(size_t)idx[b] * C + c] += dout[(size_t)b * C + c];
}

void cu_embedding_forward(float *out, const int32_t *idx, const float *table, int B, int C)
{
    size_t n = (size_t)B * C;
    if (n) LAUNCH(emb_fwd_kernel, cu_blocks(n), NN_THREADS, out, idx, table, B, C);
}

void cu_embedding_backward(float *dtable, const float *dout, const int32_t *idx, int B, int C)
{
    if (B > 0 && C > 0) LAUNCH(emb_bwd_kernel, cu_blocks(C), NN_THREADS, dtable, dout, idx, B, C);
}

/* thread i = (b*NH + h)*T + t */
static __global__ void att_fwd_kernel(float *out, float *att, const float *qkv, int B, int T,
                                      int C, int NH, int causal)
{
    size_t i = CU_TID();
    if (i >= (size_t)B * NH * T) return;
    int t = (int)(i % T), h = (int)((i / T) % NH), b = (int)(i / ((size_t)T * NH));
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    const float *q = qkv + ((size_t)b * T + t) * C3 + h * HS;
    float *a = att + i * T;
    int tmax = causal ? t : T - 1;
    float mx = -INFINITY;
    for (int t2 = 0; t2 <= tmax; t2++) {
        const float *k = qkv + ((size_t)b * T + t2) * C3 + C + h * HS;
        float dot = 0.0f;
        for (int j = 0; j < HS; j++) dot += q[j] * k[j];
        a[t2] = dot * scale;
        mx = a[t2] > mx ? a[t2] : mx;
    }
    float sum = 0.0f;
    for (int t2 = 0; t2 <= tmax; t2++) {
        a[t2] = expf(a[t2] - mx);
        sum += a[t2];
    }
    for (int t2 = 0; t2 < T; t2++) a[t2] = t2 <= tmax ? a[t2] / sum : 0.0f;
    float *o = out + ((size_t)b * T + t) * C + h * HS;
    for (int j = 0; j < HS; j++) {
        float s = 0.0f;
        for (int t2 = 0; t2 <= tmax; t2++) s += a[t2] * qkv[((size_t)b * T + t2) * C3 + 2 * C + h * HS + j];
        o[j] = s;
    }
}

/* per query row: datt[t2] = d(loss)/d(score t2) (0 where masked), dq += datt . k */
static __global__ void att_bwd_query_kernel(float *dqkv, float *datt, const float *dout,
                                            const float *qkv, const float *att, int B, int T,
                                            int C, int NH, int causal)
{
    size_t i = CU_TID();
    if (i >= (size_t)B * NH * T) return;
    int t = (int)(i % T), h = (int)((i / T) % NH), b = (int)(i / ((size_t)T * NH));
    int HS = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)HS);
    const float *a = att + i * T, *d = dout + ((size_t)b * T + t) * C + h * HS;
    float *da = datt + i * T;
    int tmax = causal ? t : T - 1;
    float dot = 0.0f;
    for (int t2 = 0; t2 <= tmax; t2++) {   /* through out = att . v */
        const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * HS;
        float s = 0.0f;
        for (int j = 0; j < HS; j++) s += d[j] * v[j];
        da[t2] = s;
        dot += a[t2] * s;
    }
    for (int t2 = 0; t2 < T; t2++)         /* through the softmax */
        da[t2] = t2 <= tmax ? a[t2] * (da[t2] - dot) * scale : 0.0f;
    float *dq = dqkv + ((size_t)b * T + t) * C3 + h * HS;
    for (int j = 0; j < HS; j++) {
        float s = 0.0f;
        for (int t2 = 0; t2 <= tmax; t2++) s += da[t2] * qkv[((size_t)b * T + t2) * C3 + C + h * HS + j];
        dq[j] += s;
    }
}

/* per key row t2 (thread i = (b*NH + h)*T + t2): dk, dv over the queries t that saw it */
static __global__ void att_bwd_key_kernel(float *dqkv, const float *datt, const float *dout,
                                          const float *qkv, const float *att, int B, int T,
                                          int C, int NH, int causal)
{
    size_t i = CU_TID();
    if (i >= (size_t)B * NH * T) return;
    int t2 = (int)(i % T), h = (int)((i / T) % NH), b = (int)(i / ((size_t)T * NH));
    int HS = C / NH, C3 = 3 * C;
    size_t rows = ((size_t)b * NH + h) * T;   /* first query row of this (b, h) */
    float *dk = dqkv + ((size_t)b * T + t2) * C3 + C + h * HS;
    float *dv = dk + C;
    for (int j = 0; j < HS; j++) {
        float sk = 0.0f, sv = 0.0f;
        for (int t = causal ? t2 : 0; t < T; t++) {
            size_t r = (rows + t) * T + t2;
            sk += datt[r] * qkv[((size_t)b * T + t) * C3 + h * HS + j];
            sv += att[r] * dout[((size_t)b * T + t) * C + h * HS + j];
        }
        dk[j] += sk;
        dv[j] += sv;
    }
}

void cu_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C,
                          int NH, int causal)
{
    size_t n = (size_t)B * NH * T;
    if (n) LAUNCH(att_fwd_kernel, cu_blocks(n), NN_THREADS, out, att, qkv, B, T, C, NH, causal);
}

void cu_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                           const float *att, int B, int T, int C, int NH, int causal)
{
    size_t n = (size_t)B * NH * T;
    if (!n) return;
    if (LAUNCH(att_bwd_query_kernel, cu_blocks(n), NN_THREADS, dqkv, datt, dout, qkv, att, B, T,
               C, NH, causal))
        return;
    LAUNCH(att_bwd_key_kernel, cu_blocks(n), NN_THREADS, dqkv, datt, dout, qkv, att, B, T, C, NH,
           causal);
}
