/* durable.c - atomic file replacement and the checkpoint store; see durable.h.
 *
 * Invariants of a store directory (each holds after every single system call, so
 * a SIGKILL or power cut anywhere leaves a readable store):
 *   - `ckpt-<N>` exists only after its files and its marker were fsynced inside
 *     `ckpt-<N>.tmp` and the rename made it visible; the rename is the commit.
 *   - a `ckpt-<N>` that lacks a valid marker, or whose files do not match it, is
 *     never returned (corruption from outside is an error, never an assert).
 *   - pruning renames `ckpt-<N>` to `ckpt-<N>.del` before deleting anything, so a
 *     half-deleted checkpoint is never in view.
 * The marker format, one field per line:
 *     corral-checkpoint 1 <N> <file count> <meta bytes>
 *     <size> <fnv64 hex> <name>          (one line per file)
 *     <meta bytes>\nend\n */
#define _GNU_SOURCE
#include "common/durable.h"
#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_MAX_LEN 4096
#define MARKER_MAX (1 << 20)

static cr_durable_hook_fn hook_fn;
static void *hook_ud;

void cr_durable_set_hook(cr_durable_hook_fn fn, void *ud)
{
    hook_fn = fn;
    hook_ud = ud;
}

static void step(const char *name)
{
    if (hook_fn) hook_fn(name, hook_ud);
}

uint64_t cr_fnv64(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int errno_code(int e)
{
    switch (e) {
    case ENOENT: return CR_ENOENT;
    case EEXIST: return CR_EEXIST;
    case ENOSPC: case EDQUOT: return CR_ENOSPC;
    case EACCES: case EPERM: case EROFS: return CR_EPERM;
    case ENOMEM: return CR_ENOMEM;
    default: return CR_EIO;
    }
}

int cr_fsync_dir(const char *dir, cr_err_t *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return cr_err_set(err, errno_code(errno), "open directory %s: %s", dir, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return cr_err_set(err, CR_EIO, "fsync directory %s: %s", dir, strerror(e));
    }
    close(fd);
    return 0;
}

int cr_mkdir_p(const char *path, mode_t mode, cr_err_t *err)
{
    char buf[PATH_MAX_LEN];
    if (!path || !*path || strlen(path) >= sizeof buf)
        return cr_err_set(err, CR_EINVAL, "bad directory path '%s'", path ? path : "(null)");
    strcpy(buf, path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST)
                return cr_err_set(err, errno_code(errno), "mkdir %s: %s", buf, strerror(errno));
            *p = c;
            if (c == '\0') break;
        }
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return cr_err_set(err, CR_EEXIST, "%s exists and is not a directory", path);
    return 0;
}

/* Directory part of path ("." when none) into out. */
static void dir_of(const char *path, char out[PATH_MAX_LEN])
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(out, ".");
    } else if (slash == path) {
        strcpy(out, "/");
    } else {
        size_t n = (size_t)(slash - path);
        memcpy(out, path, n);
        out[n] = '\0';
    }
}

/* Writes data to path (created or truncated), fsyncs it; hashes into *hash. */
static int write_synced(const char *path, const void *data, size_t len, mode_t mode,
                        const char *written_step, const char *synced_step, cr_err_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return cr_err_set(err, errno_code(errno), "create %s: %s", path, strerror(errno));
    if (write_all(fd, data, len) != 0) {
        int e = errno;
        close(fd);
        return cr_err_set(err, errno_code(e), "write %s: %s", path, strerror(e));
    }
    step(written_step);
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return cr_err_set(err, CR_EIO, "fsync %s: %s", path, strerror(e));
    }
    step(synced_step);
    if (close(fd) != 0) return cr_err_set(err, CR_EIO, "close %s: %s", path, strerror(errno));
    return 0;
}

int cr_durable_write(const char *path, const void *data, size_t len, mode_t mode, cr_err_t *err)
{
    char tmp[PATH_MAX_LEN], dir[PATH_MAX_LEN];
    if (!path || snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return cr_err_set(err, CR_EINVAL, "path too long");
    step("tmp-open");
    int rc = write_synced(tmp, data, len, mode, "tmp-written", "tmp-synced", err);
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return cr_err_set(err, errno_code(e), "rename %s to %s: %s", tmp, path, strerror(e));
    }
    step("renamed");
    dir_of(path, dir);
    rc = cr_fsync_dir(dir, err);
    if (rc == 0) step("dir-synced");
    return rc;
}

int cr_read_file(const char *path, size_t max, char **data, size_t *len, cr_err_t *err)
{
    *data = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cr_err_set(err, errno_code(errno), "open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return cr_err_set(err, CR_EIO, "stat %s: %s", path, strerror(errno));
    }
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        return cr_err_set(err, CR_ETOOBIG, "%s is %lld bytes, more than the %zu allowed", path,
                          (long long)sb.st_size, max);
    }
    /* The buffer grows as needed: files under /proc report a size of 0. */
    size_t cap = (size_t)sb.st_size + 2, n = 0;
    if (cap < 256) cap = 256;
    char *buf = malloc(cap);
    int rc = 0;
    if (!buf) rc = cr_err_set(err, CR_ENOMEM, "reading %s", path);
    while (rc == 0) {
        if (n + 1 == cap) {
            if (n > max) {
                rc = cr_err_set(err, CR_ETOOBIG, "%s is more than the %zu bytes allowed", path, max);
                break;
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                rc = cr_err_set(err, CR_ENOMEM, "reading %s", path);
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = cr_err_set(err, CR_EIO, "read %s: %s", path, strerror(errno));
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (rc == 0 && n > max)
        rc = cr_err_set(err, CR_ETOOBIG, "%s is more than the %zu bytes allowed", path, max);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *data = buf;
    if (len) *len = n;
    return 0;
}

/* ---- checkpoint store ------------------------------------------------------- */

struct cr_ckpt_store {
    char dir[PATH_MAX_LEN];
};

typedef struct ckpt_file {
    char name[256];
    uint64_t size, hash;
} ckpt_file_t;

struct cr_ckpt_writer {
    cr_ckpt_store_t *st;
    uint64_t n;
    char tmp[PATH_MAX_LEN];
    char path[PATH_MAX_LEN]; /* scratch for cr_ckpt_file_path */
    ckpt_file_t *files;
    size_t nfiles, cap;
};

/* Runs rm -r without a shell: removes every entry of dir, then dir. */
static int remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (remove_tree(p) != 0) rc = -1;
        } else if (unlink(p) != 0 && errno != ENOENT) {
            rc = -1;
        }
    }
    closedir(d);
    if (rmdir(dir) != 0 && errno != ENOENT) rc = -1;
    return rc;
}

/* Parses "ckpt-<digits>" exactly; suffix receives what follows the digits. */
static int parse_name(const char *name, uint64_t *n, const char **suffix)
{
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *p = name + 5;
    if (*p < '0' || *p > '9') return -1;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(*p - '0');
        p++;
    }
    *n = v;
    *suffix = p;
    return 0;
}

static int name_ok(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof(((ckpt_file_t *)0)->name) || name[0] == '.') return 0;
    if (strcmp(name, CR_CKPT_MARKER) == 0) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

static void ckpt_path(const cr_ckpt_store_t *st, uint64_t n, const char *suffix,
                      char out[PATH_MAX_LEN])
{
    snprintf(out, PATH_MAX_LEN, "%s/ckpt-%020" PRIu64 "%s", st->dir, n, suffix);
}

int cr_ckpt_open(const char *dir, cr_ckpt_store_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!dir || strlen(dir) >= PATH_MAX_LEN - 64)
        return cr_err_set(err, CR_EINVAL, "checkpoint directory path missing or too long");
    int rc = cr_mkdir_p(dir, 0755, err);
    if (rc != 0) return rc;
    cr_ckpt_store_t *st = calloc(1, sizeof *st);
    if (!st) return cr_err_set(err, CR_ENOMEM, "checkpoint store");
    strcpy(st->dir, dir);
    DIR *d = opendir(dir);
    if (!d) {
        free(st);
        return cr_err_set(err, errno_code(errno), "open %s: %s", dir, strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t n;
        const char *suffix;
        if (parse_name(e->d_name, &n, &suffix) != 0 || !*suffix) continue;
        if (strcmp(suffix, ".tmp") == 0 || strcmp(suffix, ".del") == 0) {
            char p[PATH_MAX_LEN];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (remove_tree(p) != 0) CR_WARN("durable", "could not remove leftover %s", p);
        }
    }
    closedir(d);
    *out = st;
    return 0;
}

void cr_ckpt_close(cr_ckpt_store_t *st) { free(st); }

const char *cr_ckpt_dir(const cr_ckpt_store_t *st) { return st->dir; }

/* Parses and checks a marker (and, with verify, the files' hashes). */
static int check_ckpt(const char *cdir, uint64_t want_n, int verify, char **meta_out,
                      cr_err_t *err)
{
    char mpath[PATH_MAX_LEN];
    snprintf(mpath, sizeof mpath, "%s/%s", cdir, CR_CKPT_MARKER);
    char *text;
    size_t tlen;
    int rc = cr_read_file(mpath, MARKER_MAX, &text, &tlen, err);
    if (rc == CR_ENOENT) return cr_err_set(err, CR_ECORRUPT, "%s has no completion marker", cdir);
    if (rc != 0) return rc;
    unsigned long long n = 0, nfiles = 0, metalen = 0;
    int off = 0;
    rc = CR_ECORRUPT;
    if (sscanf(text, "corral-checkpoint 1 %llu %llu %llu\n%n", &n, &nfiles, &metalen, &off) != 3 ||
        off == 0 || n != want_n) {
        cr_err_set(err, rc, "%s: marker header is malformed", cdir);
        goto out;
    }
    const char *p = text + off;
    for (unsigned long long i = 0; i < nfiles; i++) {
        unsigned long long size, hash;
        char name[256];
        int used = 0;
        if (sscanf(p, "%llu %llx %255[^\n]\n%n", &size, &hash, name, &used) != 3 || used == 0 ||
            !name_ok(name)) {
            cr_err_set(err, rc, "%s: marker file line %llu is malformed", cdir, i + 1);
            goto out;
        }
        p += used;
        char fpath[PATH_MAX_LEN];
        snprintf(fpath, sizeof fpath, "%s/%s", cdir, name);
        struct stat sb;
        if (stat(fpath, &sb) != 0 || (uint64_t)sb.st_size != size) {
            cr_err_set(err, rc, "%s: file %s is missing or not %llu bytes", cdir, name, size);
            goto out;
        }
        if (verify) {
            char *data;
            size_t dlen;
            if (cr_read_file(fpath, (size_t)size, &data, &dlen, err) != 0) goto out;
            uint64_t h = cr_fnv64(CR_FNV64_INIT, data, dlen);
            free(data);
            if (h != hash) {
                cr_err_set(err, rc, "%s: file %s does not match its hash", cdir, name);
                goto out;
            }
        }
    }
    size_t rest = tlen - (size_t)(p - text);
    if (rest != metalen + 5 || memcmp(p + metalen, "\nend\n", 5) != 0) {
        cr_err_set(err, rc, "%s: marker is truncated", cdir);
        goto out;
    }
    if (meta_out) {
        *meta_out = strndup(p, metalen);
        if (!*meta_out) {
            cr_err_set(err, rc = CR_ENOMEM, "marker meta");
            goto out;
        }
    }
    rc = 0;
out:
    free(text);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Numbers of every `ckpt-<N>` directory (complete or not), ascending. */
static int scan(cr_ckpt_store_t *st, uint64_t **ns, size_t *count, cr_err_t *err)
{
    *ns = NULL;
    *count = 0;
    DIR *d = opendir(st->dir);
    if (!d) return cr_err_set(err, errno_code(errno), "open %s: %s", st->dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t n;
        const char *suffix;
        if (parse_name(e->d_name, &n, &suffix) != 0 || *suffix) continue;
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(*ns, cap * sizeof **ns);
            if (!grown) {
                closedir(d);
                free(*ns);
                *ns = NULL;
                return cr_err_set(err, CR_ENOMEM, "checkpoint list");
            }
            *ns = grown;
        }
        (*ns)[(*count)++] = n;
    }
    closedir(d);
    if (*count) qsort(*ns, *count, sizeof **ns, cmp_u64);
    return 0;
}

int cr_ckpt_list(cr_ckpt_store_t *st, uint64_t **ns, size_t *count, cr_err_t *err)
{
    int rc = scan(st, ns, count, err);
    if (rc != 0) return rc;
    size_t kept = 0;
    for (size_t i = 0; i < *count; i++) {
        char cdir[PATH_MAX_LEN];
        cr_err_t ignored = {0};
        ckpt_path(st, (*ns)[i], "", cdir);
        if (check_ckpt(cdir, (*ns)[i], 0, NULL, &ignored) == 0) (*ns)[kept++] = (*ns)[i];
    }
    *count = kept;
    return 0;
}

int cr_ckpt_newest(cr_ckpt_store_t *st, int verify, uint64_t *n, char *out_dir, cr_err_t *err)
{
    uint64_t *ns;
    size_t count;
    int rc = scan(st, &ns, &count, err);
    if (rc != 0) return rc;
    for (size_t i = count; i-- > 0;) {
        char cdir[PATH_MAX_LEN];
        cr_err_t why = {0};
        ckpt_path(st, ns[i], "", cdir);
        if (check_ckpt(cdir, ns[i], verify, NULL, &why) == 0) {
            *n = ns[i];
            if (out_dir) strcpy(out_dir, cdir);
            free(ns);
            return 0;
        }
        CR_WARN("durable", "skipping checkpoint: %s", why.msg);
    }
    free(ns);
    return cr_err_set(err, CR_ENOENT, "no complete checkpoint in %s", st->dir);
}

int cr_ckpt_verify(cr_ckpt_store_t *st, uint64_t n, cr_err_t *err)
{
    char cdir[PATH_MAX_LEN];
    struct stat sb;
    ckpt_path(st, n, "", cdir);
    if (stat(cdir, &sb) != 0) return cr_err_set(err, CR_ENOENT, "no checkpoint %" PRIu64, n);
    return check_ckpt(cdir, n, 1, NULL, err);
}

int cr_ckpt_meta(cr_ckpt_store_t *st, uint64_t n, char **meta, cr_err_t *err)
{
    char cdir[PATH_MAX_LEN];
    struct stat sb;
    *meta = NULL;
    ckpt_path(st, n, "", cdir);
    if (stat(cdir, &sb) != 0) return cr_err_set(err, CR_ENOENT, "no checkpoint %" PRIu64, n);
    return check_ckpt(cdir, n, 0, meta, err);
}

int cr_ckpt_begin(cr_ckpt_store_t *st, uint64_t n, cr_ckpt_writer_t **out, cr_err_t *err)
{
    *out = NULL;
    uint64_t *ns;
    size_t count;
    int rc = cr_ckpt_list(st, &ns, &count, err);
    if (rc != 0) return rc;
    uint64_t newest = count ? ns[count - 1] : 0;
    free(ns);
    if (count && n <= newest)
        return cr_err_set(err, CR_EEXIST,
                          "checkpoint %" PRIu64 " is not newer than the newest complete one (%" PRIu64 ")",
                          n, newest);
    cr_ckpt_writer_t *w = calloc(1, sizeof *w);
    if (!w) return cr_err_set(err, CR_ENOMEM, "checkpoint writer");
    w->st = st;
    w->n = n;
    ckpt_path(st, n, ".tmp", w->tmp);
    /* A stale .tmp of the same number (a crash of this process) is ours to replace. */
    remove_tree(w->tmp);
    char stale[PATH_MAX_LEN];
    ckpt_path(st, n, "", stale); /* an incomplete ckpt-N without marker */
    remove_tree(stale);
    if (mkdir(w->tmp, 0755) != 0) {
        rc = cr_err_set(err, errno_code(errno), "mkdir %s: %s", w->tmp, strerror(errno));
        free(w);
        return rc;
    }
    step("begin");
    *out = w;
    return 0;
}

static int record(cr_ckpt_writer_t *w, const char *name, uint64_t size, uint64_t hash, cr_err_t *err)
{
    for (size_t i = 0; i < w->nfiles; i++)
        if (strcmp(w->files[i].name, name) == 0)
            return cr_err_set(err, CR_EEXIST, "checkpoint file %s written twice", name);
    if (w->nfiles == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 8;
        ckpt_file_t *grown = realloc(w->files, cap * sizeof *grown);
        if (!grown) return cr_err_set(err, CR_ENOMEM, "checkpoint file list");
        w->files = grown;
        w->cap = cap;
    }
    ckpt_file_t *f = &w->files[w->nfiles++];
    snprintf(f->name, sizeof f->name, "%s", name);
    f->size = size;
    f->hash = hash;
    return 0;
}

int cr_ckpt_add(cr_ckpt_writer_t *w, const char *name, const void *data, size_t len, cr_err_t *err)
{
    if (!name_ok(name))
        return cr_err_set(err, CR_EINVAL, "bad checkpoint file name '%s' (letters, digits, . _ -)", name);
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof p, "%s/%s", w->tmp, name);
    int rc = write_synced(p, data, len, 0644, "file-written", "file-synced", err);
    if (rc != 0) return rc;
    return record(w, name, len, cr_fnv64(CR_FNV64_INIT, data, len), err);
}

const char *cr_ckpt_file_path(cr_ckpt_writer_t *w, const char *name)
{
    snprintf(w->path, sizeof w->path, "%s/%s", w->tmp, name);
    return w->path;
}

int cr_ckpt_adopt(cr_ckpt_writer_t *w, const char *name, cr_err_t *err)
{
    if (!name_ok(name))
        return cr_err_set(err, CR_EINVAL, "bad checkpoint file name '%s' (letters, digits, . _ -)", name);
    char p[PATH_MAX_LEN];
    snprintf(p, sizeof p, "%s/%s", w->tmp, name);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cr_err_set(err, errno_code(errno), "open %s: %s", p, strerror(errno));
    uint64_t h = CR_FNV64_INIT, size = 0;
    char buf[65536];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            return cr_err_set(err, CR_EIO, "read %s: %s", p, strerror(e));
        }
        if (r == 0) break;
        h = cr_fnv64(h, buf, (size_t)r);
        size += (uint64_t)r;
    }
    step("file-written");
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) return cr_err_set(err, CR_EIO, "fsync %s: %s", p, strerror(e));
    step("file-synced");
    return record(w, name, size, h, err);
}

static void writer_free(cr_ckpt_writer_t *w)
{
    free(w->files);
    free(w);
}

void cr_ckpt_abort(cr_ckpt_writer_t *w)
{
    if (!w) return;
    remove_tree(w->tmp);
    writer_free(w);
}

int cr_ckpt_commit(cr_ckpt_writer_t *w, const char *meta, cr_err_t *err)
{
    size_t metalen = meta ? strlen(meta) : 0;
    size_t cap = 128 + w->nfiles * 300 + metalen;
    char *text = malloc(cap);
    if (!text) {
        cr_ckpt_abort(w);
        return cr_err_set(err, CR_ENOMEM, "checkpoint marker");
    }
    size_t off = (size_t)snprintf(text, cap, "corral-checkpoint 1 %" PRIu64 " %zu %zu\n", w->n,
                                  w->nfiles, metalen);
    for (size_t i = 0; i < w->nfiles; i++)
        off += (size_t)snprintf(text + off, cap - off, "%" PRIu64 " %016" PRIx64 " %s\n",
                                w->files[i].size, w->files[i].hash, w->files[i].name);
    if (metalen) memcpy(text + off, meta, metalen);
    off += metalen;
    memcpy(text + off, "\nend\n", 5);
    off += 5;

    char mpath[PATH_MAX_LEN], final[PATH_MAX_LEN];
    snprintf(mpath, sizeof mpath, "%s/%s", w->tmp, CR_CKPT_MARKER);
    int rc = write_synced(mpath, text, off, 0644, "marker-written", "marker-synced", err);
    free(text);
    if (rc == 0) rc = cr_fsync_dir(w->tmp, err);
    if (rc == 0) {
        ckpt_path(w->st, w->n, "", final);
        if (rename(w->tmp, final) != 0)
            rc = cr_err_set(err, errno_code(errno), "rename %s to %s: %s", w->tmp, final,
                            strerror(errno));
    }
    if (rc != 0) {
        cr_err_wrap(err, "checkpoint %" PRIu64, w->n);
        cr_ckpt_abort(w);
        return rc;
    }
    step("ckpt-renamed");
    rc = cr_fsync_dir(w->st->dir, err);
    writer_free(w);
    if (rc == 0) step("ckpt-committed");
    return rc;
}

int cr_ckpt_prune(cr_ckpt_store_t *st, size_t keep, cr_err_t *err)
{
    if (keep < 1) return cr_err_set(err, CR_EINVAL, "keep must be at least 1");
    uint64_t *ns;
    size_t count;
    int rc = cr_ckpt_list(st, &ns, &count, err);
    if (rc != 0) return rc;
    for (size_t i = 0; i + keep < count && rc == 0; i++) {
        char from[PATH_MAX_LEN], to[PATH_MAX_LEN];
        ckpt_path(st, ns[i], "", from);
        ckpt_path(st, ns[i], ".del", to);
        remove_tree(to);
        if (rename(from, to) != 0) {
            rc = cr_err_set(err, errno_code(errno), "rename %s: %s", from, strerror(errno));
            break;
        }
        step("prune-renamed");
        rc = cr_fsync_dir(st->dir, err);
        if (rc == 0 && remove_tree(to) != 0)
            CR_WARN("durable", "could not remove %s; it will be swept at the next open", to);
        step("prune-removed");
    }
    free(ns);
    return rc;
}
