/* directory.h - the channel directory (corral.v1.ChannelDirectory/Watch): where the
 * replicas of each named channel are, hosted by the controller beside the relay.
 * The hub's side (joining a channel, opening a producer by name) is in
 * channels/channel.h; this header is for whoever hosts the service.
 *
 * A consumer hub that holds a channel's replica on its node calls Watch with its
 * replica: it is in the channel's set for as long as that call lasts (its process
 * dies, its hub leaves, or its node is lost: it leaves the set). Producers call
 * Watch without one. Every change of a set goes to every watcher of the channel,
 * with the directory's change counter as its generation. One replica per node: a
 * newer replica of the same channel on the same node replaces the older (a
 * restarted process whose predecessor's call has not ended yet), whose call ends
 * with ABORTED. A replica whose node was marked lost while its hub still reaches
 * the directory joins again when its hub calls back (a node lost by mistake). The
 * directory keeps nothing on disk: after a controller restart the hubs call again
 * and the sets form anew (their generations start again).
 *
 * The controller does, before rpc_server_create:
 *     ch_directory_create(NULL, &dir, err);
 *     ch_directory_method(dir, &methods[n_methods++]);
 * calls ch_directory_node_lost(dir, node) when it marks a node lost, and after
 * rpc_server_destroy: ch_directory_destroy(dir). */
#ifndef CORRAL_CHANNELS_DIRECTORY_H
#define CORRAL_CHANNELS_DIRECTORY_H

#include "channels/channel.h"
#include "common/rpc/rpc.h"

typedef struct ch_directory ch_directory_t;

/* listen NULL: no server of its own (mount it with ch_directory_method); else a
 * stand-alone directory on that address (tests, benches). */
int ch_directory_create(const char *listen, ch_directory_t **out, cr_err_t *err);
/* The bound "host:port" of a stand-alone directory ("" otherwise). */
const char *ch_directory_addr(const ch_directory_t *d);
/* Fills one method-table row for "/corral.v1.ChannelDirectory/Watch". The
 * directory must outlive the server the row is given to. */
void ch_directory_method(ch_directory_t *d, rpc_method_t *out);
/* Every replica on node leaves its sets (the node's agent was lost): their calls
 * end with UNAVAILABLE and the other watchers get the smaller sets. Returns how
 * many replicas left. */
size_t ch_directory_node_lost(ch_directory_t *d, const char *node);
/* Replicas in the set of channel name now (tests, logs). */
size_t ch_directory_replicas(ch_directory_t *d, const char *name);
void ch_directory_destroy(ch_directory_t *d);

#endif
