/* faultvfs.h - a SQLite VFS shim for tests that fails writes on demand: after N more
 * successful writes every write fails (SQLITE_FULL) until disarmed. It wraps the
 * default VFS, so the buffer runs its real code paths over it. */
#ifndef CORRAL_TESTS_FAULTVFS_H
#define CORRAL_TESTS_FAULTVFS_H

#define FAULT_VFS_NAME "corral-fault"

/* Registers the VFS once (not as the default). Returns 0 or a SQLite error code. */
int fault_vfs_register(void);
/* Fail every write after n more succeed; n < 0 disarms. */
void fault_vfs_arm(long n);
/* Writes that failed since registration. */
long fault_vfs_failures(void);

#endif
