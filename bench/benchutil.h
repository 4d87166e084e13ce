/* benchutil.h - what every corral benchmark shares: percentiles, and the closing
 * lines a script reads. Each benchmark measures its baseline in the same run and
 * prints figures as ratios; it ends with one line per target:
 *     target NAME MEASURED GOAL ok|short
 */
#ifndef CORRAL_BENCH_BENCHUTIL_H
#define CORRAL_BENCH_BENCHUTIL_H

#include <stddef.h>

/* p-th percentile (0..100) of n samples; sorts the array in place. */
double bench_percentile(double *samples, size_t n, double p);

/* Prints "target NAME MEASURED GOAL ok|short". goal is ">=0.50" or "<=100"; the
 * comparison is read from its first two characters. Returns 1 when met. */
int bench_target(const char *name, double measured, const char *goal);

#endif
