/* cuda_backend.cu - the CUDA backend's table, its one-time device set-up, device
 * memory, and the record of the first failed CUDA or cuBLAS call.
 *
 * This file is the shared object's whole interface (everything else is hidden):
 *   nn_cuda_backend()  the table, or NULL when no GPU can be used;
 *   nn_cuda_status()   0, or the code and message of the first failure: why
 *                      nn_cuda_backend() returned NULL ("no GPU: ..."), or which
 *                      call of which op failed later.
 * Set-up runs once per process: count devices, select device 0, create the cuBLAS
 * handle, run one probe kernel (which fails when the GPU's architecture has no
 * code in this build), allocate the reduction scratch. */
#include "policies/nn/cuda/cuda_common.cuh"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define EXPORT extern "C" __attribute__((visibility("default")))

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static cr_err_t first_err;   /* the first failure since load; code 0 while none */
static int in_setup;         /* set-up failures reach the caller through the loader */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int record(int code, const char *file, int line, const char *call, const char *what,
                  int num)
{
    pthread_mutex_lock(&err_lock);
    if (first_err.code == 0) {
        first_err.code = code;
        snprintf(first_err.msg, sizeof first_err.msg, "%s (%s:%d): %s (error %d)", call,
                 base_name(file), line, what, num);
        /* an op has no other way to tell; once, since later failures follow from it */
        if (!in_setup) fprintf(stderr, "nn-cuda: %s\n", first_err.msg);
    }
    pthread_mutex_unlock(&err_lock);
    return code;
}

int cu_check_cuda(cudaError_t e, int code, const char *call, const char *file, int line)
{
    if (e == cudaSuccess) return 0;
    if (e == cudaErrorMemoryAllocation) code = CR_ENOMEM;
    return record(code, file, line, call, cudaGetErrorString(e), (int)e);
}

int cu_check_cublas(cublasStatus_t s, const char *call, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    return record(s == CUBLAS_STATUS_ALLOC_FAILED ? CR_ENOMEM : CR_EINTERNAL, file, line, call,
                  cublasGetStatusString(s), (int)s);
}

/* ---- memory ---- */

static void *cu_alloc(size_t bytes)
{
    void *p = NULL;
    if (CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1))) return NULL;
    if (CUDA_CHECK(cudaMemset(p, 0, bytes))) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cu_free(void *p)
{
    if (p) CUDA_CHECK(cudaFree(p));
}

static void cu_upload(void *dst, const void *host, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice));
}

static void cu_download(void *host, const void *src, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
}

static void cu_copy(void *dst, const void *src, size_t bytes)
{
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

/* ---- set-up ---- */

static cublasHandle_t blas;
static const nn_backend_t *ready;   /* the table once set-up succeeded */
static pthread_once_t once = PTHREAD_ONCE_INIT;
double *cu_red_parts;               /* cuda_misc.cu's reduction scratch */

cublasHandle_t cu_blas(void) { return blas; }

/* Filled field by field: C++17 has no designated initialisers. */
static nn_backend_t cuda_table;

static void fill_table(nn_backend_t *t)
{
    t->name = "cuda";
    t->alloc = cu_alloc;
    t->free = cu_free;
    t->upload = cu_upload;
    t->download = cu_download;
    t->copy = cu_copy;
    t->fill = cu_fill;
    t->linear_forward = cu_linear_forward;
    t->linear_backward = cu_linear_backward;
    t->bias_forward = cu_bias_forward;
    t->bias_backward = cu_bias_backward;
    t->act_forward = cu_act_forward;
    t->act_backward = cu_act_backward;
    t->layernorm_forward = cu_layernorm_forward;
    t->layernorm_backward = cu_layernorm_backward;
    t->softmax_forward = cu_softmax_forward;
    t->softmax_backward = cu_softmax_backward;
    t->embedding_forward = cu_embedding_forward;
    t->embedding_backward = cu_embedding_backward;
    t->conv2d_forward = cu_conv2d_forward;
    t->conv2d_backward = cu_conv2d_backward;
    t->attention_forward = cu_attention_forward;
    t->attention_backward = cu_attention_backward;
    t->mse_forward = cu_mse_forward;
    t->mse_backward = cu_mse_backward;
    t->gauss_tanh_forward = cu_gauss_tanh_forward;
    t->gauss_tanh_backward = cu_gauss_tanh_backward;
    t->concat_forward = cu_concat_forward;
    t->concat_backward = cu_concat_backward;
    t->rows_min = cu_rows_min;
    t->rows_mean = cu_rows_mean;
    t->td_target = cu_td_target;
    t->sum = cu_sum;
    t->sumsq = cu_sumsq;
    t->scale = cu_scale;
    t->lerp = cu_lerp;
    t->random_shift = cu_random_shift;
    t->adam_update = cu_adam_update;
}

/* Every failure here means the backend cannot be used at all: CR_EUNAVAIL. */
#define SETUP_CHECK(call, why) cu_check_cuda((call), CR_EUNAVAIL, why ": " #call, __FILE__, __LINE__)

static void setup(void)
{
    int count = 0;   /* left untouched when the driver is missing (error 35) */
    if (SETUP_CHECK(cudaGetDeviceCount(&count), "no GPU")) return;
    if (count == 0) {
        record(CR_EUNAVAIL, __FILE__, __LINE__, "no GPU", "cudaGetDeviceCount found no device", 0);
        return;
    }
    if (SETUP_CHECK(cudaSetDevice(0), "GPU unusable")) return;
    cublasStatus_t bs = cublasCreate(&blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        record(CR_EUNAVAIL, __FILE__, __LINE__, "GPU unusable: cublasCreate",
               cublasGetStatusString(bs), (int)bs);
        return;
    }
    void *probe = NULL;
    if (SETUP_CHECK(cudaMalloc(&probe, NN_RED_PARTS * sizeof(double)), "GPU unusable")) return;
    cu_red_parts = (double *)probe;
    /* a kernel launch fails here when no code in this build fits the GPU */
    cu_fill((float *)probe, 0.0f, 1);
    if (first_err.code) {
        pthread_mutex_lock(&err_lock);
        char why[sizeof first_err.msg];
        snprintf(why, sizeof why, "GPU unusable: %s", first_err.msg);
        memcpy(first_err.msg, why, sizeof why);
        first_err.code = CR_EUNAVAIL;
        pthread_mutex_unlock(&err_lock);
        return;
    }
    if (SETUP_CHECK(cudaDeviceSynchronize(), "GPU unusable")) return;
    fill_table(&cuda_table);
    ready = &cuda_table;
}

static void setup_quietly(void)
{
    in_setup = 1;
    setup();
    in_setup = 0;
}

EXPORT const nn_backend_t *nn_cuda_backend(void)
{
    pthread_once(&once, setup_quietly);
    return ready;
}

EXPORT int nn_cuda_status(cr_err_t *err)
{
    pthread_mutex_lock(&err_lock);
    int code = first_err.code;
    if (err) *err = first_err;
    pthread_mutex_unlock(&err_lock);
    return code;
}
