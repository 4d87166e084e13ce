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

int nn_adam_step(nn_adam_t *o, nn_params_t *p, double *norm_out)
{
    double norm = nn_grad_norm(p);
    if (norm_out) *norm_out = norm;
    if (!isfinite(norm)) return CR_EINVAL;
    float gs = 1.0f;
    if (o->clip_norm > 0.0f && norm > o->clip_norm) gs = (float)(o->clip_norm / norm);
    o->t++;
    p->be->adam_update(p->data, p->grad, o->m, o->v, p->numel, o->lr, o->beta1, o->beta2,
                       o->eps, o->weight_decay, gs, o->t);
    return 0;
}
