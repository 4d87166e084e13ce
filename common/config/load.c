/* load.c - decoding a parsed tree into a struct through its table, and freeing it.
 *
 * Order of work, which fixes which error a user sees first: the table is checked
 * (a bad table is our bug, CR_EINTERNAL); the YAML is parsed; the --set overrides are
 * applied to the tree in order; then each map is decoded key by key in document order
 * (unknown key, wrong kind, bad value, failed validator), after which absent fields take
 * their defaults (or fail as required), and last the table's cross-field check runs.
 *
 * Invariant that makes partial failure safe: at every moment *obj holds only NULL or
 * owned pointers, and a list's count is stored only once its zeroed array exists, so
 * cfg_free can always undo a decode that stopped half way. */
#include "common/config/cfg_internal.h"

#include <stdlib.h>
#include <string.h>

/* Where to report something that is absent from the input: the enclosing map, or the
 * nearest ancestor that exists. */
typedef struct where {
    const char *source;
    int line, col;
} where_t;

static where_t where_of(const cfg_node_t *n)
{
    return (where_t){n->source, n->line, n->col};
}

static int decode_struct(const cfg_table_t *t, void *obj, const cfg_node_t *map, const char *path,
                         where_t at, cr_err_t *err);

static const char *kind_words(const cfg_node_t *n)
{
    return n->kind == CFG_NODE_MAP ? "a mapping" : n->kind == CFG_NODE_LIST ? "a list" : NULL;
}

/* "expected <what>, got 'text'" (or "got a mapping"), with a did-you-mean for enums. */
static int expected(const cfg_field_t *f, cfg_type_t type, size_t size, const cfg_node_t *n,
                    const char *what, cr_err_t *err)
{
    char desc[256], q[64], hint[96] = "";
    if (what)
        snprintf(desc, sizeof desc, "%s", what);
    else
        cfg_scalar_describe(f, type, size, desc, sizeof desc);
    if (n->kind != CFG_NODE_SCALAR)
        return cfg_fail(err, CR_EINVAL, n->source, n->line, n->col, n->path,
                        "expected %s, got %s", desc, kind_words(n));
    if (n->is_null)
        return cfg_fail(err, CR_EINVAL, n->source, n->line, n->col, n->path,
                        "expected %s, got nothing", desc);
    if (type == CFG_ENUM && f->names) {
        const char *best = NULL;
        size_t bd = (size_t)-1;
        for (size_t i = 0; f->names[i]; i++) {
            size_t d = cfg_distance(n->text, f->names[i]);
            if (d < bd) bd = d, best = f->names[i];
        }
        if (best && cfg_close_enough(bd, n->text, best))
            snprintf(hint, sizeof hint, "; did you mean '%s'?", best);
    }
    cfg_quote(q, sizeof q, n->text);
    return cfg_fail(err, CR_EINVAL, n->source, n->line, n->col, n->path,
                    "expected %s, got '%s'%s", desc, q, hint);
}

static int run_check(int (*check)(const void *, cr_err_t *), const void *value, where_t at,
                     const char *path, cr_err_t *err)
{
    if (!check) return 0;
    cr_err_t e = {0};
    int rc = check(value, &e);
    if (rc >= 0) return 0;
    return cfg_fail(err, rc, at.source, at.line, at.col, path, "%s",
                    e.msg[0] ? e.msg : cr_err_str(rc));
}

static int decode_scalar(const cfg_field_t *f, cfg_type_t type, size_t size, const cfg_node_t *n,
                         void *dst, cr_err_t *err)
{
    if (n->kind != CFG_NODE_SCALAR || n->is_null)
        return expected(f, type, size, n, NULL, err);
    if (cfg_scalar_parse(f, type, size, n->text, dst) < 0) {
        if (type == CFG_STRING) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", n->path);
        return expected(f, type, size, n, NULL, err);
    }
    return 0;
}

static int decode_list(const cfg_field_t *f, void *obj, const cfg_node_t *v, cr_err_t *err)
{
    bool structs = f->type == CFG_STRUCT_LIST;
    if (v->kind != CFG_NODE_LIST)
        return expected(f, f->type, f->size, v, structs ? "a list of mappings" : "a list", err);
    if (v->count > f->max_count)
        return cfg_fail(err, CR_EINVAL, v->source, v->line, v->col, v->path,
                        "expected at most %zu items, got %zu", f->max_count, v->count);
    if (v->count == 0 && f->def == CFG_REQUIRED)
        return cfg_fail(err, CR_EINVAL, v->source, v->line, v->col, v->path,
                        "expected at least one item, got an empty list");
    if (v->count == 0) return 0;
    char *items = calloc(v->count, f->item_size);
    if (!items) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", v->path);
    *(void **)((char *)obj + f->offset) = items;
    *(size_t *)((char *)obj + f->count_offset) = v->count;
    for (size_t i = 0; i < v->count; i++) {
        const cfg_node_t *it = v->items[i];
        void *dst = items + i * f->item_size;
        int rc = structs ? decode_struct(f->sub, dst, it, it->path, where_of(it), err)
                         : decode_scalar(f, f->item, f->item_size, it, dst, err);
        if (rc == 0) rc = run_check(f->check, dst, where_of(it), it->path, err);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Decodes v (present and not null) into the field's member of obj. */
static int decode_field(const cfg_field_t *f, void *obj, const cfg_node_t *v, cr_err_t *err)
{
    void *dst = (char *)obj + f->offset;
    int rc;
    switch (f->type) {
    case CFG_STRUCT:
        rc = decode_struct(f->sub, dst, v, v->path, where_of(v), err);
        break;
    case CFG_LIST:
    case CFG_STRUCT_LIST:
        return decode_list(f, obj, v, err);  /* which runs the check on each item */
    case CFG_NODE:
        *(cfg_node_t **)dst = cfg_node_copy(v);
        if (!*(cfg_node_t **)dst) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", v->path);
        rc = 0;
        break;
    default:
        rc = decode_scalar(f, f->type, f->size, v, dst, err);
    }
    if (rc < 0) return rc;
    return run_check(f->check, dst, where_of(v), v->path, err);
}

/* The field is absent (or null): its default, or an error when it is required. */
static int apply_default(const cfg_field_t *f, void *obj, const char *path, where_t at,
                         cr_err_t *err)
{
    void *dst = (char *)obj + f->offset;
    if (f->type == CFG_STRUCT) {
        int rc = decode_struct(f->sub, dst, NULL, path, at, err);
        return rc < 0 ? rc : run_check(f->check, dst, at, path, err);
    }
    if (f->type == CFG_NODE) return 0;
    if (f->def == CFG_REQUIRED)
        return cfg_fail(err, CR_EINVAL, at.source, at.line, at.col, path,
                        "required field is missing");
    /* The default is YAML text decoded like input; its positions are the map's. */
    cfg_origin_t o = {.source = at.source, .set_line = at.line, .set_col = at.col};
    const char *slash = strrchr(path, '.');
    char parent[1024];
    snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - path) : 0, path);
    cfg_node_t *n;
    int rc;
    if (f->def[0] == '[' || f->def[0] == '{') {
        rc = cfg_parse_tree(&o, f->def, strlen(f->def), f->name, parent, &n, err);
    } else {
        n = cfg_node_new(CFG_NODE_SCALAR, f->name, f->def, strlen(f->def), path, at.source,
                         at.line, at.col);
        rc = n ? 0 : cr_err_set(err, CR_ENOMEM, "%s: out of memory", path);
    }
    if (rc < 0) return rc;
    rc = decode_field(f, obj, n, err);
    cfg_node_free(n);
    return rc;
}

static const cfg_field_t *find_field(const cfg_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->nfields; i++)
        if (strcmp(t->fields[i].name, name) == 0) return &t->fields[i];
    return NULL;
}

static const cfg_node_t *find_key(const cfg_node_t *map, const char *key)
{
    for (size_t i = 0; map && i < map->count; i++)
        if (strcmp(map->items[i]->key, key) == 0) return map->items[i];
    return NULL;
}

static int unknown_key(const cfg_table_t *t, const cfg_node_t *c, cr_err_t *err)
{
    const char *best = NULL;
    size_t bd = (size_t)-1;
    for (size_t i = 0; i < t->nfields; i++) {
        size_t d = cfg_distance(c->key, t->fields[i].name);
        if (d < bd) bd = d, best = t->fields[i].name;
    }
    if (best && cfg_close_enough(bd, c->key, best))
        return cfg_fail(err, CR_EINVAL, c->source, c->key_line, c->key_col, c->path,
                        "unknown key; did you mean '%s'?", best);
    char keys[384] = "";
    size_t used = 0;
    for (size_t i = 0; i < t->nfields && used < sizeof keys; i++)
        used += (size_t)snprintf(keys + used, sizeof keys - used, "%s%s", i ? ", " : "",
                                 t->fields[i].name);
    return cfg_fail(err, CR_EINVAL, c->source, c->key_line, c->key_col, c->path,
                    t->nfields ? "unknown key; valid keys are %s" : "unknown key%s", keys);
}

static int decode_struct(const cfg_table_t *t, void *obj, const cfg_node_t *map, const char *path,
                         where_t at, cr_err_t *err)
{
    if (map && map->kind == CFG_NODE_SCALAR && map->is_null) map = NULL;
    if (map && map->kind != CFG_NODE_MAP)
        return expected(NULL, CFG_STRUCT, 0, map, "a mapping", err);
    if (map) at = where_of(map);
    for (size_t i = 0; map && i < map->count; i++) {
        const cfg_node_t *c = map->items[i];
        const cfg_field_t *f = find_field(t, c->key);
        if (!f) return unknown_key(t, c, err);
        if (c->kind == CFG_NODE_SCALAR && c->is_null) continue;
        int rc = decode_field(f, obj, c, err);
        if (rc < 0) return rc;
    }
    for (size_t i = 0; i < t->nfields; i++) {
        const cfg_field_t *f = &t->fields[i];
        const cfg_node_t *c = find_key(map, f->name);
        if (c && !(c->kind == CFG_NODE_SCALAR && c->is_null)) continue;
        char fpath[1024];
        cfg_path_join(fpath, sizeof fpath, path, f->name);
        int rc = apply_default(f, obj, fpath, c ? where_of(c) : at, err);
        if (rc < 0) return rc;
    }
    return run_check(t->check, obj, at, path, err);
}

/* ---- freeing --------------------------------------------------------------------- */

static void free_field(const cfg_field_t *f, void *obj)
{
    void *dst = (char *)obj + f->offset;
    switch (f->type) {
    case CFG_STRING:
        free(*(char **)dst);
        break;
    case CFG_STRUCT:
        cfg_free(f->sub, dst);
        break;
    case CFG_NODE:
        cfg_node_free(*(cfg_node_t **)dst);
        break;
    case CFG_LIST:
    case CFG_STRUCT_LIST: {
        char *items = *(char **)dst;
        size_t n = *(size_t *)((char *)obj + f->count_offset);
        for (size_t i = 0; items && i < n; i++) {
            if (f->type == CFG_STRUCT_LIST)
                cfg_free(f->sub, items + i * f->item_size);
            else if (f->item == CFG_STRING)
                free(*(char **)(items + i * f->item_size));
        }
        free(items);
        break;
    }
    default:
        break;
    }
}

void cfg_free(const cfg_table_t *t, void *obj)
{
    if (!t || !obj) return;
    for (size_t i = 0; i < t->nfields; i++)
        free_field(&t->fields[i], obj);
    memset(obj, 0, t->size);
}

/* ---- the table check ------------------------------------------------------------- */

static size_t scalar_size(cfg_type_t type, size_t given)
{
    switch (type) {
    case CFG_BOOL: return sizeof(bool);
    case CFG_INT: return given == 1 || given == 2 || given == 4 || given == 8 ? given : 0;
    case CFG_DOUBLE: return given == sizeof(float) || given == sizeof(double) ? given : 0;
    case CFG_STRING: return sizeof(char *);
    case CFG_ENUM: return sizeof(int);
    case CFG_SIZE: case CFG_DURATION: return sizeof(int64_t);
    default: return 0;
    }
}

static const char *field_problem(const cfg_field_t *f, cfg_type_t type, size_t size)
{
    if (!cfg_is_scalar(type)) return "a list item must be a scalar type";
    if (scalar_size(type, size) != size) return "member size does not fit the type";
    if (type == CFG_ENUM && (!f->names || !f->names[0])) return "an enum needs names";
    if (type == CFG_DOUBLE && f->dmin > f->dmax) return "dmin > dmax";
    if (type == CFG_INT || type == CFG_SIZE || type == CFG_DURATION) {
        long long lo, hi;
        cfg_field_t any = {0};
        cfg_int_range(&any, type, size, &lo, &hi);
        if (f->imin > f->imax) return "imin > imax";
        if ((f->imin || f->imax) && (f->imin < lo || f->imax > hi))
            return "range does not fit the member";
    }
    return NULL;
}

static const char *shape_problem(const cfg_field_t *f)
{
    switch (f->type) {
    case CFG_STRUCT:
        if (!f->sub) return "a section needs a sub-table";
        return f->sub->size == f->size ? NULL : "sub-table size differs from the member";
    case CFG_NODE:
        return f->size == sizeof(cfg_node_t *) ? NULL : "member must be a cfg_node_t *";
    case CFG_LIST:
    case CFG_STRUCT_LIST:
        if (f->size != sizeof(void *)) return "member must be a pointer";
        if (f->max_count == 0) return "a list needs max_count";
        if (f->type == CFG_LIST) return field_problem(f, f->item, f->item_size);
        if (!f->sub) return "a list of sections needs a sub-table";
        return f->sub->size == f->item_size ? NULL : "sub-table size differs from the item";
    default:
        return field_problem(f, f->type, f->size);
    }
}

static int table_check(const cfg_table_t *t, int depth, cr_err_t *err);

static int check_fields(const cfg_table_t *t, int depth, cr_err_t *err)
{
    for (size_t i = 0; i < t->nfields; i++) {
        const cfg_field_t *f = &t->fields[i];
        if (!f->name || !f->name[0] || strchr(f->name, '.'))
            return cr_err_set(err, CR_EINTERNAL, "table %s: field %zu: bad name", t->name, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->fields[j].name, f->name) == 0)
                return cr_err_set(err, CR_EINTERNAL, "table %s: %s: repeated", t->name, f->name);
        const char *why = shape_problem(f);
        if (why) return cr_err_set(err, CR_EINTERNAL, "table %s: %s: %s", t->name, f->name, why);
        if (f->type == CFG_STRUCT || f->type == CFG_STRUCT_LIST) {
            int rc = table_check(f->sub, depth + 1, err);
            if (rc < 0) return rc;
        }
    }
    return 0;
}

/* Every default must decode (and pass its validator) on its own. */
static int check_defaults(const cfg_table_t *t, cr_err_t *err)
{
    void *scratch = calloc(1, t->size ? t->size : 1);
    if (!scratch) return cr_err_set(err, CR_ENOMEM, "table %s: out of memory", t->name);
    int rc = 0;
    for (size_t i = 0; i < t->nfields && rc == 0; i++) {
        const cfg_field_t *f = &t->fields[i];
        if (f->def == CFG_REQUIRED || f->type == CFG_STRUCT || f->type == CFG_NODE) continue;
        cr_err_t e = {0};
        where_t at = {"<default>", 1, 1};
        if (apply_default(f, scratch, f->name, at, &e) < 0)
            rc = cr_err_set(err, CR_EINTERNAL, "table %s: %s: bad default '%s': %s", t->name,
                            f->name, f->def, e.msg);
    }
    cfg_free(t, scratch);
    free(scratch);
    return rc;
}

/* depth bounds a table that (wrongly) contains itself. */
static int table_check(const cfg_table_t *t, int depth, cr_err_t *err)
{
    if (!t || !t->fields || t->nfields == 0 || t->size == 0)
        return cr_err_set(err, CR_EINTERNAL, "table %s: no fields", t && t->name ? t->name : "?");
    if (depth > 16)
        return cr_err_set(err, CR_EINTERNAL, "table %s: nested more than 16 deep", t->name);
    int rc = check_fields(t, depth, err);
    return rc < 0 ? rc : check_defaults(t, err);
}

int cfg_table_check(const cfg_table_t *t, cr_err_t *err)
{
    return table_check(t, 0, err);
}

/* ---- entry points ------------------------------------------------------------------ */

int cfg_decode(const cfg_table_t *t, void *obj, const cfg_node_t *root, cr_err_t *err)
{
    memset(obj, 0, t->size);
    int rc = cfg_table_check(t, err);
    if (rc < 0) return rc;
    where_t at = root ? where_of(root) : (where_t){"<defaults>", 1, 1};
    rc = decode_struct(t, obj, root, root ? root->path : "", at, err);
    if (rc < 0) cfg_free(t, obj);
    return rc;
}

static int load_tree(const cfg_table_t *t, void *obj, cfg_node_t *root,
                     const char *const *sets, size_t nsets, cr_err_t *err)
{
    if (root->kind == CFG_NODE_SCALAR && root->is_null) {
        /* A document of only "~" or comments: nothing set, like an empty map. */
        cfg_node_t *empty = cfg_node_new(CFG_NODE_MAP, NULL, NULL, 0, "", root->source,
                                         root->line, root->col);
        if (!empty) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", root->source);
        cfg_node_free(root);
        root = empty;
    }
    int rc = 0;
    if (root->kind != CFG_NODE_MAP)
        rc = expected(NULL, CFG_STRUCT, 0, root, "a mapping at the top level", err);
    for (size_t i = 0; i < nsets && rc == 0; i++)
        rc = cfg_node_set(root, sets[i], (int)i + 1, err);
    if (rc == 0) rc = cfg_decode(t, obj, root, err);
    cfg_node_free(root);
    return rc;
}

int cfg_load_string(const cfg_table_t *t, void *obj, const char *name, const char *yaml,
                    size_t len, const char *const *sets, size_t nsets, cr_err_t *err)
{
    memset(obj, 0, t->size);
    int rc = cfg_table_check(t, err);
    if (rc < 0) return rc;
    cfg_node_t *root;
    rc = cfg_node_parse(name, yaml, yaml ? len : 0, &root, err);
    if (rc < 0) return rc;
    return load_tree(t, obj, root, sets, nsets, err);
}

int cfg_load_file(const cfg_table_t *t, void *obj, const char *path,
                  const char *const *sets, size_t nsets, cr_err_t *err)
{
    memset(obj, 0, t->size);
    int rc = cfg_table_check(t, err);
    if (rc < 0) return rc;
    cfg_node_t *root;
    rc = cfg_node_parse_file(path, &root, err);
    if (rc < 0) return rc;
    return load_tree(t, obj, root, sets, nsets, err);
}
