/* worker_int.h - what the worker files of agents/ share and no one else sees: the
 * algorithm settings taken from the experiment spec, the messages on the experiment's channels, the
 * learner's location file, checkpoints, status files, and the algorithm settings
 * both roles derive from the spec (so learner and actors build the same network). */
#ifndef CORRAL_AGENTS_WORKER_INT_H
#define CORRAL_AGENTS_WORKER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agents/worker.h"
#include "channels/channel.h"
#include "common/rpc/rpc.h"
#include "common/config/config.h"
#include "common/expspec/expspec.h"
#include "policies/policies.h"

/* ---- spec ------------------------------------------------------------------------
 * Workers read the experiment spec the controller validated (common/expspec:
 * exp_spec_t, loaded with the same overrides), so one file and one settings table
 * serve both. They use its task (with task.obs_scale, a map from observation
 * vector name to a factor applied before the policy and the buffer see it),
 * policy, algorithm, buffer, checkpoint and stop sections; robots.driver and
 * robots.model stand in for --robot-driver and --robot-model. */

/* The algorithm (built-in or plugin) and its settings, derived from the spec:
 * hidden, seed, gamma, tau, lr (as actor/critic/alpha rates for sac and rlpd), then
 * algorithm.params verbatim (they win over the derived ones). */
typedef struct wk_algo_cfg {
    pol_plugin_t plugin;      /* dl set when loaded from a .so */
    corral_kv_t kv[64];
    size_t nkv;
    char store[64][64];       /* backing text of derived values */
} wk_algo_cfg_t;

int wk_algo_cfg_make(const exp_spec_t *s, uint64_t seed, wk_algo_cfg_t *out, cr_err_t *err);
void wk_algo_cfg_free(wk_algo_cfg_t *c);

/* ---- messages (worker_msg.c) ------------------------------------------------------
 * Env -> learner on "transitions": HELLO (first on every new route), STEP, EVAL.
 * Learner -> env on the env's "ctl" channel: ACK. Weights travel by weight sync on
 * the env's "weights" channel. Encoded little-endian with a magic and a type;
 * decoding checks every length and refuses what does not fit. */
enum { WK_MSG_HELLO = 1, WK_MSG_STEP = 2, WK_MSG_EVAL = 3, WK_MSG_ACK = 4 };

#define WK_STR_MAX 128
#define WK_MAX_OBS 4096
#define WK_MAX_ACT 64
#define WK_MAX_IMG (4u << 20)   /* bytes of one camera image in a STEP */

typedef struct wk_hello {
    uint32_t index;           /* env worker index */
    uint64_t producer;        /* the env's transition producer id */
    uint64_t version;         /* policy version the env holds */
    uint64_t acked;           /* last seq the env saw acknowledged */
    uint64_t hub;             /* the env hub's id */
    int32_t inbound;
    int32_t obs_dim, act_dim;
    char node[WK_STR_MAX], addr[WK_STR_MAX], robot[WK_STR_MAX];
    int32_t img_c, img_h, img_w;  /* the camera image every STEP carries (uint8 HWC); 0: none */
} wk_hello_t;

typedef struct wk_step {
    uint64_t producer, seq, episode;
    int64_t policy_version;
    float reward;
    uint8_t final, done, success, truncated;
    int32_t obs_dim, act_dim;  /* act_dim 0 for a final row */
    const float *obs;          /* encode: borrowed; decode: into the caller's arrays */
    const float *action;
    uint8_t demo;              /* the episode is a scripted demonstration */
    uint32_t img_bytes;        /* camera image (uint8 HWC), 0 without one */
    const uint8_t *image;      /* encode: borrowed; decode: points into the message */
} wk_step_t;

typedef struct wk_eval {
    uint64_t producer;
    uint64_t round;            /* updates / eval_every_updates at the evaluation */
    int64_t version;
    uint32_t episodes, successes;
    double mean_return;
} wk_eval_t;

typedef struct wk_ack {
    uint64_t producer;
    uint64_t acked;            /* every seq <= acked is committed in the buffer */
    uint64_t learner;          /* the learner hub's id (changes on restart) */
    int64_t version;           /* newest policy version published */
    int64_t updates, env_steps;
    int64_t demo_episodes;     /* ended scripted demonstrations of the env's robot in the
                                * buffer when the env said HELLO (-1: not counted) */
    int32_t stop;              /* 1: the experiment is done; 2: refused */
} wk_ack_t;

/* Encoders write into buf[cap] and return the length, or 0 when cap is too small. */
size_t wk_hello_encode(const wk_hello_t *m, void *buf, size_t cap);
size_t wk_step_encode(const wk_step_t *m, void *buf, size_t cap);
size_t wk_eval_encode(const wk_eval_t *m, void *buf, size_t cap);
size_t wk_ack_encode(const wk_ack_t *m, void *buf, size_t cap);
/* The type of a message, or CR_EPROTO (message in err) for a malformed one. */
int wk_msg_type(const void *buf, size_t len, cr_err_t *err);
int wk_hello_decode(const void *buf, size_t len, wk_hello_t *m, cr_err_t *err);
/* obs[max_obs] and act[max_act] receive the vectors (m->obs/action point at them). */
int wk_step_decode(const void *buf, size_t len, wk_step_t *m, float *obs, int max_obs, float *act,
                   int max_act, cr_err_t *err);
int wk_eval_decode(const void *buf, size_t len, wk_eval_t *m, cr_err_t *err);
int wk_ack_decode(const void *buf, size_t len, wk_ack_t *m, cr_err_t *err);

/* ---- the learner's location (worker_where.c) ------------------------------------- */
typedef struct wk_where {
    char node[WK_STR_MAX], addr[WK_STR_MAX];
    uint64_t process;
    int inbound;
} wk_where_t;

/* Atomically writes / reads DIR/learner.where. read: CR_ENOENT when absent. */
int wk_where_write(const char *dir, const wk_where_t *w, cr_err_t *err);
int wk_where_read(const char *dir, wk_where_t *w, cr_err_t *err);
/* "NODE@HOST:PORT" for a learner on another node (process unknown: 0). */
int wk_where_parse(const char *s, wk_where_t *w, cr_err_t *err);

/* ---- checkpoints (worker_ckpt.c) ---------------------------------------------------
 * A common/durable checkpoint store in DIR: checkpoint N (the update counter) holds
 * algo.safetensors; its completion marker holds the counters. A checkpoint without
 * a complete marker, or whose file does not match it, is ignored. */
typedef struct wk_counters {
    int64_t updates, version, env_steps, episodes;
} wk_counters_t;

int wk_ckpt_write(const char *dir, pol_algo_t *a, const wk_counters_t *c, int keep, cr_err_t *err);
/* Newest complete checkpoint: its directory (path[cap]) and counters; CR_ENOENT when none. */
int wk_ckpt_newest(const char *dir, char *path, size_t cap, wk_counters_t *c, cr_err_t *err);

/* ---- files (worker_status.c) ---------------------------------------------------- */
/* mkdir -p. */
int wk_mkdirs(const char *path, cr_err_t *err);
/* Replaces path with text: temporary file, rename (fsync when durable). */
int wk_write_file(const char *path, const char *text, int durable, cr_err_t *err);

/* ---- the hub (worker.c) ---------------------------------------------------------- */
/* The hub options of a worker from its flags (see agent_worker_opts_t.controller):
 * listen (the role's own choice, or NULL; a learner passes the address it was placed
 * at), relay, directory and their credentials. ho points into *rpc and *listen_buf,
 * which must outlive ch_hub_create. CR_EINVAL names a bad flag. */
int wk_hub_opts(const agent_worker_opts_t *o, const char *listen, ch_hub_opts_t *ho, struct rpc_opts *rpc,
                char *listen_buf, size_t cap, cr_err_t *err);

/* ---- roles ------------------------------------------------------------------------ */
int wk_learner_run(const agent_worker_opts_t *o, const exp_spec_t *s, volatile sig_atomic_t *stop,
                   cr_err_t *err);
int wk_env_run(const agent_worker_opts_t *o, const exp_spec_t *s, volatile sig_atomic_t *stop,
               cr_err_t *err);

#endif
