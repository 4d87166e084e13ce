/* params.c - parameter arenas: a model declares its named tensors, then one
 * allocation holds all values and another all gradients (llm.c's layout), so the
 * optimiser, Polyak averaging and checkpoints each work on one flat array.
 * Invariant: offsets are assigned in declaration order and never change. */
#include "policies/nn/nn.h"

#include <stdlib.h>
#include <string.h>

void nn_params_init(nn_params_t *p, const nn_backend_t *be)
{
    memset(p, 0, sizeof *p);
    p->be = be;
}

int nn_params_add(nn_params_t *p, const char *name, int ndim, const int *shape, cr_err_t *err)
{
    if (p->data) return cr_err_set(err, CR_EINVAL, "params: '%s' declared after alloc", name);
    if (ndim < 1 || ndim > NN_MAX_DIMS || strlen(name) >= NN_NAME_MAX)
        return cr_err_set(err, CR_EINVAL, "params: bad tensor '%s'", name);
    if (nn_params_find(p, name) >= 0)
        return cr_err_set(err, CR_EEXIST, "params: tensor '%s' declared twice", name);
    if (p->count == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        nn_tensor_t *t = realloc(p->t, (size_t)cap * sizeof *t);
        if (!t) return cr_err_set(err, CR_ENOMEM, "params: out of memory");
        p->t = t;
        p->cap = cap;
    }
    nn_tensor_t *t = &p->t[p->count];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) return cr_err_set(err, CR_EINVAL, "params: '%s' has a zero dim", name);
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = p->numel;
    p->numel += t->numel;
    return p->count++;
}

int nn_params_alloc(nn_params_t *p, cr_err_t *err)
{
    p->data = p->be->alloc(p->numel * sizeof(float));
    p->grad = p->be->alloc(p->numel * sizeof(float));
    if (!p->data || !p->grad) {
        nn_params_destroy(p);
        return cr_err_set(err, CR_ENOMEM, "params: cannot allocate %zu floats", p->numel);
    }
    return 0;
}

void nn_params_destroy(nn_params_t *p)
{
    if (p->be) {
        if (p->data) p->be->free(p->data);
        if (p->grad) p->be->free(p->grad);
    }
    free(p->t);
    const nn_backend_t *be = p->be;
    memset(p, 0, sizeof *p);
    p->be = be;
}

float *nn_params_data(const nn_params_t *p, int idx) { return p->data + p->t[idx].offset; }
float *nn_params_grad(const nn_params_t *p, int idx) { return p->grad + p->t[idx].offset; }

int nn_params_find(const nn_params_t *p, const char *name)
{
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->t[i].name, name) == 0) return i;
    return -1;
}

void nn_params_zero_grad(nn_params_t *p) { p->be->fill(p->grad, 0.0f, p->numel); }

int nn_params_copy(nn_params_t *dst, const nn_params_t *src, cr_err_t *err)
{
    if (dst->numel != src->numel || dst->count != src->count)
        return cr_err_set(err, CR_EINVAL, "params: copy between different layouts");
    dst->be->copy(dst->data, src->data, src->numel * sizeof(float));
    return 0;
}
