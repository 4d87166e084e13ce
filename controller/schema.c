/* schema.c - the versioned schema of state.db and the migrations between versions.
 *
 * PRAGMA user_version holds the version a database was last migrated to. Each
 * migration is one SQL script that takes version N-1 to N; ctl_schema_migrate
 * applies the missing ones in order, each inside its own transaction together
 * with the user_version bump, so a crash mid-migration leaves the previous
 * version intact. A database newer than this binary is refused (CR_EVERSION)
 * rather than written by code that does not know its columns. Migrations are
 * append-only: a released one is never edited. */
#include "controller/schema.h"
#include "controller/experiment.h"

#include <sqlite3.h>
#include <stdio.h>

/* A migration is SQL, or a function for tables another file owns (it runs
 * inside the migration's transaction, so it must use savepoints, not BEGIN). */
typedef struct migration {
    const char *sql;
    int (*fn)(sqlite3 *db, cr_err_t *err);
} migration_t;

static const migration_t migrations[] = {
    /* 1: nodes, robots, GPUs. States are stored (so the scheduler can select on
     * them) and recomputed from the facts beside them; registry.c documents how. */
    {"CREATE TABLE nodes ("
    "  name TEXT PRIMARY KEY,"
    "  state TEXT NOT NULL CHECK (state IN ('ready','lost','draining')),"
    "  drain INTEGER NOT NULL DEFAULT 0,"
    "  address TEXT NOT NULL DEFAULT '',"
    "  accepts_inbound INTEGER NOT NULL DEFAULT 0,"
    "  cores INTEGER NOT NULL DEFAULT 0,"
    "  memory_bytes INTEGER NOT NULL DEFAULT 0,"
    "  agent_version TEXT NOT NULL DEFAULT '',"
    "  agent_instance INTEGER NOT NULL DEFAULT 0,"
    "  last_seen_ms INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE robots ("
    "  name TEXT PRIMARY KEY,"
    "  driver TEXT NOT NULL,"
    "  node TEXT REFERENCES nodes(name),"
    "  model TEXT NOT NULL DEFAULT '',"
    "  port TEXT NOT NULL DEFAULT '',"
    "  settings TEXT NOT NULL DEFAULT '{}',"
    "  state TEXT NOT NULL CHECK (state IN ('available','in-use','lost','estopped','draining')),"
    "  experiment TEXT,"
    "  registered INTEGER NOT NULL DEFAULT 0,"
    "  reported INTEGER NOT NULL DEFAULT 0,"
    "  estopped INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX robots_by_node ON robots(node);"
    "CREATE TABLE gpus ("
    "  node TEXT NOT NULL REFERENCES nodes(name),"
    "  idx INTEGER NOT NULL CHECK (idx >= 0),"
    "  model TEXT NOT NULL,"
    "  memory_bytes INTEGER NOT NULL,"
    "  uuid TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL CHECK (state IN ('available','in-use','lost','draining')),"
    "  experiment TEXT,"
    "  registered INTEGER NOT NULL DEFAULT 0,"
    "  probed INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (node, idx)"
    ");", NULL},

    /* 2: an append-only journal of registry changes, for `node show` and audits. */
    {"CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  time_ms INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  subject TEXT NOT NULL,"
    "  message TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX events_by_subject ON events(subject, id);", NULL},

    /* 3: experiments, their placements and journal (experiment.c owns them and
     * versions them further in its experiment_meta table). */
    {NULL, ctl_exp_schema},

    /* 4: robot labels ("key=value" or a tag), a JSON array of strings. */
    {"ALTER TABLE robots ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';", NULL},
};

int ctl_schema_latest(void)
{
    return (int)(sizeof migrations / sizeof migrations[0]);
}

int ctl_schema_version(sqlite3 *db, int *version, cr_err_t *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        *version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        return 0;
    }
    sqlite3_finalize(st);
    return cr_err_set(err, CR_EIO, "reading schema version: %s", sqlite3_errmsg(db));
}

static int apply(sqlite3 *db, int to, cr_err_t *err)
{
    char *msg = NULL;
    char bump[64];
    snprintf(bump, sizeof bump, "PRAGMA user_version = %d", to);
    const migration_t *m = &migrations[to - 1];
    int ok = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) == SQLITE_OK;
    if (ok && m->fn) {
        int rc = m->fn(db, err);
        if (rc) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return cr_err_wrap(err, "migration to schema version %d", to);
        }
    }
    ok = ok && (!m->sql || sqlite3_exec(db, m->sql, NULL, NULL, &msg) == SQLITE_OK) &&
         sqlite3_exec(db, bump, NULL, NULL, &msg) == SQLITE_OK &&
         sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) == SQLITE_OK;
    if (!ok) {
        cr_err_set(err, CR_EIO, "migration to schema version %d failed: %s", to,
                   msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return CR_EIO;
    }
    return 0;
}

int ctl_schema_migrate_to(sqlite3 *db, int target, cr_err_t *err)
{
    int v = 0, rc = ctl_schema_version(db, &v, err);
    if (rc) return rc;
    if (v > ctl_schema_latest())
        return cr_err_set(err, CR_EVERSION,
                          "state.db has schema version %d, newer than this corral (%d); "
                          "run a newer corral", v, ctl_schema_latest());
    if (target > ctl_schema_latest()) target = ctl_schema_latest();
    for (int to = v + 1; to <= target; to++)
        if ((rc = apply(db, to, err))) return rc;
    return 0;
}

int ctl_schema_migrate(sqlite3 *db, cr_err_t *err)
{
    return ctl_schema_migrate_to(db, ctl_schema_latest(), err);
}
