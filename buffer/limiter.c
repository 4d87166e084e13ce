/* limiter.c - the samples-per-insert rate limiter, with Reverb's semantics.
 *
 * With spi samples per insert, min_size and error buffer e: sampling waits until
 * min_size items were inserted; after that inserts*spi - samples must stay within
 * [spi*min_size - e, spi*min_size + e]. An insert that would push the difference
 * above the top waits for samples; a sample that would push it below the bottom
 * waits for inserts. spi 0 turns the ratio off (only min_size holds). Inserts that
 * were admitted but are not committed yet count as inserts for admission, so
 * producers cannot overshoot while the writer is busy. */
#include "buffer/internal.h"

void buf_limiter_init(limiter_t *l, const buf_config_t *cfg)
{
    l->spi = cfg->samples_per_insert;
    l->min_size = cfg->min_size < 1 ? 1 : cfg->min_size;
    l->error_buffer = cfg->error_buffer;
    l->inserts = l->samples = l->pending = l->preloaded = 0;
}

int buf_limiter_can_insert(const limiter_t *l, int64_t n)
{
    int64_t ins = l->inserts + l->pending + n;
    if (l->spi <= 0 || ins <= l->min_size) return 1;
    double max_diff = l->spi * (double)l->min_size + l->error_buffer;
    return (double)ins * l->spi - (double)l->samples <= max_diff;
}

int buf_limiter_can_sample(const limiter_t *l, int64_t n)
{
    if (l->inserts + l->preloaded < l->min_size) return 0;
    if (l->spi <= 0) return 1;
    double min_diff = l->spi * (double)l->min_size - l->error_buffer;
    return (double)l->inserts * l->spi - (double)(l->samples + n) >= min_diff;
}
