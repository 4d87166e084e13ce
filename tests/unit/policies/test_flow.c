/* test_flow.c - the flow-matching policy: the time embedding and the exact chain
 * log-likelihood against finite differences, the sampled log-likelihood equal to
 * the recomputed one, and the learning check on the HAL's MuJoCo reach2d.
 *
 * The learning check needs BC below the task's ceiling, or RL has nothing to
 * show. The demonstrations come from a cautious scripted expert (reach_expert.h,
 * its fingertip step capped at half the arm's step per control period): it runs
 * out of time on the farthest targets, so it and the BC policy cloned from it
 * succeed in roughly 85% of the episodes, while the full-speed expert (the
 * ceiling) reaches ~98%. BC must reach >= 80% over 200 deterministic evaluation
 * episodes; then PPO over the noisy chain's exact likelihood (flow_rl.c) must
 * raise success on the same 200 episodes by more than twice the standard error
 * of the paired difference and by at least 5 points. The "flow-bc" plugin learns
 * a toy task through the plugin ABI and round-trips its state; PPO and GRPO
 * updates run on a toy rollout. The "flow-rl" plugin clones biased
 * demonstrations, then its RL phase, fed single transitions through the ABI as
 * a replay buffer would, moves the policy toward the reward's optimum; its
 * phase, noise and networks survive export/import and save/load. */
#include "tests/unit/policies/gradcheck.h"
#include "tests/unit/policies/reach_expert.h"
#include "policies/algos/flow_rl.h"
#include "policies/models/gen.h"
#include "policies/policies.h"

#include <string.h>

#define H 2          /* chunk length, executed whole before replanning */
#define K 5          /* integration steps */
#define NDEMO 30     /* demonstration episodes */
#define DART_NOISE 0.3f
#define BC_STEPS 2000
#define EVAL_EPISODES 200
#define EXPERT_SPEED 0.5f  /* the cautious expert's largest step, as a share of the arm's */

static const nn_backend_t *be;

typedef struct { float *t, *r; int B, E; float *out; } te_ctx_t;
static double te_loss(void *c)
{
    te_ctx_t *k = c;
    pol_time_embed_forward(k->out, k->t, k->B, k->E);
    return gc_dot(k->out, k->r, (size_t)k->B * k->E);
}

static void test_time_embed(void)
{
    nn_rng_t rng;
    nn_rng_seed(&rng, 1);
    te_ctx_t k = {gc_zeros(3), gc_zeros(48), 3, 16, gc_zeros(48)};
    for (int i = 0; i < 3; i++) k.t[i] = nn_rng_uniform(&rng);
    gc_fill(&rng, k.r, 48, 1);
    float *dt = gc_zeros(3);
    te_loss(&k);
    pol_time_embed_backward(dt, k.r, k.t, 3, 16);
    ASSERT_INT_EQ(gc_check("temb.dt", k.t, 3, dt, te_loss, &k, 1e-3f, 2e-2), 0);
    /* distinct times give distinct embeddings; t = 0 is (0.., 1..) */
    float z = 0, e0[16];
    pol_time_embed_forward(e0, &z, 1, 16);
    ASSERT_NEAR(e0[0], 0, 1e-7);
    ASSERT_NEAR(e0[8], 1, 1e-7);
    free(k.t); free(k.r); free(k.out); free(dt);
}

typedef struct { pol_flow_t *f; float *obs, *chain, *w; int B; } cl_ctx_t;
static double cl_loss(void *c)
{
    cl_ctx_t *k = c;
    float lp[8];
    pol_flow_chain_logp(k->f, k->obs, k->chain, k->B, lp, NULL);
    return gc_dot(lp, k->w, (size_t)k->B);
}

static void test_chain_logp(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 5);
    pol_flow_t f;
    int hidden[2] = {16, 16};
    CHECK_OK(pol_flow_create(&f, be, 3, 2, 2, 3, hidden, 2, 1, -3.0f, -0.5f, -1.5f, &rng, &err), &err);
    int B = 4, D = f.D, C = (f.steps + 1) * D;
    CHECK_OK(pol_flow_reserve(&f, B * f.steps, &err), &err);
    float *obs = gc_zeros((size_t)B * 3), *chain = gc_zeros((size_t)B * C), *out = gc_zeros((size_t)B * D);
    float lp[4], lp2[4], w[4];
    gc_fill(&rng, obs, (size_t)B * 3, 1);
    gc_fill(&rng, w, 4, 1);
    pol_flow_sample(&f, obs, B, &rng, 1, chain, lp, out);
    /* the likelihood recorded while sampling is the one recomputed from the chain */
    pol_flow_chain_logp(&f, obs, chain, B, lp2, NULL);
    for (int b = 0; b < B; b++) ASSERT_NEAR(lp[b], lp2[b], 1e-3);
    /* the chain ends at the clipped output */
    for (int d = 0; d < D; d++) {
        float xk = chain[(size_t)f.steps * D + d];
        ASSERT_NEAR(out[d], xk > 1 ? 1 : xk < -1 ? -1 : xk, 1e-6);
    }
    /* gradients of sum_b w_b logp_b wrt every parameter (velocity and noise) */
    cl_ctx_t k = {&f, obs, chain, w, B};
    nn_params_zero_grad(&f.params);
    pol_flow_chain_logp(&f, obs, chain, B, lp2, w);
    float *g = gc_zeros(f.params.numel);
    memcpy(g, f.params.grad, f.params.numel * sizeof(float));
    ASSERT_INT_EQ(gc_check("flow.params", f.params.data, f.params.numel, g, cl_loss, &k, 1e-3f, 3e-2), 0);
    int ls = nn_params_find(&f.params, "noise.log_std");
    ASSERT_TRUE(ls >= 0);
    size_t off = f.params.t[ls].offset, nls = f.params.t[ls].numel;
    ASSERT_INT_EQ(gc_check("flow.log_std", f.params.data + off, nls, g + off, cl_loss, &k, 1e-3f, 3e-2), 0);
    /* the deterministic mode ignores the noise and is repeatable */
    float a1[4], a2[4];
    pol_flow_sample(&f, obs, 1, NULL, 1, NULL, NULL, a1);
    pol_flow_sample(&f, obs, 1, NULL, 1, NULL, NULL, a2);
    ASSERT_TRUE(memcmp(a1, a2, sizeof(float) * D) == 0);
    /* bad configurations are refused with the field named */
    pol_flow_t bad;
    ASSERT_INT_EQ(pol_flow_create(&bad, be, 3, 2, 2, 0, hidden, 2, 0, 0, 0, 0, &rng, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "integration steps") != NULL);
    free(g); free(obs); free(chain); free(out);
    pol_flow_destroy(&f);
}

/* PPO and GRPO updates on a toy rollout: they run, move the parameters, keep
 * them finite, and refuse a rollout that does not end an episode. */
static void test_rl_updates(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 8);
    pol_flow_t f;
    int hidden[2] = {16, 16};
    CHECK_OK(pol_flow_create(&f, be, 3, 2, 1, 3, hidden, 2, 1, -3.0f, -0.5f, -1.5f, &rng, &err), &err);
    pol_flow_ppo_cfg_t cfg;
    pol_flow_ppo_defaults(&cfg);
    cfg.value_warmup = 0;
    cfg.minibatch = 8;
    pol_flow_ppo_t p;
    CHECK_OK(pol_flow_ppo_create(&p, &f, &cfg, &err), &err);
    pol_rollout_t r;
    CHECK_OK(pol_rollout_init(&r, 16, 3, 4 * f.D, &err), &err);
    float *before = gc_zeros(f.params.numel);
    memcpy(before, f.params.data, f.params.numel * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        /* four episodes of four steps; reward: the first action's closeness to 0.5 */
        for (int i = 0; i < 16; i++) {
            float obs[3] = {(float)(i % 4), 0.5f, -0.5f}, a[2];
            CHECK_OK(pol_flow_ppo_act(&p, obs, a, &r, &err), &err);
            pol_rollout_reward(&r, -fabsf(a[0] - 0.5f), i % 4 == 3);
        }
        corral_metrics_t m = {0};
        int group[4] = {0, 0, 1, 1};
        if (pass == 0) CHECK_OK(pol_flow_ppo_update(&p, &r, &m, &err), &err);
        else CHECK_OK(pol_flow_grpo_update(&p, &r, group, &m, &err), &err);
        ASSERT_INT_EQ(r.n, 0);
        ASSERT_TRUE(isfinite(pol_metric_get(&m, "policy_loss")) && isfinite(pol_metric_get(&m, "approx_kl")));
    }
    double moved = 0;
    for (size_t i = 0; i < f.params.numel; i++) moved += fabs(f.params.data[i] - before[i]);
    ASSERT_TRUE(moved > 0);
    /* half an episode is refused */
    float obs[3] = {0}, a[2];
    CHECK_OK(pol_flow_ppo_act(&p, obs, a, &r, &err), &err);
    CHECK_OK(pol_flow_ppo_act(&p, obs, a, &r, &err), &err);
    corral_metrics_t m = {0};
    ASSERT_INT_EQ(pol_flow_ppo_update(&p, &r, &m, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "whole episodes") != NULL);
    free(before);
    pol_rollout_free(&r);
    pol_flow_ppo_destroy(&p);
    pol_flow_destroy(&f);
}

/* ---- reach2d ---- */

typedef struct demos {
    int n, O;
    float *obs, *chunk;
} demos_t;

/* The scripted expert with its step capped at `speed` (direction kept). */
static void expert(const rx_env_t *e, float speed, float *a)
{
    rx_expert(e, a);
    float m = fmaxf(fabsf(a[0]), fabsf(a[1]));
    if (m > speed) {
        a[0] *= speed / m;
        a[1] *= speed / m;
    }
}

static void expert_success(rx_env_t *e, float speed, int episodes, int *ok)
{
    cr_err_t err = {0};
    *ok = 0;
    for (int ep = 0; ep < episodes; ep++) {
        CHECK_OK(hal_robot_reset(e->robot, 50000 + (uint64_t)ep, &e->obs, &err), &err);
        while (!e->obs.truncated) {
            float a[2];
            expert(e, speed, a);
            CHECK_OK(hal_robot_step(e->robot, a, &e->obs, &err), &err);
        }
        *ok += e->obs.success;
    }
}

static void collect(rx_env_t *e, demos_t *d, nn_rng_t *rng)
{
    cr_err_t err = {0};
    int T = e->desc->episode_steps, O = e->od, A = e->ad;
    d->O = O;
    d->obs = malloc(sizeof(float) * (size_t)NDEMO * T * O);
    d->chunk = malloc(sizeof(float) * (size_t)NDEMO * T * H * A);
    float *acts = malloc(sizeof(float) * (size_t)T * A);
    ASSERT_TRUE(d->obs && d->chunk && acts);
    d->n = 0;
    for (int ep = 0; ep < NDEMO; ep++) {
        CHECK_OK(hal_robot_reset(e->robot, 1000 + (uint64_t)ep, &e->obs, &err), &err);
        int first = d->n, t = 0;
        while (!e->obs.truncated) {
            rx_scaled(e, d->obs + (size_t)d->n * O);
            expert(e, EXPERT_SPEED, acts + (size_t)t * A);
            /* DART: execute a perturbed action, record the expert's, so the
             * demonstrations also show how to recover from small errors */
            float noisy[2];
            for (int j = 0; j < A; j++) {
                float u = acts[(size_t)t * A + j] + DART_NOISE * nn_rng_normal(rng);
                noisy[j] = u > 1 ? 1 : u < -1 ? -1 : u;
            }
            CHECK_OK(hal_robot_step(e->robot, noisy, &e->obs, &err), &err);
            d->n++;
            t++;
        }
        /* chunk at step s: actions s .. s+H-1, the episode's last action repeated */
        for (int s = 0; s < t; s++)
            for (int h = 0; h < H; h++) {
                int src = s + h < t ? s + h : t - 1;
                memcpy(d->chunk + ((size_t)(first + s) * H + h) * A, acts + (size_t)src * A, sizeof(float) * A);
            }
    }
    free(acts);
}

/* Success rate over the fixed evaluation episodes; won[ep] records each. */
static double evaluate(pol_flow_t *f, rx_env_t *e, uint8_t *won)
{
    cr_err_t err = {0};
    float obs[RX_MAXO], chunk[H * 2];
    int ok = 0;
    for (int ep = 0; ep < EVAL_EPISODES; ep++) {
        CHECK_OK(hal_robot_reset(e->robot, 90000 + (uint64_t)ep, &e->obs, &err), &err);
        while (!e->obs.truncated) {
            rx_scaled(e, obs);
            pol_flow_sample(f, obs, 1, NULL, 0, NULL, NULL, chunk);
            for (int h = 0; h < H && !e->obs.truncated; h++)
                CHECK_OK(hal_robot_step(e->robot, chunk + h * e->ad, &e->obs, &err), &err);
        }
        won[ep] = (uint8_t)e->obs.success;
        ok += e->obs.success;
    }
    return (double)ok / EVAL_EPISODES;
}

static float goal_dist(const rx_env_t *e)
{
    const float *g = e->obs.vec + e->goal;
    return sqrtf(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]);
}

static void bc_train(pol_flow_t *f, const demos_t *d, int steps, int B, nn_rng_t *rng)
{
    cr_err_t err = {0};
    nn_adam_t opt;
    CHECK_OK(nn_adam_init(&opt, &f->params, 1e-3f, 0, 1.0f, &err), &err);
    int O = d->O, D = f->D;
    float *bo = malloc(sizeof(float) * (size_t)B * O), *bc = malloc(sizeof(float) * (size_t)B * D);
    double loss = 0;
    for (int it = 0; it < steps; it++) {
        for (int b = 0; b < B; b++) {
            int i = (int)nn_rng_below(rng, (uint32_t)d->n);
            memcpy(bo + (size_t)b * O, d->obs + (size_t)i * O, sizeof(float) * O);
            memcpy(bc + (size_t)b * D, d->chunk + (size_t)i * D, sizeof(float) * D);
        }
        nn_params_zero_grad(&f->params);
        loss = pol_flow_bc_step(f, bo, bc, B, rng);
        ASSERT_INT_EQ(nn_adam_step(&opt, &f->params, NULL), 0);
        if (it == 0 || (it + 1) % 1000 == 0) fprintf(stderr, "  bc step %d loss %.4f\n", it + 1, loss);
    }
    free(bo);
    free(bc);
    nn_adam_destroy(&opt, f->params.be);
}

/* Standard error of the mean paired difference b - a over n episodes. */
static double paired_se(const uint8_t *a, const uint8_t *b, int n)
{
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += (double)(b[i] - a[i]) / n;
    for (int i = 0; i < n; i++) var += ((b[i] - a[i]) - mean) * ((b[i] - a[i]) - mean) / (n - 1);
    return sqrt(var / n);
}

static void test_flow_bc_then_rl(void)
{
#ifdef CORRAL_SANITIZE
    TEST_SKIP_IF(1, "learning check is timed: it runs in the optimised build, not under sanitizers");
#endif
    be = nn_backend_cpu();
    cr_err_t err = {0};
    rx_env_t env, eval;
    CHECK_OK(rx_open(&env, "reach2d", 3, &err), &err);
    CHECK_OK(rx_open(&eval, "reach2d", 4, &err), &err);
    /* the setting: the cautious expert leaves room below the ceiling */
    int ceiling, cautious;
    expert_success(&eval, 1.0f, 100, &ceiling);
    expert_success(&eval, EXPERT_SPEED, 100, &cautious);
    fprintf(stderr, "  expert success: full speed %d/100, cautious %d/100\n", ceiling, cautious);
    ASSERT_TRUE(ceiling >= 95);
    ASSERT_TRUE(cautious >= 75 && cautious <= 92);

    demos_t d;
    nn_rng_t rng;
    nn_rng_seed(&rng, 11);
    collect(&env, &d, &rng);
    pol_flow_t f;
    int hidden[2] = {128, 128};
    /* noise per step: log std in [-4, -0.5], starting at -1.5 (sigma 0.22, a
     * fifth of the action range, enough to explore a faster reach) */
    CHECK_OK(pol_flow_create(&f, be, env.od, env.ad, H, K, hidden, 2, 1, -4.0f, -0.5f, -1.5f, &rng, &err), &err);
    CHECK_OK(pol_flow_reserve(&f, 256, &err), &err);
    bc_train(&f, &d, BC_STEPS, 128, &rng);
    uint8_t won_bc[EVAL_EPISODES], won_rl[EVAL_EPISODES];
    double s_bc = evaluate(&f, &eval, won_bc);
    fprintf(stderr, "  flow BC success %.3f\n", s_bc);
    ASSERT_TRUE(s_bc >= 0.80);

    /* RL fine-tuning: PPO on the chain's exact likelihood. Only the last
     * integration step is noisy and trainable (the first K-1 run a frozen copy
     * of the BC network): its noise is what reaches the action, the earlier
     * steps' noise the flow mostly undoes. Reward per control step: 10 x the
     * progress toward the target, + 0.1 inside the success radius. */
    pol_flow_ppo_cfg_t cfg;
    pol_flow_ppo_defaults(&cfg);
    cfg.seed = 7;
    cfg.lr = 1e-4f;
    cfg.gamma = 0.95f;
    cfg.target_kl = 0.05f;
    cfg.value_warmup = 3;
    pol_flow_ppo_t ppo;
    CHECK_OK(pol_flow_ppo_create(&ppo, &f, &cfg, &err), &err);
    pol_flow_t fz;
    CHECK_OK(pol_flow_create(&fz, be, env.od, env.ad, H, K, hidden, 2, 1, -4.0f, -0.5f, -1.5f, &rng, &err), &err);
    CHECK_OK(nn_params_copy(&fz.params, &f.params, &err), &err);
    CHECK_OK(pol_flow_reserve(&fz, 256, &err), &err);
    ASSERT_INT_EQ(pol_flow_freeze_prefix(&f, &fz, K, &err), CR_EINVAL);   /* past the last step */
    CHECK_OK(pol_flow_freeze_prefix(&f, &fz, K - 1, &err), &err);
    int T = env.desc->episode_steps, EPS = 60, ITERS = 25;
    pol_rollout_t ro;
    CHECK_OK(pol_rollout_init(&ro, EPS * T, env.od, (K + 1) * f.D, &err), &err);
    uint64_t episode = 200000;
    for (int it = 1; it <= ITERS; it++) {
        int succ = 0;
        for (int ep = 0; ep < EPS; ep++) {
            CHECK_OK(hal_robot_reset(env.robot, episode + (uint64_t)ep, &env.obs, &err), &err);
            while (!env.obs.truncated) {
                float obs[RX_MAXO], a[H * 2], r = 0;
                rx_scaled(&env, obs);
                CHECK_OK(pol_flow_ppo_act(&ppo, obs, a, &ro, &err), &err);
                for (int h = 0; h < H && !env.obs.truncated; h++) {
                    float before = goal_dist(&env);
                    CHECK_OK(hal_robot_step(env.robot, a + h * env.ad, &env.obs, &err), &err);
                    r += 10.0f * (before - goal_dist(&env)) + (env.obs.success ? 0.1f : 0.0f);
                }
                pol_rollout_reward(&ro, r, env.obs.truncated);
            }
            succ += env.obs.success;
        }
        episode += (uint64_t)EPS;
        corral_metrics_t m = {0};
        CHECK_OK(pol_flow_ppo_update(&ppo, &ro, &m, &err), &err);
        ASSERT_TRUE(isfinite(pol_metric_get(&m, "policy_loss")));
        if (it % 5 == 0)
            fprintf(stderr, "  rl iter %d rollout success %.2f kl %.4f clip %.2f sigma %.3f value loss %.3f\n", it,
                    succ / (double)EPS, pol_metric_get(&m, "approx_kl"), pol_metric_get(&m, "clip_frac"),
                    pol_metric_get(&m, "sigma_mean"), pol_metric_get(&m, "value_loss"));
    }
    double s_rl = evaluate(&f, &eval, won_rl), se = paired_se(won_bc, won_rl, EVAL_EPISODES);
    fprintf(stderr, "  flow BC %.3f -> RL %.3f (gain %.3f, paired standard error %.3f; full-speed expert %.2f)\n",
            s_bc, s_rl, s_rl - s_bc, se, ceiling / 100.0);
    ASSERT_TRUE(s_rl - s_bc >= 0.05);
    ASSERT_TRUE(s_rl - s_bc > 2 * se);
    pol_rollout_free(&ro);
    pol_flow_ppo_destroy(&ppo);
    pol_flow_destroy(&f);
    pol_flow_destroy(&fz);
    free(d.obs);
    free(d.chunk);
    rx_close(&env);
    rx_close(&eval);
}

/* The "flow-bc" plugin through the ABI: learning lowers the loss, chunked
 * batches must be whole chunks, export/import and save/load round-trip. */
static void test_flow_bc_plugin(void)
{
    cr_err_t err = {0};
    const corral_plugin_t *pl = pol_builtin_find("flow-bc", CORRAL_PLUGIN_ALGO);
    ASSERT_TRUE(pl != NULL);
    corral_kv_t cfg[] = {{"hidden", "32,32"}, {"horizon", "2"}, {"steps", "4"}, {"seed", "3"}, {"lr", "3e-3"}};
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = 3, .act_dim = 2};
    pol_algo_t a, b;
    CHECK_OK(pol_algo_create(&a, pl, cfg, 5, &spec, &err), &err);
    CHECK_OK(pol_algo_create(&b, pl, cfg, 5, &spec, &err), &err);
    /* a linear "expert": action = 0.5 * obs[0..1], chunks of two equal steps */
    enum { R = 64 };
    float obs[R * 3], act[R * 2];
    nn_rng_t rng;
    nn_rng_seed(&rng, 9);
    corral_batch_t batch = {.struct_size = sizeof batch, .size = R, .obs = obs, .action = act};
    double first = 0, last = 0;
    for (int it = 0; it < 300; it++) {
        for (int s = 0; s < R / 2; s++) {
            float o[3] = {nn_rng_uniform(&rng) * 2 - 1, nn_rng_uniform(&rng) * 2 - 1, nn_rng_uniform(&rng)};
            for (int h = 0; h < 2; h++) {
                memcpy(obs + (s * 2 + h) * 3, o, sizeof o);
                act[(s * 2 + h) * 2] = 0.5f * o[0];
                act[(s * 2 + h) * 2 + 1] = 0.5f * o[1];
            }
        }
        corral_metrics_t m = {0};
        CHECK_OK(pol_algo_update(&a, &batch, &m, &err), &err);
        double l = pol_metric_get(&m, "flow_loss");
        if (it < 10) first += l / 10;
        if (it >= 290) last += l / 10;
    }
    fprintf(stderr, "  flow-bc plugin loss %.3f -> %.3f\n", first, last);
    ASSERT_TRUE(last < 0.5 * first);
    float o[3] = {0.8f, -0.6f, 0.2f}, y[2], z[2];
    CHECK_OK(pol_algo_act(&a, o, 1, y, &err), &err);
    ASSERT_NEAR(y[0], 0.4, 0.15);
    ASSERT_NEAR(y[1], -0.3, 0.15);
    /* a batch that is not whole chunks */
    batch.size = 63;
    corral_metrics_t m = {0};
    ASSERT_INT_EQ(pol_algo_update(&a, &batch, &m, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "horizon 2") != NULL);
    /* export -> import gives the same deterministic actions */
    void *blob;
    size_t len;
    CHECK_OK(pol_algo_export(&a, &blob, &len, &err), &err);
    CHECK_OK(pol_algo_import(&b, blob, len, &err), &err);
    CHECK_OK(pol_algo_act(&b, o, 1, z, &err), &err);
    ASSERT_TRUE(memcmp(y, z, sizeof y) == 0);
    free(blob);
    /* save -> load: the next update is bit-for-bit the same */
    char path[512];
    snprintf(path, sizeof path, "%s/flow-bc.ckpt", test_tmpdir());
    CHECK_OK(pol_algo_save(&a, path, &err), &err);
    CHECK_OK(pol_algo_load(&b, path, &err), &err);
    batch.size = R;
    corral_metrics_t ma = {0}, mb = {0};
    CHECK_OK(pol_algo_update(&a, &batch, &ma, &err), &err);
    CHECK_OK(pol_algo_update(&b, &batch, &mb, &err), &err);
    ASSERT_TRUE(pol_metric_get(&ma, "flow_loss") == pol_metric_get(&mb, "flow_loss"));
    CHECK_OK(pol_algo_act(&a, o, 1, y, &err), &err);
    CHECK_OK(pol_algo_act(&b, o, 1, z, &err), &err);
    ASSERT_TRUE(memcmp(y, z, sizeof y) == 0);
    /* a checkpoint of another shape is refused by name */
    pol_algo_t c;
    corral_kv_t other[] = {{"hidden", "32,32"}, {"horizon", "4"}};
    CHECK_OK(pol_algo_create(&c, pl, other, 2, &spec, &err), &err);
    ASSERT_INT_EQ(pol_algo_load(&c, path, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "horizon") != NULL);
    /* unknown settings are named */
    pol_algo_t d;
    corral_kv_t bad[] = {{"horizn", "4"}};
    ASSERT_TRUE(pol_algo_create(&d, pl, bad, 1, &spec, &err) != 0);
    ASSERT_TRUE(strstr(err.msg, "horizn") != NULL);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
    pol_algo_destroy(&c);
}

/* flow-rl through the ABI on a one-step task: reward -|a - 0.5 obs|^2. The
 * demonstrations are off by +0.3 on both action dims; BC copies the bias, RL
 * must remove most of it. */
static double bias_err(pol_algo_t *a, nn_rng_t *rng)
{
    cr_err_t err = {0};
    double e = 0;
    for (int i = 0; i < 100; i++) {
        float o[3] = {nn_rng_uniform(rng) * 2 - 1, nn_rng_uniform(rng) * 2 - 1, nn_rng_uniform(rng)}, y[2];
        CHECK_OK(pol_algo_act(a, o, 1, y, &err), &err);
        e += (fabs(y[0] - 0.5 * o[0]) + fabs(y[1] - 0.5 * o[1])) / 200;
    }
    return e;
}

static void test_flow_rl_plugin(void)
{
    cr_err_t err = {0};
    const corral_plugin_t *pl = pol_builtin_find("flow-rl", CORRAL_PLUGIN_ALGO);
    ASSERT_TRUE(pl != NULL);
    corral_kv_t cfg[] = {{"hidden", "32,32"}, {"steps", "4"}, {"seed", "3"}, {"lr", "3e-3"}, {"bc_updates", "300"},
                         {"rl_lr", "1e-3"}, {"gamma", "0"}, {"log_std_init", "-1.5"}};
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = 3, .act_dim = 2};
    pol_algo_t a, b;
    CHECK_OK(pol_algo_create(&a, pl, cfg, 8, &spec, &err), &err);
    CHECK_OK(pol_algo_create(&b, pl, cfg, 8, &spec, &err), &err);
    enum { R = 64 };
    float obs[R * 3], act[R * 2], rew[R], next[R * 3], done[R];
    uint8_t flags[R];
    nn_rng_t rng, erng;
    nn_rng_seed(&rng, 9);
    corral_batch_t batch = {.struct_size = sizeof batch, .size = R, .obs = obs, .action = act, .reward = rew,
                            .next_obs = next, .done = done, .flags = flags};
    corral_metrics_t m = {0};
    for (int it = 0; it < 300; it++) {   /* BC on the demonstrations */
        for (int r = 0; r < R; r++) {
            float *o = obs + r * 3;
            o[0] = nn_rng_uniform(&rng) * 2 - 1;
            o[1] = nn_rng_uniform(&rng) * 2 - 1;
            o[2] = nn_rng_uniform(&rng);
            act[r * 2] = 0.5f * o[0] + 0.3f;
            act[r * 2 + 1] = 0.5f * o[1] + 0.3f;
            flags[r] = CORRAL_SAMPLE_DEMO;
        }
        memset(&m, 0, sizeof m);
        CHECK_OK(pol_algo_update(&a, &batch, &m, &err), &err);
    }
    ASSERT_NEAR(pol_metric_get(&m, "phase"), 0, 0);
    nn_rng_seed(&erng, 77);
    double e_bc = bias_err(&a, &erng);
    /* the RL phase: the policy's own noisy actions, one step each */
    void *blob;
    size_t len;
    for (int it = 0; it < 400; it++) {
        if (it % 10 == 0) {   /* as the learner publishes: the actors' policy is the ratio's reference */
            CHECK_OK(pol_algo_export(&a, &blob, &len, &err), &err);
            free(blob);
        }
        for (int r = 0; r < R; r++) {
            float *o = obs + r * 3, *y = act + r * 2;
            o[0] = nn_rng_uniform(&rng) * 2 - 1;
            o[1] = nn_rng_uniform(&rng) * 2 - 1;
            o[2] = nn_rng_uniform(&rng);
            CHECK_OK(pol_algo_act(&a, o, 0, y, &err), &err);
            float d0 = y[0] - 0.5f * o[0], d1 = y[1] - 0.5f * o[1];
            rew[r] = -(d0 * d0 + d1 * d1) * 10;
            memcpy(next + r * 3, o, sizeof(float) * 3);
            done[r] = 1;
            flags[r] = r < 8 ? CORRAL_SAMPLE_DEMO : 0;   /* demo rows stay out of the RL loss */
        }
        memset(&m, 0, sizeof m);
        CHECK_OK(pol_algo_update(&a, &batch, &m, &err), &err);
        ASSERT_NEAR(pol_metric_get(&m, "phase"), 1, 0);
        ASSERT_NEAR(pol_metric_get(&m, "rl_rows"), R - 8, 0);
    }
    nn_rng_seed(&erng, 77);
    double e_rl = bias_err(&a, &erng);
    fprintf(stderr, "  flow-rl plugin: mean |a - a*| BC %.3f -> RL %.3f (sigma %.3f, kl %.4f)\n", e_bc, e_rl,
            pol_metric_get(&m, "sigma_mean"), pol_metric_get(&m, "approx_kl"));
    ASSERT_TRUE(e_bc > 0.2);
    ASSERT_TRUE(e_rl < 0.5 * e_bc);
    /* an actor importing the blob acts in the RL phase too, identically */
    CHECK_OK(pol_algo_export(&a, &blob, &len, &err), &err);
    CHECK_OK(pol_algo_import(&b, blob, len, &err), &err);
    free(blob);
    float o[3] = {0.4f, -0.2f, 0.5f}, y[2], z[2];
    CHECK_OK(pol_algo_act(&a, o, 1, y, &err), &err);
    CHECK_OK(pol_algo_act(&b, o, 1, z, &err), &err);
    ASSERT_TRUE(memcmp(y, z, sizeof y) == 0);
    /* save -> load: the next RL update is bit-for-bit the same */
    char path[512];
    snprintf(path, sizeof path, "%s/flow-rl.ckpt", test_tmpdir());
    CHECK_OK(pol_algo_save(&a, path, &err), &err);
    CHECK_OK(pol_algo_load(&b, path, &err), &err);
    corral_metrics_t ma = {0}, mb = {0};
    CHECK_OK(pol_algo_update(&a, &batch, &ma, &err), &err);
    CHECK_OK(pol_algo_update(&b, &batch, &mb, &err), &err);
    ASSERT_TRUE(pol_metric_get(&ma, "policy_loss") == pol_metric_get(&mb, "policy_loss"));
    CHECK_OK(pol_algo_act(&a, o, 0, y, &err), &err);
    CHECK_OK(pol_algo_act(&b, o, 0, z, &err), &err);
    ASSERT_TRUE(memcmp(y, z, sizeof y) == 0);
    /* the RL phase needs rewards */
    batch.reward = NULL;
    ASSERT_INT_EQ(pol_algo_update(&a, &batch, &ma, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "needs reward") != NULL);
    /* a flow-bc checkpoint is not a flow-rl one */
    pol_algo_t c;
    CHECK_OK(pol_algo_create(&c, pol_builtin_find("flow-bc", CORRAL_PLUGIN_ALGO), cfg, 3, &spec, &err), &err);
    ASSERT_INT_EQ(pol_algo_load(&c, path, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "algo 'flow-rl'") != NULL);
    pol_algo_destroy(&c);
    /* noise bounds that do not hold the start are named */
    corral_kv_t bad[] = {{"log_std_init", "0"}, {"log_std_max", "-1"}};
    ASSERT_TRUE(pol_algo_create(&c, pl, bad, 2, &spec, &err) != 0);
    ASSERT_TRUE(strstr(err.msg, "log_std_init") != NULL);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"time_embed", test_time_embed},
        {"chain_logp", test_chain_logp},
        {"flow_bc_plugin", test_flow_bc_plugin},
        {"rl_updates", test_rl_updates},
        {"flow_rl_plugin", test_flow_rl_plugin},
        {"flow_bc_then_rl_reach2d", test_flow_bc_then_rl},
        {NULL, NULL},
    };
    nn_cpu_set_threads(1);
    return test_main("policies.flow", cases, argc, argv);
}
