/* time.c - clocks and sleeps for time.h. */
#include "time.h"

#include <errno.h>
#include <time.h>

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * CR_NS_PER_S + ts.tv_nsec;
}

int64_t cr_now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
int64_t cr_wall_ns(void) { return clock_ns(CLOCK_REALTIME); }
double cr_now_s(void) { return (double)cr_now_ns() / 1e9; }

void cr_sleep_until_ns(int64_t abs_ns)
{
    struct timespec ts = {.tv_sec = abs_ns / CR_NS_PER_S, .tv_nsec = abs_ns % CR_NS_PER_S};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

void cr_sleep_ns(int64_t ns)
{
    if (ns > 0) cr_sleep_until_ns(cr_now_ns() + ns);
}

int64_t cr_deadline_left_ms(int64_t deadline_ns)
{
    if (deadline_ns == 0) return INT64_MAX;
    int64_t left = deadline_ns - cr_now_ns();
    return left > 0 ? (left + CR_NS_PER_MS - 1) / CR_NS_PER_MS : 0;
}
