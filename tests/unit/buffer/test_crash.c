/* test_crash.c - the crash-recovery contract under real SIGKILLs.
 *
 * A writer child process (fork) opens the buffer, recovers it, and streams steps of
 * two producers with asynchronous puts; each acknowledgement is reported to the
 * parent through a pipe as it arrives. The parent kills the child with SIGKILL at a
 * random moment (during recovery, mid-commit, between commits), 50 times. After each
 * kill it checks, behind the buffer's back, that every acknowledged (producer, seq) is
 * stored exactly once and that PRAGMA integrity_check passes, then reopens the buffer
 * itself: unfinished episodes must come back truncated and every stored step must be
 * indexed, and chunks sampled from the recovered buffer must stay inside one episode,
 * run over consecutive steps and be padded only where the episode's stored rows end.
 * Each new child resends from a little before the last acknowledgement, as an
 * at-least-once producer does, so duplicates arrive all the time (and resumes the
 * episodes the kill cut short). */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "tests/unit/buffer/bufutil.h"
#include "common/time.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define KILLS 50
#define PRODUCERS 2
#define EP_LEN 40
#define MAX_SEQ 200000

static buf_layout_t layout(void)
{
    buf_layout_t l = {.n_proprio = 1, .proprio_dim = {8}, .act_dim = 2};
    return l;
}

typedef struct ackmsg { uint64_t producer, seq; } ackmsg_t;
static int ack_fd;

static void report(void *ctx, const buf_ack_t *a)
{
    (void)ctx;
    if (a->status) return;
    ackmsg_t m = {a->producer, a->seq};
    if (write(ack_fd, &m, sizeof m) != sizeof m) _exit(9);
}

/* Step seq of producer p is a pure function of (p, seq), so a resend is identical. */
static void child(const char *path, const uint64_t *from)
{
    buf_layout_t l = layout();
    buf_config_t c;
    buf_config_default(&c);
    c.commit_window_us = 2000;
    c.cache_bytes = 1 << 20;
    c.max_batch_rows = 256;          /* many commits per life, so kills land mid-commit */
    c.max_pending_bytes = 256 << 10; /* producers feel back-pressure */
    cr_err_t err = {0};
    buf_t *b;
    if (buf_open(path, &l, &c, &b, &err)) {
        fprintf(stderr, "child: %s\n", err.msg);
        _exit(3);
    }
    float prop[8] = {0}, act[2] = {0};
    uint64_t seq[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++) seq[p] = from[p];
    for (;;) {
        for (int p = 0; p < PRODUCERS; p++) {
            uint64_t s = seq[p]++;
            prop[0] = (float)p;
            prop[1] = (float)s;
            act[0] = (float)s;
            buf_step_t st = {.producer = (uint64_t)p + 1, .seq = s, .episode = s / EP_LEN,
                             .source = BUF_SRC_ONLINE, .proprio = prop,
                             .action = s % EP_LEN == EP_LEN - 1 ? NULL : act, .reward = 1,
                             .done = s % EP_LEN == EP_LEN - 2, .policy_version = (int64_t)s};
            if (buf_put(b, &st, report, NULL, -1, &err)) {
                fprintf(stderr, "child: put: %s\n", err.msg);
                _exit(4);
            }
        }
        if (seq[0] > MAX_SEQ) break;
    }
    buf_close(b);
    _exit(0);
}

#define CHUNK 4

/* Chunks of CHUNK sampled after a recovery: rows of one producer's episode (prop[0],
 * seq / EP_LEN), consecutive seqs, action from the same row; a padded row repeats
 * the one before, and padding starts only after the episode's last stored
 * transition: into its final row, or the newest row the kill left (stored marks
 * what the database holds). Returns the chunks padded at a cut-short end. */
static int check_recovered_chunks(const buf_batch_t *bt, uint8_t stored[][MAX_SEQ + 1024])
{
    int cut = 0;
    for (int c = 0; c < bt->size / CHUNK; c++) {
        const float *o0 = bt->obs + (size_t)c * CHUNK * 8;
        int p = (int)o0[0];
        uint64_t s0 = (uint64_t)o0[1];
        ASSERT_TRUE(p >= 0 && p < PRODUCERS);
        for (int k = 0; k < CHUNK; k++) {
            int i = c * CHUNK + k;
            const float *o = bt->obs + (size_t)i * 8;
            ASSERT_NEAR(o[0], (float)p, 0);
            ASSERT_NEAR(bt->action[i * 2], o[1], 0);
            ASSERT_NEAR(bt->next_obs[(size_t)i * 8 + 1], o[1] + 1, 0);
            if (!bt->pad[i]) {
                ASSERT_NEAR(o[1], (float)(s0 + (uint64_t)k), 0);
                ASSERT_INT_EQ((uint64_t)o[1] / EP_LEN, s0 / EP_LEN);
                ASSERT_TRUE(k == 0 || !bt->pad[i - 1]);
                continue;
            }
            ASSERT_TRUE(k > 0 && memcmp(o, o - 8, 8 * sizeof(float)) == 0);
            if (bt->pad[i - 1]) continue;
            uint64_t s = (uint64_t)o[1];   /* the last transition: s -> s + 1 */
            int final = (s + 1) % EP_LEN == EP_LEN - 1;
            ASSERT_TRUE(final || !stored[p][s + 2]);
            cut += !final;
        }
    }
    return cut;
}

static void test_sigkill_writer(void)
{
    const char *path;
    static char pbuf[4300];
    snprintf(pbuf, sizeof pbuf, "%s/crash.db", test_tmpdir());
    path = pbuf;
    static uint8_t acked[PRODUCERS][MAX_SEQ + 1024];
    int64_t max_acked[PRODUCERS] = {-1, -1};
    uint64_t total_acked = 0;
    int64_t chunks = 0, cut = 0;
    srand(12345);
    for (int round = 0; round < KILLS; round++) {
        uint64_t from[PRODUCERS];
        for (int p = 0; p < PRODUCERS; p++) {
            int64_t f = max_acked[p] - 15;  /* resend a few: at-least-once */
            from[p] = f < 0 ? 0 : (uint64_t)f;
        }
        int fd[2];
        ASSERT_INT_EQ(pipe(fd), 0);
        pid_t pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
            close(fd[0]);
            ack_fd = fd[1];
            child(path, from);
        }
        close(fd[1]);
        /* Early kills land in open/recovery, later ones in the middle of commits. */
        int delay_ms = round < 5 ? rand() % 10 : 5 + rand() % 120;
        cr_sleep_ns(delay_ms * CR_NS_PER_MS);
        kill(pid, SIGKILL);
        int status;
        ASSERT_INT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        ackmsg_t m;
        ssize_t r;
        while ((r = read(fd[0], &m, sizeof m)) == sizeof m) {
            ASSERT_TRUE(m.producer >= 1 && m.producer <= PRODUCERS && m.seq < MAX_SEQ + 1024);
            int p = (int)m.producer - 1;
            if (!acked[p][m.seq]) total_acked++;
            acked[p][m.seq] = 1;
            if ((int64_t)m.seq > max_acked[p]) max_acked[p] = (int64_t)m.seq;
        }
        close(fd[0]);

        /* Killed before the file was created (possible in any of the early rounds,
         * whose kills land in open): nothing can have been acked. */
        if (access(path, F_OK) != 0) {
            ASSERT_INT_EQ(total_acked, 0);
            continue;
        }
        ASSERT_TRUE(tu_integrity_ok(path));
        /* Killed before the schema was committed: nothing can have been acked. */
        if (tu_query(path, "SELECT count(*) FROM sqlite_master") <= 0) {
            ASSERT_INT_EQ(total_acked, 0);
            continue;
        }
        /* Every acknowledged step is stored exactly once. */
        sqlite3 *db;
        ASSERT_INT_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_stmt *st;
        ASSERT_INT_EQ(sqlite3_prepare_v2(db, "SELECT producer, seq, count(*) FROM steps GROUP BY producer, seq",
                                         -1, &st, NULL), SQLITE_OK);
        static uint8_t stored[PRODUCERS][MAX_SEQ + 1024];
        memset(stored, 0, sizeof stored);
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t p = sqlite3_column_int64(st, 0) - 1, s = sqlite3_column_int64(st, 1);
            ASSERT_TRUE(p >= 0 && p < PRODUCERS && s >= 0 && s < MAX_SEQ + 1024);
            ASSERT_INT_EQ(sqlite3_column_int64(st, 2), 1);
            stored[p][s] = 1;
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        for (int p = 0; p < PRODUCERS; p++)
            for (int64_t s = 0; s <= max_acked[p]; s++)
                if (acked[p][s] && !stored[p][s]) {
                    fprintf(stderr, "  round %d: acknowledged step %d/%lld is lost\n", round, p + 1, (long long)s);
                    ASSERT_TRUE(0);
                }
        ASSERT_TRUE(tu_integrity_ok(path));
        /* Recovery in this process: truncation marks and a complete index. */
        if (round % 5 == 4) {
            buf_layout_t l = layout();
            buf_config_t c;
            buf_config_default(&c);
            cr_err_t err = {0};
            buf_t *b;
            ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
            buf_counters_t k;
            buf_counters(b, &k);
            buf_close(b);
            ASSERT_INT_EQ(tu_query(path, "SELECT count(*) FROM episodes WHERE ended=0 AND truncated=0"), 0);
            ASSERT_INT_EQ(k.inserts, tu_query(path, "SELECT count(*) FROM steps WHERE action IS NOT NULL"));
            /* Transitions: rows with an action followed by a row of the same episode. */
            ASSERT_INT_EQ(k.transitions[0], tu_query(path,
                "SELECT count(*) FROM (SELECT action IS NOT NULL AS a, lead(t) OVER "
                "(PARTITION BY episode ORDER BY t) AS nt, t FROM steps) WHERE a AND nt = t + 1"));
            /* Chunks from the recovered buffer, most of them read from SQLite. */
            if (k.transitions[0] > 0) {
                c.chunk = CHUNK;
                c.cache_bytes = 64 * 56;
                ASSERT_OK(buf_open(path, &l, &c, &b, &err), &err);
                buf_batch_t *bt;
                ASSERT_OK(buf_batch_create(b, 256, &bt, &err), &err);
                for (int rep = 0; rep < 20; rep++) {
                    ASSERT_OK(buf_sample(b, bt, 5000, &err), &err);
                    cut += check_recovered_chunks(bt, stored);
                    chunks += bt->size / CHUNK;
                }
                buf_batch_destroy(bt);
                buf_close(b);
            }
        }
    }
    printf("  %d kills, %llu acknowledged steps, %lld/%lld max seq; %lld chunks sampled after recovery, "
           "%lld padded where a kill cut the episode\n", KILLS, (unsigned long long)total_acked,
           (long long)max_acked[0], (long long)max_acked[1], (long long)chunks, (long long)cut);
    ASSERT_TRUE(total_acked > 1000);
    ASSERT_TRUE(chunks > 0);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"sigkill_writer", test_sigkill_writer},
        {NULL, NULL}};
    return test_main("buffer_crash", cases, argc, argv);
}
