/* gen_exp.c - the generative-policy experiment files run the way `corral exp
 * submit` runs them: a learner and an env worker as real processes (`corral
 * worker`, MuJoCo not real-time), to the end of the file's schedule, with every
 * evaluation round the env reports (greedy policy, fresh scenes, the robot's own
 * success test: fingertip within 2 cm of the goal at the end of the episode).
 *
 *  1. configs/experiments/reach-vla.yaml as it is: BC of the scripted
 *     demonstrations, then RL. Each round's success at the instructed target,
 *     marked BC or RL by the policy version evaluated, beside the unit recipe
 *     (tests/unit/policies/multi_target.h: the same scene, 90 demonstrations, BC
 *     in this process with no worker, no image, 3-cm success as in the unit test,
 *     and the 2-cm figure too) measured in this run, and the 80% target.
 *  2. configs/experiments/reach-flow.yaml with a BC phase short of the ceiling
 *     (by default 3 scripted episodes at noise 0.6 and 600 BC updates, then RL
 *     to 8,000 updates on the newest 1,000 transitions with exploration noise
 *     sigma 0.14; --flow-set adds overrides): the last evaluation of a BC policy
 *     and the RL phase's, as the mean of its last three rounds (one round swings
 *     by +-0.1), and their ratio. Rounds of 50 episodes.
 *
 * A round counts as BC when it started before the end of BC (round r starts once
 * the learner passed r x stop.eval_every_updates).
 * Ends with `target` lines.
 *
 * usage: gen_exp [--only vla|flow] [--corral PATH] [--keep] [--vla-set K=V]... [--flow-set K=V]... */
#include "bench/benchutil.h"
#include "common/time.h"
#include "tests/unit/policies/multi_target.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CORRAL_BUILD_DIR_DEFAULT
#define CORRAL_BUILD_DIR_DEFAULT "build"
#endif
#ifndef CORRAL_SOURCE_DIR_DEFAULT
#define CORRAL_SOURCE_DIR_DEFAULT "."
#endif

#define PUBLISH_EVERY 100
#define MAX_SETS 32
#define MAX_ROUNDS 64

static const char *corral_bin = CORRAL_BUILD_DIR_DEFAULT "/corral";
static char tmp_root[256];

typedef struct sets {
    const char *kv[MAX_SETS];
    int n;
} sets_t;

typedef struct round {
    int round, version, ok, episodes;
} round_t;

typedef struct result {
    round_t r[MAX_ROUNDS];
    int n;
    double seconds;
    int exit_code;
} result_t;

static pid_t spawn(const char *log, char *const argv[])
{
    fflush(stdout);
    fflush(stderr);
    pid_t p = fork();
    if (p == 0) {
        FILE *f = freopen(log, "a", stdout);
        if (f) dup2(fileno(stdout), 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return p;
}

/* Learner and env of spec on robot model until the learner stops itself; the
 * rounds come from the learner's log ("evaluation R (policy V): K/N ..."). */
static int run(const char *name, const char *spec, const char *model, const sets_t *s, result_t *res)
{
    char dir[400], llog[460], elog[460], robot[64], pub[16];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    snprintf(llog, sizeof llog, "%s-learner.log", dir);
    snprintf(elog, sizeof elog, "%s-env.log", dir);
    snprintf(robot, sizeof robot, "arm0:mujoco:%s", model);
    snprintf(pub, sizeof pub, "%d", PUBLISH_EVERY);
    char *la[16 + 2 * MAX_SETS], *ea[20 + 2 * MAX_SETS];
    int n = 0, m = 0;
    char *common[] = {(char *)corral_bin, "worker", "--role", NULL, "--spec", (char *)spec, "--dir", dir};
    for (int i = 0; i < 8; i++) la[n++] = common[i], ea[m++] = common[i];
    la[3] = "learner";
    ea[3] = "env";
    la[n++] = "--publish-every";
    la[n++] = pub;
    char *env_only[] = {"--index", "0", "--robot", robot, "--robot-set", "realtime=false"};
    for (int i = 0; i < 6; i++) ea[m++] = env_only[i];
    for (int i = 0; i < s->n; i++) {
        la[n++] = "--set", la[n++] = (char *)s->kv[i];
        ea[m++] = "--set", ea[m++] = (char *)s->kv[i];
    }
    la[n] = ea[m] = NULL;
    int64_t t0 = cr_now_ns();
    pid_t lp = spawn(llog, la), ep = spawn(elog, ea);
    int st = 0;
    waitpid(lp, &st, 0);
    res->seconds = (double)(cr_now_ns() - t0) / 1e9;
    res->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    for (int i = 0; i < 50 && waitpid(ep, NULL, WNOHANG) == 0; i++) cr_sleep_ns(100 * CR_NS_PER_MS);
    kill(ep, SIGTERM);
    waitpid(ep, NULL, 0);
    FILE *f = fopen(llog, "r");
    if (!f) return -1;
    char line[1024];
    res->n = 0;
    while (fgets(line, sizeof line, f) && res->n < MAX_ROUNDS) {
        const char *p = strstr(line, "] evaluation ");
        round_t r;
        if (p && sscanf(p, "] evaluation %d (policy %d): %d/%d", &r.round, &r.version, &r.ok, &r.episodes) == 4 &&
            r.episodes > 0)
            res->r[res->n++] = r;
    }
    fclose(f);
    return res->exit_code == 0 && res->n > 0 ? 0 : -1;
}

static double rate(const round_t *r) { return (double)r->ok / r->episodes; }

/* Prints every round; *bc gets the last round of a BC policy, *fin the last
 * round (NULL when none). Round r starts once the learner has passed r x every
 * updates, with the newest policy the env holds (at most one publication
 * behind): a BC policy when r x every <= bc_updates. */
static void report(const char *what, const result_t *res, long bc_updates, long every, const round_t **bc,
                   const round_t **fin)
{
    *bc = *fin = NULL;
    printf("%s: %d evaluation rounds in %.0f s (learner exit %d; BC for %ld updates, a round every %ld)\n", what,
           res->n, res->seconds, res->exit_code, bc_updates, every);
    for (int i = 0; i < res->n; i++) {
        const round_t *r = &res->r[i];
        int is_bc = (long)r->round * every <= bc_updates;
        printf("  round %2d  after ~%5ld updates (policy version %3d, %s)  %3d/%-3d = %.2f\n", r->round,
               (long)r->round * every, r->version, is_bc ? "BC" : "RL", r->ok, r->episodes, rate(r));
        if (is_bc) *bc = r;
        *fin = r;
    }
}

/* The unit recipe of the VLA check in this process (multi_target.h, seed 21 as
 * in the unit test): *r3 at 3 cm (the unit test's success), *r2 at 2 cm. */
static int unit_recipe(const char *src, double *r3, double *r2, double *seconds)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/robots/reach2d_multi.xml", src);
    menv_t e;
    if (menv_open(&e, path)) return -1;
    nn_rng_t rng;
    nn_rng_seed(&rng, 21);
    mt_data_t d = {0};
    pol_vla_cfg_t cfg = mt_vla_cfg();
    pol_vla_t v;
    cr_err_t err = {0};
    if (mt_demos(&e, 90, &rng, &d) || pol_vla_create(&v, nn_backend_cpu(), &cfg, &rng, &err)) {
        fprintf(stderr, "gen_exp: unit recipe: %s\n", err.code ? err.msg : "out of memory");
        return -1;
    }
    int64_t t0 = cr_now_ns();
    mt_train(&v, &d, MT_STEPS, MT_BATCH, MT_LR, MT_DECAY_FROM, &rng, 0);
    *seconds = (double)(cr_now_ns() - t0) / 1e9;
    int EP = 100, ok3 = 0, ok2 = 0;
    for (int ep = 0; ep < EP; ep++) {
        menv_reset(&e, 90000 + (uint64_t)ep, -1);
        ok3 += run_episode(&v, &e) == e.named;
        ok2 += menv_dist(&e, e.named) < 0.02;
    }
    *r3 = (double)ok3 / EP;
    *r2 = (double)ok2 / EP;
    pol_vla_destroy(&v);
    mt_data_free(&d);
    menv_close(&e);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: gen_exp [--only vla|flow] [--corral PATH] [--keep] [--vla-set K=V]... "
                    "[--flow-set K=V]...\n");
    return 1;
}

/* A setting of the run: the last override "key=value" in sets, else the
 * experiment file's line "  name: N" (the file's sections are flat), else -1. */
static long setting(const sets_t *s, const char *spec, const char *key, const char *name)
{
    size_t k = strlen(key);
    for (int i = s->n - 1; i >= 0; i--)
        if (!strncmp(s->kv[i], key, k) && s->kv[i][k] == '=') return atol(s->kv[i] + k + 1);
    FILE *f = fopen(spec, "r");
    char line[512], pat[96];
    snprintf(pat, sizeof pat, "  %s: %%ld", name);
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, pat, &v) == 1) break;
    if (f) fclose(f);
    return v;
}

static void report_run(const char *what, const result_t *res, const sets_t *s, const char *spec, const round_t **bc,
                       const round_t **fin)
{
    report(what, res, setting(s, spec, "algorithm.bc_updates", "bc_updates"),
           setting(s, spec, "stop.eval_every_updates", "eval_every_updates"), bc, fin);
}

int main(int argc, char **argv)
{
    const char *only = NULL, *src = getenv("CORRAL_SOURCE_DIR");
    int keep = 0;
    /* stop.wall_time: a guard, so a run whose env died cannot hold the bench */
    sets_t vs = {{"stop.eval_episodes=30", "stop.wall_time=60m"}, 2};
    /* BC short of the ceiling: three demonstrations, noisy; the first round
     * (after 550 of the 600 BC updates) evaluates a BC policy, the others RL */
    sets_t fs = {{"buffer.scripted.episodes=3", "buffer.scripted.noise=0.6", "algorithm.warmup_steps=150",
                  "algorithm.bc_updates=600", "stop.eval_every_updates=550", "stop.eval_episodes=50",
                  "stop.updates=8000", "buffer.recent_window=1000", "algorithm.params.log_std_init=-2",
                  "stop.wall_time=30m"}, 10};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keep")) keep = 1;
        else if (i + 1 >= argc) return usage();
        else if (!strcmp(argv[i], "--only")) only = argv[++i];
        else if (!strcmp(argv[i], "--corral")) corral_bin = argv[++i];
        else if (!strcmp(argv[i], "--vla-set") && vs.n < MAX_SETS) vs.kv[vs.n++] = argv[++i];
        else if (!strcmp(argv[i], "--flow-set") && fs.n < MAX_SETS) fs.kv[fs.n++] = argv[++i];
        else return usage();
    }
    if (only && strcmp(only, "vla") && strcmp(only, "flow")) return usage();
    if (!src) src = CORRAL_SOURCE_DIR_DEFAULT;
    if (access(corral_bin, X_OK) != 0) {
        fprintf(stderr, "gen_exp: %s not found: build the corral target first\n", corral_bin);
        return 1;
    }
    snprintf(tmp_root, sizeof tmp_root, "%s/corral-genexp.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_root)) {
        perror("gen_exp: mkdtemp");
        return 1;
    }
    nn_cpu_set_threads(1);
    printf("gen_exp: experiment files through a learner and an env worker (corral worker); logs in %s\n", tmp_root);
    char spec[1200];
    int ok = 1;
    if (!only || !strcmp(only, "vla")) {
        double u3 = -1, u2 = -1, us = 0;
        if (unit_recipe(src, &u3, &u2, &us)) return 1;
        printf("unit recipe in this process (multi_target.h, seed 21, %d BC steps at batch %d in %.0f s, no image, "
               "no worker): named target %.2f at 3 cm, %.2f at 2 cm (100 episodes)\n", MT_STEPS, MT_BATCH, us, u3, u2);
        snprintf(spec, sizeof spec, "%s/configs/experiments/reach-vla.yaml", src);
        result_t res = {0};
        const round_t *bc, *fin;
        int rc = run("reach-vla", spec, "reach2d_multi", &vs, &res);
        report_run("reach-vla.yaml through the workers", &res, &vs, spec, &bc, &fin);
        double f = rc == 0 && fin ? rate(fin) : 0, b = bc ? rate(bc) : 0;
        printf("reach-vla: last BC round %.2f, final round %.2f (2 cm; with an image); unit recipe %.2f at 2 cm "
               "(ratio %.2f), %.2f at 3 cm; target 0.80\n", b, f, u2, u2 > 0 ? f / u2 : 0, u3);
        ok &= bench_target("gen_exp_vla_worker_eval_final", f, ">=0.80");
        ok &= bench_target("gen_exp_vla_worker_eval_end_of_bc", b, ">=0.80");
    }
    if (!only || !strcmp(only, "flow")) {
        snprintf(spec, sizeof spec, "%s/configs/experiments/reach-flow.yaml", src);
        result_t res = {0};
        const round_t *bc, *fin;
        int rc = run("reach-flow", spec, "reach2d", &fs, &res);
        report_run("reach-flow.yaml through the workers, BC short of the ceiling", &res, &fs, spec, &bc, &fin);
        /* the RL phase: the mean of its last three rounds */
        int ok_n = 0, ep_n = 0, k = 0;
        for (int i = res.n - 1; i >= 0 && k < 3 && rc == 0; i--, k++) {
            if (&res.r[i] == bc || (bc && res.r[i].round <= bc->round)) break;
            ok_n += res.r[i].ok;
            ep_n += res.r[i].episodes;
        }
        double b = bc ? rate(bc) : -1, f = ep_n ? (double)ok_n / ep_n : -1;
        double gain = b > 0 && f >= 0 ? f / b : 0;
        printf("reach-flow: BC-phase evaluation %.2f, RL phase (last %d rounds) %.2f, final round %.2f; ratio RL/BC "
               "%.2f\n", b, k, f, fin ? rate(fin) : -1, gain);
        ok &= bench_target("gen_exp_flow_rl_over_bc", gain, ">=1.10");
    }
    if (!keep) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
        if (system(cmd) != 0) fprintf(stderr, "gen_exp: could not remove %s\n", tmp_root);
    }
    return ok ? 0 : 1;
}
