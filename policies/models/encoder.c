/* encoder.c - the CNN image encoder (DrQ style): two 3x3 conv + ReLU layers (the
 * first with stride 2), a linear projection to `feat` features, LayerNorm and
 * tanh. Images are NCHW floats in [0, 1]; random-shift augmentation is applied by
 * the caller (the random_shift op) before the forward pass. */
#include "policies/models/models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENC_CH 16

int pol_encoder_declare(pol_encoder_t *e, nn_params_t *p, const char *prefix, int C, int H, int W,
                        int feat, cr_err_t *err)
{
    memset(e, 0, sizeof *e);
    e->p = p;
    e->be = p->be;
    e->nconv = 2;
    e->feat = feat;
    int inC = C, inH = H, inW = W;
    char name[NN_NAME_MAX];
    for (int i = 0; i < e->nconv; i++) {
        nn_conv_shape_t *s = &e->cs[i];
        *s = (nn_conv_shape_t){.N = 1, .C = inC, .H = inH, .W = inW, .OC = ENC_CH, .KH = 3,
                               .KW = 3, .stride = i == 0 ? 2 : 1, .pad = 1};
        int rc = nn_conv_shape_init(s, err);
        if (rc != 0) return cr_err_wrap(err, "encoder %s conv %d", prefix, i);
        int ws[4] = {s->OC, s->C, s->KH, s->KW};
        snprintf(name, sizeof name, "%s.conv%d.weight", prefix, i);
        if ((e->cw[i] = nn_params_add(p, name, 4, ws, err)) < 0) return e->cw[i];
        snprintf(name, sizeof name, "%s.conv%d.bias", prefix, i);
        if ((e->cb[i] = nn_params_add(p, name, 1, ws, err)) < 0) return e->cb[i];
        inC = s->OC; inH = s->OH; inW = s->OW;
    }
    e->flat = inC * inH * inW;
    int fs[2] = {feat, e->flat};
    snprintf(name, sizeof name, "%s.fc.weight", prefix);
    if ((e->fw = nn_params_add(p, name, 2, fs, err)) < 0) return e->fw;
    snprintf(name, sizeof name, "%s.fc.bias", prefix);
    if ((e->fb = nn_params_add(p, name, 1, fs, err)) < 0) return e->fb;
    snprintf(name, sizeof name, "%s.ln.weight", prefix);
    if ((e->lnw = nn_params_add(p, name, 1, fs, err)) < 0) return e->lnw;
    snprintf(name, sizeof name, "%s.ln.bias", prefix);
    if ((e->lnb = nn_params_add(p, name, 1, fs, err)) < 0) return e->lnb;
    return 0;
}

static void init_host(const nn_backend_t *be, nn_rng_t *rng, float *dw, float *db, int fan_in,
                      size_t nw, size_t nb)
{
    float *h = malloc((nw + nb) * sizeof(float));
    if (!h) abort();
    nn_init_linear(rng, h, h + nw, fan_in, nw, nb);
    be->upload(dw, h, nw * sizeof(float));
    be->upload(db, h + nw, nb * sizeof(float));
    free(h);
}

void pol_encoder_init(pol_encoder_t *e, nn_rng_t *rng)
{
    for (int i = 0; i < e->nconv; i++) {
        const nn_conv_shape_t *s = &e->cs[i];
        int fan = s->C * s->KH * s->KW;
        init_host(e->be, rng, nn_params_data(e->p, e->cw[i]), nn_params_data(e->p, e->cb[i]), fan,
                  (size_t)s->OC * fan, (size_t)s->OC);
    }
    init_host(e->be, rng, nn_params_data(e->p, e->fw), nn_params_data(e->p, e->fb), e->flat,
              (size_t)e->feat * e->flat, (size_t)e->feat);
    e->be->fill(nn_params_data(e->p, e->lnw), 1.0f, (size_t)e->feat);
    e->be->fill(nn_params_data(e->p, e->lnb), 0.0f, (size_t)e->feat);
}

static void free_bufs(pol_encoder_t *e)
{
    for (int i = 0; i < POL_ENC_MAX_CONV; i++) {
        if (e->conv_out[i]) e->be->free(e->conv_out[i]);
        if (e->relu_out[i]) e->be->free(e->relu_out[i]);
        e->conv_out[i] = e->relu_out[i] = NULL;
    }
    float **b[] = {&e->col, &e->fc, &e->ln, &e->mean, &e->rstd, &e->out, &e->dbuf0, &e->dbuf1};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (*b[i]) { e->be->free(*b[i]); *b[i] = NULL; }
    e->cap = 0;
}

void pol_encoder_destroy(pol_encoder_t *e)
{
    if (e->be) free_bufs(e);
}

int pol_encoder_reserve(pol_encoder_t *e, int B, cr_err_t *err)
{
    if (B <= e->cap) return 0;
    free_bufs(e);
    size_t f = sizeof(float), maxn = 0, col = 0;
    int ok = 1;
    for (int i = 0; i < e->nconv; i++) {
        const nn_conv_shape_t *s = &e->cs[i];
        size_t n = (size_t)B * s->OC * s->OH * s->OW, in = (size_t)B * s->C * s->H * s->W;
        ok &= (e->conv_out[i] = e->be->alloc(n * f)) != NULL;
        ok &= (e->relu_out[i] = e->be->alloc(n * f)) != NULL;
        maxn = n > maxn ? n : maxn;
        maxn = in > maxn ? in : maxn;
        col = nn_conv_col_size(s) > col ? nn_conv_col_size(s) : col;
    }
    size_t nf = (size_t)B * e->feat;
    ok &= (e->col = e->be->alloc(col * f)) != NULL;
    ok &= (e->fc = e->be->alloc(nf * f)) != NULL;
    ok &= (e->ln = e->be->alloc(nf * f)) != NULL;
    ok &= (e->out = e->be->alloc(nf * f)) != NULL;
    ok &= (e->mean = e->be->alloc((size_t)B * f)) != NULL;
    ok &= (e->rstd = e->be->alloc((size_t)B * f)) != NULL;
    maxn = nf > maxn ? nf : maxn;
    ok &= (e->dbuf0 = e->be->alloc(maxn * f)) != NULL;
    ok &= (e->dbuf1 = e->be->alloc(maxn * f)) != NULL;
    if (!ok) {
        free_bufs(e);
        return cr_err_set(err, CR_ENOMEM, "encoder: cannot allocate scratch for batch %d", B);
    }
    e->cap = B;
    return 0;
}

const float *pol_encoder_forward(pol_encoder_t *e, const float *img, int B)
{
    const nn_backend_t *be = e->be;
    e->in = img;
    const float *x = img;
    for (int i = 0; i < e->nconv; i++) {
        nn_conv_shape_t s = e->cs[i];
        s.N = B;
        be->conv2d_forward(e->conv_out[i], e->col, x, nn_params_data(e->p, e->cw[i]),
                           nn_params_data(e->p, e->cb[i]), &s);
        be->act_forward(e->relu_out[i], e->conv_out[i], NN_ACT_RELU, (size_t)B * s.OC * s.OH * s.OW);
        x = e->relu_out[i];
    }
    be->linear_forward(e->fc, x, nn_params_data(e->p, e->fw), nn_params_data(e->p, e->fb), B,
                       e->flat, e->feat);
    be->layernorm_forward(e->ln, e->mean, e->rstd, e->fc, nn_params_data(e->p, e->lnw),
                          nn_params_data(e->p, e->lnb), B, e->feat);
    be->act_forward(e->out, e->ln, NN_ACT_TANH, (size_t)B * e->feat);
    return e->out;
}

void pol_encoder_backward(pol_encoder_t *e, float *dimg, const float *dout, int B)
{
    const nn_backend_t *be = e->be;
    const nn_params_t *p = e->p;
    size_t nf = (size_t)B * e->feat;
    float *d0 = e->dbuf0, *d1 = e->dbuf1;
    be->fill(d0, 0.0f, nf);
    be->act_backward(d0, dout, e->ln, e->out, NN_ACT_TANH, nf);
    be->fill(d1, 0.0f, nf);
    be->layernorm_backward(d1, nn_params_grad(p, e->lnw), nn_params_grad(p, e->lnb), d0, e->fc,
                           nn_params_data(p, e->lnw), e->mean, e->rstd, B, e->feat);
    be->fill(d0, 0.0f, (size_t)B * e->flat);
    be->linear_backward(d0, nn_params_grad(p, e->fw), nn_params_grad(p, e->fb), d1,
                        e->relu_out[e->nconv - 1], nn_params_data(p, e->fw), B, e->flat, e->feat);
    /* d0: gradient wrt the last ReLU output */
    for (int i = e->nconv - 1; i >= 0; i--) {
        nn_conv_shape_t s = e->cs[i];
        s.N = B;
        size_t n = (size_t)B * s.OC * s.OH * s.OW, nin = (size_t)B * s.C * s.H * s.W;
        be->fill(d1, 0.0f, n);
        be->act_backward(d1, d0, e->conv_out[i], e->relu_out[i], NN_ACT_RELU, n);
        float *dx = i == 0 ? dimg : d0;
        if (i > 0) be->fill(d0, 0.0f, nin);
        be->conv2d_backward(dx, nn_params_grad(p, e->cw[i]), nn_params_grad(p, e->cb[i]), e->col, d1,
                            i == 0 ? e->in : e->relu_out[i - 1], nn_params_data(p, e->cw[i]), &s);
    }
}
