/* worker_spec.c - the algorithm's key/value settings derived from the experiment
 * spec (common/expspec, the file `corral exp submit` accepted, read here
 * unchanged). The learner and every actor derive them the same way, which is
 * what lets an actor import the learner's weights. */
#include "agents/worker_int.h"

#include <stdio.h>
#include <string.h>

static int is_plugin_path(const char *v)
{
    size_t n = v ? strlen(v) : 0;
    return n > 3 && strcmp(v + n - 3, ".so") == 0;
}

/* ---- algorithm settings ------------------------------------------------------------ */

static int add_kv(wk_algo_cfg_t *c, const char *key, const char *val, cr_err_t *err)
{
    for (size_t i = 0; i < c->nkv; i++) {
        if (strcmp(c->kv[i].key, key) == 0) { /* a later setting replaces an earlier one */
            c->kv[i].value = val;
            return 0;
        }
    }
    if (c->nkv == sizeof c->kv / sizeof c->kv[0])
        return cr_err_set(err, CR_EINVAL, "algorithm.params: more than %zu settings",
                          sizeof c->kv / sizeof c->kv[0]);
    c->kv[c->nkv++] = (corral_kv_t){key, val};
    return 0;
}

/* Adds key = printf(...) with its text kept in c->store. */
static int add_fmt(wk_algo_cfg_t *c, const char *key, const char *fmt, double v, cr_err_t *err)
{
    size_t slot = c->nkv;
    if (slot + 1 >= sizeof c->store / sizeof c->store[0]) /* the last slot holds hidden */
        return cr_err_set(err, CR_EINVAL, "too many algorithm settings");
    snprintf(c->store[slot], sizeof c->store[slot], fmt, v);
    return add_kv(c, key, c->store[slot], err);
}

int wk_algo_cfg_make(const exp_spec_t *s, uint64_t seed, wk_algo_cfg_t *c, cr_err_t *err)
{
    memset(c, 0, sizeof *c);
    const char *type = s->algorithm.type;
    if (is_plugin_path(type)) {
        int rc = pol_plugin_open(type, &c->plugin, err);
        if (rc) return cr_err_wrap(err, "algorithm.type");
        if (c->plugin.desc->kind != CORRAL_PLUGIN_ALGO) {
            pol_plugin_close(&c->plugin);
            return cr_err_set(err, CR_EINVAL, "algorithm.type: %s is not an algorithm plugin", type);
        }
    } else {
        c->plugin.desc = pol_builtin_find(type, CORRAL_PLUGIN_ALGO);
        if (!c->plugin.desc) return cr_err_set(err, CR_EINVAL, "algorithm.type: unknown algorithm '%s'", type);
    }
    int rc = 0;
    /* hidden widths as "w1,w2,..." */
    char *h = c->store[sizeof c->store / sizeof c->store[0] - 1];
    h[0] = '\0';
    for (size_t i = 0; i < s->policy.n_hidden; i++) {
        size_t n = strlen(h);
        snprintf(h + n, sizeof c->store[0] - n, "%s%d", i ? "," : "", (int)s->policy.hidden[i]);
    }
    /* the VLA's size is its own (algorithm.params: dim, layers, ...), not MLP widths */
    if (s->policy.n_hidden && strncmp(type, "vla", 3)) rc = rc ? rc : add_kv(c, "hidden", h, err);
    rc = rc ? rc : add_fmt(c, "seed", "%.0f", (double)seed, err);
    int sac_like = !strcmp(type, "sac") || !strcmp(type, "rlpd");
    if (sac_like) {
        rc = rc ? rc : add_fmt(c, "gamma", "%.17g", s->algorithm.gamma, err);
        rc = rc ? rc : add_fmt(c, "tau", "%.17g", s->algorithm.tau, err);
        rc = rc ? rc : add_fmt(c, "actor_lr", "%.17g", s->algorithm.lr, err);
        rc = rc ? rc : add_fmt(c, "critic_lr", "%.17g", s->algorithm.lr, err);
        rc = rc ? rc : add_fmt(c, "alpha_lr", "%.17g", s->algorithm.lr, err);
    } else if (!is_plugin_path(type)) {
        rc = rc ? rc : add_fmt(c, "lr", "%.17g", s->algorithm.lr, err);
    }
    /* the fine-tuning phase, the instruction's context and start weights of the
     * generative policies */
    int finetune = !strcmp(type, "flow-rl") || !strcmp(type, "vla"), vla = !strncmp(type, "vla", 3);
    if (finetune || (is_plugin_path(type) && s->algorithm.bc_updates))
        rc = rc ? rc : add_fmt(c, "bc_updates", "%.0f", (double)s->algorithm.bc_updates, err);
    if (finetune) rc = rc ? rc : add_fmt(c, "gamma", "%.17g", s->algorithm.gamma, err);
    if (vla) rc = rc ? rc : add_fmt(c, "ctx", "%.0f", (double)s->task.instruction_tokens, err);
    if (vla && s->policy.init[0]) rc = rc ? rc : add_kv(c, "init", s->policy.init, err);
    const cfg_node_t *p = s->algorithm.params;
    if (!rc && p && p->kind == CFG_NODE_MAP) {
        for (size_t i = 0; i < p->count && !rc; i++) {
            const cfg_node_t *v = p->items[i];
            if (v->kind != CFG_NODE_SCALAR) {
                rc = cr_err_set(err, CR_EINVAL, "%s:%d:%d: %s: expected a scalar value", v->source, v->line,
                                v->col, v->path);
                break;
            }
            rc = add_kv(c, v->key, v->text, err);
        }
    } else if (!rc && p && p->kind != CFG_NODE_MAP && !(p->kind == CFG_NODE_SCALAR && p->is_null)) {
        rc = cr_err_set(err, CR_EINVAL, "%s:%d:%d: algorithm.params: expected a map of settings", p->source,
                        p->line, p->col);
    }
    if (rc) wk_algo_cfg_free(c);
    return rc;
}

void wk_algo_cfg_free(wk_algo_cfg_t *c)
{
    if (c->plugin.dl) pol_plugin_close(&c->plugin);
    c->plugin.desc = NULL;
    c->plugin.dl = NULL;
}
