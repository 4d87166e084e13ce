/* rng.c - deterministic random numbers (xoshiro256**, seeded by splitmix64) and
 * weight initialisation. The generator's whole state is four words, so a
 * checkpoint restores it exactly; the normal sampler keeps no cached value for
 * the same reason. */
#include "policies/nn/nn.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void nn_rng_seed(nn_rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nn_rng_u64(nn_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

float nn_rng_uniform(nn_rng_t *r)
{
    return (float)(nn_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

/* Box-Muller from two raw draws */
static float normal_of(uint64_t a, uint64_t b)
{
    /* u1 in (0, 1] so the log is finite */
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

float nn_rng_normal(nn_rng_t *r)
{
    uint64_t a = nn_rng_u64(r);
    return normal_of(a, nn_rng_u64(r));
}

typedef struct normals_job {
    float *out;
    const uint64_t *raw;
    size_t n;
    int parts;
} normals_job_t;

static void normals_task(void *arg, int i)
{
    normals_job_t *j = arg;
    size_t lo = j->n * (size_t)i / (size_t)j->parts, hi = j->n * (size_t)(i + 1) / (size_t)j->parts;
    for (size_t k = lo; k < hi; k++) j->out[k] = normal_of(j->raw[2 * k], j->raw[2 * k + 1]);
}

void nn_rng_normals(nn_rng_t *r, float *out, size_t n, uint64_t *raw, nn_pool_t *pool)
{
    /* the draws in order (cheap), the logs and cosines across the lanes */
    for (size_t k = 0; k < 2 * n; k++) raw[k] = nn_rng_u64(r);
    normals_job_t j = {out, raw, n, n >= 1024 ? nn_pool_lanes(pool) : 1};   /* a few: not worth a fork */
    nn_pool_run(pool, j.parts, normals_task, &j);
}

uint32_t nn_rng_below(nn_rng_t *r, uint32_t n)
{
    return (uint32_t)(((nn_rng_u64(r) >> 32) * (uint64_t)n) >> 32);
}

void nn_init_uniform(nn_rng_t *r, float *x, size_t N, float bound)
{
    for (size_t i = 0; i < N; i++) x[i] = (2.0f * nn_rng_uniform(r) - 1.0f) * bound;
}

void nn_init_normal(nn_rng_t *r, float *x, size_t N, float stddev)
{
    for (size_t i = 0; i < N; i++) x[i] = nn_rng_normal(r) * stddev;
}

void nn_init_linear(nn_rng_t *r, float *w, float *bias, int fan_in, size_t Nw, size_t Nb)
{
    float bound = 1.0f / sqrtf((float)fan_in);
    nn_init_uniform(r, w, Nw, bound);
    if (bias) nn_init_uniform(r, bias, Nb, bound);
}
