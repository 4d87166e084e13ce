/* vla_learn.c - the language-conditioning check of the VLA over several seeds
 * and more episodes than the unit test runs: on the three-target scene
 * (tests/unit/policies/multi_target.h) BC from 90 scripted demonstrations with
 * the unit test's recipe (MT_STEPS steps at batch MT_BATCH, rate MT_LR, cosine
 * decay from MT_DECAY_FROM), then 100 episodes with a random named target and
 * 20 scenes under each of the three instructions, for each seed. The baselines of
 * the same run: the scripted expert on the same episodes, and chance (one in
 * three) for a policy that ignores the instruction. The target line reports the
 * worst seed.
 *
 * usage: vla_learn [--seeds N] [--seed FIRST] [--steps N] [--batch N] [--lr X] [--decay-from F] */
#include "bench/benchutil.h"
#include "common/time.h"
#include "tests/unit/policies/multi_target.h"

#ifndef CORRAL_SOURCE_DIR_DEFAULT
#define CORRAL_SOURCE_DIR_DEFAULT "."
#endif

static int usage(void)
{
    fprintf(stderr, "usage: vla_learn [--seeds N] [--seed FIRST] [--steps N] [--batch N] [--lr X] [--decay-from F]\n");
    return 1;
}

int main(int argc, char **argv)
{
    int steps = MT_STEPS, B = MT_BATCH, seed0 = 21, seeds = 3;
    float lr = MT_LR, decay = MT_DECAY_FROM;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return usage();
        if (!strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lr")) lr = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--decay-from")) decay = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed")) seed0 = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seeds")) seeds = atoi(argv[++i]);
        else return usage();
    }
    if (steps < 1 || B < 1 || seeds < 1 || !(lr > 0)) return usage();
    nn_cpu_set_threads(1);
    char path[1024];
    const char *src = getenv("CORRAL_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/configs/robots/reach2d_multi.xml", src ? src : CORRAL_SOURCE_DIR_DEFAULT);
    menv_t e;
    if (menv_open(&e, path)) return 1;
    int EP = 100, expert = 0;
    for (int ep = 0; ep < EP; ep++) {
        menv_reset(&e, 90000 + (uint64_t)ep, -1);
        float a[2];
        while (menv_expert(&e, a), !menv_step(&e, a)) {}
        expert += menv_dist(&e, e.named) < SUCCESS_DIST;
    }
    double erate = (double)expert / EP, worst = 1, worst_follow = 1;
    for (int s = 0; s < seeds; s++) {
        nn_rng_t rng;
        nn_rng_seed(&rng, (uint64_t)(seed0 + s));
        mt_data_t d = {0};
        if (mt_demos(&e, 90, &rng, &d)) return 1;
        pol_vla_cfg_t cfg = mt_vla_cfg();
        pol_vla_t v;
        cr_err_t err = {0};
        if (pol_vla_create(&v, nn_backend_cpu(), &cfg, &rng, &err)) {
            fprintf(stderr, "vla_learn: %s\n", err.msg);
            return 1;
        }
        int64_t t0 = cr_now_ns();
        double loss = mt_train(&v, &d, steps, B, lr, decay, &rng, 0);
        double train_s = (double)(cr_now_ns() - t0) / 1e9;
        int named, other;
        mt_eval(&v, &e, EP, 90000, &named, &other);
        int scenes = 20, follow = mt_follow(&v, &e, scenes, 95000);
        double rate = (double)named / EP, frate = (double)follow / (scenes * NT);
        printf("seed %d: trained %d steps in %.1f s (%.2f ms/step), final loss %.4f, %zu parameters\n", seed0 + s,
               steps, train_s, train_s * 1e3 / steps, loss, v.params.numel);
        printf("seed %d: named target reached %.2f (expert %.2f, ratio %.2f; chance 0.33, ratio %.2f); another "
               "target %.2f; same scene, each instruction followed %.2f\n", seed0 + s, rate, erate,
               erate > 0 ? rate / erate : 0, rate / (1.0 / 3), (double)other / EP, frate);
        worst = rate < worst ? rate : worst;
        worst_follow = frate < worst_follow ? frate : worst_follow;
        pol_vla_destroy(&v);
        mt_data_free(&d);
    }
    bench_target("vla_named_target_success_worst_seed", worst, ">=0.80");
    bench_target("vla_instruction_followed_same_scene_worst_seed", worst_follow, ">=0.80");
    menv_close(&e);
    return 0;
}
