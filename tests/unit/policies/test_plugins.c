/* test_plugins.c - loading plugins: the example plugins (built from the public
 * header only) load, validate and work end to end; each broken plugin is refused
 * with a message naming its fault; `corral plugin check` reports the same with
 * exit status 0 or 1. */
#include "tests/unit/policies/gradcheck.h"
#include "policies/policies.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *plugin_path(const char *name)
{
    static char buf[4][4200];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s", test_build_path(name));
    return b;
}

static void expect_refused(const char *file, int code, const char *needle)
{
    pol_plugin_t p;
    cr_err_t err = {0};
    int rc = pol_plugin_open(plugin_path(file), &p, &err);
    if (rc != code || !strstr(err.msg, needle))
        fprintf(stderr, "  %s: rc %d '%s', expected %d with '%s'\n", file, rc, err.msg, code, needle);
    ASSERT_INT_EQ(rc, code);
    ASSERT_TRUE(strstr(err.msg, needle) != NULL);
    ASSERT_TRUE(p.desc == NULL && p.dl == NULL);
}

static void test_bad_plugins(void)
{
    expect_refused("tests/plugins/bad_version.so", CR_EVERSION, "ABI version 99");
    expect_refused("tests/plugins/no_entry.so", CR_EINVAL, "missing entry symbol 'corral_plugin_entry'");
    expect_refused("tests/plugins/null_fn.so", CR_EINVAL, "'update' is NULL");
    expect_refused("tests/plugins/bad_name.so", CR_EINVAL, "Bad Name!");
    expect_refused("tests/plugins/small_vtable.so", CR_EVERSION, "algo vtable is 16 bytes");
    expect_refused("tests/plugins/bad_kind.so", CR_EINVAL, "unknown kind 7");
    expect_refused("tests/plugins/null_desc.so", CR_EINVAL, "returned NULL");
    expect_refused("tests/plugins/does_not_exist.so", CR_ENOENT, "No such file");
    expect_refused("tests/test_policies_plugins", CR_EINVAL, "cannot load");
    pol_plugin_t p;
    cr_err_t err = {0};
    ASSERT_INT_EQ(pol_plugin_open("CMakeCache.txt", &p, &err) == 0, 0);
}

static void test_example_algo(void)
{
    pol_plugin_t p;
    cr_err_t err = {0};
    CHECK_OK(pol_plugin_open(plugin_path("plugins/linear_bc.so"), &p, &err), &err);
    ASSERT_STR_EQ(p.desc->name, "linear-bc");
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = 3, .act_dim = 1};
    pol_algo_t a;
    corral_kv_t bad[] = {{"gamma", "1"}};
    ASSERT_INT_EQ(pol_algo_create(&a, p.desc, bad, 1, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "unknown setting 'gamma'") != NULL);
    corral_kv_t cfg[] = {{"lr", "0.5"}};
    CHECK_OK(pol_algo_create(&a, p.desc, cfg, 1, &spec, &err), &err);
    /* learn action = tanh(x0 - x2) through the generic helpers */
    enum { N = 64 };
    float obs[N * 3], act[N], r[N] = {0}, d[N] = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 1);
    corral_batch_t b = {.struct_size = sizeof b, .size = N, .obs = obs, .action = act, .reward = r, .next_obs = obs, .done = d};
    for (int it = 0; it < 300; it++) {
        for (int i = 0; i < N; i++) {
            for (int j = 0; j < 3; j++) obs[i * 3 + j] = nn_rng_normal(&rng);
            act[i] = tanhf(obs[i * 3] - obs[i * 3 + 2]);
        }
        corral_metrics_t m = {0};
        CHECK_OK(pol_algo_update(&a, &b, &m, &err), &err);
    }
    float o[3] = {0.5f, 3.0f, -0.25f}, y;
    CHECK_OK(pol_algo_act(&a, o, 1, &y, &err), &err);
    ASSERT_NEAR(y, tanh(0.75), 0.05);
    /* its blob and checkpoint round-trip through the generic helpers */
    void *blob;
    size_t len;
    CHECK_OK(pol_algo_export(&a, &blob, &len, &err), &err);
    pol_algo_t b2;
    CHECK_OK(pol_algo_create(&b2, p.desc, NULL, 0, &spec, &err), &err);
    CHECK_OK(pol_algo_import(&b2, blob, len, &err), &err);
    float y2;
    CHECK_OK(pol_algo_act(&b2, o, 1, &y2, &err), &err);
    ASSERT_TRUE(y == y2);
    ((uint8_t *)blob)[0] = 'X';
    ASSERT_INT_EQ(pol_algo_import(&b2, blob, len, &err), CR_ECORRUPT);
    char ck[4200];
    snprintf(ck, sizeof ck, "%s/linbc.ckpt", test_tmpdir());
    CHECK_OK(pol_algo_save(&a, ck, &err), &err);
    pol_algo_destroy(&b2);
    CHECK_OK(pol_algo_create(&b2, p.desc, NULL, 0, &spec, &err), &err);
    CHECK_OK(pol_algo_load(&b2, ck, &err), &err);
    CHECK_OK(pol_algo_act(&b2, o, 1, &y2, &err), &err);
    ASSERT_TRUE(y == y2);
    free(blob);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b2);
    pol_plugin_close(&p);
}

static void test_example_reward(void)
{
    pol_plugin_t p;
    cr_err_t err = {0};
    CHECK_OK(pol_plugin_open(plugin_path("plugins/reach_bonus.so"), &p, &err), &err);
    ASSERT_INT_EQ(p.desc->kind, CORRAL_PLUGIN_REWARD);
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = 4, .act_dim = 1};
    corral_kv_t cfg[] = {{"offset", "2"}, {"threshold", "0.1"}, {"bonus", "5"}};
    void *self;
    ASSERT_INT_EQ(p.desc->reward->create(cfg, 3, &spec, &self, (corral_err_t *)&err), 0);
    float o[4] = {9, 9, 0.03f, 0.04f}, a[1] = {0}, rw;
    int ok;
    ASSERT_INT_EQ(p.desc->reward->compute(self, o, a, o, &rw, &ok, (corral_err_t *)&err), 0);
    ASSERT_INT_EQ(ok, 1);
    ASSERT_NEAR(rw, 5 - 0.0025, 1e-6);
    p.desc->reward->destroy(self);
    pol_plugin_close(&p);
}

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli_check(void)
{
    char corral[4200];   /* test_build_path's storage is reused by plugin_path */
    snprintf(corral, sizeof corral, "%s", test_build_path("corral"));
    TEST_SKIP_IF(access(corral, X_OK) != 0, "the corral binary is not built");
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s plugin check %s >/dev/null", corral, plugin_path("plugins/linear_bc.so"));
    ASSERT_INT_EQ(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s plugin check %s --obs 3 >/dev/null", corral, plugin_path("plugins/reach_bonus.so"));
    ASSERT_INT_EQ(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s plugin check %s 2>&1 | grep -q 'ABI version 99'", corral,
             plugin_path("tests/plugins/bad_version.so"));
    ASSERT_INT_EQ(run(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s plugin check %s 2>/dev/null", corral, plugin_path("tests/plugins/no_entry.so"));
    ASSERT_INT_EQ(run(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s plugin check %s --obs 1 2>/dev/null", corral, plugin_path("plugins/reach_bonus.so"));
    ASSERT_INT_EQ(run(cmd), 1);
    snprintf(cmd, sizeof cmd, "%s plugin list | grep -q hg-dagger", corral);
    ASSERT_INT_EQ(run(cmd), 0);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"bad_plugins", test_bad_plugins},
        {"example_algo", test_example_algo},
        {"example_reward", test_example_reward},
        {"cli_check", test_cli_check},
        {NULL, NULL},
    };
    return test_main("policies.plugins", cases, argc, argv);
}
