/* expspec.c - the settings tables of the experiment YAML and their cross-field
 * checks; see expspec.h. Field names are the YAML keys; each table's doc strings
 * are the reference text printed by exp_spec_doc. */
#include "common/expspec/expspec.h"
#include "common/id.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int exp_spec_is_plugin(const char *v)
{
    size_t n = v ? strlen(v) : 0;
    return n > 3 && strcmp(v + n - 3, ".so") == 0;
}

static int in_list(const char *v, const char *const *names)
{
    for (size_t i = 0; names[i]; i++)
        if (strcmp(v, names[i]) == 0) return 1;
    return 0;
}

static void join(const char *const *names, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; names[i]; i++) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s%s", i ? ", " : "", names[i]);
    }
}

static int check_name(const void *v, cr_err_t *err)
{
    const char *s = *(char *const *)v;
    if (!s || !cr_name_valid(s))
        return cr_err_set(err, CR_EINVAL, "'%s' is not a valid name: use 1-63 of a-z 0-9 _ -, "
                          "starting with a letter or digit", s ? s : "");
    return 0;
}

/* A robot label as the registry takes it: "key=value" or a tag, 1-63 printable
 * characters without spaces, quotes or commas. */
static int check_label(const void *v, cr_err_t *err)
{
    const char *s = *(char *const *)v;
    size_t len = s ? strlen(s) : 0;
    int ok = len > 0 && len < 64;
    for (const unsigned char *p = (const unsigned char *)s; ok && *p; p++)
        ok = *p > ' ' && *p < 0x7f && *p != ',' && *p != '"' && *p != '\'' && *p != '\\';
    if (!ok)
        return cr_err_set(err, CR_EINVAL, "'%s' is not a label: use key=value or a tag, 1-63 printable "
                          "characters without spaces, quotes or commas", s ? s : "");
    return 0;
}

static int check_optional_name(const void *v, cr_err_t *err)
{
    const char *s = *(char *const *)v;
    return s && *s ? check_name(v, err) : 0;
}

static int check_builtin_or_plugin(const char *s, const char *const *builtins, const char *what, cr_err_t *err)
{
    if (exp_spec_is_plugin(s) || in_list(s, builtins)) return 0;
    char names[128];
    join(builtins, names, sizeof names);
    return cr_err_set(err, CR_EINVAL, "unknown %s '%s': use a built-in (%s) or the path of a plugin ending in .so",
                      what, s, names);
}

static const char *const rewards[] = {"task", "sparse", "reach-distance", NULL};
static const char *const algorithms[] = {"sac", "rlpd", "bc", "hg-dagger", "flow-bc", "flow-rl", "vla-bc", "vla",
                                         NULL};
static const char *const samplers[] = {"uniform", "recent", NULL};
static const char *const policies[] = {"mlp", "cnn", "flow", "vla", NULL};
static const char *const actor_modes[] = {"auto", "cpu", NULL};

static int check_instruction(const void *v, cr_err_t *err)
{
    const char *s = *(char *const *)v;
    if (s && *s && !strstr(s, "{goal}"))
        return cr_err_set(err, CR_EINVAL, "instruction '%s' does not name the goal: put {goal} where the episode's "
                          "target goes", s);
    return 0;
}

static int check_reward(const void *v, cr_err_t *err)
{
    return check_builtin_or_plugin(*(char *const *)v, rewards, "reward", err);
}

static int check_algorithm(const void *v, cr_err_t *err)
{
    return check_builtin_or_plugin(*(char *const *)v, algorithms, "algorithm", err);
}

/* ---- robots ------------------------------------------------------------------ */

static int check_robots(const void *obj, cr_err_t *err)
{
    const exp_robots_t *r = obj;
    for (size_t i = 0; i < r->n_names; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->names[i], r->names[j]) == 0)
                return cr_err_set(err, CR_EINVAL, "robot %s is named twice", r->names[i]);
    if (r->n_names > 0) {
        if (r->count != 0 && (size_t)r->count != r->n_names)
            return cr_err_set(err, CR_EINVAL, "count is %d but %zu robots are named; drop count or make them agree",
                              (int)r->count, r->n_names);
        if (*r->driver || *r->model || r->n_labels)
            return cr_err_set(err, CR_EINVAL, "name the robots or filter them (driver, model, labels), not both");
        return 0;
    }
    if (r->count < 1)
        return cr_err_set(err, CR_EINVAL, "choose robots: list names, or set count (with driver, model or labels)");
    return 0;
}

static const cfg_field_t robots_fields[] = {
    {CFG_LIST(exp_robots_t, names, n_names, CFG_STRING, "[]", 256, "robots by name (or select by filter and count)"),
     .check = check_name},
    {CFG_STRING(exp_robots_t, driver, "", "only robots of this driver (mujoco, dynamixel, remote, mock)")},
    {CFG_STRING(exp_robots_t, model, "", "only robots of this model")},
    {CFG_LIST(exp_robots_t, labels, n_labels, CFG_STRING, "[]", 16,
              "only robots with every one of these labels (key=value or a tag)"),
     .check = check_label},
    {CFG_INT(exp_robots_t, count, "0", 0, 256, "how many matching robots to use")},
};
static const cfg_table_t robots_table = {CFG_TABLE(exp_robots_t, robots_fields), .check = check_robots};

/* ---- task, policy, algorithm ------------------------------------------------------ */

static const cfg_field_t task_fields[] = {
    {CFG_DOUBLE(exp_task_t, control_hz, "0", 0, 1000, "control rate of env and actor in Hz; 0: the robot's own")},
    {CFG_INT(exp_task_t, episode_steps, "0", 0, 1000000, "steps per episode; 0: the robot's default")},
    {CFG_STRING(exp_task_t, reward, "task", "reward: task (the robot's own task reward), sparse (1 on "
                                            "success), reach-distance, or a plugin path *.so"),
     .check = check_reward},
    {CFG_NODE(exp_task_t, reward_params, "parameters passed to a reward plugin")},
    {CFG_NODE(exp_task_t, obs_scale, "factor per observation vector name, applied before the policy sees it")},
    {CFG_STRING(exp_task_t, instruction, "", "instruction of each episode on a multi-target robot, {goal} "
                                             "replaced by the episode's goal (\"reach the {goal} target\"); its "
                                             "tokens end each observation (for vla, vla-bc)"),
     .check = check_instruction},
    {CFG_INT(exp_task_t, instruction_tokens, "24", 2, 512, "tokens an instruction is padded to (the VLA's "
                                                           "context; a longer instruction is refused)")},
    {CFG_STRING(exp_task_t, camera, "", "robot camera rendered into each observation, stored as uint8 "
                                        "images in the buffer (\"\": none)")},
    {CFG_INT(exp_task_t, image_width, "32", 8, 1024, "camera image width, pixels")},
    {CFG_INT(exp_task_t, image_height, "32", 8, 1024, "camera image height, pixels")},
};
static const cfg_table_t task_table = {CFG_TABLE(exp_task_t, task_fields)};

static const cfg_field_t policy_fields[] = {
    {CFG_ENUM(exp_policy_t, type, "mlp", policies, "policy network")},
    {CFG_LIST(exp_policy_t, hidden, n_hidden, CFG_INT, "[256, 256]", 8, "hidden layer widths"),
     .imin = 1, .imax = 65536},
    {CFG_STRING(exp_policy_t, init, "", "safetensors weights to start from")},
};
static const cfg_table_t policy_table = {CFG_TABLE(exp_policy_t, policy_fields)};

static const cfg_field_t algorithm_fields[] = {
    {CFG_STRING(exp_algorithm_t, type, "sac", "sac, rlpd, bc, hg-dagger, flow-bc, flow-rl, vla-bc, vla, or a "
                                              "plugin path *.so"),
     .check = check_algorithm},
    {CFG_INT(exp_algorithm_t, batch_size, "256", 1, 65536, "transitions per update (with params.horizon H: "
                                                        "batch_size / H chunks of H consecutive ones)")},
    {CFG_DOUBLE(exp_algorithm_t, lr, "3e-4", 1e-8, 1, "learning rate")},
    {CFG_DOUBLE(exp_algorithm_t, gamma, "0.99", 0, 1, "discount")},
    {CFG_DOUBLE(exp_algorithm_t, tau, "0.005", 0, 1, "target network update rate")},
    {CFG_DOUBLE(exp_algorithm_t, utd, "1", 0.01, 64, "learner updates per environment step (update-to-data ratio)")},
    {CFG_INT(exp_algorithm_t, warmup_steps, "1000", 0, 1000000000, "env steps before the first update")},
    {CFG_INT(exp_algorithm_t, max_staleness, "8", 0, 1000000, "policy versions an actor may lag the learner")},
    {CFG_INT(exp_algorithm_t, bc_updates, "0", 0, 1000000000000LL, "flow-rl, vla: behaviour-cloning updates on "
                                                                      "the demonstrations before RL fine-tuning")},
    {CFG_NODE(exp_algorithm_t, params, "algorithm-specific parameters (critic_ratio, alpha, ...)")},
};

static int check_algorithm_section(const void *obj, cr_err_t *err)
{
    const exp_algorithm_t *a = obj;
    if (a->bc_updates && !exp_spec_is_plugin(a->type) && strcmp(a->type, "flow-rl") && strcmp(a->type, "vla"))
        return cr_err_set(err, CR_EINVAL, "bc_updates is for an algorithm with a fine-tuning phase (flow-rl, vla), "
                          "not %s", a->type);
    /* an algorithm acting in chunks learns from batches of whole chunks */
    const cfg_node_t *h = a->params ? cfg_node_get(a->params, "horizon") : NULL;
    char *end = NULL;
    long hz = h && h->kind == CFG_NODE_SCALAR ? strtol(h->text, &end, 10) : 1;
    if (end && end != h->text && !*end && hz > 1 && a->batch_size % hz)
        return cr_err_set(err, CR_EINVAL, "batch_size %lld is not a multiple of params.horizon %ld: a batch holds "
                          "whole chunks of that many consecutive transitions", (long long)a->batch_size, hz);
    return 0;
}
static const cfg_table_t algorithm_table = {CFG_TABLE(exp_algorithm_t, algorithm_fields),
                                            .check = check_algorithm_section};

/* ---- buffer ------------------------------------------------------------------------ */

static const cfg_field_t source_fields[] = {
    {CFG_STRING(exp_source_t, path, CFG_REQUIRED, "a demo buffer.db or dataset")},
    {CFG_DOUBLE(exp_source_t, ratio, CFG_REQUIRED, 0, 1, "share of each batch drawn from it")},
};
static const cfg_table_t source_table = {CFG_TABLE(exp_source_t, source_fields)};

static int check_scripted(const void *obj, cr_err_t *err)
{
    const exp_scripted_t *s = obj;
    if ((s->episodes > 0) != (s->ratio > 0))
        return cr_err_set(err, CR_EINVAL, "episodes %d with ratio %g: set both to record scripted demonstrations "
                          "and sample them, or neither", (int)s->episodes, s->ratio);
    return 0;
}

static const cfg_field_t scripted_fields[] = {
    {CFG_INT(exp_scripted_t, episodes, "0", 0, 1000000, "episodes each env worker records with the robot's "
                                                       "scripted expert before its policy acts (counted in the "
                                                       "buffer: a restarted env records only the missing ones)")},
    {CFG_DOUBLE(exp_scripted_t, noise, "0.3", 0, 2, "std of the noise added to the executed action (DART); the "
                                                    "expert's own action is stored")},
    {CFG_DOUBLE(exp_scripted_t, ratio, "0", 0, 1, "share of each batch drawn from them")},
};
static const cfg_table_t scripted_table = {CFG_TABLE(exp_scripted_t, scripted_fields), .check = check_scripted};

static int check_buffer(const void *obj, cr_err_t *err)
{
    const exp_buffer_t *b = obj;
    double sum = b->online_ratio + b->scripted.ratio;
    for (size_t i = 0; i < b->n_demos; i++) sum += b->demos[i].ratio;
    if (fabs(sum - 1.0) > 1e-6)
        return cr_err_set(err, CR_EINVAL, "online_ratio plus the demo ratios is %g; it must be 1", sum);
    return 0;
}

static const cfg_field_t buffer_fields[] = {
    {CFG_INT(exp_buffer_t, capacity, "1000000", 1000, 4000000000LL, "newest online transitions sampled from (the database keeps every step)")},
    {CFG_DOUBLE(exp_buffer_t, online_ratio, "1", 0, 1, "share of each batch from online experience")},
    {CFG_STRUCT_LIST(exp_buffer_t, demos, n_demos, &source_table, "[]", 16, "demonstration sources")},
    {CFG_STRUCT(exp_buffer_t, scripted, &scripted_table, "demonstrations recorded by the robot's scripted expert")},
    {CFG_ENUM(exp_buffer_t, sampler, "uniform", samplers, "uniform over everything kept, or recent: uniform over "
                                                         "the newest recent_window of each source")},
    {CFG_INT(exp_buffer_t, recent_window, "100000", 1, 4000000000LL, "transitions of each source the recent "
                                                                     "sampler draws from")},
};
static const cfg_table_t buffer_table = {CFG_TABLE(exp_buffer_t, buffer_fields), .check = check_buffer};

/* ---- placement, learner, checkpoint, stop ------------------------------------------ */

static const cfg_field_t placement_fields[] = {
    {CFG_STRING(exp_placement_t, learner_node, "", "run the learner and buffer on this node"),
     .check = check_optional_name},
    {CFG_ENUM(exp_placement_t, actor, "auto", actor_modes,
              "auto: a GPU on the robot's node, else the nearest, else CPU; cpu: the robot node's CPU")},
    {CFG_BOOL(exp_placement_t, state_shared, "false",
              "the experiment directory is on shared storage, so the learner may move when its node is lost")},
};
static const cfg_table_t placement_table = {CFG_TABLE(exp_placement_t, placement_fields)};

static const cfg_field_t learner_fields[] = {
    {CFG_INT(exp_learner_t, gpus, "0", 0, 16, "whole GPUs for the learner; 0: CPU")},
    {CFG_SIZE(exp_learner_t, gpu_memory, "0", 0, 0, "minimum memory of each learner GPU (e.g. 40GiB)")},
};
static const cfg_table_t learner_table = {CFG_TABLE(exp_learner_t, learner_fields)};

static const cfg_field_t checkpoint_fields[] = {
    {CFG_INT(exp_checkpoint_t, every_updates, "1000", 1, 1000000000, "checkpoint every this many updates")},
    {CFG_DURATION(exp_checkpoint_t, interval, "0", 0, 0, "and at least this often (0: only by updates)")},
    {CFG_INT(exp_checkpoint_t, keep, "3", 1, 1000, "newest checkpoints kept")},
};
static const cfg_table_t checkpoint_table = {CFG_TABLE(exp_checkpoint_t, checkpoint_fields)};

static int check_stop(const void *obj, cr_err_t *err)
{
    const exp_stop_t *s = obj;
    if (!s->env_steps && !s->updates && s->success_rate <= 0 && !s->wall_time)
        return cr_err_set(err, CR_EINVAL, "set a stop condition: env_steps, updates, success_rate or wall_time");
    return 0;
}

static const cfg_field_t stop_fields[] = {
    {CFG_INT(exp_stop_t, env_steps, "0", 0, 1000000000000000LL, "stop after this many environment steps (0: no limit)")},
    {CFG_INT(exp_stop_t, updates, "0", 0, 1000000000000000LL, "stop after this many learner updates (0: no limit)")},
    {CFG_DOUBLE(exp_stop_t, success_rate, "0", 0, 1, "stop once an evaluation reaches this success rate")},
    {CFG_DURATION(exp_stop_t, wall_time, "0", 0, 0, "stop after this much running time (e.g. 10m)")},
    {CFG_INT(exp_stop_t, eval_episodes, "20", 1, 100000, "episodes per evaluation (greedy policy)")},
    {CFG_INT(exp_stop_t, eval_every_updates, "2000", 1, 1000000000, "evaluate every this many updates")},
};
static const cfg_table_t stop_table = {CFG_TABLE(exp_stop_t, stop_fields), .check = check_stop};

static const cfg_field_t spec_fields[] = {
    {CFG_STRING(exp_spec_t, name, CFG_REQUIRED, "experiment name, unique in the cluster"), .check = check_name},
    {CFG_INT(exp_spec_t, seed, "1", 0, 0, "seed of every random number the run draws")},
    {CFG_STRUCT(exp_spec_t, robots, &robots_table, "which robots")},
    {CFG_STRUCT(exp_spec_t, task, &task_table, "control rate, episode length, reward")},
    {CFG_STRUCT(exp_spec_t, policy, &policy_table, "policy network")},
    {CFG_STRUCT(exp_spec_t, algorithm, &algorithm_table, "learning algorithm and its hyper-parameters")},
    {CFG_STRUCT(exp_spec_t, buffer, &buffer_table, "replay buffer")},
    {CFG_STRUCT(exp_spec_t, placement, &placement_table, "placement hints")},
    {CFG_STRUCT(exp_spec_t, learner, &learner_table, "learner resources")},
    {CFG_STRUCT(exp_spec_t, checkpoint, &checkpoint_table, "checkpoint cadence")},
    {CFG_STRUCT(exp_spec_t, stop, &stop_table, "when the experiment is done")},
};
const cfg_table_t exp_spec_table = {CFG_TABLE(exp_spec_t, spec_fields)};

int exp_spec_load_file(exp_spec_t *spec, const char *path, const char *const *sets, size_t nsets, cr_err_t *err)
{
    return cfg_load_file(&exp_spec_table, spec, path, sets, nsets, err);
}

int exp_spec_load_string(exp_spec_t *spec, const char *name, const char *yaml, size_t len,
                         const char *const *sets, size_t nsets, cr_err_t *err)
{
    return cfg_load_string(&exp_spec_table, spec, name, yaml, len, sets, nsets, err);
}

void exp_spec_free(exp_spec_t *spec) { cfg_free(&exp_spec_table, spec); }

int exp_spec_doc(FILE *out) { return cfg_doc(&exp_spec_table, out); }
