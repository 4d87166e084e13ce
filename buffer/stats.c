/* stats.c - statistics of a buffer file, read without writing to it: episodes and
 * steps per source, success rate, limiter counters and the size on disk, and the
 * ended episodes of one robot and source. Serves `corral buffer stats`, anyone
 * checking a buffer from outside its process, and a learner telling a restarted
 * env worker which of its scripted demonstrations are already recorded. */
#include "buffer/internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int query(sqlite3 *db, const char *sql, int (*row)(sqlite3_stmt *, buf_stats_t *),
                 buf_stats_t *o, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return buf_sql_err(db, rc, err, "read statistics");
    int code = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && !code) code = row(st, o);
    sqlite3_finalize(st);
    if (code) return cr_err_set(err, CR_ECORRUPT, "statistics: a source value out of range");
    if (rc != SQLITE_DONE) return buf_sql_err(db, rc, err, "read statistics");
    return 0;
}

static int ep_row(sqlite3_stmt *st, buf_stats_t *o)
{
    int s = sqlite3_column_int(st, 0);
    if (s < 0 || s >= BUF_SRC_COUNT) return -1;
    o->episodes[s] += sqlite3_column_int64(st, 1);
    o->episodes_ended += sqlite3_column_int64(st, 2);
    o->episodes_success += sqlite3_column_int64(st, 3);
    o->episodes_truncated += sqlite3_column_int64(st, 4);
    return 0;
}

static int step_row(sqlite3_stmt *st, buf_stats_t *o)
{
    int s = sqlite3_column_int(st, 0);
    if (s < 0 || s >= BUF_SRC_COUNT) return -1;
    o->steps[s] += sqlite3_column_int64(st, 1);
    o->intervention_steps += sqlite3_column_int64(st, 2);
    return 0;
}

static int64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

int buf_stats(const char *path, buf_stats_t *o, cr_err_t *err)
{
    memset(o, 0, sizeof *o);
    sqlite3 *db;
    int code = buf_schema_open(path, NULL, 1, 0, NULL, &db, &o->layout, err);
    if (code) return code;
    o->schema_version = BUF_SCHEMA_VERSION;
    code = query(db, "SELECT source, count(*), sum(ended), sum(ended AND success), sum(truncated) "
                 "FROM episodes GROUP BY source", ep_row, o, err);
    /* Per episode source, counted through the episodes, so the step scan reads only
     * the scalar columns of each row. */
    if (!code)
        code = query(db, "SELECT e.source, sum(c.n), sum(c.i) FROM episodes e JOIN "
                     "(SELECT episode, count(*) AS n, sum(intervention) AS i FROM steps GROUP BY episode) c "
                     "ON c.episode = e.id GROUP BY e.source", step_row, o, err);
    if (!code) {
        buf_meta_get_i64(db, "limiter_samples", &o->limiter_samples);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM steps WHERE action IS NOT NULL", -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) o->limiter_inserts = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    if (code) return cr_err_wrap(err, "%s", path);
    o->success_rate = o->episodes_ended ? (double)o->episodes_success / (double)o->episodes_ended : 0;
    char wal[1100];
    snprintf(wal, sizeof wal, "%s-wal", path);
    o->db_bytes = file_size(path);
    o->wal_bytes = file_size(wal);
    return 0;
}

int buf_count_episodes(const char *path, const char *robot, buf_source_t source, int64_t *out, cr_err_t *err)
{
    *out = 0;
    if (!robot || source < 0 || source >= BUF_SRC_COUNT)
        return cr_err_set(err, CR_EINVAL, "count episodes: a robot and a source are needed");
    sqlite3 *db;
    buf_layout_t layout;
    int code = buf_schema_open(path, NULL, 1, 0, NULL, &db, &layout, err);
    if (code) return code;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM episodes WHERE robot=? AND source=? AND ended=1", -1, &st,
                                NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, robot, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, (int)source);
        if ((rc = sqlite3_step(st)) == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_ROW) code = buf_sql_err(db, rc, err, "count episodes");
    sqlite3_close(db);
    return code ? cr_err_wrap(err, "%s", path) : 0;
}
