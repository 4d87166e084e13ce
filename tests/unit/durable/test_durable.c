/* test_durable.c - atomic files and the checkpoint store, including a child process
 * SIGKILLed at every step of every write sequence, after which the parent reopens
 * the store and checks that the newest complete checkpoint is intact. */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "common/durable.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Deterministic content of file f of checkpoint n, so a reader can tell whole
 * from torn: size depends on n, bytes on n and f. */
static size_t content(uint64_t n, int f, char *buf, size_t cap)
{
    size_t len = 1000 + (size_t)(n % 7) * 3001 + (size_t)f * 17;
    if (len > cap) len = cap;
    for (size_t i = 0; i < len; i++) buf[i] = (char)((n * 31 + (uint64_t)f * 7 + i) & 0xff);
    return len;
}

static char big[64 * 1024];

static int write_ckpt(cr_ckpt_store_t *st, uint64_t n, cr_err_t *err)
{
    cr_ckpt_writer_t *w;
    int rc = cr_ckpt_begin(st, n, &w, err);
    if (rc != 0) return rc;
    for (int f = 0; f < 3; f++) {
        char name[32];
        snprintf(name, sizeof name, "part%d.bin", f);
        size_t len = content(n, f, big, sizeof big);
        if (f == 2) { /* the path a safetensors writer would use */
            FILE *fp = fopen(cr_ckpt_file_path(w, name), "wb");
            if (!fp || fwrite(big, 1, len, fp) != len) abort();
            fclose(fp);
            rc = cr_ckpt_adopt(w, name, err);
        } else {
            rc = cr_ckpt_add(w, name, big, len, err);
        }
        if (rc != 0) {
            cr_ckpt_abort(w);
            return rc;
        }
    }
    char meta[64];
    snprintf(meta, sizeof meta, "{\"updates\": %" PRIu64 "}", n);
    return cr_ckpt_commit(w, meta, err);
}

/* Checks checkpoint n's bytes against content(). */
static void check_content(const char *dir, uint64_t n)
{
    for (int f = 0; f < 3; f++) {
        char path[4300], *data;
        size_t len;
        cr_err_t err = {0};
        snprintf(path, sizeof path, "%s/part%d.bin", dir, f);
        ASSERT_OK(cr_read_file(path, 1 << 20, &data, &len, &err), &err);
        size_t want = content(n, f, big, sizeof big);
        ASSERT_INT_EQ(len, want);
        ASSERT_TRUE(memcmp(data, big, len) == 0);
        free(data);
    }
}

static void test_atomic_write_and_read(void)
{
    cr_err_t err = {0};
    char path[4300];
    snprintf(path, sizeof path, "%s/a/b/c.txt", test_tmpdir());
    ASSERT_INT_EQ(cr_durable_write(path, "x", 1, 0644, &err), CR_ENOENT); /* no parent */
    char dir[4300];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    ASSERT_OK(cr_mkdir_p(dir, 0755, &err), &err);
    ASSERT_OK(cr_mkdir_p(dir, 0755, &err), &err); /* idempotent */
    ASSERT_OK(cr_durable_write(path, "hello", 5, 0600, &err), &err);
    ASSERT_OK(cr_durable_write(path, "bye", 3, 0600, &err), &err);
    char *data;
    size_t len;
    ASSERT_OK(cr_read_file(path, 100, &data, &len, &err), &err);
    ASSERT_INT_EQ(len, 3);
    ASSERT_STR_EQ(data, "bye");
    free(data);
    ASSERT_INT_EQ(cr_read_file(path, 2, &data, &len, &err), CR_ETOOBIG);
    ASSERT_TRUE(strstr(err.msg, "more than the 2 allowed") != NULL);
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ASSERT_TRUE(access(tmp, F_OK) != 0);
    /* A file where a directory should be is a clear error. */
    ASSERT_INT_EQ(cr_mkdir_p(path, 0755, &err), CR_EEXIST);
}

static void test_ckpt_basics(void)
{
    cr_err_t err = {0};
    cr_ckpt_store_t *st;
    uint64_t n;
    char dir[4096];
    ASSERT_OK(cr_ckpt_open(test_tmpdir(), &st, &err), &err);
    ASSERT_INT_EQ(cr_ckpt_newest(st, 1, &n, dir, &err), CR_ENOENT);
    for (uint64_t i = 1; i <= 5; i++) ASSERT_OK(write_ckpt(st, i * 100, &err), &err);
    ASSERT_OK(cr_ckpt_newest(st, 1, &n, dir, &err), &err);
    ASSERT_INT_EQ(n, 500);
    check_content(dir, 500);
    char *meta;
    ASSERT_OK(cr_ckpt_meta(st, 300, &meta, &err), &err);
    ASSERT_STR_EQ(meta, "{\"updates\": 300}");
    free(meta);
    /* Numbers only go up. */
    ASSERT_INT_EQ(write_ckpt(st, 500, &err), CR_EEXIST);
    ASSERT_INT_EQ(write_ckpt(st, 200, &err), CR_EEXIST);
    /* Bad names are refused. */
    cr_ckpt_writer_t *w;
    ASSERT_OK(cr_ckpt_begin(st, 600, &w, &err), &err);
    ASSERT_INT_EQ(cr_ckpt_add(w, "../escape", "x", 1, &err), CR_EINVAL);
    ASSERT_INT_EQ(cr_ckpt_add(w, CR_CKPT_MARKER, "x", 1, &err), CR_EINVAL);
    ASSERT_OK(cr_ckpt_add(w, "a", "x", 1, &err), &err);
    ASSERT_INT_EQ(cr_ckpt_add(w, "a", "x", 1, &err), CR_EEXIST);
    cr_ckpt_abort(w);
    ASSERT_OK(cr_ckpt_newest(st, 1, &n, NULL, &err), &err);
    ASSERT_INT_EQ(n, 500);
    /* Keep the newest two. */
    ASSERT_OK(cr_ckpt_prune(st, 2, &err), &err);
    uint64_t *ns;
    size_t count;
    ASSERT_OK(cr_ckpt_list(st, &ns, &count, &err), &err);
    ASSERT_INT_EQ(count, 2);
    ASSERT_INT_EQ(ns[0], 400);
    ASSERT_INT_EQ(ns[1], 500);
    free(ns);
    ASSERT_INT_EQ(cr_ckpt_prune(st, 0, &err), CR_EINVAL);
    cr_ckpt_close(st);
}

static void test_ckpt_damage_is_skipped(void)
{
    cr_err_t err = {0};
    cr_ckpt_store_t *st;
    uint64_t n;
    char dir[4096], path[4300];
    const char *root = test_tmpdir();
    cr_log_set_level(CR_LOG_ERROR); /* the skips below are logged as warnings */
    ASSERT_OK(cr_ckpt_open(root, &st, &err), &err);
    ASSERT_OK(write_ckpt(st, 1, &err), &err);
    ASSERT_OK(write_ckpt(st, 2, &err), &err);
    ASSERT_OK(write_ckpt(st, 3, &err), &err);
    /* 3: flip one byte (same size): only a verifying reader notices. */
    ASSERT_OK(cr_ckpt_newest(st, 0, &n, dir, &err), &err);
    ASSERT_INT_EQ(n, 3);
    snprintf(path, sizeof path, "%s/part1.bin", dir);
    FILE *f = fopen(path, "r+b");
    ASSERT_TRUE(f != NULL);
    fseek(f, 10, SEEK_SET);
    fputc(0x5a ^ fgetc(f), f);
    fclose(f);
    ASSERT_INT_EQ(cr_ckpt_verify(st, 3, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "part1.bin does not match its hash") != NULL);
    ASSERT_OK(cr_ckpt_newest(st, 1, &n, dir, &err), &err);
    ASSERT_INT_EQ(n, 2);
    /* 2: truncate a file: even the cheap check notices. */
    snprintf(path, sizeof path, "%s/part0.bin", dir);
    ASSERT_INT_EQ(truncate(path, 10), 0);
    ASSERT_OK(cr_ckpt_newest(st, 0, &n, dir, &err), &err);
    ASSERT_INT_EQ(n, 3);
    ASSERT_OK(cr_ckpt_newest(st, 1, &n, dir, &err), &err);
    ASSERT_INT_EQ(n, 1);
    /* 1: garbage marker. */
    snprintf(path, sizeof path, "%s/%s", dir, CR_CKPT_MARKER);
    ASSERT_OK(cr_durable_write(path, "corral-checkpoint 1 1 9", 23, 0644, &err), &err);
    ASSERT_INT_EQ(cr_ckpt_verify(st, 1, &err), CR_ECORRUPT);
    ASSERT_INT_EQ(cr_ckpt_verify(st, 77, &err), CR_ENOENT);
    /* A stray directory with a checkpoint's name but no marker is ignored. */
    snprintf(path, sizeof path, "%s/ckpt-9", root);
    ASSERT_INT_EQ(mkdir(path, 0755), 0);
    ASSERT_OK(cr_ckpt_newest(st, 0, &n, NULL, &err), &err);
    ASSERT_INT_EQ(n, 3);
    cr_ckpt_close(st);
    cr_log_set_level(CR_LOG_INFO);
}

/* ---- crash at every step ------------------------------------------------------ */

static int crash_at, steps_seen;

static void crash_hook(const char *stepname, void *ud)
{
    (void)stepname;
    (void)ud;
    if (++steps_seen == crash_at) raise(SIGKILL);
}

/* Runs fn in a child that SIGKILLs itself at hook step k; returns 1 if the child
 * was killed, 0 if it ran to the end (so k is past the last step). */
static int run_crashing(int k, void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        crash_at = k;
        steps_seen = 0;
        cr_log_set_level(CR_LOG_OFF);
        cr_durable_set_hook(crash_hook, NULL);
        fn(arg);
        _exit(0); /* not exit(): the harness's atexit would remove the tmpdir */
    }
    int status;
    ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status)) {
        ASSERT_INT_EQ(WTERMSIG(status), SIGKILL);
        return 1;
    }
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_INT_EQ(WEXITSTATUS(status), 0);
    return 0;
}

static void child_checkpoint(void *arg)
{
    const char *root = arg;
    cr_err_t err = {0};
    cr_ckpt_store_t *st;
    uint64_t n = 0;
    if (cr_ckpt_open(root, &st, &err) != 0) _exit(3);
    if (cr_ckpt_newest(st, 0, &n, NULL, &err) != 0) _exit(4);
    if (write_ckpt(st, n + 1, &err) != 0) _exit(5);
    if (cr_ckpt_prune(st, 2, &err) != 0) _exit(6);
    cr_ckpt_close(st);
}

static void test_ckpt_crash_every_step(void)
{
    const char *root = test_tmpdir();
    cr_err_t err = {0};
    cr_ckpt_store_t *st;
    ASSERT_OK(cr_ckpt_open(root, &st, &err), &err);
    ASSERT_OK(write_ckpt(st, 1, &err), &err);
    ASSERT_OK(write_ckpt(st, 2, &err), &err);
    cr_ckpt_close(st);
    uint64_t expect = 2;
    int crashes = 0;
    for (int k = 1; k < 100; k++) {
        int crashed = run_crashing(k, child_checkpoint, (void *)root);
        /* Reopen like a restarted learner and check the newest is whole. */
        uint64_t n;
        char dir[4096];
        ASSERT_OK(cr_ckpt_open(root, &st, &err), &err);
        ASSERT_OK(cr_ckpt_newest(st, 1, &n, dir, &err), &err);
        ASSERT_TRUE(n == expect || n == expect + 1);
        check_content(dir, n);
        uint64_t *ns;
        size_t count;
        ASSERT_OK(cr_ckpt_list(st, &ns, &count, &err), &err);
        ASSERT_TRUE(count >= 2); /* pruning never takes the store below keep */
        for (size_t i = 0; i < count; i++) ASSERT_OK(cr_ckpt_verify(st, ns[i], &err), &err);
        free(ns);
        cr_ckpt_close(st);
        expect = n;
        if (!crashed) break;
        crashes++;
    }
    /* begin, 3 x (written, synced), marker written/synced, renamed, committed,
     * at least one prune pair: the sequence has this many crash points. */
    ASSERT_TRUE(crashes >= 12);
    /* No leftovers after the final clean open. */
    ASSERT_OK(cr_ckpt_open(root, &st, &err), &err);
    cr_ckpt_close(st);
}

static void child_write(void *arg)
{
    cr_err_t err = {0};
    if (cr_durable_write(arg, "new contents, longer than the old", 33, 0644, &err) != 0) _exit(3);
}

static void test_atomic_write_crash_every_step(void)
{
    char path[4300];
    cr_err_t err = {0};
    snprintf(path, sizeof path, "%s/state.json", test_tmpdir());
    int crashes = 0;
    for (int k = 1; k < 20; k++) {
        ASSERT_OK(cr_durable_write(path, "old", 3, 0644, &err), &err);
        int crashed = run_crashing(k, child_write, path);
        char *data;
        ASSERT_OK(cr_read_file(path, 100, &data, NULL, &err), &err);
        ASSERT_TRUE(strcmp(data, "old") == 0 || strcmp(data, "new contents, longer than the old") == 0);
        if (!crashed) ASSERT_STR_EQ(data, "new contents, longer than the old");
        free(data);
        if (!crashed) break;
        crashes++;
    }
    ASSERT_INT_EQ(crashes, 5);
}

static void test_fnv(void)
{
    ASSERT_TRUE(cr_fnv64(CR_FNV64_INIT, "", 0) == 0xcbf29ce484222325ULL);
    ASSERT_TRUE(cr_fnv64(CR_FNV64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
    /* Chaining equals hashing the concatenation. */
    ASSERT_TRUE(cr_fnv64(cr_fnv64(CR_FNV64_INIT, "ab", 2), "cd", 2) ==
                cr_fnv64(CR_FNV64_INIT, "abcd", 4));
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"atomic_write_and_read", test_atomic_write_and_read},
        {"fnv", test_fnv},
        {"ckpt_basics", test_ckpt_basics},
        {"ckpt_damage_is_skipped", test_ckpt_damage_is_skipped},
        {"ckpt_crash_every_step", test_ckpt_crash_every_step},
        {"atomic_write_crash_every_step", test_atomic_write_crash_every_step},
        {NULL, NULL},
    };
    return test_main("durable", cases, argc, argv);
}
