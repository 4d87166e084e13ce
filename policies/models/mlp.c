/* mlp.c - the multilayer perceptron every actor and critic head is made of:
 * linear -> [LayerNorm] -> activation per hidden layer, then a linear output.
 * Forward keeps each layer's intermediate tensors; backward walks them in reverse. */
#include "policies/models/models.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pol_mlp_declare(pol_mlp_t *m, nn_params_t *p, const char *prefix, int in, const int *hidden,
                    int nhidden, int out, int layernorm, cr_err_t *err)
{
    if (nhidden < 0 || nhidden >= POL_MLP_MAX_LAYERS || in <= 0 || out <= 0)
        return cr_err_set(err, CR_EINVAL, "mlp %s: %d hidden layers (max %d), in %d, out %d", prefix,
                          nhidden, POL_MLP_MAX_LAYERS - 1, in, out);
    memset(m, 0, sizeof *m);
    m->be = p->be;
    m->nl = nhidden + 1;
    m->layernorm = layernorm;
    m->act = NN_ACT_RELU;
    m->width[0] = in;
    for (int l = 0; l < nhidden; l++) {
        if (hidden[l] <= 0) return cr_err_set(err, CR_EINVAL, "mlp %s: hidden width %d", prefix, hidden[l]);
        m->width[l + 1] = hidden[l];
    }
    m->width[m->nl] = out;
    char name[NN_NAME_MAX];
    for (int l = 0; l < m->nl; l++) {
        int ws[2] = {m->width[l + 1], m->width[l]};
        snprintf(name, sizeof name, "%s.%d.weight", prefix, l);
        if ((m->w[l] = nn_params_add(p, name, 2, ws, err)) < 0) return m->w[l];
        snprintf(name, sizeof name, "%s.%d.bias", prefix, l);
        if ((m->b[l] = nn_params_add(p, name, 1, ws, err)) < 0) return m->b[l];
        if (layernorm && l < m->nl - 1) {
            snprintf(name, sizeof name, "%s.%d.ln.weight", prefix, l);
            if ((m->lnw[l] = nn_params_add(p, name, 1, ws, err)) < 0) return m->lnw[l];
            snprintf(name, sizeof name, "%s.%d.ln.bias", prefix, l);
            if ((m->lnb[l] = nn_params_add(p, name, 1, ws, err)) < 0) return m->lnb[l];
        }
    }
    return 0;
}

void pol_mlp_init(pol_mlp_t *m, const nn_params_t *p, nn_rng_t *rng)
{
    for (int l = 0; l < m->nl; l++) {
        size_t nw = (size_t)m->width[l] * m->width[l + 1], nb = (size_t)m->width[l + 1];
        float *host = malloc((nw + nb) * sizeof(float));
        if (!host) abort();   /* tiny; an allocation failure here is not recoverable */
        nn_init_linear(rng, host, host + nw, m->width[l], nw, nb);
        m->be->upload(nn_params_data(p, m->w[l]), host, nw * sizeof(float));
        m->be->upload(nn_params_data(p, m->b[l]), host + nw, nb * sizeof(float));
        free(host);
        if (m->layernorm && l < m->nl - 1) {
            m->be->fill(nn_params_data(p, m->lnw[l]), 1.0f, nb);
            m->be->fill(nn_params_data(p, m->lnb[l]), 0.0f, nb);
        }
    }
}

static void free_scratch(pol_mlp_t *m)
{
    const nn_backend_t *be = m->be;
    for (int l = 0; l < POL_MLP_MAX_LAYERS; l++) {
        float **bufs[] = {&m->pre[l], &m->ln[l], &m->mean[l], &m->rstd[l], &m->h[l]};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (*bufs[i]) { be->free(*bufs[i]); *bufs[i] = NULL; }
    }
    float **d[] = {&m->d0, &m->d1, &m->d2};
    for (int i = 0; i < 3; i++)
        if (*d[i]) { be->free(*d[i]); *d[i] = NULL; }
    m->cap = 0;
}

int pol_mlp_reserve(pol_mlp_t *m, int B, cr_err_t *err)
{
    if (B <= m->cap) return 0;
    free_scratch(m);
    const nn_backend_t *be = m->be;
    size_t f = sizeof(float);
    int maxw = 0;
    for (int l = 0; l <= m->nl; l++) maxw = m->width[l] > maxw ? m->width[l] : maxw;
    int ok = 1;
    for (int l = 0; l < m->nl; l++) {
        size_t n = (size_t)B * m->width[l + 1];
        ok &= (m->pre[l] = be->alloc(n * f)) != NULL;
        if (l < m->nl - 1) {
            ok &= (m->h[l] = be->alloc(n * f)) != NULL;
            if (m->layernorm) {
                ok &= (m->ln[l] = be->alloc(n * f)) != NULL;
                ok &= (m->mean[l] = be->alloc((size_t)B * f)) != NULL;
                ok &= (m->rstd[l] = be->alloc((size_t)B * f)) != NULL;
            }
        }
    }
    ok &= (m->d0 = be->alloc((size_t)B * maxw * f)) != NULL;
    ok &= (m->d1 = be->alloc((size_t)B * maxw * f)) != NULL;
    ok &= (m->d2 = be->alloc((size_t)B * maxw * f)) != NULL;
    if (!ok) {
        free_scratch(m);
        return cr_err_set(err, CR_ENOMEM, "mlp: cannot allocate scratch for batch %d", B);
    }
    m->cap = B;
    return 0;
}

const float *pol_mlp_forward(pol_mlp_t *m, const nn_params_t *p, const float *in, int B)
{
    const nn_backend_t *be = m->be;
    m->in = in;
    const float *x = in;
    for (int l = 0; l < m->nl; l++) {
        int C = m->width[l], OC = m->width[l + 1];
        be->linear_forward(m->pre[l], x, nn_params_data(p, m->w[l]), nn_params_data(p, m->b[l]),
                           B, C, OC);
        if (l == m->nl - 1) break;
        const float *a = m->pre[l];
        if (m->layernorm) {
            be->layernorm_forward(m->ln[l], m->mean[l], m->rstd[l], a, nn_params_data(p, m->lnw[l]),
                                  nn_params_data(p, m->lnb[l]), B, OC);
            a = m->ln[l];
        }
        be->act_forward(m->h[l], a, m->act, (size_t)B * OC);
        x = m->h[l];
    }
    return m->pre[m->nl - 1];
}

void pol_mlp_backward(pol_mlp_t *m, const nn_params_t *p, float *dinp, const float *dout, int B,
                      int param_grads)
{
    const nn_backend_t *be = m->be;
    /* three scratch buffers rotate: a buffer is reused only once its gradient has
     * been consumed by the op that follows it */
    float *buf[3] = {m->d0, m->d1, m->d2};
    const float *d = dout;     /* gradient wrt pre[l] */
    int di = -1;               /* index of d in buf, -1 for the caller's dout */
    for (int l = m->nl - 1; l >= 0; l--) {
        int C = m->width[l], OC = m->width[l + 1];
        const float *x = l == 0 ? m->in : m->h[l - 1];
        int xi = di < 0 ? 0 : (di + 1) % 3;
        if (l > 0) be->fill(buf[xi], 0.0f, (size_t)B * C);
        be->linear_backward(l == 0 ? dinp : buf[xi],
                            param_grads ? nn_params_grad(p, m->w[l]) : NULL,
                            param_grads ? nn_params_grad(p, m->b[l]) : NULL, d, x,
                            nn_params_data(p, m->w[l]), B, C, OC);
        if (l == 0) break;
        /* buf[xi] is the gradient wrt h[k]; back through the activation and LayerNorm */
        int k = l - 1;
        size_t n = (size_t)B * C;
        int ai = (xi + 1) % 3;
        be->fill(buf[ai], 0.0f, n);
        be->act_backward(buf[ai], buf[xi], m->layernorm ? m->ln[k] : m->pre[k], m->h[k], m->act, n);
        di = ai;
        if (m->layernorm) {
            be->fill(buf[xi], 0.0f, n);
            be->layernorm_backward(buf[xi], param_grads ? nn_params_grad(p, m->lnw[k]) : NULL,
                                   param_grads ? nn_params_grad(p, m->lnb[k]) : NULL, buf[ai],
                                   m->pre[k], nn_params_data(p, m->lnw[k]), m->mean[k], m->rstd[k],
                                   B, C);
            di = xi;
        }
        d = buf[di];
    }
}

void pol_mlp_destroy(pol_mlp_t *m)
{
    if (m->be) free_scratch(m);
}
