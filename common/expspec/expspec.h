/* expspec.h - the experiment YAML (the files in configs/experiments/) as a typed struct.
 *
 * One settings table (common/config) describes every field; the loader, `--set`
 * overrides, defaults, the reference text in the README (exp_spec_doc) and every
 * error message come from it, so `corral exp submit` refuses a bad file with
 * "FILE:LINE:COL: path: what is wrong" before anything is scheduled. The CLI
 * validates before sending, the controller again on receipt (it trusts no
 * client), and each worker reads the same text for its own section.
 *
 * What the table cannot check alone (cross-field rules, names) is in
 * exp_spec_check, run by the loader: robots by name or by count, ratios that sum
 * to 1, at least one stop condition, reward and algorithm either a built-in name
 * or a plugin path ending in .so, scripted demonstrations with both episodes and
 * a ratio, bc_updates only for an algorithm with a fine-tuning phase.
 *
 * Ownership: exp_spec_load_* fill a caller-owned exp_spec_t, which then owns its
 * strings and lists until exp_spec_free. */
#ifndef CORRAL_COMMON_EXPSPEC_H
#define CORRAL_COMMON_EXPSPEC_H

#include "common/config/config.h"
#include "common/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct exp_robots {
    char **names;          /* explicit robots, or none */
    size_t n_names;
    char *driver, *model;  /* filters ("" matches any) */
    char **labels;         /* every label must be present */
    size_t n_labels;
    int32_t count;         /* robots to take by filter; with names: 0 or the number of names */
} exp_robots_t;

typedef struct exp_task {
    double control_hz;      /* 0: the robot's native rate */
    int32_t episode_steps;  /* 0: the robot's default episode length */
    char *reward;           /* built-in ("task", "reach-distance") or a plugin path ending in .so */
    cfg_node_t *reward_params; /* free-form, passed to the reward plugin */
    cfg_node_t *obs_scale;     /* free-form, vector name -> factor, read by the workers */
    char *instruction;      /* "" or a text with {goal}: each episode's instruction for a multi-target robot */
    int32_t instruction_tokens; /* the instruction's tokens (the VLA's context) */
    char *camera;           /* "" or the robot camera rendered into each observation */
    int32_t image_width, image_height;
} exp_task_t;

enum { EXP_POLICY_MLP, EXP_POLICY_CNN, EXP_POLICY_FLOW, EXP_POLICY_VLA };

typedef struct exp_policy {
    int type;               /* EXP_POLICY_* */
    int32_t *hidden;        /* layer widths */
    size_t n_hidden;
    char *init;             /* a safetensors file to start from, or "" */
} exp_policy_t;

typedef struct exp_algorithm {
    char *type;             /* built-in ("sac", "rlpd", "bc", "hg-dagger", "flow-bc", "flow-rl", "vla-bc",
                               "vla") or a plugin path */
    int64_t batch_size;
    double lr, gamma, tau;
    double utd;             /* updates per environment step (update-to-data ratio) */
    int64_t warmup_steps;   /* env steps collected before the first update */
    int64_t max_staleness;  /* policy versions an actor may lag the learner */
    int64_t bc_updates;     /* flow-rl, vla: behaviour-cloning updates before RL fine-tuning */
    cfg_node_t *params;     /* free-form, passed to the algorithm plugin */
} exp_algorithm_t;

typedef struct exp_source {
    char *path;             /* a demo buffer (buffer.db) or dataset file */
    double ratio;           /* share of each batch */
} exp_source_t;

/* Demonstrations the env workers record with the robot's scripted expert. */
typedef struct exp_scripted {
    int32_t episodes;       /* per env worker, before its policy acts; 0: none */
    double noise;           /* std of the noise on the executed action (DART); the expert's is stored */
    double ratio;           /* share of each batch drawn from them */
} exp_scripted_t;

enum { EXP_SAMPLER_UNIFORM, EXP_SAMPLER_RECENT };

typedef struct exp_buffer {
    int64_t capacity;       /* newest online transitions sampled from */
    double online_ratio;    /* share of each batch from online experience */
    exp_source_t *demos;
    size_t n_demos;
    exp_scripted_t scripted;
    int sampler;            /* EXP_SAMPLER_* */
    int64_t recent_window;  /* recent: transitions of each source drawn from */
} exp_buffer_t;

enum { EXP_ACTOR_AUTO, EXP_ACTOR_CPU };

typedef struct exp_placement {
    char *learner_node;     /* "" for any */
    int actor;              /* EXP_ACTOR_* */
    bool state_shared;      /* the experiment directory is on shared storage */
} exp_placement_t;

typedef struct exp_learner {
    int32_t gpus;           /* 0: CPU */
    uint64_t gpu_memory;    /* minimum per GPU, bytes; 0: any */
} exp_learner_t;

typedef struct exp_checkpoint {
    int64_t every_updates;
    int64_t interval;       /* ns: also checkpoint at least this often (0: only by updates) */
    int32_t keep;
} exp_checkpoint_t;

typedef struct exp_stop {
    int64_t env_steps, updates;  /* 0: no limit */
    double success_rate;         /* stop once evaluation reaches it; 0: no goal */
    int64_t wall_time;           /* ns of running time; 0: no limit */
    int32_t eval_episodes;       /* episodes per evaluation */
    int64_t eval_every_updates;
} exp_stop_t;

typedef struct exp_spec {
    char *name;
    int64_t seed;
    exp_robots_t robots;
    exp_task_t task;
    exp_policy_t policy;
    exp_algorithm_t algorithm;
    exp_buffer_t buffer;
    exp_placement_t placement;
    exp_learner_t learner;
    exp_checkpoint_t checkpoint;
    exp_stop_t stop;
} exp_spec_t;

/* The table (for cfg_doc, cfg_table_check and tests). */
extern const cfg_table_t exp_spec_table;

/* Load and validate; sets are "a.b=value" overrides (`--set`). On failure *spec is
 * zeroed and err reads "FILE:LINE:COL: path: reason". */
int exp_spec_load_file(exp_spec_t *spec, const char *path, const char *const *sets, size_t nsets,
                       cr_err_t *err);
int exp_spec_load_string(exp_spec_t *spec, const char *name, const char *yaml, size_t len,
                         const char *const *sets, size_t nsets, cr_err_t *err);
void exp_spec_free(exp_spec_t *spec);

/* Whether a reward or algorithm value names a plugin (a path to a .so) rather
 * than a built-in. */
int exp_spec_is_plugin(const char *value);

/* The reference text of every field (for the README and `corral exp doc`). */
int exp_spec_doc(FILE *out);

#endif
