/* doc.c - the reference text of a table, one line per field:
 *
 *     algorithm.batch_size       int = 256, an integer between 1 and 65536: samples per update
 *     robots                     list of sections, at most 16, required: robots
 *     robots.N.name              string, required: robot name
 *
 * Written from the same table and the same describer as the loader's messages, so the
 * reference cannot drift from what is accepted. */
#include "common/config/cfg_internal.h"

#include <string.h>

static void type_words(const cfg_field_t *f, char *buf, size_t n)
{
    char acc[256] = "";
    switch (f->type) {
    case CFG_STRUCT:
    case CFG_NODE:
        snprintf(buf, n, "%s", cfg_type_name(f->type));
        return;
    case CFG_STRUCT_LIST:
        snprintf(buf, n, "list of sections, at most %zu%s%s", f->max_count,
                 f->def ? ", default " : ", required", f->def ? f->def : "");
        return;
    case CFG_LIST:
        cfg_scalar_describe(f, f->item, f->item_size, acc, sizeof acc);
        snprintf(buf, n, "list of %s, at most %zu, each %s%s%s", cfg_type_name(f->item),
                 f->max_count, acc, f->def ? ", default " : ", required", f->def ? f->def : "");
        return;
    default:
        cfg_scalar_describe(f, f->type, f->size, acc, sizeof acc);
        if (f->def == CFG_REQUIRED)
            snprintf(buf, n, "%s, required, %s", cfg_type_name(f->type), acc);
        else if (f->type == CFG_STRING)
            snprintf(buf, n, "%s = \"%s\"", cfg_type_name(f->type), f->def);
        else
            snprintf(buf, n, "%s = %s, %s", cfg_type_name(f->type), f->def, acc);
    }
}

static int doc_table(const cfg_table_t *t, const char *prefix, FILE *out)
{
    for (size_t i = 0; i < t->nfields; i++) {
        const cfg_field_t *f = &t->fields[i];
        char path[512], words[512];
        cfg_path_join(path, sizeof path, prefix, f->name);
        type_words(f, words, sizeof words);
        if (fprintf(out, "%-28s %s: %s\n", path, words, f->doc ? f->doc : "") < 0) return CR_EIO;
        if (f->type == CFG_STRUCT_LIST) {
            char items[520];
            snprintf(items, sizeof items, "%s.N", path);
            if (doc_table(f->sub, items, out) < 0) return CR_EIO;
        } else if (f->type == CFG_STRUCT && doc_table(f->sub, path, out) < 0) {
            return CR_EIO;
        }
    }
    return 0;
}

int cfg_doc(const cfg_table_t *t, FILE *out)
{
    int rc = doc_table(t, "", out);
    return rc < 0 || fflush(out) != 0 ? CR_EIO : 0;
}
