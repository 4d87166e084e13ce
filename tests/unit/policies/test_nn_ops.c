/* test_nn_ops.c - every CPU op's backward against finite differences, gradient
 * accumulation (+=), the squashed Gaussian's log-probability against a direct
 * formula, random shift, Adam/AdamW against a hand-computed step, seeding. */
#include "tests/unit/policies/gradcheck.h"

#include <string.h>

static const nn_backend_t *be;
static nn_rng_t rng;

static void setup(void)
{
    be = nn_backend_cpu();
    nn_rng_seed(&rng, 1234);
}

/* ---- linear ---- */
typedef struct { float *out, *inp, *w, *b, *r; int B, C, OC; } lin_t;
static double lin_loss(void *p)
{
    lin_t *c = p;
    be->linear_forward(c->out, c->inp, c->w, c->b, c->B, c->C, c->OC);
    return gc_dot(c->out, c->r, (size_t)c->B * c->OC);
}

static void run_linear(int B, int C, int OC)
{
    lin_t c = {.B = B, .C = C, .OC = OC};
    size_t nin = (size_t)B * C, nw = (size_t)OC * C, nout = (size_t)B * OC;
    c.out = gc_zeros(nout); c.inp = gc_zeros(nin); c.w = gc_zeros(nw); c.b = gc_zeros(OC);
    c.r = gc_zeros(nout);
    gc_fill(&rng, c.inp, nin, 1); gc_fill(&rng, c.w, nw, 0.5f); gc_fill(&rng, c.b, OC, 0.5f);
    gc_fill(&rng, c.r, nout, 1);
    float *dinp = gc_zeros(nin), *dw = gc_zeros(nw), *db = gc_zeros(OC);
    lin_loss(&c);
    be->linear_backward(dinp, dw, db, c.r, c.inp, c.w, B, C, OC);
    ASSERT_INT_EQ(gc_check("linear.dinp", c.inp, nin, dinp, lin_loss, &c, 1e-2f, 1e-2), 0);
    ASSERT_INT_EQ(gc_check("linear.dw", c.w, nw, dw, lin_loss, &c, 1e-2f, 1e-2), 0);
    ASSERT_INT_EQ(gc_check("linear.db", c.b, OC, db, lin_loss, &c, 1e-2f, 1e-2), 0);
    /* a second backward accumulates: every gradient doubles */
    float d0 = dw[3], b0 = db[1], i0 = dinp[2];
    be->linear_backward(dinp, dw, db, c.r, c.inp, c.w, B, C, OC);
    ASSERT_NEAR(dw[3], 2 * d0, 1e-4 * fabs(d0) + 1e-6);
    ASSERT_NEAR(db[1], 2 * b0, 1e-4 * fabs(b0) + 1e-6);
    ASSERT_NEAR(dinp[2], 2 * i0, 1e-4 * fabs(i0) + 1e-6);
    /* without bias, out is the plain product */
    be->linear_forward(c.out, c.inp, c.w, NULL, B, C, OC);
    double ref = 0;
    for (int k = 0; k < C; k++) ref += (double)c.inp[k] * c.w[k];
    ASSERT_NEAR(c.out[0], ref, 1e-4);
    free(c.out); free(c.inp); free(c.w); free(c.b); free(c.r); free(dinp); free(dw); free(db);
}

static void test_linear(void)
{
    setup();
    run_linear(5, 7, 3);
    run_linear(1, 17, 12);   /* the batch-1 gemv path */
}

/* ---- bias ---- */
typedef struct { float *out, *base, *b, *r; int B, C; } bias_t;
static double bias_loss(void *p)
{
    bias_t *c = p;
    memcpy(c->out, c->base, sizeof(float) * c->B * c->C);
    be->bias_forward(c->out, c->b, c->B, c->C);
    return gc_dot(c->out, c->r, (size_t)c->B * c->C);
}

static void test_bias(void)
{
    setup();
    bias_t c = {.B = 4, .C = 6};
    c.out = gc_zeros(24); c.base = gc_zeros(24); c.b = gc_zeros(6); c.r = gc_zeros(24);
    gc_fill(&rng, c.base, 24, 1); gc_fill(&rng, c.b, 6, 1); gc_fill(&rng, c.r, 24, 1);
    float *db = gc_zeros(6);
    be->bias_backward(db, c.r, 4, 6);
    ASSERT_INT_EQ(gc_check("bias.db", c.b, 6, db, bias_loss, &c, 1e-2f, 1e-2), 0);
    free(c.out); free(c.base); free(c.b); free(c.r); free(db);
}

/* ---- activations ---- */
typedef struct { float *out, *inp, *r; size_t n; nn_act_t act; } act_t;
static double act_loss(void *p)
{
    act_t *c = p;
    be->act_forward(c->out, c->inp, c->act, c->n);
    return gc_dot(c->out, c->r, c->n);
}

static void test_activations(void)
{
    setup();
    const char *names[] = {"relu", "tanh", "gelu", "silu"};
    for (int a = NN_ACT_RELU; a <= NN_ACT_SILU; a++) {
        act_t c = {.n = 64, .act = (nn_act_t)a};
        c.out = gc_zeros(64); c.inp = gc_zeros(64); c.r = gc_zeros(64);
        gc_fill(&rng, c.inp, 64, 2); gc_fill(&rng, c.r, 64, 1);
        for (int i = 0; i < 64; i++)   /* keep away from ReLU's kink */
            if (fabsf(c.inp[i]) < 0.05f) c.inp[i] = 0.1f;
        float *d = gc_zeros(64);
        act_loss(&c);
        be->act_backward(d, c.r, c.inp, c.out, c.act, 64);
        ASSERT_INT_EQ(gc_check(names[a], c.inp, 64, d, act_loss, &c, 1e-3f, 1e-2), 0);
        free(c.out); free(c.inp); free(c.r); free(d);
    }
    /* reference values */
    float x[3] = {-1.0f, 0.5f, 2.0f}, y[3];
    be->act_forward(y, x, NN_ACT_GELU, 3);
    ASSERT_NEAR(y[2], 1.9545977f, 1e-5);
    be->act_forward(y, x, NN_ACT_SILU, 3);
    ASSERT_NEAR(y[0], -0.26894142f, 1e-6);
}

/* ---- fused MLP passes: the same bits as the plain ops they replace, and they
 * overwrite whatever their output held ---- */
static void test_fused(void)
{
    setup();
    int B = 9, C = 13, OC = 11;
    size_t ni = (size_t)B * C, no = (size_t)B * OC;
    float *x = gc_zeros(ni), *w = gc_zeros((size_t)OC * C), *b = gc_zeros(OC), *g = gc_zeros(no);
    gc_fill(&rng, x, ni, 1); gc_fill(&rng, w, (size_t)OC * C, 0.5f); gc_fill(&rng, b, OC, 0.5f);
    gc_fill(&rng, g, no, 1);
    for (int a = NN_ACT_RELU; a <= NN_ACT_SILU; a++) {
        /* plain: linear with bias, activation */
        float *pre = gc_zeros(no), *h = gc_zeros(no), *pre2 = gc_zeros(no), *h2 = gc_zeros(no);
        be->linear_forward(pre, x, w, b, B, C, OC);
        be->act_forward(h, pre, (nn_act_t)a, no);
        be->linear_forward(pre2, x, w, NULL, B, C, OC);
        for (size_t i = 0; i < no; i++) h2[i] = 1e9f;   /* stale content is overwritten */
        be->bias_act_forward(h2, pre2, b, (nn_act_t)a, B, OC);
        ASSERT_TRUE(memcmp(pre, pre2, no * sizeof(float)) == 0);
        ASSERT_TRUE(memcmp(h, h2, no * sizeof(float)) == 0);
        /* plain: clear, accumulate; fused: in place */
        float *d = gc_zeros(no), *d2 = gc_zeros(no);
        be->act_backward(d, g, pre, h, (nn_act_t)a, no);
        memcpy(d2, g, no * sizeof(float));
        be->act_backward_inplace(d2, pre, h, (nn_act_t)a, no);
        for (size_t i = 0; i < no; i++) ASSERT_TRUE(d[i] == d2[i]);
        free(pre); free(h); free(pre2); free(h2); free(d); free(d2);
    }
    float *dx = gc_zeros(ni), *dx2 = gc_zeros(ni);
    be->linear_backward(dx, NULL, NULL, g, x, w, B, C, OC);
    for (size_t i = 0; i < ni; i++) dx2[i] = -7.0f;
    be->linear_backward_input(dx2, g, w, B, C, OC);
    ASSERT_TRUE(memcmp(dx, dx2, ni * sizeof(float)) == 0);
    free(x); free(w); free(b); free(g); free(dx); free(dx2);
}

/* ---- layernorm ---- */
typedef struct { float *out, *mean, *rstd, *inp, *w, *b, *r; int B, C; } ln_t;
static double ln_loss(void *p)
{
    ln_t *c = p;
    be->layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->B, c->C);
    return gc_dot(c->out, c->r, (size_t)c->B * c->C);
}

static void test_layernorm(void)
{
    setup();
    ln_t c = {.B = 3, .C = 10};
    size_t n = 30;
    c.out = gc_zeros(n); c.mean = gc_zeros(3); c.rstd = gc_zeros(3); c.inp = gc_zeros(n);
    c.w = gc_zeros(10); c.b = gc_zeros(10); c.r = gc_zeros(n);
    gc_fill(&rng, c.inp, n, 2); gc_fill(&rng, c.w, 10, 1); gc_fill(&rng, c.b, 10, 1);
    gc_fill(&rng, c.r, n, 1);
    float *dinp = gc_zeros(n), *dw = gc_zeros(10), *db = gc_zeros(10);
    ln_loss(&c);
    /* each output row has mean(b) when weight is 1: check the normalisation itself */
    be->layernorm_backward(dinp, dw, db, c.r, c.inp, c.w, c.mean, c.rstd, 3, 10);
    ASSERT_INT_EQ(gc_check("ln.dinp", c.inp, n, dinp, ln_loss, &c, 1e-2f, 2e-2), 0);
    ASSERT_INT_EQ(gc_check("ln.dw", c.w, 10, dw, ln_loss, &c, 1e-2f, 1e-2), 0);
    ASSERT_INT_EQ(gc_check("ln.db", c.b, 10, db, ln_loss, &c, 1e-2f, 1e-2), 0);
    free(c.out); free(c.mean); free(c.rstd); free(c.inp); free(c.w); free(c.b); free(c.r);
    free(dinp); free(dw); free(db);
}

/* ---- softmax ---- */
typedef struct { float *out, *inp, *r; int B, C; } sm_t;
static double sm_loss(void *p)
{
    sm_t *c = p;
    be->softmax_forward(c->out, c->inp, c->B, c->C);
    return gc_dot(c->out, c->r, (size_t)c->B * c->C);
}

static void test_softmax(void)
{
    setup();
    sm_t c = {.B = 3, .C = 7};
    c.out = gc_zeros(21); c.inp = gc_zeros(21); c.r = gc_zeros(21);
    gc_fill(&rng, c.inp, 21, 2); gc_fill(&rng, c.r, 21, 1);
    float *d = gc_zeros(21);
    sm_loss(&c);
    double s = 0;
    for (int i = 0; i < 7; i++) s += c.out[i];
    ASSERT_NEAR(s, 1.0, 1e-6);
    be->softmax_backward(d, c.r, c.out, 3, 7);
    ASSERT_INT_EQ(gc_check("softmax", c.inp, 21, d, sm_loss, &c, 1e-2f, 1e-2), 0);
    /* large logits do not overflow */
    float big[2] = {1000.0f, 999.0f}, o[2];
    be->softmax_forward(o, big, 1, 2);
    ASSERT_NEAR(o[0], 0.7310586f, 1e-6);
    free(c.out); free(c.inp); free(c.r); free(d);
}

/* ---- embedding ---- */
typedef struct { float *out, *table, *r; int32_t *idx; int B, C; } emb_t;
static double emb_loss(void *p)
{
    emb_t *c = p;
    be->embedding_forward(c->out, c->idx, c->table, c->B, c->C);
    return gc_dot(c->out, c->r, (size_t)c->B * c->C);
}

static void test_embedding(void)
{
    setup();
    int32_t idx[5] = {2, 0, 2, 3, 1};
    emb_t c = {.B = 5, .C = 4, .idx = idx};
    c.out = gc_zeros(20); c.table = gc_zeros(16); c.r = gc_zeros(20);
    gc_fill(&rng, c.table, 16, 1); gc_fill(&rng, c.r, 20, 1);
    float *d = gc_zeros(16);
    emb_loss(&c);
    ASSERT_NEAR(c.out[4 * 3 + 1], c.table[3 * 4 + 1], 1e-9);
    be->embedding_backward(d, c.r, idx, 5, 4);
    ASSERT_INT_EQ(gc_check("embedding", c.table, 16, d, emb_loss, &c, 1e-2f, 1e-2), 0);
    free(c.out); free(c.table); free(c.r); free(d);
}

/* ---- conv2d ---- */
typedef struct { float *out, *col, *inp, *w, *b, *r; nn_conv_shape_t s; size_t nout; } conv_t;
static double conv_loss(void *p)
{
    conv_t *c = p;
    be->conv2d_forward(c->out, c->col, c->inp, c->w, c->b, &c->s);
    return gc_dot(c->out, c->r, c->nout);
}

static void run_conv(int stride, int pad)
{
    conv_t c = {.s = {.N = 2, .C = 3, .H = 7, .W = 6, .OC = 4, .KH = 3, .KW = 3, .stride = stride, .pad = pad}};
    cr_err_t err = {0};
    CHECK_OK(nn_conv_shape_init(&c.s, &err), &err);
    size_t nin = 2 * 3 * 7 * 6, nw = 4 * 3 * 9;
    c.nout = (size_t)2 * 4 * c.s.OH * c.s.OW;
    c.out = gc_zeros(c.nout); c.col = gc_zeros(nn_conv_col_size(&c.s)); c.inp = gc_zeros(nin);
    c.w = gc_zeros(nw); c.b = gc_zeros(4); c.r = gc_zeros(c.nout);
    gc_fill(&rng, c.inp, nin, 1); gc_fill(&rng, c.w, nw, 0.5f); gc_fill(&rng, c.b, 4, 1);
    gc_fill(&rng, c.r, c.nout, 1);
    float *dinp = gc_zeros(nin), *dw = gc_zeros(nw), *db = gc_zeros(4);
    conv_loss(&c);
    /* one output against a direct sum */
    double ref = c.b[0];
    for (int ci = 0; ci < 3; ci++)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++) {
                int ih = kh - pad, iw = kw - pad;
                if (ih >= 0 && iw >= 0) ref += (double)c.w[(ci * 3 + kh) * 3 + kw] * c.inp[(ci * 7 + ih) * 6 + iw];
            }
    ASSERT_NEAR(c.out[0], ref, 1e-4);
    be->conv2d_backward(dinp, dw, db, c.col, c.r, c.inp, c.w, &c.s);
    ASSERT_INT_EQ(gc_check("conv.dinp", c.inp, nin, dinp, conv_loss, &c, 1e-2f, 1e-2), 0);
    ASSERT_INT_EQ(gc_check("conv.dw", c.w, nw, dw, conv_loss, &c, 1e-2f, 1e-2), 0);
    ASSERT_INT_EQ(gc_check("conv.db", c.b, 4, db, conv_loss, &c, 1e-2f, 1e-2), 0);
    free(c.out); free(c.col); free(c.inp); free(c.w); free(c.b); free(c.r);
    free(dinp); free(dw); free(db);
}

static void test_conv2d(void)
{
    setup();
    run_conv(1, 1);
    run_conv(2, 0);
    nn_conv_shape_t bad = {.N = 1, .C = 1, .H = 2, .W = 2, .OC = 1, .KH = 5, .KW = 5, .stride = 1};
    cr_err_t err = {0};
    ASSERT_INT_EQ(nn_conv_shape_init(&bad, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "larger") != NULL);
}

/* ---- attention ---- */
typedef struct { float *out, *att, *qkv, *r; int B, T, C, NH, causal; } att_t;
static double att_loss(void *p)
{
    att_t *c = p;
    be->attention_forward(c->out, c->att, c->qkv, c->B, c->T, c->C, c->NH, c->causal);
    return gc_dot(c->out, c->r, (size_t)c->B * c->T * c->C);
}

static void run_attention(int causal)
{
    att_t c = {.B = 2, .T = 4, .C = 6, .NH = 2, .causal = causal};
    size_t nqkv = 2 * 4 * 18, nout = 2 * 4 * 6, natt = 2 * 2 * 4 * 4;
    c.out = gc_zeros(nout); c.att = gc_zeros(natt); c.qkv = gc_zeros(nqkv); c.r = gc_zeros(nout);
    gc_fill(&rng, c.qkv, nqkv, 1); gc_fill(&rng, c.r, nout, 1);
    float *d = gc_zeros(nqkv), *datt = gc_zeros(natt);
    att_loss(&c);
    /* rows of att sum to one; causal rows put no weight on the future */
    double s = 0;
    for (int t = 0; t < 4; t++) s += c.att[4 + t];
    ASSERT_NEAR(s, 1.0, 1e-5);
    if (causal) ASSERT_NEAR(c.att[4 + 2], 0.0, 1e-9);
    be->attention_backward(d, datt, c.r, c.qkv, c.att, 2, 4, 6, 2, causal);
    ASSERT_INT_EQ(gc_check(causal ? "attention.causal" : "attention", c.qkv, nqkv, d, att_loss, &c,
                           1e-2f, 2e-2), 0);
    free(c.out); free(c.att); free(c.qkv); free(c.r); free(d); free(datt);
}

static void test_attention(void)
{
    setup();
    run_attention(0);
    run_attention(1);
}

/* ---- mse ---- */
typedef struct { float *pred, *target, *w; size_t n; } mse_t;
static double mse_loss(void *p)
{
    mse_t *c = p;
    return be->mse_forward(c->pred, c->target, c->w, c->n);
}

static void test_mse(void)
{
    setup();
    mse_t c = {.n = 12};
    c.pred = gc_zeros(12); c.target = gc_zeros(12); c.w = gc_zeros(12);
    gc_fill(&rng, c.pred, 12, 1); gc_fill(&rng, c.target, 12, 1);
    for (int i = 0; i < 12; i++) c.w[i] = (float)(i % 3);
    float *d = gc_zeros(12);
    be->mse_backward(d, c.pred, c.target, c.w, 1.0f / 12, 12);
    ASSERT_INT_EQ(gc_check("mse", c.pred, 12, d, mse_loss, &c, 1e-2f, 1e-2), 0);
    float a[2] = {1, 2}, b[2] = {0, 4};
    ASSERT_NEAR(be->mse_forward(a, b, NULL, 2), 2.5, 1e-9);
    free(c.pred); free(c.target); free(c.w); free(d);
}

/* ---- squashed Gaussian ---- */
typedef struct { float *action, *logp, *head, *eps, *ra, *rl; int B, A; } gt_t;
static double gt_loss(void *p)
{
    gt_t *c = p;
    be->gauss_tanh_forward(c->action, c->logp, c->head, c->eps, c->B, c->A, -5.0f, 2.0f);
    return gc_dot(c->action, c->ra, (size_t)c->B * c->A) + gc_dot(c->logp, c->rl, c->B);
}

static void test_gauss_tanh(void)
{
    setup();
    gt_t c = {.B = 4, .A = 3};
    c.action = gc_zeros(12); c.logp = gc_zeros(4); c.head = gc_zeros(24); c.eps = gc_zeros(12);
    c.ra = gc_zeros(12); c.rl = gc_zeros(4);
    gc_fill(&rng, c.head, 24, 0.7f); gc_fill(&rng, c.eps, 12, 1); gc_fill(&rng, c.ra, 12, 1);
    gc_fill(&rng, c.rl, 4, 1);
    float *dh = gc_zeros(24);
    gt_loss(&c);
    /* log-probability against the textbook formula with log(1 - a^2) */
    double lp = 0;
    for (int j = 0; j < 3; j++) {
        double raw = c.head[3 + j], ls = -5.0 + 3.5 * (tanh(raw) + 1.0), sd = exp(ls);
        double u = c.head[j] + sd * c.eps[j], a = tanh(u);
        lp += -0.5 * c.eps[j] * c.eps[j] - ls - 0.5 * log(2 * M_PI) - log(1 - a * a);
        ASSERT_NEAR(c.action[j], a, 1e-6);
    }
    ASSERT_NEAR(c.logp[0], lp, 1e-3);
    be->gauss_tanh_backward(dh, c.ra, c.rl, c.head, c.eps, c.action, 4, 3, -5.0f, 2.0f);
    ASSERT_INT_EQ(gc_check("gauss_tanh", c.head, 24, dh, gt_loss, &c, 1e-3f, 2e-2), 0);
    /* large |u| stays finite */
    float head[2] = {30.0f, 0.0f}, eps0[1] = {0}, act[1], logp[1];
    be->gauss_tanh_forward(act, logp, head, eps0, 1, 1, -5.0f, 2.0f);
    ASSERT_TRUE(isfinite(logp[0]));
    ASSERT_NEAR(act[0], 1.0, 1e-6);
    free(c.action); free(c.logp); free(c.head); free(c.eps); free(c.ra); free(c.rl); free(dh);
}

/* ---- glue ---- */
static void test_glue(void)
{
    setup();
    float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, out[6];
    be->concat_forward(out, a, b, 2, 2, 1);
    float want[6] = {1, 2, 5, 3, 4, 6};
    for (int i = 0; i < 6; i++) ASSERT_NEAR(out[i], want[i], 1e-9);
    float da[4] = {0}, db[2] = {0};
    be->concat_backward(da, db, want, 2, 2, 1);
    ASSERT_NEAR(da[2], 3, 1e-9);
    ASSERT_NEAR(db[1], 6, 1e-9);
    float q[6] = {1, 5, 3, 2, 0, 4}, m[2];   /* q[3][2] */
    int rows[2] = {0, 2};
    be->rows_min(m, q, rows, 2, 2);
    ASSERT_NEAR(m[0], 0, 1e-9);
    ASSERT_NEAR(m[1], 4, 1e-9);
    be->rows_mean(m, q, 3, 2);
    ASSERT_NEAR(m[1], 11.0 / 3, 1e-6);
    float y[1], r[1] = {1}, d[1] = {0}, qn[1] = {2}, lp[1] = {-1};
    be->td_target(y, r, d, qn, lp, 0.5f, 0.2f, 1);
    ASSERT_NEAR(y[0], 1 + 0.5 * (2 + 0.2), 1e-6);
    float t[2] = {0, 10}, s[2] = {10, 0};
    be->lerp(t, s, 0.1f, 2);
    ASSERT_NEAR(t[0], 1, 1e-6);
    ASSERT_NEAR(t[1], 9, 1e-6);
    /* random shift: shift (pad, pad) is the identity; (0, 2*pad) moves the image */
    float img[16], sh[16];
    for (int i = 0; i < 16; i++) img[i] = (float)i;
    int32_t id[2] = {2, 2}, mv[2] = {0, 4};
    be->random_shift(sh, img, id, 1, 1, 4, 4, 2);
    for (int i = 0; i < 16; i++) ASSERT_NEAR(sh[i], img[i], 1e-9);
    be->random_shift(sh, img, mv, 1, 1, 4, 4, 2);
    ASSERT_NEAR(sh[0], img[2], 1e-9);      /* row 0 - 2 clamps to 0, col 0 + 2 */
    ASSERT_NEAR(sh[4 * 3 + 3], img[4 * 1 + 3], 1e-9);  /* row 3 - 2 = 1, col 5 clamps to 3 */
}

/* ---- Adam / AdamW ---- */
static void test_adam(void)
{
    setup();
    cr_err_t err = {0};
    nn_params_t p;
    nn_params_init(&p, be);
    int shape[1] = {3};
    ASSERT_INT_EQ(nn_params_add(&p, "w", 1, shape, &err), 0);
    ASSERT_INT_EQ(nn_params_add(&p, "w", 1, shape, &err), CR_EEXIST);
    CHECK_OK(nn_params_alloc(&p, &err), &err);
    float w0[3] = {1, -2, 3}, g[3] = {0.5f, -1, 0};
    memcpy(p.data, w0, sizeof w0);
    memcpy(p.grad, g, sizeof g);
    nn_adam_t o;
    CHECK_OK(nn_adam_init(&o, &p, 0.1f, 0.0f, 0.0f, &err), &err);
    ASSERT_INT_EQ(nn_adam_step(&o, &p, NULL), 0);
    /* first step: m/c1 = g, v/c2 = g^2, so the step is lr * sign(g) */
    ASSERT_NEAR(p.data[0], 0.9, 1e-5);
    ASSERT_NEAR(p.data[1], -1.9, 1e-5);
    ASSERT_NEAR(p.data[2], 3.0, 1e-6);
    /* AdamW decays the weights even with zero gradient */
    nn_adam_t ow;
    CHECK_OK(nn_adam_init(&ow, &p, 0.1f, 0.5f, 0.0f, &err), &err);
    p.grad[0] = p.grad[1] = 0;
    ASSERT_INT_EQ(nn_adam_step(&ow, &p, NULL), 0);
    ASSERT_NEAR(p.data[2], 3.0 - 0.1 * 0.5 * 3.0, 1e-5);
    /* clipping scales the gradient to the norm limit */
    nn_adam_t oc;
    CHECK_OK(nn_adam_init(&oc, &p, 0.1f, 0.0f, 1.0f, &err), &err);
    p.grad[0] = 30; p.grad[1] = 40; p.grad[2] = 0;
    double norm;
    ASSERT_INT_EQ(nn_adam_step(&oc, &p, &norm), 0);
    ASSERT_NEAR(norm, 50, 1e-4);
    ASSERT_NEAR(oc.m[0], 0.1 * 0.6, 1e-6);   /* (1 - beta1) * 30/50 */
    /* a NaN gradient changes nothing */
    float before[3];
    memcpy(before, p.data, sizeof before);
    p.grad[1] = NAN;
    ASSERT_INT_EQ(nn_adam_step(&oc, &p, &norm), CR_EINVAL);
    ASSERT_TRUE(memcmp(before, p.data, sizeof before) == 0);
    ASSERT_INT_EQ(oc.t, 1);
    nn_adam_destroy(&o, be); nn_adam_destroy(&ow, be); nn_adam_destroy(&oc, be);
    nn_params_destroy(&p);
}

static void test_rng(void)
{
    nn_rng_t a, b;
    nn_rng_seed(&a, 7);
    nn_rng_seed(&b, 7);
    for (int i = 0; i < 100; i++) ASSERT_TRUE(nn_rng_u64(&a) == nn_rng_u64(&b));
    nn_rng_seed(&b, 8);
    ASSERT_TRUE(nn_rng_u64(&a) != nn_rng_u64(&b));
    /* normal samples: mean ~0, variance ~1 */
    double s = 0, s2 = 0;
    for (int i = 0; i < 20000; i++) { double x = nn_rng_normal(&a); s += x; s2 += x * x; }
    ASSERT_NEAR(s / 20000, 0.0, 0.03);
    ASSERT_NEAR(s2 / 20000, 1.0, 0.05);
    for (int i = 0; i < 1000; i++) {
        float u = nn_rng_uniform(&a);
        ASSERT_TRUE(u >= 0.0f && u < 1.0f);
        ASSERT_TRUE(nn_rng_below(&a, 5) < 5);
    }
    /* a block of normals across lanes: the same values and state as one at a time */
    enum { NN = 3001 };
    static float blk[NN];
    static uint64_t raw[2 * NN];
    nn_pool_t *pool;
    cr_err_t perr = {0};
    CHECK_OK(nn_pool_create(&pool, 2, &perr), &perr);
    for (int k = 0; k < 2; k++) {
        nn_rng_seed(&a, 11);
        nn_rng_seed(&b, 11);
        size_t n = k ? 5 : NN;
        nn_rng_normals(&a, blk, n, raw, pool);
        for (size_t i = 0; i < n; i++) ASSERT_TRUE(blk[i] == nn_rng_normal(&b));
        ASSERT_TRUE(nn_rng_u64(&a) == nn_rng_u64(&b));
    }
    nn_pool_destroy(pool);
    /* the backend selector: cpu always, cuda reports why not */
    const nn_backend_t *got = NULL;
    cr_err_t err = {0};
    CHECK_OK(nn_backend_get("cpu", &got, &err), &err);
    ASSERT_STR_EQ(got->name, "cpu");
    ASSERT_INT_EQ(nn_backend_get("tpu", &got, &err), CR_EINVAL);
    CHECK_OK(nn_backend_get("auto", &got, &err), &err);
    ASSERT_TRUE(got != NULL);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"linear", test_linear},
        {"bias", test_bias},
        {"activations", test_activations},
        {"fused", test_fused},
        {"layernorm", test_layernorm},
        {"softmax", test_softmax},
        {"embedding", test_embedding},
        {"conv2d", test_conv2d},
        {"attention", test_attention},
        {"mse", test_mse},
        {"gauss_tanh", test_gauss_tanh},
        {"glue", test_glue},
        {"adam", test_adam},
        {"rng", test_rng},
        {NULL, NULL},
    };
    return test_main("policies.nn_ops", cases, argc, argv);
}
