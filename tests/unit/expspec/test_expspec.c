/* test_expspec.c - the experiment YAML: the shipped files load, overrides apply,
 * and every kind of mistake is refused with a message that names the place and
 * says what to change. */
#include "tests/harness.h"
#include "common/expspec/expspec.h"

#include <dirent.h>
#include <stdlib.h>

static const char base[] =
    "name: t1\n"
    "robots:\n"
    "  driver: mujoco\n"
    "  count: 2\n"
    "stop:\n"
    "  updates: 100\n";

/* Loads base plus extra YAML text and overrides; returns the code, spec freed. */
static int load(const char *extra, const char *set, cr_err_t *err)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml, "%s%s", base, extra ? extra : "");
    exp_spec_t spec;
    const char *sets[] = {set};
    int rc = exp_spec_load_string(&spec, "t.yaml", yaml, strlen(yaml), sets, set ? 1 : 0, err);
    if (rc == 0) exp_spec_free(&spec);
    return rc;
}

static void test_table_is_consistent(void)
{
    cr_err_t err = {0};
    ASSERT_OK(cfg_table_check(&exp_spec_table, &err), &err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ASSERT_OK(exp_spec_doc(f), &err);
    fclose(f);
    ASSERT_TRUE(strstr(text, "algorithm.utd") != NULL);
    ASSERT_TRUE(strstr(text, "buffer.demos.N.ratio") != NULL);
    /* The reference in configs/experiments/README.md is this text, verbatim. */
    FILE *rf = fopen(test_source_path("configs/experiments/README.md"), "r");
    ASSERT_TRUE(rf != NULL);
    char readme[32768];
    size_t n = fread(readme, 1, sizeof readme - 1, rf);
    fclose(rf);
    readme[n] = '\0';
    if (!strstr(readme, text))
        fprintf(stderr, "  configs/experiments/README.md is out of date: regenerate its field list\n");
    ASSERT_TRUE(strstr(readme, text) != NULL);
    free(text);
}

static void test_reach_sac(void)
{
    exp_spec_t s;
    cr_err_t err = {0};
    ASSERT_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), NULL, 0, &err), &err);
    ASSERT_STR_EQ(s.name, "reach-sac");
    ASSERT_STR_EQ(s.robots.driver, "mujoco");
    ASSERT_STR_EQ(s.robots.model, "reach2d");
    ASSERT_INT_EQ(s.robots.count, 2);
    ASSERT_INT_EQ(s.policy.type, EXP_POLICY_MLP);
    ASSERT_INT_EQ(s.policy.n_hidden, 2);
    ASSERT_INT_EQ(s.policy.hidden[1], 128);
    ASSERT_STR_EQ(s.algorithm.type, "sac");
    ASSERT_INT_EQ(s.learner.gpus, 0);
    ASSERT_INT_EQ(s.placement.actor, EXP_ACTOR_CPU);
    ASSERT_NEAR(s.stop.success_rate, 0.9, 1e-12);
    ASSERT_INT_EQ(s.stop.wall_time, 600LL * 1000000000LL);
    ASSERT_INT_EQ(s.checkpoint.keep, 3);
    exp_spec_free(&s);
    /* --set overrides, validated like the file. */
    const char *sets[] = {"algorithm.lr=1e-3", "robots.count=1", "learner.gpu_memory=40GiB"};
    ASSERT_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), sets, 3, &err), &err);
    ASSERT_NEAR(s.algorithm.lr, 1e-3, 1e-15);
    ASSERT_INT_EQ(s.robots.count, 1);
    ASSERT_TRUE(s.learner.gpu_memory == 40ULL << 30);
    exp_spec_free(&s);
    const char *bad[] = {"algorithm.batch_size=0"};
    ASSERT_INT_EQ(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), bad, 1, &err),
                  CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "--set:1:") == err.msg);
    ASSERT_TRUE(strstr(err.msg, "algorithm.batch_size") != NULL);
}

static void test_every_shipped_file_loads(void)
{
    const char *dir = test_source_path("configs/experiments");
    char path[4300];
    snprintf(path, sizeof path, "%s", dir);
    DIR *d = opendir(path);
    ASSERT_TRUE(d != NULL);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0) continue;
        char file[4600];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        exp_spec_t s;
        cr_err_t err = {0};
        ASSERT_OK(exp_spec_load_file(&s, file, NULL, 0, &err), &err);
        exp_spec_free(&s);
        n++;
    }
    closedir(d);
    ASSERT_TRUE(n >= 1);
}

static void expect(const char *extra, const char *set, int code, const char *needle)
{
    cr_err_t err = {0};
    int rc = load(extra, set, &err);
    if (rc != code || !strstr(err.msg, needle))
        fprintf(stderr, "  input '%s' / '%s': got %d '%s', expected %d with '%s'\n", extra ? extra : "",
                set ? set : "", rc, err.msg, code, needle);
    ASSERT_INT_EQ(rc, code);
    ASSERT_TRUE(strstr(err.msg, needle) != NULL);
}

static void test_mistakes_are_explained(void)
{
    cr_err_t err = {0};
    ASSERT_OK(load(NULL, NULL, &err), &err);
    expect("algoritm:\n  lr: 1\n", NULL, CR_EINVAL, "did you mean 'algorithm'");
    expect(NULL, "name=Reach SAC", CR_EINVAL, "'Reach SAC' is not a valid name");
    expect(NULL, "robots.count=0", CR_EINVAL, "robots: choose robots: list names, or set count");
    expect(NULL, "robots.names=[arm-1]", CR_EINVAL, "count is 2 but 1 robots are named");
    expect(NULL, "robots.names=[arm-1, arm-1]", CR_EINVAL, "robot arm-1 is named twice");
    expect(NULL, "task.reward=shaped", CR_EINVAL, "unknown reward 'shaped': use a built-in (task, sparse, reach-distance)");
    expect(NULL, "algorithm.type=td3", CR_EINVAL, "unknown algorithm 'td3'");
    expect(NULL, "policy.type=transformer", CR_EINVAL, "policy.type");
    expect(NULL, "learner.gpus=17", CR_EINVAL, "learner.gpus");
    expect(NULL, "stop.updates=0", CR_EINVAL, "set a stop condition");
    expect(NULL, "buffer.online_ratio=0.5", CR_EINVAL, "online_ratio plus the demo ratios is 0.5; it must be 1");
    expect("buffer:\n  demos:\n    - ratio: 0.5\n", NULL, CR_EINVAL, "buffer.demos.0.path");
    expect(NULL, "placement.learner_node=GPU 1", CR_EINVAL, "placement.learner_node");
    expect(NULL, "task.episode_steps=-1", CR_EINVAL, "task.episode_steps");
    /* The position in the file is named. */
    expect("policy:\n  hidden: [64, 0]\n", NULL, CR_EINVAL, "t.yaml:8:");
    /* Plugins and demo mixes that add up are fine. */
    ASSERT_OK(load("buffer:\n  online_ratio: 0.5\n  demos:\n    - {path: demos/a.db, ratio: 0.25}\n"
                   "    - {path: demos/b.db, ratio: 0.25}\n", "task.reward=plugins/libreward.so", &err), &err);
    expect(NULL, "robots.names=[arm-1, arm-2]", CR_EINVAL, "name the robots or filter them (driver, model, labels), not both");
    const char named[] = "name: t2\nrobots: {names: [arm-1, arm-2]}\nstop: {wall_time: 1h}\n";
    exp_spec_t s;
    ASSERT_OK(exp_spec_load_string(&s, "named", named, strlen(named), NULL, 0, &err), &err);
    ASSERT_INT_EQ(s.robots.n_names, 2);
    ASSERT_INT_EQ(s.robots.count, 0);
    exp_spec_free(&s);
    ASSERT_OK(load(NULL, "algorithm.type=/opt/algos/libmyalgo.so", &err), &err);
    ASSERT_TRUE(exp_spec_is_plugin("x.so"));
    ASSERT_TRUE(!exp_spec_is_plugin("sac"));
    ASSERT_TRUE(!exp_spec_is_plugin(".so"));
}

/* The generative-policy fields: instructions, cameras, scripted demonstrations,
 * the fine-tuning phase, the recent sampler; and their mistakes. */
static void test_generative_fields(void)
{
    exp_spec_t s;
    cr_err_t err = {0};
    ASSERT_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-vla.yaml"), NULL, 0, &err), &err);
    ASSERT_STR_EQ(s.algorithm.type, "vla");
    ASSERT_STR_EQ(s.task.instruction, "reach the {goal} target");
    ASSERT_INT_EQ(s.task.instruction_tokens, 24);
    ASSERT_STR_EQ(s.task.camera, "top");
    ASSERT_INT_EQ(s.task.image_width, 32);
    ASSERT_INT_EQ(s.buffer.scripted.episodes, 90);
    ASSERT_NEAR(s.buffer.scripted.ratio, 0.5, 1e-12);
    ASSERT_INT_EQ(s.buffer.sampler, EXP_SAMPLER_RECENT);
    ASSERT_INT_EQ(s.algorithm.bc_updates, 8000);
    exp_spec_free(&s);
    ASSERT_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-flow.yaml"), NULL, 0, &err), &err);
    ASSERT_STR_EQ(s.algorithm.type, "flow-rl");
    ASSERT_INT_EQ(s.policy.type, EXP_POLICY_FLOW);
    exp_spec_free(&s);
    expect(NULL, "task.instruction=reach the target", CR_EINVAL, "does not name the goal: put {goal}");
    expect(NULL, "algorithm.bc_updates=100", CR_EINVAL, "bc_updates is for an algorithm with a fine-tuning phase");
    expect(NULL, "algorithm.params.horizon=3", CR_EINVAL, "batch_size 256 is not a multiple of params.horizon 3");
    expect("buffer:\n  online_ratio: 0.5\n  scripted: {episodes: 10}\n", NULL, CR_EINVAL,
           "episodes 10 with ratio 0: set both");
    expect("buffer:\n  online_ratio: 0.5\n  scripted: {episodes: 10, ratio: 0.25}\n", NULL, CR_EINVAL,
           "online_ratio plus the demo ratios is 0.75");
    expect(NULL, "buffer.sampler=newest", CR_EINVAL, "buffer.sampler");
    expect(NULL, "task.instruction_tokens=1", CR_EINVAL, "task.instruction_tokens");
    ASSERT_OK(load("buffer:\n  online_ratio: 0.5\n  scripted: {episodes: 10, ratio: 0.5}\n",
                   "algorithm.type=flow-rl", &err), &err);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"table_is_consistent", test_table_is_consistent},
        {"reach_sac", test_reach_sac},
        {"every_shipped_file_loads", test_every_shipped_file_loads},
        {"mistakes_are_explained", test_mistakes_are_explained},
        {"generative_fields", test_generative_fields},
        {NULL, NULL},
    };
    return test_main("expspec", cases, argc, argv);
}
