/* err.h - error codes and the error struct every fallible call fills.
 *
 * A fallible function returns 0 on success or a negative CR_E* code, and writes a
 * human-readable message into a caller-owned cr_err_t. The codes come from one
 * table (CR_ERR_MAP) that also gives each its name and default message, so logs,
 * CLI exit paths and RPC statuses all speak the same vocabulary. */
#ifndef CORRAL_COMMON_ERR_H
#define CORRAL_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* X(NAME, value, "default message") */
#define CR_ERR_MAP(X)                                                         \
    X(INVAL,     -1,  "invalid argument")                                     \
    X(NOENT,     -2,  "not found")                                            \
    X(EXIST,     -3,  "already exists")                                       \
    X(NOMEM,     -4,  "out of memory")                                        \
    X(IO,        -5,  "input/output error")                                   \
    X(TIMEDOUT,  -6,  "timed out")                                            \
    X(BUSY,      -7,  "resource busy")                                        \
    X(PROTO,     -8,  "protocol error")                                       \
    X(UNAVAIL,   -9,  "unavailable")                                          \
    X(CORRUPT,   -10, "corrupt data")                                         \
    X(VERSION,   -11, "unsupported version")                                  \
    X(CANCELLED, -12, "cancelled")                                            \
    X(NOSPC,     -13, "no space left")                                        \
    X(CLOSED,    -14, "closed")                                               \
    X(PERM,      -15, "permission denied")                                    \
    X(TOOBIG,    -16, "too large")                                            \
    X(NOTSUP,    -17, "not supported")                                        \
    X(INTERNAL,  -18, "internal error")

enum {
    CR_OK = 0,
#define CR_ERR_ENUM(name, val, msg) CR_E##name = (val),
    CR_ERR_MAP(CR_ERR_ENUM)
#undef CR_ERR_ENUM
};

#define CR_ERR_MSG_MAX 512

/* Caller-owned; zero-initialise or call cr_err_clear before use. */
typedef struct cr_err {
    int code;                  /* 0 or a CR_E* value */
    char msg[CR_ERR_MSG_MAX];  /* "" when code is 0 */
} cr_err_t;

/* Name ("EINVAL") and default message of a code; never NULL. */
const char *cr_err_name(int code);
const char *cr_err_str(int code);

void cr_err_clear(cr_err_t *e);

/* Records code and a printf-style message in e (which may be NULL) and returns
 * code, so callers can write `return cr_err_set(e, CR_EINVAL, "...")`. */
int cr_err_set(cr_err_t *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int cr_err_setv(cr_err_t *e, int code, const char *fmt, va_list ap);

/* Prepends "prefix: " to an existing message, keeping the code; returns the code. */
int cr_err_wrap(cr_err_t *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
