/* node.c - the untyped YAML tree: libyaml's event stream turned into cfg_node_t.
 *
 * Every node remembers where it came from (source, line, column, and for map values
 * the key's position) and its dotted path, so any later consumer, typed or not, can
 * report an error the way the loader does. The parser refuses what a config file has
 * no use for and what would make positions or sizes unbounded: aliases (a document
 * with aliases can expand exponentially), more than one document, nesting deeper than
 * CFG_MAX_DEPTH, NUL bytes inside scalars, non-scalar keys and duplicate keys. */
#include "common/config/cfg_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

void cfg_path_join(char *buf, size_t n, const char *parent, const char *child)
{
    if (parent && parent[0])
        snprintf(buf, n, "%s.%s", parent, child);
    else
        snprintf(buf, n, "%s", child);
}

cfg_node_t *cfg_node_new(cfg_node_kind_t kind, const char *key, const char *text, size_t len,
                         const char *path, const char *source, int line, int col)
{
    size_t klen = key ? strlen(key) : 0, plen = strlen(path), slen = strlen(source);
    size_t tlen = kind == CFG_NODE_SCALAR ? len : 0;
    cfg_node_t *n = calloc(1, sizeof *n + (klen + 1) + (tlen + 1) + (plen + 1) + (slen + 1));
    if (!n) return NULL;
    char *p = (char *)(n + 1);
    n->kind = kind;
    if (key) {
        memcpy(p, key, klen + 1);
        n->key = p;
        p += klen + 1;
    }
    if (kind == CFG_NODE_SCALAR) {
        memcpy(p, text, tlen);
        p[tlen] = '\0';
        n->text = p;
        p += tlen + 1;
    }
    memcpy(p, path, plen + 1);
    n->path = p;
    p += plen + 1;
    memcpy(p, source, slen + 1);
    n->source = p;
    n->line = n->key_line = line;
    n->col = n->key_col = col;
    return n;
}

int cfg_node_append(cfg_node_t *parent, cfg_node_t *child)
{
    /* The capacity is implied by count: 4, then doubling, so grow when count is 4, 8, ... */
    size_t c = parent->count;
    if (c == 0 || (c >= 4 && (c & (c - 1)) == 0)) {
        cfg_node_t **items = realloc(parent->items, (c ? c * 2 : 4) * sizeof *items);
        if (!items) return CR_ENOMEM;
        parent->items = items;
    }
    parent->items[parent->count++] = child;
    return 0;
}

void cfg_node_free(cfg_node_t *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->count; i++)
        cfg_node_free(n->items[i]);
    free(n->items);
    free(n);
}

cfg_node_t *cfg_node_copy(const cfg_node_t *n)
{
    cfg_node_t *c = cfg_node_new(n->kind, n->key, n->text, n->text ? strlen(n->text) : 0,
                                 n->path, n->source, n->line, n->col);
    if (!c) return NULL;
    c->is_null = n->is_null;
    c->key_line = n->key_line;
    c->key_col = n->key_col;
    for (size_t i = 0; i < n->count; i++) {
        cfg_node_t *ci = cfg_node_copy(n->items[i]);
        if (!ci || cfg_node_append(c, ci) < 0) {
            cfg_node_free(ci);
            cfg_node_free(c);
            return NULL;
        }
    }
    return c;
}

const cfg_node_t *cfg_node_get(const cfg_node_t *n, const char *path)
{
    while (n && path && *path) {
        size_t len = strcspn(path, ".");
        const cfg_node_t *next = NULL;
        if (n->kind == CFG_NODE_MAP) {
            for (size_t i = 0; i < n->count && !next; i++)
                if (strlen(n->items[i]->key) == len && memcmp(n->items[i]->key, path, len) == 0)
                    next = n->items[i];
        } else if (n->kind == CFG_NODE_LIST && len > 0 && len < 20 &&
                   strspn(path, "0123456789") == len) {
            size_t idx = strtoull(path, NULL, 10);
            if (idx < n->count) next = n->items[idx];
        }
        n = next;
        path += len;
        if (*path == '.') path++;
    }
    return n;
}

/* ---- parsing -------------------------------------------------------------------- */

typedef struct frame {
    cfg_node_t *node;   /* a MAP or LIST being filled */
    char *key;          /* MAP: the key waiting for its value, or NULL */
    int key_line, key_col;
} frame_t;

typedef struct parse {
    const cfg_origin_t *o;
    const char *yaml;
    size_t len;
    frame_t stack[CFG_MAX_DEPTH + 1];
    int depth;
    cfg_node_t *root;
    cr_err_t *err;
} parse_t;

static void position(const parse_t *ps, yaml_mark_t m, int *line, int *col)
{
    if (ps->o->set_line) {
        *line = ps->o->set_line;
        *col = ps->o->set_col + (int)m.index;  /* a --set value is one line */
    } else {
        *line = (int)m.line + 1;
        *col = (int)m.column + 1;
    }
}

static int fail_at(parse_t *ps, yaml_mark_t m, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(parse_t *ps, yaml_mark_t m, const char *path, const char *fmt, ...)
{
    char msg[CR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    position(ps, m, &line, &col);
    return cfg_fail(ps->err, CR_EINVAL, ps->o->source, line, col, path, "%s", msg);
}

/* libyaml reports reader errors (bad UTF-8) by byte offset only. */
static yaml_mark_t mark_of_offset(const parse_t *ps, size_t off)
{
    yaml_mark_t m = {.index = off};
    for (size_t i = 0; i < off && i < ps->len; i++) {
        if (ps->yaml[i] == '\n') {
            m.line++;
            m.column = 0;
        } else {
            m.column++;
        }
    }
    return m;
}

static int syntax_error(parse_t *ps, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR)
        return cr_err_set(ps->err, CR_ENOMEM, "%s: out of memory parsing YAML", ps->o->source);
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_READER_ERROR)
        return fail_at(ps, mark_of_offset(ps, p->problem_offset), "", "invalid input: %s",
                       problem);
    if (p->context) {
        int line, col;
        position(ps, p->context_mark, &line, &col);
        return fail_at(ps, p->problem_mark, "", "syntax error: %s (%s at %d:%d)", problem,
                       p->context, line, col);
    }
    return fail_at(ps, p->problem_mark, "", "syntax error: %s", problem);
}

/* Adds a freshly made node (already holding its key) under the top frame, or as root. */
static int attach(parse_t *ps, cfg_node_t *n)
{
    if (ps->depth == 0) {
        ps->root = n;
        return 0;
    }
    frame_t *f = &ps->stack[ps->depth - 1];
    if (cfg_node_append(f->node, n) < 0) {
        cfg_node_free(n);
        return cr_err_set(ps->err, CR_ENOMEM, "%s: out of memory", ps->o->source);
    }
    if (f->node->kind == CFG_NODE_MAP) {
        n->key_line = f->key_line;
        n->key_col = f->key_col;
        free(f->key);
        f->key = NULL;
    }
    return 0;
}

/* A scalar in key position of a map: remember it, refusing a duplicate. */
static int take_key(parse_t *ps, frame_t *f, const yaml_event_t *ev)
{
    const char *k = (const char *)ev->data.scalar.value;
    size_t klen = ev->data.scalar.length;
    char path[1024];
    cfg_path_join(path, sizeof path, f->node->path, k);
    if (memchr(k, '\0', klen))
        return fail_at(ps, ev->start_mark, f->node->path, "NUL byte in a key");
    for (size_t i = 0; i < f->node->count; i++)
        if (strcmp(f->node->items[i]->key, k) == 0)
            return fail_at(ps, ev->start_mark, path, "duplicate key (first at line %d)",
                           f->node->items[i]->key_line);
    f->key = strdup(k);
    if (!f->key) return cr_err_set(ps->err, CR_ENOMEM, "%s: out of memory", ps->o->source);
    position(ps, ev->start_mark, &f->key_line, &f->key_col);
    return 0;
}

static bool plain_null(const yaml_event_t *ev)
{
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *v = (const char *)ev->data.scalar.value;
    return ev->data.scalar.length == 0 || !strcmp(v, "~") || !strcmp(v, "null") ||
           !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static int node_event(parse_t *ps, const yaml_event_t *ev, const char *root_key,
                      const char *parent_path)
{
    frame_t *f = ps->depth ? &ps->stack[ps->depth - 1] : NULL;
    if (f && f->node->kind == CFG_NODE_MAP && !f->key) {
        if (ev->type != YAML_SCALAR_EVENT)
            return fail_at(ps, ev->start_mark, f->node->path, "a key must be a plain value, "
                           "not a mapping or a list");
        return take_key(ps, f, ev);
    }
    char idx[24];
    const char *key = root_key, *leaf = root_key, *ppath = parent_path;
    if (f) {
        ppath = f->node->path;
        if (f->node->kind == CFG_NODE_MAP) {
            key = leaf = f->key;
        } else {
            snprintf(idx, sizeof idx, "%zu", f->node->count);
            key = NULL;
            leaf = idx;
        }
    }
    cfg_node_kind_t kind = ev->type == YAML_SCALAR_EVENT ? CFG_NODE_SCALAR
                         : ev->type == YAML_MAPPING_START_EVENT ? CFG_NODE_MAP : CFG_NODE_LIST;
    const char *text = kind == CFG_NODE_SCALAR ? (const char *)ev->data.scalar.value : NULL;
    size_t len = kind == CFG_NODE_SCALAR ? ev->data.scalar.length : 0;
    char path[1024];
    if (leaf)
        cfg_path_join(path, sizeof path, ppath, leaf);
    else
        snprintf(path, sizeof path, "%s", ppath);
    if (text && memchr(text, '\0', len))
        return fail_at(ps, ev->start_mark, path, "NUL byte in a value");
    if (kind != CFG_NODE_SCALAR && ps->depth >= CFG_MAX_DEPTH)
        return fail_at(ps, ev->start_mark, path, "nested deeper than %d levels", CFG_MAX_DEPTH);
    int line, col;
    position(ps, ev->start_mark, &line, &col);
    cfg_node_t *n = cfg_node_new(kind, key, text, len, path, ps->o->source, line, col);
    if (!n) return cr_err_set(ps->err, CR_ENOMEM, "%s: out of memory", ps->o->source);
    n->is_null = kind == CFG_NODE_SCALAR && plain_null(ev);
    int rc = attach(ps, n);
    if (rc < 0) return rc;
    if (kind != CFG_NODE_SCALAR)
        ps->stack[ps->depth++] = (frame_t){.node = n};
    return 0;
}

static int event(parse_t *ps, const yaml_event_t *ev, int *docs, const char *root_key,
                 const char *parent_path)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if ((*docs)++ > 0)
            return fail_at(ps, ev->start_mark, "", "a second YAML document is not supported");
        return 0;
    case YAML_ALIAS_EVENT:
        return fail_at(ps, ev->start_mark, ps->depth ? ps->stack[ps->depth - 1].node->path : "",
                       "aliases (*name) are not supported");
    case YAML_SCALAR_EVENT:
    case YAML_MAPPING_START_EVENT:
    case YAML_SEQUENCE_START_EVENT:
        return node_event(ps, ev, root_key, parent_path);
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT:
        ps->depth--;
        return 0;
    default:
        return 0;
    }
}

int cfg_parse_tree(const cfg_origin_t *o, const char *yaml, size_t len, const char *root_key,
                   const char *parent_path, cfg_node_t **out, cr_err_t *err)
{
    *out = NULL;
    if (len > CFG_MAX_INPUT)
        return cr_err_set(err, CR_ETOOBIG, "%s: larger than the %u bytes a config may have",
                          o->source, CFG_MAX_INPUT);
    parse_t ps = {.o = o, .yaml = yaml, .len = len, .err = err};
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return cr_err_set(err, CR_ENOMEM, "%s: out of memory", o->source);
    yaml_parser_set_input_string(&p, (const unsigned char *)(yaml ? yaml : ""), yaml ? len : 0);
    int rc = 0, docs = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = syntax_error(&ps, &p);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        rc = event(&ps, &ev, &docs, root_key, parent_path);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (int i = 0; i < ps.depth; i++)
        free(ps.stack[i].key);
    if (rc == 0 && !ps.root) {
        /* An empty document is an empty map. */
        int line = o->set_line ? o->set_line : 1, col = o->set_line ? o->set_col : 1;
        char path[1024];
        if (root_key)
            cfg_path_join(path, sizeof path, parent_path, root_key);
        else
            snprintf(path, sizeof path, "%s", parent_path);
        ps.root = cfg_node_new(CFG_NODE_MAP, root_key, NULL, 0, path, o->source, line, col);
        if (!ps.root) rc = cr_err_set(err, CR_ENOMEM, "%s: out of memory", o->source);
    }
    if (rc < 0) {
        cfg_node_free(ps.root);
        return rc;
    }
    *out = ps.root;
    return 0;
}

int cfg_node_parse(const char *name, const char *yaml, size_t len, cfg_node_t **out, cr_err_t *err)
{
    cfg_origin_t o = {.source = name ? name : "<string>"};
    return cfg_parse_tree(&o, yaml, len, NULL, "", out, err);
}

int cfg_node_parse_file(const char *path, cfg_node_t **out, cr_err_t *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        int code = e == ENOENT ? CR_ENOENT : e == EACCES ? CR_EPERM : CR_EIO;
        return cr_err_set(err, code, "%s: cannot open: %s", path, strerror(e));
    }
    /* Read up to one byte past the limit, so an oversized file is refused, not cut. */
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    while (rc == 0 && len <= CFG_MAX_INPUT) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            if (cap > CFG_MAX_INPUT + 1) cap = CFG_MAX_INPUT + 1;
            char *nb = realloc(buf, cap);
            if (!nb) {
                rc = cr_err_set(err, CR_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) rc = cr_err_set(err, CR_EIO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (rc == 0) rc = cfg_node_parse(path, buf, len, out, err);
    free(buf);
    return rc;
}
