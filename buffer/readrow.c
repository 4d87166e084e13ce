/* readrow.c - decoding one step row from SQLite into caller buffers. Every blob's
 * size is checked against the layout: a row that does not fit is corrupt data from
 * disk, reported as CR_ECORRUPT, never trusted. */
#include "buffer/internal.h"

#include <string.h>

/* Columns from first: proprio, images, action, policy_version. */
int buf_row_decode(const buf_layout_t *l, sqlite3_stmt *st, int first, int64_t row,
                   float *proprio, uint8_t *const *image, float *action,
                   int64_t *policy_version, cr_err_t *err)
{
    size_t pb = (size_t)buf_layout_obs_dim(l) * sizeof(float), ib = 0;
    for (int i = 0; i < l->n_cams; i++) ib += buf_layout_cam_bytes(l, i);
    size_t ab = (size_t)l->act_dim * sizeof(float);
    const void *p = sqlite3_column_blob(st, first);
    size_t pn = (size_t)sqlite3_column_bytes(st, first);
    const uint8_t *im = sqlite3_column_blob(st, first + 1);
    size_t in = (size_t)sqlite3_column_bytes(st, first + 1);
    const void *a = sqlite3_column_blob(st, first + 2);
    size_t an = (size_t)sqlite3_column_bytes(st, first + 2);
    if (pn != pb || in != ib || (a && an != ab))
        return cr_err_set(err, CR_ECORRUPT, "step row %lld: blob sizes %zu/%zu/%zu do not fit "
                          "the layout (%zu/%zu/%zu)", (long long)row, pn, in, an, pb, ib, ab);
    if (proprio && pb) memcpy(proprio, p, pb);
    if (image)
        for (int i = 0; i < l->n_cams; i++) {
            size_t n = buf_layout_cam_bytes(l, i);
            if (image[i]) memcpy(image[i], im, n);
            im += n;
        }
    if (action) {
        if (a) memcpy(action, a, ab);
        else memset(action, 0, ab);
    }
    if (policy_version) *policy_version = sqlite3_column_int64(st, first + 3);
    return 0;
}

int buf_read_row(buf_t *b, bufdb_t *d, int64_t row, float *proprio, uint8_t *const *image,
                 float *action, int64_t *policy_version, cr_err_t *err)
{
    sqlite3_stmt *st = d->rd_row;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, row);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return cr_err_set(err, CR_ECORRUPT, "%s: step row %lld is missing", d->path, (long long)row);
    if (rc != SQLITE_ROW) {
        buf_sql_err(d->rd, rc, err, "read a step row");
        sqlite3_reset(st);
        return cr_err_wrap(err, "%s", d->path);
    }
    rc = buf_row_decode(&b->layout, st, 0, row, proprio, image, action, policy_version, err);
    sqlite3_reset(st);
    return rc;
}
