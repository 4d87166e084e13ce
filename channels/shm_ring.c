/* shm_ring.c - a multi-producer, single-consumer ring of variable-length records in
 * a /dev/shm file, shared by the processes of one node.
 *
 * Layout: a header page (positions, futex words, the writers' lock) then `size`
 * data bytes. head and tail are byte counters that only grow; head - tail bytes are
 * in use. A record is a 40-byte header plus its payload, padded to 8 bytes; a record
 * never wraps: a writer that reaches the end first fills it with a PAD record (or
 * leaves fewer than 40 bytes, which the reader skips the same way).
 *
 * Invariants: tail <= rpos <= head <= tail + size; writers advance head (release
 * order) only after the record is complete, so a writer killed mid-copy leaves no
 * partial record; the writers' lock is a robust process-shared mutex, so a writer
 * killed while holding it costs the next writer an EOWNERDEAD, not a hang. A writer
 * that writes in place (reserve, then commit) holds the lock meanwhile. Every wait
 * is a futex wait with a time-out, and a writer waiting for room checks whether the
 * consumer process still exists, so a crashed peer never wedges the other side.
 * Liveness is judged by pid, so the processes sharing /dev/shm must share a pid
 * namespace (one node, one container or host). A consumer killed outright leaves
 * its ring file behind; the next hub created on the node removes it. */
#include "channels/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/time.h"

#define RING_MAGIC 0x43525348u /* "CRSH" */
#define RING_VERSION 1
#define REC_MAGIC 0x4352524Du  /* "CRRM" */
#define REC_DATA 1
#define REC_PAD 2
#define HDR_BYTES 4096
#define WAIT_SLICE_NS (50 * CR_NS_PER_MS) /* how often a waiter re-checks its peer */

typedef struct ring_hdr {
    uint32_t magic, version;
    uint64_t size, max_msg;
    int32_t owner_pid;
    _Atomic uint32_t closed;
    _Atomic uint64_t head, tail;
    _Atomic uint32_t data_ftx, space_ftx;
    _Atomic uint32_t data_waiters, space_waiters;
    pthread_mutex_t wlock;
} ring_hdr_t;

typedef struct rec_hdr {
    uint32_t magic, kind;
    uint64_t len, producer, seq;
    double weight;
} rec_hdr_t;

_Static_assert(sizeof(rec_hdr_t) == 40, "record header is 40 bytes");
_Static_assert(sizeof(ring_hdr_t) <= HDR_BYTES, "ring header fits its page");

struct ch_ring {
    ring_hdr_t *h;
    uint8_t *data;
    size_t map_bytes;
    char path[128];
    int owner;
    uint64_t rpos; /* consumer only: the read cursor (tail <= rpos <= head) */
    uint64_t resv_head; /* writer holding the lock: where its reserved record starts */
    size_t resv_len;
};

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

static void ring_path(char *out, size_t n, uint64_t hub, const char *name)
{
    snprintf(out, n, "/corral-ch-%016llx-%s", (unsigned long long)hub, name);
}

static int futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / CR_NS_PER_S, .tv_nsec = ns % CR_NS_PER_S};
    return (int)syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* The slice to sleep before re-checking: at most WAIT_SLICE_NS, at most what is left;
 * 0 when the deadline passed. */
static int64_t slice_ns(int64_t deadline_ns)
{
    if (deadline_ns < 0) return WAIT_SLICE_NS;
    int64_t left = deadline_ns - cr_now_ns();
    if (left <= 0) return 0;
    return left < WAIT_SLICE_NS ? left : WAIT_SLICE_NS;
}

static int map_ring(int fd, size_t bytes, ch_ring_t *r)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -1;
    r->h = p;
    r->data = (uint8_t *)p + HDR_BYTES;
    r->map_bytes = bytes;
    return 0;
}

int ch_ring_create(uint64_t hub, const char *name, size_t max_msg, ch_ring_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_ring_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "shm ring %s: out of memory", name);
    ring_path(r->path, sizeof r->path, hub, name);
    /* Room for two of the largest records, so one can always follow a pad. */
    size_t size = align8(2 * (max_msg + sizeof(rec_hdr_t)) + 65536);
    if (size < (8u << 20)) size = 8u << 20;
    int fd = shm_open(r->path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        int e = errno;
        free(r);
        return cr_err_set(err, e == EEXIST ? CR_EEXIST : CR_EIO, "shm ring %s: shm_open: %s",
                          name, strerror(e));
    }
    if (ftruncate(fd, (off_t)(HDR_BYTES + size)) != 0 || map_ring(fd, HDR_BYTES + size, r) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(r->path);
        free(r);
        return cr_err_set(err, CR_EIO, "shm ring %s: %s", name, strerror(e));
    }
    close(fd);
    ring_hdr_t *h = r->h;
    h->size = size;
    h->max_msg = max_msg;
    h->owner_pid = getpid();
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h->wlock, &a);
    pthread_mutexattr_destroy(&a);
    h->version = RING_VERSION;
    atomic_thread_fence(memory_order_release);
    h->magic = RING_MAGIC; /* last: an attacher seeing it sees the rest */
    r->owner = 1;
    *out = r;
    return 0;
}

int ch_ring_attach(uint64_t hub, const char *name, ch_ring_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_ring_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "shm ring %s: out of memory", name);
    ring_path(r->path, sizeof r->path, hub, name);
    int fd = shm_open(r->path, O_RDWR, 0);
    if (fd < 0) {
        int e = errno;
        free(r);
        if (e == ENOENT)
            return cr_err_set(err, CR_ENOENT, "no channel named \"%s\" in process %016llx on this node",
                              name, (unsigned long long)hub);
        return cr_err_set(err, CR_EIO, "shm ring %s: shm_open: %s", name, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < HDR_BYTES + 8 || map_ring(fd, (size_t)st.st_size, r) != 0) {
        close(fd);
        free(r);
        return cr_err_set(err, CR_ECORRUPT, "shm ring %s: file is too small or unmappable", name);
    }
    close(fd);
    atomic_thread_fence(memory_order_acquire);
    if (r->h->magic != RING_MAGIC || r->h->version != RING_VERSION ||
        r->h->size + HDR_BYTES > (uint64_t)st.st_size) {
        munmap(r->h, r->map_bytes);
        free(r);
        return cr_err_set(err, CR_ECORRUPT, "shm ring %s: bad header (magic, version or size)", name);
    }
    *out = r;
    return 0;
}

size_t ch_ring_max_msg(const ch_ring_t *r) { return r->h->max_msg; }

int ch_ring_sweep(void)
{
    DIR *d = opendir("/dev/shm");
    if (!d) return 0;
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "corral-ch-", 10) != 0) continue;
        char path[300];
        snprintf(path, sizeof path, "/%s", de->d_name);
        int fd = shm_open(path, O_RDONLY, 0);
        if (fd < 0) continue;
        ring_hdr_t h;
        ssize_t n = pread(fd, &h, sizeof h, 0);
        close(fd);
        /* Only a complete header names its owner; one being created is left alone. */
        if (n == (ssize_t)sizeof h && h.magic == RING_MAGIC && h.owner_pid > 0 &&
            kill(h.owner_pid, 0) != 0 && errno == ESRCH && shm_unlink(path) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

static int peer_alive(pid_t pid)
{
    return !(kill(pid, 0) != 0 && errno == ESRCH);
}

static int lock_writers(ch_ring_t *r, int64_t deadline_ns, cr_err_t *err)
{
    for (;;) {
        int64_t s = slice_ns(deadline_ns);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts); /* timedlock takes CLOCK_REALTIME */
        int64_t abs = (int64_t)ts.tv_sec * CR_NS_PER_S + ts.tv_nsec + (s > 0 ? s : 0);
        ts.tv_sec = abs / CR_NS_PER_S;
        ts.tv_nsec = abs % CR_NS_PER_S;
        int rc = pthread_mutex_timedlock(&r->h->wlock, &ts);
        if (rc == 0) return 0;
        if (rc == EOWNERDEAD) {
            /* A writer died holding the lock; head was not advanced past its record,
             * so the ring is consistent as it is. */
            CR_WARN("channels", "shm ring %s: a writer died holding the lock; recovered", r->path);
            pthread_mutex_consistent(&r->h->wlock);
            return 0;
        }
        if (rc != ETIMEDOUT) return cr_err_set(err, CR_EIO, "shm ring %s: lock: %s", r->path, strerror(rc));
        if (!peer_alive(r->h->owner_pid))
            return cr_err_set(err, CR_EUNAVAIL, "shm ring %s: consumer process %d is gone", r->path,
                              r->h->owner_pid);
        if (s == 0)
            return cr_err_set(err, CR_ETIMEDOUT, "shm ring %s: another producer holds the ring (writing a "
                              "message in place, or stalled)", r->path);
    }
}

int ch_ring_reserve(ch_ring_t *r, size_t len, int64_t deadline_ns, void **buf, cr_err_t *err)
{
    ring_hdr_t *h = r->h;
    size_t rec = align8(sizeof(rec_hdr_t) + len);
    if (len > h->max_msg || rec > h->size / 2)
        return cr_err_set(err, CR_ETOOBIG, "shm ring %s: message of %zu bytes is over the limit of %llu",
                          r->path, len, (unsigned long long)h->max_msg);
    int rc = lock_writers(r, deadline_ns, err);
    if (rc) return rc;
    uint64_t head = atomic_load_explicit(&h->head, memory_order_relaxed);
    size_t pos, pad;
    for (;;) {
        if (atomic_load(&h->closed)) {
            rc = cr_err_set(err, CR_ECLOSED, "shm ring %s: the consumer closed the channel", r->path);
            goto fail;
        }
        uint64_t tail = atomic_load_explicit(&h->tail, memory_order_acquire);
        pos = head % h->size;
        pad = pos + rec > h->size ? h->size - pos : 0;
        if (h->size - (head - tail) >= pad + rec) break;
        uint32_t v = atomic_load(&h->space_ftx);
        if (atomic_load_explicit(&h->tail, memory_order_acquire) != tail) continue;
        int64_t s = slice_ns(deadline_ns);
        if (s == 0) {
            rc = cr_err_set(err, CR_ETIMEDOUT, "shm ring %s: no room (the consumer is slow)", r->path);
            goto fail;
        }
        atomic_fetch_add(&h->space_waiters, 1);
        futex_wait(&h->space_ftx, v, s);
        atomic_fetch_sub(&h->space_waiters, 1);
        if (!peer_alive(h->owner_pid)) {
            rc = cr_err_set(err, CR_EUNAVAIL, "shm ring %s: consumer process %d is gone", r->path,
                            h->owner_pid);
            goto fail;
        }
    }
    if (pad) { /* written now, published with the record (head moves over both at once) */
        if (pad >= sizeof(rec_hdr_t)) {
            rec_hdr_t p = {.magic = REC_MAGIC, .kind = REC_PAD, .len = pad};
            memcpy(r->data + pos, &p, sizeof p);
        }
        head += pad;
        pos = 0;
    }
    r->resv_head = head;
    r->resv_len = len;
    *buf = r->data + pos + sizeof(rec_hdr_t);
    return 0;
fail:
    pthread_mutex_unlock(&h->wlock);
    return rc;
}

void ch_ring_commit(ch_ring_t *r, uint64_t producer, uint64_t seq, double weight, size_t n, uint64_t *end)
{
    ring_hdr_t *h = r->h;
    if (n > r->resv_len) n = r->resv_len;
    uint64_t head = r->resv_head;
    rec_hdr_t rh = {.magic = REC_MAGIC, .kind = REC_DATA, .len = n, .producer = producer,
                    .seq = seq, .weight = weight};
    memcpy(r->data + head % h->size, &rh, sizeof rh);
    uint64_t next = head + align8(sizeof rh + n);
    /* Release order: a reader that sees the new head sees the whole record. */
    atomic_store_explicit(&h->head, next, memory_order_release);
    *end = next;
    atomic_fetch_add(&h->data_ftx, 1);
    if (atomic_load(&h->data_waiters)) futex_wake(&h->data_ftx);
    pthread_mutex_unlock(&h->wlock);
}

void ch_ring_abort(ch_ring_t *r)
{
    pthread_mutex_unlock(&r->h->wlock); /* head never moved: nothing was published */
}

int ch_ring_write(ch_ring_t *r, uint64_t producer, uint64_t seq, double weight, const void *data,
                  size_t len, int64_t deadline_ns, uint64_t *end, cr_err_t *err)
{
    void *buf;
    int rc = ch_ring_reserve(r, len, deadline_ns, &buf, err);
    if (rc) return rc;
    if (len) memcpy(buf, data, len);
    ch_ring_commit(r, producer, seq, weight, len, end);
    return 0;
}

/* Skips everything written so far: a writer left bytes that are not a record. The
 * caller releases up to out->end once earlier records are released. */
static int skip_corrupt(ch_ring_t *r, uint64_t head, ch_ring_rec_t *out, const char *why, cr_err_t *err)
{
    r->rpos = head;
    out->end = head;
    return cr_err_set(err, CR_ECORRUPT, "shm ring %s: %s; dropped what was pending", r->path, why);
}

int ch_ring_read(ch_ring_t *r, ch_ring_rec_t *out, int64_t deadline_ns, cr_err_t *err)
{
    ring_hdr_t *h = r->h;
    memset(out, 0, sizeof *out);
    for (;;) {
        uint64_t head = atomic_load_explicit(&h->head, memory_order_acquire);
        if (head - r->rpos > h->size) return skip_corrupt(r, head, out, "head is out of range", err);
        if (r->rpos == head) {
            uint32_t v = atomic_load(&h->data_ftx);
            if (atomic_load_explicit(&h->head, memory_order_acquire) != head) continue;
            int64_t s = slice_ns(deadline_ns);
            if (s == 0) return cr_err_set(err, CR_ETIMEDOUT, "shm ring %s: empty", r->path);
            atomic_fetch_add(&h->data_waiters, 1);
            futex_wait(&h->data_ftx, v, s);
            atomic_fetch_sub(&h->data_waiters, 1);
            continue;
        }
        size_t pos = r->rpos % h->size;
        if (h->size - pos < sizeof(rec_hdr_t)) {
            r->rpos += h->size - pos;
            continue;
        }
        rec_hdr_t rh;
        memcpy(&rh, r->data + pos, sizeof rh);
        if (rh.magic != REC_MAGIC) return skip_corrupt(r, head, out, "bad record magic", err);
        if (rh.kind == REC_PAD) {
            if (rh.len != h->size - pos) return skip_corrupt(r, head, out, "bad pad record", err);
            r->rpos += rh.len;
            continue;
        }
        size_t rec = align8(sizeof rh + rh.len);
        if (rh.kind != REC_DATA || rh.len > h->max_msg || pos + rec > h->size || rec > head - r->rpos)
            return skip_corrupt(r, head, out, "bad record kind or length", err);
        out->producer = rh.producer;
        out->seq = rh.seq;
        out->weight = rh.weight;
        out->len = rh.len;
        out->data = r->data + pos + sizeof rh;
        r->rpos += rec;
        out->end = r->rpos;
        return 0;
    }
}

void ch_ring_release_to(ch_ring_t *r, uint64_t end)
{
    atomic_store_explicit(&r->h->tail, end, memory_order_release);
    atomic_fetch_add(&r->h->space_ftx, 1);
    if (atomic_load(&r->h->space_waiters)) futex_wake(&r->h->space_ftx);
}

size_t ch_ring_size(const ch_ring_t *r) { return r->h->size; }

uint64_t ch_ring_tail(ch_ring_t *r)
{
    return atomic_load_explicit(&r->h->tail, memory_order_acquire);
}

int ch_ring_closed(ch_ring_t *r)
{
    return atomic_load(&r->h->closed) || !peer_alive(r->h->owner_pid);
}

void ch_ring_close(ch_ring_t *r)
{
    atomic_store(&r->h->closed, 1);
    atomic_fetch_add(&r->h->space_ftx, 1);
    futex_wake(&r->h->space_ftx);
    if (r->owner) shm_unlink(r->path);
}

void ch_ring_destroy(ch_ring_t *r)
{
    if (!r) return;
    munmap(r->h, r->map_bytes);
    free(r);
}

void ch_ring_test_lock(ch_ring_t *r)
{
    pthread_mutex_lock(&r->h->wlock);
}

int ch_ring_test_garbage(ch_ring_t *r, size_t n, cr_err_t *err)
{
    int rc = lock_writers(r, cr_now_ns() + CR_NS_PER_S, err);
    if (rc) return rc;
    uint64_t head = atomic_load(&r->h->head);
    size_t pos = head % r->h->size;
    n = align8(n);
    if (pos + n > r->h->size) n = r->h->size - pos;
    memset(r->data + pos, 0xab, n);
    atomic_store_explicit(&r->h->head, head + n, memory_order_release);
    atomic_fetch_add(&r->h->data_ftx, 1);
    futex_wake(&r->h->data_ftx);
    pthread_mutex_unlock(&r->h->wlock);
    return 0;
}
