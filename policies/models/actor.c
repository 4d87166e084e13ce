/* actor.c - the Gaussian policy with tanh squashing: an MLP maps obs[B][obs_dim]
 * to head[B][2A] = (mean, raw log std), and the gauss_tanh op turns the head and
 * noise into actions in (-1, 1) with their exact log-probabilities. The log std
 * is bounded smoothly to [log_std_lo, log_std_hi] inside that op. */
#include "policies/models/models.h"

#include <string.h>

int pol_actor_create(pol_actor_t *a, const nn_backend_t *be, int obs_dim, int act_dim,
                     const int *hidden, int nhidden, nn_rng_t *rng, cr_err_t *err)
{
    memset(a, 0, sizeof *a);
    nn_params_init(&a->params, be);
    a->obs_dim = obs_dim;
    a->act_dim = act_dim;
    a->log_std_lo = -5.0f;
    a->log_std_hi = 2.0f;
    int rc = pol_mlp_declare(&a->mlp, &a->params, "actor", obs_dim, hidden, nhidden, 2 * act_dim, 0, err);
    if (rc == 0) rc = nn_params_alloc(&a->params, err);
    if (rc != 0) {
        nn_params_destroy(&a->params);
        return rc;
    }
    pol_mlp_init(&a->mlp, &a->params, rng);
    return 0;
}

static void free_bufs(pol_actor_t *a)
{
    const nn_backend_t *be = a->params.be;
    float **bufs[] = {&a->eps, &a->action, &a->logp, &a->dhead};
    for (int i = 0; i < 4; i++)
        if (*bufs[i]) { be->free(*bufs[i]); *bufs[i] = NULL; }
    a->cap = 0;
}

void pol_actor_destroy(pol_actor_t *a)
{
    if (!a->params.be) return;
    free_bufs(a);
    pol_mlp_destroy(&a->mlp);
    nn_params_destroy(&a->params);
}

int pol_actor_reserve(pol_actor_t *a, int B, cr_err_t *err)
{
    int rc = pol_mlp_reserve(&a->mlp, B, err);
    if (rc != 0 || B <= a->cap) return rc;
    free_bufs(a);
    const nn_backend_t *be = a->params.be;
    size_t f = sizeof(float), A = (size_t)a->act_dim;
    a->eps = be->alloc(B * A * f);
    a->action = be->alloc(B * A * f);
    a->logp = be->alloc((size_t)B * f);
    a->dhead = be->alloc(B * 2 * A * f);
    if (!a->eps || !a->action || !a->logp || !a->dhead) {
        free_bufs(a);
        return cr_err_set(err, CR_ENOMEM, "actor: cannot allocate scratch for batch %d", B);
    }
    a->cap = B;
    return 0;
}

void pol_actor_set_pool(pol_actor_t *a, nn_pool_t *pool) { pol_mlp_set_pool(&a->mlp, pool, 1); }

typedef struct fwd_job {
    pol_actor_t *a;
    int B, nb;
} fwd_job_t;

/* one row block: the MLP and the squashed Gaussian of those rows */
static void fwd_task(void *arg, int i)
{
    fwd_job_t *j = arg;
    pol_actor_t *a = j->a;
    int r0 = (int)((long)j->B * i / j->nb), r1 = (int)((long)j->B * (i + 1) / j->nb), A = a->act_dim;
    pol_mlp_forward_rows(&a->mlp, &a->params, r0, r1);
    a->params.be->gauss_tanh_forward(a->action + (size_t)r0 * A, a->logp + r0, a->head + (size_t)r0 * 2 * A,
                                     a->eps + (size_t)r0 * A, r1 - r0, A, a->log_std_lo, a->log_std_hi);
}

void pol_actor_forward(pol_actor_t *a, const float *obs, int B)
{
    if (a->mlp.pool) {
        a->mlp.in = obs;
        a->head = a->mlp.pre[a->mlp.nl - 1];
        fwd_job_t j = {a, B, pol_mlp_row_blocks(B)};
        nn_pool_run(a->mlp.pool, j.nb, fwd_task, &j);
        return;
    }
    a->head = pol_mlp_forward(&a->mlp, &a->params, obs, B);
    a->params.be->gauss_tanh_forward(a->action, a->logp, a->head, a->eps, B, a->act_dim,
                                     a->log_std_lo, a->log_std_hi);
}

typedef struct bwd_job {
    pol_actor_t *a;
    const float *daction, *dlogp;
    int B, nb;
} bwd_job_t;

/* one row block of the squashed Gaussian's backward (rows are independent) */
static void bwd_task(void *arg, int i)
{
    bwd_job_t *j = arg;
    pol_actor_t *a = j->a;
    int r0 = (int)((long)j->B * i / j->nb), r1 = (int)((long)j->B * (i + 1) / j->nb), A = a->act_dim;
    const nn_backend_t *be = a->params.be;
    size_t h = (size_t)r0 * 2 * A, k = (size_t)r0 * A;
    be->fill(a->dhead + h, 0.0f, (size_t)(r1 - r0) * 2 * A);
    be->gauss_tanh_backward(a->dhead + h, j->daction ? j->daction + k : NULL, j->dlogp ? j->dlogp + r0 : NULL,
                            a->head + h, a->eps + k, a->action + k, r1 - r0, A, a->log_std_lo, a->log_std_hi);
}

void pol_actor_backward_obs(pol_actor_t *a, float *dobs, const float *daction, const float *dlogp, int B)
{
    bwd_job_t j = {a, daction, dlogp, B, a->mlp.pool ? pol_mlp_row_blocks(B) : 1};
    nn_pool_run(a->mlp.pool, j.nb, bwd_task, &j);
    pol_mlp_backward(&a->mlp, &a->params, dobs, a->dhead, B, 1);
}

void pol_actor_backward(pol_actor_t *a, const float *daction, const float *dlogp, int B)
{
    pol_actor_backward_obs(a, NULL, daction, dlogp, B);
}
