/* plugin.c - `corral plugin`: checking a plugin shared object before an
 * experiment uses it, and listing the built-in plugins.
 *
 *   corral plugin check PATH.so [--obs N] [--act N]
 *       loads PATH.so, validates its descriptor (ABI version, kind, name, vtable)
 *       and exercises it once: an algorithm is created for an obs/act spec, asked
 *       for an action and destroyed; a reward is created and computed once.
 *   corral plugin list
 * Exit status 0 when the plugin is usable, 1 with a message naming the problem. */
#include "cli/cli.h"
#include "policies/policies.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(FILE *out)
{
    fprintf(out, "usage: corral plugin check PATH.so [--obs N] [--act N]\n"
                 "       corral plugin list\n");
    return out == stdout ? CLI_OK : CLI_EUSER;
}

static int exercise(const corral_plugin_t *d, int obs_dim, int act_dim, cr_err_t *err)
{
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = obs_dim, .act_dim = act_dim};
    float *obs = calloc((size_t)obs_dim, sizeof(float)), *act = calloc((size_t)act_dim, sizeof(float));
    if (!obs || !act) { free(obs); free(act); return cr_err_set(err, CR_ENOMEM, "out of memory"); }
    void *self = NULL;
    int rc;
    if (d->kind == CORRAL_PLUGIN_ALGO) {
        rc = d->algo->create(NULL, 0, &spec, &self, (corral_err_t *)err);
        if (rc == 0 && !self) rc = cr_err_set(err, CR_EINVAL, "create returned 0 but no instance");
        if (rc == 0) {
            rc = d->algo->act(self, obs, 1, act, (corral_err_t *)err);
            for (int i = 0; rc == 0 && i < act_dim; i++)
                if (!isfinite(act[i]) || act[i] < -1.0f || act[i] > 1.0f)
                    rc = cr_err_set(err, CR_EINVAL, "act returned action[%d] = %g, outside [-1, 1]", i, act[i]);
            if (rc) cr_err_wrap(err, "act");
            d->algo->destroy(self);
        } else {
            cr_err_wrap(err, "create (obs %d, act %d, default settings)", obs_dim, act_dim);
        }
    } else {
        rc = d->reward->create(NULL, 0, &spec, &self, (corral_err_t *)err);
        if (rc == 0) {
            float r = 0;
            int ok = 0;
            rc = d->reward->compute(self, obs, act, obs, &r, &ok, (corral_err_t *)err);
            if (rc == 0 && !isfinite(r)) rc = cr_err_set(err, CR_EINVAL, "compute returned a non-finite reward");
            if (rc) cr_err_wrap(err, "compute");
            d->reward->destroy(self);
        } else {
            cr_err_wrap(err, "create (obs %d, act %d, default settings)", obs_dim, act_dim);
        }
    }
    free(obs);
    free(act);
    return rc;
}

static int parse_dim(const char *flag, const char *v, int *out)
{
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || n < 1 || n > 1 << 20) {
        fprintf(stderr, "corral plugin: %s needs a positive integer\n", flag);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int check(int argc, char **argv)
{
    const char *path = NULL;
    int obs_dim = 4, act_dim = 2;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--obs") || !strcmp(argv[i], "--act")) {
            const char *v = i + 1 < argc ? argv[i + 1] : NULL;
            if (parse_dim(argv[i], v, argv[i][2] == 'o' ? &obs_dim : &act_dim)) return CLI_EUSER;
            i++;
        }
        else if (!path && argv[i][0] != '-') path = argv[i];
        else return usage(stderr);
    }
    if (!path) return usage(stderr);
    pol_plugin_t p;
    cr_err_t err = {0};
    if (pol_plugin_open(path, &p, &err) != 0) {
        fprintf(stderr, "corral plugin: %s\n", err.msg);
        return CLI_EUSER;
    }
    const corral_plugin_t *d = p.desc;
    const char *kind = d->kind == CORRAL_PLUGIN_ALGO ? "algorithm" : "reward";
    if (exercise(d, obs_dim, act_dim, &err) != 0) {
        fprintf(stderr, "corral plugin: %s: %s '%s' loads but fails: %s\n", path, kind, d->name, err.msg);
        pol_plugin_close(&p);
        return CLI_EUSER;
    }
    printf("ok: %s: %s plugin '%s', ABI version %u: %s\n", path, kind, d->name, d->abi_version,
           d->description ? d->description : "");
    pol_plugin_close(&p);
    return CLI_OK;
}

int cli_plugin_main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(argc < 2 ? stderr : stdout);
    if (!strcmp(argv[1], "check")) return check(argc, argv);
    if (!strcmp(argv[1], "list")) {
        for (int i = 0; i < pol_builtin_count(); i++) {
            const corral_plugin_t *d = pol_builtin_at(i);
            printf("%-10s %-16s %s\n", d->kind == CORRAL_PLUGIN_ALGO ? "algorithm" : "reward", d->name,
                   d->description);
        }
        return CLI_OK;
    }
    fprintf(stderr, "corral plugin: unknown action '%s'\n", argv[1]);
    return usage(stderr);
}
