/* cfg_internal.h - what the files of common/config share and no one else sees: node
 * construction, the one error formatter behind every "SOURCE:LINE:COL: PATH: MESSAGE",
 * and the scalar parsers and describers used by the loader, the table check and the
 * docs alike (so a message and the reference text can never disagree). */
#ifndef CORRAL_COMMON_CONFIG_INTERNAL_H
#define CORRAL_COMMON_CONFIG_INTERNAL_H

#include "common/config/config.h"

/* Where a parsed tree's positions come from: a file (line and column from libyaml) or
 * one --set value (every position is LINE=index, COL=col + libyaml's column). */
typedef struct cfg_origin {
    const char *source;
    int set_line;   /* 0 for a file */
    int set_col;
} cfg_origin_t;

/* A node with copies of key (may be NULL), text (len bytes, SCALAR only), path and
 * source, all in one allocation. */
cfg_node_t *cfg_node_new(cfg_node_kind_t kind, const char *key, const char *text, size_t len,
                         const char *path, const char *source, int line, int col);
/* Appends child to a MAP or LIST; CR_ENOMEM on failure (child untouched). */
int cfg_node_append(cfg_node_t *parent, cfg_node_t *child);
/* Parses yaml into a tree whose root carries root_key and the path under parent_path. */
int cfg_parse_tree(const cfg_origin_t *o, const char *yaml, size_t len, const char *root_key,
                   const char *parent_path, cfg_node_t **out, cr_err_t *err);
/* "child" path: "a.b" + "c" -> "a.b.c"; "" + "c" -> "c". Truncates at n. */
void cfg_path_join(char *buf, size_t n, const char *parent, const char *child);

/* Fills err with "source:line:col: path: message" (": path" left out when path is
 * empty) and returns code. */
int cfg_fail(cr_err_t *err, int code, const char *source, int line, int col, const char *path,
             const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* A scalar quoted for a message: at most ~48 bytes, control bytes shown as '?'. */
void cfg_quote(char *buf, size_t n, const char *text);

/* Levenshtein distance, ASCII case-insensitive, '-' equal to '_'; large for long words. */
size_t cfg_distance(const char *a, const char *b);
/* Whether a distance is close enough to suggest cand for word. */
bool cfg_close_enough(size_t dist, const char *word, const char *cand);

/* Parses text as one scalar of `type` for field f (ranges, names from f) into dst,
 * a member of dst_size bytes. Returns 0, or -1 when text is not a valid value. */
int cfg_scalar_parse(const cfg_field_t *f, cfg_type_t type, size_t dst_size, const char *text,
                     void *dst);
/* "a positive integer", "an integer between 1 and 64", "one of sac, ppo", ... */
void cfg_scalar_describe(const cfg_field_t *f, cfg_type_t type, size_t dst_size, char *buf,
                         size_t n);
/* The effective range of an INT/SIZE/DURATION field for a member of dst_size bytes. */
void cfg_int_range(const cfg_field_t *f, cfg_type_t type, size_t dst_size, long long *lo,
                   long long *hi);
/* "80GiB", "10ms": the shortest exact spelling. */
void cfg_format_size(char *buf, size_t n, long long bytes);
void cfg_format_duration(char *buf, size_t n, long long ns);
/* "bool", "int", "size", ... */
const char *cfg_type_name(cfg_type_t type);
/* Whether type is one a CFG_LIST item may have. */
bool cfg_is_scalar(cfg_type_t type);

#endif
