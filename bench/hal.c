/* hal.c - benchmark of the HAL: control-loop timing and simulation speed.
 *
 * 1. Jitter of the fixed-rate loop (absolute deadlines, clock_nanosleep) at
 *    100 Hz and 500 Hz, alone and beside a busy process, each beside a baseline
 *    measured in the same run: a loop that sleeps one period after its work
 *    (relative sleeps), whose lateness accumulates.
 * 2. Simulated steps per second for each shipped model through the mujoco driver
 *    (safety layer included), with and without camera images, beside raw
 *    mj_step on the same model as the baseline. A "step" is one physics step;
 *    one control step is `substeps` of them.
 * Ends with the targets: p99 jitter <= 200 us at 100 Hz, reach2d >=
 * 200,000 steps/s without images. */
#include "bench/benchutil.h"
#include "common/time.h"
#include "hal/hal.h"

#include <math.h>
#include <mujoco/mujoco.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int idle_tick(void *ctx, int64_t tick) { return 0; }

/* Baseline: relative sleeps; lateness against the ideal schedule start + k * period. */
static double relative_p99_us(int64_t period, int n)
{
    double *late = malloc(sizeof(double) * (size_t)n);
    int64_t start = cr_now_ns();
    for (int k = 1; k <= n; k++) {
        cr_sleep_ns(period);
        late[k - 1] = (double)(cr_now_ns() - (start + k * period)) / 1e3;
    }
    double p = bench_percentile(late, (size_t)n, 99);
    free(late);
    return p;
}

static pid_t start_busy(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        volatile double x = 0;
        for (;;) x += sin(x + 1.0);
    }
    return pid;
}

static double jitter_case(double hz, double seconds, int busy, int rt, double *p50_out)
{
    cr_err_t err = {0};
    if (rt && hal_loop_realtime(50, &err) != 0) {
        printf("jitter %3.0f Hz %-6s SCHED_FIFO unavailable: %s\n", hz, busy ? "busy" : "alone", err.msg);
        return -1;
    }
    pid_t pid = busy ? start_busy() : 0;
    int64_t period = (int64_t)(1e9 / hz);
    int n = (int)(hz * seconds);
    hal_loop_stats_t st;
    hal_loop_run(period, n, idle_tick, NULL, &st);
    double base = relative_p99_us(period, n);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (rt) hal_loop_normal();
    printf("jitter %3.0f Hz %-6s %s p50 %7.1f us  p99 %7.1f us  max %7.1f us  overruns %lld | "
           "baseline (relative sleep) p99 %9.1f us  ratio %.3f\n", hz, busy ? "busy" : "alone",
           rt ? "fifo " : "other",
           st.jitter_p50_us, st.jitter_p99_us, st.jitter_max_us, (long long)st.overruns, base,
           base > 0 ? st.jitter_p99_us / base : 0.0);
    *p50_out = st.jitter_p50_us;
    return st.jitter_p99_us;
}

static double raw_steps_per_s(const char *model, double seconds)
{
    char path[1200], errbuf[500];
    snprintf(path, sizeof path, "%s/%s.xml", hal_mujoco_models_dir(), model);
    mjModel *m = mj_loadXML(path, NULL, errbuf, sizeof errbuf);
    if (!m) return 0;
    mjData *d = mj_makeData(m);
    int64_t n = 0, t0 = cr_now_ns(), end = t0 + (int64_t)(seconds * 1e9);
    while (cr_now_ns() < end) {
        for (int i = 0; i < 1000; i++) {
            for (int k = 0; k < m->nu; k++) d->ctrl[k] = 0.3 * sin(0.001 * (double)(n + i) + k);
            mj_step(m, d);
        }
        n += 1000;
    }
    double s = (double)(cr_now_ns() - t0) / 1e9;
    mj_deleteData(d);
    mj_deleteModel(m);
    return (double)n / s;
}

static int substeps_of(const char *model, double rate_hz)
{
    char path[1200], errbuf[500];
    snprintf(path, sizeof path, "%s/%s.xml", hal_mujoco_models_dir(), model);
    mjModel *m = mj_loadXML(path, NULL, errbuf, sizeof errbuf);
    if (!m) return 1;
    int s = (int)lround(1.0 / (rate_hz * m->opt.timestep));
    mj_deleteModel(m);
    return s < 1 ? 1 : s;
}

/* Physics steps/s through the driver; -1 when the robot cannot open. */
static double hal_steps_per_s(const char *model, const char *camera, double seconds, char *why)
{
    char cam[96];
    snprintf(cam, sizeof cam, "camera=%s", camera ? camera : "");
    const char *kv[] = {"realtime=false", cam};
    hal_opt_t opts[2];
    cr_err_t err = {0};
    hal_opts_parse(kv, camera ? 2 : 1, opts, &err);
    hal_robot_t *r;
    if (hal_robot_open("bench", "mujoco", model, opts, camera ? 2 : 1, &r, &err) != 0) {
        snprintf(why, 300, "%s", err.msg);
        return -1;
    }
    const hal_robot_desc_t *d = hal_robot_desc(r);
    hal_obs_t o;
    hal_obs_alloc(d, camera != NULL, &o, &err);
    hal_robot_reset(r, 1, &o, &err);
    int sub = substeps_of(model, d->rate_hz);
    int64_t n = 0, t0 = cr_now_ns(), end = t0 + (int64_t)(seconds * 1e9);
    float a[HAL_MAX_DOF];
    while (cr_now_ns() < end) {
        for (int i = 0; i < 20; i++) {
            for (int k = 0; k < d->act.dim; k++) a[k] = (float)(0.5 * sin(0.1 * (double)(n + i) + k));
            hal_robot_step(r, a, &o, &err);
            if (o.truncated) hal_robot_reset(r, (uint64_t)n + (uint64_t)i, &o, &err);
        }
        n += 20;
    }
    double s = (double)(cr_now_ns() - t0) / 1e9;
    hal_obs_free(&o);
    hal_robot_close(r);
    return (double)n * sub / s;
}

int main(int argc, char **argv)
{
    setenv("LP_NUM_THREADS", "0", 0);
    printf("== control loop jitter (absolute deadlines vs relative sleeps) ==\n");
    /* SCHED_OTHER is what an unprivileged worker gets; SCHED_FIFO is what a
     * robot's control thread asks for (hal_loop_realtime) where allowed. */
    double p50, p99_100 = jitter_case(100, 3, 0, 0, &p50);
    double p99_100_busy = jitter_case(100, 3, 1, 0, &p50);
    jitter_case(500, 2, 0, 0, &p50);
    jitter_case(500, 2, 1, 0, &p50);
    double p99_100_fifo = jitter_case(100, 3, 0, 1, &p50);
    double p99_100_busy_fifo = jitter_case(100, 3, 1, 1, &p50);
    jitter_case(500, 2, 0, 1, &p50);
    jitter_case(500, 2, 1, 1, &p50);

    printf("\n== simulated physics steps/s: HAL driver vs raw mj_step ==\n");
    const char *models[] = {"reach2d", "arm7", "push"};
    const char *cams[] = {"top", "front", "front"};
    double reach2d = 0;
    for (int i = 0; i < 3; i++) {
        char why[300] = "";
        double raw = raw_steps_per_s(models[i], 1.0);
        double hal = hal_steps_per_s(models[i], NULL, 1.5, why);
        double img = hal_steps_per_s(models[i], cams[i], 1.5, why);
        if (i == 0) reach2d = hal;
        printf("%-8s raw %9.0f  hal %9.0f (ratio %.3f)  with 84x84 images ", models[i], raw, hal,
               raw > 0 ? hal / raw : 0.0);
        if (img < 0) printf("unavailable: %s\n", why);
        else printf("%9.0f (ratio %.3f)\n", img, raw > 0 ? img / raw : 0.0);
    }
    printf("\n");
    int ok = bench_target("hal_jitter_p99_100hz_us", p99_100, "<=200");
    bench_target("hal_jitter_p99_100hz_busy_us", p99_100_busy, "<=200");
    if (p99_100_fifo >= 0) {
        bench_target("hal_jitter_p99_100hz_fifo_us", p99_100_fifo, "<=200");
        bench_target("hal_jitter_p99_100hz_busy_fifo_us", p99_100_busy_fifo, "<=200");
    }
    ok &= bench_target("reach2d_steps_per_s", reach2d, ">=200000");
    return ok ? 0 : 1;
}
