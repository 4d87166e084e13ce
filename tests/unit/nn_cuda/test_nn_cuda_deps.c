/* test_nn_cuda_deps.c - build/corral must start where CUDA is absent: it links
 * neither the CUDA runtime nor cuBLAS nor the driver, and `corral version` runs with
 * the CUDA libraries hidden from the dynamic linker. The backend object itself
 * links cudart and cuBLAS but never libcuda (the driver), carries GPU code, and is
 * found beside the executable.
 *
 * Hiding: the CUDA libraries sit in the linker's cache, which LD_LIBRARY_PATH
 * cannot take away, so the binary is started through the dynamic linker with
 * --inhibit-cache and a library path made of the directories corral's own
 * libraries come from, minus any CUDA directory. The probe, run the same way,
 * shows that the CUDA runtime really was out of reach. */
#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef NN_CUDA_BUILT
#define NN_CUDA_BUILT 0
#endif

#define LDSO "/lib64/ld-linux-x86-64.so.2"

/* Runs cmd through the shell; returns its output (malloc'd) and exit status. */
static char *run(const char *cmd, int *status)
{
    FILE *f = popen(cmd, "r");
    ASSERT_TRUE(f != NULL);
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    ASSERT_TRUE(out != NULL);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            out = realloc(out, cap);
            ASSERT_TRUE(out != NULL);
        }
    }
    out[len] = '\0';
    int st = pclose(f);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

static const char *backend_so(void) { return test_build_path("libcorral_nn_cuda.so"); }

static void test_corral_links_no_cuda(void)
{
    char cmd[4400];
    int st;
    snprintf(cmd, sizeof cmd, "ldd '%s' 2>&1", test_build_path("corral"));
    char *out = run(cmd, &st);
    ASSERT_INT_EQ(st, 0);
    ASSERT_TRUE(strstr(out, "libc.so") != NULL);   /* ldd really listed something */
    ASSERT_TRUE(strstr(out, "libcudart") == NULL);
    ASSERT_TRUE(strstr(out, "libcublas") == NULL);
    ASSERT_TRUE(strstr(out, "libcuda.so") == NULL);
    free(out);
}

static void test_backend_object(void)
{
    TEST_SKIP_IF(!NN_CUDA_BUILT, "CUDA backend not built (no nvcc, or CORRAL_CUDA=OFF)");
    char cmd[4400];
    int st;
    snprintf(cmd, sizeof cmd, "readelf -d -S -W '%s' 2>&1", backend_so());
    char *out = run(cmd, &st);
    ASSERT_INT_EQ(st, 0);
    ASSERT_TRUE(strstr(out, "[libcudart.so") != NULL);
    ASSERT_TRUE(strstr(out, "[libcublas.so") != NULL);
    ASSERT_TRUE(strstr(out, "[libcuda.so") == NULL);    /* never the driver */
    ASSERT_TRUE(strstr(out, ".nv_fatbin") != NULL);     /* device code is in it */
    free(out);
#ifdef NN_CUDA_PTX_ARCH
    /* compiled for the configured architecture: its PTX names the target */
    snprintf(cmd, sizeof cmd, "grep -c -a -F '.target sm_%s' '%s'", NN_CUDA_PTX_ARCH, backend_so());
    out = run(cmd, &st);
    fprintf(stderr, "  PTX for sm_%s in %d place(s)\n", NN_CUDA_PTX_ARCH, atoi(out));
    ASSERT_TRUE(atoi(out) > 0);
    free(out);
#endif
}

static void test_found_beside_binary(void)
{
    char cmd[4400];
    int st;
    snprintf(cmd, sizeof cmd, "env -u CORRAL_CUDA_LIB '%s' 2>&1", test_build_path("nn_cuda_probe"));
    char *out = run(cmd, &st);
    fprintf(stderr, "  probe: %s", out);
    ASSERT_INT_EQ(st, 0);
    if (NN_CUDA_BUILT) {
        ASSERT_TRUE(strstr(out, "not loaded") == NULL);
        ASSERT_TRUE(strstr(out, "backend: cuda") != NULL || strstr(out, "no GPU") != NULL ||
                    strstr(out, "GPU unusable") != NULL);
    } else {
        ASSERT_TRUE(strstr(out, "unavailable: cuda backend not loaded") != NULL);
    }
    free(out);
}

/* "dir1:dir2:..." of the libraries corral loads, without CUDA directories. */
static void system_lib_path(char *path, size_t cap)
{
    char cmd[4400];
    int st;
    snprintf(cmd, sizeof cmd, "ldd '%s'", test_build_path("corral"));
    char *out = run(cmd, &st);
    ASSERT_INT_EQ(st, 0);
    path[0] = '\0';
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char *p = strstr(line, "=> /");
        if (!p) continue;
        p += 3;
        char *end = strchr(p, ' ');
        if (end) *end = '\0';
        char *slash = strrchr(p, '/');
        *slash = '\0';
        if (strstr(p, "cuda") || strstr(path, p)) continue;
        size_t len = strlen(path);
        snprintf(path + len, cap - len, "%s%s", len ? ":" : "", p);
    }
    free(out);
    ASSERT_TRUE(path[0] != '\0');
}

static void test_runs_without_cuda(void)
{
    TEST_SKIP_IF(access(LDSO, X_OK) != 0, "no %s to start the binary through", LDSO);
    char libs[2048], cmd[8192];
    int st;
    system_lib_path(libs, sizeof libs);
    const char *hide = "env -u LD_LIBRARY_PATH " LDSO " --inhibit-cache --library-path";

    snprintf(cmd, sizeof cmd, "%s '%s' '%s' version 2>&1", hide, libs, test_build_path("corral"));
    char *out = run(cmd, &st);
    fprintf(stderr, "  corral version: %s", out);
    ASSERT_INT_EQ(st, 0);
    ASSERT_TRUE(strncmp(out, "corral ", 7) == 0);
    free(out);

    /* the same way, the CUDA runtime cannot be loaded, and the backend says so.
     * Started through ld.so, /proc/self/exe is ld.so: name the backend explicitly. */
    snprintf(cmd, sizeof cmd, "CORRAL_CUDA_LIB='%s' %s '%s' '%s' libcudart.so 2>&1", backend_so(),
             hide, libs, test_build_path("nn_cuda_probe"));
    out = run(cmd, &st);
    fprintf(stderr, "  probe: %s", out);
    ASSERT_INT_EQ(st, 0);
    ASSERT_TRUE(strstr(out, "libcudart.so: hidden") != NULL);
    ASSERT_TRUE(strstr(out, "unavailable: cuda backend not loaded") != NULL);
    if (NN_CUDA_BUILT) ASSERT_TRUE(strstr(out, "libcudart.so.") != NULL || strstr(out, "libcublas") != NULL);
    free(out);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"corral_links_no_cuda", test_corral_links_no_cuda},
        {"backend_object", test_backend_object},
        {"found_beside_binary", test_found_beside_binary},
        {"runs_without_cuda", test_runs_without_cuda},
        {NULL, NULL},
    };
    return test_main("nn_cuda.deps", cases, argc, argv);
}
