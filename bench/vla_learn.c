/* vla_learn.c - the full language-conditioning check of the VLA, too long for the
 * unit-test budget: on the three-target scene (tests/unit/policies/multi_target.h)
 * BC from 90 scripted demonstrations for --steps steps (8,000) at batch 64, then
 * 100 episodes with a random named target and 20 scenes under each of the three
 * instructions. The baselines of the same run: the scripted expert on the same
 * episodes, and chance (one in three) for a policy that ignores the instruction.
 *
 * usage: vla_learn [--steps N] */
#include "bench/benchutil.h"
#include "common/time.h"
#include "tests/unit/policies/multi_target.h"

#ifndef CORRAL_SOURCE_DIR_DEFAULT
#define CORRAL_SOURCE_DIR_DEFAULT "."
#endif

int main(int argc, char **argv)
{
    int steps = 8000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: vla_learn [--steps N]\n");
            return 1;
        }
    }
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
    nn_rng_t rng;
    nn_rng_seed(&rng, 21);
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
    double loss = mt_train(&v, &d, steps, 64, 1e-3f, &rng, 1000);
    double train_s = (double)(cr_now_ns() - t0) / 1e9;
    int named, other;
    mt_eval(&v, &e, EP, 90000, &named, &other);
    int scenes = 20, follow = mt_follow(&v, &e, scenes, 95000);
    double rate = (double)named / EP, frate = (double)follow / (scenes * NT), erate = (double)expert / EP;
    printf("trained %d steps in %.1f s (%.1f ms/step), final loss %.4f, %zu parameters\n", steps, train_s,
           train_s * 1e3 / steps, loss, v.params.numel);
    printf("named target reached: %.2f (expert %.2f, ratio %.2f; chance 0.33, ratio %.2f); another target: %.2f\n",
           rate, erate, erate > 0 ? rate / erate : 0, rate / (1.0 / 3), (double)other / EP);
    printf("same scene, each instruction followed: %.2f\n", frate);
    bench_target("vla_named_target_success", rate, ">=0.80");
    bench_target("vla_instruction_followed_same_scene", frate, ">=0.80");
    pol_vla_destroy(&v);
    mt_data_free(&d);
    menv_close(&e);
    return 0;
}
