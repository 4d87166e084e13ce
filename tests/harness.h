/* harness.h - the one test registry every CUnit suite in corral goes through.
 *
 * A test file lists its cases in a table and calls test_main; the harness runs
 * them with CUnit's basic interface (its run summary is printed), supports
 * skipping with a reason (a test that cannot run here must say so, never pass
 * silently), and ends with a machine-readable line the runner sums up:
 *     CORRAL-RESULT suite=<name> passed=N failed=N skipped=N
 */
#ifndef CORRAL_TESTS_HARNESS_H
#define CORRAL_TESTS_HARNESS_H

#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

typedef struct test_case {
    const char *name;
    void (*fn)(void);
} test_case_t;

/* Runs every case (or those named on the command line); returns the exit status. */
int test_main(const char *suite, const test_case_t *cases, int argc, char **argv);

/* Marks the running test skipped with a reason; the test should return after it. */
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TEST_SKIP_IF(cond, ...) \
    do { if (cond) { test_skip(__VA_ARGS__); return; } } while (0)

/* Assertions that print both values on failure (CUnit's print neither). */
#define ASSERT_INT_EQ(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a != _b) fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", \
                          __FILE__, __LINE__, #a, _a, #b, _b); \
    CU_ASSERT_EQUAL_FATAL(_a, _b); } while (0)
#define ASSERT_STR_EQ(a, b) do { const char *_a = (a), *_b = (b); \
    if (!_a || !_b || strcmp(_a, _b) != 0) fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", \
                          __FILE__, __LINE__, #a, _a ? _a : "(null)", _b ? _b : "(null)"); \
    CU_ASSERT_FATAL(_a && _b && strcmp(_a, _b) == 0); } while (0)
#define ASSERT_TRUE(c) do { int _c = !!(c); if (!_c) fprintf(stderr, "  %s:%d: expected %s\n", \
    __FILE__, __LINE__, #c); CU_ASSERT_FATAL(_c); } while (0)
#define ASSERT_OK(expr, err) do { int _rc = (expr); if (_rc != 0) { \
    fprintf(stderr, "  %s:%d: %s failed: %d %s\n", __FILE__, __LINE__, #expr, _rc, (err)->msg); } \
    CU_ASSERT_EQUAL_FATAL(_rc, 0); } while (0)
#define ASSERT_NEAR(a, b, tol) do { double _a = (a), _b = (b); \
    if (!(_a - _b <= (tol) && _b - _a <= (tol))) fprintf(stderr, "  %s:%d: %s == %g, expected %g +- %g\n", \
    __FILE__, __LINE__, #a, _a, _b, (double)(tol)); CU_ASSERT_FATAL(_a - _b <= (tol) && _b - _a <= (tol)); } while (0)
/* Every macro above evaluates its arguments exactly once. */

/* A fresh empty directory under $TMPDIR (or /tmp) for this test; removed at exit
 * unless CORRAL_KEEP_TMP is set. Returns a pointer into static storage. */
const char *test_tmpdir(void);

/* $CORRAL_SOURCE_DIR/rel, for test data such as configs/; static storage. */
const char *test_source_path(const char *rel);
/* $CORRAL_BUILD_DIR/rel, e.g. the corral binary; static storage. */
const char *test_build_path(const char *rel);

#endif
