/* cpu_backend.c - the CPU backend table (host memory, the reference ops of the
 * cpu_*.c files) and backend selection, which loads the CUDA backend from its
 * own shared object only when asked, so nothing here links against CUDA. */
#include "policies/nn/cpu.h"

#include <cblas.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *cpu_alloc(size_t bytes) { return calloc(1, bytes ? bytes : 1); }
static void cpu_free(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) { memmove(dst, src, bytes); }

static void cpu_fill(float *x, float v, size_t N)
{
    if (v == 0.0f) {   /* the common case: clearing gradients */
        memset(x, 0, N * sizeof(float));
        return;
    }
    for (size_t i = 0; i < N; i++) x[i] = v;
}

static const nn_backend_t cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .bias_forward = cpu_bias_forward,
    .bias_backward = cpu_bias_backward,
    .act_forward = cpu_act_forward,
    .act_backward = cpu_act_backward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .softmax_forward = cpu_softmax_forward,
    .softmax_backward = cpu_softmax_backward,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_backward = cpu_conv2d_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .mse_forward = cpu_mse_forward,
    .mse_backward = cpu_mse_backward,
    .gauss_tanh_forward = cpu_gauss_tanh_forward,
    .gauss_tanh_backward = cpu_gauss_tanh_backward,
    .concat_forward = cpu_concat_forward,
    .concat_backward = cpu_concat_backward,
    .rows_min = cpu_rows_min,
    .rows_mean = cpu_rows_mean,
    .td_target = cpu_td_target,
    .sum = cpu_sum,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .lerp = cpu_lerp,
    .random_shift = cpu_random_shift,
    .adam_update = cpu_adam_update,
    .bias_act_forward = cpu_bias_act_forward,
    .linear_backward_input = cpu_linear_backward_input,
    .act_backward_inplace = cpu_act_backward_inplace,
};

const nn_backend_t *nn_backend_cpu(void) { return &cpu_backend; }

void nn_cpu_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }

/* The CUDA backend lives in its own shared object so that a binary without CUDA
 * installed still starts; its entry returns NULL when it finds no usable GPU, and
 * its nn_cuda_status() then says why. It is looked for at $CORRAL_CUDA_LIB, else
 * beside the running executable, else on the dynamic linker's search path. */
#define CUDA_SO "libcorral_nn_cuda.so"
#define CUDA_ENTRY "nn_cuda_backend"
#define CUDA_STATUS "nn_cuda_status"

static void cuda_path(char *path, size_t cap)
{
    const char *env = getenv("CORRAL_CUDA_LIB");
    if (env && *env) {
        snprintf(path, cap, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) {
        snprintf(path, cap, "%.*s/%s", (int)(slash - exe), exe, CUDA_SO);
        if (access(path, F_OK) == 0) return;
    }
    snprintf(path, cap, "%s", CUDA_SO);
}

static int load_cuda(const nn_backend_t **out, cr_err_t *err)
{
    char path[PATH_MAX + sizeof CUDA_SO];
    cuda_path(path, sizeof path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return cr_err_set(err, CR_EUNAVAIL, "cuda backend not loaded (built only where nvcc "
                          "exists; CORRAL_CUDA_LIB names it): %s", dlerror());
    const nn_backend_t *(*entry)(void);
    *(void **)&entry = dlsym(h, CUDA_ENTRY);
    if (!entry) {
        cr_err_set(err, CR_EUNAVAIL, "cuda backend: %s has no symbol %s", path, CUDA_ENTRY);
        dlclose(h);
        return CR_EUNAVAIL;
    }
    const nn_backend_t *be = entry();
    if (!be) {
        int (*status)(cr_err_t *);
        *(void **)&status = dlsym(h, CUDA_STATUS);
        cr_err_t why = {0};
        if (status) status(&why);
        cr_err_set(err, CR_EUNAVAIL, "cuda backend: %s", why.msg[0] ? why.msg : "no GPU available");
        dlclose(h);
        return CR_EUNAVAIL;
    }
    *out = be;   /* the handle stays open for the life of the process */
    return 0;
}

int nn_backend_get(const char *name, const nn_backend_t **out, cr_err_t *err)
{
    if (!name || strcmp(name, "cpu") == 0) {
        *out = &cpu_backend;
        return 0;
    }
    if (strcmp(name, "cuda") == 0) return load_cuda(out, err);
    if (strcmp(name, "auto") == 0) {
        if (load_cuda(out, NULL) != 0) *out = &cpu_backend;
        return 0;
    }
    return cr_err_set(err, CR_EINVAL, "unknown nn backend '%s' (cpu, cuda, auto)", name);
}
