/* drv.c - the option table parser and spec helpers the drivers share. */
#include "hal/drv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t key_len(const char *key)
{
    const char *eq = strchr(key, '=');
    return eq ? (size_t)(eq - key) : strlen(key);
}

static void list_names(const drv_opt_t *t, int n, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", t[i].name);
}

static int set_one(const char *robot, const drv_opt_t *o, const char *v, void *cfg, cr_err_t *err)
{
    char *field = (char *)cfg + o->off;
    if (o->type == DRV_STR) {
        if (strlen(v) >= o->size)
            return cr_err_set(err, CR_EINVAL, "robot %s: option %s is too long (max %zu)", robot,
                              o->name, o->size - 1);
        memcpy(field, v, strlen(v) + 1);
        return 0;
    }
    if (o->type == DRV_BOOL) {
        int b = -1;
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) b = 1;
        if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) b = 0;
        if (b < 0)
            return cr_err_set(err, CR_EINVAL, "robot %s: option %s='%s' must be true or false",
                              robot, o->name, v);
        *(int *)field = b;
        return 0;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= o->lo && d <= o->hi) ||
        (o->type == DRV_INT && d != (double)(long long)d))
        return cr_err_set(err, CR_EINVAL, "robot %s: option %s='%s' must be %s in [%g, %g]", robot,
                          o->name, v, o->type == DRV_INT ? "an integer" : "a number", o->lo, o->hi);
    if (o->type == DRV_INT) *(int *)field = (int)d;
    else *(double *)field = d;
    return 0;
}

int drv_opts_apply(const char *robot, const drv_opt_t *table, int n_table, const hal_opt_t *opts,
                   int n_opts, void *cfg, cr_err_t *err)
{
    for (int i = 0; i < n_opts; i++) {
        size_t kl = key_len(opts[i].key);
        const drv_opt_t *o = NULL;
        for (int j = 0; j < n_table; j++)
            if (strlen(table[j].name) == kl && strncmp(table[j].name, opts[i].key, kl) == 0)
                o = &table[j];
        if (!o) {
            char names[512];
            list_names(table, n_table, names, sizeof names);
            return cr_err_set(err, CR_EINVAL, "robot %s: unknown option '%.*s' (known: %s)", robot,
                              (int)kl, opts[i].key, names);
        }
        int rc = set_one(robot, o, opts[i].value ? opts[i].value : "", cfg, err);
        if (rc) return rc;
    }
    return 0;
}

void drv_spec_vec(hal_obs_spec_t *spec, const char *name, const char *unit, int dim)
{
    hal_vec_spec_t *v = &spec->vecs[spec->n_vecs++];
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->unit, sizeof v->unit, "%s", unit);
    v->dim = dim;
    v->offset = spec->vec_total;
    spec->vec_total += dim;
}
