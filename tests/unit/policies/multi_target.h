/* multi_target.h - the language-conditioned reaching task shared by the VLA test
 * and bench/vla_learn: the three-target scene configs/robots/reach2d_multi.xml
 * run directly on MuJoCo (one control period = ten 5 ms steps, 50 per episode),
 * targets placed on the reachable ring at least 6 cm apart, object-token slots
 * shuffled each episode, the instruction "reach the <colour> target" naming one
 * of them; scripted demonstrations (damped-least-squares IK toward the named
 * target, DART noise on the executed action), BC of the VLA by flow matching, and
 * evaluation (an episode succeeds when the fingertip ends within 3 cm of the
 * named target, i.e. touching it). */
#ifndef CORRAL_TESTS_MULTI_TARGET_H
#define CORRAL_TESTS_MULTI_TARGET_H

#include "tests/unit/policies/reach_expert.h"
#include "policies/models/gen.h"

#include <math.h>
#include <mujoco/mujoco.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define NT 3
static const char *const colour_name[NT] = {"red", "green", "blue"};
static const float colour_rgb[NT][3] = {{0.9f, 0.1f, 0.1f}, {0.1f, 0.8f, 0.1f}, {0.1f, 0.2f, 0.9f}};
#define CTX 24
#define PROP 8
#define OBJ 5
#define HZ 2       /* chunk length, executed whole */
/* the fingertip (1 cm) touches the target sphere (1.2 cm) */
#define SUCCESS_DIST 0.03

typedef struct menv {
    mjModel *m;
    mjData *d;
    int mocap[NT], site_ee;
    int order[NT];           /* object token slot -> target index */
    int named;
    uint64_t rng;
    int step;
} menv_t;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double unif(uint64_t *s, double lo, double hi) { return lo + (hi - lo) * (double)(splitmix(s) >> 11) / 9007199254740992.0; }

static int menv_open(menv_t *e, const char *path)
{
    char msg[300] = "";
    e->m = mj_loadXML(path, NULL, msg, sizeof msg);
    if (!e->m) {
        fprintf(stderr, "  mujoco: %s: %s\n", path, msg);
        return -1;
    }
    e->d = mj_makeData(e->m);
    const char *names[NT] = {"target", "target_green", "target_blue"};
    for (int i = 0; i < NT; i++) e->mocap[i] = e->m->body_mocapid[mj_name2id(e->m, mjOBJ_BODY, names[i])];
    e->site_ee = mj_name2id(e->m, mjOBJ_SITE, "ee");
    return 0;
}

static void menv_close(menv_t *e)
{
    mj_deleteData(e->d);
    mj_deleteModel(e->m);
}

/* A new scene: random arm pose, three targets on the reachable ring at least
 * 6 cm apart, object slots shuffled, the named target drawn (or given). */
static void menv_reset(menv_t *e, uint64_t seed, int named)
{
    e->rng = seed * 7919 + 1;
    mj_resetData(e->m, e->d);
    e->d->qpos[0] = unif(&e->rng, -M_PI, M_PI);
    e->d->qpos[1] = unif(&e->rng, -2.5, 2.5);
    double pos[NT][2];
    for (int i = 0; i < NT; i++)
        for (int tries = 0; tries < 100; tries++) {
            double rad = sqrt(unif(&e->rng, 0.07 * 0.07, 0.19 * 0.19)), ang = unif(&e->rng, -M_PI, M_PI);
            pos[i][0] = rad * cos(ang);
            pos[i][1] = rad * sin(ang);
            int ok = 1;
            for (int j = 0; j < i; j++) ok &= hypot(pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]) > 0.06;
            if (ok) break;
        }
    for (int i = 0; i < NT; i++) {
        double *mp = e->d->mocap_pos + 3 * e->mocap[i];
        mp[0] = pos[i][0];
        mp[1] = pos[i][1];
        mp[2] = 0.01;
        e->order[i] = i;
    }
    for (int i = NT - 1; i > 0; i--) {
        int j = (int)(splitmix(&e->rng) % (uint64_t)(i + 1)), t = e->order[i];
        e->order[i] = e->order[j];
        e->order[j] = t;
    }
    e->named = named >= 0 ? named : (int)(splitmix(&e->rng) % NT);
    e->step = 0;
    mj_forward(e->m, e->d);
}

static double menv_dist(const menv_t *e, int target)
{
    const double *ee = e->d->site_xpos + 3 * e->site_ee, *t = e->d->mocap_pos + 3 * e->mocap[target];
    return hypot(ee[0] - t[0], ee[1] - t[1]);
}

/* proprio [PROP] = cos q, sin q (reach2d order), qvel / 4, ee_xy x 5;
 * obj [NT][OBJ] = (target - ee) x 10, rgb; raw[4] for the expert */
static void menv_obs(const menv_t *e, float *prop, float *obj, float *raw)
{
    const double *q = e->d->qpos, *qd = e->d->qvel, *ee = e->d->site_xpos + 3 * e->site_ee;
    float p[PROP] = {(float)cos(q[0]), (float)cos(q[1]), (float)sin(q[0]), (float)sin(q[1]), (float)qd[0] / 4,
                     (float)qd[1] / 4, (float)ee[0] * 5, (float)ee[1] * 5};
    memcpy(prop, p, sizeof p);
    if (raw) memcpy(raw, p, sizeof(float) * 4);
    for (int s = 0; s < NT; s++) {
        int i = e->order[s];
        const double *t = e->d->mocap_pos + 3 * e->mocap[i];
        float *o = obj + s * OBJ;
        o[0] = (float)(t[0] - ee[0]) * 10;
        o[1] = (float)(t[1] - ee[1]) * 10;
        memcpy(o + 2, colour_rgb[i], sizeof(float) * 3);
    }
}

static void menv_expert(const menv_t *e, float *act)
{
    float raw[4], prop[PROP], obj[NT * OBJ];
    menv_obs(e, prop, obj, raw);
    const double *ee = e->d->site_xpos + 3 * e->site_ee, *t = e->d->mocap_pos + 3 * e->mocap[e->named];
    rx_expert_to(raw, (float)(t[0] - ee[0]), (float)(t[1] - ee[1]), act);
}

/* One control period (20 Hz, ten 5 ms physics steps); returns 1 at the time limit. */
static int menv_step(menv_t *e, const float *a)
{
    for (int j = 0; j < 2; j++) e->d->ctrl[j] = 4.0 * (a[j] > 1 ? 1 : a[j] < -1 ? -1 : a[j]);
    for (int k = 0; k < 10; k++) mj_step(e->m, e->d);
    return ++e->step >= 50;
}

static void instruction(int named, int32_t *ids)
{
    char text[64];
    snprintf(text, sizeof text, "reach the %s target", colour_name[named]);
    cr_err_t err = {0};
    if (pol_tokenize(text, ids, CTX, &err)) abort();   /* the three fixed texts fit CTX */
}

/* Runs one episode with the VLA; returns the target index reached (-1: none). */
static int run_episode(pol_vla_t *v, menv_t *e)
{
    int32_t ids[CTX];
    instruction(e->named, ids);
    float prop[PROP], obj[NT * OBJ], chunk[HZ * 2];
    int end = 0;
    while (!end) {
        menv_obs(e, prop, obj, NULL);
        pol_vla_obs_t o = {NULL, ids, prop, obj};
        pol_vla_sample(v, &o, 1, NULL, chunk);
        for (int h = 0; h < HZ && !end; h++) end = menv_step(e, chunk + 2 * h);
    }
    for (int i = 0; i < NT; i++)
        if (menv_dist(e, i) < SUCCESS_DIST) return i;
    return -1;
}


/* VLA configuration of the check: prefix of instruction, proprio and object
 * tokens, a 2-layer width-32 transformer, an MLP action head. */
static inline pol_vla_cfg_t mt_vla_cfg(void)
{
    return (pol_vla_cfg_t){.ctx = CTX, .proprio = PROP, .n_obj = NT, .obj_dim = OBJ, .act_dim = 2, .horizon = HZ,
                           .steps = 4, .dim = 32, .heads = 2, .layers = 2, .mlp = 64, .head_hidden = 128};
}

typedef struct mt_data {
    int n;
    int32_t *ids;
    float *prop, *obj, *chunk;
} mt_data_t;

static inline void mt_data_free(mt_data_t *d)
{
    free(d->ids); free(d->prop); free(d->obj); free(d->chunk);
    memset(d, 0, sizeof *d);
}

/* Scripted demonstrations of `episodes` episodes; returns 0 or -1 (no memory). */
static inline int mt_demos(menv_t *e, int episodes, nn_rng_t *rng, mt_data_t *d)
{
    int T = 50, N = episodes * T;
    memset(d, 0, sizeof *d);
    d->ids = malloc(sizeof(int32_t) * (size_t)N * CTX);
    d->prop = malloc(sizeof(float) * (size_t)N * PROP);
    d->obj = malloc(sizeof(float) * (size_t)N * NT * OBJ);
    d->chunk = malloc(sizeof(float) * (size_t)N * HZ * 2);
    if (!d->ids || !d->prop || !d->obj || !d->chunk) return -1;
    float acts[50][2];
    d->n = 0;
    for (int ep = 0; ep < episodes; ep++) {
        menv_reset(e, 1000 + (uint64_t)ep, -1);
        int first = d->n, t = 0, end = 0;
        while (!end) {
            menv_obs(e, d->prop + (size_t)d->n * PROP, d->obj + (size_t)d->n * NT * OBJ, NULL);
            instruction(e->named, d->ids + (size_t)d->n * CTX);
            menv_expert(e, acts[t]);
            float noisy[2];
            for (int j = 0; j < 2; j++) noisy[j] = acts[t][j] + 0.3f * nn_rng_normal(rng);
            end = menv_step(e, noisy);
            d->n++;
            t++;
        }
        for (int s = 0; s < t; s++)
            for (int h = 0; h < HZ; h++)
                memcpy(d->chunk + ((size_t)(first + s) * HZ + h) * 2, acts[s + h < t ? s + h : t - 1], sizeof(float) * 2);
    }
    return 0;
}

/* The training recipe of the check: batch 32, Adam at 3e-3, cosine decay to 0
 * over the last 30% of the steps. The language binding (which object token the
 * instruction's colour word picks) forms abruptly, after a seed-dependent
 * plateau; a high rate shortens the plateau, and the decay then settles the
 * precision of the reach (3 cm). Measured with bench/vla_learn: seeds 21-26 reach
 * the named target in 82-100% of the episodes after 5,000 steps (21: 100%); seed
 * 27 is still on the plateau then (34%, 60% after 7,000), so the check's seed is
 * one of the typical ones, not a guarantee for every seed. */
#define MT_STEPS 5000
#define MT_BATCH 32
#define MT_LR 3e-3f
#define MT_DECAY_FROM 0.7f

/* `steps` flow-matching BC steps at batch B with Adam, the rate constant until
 * decay_from x steps and cosine-decayed to 0 after (decay_from >= 1: constant);
 * returns the last loss or NaN. */
static inline double mt_train(pol_vla_t *v, const mt_data_t *d, int steps, int B, float lr, float decay_from,
                              nn_rng_t *rng, int log_every)
{
    cr_err_t err = {0};
    nn_adam_t opt;
    if (pol_vla_reserve(v, B, &err) || nn_adam_init(&opt, &v->params, lr, 0, 1.0f, &err)) return NAN;
    int32_t *bi = malloc(sizeof(int32_t) * B * CTX);
    float *bp = malloc(sizeof(float) * B * PROP), *bo = malloc(sizeof(float) * B * NT * OBJ);
    float *bc = malloc(sizeof(float) * B * HZ * 2);
    double loss = NAN;
    for (int it = 0; bi && bp && bo && bc && it < steps; it++) {
        for (int b = 0; b < B; b++) {
            int i = (int)nn_rng_below(rng, (uint32_t)d->n);
            memcpy(bi + b * CTX, d->ids + (size_t)i * CTX, sizeof(int32_t) * CTX);
            memcpy(bp + b * PROP, d->prop + (size_t)i * PROP, sizeof(float) * PROP);
            memcpy(bo + b * NT * OBJ, d->obj + (size_t)i * NT * OBJ, sizeof(float) * NT * OBJ);
            memcpy(bc + b * HZ * 2, d->chunk + (size_t)i * HZ * 2, sizeof(float) * HZ * 2);
        }
        pol_vla_obs_t o = {NULL, bi, bp, bo};
        float frac = (float)it / (float)steps;
        opt.lr = frac < decay_from ? lr : lr * 0.5f * (1.0f + cosf((float)M_PI * (frac - decay_from) / (1.0f - decay_from)));
        nn_params_zero_grad(&v->params);
        loss = pol_vla_bc_step(v, &o, bc, B, rng);
        if (nn_adam_step(&opt, &v->params, NULL) != 0) { loss = NAN; break; }
        if (log_every && (it + 1) % log_every == 0) fprintf(stderr, "  vla bc step %d loss %.4f\n", it + 1, loss);
    }
    free(bi); free(bp); free(bo); free(bc);
    nn_adam_destroy(&opt, v->be);
    return loss;
}

/* Episodes with a random named target: *named gets how many reached it,
 * *other how many ended at another target. */
static inline void mt_eval(pol_vla_t *v, menv_t *e, int episodes, uint64_t seed0, int *named, int *other)
{
    *named = *other = 0;
    for (int ep = 0; ep < episodes; ep++) {
        menv_reset(e, seed0 + (uint64_t)ep, -1);
        int got = run_episode(v, e);
        *named += got == e->named;
        *other += got >= 0 && got != e->named;
    }
}

/* The same scenes under each of the three instructions: how many followed. */
static inline int mt_follow(pol_vla_t *v, menv_t *e, int scenes, uint64_t seed0)
{
    int follow = 0;
    for (int s = 0; s < scenes; s++)
        for (int k = 0; k < NT; k++) {
            menv_reset(e, seed0 + (uint64_t)s, k);
            follow += run_episode(v, e) == k;
        }
    return follow;
}

#endif
