/* fuzz_config.c - libFuzzer target for the YAML config loader.
 *
 * The input is a YAML document; its lines that start with "#set " (comments to YAML)
 * are also applied as --set overrides, so one input drives the parser, the overrides
 * and the typed decoder together. A table with every field type stands in for a
 * component's. Besides what the sanitizers catch (overflows, leaks, undefined
 * behaviour), the target traps when the loader's own contract breaks: a failure must
 * come with a message and leave the struct zeroed, and a success must free cleanly. */
#include "common/config/config.h"

#include <stdlib.h>
#include <string.h>

typedef struct item {
    char *name;
    int kind;
    cfg_node_t *options;
} item_t;

typedef struct section {
    int64_t count;
    int32_t small;
    double ratio;
    bool flag;
    uint64_t bytes;
    int64_t period;
} section_t;

typedef struct top {
    char *name;
    section_t sec;
    int32_t *ints;
    size_t n_ints;
    char **strs;
    size_t n_strs;
    uint64_t *sizes;
    size_t n_sizes;
    item_t *items;
    size_t n_items;
} top_t;

static const char *const kinds[] = {"a", "bb", "ccc", NULL};
static const cfg_field_t item_fields[] = {
    {CFG_STRING(item_t, name, CFG_REQUIRED, "name")},
    {CFG_ENUM(item_t, kind, "a", kinds, "kind")},
    {CFG_NODE(item_t, options, "free-form")},
};
static const cfg_table_t item_table = {CFG_TABLE(item_t, item_fields)};
static const cfg_field_t section_fields[] = {
    {CFG_INT(section_t, count, "1", 1, 1000000, "count")},
    {CFG_INT(section_t, small, "0", 0, 0, "any int32")},
    {CFG_DOUBLE(section_t, ratio, "0.5", 0, 1, "ratio")},
    {CFG_BOOL(section_t, flag, "false", "flag")},
    {CFG_SIZE(section_t, bytes, "1MiB", 0, 0, "bytes")},
    {CFG_DURATION(section_t, period, "10ms", CFG_USEC, 60 * CFG_SEC, "period")},
};
static const cfg_table_t section_table = {CFG_TABLE(section_t, section_fields)};
static const cfg_field_t top_fields[] = {
    {CFG_STRING(top_t, name, "x", "name")},
    {CFG_STRUCT(top_t, sec, &section_table, "section")},
    {CFG_LIST(top_t, ints, n_ints, CFG_INT, "[1, 2]", 16, "ints"), .imin = -5, .imax = 5000},
    {CFG_LIST(top_t, strs, n_strs, CFG_STRING, "[]", 16, "strings")},
    {CFG_LIST(top_t, sizes, n_sizes, CFG_SIZE, "[]", 4, "sizes")},
    {CFG_STRUCT_LIST(top_t, items, n_items, &item_table, "[]", 8, "items")},
};
static const cfg_table_t top_table = {CFG_TABLE(top_t, top_fields)};

#define MAX_SETS 8

static bool all_zero(const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i]) return false;
    return true;
}

/* Copies each "#set <arg>" line's argument into sets[]; returns how many. */
static size_t collect_sets(const char *data, size_t size, char **sets)
{
    size_t n = 0;
    for (size_t i = 0; i < size && n < MAX_SETS;) {
        const char *nl = memchr(data + i, '\n', size - i);
        size_t len = nl ? (size_t)(nl - (data + i)) : size - i;
        if (len >= 5 && memcmp(data + i, "#set ", 5) == 0) {
            sets[n] = strndup(data + i + 5, len - 5);
            if (sets[n]) n++;
        }
        i += len + 1;
    }
    return n;
}

static void use_options(const cfg_node_t *opts)
{
    if (!opts) return;
    const cfg_node_t *n = cfg_node_get(opts, "a.0.b");
    if (n && n->text && strlen(n->text) > (size_t)1 << 30) __builtin_trap();
    cfg_node_t *copy = cfg_node_copy(opts);
    section_t s;
    cr_err_t err = {0};
    if (cfg_decode(&section_table, &s, copy, &err) == 0)
        cfg_free(&section_table, &s);
    else if (!err.msg[0] || !all_zero(&s, sizeof s))
        __builtin_trap();
    cfg_node_free(copy);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *sets[MAX_SETS];
    size_t nsets = collect_sets((const char *)data, size, sets);
    top_t t;
    cr_err_t err = {0};
    int rc = cfg_load_string(&top_table, &t, "fuzz", (const char *)data, size,
                             (const char *const *)sets, nsets, &err);
    if (rc == 0) {
        for (size_t i = 0; i < t.n_items; i++)
            use_options(t.items[i].options);
        cfg_free(&top_table, &t);
        if (!all_zero(&t, sizeof t)) __builtin_trap();
    } else if (rc != CR_EINVAL && rc != CR_ENOMEM && rc != CR_ETOOBIG) {
        __builtin_trap();
    } else if (!err.msg[0] || !all_zero(&t, sizeof t)) {
        __builtin_trap();
    }
    /* The untyped tree on its own, with the overrides applied directly. */
    cfg_node_t *root;
    if (cfg_node_parse("fuzz", (const char *)data, size, &root, &err) == 0) {
        for (size_t i = 0; i < nsets && root->kind == CFG_NODE_MAP; i++)
            if (cfg_node_set(root, sets[i], (int)i + 1, &err) < 0 && !err.msg[0])
                __builtin_trap();
        cfg_node_free(root);
    }
    for (size_t i = 0; i < nsets; i++)
        free(sets[i]);
    return 0;
}
