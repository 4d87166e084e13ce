/* vla.c - a vision-language-action policy in the pi0 design, small enough to
 * train on two CPU cores: a prefix of image-patch tokens (a linear patch
 * embedding, as in ViT/SigLIP), instruction tokens (byte-level, tokenizer.c)
 * and a proprioceptive token, optional object tokens for low-dimensional scene
 * features, then one action token carrying the noisy chunk x_t and the flow
 * time t. pol_block_t layers mix all tokens; the action token's output, after a
 * final LayerNorm and a linear head, is the flow-matching velocity of the whole
 * chunk. pi0 keeps a separate "action expert" and a block-causal mask so the
 * prefix can be cached across integration steps; at this size one shared stack
 * with bidirectional attention is simpler and recomputes the prefix at each of
 * the K steps.
 *
 * Weights live in one arena under internal names; pol_vla_tensor_name maps them
 * to the documented file names (gen.h) for safetensors loading and saving. */
#include "policies/models/gen.h"
#include "policies/nn/safetensors.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- construction ---- */

static int check_cfg(const pol_vla_cfg_t *c, cr_err_t *err)
{
#define NEED(cond, ...) do { if (!(cond)) return cr_err_set(err, CR_EINVAL, "vla: " __VA_ARGS__); } while (0)
    NEED(c->img_c >= 0 && c->img_c <= 4, "img_c %d must be 0 (no image) .. 4", c->img_c);
    if (c->img_c) {
        NEED(c->patch > 0 && c->img_h > 0 && c->img_w > 0 && c->img_h % c->patch == 0 && c->img_w % c->patch == 0,
             "image %dx%d must be a positive multiple of the patch size %d", c->img_h, c->img_w, c->patch);
    }
    NEED(c->ctx >= 1 && c->ctx <= 512, "ctx %d must be 1..512", c->ctx);
    NEED(c->proprio >= 1, "proprio %d must be >= 1", c->proprio);
    NEED(c->n_obj >= 0 && c->n_obj <= 64 && (c->n_obj == 0 || c->obj_dim > 0), "n_obj %d / obj_dim %d", c->n_obj,
         c->obj_dim);
    NEED(c->act_dim >= 1 && c->horizon >= 1 && c->act_dim * c->horizon <= 1024, "act_dim %d x horizon %d must be "
         "1..1024", c->act_dim, c->horizon);
    NEED(c->steps >= 1 && c->steps <= POL_FLOW_MAX_STEPS, "steps %d must be 1..%d", c->steps, POL_FLOW_MAX_STEPS);
    NEED(c->dim > 0 && c->heads > 0 && c->dim % c->heads == 0, "dim %d must be a multiple of heads %d", c->dim,
         c->heads);
    NEED(c->layers >= 1 && c->layers <= POL_VLA_MAX_LAYERS, "layers %d must be 1..%d", c->layers, POL_VLA_MAX_LAYERS);
    NEED(c->mlp >= 1, "mlp %d must be >= 1", c->mlp);
    NEED(c->head_hidden >= 0, "head_hidden %d must be >= 0", c->head_hidden);
#undef NEED
    return 0;
}

static int add(nn_params_t *p, int *idx, const char *name, int ndim, int s0, int s1, cr_err_t *err)
{
    int shape[2] = {s0, s1};
    *idx = nn_params_add(p, name, ndim, shape, err);
    return *idx < 0 ? *idx : 0;
}

static void init_linear(const nn_backend_t *be, const nn_params_t *p, int w, int b, int in, int out, nn_rng_t *rng)
{
    size_t nw = (size_t)in * out;
    float *h = malloc((nw + (size_t)out) * sizeof(float));
    if (!h) abort();   /* model-sized and at create time; not recoverable */
    nn_init_linear(rng, h, h + nw, in, nw, (size_t)out);
    be->upload(nn_params_data(p, w), h, nw * sizeof(float));
    be->upload(nn_params_data(p, b), h + nw, (size_t)out * sizeof(float));
    free(h);
}

static void init_normal(const nn_backend_t *be, const nn_params_t *p, int i, float sd, nn_rng_t *rng)
{
    size_t n = p->t[i].numel;
    float *h = malloc(n * sizeof(float));
    if (!h) abort();
    nn_init_normal(rng, h, n, sd);
    be->upload(nn_params_data(p, i), h, n * sizeof(float));
    free(h);
}

int pol_vla_create(pol_vla_t *v, const nn_backend_t *be, const pol_vla_cfg_t *cfg, nn_rng_t *rng, cr_err_t *err)
{
    memset(v, 0, sizeof *v);
    int rc = check_cfg(cfg, err);
    if (rc) return rc;
    v->c = *cfg;
    v->be = be;
    int E = cfg->dim;
    v->D = cfg->act_dim * cfg->horizon;
    v->P = cfg->img_c ? (cfg->img_h / cfg->patch) * (cfg->img_w / cfg->patch) : 0;
    v->pdim = cfg->img_c * cfg->patch * cfg->patch;
    v->T = v->P + cfg->ctx + 1 + cfg->n_obj + 1;
    v->ipatch_w = v->ipatch_b = v->ipos = v->iobj_w = v->iobj_b = v->iobj_pos = -1;
    nn_params_t *p = &v->params;
    nn_params_init(p, be);
    if (v->P) {
        if ((rc = add(p, &v->ipatch_w, "patch.weight", 2, E, v->pdim, err)) ||
            (rc = add(p, &v->ipatch_b, "patch.bias", 1, E, 0, err)) || (rc = add(p, &v->ipos, "patch.pos", 2, v->P, E, err)))
            return rc;
    }
    if ((rc = add(p, &v->itok, "tok.embed", 2, POL_TOK_VOCAB, E, err)) ||
        (rc = add(p, &v->itpos, "tok.pos", 2, cfg->ctx, E, err)) ||
        (rc = add(p, &v->iprop_w, "prop.weight", 2, E, cfg->proprio, err)) ||
        (rc = add(p, &v->iprop_b, "prop.bias", 1, E, 0, err)))
        return rc;
    if (cfg->n_obj && ((rc = add(p, &v->iobj_w, "obj.weight", 2, E, cfg->obj_dim, err)) ||
                       (rc = add(p, &v->iobj_b, "obj.bias", 1, E, 0, err))))
        return rc;
    if (cfg->n_obj && cfg->obj_slots && (rc = add(p, &v->iobj_pos, "obj.pos", 2, cfg->n_obj, E, err))) return rc;
    if ((rc = add(p, &v->iact_w, "act_in.weight", 2, E, v->D + POL_FLOW_TEMB, err)) ||
        (rc = add(p, &v->iact_b, "act_in.bias", 1, E, 0, err)))
        return rc;
    for (int l = 0; l < cfg->layers; l++) {
        char pre[32];
        snprintf(pre, sizeof pre, "blk.%d", l);
        if ((rc = pol_block_declare(&v->blk[l], p, pre, E, cfg->heads, cfg->mlp, err))) return rc;
    }
    if ((rc = add(p, &v->ilnf_w, "lnf.weight", 1, E, 0, err)) || (rc = add(p, &v->ilnf_b, "lnf.bias", 1, E, 0, err)))
        return rc;
    v->head_in_dim = E + v->D + POL_FLOW_TEMB + cfg->proprio;
    if (cfg->head_hidden > 0) {
        int hh[2] = {cfg->head_hidden, cfg->head_hidden};
        if ((rc = pol_mlp_declare(&v->head, p, "head", v->head_in_dim, hh, 2, v->D, 0, err))) return rc;
        v->head.act = NN_ACT_GELU;
    } else if ((rc = add(p, &v->ihead_w, "head.weight", 2, v->D, E, err)) ||
               (rc = add(p, &v->ihead_b, "head.bias", 1, v->D, 0, err))) {
        return rc;
    }
    if ((rc = nn_params_alloc(p, err))) return rc;
    if (v->P) {
        init_linear(be, p, v->ipatch_w, v->ipatch_b, v->pdim, E, rng);
        init_normal(be, p, v->ipos, 0.1f, rng);
    }
    init_normal(be, p, v->itok, 1.0f, rng);
    init_normal(be, p, v->itpos, 0.1f, rng);
    init_linear(be, p, v->iprop_w, v->iprop_b, cfg->proprio, E, rng);
    if (cfg->n_obj) init_linear(be, p, v->iobj_w, v->iobj_b, cfg->obj_dim, E, rng);
    if (v->iobj_pos >= 0) init_normal(be, p, v->iobj_pos, 0.1f, rng);
    init_linear(be, p, v->iact_w, v->iact_b, v->D + POL_FLOW_TEMB, E, rng);
    for (int l = 0; l < cfg->layers; l++) pol_block_init(&v->blk[l], p, rng);
    be->fill(nn_params_data(p, v->ilnf_w), 1.0f, (size_t)E);
    be->fill(nn_params_data(p, v->ilnf_b), 0.0f, (size_t)E);
    if (cfg->head_hidden > 0) pol_mlp_init(&v->head, p, rng);
    else init_linear(be, p, v->ihead_w, v->ihead_b, E, v->D, rng);
    return 0;
}

static void free_scratch(pol_vla_t *v)
{
    const nn_backend_t *be = v->be;
    float **dev[] = {&v->patches, &v->ptok, &v->tok, &v->prop_in, &v->ptk, &v->obj_in, &v->otk, &v->act_in,
                     &v->atk, &v->arow, &v->lnf, &v->mf, &v->rf, &v->vel, &v->dx[0], &v->dx[1], &v->darow,
                     &v->dlnf, &v->dvel, &v->dtmp, &v->cat1, &v->head_in, &v->dcat1, &v->dhead_in};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (*dev[i]) { be->free(*dev[i]); *dev[i] = NULL; }
    for (int l = 0; l <= POL_VLA_MAX_LAYERS; l++)
        if (v->x[l]) { be->free(v->x[l]); v->x[l] = NULL; }
    if (v->ids) be->free(v->ids);
    v->ids = NULL;
    free(v->h_act_in); free(v->h_v); free(v->h_x); free(v->h_t); free(v->h_patch);
    v->h_act_in = v->h_v = v->h_x = v->h_t = v->h_patch = NULL;
    v->cap = 0;
}

void pol_vla_destroy(pol_vla_t *v)
{
    if (!v->be) return;
    free_scratch(v);
    for (int l = 0; l < v->c.layers; l++) pol_block_destroy(&v->blk[l]);
    if (v->c.head_hidden > 0) pol_mlp_destroy(&v->head);
    nn_params_destroy(&v->params);
    memset(v, 0, sizeof *v);
}

int pol_vla_reserve(pol_vla_t *v, int B, cr_err_t *err)
{
    if (B <= v->cap) return 0;
    free_scratch(v);
    const nn_backend_t *be = v->be;
    const pol_vla_cfg_t *c = &v->c;
    size_t b = (size_t)B, E = (size_t)c->dim, f = sizeof(float), T = (size_t)v->T;
    size_t nobj = (size_t)c->n_obj, nin = (size_t)v->D + POL_FLOW_TEMB;
    struct { float **p; size_t n; } a[] = {
        {&v->patches, b * v->P * v->pdim + 1}, {&v->ptok, b * v->P * E + 1}, {&v->tok, b * c->ctx * E},
        {&v->prop_in, b * c->proprio}, {&v->ptk, b * E}, {&v->obj_in, b * nobj * c->obj_dim + 1},
        {&v->otk, b * nobj * E + 1}, {&v->act_in, b * nin}, {&v->atk, b * E}, {&v->arow, b * E},
        {&v->lnf, b * E}, {&v->mf, b}, {&v->rf, b}, {&v->vel, b * v->D}, {&v->dx[0], b * T * E},
        {&v->dx[1], b * T * E}, {&v->darow, b * E}, {&v->dlnf, b * E}, {&v->dvel, b * v->D},
        {&v->dtmp, b * T * E}, {&v->cat1, b * (E + nin)}, {&v->head_in, b * v->head_in_dim},
        {&v->dcat1, b * (E + nin)}, {&v->dhead_in, b * v->head_in_dim},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) ok &= !!(*a[i].p = be->alloc(a[i].n * f));
    for (int l = 0; l <= c->layers; l++) ok &= !!(v->x[l] = be->alloc(b * T * E * f));
    ok &= !!(v->ids = be->alloc(b * c->ctx * sizeof(int32_t)));
    ok &= !!(v->h_act_in = malloc(b * nin * f));
    ok &= !!(v->h_v = malloc(b * v->D * f));
    ok &= !!(v->h_x = malloc(b * v->D * f));
    ok &= !!(v->h_t = malloc(b * f));
    ok &= !!(v->h_patch = malloc((b * v->P * v->pdim + 1) * f));
    for (int l = 0; ok && l < c->layers; l++) ok = pol_block_reserve(&v->blk[l], B, v->T, err) == 0;
    if (ok && c->head_hidden > 0) ok = pol_mlp_reserve(&v->head, B, err) == 0;
    if (!ok) {
        free_scratch(v);
        return cr_err_set(err, CR_ENOMEM, "vla: cannot allocate scratch for batch %d", B);
    }
    v->cap = B;
    return 0;
}

int pol_vla_check_image(const pol_vla_t *v, int c, int h, int w, cr_err_t *err)
{
    const pol_vla_cfg_t *m = &v->c;
    if (!m->img_c)
        return cr_err_set(err, CR_EINVAL, "vla: an image of %dx%dx%d (CxHxW) was given, the model takes no image", c, h, w);
    if (c != m->img_c || h != m->img_h || w != m->img_w)
        return cr_err_set(err, CR_EINVAL, "vla: image is %dx%dx%d (CxHxW), the model takes %dx%dx%d", c, h, w, m->img_c,
                          m->img_h, m->img_w);
    return 0;
}

/* ---- forward / backward ---- */

/* Token rows of each segment inside one sample's [T] sequence. */
static int seg_text(const pol_vla_t *v) { return v->P; }
static int seg_prop(const pol_vla_t *v) { return v->P + v->c.ctx; }
static int seg_obj(const pol_vla_t *v) { return v->P + v->c.ctx + 1; }
static int seg_act(const pol_vla_t *v) { return v->T - 1; }

/* dst rows [b][off .. off+n) of a [B][T][E] sequence <- src [B][n][E] (or back) */
static void put_rows(const pol_vla_t *v, float *seq, const float *src, int off, int n, int B)
{
    size_t E = (size_t)v->c.dim;
    for (int b = 0; b < B; b++)
        v->be->copy(seq + ((size_t)b * v->T + off) * E, src + (size_t)b * n * E, (size_t)n * E * sizeof(float));
}

static void get_rows(const pol_vla_t *v, float *dst, const float *seq, int off, int n, int B)
{
    size_t E = (size_t)v->c.dim;
    for (int b = 0; b < B; b++)
        v->be->copy(dst + (size_t)b * n * E, seq + ((size_t)b * v->T + off) * E, (size_t)n * E * sizeof(float));
}

/* img [B][C][H][W] -> patches [B*P][C*p*p], patch-major, channel then row inside */
static void extract_patches(const pol_vla_t *v, const float *img, int B, float *out)
{
    const pol_vla_cfg_t *c = &v->c;
    int ps = c->patch, gw = c->img_w / ps, gh = c->img_h / ps;
    size_t o = 0;
    for (int b = 0; b < B; b++)
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++)
                for (int ch = 0; ch < c->img_c; ch++)
                    for (int y = 0; y < ps; y++) {
                        const float *row = img + (((size_t)b * c->img_c + ch) * c->img_h + py * ps + y) * c->img_w + px * ps;
                        memcpy(out + o, row, sizeof(float) * ps);
                        o += (size_t)ps;
                    }
}

#define PD(i) nn_params_data(&v->params, v->i)
#define PG(i) nn_params_grad(&v->params, v->i)

const float *pol_vla_velocity(pol_vla_t *v, const pol_vla_obs_t *o, const float *x, const float *t, int B)
{
    assert(B <= v->cap);
    const nn_backend_t *be = v->be;
    const pol_vla_cfg_t *c = &v->c;
    int E = c->dim, nin = v->D + POL_FLOW_TEMB;
    size_t f = sizeof(float);
    float *seq = v->x[0];
    assert(o->ids && o->proprio && (!v->P || o->img) && (!c->n_obj || o->obj));
    if (v->P) {
        extract_patches(v, o->img, B, v->h_patch);
        be->upload(v->patches, v->h_patch, (size_t)B * v->P * v->pdim * f);
        be->linear_forward(v->ptok, v->patches, PD(ipatch_w), PD(ipatch_b), B * v->P, v->pdim, E);
        be->bias_forward(v->ptok, PD(ipos), B, v->P * E);
        put_rows(v, seq, v->ptok, 0, v->P, B);
    }
    be->upload(v->ids, o->ids, (size_t)B * c->ctx * sizeof(int32_t));
    be->embedding_forward(v->tok, v->ids, PD(itok), B * c->ctx, E);
    be->bias_forward(v->tok, PD(itpos), B, c->ctx * E);
    put_rows(v, seq, v->tok, seg_text(v), c->ctx, B);
    be->upload(v->prop_in, o->proprio, (size_t)B * c->proprio * f);
    be->linear_forward(v->ptk, v->prop_in, PD(iprop_w), PD(iprop_b), B, c->proprio, E);
    put_rows(v, seq, v->ptk, seg_prop(v), 1, B);
    if (c->n_obj) {
        be->upload(v->obj_in, o->obj, (size_t)B * c->n_obj * c->obj_dim * f);
        be->linear_forward(v->otk, v->obj_in, PD(iobj_w), PD(iobj_b), B * c->n_obj, c->obj_dim, E);
        if (v->iobj_pos >= 0) be->bias_forward(v->otk, PD(iobj_pos), B, c->n_obj * E);
        put_rows(v, seq, v->otk, seg_obj(v), c->n_obj, B);
    }
    for (int b = 0; b < B; b++) {
        float *row = v->h_act_in + (size_t)b * nin;
        memcpy(row, x + (size_t)b * v->D, (size_t)v->D * f);
        pol_time_embed_forward(row + v->D, t + b, 1, POL_FLOW_TEMB);
    }
    be->upload(v->act_in, v->h_act_in, (size_t)B * nin * f);
    be->linear_forward(v->atk, v->act_in, PD(iact_w), PD(iact_b), B, nin, E);
    put_rows(v, seq, v->atk, seg_act(v), 1, B);
    for (int l = 0; l < c->layers; l++) pol_block_forward(&v->blk[l], &v->params, v->x[l + 1], v->x[l], B, v->T);
    get_rows(v, v->arow, v->x[c->layers], seg_act(v), 1, B);
    be->layernorm_forward(v->lnf, v->mf, v->rf, v->arow, PD(ilnf_w), PD(ilnf_b), B, E);
    if (c->head_hidden > 0) {
        be->concat_forward(v->cat1, v->lnf, v->act_in, B, E, nin);
        be->concat_forward(v->head_in, v->cat1, v->prop_in, B, E + nin, c->proprio);
        const float *out = pol_mlp_forward(&v->head, &v->params, v->head_in, B);
        be->download(v->h_v, out, (size_t)B * v->D * f);
    } else {
        be->linear_forward(v->vel, v->lnf, PD(ihead_w), PD(ihead_b), B, E, v->D);
        be->download(v->h_v, v->vel, (size_t)B * v->D * f);
    }
    return v->h_v;
}

void pol_vla_velocity_backward(pol_vla_t *v, const float *dv, int B)
{
    const nn_backend_t *be = v->be;
    const pol_vla_cfg_t *c = &v->c;
    int E = c->dim, nin = v->D + POL_FLOW_TEMB;
    size_t f = sizeof(float), BTE = (size_t)B * v->T * E;
    be->upload(v->dvel, dv, (size_t)B * v->D * f);
    be->fill(v->dlnf, 0.0f, (size_t)B * E);
    if (c->head_hidden > 0) {
        /* the head's inputs other than the action token carry no parameters */
        be->fill(v->dhead_in, 0.0f, (size_t)B * v->head_in_dim);
        pol_mlp_backward(&v->head, &v->params, v->dhead_in, v->dvel, B, 1);
        be->fill(v->dcat1, 0.0f, (size_t)B * (E + nin));
        be->concat_backward(v->dcat1, NULL, v->dhead_in, B, E + nin, c->proprio);
        be->concat_backward(v->dlnf, NULL, v->dcat1, B, E, nin);
    } else {
        be->linear_backward(v->dlnf, PG(ihead_w), PG(ihead_b), v->dvel, v->lnf, PD(ihead_w), B, E, v->D);
    }
    be->fill(v->darow, 0.0f, (size_t)B * E);
    be->layernorm_backward(v->darow, PG(ilnf_w), PG(ilnf_b), v->dlnf, v->arow, PD(ilnf_w), v->mf, v->rf, B, E);
    float *d = v->dx[0], *dn = v->dx[1];
    be->fill(d, 0.0f, BTE);
    put_rows(v, d, v->darow, seg_act(v), 1, B);
    for (int l = c->layers - 1; l >= 0; l--) {
        be->fill(dn, 0.0f, BTE);
        pol_block_backward(&v->blk[l], &v->params, dn, d, B, v->T);
        float *s = d;
        d = dn;
        dn = s;
    }
    /* d: gradient wrt the assembled token sequence */
    if (v->P) {
        get_rows(v, v->dtmp, d, 0, v->P, B);
        be->linear_backward(NULL, PG(ipatch_w), PG(ipatch_b), v->dtmp, v->patches, PD(ipatch_w), B * v->P, v->pdim, E);
        be->bias_backward(PG(ipos), v->dtmp, B, v->P * E);
    }
    get_rows(v, v->dtmp, d, seg_text(v), c->ctx, B);
    be->embedding_backward(PG(itok), v->dtmp, v->ids, B * c->ctx, E);
    be->bias_backward(PG(itpos), v->dtmp, B, c->ctx * E);
    get_rows(v, v->dtmp, d, seg_prop(v), 1, B);
    be->linear_backward(NULL, PG(iprop_w), PG(iprop_b), v->dtmp, v->prop_in, PD(iprop_w), B, c->proprio, E);
    if (c->n_obj) {
        get_rows(v, v->dtmp, d, seg_obj(v), c->n_obj, B);
        be->linear_backward(NULL, PG(iobj_w), PG(iobj_b), v->dtmp, v->obj_in, PD(iobj_w), B * c->n_obj, c->obj_dim, E);
        if (v->iobj_pos >= 0) be->bias_backward(PG(iobj_pos), v->dtmp, B, c->n_obj * E);
    }
    get_rows(v, v->dtmp, d, seg_act(v), 1, B);
    be->linear_backward(NULL, PG(iact_w), PG(iact_b), v->dtmp, v->act_in, PD(iact_w), B, nin, E);
}

double pol_vla_bc_step(pol_vla_t *v, const pol_vla_obs_t *o, const float *chunk, int B, nn_rng_t *rng)
{
    int D = v->D;
    size_t n = (size_t)B * D;
    float *target = malloc(n * sizeof(float));
    if (!target) return NAN;
    for (int b = 0; b < B; b++) {
        float t = nn_rng_uniform(rng);
        v->h_t[b] = t;
        for (int d = 0; d < D; d++) {
            size_t i = (size_t)b * D + d;
            float x0 = nn_rng_normal(rng);
            v->h_x[i] = (1.0f - t) * x0 + t * chunk[i];
            target[i] = chunk[i] - x0;
        }
    }
    const float *vel = pol_vla_velocity(v, o, v->h_x, v->h_t, B);
    double loss = 0;
    for (size_t i = 0; i < n; i++) {
        float e = vel[i] - target[i];
        loss += (double)e * e;
        target[i] = 2.0f * e / (float)n;
    }
    pol_vla_velocity_backward(v, target, B);
    free(target);
    return loss / (double)n;
}

void pol_vla_sample(pol_vla_t *v, const pol_vla_obs_t *o, int B, nn_rng_t *rng, float *out)
{
    int D = v->D, K = v->c.steps;
    float dt = 1.0f / (float)K;
    for (size_t i = 0; i < (size_t)B * D; i++) out[i] = rng ? nn_rng_normal(rng) : 0.0f;
    for (int k = 0; k < K; k++) {
        for (int b = 0; b < B; b++) v->h_t[b] = (float)k * dt;
        const float *vel = pol_vla_velocity(v, o, out, v->h_t, B);
        for (size_t i = 0; i < (size_t)B * D; i++) out[i] += vel[i] * dt;
    }
    for (size_t i = 0; i < (size_t)B * D; i++) out[i] = out[i] > 1.0f ? 1.0f : out[i] < -1.0f ? -1.0f : out[i];
}

double pol_vla_flops_forward(const pol_vla_t *v, int B)
{
    const pol_vla_cfg_t *c = &v->c;
    double E = c->dim, T = v->T, M = c->mlp;
    double per_layer = T * (2 * E * 3 * E + 2 * E * E + 2 * 2 * E * M) + 2 * 2 * T * T * E;
    double head = c->head_hidden > 0 ? 2.0 * (v->head_in_dim * (double)c->head_hidden +
                                              (double)c->head_hidden * c->head_hidden + (double)c->head_hidden * v->D)
                                     : 2.0 * E * v->D;
    double embed = v->P * 2.0 * v->pdim * E + 2.0 * c->proprio * E + c->n_obj * 2.0 * c->obj_dim * E +
                   2.0 * (v->D + POL_FLOW_TEMB) * E + head;
    return B * (c->layers * per_layer + embed);
}

/* ---- safetensors with the documented name mapping ---- */

/* internal prefix -> file prefix; the first match wins (blocks handled apart) */
static const struct { const char *in, *file; } name_map[] = {
    {"patch.weight", "vision.patch_embed.weight"}, {"patch.bias", "vision.patch_embed.bias"},
    {"patch.pos", "vision.pos_embed"}, {"tok.embed", "language.embed_tokens.weight"},
    {"tok.pos", "language.pos_embed"}, {"prop.weight", "state.proj.weight"}, {"prop.bias", "state.proj.bias"},
    {"obj.weight", "objects.proj.weight"}, {"obj.bias", "objects.proj.bias"}, {"obj.pos", "objects.pos_embed"},
    {"act_in.weight", "action_in.weight"}, {"act_in.bias", "action_in.bias"},
    {"lnf.weight", "final_norm.weight"}, {"lnf.bias", "final_norm.bias"},
};
static const struct { const char *in, *file; } block_map[] = {
    {"ln1", "input_layernorm"}, {"qkv", "self_attn.qkv_proj"}, {"proj", "self_attn.o_proj"},
    {"ln2", "post_attention_layernorm"}, {"fc1", "mlp.fc1"}, {"fc2", "mlp.fc2"},
};

void pol_vla_tensor_name(const pol_vla_t *v, int i, const char *prefix, char *buf, size_t cap)
{
    const char *in = v->params.t[i].name;
    if (!prefix) prefix = "";
    for (size_t k = 0; k < sizeof name_map / sizeof name_map[0]; k++)
        if (!strcmp(in, name_map[k].in)) {
            snprintf(buf, cap, "%s%s", prefix, name_map[k].file);
            return;
        }
    if (!strncmp(in, "head.", 5)) {
        snprintf(buf, cap, "%saction_out.%s", prefix, in + 5);
        return;
    }
    int l;
    char part[32], field[32];
    if (sscanf(in, "blk.%d.%31[^.].%31s", &l, part, field) == 3)
        for (size_t k = 0; k < sizeof block_map / sizeof block_map[0]; k++)
            if (!strcmp(part, block_map[k].in)) {
                snprintf(buf, cap, "%slayers.%d.%s.%s", prefix, l, block_map[k].file, field);
                return;
            }
    snprintf(buf, cap, "%s%s", prefix, in);   /* unreachable for the names above */
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *s)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && o < cap; d++) o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "", (long long)s[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static int load_st(pol_vla_t *v, const nn_st_t *st, const char *prefix, const char *what, cr_err_t *err)
{
    const nn_params_t *p = &v->params;
    char name[2 * NN_NAME_MAX], want[96], got[96];
    /* check: every model tensor present with its exact dtype and shape ... */
    for (int i = 0; i < p->count; i++) {
        const nn_tensor_t *t = &p->t[i];
        pol_vla_tensor_name(v, i, prefix, name, sizeof name);
        const nn_st_entry_t *e = nn_st_find(st, name);
        if (!e) return cr_err_set(err, CR_ENOENT, "%s: missing tensor '%s' (model tensor '%s')", what, name, t->name);
        int64_t ws[NN_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) ws[d] = t->shape[d];
        int same = e->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = e->shape[d] == ws[d];
        shape_str(want, sizeof want, t->ndim, ws);
        shape_str(got, sizeof got, e->ndim, e->shape);
        if (!same) return cr_err_set(err, CR_EINVAL, "%s: tensor '%s' has shape %s, the model expects %s", what, name, got, want);
        if (e->dtype != NN_DT_F32)
            return cr_err_set(err, CR_EINVAL, "%s: tensor '%s' is %s, the model expects F32", what, name,
                              nn_dtype_name(e->dtype));
    }
    /* ... and no tensor the model does not have */
    size_t plen = prefix ? strlen(prefix) : 0;
    for (int j = 0; j < nn_st_count(st); j++) {
        const char *fn = nn_st_at(st, j)->name;
        int known = 0;
        for (int i = 0; i < p->count && !known; i++) {
            pol_vla_tensor_name(v, i, prefix, name, sizeof name);
            known = !strcmp(fn, name);
        }
        if (!known)
            return cr_err_set(err, CR_EINVAL, "%s: unexpected tensor '%s' (not in this model%s%s)", what, fn,
                              plen && strncmp(fn, prefix, plen) ? "; expected the prefix " : "",
                              plen && strncmp(fn, prefix, plen) ? prefix : "");
    }
    /* copy */
    float *host = malloc(p->numel * sizeof(float) + 1);
    if (!host) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", what);
    for (int i = 0; i < p->count; i++) {
        pol_vla_tensor_name(v, i, prefix, name, sizeof name);
        int rc = nn_st_get_f32(st, name, host + p->t[i].offset, p->t[i].numel, err);
        if (rc) { free(host); return rc; }
    }
    v->be->upload(p->data, host, p->numel * sizeof(float));
    free(host);
    return 0;
}

int pol_vla_load_mem(pol_vla_t *v, const void *buf, size_t len, const char *prefix, cr_err_t *err)
{
    nn_st_t *st;
    int rc = nn_st_parse(&st, buf, len, err);
    if (rc) return cr_err_wrap(err, "vla weights");
    rc = load_st(v, st, prefix, "vla weights", err);
    nn_st_free(st);
    return rc;
}

int pol_vla_load(pol_vla_t *v, const char *path, const char *prefix, cr_err_t *err)
{
    nn_st_t *st;
    int rc = nn_st_read_file(&st, path, err);
    if (rc) return rc;
    rc = load_st(v, st, prefix, path, err);
    nn_st_free(st);
    return rc;
}

int pol_vla_save(pol_vla_t *v, const char *path, const char *prefix, cr_err_t *err)
{
    const nn_params_t *p = &v->params;
    nn_st_writer_t *w = nn_st_writer_create();
    float *host = malloc(p->numel * sizeof(float) + 1);
    int rc = 0;
    if (!w || !host) rc = cr_err_set(err, CR_ENOMEM, "vla: out of memory saving %s", path);
    if (!rc) v->be->download(host, p->data, p->numel * sizeof(float));
    char name[2 * NN_NAME_MAX];
    for (int i = 0; !rc && i < p->count; i++) {
        int64_t s[NN_MAX_DIMS];
        for (int d = 0; d < p->t[i].ndim; d++) s[d] = p->t[i].shape[d];
        pol_vla_tensor_name(v, i, prefix, name, sizeof name);
        rc = nn_st_writer_add(w, name, NN_DT_F32, p->t[i].ndim, s, host + p->t[i].offset, err);
    }
    if (!rc) rc = nn_st_writer_meta(w, "format", "corral-vla", err);
    if (!rc) rc = nn_st_writer_to_file(w, path, err);
    if (w) nn_st_writer_destroy(w);
    free(host);
    return rc;
}
