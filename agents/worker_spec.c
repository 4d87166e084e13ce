/* worker_spec.c - the experiment spec as the workers read it: one settings table
 * (common/config) with the same keys as the controller's experiment spec, so the
 * file `corral exp submit` accepted loads here unchanged, plus the derivation of the
 * algorithm's key/value settings from it. The learner and every actor derive the
 * settings the same way, which is what lets an actor import the learner's weights.
 * Sections only the controller reads (robots, placement, learner) are kept as
 * free-form nodes and not interpreted here. */
#include "agents/worker_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const policies[] = {"mlp", "cnn", "flow", "vla", NULL};
static const char *const samplers[] = {"uniform", "recent", NULL};

static int is_plugin_path(const char *v)
{
    size_t n = v ? strlen(v) : 0;
    return n > 3 && strcmp(v + n - 3, ".so") == 0;
}

static int check_reward(const void *v, cr_err_t *err)
{
    const char *s = *(char *const *)v;
    if (!strcmp(s, "task") || !strcmp(s, "sparse") || is_plugin_path(s) ||
        pol_builtin_find(s, CORRAL_PLUGIN_REWARD))
        return 0;
    return cr_err_set(err, CR_EINVAL, "unknown reward '%s': use task, sparse, reach-distance or the path "
                      "of a plugin ending in .so", s);
}

static int check_algorithm(const void *v, cr_err_t *err)
{
    const char *s = *(char *const *)v;
    if (is_plugin_path(s) || pol_builtin_find(s, CORRAL_PLUGIN_ALGO)) return 0;
    return cr_err_set(err, CR_EINVAL, "unknown algorithm '%s': use sac, rlpd, bc, hg-dagger or the path "
                      "of a plugin ending in .so", s);
}

static const cfg_field_t task_fields[] = {
    {CFG_DOUBLE(wk_task_t, control_hz, "0", 0, 1000, "control rate of env and actor in Hz; 0: the robot's own")},
    {CFG_INT(wk_task_t, episode_steps, "0", 0, 1000000, "steps per episode; 0: the robot's default")},
    {CFG_STRING(wk_task_t, reward, "task", "task (the robot's reward), sparse (1 on success), "
                                           "reach-distance, or a plugin path *.so"), .check = check_reward},
    {CFG_NODE(wk_task_t, reward_params, "parameters of the reward plugin; vector: NAME sets its offset "
                                        "and dims to that observation vector")},
    {CFG_NODE(wk_task_t, obs_scale, "factor per observation vector name, applied before the policy sees it")},
    {CFG_STRING(wk_task_t, instruction, "", "instruction of each episode, {goal} replaced by the episode's goal")},
    {CFG_INT(wk_task_t, instruction_tokens, "24", 2, 512, "tokens an instruction is padded to")},
    {CFG_STRING(wk_task_t, camera, "", "robot camera rendered into each observation")},
    {CFG_INT(wk_task_t, image_width, "32", 8, 1024, "camera image width, pixels")},
    {CFG_INT(wk_task_t, image_height, "32", 8, 1024, "camera image height, pixels")},
};
static const cfg_table_t task_table = {CFG_TABLE(wk_task_t, task_fields)};

static const cfg_field_t policy_fields[] = {
    {CFG_ENUM(wk_policy_t, type, "mlp", policies, "policy network")},
    {CFG_LIST(wk_policy_t, hidden, n_hidden, CFG_INT, "[256, 256]", 8, "hidden layer widths"),
     .imin = 1, .imax = 65536},
    {CFG_STRING(wk_policy_t, init, "", "safetensors weights to start from")},
};
static const cfg_table_t policy_table = {CFG_TABLE(wk_policy_t, policy_fields)};

static const cfg_field_t algorithm_fields[] = {
    {CFG_STRING(wk_algorithm_t, type, "sac", "sac, rlpd, bc, hg-dagger, or a plugin path *.so"),
     .check = check_algorithm},
    {CFG_INT(wk_algorithm_t, batch_size, "256", 1, 65536, "samples per update")},
    {CFG_DOUBLE(wk_algorithm_t, lr, "3e-4", 1e-8, 1, "learning rate")},
    {CFG_DOUBLE(wk_algorithm_t, gamma, "0.99", 0, 1, "discount")},
    {CFG_DOUBLE(wk_algorithm_t, tau, "0.005", 0, 1, "target network update rate")},
    {CFG_DOUBLE(wk_algorithm_t, utd, "1", 0.01, 64, "learner updates per environment step")},
    {CFG_INT(wk_algorithm_t, warmup_steps, "1000", 0, 1000000000, "env steps before the first update")},
    {CFG_INT(wk_algorithm_t, max_staleness, "8", 0, 1000000, "policy versions an actor may lag the learner")},
    {CFG_INT(wk_algorithm_t, bc_updates, "0", 0, 1000000000000LL, "behaviour-cloning updates before RL")},
    {CFG_NODE(wk_algorithm_t, params, "algorithm-specific parameters")},
};
static const cfg_table_t algorithm_table = {CFG_TABLE(wk_algorithm_t, algorithm_fields)};

static const cfg_field_t source_fields[] = {
    {CFG_STRING(wk_source_t, path, CFG_REQUIRED, "a demo buffer.db")},
    {CFG_DOUBLE(wk_source_t, ratio, CFG_REQUIRED, 0, 1, "share of each batch drawn from it")},
};
static const cfg_table_t source_table = {CFG_TABLE(wk_source_t, source_fields)};

static const cfg_field_t scripted_fields[] = {
    {CFG_INT(wk_scripted_t, episodes, "0", 0, 1000000, "episodes recorded with the robot's scripted expert")},
    {CFG_DOUBLE(wk_scripted_t, noise, "0.3", 0, 2, "std of the noise on the executed action")},
    {CFG_DOUBLE(wk_scripted_t, ratio, "0", 0, 1, "share of each batch drawn from them")},
};
static const cfg_table_t scripted_table = {CFG_TABLE(wk_scripted_t, scripted_fields)};

static int check_buffer(const void *obj, cr_err_t *err)
{
    const wk_buffer_t *b = obj;
    double sum = b->online_ratio + b->scripted.ratio;
    for (size_t i = 0; i < b->n_demos; i++) sum += b->demos[i].ratio;
    if (fabs(sum - 1.0) > 1e-6)
        return cr_err_set(err, CR_EINVAL, "online_ratio plus the demo ratios is %g; it must be 1", sum);
    return 0;
}

static const cfg_field_t buffer_fields[] = {
    {CFG_INT(wk_buffer_t, capacity, "1000000", 1000, 4000000000LL, "transitions kept")},
    {CFG_DOUBLE(wk_buffer_t, online_ratio, "1", 0, 1, "share of each batch from online experience")},
    {CFG_STRUCT_LIST(wk_buffer_t, demos, n_demos, &source_table, "[]", 16, "demonstration sources")},
    {CFG_STRUCT(wk_buffer_t, scripted, &scripted_table, "demonstrations recorded by the scripted expert")},
    {CFG_ENUM(wk_buffer_t, sampler, "uniform", samplers, "uniform or recent")},
    {CFG_INT(wk_buffer_t, recent_window, "100000", 1, 4000000000LL, "transitions the recent sampler draws from")},
};
static const cfg_table_t buffer_table = {CFG_TABLE(wk_buffer_t, buffer_fields), .check = check_buffer};

static const cfg_field_t checkpoint_fields[] = {
    {CFG_INT(wk_checkpoint_t, every_updates, "1000", 1, 1000000000, "checkpoint every this many updates")},
    {CFG_DURATION(wk_checkpoint_t, interval, "0", 0, 0, "and at least this often (0: only by updates)")},
    {CFG_INT(wk_checkpoint_t, keep, "3", 1, 1000, "newest checkpoints kept")},
};
static const cfg_table_t checkpoint_table = {CFG_TABLE(wk_checkpoint_t, checkpoint_fields)};

static const cfg_field_t stop_fields[] = {
    {CFG_INT(wk_stop_t, env_steps, "0", 0, 1000000000000000LL, "stop after this many environment steps")},
    {CFG_INT(wk_stop_t, updates, "0", 0, 1000000000000000LL, "stop after this many learner updates")},
    {CFG_DOUBLE(wk_stop_t, success_rate, "0", 0, 1, "stop once an evaluation reaches this success rate")},
    {CFG_DURATION(wk_stop_t, wall_time, "0", 0, 0, "stop after this much running time")},
    {CFG_INT(wk_stop_t, eval_episodes, "20", 1, 100000, "episodes per evaluation (greedy policy)")},
    {CFG_INT(wk_stop_t, eval_every_updates, "2000", 1, 1000000000, "evaluate every this many updates")},
};
static const cfg_table_t stop_table = {CFG_TABLE(wk_stop_t, stop_fields)};

static const cfg_field_t spec_fields[] = {
    {CFG_STRING(wk_spec_t, name, CFG_REQUIRED, "experiment name")},
    {CFG_INT(wk_spec_t, seed, "1", 0, 0, "seed of every random number the run draws")},
    {CFG_NODE(wk_spec_t, robots, "which robots (read by the controller)")},
    {CFG_STRUCT(wk_spec_t, task, &task_table, "control rate, episode length, reward")},
    {CFG_STRUCT(wk_spec_t, policy, &policy_table, "policy network")},
    {CFG_STRUCT(wk_spec_t, algorithm, &algorithm_table, "learning algorithm")},
    {CFG_STRUCT(wk_spec_t, buffer, &buffer_table, "replay buffer")},
    {CFG_NODE(wk_spec_t, placement, "placement hints (read by the controller)")},
    {CFG_NODE(wk_spec_t, learner, "learner resources (read by the controller)")},
    {CFG_STRUCT(wk_spec_t, checkpoint, &checkpoint_table, "checkpoint cadence")},
    {CFG_STRUCT(wk_spec_t, stop, &stop_table, "when the experiment is done")},
};
const cfg_table_t wk_spec_table = {CFG_TABLE(wk_spec_t, spec_fields)};

int wk_spec_load(wk_spec_t *s, const char *path, const char *const *sets, size_t nsets, cr_err_t *err)
{
    return cfg_load_file(&wk_spec_table, s, path, sets, nsets, err);
}

void wk_spec_free(wk_spec_t *s) { cfg_free(&wk_spec_table, s); }

/* ---- algorithm settings ------------------------------------------------------------ */

static int add_kv(wk_algo_cfg_t *c, const char *key, const char *val, cr_err_t *err)
{
    for (size_t i = 0; i < c->nkv; i++) {
        if (strcmp(c->kv[i].key, key) == 0) { /* a later setting replaces an earlier one */
            c->kv[i].value = val;
            return 0;
        }
    }
    if (c->nkv == sizeof c->kv / sizeof c->kv[0])
        return cr_err_set(err, CR_EINVAL, "algorithm.params: more than %zu settings",
                          sizeof c->kv / sizeof c->kv[0]);
    c->kv[c->nkv++] = (corral_kv_t){key, val};
    return 0;
}

/* Adds key = printf(...) with its text kept in c->store. */
static int add_fmt(wk_algo_cfg_t *c, const char *key, const char *fmt, double v, cr_err_t *err)
{
    size_t slot = c->nkv;
    if (slot + 1 >= sizeof c->store / sizeof c->store[0]) /* the last slot holds hidden */
        return cr_err_set(err, CR_EINVAL, "too many algorithm settings");
    snprintf(c->store[slot], sizeof c->store[slot], fmt, v);
    return add_kv(c, key, c->store[slot], err);
}

int wk_algo_cfg_make(const wk_spec_t *s, uint64_t seed, wk_algo_cfg_t *c, cr_err_t *err)
{
    memset(c, 0, sizeof *c);
    const char *type = s->algorithm.type;
    if (is_plugin_path(type)) {
        int rc = pol_plugin_open(type, &c->plugin, err);
        if (rc) return cr_err_wrap(err, "algorithm.type");
        if (c->plugin.desc->kind != CORRAL_PLUGIN_ALGO) {
            pol_plugin_close(&c->plugin);
            return cr_err_set(err, CR_EINVAL, "algorithm.type: %s is not an algorithm plugin", type);
        }
    } else {
        c->plugin.desc = pol_builtin_find(type, CORRAL_PLUGIN_ALGO);
        if (!c->plugin.desc) return cr_err_set(err, CR_EINVAL, "algorithm.type: unknown algorithm '%s'", type);
    }
    int rc = 0;
    /* hidden widths as "w1,w2,..." */
    char *h = c->store[sizeof c->store / sizeof c->store[0] - 1];
    h[0] = '\0';
    for (size_t i = 0; i < s->policy.n_hidden; i++) {
        size_t n = strlen(h);
        snprintf(h + n, sizeof c->store[0] - n, "%s%d", i ? "," : "", (int)s->policy.hidden[i]);
    }
    /* the VLA's size is its own (algorithm.params: dim, layers, ...), not MLP widths */
    if (s->policy.n_hidden && strncmp(type, "vla", 3)) rc = rc ? rc : add_kv(c, "hidden", h, err);
    rc = rc ? rc : add_fmt(c, "seed", "%.0f", (double)seed, err);
    int sac_like = !strcmp(type, "sac") || !strcmp(type, "rlpd");
    if (sac_like) {
        rc = rc ? rc : add_fmt(c, "gamma", "%.17g", s->algorithm.gamma, err);
        rc = rc ? rc : add_fmt(c, "tau", "%.17g", s->algorithm.tau, err);
        rc = rc ? rc : add_fmt(c, "actor_lr", "%.17g", s->algorithm.lr, err);
        rc = rc ? rc : add_fmt(c, "critic_lr", "%.17g", s->algorithm.lr, err);
        rc = rc ? rc : add_fmt(c, "alpha_lr", "%.17g", s->algorithm.lr, err);
    } else if (!is_plugin_path(type)) {
        rc = rc ? rc : add_fmt(c, "lr", "%.17g", s->algorithm.lr, err);
    }
    /* the fine-tuning phase, the instruction's context and start weights of the
     * generative policies */
    int finetune = !strcmp(type, "flow-rl") || !strcmp(type, "vla"), vla = !strncmp(type, "vla", 3);
    if (finetune || (is_plugin_path(type) && s->algorithm.bc_updates))
        rc = rc ? rc : add_fmt(c, "bc_updates", "%.0f", (double)s->algorithm.bc_updates, err);
    if (finetune) rc = rc ? rc : add_fmt(c, "gamma", "%.17g", s->algorithm.gamma, err);
    if (vla) rc = rc ? rc : add_fmt(c, "ctx", "%.0f", (double)s->task.instruction_tokens, err);
    if (vla && s->policy.init[0]) rc = rc ? rc : add_kv(c, "init", s->policy.init, err);
    const cfg_node_t *p = s->algorithm.params;
    if (!rc && p && p->kind == CFG_NODE_MAP) {
        for (size_t i = 0; i < p->count && !rc; i++) {
            const cfg_node_t *v = p->items[i];
            if (v->kind != CFG_NODE_SCALAR) {
                rc = cr_err_set(err, CR_EINVAL, "%s:%d:%d: %s: expected a scalar value", v->source, v->line,
                                v->col, v->path);
                break;
            }
            rc = add_kv(c, v->key, v->text, err);
        }
    } else if (!rc && p && p->kind != CFG_NODE_MAP && !(p->kind == CFG_NODE_SCALAR && p->is_null)) {
        rc = cr_err_set(err, CR_EINVAL, "%s:%d:%d: algorithm.params: expected a map of settings", p->source,
                        p->line, p->col);
    }
    if (rc) wk_algo_cfg_free(c);
    return rc;
}

void wk_algo_cfg_free(wk_algo_cfg_t *c)
{
    if (c->plugin.dl) pol_plugin_close(&c->plugin);
    c->plugin.desc = NULL;
    c->plugin.dl = NULL;
}
