/* schema.c - the buffer's database file: creating it, recognising it, and refusing
 * anything else with a clear error.
 *
 * A corral buffer is a SQLite database in WAL mode whose application_id is 'CRBF',
 * whose user_version is the schema version, and whose meta table repeats the schema
 * version and holds the layout (as text) and the limiter's sample counter. A file
 * that SQLite cannot read is CR_ECORRUPT; a database of another application is
 * CR_ECORRUPT too (it is not ours to touch); a newer schema is CR_EVERSION. */
#include "buffer/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#define APP_ID 0x43524246  /* 'CRBF' */

static const char *schema_sql =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "CREATE TABLE episodes("
    "  id INTEGER PRIMARY KEY, producer INTEGER NOT NULL, ep_no INTEGER NOT NULL,"
    "  robot TEXT, source INTEGER NOT NULL, policy_version INTEGER,"
    "  start_ns INTEGER, end_ns INTEGER, nsteps INTEGER NOT NULL DEFAULT 0,"
    "  ret REAL NOT NULL DEFAULT 0, success INTEGER NOT NULL DEFAULT 0,"
    "  truncated INTEGER NOT NULL DEFAULT 0, ended INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE(producer, ep_no));"
    "CREATE TABLE steps("
    "  id INTEGER PRIMARY KEY, episode INTEGER NOT NULL, t INTEGER NOT NULL,"
    "  producer INTEGER NOT NULL, seq INTEGER NOT NULL,"
    "  reward REAL NOT NULL, done INTEGER NOT NULL, intervention INTEGER NOT NULL,"
    "  policy_version INTEGER NOT NULL, action BLOB, proprio BLOB, images BLOB,"
    "  UNIQUE(producer, seq));";

/* True when the database's file system is (nearly) full or its files reached the
 * process's file-size limit. */
static int out_of_space(sqlite3 *db)
{
    const char *path = sqlite3_db_filename(db, "main");
    if (!path || !*path) return 0;
    int e = sqlite3_system_errno(db);
    if (e == EFBIG || e == ENOSPC || e == EDQUOT) return 1;
    struct rlimit rl;
    struct stat sb;
    char wal[1100];
    snprintf(wal, sizeof wal, "%s-wal", path);
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        if (stat(path, &sb) == 0 && (rlim_t)sb.st_size + 65536 >= rl.rlim_cur) return 1;
        if (stat(wal, &sb) == 0 && (rlim_t)sb.st_size + (1 << 20) >= rl.rlim_cur) return 1;
    }
    struct statvfs vs;
    if (statvfs(path, &vs) == 0 && (uint64_t)vs.f_bavail * vs.f_frsize < (4u << 20)) return 1;
    return 0;
}

int buf_sql_err(sqlite3 *db, int rc, cr_err_t *err, const char *what)
{
    int prim = rc & 0xff;
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int code = CR_EIO;
    switch (prim) {
    case SQLITE_FULL: code = CR_ENOSPC; break;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: code = CR_ECORRUPT; break;
    case SQLITE_BUSY: case SQLITE_LOCKED: code = CR_EBUSY; break;
    case SQLITE_NOMEM: code = CR_ENOMEM; break;
    case SQLITE_READONLY: case SQLITE_PERM: case SQLITE_AUTH: code = CR_EPERM; break;
    case SQLITE_CANTOPEN: code = CR_ENOENT; break;
    case SQLITE_CONSTRAINT: case SQLITE_MISMATCH: code = CR_ECORRUPT; break;
    }
    /* SQLite reports a write that hit a file-size limit (and some full disks) as an
     * I/O error, and its saved errno is not reliable: look at the file system. */
    if (prim == SQLITE_IOERR && db && out_of_space(db)) {
        code = CR_ENOSPC;
        return cr_err_set(err, code, "%s: no space left for %s (%s, sqlite %d)", what,
                          sqlite3_db_filename(db, "main"), msg, rc);
    }
    return cr_err_set(err, code, "%s: %s (sqlite %d)", what, msg, rc);
}

int buf_exec(sqlite3 *db, const char *sql, cr_err_t *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) return buf_sql_err(db, rc, err, sql);
    return 0;
}

int buf_meta_get_i64(sqlite3 *db, const char *key, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key=?", -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) { *out = sqlite3_column_int64(st, 0); rc = SQLITE_OK; }
    else if (rc == SQLITE_DONE) rc = SQLITE_NOTFOUND;
    sqlite3_finalize(st);
    return rc;
}

int buf_meta_set_i64(sqlite3 *db, const char *key, int64_t v)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* "p32,4;c128x128x3,64x64x1;a7": stable, readable with the sqlite3 shell. */
static void layout_format(const buf_layout_t *l, char *out, size_t n)
{
    size_t o = (size_t)snprintf(out, n, "p");
    for (int i = 0; i < l->n_proprio && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, "%s%d", i ? "," : "", l->proprio_dim[i]);
    if (o < n) o += (size_t)snprintf(out + o, n - o, ";c");
    for (int i = 0; i < l->n_cams && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, "%s%dx%dx%d", i ? "," : "", l->cam_h[i],
                              l->cam_w[i], l->cam_c[i]);
    if (o < n) snprintf(out + o, n - o, ";a%d", l->act_dim);
}

static int layout_parse(const char *s, buf_layout_t *l)
{
    memset(l, 0, sizeof *l);
    const char *p = s;
    if (*p++ != 'p') return -1;
    while (*p && *p != ';') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0 || l->n_proprio >= BUF_MAX_PROPRIO) return -1;
        l->proprio_dim[l->n_proprio++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    if (*p++ != ';' || *p++ != 'c') return -1;
    while (*p && *p != ';') {
        int h, w, c, used;
        if (sscanf(p, "%dx%dx%d%n", &h, &w, &c, &used) != 3 || l->n_cams >= BUF_MAX_CAMS ||
            h <= 0 || w <= 0 || c <= 0) return -1;
        l->cam_h[l->n_cams] = h; l->cam_w[l->n_cams] = w; l->cam_c[l->n_cams] = c;
        l->n_cams++;
        p += used;
        if (*p == ',') p++;
    }
    if (*p++ != ';' || *p++ != 'a') return -1;
    char *end;
    long a = strtol(p, &end, 10);
    if (end == p || *end || a <= 0) return -1;
    l->act_dim = (int)a;
    return 0;
}

static int layout_validate(const buf_layout_t *l, cr_err_t *err)
{
    if (l->n_proprio < 0 || l->n_proprio > BUF_MAX_PROPRIO)
        return cr_err_set(err, CR_EINVAL, "layout: n_proprio %d not in 0..%d", l->n_proprio, BUF_MAX_PROPRIO);
    if (l->n_cams < 0 || l->n_cams > BUF_MAX_CAMS)
        return cr_err_set(err, CR_EINVAL, "layout: n_cams %d not in 0..%d", l->n_cams, BUF_MAX_CAMS);
    for (int i = 0; i < l->n_proprio; i++)
        if (l->proprio_dim[i] <= 0 || l->proprio_dim[i] > 1 << 20)
            return cr_err_set(err, CR_EINVAL, "layout: proprio_dim[%d] = %d", i, l->proprio_dim[i]);
    for (int i = 0; i < l->n_cams; i++)
        if (l->cam_h[i] <= 0 || l->cam_w[i] <= 0 || l->cam_c[i] <= 0 ||
            (int64_t)l->cam_h[i] * l->cam_w[i] * l->cam_c[i] > 64 << 20)
            return cr_err_set(err, CR_EINVAL, "layout: camera %d is %dx%dx%d", i, l->cam_h[i],
                              l->cam_w[i], l->cam_c[i]);
    if (l->n_proprio + l->n_cams == 0)
        return cr_err_set(err, CR_EINVAL, "layout: an observation needs a proprio vector or a camera");
    if (l->act_dim <= 0 || l->act_dim > 1 << 16)
        return cr_err_set(err, CR_EINVAL, "layout: act_dim %d", l->act_dim);
    return 0;
}

static int create_schema(sqlite3 *db, const buf_layout_t *l, cr_err_t *err)
{
    char text[512], sql[128];
    layout_format(l, text, sizeof text);
    int rc = buf_exec(db, "BEGIN IMMEDIATE", err);
    if (rc) return rc;
    if ((rc = buf_exec(db, schema_sql, err))) goto fail;
    snprintf(sql, sizeof sql, "PRAGMA application_id=%d; PRAGMA user_version=%d;", APP_ID,
             BUF_SCHEMA_VERSION);
    if ((rc = buf_exec(db, sql, err))) goto fail;
    sqlite3_stmt *st;
    int src = sqlite3_prepare_v2(db, "INSERT INTO meta(key, value) VALUES('layout', ?)", -1, &st, NULL);
    if (src != SQLITE_OK) { rc = buf_sql_err(db, src, err, "write layout"); goto fail; }
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    src = sqlite3_step(st);
    sqlite3_finalize(st);
    if (src != SQLITE_DONE) { rc = buf_sql_err(db, src, err, "write layout"); goto fail; }
    if ((src = buf_meta_set_i64(db, "schema_version", BUF_SCHEMA_VERSION)) ||
        (src = buf_meta_set_i64(db, "limiter_samples", 0))) {
        rc = buf_sql_err(db, src, err, "write meta");
        goto fail;
    }
    return buf_exec(db, "COMMIT", err);
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return buf_sql_err(db, rc, err, "read the database header");
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return buf_sql_err(db, rc, err, "read the database header");
    return 0;
}

static int check_schema(sqlite3 *db, const char *path, buf_layout_t *stored, cr_err_t *err)
{
    int64_t app = 0, ver = 0, meta_ver = 0;
    int rc = pragma_int(db, "PRAGMA application_id", &app, err);
    if (rc) return cr_err_wrap(err, "%s is not a readable SQLite database", path);
    if (app != APP_ID)
        return cr_err_set(err, CR_ECORRUPT, "%s is not a corral buffer (application_id %lld)",
                          path, (long long)app);
    if ((rc = pragma_int(db, "PRAGMA user_version", &ver, err))) return rc;
    if (ver > BUF_SCHEMA_VERSION)
        return cr_err_set(err, CR_EVERSION, "%s has buffer schema version %lld; this corral "
                          "reads up to %d", path, (long long)ver, BUF_SCHEMA_VERSION);
    int src = buf_meta_get_i64(db, "schema_version", &meta_ver);
    if (src != SQLITE_OK)
        return buf_sql_err(db, src, err, "read meta.schema_version"), cr_err_wrap(err, "%s", path);
    if (meta_ver != ver)
        return cr_err_set(err, CR_ECORRUPT, "%s: meta.schema_version %lld disagrees with the "
                          "header's %lld", path, (long long)meta_ver, (long long)ver);
    sqlite3_stmt *st;
    src = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='layout'", -1, &st, NULL);
    if (src != SQLITE_OK) return buf_sql_err(db, src, err, "read meta.layout");
    src = sqlite3_step(st);
    int bad = src != SQLITE_ROW || !sqlite3_column_text(st, 0) ||
              layout_parse((const char *)sqlite3_column_text(st, 0), stored) != 0;
    sqlite3_finalize(st);
    if (bad) return cr_err_set(err, CR_ECORRUPT, "%s: meta.layout is missing or malformed", path);
    return layout_validate(stored, err) ? cr_err_wrap(err, "%s: stored", path) : 0;
}

static int same_layout(const buf_layout_t *a, const buf_layout_t *b)
{
    char x[512], y[512];
    layout_format(a, x, sizeof x);
    layout_format(b, y, sizeof y);
    return strcmp(x, y) == 0;
}

int buf_schema_open(const char *path, const buf_layout_t *layout, int readonly,
                    int sync_full, const char *vfs, sqlite3 **out, buf_layout_t *stored,
                    cr_err_t *err)
{
    *out = NULL;
    int bad = layout ? layout_validate(layout, err) : 0;
    if (bad) return bad;
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (!exists && (readonly || !layout))
        return cr_err_set(err, CR_ENOENT, "%s: no such buffer", path);
    if (exists && !S_ISREG(sb.st_mode))
        return cr_err_set(err, CR_EINVAL, "%s is not a regular file", path);
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, vfs);
    if (rc != SQLITE_OK) {
        buf_sql_err(db, rc, err, "open");
        sqlite3_close(db);
        return cr_err_wrap(err, "%s", path);
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 10000);
    int code = 0;
    /* Recognise the file before changing anything in it: a foreign database must
     * not even be switched to WAL. Reading the header fails on a damaged file. */
    int64_t n_tables = 0, app = 0;
    if ((code = pragma_int(db, "PRAGMA application_id", &app, err)) ||
        (code = pragma_int(db, "SELECT count(*) FROM sqlite_master", &n_tables, err))) {
        cr_err_wrap(err, "%s is not a usable SQLite database", path);
        goto fail;
    }
    if (n_tables > 0 && app != APP_ID) {
        code = cr_err_set(err, CR_ECORRUPT, "%s is not a corral buffer (application_id %lld)",
                          path, (long long)app);
        goto fail;
    }
    if (!readonly) {
        if ((code = buf_exec(db, "PRAGMA journal_mode=WAL", err))) {
            cr_err_wrap(err, "%s: cannot switch to WAL", path);
            goto fail;
        }
        if ((code = buf_exec(db, sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", err)))
            goto fail;
        buf_exec(db, "PRAGMA cache_size=-16384", NULL);
    }
    if (n_tables == 0 && !readonly && layout) {
        if ((code = create_schema(db, layout, err))) { cr_err_wrap(err, "create %s", path); goto fail; }
    }
    if ((code = check_schema(db, path, stored, err))) goto fail;
    if (layout && !same_layout(layout, stored)) {
        char x[512], y[512];
        layout_format(layout, x, sizeof x);
        layout_format(stored, y, sizeof y);
        code = cr_err_set(err, CR_EINVAL, "%s holds layout %s, asked for %s", path, y, x);
        goto fail;
    }
    *out = db;
    return 0;
fail:
    sqlite3_close(db);
    return code;
}
