/* transformer.c - the pre-LayerNorm transformer block of the VLA, built from the
 * nn layer's ops (LayerNorm, linear, multi-head attention, GELU):
 *     x1  = x  + proj(attention(qkv(ln1(x))))
 *     out = x1 + fc2(gelu(fc1(ln2(x1))))
 * over rows of C features, N = B*T rows. Residual additions use the backend's
 * bias op on one row of N*C (out += x), so the block runs on any backend. The
 * forward keeps every intermediate for the backward; the backward walks them in
 * reverse and accumulates into dx and the parameter grads. */
#include "policies/models/gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pol_block_declare(pol_block_t *k, nn_params_t *p, const char *prefix, int C, int NH, int hidden,
                      cr_err_t *err)
{
    memset(k, 0, sizeof *k);
    if (C <= 0 || NH <= 0 || C % NH || hidden <= 0)
        return cr_err_set(err, CR_EINVAL, "block %s: width %d must be a positive multiple of the %d heads, "
                          "mlp width %d > 0", prefix, C, NH, hidden);
    k->be = p->be;
    k->C = C;
    k->NH = NH;
    k->hidden = hidden;
    struct { int *idx; const char *name; int ndim, s0, s1; } t[] = {
        {&k->ln1w, "ln1.weight", 1, C, 0}, {&k->ln1b, "ln1.bias", 1, C, 0},
        {&k->qkvw, "qkv.weight", 2, 3 * C, C}, {&k->qkvb, "qkv.bias", 1, 3 * C, 0},
        {&k->projw, "proj.weight", 2, C, C}, {&k->projb, "proj.bias", 1, C, 0},
        {&k->ln2w, "ln2.weight", 1, C, 0}, {&k->ln2b, "ln2.bias", 1, C, 0},
        {&k->fc1w, "fc1.weight", 2, hidden, C}, {&k->fc1b, "fc1.bias", 1, hidden, 0},
        {&k->fc2w, "fc2.weight", 2, C, hidden}, {&k->fc2b, "fc2.bias", 1, C, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char name[NN_NAME_MAX];
        snprintf(name, sizeof name, "%s.%s", prefix, t[i].name);
        int shape[2] = {t[i].s0, t[i].s1};
        if ((*t[i].idx = nn_params_add(p, name, t[i].ndim, shape, err)) < 0) return *t[i].idx;
    }
    return 0;
}

static void init_linear(const nn_backend_t *be, const nn_params_t *p, int w, int b, int in, int out,
                        nn_rng_t *rng)
{
    size_t nw = (size_t)in * out;
    float *host = malloc((nw + (size_t)out) * sizeof(float));
    if (!host) abort();   /* a few KB; not recoverable */
    nn_init_linear(rng, host, host + nw, in, nw, (size_t)out);
    be->upload(nn_params_data(p, w), host, nw * sizeof(float));
    be->upload(nn_params_data(p, b), host + nw, (size_t)out * sizeof(float));
    free(host);
}

void pol_block_init(pol_block_t *k, const nn_params_t *p, nn_rng_t *rng)
{
    const nn_backend_t *be = k->be;
    int C = k->C;
    be->fill(nn_params_data(p, k->ln1w), 1.0f, (size_t)C);
    be->fill(nn_params_data(p, k->ln2w), 1.0f, (size_t)C);
    be->fill(nn_params_data(p, k->ln1b), 0.0f, (size_t)C);
    be->fill(nn_params_data(p, k->ln2b), 0.0f, (size_t)C);
    init_linear(be, p, k->qkvw, k->qkvb, C, 3 * C, rng);
    init_linear(be, p, k->projw, k->projb, C, C, rng);
    init_linear(be, p, k->fc1w, k->fc1b, C, k->hidden, rng);
    init_linear(be, p, k->fc2w, k->fc2b, k->hidden, C, rng);
}

static void free_scratch(pol_block_t *k)
{
    float **b[] = {&k->ln1, &k->mean1, &k->rstd1, &k->qkv, &k->att, &k->y, &k->x1, &k->ln2, &k->mean2,
                   &k->rstd2, &k->fc1, &k->gelu, &k->d_a, &k->d_b, &k->d_att, &k->d_qkv, &k->d_h, &k->d_h2};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (*b[i]) { k->be->free(*b[i]); *b[i] = NULL; }
    k->cap = 0;
}

int pol_block_reserve(pol_block_t *k, int B, int T, cr_err_t *err)
{
    int N = B * T;
    if (N <= k->cap && T == k->T) return 0;
    free_scratch(k);
    const nn_backend_t *be = k->be;
    size_t n = (size_t)N, C = (size_t)k->C, M = (size_t)k->hidden, f = sizeof(float);
    size_t natt = (size_t)B * k->NH * T * T;
    struct { float **p; size_t n; } a[] = {
        {&k->ln1, n * C}, {&k->mean1, n}, {&k->rstd1, n}, {&k->qkv, 3 * n * C}, {&k->att, natt},
        {&k->y, n * C}, {&k->x1, n * C}, {&k->ln2, n * C}, {&k->mean2, n}, {&k->rstd2, n},
        {&k->fc1, n * M}, {&k->gelu, n * M}, {&k->d_a, n * C}, {&k->d_b, n * C}, {&k->d_att, natt},
        {&k->d_qkv, 3 * n * C}, {&k->d_h, n * M}, {&k->d_h2, n * M},
    };
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        if (!(*a[i].p = be->alloc(a[i].n * f))) {
            free_scratch(k);
            return cr_err_set(err, CR_ENOMEM, "block: cannot allocate scratch for %d x %d tokens", B, T);
        }
    k->cap = N;
    k->T = T;
    return 0;
}

#define W(i) nn_params_data(p, k->i)
#define G(i) nn_params_grad(p, k->i)

void pol_block_forward(pol_block_t *k, const nn_params_t *p, float *out, const float *x, int B, int T)
{
    const nn_backend_t *be = k->be;
    int N = B * T, C = k->C, M = k->hidden;
    size_t NC = (size_t)N * C;
    k->x0 = x;
    be->layernorm_forward(k->ln1, k->mean1, k->rstd1, x, W(ln1w), W(ln1b), N, C);
    be->linear_forward(k->qkv, k->ln1, W(qkvw), W(qkvb), N, C, 3 * C);
    be->attention_forward(k->y, k->att, k->qkv, B, T, C, k->NH, 0);
    be->linear_forward(k->x1, k->y, W(projw), W(projb), N, C, C);
    be->bias_forward(k->x1, x, 1, (int)NC);
    be->layernorm_forward(k->ln2, k->mean2, k->rstd2, k->x1, W(ln2w), W(ln2b), N, C);
    be->linear_forward(k->fc1, k->ln2, W(fc1w), W(fc1b), N, C, M);
    be->act_forward(k->gelu, k->fc1, NN_ACT_GELU, (size_t)N * M);
    be->linear_forward(out, k->gelu, W(fc2w), W(fc2b), N, M, C);
    be->bias_forward(out, k->x1, 1, (int)NC);
}

void pol_block_backward(pol_block_t *k, const nn_params_t *p, float *dx, const float *dout, int B, int T)
{
    const nn_backend_t *be = k->be;
    int N = B * T, C = k->C, M = k->hidden;
    size_t NC = (size_t)N * C, NM = (size_t)N * M;
    /* MLP branch: d_b = dx1 starts as the residual copy of dout */
    be->copy(k->d_b, dout, NC * sizeof(float));
    be->fill(k->d_h, 0.0f, NM);
    be->linear_backward(k->d_h, G(fc2w), G(fc2b), dout, k->gelu, W(fc2w), N, M, C);
    be->fill(k->d_h2, 0.0f, NM);
    be->act_backward(k->d_h2, k->d_h, k->fc1, k->gelu, NN_ACT_GELU, NM);
    be->fill(k->d_a, 0.0f, NC);
    be->linear_backward(k->d_a, G(fc1w), G(fc1b), k->d_h2, k->ln2, W(fc1w), N, C, M);
    be->layernorm_backward(k->d_b, G(ln2w), G(ln2b), k->d_a, k->x1, W(ln2w), k->mean2, k->rstd2, N, C);
    /* attention branch */
    be->fill(k->d_a, 0.0f, NC);
    be->linear_backward(k->d_a, G(projw), G(projb), k->d_b, k->y, W(projw), N, C, C);
    be->fill(k->d_qkv, 0.0f, 3 * NC);
    be->attention_backward(k->d_qkv, k->d_att, k->d_a, k->qkv, k->att, B, T, C, k->NH, 0);
    be->fill(k->d_a, 0.0f, NC);
    be->linear_backward(k->d_a, G(qkvw), G(qkvb), k->d_qkv, k->ln1, W(qkvw), N, C, 3 * C);
    be->layernorm_backward(dx, G(ln1w), G(ln1b), k->d_a, k->x0, W(ln1w), k->mean1, k->rstd1, N, C);
    be->bias_forward(dx, k->d_b, 1, (int)NC);
}

void pol_block_destroy(pol_block_t *k)
{
    if (k->be) free_scratch(k);
}
