/* gradcheck.h - finite-difference gradient checking shared by the policies tests.
 * A check runs a forward pass through a callback that returns a scalar loss
 * L = sum(r * out) for a fixed random r, perturbs chosen inputs by +-h and compares
 * the central difference with the gradient the backward pass produced. */
#ifndef CORRAL_TESTS_GRADCHECK_H
#define CORRAL_TESTS_GRADCHECK_H

#include "policies/nn/nn.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* ASSERT_OK from harness.h trips -Wmisleading-indentation on this compiler; this
 * one is equivalent. */
#define CHECK_OK(expr, err) do { int _rc = (expr); if (_rc != 0) { \
    fprintf(stderr, "  %s:%d: %s failed: %d %s\n", __FILE__, __LINE__, #expr, _rc, (err)->msg); } \
    CU_ASSERT_EQUAL_FATAL(_rc, 0); } while (0)

typedef double (*gc_loss_fn)(void *ctx);

/* Tolerance: |analytic - numeric| <= tol * max(1e-2, |analytic|, |numeric|) + atol. */
static inline int gc_check(const char *what, float *x, size_t n, const float *analytic,
                           gc_loss_fn loss, void *ctx, float h, double tol)
{
    int bad = 0;
    size_t step = n > 48 ? n / 48 : 1;
    for (size_t i = 0; i < n; i += step) {
        float keep = x[i];
        x[i] = keep + h;
        double lp = loss(ctx);
        x[i] = keep - h;
        double lm = loss(ctx);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * h), an = analytic[i];
        double scale = fmax(1e-2, fmax(fabs(num), fabs(an)));
        if (fabs(num - an) > tol * scale + 2e-4) {
            if (bad < 5)
                fprintf(stderr, "  gradcheck %s[%zu]: analytic %.6g numeric %.6g\n", what, i, an, num);
            bad++;
        }
    }
    loss(ctx);   /* leave the forward state as it was */
    return bad;
}

static inline void gc_fill(nn_rng_t *r, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = nn_rng_normal(r) * scale;
}

static inline double gc_dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static inline float *gc_zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

#endif
