/* lib.c - process-wide set-up of the gRPC library (its log routed into ours,
 * malloc tuned for large messages), deadlines, and the monotonic condition waits
 * the send queues block on. */
#define _GNU_SOURCE
#include "common/rpc/internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>

#include <grpc/support/log.h>

#include "common/log.h"
#include "common/time.h"

_Thread_local int rpc_on_queue_thread;

static void grpc_log_to_ours(gpr_log_func_args *a)
{
    cr_log_level_t lvl = a->severity == GPR_LOG_SEVERITY_ERROR ? CR_LOG_WARN
                       : a->severity == GPR_LOG_SEVERITY_INFO ? CR_LOG_INFO : CR_LOG_DEBUG;
    cr_log(lvl, "grpc", "%s (%s:%d)", a->message, a->file, a->line);
}

static void init_once(void)
{
    gpr_set_log_function(grpc_log_to_ours);
    /* Large messages: glibc's default thresholds make every >128 KiB buffer an
     * mmap/munmap pair and 1 MiB streams lose 2-4x throughput (FACTS.md). */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

void rpc_lib_acquire(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_once);
    grpc_init();
}

void rpc_lib_release(void)
{
    /* Blocking: when this is the last user, wait until gRPC's own threads have
     * finished (a TLS handshake still running at exit would meet OpenSSL's
     * atexit clean-up and crash). */
    grpc_shutdown_blocking();
}

gpr_timespec rpc_deadline(int64_t timeout_ms)
{
    if (timeout_ms <= 0) return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

int64_t rpc_deadline_left_ms(gpr_timespec deadline)
{
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0) return INT64_MAX;
    gpr_timespec d = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    int64_t ms = gpr_time_to_millis(gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC)));
    return ms < 0 ? 0 : ms;
}

void rpc_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

int rpc_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) {
        pthread_cond_wait(cv, mu);
        return 0;
    }
    struct timespec ts = {deadline_ns / CR_NS_PER_S, deadline_ns % CR_NS_PER_S};
    return pthread_cond_timedwait(cv, mu, &ts) == ETIMEDOUT ? ETIMEDOUT : 0;
}
