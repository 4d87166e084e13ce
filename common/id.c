/* id.c - random ids and resource-name validation for id.h. */
#include "id.h"
#include "err.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

uint64_t cr_id_new(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) {
            /* getrandom cannot fail on Linux >= 3.17 once the pool is ready; keep
             * a weak fallback rather than returning a constant. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            id = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
        }
    }
    return id;
}

void cr_id_format(uint64_t id, char out[CR_ID_HEX_LEN + 1])
{
    snprintf(out, CR_ID_HEX_LEN + 1, "%016llx", (unsigned long long)id);
}

int cr_id_parse(const char *s, uint64_t *id)
{
    if (!s || strlen(s) != CR_ID_HEX_LEN) return CR_EINVAL;
    uint64_t v = 0;
    for (int i = 0; i < CR_ID_HEX_LEN; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return CR_EINVAL;
        v = v << 4 | (uint64_t)d;
    }
    *id = v;
    return 0;
}

int cr_name_valid(const char *name)
{
    if (!name) return 0;
    size_t n = strlen(name);
    if (n == 0 || n > 63) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));
        if (!ok) return 0;
    }
    return 1;
}
