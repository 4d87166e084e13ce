/* time.h - monotonic and wall clocks in nanoseconds, and deadlines built on them.
 * Everything that measures an interval or a time-out uses the monotonic clock, so a
 * wall-clock step (NTP, a laptop resuming) never fires or stalls a time-out. */
#ifndef CORRAL_COMMON_TIME_H
#define CORRAL_COMMON_TIME_H

#include <stdint.h>

#define CR_NS_PER_US 1000LL
#define CR_NS_PER_MS 1000000LL
#define CR_NS_PER_S  1000000000LL

int64_t cr_now_ns(void);      /* CLOCK_MONOTONIC */
int64_t cr_wall_ns(void);     /* CLOCK_REALTIME, for timestamps stored or shown */
double cr_now_s(void);        /* monotonic, in seconds, for reports */

/* Sleeps for ns nanoseconds, resuming after signals. */
void cr_sleep_ns(int64_t ns);

/* Sleeps until the monotonic time abs_ns (absolute, so periodic loops do not drift). */
void cr_sleep_until_ns(int64_t abs_ns);

/* Milliseconds left before a monotonic deadline, never negative; INT64 max for
 * deadline 0 which means "no deadline". */
int64_t cr_deadline_left_ms(int64_t deadline_ns);

#endif
