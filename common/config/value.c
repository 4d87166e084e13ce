/* value.c - one scalar of each type: parsing text into a member, and the words that
 * describe what a field accepts.
 *
 * The same describer writes "expected a positive integer, got 'abc'" and the
 * reference text of cfg_doc, so a message never promises something the parser does
 * not accept. Sizes and durations are integers underneath (bytes, nanoseconds); a
 * fraction is allowed in the text ("1.5GiB") and rounded down to a whole unit. */
#include "common/config/cfg_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cfg_fail(cr_err_t *err, int code, const char *source, int line, int col, const char *path,
             const char *fmt, ...)
{
    char msg[CR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path && path[0])
        return cr_err_set(err, code, "%s:%d:%d: %s: %s", source, line, col, path, msg);
    return cr_err_set(err, code, "%s:%d:%d: %s", source, line, col, msg);
}

void cfg_quote(char *buf, size_t n, const char *text)
{
    size_t max = n > 52 ? 48 : n - 4, i;
    for (i = 0; text[i] && i < max; i++)
        buf[i] = (unsigned char)text[i] < 0x20 || text[i] == 0x7f ? '?' : text[i];
    if (text[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
}

static int fold(int c)
{
    return c == '-' ? '_' : tolower(c);
}

size_t cfg_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return (size_t)-1 / 2;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t sub = diag + (fold((unsigned char)a[i - 1]) != fold((unsigned char)b[j - 1]));
            size_t best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            diag = up;
        }
    }
    return row[lb];
}

bool cfg_close_enough(size_t dist, const char *word, const char *cand)
{
    size_t lw = strlen(word), lc = strlen(cand), m = lw > lc ? lw : lc;
    size_t limit = m <= 3 ? 1 : m <= 8 ? 2 : 3;
    return dist <= limit && dist < m;
}

const char *cfg_type_name(cfg_type_t type)
{
    switch (type) {
    case CFG_BOOL: return "bool";
    case CFG_INT: return "int";
    case CFG_DOUBLE: return "number";
    case CFG_STRING: return "string";
    case CFG_ENUM: return "enum";
    case CFG_SIZE: return "size";
    case CFG_DURATION: return "duration";
    case CFG_STRUCT: return "section";
    case CFG_LIST: return "list";
    case CFG_STRUCT_LIST: return "list of sections";
    case CFG_NODE: return "free-form";
    }
    return "?";
}

bool cfg_is_scalar(cfg_type_t type)
{
    return type == CFG_BOOL || type == CFG_INT || type == CFG_DOUBLE || type == CFG_STRING ||
           type == CFG_ENUM || type == CFG_SIZE || type == CFG_DURATION;
}

void cfg_int_range(const cfg_field_t *f, cfg_type_t type, size_t size, long long *lo,
                   long long *hi)
{
    bool any = f->imin == 0 && f->imax == 0;
    if (type == CFG_INT) {
        int bits = size >= 8 ? 64 : (int)size * 8;
        long long mmax = bits == 64 ? INT64_MAX : (1LL << (bits - 1)) - 1;
        *lo = any ? -mmax - 1 : f->imin;
        *hi = any ? mmax : f->imax;
    } else {
        *lo = any ? 0 : f->imin;
        *hi = any ? INT64_MAX : f->imax;
    }
}

/* ---- formatting -------------------------------------------------------------- */

void cfg_format_size(char *buf, size_t n, long long bytes)
{
    static const struct { const char *unit; long long mult; } u[] = {
        {"TiB", CFG_TiB}, {"GiB", CFG_GiB}, {"MiB", CFG_MiB}, {"KiB", CFG_KiB}};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
        if (bytes != 0 && bytes % u[i].mult == 0) {
            snprintf(buf, n, "%lld%s", bytes / u[i].mult, u[i].unit);
            return;
        }
    snprintf(buf, n, "%lldB", bytes);
}

void cfg_format_duration(char *buf, size_t n, long long ns)
{
    static const struct { const char *unit; long long mult; } u[] = {
        {"h", 3600 * CFG_SEC}, {"m", 60 * CFG_SEC}, {"s", CFG_SEC}, {"ms", CFG_MSEC},
        {"us", CFG_USEC}};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++)
        if (ns != 0 && ns % u[i].mult == 0) {
            snprintf(buf, n, "%lld%s", ns / u[i].mult, u[i].unit);
            return;
        }
    snprintf(buf, n, "%lldns", ns);
}

static void range_words(char *buf, size_t n, const char *what, const char *lo, const char *hi,
                        bool has_lo, bool has_hi)
{
    if (has_lo && has_hi)
        snprintf(buf, n, "%s between %s and %s", what, lo, hi);
    else if (has_lo)
        snprintf(buf, n, "%s of at least %s", what, lo);
    else if (has_hi)
        snprintf(buf, n, "%s of at most %s", what, hi);
    else
        snprintf(buf, n, "%s", what);
}

void cfg_scalar_describe(const cfg_field_t *f, cfg_type_t type, size_t size, char *buf, size_t n)
{
    long long lo, hi, mlo, mhi;
    char a[32], b[32];
    switch (type) {
    case CFG_BOOL: snprintf(buf, n, "true or false"); return;
    case CFG_STRING: snprintf(buf, n, "a string"); return;
    case CFG_INT: {
        cfg_int_range(f, type, size, &lo, &hi);
        cfg_field_t any = {0};
        cfg_int_range(&any, type, size, &mlo, &mhi);
        if (lo == 1 && hi == mhi) snprintf(buf, n, "a positive integer");
        else if (lo == 0 && hi == mhi) snprintf(buf, n, "a non-negative integer");
        else if (lo == mlo && hi == mhi) snprintf(buf, n, "an integer");
        else if (hi == mhi) snprintf(buf, n, "an integer >= %lld", lo);
        else if (lo == mlo) snprintf(buf, n, "an integer <= %lld", hi);
        else snprintf(buf, n, "an integer between %lld and %lld", lo, hi);
        return;
    }
    case CFG_DOUBLE:
        snprintf(a, sizeof a, "%g", f->dmin);
        snprintf(b, sizeof b, "%g", f->dmax);
        range_words(buf, n, "a number", a, b, f->dmin != 0 || f->dmax != 0,
                    f->dmin != 0 || f->dmax != 0);
        return;
    case CFG_SIZE:
    case CFG_DURATION: {
        cfg_int_range(f, type, size, &lo, &hi);
        bool sz = type == CFG_SIZE;
        (sz ? cfg_format_size : cfg_format_duration)(a, sizeof a, lo);
        (sz ? cfg_format_size : cfg_format_duration)(b, sizeof b, hi);
        range_words(buf, n, sz ? "a size (like 512MiB)" : "a duration (like 10ms)", a, b,
                    lo > 0, hi < INT64_MAX);
        return;
    }
    case CFG_ENUM: {
        size_t used = (size_t)snprintf(buf, n, "one of");
        for (size_t i = 0; f->names && f->names[i] && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s %s", i ? "," : "", f->names[i]);
        return;
    }
    default:
        snprintf(buf, n, "%s", cfg_type_name(type));
    }
}

/* ---- parsing ----------------------------------------------------------------- */

static int parse_int(const char *t, long long *out)
{
    if (!t[0] || isspace((unsigned char)t[0])) return -1;
    const char *digits = t + (t[0] == '-' || t[0] == '+');
    int base = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X') ? 16 : 10;
    if (base == 16 && digits != t) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, base);
    if (errno || *end || end == t) return -1;
    *out = v;
    return 0;
}

/* "<number><unit>" with a non-negative decimal number and an optional space. */
static int parse_scaled(const char *t, const char *const *units, const long long *mults,
                        bool unit_required, long long *out)
{
    if (!isdigit((unsigned char)t[0]) && t[0] != '.') return -1;
    size_t ilen = strspn(t, "0123456789"), flen = 0;
    if (t[ilen] == '.') flen = 1 + strspn(t + ilen + 1, "0123456789");
    if (ilen + flen <= 1 && !isdigit((unsigned char)t[0])) return -1;
    const char *u = t + ilen + flen;
    if (*u == ' ') u++;
    long long mult = -1;
    for (size_t i = 0; units[i]; i++)
        if (strcasecmp(u, units[i]) == 0) mult = mults[i];
    if (mult < 0 && *u == '\0' && !unit_required) mult = 1;
    if (mult < 0) return -1;
    errno = 0;
    unsigned long long ip = ilen ? strtoull(t, NULL, 10) : 0;
    if (errno || ip > (unsigned long long)(INT64_MAX / mult)) return -1;
    long long v = (long long)ip * mult;
    if (flen > 1) {
        double frac = strtod(t + ilen, NULL) * (double)mult;
        if (frac >= (double)(INT64_MAX - v)) return -1;
        v += (long long)floor(frac);
    }
    *out = v;
    return 0;
}

static int parse_size(const char *t, long long *out)
{
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB",
                                        "TiB", NULL};
    static const long long mults[] = {1, 1000, 1000000, 1000000000, 1000000000000,
                                      CFG_KiB, CFG_MiB, CFG_GiB, CFG_TiB};
    return parse_scaled(t, units, mults, false, out);
}

static int parse_duration(const char *t, long long *out)
{
    static const char *const units[] = {"ns", "us", "ms", "s", "m", "min", "h", NULL};
    static const long long mults[] = {1, CFG_USEC, CFG_MSEC, CFG_SEC, 60 * CFG_SEC,
                                      60 * CFG_SEC, 3600 * CFG_SEC};
    if (strcmp(t, "0") == 0) {
        *out = 0;
        return 0;
    }
    return parse_scaled(t, units, mults, true, out);
}

static int parse_bool(const char *t, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(t, yes[i]) == 0) { *out = true; return 0; }
        if (strcasecmp(t, no[i]) == 0) { *out = false; return 0; }
    }
    return -1;
}

static void store_int(void *dst, size_t size, long long v)
{
    switch (size) {
    case 1: *(int8_t *)dst = (int8_t)v; break;
    case 2: *(int16_t *)dst = (int16_t)v; break;
    case 4: *(int32_t *)dst = (int32_t)v; break;
    default: *(int64_t *)dst = (int64_t)v; break;
    }
}

int cfg_scalar_parse(const cfg_field_t *f, cfg_type_t type, size_t size, const char *t, void *dst)
{
    long long v, lo, hi;
    switch (type) {
    case CFG_BOOL: return parse_bool(t, (bool *)dst);
    case CFG_STRING: {
        char *s = strdup(t);
        if (!s) return -1;
        *(char **)dst = s;
        return 0;
    }
    case CFG_ENUM:
        for (int i = 0; f->names && f->names[i]; i++)
            if (strcmp(f->names[i], t) == 0) {
                *(int *)dst = i;
                return 0;
            }
        return -1;
    case CFG_DOUBLE: {
        if (!t[0] || isspace((unsigned char)t[0])) return -1;
        char *end;
        double d = strtod(t, &end);
        if (*end || !isfinite(d)) return -1;
        if ((f->dmin != 0 || f->dmax != 0) && (d < f->dmin || d > f->dmax)) return -1;
        if (size == sizeof(float)) *(float *)dst = (float)d;
        else *(double *)dst = d;
        return 0;
    }
    case CFG_INT:
    case CFG_SIZE:
    case CFG_DURATION:
        if ((type == CFG_INT ? parse_int(t, &v)
             : type == CFG_SIZE ? parse_size(t, &v) : parse_duration(t, &v)) < 0)
            return -1;
        cfg_int_range(f, type, size, &lo, &hi);
        if (v < lo || v > hi) return -1;
        store_int(dst, size, v);
        return 0;
    default:
        return -1;
    }
}
