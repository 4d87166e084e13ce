/* cuda_misc.cu - the small glue ops (fill, concatenation, ensemble reductions, TD
 * targets, scaling, Polyak averaging), the reductions that return a double (sum,
 * sum of squares; MSE uses the same machinery) and the Adam(W) update; the CUDA
 * twins of cpu_misc.c.
 *
 * Reductions: NN_RED_PARTS threads each sum a strided share in double into one
 * slot of a preallocated device buffer; the host downloads the slots and adds
 * them. The buffer is shared, so a mutex serialises reductions between threads. */
#include "policies/nn/cuda/cuda_common.cuh"

#include <math.h>
#include <pthread.h>

extern double *cu_red_parts;   /* allocated by cuda_backend.cu's set-up */
static pthread_mutex_t red_lock = PTHREAD_MUTEX_INITIALIZER;

double *cu_red_lock(void)
{
    pthread_mutex_lock(&red_lock);
    return cu_red_parts;
}

double cu_red_finish(double *parts)
{
    double host[NN_RED_PARTS];
    int rc = CUDA_CHECK(cudaMemcpy(host, parts, sizeof host, cudaMemcpyDeviceToHost));
    pthread_mutex_unlock(&red_lock);
    if (rc) return NAN;
    double s = 0.0;
    for (unsigned i = 0; i < NN_RED_PARTS; i++) s += host[i];
    return s;
}

/* parts[NN_RED_PARTS]: each thread's share of sum x (or x^2 when sq) */
static __global__ void sum_kernel(double *parts, const float *x, size_t N, int sq)
{
    size_t tid = CU_TID();
    double s = 0.0;
    for (size_t i = tid; i < N; i += NN_RED_PARTS) s += sq ? (double)x[i] * x[i] : (double)x[i];
    parts[tid] = s;
}

static double reduce(const float *x, size_t N, int sq)
{
    double *parts = cu_red_lock();
    if (LAUNCH(sum_kernel, NN_RED_BLOCKS, NN_THREADS, parts, x, N, sq)) {
        cu_red_finish(parts);
        return NAN;
    }
    return cu_red_finish(parts);
}

double cu_sum(const float *x, size_t N) { return reduce(x, N, 0); }
double cu_sumsq(const float *x, size_t N) { return reduce(x, N, 1); }

static __global__ void fill_kernel(float *x, float v, size_t N)
{
    size_t i = CU_TID();
    if (i < N) x[i] = v;
}

void cu_fill(float *x, float v, size_t N)
{
    if (N) LAUNCH(fill_kernel, cu_blocks(N), NN_THREADS, x, v, N);
}

/* out[B][Ca+Cb] = [a | b], one thread per output element */
static __global__ void concat_fwd_kernel(float *out, const float *a, const float *b, int B,
                                         int Ca, int Cb)
{
    size_t i = CU_TID(), C = (size_t)Ca + Cb;
    if (i >= (size_t)B * C) return;
    size_t r = i / C, c = i % C;
    out[i] = c < (size_t)Ca ? a[r * Ca + c] : b[r * Cb + (c - Ca)];
}

static __global__ void concat_bwd_kernel(float *da, float *db, const float *dout, int B,
                                         int Ca, int Cb)
{
    size_t i = CU_TID(), C = (size_t)Ca + Cb;
    if (i >= (size_t)B * C) return;
    size_t r = i / C, c = i % C;
    if (c < (size_t)Ca) {
        if (da) da[r * Ca + c] += dout[i];
    } else if (db) {
        db[r * Cb + (c - Ca)] += dout[i];
    }
}

void cu_concat_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb)
{
    size_t n = (size_t)B * (Ca + Cb);
    if (n) LAUNCH(concat_fwd_kernel, cu_blocks(n), NN_THREADS, out, a, b, B, Ca, Cb);
}

void cu_concat_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb)
{
    size_t n = (size_t)B * (Ca + Cb);
    if (n && (da || db)) LAUNCH(concat_bwd_kernel, cu_blocks(n), NN_THREADS, da, db, dout, B, Ca, Cb);
}

/* out[B] = first ? row : min(out, row), row = q[r][B]: one launch per chosen row,
 * since the row indices are host ints and K is small (an ensemble's size). */
static __global__ void row_min_kernel(float *out, const float *row, int B, int first)
{
    size_t b = CU_TID();
    if (b >= (size_t)B) return;
    float v = row[b];
    if (first || v < out[b]) out[b] = v;   /* the CPU's comparison, so NaNs fall alike */
}

void cu_rows_min(float *out, const float *q, const int *rows, int K, int B)
{
    if (B <= 0) return;
    for (int k = 0; k < K; k++)
        if (LAUNCH(row_min_kernel, cu_blocks(B), NN_THREADS, out, q + (size_t)rows[k] * B, B, k == 0))
            return;
}

static __global__ void rows_mean_kernel(float *out, const float *q, int N, int B)
{
    size_t b = CU_TID();
    if (b >= (size_t)B) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++) s += q[(size_t)n * B + b];
    out[b] = s / N;
}

void cu_rows_mean(float *out, const float *q, int N, int B)
{
    if (B > 0) LAUNCH(rows_mean_kernel, cu_blocks(B), NN_THREADS, out, q, N, B);
}

static __global__ void td_kernel(float *y, const float *reward, const float *done,
                                 const float *qnext, const float *logp, float gamma,
                                 float alpha, int B)
{
    size_t b = CU_TID();
    if (b < (size_t)B) y[b] = reward[b] + gamma * (1.0f - done[b]) * (qnext[b] - alpha * logp[b]);
}

void cu_td_target(float *y, const float *reward, const float *done, const float *qnext,
                  const float *logp, float gamma, float alpha, int B)
{
    if (B > 0) LAUNCH(td_kernel, cu_blocks(B), NN_THREADS, y, reward, done, qnext, logp, gamma, alpha, B);
}

static __global__ void scale_kernel(float *x, float s, size_t N)
{
    size_t i = CU_TID();
    if (i < N) x[i] *= s;
}

void cu_scale(float *x, float s, size_t N)
{
    if (N) LAUNCH(scale_kernel, cu_blocks(N), NN_THREADS, x, s, N);
}

static __global__ void lerp_kernel(float *target, const float *src, float tau, size_t N)
{
    size_t i = CU_TID();
    if (i < N) target[i] += tau * (src[i] - target[i]);
}

void cu_lerp(float *target, const float *src, float tau, size_t N)
{
    if (N) LAUNCH(lerp_kernel, cu_blocks(N), NN_THREADS, target, src, tau, N);
}

/* c1, c2: the bias corrections 1 - beta^t, computed once on the host */
static __global__ void adam_kernel(float *param, const float *grad, float *m, float *v,
                                   size_t N, float lr, float beta1, float beta2, float eps,
                                   float wd, float grad_scale, float c1, float c2)
{
    size_t i = CU_TID();
    if (i >= N) return;
    float g = grad[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = param[i];
    param[i] = p - lr * ((mi / c1) / (sqrtf(vi / c2) + eps) + wd * p);
}

void cu_adam_update(float *param, const float *grad, float *m, float *v, size_t N,
                    float lr, float beta1, float beta2, float eps, float wd,
                    float grad_scale, long t)
{
    float c1 = 1.0f - powf(beta1, (float)t), c2 = 1.0f - powf(beta2, (float)t);
    if (N)
        LAUNCH(adam_kernel, cu_blocks(N), NN_THREADS, param, grad, m, v, N, lr, beta1, beta2,
               eps, wd, grad_scale, c1, c2);
}
