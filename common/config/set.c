/* set.c - `--set a.b.c=value` applied to the untyped tree before it is decoded.
 *
 * Overrides edit the tree, not the struct, so they go through exactly the decoding,
 * checks and messages a file does, and a key the table does not know is caught with
 * the same did-you-mean. The nodes an override makes carry SOURCE "--set", LINE = the
 * override's index and COL = the byte position in the argument, so every later error
 * points into the command line. */
#include "common/config/cfg_internal.h"

#include <stdlib.h>
#include <string.h>

static bool all_digits(const char *s, size_t len)
{
    return len > 0 && len < 19 && strspn(s, "0123456789") >= len;
}

/* The child of node named by comp (len bytes), its slot, or NULL when absent. */
static cfg_node_t **find_slot(cfg_node_t *node, const char *comp, size_t len)
{
    if (node->kind == CFG_NODE_MAP) {
        for (size_t i = 0; i < node->count; i++)
            if (strlen(node->items[i]->key) == len && memcmp(node->items[i]->key, comp, len) == 0)
                return &node->items[i];
        return NULL;
    }
    size_t idx = strtoull(comp, NULL, 10);
    return idx < node->count ? &node->items[idx] : NULL;
}

/* Puts n into node: over *slot when present, else appended. Frees n on failure. */
static int place(cfg_node_t *node, cfg_node_t **slot, cfg_node_t *n, cr_err_t *err)
{
    if (slot) {
        cfg_node_free(*slot);
        *slot = n;
        return 0;
    }
    if (cfg_node_append(node, n) < 0) {
        cfg_node_free(n);
        return cr_err_set(err, CR_ENOMEM, "--set: out of memory");
    }
    return 0;
}

static int make_value(const char *val, int index, int col, const char *key, const char *path,
                      bool in_list, cfg_node_t **out, cr_err_t *err)
{
    if (val[0] == '[' || val[0] == '{') {
        cfg_origin_t o = {.source = "--set", .set_line = index, .set_col = col};
        const char *slash = strrchr(path, '.');
        char parent[1024];
        snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - path) : 0, path);
        int rc = cfg_parse_tree(&o, val, strlen(val), key, parent, out, err);
        if (rc == 0 && in_list) (*out)->key = NULL;
        return rc;
    }
    *out = cfg_node_new(CFG_NODE_SCALAR, in_list ? NULL : key, val, strlen(val), path, "--set",
                        index, col);
    if (!*out) return cr_err_set(err, CR_ENOMEM, "--set: out of memory");
    (*out)->is_null = !val[0] || !strcmp(val, "~") || !strcmp(val, "null") ||
                      !strcmp(val, "Null") || !strcmp(val, "NULL");
    return 0;
}

int cfg_node_set(cfg_node_t *root, const char *a, int index, cr_err_t *err)
{
    char q[64];
    cfg_quote(q, sizeof q, a);
    const char *eq = strchr(a, '=');
    if (!eq || eq == a)
        return cfg_fail(err, CR_EINVAL, "--set", index, 1, "", "expected KEY=VALUE, got '%s'", q);
    if (root->kind != CFG_NODE_MAP)
        return cfg_fail(err, CR_EINVAL, "--set", index, 1, "",
                        "the document is not a mapping, so it has no keys to set");
    cfg_node_t *node = root;
    for (const char *comp = a;;) {
        size_t len = strcspn(comp, ".=");
        int col = (int)(comp - a) + 1;
        char key[256], path[1024];
        if (len == 0 || len >= sizeof key)
            return cfg_fail(err, CR_EINVAL, "--set", index, col, node->path,
                            len ? "key too long in '%s'" : "empty key in '%s'", q);
        snprintf(key, sizeof key, "%.*s", (int)len, comp);
        cfg_path_join(path, sizeof path, node->path, key);
        bool in_list = node->kind == CFG_NODE_LIST;
        if (in_list && !all_digits(comp, len))
            return cfg_fail(err, CR_EINVAL, "--set", index, col, node->path,
                            "is a list: expected an item index, got '%s'", key);
        if (in_list && strtoull(key, NULL, 10) > node->count)
            return cfg_fail(err, CR_EINVAL, "--set", index, col, node->path,
                            "index %s is past the end of the list (%zu items; %zu appends)",
                            key, node->count, node->count);
        cfg_node_t **slot = find_slot(node, comp, len);
        const char *next = comp + len + (comp[len] == '.');
        if (comp + len == eq) {  /* the last component: the value goes here */
            cfg_node_t *v;
            int rc = make_value(eq + 1, index, (int)(eq - a) + 2, key, path, in_list, &v, err);
            if (rc < 0) return rc;
            v->key_line = index;
            v->key_col = col;
            return place(node, slot, v, err);
        }
        if (slot && (*slot)->kind != CFG_NODE_SCALAR) {
            node = *slot;
        } else if (slot && !(*slot)->is_null) {
            return cfg_fail(err, CR_EINVAL, "--set", index, col, path,
                            "holds a value, not a section: cannot set '%.*s' inside it",
                            (int)strcspn(next, ".="), next);
        } else {
            cfg_node_kind_t kind = all_digits(next, strcspn(next, ".="))
                                 ? CFG_NODE_LIST : CFG_NODE_MAP;
            cfg_node_t *n = cfg_node_new(kind, in_list ? NULL : key, NULL, 0, path, "--set",
                                         index, col);
            if (!n) return cr_err_set(err, CR_ENOMEM, "--set: out of memory");
            int rc = place(node, slot, n, err);
            if (rc < 0) return rc;
            node = n;
        }
        comp = next;
    }
}
