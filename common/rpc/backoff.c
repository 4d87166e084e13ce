/* backoff.c - exponential backoff with jitter for re-opening long-lived streams.
 * The jitter spreads out a fleet of agents that lost the controller at the same
 * moment, so they do not all reconnect in the same millisecond. */
#include "common/rpc/rpc.h"

#include <stdlib.h>
#include <sys/random.h>

void rpc_backoff_init(rpc_backoff_t *b, int initial_ms, int max_ms)
{
    b->initial_ms = initial_ms > 0 ? initial_ms : 100;
    b->max_ms = max_ms >= b->initial_ms ? max_ms : b->initial_ms;
    b->next_ms = b->initial_ms;
}

int rpc_backoff_next_ms(rpc_backoff_t *b)
{
    unsigned r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r) r = (unsigned)rand();
    double jitter = 0.8 + 0.4 * (r / 4294967295.0);
    int ms = (int)(b->next_ms * jitter);
    b->next_ms *= 1.6;
    if (b->next_ms > b->max_ms) b->next_ms = b->max_ms;
    return ms < 1 ? 1 : ms;
}

void rpc_backoff_reset(rpc_backoff_t *b)
{
    b->next_ms = b->initial_ms;
}
