/* config.h - YAML configuration into typed C structs, described by one table per struct.
 *
 * A component describes each of its config structs once, as a table of fields (name,
 * type, range, default, validator, one-line doc). Everything else comes from that
 * table: the YAML loader, the `--set a.b.c=value` overrides, the defaults, the
 * reference text (cfg_doc) and the error messages, which always read
 *
 *     SOURCE:LINE:COL: DOTTED.PATH: MESSAGE
 *     configs/exp.yaml:12:17: algorithm.batch_size: expected an integer between 1 and 65536, got 'abc'
 *     configs/exp.yaml:4:3: algorithm.batchsize: unknown key; did you mean 'batch_size'?
 *     --set:2:14: algorithm.lr: expected a number between 0 and 1, got '3'
 *
 * For a `--set` override SOURCE is "--set", LINE is the 1-based index of the override
 * among those passed, and COL the 1-based byte position inside "a.b.c=value".
 *
 * Example: an experiment with a nested section and a list of robots.
 *
 *     typedef struct robot_cfg { char *name; int kind; cfg_node_t *options; } robot_cfg_t;
 *     typedef struct algo_cfg { char *name; int64_t batch_size; double lr; } algo_cfg_t;
 *     typedef struct exp_cfg {
 *         algo_cfg_t algorithm;
 *         uint64_t buffer_bytes;                  // CFG_SIZE: "80GiB"
 *         int64_t period_ns;                      // CFG_DURATION: "10ms"
 *         int32_t *hidden; size_t n_hidden;       // CFG_LIST of ints
 *         robot_cfg_t *robots; size_t n_robots;   // CFG_STRUCT_LIST
 *     } exp_cfg_t;
 *
 *     static const char *const kinds[] = {"mujoco", "dynamixel", NULL};
 *     static const cfg_field_t robot_fields[] = {
 *         {CFG_STRING(robot_cfg_t, name, CFG_REQUIRED, "robot name, unique in the experiment")},
 *         {CFG_ENUM(robot_cfg_t, kind, "mujoco", kinds, "driver")},
 *         {CFG_NODE(robot_cfg_t, options, "driver-specific options, read by the driver")},
 *     };
 *     static const cfg_table_t robot_table = {CFG_TABLE(robot_cfg_t, robot_fields)};
 *     static const cfg_field_t algo_fields[] = {
 *         {CFG_STRING(algo_cfg_t, name, "sac", "algorithm plugin")},
 *         {CFG_INT(algo_cfg_t, batch_size, "256", 1, 65536, "samples per update"), .check = pow2},
 *         {CFG_DOUBLE(algo_cfg_t, lr, "3e-4", 0, 1, "learning rate")},
 *     };
 *     static const cfg_table_t algo_table = {CFG_TABLE(algo_cfg_t, algo_fields)};
 *     static const cfg_field_t exp_fields[] = {
 *         {CFG_STRUCT(exp_cfg_t, algorithm, &algo_table, "learner algorithm")},
 *         {CFG_SIZE(exp_cfg_t, buffer_bytes, "1GiB", CFG_MiB, 80 * CFG_GiB, "buffer budget")},
 *         {CFG_DURATION(exp_cfg_t, period_ns, "10ms", CFG_MSEC, CFG_SEC, "control period")},
 *         {CFG_LIST(exp_cfg_t, hidden, n_hidden, CFG_INT, "[256, 256]", 8, "hidden layer widths"),
 *          .imin = 1, .imax = 4096},
 *         {CFG_STRUCT_LIST(exp_cfg_t, robots, n_robots, &robot_table, CFG_REQUIRED, 16, "robots")},
 *     };
 *     const cfg_table_t exp_table = {CFG_TABLE(exp_cfg_t, exp_fields), .check = exp_check};
 *
 *     exp_cfg_t cfg;
 *     const char *sets[] = {"algorithm.lr=1e-3", "robots.0.options.port=/dev/ttyUSB0"};
 *     if (cfg_load_file(&exp_table, &cfg, "configs/exp.yaml", sets, 2, &err) < 0) ...
 *     ...
 *     cfg_free(&exp_table, &cfg);
 *
 * The YAML key of a field is its C member name. Each macro expands to the inside of
 * a designated initializer, so `{CFG_INT(...), .check = fn}` adds a validator and a
 * field can always be written out by hand with the members of cfg_field_t.
 *
 * Semantics shared by every type: a key that is absent, or whose value is YAML null
 * (nothing, `~`, `null`), takes the field's default; a field whose default is
 * CFG_REQUIRED must then be given. Unknown keys, duplicate keys, aliases (*name) and a
 * second YAML document are errors; tags and anchors are ignored. Nothing here keeps a pointer to the caller's input.
 * Error codes: CR_EINVAL for bad input, CR_ENOENT / CR_EPERM / CR_EIO for a file that
 * cannot be read, CR_ETOOBIG for one over CFG_MAX_INPUT, CR_ENOMEM, and CR_EINTERNAL for
 * a table that contradicts itself (see cfg_table_check: our bug, not the user's). */
#ifndef CORRAL_COMMON_CONFIG_H
#define CORRAL_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

#define CFG_MAX_INPUT (16u << 20)  /* bytes in one file or string */
#define CFG_MAX_DEPTH 64           /* nesting of maps and lists */

/* ---- the untyped tree --------------------------------------------------------------
 * The YAML document as parsed, before any table is applied. The loader builds one,
 * applies --set to it, then decodes it; components that need free-form key/values
 * (driver options) keep a subtree through a CFG_NODE field and read it with
 * cfg_node_get, or decode it later with their own table (cfg_decode), with errors
 * that still point at the original file, line and path. */
typedef enum cfg_node_kind { CFG_NODE_SCALAR, CFG_NODE_MAP, CFG_NODE_LIST } cfg_node_kind_t;

typedef struct cfg_node {
    cfg_node_kind_t kind;
    const char *text;      /* SCALAR: the value, never NULL ("" for null); else NULL */
    bool is_null;          /* SCALAR: plain empty, `~` or `null` (quoted never is) */
    const char *key;       /* the key when the parent is a MAP, else NULL */
    const char *path;      /* dotted path from the document root: "robots.0.name"; "" for it */
    const char *source;    /* file or display name, or "--set" */
    int line, col;         /* of the value, 1-based */
    int key_line, key_col; /* of the key in a MAP parent; else equal to line, col */
    struct cfg_node **items;  /* MAP: values, in document order (keys in ->key); LIST: items */
    size_t count;
} cfg_node_t;

/* Parses a YAML document (one top-level map, list or scalar; an empty document gives
 * an empty MAP). name is the source named in errors and nodes. *out is the caller's,
 * freed with cfg_node_free. yaml need not be NUL-terminated. */
int cfg_node_parse(const char *name, const char *yaml, size_t len, cfg_node_t **out, cr_err_t *err);
int cfg_node_parse_file(const char *path, cfg_node_t **out, cr_err_t *err);

/* Applies one override "a.b.0.c=value" to the tree (*root must be a MAP). index is the
 * 1-based position of the override, used as its LINE in errors. A value starting with
 * '[' or '{' is parsed as YAML flow (`hidden=[64,64]`); any other is a plain scalar,
 * taken verbatim. Missing maps are created, a list index equal to the list's length
 * appends, a larger one is an error. */
int cfg_node_set(cfg_node_t *root, const char *assignment, int index, cr_err_t *err);

/* The node at a dotted path under n ("" is n itself; list items by index), or NULL.
 * Borrowed: valid while the tree lives. */
const cfg_node_t *cfg_node_get(const cfg_node_t *n, const char *path);

/* A deep copy, or NULL when out of memory. */
cfg_node_t *cfg_node_copy(const cfg_node_t *n);
void cfg_node_free(cfg_node_t *n);  /* NULL is fine */

/* ---- the table --------------------------------------------------------------------- */
typedef enum cfg_type {
    CFG_BOOL,         /* bool: true/false, yes/no, on/off */
    CFG_INT,          /* int32_t or int64_t (by member size) in [imin, imax]; decimal or 0x */
    CFG_DOUBLE,       /* double in [dmin, dmax]; never NaN */
    CFG_STRING,       /* char *, owned (malloc) */
    CFG_ENUM,         /* int: the index of the value in names[] */
    CFG_SIZE,         /* uint64_t bytes in [imin, imax]: "4096", "512MiB", "80GiB", "1.5GB" */
    CFG_DURATION,     /* int64_t ns in [imin, imax]: "250us", "10ms", "2s", "1.5m", "1h" */
    CFG_STRUCT,       /* an embedded struct described by sub */
    CFG_LIST,         /* item type `item` (a scalar type): T *ptr plus size_t count */
    CFG_STRUCT_LIST,  /* structs described by sub: T *ptr plus size_t count */
    CFG_NODE,         /* cfg_node_t *, an owned copy of the subtree; NULL when absent */
} cfg_type_t;

struct cfg_table;

typedef struct cfg_field {
    const char *name;         /* YAML key */
    cfg_type_t type;
    size_t offset, size;      /* of the member (for lists: the pointer member) */
    size_t count_offset;      /* lists: the size_t count member */
    cfg_type_t item;          /* CFG_LIST: type of each item */
    size_t item_size;         /* lists: sizeof one item */
    const char *def;          /* default as YAML text ("256", "10ms", "[1, 2]"), or CFG_REQUIRED;
                               * STRUCT and NODE fields have none (absent = sub-defaults, NULL) */
    long long imin, imax;     /* INT, SIZE, DURATION (and their list items); 0, 0 = any
                               * value of the member (sizes, durations: any >= 0) */
    double dmin, dmax;        /* DOUBLE (and its list items); 0, 0 = any finite number */
    const char *const *names; /* ENUM: allowed values, NULL-terminated */
    const struct cfg_table *sub;  /* STRUCT, STRUCT_LIST */
    size_t max_count;         /* lists: at most this many items */
    /* Optional: called with the field's storage once it is set (from the input or the
     * default; for lists, with each item); on failure it fills err with the bare reason
     * ("must be a power of two") and returns a negative code; the loader adds source,
     * position and path. Defaults must pass it (cfg_table_check). */
    int (*check)(const void *value, cr_err_t *err);
    const char *doc;          /* one line, for cfg_doc */
} cfg_field_t;

typedef struct cfg_table {
    const char *name;         /* the C type, for messages about the table itself */
    size_t size;              /* sizeof the struct */
    const cfg_field_t *fields;
    size_t nfields;
    /* Optional cross-field check, run after all fields are set; same contract as
     * cfg_field_t.check, its message reported at the struct's position and path. */
    int (*check)(const void *obj, cr_err_t *err);
} cfg_table_t;

#define CFG_REQUIRED ((const char *)0)

#define CFG_KiB (1LL << 10)
#define CFG_MiB (1LL << 20)
#define CFG_GiB (1LL << 30)
#define CFG_TiB (1LL << 40)
#define CFG_USEC 1000LL
#define CFG_MSEC 1000000LL
#define CFG_SEC 1000000000LL

/* Field macros: T is the struct type, m the member (also the YAML key). */
#define CFG_MEMBER_(T, m) .name = #m, .offset = offsetof(T, m), .size = sizeof(((T *)0)->m)
#define CFG_BOOL(T, m, def_, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_BOOL, .def = (def_), .doc = (doc_)
#define CFG_INT(T, m, def_, lo, hi, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_INT, .def = (def_), .imin = (lo), .imax = (hi), .doc = (doc_)
#define CFG_DOUBLE(T, m, def_, lo, hi, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_DOUBLE, .def = (def_), .dmin = (lo), .dmax = (hi), .doc = (doc_)
#define CFG_STRING(T, m, def_, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_STRING, .def = (def_), .doc = (doc_)
#define CFG_ENUM(T, m, def_, names_, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_ENUM, .def = (def_), .names = (names_), .doc = (doc_)
#define CFG_SIZE(T, m, def_, lo, hi, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_SIZE, .def = (def_), .imin = (lo), .imax = (hi), .doc = (doc_)
#define CFG_DURATION(T, m, def_, lo, hi, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_DURATION, .def = (def_), .imin = (lo), .imax = (hi), .doc = (doc_)
#define CFG_STRUCT(T, m, sub_, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_STRUCT, .def = "{}", .sub = (sub_), .doc = (doc_)
#define CFG_NODE(T, m, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_NODE, .def = "", .doc = (doc_)
/* List items of INT/SIZE/DURATION/DOUBLE/ENUM take their range or names from the
 * field: add `.imin = .., .imax = ..` (or .dmin/.dmax, .names) after the macro;
 * without them any value of the item type is accepted. */
/* The count member must be a size_t: anything else fails to compile (negative array). */
#define CFG_COUNT_(T, n) \
    (offsetof(T, n) + 0 * sizeof(char[sizeof(((T *)0)->n) == sizeof(size_t) ? 1 : -1]))
#define CFG_LIST(T, m, n, item_, def_, max_, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_LIST, .count_offset = CFG_COUNT_(T, n), .item = (item_), \
    .item_size = sizeof(*((T *)0)->m), .def = (def_), .max_count = (max_), .doc = (doc_)
#define CFG_STRUCT_LIST(T, m, n, sub_, def_, max_, doc_) \
    CFG_MEMBER_(T, m), .type = CFG_STRUCT_LIST, .count_offset = CFG_COUNT_(T, n), \
    .item_size = sizeof(*((T *)0)->m), .sub = (sub_), .def = (def_), .max_count = (max_), \
    .doc = (doc_)
#define CFG_TABLE(T, fields_) \
    .name = #T, .size = sizeof(T), .fields = (fields_), \
    .nfields = sizeof(fields_) / sizeof((fields_)[0])

/* ---- loading -----------------------------------------------------------------------
 * Fills *obj (sizeof = t->size, any prior content ignored) from the YAML file or
 * string, then the overrides sets[0..nsets) ("a.b.c=value"), then defaults, with
 * every check of the table. On success *obj owns its strings, lists and nodes until
 * cfg_free; on failure *obj is left zeroed, owning nothing. name is the display name
 * used in errors for a string (e.g. "<builtin>"); yaml may be NULL for defaults and
 * overrides only. */
int cfg_load_file(const cfg_table_t *t, void *obj, const char *path,
                  const char *const *sets, size_t nsets, cr_err_t *err);
int cfg_load_string(const cfg_table_t *t, void *obj, const char *name, const char *yaml,
                    size_t len, const char *const *sets, size_t nsets, cr_err_t *err);

/* Decodes an already parsed tree (a MAP, or NULL for all defaults) into *obj, with the
 * same contract as cfg_load_*. Paths in errors continue the node's own path, so a
 * driver decoding robots.1.options reports "robots.1.options.baud: ...". The tree is
 * borrowed for the call only. */
int cfg_decode(const cfg_table_t *t, void *obj, const cfg_node_t *root, cr_err_t *err);

/* Frees what a loaded *obj owns (strings, lists, nodes, recursively) and zeroes it.
 * A zeroed *obj is fine too. */
void cfg_free(const cfg_table_t *t, void *obj);

/* Checks a table against itself: member sizes match the types, ranges fit the member,
 * defaults parse and satisfy their own range, enums and sub-tables are present, no
 * key is repeated. The loaders call it first (CR_EINTERNAL); each component's unit
 * test should call it on its tables. */
int cfg_table_check(const cfg_table_t *t, cr_err_t *err);

/* Writes the reference text of a table: one line per field with its dotted path
 * (list items as "robots.N.name"), type, default or "required", accepted values and
 * doc. Returns 0, or CR_EIO when the stream fails. */
int cfg_doc(const cfg_table_t *t, FILE *out);

#endif
