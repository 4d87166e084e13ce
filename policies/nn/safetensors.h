/* safetensors.h - reader and writer for the safetensors format (the layout of the
 * Python `safetensors` package): an 8-byte little-endian header length N, N bytes
 * of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 * ..., "__metadata__": {"key": "string", ...}}, then the little-endian tensor data.
 * Used for weights, exported policies (in memory) and checkpoints (files).
 *
 * The reader validates strictly and never trusts the file: header length within
 * the file, a JSON object, known dtypes, shapes whose size matches the byte range,
 * ranges that tile the data section exactly with no gap or overlap, unique names,
 * metadata values that are strings. Any violation is CR_ECORRUPT naming the
 * tensor or field at fault. */
#ifndef CORRAL_POLICIES_NN_SAFETENSORS_H
#define CORRAL_POLICIES_NN_SAFETENSORS_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

typedef enum nn_dtype {
    NN_DT_F32 = 0, NN_DT_F64, NN_DT_F16, NN_DT_BF16,
    NN_DT_I64, NN_DT_I32, NN_DT_I16, NN_DT_I8, NN_DT_U8, NN_DT_BOOL,
    NN_DT_COUNT
} nn_dtype_t;

#define NN_ST_MAX_DIMS 8
#define NN_ST_MAX_HEADER (100u << 20)   /* the Python package's own limit */

typedef struct nn_st_entry {
    char *name;
    nn_dtype_t dtype;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    size_t numel;
    size_t begin, end;          /* byte range in the data section */
} nn_st_entry_t;

typedef struct nn_st nn_st_t;   /* a parsed file or blob; owns a copy of the bytes */

const char *nn_dtype_name(nn_dtype_t dt);
size_t nn_dtype_size(nn_dtype_t dt);

/* Parses buf[len] (copied). */
int nn_st_parse(nn_st_t **out, const void *buf, size_t len, cr_err_t *err);
int nn_st_read_file(nn_st_t **out, const char *path, cr_err_t *err);
void nn_st_free(nn_st_t *st);

int nn_st_count(const nn_st_t *st);
const nn_st_entry_t *nn_st_at(const nn_st_t *st, int i);
const nn_st_entry_t *nn_st_find(const nn_st_t *st, const char *name);
const void *nn_st_data(const nn_st_t *st, const nn_st_entry_t *e);   /* may be unaligned */
/* Metadata value or NULL; borrowed from st. */
const char *nn_st_meta(const nn_st_t *st, const char *key);
/* Copies tensor `name` (F32, exactly numel elements) into dst; CR_ENOENT when
 * missing, CR_ECORRUPT on a dtype or size mismatch. */
int nn_st_get_f32(const nn_st_t *st, const char *name, float *dst, size_t numel, cr_err_t *err);

/* ---- writer: collects tensors (data borrowed until the write) and metadata ---- */
typedef struct nn_st_writer nn_st_writer_t;

nn_st_writer_t *nn_st_writer_create(void);
void nn_st_writer_destroy(nn_st_writer_t *w);
int nn_st_writer_add(nn_st_writer_t *w, const char *name, nn_dtype_t dtype, int ndim,
                     const int64_t *shape, const void *data, cr_err_t *err);
int nn_st_writer_meta(nn_st_writer_t *w, const char *key, const char *value, cr_err_t *err);
/* Serialises into a malloc'd buffer the caller frees. */
int nn_st_writer_to_mem(nn_st_writer_t *w, void **buf, size_t *len, cr_err_t *err);
/* Durable write: path.tmp, fsync, rename over path, fsync of the directory. */
int nn_st_writer_to_file(nn_st_writer_t *w, const char *path, cr_err_t *err);

#endif
