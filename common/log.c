/* log.c - the logger behind log.h.
 * The level and the output descriptor are atomics so the hot path takes no lock;
 * formatting happens into a stack buffer and leaves in one write(2). */
#include "log.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = -1; /* -1: not yet read from the environment */
static _Atomic int log_fd = STDERR_FILENO;

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int cr_log_level_parse(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    if (!s) return -1;
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, names[i]) == 0) return i;
    if (strcasecmp(s, "warning") == 0) return CR_LOG_WARN;
    return -1;
}

cr_log_level_t cr_log_get_level(void)
{
    int lv = atomic_load(&log_level);
    if (lv < 0) {
        lv = cr_log_level_parse(getenv("CORRAL_LOG_LEVEL"));
        if (lv < 0) lv = CR_LOG_INFO;
        atomic_store(&log_level, lv);
    }
    return (cr_log_level_t)lv;
}

void cr_log_set_level(cr_log_level_t level) { atomic_store(&log_level, (int)level); }

int cr_log_open(const char *path)
{
    int fd = STDERR_FILENO;
    if (path) {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) return errno == ENOENT ? CR_ENOENT : CR_EIO;
    }
    int old = atomic_exchange(&log_fd, fd);
    if (old != STDERR_FILENO) close(old);
    return 0;
}

void cr_log(cr_log_level_t level, const char *tag, const char *fmt, ...)
{
    if (level < cr_log_get_level() || level >= CR_LOG_OFF) return;

    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], tag ? tag : "-");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2; /* truncated, still one line */
    line[len++] = '\n';
    ssize_t w = write(atomic_load(&log_fd), line, len);
    (void)w; /* nowhere left to report a failed log write */
}
