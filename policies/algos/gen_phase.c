/* gen_phase.c - the schedule flow-rl and vla share: behaviour cloning of the
 * demonstrations for bc_updates updates, then RL fine-tuning of the last
 * integration step (gen_rl.c), and what goes with it - the switch between the
 * two, the BC rate schedule, the rows BC clones, the policy blob's phase and
 * the checkpoint's counters. The model itself (an MLP flow or the VLA) stays
 * with its algorithm, seen here only through its arenas and pol_genrl_model_t.
 *
 * States: phase 0 (BC) -> phase 1 (RL), once, by start_rl: at the update that
 * reaches bc_updates, at creation when bc_updates is 0, or by a checkpoint or
 * policy blob of the RL phase. In phase 1 the frozen copy is the BC model (it
 * runs the first K-1 steps), and `old` with the noise snapshot is the policy
 * last exported (the actors' policy, the denominator of the PPO ratio). */
#include "policies/algos/gen_rl.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* BC ends: the frozen prefix and the behaviour snapshot are the BC model, and
 * the optimiser starts over at the RL rate. */
static int start_rl(pol_genphase_t *p, cr_err_t *err)
{
    int rc = nn_params_copy(p->frozen, p->cur, err);
    if (!rc) rc = nn_params_copy(p->old, p->cur, err);
    if (rc) return rc;
    pol_genrl_snapshot(&p->g);
    nn_adam_destroy(&p->opt, p->be);
    rc = nn_adam_init(&p->opt, p->cur, p->o.rl_lr, p->weight_decay, p->grad_clip, err);
    if (rc) return rc;
    p->phase = 1;
    return 0;
}

int pol_genphase_setup(pol_genphase_t *p, const pol_genrl_model_t *cur, const pol_genrl_model_t *frozen,
                       const pol_genrl_model_t *old, int D, int A, int K, int value_in, cr_err_t *err)
{
    if (p->rl) {
        pol_genrl_cfg_t gc = {.lr_noise = p->o.rl_lr, .lr_value = p->o.value_lr, .gamma = p->o.gamma,
                              .clip = p->o.clip, .log_std_init = p->o.log_std_init, .log_std_lo = p->o.log_std_min,
                              .log_std_hi = p->o.log_std_max, .value_hidden = (int)p->o.value_hidden};
        int rc = pol_genrl_create(&p->g, p->be, D, A, K, value_in, &gc, &p->rng, err);
        if (rc) return rc;
        p->g.cur = *cur;
        p->g.frozen = *frozen;
        p->g.old = *old;
    }
    int rc = nn_adam_init(&p->opt, p->cur, p->lr, p->weight_decay, p->grad_clip, err);
    if (!rc && p->rl && p->o.bc_updates == 0) rc = start_rl(p, err);
    return rc;
}

void pol_genphase_describe(pol_genphase_t *p, const char *model, const char *version)
{
    pol_state_t *st = &p->st;
    st->algo = p->algo;
    st->version = version;
    st->be = p->be;
    snprintf(p->optim_name, sizeof p->optim_name, "optim.%s", model);
    st->policy[st->npolicy++] = (pol_io_arena_t){"policy", p->cur};
    st->arenas[st->narenas++] = (pol_io_arena_t){model, p->cur};
    st->adams[st->nadams++] = (pol_io_adam_t){p->optim_name, &p->opt};
    if (!p->rl) return;
    st->policy[st->npolicy++] = (pol_io_arena_t){"frozen", p->frozen};
    st->policy[st->npolicy++] = (pol_io_arena_t){"noise", &p->g.noise};
    st->arenas[st->narenas++] = (pol_io_arena_t){"frozen", p->frozen};
    st->arenas[st->narenas++] = (pol_io_arena_t){"old", p->old};
    st->arenas[st->narenas++] = (pol_io_arena_t){"noise", &p->g.noise};
    st->arenas[st->narenas++] = (pol_io_arena_t){"old_noise", &p->g.old_noise};
    st->arenas[st->narenas++] = (pol_io_arena_t){"value", &p->g.vparams};
    st->adams[st->nadams++] = (pol_io_adam_t){"optim.noise", &p->g.nopt};
    st->adams[st->nadams++] = (pol_io_adam_t){"optim.value", &p->g.vopt};
}

void pol_genphase_destroy(pol_genphase_t *p)
{
    if (!p->be) return;
    pol_genrl_destroy(&p->g);
    nn_adam_destroy(&p->opt, p->be);
}

/* ---- updates ---- */

int pol_genphase_rl_row(const corral_batch_t *b, int i)
{
    return !b->flags || !(b->flags[i] & (CORRAL_SAMPLE_DEMO | CORRAL_SAMPLE_INTERVENTION | CORRAL_SAMPLE_PAD));
}

int pol_genphase_bc_begin(pol_genphase_t *p, const corral_batch_t *b, int H, int S, uint8_t *take)
{
    int demos = 0, n = 0;
    for (int i = 0; p->rl && b->flags && i < S; i++) demos += (b->flags[(size_t)i * H] & CORRAL_SAMPLE_DEMO) != 0;
    for (int i = 0; i < S; i++) {
        take[i] = !demos || (b->flags[(size_t)i * H] & CORRAL_SAMPLE_DEMO);
        n += take[i];
    }
    /* A constant rate finds the behaviour; decaying it at the end settles the
     * precision of the reach (the unit recipe of the VLA does the same). */
    float d = p->o.bc_decay_from;
    if (p->rl && d < 1 && p->o.bc_updates > 0) {
        float frac = (float)p->updates / (float)p->o.bc_updates;
        p->opt.lr = frac < d ? p->lr : p->lr * 0.5f * (1.0f + cosf((float)M_PI * (frac - d) / (1.0f - d)));
    }
    return n;
}

int pol_genphase_bc_end(pol_genphase_t *p, double loss, int rows, corral_metrics_t *m, cr_err_t *err)
{
    pol_step_finish(p->algo, loss, &p->opt, p->cur, &p->updates, &p->skipped_nan, "flow_loss", m);
    pol_metric_set(m, "bc_rows", rows);
    if (p->rl && p->updates >= (uint64_t)p->o.bc_updates) return start_rl(p, err);
    return 0;
}

void pol_genphase_rl_end(pol_genphase_t *p, const corral_metrics_t *rl, corral_metrics_t *m)
{
    for (int i = 0; i < rl->count; i++) pol_metric_set(m, rl->item[i].name, rl->item[i].value);
    double loss = pol_metric_get(rl, "policy_loss");
    if (isnan(loss)) {   /* no row of the policy's own: nothing to learn */
        pol_metric_set(m, "updates", (double)p->updates);
        return;
    }
    pol_step_finish(p->algo, loss, &p->opt, p->cur, &p->updates, &p->skipped_nan, "policy_loss", m);
}

/* ---- blobs and checkpoints ---- */

int pol_genphase_export(void *self, void *buf, size_t cap, size_t *len, corral_err_t *cerr)
{
    pol_genphase_t *p = self;
    char extra[16];
    snprintf(extra, sizeof extra, "phase=%d", p->phase);
    int rc = pol_state_export(&p->st, buf, cap, len, extra, pol_err(cerr));
    if (rc == 0 && p->phase) {   /* the actors now hold this policy: the ratio's reference */
        cr_err_t e = {0};
        if (nn_params_copy(p->old, p->cur, &e) == 0) pol_genrl_snapshot(&p->g);
    }
    return rc;
}

int pol_genphase_import(void *self, const void *blob, size_t len, corral_err_t *cerr)
{
    pol_genphase_t *p = self;
    char extra[32];
    int rc = pol_state_import(&p->st, blob, len, extra, sizeof extra, pol_err(cerr));
    if (rc == 0 && p->rl) p->phase = strcmp(extra, "phase=1") == 0;
    return rc;
}

/* The counters: {"updates","skipped_nan","t","rng"} and, with rl, "phase" and
 * the noise's and value's Adam steps. A BC-only algorithm also reads the longer
 * form when its phase is 0 (what vla-bc once wrote). */
int pol_genphase_save(void *self, const char *path, corral_err_t *cerr)
{
    pol_genphase_t *p = self;
    char rng[80], state[512];
    pol_rng_format(&p->rng, rng, sizeof rng);
    if (!p->rl)
        snprintf(state, sizeof state, "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%s\"}",
                 (unsigned long long)p->updates, (unsigned long long)p->skipped_nan, p->opt.t, rng);
    else
        snprintf(state, sizeof state,
                 "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%s\",\"phase\":%d,\"noise_t\":%ld,"
                 "\"value_t\":%ld}",
                 (unsigned long long)p->updates, (unsigned long long)p->skipped_nan, p->opt.t, rng, p->phase,
                 p->g.nopt.t, p->g.vopt.t);
    return pol_state_save(&p->st, path, state, pol_err(cerr));
}

static int parse_state(void *ctx, const char *js)
{
    pol_genphase_t *p = ctx;
    unsigned long long u, k;
    long t = -1, nt = 0, vt = 0;
    int phase = 0;
    char rs[80];
    nn_rng_t rng;
    int n = sscanf(js, "{\"updates\":%llu,\"skipped_nan\":%llu,\"t\":%ld,\"rng\":\"%79[0-9a-f,]\",\"phase\":%d,"
                       "\"noise_t\":%ld,\"value_t\":%ld}", &u, &k, &t, rs, &phase, &nt, &vt);
    if ((n != 7 && (p->rl || n != 4)) || t < 0 || nt < 0 || vt < 0 || phase < 0 || phase > p->rl ||
        pol_rng_parse(&rng, rs))
        return CR_ECORRUPT;
    p->updates = u;
    p->skipped_nan = k;
    p->opt.t = t;
    p->rng = rng;
    p->phase = phase;
    if (p->rl) {
        p->g.nopt.t = nt;
        p->g.vopt.t = vt;
    }
    if (phase) p->opt.lr = p->o.rl_lr;
    return 0;
}

int pol_genphase_load(void *self, const char *path, corral_err_t *cerr)
{
    pol_genphase_t *p = self;
    return pol_state_load(&p->st, path, parse_state, p, pol_err(cerr));
}
