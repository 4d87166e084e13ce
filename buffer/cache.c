/* cache.c - the newest rows of one database, kept in RAM for fast batch gathers.
 *
 * Row r lives in slot r % cap, so the cache is a ring over row ids: a new row
 * overwrites the row cap ids older, and membership is one comparison (slot_row).
 * Each field is its own contiguous array ([cap][dim]), so a batch gather is one
 * memcpy per field and sample. The capacity comes from a byte budget. */
#include "buffer/internal.h"

#include <stdlib.h>
#include <string.h>

size_t buf_cache_row_bytes(const buf_layout_t *l)
{
    size_t n = sizeof(int64_t) * 2 + sizeof(float) * ((size_t)buf_layout_obs_dim(l) + (size_t)l->act_dim);
    for (int i = 0; i < l->n_cams; i++) n += buf_layout_cam_bytes(l, i);
    return n;
}

int buf_cache_init(cache_t *c, const buf_layout_t *l, size_t budget, cr_err_t *err)
{
    memset(c, 0, sizeof *c);
    c->obs_dim = buf_layout_obs_dim(l);
    c->act_dim = l->act_dim;
    c->n_cams = l->n_cams;
    for (int i = 0; i < l->n_cams; i++) c->cam_bytes[i] = buf_layout_cam_bytes(l, i);
    c->cap = (int64_t)(budget / buf_cache_row_bytes(l));
    if (c->cap == 0) return 0;
    c->slot_row = calloc((size_t)c->cap, sizeof *c->slot_row);
    c->proprio = malloc((size_t)c->cap * (size_t)(c->obs_dim ? c->obs_dim : 1) * sizeof(float));
    c->action = malloc((size_t)c->cap * (size_t)c->act_dim * sizeof(float));
    c->policy_version = malloc((size_t)c->cap * sizeof(int64_t));
    int ok = c->slot_row && c->proprio && c->action && c->policy_version;
    for (int i = 0; i < c->n_cams && ok; i++)
        ok = (c->image[i] = malloc((size_t)c->cap * c->cam_bytes[i])) != NULL;
    if (!ok) {
        int64_t cap = c->cap;
        buf_cache_free(c);
        return cr_err_set(err, CR_ENOMEM, "cache of %lld rows (%zu bytes)", (long long)cap, budget);
    }
    return 0;
}

void buf_cache_free(cache_t *c)
{
    free(c->slot_row);
    free(c->proprio);
    free(c->action);
    free(c->policy_version);
    for (int i = 0; i < BUF_MAX_CAMS; i++) free(c->image[i]);
    memset(c, 0, sizeof *c);
}

size_t buf_cache_bytes(const cache_t *c)
{
    size_t row = sizeof(int64_t) * 2 + sizeof(float) * (size_t)(c->obs_dim + c->act_dim);
    for (int i = 0; i < c->n_cams; i++) row += c->cam_bytes[i];
    return row * (size_t)c->cap;
}

void buf_cache_put(cache_t *c, int64_t row, const float *proprio, const uint8_t *const *image,
                   const float *action, int64_t policy_version)
{
    if (c->cap == 0) return;
    int64_t s = row % c->cap;
    if (c->slot_row[s] == 0) c->rows++;
    c->slot_row[s] = row;
    if (c->obs_dim) memcpy(c->proprio + s * c->obs_dim, proprio, (size_t)c->obs_dim * sizeof(float));
    if (action) memcpy(c->action + s * c->act_dim, action, (size_t)c->act_dim * sizeof(float));
    else memset(c->action + s * c->act_dim, 0, (size_t)c->act_dim * sizeof(float));
    c->policy_version[s] = policy_version;
    for (int i = 0; i < c->n_cams; i++)
        memcpy(c->image[i] + (size_t)s * c->cam_bytes[i], image[i], c->cam_bytes[i]);
}
