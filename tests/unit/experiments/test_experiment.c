/* test_experiment.c - the experiment lifecycle over a real SQLite file: every
 * transition of the table, placements that come and go with resources, resume
 * with generations, counters that never fall behind a checkpoint, a fault
 * injected into a write (the call changes nothing), reopening the file, the
 * migration of a version 1 file, workers' progress and where workers ran. */
#include "tests/harness.h"
#include "controller/experiment.h"

#include <sqlite3.h>
#include <stdlib.h>

static sqlite3 *open_db(const char *dir)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/state.db", dir);
    sqlite3 *db = NULL;
    ASSERT_INT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_schema(db, &err), &err);
    return db;
}

static void check(sqlite3 *db)
{
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_check(db, &err), &err);
}

/* A two-robot placement on one node, through the real scheduler. */
static ctl_placement_t *demo_placement(const char *exp)
{
    static ctl_inv_node_t n[] = {{"local", CTL_NODE_READY, 1, NULL}, {"gpu", CTL_NODE_READY, 1, NULL}};
    static ctl_inv_gpu_t g[] = {{"gpu", 0, 1ULL << 34, CTL_RES_AVAILABLE, NULL}};
    static ctl_inv_robot_t r[] = {
        {"sim-0", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
        {"sim-1", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
    };
    ctl_inventory_t inv = {n, 2, g, 1, r, 2};
    ctl_sched_request_t q = {.experiment = exp, .robot_count = 2, .learner_gpus = 1, .actor_cpu = 1};
    ctl_placement_t *p;
    cr_err_t err = {0};
    ASSERT_OK(ctl_sched_place(&inv, &q, &p, &err), &err);
    return p;
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

static void report_all(sqlite3 *db, const char *name, const ctl_placement_t *p, int64_t gen, const char *state)
{
    cr_err_t err = {0};
    for (size_t i = 0; i < p->n_slots; i++)
        ASSERT_OK(ctl_exp_worker_report(db, name, gen, p->slots[i].role, p->slots[i].index, state,
                                        1000 + (int)i, 0, 10, &err), &err);
}

static void test_transition_table(void)
{
    /* The lifecycle as the issue states it, written out independently. */
    static const char *const ok[] = {
        "submitted>scheduled", "submitted>stopped", "submitted>failed",
        "scheduled>running", "scheduled>degraded", "scheduled>stopping", "scheduled>failed",
        "running>degraded", "running>stopping", "running>failed",
        "degraded>running", "degraded>stopping", "degraded>failed",
        "stopping>stopped", "stopping>failed", "stopping>done",
        "stopped>submitted", "failed>submitted",
    };
    int allowed = 0;
    for (int f = 0; f < CTL_EXP_NSTATES; f++)
        for (int t = 0; t < CTL_EXP_NSTATES; t++) {
            char key[40];
            snprintf(key, sizeof key, "%s>%s", ctl_exp_state_name(f), ctl_exp_state_name(t));
            int want = 0;
            for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) want |= strcmp(ok[i], key) == 0;
            if (ctl_exp_transition_ok(f, t) != want) fprintf(stderr, "  transition %s\n", key);
            ASSERT_INT_EQ(ctl_exp_transition_ok(f, t), want);
            allowed += want;
        }
    ASSERT_INT_EQ(allowed, 18);
    for (int s = 0; s < CTL_EXP_NSTATES; s++) ASSERT_INT_EQ(ctl_exp_state_parse(ctl_exp_state_name(s)), s);
    ASSERT_INT_EQ(ctl_exp_state_parse("paused"), -1);
    ASSERT_INT_EQ(ctl_exp_transition_ok(CTL_EXP_DONE, 99), 0);
}

static void test_full_lifecycle(void)
{
    sqlite3 *db = open_db(test_tmpdir());
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_create(db, "reach-sac", "name: reach-sac\n", 1000, &err), &err);
    check(db);
    ctl_placement_t *p = demo_placement("reach-sac"), *got;
    ASSERT_INT_EQ(ctl_exp_get_placement(db, "reach-sac", &got, &err), CR_ENOENT);
    ASSERT_OK(ctl_exp_schedule(db, "reach-sac", p, 1100, &err), &err);
    check(db);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_SCHEDULED);
    ASSERT_INT_EQ(ctl_exp_schedule(db, "reach-sac", p, 1100, &err), CR_EBUSY);
    ASSERT_OK(ctl_exp_get_placement(db, "reach-sac", &got, &err), &err);
    ASSERT_INT_EQ(got->n_slots, p->n_slots);
    ASSERT_TRUE(memcmp(got->slots, p->slots, p->n_slots * sizeof *p->slots) == 0);
    ASSERT_INT_EQ(got->slots[4].n_gpus, 1);
    ctl_placement_free(got);

    /* Gang: running only once every worker reports running. */
    int all = -1;
    ASSERT_OK(ctl_exp_workers_running(db, "reach-sac", &all, &err), &err);
    ASSERT_INT_EQ(all, 0);
    report_all(db, "reach-sac", p, 1, "running");
    ASSERT_OK(ctl_exp_worker_report(db, "reach-sac", 1, CTL_ROLE_ENV, 0, "backoff", 0, 1, 20, &err), &err);
    ASSERT_OK(ctl_exp_workers_running(db, "reach-sac", &all, &err), &err);
    ASSERT_INT_EQ(all, 0);
    ASSERT_OK(ctl_exp_worker_report(db, "reach-sac", 1, CTL_ROLE_ENV, 0, "running", 77, 1, 30, &err), &err);
    ASSERT_OK(ctl_exp_workers_running(db, "reach-sac", &all, &err), &err);
    ASSERT_INT_EQ(all, 1);
    ASSERT_INT_EQ(ctl_exp_worker_report(db, "reach-sac", 1, CTL_ROLE_ACTOR, 7, "running", 1, 0, 30, &err), CR_ENOENT);
    ctl_exp_worker_t *ws;
    size_t nw;
    ASSERT_OK(ctl_exp_workers(db, "reach-sac", &ws, &nw, &err), &err);
    ASSERT_INT_EQ(nw, 6);
    ASSERT_STR_EQ(ws[0].state, "running");
    ASSERT_INT_EQ(ws[0].pid, 77);
    ASSERT_INT_EQ(ws[0].restarts, 1);
    ASSERT_INT_EQ(ws[0].slot.role, CTL_ROLE_ENV);
    ASSERT_INT_EQ(ws[4].slot.role, CTL_ROLE_LEARNER);
    free(ws);
    ASSERT_OK(ctl_exp_transition(db, "reach-sac", CTL_EXP_RUNNING, "all workers up", 1200, &err), &err);
    ASSERT_OK(ctl_exp_transition(db, "reach-sac", CTL_EXP_RUNNING, "retried", 1200, &err), &err); /* no-op */

    /* A node is lost: the repaired placement marks waiting slots, state degraded. */
    p->slots[0].waiting = 1;
    ASSERT_OK(ctl_exp_replace(db, "reach-sac", p, 1, 1300, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_DEGRADED);
    check(db);
    /* A slot that moved starts over as pending; one that stayed keeps its report. */
    p->slots[0].waiting = 0;
    snprintf(p->slots[4].node, sizeof p->slots[4].node, "local");
    p->slots[4].n_gpus = 0;
    ASSERT_OK(ctl_exp_replace(db, "reach-sac", p, 0, 1400, &err), &err);
    ASSERT_INT_EQ(state_of(db, "reach-sac"), CTL_EXP_RUNNING);
    ASSERT_OK(ctl_exp_workers_running(db, "reach-sac", &all, &err), &err);
    ASSERT_INT_EQ(all, 0);
    ASSERT_OK(ctl_exp_worker_report(db, "reach-sac", 1, CTL_ROLE_LEARNER, 0, "running", 88, 0, 40, &err), &err);
    ASSERT_OK(ctl_exp_workers_running(db, "reach-sac", &all, &err), &err);
    ASSERT_INT_EQ(all, 1);

    /* Progress and checkpoints. */
    ctl_exp_progress_t prog = {.env_steps = 5000, .episodes = 100, .updates = 2500, .policy_version = 25,
                               .success_rate = 0.5, .mean_return = -3.5, .staleness = 2};
    ASSERT_OK(ctl_exp_progress(db, "reach-sac", &prog, 1500, &err), &err);
    ASSERT_OK(ctl_exp_checkpointed(db, "reach-sac", 1, 2000, 1500, &err), &err);
    ctl_exp_t e;
    ASSERT_OK(ctl_exp_get(db, "reach-sac", &e, &err), &err);
    ASSERT_INT_EQ(e.progress.updates, 2500);
    ASSERT_INT_EQ(e.progress.env_steps, 5000);
    ASSERT_NEAR(e.progress.success_rate, 0.5, 1e-12);
    ASSERT_INT_EQ(e.ckpt_n, 1);
    ASSERT_INT_EQ(e.ckpt_updates, 2000);
    ASSERT_STR_EQ(e.spec, "name: reach-sac\n");
    ctl_exp_clear(&e);

    /* Stop condition reached: stopping, then done; resources go back. */
    ASSERT_INT_EQ(ctl_exp_transition(db, "reach-sac", CTL_EXP_DONE, "goal", 1600, &err), CR_EBUSY);
    ASSERT_STR_EQ(err.msg, "experiment reach-sac is running and cannot become done");
    ASSERT_OK(ctl_exp_transition(db, "reach-sac", CTL_EXP_STOPPING, "stop condition reached", 1600, &err), &err);
    ASSERT_OK(ctl_exp_transition(db, "reach-sac", CTL_EXP_DONE, "success_rate 0.95", 1700, &err), &err);
    check(db);
    ASSERT_INT_EQ(ctl_exp_get_placement(db, "reach-sac", &got, &err), CR_ENOENT);
    ASSERT_OK(ctl_exp_workers(db, "reach-sac", &ws, &nw, &err), &err);
    ASSERT_INT_EQ(nw, 0);
    ASSERT_INT_EQ(ctl_exp_resume(db, "reach-sac", NULL, 1800, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "is done") != NULL);
    ASSERT_INT_EQ(ctl_exp_worker_report(db, "reach-sac", 1, CTL_ROLE_ENV, 0, "running", 1, 0, 1, &err), CR_EBUSY);

    /* The journal tells the story in order. */
    ctl_exp_event_t *ev;
    size_t n;
    ASSERT_OK(ctl_exp_events(db, "reach-sac", 0, 1000, &ev, &n, &err), &err);
    const char *states[8];
    int ns = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(ev[i].kind, "state") == 0 && ns < 8) states[ns++] = ev[i].to_state;
    ASSERT_INT_EQ(ns, 7);
    const char *want[] = {"submitted", "scheduled", "running", "degraded", "running", "stopping", "done"};
    for (int i = 0; i < 7; i++) ASSERT_STR_EQ(states[i], want[i]);
    int64_t last = ev[n - 1].id;
    free(ev);
    ASSERT_OK(ctl_exp_events(db, "reach-sac", last, 10, &ev, &n, &err), &err);
    ASSERT_INT_EQ(n, 0);
    free(ev);
    ASSERT_OK(ctl_exp_events(db, NULL, 0, 3, &ev, &n, &err), &err);
    ASSERT_INT_EQ(n, 3); /* the limit holds */
    free(ev);
    ctl_placement_free(p);
    sqlite3_close(db);
}

static void test_resume_and_generations(void)
{
    sqlite3 *db = open_db(test_tmpdir());
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_create(db, "e1", "v1", 1, &err), &err);
    ctl_placement_t *p = demo_placement("e1");
    ASSERT_INT_EQ(ctl_exp_resume(db, "e1", NULL, 2, &err), CR_EBUSY);
    ASSERT_STR_EQ(err.msg, "experiment e1 is submitted; only a stopped or failed experiment resumes");
    ASSERT_OK(ctl_exp_schedule(db, "e1", p, 2, &err), &err);
    report_all(db, "e1", p, 1, "running");
    ASSERT_OK(ctl_exp_transition(db, "e1", CTL_EXP_RUNNING, "up", 3, &err), &err);
    ASSERT_OK(ctl_exp_checkpointed(db, "e1", 3, 300, 4, &err), &err);
    ASSERT_OK(ctl_exp_transition(db, "e1", CTL_EXP_FAILED, "learner gave up after 5 crashes", 5, &err), &err);
    check(db);
    ASSERT_OK(ctl_exp_set_overrides(db, "e1", "robots.count=1\nalgorithm.lr=1e-3", &err), &err);
    ASSERT_INT_EQ(ctl_exp_set_overrides(db, "e9", "", &err), CR_ENOENT);
    ASSERT_OK(ctl_exp_resume(db, "e1", "v2", 6, &err), &err);
    check(db);
    ctl_exp_t e;
    ASSERT_OK(ctl_exp_get(db, "e1", &e, &err), &err);
    ASSERT_INT_EQ(e.state, CTL_EXP_SUBMITTED);
    ASSERT_INT_EQ(e.generation, 2);
    ASSERT_STR_EQ(e.spec, "v2");
    ASSERT_STR_EQ(e.sets, "robots.count=1\nalgorithm.lr=1e-3");
    ASSERT_STR_EQ(e.message, "resumed (run 2)");
    ASSERT_INT_EQ(e.ckpt_n, 3); /* counters continue */
    ASSERT_INT_EQ(e.progress.updates, 300);
    ctl_exp_clear(&e);
    ASSERT_OK(ctl_exp_schedule(db, "e1", p, 7, &err), &err);
    /* A worker of run 1 that an agent still had is told it is stale. */
    ASSERT_INT_EQ(ctl_exp_worker_report(db, "e1", 1, CTL_ROLE_ENV, 0, "running", 5, 0, 8, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "earlier run") != NULL);
    report_all(db, "e1", p, 2, "running");
    /* The update counter may fall back to the checkpoint, not past it. */
    ctl_exp_progress_t prog = {.updates = 299};
    ASSERT_INT_EQ(ctl_exp_progress(db, "e1", &prog, 9, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "fell back past its newest checkpoint (300 updates)") != NULL);
    prog.updates = 300;
    ASSERT_OK(ctl_exp_progress(db, "e1", &prog, 9, &err), &err);
    prog.updates = 400;
    prog.success_rate = 1.5;
    ASSERT_INT_EQ(ctl_exp_progress(db, "e1", &prog, 9, &err), CR_EINVAL);
    ASSERT_INT_EQ(ctl_exp_checkpointed(db, "e1", 3, 400, 10, &err), CR_EINVAL);
    ASSERT_INT_EQ(ctl_exp_checkpointed(db, "e1", 4, 200, 10, &err), CR_EINVAL);
    ASSERT_OK(ctl_exp_checkpointed(db, "e1", 4, 400, 10, &err), &err);
    /* A user stop before anything ran: stopping, stopped, resumed again. */
    ASSERT_OK(ctl_exp_transition(db, "e1", CTL_EXP_STOPPING, "user", 11, &err), &err);
    ASSERT_OK(ctl_exp_transition(db, "e1", CTL_EXP_STOPPED, "workers ended", 12, &err), &err);
    ASSERT_OK(ctl_exp_resume(db, "e1", NULL, 13, &err), &err);
    ASSERT_OK(ctl_exp_get(db, "e1", &e, &err), &err);
    ASSERT_INT_EQ(e.generation, 3);
    ASSERT_STR_EQ(e.spec, "v2");
    ctl_exp_clear(&e);
    ASSERT_OK(ctl_exp_transition(db, "e1", CTL_EXP_STOPPED, "stopped before scheduling", 14, &err), &err);
    check(db);
    ctl_placement_free(p);
    sqlite3_close(db);
}

static void test_bad_input(void)
{
    sqlite3 *db = open_db(test_tmpdir());
    cr_err_t err = {0};
    ASSERT_INT_EQ(ctl_exp_create(db, "Bad Name", "", 1, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "bad experiment name 'Bad Name'") != NULL);
    ASSERT_INT_EQ(ctl_exp_create(db, NULL, "", 1, &err), CR_EINVAL);
    ASSERT_OK(ctl_exp_create(db, "x", "", 1, &err), &err);
    ASSERT_INT_EQ(ctl_exp_create(db, "x", "", 1, &err), CR_EEXIST);
    ASSERT_STR_EQ(err.msg, "experiment x already exists (submitted); pick another name or `corral exp resume x`");
    ctl_exp_t e;
    ASSERT_INT_EQ(ctl_exp_get(db, "nope", &e, &err), CR_ENOENT);
    ASSERT_STR_EQ(err.msg, "no experiment named nope");
    ASSERT_INT_EQ(ctl_exp_transition(db, "x", CTL_EXP_RUNNING, "", 2, &err), CR_EBUSY);
    ASSERT_STR_EQ(err.msg, "experiment x is submitted and cannot become running");
    ASSERT_INT_EQ(ctl_exp_transition(db, "x", CTL_EXP_SCHEDULED, "", 2, &err), CR_EINVAL);
    ASSERT_INT_EQ(ctl_exp_transition(db, "x", CTL_EXP_SUBMITTED, "", 2, &err), CR_EINVAL);
    ctl_placement_t empty = {0};
    ASSERT_INT_EQ(ctl_exp_schedule(db, "x", &empty, 2, &err), CR_EINVAL);
    ctl_placement_t *p = demo_placement("x");
    ASSERT_INT_EQ(ctl_exp_replace(db, "x", p, 0, 2, &err), CR_EBUSY);
    ASSERT_INT_EQ(ctl_exp_worker_report(db, "x", 1, CTL_ROLE_ENV, 0, "running", 1, 0, 1, &err), CR_EBUSY);
    ctl_placement_free(p);
    /* A row this module did not write is an error, never a crash. */
    sqlite3_exec(db, "UPDATE experiments SET state = 'paused' WHERE name = 'x'", NULL, NULL, NULL);
    ASSERT_INT_EQ(ctl_exp_get(db, "x", &e, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "unknown state 'paused'") != NULL);
    ASSERT_INT_EQ(ctl_exp_check(db, &err), CR_ECORRUPT);
    ctl_exp_t *list;
    size_t n;
    ASSERT_INT_EQ(ctl_exp_list(db, &list, &n, &err), CR_ECORRUPT);
    sqlite3_close(db);
}

/* A write that fails half-way (a trigger aborts the second placement row) leaves
 * the experiment exactly as it was: state, placement and journal. */
static void test_failed_write_changes_nothing(void)
{
    sqlite3 *db = open_db(test_tmpdir());
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_create(db, "f", "", 1, &err), &err);
    ctl_exp_event_t *ev;
    size_t before, after;
    ASSERT_OK(ctl_exp_events(db, NULL, 0, 100, &ev, &before, &err), &err);
    free(ev);
    ASSERT_INT_EQ(sqlite3_exec(db,
                               "CREATE TRIGGER inject BEFORE INSERT ON placements WHEN NEW.idx = 1"
                               " BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
                               NULL, NULL, NULL), SQLITE_OK);
    ctl_placement_t *p = demo_placement("f"), *got;
    ASSERT_INT_EQ(ctl_exp_schedule(db, "f", p, 2, &err), CR_EIO);
    ASSERT_TRUE(strstr(err.msg, "injected fault") != NULL);
    ASSERT_INT_EQ(state_of(db, "f"), CTL_EXP_SUBMITTED);
    ASSERT_INT_EQ(ctl_exp_get_placement(db, "f", &got, &err), CR_ENOENT);
    ASSERT_OK(ctl_exp_events(db, NULL, 0, 100, &ev, &after, &err), &err);
    free(ev);
    ASSERT_INT_EQ(after, before);
    check(db);
    sqlite3_exec(db, "DROP TRIGGER inject", NULL, NULL, NULL);
    ASSERT_OK(ctl_exp_schedule(db, "f", p, 3, &err), &err);
    check(db);
    ctl_placement_free(p);
    sqlite3_close(db);
}

typedef struct seen { int robots, gpus; char exp[8]; } seen_t;

static void holder(void *ud, const char *exp, const char *node, const char *robot, int gpu)
{
    seen_t *seen = ud;
    if (*robot) seen->robots++;
    if (gpu >= 0) {
        seen->gpus++;
        ASSERT_STR_EQ(node, "gpu");
    }
    snprintf(seen->exp, sizeof seen->exp, "%s", exp);
}

static void test_holders_and_reopen(void)
{
    const char *dir = test_tmpdir();
    sqlite3 *db = open_db(dir);
    cr_err_t err = {0};
    ctl_placement_t *p = demo_placement("a");
    ASSERT_OK(ctl_exp_create(db, "a", "", 1, &err), &err);
    ASSERT_OK(ctl_exp_schedule(db, "a", p, 2, &err), &err);
    ASSERT_OK(ctl_exp_create(db, "b", "", 1, &err), &err);
    ASSERT_OK(ctl_exp_schedule(db, "b", p, 2, &err), &err);
    ASSERT_OK(ctl_exp_transition(db, "b", CTL_EXP_FAILED, "start failed", 3, &err), &err);
    sqlite3_close(db);

    /* After a controller restart the same state is there, schema call idempotent. */
    db = open_db(dir);
    check(db);
    ctl_exp_t *list;
    size_t n;
    ASSERT_OK(ctl_exp_list(db, &list, &n, &err), &err);
    ASSERT_INT_EQ(n, 2);
    ASSERT_STR_EQ(list[0].name, "a");
    ASSERT_INT_EQ(list[0].state, CTL_EXP_SCHEDULED);
    ASSERT_INT_EQ(list[1].state, CTL_EXP_FAILED);
    ASSERT_STR_EQ(list[1].message, "start failed");
    ctl_exp_list_free(list, n);
    /* Only a's resources are held: 2 robots, and the learner's GPU. */
    seen_t seen = {0, 0, ""};
    ASSERT_OK(ctl_exp_holders(db, holder, &seen, &err), &err);
    ASSERT_INT_EQ(seen.robots, 4); /* env and actor rows each name their robot */
    ASSERT_INT_EQ(seen.gpus, 1);
    ASSERT_STR_EQ(seen.exp, "a");
    /* A newer schema is refused rather than misread. */
    sqlite3_exec(db, "UPDATE experiment_meta SET version = 9", NULL, NULL, NULL);
    ASSERT_INT_EQ(ctl_exp_schema(db, &err), CR_EVERSION);
    ctl_placement_free(p);
    sqlite3_close(db);
}

typedef struct wn {
    char rows[16][96];
    int n;
} wn_t;

static void on_worker_node(void *ud, ctl_role_t role, int index, const char *node, const char *dir)
{
    wn_t *w = ud;
    if (w->n < 16) snprintf(w->rows[w->n++], 96, "%s-%d@%s:%s", ctl_role_name(role), index, node, dir);
}

/* A state.db of schema version 1 (before progress reports) is migrated in place:
 * rows kept, the new columns and worker_nodes there, filled from the placement.
 * Progress reports then land on their worker; the nodes a worker was placed on
 * outlive the placement. */
static void test_migration_and_worker_nodes(void)
{
    sqlite3 *db = open_db(test_tmpdir());
    cr_err_t err = {0};
    ASSERT_OK(ctl_exp_create(db, "m1", "name: m1\n", 10, &err), &err);
    ctl_placement_t *p = demo_placement("m1");
    ASSERT_OK(ctl_exp_schedule(db, "m1", p, 20, &err), &err);
    /* Back to version 1: its tables, its version row. */
    static const char *const v1[] = {
        "ALTER TABLE experiments DROP COLUMN train_success_rate", "ALTER TABLE experiments DROP COLUMN env_steps_per_s",
        "ALTER TABLE experiments DROP COLUMN updates_per_s", "ALTER TABLE experiments DROP COLUMN running_ms",
        "ALTER TABLE experiments DROP COLUMN progress_ms", "ALTER TABLE experiments DROP COLUMN learner_node",
        "ALTER TABLE experiments DROP COLUMN dir", "ALTER TABLE placements DROP COLUMN progress",
        "DROP TABLE worker_nodes", "UPDATE experiment_meta SET version = 1",
    };
    for (size_t i = 0; i < sizeof v1 / sizeof v1[0]; i++) ASSERT_INT_EQ(sqlite3_exec(db, v1[i], NULL, NULL, NULL), SQLITE_OK);
    ASSERT_OK(ctl_exp_schema(db, &err), &err);
    sqlite3_stmt *st;
    ASSERT_INT_EQ(sqlite3_prepare_v2(db, "SELECT version FROM experiment_meta", -1, &st, NULL), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_INT_EQ(sqlite3_column_int(st, 0), 2);
    sqlite3_finalize(st);
    ASSERT_INT_EQ(state_of(db, "m1"), CTL_EXP_SCHEDULED);
    check(db);
    /* A second open of a migrated file changes nothing. */
    ASSERT_OK(ctl_exp_schema(db, &err), &err);

    /* Progress of the learner: kept with its row; its node and dir become the experiment's. */
    ctl_worker_progress_t wp = {.state = "running", .env_steps = 700, .updates = 300, .checkpoint = 200,
                                .eval_success_rate = 0.5, .time_ms = 99};
    ASSERT_OK(ctl_exp_worker_progress(db, "m1", 1, CTL_ROLE_LEARNER, 0, &wp, "gpu", "/d/m1", &err), &err);
    ASSERT_INT_EQ(ctl_exp_worker_progress(db, "m1", 2, CTL_ROLE_LEARNER, 0, &wp, "gpu", "/d/m1", &err), CR_EBUSY);
    ASSERT_INT_EQ(ctl_exp_worker_progress(db, "m1", 1, CTL_ROLE_ENV, 9, &wp, "gpu", "/d/m1", &err), CR_ENOENT);
    ctl_exp_worker_t *w;
    size_t nw;
    ASSERT_OK(ctl_exp_workers(db, "m1", &w, &nw, &err), &err);
    int seen = 0;
    for (size_t i = 0; i < nw; i++) {
        if (w[i].slot.role == CTL_ROLE_LEARNER) {
            ASSERT_STR_EQ(w[i].progress.state, "running");
            ASSERT_INT_EQ(w[i].progress.updates, 300);
            ASSERT_INT_EQ(w[i].progress.checkpoint, 200);
            ASSERT_NEAR(w[i].progress.eval_success_rate, 0.5, 1e-9);
            seen++;
        } else if (w[i].slot.role == CTL_ROLE_ENV) {
            ASSERT_STR_EQ(w[i].progress.state, "");   /* never reported */
            ASSERT_INT_EQ(w[i].progress.time_ms, 0);
        }
    }
    free(w);
    ASSERT_INT_EQ(seen, 1);
    ctl_exp_t e;
    ASSERT_OK(ctl_exp_get(db, "m1", &e, &err), &err);
    ASSERT_STR_EQ(e.learner_node, "gpu");
    ASSERT_STR_EQ(e.dir, "/d/m1");
    ctl_exp_clear(&e);

    /* Where each worker ran, also after the experiment ended (placement dropped). */
    ASSERT_OK(ctl_exp_transition(db, "m1", CTL_EXP_STOPPING, "user", 30, &err), &err);
    ASSERT_OK(ctl_exp_transition(db, "m1", CTL_EXP_STOPPED, "ended", 40, &err), &err);
    wn_t got = {.n = 0};
    ASSERT_OK(ctl_exp_worker_nodes(db, "m1", "learner", -1, on_worker_node, &got, &err), &err);
    ASSERT_INT_EQ(got.n, 1);
    ASSERT_STR_EQ(got.rows[0], "learner-0@gpu:/d/m1");
    got.n = 0;
    ASSERT_OK(ctl_exp_worker_nodes(db, "m1", NULL, 1, on_worker_node, &got, &err), &err);
    ASSERT_INT_EQ(got.n, 2);
    ASSERT_STR_EQ(got.rows[0], "env-1@local:");
    ASSERT_STR_EQ(got.rows[1], "actor-1@local:");
    /* A worker moved to another node keeps both: its logs are on both. */
    ASSERT_OK(ctl_exp_resume(db, "m1", NULL, 50, &err), &err);
    for (size_t i = 0; i < p->n_slots; i++)
        if (p->slots[i].role == CTL_ROLE_LEARNER) snprintf(p->slots[i].node, sizeof p->slots[i].node, "gpu2");
    ASSERT_OK(ctl_exp_schedule(db, "m1", p, 60, &err), &err);
    got.n = 0;
    ASSERT_OK(ctl_exp_worker_nodes(db, "m1", "learner", 0, on_worker_node, &got, &err), &err);
    ASSERT_INT_EQ(got.n, 2);
    ASSERT_STR_EQ(got.rows[0], "learner-0@gpu2:"); /* newest first */
    ASSERT_STR_EQ(got.rows[1], "learner-0@gpu:/d/m1");
    check(db);
    ctl_placement_free(p);
    sqlite3_close(db);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"transition_table", test_transition_table},
        {"full_lifecycle", test_full_lifecycle},
        {"resume_and_generations", test_resume_and_generations},
        {"bad_input", test_bad_input},
        {"failed_write_changes_nothing", test_failed_write_changes_nothing},
        {"holders_and_reopen", test_holders_and_reopen},
        {"migration_and_worker_nodes", test_migration_and_worker_nodes},
        {NULL, NULL},
    };
    return test_main("experiment", cases, argc, argv);
}
