/* harness.c - CUnit runner with skips and a summary line; see harness.h. */
#define _GNU_SOURCE
#include "harness.h"

#include <CUnit/Basic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int skipped_total;
static const char *suite_now;
static char tmp_root[4096];

void test_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    CU_pTest t = CU_get_current_test();
    fprintf(stdout, "\n  SKIPPED %s/%s: ", suite_now ? suite_now : "?", t ? t->pName : "?");
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
    /* CUnit's basic runner installs its own start/complete handlers, so skips are
     * counted here, once per test however often it calls test_skip. */
    static CU_pTest last_skipped;
    if (t != last_skipped) {
        last_skipped = t;
        skipped_total++;
    }
}


static void remove_tmp(void)
{
    if (tmp_root[0] && !getenv("CORRAL_KEEP_TMP")) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
        if (system(cmd) != 0) fprintf(stderr, "harness: could not remove %s\n", tmp_root);
    }
}

const char *test_tmpdir(void)
{
    static char path[4200];
    static int seq;
    if (!tmp_root[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmp_root, sizeof tmp_root, "%s/corral-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmp_root)) { perror("mkdtemp"); abort(); }
        atexit(remove_tmp);
    }
    snprintf(path, sizeof path, "%s/t%d", tmp_root, ++seq);
    if (mkdir(path, 0755) != 0) { perror("mkdir"); abort(); }
    return path;
}

static const char *env_path(const char *var, const char *fallback, const char *rel)
{
    static char path[2][4200];
    static int which;
    const char *base = getenv(var);
    which ^= 1;
    snprintf(path[which], sizeof path[which], "%s/%s", base && *base ? base : fallback, rel);
    return path[which];
}

const char *test_source_path(const char *rel) { return env_path("CORRAL_SOURCE_DIR", ".", rel); }
const char *test_build_path(const char *rel) { return env_path("CORRAL_BUILD_DIR", "build", rel); }

/* Every test binary leads its own process group, so that what its tests start
 * (daemons, stand-in workers, peers) can be stopped together when it ends, even
 * when a failed assertion or a crash skipped a test's own clean-up: otherwise an
 * orphan keeps ctest's output pipe open and outlives the run. */
static void stop_group(void)
{
    if (getpgrp() != getpid()) return;
    signal(SIGTERM, SIG_IGN);
    kill(-getpid(), SIGTERM);
}

static void on_fatal(int sig)
{
    stop_group();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void lead_process_group(void)
{
    if (setpgid(0, 0) != 0) return;   /* already a session leader: leave it be */
    atexit(stop_group);
    /* Only where nobody handles the signal yet: a sanitizer's own handlers
     * must keep printing their reports. */
    const int fatal[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) {
        struct sigaction old;
        if (sigaction(fatal[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
            signal(fatal[i], on_fatal);
    }
}

int test_main(const char *suite_name, const test_case_t *cases, int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    lead_process_group();
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    suite_now = suite_name;
    CU_pSuite suite = CU_add_suite(suite_name, NULL, NULL);
    for (const test_case_t *c = cases; c->name; c++) {
        int want = argc < 2;
        for (int i = 1; i < argc; i++)
            if (strcmp(argv[i], c->name) == 0) want = 1;
        if (want) CU_add_test(suite, c->name, c->fn);
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned ran = CU_get_number_of_tests_run();
    unsigned failed = CU_get_number_of_tests_failed();
    unsigned passed = ran - failed - (unsigned)skipped_total;
    printf("\nCORRAL-RESULT suite=%s passed=%u failed=%u skipped=%d\n", suite_name, passed, failed,
           skipped_total);
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
