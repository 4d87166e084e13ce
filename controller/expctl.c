/* expctl.c - experiment logic over the lifecycle tables and the scheduler; see
 * expctl.h. Each public call either completes (its rows written in one
 * SAVEPOINT, its commands appended) or returns an error with nothing written
 * and no command appended. */
#include "controller/expctl.h"
#include "common/expspec/expspec.h"
#include "common/id.h"
#include "controller/spec_request.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SETS 128

void ctl_cmds_free(ctl_cmds_t *c)
{
    free(c->v);
    memset(c, 0, sizeof *c);
}

static ctl_worker_cmd_t *cmd_add(ctl_cmds_t *c, ctl_cmd_kind_t kind, const char *node, const char *exp,
                                 int64_t generation)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        ctl_worker_cmd_t *grown = realloc(c->v, cap * sizeof *grown);
        if (!grown) return NULL;
        c->v = grown;
        c->cap = cap;
    }
    ctl_worker_cmd_t *w = &c->v[c->n++];
    memset(w, 0, sizeof *w);
    w->kind = kind;
    snprintf(w->node, sizeof w->node, "%s", node);
    snprintf(w->experiment, sizeof w->experiment, "%s", exp);
    w->generation = generation;
    return w;
}

static int savepoint(sqlite3 *db, const char *sql, cr_err_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    int rc = cr_err_set(err, CR_EIO, "%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return rc;
}

static int finish(sqlite3 *db, int rc, cr_err_t *err)
{
    if (rc == 0 && (rc = savepoint(db, "RELEASE expctl", err)) == 0) return 0;
    cr_err_t ignored = {0};
    savepoint(db, "ROLLBACK TO expctl", &ignored);
    savepoint(db, "RELEASE expctl", &ignored);
    return rc;
}

/* ---- inventory with holders ------------------------------------------------------- */

/* A copy of the caller's inventory with robots and GPUs held by active
 * experiments marked in use by them. */
typedef struct held_inv {
    ctl_inventory_t inv;
    ctl_inv_robot_t *robots;
    ctl_inv_gpu_t *gpus;
    char (*names)[CTL_NAME_MAX];
    size_t n_names, cap_names;
    int failed;
} held_inv_t;

static const char *intern(held_inv_t *h, const char *exp)
{
    for (size_t i = 0; i < h->n_names; i++)
        if (strcmp(h->names[i], exp) == 0) return h->names[i];
    if (h->n_names == h->cap_names) {
        /* Grown in advance (see held_build): a reallocation would move the
         * strings the marked entries point to. */
        h->failed = 1;
        return NULL;
    }
    snprintf(h->names[h->n_names], CTL_NAME_MAX, "%s", exp);
    return h->names[h->n_names++];
}

static void mark(void *ud, const char *exp, const char *node, const char *robot, int gpu)
{
    held_inv_t *h = ud;
    const char *owner = intern(h, exp);
    if (!owner) return;
    if (*robot)
        for (size_t i = 0; i < h->inv.n_robots; i++)
            if (strcmp(h->robots[i].name, robot) == 0) {
                h->robots[i].owner = owner;
                if (h->robots[i].state == CTL_RES_AVAILABLE) h->robots[i].state = CTL_RES_IN_USE;
            }
    if (gpu >= 0)
        for (size_t i = 0; i < h->inv.n_gpus; i++)
            if (h->gpus[i].node && strcmp(h->gpus[i].node, node) == 0 && h->gpus[i].index == gpu) {
                h->gpus[i].owner = owner;
                if (h->gpus[i].state == CTL_RES_AVAILABLE) h->gpus[i].state = CTL_RES_IN_USE;
            }
}

static int held_build(sqlite3 *db, const ctl_inventory_t *in, held_inv_t *h, cr_err_t *err)
{
    memset(h, 0, sizeof *h);
    h->inv = *in;
    h->robots = calloc(in->n_robots + 1, sizeof *h->robots);
    h->gpus = calloc(in->n_gpus + 1, sizeof *h->gpus);
    /* At most one name per holder row; the active experiments bound it. */
    sqlite3_stmt *st;
    int64_t nexp = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM experiments", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) nexp = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    h->cap_names = (size_t)nexp + 1;
    h->names = calloc(h->cap_names, sizeof *h->names);
    if (!h->robots || !h->gpus || !h->names) {
        free(h->robots);
        free(h->gpus);
        free(h->names);
        return cr_err_set(err, CR_ENOMEM, "inventory");
    }
    if (in->n_robots) memcpy(h->robots, in->robots, in->n_robots * sizeof *h->robots);
    if (in->n_gpus) memcpy(h->gpus, in->gpus, in->n_gpus * sizeof *h->gpus);
    h->inv.robots = h->robots;
    h->inv.gpus = h->gpus;
    int rc = ctl_exp_holders(db, mark, h, err);
    if (rc == 0 && h->failed) rc = cr_err_set(err, CR_EINTERNAL, "more holders than experiments");
    if (rc != 0) {
        free(h->robots);
        free(h->gpus);
        free(h->names);
    }
    return rc;
}

static void held_free(held_inv_t *h)
{
    free(h->robots);
    free(h->gpus);
    free(h->names);
}

/* ---- spec -------------------------------------------------------------------------- */

/* Splits "a=b\nc=d" into sets[] (pointers into buf, a copy it owns). */
static size_t split_sets(const char *text, char **buf, const char **sets, size_t max)
{
    *buf = strdup(text ? text : "");
    size_t n = 0;
    for (char *p = *buf; p && *p && n < max;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        if (*p) sets[n++] = p;
        p = nl ? nl + 1 : NULL;
    }
    return n;
}

static char *join_sets(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    size_t len = 1;
    for (size_t i = 0; i < na; i++) len += strlen(a[i]) + 1;
    for (size_t i = 0; i < nb; i++) len += strlen(b[i]) + 1;
    char *out = calloc(1, len), *p = out;
    if (!out) return NULL;
    for (size_t i = 0; i < na + nb; i++) {
        const char *s = i < na ? a[i] : b[i - na];
        p += sprintf(p, "%s%s", p == out ? "" : "\n", s);
    }
    return out;
}

static int check_plugins(const exp_spec_t *spec, ctl_plugin_check_fn check, void *ud, cr_err_t *err)
{
    if (!check) return 0;
    if (exp_spec_is_plugin(spec->task.reward) && check(ud, "task.reward", spec->task.reward, err) != 0)
        return err->code ? err->code : CR_EINVAL;
    if (exp_spec_is_plugin(spec->algorithm.type) && check(ud, "algorithm.type", spec->algorithm.type, err) != 0)
        return err->code ? err->code : CR_EINVAL;
    return 0;
}

/* Loads an experiment's stored spec with its stored overrides plus extra. */
static int load_stored(const ctl_exp_t *e, const char *const *extra, size_t nextra, exp_spec_t *spec,
                       char **joined, cr_err_t *err)
{
    char *buf;
    const char *sets[MAX_SETS];
    size_t n = split_sets(e->sets, &buf, sets, MAX_SETS);
    if (n + nextra > MAX_SETS) {
        free(buf);
        return cr_err_set(err, CR_EINVAL, "more than %d overrides", MAX_SETS);
    }
    for (size_t i = 0; i < nextra; i++) sets[n + i] = extra[i];
    char source[96];
    snprintf(source, sizeof source, "experiment %s", e->name);
    int rc = exp_spec_load_string(spec, source, e->spec, strlen(e->spec), sets, n + nextra, err);
    if (rc == 0 && joined) *joined = join_sets(sets, n + nextra, NULL, 0);
    free(buf);
    return rc;
}

/* ---- commands ---------------------------------------------------------------------- */

static const ctl_slot_t *find_slot(const ctl_placement_t *p, ctl_role_t role, int index)
{
    for (size_t i = 0; i < p->n_slots; i++)
        if (p->slots[i].role == role && p->slots[i].index == index) return &p->slots[i];
    return NULL;
}

/* The slot whose process hosts s when s runs inside another worker, else NULL.
 * The buffer always lives in the learner's process; an actor lives in its env's
 * process (one robot, one process that opens it) when placed on the robot's node.
 * Such slots get no process of their own and share their host's reported state. */
static const ctl_slot_t *host_slot(const ctl_placement_t *p, const ctl_slot_t *s)
{
    const ctl_slot_t *h = NULL;
    if (s->role == CTL_ROLE_BUFFER) h = find_slot(p, CTL_ROLE_LEARNER, 0);
    else if (s->role == CTL_ROLE_ACTOR) h = find_slot(p, CTL_ROLE_ENV, s->index);
    return h && strcmp(h->node, s->node) == 0 ? h : NULL;
}

static int add_start(ctl_cmds_t *cmds, const char *exp, int64_t gen, const ctl_placement_t *p,
                     const ctl_slot_t *s, cr_err_t *err)
{
    if (host_slot(p, s)) return 0; /* started with its host */
    ctl_worker_cmd_t *c = cmd_add(cmds, CTL_CMD_START, s->node, exp, gen);
    if (!c) return cr_err_set(err, CR_ENOMEM, "commands");
    snprintf(c->role, sizeof c->role, "%s", ctl_role_name(s->role));
    c->index = s->index;
    snprintf(c->robot, sizeof c->robot, "%s", s->robot);
    c->n_gpus = s->n_gpus;
    memcpy(c->gpus, s->gpus, sizeof c->gpus);
    const ctl_slot_t *buf = find_slot(p, CTL_ROLE_BUFFER, 0), *ln = find_slot(p, CTL_ROLE_LEARNER, 0);
    if (buf) snprintf(c->buffer_node, sizeof c->buffer_node, "%s", buf->node);
    if (ln) snprintf(c->learner_node, sizeof c->learner_node, "%s", ln->node);
    return 0;
}

/* A STOP of every worker of exp on each node of its placement. */
static int add_stops(ctl_cmds_t *cmds, const char *exp, int64_t gen, const ctl_placement_t *p, cr_err_t *err)
{
    for (size_t i = 0; p && i < p->n_slots; i++) {
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++) seen = strcmp(p->slots[j].node, p->slots[i].node) == 0;
        if (!seen && !cmd_add(cmds, CTL_CMD_STOP, p->slots[i].node, exp, gen))
            return cr_err_set(err, CR_ENOMEM, "commands");
    }
    return 0;
}

/* ---- submit, resume, stop ------------------------------------------------------------ */

/* Places spec and records it scheduled (create: a new row), appending STARTs. */
static int place_and_schedule(sqlite3 *db, const ctl_inventory_t *inv, const exp_spec_t *spec, int create,
                              const char *yaml, const char *sets_text, int64_t now_ms, ctl_cmds_t *cmds,
                              cr_err_t *err)
{
    held_inv_t h;
    int rc = held_build(db, inv, &h, err);
    if (rc != 0) return rc;
    ctl_sched_request_t q;
    ctl_sched_request_from_spec(spec, &q);
    ctl_placement_t *p = NULL;
    rc = ctl_sched_place(&h.inv, &q, &p, err);
    held_free(&h);
    if (rc != 0) return rc;
    size_t before = cmds->n;
    if ((rc = savepoint(db, "SAVEPOINT expctl", err)) == 0) {
        rc = create ? ctl_exp_create(db, spec->name, yaml, now_ms, err)
                    : ctl_exp_resume(db, spec->name, NULL, now_ms, err);
        if (rc == 0) rc = ctl_exp_set_overrides(db, spec->name, sets_text, err);
        if (rc == 0) rc = ctl_exp_schedule(db, spec->name, p, now_ms, err);
        ctl_exp_t e;
        if (rc == 0 && (rc = ctl_exp_get(db, spec->name, &e, err)) == 0) {
            for (size_t i = 0; i < p->n_slots && rc == 0; i++)
                rc = add_start(cmds, spec->name, e.generation, p, &p->slots[i], err);
            ctl_exp_clear(&e);
        }
        rc = finish(db, rc, err);
    }
    if (rc != 0) cmds->n = before;
    ctl_placement_free(p);
    return rc;
}

int ctl_expctl_submit(sqlite3 *db, const ctl_inventory_t *inv, const char *source, const char *yaml,
                      size_t len, const char *const *sets, size_t nsets, ctl_plugin_check_fn check, void *ud,
                      int64_t now_ms, char name_out[CTL_NAME_MAX], ctl_cmds_t *cmds, cr_err_t *err)
{
    exp_spec_t spec;
    int rc = exp_spec_load_string(&spec, source ? source : "<submitted>", yaml, len, sets, nsets, err);
    if (rc != 0) return rc;
    if (name_out) snprintf(name_out, CTL_NAME_MAX, "%s", spec.name);
    rc = check_plugins(&spec, check, ud, err);
    ctl_exp_t old;
    if (rc == 0 && ctl_exp_get(db, spec.name, &old, err) == 0) {
        rc = cr_err_set(err, CR_EEXIST, "experiment %s already exists (%s); pick another name or `corral exp resume %s`",
                        spec.name, ctl_exp_state_name(old.state), spec.name);
        ctl_exp_clear(&old);
    }
    char *text = NULL, *sets_text = NULL;
    if (rc == 0) {
        text = strndup(yaml, len);
        sets_text = join_sets(sets, nsets, NULL, 0);
        if (!text || !sets_text) rc = cr_err_set(err, CR_ENOMEM, "submit");
    }
    if (rc == 0)
        rc = place_and_schedule(db, inv, &spec, 1, text, sets_text, now_ms, cmds, err);
    free(text);
    free(sets_text);
    exp_spec_free(&spec);
    return rc;
}

int ctl_expctl_resume(sqlite3 *db, const ctl_inventory_t *inv, const char *name, const char *const *sets,
                      size_t nsets, ctl_plugin_check_fn check, void *ud, int64_t now_ms, ctl_cmds_t *cmds,
                      cr_err_t *err)
{
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (e.state == CTL_EXP_DONE)
        rc = cr_err_set(err, CR_EBUSY, "experiment %s is done (its stop condition was reached); submit a new "
                        "experiment to train further", name);
    else if (e.state != CTL_EXP_STOPPED && e.state != CTL_EXP_FAILED)
        rc = cr_err_set(err, CR_EBUSY, "experiment %s is %s; only a stopped or failed experiment resumes", name,
                        ctl_exp_state_name(e.state));
    exp_spec_t spec;
    char *joined = NULL;
    if (rc == 0 && (rc = load_stored(&e, sets, nsets, &spec, &joined, err)) == 0) {
        rc = check_plugins(&spec, check, ud, err);
        if (rc == 0 && !joined) rc = cr_err_set(err, CR_ENOMEM, "resume");
        if (rc == 0) rc = place_and_schedule(db, inv, &spec, 0, NULL, joined, now_ms, cmds, err);
        exp_spec_free(&spec);
    }
    free(joined);
    ctl_exp_clear(&e);
    return rc;
}

/* stopping -> stopped (or done, when it stopped for its goal) once every worker ended. */
static int finish_if_ended(sqlite3 *db, const char *name, int64_t now_ms, cr_err_t *err)
{
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    int all = 0;
    if (e.state == CTL_EXP_STOPPING && (rc = ctl_exp_workers_ended(db, name, &all, err)) == 0 && all) {
        int goal = strcmp(e.message, CTL_EXP_GOAL_MSG) == 0;
        rc = ctl_exp_transition(db, name, goal ? CTL_EXP_DONE : CTL_EXP_STOPPED,
                                goal ? "done: stop condition reached, every worker ended"
                                     : "stopped: every worker ended", now_ms, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

/* The stop of ctl_expctl_stop with the reason to record (goal: CTL_EXP_GOAL_MSG). */
static int stop_with(sqlite3 *db, const char *name, const char *why, int64_t now_ms, ctl_cmds_t *cmds,
                     cr_err_t *err)
{
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    ctl_placement_t *p = NULL;
    size_t before = cmds->n;
    if (e.state == CTL_EXP_SUBMITTED) {
        rc = ctl_exp_transition(db, name, CTL_EXP_STOPPED, "stopped before it was scheduled", now_ms, err);
    } else if (ctl_exp_state_active(e.state)) {
        rc = ctl_exp_get_placement(db, name, &p, err);
        if (rc == 0) rc = add_stops(cmds, name, e.generation, p, err);
        if (rc == 0 && e.state != CTL_EXP_STOPPING) rc = ctl_exp_transition(db, name, CTL_EXP_STOPPING, why, now_ms, err);
        if (rc == 0) rc = finish_if_ended(db, name, now_ms, err);
    } else {
        rc = cr_err_set(err, CR_EBUSY, "experiment %s is %s; there is nothing to stop", name,
                        ctl_exp_state_name(e.state));
    }
    if (rc != 0) cmds->n = before;
    ctl_placement_free(p);
    ctl_exp_clear(&e);
    return rc;
}

int ctl_expctl_stop(sqlite3 *db, const char *name, int goal, int64_t now_ms, ctl_cmds_t *cmds, cr_err_t *err)
{
    return stop_with(db, name, goal ? CTL_EXP_GOAL_MSG : "stopped by the user", now_ms, cmds, err);
}

/* ---- reports ------------------------------------------------------------------------ */

static int stop_one(ctl_cmds_t *cmds, const char *node, const char *exp, int64_t gen, const char *role, int index,
                    cr_err_t *err)
{
    ctl_worker_cmd_t *c = cmd_add(cmds, CTL_CMD_STOP, node, exp, gen);
    if (!c) return cr_err_set(err, CR_ENOMEM, "commands");
    snprintf(c->role, sizeof c->role, "%s", role);
    c->index = index;
    return 0;
}

static int is_final(const char *state)
{
    return strcmp(state, "stopped") == 0 || strcmp(state, "exited") == 0 || strcmp(state, "failed") == 0;
}

/* Whether any worker of the experiment reported progress state "done". */
static int any_done(sqlite3 *db, const char *name, int *done, cr_err_t *err)
{
    ctl_exp_worker_t *w = NULL;
    size_t n = 0;
    *done = 0;
    int rc = ctl_exp_workers(db, name, &w, &n, err);
    for (size_t i = 0; rc == 0 && i < n; i++) *done |= strcmp(w[i].progress.state, "done") == 0;
    free(w);
    return rc;
}

int ctl_expctl_worker_status(sqlite3 *db, const char *node, const char *experiment, int64_t generation,
                             const char *role, int index, const char *state, int pid, unsigned restarts,
                             int64_t now_ms, ctl_cmds_t *cmds, cr_err_t *err)
{
    int r = ctl_role_parse(role);
    if (r < 0) return cr_err_set(err, CR_EINVAL, "worker report with an unknown role '%s'", role ? role : "");
    if (!state || !*state) return cr_err_set(err, CR_EINVAL, "worker report without a state");
    ctl_exp_t e;
    int rc = ctl_exp_get(db, experiment, &e, err);
    if (rc == CR_ENOENT) /* a worker of an experiment this controller does not know */
        return is_final(state) ? 0 : stop_one(cmds, node, experiment, generation, role, index, err);
    if (rc != 0) return rc;
    ctl_placement_t *p = NULL;
    const ctl_slot_t *slot = NULL;
    if (ctl_exp_state_active(e.state) && ctl_exp_get_placement(db, experiment, &p, err) == 0)
        slot = find_slot(p, (ctl_role_t)r, index);
    if (!slot || generation != e.generation || strcmp(slot->node, node) != 0) {
        /* Not the worker the placement names: an earlier run, a worker that was
         * moved away while its node was lost, or an ended experiment. */
        rc = is_final(state) ? 0 : stop_one(cmds, node, experiment, generation, role, index, err);
        goto out;
    }
    rc = ctl_exp_worker_report(db, experiment, generation, (ctl_role_t)r, index, state, pid, restarts, now_ms, err);
    /* Slots hosted in this process are in the state it is in. */
    for (size_t i = 0; rc == 0 && i < p->n_slots; i++)
        if (host_slot(p, &p->slots[i]) == slot)
            rc = ctl_exp_worker_report(db, experiment, generation, p->slots[i].role, p->slots[i].index, state, pid,
                                       restarts, now_ms, err);
    if (rc != 0) goto out;
    int all = 0;
    if (strcmp(state, "failed") == 0 && e.state != CTL_EXP_STOPPING) {
        char why[160];
        snprintf(why, sizeof why, "worker %s-%d on %s failed (it kept crashing); see `corral exp logs %s --role %s`",
                 role, index, node, experiment, role);
        rc = add_stops(cmds, experiment, e.generation, p, err);
        if (rc == 0) rc = ctl_exp_transition(db, experiment, CTL_EXP_FAILED, why, now_ms, err);
    } else if (strcmp(state, "exited") == 0 && e.state != CTL_EXP_STOPPING) {
        /* It finished by itself: the goal when a worker said the experiment is
         * done (the envs end when the learner tells them), else nobody asked it to
         * end and the experiment cannot go on without it. */
        int done = 0;
        rc = any_done(db, experiment, &done, err);
        char why[200];
        snprintf(why, sizeof why, "worker %s-%d on %s exited by itself; `corral exp resume %s` continues", role,
                 index, node, experiment);
        if (rc == 0) rc = stop_with(db, experiment, done ? CTL_EXP_GOAL_MSG : why, now_ms, cmds, err);
    } else if (e.state == CTL_EXP_SCHEDULED) {
        rc = ctl_exp_workers_running(db, experiment, &all, err);
        if (rc == 0 && all) rc = ctl_exp_transition(db, experiment, CTL_EXP_RUNNING, "every worker is running", now_ms, err);
    } else if (e.state == CTL_EXP_STOPPING) {
        rc = finish_if_ended(db, experiment, now_ms, err);
    }
out:
    ctl_placement_free(p);
    ctl_exp_clear(&e);
    return rc;
}

/* ---- progress ----------------------------------------------------------------------- */

/* The experiment's counters from its workers' reports (expctl.h says which
 * worker gives which). *learner receives the learner's own report. */
static int aggregate(sqlite3 *db, const char *name, ctl_exp_progress_t *agg, ctl_worker_progress_t *learner,
                     cr_err_t *err)
{
    ctl_exp_worker_t *w = NULL;
    size_t n = 0;
    memset(agg, 0, sizeof *agg);
    memset(learner, 0, sizeof *learner);
    int rc = ctl_exp_workers(db, name, &w, &n, err);
    if (rc != 0) return rc;
    ctl_slot_t *slots = calloc(n + 1, sizeof *slots);
    if (!slots) {
        free(w);
        return cr_err_set(err, CR_ENOMEM, "progress");
    }
    for (size_t i = 0; i < n; i++) slots[i] = w[i].slot;
    ctl_placement_t p = {slots, n};
    for (size_t i = 0; i < n; i++) {
        const ctl_worker_progress_t *wp = &w[i].progress;
        if (host_slot(&p, &slots[i]) || !wp->time_ms) continue; /* hosted: its host reports */
        if (slots[i].role == CTL_ROLE_LEARNER) {
            *learner = *wp;
        } else if (slots[i].role == CTL_ROLE_ENV || slots[i].role == CTL_ROLE_ACTOR) {
            if (strcmp(wp->state, "running") == 0) agg->env_steps_per_s += wp->steps_per_s;
            agg->env_steps += wp->env_steps;
            agg->episodes += wp->episodes;
            if (wp->policy_version > agg->policy_version) agg->policy_version = wp->policy_version;
        }
    }
    if (learner->time_ms) {
        agg->env_steps = learner->env_steps;
        agg->episodes = learner->episodes;
        agg->updates = learner->updates;
        agg->policy_version = learner->policy_version;
        agg->success_rate = learner->eval_success_rate > 0 ? learner->eval_success_rate : 0;
        agg->mean_return = learner->mean_return;
        agg->train_success_rate = learner->success_rate;
        agg->staleness = (int64_t)(learner->staleness + 0.5);
        agg->updates_per_s = learner->updates_per_s;
    }
    free(slots);
    free(w);
    return 0;
}

/* Whether the aggregate meets a stop condition of the spec. */
static int goal_met(const ctl_exp_t *e, const ctl_exp_progress_t *agg, const ctl_worker_progress_t *learner)
{
    exp_spec_t spec;
    cr_err_t ignored = {0};
    if (load_stored(e, NULL, 0, &spec, NULL, &ignored) != 0) return 0;
    const exp_stop_t *s = &spec.stop;
    int met = (s->updates > 0 && agg->updates >= s->updates) || (s->env_steps > 0 && agg->env_steps >= s->env_steps) ||
              (s->success_rate > 0 && learner->eval_round > 0 && learner->eval_success_rate >= s->success_rate) ||
              (s->wall_time > 0 && agg->running_ms >= s->wall_time / 1000000);
    exp_spec_free(&spec);
    return met;
}

/* Aggregates one experiment's reports, records a newer checkpoint, stops it at its goal. */
static int progress_one(sqlite3 *db, const char *name, int64_t now_ms, ctl_cmds_t *cmds, cr_err_t *err)
{
    ctl_exp_progress_t agg;
    ctl_worker_progress_t learner;
    int rc = aggregate(db, name, &agg, &learner, err);
    if (rc == 0) rc = ctl_exp_progress(db, name, &agg, now_ms, err);
    ctl_exp_t e;
    if (rc == 0 && (rc = ctl_exp_get(db, name, &e, err)) == 0) {
        if (learner.checkpoint > e.ckpt_n)
            rc = ctl_exp_checkpointed(db, name, learner.checkpoint, learner.checkpoint, now_ms, err);
        agg.running_ms = e.progress.running_ms;
        int done = 0;
        if (rc == 0 && e.state != CTL_EXP_STOPPING && ctl_exp_state_active(e.state))
            rc = any_done(db, name, &done, err);
        if (rc == 0 && e.state != CTL_EXP_STOPPING && ctl_exp_state_active(e.state) &&
            (done || goal_met(&e, &agg, &learner)))
            rc = stop_with(db, name, CTL_EXP_GOAL_MSG, now_ms, cmds, err);
        ctl_exp_clear(&e);
    }
    return rc;
}

/* A directory an agent reported, fit to store and print: absolute, printable,
 * bounded; anything else is dropped (the counters still count). */
static const char *dir_ok(const char *dir)
{
    size_t len = dir ? strlen(dir) : 0;
    if (len == 0 || len > 1024 || dir[0] != '/') return NULL;
    for (const unsigned char *p = (const unsigned char *)dir; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return NULL;
    return dir;
}

int ctl_expctl_progress(sqlite3 *db, const char *node, const ctl_progress_report_t *r, size_t n, int64_t now_ms,
                        ctl_cmds_t *cmds, cr_err_t *err)
{
    char (*touched)[CTL_NAME_MAX] = calloc(n + 1, sizeof *touched);
    if (!touched) return cr_err_set(err, CR_ENOMEM, "progress");
    size_t nt = 0;
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        int role = ctl_role_parse(r[i].role);
        ctl_exp_t e;
        cr_err_t e1 = {0};
        if (role < 0 || ctl_exp_get(db, r[i].experiment, &e, &e1) != 0) continue;
        ctl_placement_t *p = NULL;
        const ctl_slot_t *slot = NULL;
        if (e.generation == r[i].generation && ctl_exp_state_active(e.state) &&
            ctl_exp_get_placement(db, e.name, &p, &e1) == 0)
            slot = find_slot(p, (ctl_role_t)role, r[i].index);
        /* Only the worker the placement names speaks for its slot (see worker_status). */
        int rc = slot && strcmp(slot->node, node) == 0 ? 0 : CR_ENOENT;
        if (rc == 0)
            rc = ctl_exp_worker_progress(db, e.name, e.generation, slot->role, slot->index, &r[i].p, node,
                                         dir_ok(r[i].dir), &e1);
        for (size_t k = 0; rc == 0 && k < p->n_slots; k++)
            if (host_slot(p, &p->slots[k]) == slot)
                rc = ctl_exp_worker_progress(db, e.name, e.generation, p->slots[k].role, p->slots[k].index, &r[i].p,
                                             node, NULL, &e1);
        if (rc == 0) {
            size_t k = 0;
            while (k < nt && strcmp(touched[k], e.name) != 0) k++;
            if (k == nt) snprintf(touched[nt++], CTL_NAME_MAX, "%s", e.name);
        } else if (rc != CR_ENOENT && !first) {
            first = rc;
            *err = e1;
        }
        ctl_placement_free(p);
        ctl_exp_clear(&e);
    }
    for (size_t k = 0; k < nt; k++) {
        cr_err_t e1 = {0};
        size_t before = cmds->n;
        int rc = progress_one(db, touched[k], now_ms, cmds, &e1);
        if (rc != 0) {
            cmds->n = before;
            if (!first) {
                first = rc;
                *err = e1;
                cr_err_wrap(err, "experiment %s", touched[k]);
            }
        }
    }
    free(touched);
    return first;
}

/* ---- node changes -------------------------------------------------------------------- */

static int repair_one(sqlite3 *db, const ctl_inventory_t *inv, const ctl_exp_t *e, int64_t now_ms, ctl_cmds_t *cmds,
                      cr_err_t *err)
{
    exp_spec_t spec;
    int rc = load_stored(e, NULL, 0, &spec, NULL, err);
    if (rc != 0) return rc;
    ctl_placement_t *cur = NULL, *next = NULL;
    held_inv_t h;
    int degraded = 0, held = 0;
    rc = ctl_exp_get_placement(db, e->name, &cur, err);
    if (rc == 0 && (rc = held_build(db, inv, &h, err)) == 0) held = 1;
    if (rc == 0) {
        ctl_sched_request_t q;
        ctl_sched_request_from_spec(&spec, &q);
        rc = ctl_sched_repair(&h.inv, &q, cur, &next, &degraded, err);
        if (rc != 0) {
            /* The learner cannot move: everything on the lost node waits for it. */
            cr_err_t ignored = {0};
            if (e->state == CTL_EXP_RUNNING)
                ctl_exp_transition(db, e->name, CTL_EXP_DEGRADED, err->msg, now_ms, &ignored);
            rc = 0;
            goto out;
        }
    }
    int changed = 0;
    for (size_t i = 0; rc == 0 && i < next->n_slots; i++) {
        const ctl_slot_t *a = &cur->slots[i], *b = &next->slots[i];
        if (a->waiting != b->waiting || b->moved) changed = 1;
        /* Moved, or back from waiting: (re)start it where it belongs now. */
        if (b->moved || (a->waiting && !b->waiting)) rc = add_start(cmds, e->name, e->generation, next, b, err);
    }
    int want_degraded = degraded != 0;
    int is_degraded = e->state == CTL_EXP_DEGRADED;
    if (rc == 0 && (changed || want_degraded != is_degraded))
        rc = ctl_exp_replace(db, e->name, next, degraded, now_ms, err);
out:
    if (held) held_free(&h);
    ctl_placement_free(cur);
    ctl_placement_free(next);
    exp_spec_free(&spec);
    return rc;
}

int ctl_expctl_nodes_changed(sqlite3 *db, const ctl_inventory_t *inv, int64_t now_ms, ctl_cmds_t *cmds,
                             cr_err_t *err)
{
    ctl_exp_t *list;
    size_t n;
    int rc = ctl_exp_list(db, &list, &n, err);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        ctl_exp_state_t s = list[i].state;
        if (s != CTL_EXP_SCHEDULED && s != CTL_EXP_RUNNING && s != CTL_EXP_DEGRADED) continue;
        size_t before = cmds->n;
        rc = repair_one(db, inv, &list[i], now_ms, cmds, err);
        if (rc != 0) {
            cmds->n = before;
            cr_err_wrap(err, "experiment %s", list[i].name);
        }
    }
    ctl_exp_list_free(list, n);
    return rc;
}
