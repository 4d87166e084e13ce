/* router.c - which route a message takes and which replica a producer writes to.
 * Both are pure functions of where the two ends run, so the choice is the same in
 * every process and is tested without any network. */
#include "channels/channel.h"

#include <string.h>

static int same_str(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

ch_route_kind_t ch_route_pick(const ch_where_t *from, const ch_where_t *to)
{
    if (same_str(from->node, to->node)) {
        if (from->process == to->process) return CH_ROUTE_INPROC;
        return CH_ROUTE_SHM;
    }
    if (to->inbound && to->addr && to->addr[0]) return CH_ROUTE_DIRECT;
    return CH_ROUTE_TUNNEL;
}

const char *ch_route_name(ch_route_kind_t k)
{
    switch (k) {
    case CH_ROUTE_INPROC: return "inproc";
    case CH_ROUTE_SHM: return "shm";
    case CH_ROUTE_DIRECT: return "direct";
    case CH_ROUTE_TUNNEL: return "tunnel";
    case CH_ROUTE_FANOUT: return "fanout";
    }
    return "unknown";
}

int ch_replica_pick(const ch_where_t *replicas, size_t n, const char *producer_node)
{
    for (size_t i = 0; i < n; i++)
        if (same_str(replicas[i].node, producer_node)) return (int)i;
    return -1;
}
