/* emu.h - a sequential host emulation of the small part of CUDA and cuBLAS the
 * backend uses, so the tests run the backend's own kernels and cuBLAS calls on a
 * machine without a GPU. Compiled only into the test copy of the backend
 * (NN_CUDA_EMU); the real backend never includes it.
 *
 * What it checks: kernel indexing and bounds (run under AddressSanitizer in the
 * sanitizer build), launch configurations (zero or oversized grids fail as on a
 * GPU), cuBLAS argument order and leading dimensions (validated as cuBLAS does,
 * then computed by column-major OpenBLAS). What it cannot check: races between
 * threads and the GPU memory model, since every thread runs to completion in turn.
 * Setting CORRAL_CUDA_EMU_NODRIVER makes cudaGetDeviceCount fail with error 35
 * as it does on a machine without the NVIDIA driver; CORRAL_CUDA_EMU_FAIL, a list
 * of malloc, memcpy, sgemm, launch, makes those calls fail while it is set. */
#ifndef CORRAL_POLICIES_NN_CUDA_EMU_H
#define CORRAL_POLICIES_NN_CUDA_EMU_H

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define __global__
#define __device__
#define __host__

static inline int emu_fail(const char *call)
{
    const char *f = getenv("CORRAL_CUDA_EMU_FAIL");
    return f && strstr(f, call);
}

struct dim3 { unsigned x, y, z; };
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInsufficientDriver = 35,
} cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToDevice,
    cudaMemcpyDeviceToHost,
    cudaMemcpyDeviceToDevice,
};

static inline const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver:
        return "CUDA driver version is insufficient for CUDA runtime version";
    }
    return "unknown error";
}

static inline cudaError_t cudaGetDeviceCount(int *n)
{
    if (getenv("CORRAL_CUDA_EMU_NODRIVER")) return cudaErrorInsufficientDriver;
    *n = 1;
    return cudaSuccess;
}

static inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }

static inline cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = emu_fail("malloc") ? NULL : malloc(n ? n : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

static inline cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}

static inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    (void)k;
    if (emu_fail("memcpy")) return cudaErrorInvalidValue;
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}

static inline cudaError_t cudaMemset(void *p, int v, size_t n)
{
    memset(p, v, n);
    return cudaSuccess;
}

/* A launch: every block, every thread, in order. */
template <typename F>
static inline cudaError_t emu_run(unsigned blocks, unsigned threads, F body)
{
    if (blocks == 0 || threads == 0 || threads > 1024 || emu_fail("launch"))
        return cudaErrorInvalidConfiguration;
    gridDim = dim3{blocks, 1, 1};
    blockDim = dim3{threads, 1, 1};
    for (unsigned b = 0; b < blocks; b++)
        for (unsigned t = 0; t < threads; t++) {
            blockIdx = dim3{b, 0, 0};
            threadIdx = dim3{t, 0, 0};
            body();
        }
    return cudaSuccess;
}

/* ---- cuBLAS ---- */
typedef struct emu_blas *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;

static inline const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

static inline cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = (cublasHandle_t)malloc(1);
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

static inline cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

static inline int emu_max1(int v) { return v > 1 ? v : 1; }

/* Column-major C[m][n] = alpha op(A)[m][k] op(B)[k][n] + beta C, with cuBLAS's checks. */
static inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         const float *B, int ldb, const float *beta, float *C,
                                         int ldc)
{
    if (!h || m < 0 || n < 0 || k < 0 || lda < emu_max1(ta == CUBLAS_OP_N ? m : k) ||
        ldb < emu_max1(tb == CUBLAS_OP_N ? k : n) || ldc < emu_max1(m))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (emu_fail("sgemm")) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, *alpha, A, lda, B, ldb,
                *beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

#endif
