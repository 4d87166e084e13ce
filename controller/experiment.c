/* experiment.c - the experiment lifecycle state machine over SQLite; see
 * experiment.h for the API.
 *
 * States, and the only calls that enter them:
 *
 *   state      entered by                              holds resources
 *   submitted  ctl_exp_create, ctl_exp_resume           no
 *   scheduled  ctl_exp_schedule (placement written)     yes
 *   running    ctl_exp_transition, ctl_exp_replace      yes
 *   degraded   ctl_exp_transition, ctl_exp_replace      yes
 *   stopping   ctl_exp_transition                       yes (workers still end)
 *   stopped    ctl_exp_transition                       no  (placement dropped)
 *   failed     ctl_exp_transition                       no  (placement dropped)
 *   done       ctl_exp_transition (from stopping)       no  (placement dropped)
 *
 * Allowed moves (table `allowed` below):
 *   submitted -> scheduled | stopped | failed
 *   scheduled -> running | degraded | stopping | failed
 *   running   -> degraded | stopping | failed
 *   degraded  -> running | stopping | failed
 *   stopping  -> stopped | failed | done
 *   stopped   -> submitted (resume)        failed -> submitted (resume)
 *   done: final. `done` is reached through stopping so the final checkpoint and
 *   evaluation run before resources are released.
 *
 * Invariants (ctl_exp_check verifies them):
 *   I1. placements rows exist for an experiment iff its state holds resources;
 *   I2. every state text is one of the eight names;
 *   I3. generation >= 1; ckpt_updates <= updates at the time a checkpoint is
 *       recorded, and later progress never reports updates < ckpt_updates;
 *   I4. every state change appends one experiment_events row (kind 'state').
 * The schema is created with IF NOT EXISTS so it can share state.db with the
 * registry, whose migrations (PRAGMA user_version) it leaves alone; its own
 * version is the row in experiment_meta. */
#include "controller/experiment.h"
#include "common/id.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_VERSION 2

static const char *const state_names[CTL_EXP_NSTATES] = {
    "submitted", "scheduled", "running", "degraded", "stopping", "stopped", "failed", "done",
};

/* allowed[from] is a bit set of the states `from` may move to. */
#define B(s) (1u << (s))
static const unsigned allowed[CTL_EXP_NSTATES] = {
    [CTL_EXP_SUBMITTED] = B(CTL_EXP_SCHEDULED) | B(CTL_EXP_STOPPED) | B(CTL_EXP_FAILED),
    [CTL_EXP_SCHEDULED] = B(CTL_EXP_RUNNING) | B(CTL_EXP_DEGRADED) | B(CTL_EXP_STOPPING) | B(CTL_EXP_FAILED),
    [CTL_EXP_RUNNING] = B(CTL_EXP_DEGRADED) | B(CTL_EXP_STOPPING) | B(CTL_EXP_FAILED),
    [CTL_EXP_DEGRADED] = B(CTL_EXP_RUNNING) | B(CTL_EXP_STOPPING) | B(CTL_EXP_FAILED),
    [CTL_EXP_STOPPING] = B(CTL_EXP_STOPPED) | B(CTL_EXP_FAILED) | B(CTL_EXP_DONE),
    [CTL_EXP_STOPPED] = B(CTL_EXP_SUBMITTED),
    [CTL_EXP_FAILED] = B(CTL_EXP_SUBMITTED),
    [CTL_EXP_DONE] = 0,
};
#undef B

const char *ctl_exp_state_name(ctl_exp_state_t s)
{
    return (unsigned)s < CTL_EXP_NSTATES ? state_names[s] : "unknown";
}

int ctl_exp_state_parse(const char *s)
{
    for (int i = 0; s && i < CTL_EXP_NSTATES; i++)
        if (strcmp(s, state_names[i]) == 0) return i;
    return -1;
}

int ctl_exp_transition_ok(ctl_exp_state_t from, ctl_exp_state_t to)
{
    return (unsigned)from < CTL_EXP_NSTATES && (unsigned)to < CTL_EXP_NSTATES &&
           (allowed[from] & (1u << to)) != 0;
}

int ctl_exp_state_active(ctl_exp_state_t s)
{
    return s == CTL_EXP_SCHEDULED || s == CTL_EXP_RUNNING || s == CTL_EXP_DEGRADED ||
           s == CTL_EXP_STOPPING;
}

void ctl_exp_clear(ctl_exp_t *e)
{
    if (!e) return;
    free(e->spec);
    free(e->sets);
    memset(e, 0, sizeof *e);
}

/* ---- SQLite helpers ---------------------------------------------------------- */

static int db_fail(sqlite3 *db, cr_err_t *err, const char *what)
{
    return cr_err_set(err, CR_EIO, "%s: %s", what, sqlite3_errmsg(db));
}

static int exec(sqlite3 *db, const char *sql, cr_err_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = cr_err_set(err, CR_EIO, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, cr_err_t *err)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) return db_fail(db, err, "prepare");
    return 0;
}

/* Steps a statement that returns no rows, then finalizes it. */
static int run(sqlite3 *db, sqlite3_stmt *st, cr_err_t *err)
{
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_fail(db, err, "write");
    sqlite3_finalize(st);
    return rc;
}

static int begin(sqlite3 *db, cr_err_t *err) { return exec(db, "SAVEPOINT ctl_exp", err); }

/* Commits when rc is 0, else rolls back; returns rc (or the commit's error). */
static int end(sqlite3 *db, int rc, cr_err_t *err)
{
    if (rc == 0) {
        rc = exec(db, "RELEASE ctl_exp", err);
        if (rc == 0) return 0;
    }
    cr_err_t ignored = {0};
    exec(db, "ROLLBACK TO ctl_exp", &ignored);
    exec(db, "RELEASE ctl_exp", &ignored);
    return rc;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* ---- schema -------------------------------------------------------------------- */

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS experiment_meta (version INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS experiments ("
    "  name TEXT PRIMARY KEY,"
    "  state TEXT NOT NULL,"
    "  spec TEXT NOT NULL,"
    "  sets TEXT NOT NULL DEFAULT '',"              /* --set overrides, one per line */
    "  generation INTEGER NOT NULL DEFAULT 1,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  message TEXT NOT NULL DEFAULT '',"
    "  env_steps INTEGER NOT NULL DEFAULT 0,"
    "  episodes INTEGER NOT NULL DEFAULT 0,"
    "  updates INTEGER NOT NULL DEFAULT 0,"
    "  policy_version INTEGER NOT NULL DEFAULT 0,"
    "  success_rate REAL NOT NULL DEFAULT 0,"
    "  mean_return REAL NOT NULL DEFAULT 0,"
    "  staleness INTEGER NOT NULL DEFAULT 0,"
    "  ckpt_n INTEGER NOT NULL DEFAULT 0,"
    "  ckpt_updates INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE IF NOT EXISTS placements ("
    "  experiment TEXT NOT NULL REFERENCES experiments(name),"
    "  role TEXT NOT NULL,"
    "  idx INTEGER NOT NULL,"
    "  node TEXT NOT NULL,"
    "  robot TEXT NOT NULL DEFAULT '',"
    "  gpus TEXT NOT NULL DEFAULT '',"          /* comma-separated indices on node */
    "  waiting INTEGER NOT NULL DEFAULT 0,"
    "  worker_state TEXT NOT NULL DEFAULT 'pending',"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  restarts INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (experiment, role, idx)"
    ");"
    "CREATE TABLE IF NOT EXISTS experiment_events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  experiment TEXT NOT NULL,"
    "  time_ms INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  from_state TEXT NOT NULL DEFAULT '',"
    "  to_state TEXT NOT NULL DEFAULT '',"
    "  message TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX IF NOT EXISTS experiment_events_by_name ON experiment_events(experiment, id);";

/* Version 2: the workers' progress reports (placements.progress, JSON as
 * worker_progress_json writes it), the aggregate's rates and running time, where
 * the learner keeps its files, and every node each worker was placed on (its log
 * files stay there after the placement is gone). */
static const char migrate_v2_sql[] =
    "ALTER TABLE experiments ADD COLUMN train_success_rate REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE experiments ADD COLUMN env_steps_per_s REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE experiments ADD COLUMN updates_per_s REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE experiments ADD COLUMN running_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE experiments ADD COLUMN progress_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE experiments ADD COLUMN learner_node TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE experiments ADD COLUMN dir TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE placements ADD COLUMN progress TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE IF NOT EXISTS worker_nodes ("
    "  experiment TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  idx INTEGER NOT NULL,"
    "  node TEXT NOT NULL,"
    "  dir TEXT NOT NULL DEFAULT '',"
    "  placed_ms INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (experiment, role, idx, node)"
    ");"
    "INSERT OR IGNORE INTO worker_nodes(experiment, role, idx, node, placed_ms)"
    "  SELECT experiment, role, idx, node, updated_ms FROM placements;"
    "UPDATE experiment_meta SET version = 2;";

int ctl_exp_schema(sqlite3 *db, cr_err_t *err)
{
    int rc = begin(db, err);
    if (rc != 0) return rc;
    rc = exec(db, schema_sql, err);
    sqlite3_stmt *st = NULL;
    if (rc == 0) rc = prepare(db, "SELECT version FROM experiment_meta", &st, err);
    if (rc == 0) {
        int step = sqlite3_step(st);
        int version = step == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        sqlite3_finalize(st);
        if (step == SQLITE_ROW && version > SCHEMA_VERSION)
            rc = cr_err_set(err, CR_EVERSION, "experiment tables are version %d; this binary knows %d",
                            version, SCHEMA_VERSION);
        else if (step == SQLITE_DONE)
            rc = exec(db, "INSERT INTO experiment_meta(version) VALUES (1)", err);
        else if (step != SQLITE_ROW)
            rc = db_fail(db, err, "experiment_meta");
        /* The tables above are version 1's; each migration takes them one step. */
        if (rc == 0 && (step == SQLITE_DONE || version < 2)) rc = exec(db, migrate_v2_sql, err);
    }
    return end(db, rc, err);
}

/* ---- rows ---------------------------------------------------------------------- */

static int add_event(sqlite3 *db, const char *name, int64_t now_ms, const char *kind, const char *from,
                     const char *to, const char *msg, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prepare(db,
                     "INSERT INTO experiment_events(experiment, time_ms, kind, from_state, to_state, message)"
                     " VALUES (?,?,?,?,?,?)",
                     &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, from ? from : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, to ? to : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, msg ? msg : "", -1, SQLITE_TRANSIENT);
    return run(db, st, err);
}

#define EXP_COLUMNS                                                                            \
    "name, state, spec, generation, created_ms, updated_ms, message, env_steps, episodes, "   \
    "updates, policy_version, success_rate, mean_return, staleness, ckpt_n, ckpt_updates, sets, " \
    "train_success_rate, env_steps_per_s, updates_per_s, running_ms, learner_node, dir"

static int read_row(sqlite3_stmt *st, ctl_exp_t *e, cr_err_t *err)
{
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", col_text(st, 0));
    int s = ctl_exp_state_parse(col_text(st, 1));
    if (s < 0)
        return cr_err_set(err, CR_ECORRUPT, "experiment %s has an unknown state '%s'", e->name, col_text(st, 1));
    e->state = (ctl_exp_state_t)s;
    e->spec = strdup(col_text(st, 2));
    if (!e->spec) return cr_err_set(err, CR_ENOMEM, "experiment spec");
    e->generation = sqlite3_column_int64(st, 3);
    e->created_ms = sqlite3_column_int64(st, 4);
    e->updated_ms = sqlite3_column_int64(st, 5);
    snprintf(e->message, sizeof e->message, "%s", col_text(st, 6));
    e->progress.env_steps = sqlite3_column_int64(st, 7);
    e->progress.episodes = sqlite3_column_int64(st, 8);
    e->progress.updates = sqlite3_column_int64(st, 9);
    e->progress.policy_version = sqlite3_column_int64(st, 10);
    e->progress.success_rate = sqlite3_column_double(st, 11);
    e->progress.mean_return = sqlite3_column_double(st, 12);
    e->progress.staleness = sqlite3_column_int64(st, 13);
    e->ckpt_n = sqlite3_column_int64(st, 14);
    e->ckpt_updates = sqlite3_column_int64(st, 15);
    e->sets = strdup(col_text(st, 16));
    if (!e->sets) return cr_err_set(err, CR_ENOMEM, "experiment overrides");
    e->progress.train_success_rate = sqlite3_column_double(st, 17);
    e->progress.env_steps_per_s = sqlite3_column_double(st, 18);
    e->progress.updates_per_s = sqlite3_column_double(st, 19);
    e->progress.running_ms = sqlite3_column_int64(st, 20);
    snprintf(e->learner_node, sizeof e->learner_node, "%s", col_text(st, 21));
    snprintf(e->dir, sizeof e->dir, "%s", col_text(st, 22));
    return 0;
}

static int get(sqlite3 *db, const char *name, ctl_exp_t *out, cr_err_t *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    int rc = prepare(db, "SELECT " EXP_COLUMNS " FROM experiments WHERE name = ?", &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) rc = read_row(st, out, err);
    else if (step == SQLITE_DONE) rc = cr_err_set(err, CR_ENOENT, "no experiment named %s", name);
    else rc = db_fail(db, err, "read experiment");
    sqlite3_finalize(st);
    if (rc != 0) ctl_exp_clear(out);
    return rc;
}

int ctl_exp_get(sqlite3 *db, const char *name, ctl_exp_t *out, cr_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!name || !cr_name_valid(name)) return cr_err_set(err, CR_EINVAL, "bad experiment name '%s'", name ? name : "");
    return get(db, name, out, err);
}

int ctl_exp_list(sqlite3 *db, ctl_exp_t **out, size_t *n, cr_err_t *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = prepare(db, "SELECT " EXP_COLUMNS " FROM experiments ORDER BY name", &st, err);
    if (rc != 0) return rc;
    size_t cap = 0;
    int step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            ctl_exp_t *grown = realloc(*out, cap * sizeof **out);
            if (!grown) {
                rc = cr_err_set(err, CR_ENOMEM, "experiment list");
                break;
            }
            *out = grown;
        }
        rc = read_row(st, &(*out)[*n], err);
        if (rc == 0) (*n)++;
    }
    if (rc == 0 && step != SQLITE_DONE) rc = db_fail(db, err, "list experiments");
    sqlite3_finalize(st);
    if (rc != 0) {
        ctl_exp_list_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

void ctl_exp_list_free(ctl_exp_t *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) ctl_exp_clear(&list[i]);
    free(list);
}

int ctl_exp_create(sqlite3 *db, const char *name, const char *spec, int64_t now_ms, cr_err_t *err)
{
    if (!name || !cr_name_valid(name))
        return cr_err_set(err, CR_EINVAL,
                          "bad experiment name '%s': use 1-63 of a-z 0-9 _ -, starting with a letter or digit",
                          name ? name : "");
    int rc = begin(db, err);
    if (rc != 0) return rc;
    ctl_exp_t old;
    int exists = get(db, name, &old, err);
    if (exists == 0) {
        rc = cr_err_set(err, CR_EEXIST, "experiment %s already exists (%s); pick another name or `corral exp resume %s`",
                        name, ctl_exp_state_name(old.state), name);
        ctl_exp_clear(&old);
    } else if (exists != CR_ENOENT) {
        rc = exists;
    }
    sqlite3_stmt *st;
    if (rc == 0)
        rc = prepare(db,
                     "INSERT INTO experiments(name, state, spec, created_ms, updated_ms, message)"
                     " VALUES (?, 'submitted', ?, ?, ?, 'submitted')",
                     &st, err);
    if (rc == 0) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, spec ? spec : "", -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, now_ms);
        sqlite3_bind_int64(st, 4, now_ms);
        rc = run(db, st, err);
    }
    if (rc == 0) rc = add_event(db, name, now_ms, "state", "", "submitted", "submitted", err);
    return end(db, rc, err);
}

/* ---- placements ---------------------------------------------------------------- */

static int drop_placement(sqlite3 *db, const char *name, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prepare(db, "DELETE FROM placements WHERE experiment = ?", &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    return run(db, st, err);
}

static void gpus_text(const ctl_slot_t *s, char out[128])
{
    out[0] = '\0';
    size_t off = 0;
    for (int k = 0; k < s->n_gpus && off < 120; k++)
        off += (size_t)snprintf(out + off, 128 - off, "%s%d", k ? "," : "", s->gpus[k]);
}

/* Replaces the placement rows; keeps worker reports of slots that did not move. */
static int write_placement(sqlite3 *db, const char *name, const ctl_placement_t *p, int64_t now_ms,
                           cr_err_t *err)
{
    int rc = 0;
    sqlite3_stmt *st;
    /* Rows of slots the new placement does not have go first. */
    rc = prepare(db, "DELETE FROM placements WHERE experiment = ? AND NOT (role || '/' || idx) IN "
                     "(SELECT value FROM json_each(?))", &st, err);
    if (rc != 0) return rc;
    char *keys = malloc(p->n_slots * 24 + 4);
    if (!keys) {
        sqlite3_finalize(st);
        return cr_err_set(err, CR_ENOMEM, "placement");
    }
    size_t off = (size_t)sprintf(keys, "[");
    for (size_t i = 0; i < p->n_slots; i++)
        off += (size_t)sprintf(keys + off, "%s\"%s/%d\"", i ? "," : "", ctl_role_name(p->slots[i].role),
                               p->slots[i].index);
    sprintf(keys + off, "]");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, keys, -1, SQLITE_TRANSIENT);
    free(keys);
    rc = run(db, st, err);
    for (size_t i = 0; i < p->n_slots && rc == 0; i++) {
        const ctl_slot_t *s = &p->slots[i];
        char gpus[128];
        gpus_text(s, gpus);
        /* A slot that moved starts over as 'pending'; one that stayed keeps its report. */
        rc = prepare(db,
                     "INSERT INTO placements(experiment, role, idx, node, robot, gpus, waiting, updated_ms)"
                     " VALUES (?,?,?,?,?,?,?,?)"
                     " ON CONFLICT(experiment, role, idx) DO UPDATE SET"
                     "  worker_state = CASE WHEN node = excluded.node AND gpus = excluded.gpus"
                     "                 THEN worker_state ELSE 'pending' END,"
                     "  pid = CASE WHEN node = excluded.node AND gpus = excluded.gpus THEN pid ELSE 0 END,"
                     "  progress = CASE WHEN node = excluded.node THEN progress ELSE '' END,"
                     "  node = excluded.node, robot = excluded.robot, gpus = excluded.gpus,"
                     "  waiting = excluded.waiting, updated_ms = excluded.updated_ms",
                     &st, err);
        if (rc != 0) break;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, ctl_role_name(s->role), -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, s->index);
        sqlite3_bind_text(st, 4, s->node, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, s->robot, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, gpus, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 7, s->waiting);
        sqlite3_bind_int64(st, 8, now_ms);
        rc = run(db, st, err);
        if (rc != 0) break;
        /* Where its logs will be, long after the placement is gone. */
        rc = prepare(db,
                     "INSERT INTO worker_nodes(experiment, role, idx, node, placed_ms) VALUES (?,?,?,?,?)"
                     " ON CONFLICT(experiment, role, idx, node) DO UPDATE SET placed_ms = excluded.placed_ms",
                     &st, err);
        if (rc != 0) break;
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, ctl_role_name(s->role), -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, s->index);
        sqlite3_bind_text(st, 4, s->node, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 5, now_ms);
        rc = run(db, st, err);
    }
    return rc;
}

/* A one-line summary of a placement for the event log. */
static void placement_text(const ctl_placement_t *p, char *out, size_t cap)
{
    out[0] = '\0';
    size_t off = 0;
    for (size_t i = 0; i < p->n_slots && off + 1 < cap; i++) {
        const ctl_slot_t *s = &p->slots[i];
        char gpus[128];
        gpus_text(s, gpus);
        off += (size_t)snprintf(out + off, cap - off, "%s%s-%d@%s%s%s%s", i ? " " : "", ctl_role_name(s->role),
                                s->index, s->node, gpus[0] ? ":gpu" : "", gpus, s->waiting ? "(waiting)" : "");
    }
}

int ctl_exp_get_placement(sqlite3 *db, const char *name, ctl_placement_t **out, cr_err_t *err)
{
    *out = NULL;
    sqlite3_stmt *st;
    int rc = prepare(db,
                     "SELECT role, idx, node, robot, gpus, waiting FROM placements WHERE experiment = ?"
                     " ORDER BY CASE role WHEN 'env' THEN 0 WHEN 'actor' THEN 1 WHEN 'learner' THEN 2 ELSE 3 END, idx",
                     &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    ctl_placement_t *p = calloc(1, sizeof *p);
    size_t cap = 0;
    int step = SQLITE_DONE;
    if (!p) rc = cr_err_set(err, CR_ENOMEM, "placement");
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (p->n_slots == cap) {
            cap = cap ? cap * 2 : 8;
            ctl_slot_t *grown = realloc(p->slots, cap * sizeof *grown);
            if (!grown) {
                rc = cr_err_set(err, CR_ENOMEM, "placement");
                break;
            }
            p->slots = grown;
        }
        ctl_slot_t *s = &p->slots[p->n_slots];
        memset(s, 0, sizeof *s);
        int role = ctl_role_parse(col_text(st, 0));
        if (role < 0) {
            rc = cr_err_set(err, CR_ECORRUPT, "placement of %s has an unknown role '%s'", name, col_text(st, 0));
            break;
        }
        s->role = (ctl_role_t)role;
        s->index = sqlite3_column_int(st, 1);
        snprintf(s->node, sizeof s->node, "%s", col_text(st, 2));
        snprintf(s->robot, sizeof s->robot, "%s", col_text(st, 3));
        const char *g = col_text(st, 4);
        while (*g && s->n_gpus < CTL_SLOT_MAX_GPUS) {
            char *end;
            long v = strtol(g, &end, 10);
            if (end == g || v < 0) {
                rc = cr_err_set(err, CR_ECORRUPT, "placement of %s has bad GPUs '%s'", name, col_text(st, 4));
                break;
            }
            s->gpus[s->n_gpus++] = (int)v;
            g = *end == ',' ? end + 1 : end;
        }
        s->waiting = sqlite3_column_int(st, 5);
        p->n_slots++;
    }
    if (rc == 0 && step != SQLITE_DONE) rc = db_fail(db, err, "read placement");
    sqlite3_finalize(st);
    if (rc != 0) {
        ctl_placement_free(p);
        return rc;
    }
    if (p->n_slots == 0) {
        ctl_placement_free(p);
        return cr_err_set(err, CR_ENOENT, "experiment %s has no placement", name);
    }
    *out = p;
    return 0;
}

/* ---- a worker's progress as JSON in its placement row ------------------------------- */

static void progress_to_json(const ctl_worker_progress_t *p, char *out, size_t cap)
{
    snprintf(out, cap,
             "{\"state\":\"%s\",\"env_steps\":%" PRId64 ",\"episodes\":%" PRId64 ",\"updates\":%" PRId64
             ",\"policy_version\":%" PRId64 ",\"checkpoint\":%" PRId64 ",\"eval_round\":%" PRId64
             ",\"success_rate\":%.6g,\"eval_success_rate\":%.6g,\"mean_return\":%.6g,\"staleness\":%.6g"
             ",\"steps_per_s\":%.6g,\"updates_per_s\":%.6g,\"time_ms\":%" PRId64 "}",
             p->state, p->env_steps, p->episodes, p->updates, p->policy_version, p->checkpoint, p->eval_round,
             p->success_rate, p->eval_success_rate, p->mean_return, p->staleness, p->steps_per_s,
             p->updates_per_s, p->time_ms);
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* An empty or unreadable text is "never reported" (all zero). */
static void progress_from_json(const char *text, ctl_worker_progress_t *p)
{
    memset(p, 0, sizeof *p);
    p->eval_success_rate = -1;
    cJSON *o = *text ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return;
    }
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "state");
    if (cJSON_IsString(st)) snprintf(p->state, sizeof p->state, "%s", st->valuestring);
    p->env_steps = (int64_t)num(o, "env_steps");
    p->episodes = (int64_t)num(o, "episodes");
    p->updates = (int64_t)num(o, "updates");
    p->policy_version = (int64_t)num(o, "policy_version");
    p->checkpoint = (int64_t)num(o, "checkpoint");
    p->eval_round = (int64_t)num(o, "eval_round");
    p->success_rate = num(o, "success_rate");
    p->eval_success_rate = num(o, "eval_success_rate");
    p->mean_return = num(o, "mean_return");
    p->staleness = num(o, "staleness");
    p->steps_per_s = num(o, "steps_per_s");
    p->updates_per_s = num(o, "updates_per_s");
    p->time_ms = (int64_t)num(o, "time_ms");
    cJSON_Delete(o);
}

int ctl_exp_workers(sqlite3 *db, const char *name, ctl_exp_worker_t **out, size_t *n, cr_err_t *err)
{
    *out = NULL;
    *n = 0;
    ctl_placement_t *p;
    int rc = ctl_exp_get_placement(db, name, &p, err);
    if (rc == CR_ENOENT) return 0;
    if (rc != 0) return rc;
    ctl_exp_worker_t *w = calloc(p->n_slots, sizeof *w);
    sqlite3_stmt *st = NULL;
    if (!w) rc = cr_err_set(err, CR_ENOMEM, "workers");
    if (rc == 0)
        rc = prepare(db, "SELECT worker_state, pid, restarts, updated_ms, progress FROM placements"
                         " WHERE experiment = ? AND role = ? AND idx = ?", &st, err);
    for (size_t i = 0; rc == 0 && i < p->n_slots; i++) {
        w[i].slot = p->slots[i];
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, ctl_role_name(p->slots[i].role), -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, p->slots[i].index);
        if (sqlite3_step(st) != SQLITE_ROW) {
            rc = db_fail(db, err, "read workers");
            break;
        }
        snprintf(w[i].state, sizeof w[i].state, "%s", col_text(st, 0));
        w[i].pid = sqlite3_column_int(st, 1);
        w[i].restarts = (unsigned)sqlite3_column_int64(st, 2);
        w[i].updated_ms = sqlite3_column_int64(st, 3);
        progress_from_json(col_text(st, 4), &w[i].progress);
    }
    sqlite3_finalize(st);
    if (rc == 0) {
        *out = w;
        *n = p->n_slots;
    } else {
        free(w);
    }
    ctl_placement_free(p);
    return rc;
}

/* ---- transitions ---------------------------------------------------------------- */

static int set_state(sqlite3 *db, const ctl_exp_t *e, ctl_exp_state_t to, const char *why, int64_t now_ms,
                     int64_t generation, cr_err_t *err)
{
    if (!ctl_exp_transition_ok(e->state, to))
        return cr_err_set(err, CR_EBUSY, "experiment %s is %s and cannot become %s", e->name,
                          ctl_exp_state_name(e->state), ctl_exp_state_name(to));
    sqlite3_stmt *st;
    int rc = prepare(db, "UPDATE experiments SET state = ?, message = ?, updated_ms = ?, generation = ?"
                         " WHERE name = ?", &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, ctl_exp_state_name(to), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, why ? why : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, now_ms);
    sqlite3_bind_int64(st, 4, generation);
    sqlite3_bind_text(st, 5, e->name, -1, SQLITE_TRANSIENT);
    rc = run(db, st, err);
    if (rc == 0 && ctl_exp_state_active(e->state) && !ctl_exp_state_active(to))
        rc = drop_placement(db, e->name, err); /* I1: resources go back */
    if (rc == 0)
        rc = add_event(db, e->name, now_ms, "state", ctl_exp_state_name(e->state), ctl_exp_state_name(to), why,
                       err);
    return rc;
}

int ctl_exp_transition(sqlite3 *db, const char *name, ctl_exp_state_t to, const char *why, int64_t now_ms,
                       cr_err_t *err)
{
    if (to == CTL_EXP_SUBMITTED || to == CTL_EXP_SCHEDULED)
        return cr_err_set(err, CR_EINVAL, "%s is entered through %s", ctl_exp_state_name(to),
                          to == CTL_EXP_SUBMITTED ? "ctl_exp_resume" : "ctl_exp_schedule");
    if ((unsigned)to >= CTL_EXP_NSTATES) return cr_err_set(err, CR_EINVAL, "unknown state %d", (int)to);
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (e.state == to) { /* repeating a state is a no-op, so retried commands are safe */
        ctl_exp_clear(&e);
        return 0;
    }
    if ((rc = begin(db, err)) == 0) rc = end(db, set_state(db, &e, to, why, now_ms, e.generation, err), err);
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_schedule(sqlite3 *db, const char *name, const ctl_placement_t *p, int64_t now_ms, cr_err_t *err)
{
    if (!p || p->n_slots == 0) return cr_err_set(err, CR_EINVAL, "an empty placement cannot be scheduled");
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (e.state != CTL_EXP_SUBMITTED) {
        rc = cr_err_set(err, CR_EBUSY, "experiment %s is %s, not submitted; it cannot be scheduled again", name,
                        ctl_exp_state_name(e.state));
        ctl_exp_clear(&e);
        return rc;
    }
    char text[400];
    placement_text(p, text, sizeof text);
    if ((rc = begin(db, err)) == 0) {
        rc = write_placement(db, name, p, now_ms, err);
        if (rc == 0) rc = set_state(db, &e, CTL_EXP_SCHEDULED, "placed; starting workers", now_ms, e.generation, err);
        if (rc == 0) rc = add_event(db, name, now_ms, "placement", "", "", text, err);
        rc = end(db, rc, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_replace(sqlite3 *db, const char *name, const ctl_placement_t *p, int degraded, int64_t now_ms,
                    cr_err_t *err)
{
    if (!p || p->n_slots == 0) return cr_err_set(err, CR_EINVAL, "an empty placement cannot replace one");
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (e.state != CTL_EXP_SCHEDULED && e.state != CTL_EXP_RUNNING && e.state != CTL_EXP_DEGRADED) {
        rc = cr_err_set(err, CR_EBUSY, "experiment %s is %s; only a scheduled, running or degraded one is re-placed",
                        name, ctl_exp_state_name(e.state));
        ctl_exp_clear(&e);
        return rc;
    }
    char text[400];
    placement_text(p, text, sizeof text);
    if ((rc = begin(db, err)) == 0) {
        rc = write_placement(db, name, p, now_ms, err);
        if (rc == 0) rc = add_event(db, name, now_ms, "placement", "", "", text, err);
        ctl_exp_state_t to = e.state == CTL_EXP_SCHEDULED ? e.state : degraded ? CTL_EXP_DEGRADED : CTL_EXP_RUNNING;
        if (rc == 0 && to != e.state)
            rc = set_state(db, &e, to, degraded ? "a node is lost; its workers wait" : "every worker placed again",
                           now_ms, e.generation, err);
        rc = end(db, rc, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_resume(sqlite3 *db, const char *name, const char *spec, int64_t now_ms, cr_err_t *err)
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
    if (rc == 0 && (rc = begin(db, err)) == 0) {
        char why[128];
        snprintf(why, sizeof why, "resumed (run %" PRId64 ")", e.generation + 1);
        rc = set_state(db, &e, CTL_EXP_SUBMITTED, why, now_ms, e.generation + 1, err);
        if (rc == 0 && spec) {
            sqlite3_stmt *st;
            rc = prepare(db, "UPDATE experiments SET spec = ? WHERE name = ?", &st, err);
            if (rc == 0) {
                sqlite3_bind_text(st, 1, spec, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
                rc = run(db, st, err);
            }
        }
        rc = end(db, rc, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_set_overrides(sqlite3 *db, const char *name, const char *sets, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prepare(db, "UPDATE experiments SET sets = ? WHERE name = ?", &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, sets ? sets : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    rc = run(db, st, err);
    if (rc == 0 && sqlite3_changes(db) == 0) rc = cr_err_set(err, CR_ENOENT, "no experiment named %s", name);
    return rc;
}

/* ---- reports --------------------------------------------------------------------- */

int ctl_exp_worker_report(sqlite3 *db, const char *name, int64_t generation, ctl_role_t role, int index,
                          const char *state, int pid, unsigned restarts, int64_t now_ms, cr_err_t *err)
{
    if (!state || !*state) return cr_err_set(err, CR_EINVAL, "a worker report needs a state");
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (generation != e.generation)
        rc = cr_err_set(err, CR_EBUSY, "report from run %" PRId64 " of %s, which is at run %" PRId64
                        "; the worker belongs to an earlier run and should be stopped", generation, name, e.generation);
    else if (!ctl_exp_state_active(e.state))
        rc = cr_err_set(err, CR_EBUSY, "experiment %s is %s and has no workers", name, ctl_exp_state_name(e.state));
    sqlite3_stmt *st = NULL;
    if (rc == 0 && (rc = begin(db, err)) == 0) {
        rc = prepare(db, "UPDATE placements SET worker_state = ?, pid = ?, restarts = ?, updated_ms = ?"
                         " WHERE experiment = ? AND role = ? AND idx = ?", &st, err);
        if (rc == 0) {
            sqlite3_bind_text(st, 1, state, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(st, 2, pid);
            sqlite3_bind_int64(st, 3, restarts);
            sqlite3_bind_int64(st, 4, now_ms);
            sqlite3_bind_text(st, 5, name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 6, ctl_role_name(role), -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 7, index);
            rc = run(db, st, err);
        }
        if (rc == 0 && sqlite3_changes(db) == 0)
            rc = cr_err_set(err, CR_ENOENT, "experiment %s has no %s-%d worker", name, ctl_role_name(role), index);
        if (rc == 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s-%d %s (pid %d, restarts %u)", ctl_role_name(role), index, state, pid,
                     restarts);
            rc = add_event(db, name, now_ms, "worker", "", "", msg, err);
        }
        rc = end(db, rc, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_workers_running(sqlite3 *db, const char *name, int *all, cr_err_t *err)
{
    *all = 0;
    sqlite3_stmt *st;
    int rc = prepare(db, "SELECT count(*), sum(worker_state = 'running') FROM placements WHERE experiment = ?",
                     &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        int64_t total = sqlite3_column_int64(st, 0), up = sqlite3_column_int64(st, 1);
        *all = total > 0 && up == total;
    } else {
        rc = db_fail(db, err, "count workers");
    }
    sqlite3_finalize(st);
    return rc;
}

int ctl_exp_workers_ended(sqlite3 *db, const char *name, int *all, cr_err_t *err)
{
    *all = 0;
    sqlite3_stmt *st;
    int rc = prepare(db, "SELECT count(*) FROM placements WHERE experiment = ?"
                         " AND worker_state NOT IN ('stopped', 'exited', 'failed')", &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) *all = sqlite3_column_int64(st, 0) == 0;
    else rc = db_fail(db, err, "count workers");
    sqlite3_finalize(st);
    return rc;
}

int ctl_exp_worker_progress(sqlite3 *db, const char *name, int64_t generation, ctl_role_t role, int index,
                            const ctl_worker_progress_t *p, const char *node, const char *dir, cr_err_t *err)
{
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (generation != e.generation)
        rc = cr_err_set(err, CR_EBUSY, "progress from run %" PRId64 " of %s, which is at run %" PRId64, generation,
                        name, e.generation);
    else if (!ctl_exp_state_active(e.state))
        rc = cr_err_set(err, CR_EBUSY, "experiment %s is %s and has no workers", name, ctl_exp_state_name(e.state));
    char text[768];
    progress_to_json(p, text, sizeof text);
    sqlite3_stmt *st = NULL;
    if (rc == 0 && (rc = begin(db, err)) == 0) {
        rc = prepare(db, "UPDATE placements SET progress = ? WHERE experiment = ? AND role = ? AND idx = ?", &st,
                     err);
        if (rc == 0) {
            sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 3, ctl_role_name(role), -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 4, index);
            rc = run(db, st, err);
        }
        if (rc == 0 && sqlite3_changes(db) == 0)
            rc = cr_err_set(err, CR_ENOENT, "experiment %s has no %s-%d worker", name, ctl_role_name(role), index);
        if (rc == 0 && dir && *dir && node && *node) {
            rc = prepare(db, "UPDATE worker_nodes SET dir = ? WHERE experiment = ? AND role = ? AND idx = ?"
                             " AND node = ?", &st, err);
            if (rc == 0) {
                sqlite3_bind_text(st, 1, dir, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 3, ctl_role_name(role), -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 4, index);
                sqlite3_bind_text(st, 5, node, -1, SQLITE_TRANSIENT);
                rc = run(db, st, err);
            }
            if (rc == 0 && role == CTL_ROLE_LEARNER &&
                (strcmp(e.dir, dir) != 0 || strcmp(e.learner_node, node) != 0) &&
                (rc = prepare(db, "UPDATE experiments SET learner_node = ?, dir = ? WHERE name = ?", &st, err)) == 0) {
                sqlite3_bind_text(st, 1, node, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 2, dir, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 3, name, -1, SQLITE_TRANSIENT);
                rc = run(db, st, err);
            }
        }
        rc = end(db, rc, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_worker_nodes(sqlite3 *db, const char *name, const char *role, int index, ctl_exp_worker_node_fn fn,
                         void *ud, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prepare(db,
                     "SELECT role, idx, node, dir FROM worker_nodes WHERE experiment = ?1"
                     " AND (?2 IS NULL OR role = ?2) AND (?3 < 0 OR idx = ?3)"
                     " ORDER BY CASE role WHEN 'env' THEN 0 WHEN 'actor' THEN 1 WHEN 'learner' THEN 2 ELSE 3 END,"
                     " idx, placed_ms DESC, node",
                     &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    if (role && *role) sqlite3_bind_text(st, 2, role, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, 2);
    sqlite3_bind_int(st, 3, index);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int r = ctl_role_parse(col_text(st, 0));
        if (r < 0) continue; /* not a row this module wrote */
        fn(ud, (ctl_role_t)r, sqlite3_column_int(st, 1), col_text(st, 2), col_text(st, 3));
    }
    if (step != SQLITE_DONE) rc = db_fail(db, err, "read worker nodes");
    sqlite3_finalize(st);
    return rc;
}

int ctl_exp_progress(sqlite3 *db, const char *name, const ctl_exp_progress_t *p, int64_t now_ms, cr_err_t *err)
{
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (p->updates < e.ckpt_updates)
        rc = cr_err_set(err, CR_EINVAL, "update counter %" PRId64 " of %s fell back past its newest checkpoint "
                        "(%" PRId64 " updates); the learner must resume from that checkpoint", p->updates, name,
                        e.ckpt_updates);
    else if (p->env_steps < 0 || p->episodes < 0 || p->updates < 0 || p->policy_version < 0 ||
             !(p->success_rate >= 0 && p->success_rate <= 1))
        rc = cr_err_set(err, CR_EINVAL, "progress of %s has negative counters or a success rate outside [0, 1]",
                        name);
    sqlite3_stmt *st;
    if (rc == 0)
        rc = prepare(db,
                     "UPDATE experiments SET env_steps = ?, episodes = ?, updates = ?, policy_version = ?,"
                     " success_rate = ?, mean_return = ?, staleness = ?, updated_ms = ?10,"
                     " train_success_rate = ?11, env_steps_per_s = ?12, updates_per_s = ?13,"
                     " running_ms = running_ms + CASE WHEN progress_ms > 0 AND state IN"
                     "   ('scheduled','running','degraded','stopping')"
                     "   THEN min(max(?10 - progress_ms, 0), 5000) ELSE 0 END,"
                     " progress_ms = ?10 WHERE name = ?9",
                     &st, err);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, p->env_steps);
        sqlite3_bind_int64(st, 2, p->episodes);
        sqlite3_bind_int64(st, 3, p->updates);
        sqlite3_bind_int64(st, 4, p->policy_version);
        sqlite3_bind_double(st, 5, p->success_rate);
        sqlite3_bind_double(st, 6, p->mean_return);
        sqlite3_bind_int64(st, 7, p->staleness);
        sqlite3_bind_text(st, 9, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 10, now_ms);
        sqlite3_bind_double(st, 11, p->train_success_rate);
        sqlite3_bind_double(st, 12, p->env_steps_per_s);
        sqlite3_bind_double(st, 13, p->updates_per_s);
        rc = run(db, st, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_checkpointed(sqlite3 *db, const char *name, int64_t ckpt_n, int64_t updates, int64_t now_ms,
                         cr_err_t *err)
{
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    if (ckpt_n <= e.ckpt_n)
        rc = cr_err_set(err, CR_EINVAL, "checkpoint %" PRId64 " of %s is not newer than checkpoint %" PRId64,
                        ckpt_n, name, e.ckpt_n);
    else if (updates < e.ckpt_updates)
        rc = cr_err_set(err, CR_EINVAL, "checkpoint %" PRId64 " of %s holds %" PRId64 " updates, fewer than the "
                        "previous checkpoint's %" PRId64, ckpt_n, name, updates, e.ckpt_updates);
    if (rc == 0 && (rc = begin(db, err)) == 0) {
        sqlite3_stmt *st;
        rc = prepare(db, "UPDATE experiments SET ckpt_n = ?, ckpt_updates = ?, updates = max(updates, ?),"
                         " updated_ms = ? WHERE name = ?", &st, err);
        if (rc == 0) {
            sqlite3_bind_int64(st, 1, ckpt_n);
            sqlite3_bind_int64(st, 2, updates);
            sqlite3_bind_int64(st, 3, updates);
            sqlite3_bind_int64(st, 4, now_ms);
            sqlite3_bind_text(st, 5, name, -1, SQLITE_TRANSIENT);
            rc = run(db, st, err);
        }
        if (rc == 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "checkpoint %" PRId64 " at %" PRId64 " updates", ckpt_n, updates);
            rc = add_event(db, name, now_ms, "checkpoint", "", "", msg, err);
        }
        rc = end(db, rc, err);
    }
    ctl_exp_clear(&e);
    return rc;
}

int ctl_exp_events(sqlite3 *db, const char *name, int64_t after_id, size_t max, ctl_exp_event_t **out,
                   size_t *n, cr_err_t *err)
{
    *out = NULL;
    *n = 0;
    if (max == 0) return 0;
    sqlite3_stmt *st;
    int rc = prepare(db,
                     "SELECT id, time_ms, experiment, kind, from_state, to_state, message FROM experiment_events"
                     " WHERE id > ? AND (?2 IS NULL OR experiment = ?2) ORDER BY id LIMIT ?",
                     &st, err);
    if (rc != 0) return rc;
    sqlite3_bind_int64(st, 1, after_id);
    if (name) sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, (int64_t)max);
    ctl_exp_event_t *ev = calloc(max, sizeof *ev);
    if (!ev) rc = cr_err_set(err, CR_ENOMEM, "events");
    int step = SQLITE_DONE;
    while (rc == 0 && *n < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
        ctl_exp_event_t *e = &ev[(*n)++];
        e->id = sqlite3_column_int64(st, 0);
        e->time_ms = sqlite3_column_int64(st, 1);
        snprintf(e->experiment, sizeof e->experiment, "%s", col_text(st, 2));
        snprintf(e->kind, sizeof e->kind, "%s", col_text(st, 3));
        snprintf(e->from_state, sizeof e->from_state, "%s", col_text(st, 4));
        snprintf(e->to_state, sizeof e->to_state, "%s", col_text(st, 5));
        snprintf(e->message, sizeof e->message, "%s", col_text(st, 6));
    }
    if (rc == 0 && step != SQLITE_DONE && step != SQLITE_ROW) rc = db_fail(db, err, "read events");
    sqlite3_finalize(st);
    if (rc != 0) {
        free(ev);
        *n = 0;
        return rc;
    }
    *out = ev;
    return 0;
}

int ctl_exp_holders(sqlite3 *db, ctl_exp_holder_fn fn, void *ud, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prepare(db,
                     "SELECT p.experiment, p.node, p.robot, p.gpus FROM placements p JOIN experiments e"
                     " ON e.name = p.experiment WHERE e.state IN ('scheduled','running','degraded','stopping')"
                     " ORDER BY p.experiment, p.role, p.idx",
                     &st, err);
    if (rc != 0) return rc;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *exp = col_text(st, 0), *node = col_text(st, 1), *robot = col_text(st, 2),
                   *g = col_text(st, 3);
        if (*robot) fn(ud, exp, node, robot, -1);
        while (*g) {
            char *endp;
            long v = strtol(g, &endp, 10);
            if (endp == g) break;
            fn(ud, exp, node, "", (int)v);
            g = *endp == ',' ? endp + 1 : endp;
        }
    }
    if (step != SQLITE_DONE) rc = db_fail(db, err, "read holders");
    sqlite3_finalize(st);
    return rc;
}

int ctl_exp_check(sqlite3 *db, cr_err_t *err)
{
    static const char *const checks[][2] = {
        {"SELECT name FROM experiments WHERE state NOT IN"
         " ('submitted','scheduled','running','degraded','stopping','stopped','failed','done')",
         "has an unknown state (I2)"},
        {"SELECT DISTINCT p.experiment FROM placements p LEFT JOIN experiments e ON e.name = p.experiment"
         " WHERE e.name IS NULL OR e.state NOT IN ('scheduled','running','degraded','stopping')",
         "has placement rows but holds no resources (I1)"},
        {"SELECT name FROM experiments WHERE state IN ('scheduled','running','degraded','stopping')"
         " AND NOT EXISTS (SELECT 1 FROM placements WHERE experiment = name)",
         "holds resources but has no placement (I1)"},
        {"SELECT name FROM experiments WHERE generation < 1 OR updates < ckpt_updates",
         "has a bad generation or counters behind its checkpoint (I3)"},
        {"SELECT name FROM experiments e WHERE NOT EXISTS (SELECT 1 FROM experiment_events v"
         " WHERE v.experiment = e.name AND v.kind = 'state' AND v.to_state = e.state)",
         "has no event recording its current state (I4)"},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        sqlite3_stmt *st;
        int rc = prepare(db, checks[i][0], &st, err);
        if (rc != 0) return rc;
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            rc = cr_err_set(err, CR_ECORRUPT, "experiment %s %s", col_text(st, 0), checks[i][1]);
        else if (step != SQLITE_DONE)
            rc = db_fail(db, err, "check");
        sqlite3_finalize(st);
        if (rc != 0) return rc;
    }
    return 0;
}
