/* faultvfs.c - the failing-write VFS shim of faultvfs.h. Every method forwards to the
 * wrapped file; xWrite consults one shared countdown (atomic: the buffer's writer
 * thread writes while the test thread arms). Version 2 methods: no memory-mapped I/O,
 * so every write goes through xWrite. */
#include "faultvfs.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>

typedef struct ffile {
    sqlite3_file base;
    sqlite3_file *real;
} ffile_t;

static sqlite3_vfs *orig;
static sqlite3_vfs fvfs;
static atomic_long left = -1;
static atomic_long failures;

#define REAL(f) (((ffile_t *)(f))->real)

static int f_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int f_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o) { return REAL(f)->pMethods->xRead(REAL(f), b, n, o); }
static int f_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    long l = atomic_load(&left);
    if (l == 0) { atomic_fetch_add(&failures, 1); return SQLITE_FULL; }
    if (l > 0) atomic_fetch_sub(&left, 1);
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 s) { return REAL(f)->pMethods->xTruncate(REAL(f), s); }
static int f_sync(sqlite3_file *f, int fl) { return REAL(f)->pMethods->xSync(REAL(f), fl); }
static int f_size(sqlite3_file *f, sqlite3_int64 *s) { return REAL(f)->pMethods->xFileSize(REAL(f), s); }
static int f_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int f_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int f_check(sqlite3_file *f, int *r) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r); }
static int f_fctl(sqlite3_file *f, int op, void *a) { return REAL(f)->pMethods->xFileControl(REAL(f), op, a); }
static int f_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int f_dev(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int f_shmmap(sqlite3_file *f, int i, int sz, int ext, void volatile **pp) { return REAL(f)->pMethods->xShmMap(REAL(f), i, sz, ext, pp); }
static int f_shmlock(sqlite3_file *f, int o, int n, int fl) { return REAL(f)->pMethods->xShmLock(REAL(f), o, n, fl); }
static void f_shmbarrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int f_shmunmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }

static const sqlite3_io_methods fio = {
    2, f_close, f_read, f_write, f_truncate, f_sync, f_size, f_lock, f_unlock, f_check,
    f_fctl, f_sector, f_dev, f_shmmap, f_shmlock, f_shmbarrier, f_shmunmap, NULL, NULL};

static int f_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    ffile_t *ff = (ffile_t *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = orig->xOpen(orig, name, ff->real, flags, out);
    ff->base.pMethods = rc == SQLITE_OK && ff->real->pMethods ? &fio : NULL;
    return rc;
}

static int f_delete(sqlite3_vfs *v, const char *n, int s) { return orig->xDelete(orig, n, s); }
static int f_access(sqlite3_vfs *v, const char *n, int fl, int *r) { return orig->xAccess(orig, n, fl, r); }
static int f_full(sqlite3_vfs *v, const char *n, int sz, char *o) { return orig->xFullPathname(orig, n, sz, o); }
static int f_random(sqlite3_vfs *v, int n, char *o) { return orig->xRandomness(orig, n, o); }
static int f_sleep(sqlite3_vfs *v, int us) { return orig->xSleep(orig, us); }
static int f_time(sqlite3_vfs *v, double *t) { return orig->xCurrentTime(orig, t); }
static int f_lasterr(sqlite3_vfs *v, int n, char *o) { return orig->xGetLastError(orig, n, o); }
static int f_time64(sqlite3_vfs *v, sqlite3_int64 *t) { return orig->xCurrentTimeInt64(orig, t); }

int fault_vfs_register(void)
{
    if (orig) return SQLITE_OK;
    orig = sqlite3_vfs_find(NULL);
    if (!orig) return SQLITE_ERROR;
    memset(&fvfs, 0, sizeof fvfs);
    fvfs.iVersion = 2;
    fvfs.szOsFile = (int)sizeof(ffile_t) + orig->szOsFile;
    fvfs.mxPathname = orig->mxPathname;
    fvfs.zName = FAULT_VFS_NAME;
    fvfs.xOpen = f_open;
    fvfs.xDelete = f_delete;
    fvfs.xAccess = f_access;
    fvfs.xFullPathname = f_full;
    fvfs.xRandomness = f_random;
    fvfs.xSleep = f_sleep;
    fvfs.xCurrentTime = f_time;
    fvfs.xGetLastError = f_lasterr;
    fvfs.xCurrentTimeInt64 = f_time64;
    return sqlite3_vfs_register(&fvfs, 0);
}

void fault_vfs_arm(long n) { atomic_store(&left, n); }
long fault_vfs_failures(void) { return atomic_load(&failures); }
