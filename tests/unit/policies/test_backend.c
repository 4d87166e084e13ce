/* test_backend.c - every op of a non-reference backend (CUDA, when its shared
 * object loads and finds a GPU) against the CPU reference on the same random
 * inputs, with stated tolerances: forward outputs within 1e-4 relative (plus
 * 1e-5 absolute), gradients within 1e-3 relative (sums ordered differently).
 * Without a GPU each case reports "skipped: no GPU" with the loader's reason. */
#include "tests/unit/policies/gradcheck.h"

#include <string.h>

static const nn_backend_t *cpu, *dev;
static char why[CR_ERR_MSG_MAX];
static nn_rng_t rng;

static int have_dev(void)
{
    cpu = nn_backend_cpu();
    nn_rng_seed(&rng, 42);
    cr_err_t err = {0};
    if (nn_backend_get("cuda", &dev, &err) != 0) {
        snprintf(why, sizeof why, "no GPU (%s)", err.msg);
        return 0;
    }
    return 1;
}

/* host -> device copy of n floats (random when fill != 0, else zeros) */
static float *up(const float *host, size_t n)
{
    float *d = dev->alloc(n * sizeof(float));
    if (host) dev->upload(d, host, n * sizeof(float));
    else dev->fill(d, 0.0f, n);
    return d;
}

static float *rnd(size_t n, float scale)
{
    float *h = gc_zeros(n);
    gc_fill(&rng, h, n, scale);
    return h;
}

/* compares a device buffer with the CPU result */
static int same(const char *what, const float *dbuf, const float *ref, size_t n, double rtol)
{
    float *h = gc_zeros(n);
    dev->download(h, dbuf, n * sizeof(float));
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)h[i] - ref[i]) > rtol * fabs(ref[i]) + 1e-5) {
            if (bad++ < 3) fprintf(stderr, "  %s[%zu]: %s %.7g, cpu %.7g\n", what, i, dev->name, h[i], ref[i]);
        }
    free(h);
    return bad;
}

static void test_linear_act(void)
{
    TEST_SKIP_IF(!have_dev(), "%s", why);
    int B = 33, C = 70, OC = 45;
    size_t ni = (size_t)B * C, nw = (size_t)OC * C, no = (size_t)B * OC;
    float *x = rnd(ni, 1), *w = rnd(nw, 0.3f), *b = rnd(OC, 0.3f), *g = rnd(no, 1);
    float *y = gc_zeros(no), *dx = gc_zeros(ni), *dw = gc_zeros(nw), *db = gc_zeros(OC);
    cpu->linear_forward(y, x, w, b, B, C, OC);
    cpu->linear_backward(dx, dw, db, g, x, w, B, C, OC);
    float *X = up(x, ni), *W = up(w, nw), *Bb = up(b, OC), *G = up(g, no), *Y = up(NULL, no);
    float *DX = up(NULL, ni), *DW = up(NULL, nw), *DB = up(NULL, OC);
    dev->linear_forward(Y, X, W, Bb, B, C, OC);
    dev->linear_backward(DX, DW, DB, G, X, W, B, C, OC);
    ASSERT_INT_EQ(same("linear.out", Y, y, no, 1e-4), 0);
    ASSERT_INT_EQ(same("linear.dinp", DX, dx, ni, 1e-3), 0);
    ASSERT_INT_EQ(same("linear.dw", DW, dw, nw, 1e-3), 0);
    ASSERT_INT_EQ(same("linear.db", DB, db, OC, 1e-3), 0);
    for (int a = NN_ACT_RELU; a <= NN_ACT_SILU; a++) {
        float *o = gc_zeros(no), *d = gc_zeros(no), *O = up(NULL, no), *D = up(NULL, no);
        cpu->act_forward(o, y, (nn_act_t)a, no);
        cpu->act_backward(d, g, y, o, (nn_act_t)a, no);
        dev->act_forward(O, Y, (nn_act_t)a, no);
        dev->act_backward(D, G, Y, O, (nn_act_t)a, no);
        ASSERT_INT_EQ(same("act.out", O, o, no, 1e-4), 0);
        ASSERT_INT_EQ(same("act.dinp", D, d, no, 1e-3), 0);
        free(o); free(d); dev->free(O); dev->free(D);
    }
    free(x); free(w); free(b); free(g); free(y); free(dx); free(dw); free(db);
    float *bufs[] = {X, W, Bb, G, Y, DX, DW, DB};
    for (int i = 0; i < 8; i++) dev->free(bufs[i]);
}

static void test_norm_softmax_loss(void)
{
    TEST_SKIP_IF(!have_dev(), "%s", why);
    int B = 17, C = 96, A = 6;
    size_t n = (size_t)B * C;
    float *x = rnd(n, 2), *w = rnd(C, 1), *b = rnd(C, 1), *g = rnd(n, 1);
    float *y = gc_zeros(n), *m = gc_zeros(B), *r = gc_zeros(B), *dx = gc_zeros(n), *dw = gc_zeros(C), *db = gc_zeros(C);
    cpu->layernorm_forward(y, m, r, x, w, b, B, C);
    cpu->layernorm_backward(dx, dw, db, g, x, w, m, r, B, C);
    float *X = up(x, n), *W = up(w, C), *Bb = up(b, C), *G = up(g, n), *Y = up(NULL, n), *M = up(NULL, B);
    float *R = up(NULL, B), *DX = up(NULL, n), *DW = up(NULL, C), *DB = up(NULL, C);
    dev->layernorm_forward(Y, M, R, X, W, Bb, B, C);
    dev->layernorm_backward(DX, DW, DB, G, X, W, M, R, B, C);
    ASSERT_INT_EQ(same("ln.out", Y, y, n, 1e-4), 0);
    ASSERT_INT_EQ(same("ln.dinp", DX, dx, n, 1e-3), 0);
    ASSERT_INT_EQ(same("ln.dw", DW, dw, C, 1e-3), 0);
    cpu->softmax_forward(y, x, B, C);
    memset(dx, 0, n * sizeof(float));
    cpu->softmax_backward(dx, g, y, B, C);
    dev->fill(DX, 0.0f, n);
    dev->softmax_forward(Y, X, B, C);
    dev->softmax_backward(DX, G, Y, B, C);
    ASSERT_INT_EQ(same("softmax.out", Y, y, n, 1e-4), 0);
    ASSERT_INT_EQ(same("softmax.dinp", DX, dx, n, 1e-3), 0);
    /* squashed Gaussian on B x A */
    float *head = rnd((size_t)B * 2 * A, 1), *eps = rnd((size_t)B * A, 1), *da = rnd((size_t)B * A, 1), *dl = rnd(B, 1);
    float *act = gc_zeros((size_t)B * A), *lp = gc_zeros(B), *dh = gc_zeros((size_t)B * 2 * A);
    cpu->gauss_tanh_forward(act, lp, head, eps, B, A, -5, 2);
    cpu->gauss_tanh_backward(dh, da, dl, head, eps, act, B, A, -5, 2);
    float *H = up(head, (size_t)B * 2 * A), *E = up(eps, (size_t)B * A), *DA = up(da, (size_t)B * A), *DL = up(dl, B);
    float *AC = up(NULL, (size_t)B * A), *LP = up(NULL, B), *DH = up(NULL, (size_t)B * 2 * A);
    dev->gauss_tanh_forward(AC, LP, H, E, B, A, -5, 2);
    dev->gauss_tanh_backward(DH, DA, DL, H, E, AC, B, A, -5, 2);
    ASSERT_INT_EQ(same("gauss.action", AC, act, (size_t)B * A, 1e-4), 0);
    ASSERT_INT_EQ(same("gauss.logp", LP, lp, B, 1e-4), 0);
    ASSERT_INT_EQ(same("gauss.dhead", DH, dh, (size_t)B * 2 * A, 1e-3), 0);
    ASSERT_NEAR(dev->mse_forward(X, G, NULL, n), cpu->mse_forward(x, g, NULL, n), 1e-4);
    float *all[] = {X, W, Bb, G, Y, M, R, DX, DW, DB, H, E, DA, DL, AC, LP, DH};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev->free(all[i]);
    float *hs[] = {x, w, b, g, y, m, r, dx, dw, db, head, eps, da, dl, act, lp, dh};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

static void test_conv_attention_adam(void)
{
    TEST_SKIP_IF(!have_dev(), "%s", why);
    nn_conv_shape_t s = {.N = 3, .C = 4, .H = 11, .W = 9, .OC = 8, .KH = 3, .KW = 3, .stride = 2, .pad = 1};
    cr_err_t err = {0};
    CHECK_OK(nn_conv_shape_init(&s, &err), &err);
    size_t ni = (size_t)3 * 4 * 11 * 9, nw = (size_t)8 * 4 * 9, no = (size_t)3 * 8 * s.OH * s.OW, nc = nn_conv_col_size(&s);
    float *x = rnd(ni, 1), *w = rnd(nw, 0.3f), *b = rnd(8, 0.3f), *g = rnd(no, 1), *col = gc_zeros(nc);
    float *y = gc_zeros(no), *dx = gc_zeros(ni), *dw = gc_zeros(nw), *db = gc_zeros(8);
    cpu->conv2d_forward(y, col, x, w, b, &s);
    cpu->conv2d_backward(dx, dw, db, col, g, x, w, &s);
    float *X = up(x, ni), *W = up(w, nw), *Bb = up(b, 8), *G = up(g, no), *COL = up(NULL, nc), *Y = up(NULL, no);
    float *DX = up(NULL, ni), *DW = up(NULL, nw), *DB = up(NULL, 8);
    dev->conv2d_forward(Y, COL, X, W, Bb, &s);
    dev->conv2d_backward(DX, DW, DB, COL, G, X, W, &s);
    ASSERT_INT_EQ(same("conv.out", Y, y, no, 1e-4), 0);
    ASSERT_INT_EQ(same("conv.dinp", DX, dx, ni, 1e-3), 0);
    ASSERT_INT_EQ(same("conv.dw", DW, dw, nw, 1e-3), 0);
    int Bt = 2, T = 5, C = 8, NH = 2;
    size_t nq = (size_t)Bt * T * 3 * C, na = (size_t)Bt * NH * T * T, nout = (size_t)Bt * T * C;
    float *q = rnd(nq, 1), *ga = rnd(nout, 1), *att = gc_zeros(na), *datt = gc_zeros(na), *o = gc_zeros(nout), *dq = gc_zeros(nq);
    cpu->attention_forward(o, att, q, Bt, T, C, NH, 1);
    cpu->attention_backward(dq, datt, ga, q, att, Bt, T, C, NH, 1);
    float *Q = up(q, nq), *GA = up(ga, nout), *ATT = up(NULL, na), *DATT = up(NULL, na), *O = up(NULL, nout), *DQ = up(NULL, nq);
    dev->attention_forward(O, ATT, Q, Bt, T, C, NH, 1);
    dev->attention_backward(DQ, DATT, GA, Q, ATT, Bt, T, C, NH, 1);
    ASSERT_INT_EQ(same("attention.out", O, o, nout, 1e-4), 0);
    ASSERT_INT_EQ(same("attention.dqkv", DQ, dq, nq, 1e-3), 0);
    /* three Adam steps */
    size_t np = 1000;
    float *p = rnd(np, 1), *pg = rnd(np, 1), *m = gc_zeros(np), *v = gc_zeros(np);
    float *P = up(p, np), *PG = up(pg, np), *M = up(NULL, np), *V = up(NULL, np);
    for (long t = 1; t <= 3; t++) {
        cpu->adam_update(p, pg, m, v, np, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.5f, t);
        dev->adam_update(P, PG, M, V, np, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.5f, t);
    }
    ASSERT_INT_EQ(same("adam.param", P, p, np, 1e-5), 0);
    float *dall[] = {X, W, Bb, G, COL, Y, DX, DW, DB, Q, GA, ATT, DATT, O, DQ, P, PG, M, V};
    for (size_t i = 0; i < sizeof dall / sizeof dall[0]; i++) dev->free(dall[i]);
    float *hall[] = {x, w, b, g, col, y, dx, dw, db, q, ga, att, datt, o, dq, p, pg, m, v};
    for (size_t i = 0; i < sizeof hall / sizeof hall[0]; i++) free(hall[i]);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"linear_act", test_linear_act},
        {"norm_softmax_loss", test_norm_softmax_loss},
        {"conv_attention_adam", test_conv_attention_adam},
        {NULL, NULL},
    };
    return test_main("policies.backend", cases, argc, argv);
}
