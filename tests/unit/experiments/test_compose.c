/* test_compose.c - the building blocks of an experiment run together with real
 * processes: the controller's logic (expctl over SQLite) sends its commands as
 * AgentLink messages (packed and unpacked) to an agent's worker commands and
 * supervisor, whose state changes flow back as reports. A worker SIGKILLed is
 * restarted and the run keeps going; an agent restarted adopts its workers and
 * the controller starts no duplicates; stop ends every process; resume starts
 * run 2. The workers are a shell script standing in for `corral worker`. */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "agents/workercmd.h"
#include "common/durable.h"
#include "common/log.h"
#include "common/time.h"
#include "controller/expctl.h"
#include "controller/expctl_proto.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>

static const char fake_corral[] =
    "#!/bin/sh\n"
    "echo \"worker $*\"\n"
    "trap 'echo bye; exit 0' TERM\n"
    "while :; do sleep 0.2 & wait $!; done\n";

typedef struct world {
    sqlite3 *db;
    agent_sup_t *sup;
    char dir[4200], corral[4300];
    agent_worker_info_t queue[256];
    int nq;
    int starts_sent, stops_sent;
} world_t;

static world_t W;

static void on_event(void *ud, const agent_worker_info_t *w, agent_worker_state_t old)
{
    (void)ud;
    (void)old;
    if (W.nq < 256) W.queue[W.nq++] = *w;
}

static void agent_up(void)
{
    cr_err_t err = {0};
    agent_sup_config_t cfg = {.state_dir = W.dir, .backoff_initial_ms = 20, .stop_grace_ms = 1000,
                              .on_event = on_event};
    ASSERT_OK(agent_sup_create(&cfg, &W.sup, &err), &err);
}

/* Carries out commands the way the session layer will: as packed messages. */
static void execute(const ctl_cmds_t *cmds)
{
    cr_err_t err = {0};
    for (size_t i = 0; i < cmds->n; i++) {
        const ctl_worker_cmd_t *c = &cmds->v[i];
        ASSERT_STR_EQ(c->node, "local");
        if (c->kind == CTL_CMD_START) {
            ctl_exp_t e;
            ASSERT_OK(ctl_exp_get(W.db, c->experiment, &e, &err), &err);
            Corral__V1__StartWorker msg;
            Corral__V1__WorkerSpec spec;
            ctl_cmd_start_proto(c, i + 1, e.spec, "127.0.0.1:7100", "127.0.0.1:7101", &msg, &spec);
            size_t len = corral__v1__start_worker__get_packed_size(&msg);
            uint8_t *buf = malloc(len);
            corral__v1__start_worker__pack(&msg, buf);
            ctl_exp_clear(&e);
            Corral__V1__StartWorker *got = corral__v1__start_worker__unpack(NULL, len, buf);
            free(buf);
            ASSERT_TRUE(got != NULL);
            int rc = agent_wcmd_start(W.sup, W.dir, W.corral, NULL, got->spec, &err);
            ASSERT_TRUE(rc == 0 || rc == CR_EEXIST); /* EEXIST: it runs already, which is the goal */
            corral__v1__start_worker__free_unpacked(got, NULL);
            W.starts_sent++;
        } else {
            Corral__V1__StopWorker msg;
            ctl_cmd_stop_proto(c, i + 1, &msg);
            ASSERT_OK(agent_wcmd_stop(W.sup, &msg, &err), &err);
            W.stops_sent++;
        }
    }
}

/* Delivers queued reports to the controller and runs what it answers. */
static void pump(void)
{
    cr_err_t err = {0};
    agent_sup_poll(W.sup);
    while (W.nq > 0) {
        agent_worker_info_t w = W.queue[0];
        memmove(&W.queue[0], &W.queue[1], (size_t)(--W.nq) * sizeof W.queue[0]);
        ctl_cmds_t cmds = {0};
        ASSERT_OK(ctl_expctl_worker_status(W.db, "local", w.experiment, w.generation, w.role, w.index,
                                           agent_worker_state_name(w.state), w.pid, w.restarts, 100, &cmds, &err),
                  &err);
        execute(&cmds);
        ctl_cmds_free(&cmds);
        agent_sup_poll(W.sup);
    }
}

static ctl_exp_state_t state_of(const char *name)
{
    ctl_exp_t e;
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_get(W.db, name, &e, &err), &err);
    ctl_exp_state_t s = e.state;
    ctl_exp_clear(&e);
    return s;
}

static int wait_state(const char *name, ctl_exp_state_t s, int64_t timeout_ms)
{
    int64_t deadline = cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    while (cr_now_ns() < deadline) {
        pump();
        if (state_of(name) == s) return 1;
        cr_sleep_ns(5 * CR_NS_PER_MS);
    }
    return 0;
}

static pid_t pid_of(const char *role, int index)
{
    agent_worker_info_t info;
    ASSERT_INT_EQ(agent_sup_get(W.sup, "reach-sac", role, index, &info), 0);
    return info.pid;
}

static int live_workers(void)
{
    agent_worker_info_t info[16];
    size_t n = agent_sup_list(W.sup, info, 16);
    int live = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t t, h;
        live += info[i].pid > 0 && agent_proc_identity(info[i].pid, &t, &h) == 0;
    }
    return live;
}

static void test_run_crash_adopt_stop_resume(void)
{
    memset(&W, 0, sizeof W);
    cr_err_t err = {0};
    snprintf(W.dir, sizeof W.dir, "%s", test_tmpdir());
    snprintf(W.corral, sizeof W.corral, "%s/corral", W.dir);
    ASSERT_OK(cr_durable_write(W.corral, fake_corral, strlen(fake_corral), 0755, &err), &err);
    char path[4300];
    snprintf(path, sizeof path, "%s/state.db", W.dir);
    ASSERT_INT_EQ(sqlite3_open(path, &W.db), SQLITE_OK);
    ASSERT_OK(ctl_exp_schema(W.db, &err), &err);
    agent_up();

    /* The embedded demo cluster: one node, two simulated robots, no GPU. */
    ctl_inv_node_t nodes[] = {{"local", CTL_NODE_READY, 1, NULL}};
    ctl_inv_robot_t robots[] = {
        {"sim-0", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
        {"sim-1", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
    };
    ctl_inventory_t inv = {nodes, 1, NULL, 0, robots, 2};
    char *yaml;
    size_t len;
    ASSERT_OK(cr_read_file(test_source_path("configs/experiments/reach-sac.yaml"), 1 << 20, &yaml, &len, &err), &err);
    ctl_cmds_t cmds = {0};
    ASSERT_OK(ctl_expctl_submit(W.db, &inv, "reach-sac.yaml", yaml, len, NULL, 0, NULL, NULL, 1, NULL, &cmds, &err),
              &err);
    free(yaml);
    execute(&cmds);
    ctl_cmds_free(&cmds);
    ASSERT_TRUE(wait_state("reach-sac", CTL_EXP_RUNNING, 5000));
    ASSERT_INT_EQ(live_workers(), 3); /* learner (buffer inside), two envs (actors inside) */
    char log[4400];
    snprintf(log, sizeof log, "%s/experiments/reach-sac/logs/learner-0.log", W.dir);
    char *text;
    ASSERT_OK(cr_read_file(log, 1 << 20, &text, NULL, &err), &err);
    ASSERT_TRUE(strstr(text, "worker worker --role learner --experiment reach-sac --index 0 --generation 1") != NULL);
    ASSERT_TRUE(strstr(text, "--buffer 127.0.0.1:7100 --learner 127.0.0.1:7101") != NULL);
    free(text);

    /* SIGKILL the learner: restarted by the agent, the run stays running. */
    pid_t learner = pid_of("learner", 0);
    ASSERT_INT_EQ(kill(learner, SIGKILL), 0);
    int64_t deadline = cr_now_ns() + 5 * CR_NS_PER_S;
    while (cr_now_ns() < deadline && (pid_of("learner", 0) == learner || pid_of("learner", 0) == 0)) {
        pump();
        cr_sleep_ns(5 * CR_NS_PER_MS);
    }
    ASSERT_TRUE(pid_of("learner", 0) != learner && pid_of("learner", 0) > 0);
    pump();
    ASSERT_INT_EQ(state_of("reach-sac"), CTL_EXP_RUNNING);

    /* The agent restarts (its workers keep running): it adopts all three processes
     * (actors run inside their envs, the buffer inside the learner) and the
     * controller, hearing them report running, starts nothing. */
    pid_t before[3];
    const char *roles[] = {"env", "env", "learner"};
    const int idx[] = {0, 1, 0};
    for (int i = 0; i < 3; i++) before[i] = pid_of(roles[i], idx[i]);
    agent_sup_destroy(W.sup);
    W.nq = 0;
    int starts = W.starts_sent;
    agent_up();
    ASSERT_INT_EQ(W.nq, 3); /* one adoption report each */
    pump();
    for (int i = 0; i < 3; i++) ASSERT_INT_EQ(pid_of(roles[i], idx[i]), before[i]);
    ASSERT_INT_EQ(W.starts_sent, starts);
    ASSERT_INT_EQ(live_workers(), 3); /* learner (buffer inside), two envs (actors inside) */
    ASSERT_INT_EQ(state_of("reach-sac"), CTL_EXP_RUNNING);

    /* Stop: every worker ends (the script says bye on SIGTERM), the run is stopped. */
    ASSERT_OK(ctl_expctl_stop(W.db, "reach-sac", 0, 200, &cmds, &err), &err);
    execute(&cmds);
    ctl_cmds_free(&cmds);
    ASSERT_TRUE(wait_state("reach-sac", CTL_EXP_STOPPED, 5000));
    ASSERT_INT_EQ(live_workers(), 0);
    ASSERT_TRUE(access(log, F_OK) == 0);

    /* Resume: run 2, six new workers told so. */
    ASSERT_OK(ctl_expctl_resume(W.db, &inv, "reach-sac", NULL, 0, NULL, NULL, 300, &cmds, &err), &err);
    execute(&cmds);
    ctl_cmds_free(&cmds);
    ASSERT_TRUE(wait_state("reach-sac", CTL_EXP_RUNNING, 5000));
    ASSERT_INT_EQ(live_workers(), 3); /* learner (buffer inside), two envs (actors inside) */
    snprintf(log, sizeof log, "%s/experiments/reach-sac/logs/env-1.log", W.dir);
    int found = 0;
    for (int i = 0; i < 200 && !found; i++) {
        ASSERT_OK(cr_read_file(log, 1 << 20, &text, NULL, &err), &err);
        found = strstr(text, "--generation 2") != NULL;
        free(text);
        if (!found) cr_sleep_ns(10 * CR_NS_PER_MS);
    }
    ASSERT_TRUE(found);

    /* Reaching the goal ends it done, with no process left. */
    ASSERT_OK(ctl_expctl_stop(W.db, "reach-sac", 1, 400, &cmds, &err), &err);
    execute(&cmds);
    ctl_cmds_free(&cmds);
    ASSERT_TRUE(wait_state("reach-sac", CTL_EXP_DONE, 5000));
    ASSERT_INT_EQ(live_workers(), 0);
    ASSERT_OK(ctl_exp_check(W.db, &err), &err);
    agent_sup_destroy(W.sup);
    sqlite3_close(W.db);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"run_crash_adopt_stop_resume", test_run_crash_adopt_stop_resume},
        {NULL, NULL},
    };
    cr_log_set_level(CR_LOG_WARN);
    return test_main("compose", cases, argc, argv);
}
