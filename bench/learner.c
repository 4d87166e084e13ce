/* learner.c - learner throughput against a PyTorch peer, in one run: SAC updates
 * per second (batch 256, actor and twin critics 2x256, obs 17, act 6, Adam,
 * automatic temperature, Polyak targets) and the actor's forward latency at
 * batch 1, for corral and for bench/peers/sac_torch.py run by /usr/bin/python3
 * with 1 and 2 threads (its best kept). Both sides use one OpenBLAS thread
 * (OPENBLAS_NUM_THREADS=1), as FACTS.md explains. Prints the ratios and the
 * target lines; with --json, one JSON object on stdout instead.
 *
 * The two sides alternate for --rounds rounds (2) and each keeps its best.
 *
 * usage: learner [--json] [--seconds S] [--rounds N] [--no-peer] */
#include "bench/benchutil.h"
#include "common/time.h"
#include "policies/policies.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OBS 17
#define ACT 6
#define BATCH 256

typedef struct figures {
    double updates_per_s, forward_us;
    int ok;
} figures_t;

static figures_t run_corral(double seconds, int threads)
{
    figures_t f = {0};
    char th[16];
    snprintf(th, sizeof th, "%d", threads);
    corral_kv_t cfg[] = {{"hidden", "256,256"}, {"num_q", "2"}, {"num_min_q", "2"}, {"seed", "0"}, {"threads", th}};
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = OBS, .act_dim = ACT};
    pol_algo_t a;
    cr_err_t err = {0};
    if (pol_algo_create(&a, pol_builtin_find("sac", CORRAL_PLUGIN_ALGO), cfg, 5, &spec, &err) != 0) {
        fprintf(stderr, "learner: %s\n", err.msg);
        return f;
    }
    static float obs[BATCH * OBS], next[BATCH * OBS], act[BATCH * ACT], rew[BATCH], done[BATCH];
    nn_rng_t r;
    nn_rng_seed(&r, 1);
    for (int i = 0; i < BATCH * OBS; i++) { obs[i] = nn_rng_normal(&r); next[i] = nn_rng_normal(&r); }
    for (int i = 0; i < BATCH * ACT; i++) act[i] = 2 * nn_rng_uniform(&r) - 1;
    for (int i = 0; i < BATCH; i++) rew[i] = nn_rng_normal(&r);
    corral_batch_t b = {.struct_size = sizeof b, .size = BATCH, .obs = obs, .action = act, .reward = rew,
                        .next_obs = next, .done = done};
    corral_metrics_t m;
    for (int i = 0; i < 10; i++) {
        memset(&m, 0, sizeof m);
        pol_algo_update(&a, &b, &m, &err);
    }
    long n = 0;
    double t0 = cr_now_s(), t;
    do {
        memset(&m, 0, sizeof m);
        if (pol_algo_update(&a, &b, &m, &err) != 0) {
            fprintf(stderr, "learner: update: %s\n", err.msg);
            pol_algo_destroy(&a);
            return f;
        }
        n++;
    } while ((t = cr_now_s() - t0) < seconds);
    f.updates_per_s = n / t;

    enum { WARM = 200, N = 3000 };
    static double lat[N];
    float o[OBS], out[ACT];
    memcpy(o, obs, sizeof o);
    for (int i = 0; i < WARM; i++) pol_algo_act(&a, o, 1, out, &err);
    for (int i = 0; i < N; i++) {
        int64_t s = cr_now_ns();
        pol_algo_act(&a, o, 1, out, &err);
        lat[i] = (double)(cr_now_ns() - s) / 1e3;
    }
    f.forward_us = bench_percentile(lat, N, 50);
    f.ok = 1;
    pol_algo_destroy(&a);
    return f;
}

static figures_t run_peer(const char *script, int threads, double seconds, char *version, size_t vlen)
{
    figures_t f = {0};
    char cmd[8192], line[1024] = "";
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=1 /usr/bin/python3 '%s' --threads %d --seconds %.1f 2>&1",
             script, threads, seconds);
    FILE *p = popen(cmd, "r");
    if (!p) return f;
    char buf[1024];
    while (fgets(buf, sizeof buf, p))
        if (buf[0] == '{') snprintf(line, sizeof line, "%s", buf);
        else fprintf(stderr, "peer: %s", buf);
    int rc = pclose(p);
    const char *u = strstr(line, "\"updates_per_s\": "), *l = strstr(line, "\"forward_us\": ");
    const char *v = strstr(line, "\"torch\": \"");
    if (rc != 0 || !u || !l) return f;
    f.updates_per_s = atof(u + 17);
    f.forward_us = atof(l + 14);
    if (v) snprintf(version, vlen, "%.*s", (int)strcspn(v + 10, "\""), v + 10);
    f.ok = f.updates_per_s > 0 && f.forward_us > 0;
    return f;
}

int main(int argc, char **argv)
{
    int json = 0, peer = 1, rounds = 2, threads = 2;
    double seconds = 3.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--no-peer")) peer = 0;
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: learner [--json] [--seconds S] [--rounds N] [--no-peer]\n");
            return 1;
        }
    }
    if (rounds < 1) rounds = 1;
    nn_cpu_set_threads(1);
    const char *src = getenv("CORRAL_SOURCE_DIR");
    char script[4096];
    snprintf(script, sizeof script, "%s/bench/peers/sac_torch.py", src ? src : CORRAL_SOURCE_DIR_DEFAULT);

    /* The machine is shared: alternate corral and the peer over a few rounds and
     * keep each side's best, so a burst of load does not decide the ratio. */
    figures_t c = {0}, best = {0};
    char version[64] = "?";
    double peer_t[2] = {0, 0};
    for (int round = 0; round < rounds; round++) {
        figures_t cr = run_corral(seconds, threads);
        if (!cr.ok) return 1;
        if (cr.updates_per_s > c.updates_per_s) c.updates_per_s = cr.updates_per_s;
        if (!c.forward_us || cr.forward_us < c.forward_us) c.forward_us = cr.forward_us;
        c.ok = 1;
        for (int th = 1; peer && th <= 2; th++) {
            figures_t p = run_peer(script, th, seconds, version, sizeof version);
            if (!p.ok) {
                fprintf(stderr, "peer: %s with %d thread(s) failed (python3-torch installed?)\n", script, th);
                continue;
            }
            if (p.updates_per_s > peer_t[th - 1]) peer_t[th - 1] = p.updates_per_s;
            if (p.updates_per_s > best.updates_per_s) best.updates_per_s = p.updates_per_s;
            if (!best.forward_us || p.forward_us < best.forward_us) best.forward_us = p.forward_us;
            best.ok = 1;
            if (!json)
                printf("round %d peer  PyTorch %s, %d thread(s): %8.1f updates/s, forward %7.1f us\n", round + 1,
                       version, th, p.updates_per_s, p.forward_us);
        }
        if (!json)
            printf("round %d corral, %d thread(s):               %8.1f updates/s, forward %7.1f us\n", round + 1,
                   threads, cr.updates_per_s, cr.forward_us);
    }
    double ru = best.ok ? c.updates_per_s / best.updates_per_s : 0;
    double rf = best.ok ? best.forward_us / c.forward_us : 0;
    if (json) {
        printf("{\"corral_updates_per_s\": %.2f, \"peer_updates_per_s\": %.2f, \"corral_forward_us\": %.3f, "
               "\"peer_forward_us\": %.3f, \"peer_updates_per_s_1thread\": %.2f, "
               "\"peer_updates_per_s_2threads\": %.2f, \"updates_ratio\": %.3f, \"forward_ratio\": %.3f, "
               "\"updates_target\": 2.0, \"forward_target\": 10.0, \"batch\": %d, \"hidden\": 256, "
               "\"obs\": %d, \"act\": %d}\n",
               c.updates_per_s, best.updates_per_s, c.forward_us, best.forward_us, peer_t[0], peer_t[1], ru, rf,
               BATCH, OBS, ACT);
        return 0;
    }
    printf("best  corral %.1f updates/s, %.1f us; peer %.1f updates/s (1 thread %.1f, 2 threads %.1f), %.1f us\n",
           c.updates_per_s, c.forward_us, best.updates_per_s, peer_t[0], peer_t[1], best.forward_us);
    if (!best.ok) {
        printf("peer unavailable: no ratios\n");
        bench_target("learner_updates_ratio", 0, ">=2.0");
        bench_target("learner_forward_ratio", 0, ">=10");
        return 0;
    }
    printf("updates/s   corral / peer best:  %.2fx (target >= 2x)\n", ru);
    printf("forward b=1 peer best / corral:  %.2fx lower latency (target >= 10x)\n", rf);
    bench_target("learner_updates_ratio", ru, ">=2.0");
    bench_target("learner_forward_ratio", rf, ">=10");
    return 0;
}
