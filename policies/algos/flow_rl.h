/* flow_rl.h - online RL fine-tuning of a flow-matching policy by PPO over the
 * exact likelihood of its noisy denoising chain (flow_rl.c explains the method).
 * Private to policies/ and its tests: the plugin ABI carries one action per
 * transition, while this on-policy method needs the whole chain x_0..x_K of each
 * step, so rollouts go through pol_rollout_t instead of corral_batch_t. (The
 * flow-rl and vla algorithms fine-tune through the ABI with the last-step
 * variant in gen_rl.c, whose likelihood needs only the executed action.)
 *
 * Use: create over a BC-trained pol_flow_t that has the noise tensor (borrowed,
 * must outlive the PPO object); for each environment step call
 * pol_flow_ppo_act (records obs, chain, log-likelihood and value), then
 * pol_rollout_reward with the step's reward and whether the episode ended; after
 * whole episodes call pol_flow_ppo_update, which learns and empties the rollout. */
#ifndef CORRAL_POLICIES_FLOW_RL_H
#define CORRAL_POLICIES_FLOW_RL_H

#include "policies/algos/algo.h"
#include "policies/models/gen.h"

typedef struct pol_flow_ppo_cfg {
    float lr, value_lr;         /* Adam learning rates: policy (velocity + noise), value */
    float clip;                 /* PPO ratio clip */
    float gamma, lambda;        /* discount, GAE lambda */
    float target_kl;            /* stop the epochs once the mean KL estimate passes it */
    float grad_clip;            /* global norm for each network */
    int epochs, minibatch;      /* policy epochs (stopped early by target_kl), rows per step */
    int value_epochs;           /* passes of value regression over each rollout */
    int value_hidden;           /* width of the value MLP (two hidden layers) */
    int value_warmup;           /* first updates fit the value only */
    long seed;
} pol_flow_ppo_cfg_t;

/* Sensible defaults for short-horizon manipulation. */
void pol_flow_ppo_defaults(pol_flow_ppo_cfg_t *c);

typedef struct pol_rollout {
    int n, cap, obs_dim, chain_dim;
    float *obs, *chain, *logp, *value, *reward, *end;
} pol_rollout_t;

int pol_rollout_init(pol_rollout_t *r, int cap, int obs_dim, int chain_dim, cr_err_t *err);
void pol_rollout_free(pol_rollout_t *r);
/* Sets the reward of the newest step; end != 0 when the episode ended after it. */
void pol_rollout_reward(pol_rollout_t *r, float reward, int end);

typedef struct pol_flow_ppo {
    pol_flow_ppo_cfg_t cfg;
    pol_flow_t *flow;           /* borrowed */
    nn_params_t vparams;
    pol_mlp_t value;
    nn_adam_t opt, vopt;
    nn_rng_t rng;
    long updates;
    int cap;
    float *vin, *vdout;         /* backend scratch for the value MLP */
} pol_flow_ppo_t;

int pol_flow_ppo_create(pol_flow_ppo_t *p, pol_flow_t *flow, const pol_flow_ppo_cfg_t *cfg, cr_err_t *err);
void pol_flow_ppo_destroy(pol_flow_ppo_t *p);
/* Samples one noisy chain for obs (host, obs_dim floats); chunk gets the whole
 * clipped chunk (horizon x act_dim floats; the caller executes it, and one
 * rollout step is one chunk, its reward the sum over the executed actions).
 * Appends to r (CR_ENOSPC when full). */
int pol_flow_ppo_act(pol_flow_ppo_t *p, const float *obs, float *chunk, pol_rollout_t *r, cr_err_t *err);
/* PPO on the rollout (its last step must end an episode); empties it. Metrics:
 * policy_loss, value_loss, approx_kl, clip_frac, sigma_mean, epochs. */
int pol_flow_ppo_update(pol_flow_ppo_t *p, pol_rollout_t *r, corral_metrics_t *m, cr_err_t *err);

/* Group-relative variant (GRPO, as pi_RL uses for flow policies): the rollout
 * holds G episodes from each of several identical starts; `group` gives each
 * episode's group id in rollout order. An episode's advantage is its return
 * minus its group's mean, over the group's standard deviation, shared by all
 * its steps; no value function. The same clipped update follows. */
int pol_flow_grpo_update(pol_flow_ppo_t *p, pol_rollout_t *r, const int *group, corral_metrics_t *m,
                         cr_err_t *err);

#endif
