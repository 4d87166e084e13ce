/* test_expctl.c - the controller's experiment logic end to end over a real SQLite
 * file: submit the demo file, workers report, the goal stops it done; refusals
 * that change nothing; a crashed worker fails the run and resume starts run 2; a
 * lost node degrades the experiment and its return makes it run again; reports
 * from workers that should not exist get a STOP. */
#include "tests/harness.h"
#include "controller/expctl.h"
#include "common/durable.h"

#include <sqlite3.h>
#include <stdlib.h>

static sqlite3 *open_db(void)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/state.db", test_tmpdir());
    sqlite3 *db = NULL;
    ASSERT_INT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_schema(db, &err), &err);
    return db;
}

/* Two nodes: "robo" with the two simulated robots, "gpu" with one GPU. */
static ctl_inv_node_t nodes[] = {{"robo", CTL_NODE_READY, 1, NULL}, {"gpu", CTL_NODE_READY, 1, NULL}};
static ctl_inv_gpu_t gpus[] = {{"gpu", 0, 1ULL << 34, CTL_RES_AVAILABLE, NULL}};
static ctl_inv_robot_t robots[] = {
    {"sim-0", "robo", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
    {"sim-1", "robo", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
};
static ctl_inventory_t inv = {nodes, 2, gpus, 1, robots, 2};

static char *demo_yaml(size_t *len)
{
    char *text;
    cr_err_t err = {0};
    ASSERT_OK(cr_read_file(test_source_path("configs/experiments/reach-sac.yaml"), 1 << 20, &text, len, &err), &err);
    return text;
}

static ctl_exp_state_t state_of(sqlite3 *db, const char *name)
{
    ctl_exp_t e;
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_get(db, name, &e, &err), &err);
    ctl_exp_state_t s = e.state;
    ctl_exp_clear(&e);
    return s;
}

/* Every START in cmds reports `state` from its node. */
static void report(sqlite3 *db, const ctl_cmds_t *starts, const char *state, ctl_cmds_t *out)
{
    cr_err_t err = {0};
    for (size_t i = 0; i < starts->n; i++) {
        const ctl_worker_cmd_t *c = &starts->v[i];
        if (c->kind != CTL_CMD_START) continue;
        ASSERT_OK(ctl_expctl_worker_status(db, c->node, c->experiment, c->generation, c->role, c->index, state,
                                           100 + (int)i, 0, 50, out, &err), &err);
    }
}

static size_t count(const ctl_cmds_t *c, ctl_cmd_kind_t kind, const char *node)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) n += c->v[i].kind == kind && (!node || strcmp(c->v[i].node, node) == 0);
    return n;
}

static void test_submit_run_goal_done(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len), name[CTL_NAME_MAX];
    ctl_cmds_t cmds = {0}, more = {0};
    const char *sets[] = {"learner.gpus=1"};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, sets, 1, NULL, NULL, 10, name, &cmds, &err), &err);
    ASSERT_STR_EQ(name, "reach-sac");
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_SCHEDULED);
    /* 2 env + 2 actor on robo (actor: cpu in the file), learner + buffer on gpu. */
    ASSERT_INT_EQ(cmds.n, 3);
    ASSERT_INT_EQ(count(&cmds, CTL_CMD_START, "robo"), 2);
    ASSERT_INT_EQ(count(&cmds, CTL_CMD_START, "gpu"), 1);
    for (size_t i = 0; i < cmds.n; i++) {
        ASSERT_INT_EQ(cmds.v[i].generation, 1);
        ASSERT_STR_EQ(cmds.v[i].buffer_node, "gpu");
        if (strcmp(cmds.v[i].role, "learner") == 0) {
            ASSERT_INT_EQ(cmds.v[i].n_gpus, 1);
            ASSERT_INT_EQ(cmds.v[i].gpus[0], 0);
        }
        if (strcmp(cmds.v[i].role, "env") == 0) ASSERT_TRUE(cmds.v[i].robot[0] == 's');
    }
    /* The overrides are kept for resume. */
    ctl_exp_t e;
    ASSERT_OK(ctl_exp_get(db, "reach-sac", &e, &err), &err);
    ASSERT_STR_EQ(e.sets, "learner.gpus=1");
    ctl_exp_clear(&e);

    /* Gang start: running once all six report running. */
    report(db, &cmds, "running", &more);
    ASSERT_INT_EQ(more.n, 0);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_RUNNING);
    /* The goal: stopping, STOP to both nodes, done when every worker ended. */
    ASSERT_OK(ctl_expctl_stop(db, "reach-sac", 1, 20, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_STOPPING);
    ASSERT_INT_EQ(count(&more, CTL_CMD_STOP, "robo"), 1);
    ASSERT_INT_EQ(count(&more, CTL_CMD_STOP, "gpu"), 1);
    ASSERT_STR_EQ(more.v[0].role, "");
    ctl_cmds_free(&more);
    report(db, &cmds, "stopped", &more);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_DONE);
    ASSERT_INT_EQ(more.n, 0);
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    /* Done is final. */
    ASSERT_INT_EQ(ctl_expctl_resume(db, &inv, "reach-sac", NULL, 0, NULL, NULL, 30, &more, &err), CR_EBUSY);
    ASSERT_INT_EQ(ctl_expctl_stop(db, "reach-sac", 0, 30, &more, &err), CR_EBUSY);
    ctl_cmds_free(&cmds);
    ctl_cmds_free(&more);
    free(yaml);
    sqlite3_close(db);
}

static int no_plugins(void *ud, const char *what, const char *path, cr_err_t *err)
{
    (void)ud;
    return cr_err_set(err, CR_EINVAL, "%s: plugin %s does not load: cannot open shared object file", what, path);
}

static void test_refusals_change_nothing(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len);
    ctl_cmds_t cmds = {0};
    /* GPUs that cannot be had. */
    const char *big[] = {"learner.gpus=2"};
    ASSERT_INT_EQ(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, big, 1, NULL, NULL, 9, NULL, &cmds, &err),
                  CR_EUNAVAIL);
    ASSERT_STR_EQ(err.msg, "no node has 2 free GPUs; the most on one node: gpu with 1 (lower learner.gpus)");
    ASSERT_INT_EQ(cmds.n, 0);
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, NULL, 0, NULL, NULL, 10, NULL, &cmds, &err), &err);
    ctl_cmds_free(&cmds);

    /* Same robots for a second experiment: busy, named by their holder. */
    const char *other[] = {"name=reach-2"};
    ASSERT_INT_EQ(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, other, 1, NULL, NULL, 11, NULL, &cmds, &err),
                  CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "robot sim-0 is in use by experiment reach-sac") != NULL);
    ASSERT_INT_EQ(cmds.n, 0);
    ctl_exp_t e;
    ASSERT_INT_EQ(ctl_exp_get(db, "reach-2", &e, &err), CR_ENOENT);
    /* Robots that do not exist. */
    const char *named[] = {"name=reach-3", "robots.driver=", "robots.model=", "robots.count=0", "robots.names=[arm-7]"};
    ASSERT_INT_EQ(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, named, 5, NULL, NULL, 11, NULL, &cmds, &err),
                  CR_ENOENT);
    ASSERT_STR_EQ(err.msg, "robot arm-7 does not exist (registered: sim-0, sim-1)");
    /* A plugin that does not load. */
    const char *plugin[] = {"name=reach-5", "task.reward=plugins/libnope.so"};
    ASSERT_INT_EQ(ctl_expctl_submit(db, &inv, "x.yaml", yaml, len, plugin, 2, no_plugins, NULL, 11, NULL, &cmds, &err),
                  CR_EINVAL);
    ASSERT_STR_EQ(err.msg, "task.reward: plugin plugins/libnope.so does not load: cannot open shared object file");
    /* A file with errors. */
    const char *bad = "name: x\nrobot: {}\n";
    ASSERT_INT_EQ(ctl_expctl_submit(db, &inv, "bad.yaml", bad, strlen(bad), NULL, 0, NULL, NULL, 11, NULL, &cmds, &err),
                  CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "bad.yaml:2:1: robot: unknown key; did you mean 'robots'?") != NULL);
    /* The name taken. */
    ASSERT_INT_EQ(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, NULL, 0, NULL, NULL, 11, NULL, &cmds, &err),
                  CR_EEXIST);
    ASSERT_INT_EQ(cmds.n, 0);
    /* The running experiment is untouched. */
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_SCHEDULED);
    ctl_exp_t *list;
    size_t n;
    ASSERT_OK(ctl_exp_list(db, &list, &n, &err), &err);
    ASSERT_INT_EQ(n, 1);
    ctl_exp_list_free(list, n);
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    free(yaml);
    sqlite3_close(db);
}

static void test_failure_then_resume(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len);
    ctl_cmds_t cmds = {0}, more = {0};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, NULL, 0, NULL, NULL, 10, NULL, &cmds, &err), &err);
    report(db, &cmds, "running", &more);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_RUNNING);
    /* The learner crashed too often: the run fails, STOPs go to every node. */
    ASSERT_OK(ctl_expctl_worker_status(db, "robo", "reach-sac", 1, "learner", 0, "failed", 0, 4, 20, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_FAILED);
    ASSERT_INT_EQ(count(&more, CTL_CMD_STOP, NULL), 1); /* one node: robo */
    ctl_exp_t e;
    ASSERT_OK(ctl_exp_get(db, "reach-sac", &e, &err), &err);
    ASSERT_TRUE(strstr(e.message, "worker learner-0 on robo failed") != NULL);
    ctl_exp_clear(&e);
    ctl_cmds_free(&more);
    ctl_cmds_free(&cmds);
    /* Resume with an extra override: run 2, STARTs carry generation 2. */
    const char *sets[] = {"algorithm.lr=1e-3"};
    ASSERT_OK(ctl_expctl_resume(db, &inv, "reach-sac", sets, 1, NULL, NULL, 30, &cmds, &err), &err);
    ASSERT_INT_EQ(cmds.n, 3);
    ASSERT_INT_EQ(cmds.v[0].generation, 2);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_SCHEDULED);
    ASSERT_OK(ctl_exp_get(db, "reach-sac", &e, &err), &err);
    ASSERT_STR_EQ(e.sets, "algorithm.lr=1e-3");
    ctl_exp_clear(&e);
    /* A straggler of run 1 reporting running is told to stop. */
    ASSERT_OK(ctl_expctl_worker_status(db, "robo", "reach-sac", 1, "env", 0, "running", 5, 0, 31, &more, &err), &err);
    ASSERT_INT_EQ(more.n, 1);
    ASSERT_INT_EQ(more.v[0].kind, CTL_CMD_STOP);
    ASSERT_STR_EQ(more.v[0].role, "env");
    ASSERT_INT_EQ(more.v[0].generation, 1);
    ctl_cmds_free(&more);
    /* So is a worker of an experiment nobody submitted. */
    ASSERT_OK(ctl_expctl_worker_status(db, "robo", "ghost", 1, "env", 0, "running", 5, 0, 31, &more, &err), &err);
    ASSERT_INT_EQ(more.n, 1);
    ctl_cmds_free(&more);
    ASSERT_INT_EQ(ctl_expctl_worker_status(db, "robo", "reach-sac", 2, "critic", 0, "running", 5, 0, 31, &more, &err),
                  CR_EINVAL);
    /* A bad override at resume changes nothing. */
    ctl_cmds_free(&cmds);
    report(db, &cmds, "running", &more);
    ASSERT_OK(ctl_expctl_stop(db, "reach-sac", 0, 40, &more, &err), &err);
    ASSERT_INT_EQ(ctl_expctl_resume(db, &inv, "reach-sac", NULL, 0, NULL, NULL, 41, &cmds, &err), CR_EBUSY); /* stopping */
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    ctl_cmds_free(&cmds);
    ctl_cmds_free(&more);
    free(yaml);
    sqlite3_close(db);
}

static void test_node_lost_and_back(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len);
    ctl_cmds_t cmds = {0}, more = {0};
    const char *sets[] = {"learner.gpus=1"};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, sets, 1, NULL, NULL, 10, NULL, &cmds, &err), &err);
    report(db, &cmds, "running", &more);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_RUNNING);
    /* The robot node is lost: its env and actor wait, the experiment is degraded. */
    ctl_inv_node_t n2[2];
    memcpy(n2, nodes, sizeof n2);
    n2[0].state = CTL_NODE_LOST;
    ctl_inv_robot_t r2[2];
    memcpy(r2, robots, sizeof r2);
    r2[0].state = r2[1].state = CTL_RES_LOST;
    ctl_inventory_t lost = {n2, 2, gpus, 1, r2, 2};
    ASSERT_OK(ctl_expctl_nodes_changed(db, &lost, 20, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_DEGRADED);
    ASSERT_INT_EQ(more.n, 0); /* nothing can move: robots wait for their node */
    /* Nothing changes when asked again. */
    ASSERT_OK(ctl_expctl_nodes_changed(db, &lost, 21, &more, &err), &err);
    ASSERT_INT_EQ(more.n, 0);
    /* Back: its workers are started again (adopted ones answer EEXIST) and it runs. */
    ASSERT_OK(ctl_expctl_nodes_changed(db, &inv, 30, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_RUNNING);
    ASSERT_INT_EQ(count(&more, CTL_CMD_START, "robo"), 2);
    ASSERT_INT_EQ(more.n, 2);
    ctl_cmds_free(&more);
    /* The learner's node lost with the state not shared: it waits too. */
    n2[0].state = CTL_NODE_READY;
    r2[0].state = r2[1].state = CTL_RES_AVAILABLE;
    n2[1].state = CTL_NODE_LOST;
    ctl_inv_gpu_t g2[1];
    memcpy(g2, gpus, sizeof g2);
    g2[0].state = CTL_RES_LOST;
    ctl_inventory_t lost2 = {n2, 2, g2, 1, r2, 2};
    ASSERT_OK(ctl_expctl_nodes_changed(db, &lost2, 40, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_DEGRADED);
    ASSERT_INT_EQ(more.n, 0);
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    ctl_cmds_free(&cmds);
    ctl_cmds_free(&more);
    free(yaml);
    sqlite3_close(db);
}

/* A progress report of one worker (time_ms != 0: reported). */
static ctl_progress_report_t prog(const char *role, int index, int64_t gen, const char *state, int64_t env_steps,
                                  int64_t updates, int64_t ckpt)
{
    ctl_progress_report_t r = {.experiment = "reach-sac", .generation = gen, .role = role, .index = index,
                               .dir = "/srv/exp/reach-sac"};
    snprintf(r.p.state, sizeof r.p.state, "%s", state);
    r.p.env_steps = env_steps;
    r.p.episodes = env_steps / 50;
    r.p.updates = updates;
    r.p.policy_version = updates / 100;
    r.p.checkpoint = ckpt;
    r.p.eval_success_rate = -1;
    r.p.time_ms = 1;
    return r;
}

static ctl_exp_t get_exp(sqlite3 *db)
{
    ctl_exp_t e;
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_get(db, "reach-sac", &e, &err), &err);
    return e;
}

/* Reports from envs and the learner add up; the learner's evaluation at the goal
 * stops the run, which ends done once every worker ended. */
static void test_progress_aggregates_and_goal(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len);
    ctl_cmds_t cmds = {0}, more = {0};
    const char *sets[] = {"learner.gpus=1"};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, sets, 1, NULL, NULL, 10, NULL, &cmds, &err), &err);
    report(db, &cmds, "running", &more);
    /* Before the learner reports, the envs' own counts. */
    ctl_progress_report_t envs[2] = {prog("env", 0, 1, "running", 300, 0, 0), prog("env", 1, 1, "running", 200, 0, 0)};
    envs[0].p.steps_per_s = 100;
    envs[1].p.steps_per_s = 50;
    ASSERT_OK(ctl_expctl_progress(db, "robo", envs, 2, 1000, &more, &err), &err);
    ctl_exp_t e = get_exp(db);
    ASSERT_INT_EQ(e.progress.env_steps, 500);
    ASSERT_NEAR(e.progress.env_steps_per_s, 150, 1e-9);
    ASSERT_INT_EQ(e.progress.running_ms, 0); /* the first report starts the clock */
    ctl_exp_clear(&e);
    /* The learner's counters win: committed steps, updates, its checkpoint. */
    ctl_progress_report_t l = prog("learner", 0, 1, "running", 480, 2300, 2000);
    l.p.staleness = 1.6;
    l.p.updates_per_s = 900;
    l.p.success_rate = 0.4;
    l.p.eval_success_rate = 0.7;
    l.p.eval_round = 1;
    l.p.mean_return = -120;
    ASSERT_OK(ctl_expctl_progress(db, "gpu", &l, 1, 2000, &more, &err), &err);
    e = get_exp(db);
    ASSERT_INT_EQ(e.progress.env_steps, 480);
    ASSERT_INT_EQ(e.progress.updates, 2300);
    ASSERT_INT_EQ(e.progress.policy_version, 23);
    ASSERT_INT_EQ(e.progress.staleness, 2);
    ASSERT_NEAR(e.progress.success_rate, 0.7, 1e-9);
    ASSERT_NEAR(e.progress.train_success_rate, 0.4, 1e-9);
    ASSERT_NEAR(e.progress.mean_return, -120, 1e-9);
    ASSERT_NEAR(e.progress.updates_per_s, 900, 1e-9);
    ASSERT_NEAR(e.progress.env_steps_per_s, 150, 1e-9);
    ASSERT_INT_EQ(e.progress.running_ms, 1000);
    ASSERT_INT_EQ(e.ckpt_updates, 2000);
    ASSERT_STR_EQ(e.learner_node, "gpu");
    ASSERT_STR_EQ(e.dir, "/srv/exp/reach-sac");
    ASSERT_INT_EQ(e.state, CTL_EXP_RUNNING);
    ctl_exp_clear(&e);
    ASSERT_INT_EQ(more.n, 0);
    /* Per worker, for `exp status`; hosted slots show their host's report. */
    ctl_exp_worker_t *w;
    size_t nw;
    ASSERT_OK(ctl_exp_workers(db, "reach-sac", &w, &nw, &err), &err);
    for (size_t i = 0; i < nw; i++) {
        if (w[i].slot.role == CTL_ROLE_BUFFER) ASSERT_INT_EQ(w[i].progress.updates, 2300);
        if (w[i].slot.role == CTL_ROLE_ENV && w[i].slot.index == 1) ASSERT_INT_EQ(w[i].progress.env_steps, 200);
    }
    free(w);
    /* Reports that are not the placed worker change nothing: another node, an earlier run. */
    ctl_progress_report_t stray[2] = {prog("learner", 0, 1, "running", 9999, 9999, 0),
                                      prog("env", 0, 0, "running", 9999, 0, 0)};
    ASSERT_OK(ctl_expctl_progress(db, "robo", stray, 2, 2500, &more, &err), &err);
    e = get_exp(db);
    ASSERT_INT_EQ(e.progress.updates, 2300);
    ctl_exp_clear(&e);
    /* A directory that is not an absolute printable path is not recorded; the counters are. */
    ctl_progress_report_t odd = prog("learner", 0, 1, "running", 490, 2310, 2000);
    odd.dir = "/srv/exp\nrm -rf";
    ASSERT_OK(ctl_expctl_progress(db, "gpu", &odd, 1, 2600, &more, &err), &err);
    e = get_exp(db);
    ASSERT_STR_EQ(e.dir, "/srv/exp/reach-sac");
    ASSERT_INT_EQ(e.progress.updates, 2310);
    ctl_exp_clear(&e);
    /* A learner counter behind its recorded checkpoint is refused. */
    ctl_progress_report_t behind = prog("learner", 0, 1, "running", 500, 1500, 0);
    ASSERT_INT_EQ(ctl_expctl_progress(db, "gpu", &behind, 1, 3000, &more, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "fell back past its newest checkpoint") != NULL);
    e = get_exp(db);
    ASSERT_INT_EQ(e.progress.updates, 2310);
    ctl_exp_clear(&e);
    /* An evaluation at the goal (0.9): stopping, as done, STOPs to both nodes. */
    l = prog("learner", 0, 1, "running", 900, 4100, 4000);
    l.p.eval_success_rate = 0.92;
    l.p.eval_round = 2;
    ASSERT_OK(ctl_expctl_progress(db, "gpu", &l, 1, 4000, &more, &err), &err);
    e = get_exp(db);
    ASSERT_INT_EQ(e.state, CTL_EXP_STOPPING);
    ASSERT_STR_EQ(e.message, CTL_EXP_GOAL_MSG);
    ctl_exp_clear(&e);
    ASSERT_INT_EQ(count(&more, CTL_CMD_STOP, "robo"), 1);
    ASSERT_INT_EQ(count(&more, CTL_CMD_STOP, "gpu"), 1);
    ctl_cmds_free(&more);
    report(db, &cmds, "stopped", &more);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_DONE);
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    ctl_cmds_free(&cmds);
    ctl_cmds_free(&more);
    free(yaml);
    sqlite3_close(db);
}

/* The learner says done, then the processes end by themselves (exit 0): done. */
static void test_learner_done_then_exits(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len);
    ctl_cmds_t cmds = {0}, more = {0};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, NULL, 0, NULL, NULL, 10, NULL, &cmds, &err), &err);
    report(db, &cmds, "running", &more);
    /* An env ends first (the learner told it): its own status says done. */
    ctl_progress_report_t env = prog("env", 1, 1, "done", 4000, 0, 0);
    ASSERT_OK(ctl_expctl_progress(db, "robo", &env, 1, 100, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_STOPPING);
    ctl_cmds_free(&more);
    report(db, &cmds, "exited", &more);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_DONE);
    /* Its robots are free again: a new experiment can have them. */
    ctl_cmds_t again = {0};
    const char *other[] = {"name=reach-2"};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, other, 1, NULL, NULL, 200, NULL, &again, &err),
              &err);
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    ctl_cmds_free(&again);
    ctl_cmds_free(&cmds);
    ctl_cmds_free(&more);
    free(yaml);
    sqlite3_close(db);
}

/* A worker that exits 0 nobody asked to stop, and no goal: the run stops (not done). */
static void test_exit_without_goal_stops(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len);
    ctl_cmds_t cmds = {0}, more = {0};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, NULL, 0, NULL, NULL, 10, NULL, &cmds, &err), &err);
    report(db, &cmds, "running", &more);
    ASSERT_OK(ctl_expctl_worker_status(db, "robo", "reach-sac", 1, "env", 0, "exited", 0, 0, 20, &more, &err), &err);
    ctl_exp_t e = get_exp(db);
    ASSERT_INT_EQ(e.state, CTL_EXP_STOPPING);
    ASSERT_TRUE(strstr(e.message, "worker env-0 on robo exited by itself") != NULL);
    ctl_exp_clear(&e);
    ASSERT_INT_EQ(count(&more, CTL_CMD_STOP, NULL), 1);
    ctl_cmds_free(&more);
    report(db, &cmds, "stopped", &more);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_STOPPED);
    /* Stopped, not done: it resumes. */
    ctl_cmds_free(&cmds);
    ASSERT_OK(ctl_expctl_resume(db, &inv, "reach-sac", NULL, 0, NULL, NULL, 30, &cmds, &err), &err);
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    ctl_cmds_free(&cmds);
    ctl_cmds_free(&more);
    free(yaml);
    sqlite3_close(db);
}

/* The stop conditions the controller checks itself: updates, and running time
 * (counted between reports, at most 5 s for one gap). */
static void test_goal_by_updates_and_time(void)
{
    sqlite3 *db = open_db();
    cr_err_t err = {0};
    size_t len;
    char *yaml = demo_yaml(&len);
    ctl_cmds_t cmds = {0}, more = {0};
    const char *sets[] = {"stop.updates=5000", "stop.wall_time=12s"};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, sets, 2, NULL, NULL, 10, NULL, &cmds, &err), &err);
    report(db, &cmds, "running", &more);
    ctl_progress_report_t l = prog("learner", 0, 1, "running", 100, 10, 0);
    int64_t t[] = {1000, 4000, 60000, 61000, 64000};  /* a 56 s gap counts 5 s */
    for (int i = 0; i < 5; i++) {
        ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_RUNNING);
        ASSERT_OK(ctl_expctl_progress(db, "robo", &l, 1, t[i], &more, &err), &err);
    }
    ctl_exp_t e = get_exp(db);
    ASSERT_INT_EQ(e.progress.running_ms, 3000 + 5000 + 1000 + 3000);
    ASSERT_INT_EQ(e.state, CTL_EXP_STOPPING);
    ctl_exp_clear(&e);
    ctl_cmds_free(&more);
    report(db, &cmds, "stopped", &more);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_DONE);
    /* The same by updates, in a second experiment. */
    ctl_cmds_free(&cmds);
    const char *sets2[] = {"name=reach-2", "stop.updates=5000"};
    ASSERT_OK(ctl_expctl_submit(db, &inv, "reach-sac.yaml", yaml, len, sets2, 2, NULL, NULL, 70000, NULL, &cmds, &err),
              &err);
    report(db, &cmds, "running", &more);
    l.experiment = "reach-2";
    l.p.updates = 4999;
    ASSERT_OK(ctl_expctl_progress(db, "robo", &l, 1, 71000, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-2"), CTL_EXP_RUNNING);
    l.p.updates = 5000;
    ASSERT_OK(ctl_expctl_progress(db, "robo", &l, 1, 72000, &more, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-2"), CTL_EXP_STOPPING);
    ASSERT_OK(ctl_exp_check(db, &err), &err);
    ctl_cmds_free(&cmds);
    ctl_cmds_free(&more);
    free(yaml);
    sqlite3_close(db);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"submit_run_goal_done", test_submit_run_goal_done},
        {"refusals_change_nothing", test_refusals_change_nothing},
        {"failure_then_resume", test_failure_then_resume},
        {"node_lost_and_back", test_node_lost_and_back},
        {"progress_aggregates_and_goal", test_progress_aggregates_and_goal},
        {"learner_done_then_exits", test_learner_done_then_exits},
        {"exit_without_goal_stops", test_exit_without_goal_stops},
        {"goal_by_updates_and_time", test_goal_by_updates_and_time},
        {NULL, NULL},
    };
    return test_main("expctl", cases, argc, argv);
}
