/* test_learn.c - the learning check: SAC, one process, reaches >= 90% success over
 * 100 deterministic evaluation episodes of the reach task within 30,000
 * environment steps, for each of 3 seeds. Evaluated every 1,000 steps from 5,000
 * (100 fresh episodes each time); a seed passes at its first evaluation >= 90%.
 * One update per environment step (UTD 1) after 1,000 random steps. Networks
 * 2x128 and batch 64 (the bench uses the 2x256 / 256 sizes) so that three seeds
 * fit the test budget on one core; the reach task is tests/.../reach_env.h until
 * the MuJoCo reach2d driver is available. The macros let a developer vary the
 * sizes when investigating. */
#include "tests/unit/policies/gradcheck.h"
#include "tests/unit/policies/reach_env.h"
#include "policies/policies.h"

#include <string.h>

#ifndef MAX_STEPS
#define MAX_STEPS 30000
#endif
#define WARMUP 1000
#ifndef GAMMA
#define GAMMA "0.9"
#endif
#ifndef BATCH
#define BATCH 64
#endif
#ifndef HIDDEN
#define HIDDEN "128,128"
#endif
#ifndef EVAL_EVERY
#define EVAL_EVERY 1000
#endif
#define EVAL_FROM 5000

typedef struct replay {
    float obs[MAX_STEPS][REACH_OBS], next[MAX_STEPS][REACH_OBS], act[MAX_STEPS][REACH_ACT];
    float rew[MAX_STEPS], done[MAX_STEPS];
    int n;
} replay_t;

static double evaluate(pol_algo_t *a, uint64_t seed)
{
    reach_env_t env;
    nn_rng_seed(&env.rng, seed);
    float obs[REACH_OBS], act[REACH_ACT];
    cr_err_t err = {0};
    int ok = 0;
    for (int ep = 0; ep < 100; ep++) {
        reach_reset(&env, obs);
        int end = 0;
        while (!end) {
            if (pol_algo_act(a, obs, 1, act, &err) != 0) return -1;
            reach_step(&env, act, obs, &end);
        }
        ok += reach_dist(&env) < 0.02f;
    }
    return ok / 100.0;
}

/* Returns the environment steps it took to reach 90%, or -1. */
static int train_seed(int seed, replay_t *rb)
{
    char seed_s[16];
    snprintf(seed_s, sizeof seed_s, "%d", seed);
    corral_kv_t cfg[] = {{"hidden", HIDDEN}, {"seed", seed_s}, {"actor_lr", "1e-3"},
                         {"critic_lr", "1e-3"}, {"alpha_lr", "1e-3"}, {"gamma", GAMMA},
                         {"tau", "0.01"}, {"init_alpha", "0.1"}};
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = REACH_OBS, .act_dim = REACH_ACT};
    pol_algo_t a;
    cr_err_t err = {0};
    CHECK_OK(pol_algo_create(&a, pol_builtin_find("sac", CORRAL_PLUGIN_ALGO), cfg, sizeof cfg / sizeof cfg[0], &spec, &err), &err);
    reach_env_t env;
    nn_rng_seed(&env.rng, 1000 + (uint64_t)seed);
    nn_rng_t explore;
    nn_rng_seed(&explore, 2000 + (uint64_t)seed);
    float obs[REACH_OBS];
    reach_reset(&env, obs);
    rb->n = 0;
    static float bo[BATCH][REACH_OBS], bn[BATCH][REACH_OBS], ba[BATCH][REACH_ACT], br[BATCH], bd[BATCH];
    corral_batch_t batch = {.struct_size = sizeof batch, .size = BATCH, .obs = &bo[0][0], .action = &ba[0][0],
                            .reward = br, .next_obs = &bn[0][0], .done = bd};
    int reached = -1;
    double last = 0;
    for (int step = 1; step <= MAX_STEPS; step++) {
        float act[REACH_ACT];
        if (step <= WARMUP) {
            for (int j = 0; j < REACH_ACT; j++) act[j] = 2.0f * nn_rng_uniform(&explore) - 1.0f;
        } else {
            CHECK_OK(pol_algo_act(&a, obs, 0, act, &err), &err);
        }
        int i = rb->n++, end;
        memcpy(rb->obs[i], obs, sizeof obs);
        memcpy(rb->act[i], act, sizeof act);
        rb->rew[i] = reach_step(&env, act, obs, &end);
        memcpy(rb->next[i], obs, sizeof obs);
        rb->done[i] = 0.0f;   /* time limit: bootstrap through it */
        if (end) reach_reset(&env, obs);
        if (step > WARMUP) {
            for (int b = 0; b < BATCH; b++) {
                int k = (int)nn_rng_below(&explore, (uint32_t)rb->n);
                memcpy(bo[b], rb->obs[k], sizeof bo[b]);
                memcpy(bn[b], rb->next[k], sizeof bn[b]);
                memcpy(ba[b], rb->act[k], sizeof ba[b]);
                br[b] = rb->rew[k];
                bd[b] = rb->done[k];
            }
            corral_metrics_t m = {0};
            CHECK_OK(pol_algo_update(&a, &batch, &m, &err), &err);
            ASSERT_INT_EQ(pol_metric_get(&m, "skipped_nan"), 0);
        }
        if (step >= EVAL_FROM && step % EVAL_EVERY == 0) {
            last = evaluate(&a, 5000 + (uint64_t)step);
            fprintf(stderr, "  seed %d step %d success %.2f\n", seed, step, last);
            if (last >= 0.9) { reached = step; break; }
        }
    }
    pol_algo_destroy(&a);
    return reached;
}

static void test_sac_learns_reach(void)
{
#ifdef CORRAL_SANITIZE
    TEST_SKIP_IF(1, "learning check is timed: it runs in the optimised build, not under sanitizers");
#endif
    replay_t *rb = malloc(sizeof *rb);
    ASSERT_TRUE(rb != NULL);
    const char *only = getenv("CORRAL_LEARN_SEED");
    for (int seed = 1; seed <= 3; seed++) {
        if (only && atoi(only) != seed) continue;
        int steps = train_seed(seed, rb);
        fprintf(stderr, "  seed %d: %s at %d steps\n", seed, steps > 0 ? "reached 90%" : "FAILED", steps);
        ASSERT_TRUE(steps > 0);
    }
    free(rb);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"sac_learns_reach", test_sac_learns_reach},
        {NULL, NULL},
    };
    return test_main("policies.learn", cases, argc, argv);
}
