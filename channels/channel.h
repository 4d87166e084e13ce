/* channel.h - the data plane: named, bounded channels between the processes of an
 * experiment, wherever they run, and versioned weight sync on top of them.
 *
 * A channel lives in its consumer's process (on the consumer's node). The consumer
 * creates it in its hub and reads with ch_get / ch_get_batch. A producer opens it by
 * name and by where the consumer runs (ch_where_t); the router, never the caller,
 * picks the route: an in-process queue, a shared-memory ring on the same node, a
 * direct gRPC stream to the consumer's node, or a stream tunnelled through a relay
 * (hosted by the controller) when the consumer's node accepts no inbound connection.
 *
 * A channel with consumers on several nodes has one replica per node (see
 * "replicas" below); the channel directory on the controller tells the processes
 * where the replicas are, and producers by name write to their own node's.
 *
 * Delivery: every message carries (producer id, sequence). Messages of one producer
 * arrive in order. A remote route keeps what the consumer has not acknowledged and
 * resends it after reconnecting; the channel drops duplicates by (producer, seq), so
 * each acknowledged message is delivered exactly once to the queue.
 *
 * Copies: ch_put copies the caller's bytes and ch_get returns a message the caller
 * may keep as long as it likes. For bulk data there is a zero-copy pair: the
 * producer writes a message in place (ch_put_reserve / ch_put_commit: straight into
 * the shared-memory ring, or into the buffer the remote route sends from and keeps
 * for resending), and the consumer reads it in place (ch_get_view: a large message
 * from the shared-memory route is a view into the ring, valid until freed).
 *
 * Ownership: the caller owns everything it creates with a _create / _open call and
 * frees it with the matching _destroy / _close. Messages returned by ch_get are owned
 * by the caller (ch_msg_free). Pointers passed in are borrowed for the call only,
 * unless a comment says otherwise. All calls are thread-safe unless stated. */
#ifndef CORRAL_CHANNELS_CHANNEL_H
#define CORRAL_CHANNELS_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct ch_hub ch_hub_t;           /* one per process: its channels and routes */
typedef struct ch_channel ch_channel_t;   /* the consumer side of a channel */
typedef struct ch_producer ch_producer_t; /* the producer side, bound to one route */

/* ---- messages ---------------------------------------------------------------- */

/* A message as the consumer receives it, owned by the caller until ch_msg_free.
 * The data pointer must not be changed. From ch_get the data is the caller's own
 * copy. From ch_get_view a large message of the shared-memory route is a read-only
 * view into the ring (see there). */
typedef struct ch_msg {
    uint64_t producer; /* id of the producer that put it (non-zero) */
    uint64_t seq;      /* that producer's sequence number, from 1 */
    double weight;     /* caller-chosen weight, summed by ch_get_batch */
    size_t len;        /* bytes of data */
    void *data;
} ch_msg_t;

void ch_msg_free(ch_msg_t *m);

/* ---- hub: one per process ------------------------------------------------------ */

struct rpc_opts; /* common/rpc/rpc.h's rpc_opts_t */

typedef struct ch_hub_opts {
    const char *node;       /* this process's node name (cr_name_valid); required */
    int shm;                /* export channels through shared memory rings (default on:
                               pass -1 to turn off) */
    const char *listen;     /* "host:port" to serve the direct route on ("0.0.0.0:0"
                               picks a port), or NULL for none */
    const char *advertise;  /* host others dial for the direct route (default: the
                               listen host, or 127.0.0.1 when that is 0.0.0.0) */
    const char *relay;      /* "host:port" of the relay (the controller) to dial out to
                               for tunnelled channels, or NULL */
    const struct rpc_opts *relay_rpc; /* how to dial the relay: pass the node's own
                               options for the controller (the agent's rpc_opts_t), so
                               a controller serving mutual TLS accepts the hub with the
                               node's certificate. Only security, cert_dir, server_name
                               and token are read (copied); NULL: insecure, for loopback
                               and single-machine set-ups. The directory client dials
                               with them too */
    const char *directory;  /* "host:port" of the channel directory (the controller) for
                               ch_channel_join and ch_producer_open_named, or NULL */
    int64_t reconnect_ms;   /* first reconnect back-off, default 100 ms (max 2 s) */
} ch_hub_opts_t;

int ch_hub_create(const ch_hub_opts_t *o, ch_hub_t **out, cr_err_t *err);
/* Stops the hub's servers and links. Close the hub's producers and destroy its
 * channels first. */
void ch_hub_destroy(ch_hub_t *h);

/* Where this hub's consumers can be found by others: node, process id, the address
 * of the direct route ("" when not listening; the real port when "...:0" was asked)
 * and inbound (1 when listening). Pointers stay valid for the hub's life. */
typedef struct ch_where {
    const char *node;     /* node name */
    uint64_t process;     /* the consumer hub's id (ch_hub_id) */
    const char *addr;     /* direct route address, "" or NULL when none */
    int inbound;          /* whether the node accepts inbound connections */
    size_t max_msg;       /* replicas: the channel's max_msg_bytes there, when known
                             (the channel directory says); 0: unknown */
} ch_where_t;

void ch_hub_where(const ch_hub_t *h, ch_where_t *out);
uint64_t ch_hub_id(const ch_hub_t *h);

/* Waits up to timeout_ms for the hub's link to the relay to be up (connected,
 * TLS handshake done, registered). CR_EINVAL when the hub has no relay;
 * CR_EUNAVAIL with the reason when the last attempt failed (nothing answers at the
 * relay; it refused the TLS handshake, i.e. the node's certificate or security
 * settings); CR_ETIMEDOUT when still connecting. The link keeps retrying either
 * way: this only reports. */
int ch_hub_relay_wait(ch_hub_t *h, int64_t timeout_ms, cr_err_t *err);

/* ---- router (pure) ---------------------------------------------------------------- */

typedef enum ch_route_kind {
    CH_ROUTE_INPROC = 0, /* same process: the queue itself */
    CH_ROUTE_SHM,        /* same node, another process: shared-memory ring */
    CH_ROUTE_DIRECT,     /* another node that accepts inbound: gRPC stream */
    CH_ROUTE_TUNNEL,     /* another node behind NAT: stream relayed by the controller */
    CH_ROUTE_FANOUT,     /* every replica of a replicated channel, each by its route */
} ch_route_kind_t;

/* The route from a producer at `from` to a consumer at `to`. Pure. */
ch_route_kind_t ch_route_pick(const ch_where_t *from, const ch_where_t *to);
const char *ch_route_name(ch_route_kind_t k);

/* Traffic localisation: the replica on the producer's own node, as an index into
 * replicas, or -1 when there is none there (n == 0 too). Pure. */
int ch_replica_pick(const ch_where_t *replicas, size_t n, const char *producer_node);

/* ---- consumer side ---------------------------------------------------------------- */

typedef struct ch_opts {
    size_t capacity;      /* messages queued before put blocks; default 1024 */
    size_t max_msg_bytes; /* larger messages are refused; default 16 MiB */
    int latest_wins;      /* keep only the newest message; put never blocks */
} ch_opts_t;

/* Creates channel `name` (cr_name_valid) in hub h, reachable by every route the hub
 * serves. CR_EEXIST when the hub already has one of that name. */
int ch_channel_create(ch_hub_t *h, const char *name, const ch_opts_t *o,
                      ch_channel_t **out, cr_err_t *err);
/* Unregisters, wakes blocked callers (they get CR_ECLOSED) and frees queued
 * messages. Waits for in-process producers of the channel to be closed first
 * (remote and shared-memory producers then get errors: CR_ENOENT, CR_ECLOSED). */
void ch_channel_destroy(ch_channel_t *c);

/* Looks a channel of hub h up by name; CR_ENOENT names it when unknown. Borrowed. */
int ch_channel_find(ch_hub_t *h, const char *name, ch_channel_t **out, cr_err_t *err);

/* Takes the oldest message, waiting up to timeout_ms (0: do not wait, <0: forever).
 * CR_ETIMEDOUT when none came, CR_ECLOSED when the channel was destroyed. */
int ch_get(ch_channel_t *c, ch_msg_t **out, int64_t timeout_ms, cr_err_t *err);

/* Takes up to max_count messages whose weights sum to at most max_weight (0: no
 * weight limit; a single heavier message is still returned alone). Waits until the
 * batch is full by count or weight, or until timeout_ms, then returns what is
 * there; CR_ETIMEDOUT only when nothing came. *n is the number written to out. */
int ch_get_batch(ch_channel_t *c, ch_msg_t **out, size_t max_count, double max_weight,
                 int64_t timeout_ms, size_t *n, cr_err_t *err);

/* Zero-copy reads: as ch_get / ch_get_batch, but a large message (>= 64 KiB) that
 * came through the shared-memory route is returned as a read-only view into the
 * ring instead of a copy. Free views promptly: the ring is released in order, so
 * a view kept pins the ring behind it, and once the producers have gone round the
 * ring (2 x max_msg_bytes, at least 8 MiB) they wait until it is freed. Messages
 * of other routes are the same as from ch_get. Use ch_get for messages you keep. */
int ch_get_view(ch_channel_t *c, ch_msg_t **out, int64_t timeout_ms, cr_err_t *err);
int ch_get_batch_view(ch_channel_t *c, ch_msg_t **out, size_t max_count, double max_weight,
                      int64_t timeout_ms, size_t *n, cr_err_t *err);

/* ---- replicas: one channel, consumers on several nodes ---------------------- */

/* A replicated channel has one replica per node that consumes it: a channel of the
 * same name on each of those nodes (in the process that consumes there), and every
 * replica receives every message once, so the consumers of each node see them all.
 * Producers open it with ch_producer_open_replicated: a producer on a node with a
 * replica writes to that one (in-process or shared memory), which forwards what its
 * local producers put to every other replica, keeping (producer, seq), so the
 * copies crossing nodes are one per replica; a producer on a node without one
 * writes to every replica itself. The replicas themselves drop duplicates.
 *
 * Acknowledgement: a replica acknowledges a local producer's message only once
 * every live peer replica has acknowledged it (or was dropped as gone), so a
 * replica whose process dies right after a put was acknowledged leaves that
 * message at every other live replica: nothing acknowledged is lost while one
 * replica lives. The local producer keeps its window meanwhile (the shared-memory
 * ring, or on the in-process route up to its `window` messages waiting), so it
 * does not wait a round trip per message.
 *
 * Placement: the channel directory, hosted by the controller, tells every
 * process where the replicas are. A consumer's channel joins it
 * (ch_channel_join); the directory hands every replica the set, with a
 * generation, and again at every change, and the replica re-replicates with it.
 * A producer opens the channel by name (ch_producer_open_named) and follows the
 * set: the replica on its node when there is one, else the only replica plainly
 * when there is one, else all. A replica leaves the
 * set when its channel is destroyed, its process dies (its call to the directory
 * ends) or its node's agent is lost; a restarted consumer joins again as a new
 * process and gets what is put from then on. ch_channel_replicate and
 * ch_producer_open_replicated remain for a set given by hand.
 *
 * When a replica's node goes away, the others lose nothing of what live producers
 * put: a peer that acknowledges nothing for peer_timeout_ms (or refuses the
 * channel) is dropped from the set, with a log line, and is no longer waited for.
 * Until then a forward queue that is full (max_pending messages) holds up the
 * local producers: a slow replica slows the channel rather than missing messages.
 * A replica that refuses one message (too large for it) is not dropped: when its
 * limit is known (from the directory: ch_where_t.max_msg) ch_put refuses the
 * message at once with CR_ETOOBIG; otherwise the replica skips it (counted in
 * refused, logged) and, for a fan-out producer, ch_producer_flush reports it. */
typedef struct ch_replica_opts {
    int64_t peer_timeout_ms; /* default 10 s */
    size_t max_pending;      /* messages queued per peer; default 4096 */
} ch_replica_opts_t;

/* Makes c the replica on this node of a channel replicated on `replicas` (their
 * where, this one's included; one per node). Copied. Calling it again replaces the
 * set (peers already known keep their queues). */
int ch_channel_replicate(ch_channel_t *c, const ch_where_t *replicas, size_t n, const ch_replica_opts_t *o,
                         cr_err_t *err);

typedef struct ch_replica_peer_stats {
    char node[64];
    uint64_t forwarded;      /* acknowledged by the peer */
    uint64_t refused;        /* single messages the peer refused (too large there) */
    size_t pending;          /* queued or in flight */
    int gone;                /* dropped from the set */
} ch_replica_peer_stats_t;

/* Fills up to max entries (one per peer); returns the number of peers. */
size_t ch_channel_replica_stats(ch_channel_t *c, ch_replica_peer_stats_t *out, size_t max);
/* Waits until every live peer has acknowledged everything forwarded so far. */
int ch_channel_replica_flush(ch_channel_t *c, int64_t timeout_ms, cr_err_t *err);

/* Makes c this node's replica of its channel through the hub's channel directory
 * (hub option directory): registers it, and from then on replicates it with every
 * set the directory sends, until c is destroyed (which leaves the set). Waits up to
 * timeout_ms for the first set that holds c (CR_ETIMEDOUT otherwise: c stays
 * registered and joins when the directory answers). CR_EEXIST when c joined
 * already; CR_EBUSY when a newer replica of the channel on this node took its place. */
int ch_channel_join(ch_channel_t *c, const ch_replica_opts_t *o, int64_t timeout_ms, cr_err_t *err);
/* The generation of the directory's set c was last replicated with; 0 before any. */
uint64_t ch_channel_directory_generation(ch_channel_t *c);
/* The generation of the newest set of channel name this hub's producers follow
 * (they take it up at their next put); 0 when none was received. */
uint64_t ch_hub_directory_generation(ch_hub_t *h, const char *name);

typedef struct ch_stats {
    uint64_t accepted;   /* messages queued */
    uint64_t duplicates; /* dropped as already seen (producer, seq) */
    uint64_t replaced;   /* dropped by latest-wins */
    uint64_t rejected;   /* refused: too large or malformed */
    size_t queued;       /* messages waiting now */
} ch_stats_t;

void ch_channel_stats(ch_channel_t *c, ch_stats_t *out);
const char *ch_channel_name(const ch_channel_t *c);

/* ---- producer side ---------------------------------------------------------------- */

typedef struct ch_producer_opts {
    uint64_t id;        /* producer id; 0 picks a random one. Reuse an id (and
                           next_seq) after a restart to keep deduplication. */
    uint64_t next_seq;  /* first sequence number, default 1 */
    size_t window;      /* unacknowledged messages kept for resending (remote routes)
                           before put blocks; default 64 */
    size_t max_msg_bytes; /* default 16 MiB */
    int64_t peer_timeout_ms; /* fan-out to replicas: drop one silent this long; 10 s */
} ch_producer_opts_t;

/* Opens channel `name` of the consumer at `to` from hub h, over the route
 * ch_route_pick(where of h, to) chooses. For local routes the channel must exist
 * (CR_ENOENT otherwise); remote routes connect in the background and report an
 * unknown name as an error from ch_put / ch_producer_flush. */
int ch_producer_open(ch_hub_t *h, const char *name, const ch_where_t *to,
                     const ch_producer_opts_t *o, ch_producer_t **out, cr_err_t *err);
/* Opens a replicated channel (see "replicas" above): the replica on this hub's
 * node when there is one, else every replica (the route is then CH_ROUTE_FANOUT;
 * a replica that acknowledges nothing for o->peer_timeout_ms is dropped). */
int ch_producer_open_replicated(ch_hub_t *h, const char *name, const ch_where_t *replicas,
                                size_t n, const ch_producer_opts_t *o, ch_producer_t **out,
                                cr_err_t *err);
/* Opens channel `name` through the hub's channel directory (hub option directory):
 * the replica on this hub's node when there is one, else the only replica by its
 * route (direct or tunnel), else every replica (fan-out; see "replicas" above),
 * following every change of the set at the next put. Waits up
 * to timeout_ms for the directory's first answer (CR_EUNAVAIL when none came).
 * While the set is empty, puts wait for a replica (up to their time-out). */
int ch_producer_open_named(ch_hub_t *h, const char *name, const ch_producer_opts_t *o, int64_t timeout_ms,
                           ch_producer_t **out, cr_err_t *err);
/* Does not wait for acknowledgements: call ch_producer_flush first to be sure. */
void ch_producer_close(ch_producer_t *p);

/* Copies len bytes and sends them; waits up to timeout_ms (<0: forever) for room
 * (back-pressure). CR_ETOOBIG for a message over the limit; CR_ENOENT when the
 * consumer has no such channel; CR_ETIMEDOUT when no room came. Not thread-safe
 * per producer (one producer = one ordered stream); use one producer per thread. */
int ch_put(ch_producer_t *p, const void *data, size_t len, double weight,
           int64_t timeout_ms, cr_err_t *err);

/* Zero-copy put, in two steps on the same thread. ch_put_reserve waits up to
 * timeout_ms (<0: forever) for room for a message of up to len bytes, as ch_put
 * does, and returns in *buf where to write it: a place in the shared-memory ring,
 * or the buffer the remote route will send from (and keep until acknowledged),
 * or the in-process message itself. ch_put_commit(p, n, weight) then sends the
 * first n <= len bytes written there; it never waits (room was taken by reserve).
 * ch_put_abort drops a reservation. Until the commit or abort the producer has
 * no other put, and on the shared-memory route other producers of the channel
 * wait for this one: write the message promptly. ch_put is reserve, memcpy,
 * commit. Errors as ch_put; a failed reserve leaves nothing to commit. */
int ch_put_reserve(ch_producer_t *p, size_t len, void **buf, int64_t timeout_ms, cr_err_t *err);
int ch_put_commit(ch_producer_t *p, size_t len, double weight, cr_err_t *err);
void ch_put_abort(ch_producer_t *p);

/* Waits until every message put so far is acknowledged by the consumer's channel
 * (queued there; for a large message read in place from shared memory: freed; on
 * a replicated channel: at every live replica). */
int ch_producer_flush(ch_producer_t *p, int64_t timeout_ms, cr_err_t *err);

/* Messages put but not yet acknowledged. */
size_t ch_producer_unacked(ch_producer_t *p);
/* The route (for a producer opened by name: the one of the moment). */
ch_route_kind_t ch_producer_route(const ch_producer_t *p);
uint64_t ch_producer_id(const ch_producer_t *p);
/* Times the route was re-established after a break (remote routes). */
uint64_t ch_producer_reconnects(const ch_producer_t *p);
/* Messages the consumer refused one by one (too large for its channel); each is
 * also reported once by the ch_producer_flush that follows. */
uint64_t ch_producer_refused(const ch_producer_t *p);

/* ---- relay (hosted by the controller) --------------------------------------------- */

/* The tunnel relay: corral.v1.Relay/Link, a bidirectional stream every node behind
 * NAT (and every producer that sends to one) dials out to; the relay forwards frames
 * between registered endpoints. The controller mounts it on its rpc server with
 * ch_relay_method (declared in channels/relay.h, which needs common/rpc/rpc.h);
 * ch_relay_create runs a stand-alone relay on its own port (tests, benches). */
typedef struct ch_relay ch_relay_t;
int ch_relay_create(const char *listen, ch_relay_t **out, cr_err_t *err);
/* The bound "host:port". */
const char *ch_relay_addr(const ch_relay_t *r);
void ch_relay_destroy(ch_relay_t *r);

/* ---- weight sync -------------------------------------------------------------------- */

/* One named tensor of a weight blob (bytes are opaque to the data plane). */
typedef struct ch_tensor {
    const char *name;
    const void *data;
    size_t bytes;
} ch_tensor_t;

/* A complete version as a subscriber holds it; owned by whoever ch_wsync_sub_take
 * handed it to; freed with ch_weights_free. */
typedef struct ch_weights {
    uint64_t version;
    size_t n;
    ch_tensor_t *t; /* names and data owned by this struct */
} ch_weights_t;

void ch_weights_free(ch_weights_t *w);

typedef struct ch_wsync_opts {
    size_t chunk_bytes;      /* default 1 MiB */
    double max_bytes_per_s;  /* cap over all subscribers; 0: no cap */
    size_t max_inflight;     /* unacknowledged chunks per subscriber; default 4 */
    int delta;               /* send only tensors changed since the subscriber's
                                last complete version */
} ch_wsync_opts_t;

typedef struct ch_wsync_pub ch_wsync_pub_t;
typedef struct ch_wsync_sub ch_wsync_sub_t;

/* A publisher sending to n subscribers through producers subs[] (borrowed: they must
 * outlive the publisher; the publisher's thread is their only user). */
int ch_wsync_pub_create(const ch_wsync_opts_t *o, ch_producer_t **subs, size_t n,
                        ch_wsync_pub_t **out, cr_err_t *err);
void ch_wsync_pub_destroy(ch_wsync_pub_t *p);

/* Snapshots the tensors (copied) as `version` (greater than the last) and returns;
 * a background thread sends it. A version still being sent is abandoned for the
 * newer one (subscribers keep their last complete version). */
int ch_wsync_publish(ch_wsync_pub_t *p, uint64_t version, const ch_tensor_t *t, size_t n,
                     cr_err_t *err);
/* Waits until every subscriber has been sent (and acknowledged) `version` or newer. */
int ch_wsync_pub_wait(ch_wsync_pub_t *p, uint64_t version, int64_t timeout_ms,
                      cr_err_t *err);
/* Payload bytes sent so far (all subscribers). */
uint64_t ch_wsync_pub_bytes_sent(ch_wsync_pub_t *p);

/* A subscriber assembling versions from channel c (borrowed; the subscriber's thread
 * is its only reader). It keeps only the newest complete version. */
int ch_wsync_sub_create(ch_channel_t *c, ch_wsync_sub_t **out, cr_err_t *err);
void ch_wsync_sub_destroy(ch_wsync_sub_t *s);

/* At a safe point: when a version newer than `have` is complete, hands it over
 * (*out, caller frees) and returns 1; returns 0 when there is none. Never blocks. */
int ch_wsync_sub_take(ch_wsync_sub_t *s, uint64_t have, ch_weights_t **out);
/* Waits up to timeout_ms until version >= v is complete (then ch_wsync_sub_take). */
int ch_wsync_sub_wait(ch_wsync_sub_t *s, uint64_t v, int64_t timeout_ms, cr_err_t *err);
/* Chunks refused as malformed (a bad peer), for tests and logs. */
uint64_t ch_wsync_sub_rejected(ch_wsync_sub_t *s);

#endif
