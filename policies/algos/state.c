/* state.c - an algorithm's state in and out of safetensors, shared by the
 * built-ins: the policy blob (export/import), the checkpoint (save/load) with
 * metadata that must match the instance (format, version, algo, the shape keys), and the
 * end of a gradient step (optimiser step, NaN skip, metrics). Reads are two-phase
 * (check every tensor and the state string, then copy), so a blob or checkpoint
 * that does not fit leaves the algorithm untouched and the error names what
 * differs. */
#include "policies/algos/algo.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pol_state_key(pol_state_t *s, const char *name, const char *what, const char *fmt, ...)
{
    assert(s->nkeys < POL_STATE_KEYS);
    pol_state_key_t *k = &s->keys[s->nkeys++];
    k->name = name;
    k->what = what;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->value, sizeof k->value, fmt, ap);
    va_end(ap);
}

static void put_meta(const pol_state_t *s, nn_st_writer_t *w, const char *format)
{
    nn_st_writer_meta(w, "format", format, NULL);
    nn_st_writer_meta(w, "version", s->version, NULL);
    nn_st_writer_meta(w, "algo", s->algo, NULL);
    for (int i = 0; i < s->nkeys; i++) nn_st_writer_meta(w, s->keys[i].name, s->keys[i].value, NULL);
}

static int check_meta(const pol_state_t *s, const nn_st_t *st, const char *format, cr_err_t *err)
{
    const char *f = nn_st_meta(st, "format"), *v = nn_st_meta(st, "version"), *a = nn_st_meta(st, "algo");
    const char *alias = s->algo_alias;
    int algo_ok = (alias && !strcmp(alias, "*")) || (a && (!strcmp(a, s->algo) || (alias && !strcmp(a, alias))));
    if (!f || strcmp(f, format) || !algo_ok)
        return cr_err_set(err, CR_ECORRUPT, "not a %s %s (format '%s', algo '%s')", s->algo, format, f ? f : "?",
                          a ? a : "?");
    if (!v || strcmp(v, s->version))
        return cr_err_set(err, CR_EVERSION, "%s version '%s', this build reads %s", format, v ? v : "(none)",
                          s->version);
    for (int i = 0; i < s->nkeys; i++) {
        const pol_state_key_t *k = &s->keys[i];
        const char *got = nn_st_meta(st, k->name);
        if (!got || strcmp(got, k->value))
            return cr_err_set(err, CR_EINVAL, "%s for %s %s, this instance has %s", format, k->what,
                              got ? got : "?", k->value);
    }
    return 0;
}

int pol_state_export(const pol_state_t *s, void *buf, size_t cap, size_t *len, const char *extra, cr_err_t *err)
{
    nn_st_writer_t *w = nn_st_writer_create();
    if (!w) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", s->algo);
    pol_io_keep_t keep = {0};
    void *blob = NULL;
    size_t n = 0;
    put_meta(s, w, "corral-policy");
    int rc = extra ? nn_st_writer_meta(w, "extra", extra, err) : 0;
    for (int i = 0; !rc && i < s->npolicy; i++) rc = pol_io_add_arena(w, &keep, &s->policy[i], err);
    if (!rc) rc = nn_st_writer_to_mem(w, &blob, &n, err);
    pol_io_keep_free(&keep);
    nn_st_writer_destroy(w);
    if (rc) return rc;
    *len = n;
    if (!buf || cap < n) rc = cr_err_set(err, CR_ETOOBIG, "%s: policy blob needs %zu bytes", s->algo, n);
    else memcpy(buf, blob, n);
    free(blob);
    return rc;
}

int pol_state_import(const pol_state_t *s, const void *blob, size_t len, char *extra, size_t cap, cr_err_t *err)
{
    nn_st_t *st;
    int rc = nn_st_parse(&st, blob, len, err);
    if (rc) return cr_err_wrap(err, "policy blob");
    rc = check_meta(s, st, "corral-policy", err);
    for (int check = 1; check >= 0 && !rc; check--)
        for (int i = 0; !rc && i < s->npolicy; i++) rc = pol_io_read_arena(st, &s->policy[i], check, err);
    if (!rc && extra) {
        const char *x = nn_st_meta(st, "extra");
        snprintf(extra, cap, "%s", x ? x : "");
    }
    nn_st_free(st);
    return rc ? cr_err_wrap(err, "policy blob") : 0;
}

int pol_state_save(const pol_state_t *s, const char *path, const char *state, cr_err_t *err)
{
    nn_st_writer_t *w = nn_st_writer_create();
    if (!w) return cr_err_set(err, CR_ENOMEM, "%s: out of memory", s->algo);
    pol_io_keep_t keep = {0};
    put_meta(s, w, "corral-checkpoint");
    int rc = nn_st_writer_meta(w, "state", state, err);
    for (int i = 0; !rc && i < s->narenas; i++) rc = pol_io_add_arena(w, &keep, &s->arenas[i], err);
    for (int i = 0; !rc && i < s->nadams; i++) rc = pol_io_add_adam(w, &keep, &s->adams[i], s->be, err);
    if (!rc) rc = nn_st_writer_to_file(w, path, err);
    pol_io_keep_free(&keep);
    nn_st_writer_destroy(w);
    return rc;
}

int pol_state_load(const pol_state_t *s, const char *path, int (*parse)(void *ctx, const char *state), void *ctx,
                   cr_err_t *err)
{
    nn_st_t *st;
    int rc = nn_st_read_file(&st, path, err);
    if (rc) return rc;
    rc = check_meta(s, st, "corral-checkpoint", err);
    for (int i = 0; !rc && i < s->narenas; i++) rc = pol_io_read_arena(st, &s->arenas[i], 1, err);
    for (int i = 0; !rc && i < s->nadams; i++) rc = pol_io_read_adam(st, &s->adams[i], s->be, 1, err);
    if (!rc) {
        const char *js = nn_st_meta(st, "state");
        if (!js || parse(ctx, js) != 0)
            rc = cr_err_set(err, CR_ECORRUPT, "checkpoint: metadata 'state' is missing or malformed");
    }
    for (int i = 0; !rc && i < s->narenas; i++) rc = pol_io_read_arena(st, &s->arenas[i], 0, err);
    for (int i = 0; !rc && i < s->nadams; i++) rc = pol_io_read_adam(st, &s->adams[i], s->be, 0, err);
    nn_st_free(st);
    return rc ? cr_err_wrap(err, "%s", path) : 0;
}

int pol_step_finish(const char *algo, double loss, nn_adam_t *opt, nn_params_t *p, uint64_t *updates,
                    uint64_t *skipped, const char *loss_name, corral_metrics_t *m)
{
    double gn = 0;
    int bad = !isfinite(loss) || nn_adam_step(opt, p, &gn) != 0;
    if (bad) {
        (*skipped)++;
        pol_warn_skips(algo, *skipped - 1, *skipped);
    } else {
        (*updates)++;
    }
    pol_metric_set(m, loss_name, loss);
    pol_metric_set(m, "grad_norm", gn);
    pol_metric_set(m, "updates", (double)*updates);
    pol_metric_set(m, "skipped_nan", (double)*skipped);
    pol_metric_set(m, "skipped_now", bad);
    return !bad;
}
