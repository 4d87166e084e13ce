/* nn.h - the neural-network layer of corral: ops with explicit forward and backward
 * passes behind a small backend vtable, parameter arenas, Adam/AdamW, seeding.
 *
 * Style (llm.c): every op is a _forward / _backward pair with outputs first, inputs
 * and weights next, sizes last; gradients are prefixed `d` and parameter gradients
 * accumulate with +=, so a tensor used twice simply receives both contributions.
 * Input gradients also accumulate (+=) and may be NULL when not needed.
 * Shapes use one alphabet: B rows (batch), C input features, OC output features,
 * N elements, T tokens, NH heads, H/W image height/width, A action dims.
 *
 * Backends: the CPU backend (plain C, OpenBLAS sgemm for matrix products) is the
 * reference. A CUDA backend is a separate shared object exporting
 * `const nn_backend_t *nn_cuda_backend(void)`, loaded with dlopen by
 * nn_backend_get("cuda"), so one binary runs with or without CUDA. Callers hold a
 * `const nn_backend_t *` and call through it; all float pointers given to a
 * backend's ops point to memory from that backend's alloc. */
#ifndef CORRAL_POLICIES_NN_H
#define CORRAL_POLICIES_NN_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

/* ---- activations ---- */
typedef enum nn_act {
    NN_ACT_RELU = 0,
    NN_ACT_TANH,
    NN_ACT_GELU,   /* tanh approximation */
    NN_ACT_SILU,
} nn_act_t;

/* conv2d geometry; input NCHW, weight [OC][C][KH][KW], output [N][OC][OH][OW]. */
typedef struct nn_conv_shape {
    int N, C, H, W;        /* input */
    int OC, KH, KW;        /* kernel */
    int stride, pad;
    int OH, OW;            /* filled by nn_conv_shape_init */
} nn_conv_shape_t;

/* Computes OH/OW; returns 0 or CR_EINVAL when the geometry makes no output. */
int nn_conv_shape_init(nn_conv_shape_t *s, cr_err_t *err);
/* Floats of im2col scratch one conv2d call needs: C*KH*KW * OH*OW (one image at a time). */
size_t nn_conv_col_size(const nn_conv_shape_t *s);

typedef struct nn_backend {
    const char *name;

    /* ---- memory: alloc returns zeroed memory or NULL ---- */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*upload)(void *dst, const void *host, size_t bytes);
    void (*download)(void *host, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*fill)(float *x, float v, size_t N);

    /* ---- dense: out[B][OC] = inp[B][C] . w[OC][C]^T (+ bias[OC]); bias may be NULL ---- */
    void (*linear_forward)(float *out, const float *inp, const float *w, const float *bias,
                           int B, int C, int OC);
    void (*linear_backward)(float *dinp, float *dw, float *dbias, const float *dout,
                            const float *inp, const float *w, int B, int C, int OC);
    /* out[B][C] += bias[C] */
    void (*bias_forward)(float *out, const float *bias, int B, int C);
    void (*bias_backward)(float *dbias, const float *dout, int B, int C);
    /* elementwise activation; backward reads the forward input and output */
    void (*act_forward)(float *out, const float *inp, nn_act_t act, size_t N);
    void (*act_backward)(float *dinp, const float *dout, const float *inp, const float *out,
                         nn_act_t act, size_t N);

    /* ---- normalisation: per row of C; mean[B], rstd[B] saved for backward ---- */
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int B, int C);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int B, int C);
    /* softmax over each row of C */
    void (*softmax_forward)(float *out, const float *inp, int B, int C);
    void (*softmax_backward)(float *dinp, const float *dout, const float *out, int B, int C);

    /* ---- embedding: out[B][C] = table[idx[b]][C]; idx in backend memory ---- */
    void (*embedding_forward)(float *out, const int32_t *idx, const float *table, int B, int C);
    void (*embedding_backward)(float *dtable, const float *dout, const int32_t *idx, int B, int C);

    /* ---- conv2d via im2col + GEMM; col is scratch of nn_conv_col_size floats ---- */
    void (*conv2d_forward)(float *out, float *col, const float *inp, const float *w,
                           const float *bias, const nn_conv_shape_t *s);
    void (*conv2d_backward)(float *dinp, float *dw, float *dbias, float *col, const float *dout,
                            const float *inp, const float *w, const nn_conv_shape_t *s);

    /* ---- multi-head self-attention (no projections): qkv[B][T][3C] -> out[B][T][C];
     * att[B][NH][T][T] holds the softmax weights for backward; datt is scratch of
     * the same size. causal != 0 masks future tokens. ---- */
    void (*attention_forward)(float *out, float *att, const float *qkv, int B, int T, int C,
                              int NH, int causal);
    void (*attention_backward)(float *dqkv, float *datt, const float *dout, const float *qkv,
                               const float *att, int B, int T, int C, int NH, int causal);

    /* ---- losses ---- */
    /* mean over N of w*(pred - target)^2, w = weight ? weight[i] : 1 */
    double (*mse_forward)(const float *pred, const float *target, const float *weight, size_t N);
    /* dpred += scale * 2 * w * (pred - target) */
    void (*mse_backward)(float *dpred, const float *pred, const float *target,
                         const float *weight, float scale, size_t N);
    /* Squashed Gaussian: head[B][2A] = (mu, raw log std); log_std = lo + (hi-lo)/2 *
     * (tanh(raw) + 1); u = mu + exp(log_std) * eps; action = tanh(u);
     * logp[B] = sum_A log N(u; mu, std) - log(1 - tanh(u)^2) (exact, stable form).
     * eps[B][A] is standard normal noise (zeros give the mode). */
    void (*gauss_tanh_forward)(float *action, float *logp, const float *head, const float *eps,
                               int B, int A, float lo, float hi);
    /* daction[B][A] and dlogp[B] may be NULL (no gradient from that output). */
    void (*gauss_tanh_backward)(float *dhead, const float *daction, const float *dlogp,
                                const float *head, const float *eps, const float *action,
                                int B, int A, float lo, float hi);

    /* ---- glue ---- */
    /* out[B][Ca+Cb] = [a | b]; backward accumulates into da/db (either may be NULL) */
    void (*concat_forward)(float *out, const float *a, const float *b, int B, int Ca, int Cb);
    void (*concat_backward)(float *da, float *db, const float *dout, int B, int Ca, int Cb);
    /* out[B] = min over the K rows of q[N][B] whose indices are rows[K] (host ints) */
    void (*rows_min)(float *out, const float *q, const int *rows, int K, int B);
    /* out[B] = mean over rows of q[N][B] */
    void (*rows_mean)(float *out, const float *q, int N, int B);
    /* y[B] = reward + gamma * (1 - done) * (qnext - alpha * logp) */
    void (*td_target)(float *y, const float *reward, const float *done, const float *qnext,
                      const float *logp, float gamma, float alpha, int B);
    double (*sum)(const float *x, size_t N);
    double (*sumsq)(const float *x, size_t N);
    void (*scale)(float *x, float s, size_t N);
    /* target = (1 - tau) * target + tau * src */
    void (*lerp)(float *target, const float *src, float tau, size_t N);
    /* DrQ random shift: pad each image by `pad` (edge replicate) and crop back at
     * offset shifts[2n], shifts[2n+1] in [0, 2*pad]; inp/out [N][C][H][W]. */
    void (*random_shift)(float *out, const float *inp, const int32_t *shifts, int N, int C,
                         int H, int W, int pad);
    /* Adam(W) step with bias correction for step t (>= 1); grads are multiplied by
     * grad_scale first (gradient clipping); wd > 0 gives decoupled weight decay. */
    void (*adam_update)(float *param, const float *grad, float *m, float *v, size_t N,
                        float lr, float beta1, float beta2, float eps, float wd,
                        float grad_scale, long t);

    /* ---- fused passes of the MLP's hot path. Optional: NULL in a backend
     * without them, and callers then use the plain ops above. Unlike those they
     * overwrite their output instead of accumulating, which saves the clearing
     * pass, and each makes one pass over memory where the plain ops make two. ---- */
    /* pre[B][C] += bias[C]; out = act(pre) (pre comes from linear_forward without bias) */
    void (*bias_act_forward)(float *out, float *pre, const float *bias, nn_act_t act, int B, int C);
    /* dinp[B][C] = dout[B][OC] . w[OC][C] */
    void (*linear_backward_input)(float *dinp, const float *dout, const float *w, int B, int C, int OC);
    /* d[i] *= act'(x) for the forward input inp and output out (in place) */
    void (*act_backward_inplace)(float *d, const float *inp, const float *out, nn_act_t act, size_t N);
} nn_backend_t;

/* The reference backend; always available. */
const nn_backend_t *nn_backend_cpu(void);
/* Threads the CPU backend's BLAS may use (process-wide). Small SAC-sized matrices
 * run best on one: extra OpenBLAS threads mostly spin in sched_yield. */
void nn_cpu_set_threads(int n);

/* "cpu", "cuda" or "auto" (cuda when it loads and sees a GPU, else cpu). A CUDA
 * backend that is not built or finds no GPU is CR_EUNAVAIL with the reason. The
 * result is static; never freed. */
int nn_backend_get(const char *name, const nn_backend_t **out, cr_err_t *err);

typedef struct nn_pool nn_pool_t;   /* CPU lanes: nn_pool_create, at the end */

/* ---- deterministic random numbers (xoshiro256**; state fully saved/restored) ---- */
typedef struct nn_rng {
    uint64_t s[4];
} nn_rng_t;

void nn_rng_seed(nn_rng_t *r, uint64_t seed);
uint64_t nn_rng_u64(nn_rng_t *r);
float nn_rng_uniform(nn_rng_t *r);            /* [0, 1) */
float nn_rng_normal(nn_rng_t *r);             /* standard normal (Box-Muller, uncached) */
uint32_t nn_rng_below(nn_rng_t *r, uint32_t n); /* [0, n), n > 0 */
/* n standard normals, the same values as n calls of nn_rng_normal, with their
 * transcendental part split across the pool's lanes (NULL: none); raw is the
 * caller's scratch of 2n words. */
void nn_rng_normals(nn_rng_t *r, float *out, size_t n, uint64_t *raw, nn_pool_t *pool);

/* ---- initialisation on host memory ---- */
void nn_init_uniform(nn_rng_t *r, float *x, size_t N, float bound);   /* U(-bound, bound) */
void nn_init_normal(nn_rng_t *r, float *x, size_t N, float stddev);
/* PyTorch's default for Linear/Conv: weight and bias U(+-1/sqrt(fan_in)). */
void nn_init_linear(nn_rng_t *r, float *w, float *bias, int fan_in, size_t Nw, size_t Nb);

/* ---- parameter arenas: named tensors in one allocation, grads in another ---- */
#define NN_NAME_MAX 96
#define NN_MAX_DIMS 4

typedef struct nn_tensor {
    char name[NN_NAME_MAX];
    int ndim;
    int shape[NN_MAX_DIMS];
    size_t offset;   /* in floats, into data and grad */
    size_t numel;
} nn_tensor_t;

typedef struct nn_params {
    const nn_backend_t *be;  /* borrowed */
    nn_tensor_t *t;          /* count entries, owned */
    int count, cap;
    size_t numel;
    float *data;             /* backend memory, numel floats, after nn_params_alloc */
    float *grad;
} nn_params_t;

void nn_params_init(nn_params_t *p, const nn_backend_t *be);
/* Declares a tensor before nn_params_alloc; returns its index or a negative code. */
int nn_params_add(nn_params_t *p, const char *name, int ndim, const int *shape, cr_err_t *err);
int nn_params_alloc(nn_params_t *p, cr_err_t *err);
void nn_params_destroy(nn_params_t *p);
float *nn_params_data(const nn_params_t *p, int idx);
float *nn_params_grad(const nn_params_t *p, int idx);
int nn_params_find(const nn_params_t *p, const char *name);
void nn_params_zero_grad(nn_params_t *p);
/* Copies values (not grads) between two arenas of identical layout. */
int nn_params_copy(nn_params_t *dst, const nn_params_t *src, cr_err_t *err);

/* ---- Adam / AdamW over one arena ---- */
typedef struct nn_adam {
    float lr, beta1, beta2, eps;
    float weight_decay;      /* 0: Adam; > 0: AdamW (decoupled) */
    float clip_norm;         /* <= 0: no clipping; else global L2 norm of grads */
    long t;                  /* steps taken */
    float *m, *v;            /* backend memory, numel floats each */
    size_t numel;
} nn_adam_t;

int nn_adam_init(nn_adam_t *o, const nn_params_t *p, float lr, float weight_decay,
                 float clip_norm, cr_err_t *err);
void nn_adam_destroy(nn_adam_t *o, const nn_backend_t *be);
/* Global L2 norm of p's grads (used for clipping and for the NaN check). */
double nn_grad_norm(const nn_params_t *p);
/* One step with the grads in p. Returns 0, or CR_EINVAL when the gradient norm
 * is not finite: then nothing changes, not even the step count (the caller
 * counts a skip). *norm_out (may be NULL) receives the pre-clipping norm. */
int nn_adam_step(nn_adam_t *o, nn_params_t *p, double *norm_out);

/* nn_adam_step for a gradient norm the caller already has (nn_grad_norm of p),
 * its elementwise update split across the pool's lanes (NULL: none). */
int nn_adam_step_norm(nn_adam_t *o, nn_params_t *p, double norm, nn_pool_t *pool);

/* ---- CPU lanes: a fork-join pool for the independent pieces of one step ----
 * nn_pool_run calls fn(arg, i) for i in [0, n) across `lanes` threads (the
 * caller's included) and returns when all are done. Tasks must write disjoint
 * memory; then the result does not depend on the lane count. A NULL pool, one
 * lane, or a call from inside a task runs the tasks in order on the caller's
 * thread. One caller at a time per pool. Each task runs its BLAS calls on one
 * thread, so keep nn_cpu_set_threads(1) when lanes > 1. */
typedef void (*nn_task_fn)(void *arg, int i);

int nn_pool_create(nn_pool_t **out, int lanes, cr_err_t *err);
void nn_pool_destroy(nn_pool_t *p);
int nn_pool_lanes(const nn_pool_t *p);
void nn_pool_run(nn_pool_t *p, int n, nn_task_fn fn, void *arg);

#endif
