/* learner.c - learner throughput against a PyTorch peer, in one run: SAC updates
 * per second (batch 256, actor and twin critics 2x256, obs 17, act 6, Adam,
 * automatic temperature, Polyak targets) and the actor's forward latency at
 * batch 1, for corral and for bench/peers/sac_torch.py run by /usr/bin/python3.
 *
 * Both sides run the same SAC update. corral runs on --threads lanes (2: the
 * critic heads, row blocks and gradient products side by side, each product
 * on one OpenBLAS thread); its single-lane figure is printed beside it. The
 * peer is tried on one thread and on two, the two given either to PyTorch's
 * intra-op pool or to OpenBLAS (as FACTS.md explains, letting both spin fights
 * over the cores), and its best is kept. One difference in work, not in
 * result: the peer's actor loss backpropagates through the critics with their
 * weights still requiring gradients, so autograd computes critic weight
 * gradients that SAC then discards; corral computes only the action gradient.
 *
 * The sides alternate for --rounds rounds (3) and each keeps its best. Prints
 * the ratios and the target lines; with --json, one JSON object instead.
 *
 * usage: learner [--json] [--seconds S] [--rounds N] [--threads N] [--no-peer] */
#include "bench/benchutil.h"
#include "common/time.h"
#include "policies/policies.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OBS 17
#define ACT 6
#define BATCH 256

/* Multiply-adds of one SAC update with twin critics, from the layer shapes:
 * forward B*C*OC per linear; backward B*C*OC for the weight gradients of each
 * trained layer and again for each input gradient that is needed. */
static double update_flops(void)
{
    double B = BATCH, H = 256, O = OBS, A = ACT, Q = 2;
    double critic = B * ((O + A) * H + H * H + H), actor = B * (O * H + H * H + H * 2 * A);
    double critic_dinp12 = B * (H * H + H), actor_dinp12 = B * (H * H + H * 2 * A);
    double target = actor + Q * critic;
    double critic_step = Q * critic + Q * critic + Q * critic_dinp12;       /* forward, dW, dinp (not obs) */
    double actor_step = actor + Q * critic + Q * critic + actor + actor_dinp12;  /* dQ/da through all critic layers */
    return 2.0 * (target + critic_step + actor_step);
}

/* the one-thread sgemm rate on a large square product: the yardstick for the
 * fraction of the machine an update uses */
static double sgemm_peak_gflops(void)
{
    int n = 1024;
    float *a = calloc((size_t)n * n, sizeof(float)), *b = calloc((size_t)n * n, sizeof(float));
    float *c = calloc((size_t)n * n, sizeof(float));
    double best = 0;
    for (size_t i = 0; a && b && c && i < (size_t)n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    for (int r = 0; a && b && c && r < 4; r++) {
        int64_t t0 = cr_now_ns();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * n * n * n / ((double)(cr_now_ns() - t0) / 1e9) / 1e9;
        best = g > best ? g : best;
    }
    free(a); free(b); free(c);
    return best;
}

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

static figures_t run_peer(const char *script, int torch_threads, int blas_threads, double seconds,
                          char *version, size_t vlen)
{
    figures_t f = {0};
    char cmd[8192], line[1024] = "";
    snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=%d /usr/bin/python3 '%s' --threads %d --seconds %.1f 2>&1",
             blas_threads, script, torch_threads, seconds);
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

/* the peer's thread settings: PyTorch intra-op threads, OpenBLAS threads */
static const struct {
    int torch, blas;
    const char *label;
} peer_cfg[] = {
    {1, 1, "1 thread"},
    {2, 1, "2 threads (torch)"},
    {1, 2, "2 threads (BLAS)"},
};
#define NPEER (int)(sizeof peer_cfg / sizeof peer_cfg[0])

static void keep_best(figures_t *best, const figures_t *f)
{
    if (f->updates_per_s > best->updates_per_s) best->updates_per_s = f->updates_per_s;
    if (!best->forward_us || f->forward_us < best->forward_us) best->forward_us = f->forward_us;
    best->ok = 1;
}

int main(int argc, char **argv)
{
    int json = 0, peer = 1, rounds = 3, threads = 2;
    double seconds = 3.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--no-peer")) peer = 0;
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: learner [--json] [--seconds S] [--rounds N] [--threads N] [--no-peer]\n");
            return 1;
        }
    }
    if (rounds < 1) rounds = 1;
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "learner: --threads %d (1..64)\n", threads);
        return 1;
    }
    nn_cpu_set_threads(1);
    const char *src = getenv("CORRAL_SOURCE_DIR");
    char script[4096];
    snprintf(script, sizeof script, "%s/bench/peers/sac_torch.py", src ? src : CORRAL_SOURCE_DIR_DEFAULT);

    /* The machine is shared: alternate corral and the peer over a few rounds and
     * keep each side's best, so a burst of load does not decide the ratio. */
    figures_t c = {0}, c1 = {0}, best = {0}, per[NPEER] = {{0}};
    char version[64] = "?";
    double peak = 0;
    for (int round = 0; round < rounds; round++) {
        double pk = sgemm_peak_gflops();
        peak = pk > peak ? pk : peak;
        figures_t cr = run_corral(seconds, threads);
        if (!cr.ok) return 1;
        keep_best(&c, &cr);
        char label[64];
        snprintf(label, sizeof label, "corral, %d thread%s", threads, threads == 1 ? "" : "s");
        if (!json)
            printf("round %d %-40s %8.1f updates/s, forward %7.1f us\n", round + 1, label, cr.updates_per_s,
                   cr.forward_us);
        if (threads != 1) {
            figures_t one = run_corral(seconds, 1);
            if (!one.ok) return 1;
            keep_best(&c1, &one);
            if (!json)
                printf("round %d %-40s %8.1f updates/s\n", round + 1, "corral, 1 thread", one.updates_per_s);
        }
        for (int k = 0; peer && k < NPEER; k++) {
            figures_t p = run_peer(script, peer_cfg[k].torch, peer_cfg[k].blas, seconds, version, sizeof version);
            if (!p.ok) {
                fprintf(stderr, "peer: %s with %s failed (python3-torch installed?)\n", script, peer_cfg[k].label);
                continue;
            }
            keep_best(&per[k], &p);
            keep_best(&best, &p);
            snprintf(label, sizeof label, "peer PyTorch %s, %s", version, peer_cfg[k].label);
            if (!json)
                printf("round %d %-40s %8.1f updates/s, forward %7.1f us\n", round + 1, label, p.updates_per_s,
                       p.forward_us);
        }
    }
    if (threads == 1) c1 = c;
    double p2 = per[1].updates_per_s > per[2].updates_per_s ? per[1].updates_per_s : per[2].updates_per_s;
    double ru = best.ok ? c.updates_per_s / best.updates_per_s : 0;
    double gf = update_flops() * c.updates_per_s / 1e9, frac = peak > 0 ? gf / (peak * threads) : 0;
    double rf = best.ok ? best.forward_us / c.forward_us : 0;
    if (json) {
        printf("{\"corral_updates_per_s\": %.2f, \"peer_updates_per_s\": %.2f, \"corral_forward_us\": %.3f, "
               "\"peer_forward_us\": %.3f, \"corral_threads\": %d, \"corral_updates_per_s_1thread\": %.2f, "
               "\"peer_updates_per_s_1thread\": %.2f, \"peer_updates_per_s_2threads\": %.2f, "
               "\"peer_updates_per_s_2threads_torch\": %.2f, \"peer_updates_per_s_2threads_blas\": %.2f, "
               "\"updates_ratio\": %.3f, \"forward_ratio\": %.3f, \"updates_target\": 2.0, "
               "\"forward_target\": 10.0, \"update_mflop\": %.1f, \"sgemm_peak_gflops_1thread\": %.1f, "
               "\"corral_fraction_of_peak\": %.3f, \"batch\": %d, \"hidden\": 256, \"obs\": %d, \"act\": %d}\n",
               c.updates_per_s, best.updates_per_s, c.forward_us, best.forward_us, threads, c1.updates_per_s,
               per[0].updates_per_s, p2, per[1].updates_per_s, per[2].updates_per_s, ru, rf, update_flops() / 1e6,
               peak, frac, BATCH, OBS, ACT);
        return 0;
    }
    printf("best  corral %.1f updates/s on %d thread(s) (%.1f on 1), %.1f us; peer %.1f updates/s (1 thread %.1f, "
           "2 threads torch %.1f, 2 threads BLAS %.1f), %.1f us\n",
           c.updates_per_s, threads, c1.updates_per_s, c.forward_us, best.updates_per_s, per[0].updates_per_s,
           per[1].updates_per_s, per[2].updates_per_s, best.forward_us);
    printf("corral computes %.1f GFLOP/s (%.0f MFLOP per update): %.2f of %d x the 1-thread sgemm peak (%.1f "
           "GFLOP/s at 1024^3)\n", gf, update_flops() / 1e6, frac, threads, peak);
    if (!best.ok) {
        printf("peer unavailable: no ratios\n");
        bench_target("learner_updates_ratio", 0, ">=2.0");
        bench_target("learner_forward_ratio", 0, ">=10");
        return 0;
    }
    printf("same SAC update on both sides; the peer's autograd also computes critic weight gradients in the actor\n"
           "loss (discarded by SAC), corral only the action gradient\n");
    printf("updates/s   corral (%d threads) / peer best:  %.2fx (target >= 2x); corral 1 thread / peer best: %.2fx\n",
           threads, ru, c1.updates_per_s / best.updates_per_s);
    printf("forward b=1 peer best / corral:  %.2fx lower latency (target >= 10x)\n", rf);
    bench_target("learner_updates_ratio", ru, ">=2.0");
    bench_target("learner_forward_ratio", rf, ">=10");
    return 0;
}
