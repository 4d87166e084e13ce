/* bufutil.h - what the buffer tests share: a small layout, steps whose contents
 * encode who made them (so a sample can be checked against its source), and
 * direct SQLite queries for checking the file behind the buffer's back. */
#ifndef CORRAL_TESTS_BUFUTIL_H
#define CORRAL_TESTS_BUFUTIL_H

#include "buffer/buffer.h"

#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

#define TU_CAM_BYTES (4 * 4 * 3)

/* proprio 3 + 1, one 4x4x3 camera, action 2. */
static inline buf_layout_t tu_layout(void)
{
    buf_layout_t l = {.n_proprio = 2, .proprio_dim = {3, 1}, .n_cams = 1,
                      .cam_h = {4}, .cam_w = {4}, .cam_c = {3}, .act_dim = 2};
    return l;
}

typedef struct tu_step {
    float proprio[4], action[2];
    uint8_t image[TU_CAM_BYTES];
    buf_step_t s;
} tu_step_t;

/* Step t of an episode: obs[0] = code, obs[1] = t, action[0] = code, image = t & 255. */
static inline void tu_fill(tu_step_t *x, uint64_t producer, uint64_t seq, uint64_t ep, int t,
                           int final, float reward)
{
    float code = (float)(producer * 100000 + seq);
    x->proprio[0] = code; x->proprio[1] = (float)t; x->proprio[2] = (float)ep; x->proprio[3] = -1;
    x->action[0] = code; x->action[1] = (float)t;
    for (int i = 0; i < TU_CAM_BYTES; i++) x->image[i] = (uint8_t)(t & 255);
    buf_step_t s = {.producer = producer, .seq = seq, .episode = ep, .robot = "arm0",
                    .source = BUF_SRC_ONLINE, .proprio = x->proprio, .image = {x->image},
                    .action = final ? NULL : x->action, .reward = reward, .policy_version = 7};
    x->s = s;
}

static inline long long tu_query(const char *path, const char *sql)
{
    sqlite3 *db;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return v;
}

static inline int tu_integrity_ok(const char *path)
{
    sqlite3 *db;
    int ok = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return ok;
}

#endif
