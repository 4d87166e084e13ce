/* test_expcli.c - `corral exp` against a real Experiments service on loopback:
 * submit, refusal exit codes, status --json fields, list, a live watch that ends
 * with the experiment, stop and resume. The service runs in this process; the
 * CLI is the built corral binary. */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "common/durable.h"
#include "common/time.h"
#include "controller/expservice.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static sqlite3 *db;
static ctl_inv_node_t nodes[] = {{"local", CTL_NODE_READY, 1, NULL}};
static ctl_inv_robot_t robots[] = {
    {"sim-0", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
    {"sim-1", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
};
static ctl_inventory_t inv = {nodes, 1, NULL, 0, robots, 2};
static char addr[64];

static int with_state(void *ud, ctl_exp_state_fn fn, void *arg, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)ud;
    pthread_mutex_lock(&mu);
    int rc = fn(arg, db, &inv, cmds, err);
    pthread_mutex_unlock(&mu);
    return rc;
}

/* Runs `corral exp ARGS --controller addr`, output (stdout and stderr) into out. */
static int run(char *out, size_t cap, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' exp %s --controller %s 2>&1", test_source_path("."),
             test_build_path("corral"), args, addr);
    FILE *p = popen(cmd, "r");
    ASSERT_TRUE(p != NULL);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    fprintf(stderr, "  corral exp %s -> %d\n%s", args, rc, out); /* shown when an assertion fails */
    return rc;
}

static void report_all(const char *state, int64_t gen)
{
    const char *roles[] = {"env", "env", "actor", "actor", "learner", "buffer"};
    const int idx[] = {0, 1, 0, 1, 0, 0};
    ctl_cmds_t cmds = {0};
    cr_err_t err = {0};
    pthread_mutex_lock(&mu);
    for (int i = 0; i < 6; i++)
        ASSERT_OK(ctl_expctl_worker_status(db, "local", "reach-sac", gen, roles[i], idx[i], state, 10 + i, 0, 5, &cmds,
                                           &err), &err);
    ctl_exp_progress_t p = {.env_steps = 1200, .episodes = 24, .updates = 200, .policy_version = 4,
                            .success_rate = 0.45, .mean_return = -4.5, .staleness = 1};
    if (strcmp(state, "running") == 0) ASSERT_OK(ctl_exp_progress(db, "reach-sac", &p, 6, &err), &err);
    pthread_mutex_unlock(&mu);
    ctl_cmds_free(&cmds);
}

static void test_cli_against_service(void)
{
    TEST_SKIP_IF(access(test_build_path("corral"), X_OK) != 0, "the corral binary is not built");
    cr_err_t err = {0};
    char path[4300], out[16384];
    snprintf(path, sizeof path, "%s/state.db", test_tmpdir());
    ASSERT_INT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    ASSERT_OK(ctl_exp_schema(db, &err), &err);
    ctl_exp_host_t host = {.with_state = with_state, .watch_period_ms = 20};
    ctl_exp_service_t *svc;
    ASSERT_OK(ctl_exp_service_create(&host, &svc, &err), &err);
    rpc_method_t methods[CTL_EXP_METHODS];
    size_t nm = ctl_exp_service_methods(svc, methods);
    rpc_server_t *srv;
    ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", NULL, methods, nm, &err), &err);
    ASSERT_OK(rpc_server_start(srv, &err), &err);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(srv));

    ASSERT_INT_EQ(run(out, sizeof out, "submit configs/experiments/reach-sac.yaml"), 0);
    ASSERT_STR_EQ(out, "submitted reach-sac: scheduled\n");
    ASSERT_INT_EQ(run(out, sizeof out, "submit configs/experiments/reach-sac.yaml"), 1);
    ASSERT_TRUE(strstr(out, "experiment reach-sac already exists") != NULL);
    ASSERT_INT_EQ(run(out, sizeof out, "submit configs/experiments/reach-sac.yaml --set name=other"), 1);
    ASSERT_TRUE(strstr(out, "robot sim-0 is in use by experiment reach-sac") != NULL);
    ASSERT_INT_EQ(run(out, sizeof out, "submit configs/experiments/reach-sac.yaml --set stop.success_rate=2"), 1);
    ASSERT_TRUE(strstr(out, "--set:1:") != NULL);

    /* A live watch while the run goes. */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' exp watch reach-sac --controller %s 2>&1", test_build_path("corral"), addr);
    FILE *watch = popen(cmd, "r");
    ASSERT_TRUE(watch != NULL);
    cr_sleep_ns(200 * CR_NS_PER_MS);
    report_all("running", 1);
    cr_sleep_ns(200 * CR_NS_PER_MS);

    ASSERT_INT_EQ(run(out, sizeof out, "status reach-sac --json"), 0);
    cJSON *j = cJSON_Parse(out);
    ASSERT_TRUE(j != NULL);
    ASSERT_STR_EQ(cJSON_GetObjectItem(j, "name")->valuestring, "reach-sac");
    ASSERT_STR_EQ(cJSON_GetObjectItem(j, "state")->valuestring, "running");
    const char *fields[] = {"env_steps", "episodes", "success_rate", "updates", "policy_version", "staleness"};
    for (int i = 0; i < 6; i++) ASSERT_TRUE(cJSON_IsNumber(cJSON_GetObjectItem(j, fields[i])));
    ASSERT_INT_EQ(cJSON_GetObjectItem(j, "env_steps")->valueint, 1200);
    ASSERT_NEAR(cJSON_GetObjectItem(j, "success_rate")->valuedouble, 0.45, 1e-9);
    ASSERT_INT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "workers")), 6);
    cJSON_Delete(j);
    ASSERT_INT_EQ(run(out, sizeof out, "status reach-sac"), 0);
    ASSERT_TRUE(strstr(out, "learner-0") != NULL && strstr(out, "running") != NULL);
    ASSERT_INT_EQ(run(out, sizeof out, "list"), 0);
    ASSERT_TRUE(strstr(out, "reach-sac") != NULL && strstr(out, "running") != NULL);
    ASSERT_INT_EQ(run(out, sizeof out, "status nope"), 1);
    ASSERT_TRUE(strstr(out, "no experiment named nope") != NULL);

    ASSERT_INT_EQ(run(out, sizeof out, "stop reach-sac"), 0);
    ASSERT_STR_EQ(out, "reach-sac: stopping (run 1)\n");
    report_all("stopped", 1);
    /* The watch ends by itself with the experiment. */
    size_t n = fread(out, 1, sizeof out - 1, watch);
    out[n] = '\0';
    int st = pclose(watch);
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ASSERT_TRUE(strstr(out, "scheduled -> running") != NULL);
    ASSERT_TRUE(strstr(out, "stopping -> stopped") != NULL);
    ASSERT_TRUE(strstr(out, "success 0.45") != NULL); /* the progress line */
    ASSERT_TRUE(strstr(out, "[###") != NULL);         /* 0.45 of the 0.9 goal */

    ASSERT_INT_EQ(run(out, sizeof out, "resume reach-sac"), 0);
    ASSERT_STR_EQ(out, "reach-sac: scheduled (run 2)\n");
    ASSERT_INT_EQ(run(out, sizeof out, "resume reach-sac"), 1);

    rpc_server_stop(srv);
    rpc_server_destroy(srv);
    ctl_exp_service_destroy(svc);
    sqlite3_close(db);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"cli_against_service", test_cli_against_service},
        {NULL, NULL},
    };
    return test_main("expcli", cases, argc, argv);
}
