/* report.c - what the built-in algorithms say in the log beyond their metrics:
 * skipped non-finite steps, rate-limited so a diverging run shows up in the log
 * without flooding it. */
#include "policies/algos/algo.h"
#include "common/log.h"

void pol_warn_skips(const char *algo, uint64_t before, uint64_t now)
{
    for (uint64_t k = before + 1; k <= now; k++)
        if ((k & (k - 1)) == 0) {
            CR_WARN("policies", "%s: non-finite loss or gradient, step skipped (%llu skipped so far)", algo,
                    (unsigned long long)now);
            return;
        }
}
