/* policies.c - CPU cost of the generative policies, in one run: for the
 * flow-matching policy and the VLA at two sizes each, the time of one action
 * (K integration steps at batch 1) and of one flow-matching training step
 * (forward, backward, AdamW at batch 64), their FLOP counts, and the rate they
 * reach as a fraction of the sgemm peak measured at the start of the same run
 * (OpenBLAS, one thread, 1024^3). The baseline is that peak: the figures say how
 * much of the machine the models use, not how they compare to another library.
 *
 * usage: policies [--seconds S]   (time budget per measurement, default 1) */
#include "bench/benchutil.h"
#include "common/time.h"
#include "policies/models/gen.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double budget_s = 1.0;

static double sgemm_peak(void)
{
    int n = 1024;
    float *a = calloc((size_t)n * n, sizeof(float)), *b = calloc((size_t)n * n, sizeof(float));
    float *c = calloc((size_t)n * n, sizeof(float));
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        int64_t t0 = cr_now_ns();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double s = (double)(cr_now_ns() - t0) / 1e9, g = 2.0 * n * n * n / s / 1e9;
        best = g > best ? g : best;
    }
    free(a); free(b); free(c);
    return best;
}

/* Runs fn until the budget is spent (at least 3 times); returns the median seconds. */
static double timeit(void (*fn)(void *), void *ctx)
{
    double t[4096];
    int n = 0;
    int64_t start = cr_now_ns();
    fn(ctx);   /* warm-up */
    while (n < 4096 && (n < 3 || (double)(cr_now_ns() - start) / 1e9 < budget_s)) {
        int64_t t0 = cr_now_ns();
        fn(ctx);
        t[n++] = (double)(cr_now_ns() - t0) / 1e9;
    }
    return bench_percentile(t, (size_t)n, 50);
}

/* ---- flow ---- */
typedef struct { pol_flow_t f; nn_adam_t opt; nn_rng_t rng; float *obs, *chunk, *out; int B; } flow_ctx_t;
static void flow_act(void *c) { flow_ctx_t *k = c; pol_flow_sample(&k->f, k->obs, 1, NULL, 0, NULL, NULL, k->out); }
static void flow_train(void *c)
{
    flow_ctx_t *k = c;
    nn_params_zero_grad(&k->f.params);
    pol_flow_bc_step(&k->f, k->obs, k->chunk, k->B, &k->rng);
    nn_adam_step(&k->opt, &k->f.params, NULL);
}

/* ---- vla ---- */
typedef struct { pol_vla_t v; nn_adam_t opt; nn_rng_t rng; float *img, *prop, *obj, *chunk, *out; int32_t *ids;
                 int B; } vla_ctx_t;
static void vla_act(void *c)
{
    vla_ctx_t *k = c;
    pol_vla_obs_t o = {k->img, k->ids, k->prop, k->obj};
    pol_vla_sample(&k->v, &o, 1, NULL, k->out);
}
static void vla_train(void *c)
{
    vla_ctx_t *k = c;
    pol_vla_obs_t o = {k->img, k->ids, k->prop, k->obj};
    nn_params_zero_grad(&k->v.params);
    pol_vla_bc_step(&k->v, &o, k->chunk, k->B, &k->rng);
    nn_adam_step(&k->opt, &k->v.params, NULL);
}

static float *filled(nn_rng_t *r, size_t n, float lo, float hi)
{
    float *x = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * nn_rng_uniform(r);
    return x;
}

static void report(const char *name, double act_s, double act_flops, double train_s, double train_flops,
                   double peak, double *frac_out)
{
    double ga = act_flops / act_s / 1e9, gt = train_flops / train_s / 1e9;
    printf("%-10s act %9.1f us  %8.2f MFLOP  %6.2f GFLOP/s  %5.3f of peak | train step %8.2f ms  %8.1f MFLOP  "
           "%6.2f GFLOP/s  %5.3f of peak\n", name, act_s * 1e6, act_flops / 1e6, ga, ga / peak, train_s * 1e3,
           train_flops / 1e6, gt, gt / peak);
    *frac_out = gt / peak;
}

static int bench_flow(const char *name, int obs, int act, int H, int K, int width, int depth, double peak,
                      double *frac)
{
    cr_err_t err = {0};
    flow_ctx_t k = {.B = 64};
    nn_rng_seed(&k.rng, 1);
    int hidden[4] = {width, width, width, width};
    if (pol_flow_create(&k.f, nn_backend_cpu(), obs, act, H, K, hidden, depth, 0, 0, 0, 0, &k.rng, &err) ||
        pol_flow_reserve(&k.f, k.B, &err) || nn_adam_init(&k.opt, &k.f.params, 1e-4f, 1e-4f, 1.0f, &err)) {
        fprintf(stderr, "policies: %s\n", err.msg);
        return -1;
    }
    k.obs = filled(&k.rng, (size_t)k.B * obs, -1, 1);
    k.chunk = filled(&k.rng, (size_t)k.B * H * act, -1, 1);
    k.out = filled(&k.rng, (size_t)H * act, 0, 0);
    double ta = timeit(flow_act, &k), tt = timeit(flow_train, &k);
    double f1 = pol_flow_flops_forward(&k.f, 1);
    report(name, ta, f1 * K, tt, 3.0 * f1 * k.B, peak, frac);
    printf("%-10s %zu parameters, hidden %dx%d, chunk %dx%d, K %d\n", name, k.f.params.numel, depth, width, H, act, K);
    free(k.obs); free(k.chunk); free(k.out);
    nn_adam_destroy(&k.opt, nn_backend_cpu());
    pol_flow_destroy(&k.f);
    return 0;
}

static int bench_vla(const char *name, const pol_vla_cfg_t *cfg, double peak, double *frac)
{
    cr_err_t err = {0};
    vla_ctx_t k = {.B = 64};
    nn_rng_seed(&k.rng, 2);
    if (pol_vla_create(&k.v, nn_backend_cpu(), cfg, &k.rng, &err) || pol_vla_reserve(&k.v, k.B, &err) ||
        nn_adam_init(&k.opt, &k.v.params, 1e-4f, 1e-4f, 1.0f, &err)) {
        fprintf(stderr, "policies: %s\n", err.msg);
        return -1;
    }
    size_t B = (size_t)k.B;
    k.img = filled(&k.rng, B * cfg->img_c * cfg->img_h * cfg->img_w, 0, 1);
    k.prop = filled(&k.rng, B * cfg->proprio, -1, 1);
    k.obj = filled(&k.rng, B * cfg->n_obj * cfg->obj_dim, -1, 1);
    k.chunk = filled(&k.rng, B * k.v.D, -1, 1);
    k.out = filled(&k.rng, (size_t)k.v.D, 0, 0);
    k.ids = calloc(B * cfg->ctx, sizeof(int32_t));
    for (size_t b = 0; b < B; b++) pol_tokenize("reach the red target", k.ids + b * cfg->ctx, cfg->ctx, &err);
    double ta = timeit(vla_act, &k), tt = timeit(vla_train, &k);
    double f1 = pol_vla_flops_forward(&k.v, 1);
    report(name, ta, f1 * cfg->steps, tt, 3.0 * f1 * k.B, peak, frac);
    printf("%-10s %zu parameters, %d tokens, dim %d, %d layers, image %dx%dx%d\n", name, k.v.params.numel, k.v.T,
           cfg->dim, cfg->layers, cfg->img_c, cfg->img_h, cfg->img_w);
    free(k.img); free(k.prop); free(k.obj); free(k.chunk); free(k.out); free(k.ids);
    nn_adam_destroy(&k.opt, nn_backend_cpu());
    pol_vla_destroy(&k.v);
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) budget_s = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: policies [--seconds S]\n");
            return 1;
        }
    }
    nn_cpu_set_threads(1);
    double peak = sgemm_peak();
    printf("sgemm peak (1 thread, 1024^3): %.1f GFLOP/s\n", peak);
    double fs, fl, vs, vl;
    if (bench_flow("flow-s", 12, 2, 4, 10, 128, 2, peak, &fs) || bench_flow("flow-l", 64, 7, 16, 10, 512, 3, peak, &fl))
        return 1;
    pol_vla_cfg_t small = {.ctx = 24, .proprio = 8, .n_obj = 3, .obj_dim = 5, .act_dim = 2, .horizon = 2, .steps = 4,
                           .dim = 32, .heads = 2, .layers = 2, .mlp = 64};
    pol_vla_cfg_t large = {.img_c = 3, .img_h = 64, .img_w = 64, .patch = 8, .ctx = 32, .proprio = 14, .act_dim = 7,
                           .horizon = 8, .steps = 10, .dim = 128, .heads = 4, .layers = 4, .mlp = 512};
    if (bench_vla("vla-s", &small, peak, &vs) || bench_vla("vla-l", &large, peak, &vl)) return 1;
    /* goals of our own: the larger models, whose matrices are big enough for
     * sgemm to pay, should train at a useful fraction of the peak */
    bench_target("flow_l_train_fraction_of_sgemm_peak", fl, ">=0.30");
    bench_target("vla_l_train_fraction_of_sgemm_peak", vl, ">=0.20");
    bench_target("flow_s_train_fraction_of_sgemm_peak", fs, ">=0.05");
    bench_target("vla_s_train_fraction_of_sgemm_peak", vs, ">=0.05");
    return 0;
}
