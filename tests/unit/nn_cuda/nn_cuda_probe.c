/* nn_cuda_probe.c - a helper of test_nn_cuda_deps.c, built beside build/corral and
 * the CUDA backend: it says whether the library named in argv[1] (the CUDA
 * runtime) can be loaded at all, then what nn_backend_get("cuda") answers, so the
 * test can run it with the CUDA libraries hidden and see both. */
#include "policies/nn/nn.h"

#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc > 1) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        printf("%s: %s\n", argv[1], h ? "visible" : "hidden");
        if (h) dlclose(h);
    }
    const nn_backend_t *be = NULL;
    cr_err_t err = {0};
    if (nn_backend_get("cuda", &be, &err) == 0) printf("backend: %s\n", be->name);
    else printf("unavailable: %s\n", err.msg);
    return 0;
}
