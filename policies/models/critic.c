/* critic.c - the Q-critic ensemble: n independent MLP heads over the concatenated
 * [obs | action], all parameters in one arena so the target copy is a single
 * Polyak lerp over one array. LayerNorm in the heads is what RLPD relies on to
 * keep a high update-to-data ratio stable. */
#include "policies/models/models.h"

#include <stdio.h>
#include <string.h>

int pol_critic_create(pol_critic_t *c, const nn_backend_t *be, int n, int obs_dim, int act_dim,
                      const int *hidden, int nhidden, int layernorm, nn_rng_t *rng, cr_err_t *err)
{
    memset(c, 0, sizeof *c);
    if (n < 1 || n > POL_MAX_Q)
        return cr_err_set(err, CR_EINVAL, "critic: ensemble size %d (1..%d)", n, POL_MAX_Q);
    nn_params_init(&c->params, be);
    c->n = n;
    c->obs_dim = obs_dim;
    c->act_dim = act_dim;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "q%d", i);
        rc = pol_mlp_declare(&c->head[i], &c->params, prefix, obs_dim + act_dim, hidden, nhidden, 1,
                             layernorm, err);
    }
    if (rc == 0) rc = nn_params_alloc(&c->params, err);
    if (rc != 0) {
        nn_params_destroy(&c->params);
        return rc;
    }
    for (int i = 0; i < n; i++) pol_mlp_init(&c->head[i], &c->params, rng);
    return 0;
}

static void free_bufs(pol_critic_t *c)
{
    const nn_backend_t *be = c->params.be;
    float **bufs[] = {&c->x, &c->dx, &c->q};
    for (int i = 0; i < 3; i++)
        if (*bufs[i]) { be->free(*bufs[i]); *bufs[i] = NULL; }
    c->cap = 0;
}

void pol_critic_destroy(pol_critic_t *c)
{
    if (!c->params.be) return;
    free_bufs(c);
    for (int i = 0; i < c->n; i++) pol_mlp_destroy(&c->head[i]);
    nn_params_destroy(&c->params);
}

int pol_critic_reserve(pol_critic_t *c, int B, cr_err_t *err)
{
    for (int i = 0; i < c->n; i++) {
        int rc = pol_mlp_reserve(&c->head[i], B, err);
        if (rc != 0) return rc;
    }
    if (B <= c->cap) return 0;
    free_bufs(c);
    const nn_backend_t *be = c->params.be;
    size_t in = (size_t)(c->obs_dim + c->act_dim), f = sizeof(float);
    c->x = be->alloc(B * in * f);
    c->dx = be->alloc((size_t)c->n * B * in * f);
    c->q = be->alloc((size_t)c->n * B * f);
    if (!c->x || !c->dx || !c->q) {
        free_bufs(c);
        return cr_err_set(err, CR_ENOMEM, "critic: cannot allocate scratch for batch %d", B);
    }
    c->cap = B;
    return 0;
}

void pol_critic_set_pool(pol_critic_t *c, nn_pool_t *pool)
{
    c->pool = pool;
    /* the heads are the parallel tasks: their rows stay whole */
    for (int i = 0; i < c->n; i++) pol_mlp_set_pool(&c->head[i], pool, 0);
}

typedef struct head_job {
    pol_critic_t *c;
    const float *dq;
    int B, want, param_grads;
} head_job_t;

static void fwd_task(void *arg, int i)
{
    head_job_t *j = arg;
    pol_critic_t *c = j->c;
    const float *q = pol_mlp_forward(&c->head[i], &c->params, c->x, j->B);
    c->params.be->copy(c->q + (size_t)i * j->B, q, (size_t)j->B * sizeof(float));
}

void pol_critic_forward(pol_critic_t *c, const float *obs, const float *act, int B)
{
    c->params.be->concat_forward(c->x, obs, act, B, c->obs_dim, c->act_dim);
    head_job_t j = {c, NULL, B, 0, 0};
    nn_pool_run(c->pool, c->n, fwd_task, &j);
}

static void bwd_task(void *arg, int i)
{
    head_job_t *j = arg;
    pol_critic_t *c = j->c;
    size_t nx = (size_t)j->B * (c->obs_dim + c->act_dim);
    float *dx = j->want ? c->dx + i * nx : NULL;
    if (dx) c->params.be->fill(dx, 0.0f, nx);
    pol_mlp_backward(&c->head[i], &c->params, dx, j->dq + (size_t)i * j->B, j->B, j->param_grads);
}

void pol_critic_backward(pol_critic_t *c, const float *dq, float *dobs, float *dact, int B,
                         int param_grads)
{
    head_job_t j = {c, dq, B, dobs || dact, param_grads};
    nn_pool_run(c->pool, c->n, bwd_task, &j);
    if (!j.want) return;
    size_t nx = (size_t)B * (c->obs_dim + c->act_dim);
    for (int i = 0; i < c->n; i++)
        c->params.be->concat_backward(dobs, dact, c->dx + i * nx, B, c->obs_dim, c->act_dim);
}
