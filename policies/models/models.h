/* models.h - the networks algorithms are built from: an MLP (optional LayerNorm),
 * the tanh-squashed Gaussian actor, the Q-critic ensemble and the CNN image
 * encoder. Private to policies/. Each model keeps the activations of its last
 * forward pass for the backward pass that follows; scratch grows to the largest
 * batch seen (pol_*_reserve), so a forward never allocates once warmed up.
 * Parameter gradients accumulate into the owning arena's grad array (+=). */
#ifndef CORRAL_POLICIES_MODELS_H
#define CORRAL_POLICIES_MODELS_H

#include "policies/nn/nn.h"

#define POL_MLP_MAX_LAYERS 8

/* linear -> [LayerNorm] -> act, repeated for each hidden width, then linear. */
typedef struct pol_mlp {
    const nn_backend_t *be;
    int nl;                          /* linear layers = hidden count + 1 */
    int width[POL_MLP_MAX_LAYERS + 1];
    int layernorm;
    nn_act_t act;
    int w[POL_MLP_MAX_LAYERS], b[POL_MLP_MAX_LAYERS];   /* tensor indices */
    int lnw[POL_MLP_MAX_LAYERS], lnb[POL_MLP_MAX_LAYERS];
    int cap;                         /* rows the scratch holds */
    const float *in;                 /* borrowed input of the last forward */
    float *pre[POL_MLP_MAX_LAYERS];  /* linear outputs [B][width[l+1]] */
    float *ln[POL_MLP_MAX_LAYERS];   /* LayerNorm outputs */
    float *mean[POL_MLP_MAX_LAYERS], *rstd[POL_MLP_MAX_LAYERS];
    float *h[POL_MLP_MAX_LAYERS];    /* activations (inputs of layer l+1) */
    float *d0, *d1, *d2;             /* backward scratch [B][max width] */
    nn_pool_t *pool;                 /* borrowed, may be NULL: see pol_mlp_set_pool */
    int split_rows;
} pol_mlp_t;

int pol_mlp_declare(pol_mlp_t *m, nn_params_t *p, const char *prefix, int in, const int *hidden,
                    int nhidden, int out, int layernorm, cr_err_t *err);
/* After nn_params_alloc: PyTorch-style init (LayerNorm weight 1, bias 0). */
void pol_mlp_init(pol_mlp_t *m, const nn_params_t *p, nn_rng_t *rng);
int pol_mlp_reserve(pol_mlp_t *m, int B, cr_err_t *err);
/* Returns the output [B][out] (owned by m, valid until the next forward). */
const float *pol_mlp_forward(pol_mlp_t *m, const nn_params_t *p, const float *in, int B);
/* dinp (may be NULL) += gradient wrt the input; param grads accumulate when
 * param_grads != 0 (the actor loss backpropagates through frozen critics). */
void pol_mlp_backward(pol_mlp_t *m, const nn_params_t *p, float *dinp, const float *dout, int B,
                      int param_grads);
void pol_mlp_destroy(pol_mlp_t *m);
/* With a pool (borrowed; NULL: none), a backward computes a large layer's
 * weight and input gradients side by side, and with split_rows a forward of
 * B >= 256 rows runs in pol_mlp_row_blocks(B) row blocks across the lanes.
 * The row blocks depend on B only, so results do not depend on the lane
 * count; they may differ in the last bits from an unsplit forward (BLAS
 * results depend on the product's shape). */
void pol_mlp_set_pool(pol_mlp_t *m, nn_pool_t *pool, int split_rows);
int pol_mlp_row_blocks(int B);
/* Rows [r0, r1) of a forward over the input m->in (set by the caller): what
 * pol_mlp_forward runs for each row block, for models that add per-row work
 * of their own to the same tasks. */
void pol_mlp_forward_rows(pol_mlp_t *m, const nn_params_t *p, int r0, int r1);

/* ---- actor: obs -> MLP -> (mu, raw log std) -> tanh-squashed Gaussian ---- */
typedef struct pol_actor {
    nn_params_t params;
    pol_mlp_t mlp;
    int obs_dim, act_dim;
    float log_std_lo, log_std_hi;
    int cap;
    const float *head;               /* borrowed from mlp */
    float *eps, *action, *logp, *dhead;
} pol_actor_t;

int pol_actor_create(pol_actor_t *a, const nn_backend_t *be, int obs_dim, int act_dim,
                     const int *hidden, int nhidden, nn_rng_t *rng, cr_err_t *err);
void pol_actor_destroy(pol_actor_t *a);
int pol_actor_reserve(pol_actor_t *a, int B, cr_err_t *err);
/* a->eps must hold B*act_dim noise values (zeros for the mode) before the call;
 * results in a->action [B][A] and a->logp [B]. */
void pol_actor_forward(pol_actor_t *a, const float *obs, int B);
/* daction [B][A] and dlogp [B] may be NULL; accumulates into a->params.grad. */
void pol_actor_backward(pol_actor_t *a, const float *daction, const float *dlogp, int B);
/* The same, and dobs [B][obs_dim] (may be NULL) += the gradient wrt the
 * observations of the last forward (an image encoder below the actor). */
void pol_actor_backward_obs(pol_actor_t *a, float *dobs, const float *daction, const float *dlogp, int B);
/* Runs forward row blocks and backward products across the pool's lanes
 * (borrowed; NULL: none); see pol_mlp_set_pool. */
void pol_actor_set_pool(pol_actor_t *a, nn_pool_t *pool);

/* ---- critic ensemble: N independent MLPs over [obs | action] -> Q ---- */
#define POL_MAX_Q 16
typedef struct pol_critic {
    nn_params_t params;              /* all heads in one arena */
    pol_mlp_t head[POL_MAX_Q];
    int n, obs_dim, act_dim;
    int cap;
    float *x, *dx, *q;               /* x [B][obs+act], dx [n][B][obs+act] per head, q [n][B] */
    nn_pool_t *pool;                 /* borrowed, may be NULL */
} pol_critic_t;

int pol_critic_create(pol_critic_t *c, const nn_backend_t *be, int n, int obs_dim, int act_dim,
                      const int *hidden, int nhidden, int layernorm, nn_rng_t *rng, cr_err_t *err);
void pol_critic_destroy(pol_critic_t *c);
int pol_critic_reserve(pol_critic_t *c, int B, cr_err_t *err);
/* q [n][B] in c->q */
void pol_critic_forward(pol_critic_t *c, const float *obs, const float *act, int B);
/* dq [n][B]; dobs [B][obs_dim] and dact [B][A] (either may be NULL) += the
 * gradients wrt the critic's inputs. */
void pol_critic_backward(pol_critic_t *c, const float *dq, float *dobs, float *dact, int B,
                         int param_grads);
/* Runs the heads across the pool's lanes (borrowed; NULL: none). Each head has
 * its own scratch and gradient slice, and input gradients are summed over the
 * heads in head order, so results do not depend on the lane count. */
void pol_critic_set_pool(pol_critic_t *c, nn_pool_t *pool);

/* ---- CNN encoder: image [B][C][H][W] -> conv/ReLU stack -> linear -> LayerNorm -> tanh ---- */
#define POL_ENC_MAX_CONV 4
typedef struct pol_encoder {
    nn_params_t *p;                  /* borrowed: lives in the critic's or its own arena */
    const nn_backend_t *be;
    int nconv, feat;
    nn_conv_shape_t cs[POL_ENC_MAX_CONV];
    int cw[POL_ENC_MAX_CONV], cb[POL_ENC_MAX_CONV];
    int fw, fb, lnw, lnb;
    int flat, cap;
    const float *in;
    float *conv_out[POL_ENC_MAX_CONV], *relu_out[POL_ENC_MAX_CONV];
    float *col, *fc, *ln, *mean, *rstd, *out;
    float *dbuf0, *dbuf1;
} pol_encoder_t;

int pol_encoder_declare(pol_encoder_t *e, nn_params_t *p, const char *prefix, int C, int H, int W,
                        int feat, cr_err_t *err);
void pol_encoder_init(pol_encoder_t *e, nn_rng_t *rng);
int pol_encoder_reserve(pol_encoder_t *e, int B, cr_err_t *err);
const float *pol_encoder_forward(pol_encoder_t *e, const float *img, int B);
void pol_encoder_backward(pol_encoder_t *e, float *dimg, const float *dout, int B);
void pol_encoder_destroy(pol_encoder_t *e);

/* ---- image observations: rows [image C*H*W | proprio P] -> head inputs [F | P] ----
 * The image is shifted at random (DrQ, `pad` pixels, 0: off) when augmenting,
 * encoded by a pol_encoder_t of F features, and concatenated with the
 * proprioception. Scratch only; the encoders are the caller's. */
typedef struct pol_imgobs {
    const nn_backend_t *be;
    int C, H, W, img, prop, feat, pad;
    int cap;
    float *img_buf, *img_aug, *prop_buf, *dfeat;
    int32_t *shifts, *h_shifts;
} pol_imgobs_t;

int pol_imgobs_init(pol_imgobs_t *o, const nn_backend_t *be, int C, int H, int W, int obs_dim, int feat,
                    int pad, cr_err_t *err);
int pol_imgobs_reserve(pol_imgobs_t *o, int B, cr_err_t *err);
/* out[B][F+P] for obs[B][obs_dim] (backend memory); with augment, draws 2B
 * shift offsets from rng. Keeps enc's activations for pol_imgobs_backward. */
const float *pol_imgobs_forward(pol_imgobs_t *o, pol_encoder_t *enc, const float *obs, int B, int augment,
                                nn_rng_t *rng, float *out);
/* dx[B][F+P]: accumulates enc's parameter gradients through its last forward. */
void pol_imgobs_backward(pol_imgobs_t *o, pol_encoder_t *enc, const float *dx, int B);
void pol_imgobs_destroy(pol_imgobs_t *o);

#endif
