/* log.h - leveled, tagged, timestamped logging to stderr or a file.
 *
 * One line per call, written with a single write(2) so lines from several threads
 * or processes appending to one file never interleave. The component tag names who
 * speaks ("buffer", "rpc", "agent"), so a merged log of a whole experiment reads. */
#ifndef CORRAL_COMMON_LOG_H
#define CORRAL_COMMON_LOG_H

typedef enum cr_log_level {
    CR_LOG_DEBUG = 0,
    CR_LOG_INFO,
    CR_LOG_WARN,
    CR_LOG_ERROR,
    CR_LOG_OFF
} cr_log_level_t;

/* Messages below level are dropped. Default INFO, or CORRAL_LOG_LEVEL from the
 * environment (debug, info, warn, error, off) at the first log call. */
void cr_log_set_level(cr_log_level_t level);
cr_log_level_t cr_log_get_level(void);

/* Parses "debug" / "info" / "warn" / "error" / "off"; -1 when unknown. */
int cr_log_level_parse(const char *s);

/* Sends output to path (appended, created 0644), or back to stderr when path is
 * NULL. Returns 0 or a negative CR_E* code; on failure the old target stays. */
int cr_log_open(const char *path);

void cr_log(cr_log_level_t level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CR_DEBUG(tag, ...) cr_log(CR_LOG_DEBUG, tag, __VA_ARGS__)
#define CR_INFO(tag, ...)  cr_log(CR_LOG_INFO, tag, __VA_ARGS__)
#define CR_WARN(tag, ...)  cr_log(CR_LOG_WARN, tag, __VA_ARGS__)
#define CR_ERROR(tag, ...) cr_log(CR_LOG_ERROR, tag, __VA_ARGS__)

#endif
