/* benchutil.c - percentiles and target lines for benchmarks; see benchutil.h. */
#include "benchutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile(double *samples, size_t n, double p)
{
    if (n == 0) return 0;
    qsort(samples, n, sizeof *samples, cmp_double);
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)rank;
    if (lo + 1 >= n) return samples[n - 1];
    double frac = rank - (double)lo;
    return samples[lo] * (1 - frac) + samples[lo + 1] * frac;
}

int bench_target(const char *name, double measured, const char *goal)
{
    double want = atof(goal + 2);
    int ok = strncmp(goal, ">=", 2) == 0 ? measured >= want : measured <= want;
    printf("target %s %.4g %s %s\n", name, measured, goal, ok ? "ok" : "short");
    fflush(stdout);
    return ok;
}
