/* err.c - the table of error codes and the helpers that fill a cr_err_t.
 * Messages are truncated, never overflowed: a long path in a message must not
 * turn an error report into a second error. */
#include "err.h"

#include <stdio.h>
#include <string.h>

const char *cr_err_name(int code)
{
    switch (code) {
    case CR_OK: return "OK";
#define CR_ERR_NAME(name, val, msg) case val: return "E" #name;
    CR_ERR_MAP(CR_ERR_NAME)
#undef CR_ERR_NAME
    }
    return "EUNKNOWN";
}

const char *cr_err_str(int code)
{
    switch (code) {
    case CR_OK: return "ok";
#define CR_ERR_STR(name, val, msg) case val: return msg;
    CR_ERR_MAP(CR_ERR_STR)
#undef CR_ERR_STR
    }
    return "unknown error";
}

void cr_err_clear(cr_err_t *e)
{
    if (!e) return;
    e->code = 0;
    e->msg[0] = '\0';
}

int cr_err_setv(cr_err_t *e, int code, const char *fmt, va_list ap)
{
    if (!e) return code;
    e->code = code;
    if (fmt)
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    else
        snprintf(e->msg, sizeof e->msg, "%s", cr_err_str(code));
    return code;
}

int cr_err_set(cr_err_t *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cr_err_setv(e, code, fmt, ap);
    va_end(ap);
    return code;
}

int cr_err_wrap(cr_err_t *e, const char *fmt, ...)
{
    if (!e) return CR_EINTERNAL;
    char prefix[CR_ERR_MSG_MAX], old[CR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s: %s", prefix, old[0] ? old : cr_err_str(e->code));
    return e->code;
}
