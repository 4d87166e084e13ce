/* io.c - moving parameter arenas, optimiser moments and RNG state in and out of
 * safetensors (checkpoints and policy blobs). Values are staged on the host, so
 * the same code serves any backend. Reads are two-phase (check everything, then
 * copy), so a bad file leaves the algorithm untouched. */
#include "policies/algos/algo.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *keep_alloc(pol_io_keep_t *k, size_t bytes)
{
    if (k->n == k->cap) {
        int cap = k->cap ? 2 * k->cap : 16;
        void **p = realloc(k->ptr, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        k->ptr = p;
        k->cap = cap;
    }
    void *m = malloc(bytes ? bytes : 1);
    if (m) k->ptr[k->n++] = m;
    return m;
}

void pol_io_keep_free(pol_io_keep_t *k)
{
    for (int i = 0; i < k->n; i++) free(k->ptr[i]);
    free(k->ptr);
    memset(k, 0, sizeof *k);
}

int pol_io_add_arena(nn_st_writer_t *w, pol_io_keep_t *keep, const pol_io_arena_t *a, cr_err_t *err)
{
    const nn_params_t *p = a->p;
    float *host = keep_alloc(keep, p->numel * sizeof(float));
    if (!host) return cr_err_set(err, CR_ENOMEM, "checkpoint: out of memory");
    p->be->download(host, p->data, p->numel * sizeof(float));
    for (int i = 0; i < p->count; i++) {
        const nn_tensor_t *t = &p->t[i];
        char name[2 * NN_NAME_MAX];
        snprintf(name, sizeof name, "%s.%s", a->prefix, t->name);
        int64_t shape[NN_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
        int rc = nn_st_writer_add(w, name, NN_DT_F32, t->ndim, shape, host + t->offset, err);
        if (rc != 0) return rc;
    }
    return 0;
}

int pol_io_add_adam(nn_st_writer_t *w, pol_io_keep_t *keep, const pol_io_adam_t *o,
                    const nn_backend_t *be, cr_err_t *err)
{
    size_t n = o->o->numel;
    float *host = keep_alloc(keep, 2 * n * sizeof(float));
    if (!host) return cr_err_set(err, CR_ENOMEM, "checkpoint: out of memory");
    be->download(host, o->o->m, n * sizeof(float));
    be->download(host + n, o->o->v, n * sizeof(float));
    char name[128];
    int64_t shape[1] = {(int64_t)n};
    snprintf(name, sizeof name, "%s.m", o->name);
    int rc = nn_st_writer_add(w, name, NN_DT_F32, 1, shape, host, err);
    snprintf(name, sizeof name, "%s.v", o->name);
    return rc ? rc : nn_st_writer_add(w, name, NN_DT_F32, 1, shape, host + n, err);
}

static int read_f32(const nn_st_t *st, const char *name, const int *shape, int ndim, size_t numel,
                    float *dst_dev, const nn_backend_t *be, int check, cr_err_t *err)
{
    const nn_st_entry_t *e = nn_st_find(st, name);
    if (!e) return cr_err_set(err, CR_ECORRUPT, "missing tensor '%s'", name);
    int shape_ok = e->ndim == ndim;
    for (int d = 0; shape_ok && d < ndim; d++) shape_ok = e->shape[d] == shape[d];
    if (e->dtype != NN_DT_F32 || e->numel != numel || !shape_ok)
        return cr_err_set(err, CR_ECORRUPT, "tensor '%s' is %s with %zu elements in %d dims, expected F32 with %zu in %d",
                          name, nn_dtype_name(e->dtype), e->numel, e->ndim, numel, ndim);
    if (check) return 0;
    /* the data section may be unaligned for floats: stage through an aligned copy */
    float *tmp = malloc(numel * sizeof(float) + 1);
    if (!tmp) return cr_err_set(err, CR_ENOMEM, "out of memory reading '%s'", name);
    memcpy(tmp, nn_st_data(st, e), numel * sizeof(float));
    be->upload(dst_dev, tmp, numel * sizeof(float));
    free(tmp);
    return 0;
}

int pol_io_read_arena(const nn_st_t *st, const pol_io_arena_t *a, int check, cr_err_t *err)
{
    const nn_params_t *p = a->p;
    for (int i = 0; i < p->count; i++) {
        const nn_tensor_t *t = &p->t[i];
        char name[2 * NN_NAME_MAX];
        snprintf(name, sizeof name, "%s.%s", a->prefix, t->name);
        int rc = read_f32(st, name, t->shape, t->ndim, t->numel, p->data + t->offset, p->be, check, err);
        if (rc != 0) return rc;
    }
    return 0;
}

int pol_io_read_adam(const nn_st_t *st, const pol_io_adam_t *o, const nn_backend_t *be, int check,
                     cr_err_t *err)
{
    char name[128];
    int shape[1] = {(int)o->o->numel};
    snprintf(name, sizeof name, "%s.m", o->name);
    int rc = read_f32(st, name, shape, 1, o->o->numel, o->o->m, be, check, err);
    snprintf(name, sizeof name, "%s.v", o->name);
    return rc ? rc : read_f32(st, name, shape, 1, o->o->numel, o->o->v, be, check, err);
}

void pol_rng_format(const nn_rng_t *r, char *buf, size_t len)
{
    snprintf(buf, len, "%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64 ",%016" PRIx64, r->s[0], r->s[1],
             r->s[2], r->s[3]);
}

int pol_rng_parse(nn_rng_t *r, const char *s)
{
    nn_rng_t t;
    if (sscanf(s, "%" SCNx64 ",%" SCNx64 ",%" SCNx64 ",%" SCNx64, &t.s[0], &t.s[1], &t.s[2], &t.s[3]) != 4)
        return CR_ECORRUPT;
    if (!(t.s[0] | t.s[1] | t.s[2] | t.s[3])) return CR_ECORRUPT;   /* xoshiro's one bad state */
    *r = t;
    return 0;
}
