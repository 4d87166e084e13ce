/* loop.c - the fixed-rate control loop.
 *
 * Deadlines are absolute (start + k * period) and slept to with
 * clock_nanosleep(TIMER_ABSTIME) on CLOCK_MONOTONIC, so the loop never drifts:
 * a late wake-up shortens the next sleep instead of delaying every later tick.
 * Jitter is how late each wake-up came after its deadline. When the work of a
 * tick runs past the next deadline that is an overrun; the missed deadlines are
 * skipped (not replayed in a burst, which would send stale commands).
 *
 * A plain sleep to the deadline wakes 50-300 us late under SCHED_OTHER: the
 * kernel's default timer slack alone is 50 us, and a virtual machine adds its
 * own wake-up latency. So the loop sleeps to a little before the deadline and
 * spins on the clock for the last stretch. The stretch (the margin) is learned
 * from how late this machine's sleeps actually wake: a decaying maximum of the
 * observed oversleep, bounded so that the spin never costs more than an eighth
 * of a period (and never more than 1 ms). The timer slack of the loop's thread
 * is set to its minimum while it runs. */
#include "hal/hal.h"
#include "common/time.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <string.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <time.h>

/* Percentiles of at most this many recent samples: memory stays bounded for
 * loops that run for days. */
#define MAX_SAMPLES 200000

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = t / CR_NS_PER_S, .tv_nsec = t % CR_NS_PER_S};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

/* The spin margin: sleep to deadline - margin, then spin. */
typedef struct margin {
    int64_t oversleep;  /* decaying maximum of how late a sleep woke, ns */
    int64_t cap;        /* at most this much spinning per tick */
} margin_t;

#define MARGIN_MIN_NS (20 * 1000)
#define MARGIN_START_NS (200 * 1000)

static int64_t margin_ns(const margin_t *m)
{
    int64_t v = m->oversleep + m->oversleep / 2 + MARGIN_MIN_NS;
    return v < m->cap ? v : m->cap;
}

/* Sleeps to just before the deadline, learns from how late that sleep woke, and
 * spins the rest of the way. */
static void wait_until(margin_t *m, int64_t deadline)
{
    int64_t wake = deadline - margin_ns(m);
    if (cr_now_ns() < wake) {
        sleep_until(wake);
        int64_t late = cr_now_ns() - wake;
        /* Decay by 1/64 per tick: one slow wake-up raises the margin at once,
         * and it drifts back down over a few seconds of quiet ones. */
        m->oversleep -= m->oversleep / 64;
        if (late > m->oversleep) m->oversleep = late;
    }
    while (cr_now_ns() < deadline) {}
}

int hal_loop_run(int64_t period_ns, int64_t n_ticks, int (*fn)(void *ctx, int64_t tick),
                 void *ctx, hal_loop_stats_t *stats)
{
    size_t cap = n_ticks > 0 && n_ticks < MAX_SAMPLES ? (size_t)n_ticks : MAX_SAMPLES;
    double *jit = stats ? malloc(cap * sizeof *jit) : NULL;
    size_t nj = 0;
    int64_t overruns = 0, tick = 0;
    double jmax = 0;
    int rc = 0;
    int64_t start = cr_now_ns() + period_ns;
    int64_t k = 0;  /* index of the next deadline */
    margin_t m = {.oversleep = MARGIN_START_NS, .cap = period_ns / 8};
    if (m.cap > CR_NS_PER_MS) m.cap = CR_NS_PER_MS;
    int old_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    while (n_ticks <= 0 || tick < n_ticks) {
        int64_t deadline = start + k * period_ns;
        wait_until(&m, deadline);
        double late_us = (double)(cr_now_ns() - deadline) / 1e3;
        if (late_us > jmax) jmax = late_us;
        if (jit) jit[nj++ % cap] = late_us;
        rc = fn(ctx, tick++);
        if (rc) break;
        int64_t now = cr_now_ns();
        k++;
        if (now > start + k * period_ns) {
            overruns++;
            k = (now - start) / period_ns + 1;
        }
    }
    if (old_slack > 0) prctl(PR_SET_TIMERSLACK, (unsigned long)old_slack, 0, 0, 0);
    if (stats) {
        stats->ticks = tick;
        stats->overruns = overruns;
        stats->jitter_max_us = jmax;
        size_t n = nj < cap ? nj : cap;
        if (jit && n) {
            qsort(jit, n, sizeof *jit, cmp_double);
            stats->jitter_p50_us = jit[(size_t)(0.50 * (double)(n - 1))];
            stats->jitter_p99_us = jit[(size_t)(0.99 * (double)(n - 1))];
        } else {
            stats->jitter_p50_us = stats->jitter_p99_us = 0;
        }
    }
    free(jit);
    return rc;
}

int hal_loop_realtime(int priority, cr_err_t *err)
{
    struct sched_param sp = {.sched_priority = priority};
    int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    if (rc)
        return cr_err_set(err, rc == EPERM ? CR_EPERM : CR_EINVAL,
                          "SCHED_FIFO priority %d refused: %s", priority, strerror(rc));
    /* Page faults in a control period are jitter too. */
    mlockall(MCL_CURRENT | MCL_FUTURE);
    return 0;
}

void hal_loop_normal(void)
{
    struct sched_param sp = {.sched_priority = 0};
    pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp);
    munlockall();
}
