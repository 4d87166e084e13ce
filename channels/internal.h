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
/* The same for a message that came from another node (net.c): a replica forwards
 * only what its own node's producers put, never what other nodes sent it. */
int ch_channel_push_remote(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, cr_err_t *err);
/* The same without waiting: CR_EBUSY when the channel is full, and then m is
 * still the caller's. ch_channel_full says so beforehand (it may change). */
int ch_channel_try_push_remote(ch_channel_t *c, ch_msg_t *m, cr_err_t *err);
int ch_channel_full(ch_channel_t *c);

/* ---- replicas (replica.c) ---- */

/* A message's copy on its way to the peers, shared by their queues. */
typedef struct ch_fwd {
    atomic_int refs;
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
int ch_route_shm_open(ch_producer_t *p, const ch_where_t *to, cr_err_t *err);
int ch_route_remote_open(ch_producer_t *p, const ch_where_t *to, cr_err_t *err);

/* Hub internals the routes need. */
const char *ch_hub_node(const ch_hub_t *h);
const char *ch_hub_relay(const ch_hub_t *h);
/* Sets security, cert_dir, server_name and token of o to the hub's way of dialing
 * the relay (strings borrowed from the hub). */
struct rpc_opts;
void ch_hub_relay_security(const ch_hub_t *h, struct rpc_opts *o);
/* Why the hub's relay link is down, or "" while it is up or has not failed yet. */
void ch_hub_relay_error(ch_hub_t *h, char *buf, size_t n);
/* queue.c: waits until deadline_ns (-1 forever) until c has room for one message:
 * 0, CR_ETIMEDOUT, or CR_ECLOSED once it is destroyed. Takes no room. */
int ch_channel_wait_room(ch_channel_t *c, int64_t deadline_ns, cr_err_t *err);
int64_t ch_hub_reconnect_ms(const ch_hub_t *h);
int ch_hub_shm(const ch_hub_t *h);

#endif
