/* worker_files.c - the small files workers leave in the experiment directory: the
 * learner's location (learner.where, which env workers poll to find a learner that
 * started or restarted) and the status files the agent forwards. Each is replaced
 * whole by a rename, so a reader sees the old text or the new one, never a mix. */
#include "agents/worker_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int wk_mkdirs(const char *path, cr_err_t *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return cr_err_set(err, CR_EINVAL, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return cr_err_set(err, CR_EIO, "mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return cr_err_set(err, CR_EIO, "mkdir %s: %s", buf, strerror(errno));
    return 0;
}

static int fsync_parent(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int wk_write_file(const char *path, const char *text, int durable, cr_err_t *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return cr_err_set(err, CR_EIO, "create %s: %s", tmp, strerror(errno));
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return cr_err_set(err, e == ENOSPC ? CR_ENOSPC : CR_EIO, "write %s: %s", tmp, strerror(e));
        }
        off += (size_t)n;
    }
    if (durable && fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return cr_err_set(err, CR_EIO, "fsync %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return cr_err_set(err, CR_EIO, "rename %s: %s", path, strerror(e));
    }
    if (durable && fsync_parent(path) != 0) return cr_err_set(err, CR_EIO, "fsync directory of %s", path);
    return 0;
}

int wk_where_write(const char *dir, const wk_where_t *w, cr_err_t *err)
{
    char path[4096], text[512];
    snprintf(path, sizeof path, "%s/learner.where", dir);
    snprintf(text, sizeof text, "node %s\nprocess %" PRIu64 "\naddr %s\ninbound %d\n", w->node, w->process,
             w->addr[0] ? w->addr : "-", w->inbound);
    return wk_write_file(path, text, 1, err);
}

int wk_where_read(const char *dir, wk_where_t *w, cr_err_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/learner.where", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return cr_err_set(err, CR_ENOENT, "%s: no learner has started yet", path);
        return cr_err_set(err, CR_EIO, "%s: %s", path, strerror(errno));
    }
    memset(w, 0, sizeof *w);
    char line[512], key[32], val[WK_STR_MAX];
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%31s %127s", key, val) != 2) continue;
        if (!strcmp(key, "node")) snprintf(w->node, sizeof w->node, "%s", val), seen |= 1;
        else if (!strcmp(key, "process")) w->process = strtoull(val, NULL, 10), seen |= 2;
        else if (!strcmp(key, "addr")) snprintf(w->addr, sizeof w->addr, "%s", strcmp(val, "-") ? val : "");
        else if (!strcmp(key, "inbound")) w->inbound = atoi(val);
    }
    fclose(f);
    if (seen != 3 || !w->process) return cr_err_set(err, CR_ECORRUPT, "%s: node or process missing", path);
    return 0;
}

int wk_where_parse(const char *s, wk_where_t *w, cr_err_t *err)
{
    memset(w, 0, sizeof *w);
    const char *at = strchr(s, '@');
    if (!at && strchr(s, ':') && strlen(s) < sizeof w->addr && s[0] != ':') {
        /* HOST:PORT alone: a learner on a node whose name we do not know, reached
         * by the direct route. */
        snprintf(w->node, sizeof w->node, "remote-learner");
        snprintf(w->addr, sizeof w->addr, "%s", s);
        w->inbound = 1;
        return 0;
    }
    if (!at || at == s || !at[1] || !strchr(at, ':') || (size_t)(at - s) >= sizeof w->node ||
        strlen(at + 1) >= sizeof w->addr)
        return cr_err_set(err, CR_EINVAL, "--learner '%s': expected [NODE@]HOST:PORT", s);
    memcpy(w->node, s, (size_t)(at - s));
    snprintf(w->addr, sizeof w->addr, "%s", at + 1);
    w->inbound = 1;
    return 0;
}
