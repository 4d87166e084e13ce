/* relay.h - mounting the tunnel relay on an rpc server that hosts other services
 * (the controller's). The rest of the relay's API is in channels/channel.h.
 *
 * The controller does, before rpc_server_create:
 *     ch_relay_t *relay;
 *     ch_relay_create(NULL, &relay, err);          // no server of its own
 *     ch_relay_method(relay, &methods[n_methods++]); // one more row in its table
 * and after rpc_server_destroy: ch_relay_destroy(relay). Set the server's
 * rpc_opts_t.bulk to at least RPC_BULK_WINDOWS (tunnels are bulk streams) and
 * its max_message to at least CH_RELAY_MIN_MESSAGE. */
#ifndef CORRAL_CHANNELS_RELAY_H
#define CORRAL_CHANNELS_RELAY_H

#include "channels/channel.h"
#include "common/rpc/rpc.h"

/* The smallest message limit (rpc_opts_t.max_message) of a server hosting the
 * relay: a message of the channels' default largest size (16 MiB) in its frame
 * and envelope. */
#define CH_RELAY_MIN_MESSAGE ((size_t)(16u << 20) + 4096)

/* Fills one method-table row for "/corral.v1.Relay/Link" (bidirectional; frames
 * are forwarded on the queue thread, and on a handler thread, where a forward may
 * wait up to 5 s, when the receiver is behind). The relay must outlive the server
 * the row is given to. */
void ch_relay_method(ch_relay_t *r, rpc_method_t *out);

#endif
