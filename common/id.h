/* id.h - identifiers: random 64-bit ids and their fixed-width hex spelling.
 * Producers of transitions, experiment runs and RPC sessions each carry one; they
 * come from getrandom(2), so two processes started in the same nanosecond still
 * differ, and 64 bits keep collisions out of reach for any realistic fleet. */
#ifndef CORRAL_COMMON_ID_H
#define CORRAL_COMMON_ID_H

#include <stddef.h>
#include <stdint.h>

#define CR_ID_HEX_LEN 16 /* characters, without the terminating NUL */

/* A random non-zero id. */
uint64_t cr_id_new(void);

/* Writes id as 16 lower-case hex digits plus NUL into out (>= 17 bytes). */
void cr_id_format(uint64_t id, char out[CR_ID_HEX_LEN + 1]);

/* Parses exactly 16 hex digits; returns 0 or CR_EINVAL. */
int cr_id_parse(const char *s, uint64_t *id);

/* Whether name is a valid resource name: [a-z0-9_-], 1..63 characters, starting
 * with a letter or digit. Used for robots, nodes, experiments and channels. */
int cr_name_valid(const char *name);

#endif
