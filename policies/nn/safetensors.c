/* safetensors.c - strict reader and atomic writer of safetensors files and blobs;
 * see safetensors.h for the format and the checks. */
#include "policies/nn/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

static const struct { const char *name; size_t size; } dtypes[NN_DT_COUNT] = {
    [NN_DT_F32] = {"F32", 4}, [NN_DT_F64] = {"F64", 8}, [NN_DT_F16] = {"F16", 2},
    [NN_DT_BF16] = {"BF16", 2}, [NN_DT_I64] = {"I64", 8}, [NN_DT_I32] = {"I32", 4},
    [NN_DT_I16] = {"I16", 2}, [NN_DT_I8] = {"I8", 1}, [NN_DT_U8] = {"U8", 1},
    [NN_DT_BOOL] = {"BOOL", 1},
};

const char *nn_dtype_name(nn_dtype_t dt) { return dt < NN_DT_COUNT ? dtypes[dt].name : "?"; }
size_t nn_dtype_size(nn_dtype_t dt) { return dt < NN_DT_COUNT ? dtypes[dt].size : 0; }

struct nn_st {
    uint8_t *bytes;          /* the whole file */
    size_t len;
    const uint8_t *data;     /* start of the data section */
    size_t data_len;
    nn_st_entry_t *e;
    int count;
    char **meta_k, **meta_v;
    int nmeta;
};

void nn_st_free(nn_st_t *st)
{
    if (!st) return;
    for (int i = 0; i < st->count; i++) free(st->e[i].name);
    for (int i = 0; i < st->nmeta; i++) { free(st->meta_k[i]); free(st->meta_v[i]); }
    free(st->meta_k);
    free(st->meta_v);
    free(st->e);
    free(st->bytes);
    free(st);
}

/* A JSON number that is a non-negative integer representable exactly. */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(nn_st_entry_t *e, const cJSON *j, cr_err_t *err)
{
    const char *n = e->name;
    if (!cJSON_IsObject(j))
        return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' is not an object", n);
    for (const cJSON *f = j->child; f; f = f->next)
        if (strcmp(f->string, "dtype") && strcmp(f->string, "shape") &&
            strcmp(f->string, "data_offsets"))
            return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' has unknown field '%s'",
                              n, f->string);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off))
        return cr_err_set(err, CR_ECORRUPT,
                          "safetensors: tensor '%s' needs dtype (string), shape and data_offsets (arrays)", n);
    e->dtype = NN_DT_COUNT;
    for (int i = 0; i < NN_DT_COUNT; i++)
        if (strcmp(dt->valuestring, dtypes[i].name) == 0) e->dtype = (nn_dtype_t)i;
    if (e->dtype == NN_DT_COUNT)
        return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' has unknown dtype '%.16s'",
                          n, dt->valuestring);
    int nd = cJSON_GetArraySize(sh);
    if (nd > NN_ST_MAX_DIMS)
        return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' has %d dims (max %d)", n, nd,
                          NN_ST_MAX_DIMS);
    e->ndim = nd;
    uint64_t numel = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (json_uint(cJSON_GetArrayItem(sh, i), &d) != 0)
            return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' shape[%d] is not a non-negative integer", n, i);
        if (d && numel > (UINT64_MAX / 16) / d)
            return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' shape overflows", n);
        numel *= d;
        e->shape[i] = (int64_t)d;
    }
    uint64_t b, en;
    if (cJSON_GetArraySize(off) != 2 || json_uint(cJSON_GetArrayItem(off, 0), &b) != 0 ||
        json_uint(cJSON_GetArrayItem(off, 1), &en) != 0 || b > en)
        return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' data_offsets must be [begin, end] with begin <= end", n);
    if (en - b != numel * dtypes[e->dtype].size)
        return cr_err_set(err, CR_ECORRUPT,
                          "safetensors: tensor '%s' has %llu bytes for %llu elements of %s", n,
                          (unsigned long long)(en - b), (unsigned long long)numel, dt->valuestring);
    e->numel = (size_t)numel;
    e->begin = (size_t)b;
    e->end = (size_t)en;
    return 0;
}

static int parse_meta(nn_st_t *st, const cJSON *j, cr_err_t *err)
{
    if (!cJSON_IsObject(j))
        return cr_err_set(err, CR_ECORRUPT, "safetensors: __metadata__ is not an object");
    int n = cJSON_GetArraySize(j);
    st->meta_k = calloc((size_t)n + 1, sizeof(char *));
    st->meta_v = calloc((size_t)n + 1, sizeof(char *));
    if (!st->meta_k || !st->meta_v) return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory");
    for (const cJSON *f = j->child; f; f = f->next) {
        if (!cJSON_IsString(f))
            return cr_err_set(err, CR_ECORRUPT, "safetensors: metadata '%s' is not a string", f->string);
        st->meta_k[st->nmeta] = strdup(f->string);
        st->meta_v[st->nmeta] = strdup(f->valuestring);
        if (!st->meta_k[st->nmeta] || !st->meta_v[st->nmeta])
            return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory");
        st->nmeta++;
    }
    return 0;
}

static int cmp_begin(const void *a, const void *b)
{
    const nn_st_entry_t *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int parse_header(nn_st_t *st, const char *hdr, size_t hlen, cr_err_t *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
    if (!root) return cr_err_set(err, CR_ECORRUPT, "safetensors: header is not valid JSON");
    int rc = 0;
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\0') { rc = cr_err_set(err, CR_ECORRUPT, "safetensors: bytes after the JSON header"); goto out; }
    if (!cJSON_IsObject(root)) { rc = cr_err_set(err, CR_ECORRUPT, "safetensors: header is not a JSON object"); goto out; }
    int n = cJSON_GetArraySize(root);
    st->e = calloc((size_t)n + 1, sizeof *st->e);
    if (!st->e) { rc = cr_err_set(err, CR_ENOMEM, "safetensors: out of memory"); goto out; }
    for (const cJSON *f = root->child; f; f = f->next) {
        if (strcmp(f->string, "__metadata__") == 0) {
            if ((rc = parse_meta(st, f, err)) != 0) goto out;
            continue;
        }
        for (int i = 0; i < st->count; i++)
            if (strcmp(st->e[i].name, f->string) == 0) { rc = cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' appears twice", f->string); goto out; }
        nn_st_entry_t *e = &st->e[st->count];
        if (!(e->name = strdup(f->string))) { rc = cr_err_set(err, CR_ENOMEM, "safetensors: out of memory"); goto out; }
        st->count++;
        if ((rc = parse_entry(e, f, err)) != 0) goto out;
    }
    /* the byte ranges must tile the data section exactly */
    nn_st_entry_t *sorted = malloc(((size_t)st->count + 1) * sizeof *sorted);
    if (!sorted) { rc = cr_err_set(err, CR_ENOMEM, "safetensors: out of memory"); goto out; }
    memcpy(sorted, st->e, (size_t)st->count * sizeof *sorted);
    qsort(sorted, (size_t)st->count, sizeof *sorted, cmp_begin);
    size_t pos = 0;
    for (int i = 0; i < st->count && rc == 0; i++) {
        if (sorted[i].begin != pos)
            rc = cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' starts at byte %zu, expected %zu (gap or overlap)",
                            sorted[i].name, sorted[i].begin, pos);
        pos = sorted[i].end;
    }
    if (rc == 0 && pos != st->data_len)
        rc = cr_err_set(err, CR_ECORRUPT, "safetensors: tensors cover %zu bytes but the data section has %zu (truncated?)",
                        pos, st->data_len);
    free(sorted);
out:
    cJSON_Delete(root);
    return rc;
}

int nn_st_parse(nn_st_t **out, const void *buf, size_t len, cr_err_t *err)
{
    *out = NULL;
    if (len < 8) return cr_err_set(err, CR_ECORRUPT, "safetensors: %zu bytes, shorter than the 8-byte header length", len);
    uint64_t hlen;
    memcpy(&hlen, buf, 8);
    if (hlen > NN_ST_MAX_HEADER)
        return cr_err_set(err, CR_ECORRUPT, "safetensors: header length %llu exceeds the %u-byte limit",
                          (unsigned long long)hlen, NN_ST_MAX_HEADER);
    if (hlen < 2 || hlen > len - 8)
        return cr_err_set(err, CR_ECORRUPT, "safetensors: header length %llu does not fit in %zu bytes (truncated?)",
                          (unsigned long long)hlen, len);
    nn_st_t *st = calloc(1, sizeof *st);
    if (!st || !(st->bytes = malloc(len))) {
        free(st);
        return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory for %zu bytes", len);
    }
    memcpy(st->bytes, buf, len);
    st->len = len;
    st->data = st->bytes + 8 + hlen;
    st->data_len = len - 8 - (size_t)hlen;
    if (st->bytes[8] != '{') {
        nn_st_free(st);
        return cr_err_set(err, CR_ECORRUPT, "safetensors: header does not start with '{'");
    }
    int rc = parse_header(st, (const char *)st->bytes + 8, (size_t)hlen, err);
    if (rc != 0) { nn_st_free(st); return rc; }
    *out = st;
    return 0;
}

int nn_st_read_file(nn_st_t **out, const char *path, cr_err_t *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cr_err_set(err, errno == ENOENT ? CR_ENOENT : CR_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return cr_err_set(err, CR_EIO, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) { fclose(f); return cr_err_set(err, CR_ENOMEM, "%s: out of memory", path); }
    size_t got = fread(buf, 1, len, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != len) { free(buf); return cr_err_set(err, CR_EIO, "%s: read failed", path); }
    int rc = nn_st_parse(out, buf, len, err);
    free(buf);
    if (rc != 0) cr_err_wrap(err, "%s", path);
    return rc;
}

int nn_st_count(const nn_st_t *st) { return st->count; }
const nn_st_entry_t *nn_st_at(const nn_st_t *st, int i) { return &st->e[i]; }

const nn_st_entry_t *nn_st_find(const nn_st_t *st, const char *name)
{
    for (int i = 0; i < st->count; i++)
        if (strcmp(st->e[i].name, name) == 0) return &st->e[i];
    return NULL;
}

const void *nn_st_data(const nn_st_t *st, const nn_st_entry_t *e) { return st->data + e->begin; }

const char *nn_st_meta(const nn_st_t *st, const char *key)
{
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta_k[i], key) == 0) return st->meta_v[i];
    return NULL;
}

int nn_st_get_f32(const nn_st_t *st, const char *name, float *dst, size_t numel, cr_err_t *err)
{
    const nn_st_entry_t *e = nn_st_find(st, name);
    if (!e) return cr_err_set(err, CR_ENOENT, "safetensors: no tensor '%s'", name);
    if (e->dtype != NN_DT_F32 || e->numel != numel)
        return cr_err_set(err, CR_ECORRUPT, "safetensors: tensor '%s' is %s[%zu], expected F32[%zu]",
                          name, nn_dtype_name(e->dtype), e->numel, numel);
    memcpy(dst, nn_st_data(st, e), numel * sizeof(float));
    return 0;
}

/* ---- writer ---- */

typedef struct wtensor {
    char *name;
    nn_dtype_t dtype;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
} wtensor_t;

struct nn_st_writer {
    wtensor_t *t;
    int count, cap;
    cJSON *meta;
};

nn_st_writer_t *nn_st_writer_create(void)
{
    nn_st_writer_t *w = calloc(1, sizeof *w);
    if (w && !(w->meta = cJSON_CreateObject())) { free(w); return NULL; }
    return w;
}

void nn_st_writer_destroy(nn_st_writer_t *w)
{
    if (!w) return;
    for (int i = 0; i < w->count; i++) free(w->t[i].name);
    free(w->t);
    cJSON_Delete(w->meta);
    free(w);
}

int nn_st_writer_add(nn_st_writer_t *w, const char *name, nn_dtype_t dtype, int ndim,
                     const int64_t *shape, const void *data, cr_err_t *err)
{
    if (!name[0] || strcmp(name, "__metadata__") == 0 || dtype >= NN_DT_COUNT || ndim < 0 ||
        ndim > NN_ST_MAX_DIMS)
        return cr_err_set(err, CR_EINVAL, "safetensors: bad tensor '%s'", name);
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return cr_err_set(err, CR_EEXIST, "safetensors: tensor '%s' added twice", name);
    if (w->count == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        wtensor_t *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory");
        w->t = t;
        w->cap = cap;
    }
    wtensor_t *t = &w->t[w->count];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) { t->shape[i] = shape[i]; n *= (size_t)shape[i]; }
    t->nbytes = n * dtypes[dtype].size;
    t->data = data;
    w->count++;
    return 0;
}

int nn_st_writer_meta(nn_st_writer_t *w, const char *key, const char *value, cr_err_t *err)
{
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    if (!cJSON_AddStringToObject(w->meta, key, value))
        return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory");
    return 0;
}

int nn_st_writer_to_mem(nn_st_writer_t *w, void **buf, size_t *len, cr_err_t *err)
{
    *buf = NULL;
    cJSON *root = cJSON_CreateObject();
    int rc = root ? 0 : CR_ENOMEM;
    if (rc == 0 && cJSON_GetArraySize(w->meta) > 0)
        rc = cJSON_AddItemToObject(root, "__metadata__", cJSON_Duplicate(w->meta, 1)) ? 0 : CR_ENOMEM;
    size_t pos = 0;
    for (int i = 0; i < w->count && rc == 0; i++) {
        const wtensor_t *t = &w->t[i];
        cJSON *o = cJSON_AddObjectToObject(root, t->name);
        cJSON *sh = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON *off = o ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        if (!o || !sh || !off || !cJSON_AddStringToObject(o, "dtype", dtypes[t->dtype].name)) { rc = CR_ENOMEM; break; }
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)pos));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(pos + t->nbytes)));
        pos += t->nbytes;
    }
    char *json = rc == 0 ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory building the header");
    size_t jl = strlen(json), hl = (jl + 7) & ~(size_t)7;   /* data 8-byte aligned */
    uint8_t *out = malloc(8 + hl + pos);
    if (!out) { free(json); return cr_err_set(err, CR_ENOMEM, "safetensors: out of memory"); }
    uint64_t h64 = hl;
    memcpy(out, &h64, 8);
    memcpy(out + 8, json, jl);
    memset(out + 8 + jl, ' ', hl - jl);
    free(json);
    size_t at = 8 + hl;
    for (int i = 0; i < w->count; i++) {
        if (w->t[i].nbytes) memcpy(out + at, w->t[i].data, w->t[i].nbytes);
        at += w->t[i].nbytes;
    }
    *buf = out;
    *len = at;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int nn_st_writer_to_file(nn_st_writer_t *w, const char *path, cr_err_t *err)
{
    void *buf;
    size_t len;
    int rc = nn_st_writer_to_mem(w, &buf, &len, err);
    if (rc != 0) return rc;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        free(buf);
        return cr_err_set(err, CR_EINVAL, "%s: path too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = cr_err_set(err, errno == ENOENT ? CR_ENOENT : CR_EIO, "%s: %s", tmp, strerror(errno));
        free(buf);
        return rc;
    }
    if (write_all(fd, buf, len) != 0 || fsync(fd) != 0) {
        rc = cr_err_set(err, errno == ENOSPC ? CR_ENOSPC : CR_EIO, "%s: write failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        free(buf);
        return rc;
    }
    free(buf);
    close(fd);
    if (rename(tmp, path) != 0) {
        rc = cr_err_set(err, CR_EIO, "%s: rename failed: %s", path, strerror(errno));
        unlink(tmp);
        return rc;
    }
    /* the rename is durable only once the directory is synced */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = '\0'; else strcpy(dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    return 0;
}
