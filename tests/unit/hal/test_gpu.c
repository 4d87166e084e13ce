/* test_gpu.c - the GPU probe: without a GPU it reports none (never a crash or a
 * link error), simulated GPUs parse from CORRAL_SIM_GPUS, bad specs are errors. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tests/harness.h"
#include "hal/hal.h"

#include <dlfcn.h>
#include <stdlib.h>

static void test_probe_real(void)
{
    unsetenv("CORRAL_SIM_GPUS");
    hal_gpu_t g[HAL_MAX_GPUS];
    int n = -1;
    char src[32];
    cr_err_t err = {0};
    ASSERT_OK(hal_gpu_probe(NULL, g, HAL_MAX_GPUS, &n, src, &err), &err);
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!nvml && n == 0) {
        ASSERT_STR_EQ(src, "none");   /* the machine has no GPU driver: "no GPUs" */
        return;
    }
    if (nvml) dlclose(nvml);
    TEST_SKIP_IF(n == 0, "NVML present but no GPU answered (source %s)", src);
    ASSERT_TRUE(strcmp(src, "nvml") == 0 || strcmp(src, "cudart") == 0);
    ASSERT_INT_EQ(g[0].simulated, 0);
    ASSERT_TRUE(g[0].mem_total > 0);
}

static void test_sim_env(void)
{
    setenv("CORRAL_SIM_GPUS", "2xH100-80GB,1xL4-24GB", 1);
    hal_gpu_t g[HAL_MAX_GPUS];
    int n;
    char src[32];
    cr_err_t err = {0};
    ASSERT_OK(hal_gpu_probe(NULL, g, HAL_MAX_GPUS, &n, src, &err), &err);
    ASSERT_STR_EQ(src, "sim");
    ASSERT_INT_EQ(n, 3);
    ASSERT_STR_EQ(g[0].model, "H100");
    ASSERT_INT_EQ(g[1].index, 1);
    ASSERT_INT_EQ(g[0].mem_total, 80ULL << 30);
    ASSERT_INT_EQ(g[0].cc_major, 9);
    ASSERT_INT_EQ(g[2].cc_major, 8);
    ASSERT_INT_EQ(g[2].cc_minor, 9);
    ASSERT_INT_EQ(g[2].simulated, 1);
    /* An explicit spec (a config entry) wins over the environment. */
    ASSERT_OK(hal_gpu_probe("1xA100-40GB", g, HAL_MAX_GPUS, &n, src, &err), &err);
    ASSERT_INT_EQ(n, 1);
    ASSERT_INT_EQ(g[0].mem_total, 40ULL << 30);
    unsetenv("CORRAL_SIM_GPUS");
}

static void test_sim_bad(void)
{
    hal_gpu_t g[4];
    int n;
    cr_err_t err = {0};
    const char *bad[] = {"H100", "0xH100-80GB", "2xH100", "2xH100-80", "2xH100-lotsGB", ",", "x-1GB"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_INT_EQ(hal_gpu_parse_sim(bad[i], g, 4, &n, &err), CR_EINVAL);
        ASSERT_TRUE(strstr(err.msg, "simulated GPUs") != NULL);
    }
    ASSERT_INT_EQ(hal_gpu_parse_sim("5xT4-16GB", g, 4, &n, &err), CR_ETOOBIG);
    ASSERT_OK(hal_gpu_parse_sim("1xMyGPU-12GB", g, 4, &n, &err), &err);
    ASSERT_INT_EQ(g[0].cc_major, 0);   /* unknown model: capability unknown */
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"probe_real", test_probe_real},
        {"sim_env", test_sim_env},
        {"sim_bad", test_sim_bad},
        {NULL, NULL},
    };
    return test_main("hal_gpu", cases, argc, argv);
}
