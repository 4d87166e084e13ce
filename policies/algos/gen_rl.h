/* gen_rl.h - online RL fine-tuning of a flow-matching action generator (the
 * MLP flow or the VLA) through the plugin ABI, where a batch holds single
 * transitions (obs, executed action, reward, next obs, done) from a replay
 * buffer. Private to policies/; gen_rl.c explains the method.
 *
 * The owner (an algorithm plugin) keeps three copies of its velocity model
 * behind pol_genrl_model_t: the trainable one, a frozen copy taken when RL
 * starts (it runs the first K-1 integration steps) and the snapshot of the
 * policy last handed to the actors (the behaviour policy of the ratio). It
 * decodes the batch into its own observation type (opaque here), calls
 * pol_genrl_loss, which accumulates the policy gradient into the trainable
 * model's arena and steps the noise and the value function itself, then steps
 * its own optimiser. */
#ifndef CORRAL_POLICIES_GEN_RL_H
#define CORRAL_POLICIES_GEN_RL_H

#include "policies/algos/algo.h"

typedef struct pol_genrl_model {
    void *self;
    /* v[B][D] (host, owned by the model) for B observations at x[B][D], t[B] (host) */
    const float *(*velocity)(void *self, const void *obs, const float *x, const float *t, int B);
    /* after velocity: dv[B][D] (host) into the model's parameter gradients */
    void (*backward)(void *self, const float *dv, int B);
} pol_genrl_model_t;

typedef struct pol_genrl_cfg {
    float lr_noise, lr_value;       /* Adam rates of the noise scale and of the value MLP */
    float gamma, clip;              /* discount; PPO ratio clip */
    float log_std_init, log_std_lo, log_std_hi;
    int value_hidden;               /* width of the value MLP's two hidden layers */
} pol_genrl_cfg_t;

#define POL_GENRL_MAX_ACT 64

typedef struct pol_genrl {
    pol_genrl_cfg_t cfg;
    int D, A, K, value_in;          /* chunk floats, executed action floats, steps, value input floats */
    pol_genrl_model_t cur, frozen, old;
    nn_params_t noise;              /* "log_std" [A]: the last step's noise (raw, tanh-bounded) */
    nn_params_t old_noise;          /* the behaviour snapshot's */
    nn_adam_t nopt;
    nn_params_t vparams;            /* "value.*" */
    pol_mlp_t value;
    nn_adam_t vopt;
    int cap;
    float *x, *t, *dv, *vin_d, *vdout_d;   /* host x, t, dv; backend value input / output grad */
} pol_genrl_t;

int pol_genrl_create(pol_genrl_t *g, const nn_backend_t *be, int D, int A, int K, int value_in,
                     const pol_genrl_cfg_t *cfg, nn_rng_t *rng, cr_err_t *err);
void pol_genrl_destroy(pol_genrl_t *g);
int pol_genrl_reserve(pol_genrl_t *g, int B, cr_err_t *err);

/* x[B][D] (host): the first K-1 Euler steps of the frozen model from x_0 = 0. */
void pol_genrl_prefix(pol_genrl_t *g, const void *obs, int B, float *x);

/* One chunk out[D] for one observation: the frozen prefix, the trainable last
 * step, plus the learned noise when rng is given (none: the mode); clipped to
 * [-1, 1]. */
void pol_genrl_sample(pol_genrl_t *g, const void *obs, nn_rng_t *rng, float *out);

/* The RL step on B transitions: obs (the owner's type), vin / vnext [B][value_in]
 * (host: the value function's input for obs and next obs), act [B][A] executed
 * actions, reward [B], done [B], use [B] (1: a row of the policy's own experience;
 * demonstrations and interventions are 0). Accumulates the clipped surrogate's
 * gradient into cur's parameters, and steps the noise and the value MLP.
 * Metrics: policy_loss, value_loss, approx_kl, clip_frac, sigma_mean, rl_rows. */
int pol_genrl_update(pol_genrl_t *g, const void *obs, const float *vin, const float *vnext, const float *act,
                     const float *reward, const float *done, const uint8_t *use, int B, corral_metrics_t *m,
                     cr_err_t *err);

/* The behaviour snapshot's noise := the current noise (the owner copies its
 * model into `old` at the same time: when it exports the policy). */
void pol_genrl_snapshot(pol_genrl_t *g);

/* Mean sigma of the executed action dims. */
double pol_genrl_sigma_mean(const pol_genrl_t *g);

#endif
