/* schema.h - state.db schema versions and migrations (private to controller/). */
#ifndef CORRAL_CONTROLLER_SCHEMA_H
#define CORRAL_CONTROLLER_SCHEMA_H

#include "common/err.h"

typedef struct sqlite3 sqlite3;

/* The newest schema version this binary knows. */
int ctl_schema_latest(void);
/* PRAGMA user_version of db. */
int ctl_schema_version(sqlite3 *db, int *version, cr_err_t *err);
/* Applies every missing migration; CR_EVERSION when db is newer than the binary. */
int ctl_schema_migrate(sqlite3 *db, cr_err_t *err);
/* Stops at version target (tests build old databases with it). */
int ctl_schema_migrate_to(sqlite3 *db, int target, cr_err_t *err);

#endif
