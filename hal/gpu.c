/* gpu.c - finding GPUs without linking against any GPU library.
 *
 * Order: simulated GPUs when asked for (CORRAL_SIM_GPUS or an explicit spec,
 * for tests and planning), then NVML (libnvidia-ml.so.1, which ships with the
 * driver and gives memory, compute capability and utilisation), then the CUDA
 * runtime (libcudart), then none. Both libraries are dlopen'ed, so the same
 * binary runs on machines without a driver; every failure on the way simply
 * means "no GPUs from this source". */
#include "hal/hal.h"
#include "common/log.h"

#include <ctype.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- simulated ------------------------------------------------------------------ */

typedef struct known_gpu {
    const char *prefix;
    int major, minor;
} known_gpu_t;

static const known_gpu_t known[] = {
    {"H200", 9, 0}, {"H100", 9, 0}, {"GH200", 9, 0}, {"B200", 10, 0}, {"A100", 8, 0},
    {"A10", 8, 6}, {"A6000", 8, 6}, {"RTX3090", 8, 6}, {"L40", 8, 9}, {"L4", 8, 9},
    {"RTX4090", 8, 9}, {"V100", 7, 0}, {"T4", 7, 5},
};

int hal_gpu_parse_sim(const char *spec, hal_gpu_t *gpus, int max, int *n, cr_err_t *err)
{
    *n = 0;
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[128];
        if (len == 0 || len >= sizeof item)
            return cr_err_set(err, CR_EINVAL, "simulated GPUs '%s': empty or overlong entry", spec);
        memcpy(item, p, len);
        item[len] = 0;
        /* COUNTxMODEL-MEMGB */
        char *x = strchr(item, 'x');
        char *dash = strrchr(item, '-');
        char *endp;
        long count = x ? strtol(item, &endp, 10) : -1;
        if (!x || endp != x || count < 1 || count > HAL_MAX_GPUS || !dash || dash < x + 2)
            return cr_err_set(err, CR_EINVAL, "simulated GPUs: entry '%s' is not COUNTxMODEL-MEMGB "
                              "(e.g. 2xH100-80GB)", item);
        double gb = strtod(dash + 1, &endp);
        if (endp == dash + 1 || strcasecmp(endp, "GB") != 0 || !(gb > 0 && gb <= 4096))
            return cr_err_set(err, CR_EINVAL, "simulated GPUs: entry '%s': memory '%s' is not "
                              "like 80GB", item, dash + 1);
        *dash = 0;
        const char *model = x + 1;
        for (long i = 0; i < count; i++) {
            if (*n == max)
                return cr_err_set(err, CR_ETOOBIG, "simulated GPUs '%s': more than %d", spec, max);
            hal_gpu_t *g = &gpus[*n];
            memset(g, 0, sizeof *g);
            g->index = *n;
            snprintf(g->model, sizeof g->model, "%s", model);
            g->mem_total = g->mem_free = (uint64_t)(gb * 1024 * 1024 * 1024);
            g->util_pct = 0;
            g->simulated = 1;
            for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
                if (strncasecmp(model, known[k].prefix, strlen(known[k].prefix)) == 0) {
                    g->cc_major = known[k].major;
                    g->cc_minor = known[k].minor;
                    break;
                }
            (*n)++;
        }
        p += len;
        if (*p == ',') p++;
    }
    if (*n == 0) return cr_err_set(err, CR_EINVAL, "simulated GPUs: empty spec");
    return 0;
}

/* ---- NVML -------------------------------------------------------------------------- */

typedef struct nvml_mem { unsigned long long total, free, used; } nvml_mem_t;
typedef struct nvml_util { unsigned int gpu, memory; } nvml_util_t;
typedef void *nvml_dev_t;

static int probe_nvml(hal_gpu_t *gpus, int max, int *n)
{
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return -1;
    int (*init)(void) = (int (*)(void))dlsym(h, "nvmlInit_v2");
    int (*shutdown)(void) = (int (*)(void))dlsym(h, "nvmlShutdown");
    int (*count)(unsigned *) = (int (*)(unsigned *))dlsym(h, "nvmlDeviceGetCount_v2");
    int (*handle)(unsigned, nvml_dev_t *) =
        (int (*)(unsigned, nvml_dev_t *))dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    int (*name)(nvml_dev_t, char *, unsigned) =
        (int (*)(nvml_dev_t, char *, unsigned))dlsym(h, "nvmlDeviceGetName");
    int (*mem)(nvml_dev_t, nvml_mem_t *) =
        (int (*)(nvml_dev_t, nvml_mem_t *))dlsym(h, "nvmlDeviceGetMemoryInfo");
    int (*cc)(nvml_dev_t, int *, int *) =
        (int (*)(nvml_dev_t, int *, int *))dlsym(h, "nvmlDeviceGetCudaComputeCapability");
    int (*util)(nvml_dev_t, nvml_util_t *) =
        (int (*)(nvml_dev_t, nvml_util_t *))dlsym(h, "nvmlDeviceGetUtilizationRates");
    unsigned c = 0;
    if (!init || !shutdown || !count || !handle || init() != 0) {
        dlclose(h);
        return -1;
    }
    if (count(&c) != 0) c = 0;
    *n = 0;
    for (unsigned i = 0; i < c && *n < max; i++) {
        nvml_dev_t dev;
        if (handle(i, &dev) != 0) continue;
        hal_gpu_t *g = &gpus[(*n)++];
        memset(g, 0, sizeof *g);
        g->index = (int)i;
        g->util_pct = -1;
        if (name) name(dev, g->model, sizeof g->model);
        nvml_mem_t m;
        if (mem && mem(dev, &m) == 0) { g->mem_total = m.total; g->mem_free = m.free; }
        if (cc) cc(dev, &g->cc_major, &g->cc_minor);
        nvml_util_t u;
        if (util && util(dev, &u) == 0) g->util_pct = (int)u.gpu;
    }
    shutdown();
    dlclose(h);
    return 0;
}

/* ---- CUDA runtime ---------------------------------------------------------------- */

static int probe_cudart(hal_gpu_t *gpus, int max, int *n)
{
    const char *names[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"};
    void *h = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return -1;
    int (*count)(int *) = (int (*)(int *))dlsym(h, "cudaGetDeviceCount");
    int (*attr)(int *, int, int) = (int (*)(int *, int, int))dlsym(h, "cudaDeviceGetAttribute");
    int (*setdev)(int) = (int (*)(int))dlsym(h, "cudaSetDevice");
    int (*meminfo)(size_t *, size_t *) = (int (*)(size_t *, size_t *))dlsym(h, "cudaMemGetInfo");
    int (*props)(void *, int) = (int (*)(void *, int))dlsym(h, "cudaGetDeviceProperties");
    /* Without a driver the count is left untouched (FACTS.md): start at 0. */
    int c = 0;
    if (!count || count(&c) != 0) c = 0;
    *n = 0;
    for (int i = 0; i < c && *n < max; i++) {
        hal_gpu_t *g = &gpus[(*n)++];
        memset(g, 0, sizeof *g);
        g->index = i;
        g->util_pct = -1;
        if (props) {
            /* The device name is the struct's first field in every CUDA version;
             * the rest of the layout varies, so only it is read. */
            char *buf = calloc(1, 64 * 1024);
            if (buf && props(buf, i) == 0) snprintf(g->model, sizeof g->model, "%.95s", buf);
            free(buf);
        }
        if (attr) {
            attr(&g->cc_major, 75, i);  /* cudaDevAttrComputeCapabilityMajor */
            attr(&g->cc_minor, 76, i);  /* cudaDevAttrComputeCapabilityMinor */
        }
        size_t fr = 0, tot = 0;
        if (setdev && meminfo && setdev(i) == 0 && meminfo(&fr, &tot) == 0) {
            g->mem_total = tot;
            g->mem_free = fr;
        }
    }
    dlclose(h);
    return 0;
}

int hal_gpu_probe(const char *sim_spec, hal_gpu_t *gpus, int max, int *n, char *source,
                  cr_err_t *err)
{
    *n = 0;
    const char *spec = sim_spec ? sim_spec : getenv("CORRAL_SIM_GPUS");
    if (spec && spec[0]) {
        strcpy(source, "sim");
        return hal_gpu_parse_sim(spec, gpus, max, n, err);
    }
    if (probe_nvml(gpus, max, n) == 0 && *n > 0) {
        strcpy(source, "nvml");
        return 0;
    }
    if (probe_cudart(gpus, max, n) == 0 && *n > 0) {
        strcpy(source, "cudart");
        return 0;
    }
    *n = 0;
    strcpy(source, "none");
    return 0;
}
