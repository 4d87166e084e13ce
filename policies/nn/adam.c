/* adam.c - Adam and AdamW over one parameter arena, with global-norm gradient
 * clipping. A step whose gradient norm is not finite changes nothing: that is how
 * a NaN or Inf loss is kept out of the weights (the caller counts the skip). */
#include "policies/nn/nn.h"

#include <math.h>

int nn_adam_init(nn_adam_t *o, const nn_params_t *p, float lr, float weight_decay,
                 float clip_norm, cr_err_t *err)
{
    o->lr = lr;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = weight_decay;
    o->clip_norm = clip_norm;
    o->t = 0;
    o->numel = p->numel;
    o->m = p->be->alloc(p->numel * sizeof(float));
    o->v = p->be->alloc(p->numel * sizeof(float));
    if (!o->m || !o->v) {
        nn_adam_destroy(o, p->be);
        return cr_err_set(err, CR_ENOMEM, "adam: cannot allocate moments for %zu floats", p->numel);
    }
    return 0;
}

void nn_adam_destroy(nn_adam_t *o, const nn_backend_t *be)
{
    if (o->m) be->free(o->m);
    if (o->v) be->free(o->v);
    o->m = o->v = NULL;
}

double nn_grad_norm(const nn_params_t *p) { return sqrt(p->be->sumsq(p->grad, p->numel)); }

typedef struct adam_job {
    nn_adam_t *o;
    nn_params_t *p;
    float gs;
    int n;
} adam_job_t;

/* one contiguous slice of the arena; the update is elementwise */
static void adam_task(void *arg, int i)
{
    adam_job_t *j = arg;
    size_t lo = j->p->numel * (size_t)i / (size_t)j->n, hi = j->p->numel * (size_t)(i + 1) / (size_t)j->n;
    nn_adam_t *o = j->o;
    j->p->be->adam_update(j->p->data + lo, j->p->grad + lo, o->m + lo, o->v + lo, hi - lo, o->lr, o->beta1,
                          o->beta2, o->eps, o->weight_decay, j->gs, o->t);
}

int nn_adam_step_norm(nn_adam_t *o, nn_params_t *p, double norm, nn_pool_t *pool)
{
    if (!isfinite(norm)) return CR_EINVAL;
    float gs = 1.0f;
    if (o->clip_norm > 0.0f && norm > o->clip_norm) gs = (float)(o->clip_norm / norm);
    o->t++;
    adam_job_t j = {o, p, gs, nn_pool_lanes(pool)};
    nn_pool_run(pool, j.n, adam_task, &j);
    return 0;
}

int nn_adam_step(nn_adam_t *o, nn_params_t *p, double *norm_out)
{
    double norm = nn_grad_norm(p);
    if (norm_out) *norm_out = norm;
    return nn_adam_step_norm(o, p, norm, NULL);
}
