/* durable.h - files and checkpoints that survive a crash at any instant.
 *
 * Two tools. cr_durable_write replaces one file atomically: the bytes go to a
 * temporary file in the same directory, which is fsynced, renamed over the
 * target, and the directory is fsynced, so a reader (or a reboot) sees either the
 * old file or the new one, never a mix.
 *
 * A checkpoint store is a directory of numbered checkpoints, each a directory
 * `ckpt-<N>` holding any number of files plus a completion marker COMPLETE that
 * lists every file with its size and FNV-1a 64 hash. A checkpoint is written into
 * `ckpt-<N>.tmp` (each file fsynced), the marker is written last, and the
 * directory is renamed into place and the store fsynced. Readers trust only
 * directories named `ckpt-<N>` whose marker parses and whose files match it, so a
 * crash at any step leaves the newest complete checkpoint intact. Pruning first
 * renames a checkpoint to `ckpt-<N>.del` (one atomic step that takes it out of
 * view) and only then removes its files; leftovers of either kind are swept by
 * cr_ckpt_open.
 *
 * Not thread-safe per store; distinct stores are independent. One writer per
 * store at a time (the learner of one experiment). */
#ifndef CORRAL_COMMON_DURABLE_H
#define CORRAL_COMMON_DURABLE_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Atomically replaces path with len bytes of data (mode for a new file, e.g.
 * 0644). The temporary file is path + ".tmp"; it is removed on failure. */
int cr_durable_write(const char *path, const void *data, size_t len, mode_t mode, cr_err_t *err);

/* fsync of a directory, so a rename or create inside it is durable. */
int cr_fsync_dir(const char *dir, cr_err_t *err);

/* mkdir -p with mode for each created level; an existing directory is fine. */
int cr_mkdir_p(const char *path, mode_t mode, cr_err_t *err);

/* Reads a whole file (also /proc files, whose size reads 0) into a malloc'd,
 * NUL-terminated buffer (caller frees *data). Files larger than max bytes are refused with CR_ETOOBIG; a missing
 * file is CR_ENOENT. *len (may be NULL) excludes the NUL. */
int cr_read_file(const char *path, size_t max, char **data, size_t *len, cr_err_t *err);

/* FNV-1a 64 of len bytes, continuing from h (start with CR_FNV64_INIT). */
#define CR_FNV64_INIT 0xcbf29ce484222325ULL
uint64_t cr_fnv64(uint64_t h, const void *data, size_t len);

/* Test hook: called with a step name at every point of a durable write sequence
 * where a crash must be survivable ("tmp-open", "tmp-written", "tmp-synced",
 * "renamed", "dir-synced", and in checkpoints "begin", "file-written",
 * "file-synced", "marker-written", "ckpt-renamed", "ckpt-committed", "prune-renamed",
 * "prune-removed"). NULL (the default) disables it. Process-wide. */
typedef void (*cr_durable_hook_fn)(const char *step, void *ud);
void cr_durable_set_hook(cr_durable_hook_fn fn, void *ud);

/* ---- checkpoint store ------------------------------------------------------- */

typedef struct cr_ckpt_store cr_ckpt_store_t;
typedef struct cr_ckpt_writer cr_ckpt_writer_t;

#define CR_CKPT_MARKER "COMPLETE"

/* Opens (creating) the store directory dir and sweeps leftovers of interrupted
 * writes and prunes (*.tmp, *.del). *out is owned by the caller. */
int cr_ckpt_open(const char *dir, cr_ckpt_store_t **out, cr_err_t *err);
void cr_ckpt_close(cr_ckpt_store_t *st);
const char *cr_ckpt_dir(const cr_ckpt_store_t *st); /* borrowed */

/* Starts checkpoint n (n must exceed every complete checkpoint's number, so
 * numbers follow the training step or update counter). *out lives until commit
 * or abort, which free it. */
int cr_ckpt_begin(cr_ckpt_store_t *st, uint64_t n, cr_ckpt_writer_t **out, cr_err_t *err);

/* Writes a file named name (no '/', not the marker) into the checkpoint, fsynced. */
int cr_ckpt_add(cr_ckpt_writer_t *w, const char *name, const void *data, size_t len,
                cr_err_t *err);

/* For writers that produce the file themselves (a safetensors writer): the full
 * path where file `name` must be written (static per writer, valid until the next
 * call), then cr_ckpt_adopt to fsync it and record it in the marker. */
const char *cr_ckpt_file_path(cr_ckpt_writer_t *w, const char *name);
int cr_ckpt_adopt(cr_ckpt_writer_t *w, const char *name, cr_err_t *err);

/* Writes the marker (with meta, a short text such as JSON counters; may be NULL),
 * renames the checkpoint into place, fsyncs the store and frees w. On failure the
 * temporary directory is removed and w is freed too. */
int cr_ckpt_commit(cr_ckpt_writer_t *w, const char *meta, cr_err_t *err);
/* Drops an unfinished checkpoint and frees w. */
void cr_ckpt_abort(cr_ckpt_writer_t *w);

/* The newest complete checkpoint: its number and directory (out_dir of at least
 * 4096 bytes, may be NULL). With verify, every file's size and hash is checked
 * and a checkpoint that fails is skipped (logged) in favour of an older one;
 * without, only the marker and file sizes are checked. CR_ENOENT when none. */
int cr_ckpt_newest(cr_ckpt_store_t *st, int verify, uint64_t *n, char *out_dir,
                   cr_err_t *err);

/* Numbers of complete checkpoints, ascending, into a malloc'd array (caller
 * frees); sizes are checked, hashes are not. */
int cr_ckpt_list(cr_ckpt_store_t *st, uint64_t **ns, size_t *count, cr_err_t *err);

/* Checks checkpoint n fully (marker, sizes, hashes): 0, CR_ENOENT or CR_ECORRUPT. */
int cr_ckpt_verify(cr_ckpt_store_t *st, uint64_t n, cr_err_t *err);

/* The meta text of complete checkpoint n, malloc'd (caller frees). */
int cr_ckpt_meta(cr_ckpt_store_t *st, uint64_t n, char **meta, cr_err_t *err);

/* Keeps the newest keep (>= 1) complete checkpoints and removes the rest. */
int cr_ckpt_prune(cr_ckpt_store_t *st, size_t keep, cr_err_t *err);

#endif
