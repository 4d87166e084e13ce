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

void pol_mlp_set_pool(pol_mlp_t *m, nn_pool_t *pool, int split_rows)
{
    m->pool = pool;
    m->split_rows = split_rows;
}

/* 128-row blocks keep each product large enough to run at full BLAS speed */
int pol_mlp_row_blocks(int B)
{
    int n = B / 128;
    return n < 1 ? 1 : n > 8 ? 8 : n;
}

void pol_mlp_forward_rows(pol_mlp_t *m, const nn_params_t *p, int r0, int r1)
{
    const nn_backend_t *be = m->be;
    int R = r1 - r0;
    const float *x = m->in + (size_t)r0 * m->width[0];
    for (int l = 0; l < m->nl; l++) {
        int C = m->width[l], OC = m->width[l + 1];
        size_t o = (size_t)r0 * OC;
        const float *w = nn_params_data(p, m->w[l]), *bias = nn_params_data(p, m->b[l]);
        if (l < m->nl - 1 && !m->layernorm && be->bias_act_forward) {
            /* the product, then bias and activation in one pass */
            be->linear_forward(m->pre[l] + o, x, w, NULL, R, C, OC);
            be->bias_act_forward(m->h[l] + o, m->pre[l] + o, bias, m->act, R, OC);
            x = m->h[l] + o;
            continue;
        }
        be->linear_forward(m->pre[l] + o, x, w, bias, R, C, OC);
        if (l == m->nl - 1) break;
        const float *a = m->pre[l] + o;
        if (m->layernorm) {
            be->layernorm_forward(m->ln[l] + o, m->mean[l] + r0, m->rstd[l] + r0, a,
                                  nn_params_data(p, m->lnw[l]), nn_params_data(p, m->lnb[l]), R, OC);
            a = m->ln[l] + o;
        }
        be->act_forward(m->h[l] + o, a, m->act, (size_t)R * OC);
        x = m->h[l] + o;
    }
}

typedef struct rows_job {
    pol_mlp_t *m;
    const nn_params_t *p;
    int B, nb;
} rows_job_t;

static void rows_task(void *arg, int i)
{
    rows_job_t *j = arg;
    pol_mlp_forward_rows(j->m, j->p, (int)((long)j->B * i / j->nb), (int)((long)j->B * (i + 1) / j->nb));
}

const float *pol_mlp_forward(pol_mlp_t *m, const nn_params_t *p, const float *in, int B)
{
    m->in = in;
    if (!m->pool || !m->split_rows) {
        pol_mlp_forward_rows(m, p, 0, B);
    } else {
        rows_job_t j = {m, p, B, pol_mlp_row_blocks(B)};
        nn_pool_run(m->pool, j.nb, rows_task, &j);
    }
    return m->pre[m->nl - 1];
}

/* One layer's linear backward; with a pool and a large layer, the weight
 * gradient and the input gradient (independent products) run side by side. */
typedef struct lin_job {
    const nn_backend_t *be;
    float *dinp, *dw, *db;
    const float *dout, *x, *w;
    int B, C, OC;
    int set;                   /* dinp is overwritten (linear_backward_input), not accumulated */
} lin_job_t;

/* task 0: the weight and bias gradients; task 1: the input gradient */
static void lin_task(void *arg, int i)
{
    lin_job_t *j = arg;
    if (i == 0) {
        if (j->dw) j->be->linear_backward(NULL, j->dw, j->db, j->dout, j->x, j->w, j->B, j->C, j->OC);
    } else if (j->dinp) {
        if (j->set) j->be->linear_backward_input(j->dinp, j->dout, j->w, j->B, j->C, j->OC);
        else j->be->linear_backward(j->dinp, NULL, NULL, j->dout, j->x, j->w, j->B, j->C, j->OC);
    }
}

#define SPLIT_MIN_MACS (1L << 19)   /* ~10 us of work: below it a fork costs more than it gains */

static void linear_backward(pol_mlp_t *m, lin_job_t *j)
{
    if (m->pool && j->dw && j->dinp && (long)j->B * j->C * j->OC >= SPLIT_MIN_MACS) {
        nn_pool_run(m->pool, 2, lin_task, j);
    } else if (j->set) {
        lin_task(j, 0);
        lin_task(j, 1);
    } else {
        j->be->linear_backward(j->dinp, j->dw, j->db, j->dout, j->x, j->w, j->B, j->C, j->OC);
    }
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
    /* with the fused ops, hidden gradients are written, not cleared and added to */
    int fused = be->linear_backward_input && be->act_backward_inplace;
    for (int l = m->nl - 1; l >= 0; l--) {
        int C = m->width[l], OC = m->width[l + 1];
        const float *x = l == 0 ? m->in : m->h[l - 1];
        int xi = di < 0 ? 0 : (di + 1) % 3;
        if (l > 0 && !fused) be->fill(buf[xi], 0.0f, (size_t)B * C);
        lin_job_t j = {be, l == 0 ? dinp : buf[xi], param_grads ? nn_params_grad(p, m->w[l]) : NULL,
                       param_grads ? nn_params_grad(p, m->b[l]) : NULL, d, x, nn_params_data(p, m->w[l]),
                       B, C, OC, l > 0 && fused};
        linear_backward(m, &j);
        if (l == 0) break;
        /* buf[xi] is the gradient wrt h[k]; back through the activation and LayerNorm */
        int k = l - 1;
        size_t n = (size_t)B * C;
        int ai = (xi + 1) % 3;
        const float *ain = m->layernorm ? m->ln[k] : m->pre[k];
        if (fused) {
            be->act_backward_inplace(buf[xi], ain, m->h[k], m->act, n);
            ai = xi;
            xi = (ai + 1) % 3;
        } else {
            be->fill(buf[ai], 0.0f, n);
            be->act_backward(buf[ai], buf[xi], ain, m->h[k], m->act, n);
        }
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
