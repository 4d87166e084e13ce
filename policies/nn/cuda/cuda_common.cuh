/* cuda_common.cuh - what every file of the CUDA backend shares: the checked-call
 * macros, the kernel launch macro, the first-error record and the prototypes of the
 * ops gathered into the backend table by cuda_backend.cu.
 *
 * Errors: the ops of nn_backend_t return void, so a failed CUDA or cuBLAS call is
 * recorded (code, file:line, the call and CUDA's message) in one process-wide record
 * that keeps the first failure; nn_cuda_status() hands it to the caller as a
 * cr_err_t. Nothing here exits. An op stops at its first failed call; reductions
 * then return NaN, which nn_adam_step already treats as a step to skip.
 *
 * Kernels are plain one-thread-per-output loops without shared memory, warp
 * shuffles or atomics: the sizes corral trains (MLPs, small CNNs, short attention)
 * do not need more, every kernel is deterministic, and the same source also runs
 * under emu.h, a sequential host emulation the tests use where no GPU exists. */
#ifndef CORRAL_POLICIES_NN_CUDA_COMMON_CUH
#define CORRAL_POLICIES_NN_CUDA_COMMON_CUH

extern "C" {
#include "policies/nn/nn.h"
}

#ifdef NN_CUDA_EMU
#include "policies/nn/cuda/emu.h"
#else
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

#include <stddef.h>
#include <stdint.h>

/* Records the first failure; return 0 when the call succeeded, else the CR_E* code. */
int cu_check_cuda(cudaError_t e, int code, const char *call, const char *file, int line);
int cu_check_cublas(cublasStatus_t s, const char *call, const char *file, int line);

#define CUDA_CHECK(call) cu_check_cuda((call), CR_EINTERNAL, #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cu_check_cublas((call), #call, __FILE__, __LINE__)

/* Launches a 1-D grid and checks the launch; evaluates to 0 or a CR_E* code. */
#ifdef NN_CUDA_EMU
#define LAUNCH(kernel, blocks, threads, ...) \
    CUDA_CHECK(emu_run((blocks), (threads), [&] { kernel(__VA_ARGS__); }))
#else
#define LAUNCH(kernel, blocks, threads, ...) \
    (kernel<<<(blocks), (threads)>>>(__VA_ARGS__), CUDA_CHECK(cudaGetLastError()))
#endif

#define NN_THREADS 256u

static inline unsigned cu_blocks(size_t n) { return (unsigned)((n + NN_THREADS - 1) / NN_THREADS); }

/* The index of this thread in a 1-D launch. */
#define CU_TID() ((size_t)blockIdx.x * blockDim.x + threadIdx.x)

/* The one cuBLAS handle, created by nn_cuda_backend(). */
cublasHandle_t cu_blas(void);

/* Sums per-thread double partials of a reduction kernel: see cuda_misc.cu. */
#define NN_RED_BLOCKS 8u
#define NN_RED_PARTS (NN_RED_BLOCKS * NN_THREADS)
double *cu_red_lock(void);          /* device buffer of NN_RED_PARTS doubles, locked */
double cu_red_finish(double *parts); /* downloads, sums, unlocks; NaN after a failure */

/* cuda_dense.cu */
void cu_linear_forward(float *out, const float *inp, const float *w, const float *bias,
                       int B, int C, int OC);
void cu_linear_backward(float *dinp, float *dw, float *dbias, const float *dout,
                        const float *inp, const float *w, int B, int C, int OC);
void cu_bias_forward(float *out, const float *bias, int B, int C);
void cu_bias_backward(float *dbias, const float *dout, int B, int C);
void cu_bias_fill(float *out, const float *bias, int B, int C);
void cu_act_forward(float *out, const float *inp, nn_act_t act, size_t N);
void cu_act_backward(float *dinp, const float *dout, const float *inp, const float *out,
                     nn_act_t act, size_t N);

/* cuda_norm.cu */
void cu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int B, int C);
void cu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int B, int C);
void cu_softmax_forward(float *out, const float *inp, int B, int C);
void cu_softmax_backward(float *dinp, const float *dout, const float *out, int B, int C);

/* cuda_conv.cu */
void cu_conv2d_forward(float *out, float *col, const float *inp, const float *w,
                       const float *bias, const nn_conv_shape_t *s);
void cu_conv2d_backward(float *dinp, float *dw, float *dbias, float *col, const float *dout,
                        const float *inp, const float *w, const nn_conv_shape_t *s);
void cu_random_shift(float *out, const float *inp, const int32_t *shifts, int N, int C,
                     int H, int W, int pad);

/* cuda_attention.cu */
void cu_embedding_forward(float *out, const int32_t *idx, const float *table, int B, int C);
void cu_embedding_backward(float *dtable, const float *dout, const int32_t *idx, int B, int C);
void cu_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C,
                          int NH, int causal);
void cu_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                           const float *att, int B, int T, int C, int NH, int causal);

/* cuda_loss.cu */
double cu_mse_forward(const float *pred, const float *target, const float *weight, size_t N);
void cu_mse_backward(float *dpred, const float *pred, const float *target,
                     const float *weight, float scale, size_t N);
void cu_gauss_tanh_forward(float *action, float *logp, const float *head, const float *eps,
                           int B, int A, float lo, float hi);
void cu_gauss_tanh_backward(float *dhead, const float *daction, const float *dlogp,
                            const float *head, const float *eps, const float *action,
                            int B, int A, float lo, float hi);

/* cuda_misc.cu */
void cu_fill(float *x, float v, size_t N);
void cu_concat_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb);
void cu_concat_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb);
void cu_rows_min(float *out, const float *q, const int *rows, int K, int B);
void cu_rows_mean(float *out, const float *q, int N, int B);
void cu_td_target(float *y, const float *reward, const float *done, const float *qnext,
                  const float *logp, float gamma, float alpha, int B);
double cu_sum(const float *x, size_t N);
double cu_sumsq(const float *x, size_t N);
void cu_scale(float *x, float s, size_t N);
void cu_lerp(float *target, const float *src, float tau, size_t N);
void cu_adam_update(float *param, const float *grad, float *m, float *v, size_t N,
                    float lr, float beta1, float beta2, float eps, float wd,
                    float grad_scale, long t);

#endif
