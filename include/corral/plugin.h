/* corral/plugin.h - the versioned C interface between corral and its plugins.
 *
 * A plugin is a shared object that exports exactly one entry symbol,
 * CORRAL_PLUGIN_ENTRY ("corral_plugin_entry"), a function returning a pointer to a
 * static corral_plugin_t. That descriptor carries the ABI version the plugin was
 * compiled against, its kind (algorithm or reward), its name and its vtable.
 * corral refuses a plugin whose abi_version differs from its own, whose vtable is
 * smaller than it expects (struct_size) or which leaves a required function NULL.
 * The built-in algorithms (sac, rlpd, bc, hg-dagger, flow-bc, flow-rl, vla) and rewards are registered
 * through this same descriptor, so a user plugin is a peer of the built-ins.
 *
 * This header depends on the C standard library only: compile a plugin with
 *     cc -shared -fPIC -I<corral>/include my_algo.c -o my_algo.so
 *
 * Conventions for every function pointer below:
 *  - return 0 on success or a negative CORRAL_E* code, and on failure write a
 *    message into the caller-owned corral_err_t (never NULL);
 *  - pointers passed in are borrowed for the duration of the call only;
 *  - `self` is the opaque instance returned by create and freed by destroy;
 *  - calls on one instance are never concurrent (the caller serialises them).
 */
#ifndef CORRAL_PLUGIN_H
#define CORRAL_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to the structs or function signatures below. */
#define CORRAL_PLUGIN_ABI_VERSION 1u

#define CORRAL_PLUGIN_ENTRY "corral_plugin_entry"

/* Error codes: the same values corral uses internally. */
enum {
    CORRAL_OK = 0,
    CORRAL_EINVAL = -1,    /* bad argument or configuration */
    CORRAL_ENOENT = -2,    /* file or key not found */
    CORRAL_ENOMEM = -4,
    CORRAL_EIO = -5,
    CORRAL_ECORRUPT = -10, /* a blob or checkpoint that does not parse */
    CORRAL_EVERSION = -11, /* a blob or checkpoint from an incompatible version */
    CORRAL_ETOOBIG = -16,  /* output buffer too small (the needed size is reported) */
    CORRAL_ENOTSUP = -17,
};

#define CORRAL_ERR_MSG_MAX 512

/* Same layout as corral's internal error struct: {code, message}. */
typedef struct corral_err {
    int code;
    char msg[CORRAL_ERR_MSG_MAX];
} corral_err_t;

/* One configuration setting, both strings borrowed ("lr" = "3e-4"). */
typedef struct corral_kv {
    const char *key;
    const char *value;
} corral_kv_t;

/* What the policy sees and does. An observation is obs_dim floats; when img_c > 0
 * its first img_c*img_h*img_w floats are an image in CHW order with values in
 * [0, 1], and the remaining floats are proprioception. Actions are act_dim floats
 * in [-1, 1] (the env worker rescales to the robot's limits). */
typedef struct corral_spec {
    uint32_t struct_size;          /* sizeof(corral_spec_t) as the caller compiled it */
    int32_t obs_dim;
    int32_t act_dim;
    int32_t img_c, img_h, img_w;   /* 0 when there is no image */
} corral_spec_t;

/* Flags of one transition in a batch. */
enum {
    CORRAL_SAMPLE_DEMO = 1u << 0,          /* from a demonstration */
    CORRAL_SAMPLE_INTERVENTION = 1u << 1,  /* a human took over for this step */
    CORRAL_SAMPLE_PAD = 1u << 2,           /* chunk padding: a copy of the row before, past
                                            * the end of its episode (see corral_batch_t) */
};

/* A batch of transitions, row-major and contiguous, all borrowed:
 *   obs[size][obs_dim], action[size][act_dim], reward[size], next_obs[size][obs_dim],
 *   done[size] (1.0 when the episode terminated, not merely truncated),
 *   flags[size] (CORRAL_SAMPLE_* bits; may be NULL when all are online samples).
 * An algorithm with a setting "horizon" H > 1 gets whole chunks: rows s*H ..
 * s*H+H-1 are H consecutive transitions of one episode; a chunk that reaches its
 * episode's end is filled with copies of the episode's last transition, flagged
 * CORRAL_SAMPLE_PAD (so its actions hold the last one). Every row is still a real
 * transition; an algorithm learning from transitions may skip the padded copies. */
typedef struct corral_batch {
    uint32_t struct_size;
    int32_t size;
    const float *obs;
    const float *action;
    const float *reward;
    const float *next_obs;
    const float *done;
    const uint8_t *flags;
} corral_batch_t;

/* Scalars an update reports ("critic_loss", "alpha", "skipped_nan", ...). */
#define CORRAL_METRICS_MAX 32
#define CORRAL_METRIC_NAME_MAX 32
typedef struct corral_metrics {
    int32_t count;
    struct {
        char name[CORRAL_METRIC_NAME_MAX];
        double value;
    } item[CORRAL_METRICS_MAX];
} corral_metrics_t;

/* An algorithm: a learner-side object holding all of its state (networks,
 * targets, optimiser moments, temperature, RNG, counters). */
typedef struct corral_algo_vtable {
    uint32_t struct_size;   /* sizeof(corral_algo_vtable_t) as the plugin compiled it */

    /* Builds an instance from settings; unknown keys are an error naming the key. */
    int (*create)(const corral_kv_t *cfg, size_t ncfg, const corral_spec_t *spec,
                  void **self, corral_err_t *err);

    /* One learning step on a batch; fills metrics (the caller zeroes count). A
     * non-finite loss must not change the parameters: the step is skipped, counted
     * and reported in the metrics ("skipped_nan"), and the call still returns 0. */
    int (*update)(void *self, const corral_batch_t *batch, corral_metrics_t *metrics,
                  corral_err_t *err);

    /* The policy at batch 1: obs[obs_dim] -> action[act_dim] (in [-1, 1]).
     * deterministic != 0 returns the mode, else a sample. */
    int (*act)(void *self, const float *obs, int deterministic, float *action,
               corral_err_t *err);

    /* Writes the actor's weights as a versioned blob into buf[cap] and sets *len.
     * With buf NULL or cap too small, sets *len to the size needed and returns
     * CORRAL_ETOOBIG. */
    int (*export_policy)(void *self, void *buf, size_t cap, size_t *len, corral_err_t *err);

    /* Replaces the actor's weights with a blob from export_policy; a blob from
     * another algorithm, shape or version is rejected and changes nothing. */
    int (*import_policy)(void *self, const void *blob, size_t len, corral_err_t *err);

    /* Whole state to / from one file. save is atomic (temporary file, fsync,
     * rename); load restores exactly what save wrote, so updates continue
     * bit-for-bit as if never interrupted. */
    int (*save)(void *self, const char *path, corral_err_t *err);
    int (*load)(void *self, const char *path, corral_err_t *err);

    void (*destroy)(void *self);
} corral_algo_vtable_t;

/* A reward: turns a transition into a scalar reward and a success flag. */
typedef struct corral_reward_vtable {
    uint32_t struct_size;
    int (*create)(const corral_kv_t *cfg, size_t ncfg, const corral_spec_t *spec,
                  void **self, corral_err_t *err);
    /* obs and next_obs [obs_dim], action [act_dim]; writes *reward and *success. */
    int (*compute)(void *self, const float *obs, const float *action, const float *next_obs,
                   float *reward, int *success, corral_err_t *err);
    void (*destroy)(void *self);
} corral_reward_vtable_t;

enum {
    CORRAL_PLUGIN_ALGO = 1,
    CORRAL_PLUGIN_REWARD = 2,
};

/* What the entry symbol returns; static storage in the plugin. */
typedef struct corral_plugin {
    uint32_t abi_version;   /* CORRAL_PLUGIN_ABI_VERSION */
    uint32_t kind;          /* CORRAL_PLUGIN_ALGO or CORRAL_PLUGIN_REWARD */
    const char *name;       /* [a-z0-9_-]{1,63} */
    const char *description;
    const corral_algo_vtable_t *algo;     /* set when kind is ALGO */
    const corral_reward_vtable_t *reward; /* set when kind is REWARD */
} corral_plugin_t;

typedef const corral_plugin_t *(*corral_plugin_entry_fn)(void);

/* The one symbol a plugin exports:
 *   CORRAL_PLUGIN_EXPORT const corral_plugin_t *corral_plugin_entry(void) { ... } */
#define CORRAL_PLUGIN_EXPORT __attribute__((visibility("default")))

#ifdef __cplusplus
}
#endif

#endif
