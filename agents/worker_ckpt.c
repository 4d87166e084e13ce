/* worker_ckpt.c - the learner's checkpoints: numbered directories that survive a
 * kill at any instant.
 *
 * Invariants: a directory named ckpt-<N> (N = the update counter) exists only with
 * every file fsynced and its completion marker COMPLETE written last; the marker
 * holds the counters as "key value" lines. State machine of one checkpoint:
 *   absent -> ckpt-N.tmp (files written and fsynced, marker last)
 *          -> ckpt-N (renamed; the directory fsynced)      = complete
 *   pruning: ckpt-N -> ckpt-N.del (out of view in one step) -> removed.
 * Readers trust only ckpt-<N> with a parsable marker; *.tmp and *.del left by a
 * crash are swept on the next write. The algorithm's own save is itself atomic
 * (temporary file, fsync, rename). This is the layout of common/durable's
 * checkpoint store, written here until that module is available to workers. */
#include "agents/worker_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALGO_FILE "algo.safetensors"
#define MARKER "COMPLETE"

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Parses "ckpt-<N>" exactly (no suffix); 0 on success. */
static int ckpt_number(const char *name, uint64_t *n)
{
    if (strncmp(name, "ckpt-", 5) != 0 || !name[5]) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(name + 5, &end, 10);
    if (errno || *end) return -1;
    *n = v;
    return 0;
}

static int read_marker(const char *ckdir, wk_counters_t *c)
{
    char p[4200], line[256], key[64];
    snprintf(p, sizeof p, "%s/%s", ckdir, MARKER);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    memset(c, 0, sizeof *c);
    int seen = 0;
    long long v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%63s %lld", key, &v) != 2) continue;
        if (!strcmp(key, "updates")) c->updates = v, seen |= 1;
        else if (!strcmp(key, "version")) c->version = v, seen |= 2;
        else if (!strcmp(key, "env_steps")) c->env_steps = v;
        else if (!strcmp(key, "episodes")) c->episodes = v;
    }
    fclose(f);
    snprintf(p, sizeof p, "%s/%s", ckdir, ALGO_FILE);
    struct stat st;
    if (seen != 3 || stat(p, &st) != 0 || st.st_size == 0) return -1;
    return 0;
}

/* Lists complete checkpoints (ascending) and sweeps leftovers when sweep is set. */
static int list(const char *dir, uint64_t **out, size_t *count, int sweep)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        size_t nl = strlen(e->d_name);
        if (sweep && strncmp(e->d_name, "ckpt-", 5) == 0 &&
            ((nl > 4 && !strcmp(e->d_name + nl - 4, ".tmp")) || (nl > 4 && !strcmp(e->d_name + nl - 4, ".del")))) {
            rm_tree(p);
            continue;
        }
        uint64_t n;
        wk_counters_t c;
        if (ckpt_number(e->d_name, &n) != 0 || read_marker(p, &c) != 0) continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 16;
            uint64_t *g = realloc(*out, cap * sizeof *g);
            if (!g) break;
            *out = g;
        }
        (*out)[(*count)++] = n;
    }
    closedir(d);
    for (size_t i = 1; i < *count; i++) /* insertion sort: a handful of entries */
        for (size_t j = i; j > 0 && (*out)[j - 1] > (*out)[j]; j--) {
            uint64_t t = (*out)[j];
            (*out)[j] = (*out)[j - 1];
            (*out)[j - 1] = t;
        }
    return 0;
}

int wk_ckpt_write(const char *dir, pol_algo_t *a, const wk_counters_t *c, int keep, cr_err_t *err)
{
    int rc = wk_mkdirs(dir, err);
    if (rc) return rc;
    uint64_t *ns;
    size_t count;
    list(dir, &ns, &count, 1);
    uint64_t n = (uint64_t)c->updates;
    for (size_t i = 0; i < count; i++)
        if (ns[i] == n) { /* this state is already checkpointed */
            free(ns);
            return 0;
        }
    free(ns);
    char tmp[4200], fin[4200], p[4300], meta[512];
    snprintf(tmp, sizeof tmp, "%s/ckpt-%" PRIu64 ".tmp", dir, n);
    snprintf(fin, sizeof fin, "%s/ckpt-%" PRIu64, dir, n);
    rm_tree(tmp);
    if (mkdir(tmp, 0755) != 0) return cr_err_set(err, CR_EIO, "mkdir %s: %s", tmp, strerror(errno));
    snprintf(p, sizeof p, "%s/%s", tmp, ALGO_FILE);
    rc = pol_algo_save(a, p, err);
    if (rc) {
        rm_tree(tmp);
        return cr_err_wrap(err, "checkpoint %" PRIu64, n);
    }
    snprintf(meta, sizeof meta, "updates %lld\nversion %lld\nenv_steps %lld\nepisodes %lld\n",
             (long long)c->updates, (long long)c->version, (long long)c->env_steps, (long long)c->episodes);
    snprintf(p, sizeof p, "%s/%s", tmp, MARKER);
    rc = wk_write_file(p, meta, 1, err);
    if (rc == 0 && rename(tmp, fin) != 0) rc = cr_err_set(err, CR_EIO, "rename %s: %s", tmp, strerror(errno));
    if (rc == 0 && fsync_dir(dir) != 0) rc = cr_err_set(err, CR_EIO, "fsync %s: %s", dir, strerror(errno));
    if (rc) {
        rm_tree(tmp);
        return rc;
    }
    /* Keep the newest `keep`: each pruned one leaves view in one rename first. */
    list(dir, &ns, &count, 0);
    for (size_t i = 0; keep > 0 && i + (size_t)keep < count; i++) {
        char old[4200], del[4300];
        snprintf(old, sizeof old, "%s/ckpt-%" PRIu64, dir, ns[i]);
        snprintf(del, sizeof del, "%s.del", old);
        if (rename(old, del) == 0) rm_tree(del);
    }
    free(ns);
    fsync_dir(dir);
    return 0;
}

int wk_ckpt_newest(const char *dir, char *path, size_t cap, wk_counters_t *c, cr_err_t *err)
{
    uint64_t *ns;
    size_t count;
    if (list(dir, &ns, &count, 0) != 0) return cr_err_set(err, CR_EIO, "%s: %s", dir, strerror(errno));
    if (count == 0) {
        free(ns);
        return cr_err_set(err, CR_ENOENT, "%s: no complete checkpoint", dir);
    }
    char ck[4200];
    snprintf(ck, sizeof ck, "%s/ckpt-%" PRIu64, dir, ns[count - 1]);
    free(ns);
    if (read_marker(ck, c) != 0) return cr_err_set(err, CR_ECORRUPT, "%s: unreadable marker", ck);
    snprintf(path, cap, "%s/%s", ck, ALGO_FILE);
    return 0;
}
