/* test_nn_cuda_ops.c - every op of the CUDA backend, forward and backward, against
 * the CPU reference on the same inputs, and what the loader answers.
 *
 * NN_CUDA_TEST_MODE says which copy of the backend CORRAL_CUDA_LIB names and so
 * what the loader must answer (CMakeLists.txt runs this file once per mode):
 *   real      the real backend: loads and runs on a GPU, or reports "no GPU";
 *   absent    not built: the loader reports that it cannot load the object;
 *   emu       the host emulation: must load, every comparison runs;
 *   nodriver  the emulation without a driver: "no GPU" with CUDA's error 35.
 * Where the backend is unavailable each comparison is skipped with its reason.
 * Under the emulation, injected failures (emu.h) check that a failed CUDA or
 * cuBLAS call becomes a recorded error, never an exit.
 *
 * Gradient buffers start from the same random values on both sides, so each
 * backward comparison also checks that gradients accumulate (+=).
 * Tolerances, |gpu - cpu| <= atol + rtol * |cpu|:
 *   elementwise ops, gathers, copies       rtol 1e-5, atol 1e-6 (same formulas;
 *                                          GPU expf/tanhf are within 2 ulp)
 *   per-row sums (layernorm, softmax,      rtol 1e-4, atol 1e-5 (same order of
 *   attention, Gaussian head)              summation, different rounding of exp)
 *   cuBLAS products (linear, conv2d)       rtol 1e-4, atol 1e-4 (another order)
 *   reductions to double: mse             relative 1e-9 (both sum in double)
 *                         sum, sumsq      1e-6 of sum |x| (the CPU adds float lanes
 *                                         per block of 1024, the GPU adds in double) */
#include "policies/nn/nn.h"
#include "tests/harness.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const nn_backend_t *cpu, *gpu;
static cr_err_t gpu_err;
static nn_rng_t rng;

static const char *mode(void)
{
    const char *m = getenv("NN_CUDA_TEST_MODE");
    return m ? m : "real";
}

/* The backend, loaded once per process; 0 when it is unavailable (gpu_err says why). */
static int load(void)
{
    static int tried;
    if (!tried) {
        tried = 1;
        if (nn_backend_get("cuda", &gpu, &gpu_err) != 0) gpu = NULL;
    }
    cpu = nn_backend_cpu();
    nn_rng_seed(&rng, 42);
    return gpu != NULL;
}

#define NEED_GPU() TEST_SKIP_IF(!load(), "%s", gpu_err.msg)

/* ---- buffers: host arrays and their device copies, freed by release() ---- */
#define MAX_BUFS 64
static void *hbufs[MAX_BUFS], *dbufs[MAX_BUFS];
static int nh, nd;

static float *hz(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    ASSERT_TRUE(p && nh < MAX_BUFS);
    hbufs[nh++] = p;
    return p;
}

static float *hr(size_t n, float scale)
{
    float *p = hz(n);
    for (size_t i = 0; i < n; i++) p[i] = nn_rng_normal(&rng) * scale;
    return p;
}

/* A host array's copy in GPU memory. */
static void *dcp(const void *host, size_t bytes)
{
    void *p = gpu->alloc(bytes);
    ASSERT_TRUE(p && nd < MAX_BUFS);
    dbufs[nd++] = p;
    gpu->upload(p, host, bytes);
    return p;
}

static float *dfl(const float *host, size_t n) { return dcp(host, n * sizeof(float)); }

static void release(void)
{
    while (nh) free(hbufs[--nh]);
    while (nd) gpu->free(dbufs[--nd]);
}

/* Downloads dev[n] and counts the entries outside atol + rtol * |ref|. */
static int mismatches(const char *what, const float *dev, const float *ref, size_t n,
                      double rtol, double atol)
{
    float *h = hz(n);
    gpu->download(h, dev, n * sizeof(float));
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)h[i] - ref[i]);
        if (isnan(h[i]) && isnan(ref[i])) continue;   /* NaN must propagate alike */
        if (!(d <= atol + rtol * fabs(ref[i]))) {
            if (bad < 5) fprintf(stderr, "  %s[%zu]: gpu %.8g cpu %.8g\n", what, i, h[i], ref[i]);
            bad++;
        }
    }
    return bad;
}

/* EXPECT_CLOSE(what, dev, ref, n, rtol, atol); the tolerance pairs below fill the last two */
#define EXPECT_CLOSE(...) ASSERT_INT_EQ(mismatches(__VA_ARGS__), 0)
#define ELEM 1e-5, 1e-6
#define ROWS 1e-4, 1e-5
#define GEMM 1e-4, 1e-4

/* ---- the loader ---- */

static void test_loader(void)
{
    int ok = load();
    const char *m = mode();
    fprintf(stderr, "  mode %s: %s\n", m, ok ? "loaded" : gpu_err.msg);
    if (strcmp(m, "emu") == 0) {
        ASSERT_TRUE(ok);
        ASSERT_STR_EQ(gpu->name, "cuda");
    } else if (strcmp(m, "nodriver") == 0) {
        ASSERT_TRUE(!ok);
        ASSERT_INT_EQ(gpu_err.code, CR_EUNAVAIL);
        ASSERT_TRUE(strstr(gpu_err.msg, "no GPU") != NULL);
        ASSERT_TRUE(strstr(gpu_err.msg, "cudaGetDeviceCount") != NULL);
        ASSERT_TRUE(strstr(gpu_err.msg, "(error 35)") != NULL);
    } else if (strcmp(m, "absent") == 0) {
        ASSERT_TRUE(!ok);
        ASSERT_INT_EQ(gpu_err.code, CR_EUNAVAIL);
        ASSERT_TRUE(strstr(gpu_err.msg, "not loaded") != NULL);
    } else if (!ok) {
        /* the real object must load; only the GPU may be missing. Without the
         * driver library CUDA says "insufficient driver" (35). */
        ASSERT_INT_EQ(gpu_err.code, CR_EUNAVAIL);
        ASSERT_TRUE(strstr(gpu_err.msg, "not loaded") == NULL);
        ASSERT_TRUE(strstr(gpu_err.msg, "no GPU") != NULL ||
                    strstr(gpu_err.msg, "GPU unusable") != NULL);
        void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!drv) ASSERT_TRUE(strstr(gpu_err.msg, "(error 35)") != NULL);
        else dlclose(drv);
    }
    /* "auto" always answers: the GPU when there is one, else the CPU */
    const nn_backend_t *a = NULL;
    cr_err_t err = {0};
    ASSERT_INT_EQ(nn_backend_get("auto", &a, &err), 0);
    ASSERT_STR_EQ(a->name, ok ? "cuda" : "cpu");
}

static void test_missing_library(void)
{
    const char *keep = getenv("CORRAL_CUDA_LIB");
    char *saved = keep ? strdup(keep) : NULL;
    setenv("CORRAL_CUDA_LIB", "/nonexistent/libcorral_nn_cuda.so", 1);
    const nn_backend_t *b = NULL;
    cr_err_t err = {0};
    int rc = nn_backend_get("cuda", &b, &err);
    if (saved) setenv("CORRAL_CUDA_LIB", saved, 1);
    else unsetenv("CORRAL_CUDA_LIB");
    free(saved);
    ASSERT_INT_EQ(rc, CR_EUNAVAIL);
    ASSERT_TRUE(strstr(err.msg, "/nonexistent/libcorral_nn_cuda.so") != NULL);
    ASSERT_INT_EQ(nn_backend_get("nope", &b, &err), CR_EINVAL);
}

/* ---- memory ---- */

static void test_memory(void)
{
    NEED_GPU();
    size_t n = 1000;
    float *zero = hz(n), *x = hr(n, 1), *back = hz(n);
    float *fresh = gpu->alloc(n * sizeof(float));   /* zeroed: checked before any upload */
    ASSERT_TRUE(fresh != NULL);
    gpu->download(back, fresh, n * sizeof(float));
    for (size_t i = 0; i < n; i++) ASSERT_NEAR(back[i], 0.0, 0.0);
    gpu->upload(fresh, x, n * sizeof(float));
    float *copy = dfl(zero, n);
    gpu->copy(copy, fresh, n * sizeof(float));
    EXPECT_CLOSE("copy", copy, x, n, 0, 0);
    gpu->fill(copy + 10, 2.5f, 990);
    for (size_t i = 10; i < n; i++) x[i] = 2.5f;
    EXPECT_CLOSE("fill", copy, x, n, 0, 0);
    gpu->free(fresh);
    release();
}

/* ---- dense ---- */

static void run_linear(int B, int C, int OC, int with_bias)
{
    float *inp = hr((size_t)B * C, 1), *w = hr((size_t)OC * C, 0.3f), *bias = hr(OC, 1);
    float *out = hz((size_t)B * OC), *dout = hr((size_t)B * OC, 1);
    float *dinp = hr((size_t)B * C, 1), *dw = hr((size_t)OC * C, 1), *db = hr(OC, 1);
    float *g_out = dfl(out, (size_t)B * OC), *g_inp = dfl(inp, (size_t)B * C);
    float *g_w = dfl(w, (size_t)OC * C), *g_bias = dfl(bias, OC), *g_dout = dfl(dout, (size_t)B * OC);
    float *g_dinp = dfl(dinp, (size_t)B * C), *g_dw = dfl(dw, (size_t)OC * C), *g_db = dfl(db, OC);
    const float *b = with_bias ? bias : NULL, *gb = with_bias ? g_bias : NULL;
    cpu->linear_forward(out, inp, w, b, B, C, OC);
    gpu->linear_forward(g_out, g_inp, g_w, gb, B, C, OC);
    EXPECT_CLOSE("linear.out", g_out, out, (size_t)B * OC, GEMM);
    cpu->linear_backward(dinp, dw, with_bias ? db : NULL, dout, inp, w, B, C, OC);
    gpu->linear_backward(g_dinp, g_dw, with_bias ? g_db : NULL, g_dout, g_inp, g_w, B, C, OC);
    EXPECT_CLOSE("linear.dinp", g_dinp, dinp, (size_t)B * C, GEMM);
    EXPECT_CLOSE("linear.dw", g_dw, dw, (size_t)OC * C, GEMM);
    EXPECT_CLOSE("linear.dbias", g_db, db, OC, GEMM);
    /* only the weight gradient asked for */
    cpu->linear_backward(NULL, dw, NULL, dout, inp, w, B, C, OC);
    gpu->linear_backward(NULL, g_dw, NULL, g_dout, g_inp, g_w, B, C, OC);
    EXPECT_CLOSE("linear.dw2", g_dw, dw, (size_t)OC * C, GEMM);
    release();
}

static void test_linear(void)
{
    NEED_GPU();
    run_linear(37, 70, 300, 1);
    run_linear(1, 17, 12, 1);     /* the CPU's batch-1 gemv path */
    run_linear(5, 8, 3, 0);
}

static void test_bias(void)
{
    NEED_GPU();
    int B = 9, C = 300;
    size_t n = (size_t)B * C;
    float *out = hr(n, 1), *bias = hr(C, 1), *dout = hr(n, 1), *db = hr(C, 1);
    float *g_out = dfl(out, n), *g_bias = dfl(bias, C), *g_dout = dfl(dout, n), *g_db = dfl(db, C);
    cpu->bias_forward(out, bias, B, C);
    gpu->bias_forward(g_out, g_bias, B, C);
    EXPECT_CLOSE("bias.out", g_out, out, n, ELEM);
    cpu->bias_backward(db, dout, B, C);
    gpu->bias_backward(g_db, g_dout, B, C);
    EXPECT_CLOSE("bias.dbias", g_db, db, C, ROWS);
    release();
}

static void test_activations(void)
{
    NEED_GPU();
    const char *names[] = {"relu", "tanh", "gelu", "silu"};
    size_t n = 1000;
    for (int a = NN_ACT_RELU; a <= NN_ACT_SILU; a++) {
        float *inp = hr(n, 3), *out = hz(n), *dout = hr(n, 1), *dinp = hr(n, 1);
        inp[0] = 0.0f;   /* ReLU's kink: both sides must agree on x = 0 */
        inp[1] = NAN;    /* and a NaN reaches the loss through every activation */
        float *g_inp = dfl(inp, n), *g_out = dfl(out, n), *g_dout = dfl(dout, n), *g_dinp = dfl(dinp, n);
        cpu->act_forward(out, inp, (nn_act_t)a, n);
        gpu->act_forward(g_out, g_inp, (nn_act_t)a, n);
        fprintf(stderr, "  %s\n", names[a]);
        EXPECT_CLOSE("act.out", g_out, out, n, ELEM);
        /* backward reads the forward output: give both the CPU's */
        gpu->upload(g_out, out, n * sizeof(float));
        cpu->act_backward(dinp, dout, inp, out, (nn_act_t)a, n);
        gpu->act_backward(g_dinp, g_dout, g_inp, g_out, (nn_act_t)a, n);
        EXPECT_CLOSE("act.dinp", g_dinp, dinp, n, ELEM);
        release();
    }
}

/* ---- normalisation ---- */

static void test_layernorm(void)
{
    NEED_GPU();
    int B = 300, C = 64;
    size_t n = (size_t)B * C;
    float *inp = hr(n, 2), *w = hr(C, 1), *bias = hr(C, 1), *out = hz(n), *mean = hz(B), *rstd = hz(B);
    for (size_t i = 0; i < n; i++) inp[i] += 0.5f * (float)(i / C % 5);   /* rows of different means */
    float *dout = hr(n, 1), *dinp = hr(n, 1), *dw = hr(C, 1), *db = hr(C, 1);
    float *g_inp = dfl(inp, n), *g_w = dfl(w, C), *g_bias = dfl(bias, C), *g_out = dfl(out, n);
    float *g_mean = dfl(mean, B), *g_rstd = dfl(rstd, B), *g_dout = dfl(dout, n);
    float *g_dinp = dfl(dinp, n), *g_dw = dfl(dw, C), *g_db = dfl(db, C);
    cpu->layernorm_forward(out, mean, rstd, inp, w, bias, B, C);
    gpu->layernorm_forward(g_out, g_mean, g_rstd, g_inp, g_w, g_bias, B, C);
    EXPECT_CLOSE("ln.out", g_out, out, n, ROWS);
    EXPECT_CLOSE("ln.mean", g_mean, mean, B, ROWS);
    EXPECT_CLOSE("ln.rstd", g_rstd, rstd, B, ROWS);
    gpu->upload(g_mean, mean, B * sizeof(float));
    gpu->upload(g_rstd, rstd, B * sizeof(float));
    cpu->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, B, C);
    gpu->layernorm_backward(g_dinp, g_dw, g_db, g_dout, g_inp, g_w, g_mean, g_rstd, B, C);
    EXPECT_CLOSE("ln.dinp", g_dinp, dinp, n, ROWS);
    EXPECT_CLOSE("ln.dweight", g_dw, dw, C, ROWS);
    EXPECT_CLOSE("ln.dbias", g_db, db, C, ROWS);
    /* parameter gradients only */
    cpu->layernorm_backward(NULL, dw, NULL, dout, inp, w, mean, rstd, B, C);
    gpu->layernorm_backward(NULL, g_dw, NULL, g_dout, g_inp, g_w, g_mean, g_rstd, B, C);
    EXPECT_CLOSE("ln.dweight2", g_dw, dw, C, ROWS);
    release();
}

static void test_softmax(void)
{
    NEED_GPU();
    int B = 270, C = 33;
    size_t n = (size_t)B * C;
    float *inp = hr(n, 3), *out = hz(n), *dout = hr(n, 1), *dinp = hr(n, 1);
    inp[5] = 1000.0f;   /* a large logit must not overflow */
    float *g_inp = dfl(inp, n), *g_out = dfl(out, n), *g_dout = dfl(dout, n), *g_dinp = dfl(dinp, n);
    cpu->softmax_forward(out, inp, B, C);
    gpu->softmax_forward(g_out, g_inp, B, C);
    EXPECT_CLOSE("softmax.out", g_out, out, n, ROWS);
    gpu->upload(g_out, out, n * sizeof(float));
    cpu->softmax_backward(dinp, dout, out, B, C);
    gpu->softmax_backward(g_dinp, g_dout, g_out, B, C);
    EXPECT_CLOSE("softmax.dinp", g_dinp, dinp, n, ROWS);
    release();
}

/* ---- embedding and attention ---- */

static void test_embedding(void)
{
    NEED_GPU();
    int V = 7, B = 40, C = 300;
    int32_t idx[40];
    for (int b = 0; b < B; b++) idx[b] = (int32_t)nn_rng_below(&rng, V);   /* repeats on purpose */
    float *table = hr((size_t)V * C, 1), *out = hz((size_t)B * C), *dout = hr((size_t)B * C, 1);
    float *dtable = hr((size_t)V * C, 1);
    int32_t *g_idx = dcp(idx, sizeof idx);
    float *g_table = dfl(table, (size_t)V * C), *g_out = dfl(out, (size_t)B * C);
    float *g_dout = dfl(dout, (size_t)B * C), *g_dtable = dfl(dtable, (size_t)V * C);
    cpu->embedding_forward(out, idx, table, B, C);
    gpu->embedding_forward(g_out, g_idx, g_table, B, C);
    EXPECT_CLOSE("embedding.out", g_out, out, (size_t)B * C, 0, 0);
    cpu->embedding_backward(dtable, dout, idx, B, C);
    gpu->embedding_backward(g_dtable, g_dout, g_idx, B, C);
    EXPECT_CLOSE("embedding.dtable", g_dtable, dtable, (size_t)V * C, ELEM);
    release();
}

static void run_attention(int B, int T, int C, int NH, int causal)
{
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, natt = (size_t)B * NH * T * T;
    float *qkv = hr(nqkv, 1), *out = hz(nout), *att = hz(natt), *dout = hr(nout, 1);
    float *dqkv = hr(nqkv, 1), *datt = hz(natt);
    float *g_qkv = dfl(qkv, nqkv), *g_out = dfl(out, nout), *g_att = dfl(att, natt);
    float *g_dout = dfl(dout, nout), *g_dqkv = dfl(dqkv, nqkv), *g_datt = dfl(datt, natt);
    cpu->attention_forward(out, att, qkv, B, T, C, NH, causal);
    gpu->attention_forward(g_out, g_att, g_qkv, B, T, C, NH, causal);
    EXPECT_CLOSE("attention.out", g_out, out, nout, ROWS);
    EXPECT_CLOSE("attention.att", g_att, att, natt, ROWS);
    gpu->upload(g_att, att, natt * sizeof(float));
    cpu->attention_backward(dqkv, datt, dout, qkv, att, B, T, C, NH, causal);
    gpu->attention_backward(g_dqkv, g_datt, g_dout, g_qkv, g_att, B, T, C, NH, causal);
    EXPECT_CLOSE("attention.dqkv", g_dqkv, dqkv, nqkv, ROWS);
    release();
}

static void test_attention(void)
{
    NEED_GPU();
    run_attention(2, 9, 12, 3, 0);
    run_attention(2, 9, 12, 3, 1);
    run_attention(3, 100, 8, 1, 1);   /* more rows than a block */
}

/* ---- convolution ---- */

static void run_conv(int stride, int pad)
{
    nn_conv_shape_t s = {.N = 3, .C = 3, .H = 11, .W = 9, .OC = 5, .KH = 3, .KW = 3,
                         .stride = stride, .pad = pad};
    cr_err_t err = {0};
    ASSERT_INT_EQ(nn_conv_shape_init(&s, &err), 0);
    size_t nin = (size_t)s.N * s.C * s.H * s.W, nw = (size_t)s.OC * s.C * s.KH * s.KW;
    size_t nout = (size_t)s.N * s.OC * s.OH * s.OW, ncol = nn_conv_col_size(&s);
    float *inp = hr(nin, 1), *w = hr(nw, 0.3f), *bias = hr(s.OC, 1), *out = hz(nout), *col = hz(ncol);
    float *dout = hr(nout, 1), *dinp = hr(nin, 1), *dw = hr(nw, 1), *db = hr(s.OC, 1);
    float *g_inp = dfl(inp, nin), *g_w = dfl(w, nw), *g_bias = dfl(bias, s.OC), *g_out = dfl(out, nout);
    float *g_col = dfl(col, ncol), *g_dout = dfl(dout, nout), *g_dinp = dfl(dinp, nin);
    float *g_dw = dfl(dw, nw), *g_db = dfl(db, s.OC);
    cpu->conv2d_forward(out, col, inp, w, bias, &s);
    gpu->conv2d_forward(g_out, g_col, g_inp, g_w, g_bias, &s);
    EXPECT_CLOSE("conv.out", g_out, out, nout, GEMM);
    cpu->conv2d_forward(out, col, inp, w, NULL, &s);
    gpu->conv2d_forward(g_out, g_col, g_inp, g_w, NULL, &s);
    EXPECT_CLOSE("conv.out_nobias", g_out, out, nout, GEMM);
    cpu->conv2d_backward(dinp, dw, db, col, dout, inp, w, &s);
    gpu->conv2d_backward(g_dinp, g_dw, g_db, g_col, g_dout, g_inp, g_w, &s);
    EXPECT_CLOSE("conv.dinp", g_dinp, dinp, nin, GEMM);
    EXPECT_CLOSE("conv.dw", g_dw, dw, nw, GEMM);
    EXPECT_CLOSE("conv.dbias", g_db, db, s.OC, GEMM);
    release();
}

static void test_conv2d(void)
{
    NEED_GPU();
    run_conv(1, 1);
    run_conv(2, 1);
    run_conv(2, 0);
}

static void test_random_shift(void)
{
    NEED_GPU();
    int N = 3, C = 2, H = 12, W = 10, pad = 4;
    size_t n = (size_t)N * C * H * W;
    int32_t shifts[6];
    for (int i = 0; i < 6; i++) shifts[i] = (int32_t)nn_rng_below(&rng, 2 * pad + 1);
    shifts[0] = 0;
    shifts[1] = 2 * pad;   /* the extreme corner clamps on both axes */
    float *inp = hr(n, 1), *out = hz(n);
    float *g_inp = dfl(inp, n), *g_out = dfl(out, n);
    int32_t *g_shifts = dcp(shifts, sizeof shifts);
    cpu->random_shift(out, inp, shifts, N, C, H, W, pad);
    gpu->random_shift(g_out, g_inp, g_shifts, N, C, H, W, pad);
    EXPECT_CLOSE("random_shift", g_out, out, n, 0, 0);
    release();
}

/* ---- losses ---- */

static void test_mse(void)
{
    NEED_GPU();
    size_t n = 5000;
    float *pred = hr(n, 1), *target = hr(n, 1), *w = hr(n, 1), *dpred = hr(n, 1);
    float *g_pred = dfl(pred, n), *g_target = dfl(target, n), *g_w = dfl(w, n), *g_dpred = dfl(dpred, n);
    for (int weighted = 0; weighted < 2; weighted++) {
        double c = cpu->mse_forward(pred, target, weighted ? w : NULL, n);
        double g = gpu->mse_forward(g_pred, g_target, weighted ? g_w : NULL, n);
        ASSERT_NEAR(g, c, 1e-9 * fabs(c));
        cpu->mse_backward(dpred, pred, target, weighted ? w : NULL, 0.25f, n);
        gpu->mse_backward(g_dpred, g_pred, g_target, weighted ? g_w : NULL, 0.25f, n);
        EXPECT_CLOSE("mse.dpred", g_dpred, dpred, n, ELEM);
    }
    ASSERT_NEAR(gpu->mse_forward(g_pred, g_target, NULL, 0), 0.0, 0.0);
    release();
}

static void test_gauss_tanh(void)
{
    NEED_GPU();
    int B = 300, A = 6;
    float lo = -5.0f, hi = 2.0f;
    size_t na = (size_t)B * A;
    float *head = hr(2 * na, 1.5f), *eps = hr(na, 1), *action = hz(na), *logp = hz(B);
    head[0] = 30.0f;   /* a saturated action keeps a finite log-probability */
    float *daction = hr(na, 1), *dlogp = hr(B, 1), *dhead = hr(2 * na, 1);
    float *g_head = dfl(head, 2 * na), *g_eps = dfl(eps, na), *g_action = dfl(action, na);
    float *g_logp = dfl(logp, B), *g_daction = dfl(daction, na), *g_dlogp = dfl(dlogp, B);
    float *g_dhead = dfl(dhead, 2 * na);
    cpu->gauss_tanh_forward(action, logp, head, eps, B, A, lo, hi);
    gpu->gauss_tanh_forward(g_action, g_logp, g_head, g_eps, B, A, lo, hi);
    EXPECT_CLOSE("gauss.action", g_action, action, na, ROWS);
    EXPECT_CLOSE("gauss.logp", g_logp, logp, B, ROWS);
    gpu->upload(g_action, action, na * sizeof(float));
    /* both upstream gradients, then each alone (the other NULL) */
    cpu->gauss_tanh_backward(dhead, daction, dlogp, head, eps, action, B, A, lo, hi);
    gpu->gauss_tanh_backward(g_dhead, g_daction, g_dlogp, g_head, g_eps, g_action, B, A, lo, hi);
    EXPECT_CLOSE("gauss.dhead", g_dhead, dhead, 2 * na, ROWS);
    cpu->gauss_tanh_backward(dhead, NULL, dlogp, head, eps, action, B, A, lo, hi);
    gpu->gauss_tanh_backward(g_dhead, NULL, g_dlogp, g_head, g_eps, g_action, B, A, lo, hi);
    EXPECT_CLOSE("gauss.dhead_logp", g_dhead, dhead, 2 * na, ROWS);
    cpu->gauss_tanh_backward(dhead, daction, NULL, head, eps, action, B, A, lo, hi);
    gpu->gauss_tanh_backward(g_dhead, g_daction, NULL, g_head, g_eps, g_action, B, A, lo, hi);
    EXPECT_CLOSE("gauss.dhead_action", g_dhead, dhead, 2 * na, ROWS);
    /* logp may be NULL in the forward pass */
    gpu->gauss_tanh_forward(g_action, NULL, g_head, g_eps, B, A, lo, hi);
    EXPECT_CLOSE("gauss.action2", g_action, action, na, ROWS);
    release();
}

/* ---- glue ---- */

static void test_glue(void)
{
    NEED_GPU();
    int B = 100, Ca = 7, Cb = 300;
    size_t na = (size_t)B * Ca, nb = (size_t)B * Cb, no = na + nb;
    float *a = hr(na, 1), *b = hr(nb, 1), *out = hz(no), *dout = hr(no, 1), *da = hr(na, 1), *db = hr(nb, 1);
    float *g_a = dfl(a, na), *g_b = dfl(b, nb), *g_out = dfl(out, no), *g_dout = dfl(dout, no);
    float *g_da = dfl(da, na), *g_db = dfl(db, nb);
    cpu->concat_forward(out, a, b, B, Ca, Cb);
    gpu->concat_forward(g_out, g_a, g_b, B, Ca, Cb);
    EXPECT_CLOSE("concat.out", g_out, out, no, 0, 0);
    cpu->concat_backward(da, db, dout, B, Ca, Cb);
    gpu->concat_backward(g_da, g_db, g_dout, B, Ca, Cb);
    EXPECT_CLOSE("concat.da", g_da, da, na, ELEM);
    EXPECT_CLOSE("concat.db", g_db, db, nb, ELEM);
    cpu->concat_backward(NULL, db, dout, B, Ca, Cb);
    gpu->concat_backward(NULL, g_db, g_dout, B, Ca, Cb);
    EXPECT_CLOSE("concat.db2", g_db, db, nb, ELEM);

    /* ensemble reductions over q[N][B] */
    int N = 5, QB = 300;
    int rows[3] = {4, 1, 3};
    float *q = hr((size_t)N * QB, 1), *m = hz(QB);
    q[4 * QB + 0] = NAN;   /* NaN in the first chosen row, then in a later one */
    q[1 * QB + 1] = NAN;
    float *g_q = dfl(q, (size_t)N * QB), *g_m = dfl(m, QB);
    cpu->rows_min(m, q, rows, 3, QB);
    gpu->rows_min(g_m, g_q, rows, 3, QB);
    EXPECT_CLOSE("rows_min", g_m, m, QB, 0, 0);
    cpu->rows_mean(m, q, N, QB);
    gpu->rows_mean(g_m, g_q, N, QB);
    EXPECT_CLOSE("rows_mean", g_m, m, QB, ELEM);

    float *rew = hr(QB, 1), *done = hz(QB), *qn = hr(QB, 1), *lp = hr(QB, 1), *y = hz(QB);
    for (int i = 0; i < QB; i += 3) done[i] = 1.0f;
    float *g_rew = dfl(rew, QB), *g_done = dfl(done, QB), *g_qn = dfl(qn, QB), *g_lp = dfl(lp, QB);
    float *g_y = dfl(y, QB);
    cpu->td_target(y, rew, done, qn, lp, 0.99f, 0.2f, QB);
    gpu->td_target(g_y, g_rew, g_done, g_qn, g_lp, 0.99f, 0.2f, QB);
    EXPECT_CLOSE("td_target", g_y, y, QB, ELEM);

    size_t n = 3000;
    float *x = hr(n, 1), *src = hr(n, 1);
    float *g_x = dfl(x, n), *g_src = dfl(src, n);
    cpu->scale(x, -0.3f, n);
    gpu->scale(g_x, -0.3f, n);
    EXPECT_CLOSE("scale", g_x, x, n, ELEM);
    cpu->lerp(x, src, 0.005f, n);
    gpu->lerp(g_x, g_src, 0.005f, n);
    EXPECT_CLOSE("lerp", g_x, x, n, ELEM);
    release();
}

static void test_reductions(void)
{
    NEED_GPU();
    size_t sizes[3] = {1, 1000, 100003};   /* fewer and more elements than threads */
    for (int k = 0; k < 3; k++) {
        size_t n = sizes[k];
        float *x = hr(n, 1);
        float *g_x = dfl(x, n);
        double s = cpu->sum(x, n), q = cpu->sumsq(x, n);   /* q is also the sum of |x|^2 */
        ASSERT_NEAR(gpu->sum(g_x, n), s, 1e-6 * sqrt(q * n));   /* >= 1e-6 * sum |x| */
        ASSERT_NEAR(gpu->sumsq(g_x, n), q, 1e-6 * q);
        release();
    }
}

/* ---- Adam(W) ---- */

static void test_adam(void)
{
    NEED_GPU();
    size_t n = 2000;
    float *p = hr(n, 1), *g = hr(n, 1), *m = hr(n, 0.1f), *v = hz(n);
    for (size_t i = 0; i < n; i++) v[i] = 0.01f * (float)(i % 7);
    float *g_p = dfl(p, n), *g_g = dfl(g, n), *g_m = dfl(m, n), *g_v = dfl(v, n);
    for (long t = 1; t <= 3; t++) {   /* Adam, then AdamW with clipping */
        float wd = t == 1 ? 0.0f : 0.01f, gs = t == 3 ? 0.5f : 1.0f;
        cpu->adam_update(p, g, m, v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, wd, gs, t);
        gpu->adam_update(g_p, g_g, g_m, g_v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, wd, gs, t);
    }
    EXPECT_CLOSE("adam.param", g_p, p, n, ELEM);
    EXPECT_CLOSE("adam.m", g_m, m, n, ELEM);
    EXPECT_CLOSE("adam.v", g_v, v, n, ELEM);
    release();

    /* the optimiser over a parameter arena in GPU memory, clipping on */
    cr_err_t err = {0};
    nn_params_t pc, pg;
    int shape[2] = {30, 40};
    nn_params_init(&pc, cpu);
    nn_params_init(&pg, gpu);
    ASSERT_INT_EQ(nn_params_add(&pc, "w", 2, shape, &err), 0);
    ASSERT_INT_EQ(nn_params_add(&pg, "w", 2, shape, &err), 0);
    ASSERT_INT_EQ(nn_params_alloc(&pc, &err), 0);
    ASSERT_INT_EQ(nn_params_alloc(&pg, &err), 0);
    float *w0 = hr(1200, 1), *g0 = hr(1200, 3);
    memcpy(pc.data, w0, sizeof(float) * 1200);
    memcpy(pc.grad, g0, sizeof(float) * 1200);
    gpu->upload(pg.data, w0, sizeof(float) * 1200);
    gpu->upload(pg.grad, g0, sizeof(float) * 1200);
    nn_adam_t oc, og;
    ASSERT_INT_EQ(nn_adam_init(&oc, &pc, 1e-2f, 0.1f, 1.0f, &err), 0);
    ASSERT_INT_EQ(nn_adam_init(&og, &pg, 1e-2f, 0.1f, 1.0f, &err), 0);
    double nc, ng;
    ASSERT_INT_EQ(nn_adam_step(&oc, &pc, &nc), 0);
    ASSERT_INT_EQ(nn_adam_step(&og, &pg, &ng), 0);
    ASSERT_NEAR(ng, nc, 1e-6 * nc);
    EXPECT_CLOSE("adam.arena", pg.data, pc.data, 1200, ELEM);
    nn_adam_destroy(&oc, cpu);
    nn_adam_destroy(&og, gpu);
    nn_params_destroy(&pc);
    nn_params_destroy(&pg);
    release();
}

/* nn_cuda_status() of the loaded backend object: 0 or the first recorded failure. */
static int backend_status(cr_err_t *err)
{
    void *h = dlopen(getenv("CORRAL_CUDA_LIB"), RTLD_NOW | RTLD_NOLOAD);
    ASSERT_TRUE(h != NULL);
    int (*status)(cr_err_t *);
    *(void **)&status = dlsym(h, "nn_cuda_status");
    ASSERT_TRUE(status != NULL);
    int rc = status(err);
    dlclose(h);
    return rc;
}

/* After every op above, the backend has recorded no failed CUDA or cuBLAS call. */
static void test_no_errors(void)
{
    NEED_GPU();
    cr_err_t err = {0};
    int rc = backend_status(&err);
    if (rc) fprintf(stderr, "  recorded: %s\n", err.msg);
    ASSERT_INT_EQ(rc, 0);
}

/* A failed CUDA or cuBLAS call is recorded, never fatal: the op returns, alloc
 * gives NULL, reductions give NaN (so the optimiser skips the step) and
 * nn_cuda_status() keeps the first failure with its place. Runs last: the record
 * it leaves stays for the life of the process. */
static void test_faults(void)
{
    TEST_SKIP_IF(strcmp(mode(), "emu") != 0, "fault injection needs the emulated backend");
    ASSERT_TRUE(load());
    size_t n = 64;
    float *x = hr(n, 1), *y = hz(n), *back = hz(n);
    float *g_x = dfl(x, n), *g_y = dfl(y, n);

    setenv("CORRAL_CUDA_EMU_FAIL", "malloc", 1);
    void *p = gpu->alloc(1024);
    unsetenv("CORRAL_CUDA_EMU_FAIL");
    ASSERT_TRUE(p == NULL);
    cr_err_t err = {0};
    ASSERT_INT_EQ(backend_status(&err), CR_ENOMEM);
    fprintf(stderr, "  recorded: %s\n", err.msg);
    ASSERT_TRUE(strstr(err.msg, "cudaMalloc") != NULL);
    ASSERT_TRUE(strstr(err.msg, "(cuda_backend.cu:") != NULL);
    ASSERT_TRUE(strstr(err.msg, "out of memory (error 2)") != NULL);

    setenv("CORRAL_CUDA_EMU_FAIL", "memcpy", 1);
    double s = gpu->sum(g_x, n), m = gpu->mse_forward(g_x, g_y, NULL, n);
    unsetenv("CORRAL_CUDA_EMU_FAIL");
    ASSERT_TRUE(isnan(s));
    ASSERT_TRUE(isnan(m));

    setenv("CORRAL_CUDA_EMU_FAIL", "sgemm,launch", 1);
    gpu->linear_forward(g_y, g_x, g_x, NULL, 1, 8, 8);
    gpu->act_forward(g_y, g_x, NN_ACT_TANH, n);
    gpu->conv2d_forward(g_y, g_y, g_x, g_x, NULL, &(nn_conv_shape_t){.N = 1, .C = 1, .H = 8,
                        .W = 8, .OC = 1, .KH = 1, .KW = 1, .stride = 1, .OH = 8, .OW = 8});
    unsetenv("CORRAL_CUDA_EMU_FAIL");
    gpu->download(back, g_y, n * sizeof(float));
    for (size_t i = 0; i < n; i++) ASSERT_NEAR(back[i], 0.0, 0.0);   /* nothing ran */

    /* a step whose gradient norm cannot be read changes nothing */
    nn_params_t pg;
    int shape[1] = {16};
    nn_params_init(&pg, gpu);
    ASSERT_INT_EQ(nn_params_add(&pg, "w", 1, shape, &err), 0);
    ASSERT_INT_EQ(nn_params_alloc(&pg, &err), 0);
    gpu->upload(pg.data, x, 16 * sizeof(float));
    gpu->upload(pg.grad, x + 16, 16 * sizeof(float));
    nn_adam_t o;
    ASSERT_INT_EQ(nn_adam_init(&o, &pg, 1e-2f, 0.0f, 1.0f, &err), 0);
    setenv("CORRAL_CUDA_EMU_FAIL", "memcpy", 1);
    int rc = nn_adam_step(&o, &pg, NULL);
    unsetenv("CORRAL_CUDA_EMU_FAIL");
    ASSERT_INT_EQ(rc, CR_EINVAL);
    EXPECT_CLOSE("params.unchanged", pg.data, x, 16, 0, 0);

    /* the record still names the first failure */
    ASSERT_INT_EQ(backend_status(&err), CR_ENOMEM);
    ASSERT_TRUE(strstr(err.msg, "cudaMalloc") != NULL);
    nn_adam_destroy(&o, gpu);
    nn_params_destroy(&pg);
    release();
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"loader", test_loader},
        {"missing_library", test_missing_library},
        {"memory", test_memory},
        {"linear", test_linear},
        {"bias", test_bias},
        {"activations", test_activations},
        {"layernorm", test_layernorm},
        {"softmax", test_softmax},
        {"embedding", test_embedding},
        {"attention", test_attention},
        {"conv2d", test_conv2d},
        {"random_shift", test_random_shift},
        {"mse", test_mse},
        {"gauss_tanh", test_gauss_tanh},
        {"glue", test_glue},
        {"reductions", test_reductions},
        {"adam", test_adam},
        {"no_errors", test_no_errors},
        {"faults", test_faults},   /* last: it leaves a failure on record */
        {NULL, NULL},
    };
    char suite[64];
    snprintf(suite, sizeof suite, "nn_cuda.ops.%s", mode());
    return test_main(suite, cases, argc, argv);
}
