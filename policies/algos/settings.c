/* settings.c - key/value configuration to a config struct through a table of
 * settings (name, type, default, range), so every algorithm validates the same
 * way and every error names the key, the value and what would be accepted. */
#include "policies/algos/algo.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int set_one(const pol_setting_t *s, void *out, const char *val, cr_err_t *err)
{
    char *end;
    void *field = (char *)out + s->off;
    switch (s->type) {
    case SET_FLOAT: {
        if (strcmp(val, "auto") == 0) {   /* "derive it": NaN, resolved by the algorithm */
            *(float *)field = NAN;
            return 0;
        }
        errno = 0;
        double d = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(d))
            return cr_err_set(err, CR_EINVAL, "setting %s: '%s' is not a number", s->name, val);
        if (d < s->min || d > s->max)
            return cr_err_set(err, CR_EINVAL, "setting %s: %g is outside [%g, %g]", s->name, d, s->min, s->max);
        *(float *)field = (float)d;
        return 0;
    }
    case SET_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end)
            return cr_err_set(err, CR_EINVAL, "setting %s: '%s' is not an integer", s->name, val);
        if (v < s->min || v > s->max)
            return cr_err_set(err, CR_EINVAL, "setting %s: %ld is outside [%.0f, %.0f]", s->name, v, s->min, s->max);
        *(long *)field = v;
        return 0;
    }
    case SET_BOOL:
        if (!strcmp(val, "true") || !strcmp(val, "1") || !strcmp(val, "yes")) *(int *)field = 1;
        else if (!strcmp(val, "false") || !strcmp(val, "0") || !strcmp(val, "no")) *(int *)field = 0;
        else return cr_err_set(err, CR_EINVAL, "setting %s: '%s' is not a boolean (true/false)", s->name, val);
        return 0;
    case SET_STR:
        if (strlen(val) >= SET_STR_MAX)
            return cr_err_set(err, CR_EINVAL, "setting %s: value longer than %d characters", s->name, SET_STR_MAX - 1);
        strcpy((char *)field, val);
        return 0;
    }
    return cr_err_set(err, CR_EINVAL, "setting %s: bad type", s->name);
}

static const pol_setting_t *lookup(const pol_setting_t *tab, const char *key)
{
    for (const pol_setting_t *s = tab; s->name; s++)
        if (strcmp(s->name, key) == 0) return s;
    return NULL;
}

static int apply_list(const pol_setting_t *tab, void *out, const corral_kv_t *kv, size_t n, cr_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!kv[i].key || !kv[i].value)
            return cr_err_set(err, CR_EINVAL, "setting %zu: NULL key or value", i);
        const pol_setting_t *s = lookup(tab, kv[i].key);
        if (!s) {
            char known[400] = "";
            for (const pol_setting_t *t = tab; t->name; t++) {
                if (known[0]) strncat(known, ", ", sizeof known - strlen(known) - 1);
                strncat(known, t->name, sizeof known - strlen(known) - 1);
            }
            return cr_err_set(err, CR_EINVAL, "unknown setting '%s' (known: %s)", kv[i].key, known);
        }
        int rc = set_one(s, out, kv[i].value, err);
        if (rc != 0) return rc;
    }
    return 0;
}

int pol_settings_apply(const pol_setting_t *tab, void *out, const corral_kv_t *defaults,
                       size_t ndefaults, const corral_kv_t *cfg, size_t ncfg, cr_err_t *err)
{
    for (const pol_setting_t *s = tab; s->name; s++) {
        int rc = set_one(s, out, s->def, err);
        if (rc != 0) return rc;
    }
    int rc = apply_list(tab, out, defaults, ndefaults, err);
    return rc ? rc : apply_list(tab, out, cfg, ncfg, err);
}

int pol_parse_widths(const char *s, int *w, int max, cr_err_t *err)
{
    int n = 0;
    const char *p = s;
    if (!*p) return 0;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 65536 || n == max)
            return cr_err_set(err, CR_EINVAL, "hidden '%s': expected up to %d comma-separated widths in 1..65536", s, max);
        w[n++] = (int)v;
        if (*end == '\0') return n;
        if (*end != ',') return cr_err_set(err, CR_EINVAL, "hidden '%s': unexpected '%c'", s, *end);
        p = end + 1;
    }
}
