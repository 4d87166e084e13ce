/* internal.h - what the files of channels/ share and no one else sees: the hub's
 * registry, the one way every route hands a message to a channel, the replica side
 * of replicated channels, the producer and its route vtable, and the shared-memory
 * ring. */
#ifndef CORRAL_CHANNELS_INTERNAL_H
#define CORRAL_CHANNELS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "channels/channel.h"

#define CH_DEFAULT_CAPACITY 1024
#define CH_DEFAULT_MAX_MSG (16u << 20)
#define CH_DEFAULT_WINDOW 64
#define CH_NAME_MAX 64

/* A message with room for len bytes of data; NULL when out of memory. */
ch_msg_t *ch_msg_alloc(size_t len);
/* route_shm.c: frees a message whose data is a view into a shared-memory ring
 * (its data does not follow the struct), releasing the ring space. */
void ch_shm_view_free(ch_msg_t *m);

/* Called once a message of a local producer is acknowledged: by every live peer
 * replica, or at once when the channel is not replicated or did not queue it.
 * Runs on any thread (a peer's, or the pusher's own), perhaps under the replica's
 * lock: it must only record the acknowledgement and never call into the channel. */
typedef void (*ch_ack_fn)(void *user, uint64_t arg);

/* The replica side of a replicated channel (replica.c), or NULL. */
typedef struct ch_replica ch_replica_t;

/* Hands m to channel c, the one entry point of every route. Takes m in every case
 * (frees it when refused or duplicate). Returns 0 when queued, 1 when dropped as a
 * duplicate (already acknowledged), CR_ETIMEDOUT when no room came before deadline_ns
 * (0: no wait, -1: forever), CR_ETOOBIG, CR_ECLOSED. */
int ch_channel_push(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, cr_err_t *err);
/* Room taken ahead (the in-process route's reserve): waits until deadline_ns for a
 * free slot and holds it; the push that follows then never waits. 0, CR_ETIMEDOUT
 * or CR_ECLOSED. Every successful reserve is followed by one push_reserved or one
 * unreserve. */
int ch_channel_reserve(ch_channel_t *c, int64_t deadline_ns, cr_err_t *err);
int ch_channel_push_reserved(ch_channel_t *c, ch_msg_t *m, cr_err_t *err);
void ch_channel_unreserve(ch_channel_t *c);
/* As ch_channel_push / ch_channel_push_reserved, for a local producer that wants
 * to know when the message is safe: done(user, arg) runs exactly once, when every
 * live peer replica acknowledged it, or at once (before return, perhaps) when the
 * channel is not replicated, the message is a duplicate, or it was refused. */
int ch_channel_push_acked(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, ch_ack_fn done, void *user,
                          uint64_t arg, cr_err_t *err);
int ch_channel_push_reserved_acked(ch_channel_t *c, ch_msg_t *m, ch_ack_fn done, void *user, uint64_t arg,
                                   cr_err_t *err);
/* The same for a message that came from another node (net.c): a replica forwards
 * only what its own node's producers put, never what other nodes sent it. */
int ch_channel_push_remote(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, cr_err_t *err);
/* The same without waiting: CR_EBUSY when the channel is full, and then m is
 * still the caller's. ch_channel_full says so beforehand (it may change). */
int ch_channel_try_push_remote(ch_channel_t *c, ch_msg_t *m, cr_err_t *err);
int ch_channel_full(ch_channel_t *c);

/* ---- replicas (replica.c) ---- */

/* A message's copy on its way to the peers, shared by their queues. Every peer
 * holds a reference until the peer acknowledged it (or was dropped); the last
 * reference runs done, so done means "every live peer has it". */
typedef struct ch_fwd {
    atomic_int refs;
    ch_ack_fn done;
    void *done_user;
    uint64_t done_arg;
    uint64_t producer, seq;
    double weight;
    size_t len;
    uint8_t data[];
} ch_fwd_t;

ch_fwd_t *ch_fwd_new(const ch_msg_t *m); /* refs 1; NULL when out of memory */
void ch_fwd_unref(ch_fwd_t *f);
/* Takes room for one message in every live peer's queue, waiting until
 * deadline_ns (-1 forever); then exactly one ch_replica_commit. 0, CR_ETIMEDOUT,
 * CR_ECLOSED. */
int ch_replica_reserve(ch_replica_t *r, int64_t deadline_ns, cr_err_t *err);
/* Queues f (when not NULL: the message was accepted) for every live peer and
 * gives the room back. Takes f. */
void ch_replica_commit(ch_replica_t *r, ch_fwd_t *f);
/* The largest message every live peer with a known limit takes (SIZE_MAX when none
 * says), and the node of the smallest (for the error); a local message over it is
 * refused at once rather than forwarded and refused there. */
size_t ch_replica_limit(ch_replica_t *r, char *node, size_t node_len);
/* Wakes the peers' threads: a forwarding producer was acknowledged. */
void ch_replica_poke(void *r);
/* Stop wakes everyone waiting for room (CR_ECLOSED) and refuses new messages;
 * destroy, once no put can reach the replica, joins its threads and frees. */
void ch_replica_stop(ch_replica_t *r);
void ch_replica_destroy(ch_replica_t *r);
int ch_replica_create(ch_channel_t *c, ch_hub_t *h, ch_replica_t **out, cr_err_t *err);
int ch_replica_set(ch_replica_t *r, const ch_where_t *replicas, size_t n, const ch_replica_opts_t *o,
                   cr_err_t *err);
size_t ch_replica_stats(ch_replica_t *r, ch_replica_peer_stats_t *out, size_t max);
int ch_replica_flush(ch_replica_t *r, int64_t deadline_ns, cr_err_t *err);
/* Whether (producer, seq) was already accepted (acknowledge again, do not queue);
 * counts it as a duplicate when it was. */
int ch_channel_seen(ch_channel_t *c, uint64_t producer, uint64_t seq);
void ch_channel_count_rejected(ch_channel_t *c);
size_t ch_channel_max_msg(const ch_channel_t *c);
ch_hub_t *ch_channel_hub(const ch_channel_t *c);

/* Finds a channel and holds it against destruction until ch_channel_release; for
 * server threads that deliver into it. */
int ch_channel_acquire(ch_hub_t *h, const char *name, ch_channel_t **out, cr_err_t *err);
void ch_channel_release(ch_channel_t *c);

/* ---- shared-memory ring (shm_ring.c) ---- */

typedef struct ch_ring ch_ring_t;

/* Consumer side: creates the ring file for (hub id, channel name). */
int ch_ring_create(uint64_t hub, const char *name, size_t max_msg, ch_ring_t **out,
                   cr_err_t *err);
/* Removes ring files left by consumer processes that died without closing them
 * (SIGKILL); returns how many. */
int ch_ring_sweep(void);
/* Producer side: maps an existing ring; CR_ENOENT when there is none. */
int ch_ring_attach(uint64_t hub, const char *name, ch_ring_t **out, cr_err_t *err);
/* Writes one record; blocks for room up to deadline_ns (-1 forever). CR_EUNAVAIL
 * when the consumer process is gone, CR_ECLOSED when it closed the ring. */
int ch_ring_write(ch_ring_t *r, uint64_t producer, uint64_t seq, double weight,
                  const void *data, size_t len, int64_t deadline_ns, uint64_t *end, cr_err_t *err);
/* The same in two steps: reserve waits for room for a record of up to len bytes
 * and returns where its payload goes, holding the writers' lock; commit publishes
 * the first n <= len bytes as a record and releases the lock; abort releases it
 * and publishes nothing. Both on the thread that reserved. */
int ch_ring_reserve(ch_ring_t *r, size_t len, int64_t deadline_ns, void **buf, cr_err_t *err);
void ch_ring_commit(ch_ring_t *r, uint64_t producer, uint64_t seq, double weight, size_t n, uint64_t *end);
void ch_ring_abort(ch_ring_t *r);
/* A record as the consumer reads it: data points into the ring and stays valid
 * until the ring is released past end. */
typedef struct ch_ring_rec {
    uint64_t producer, seq;
    double weight;
    size_t len;
    const void *data;
    uint64_t end;
} ch_ring_rec_t;

/* Consumer: reads the next record, waiting up to deadline_ns. CR_ETIMEDOUT when
 * nothing came; CR_ECORRUPT when a writer left garbage (it is skipped up to
 * out->end, which must be released like a record). Records stay in the ring until
 * released, in order, with ch_ring_release_to, so a full channel (or a consumer
 * holding messages) keeps back-pressure on the writers. */
int ch_ring_read(ch_ring_t *r, ch_ring_rec_t *out, int64_t deadline_ns, cr_err_t *err);
void ch_ring_release_to(ch_ring_t *r, uint64_t end);
size_t ch_ring_size(const ch_ring_t *r);
/* The release position: every record that ended at or before it is consumed (the
 * *end ch_ring_write reported is the producer's acknowledgement mark). */
uint64_t ch_ring_tail(ch_ring_t *r);
/* Whether the consumer closed the ring or its process is gone. */
int ch_ring_closed(ch_ring_t *r);
/* Consumer: marks closed, unlinks the file, wakes writers. */
void ch_ring_close(ch_ring_t *r);
void ch_ring_destroy(ch_ring_t *r);
size_t ch_ring_max_msg(const ch_ring_t *r);
/* Test hooks: take the writers' lock and keep it (a writer about to die), and
 * append n bytes that are not a record (a writer that ignores the format). */
void ch_ring_test_lock(ch_ring_t *r);
int ch_ring_test_garbage(ch_ring_t *r, size_t n, cr_err_t *err);

/* ---- producers and their routes ---- */

typedef struct ch_route_ops {
    /* Waits until deadline_ns for room for one message of up to len bytes and
     * returns where to write it. */
    int (*reserve)(ch_producer_t *p, size_t len, void **buf, int64_t deadline_ns, cr_err_t *err);
    /* Sends the reserved message with its first len bytes as seq; never waits. */
    int (*commit)(ch_producer_t *p, uint64_t seq, size_t len, double weight, cr_err_t *err);
    /* Drops the reservation. */
    void (*abort)(ch_producer_t *p);
    /* Waits until everything put is acknowledged. */
    int (*flush)(ch_producer_t *p, int64_t deadline_ns, cr_err_t *err);
    size_t (*unacked)(ch_producer_t *p);
    void (*close)(ch_producer_t *p);
    /* Optional: how long messages have waited for an acknowledgement without any
     * coming (0 when nothing waits); how a dead peer is told from a slow one. */
    int64_t (*stalled_ns)(ch_producer_t *p);
} ch_route_ops_t;

struct ch_producer {
    ch_hub_t *hub;
    char name[CH_NAME_MAX];
    ch_route_kind_t kind;
    const ch_route_ops_t *ops;
    uint64_t id;
    uint64_t next_seq;
    size_t reserved;    /* bytes of the reservation being written, or 0 with !has_resv */
    int has_resv;
    size_t window;
    size_t max_msg;
    _Atomic uint64_t reconnects;
    _Atomic uint64_t refused; /* messages the consumer refused one by one (too large) */
    /* Optional: run by the remote route (on its stream's thread, under its lock)
     * whenever an acknowledgement arrives; replica.c wakes its forwarding thread. */
    void (*on_ack)(void *user);
    void *on_ack_user;
    void *route; /* the route's own state */
};

/* producer.c: a put numbered seq (> every seq put so far) instead of the next one,
 * for those that keep an origin producer's numbering (forwarders, fan-out). */
int ch_put_seq(ch_producer_t *p, uint64_t seq, const void *data, size_t len, double weight,
               int64_t timeout_ms, cr_err_t *err);
int64_t ch_producer_stalled_ns(ch_producer_t *p);

int ch_route_inproc_open(ch_producer_t *p, cr_err_t *err);
int ch_route_fanout_open(ch_producer_t *p, const ch_where_t *replicas, size_t n, int64_t peer_timeout_ms,
                         const ch_producer_opts_t *o, cr_err_t *err);
/* Follows a new replica set: replicas that left are closed, new ones get this
 * producer's messages from its next seq on (route_fanout.c). */
int ch_route_fanout_update(ch_producer_t *p, const ch_where_t *replicas, size_t n, cr_err_t *err);
int ch_route_shm_open(ch_producer_t *p, const ch_where_t *to, cr_err_t *err);
int ch_route_remote_open(ch_producer_t *p, const ch_where_t *to, cr_err_t *err);

/* ---- the channel directory's client (dirclient.c) ---- */

#define CH_DIR_MAX 64

/* A replica set as the directory sent it; w[i] point into node[i] and addr[i]. */
typedef struct ch_dir_set {
    uint64_t gen;     /* the directory's generation (restarts with the directory) */
    uint64_t version; /* this hub's count of sets received: 0 none yet; changes with
                         every set, also across a restart of the directory */
    size_t n;
    ch_where_t w[CH_DIR_MAX];
    char node[CH_DIR_MAX][CH_NAME_MAX];
    char addr[CH_DIR_MAX][160];
} ch_dir_set_t;

typedef struct ch_dirclient ch_dirclient_t;
typedef struct ch_dir_watch ch_dir_watch_t;

int ch_dirclient_start(ch_hub_t *h, const char *addr, ch_dirclient_t **out, cr_err_t *err);
void ch_dirclient_stop(ch_dirclient_t *dc);
/* The channel's replica leaves the directory (before the channel is freed). */
void ch_dirclient_leave(ch_dirclient_t *dc, ch_channel_t *c);
/* The hub's watch of channel name (made on first use; lives as long as the hub),
 * waiting until deadline_ns for a first set from the directory. */
int ch_dirclient_watch(ch_dirclient_t *dc, const char *name, int64_t deadline_ns, ch_dir_watch_t **out,
                       cr_err_t *err);
/* Copies the newest set of w into out. */
void ch_dir_watch_get(ch_dir_watch_t *w, ch_dir_set_t *out);
/* The version (ch_dir_set_t) of w's newest set. */
uint64_t ch_dir_watch_version(ch_dir_watch_t *w);
/* Waits until w's newest set is not of version v, or deadline_ns: 0 or CR_ETIMEDOUT. */
int ch_dir_watch_wait(ch_dir_watch_t *w, uint64_t v, int64_t deadline_ns, cr_err_t *err);
ch_dirclient_t *ch_hub_dir(const ch_hub_t *h);
/* route_named.c: a producer that follows the replica set of watch w. */
int ch_route_named_open(ch_producer_t *p, ch_dir_watch_t *w, const ch_producer_opts_t *o, cr_err_t *err);

/* Hub internals the routes need. */
const char *ch_hub_node(const ch_hub_t *h);
const char *ch_hub_relay(const ch_hub_t *h);
/* Sets security, cert_dir, server_name and token of o to the hub's way of dialing
 * the relay (strings borrowed from the hub). */
struct rpc_opts;
/* The address others dial for a server bound at `listen` on `port`: the advertised
 * host when given, else the listen host, with 127.0.0.1 for a wildcard host. */
void ch_listen_addr(const char *listen, const char *advertise, int port, char *out, size_t n);
void ch_hub_relay_security(const ch_hub_t *h, struct rpc_opts *o);
/* Why the hub's relay link is down, or "" while it is up or has not failed yet. */
void ch_hub_relay_error(ch_hub_t *h, char *buf, size_t n);
/* queue.c: waits until deadline_ns (-1 forever) until c has room for one message:
 * 0, CR_ETIMEDOUT, or CR_ECLOSED once it is destroyed. Takes no room. */
int ch_channel_wait_room(ch_channel_t *c, int64_t deadline_ns, cr_err_t *err);
int64_t ch_hub_reconnect_ms(const ch_hub_t *h);
int ch_hub_shm(const ch_hub_t *h);

#endif
