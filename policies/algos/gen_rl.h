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

/* ---- the BC-then-RL schedule of flow-rl and vla (gen_phase.c) ----
 * Both algorithms clone demonstrations for bc_updates updates, then fine-tune
 * with pol_genrl_update. What they share beside their model: the RL phase's
 * settings, the switch to RL (frozen and behaviour copies of the BC model, the
 * optimiser restarted at the RL rate), the BC rate schedule, which rows BC
 * clones, the phase a policy blob carries and the counters a checkpoint carries.
 * A pol_genphase_t is the FIRST member of the algorithm's instance, so the
 * export / import / save / load entries of the plugin ABI are these functions. */
typedef struct pol_genphase_opts {
    long bc_updates, value_hidden;
    float bc_decay_from, rl_lr, value_lr, gamma, clip, log_std_init, log_std_min, log_std_max;
} pol_genphase_opts_t;

/* The settings of the RL phase, for a table over `type` whose member `m` is a
 * pol_genphase_opts_t. */
#define POL_GENPHASE_SETTINGS(type, m)                                                                          \
    {"bc_updates", SET_INT, "1000", 0, 1e15, offsetof(type, m.bc_updates),                                    \
     "behaviour-cloning updates before RL starts"},                                                           \
    {"bc_decay_from", SET_FLOAT, "1", 0, 1, offsetof(type, m.bc_decay_from),                                  \
     "BC rate cosine-decayed to 0 from this fraction of bc_updates on (1: constant)"},                        \
    {"rl_lr", SET_FLOAT, "1e-4", 0, 1, offsetof(type, m.rl_lr), "learning rate of the policy during RL"},    \
    {"value_lr", SET_FLOAT, "1e-3", 0, 1, offsetof(type, m.value_lr), "learning rate of the value MLP"},     \
    {"value_hidden", SET_INT, "64", 1, 4096, offsetof(type, m.value_hidden), "width of the value MLP"},       \
    {"gamma", SET_FLOAT, "0.99", 0, 1, offsetof(type, m.gamma), "discount"},                                 \
    {"clip", SET_FLOAT, "0.2", 0.01, 1, offsetof(type, m.clip), "PPO ratio clip"},                           \
    {"log_std_init", SET_FLOAT, "-1.5", -10, 2, offsetof(type, m.log_std_init),                              \
     "initial log std of the action noise"},                                                                  \
    {"log_std_min", SET_FLOAT, "-4", -10, 2, offsetof(type, m.log_std_min), "lower bound of the noise log std"}, \
    {"log_std_max", SET_FLOAT, "-0.5", -10, 2, offsetof(type, m.log_std_max), "upper bound of the noise log std"}

typedef struct pol_genphase {
    const char *algo;
    int rl;                          /* the algorithm has an RL phase */
    int phase;                       /* 0: BC, 1: RL */
    const nn_backend_t *be;
    nn_params_t *cur, *frozen, *old; /* borrowed: the model's arenas (frozen, old: rl only) */
    pol_genrl_t g;                   /* rl only */
    nn_adam_t opt;                   /* the model's: the BC rate, then rl_lr */
    float lr, weight_decay, grad_clip;
    pol_genphase_opts_t o;
    nn_rng_t rng;
    uint64_t updates, skipped_nan;
    char optim_name[32];             /* "optim.<model>" */
    pol_state_t st;
} pol_genphase_t;

/* After the owner built its model (and, with rl, the frozen and old copies,
 * whose arenas p->cur / frozen / old point to): the RL machinery over the three
 * views (rl only), the optimiser at p->lr, and RL at once when bc_updates is 0.
 * D chunk floats, A action floats, K steps, value_in the value MLP's input. */
int pol_genphase_setup(pol_genphase_t *p, const pol_genrl_model_t *cur, const pol_genrl_model_t *frozen,
                       const pol_genrl_model_t *old, int D, int A, int K, int value_in, cr_err_t *err);
/* The checkpoint and blob layout: `model` names the model's arena ("flow"); the
 * owner adds the keys that describe its shapes (pol_state_key). */
void pol_genphase_describe(pol_genphase_t *p, const char *model, const char *version);
void pol_genphase_destroy(pol_genphase_t *p);

/* BC over a batch of S samples of H rows each (sample i's first row is i*H):
 * take[i] = 1 for the samples BC clones (with rl, the demonstrations when the
 * batch has any; else all); returns how many. Also sets the BC rate of this
 * update (bc_decay_from). */
int pol_genphase_bc_begin(pol_genphase_t *p, const corral_batch_t *b, int H, int S, uint8_t *take);
/* After the owner accumulated BC gradients: the step, metrics (loss_name,
 * bc_rows) and, with rl, the switch to RL after bc_updates. */
int pol_genphase_bc_end(pol_genphase_t *p, double loss, int rows, corral_metrics_t *m, cr_err_t *err);
/* Whether row i of b is one RL learns from: the policy's own online step, not a
 * demonstration, an intervention or a chunk's padding. */
int pol_genphase_rl_row(const corral_batch_t *b, int i);
/* After pol_genrl_update put its metrics in *rl: copies them to m and steps the
 * model (no step when no row was the policy's own). */
void pol_genphase_rl_end(pol_genphase_t *p, const corral_metrics_t *rl, corral_metrics_t *m);

/* The plugin ABI's entries over the instance (whose first member is the phase). */
int pol_genphase_export(void *self, void *buf, size_t cap, size_t *len, corral_err_t *cerr);
int pol_genphase_import(void *self, const void *blob, size_t len, corral_err_t *cerr);
int pol_genphase_save(void *self, const char *path, corral_err_t *cerr);
int pol_genphase_load(void *self, const char *path, corral_err_t *cerr);

/* The vtable of a generative algorithm: its own create, update, act, destroy. */
#define POL_GENPHASE_VTABLE(create_fn, update_fn, act_fn, destroy_fn)                                       \
    {.struct_size = sizeof(corral_algo_vtable_t), .create = create_fn, .update = update_fn, .act = act_fn, \
     .export_policy = pol_genphase_export, .import_policy = pol_genphase_import, .save = pol_genphase_save, \
     .load = pol_genphase_load, .destroy = destroy_fn}

#endif
