/* gen.h - the generative policies (private to policies/): a flow-matching
 * action-chunk generator over an MLP velocity network, the byte-level tokenizer,
 * pre-LayerNorm transformer blocks built from the nn attention op, and a small
 * vision-language-action model in the pi0 design (image patches, instruction
 * tokens and a proprioceptive token as a prefix, a flow-matching action token that
 * reads them). Like models.h: each model keeps the activations of its last forward
 * for the backward that follows, parameter gradients accumulate (+=) into the
 * model's arena, scratch grows to the largest batch seen (reserve).
 *
 * Flow matching (rectified flow): a chunk x1 of H actions (D = H*A floats in
 * [-1, 1]) is generated from noise x0 ~ N(0, I) by K Euler steps of a velocity
 * field v(obs, x_t, t), t_k = k/K; training regresses v onto x1 - x0 at
 * x_t = (1 - t) x0 + t x1 for t ~ U(0, 1). With per-step noise (flow_rl.c) step k
 * becomes x_{k+1} = x_k + v dt + sigma_k * eps, an exact Gaussian. */
#ifndef CORRAL_POLICIES_GEN_H
#define CORRAL_POLICIES_GEN_H

#include "policies/models/models.h"

/* ---- sinusoidal time embedding (no parameters) ----
 * out[B][E]: out[b][i] = sin(t[b] * f_i), out[b][E/2 + i] = cos(t[b] * f_i),
 * f_i = 100^(i / (E/2)) for i < E/2 (t in [0, 1]); E even. Host memory. */
void pol_time_embed_forward(float *out, const float *t, int B, int E);
/* dt[B] += d(out)/dt . dout */
void pol_time_embed_backward(float *dt, const float *dout, const float *t, int B, int E);

/* ---- flow-matching policy over an MLP velocity network ---- */
#define POL_FLOW_MAX_STEPS 32
#define POL_FLOW_TEMB 16

typedef struct pol_flow pol_flow_t;
struct pol_flow {
    nn_params_t params;              /* "vel.*" and, with noise, "noise.log_std" [K][D] */
    pol_mlp_t vel;                   /* [obs | x | temb(t)] -> v, GELU, LayerNorm */
    int obs_dim, act_dim, horizon, steps, D, in_dim;
    int noise;                       /* has the learnable per-step noise tensor */
    float x0_scale;                  /* x_0 ~ N(0, x0_scale^2 I) when sampling (1) */
    pol_flow_t *frozen;              /* borrowed; steps k < rl_from use it, noise-free */
    int rl_from;                     /* first trainable, noisy step (0: all) */
    float log_std_lo, log_std_hi;
    int ilog_std;
    int cap;
    float *in, *h_in;                /* [B][in_dim] backend / host staging */
    float *h_v, *h_x, *h_t;          /* host [B][D], [B][D], [B] */
    float *dv;                       /* backend [B][D] */
};

/* hidden: widths of the velocity MLP. noise != 0 adds the learnable per-step
 * noise (log std bounded to [lo, hi], initialised at init_log_std). */
int pol_flow_create(pol_flow_t *f, const nn_backend_t *be, int obs_dim, int act_dim, int horizon,
                    int steps, const int *hidden, int nhidden, int noise, float lo, float hi,
                    float init_log_std, nn_rng_t *rng, cr_err_t *err);
void pol_flow_destroy(pol_flow_t *f);
int pol_flow_reserve(pol_flow_t *f, int B, cr_err_t *err);

/* v[B][D] (host, owned by f, valid until the next call) for host obs[B][O],
 * x[B][D], t[B]. */
const float *pol_flow_velocity(pol_flow_t *f, const float *obs, const float *x, const float *t, int B);
/* After pol_flow_velocity: dv[B][D] (host) back into the parameter grads. */
void pol_flow_velocity_backward(pol_flow_t *f, const float *dv, int B);

/* Flow-matching BC loss on host obs[B][O] and chunks[B][D]: draws x0 and t from
 * rng, accumulates parameter gradients, returns the mean squared error. */
double pol_flow_bc_step(pol_flow_t *f, const float *obs, const float *chunk, int B, nn_rng_t *rng);

/* Generates chunks out[B][D] (host). x0 = 0 and no noise when rng is NULL (the
 * deterministic mode); else x0 ~ N(0, x0_scale^2 I) and, when f->noise and `noisy`, the
 * learned noise is added at every step. chain (may be NULL) receives
 * [B][K+1][D]: x_0 .. x_K; logp (may be NULL) the exact log-likelihood of the
 * chain given x_0: sum over steps of log N(x_{k+1}; x_k + v dt, sigma_k^2).
 * The chain is not clipped; out is x_K clipped to [-1, 1]. */
void pol_flow_sample(pol_flow_t *f, const float *obs, int B, nn_rng_t *rng, int noisy, float *chain,
                     float *logp, float *out);

/* Fine-tune only steps rl_from..K-1 (DPPO-style): steps before run the frozen
 * network (a copy of f with the same shape, reserved by the caller, borrowed)
 * without noise, so their outputs do not depend on f's parameters and the
 * likelihood of the noisy steps stays exact. CR_EINVAL for a shape mismatch or
 * rl_from outside 0..K-1. */
int pol_flow_freeze_prefix(pol_flow_t *f, pol_flow_t *frozen, int rl_from, cr_err_t *err);

/* Host copy of sigma_k[d] (K*D floats) from the noise tensor. */
void pol_flow_sigma(const pol_flow_t *f, float *sigma);

/* Exact chain log-likelihoods for stored chains [B][K+1][D] (host): logp[B],
 * summed over the noisy steps k >= rl_from. With dlogp (host [B], may be NULL)
 * the gradient of sum_b dlogp[b] * logp[b] is accumulated into the velocity
 * parameters and the noise tensor. Needs f reserved for B * (K - rl_from) rows
 * and the noise tensor. */
void pol_flow_chain_logp(pol_flow_t *f, const float *obs, const float *chain, int B, float *logp,
                         const float *dlogp);

/* ---- byte-level tokenizer ----
 * Token ids: 0 PAD, 1 BOS, 2 + byte for each byte of UTF-8 text (vocabulary 258).
 * ids[ctx] = BOS, bytes..., PAD...; a text that does not fit (len + 1 > ctx) is
 * CR_EINVAL naming both lengths; a NUL-free string is expected. */
#define POL_TOK_PAD 0
#define POL_TOK_BOS 1
#define POL_TOK_VOCAB 258
int pol_tokenize(const char *text, int32_t *ids, int ctx, cr_err_t *err);
/* Inverse for tests and logs: writes the bytes of ids (stops at PAD) into buf. */
int pol_detokenize(const int32_t *ids, int ctx, char *buf, size_t cap);

/* ---- pre-LN transformer block over the nn attention op ----
 * x += proj(attn(qkv(ln1(x)))); x += fc2(gelu(fc1(ln2(x)))); x [B][T][C]. */
typedef struct pol_block {
    const nn_backend_t *be;
    int C, NH, T, hidden;
    int ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fc1w, fc1b, fc2w, fc2b;
    int cap;                         /* rows (B*T) the scratch holds */
    const float *x0;                 /* borrowed input of the last forward */
    float *ln1, *mean1, *rstd1, *qkv, *att, *y, *x1, *ln2, *mean2, *rstd2, *fc1, *gelu;
    float *d_a, *d_b, *d_att, *d_qkv, *d_h, *d_h2;
} pol_block_t;

int pol_block_declare(pol_block_t *k, nn_params_t *p, const char *prefix, int C, int NH, int hidden,
                      cr_err_t *err);
void pol_block_init(pol_block_t *k, const nn_params_t *p, nn_rng_t *rng);
int pol_block_reserve(pol_block_t *k, int B, int T, cr_err_t *err);
/* out[B][T][C] (backend) from x[B][T][C] (backend); out may not alias x. */
void pol_block_forward(pol_block_t *k, const nn_params_t *p, float *out, const float *x, int B, int T);
/* dx += gradient wrt x given dout; param grads accumulate. */
void pol_block_backward(pol_block_t *k, const nn_params_t *p, float *dx, const float *dout, int B, int T);
void pol_block_destroy(pol_block_t *k);

/* ---- the VLA ----
 * Tokens, in order: P image patches (when the image is configured), ctx
 * instruction tokens, one proprioceptive token, n_obj object tokens (optional
 * low-dimensional scene features), one action token. The action token embeds
 * [x_t | temb(t)]; its output row goes through the final LayerNorm and a linear
 * head to the velocity of the whole chunk. Attention is bidirectional over all
 * tokens (PAD tokens included: their embedding is learned like any other).
 * Attention alone cannot tell tokens apart by place, so patches and instruction
 * tokens carry learned position embeddings; object tokens carry one per slot
 * only with obj_slots: without it the model is the same for any order of the
 * objects, which suits features that say what each object is (a colour), and
 * cannot pick "the green one" out of features that do not (bare offsets). */
#define POL_VLA_MAX_LAYERS 8

typedef struct pol_vla_cfg {
    int img_c, img_h, img_w, patch;  /* img_c == 0: no image */
    int ctx;                         /* instruction tokens */
    int proprio;                     /* proprioceptive floats */
    int n_obj, obj_dim;              /* object tokens and their features (0: none) */
    int obj_slots;                   /* 1: a learned embedding per object slot (objects listed in a
                                        fixed order, their features carrying no identity) */
    int act_dim, horizon, steps;
    int dim, heads, layers, mlp;     /* transformer width, heads, blocks, MLP width */
    int head_hidden;                 /* 0: linear action head; else a 2-layer GELU MLP of
                                        this width over [action token | x_t, temb | proprio] */
} pol_vla_cfg_t;

typedef struct pol_vla {
    pol_vla_cfg_t c;
    const nn_backend_t *be;
    nn_params_t params;
    int D, P, T, pdim;               /* chunk floats, patches, tokens, patch floats */
    int ipatch_w, ipatch_b, ipos, itok, itpos, iprop_w, iprop_b, iobj_w, iobj_b, iobj_pos;
    int iact_w, iact_b, ilnf_w, ilnf_b, ihead_w, ihead_b;
    pol_block_t blk[POL_VLA_MAX_LAYERS];
    pol_mlp_t head;                  /* with head_hidden > 0 */
    int head_in_dim;
    int cap;
    /* backend scratch */
    float *patches, *ptok, *ids_f, *tok, *prop_in, *ptk, *obj_in, *otk, *act_in, *atk;
    int32_t *ids;
    float *x[POL_VLA_MAX_LAYERS + 1], *arow, *lnf, *mf, *rf, *vel;
    float *dx[2], *darow, *dlnf, *dvel, *dtmp;
    float *cat1, *head_in, *dcat1, *dhead_in;   /* MLP head input and its gradient */
    /* host staging */
    float *h_act_in, *h_v, *h_x, *h_t, *h_patch;
} pol_vla_t;

/* Checks the configuration (errors name the field) and builds the model. */
int pol_vla_create(pol_vla_t *v, const nn_backend_t *be, const pol_vla_cfg_t *cfg, nn_rng_t *rng,
                   cr_err_t *err);
void pol_vla_destroy(pol_vla_t *v);
int pol_vla_reserve(pol_vla_t *v, int B, cr_err_t *err);

/* One observation batch, host memory: img [B][C][H][W] floats in [0, 1] (NULL
 * without an image), ids [B][ctx], proprio [B][proprio], obj [B][n_obj][obj_dim]
 * (NULL without objects). */
typedef struct pol_vla_obs {
    const float *img;
    const int32_t *ids;
    const float *proprio;
    const float *obj;
} pol_vla_obs_t;

/* An image of c x h x w for this model: 0, or CR_EINVAL naming both sizes
 * (also when the model takes no image). */
int pol_vla_check_image(const pol_vla_t *v, int c, int h, int w, cr_err_t *err);

/* Velocity v[B][D] (host, owned by v) at x[B][D], t[B]. */
const float *pol_vla_velocity(pol_vla_t *v, const pol_vla_obs_t *o, const float *x, const float *t, int B);
void pol_vla_velocity_backward(pol_vla_t *v, const float *dv, int B);
/* Flow-matching BC step (gradients accumulate); returns the loss. */
double pol_vla_bc_step(pol_vla_t *v, const pol_vla_obs_t *o, const float *chunk, int B, nn_rng_t *rng);
/* Chunks out[B][D] by K Euler steps; x0 = 0 when rng is NULL. */
void pol_vla_sample(pol_vla_t *v, const pol_vla_obs_t *o, int B, nn_rng_t *rng, float *out);

/* Forward and backward multiply-adds, for the bench. */
double pol_vla_flops_forward(const pol_vla_t *v, int B);
double pol_flow_flops_forward(const pol_flow_t *f, int B);

/* ---- VLA weights in safetensors ----
 * File tensor names (the documented mapping; [..] gives the shape):
 *   vision.patch_embed.weight [dim][C*patch*patch]   vision.patch_embed.bias [dim]
 *   vision.pos_embed [P][dim]
 *   language.embed_tokens.weight [258][dim]          language.pos_embed [ctx][dim]
 *   state.proj.weight [dim][proprio]                 state.proj.bias [dim]
 *   objects.proj.weight [dim][obj_dim]               objects.proj.bias [dim]
 *   objects.pos_embed [n_obj][dim] (with obj_slots)
 *   action_in.weight [dim][D + 16]                   action_in.bias [dim]
 *   layers.{i}.input_layernorm.{weight,bias} [dim]
 *   layers.{i}.self_attn.qkv_proj.{weight [3*dim][dim], bias [3*dim]}
 *   layers.{i}.self_attn.o_proj.{weight [dim][dim], bias [dim]}
 *   layers.{i}.post_attention_layernorm.{weight,bias} [dim]
 *   layers.{i}.mlp.fc1.{weight [mlp][dim], bias [mlp]}
 *   layers.{i}.mlp.fc2.{weight [dim][mlp], bias [dim]}
 *   final_norm.{weight,bias} [dim]                    action_out.weight [D][dim]
 *   action_out.bias [D]
 *   (with head_hidden: action_out.{l}.weight / .bias for l = 0, 1, 2, the MLP
 *   over [dim + D + 16 + proprio] -> head_hidden -> head_hidden -> D)
 * with an optional prefix ("model." for "model.layers.0..."). Loading is strict:
 * every tensor must be present as F32 with exactly its shape, and a tensor the
 * model does not have is an error too; all errors name the tensor and both
 * shapes, and nothing is changed unless the whole file matches. */
int pol_vla_load(pol_vla_t *v, const char *path, const char *prefix, cr_err_t *err);
int pol_vla_load_mem(pol_vla_t *v, const void *buf, size_t len, const char *prefix, cr_err_t *err);
int pol_vla_save(pol_vla_t *v, const char *path, const char *prefix, cr_err_t *err);
/* File name of the model's tensor i (arena order) under prefix. */
void pol_vla_tensor_name(const pol_vla_t *v, int i, const char *prefix, char *buf, size_t cap);

#endif
