/* algo.h - what the built-in algorithms share (private to policies/): the
 * settings table that turns key/value configuration into a struct with clear
 * errors, checkpoint and policy-blob helpers over parameter arenas, and the
 * plugin descriptors each algorithm file exports. */
#ifndef CORRAL_POLICIES_ALGO_H
#define CORRAL_POLICIES_ALGO_H

#include "policies/policies.h"
#include "policies/models/models.h"

#include <stddef.h>

/* ---- settings ---- */
typedef enum { SET_FLOAT, SET_INT, SET_BOOL, SET_STR } set_type_t;

typedef struct pol_setting {
    const char *name;
    set_type_t type;
    const char *def;          /* default, parsed like a user value */
    double min, max;          /* for numbers */
    size_t off;               /* offset into the config struct */
    const char *help;
} pol_setting_t;

#define SET_STR_MAX 64

/* Applies defaults, then cfg (unknown key, bad number or out-of-range value is
 * CR_EINVAL naming the key and the accepted range). `defaults` (may be NULL)
 * overrides table defaults, for presets such as rlpd over the sac table. */
int pol_settings_apply(const pol_setting_t *tab, void *out, const corral_kv_t *defaults,
                       size_t ndefaults, const corral_kv_t *cfg, size_t ncfg, cr_err_t *err);
/* "256,256" -> widths; returns the count or CR_EINVAL. */
int pol_parse_widths(const char *s, int *w, int max, cr_err_t *err);

/* ---- checkpoint / blob helpers (host staging through the backend) ---- */
typedef struct pol_io_arena {
    const char *prefix;       /* tensor name prefix, "critic" -> "critic.q0.0.weight" */
    nn_params_t *p;
} pol_io_arena_t;

typedef struct pol_io_adam {
    const char *name;         /* "optim.actor" -> optim.actor.m / .v */
    nn_adam_t *o;
} pol_io_adam_t;

/* Adds arena values and optimiser moments to w; host copies are appended to
 * *keep (freed by the caller with pol_io_keep_free after the write). */
typedef struct pol_io_keep {
    void **ptr;
    int n, cap;
} pol_io_keep_t;

int pol_io_add_arena(nn_st_writer_t *w, pol_io_keep_t *keep, const pol_io_arena_t *a, cr_err_t *err);
int pol_io_add_adam(nn_st_writer_t *w, pol_io_keep_t *keep, const pol_io_adam_t *o,
                    const nn_backend_t *be, cr_err_t *err);
void pol_io_keep_free(pol_io_keep_t *keep);
/* check == 1: verify presence, dtype and size only; check == 0: copy in. */
int pol_io_read_arena(const nn_st_t *st, const pol_io_arena_t *a, int check, cr_err_t *err);
int pol_io_read_adam(const nn_st_t *st, const pol_io_adam_t *o, const nn_backend_t *be, int check,
                     cr_err_t *err);

/* ---- an algorithm's whole state as safetensors (state.c) ----
 * What the built-in algorithms share for export/import/save/load: the metadata
 * (format, version, algo, and keys describing the shapes, such as "shape" or
 * "hidden" and "spec"), the policy arenas a blob carries, the arenas and
 * optimiser moments a checkpoint carries, and a free-form "state" string of
 * counters the algorithm formats and parses itself. Reading checks everything
 * before it changes anything. */
#define POL_STATE_MAX 12
#define POL_STATE_KEYS 2
typedef struct pol_state_key {
    const char *name;                /* metadata key ("shape") */
    const char *what;                /* what its value lists, for errors ("obs,act,hidden") */
    char value[256];                 /* must be equal to load or import */
} pol_state_key_t;

typedef struct pol_state {
    const char *algo, *version;
    const char *algo_alias;          /* another algorithm whose files have this layout; "*": any whose
                                        keys match (NULL: none) */
    pol_state_key_t keys[POL_STATE_KEYS];
    int nkeys;
    pol_io_arena_t policy[POL_STATE_MAX];
    int npolicy;
    pol_io_arena_t arenas[POL_STATE_MAX];
    int narenas;
    pol_io_adam_t adams[POL_STATE_MAX];
    int nadams;
    const nn_backend_t *be;
} pol_state_t;

/* Adds a key that files must match (what: its label in errors; fmt: its value). */
void pol_state_key(pol_state_t *s, const char *name, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A policy blob into buf[cap] (the plugin ABI's export_policy contract: ETOOBIG
 * with *len set when cap is short); `extra` (may be NULL) goes in as metadata. */
int pol_state_export(const pol_state_t *s, void *buf, size_t cap, size_t *len, const char *extra, cr_err_t *err);
/* Reads a blob; *extra (cap bytes, may be NULL) receives its extra metadata ("" when none). */
int pol_state_import(const pol_state_t *s, const void *blob, size_t len, char *extra, size_t cap, cr_err_t *err);
/* Checkpoint with the state string; atomic. */
int pol_state_save(const pol_state_t *s, const char *path, const char *state, cr_err_t *err);
/* Loads a checkpoint; parse(ctx, state) validates and applies the state string
 * (0, or CR_ECORRUPT) after every tensor checked and before any is copied. */
int pol_state_load(const pol_state_t *s, const char *path, int (*parse)(void *ctx, const char *state), void *ctx,
                   cr_err_t *err);

/* The end of a gradient step every built-in shares: an optimiser step unless the
 * loss or the gradient is not finite (then nothing changes and the skip is counted
 * and logged), and the usual metrics (loss under loss_name, grad_norm, updates,
 * skipped_nan, skipped_now). Returns 1 when the step was taken. */
int pol_step_finish(const char *algo, double loss, nn_adam_t *opt, nn_params_t *p, uint64_t *updates,
                    uint64_t *skipped, const char *loss_name, corral_metrics_t *m);

/* rng <-> "hex,hex,hex,hex" */
void pol_rng_format(const nn_rng_t *r, char *buf, size_t len);
int pol_rng_parse(nn_rng_t *r, const char *s);

/* Logs a warning when the skip counter moved from `before` to `now`: for the
 * first skip and then at each power of two, so a diverging run is visible in the
 * log without flooding it (every skip is in the metrics). */
void pol_warn_skips(const char *algo, uint64_t before, uint64_t now);

/* corral_err_t and cr_err_t share a layout; these make the crossing explicit. */
static inline cr_err_t *pol_err(corral_err_t *e) { return (cr_err_t *)(void *)e; }

/* ---- descriptors of the built-ins ---- */
extern const corral_plugin_t pol_sac_plugin;
extern const corral_plugin_t pol_rlpd_plugin;
extern const corral_plugin_t pol_bc_plugin;
extern const corral_plugin_t pol_dagger_plugin;
extern const corral_plugin_t pol_reach_reward_plugin;
extern const corral_plugin_t pol_flow_bc_plugin;   /* flow_algo.c */
extern const corral_plugin_t pol_flow_rl_plugin;   /* flow_algo.c */
extern const corral_plugin_t pol_vla_bc_plugin;    /* vla_algo.c */
extern const corral_plugin_t pol_vla_plugin;       /* vla_algo.c */

#endif
