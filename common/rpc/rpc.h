/* rpc.h - the one public header of corral's RPC layer over the gRPC C core.
 *
 * Messages are protobuf-c; the layer packs and unpacks them, so application code
 * never touches a grpc_byte_buffer. gRPC types do not appear here: a caller
 * includes this header and links corral_rpc. For bulk data there is a second way
 * in and out that copies nothing: a message the caller packed itself from pieces
 * it lends (rpc_out_t), and a received message kept as the bytes gRPC read
 * (rpc_bytes_t), for methods and streams that ask for it (on_raw).
 *
 * Server: the application passes a table of methods (full name, kind, message
 * descriptors, callbacks). Queue threads, each owning one completion queue, take
 * calls and completions; callbacks run on a pool of handler threads (so a slow
 * handler never stalls a queue), or on the queue thread itself for methods marked
 * RPC_METHOD_INLINE (fast, never-blocking handlers such as an echo). Callbacks of
 * one call never run concurrently and always in order: on_start, on_message
 * (once per request message, the next one only after the previous returned),
 * on_half_close, on_done (exactly once, last). Replies go through a bounded
 * per-call send queue with one send in flight (back-pressure).
 *
 * Client: a channel reconnects by itself with exponential backoff. Unary calls
 * block with a deadline; streams are asynchronous, with callbacks run on the
 * channel's own thread.
 *
 * Both ends: insecure, TLS or mutual TLS from a certificate directory (ca.pem,
 * cert.pem, key.pem; `corral certs` makes them), bearer tokens, message size
 * limits, and keepalive pings so a dead or frozen peer is noticed in ~2 s.
 *
 * Errors: functions return 0 or a negative CR_E* code with a message in the
 * caller's cr_err_t. Statuses map to and from CR_E* codes (rpc_code_from_err /
 * rpc_code_to_err); a status's details string travels as the message, and a
 * client's error message starts with the status name ("NOT_FOUND: no robot r1").
 */
#ifndef CORRAL_COMMON_RPC_RPC_H
#define CORRAL_COMMON_RPC_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ---- status codes ------------------------------------------------------ */

/* The gRPC status codes, same numbers as on the wire. */
typedef enum rpc_code {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16
} rpc_code_t;

/* "NOT_FOUND", ...; never NULL. */
const char *rpc_code_name(rpc_code_t code);

/* CR_E* -> status: ENOENT NOT_FOUND, EEXIST ALREADY_EXISTS, EINVAL INVALID_ARGUMENT,
 * EUNAVAIL/EBUSY/ECLOSED UNAVAILABLE, ETIMEDOUT DEADLINE_EXCEEDED, EPERM
 * PERMISSION_DENIED, ECANCELLED CANCELLED, ETOOBIG/ENOMEM/ENOSPC RESOURCE_EXHAUSTED,
 * ENOTSUP UNIMPLEMENTED, ECORRUPT DATA_LOSS, EVERSION FAILED_PRECONDITION, others
 * INTERNAL; 0 -> OK. */
rpc_code_t rpc_code_from_err(int cr_code);

/* status -> CR_E*: the inverse of the above where one exists; PERMISSION_DENIED and
 * UNAUTHENTICATED -> EPERM, RESOURCE_EXHAUSTED -> ETOOBIG, FAILED_PRECONDITION and
 * OUT_OF_RANGE -> EINVAL, ABORTED -> EBUSY, UNKNOWN -> EINTERNAL; OK -> 0. */
int rpc_code_to_err(rpc_code_t code);

/* ---- options shared by both ends ---------------------------------------- */

typedef enum rpc_security {
    RPC_INSECURE = 0,   /* plain HTTP/2; loopback and tests only */
    RPC_TLS,            /* server proves itself with cert.pem/key.pem, client checks ca.pem */
    RPC_MTLS            /* both ends present cert.pem/key.pem signed by ca.pem */
} rpc_security_t;

#define RPC_DEFAULT_MAX_MESSAGE (64u << 20)  /* bytes, each direction */
#define RPC_DEFAULT_KEEPALIVE_MS 1000        /* ping period and ping timeout */
#define RPC_DEFAULT_SEND_QUEUE 8             /* messages queued per call */
#define RPC_BULK_WINDOWS 2                   /* rpc_opts_t.bulk: windows without large reads */

/* Bearer tokens by scope, so one server can tell its callers apart (the
 * controller: the admin token for the CLI's calls, the join token for agents').
 * Scope i is bit (1u << i) of a method's scopes. Compared in constant time. */
#define RPC_TOKEN_SCOPES 4
typedef struct rpc_token {
    const char *name;              /* for messages: "admin", "join"; NULL = "scope N" */
    const char *secret;            /* NULL: no token for this scope */
} rpc_token_t;

/* Everything about a connection that is not the method: security, identity,
 * limits, liveness. Zero-initialise, then set what differs from the defaults.
 * Strings are borrowed for the duration of the create call only. */
typedef struct rpc_opts {
    rpc_security_t security;
    const char *cert_dir;          /* TLS/MTLS: directory with ca.pem, cert.pem, key.pem
                                      (a TLS client needs only ca.pem) */
    const char *server_name;       /* client TLS: name to check in the server's certificate
                                      when it differs from the target host; NULL = host */
    const char *token;             /* client: bearer token sent with every call;
                                      server: a token every method accepts (NULL = none);
                                      see tokens[] for tokens that only some accept */
    size_t max_message;            /* 0 = RPC_DEFAULT_MAX_MESSAGE */
    int keepalive_ms;              /* 0 = RPC_DEFAULT_KEEPALIVE_MS; <0 disables */
    int send_queue;                /* per-call queued sends; 0 = RPC_DEFAULT_SEND_QUEUE */
    int bulk;                      /* 1: streams carry large messages at a high rate (the
                                      data plane): fixed large HTTP/2 windows and large
                                      socket reads (conn.c says why); costs memory.
                                      RPC_BULK_WINDOWS: the windows only, for a server
                                      whose few bulk streams share it with many small
                                      ones (the controller: its relay beside the agents'
                                      sessions), where a large read buffer would stay
                                      with every idle connection */
    /* server only */
    rpc_token_t tokens[RPC_TOKEN_SCOPES]; /* the bearer token of each scope (secret NULL:
                                      the scope has none); a method accepts the scopes
                                      in its rpc_method_t.scopes (see there) */
    int queue_threads;             /* completion-queue threads; 0 = 1 */
    int pool_threads;              /* handler threads; 0 = 2 */
    /* client only */
    int backoff_initial_ms;        /* first reconnect delay; 0 = 100 */
    int backoff_max_ms;            /* cap on the reconnect delay; 0 = 2000 */
    int wait_for_ready;            /* 1: calls wait (up to their deadline) for a
                                      connection instead of failing UNAVAILABLE at once */
} rpc_opts_t;

/* ---- server ------------------------------------------------------------- */

typedef struct rpc_server rpc_server_t;
typedef struct rpc_call rpc_call_t;      /* one incoming call, as seen by its handlers */
typedef struct rpc_bytes rpc_bytes_t;    /* a received message as bytes (see below) */

typedef enum rpc_kind {
    RPC_UNARY = 0,          /* one request, one reply */
    RPC_CLIENT_STREAM,      /* many requests, one reply */
    RPC_SERVER_STREAM,      /* one request, many replies */
    RPC_BIDI                /* many each way */
} rpc_kind_t;

enum {
    /* Callbacks are fast and never block: run them on the queue thread (saves a
     * thread hop; an echo or a lookup in memory). Without it they run on the pool. */
    RPC_METHOD_INLINE = 1u << 0,
};

typedef struct rpc_method {
    const char *name;                          /* "/corral.v1.Echo/Unary" */
    rpc_kind_t kind;
    const ProtobufCMessageDescriptor *input;   /* requests are unpacked with this */
    const ProtobufCMessageDescriptor *output;  /* replies must be of this type */
    unsigned flags;                            /* RPC_METHOD_* */
    void *user;                                /* for the callbacks: rpc_call_method(c)->user */

    /* Optional: the call arrived, before its first message (set up per-call state). */
    void (*on_start)(rpc_call_t *call);
    /* Each request (unary and server-stream: exactly one). msg is borrowed until
     * return. Malformed or oversized requests never get here: the layer logs them
     * and answers INVALID_ARGUMENT / RESOURCE_EXHAUSTED. */
    void (*on_message)(rpc_call_t *call, const ProtobufCMessage *msg);
    /* Optional, client-stream and bidi: the client will send no more. NULL means
     * finish with OK once queued replies are sent. (A client that is cancelling can
     * look like a half-close here; on_done then reports CANCELLED.) */
    void (*on_half_close)(rpc_call_t *call);
    /* Optional: the call is over; code is the status sent, or CANCELLED when the
     * client cancelled, its deadline passed, or the connection died. Release
     * per-call state here. After it the layer drops its reference (rpc_call_ref). */
    void (*on_done)(rpc_call_t *call, rpc_code_t code);
    /* Optional, instead of on_message: each request as the bytes received, not
     * unpacked (input is then only documentation). Returns 0 and then owns msg
     * (rpc_bytes_free, now or later). An RPC_METHOD_INLINE handler that finds it
     * would have to block may instead return RPC_RAW_LATER without touching msg:
     * it is called again with the same msg on a handler thread, where it may
     * block (rpc_call_may_block), before any later message of the call. Oversized
     * requests still never get here; parsing, and refusing malformed bytes, is
     * the handler's job. */
    int (*on_raw)(rpc_call_t *call, rpc_bytes_t *msg);
    /* Which scoped tokens (rpc_opts_t.tokens) this method accepts: bit i for
     * scope i; the server's every-method token (rpc_opts_t.token) is accepted
     * too. A method is guarded when the server has an every-method token, or
     * when each of its scopes has a token (a scope without one guards nothing,
     * so a method it is listed for is open); else it is open. A guarded
     * call without a token, or with a token no scope has, is answered
     * UNAUTHENTICATED; with the token of a scope the method does not accept,
     * PERMISSION_DENIED; both name the scopes it accepts. */
    unsigned scopes;
} rpc_method_t;

#define RPC_RAW_LATER 1

/* Checks the method table and options and binds addr ("127.0.0.1:0" picks a free
 * port; "0.0.0.0:7443"). methods is borrowed and must outlive the server.
 * TLS/MTLS read cert_dir now; a missing or unreadable file is an error naming it. */
int rpc_server_create(rpc_server_t **out, const char *addr, const rpc_opts_t *opts,
                      const rpc_method_t *methods, size_t n_methods, cr_err_t *err);

/* The port bound (useful after ":0"). */
int rpc_server_port(const rpc_server_t *srv);

/* Starts the queue and pool threads; calls are served from now on. */
int rpc_server_start(rpc_server_t *srv, cr_err_t *err);

/* Stops taking calls, cancels open ones (their on_done runs with CANCELLED) and
 * waits until every call is finished. Idempotent; destroy calls it too. */
void rpc_server_stop(rpc_server_t *srv);

/* Stops if needed, then frees everything. NULL is a no-op. */
void rpc_server_destroy(rpc_server_t *srv);

/* -- inside a handler (any thread may call these while it holds a reference) -- */

/* Who is calling: filled before on_start / the first on_message. */
typedef struct rpc_peer {
    const char *address;     /* "ipv4:127.0.0.1:41234" */
    const char *cert_cn;     /* MTLS: common name of the verified client certificate; else NULL */
    const char *token;       /* bearer token presented, or NULL */
    int token_ok;            /* 1: the server has a token and the call presented it
                                (calls with a wrong token never reach handlers) */
    int token_scope;         /* the scope whose token was presented; -1: the
                                every-method token, or none */
} rpc_peer_t;

const rpc_peer_t *rpc_call_peer(const rpc_call_t *call);
const rpc_method_t *rpc_call_method(const rpc_call_t *call);

/* Whether the running callback may block: 0 on a queue thread (inline methods),
 * 1 on a handler thread. */
int rpc_call_may_block(const rpc_call_t *call);

/* Milliseconds until the client's deadline; INT64_MAX when it set none. */
int64_t rpc_call_deadline_left_ms(const rpc_call_t *call);

/* Per-call application pointer, NULL at first. */
void rpc_call_set_data(rpc_call_t *call, void *data);
void *rpc_call_data(const rpc_call_t *call);

/* Queues msg (packed now: the caller keeps msg). timeout_ms: 0 = return CR_EBUSY
 * at once when the send queue is full, >0 = wait up to that long, <0 = wait until
 * there is room. A queue thread (RPC_METHOD_INLINE callbacks, client callbacks)
 * never waits. Returns CR_ECLOSED once the call is finished or cancelled,
 * CR_ETOOBIG when msg exceeds the size limit, CR_EINVAL for a wrong message type. */
int rpc_call_send(rpc_call_t *call, const ProtobufCMessage *msg, int64_t timeout_ms,
                  cr_err_t *err);

/* Messages waiting in the send queue (including the one in flight). */
int rpc_call_send_queued(const rpc_call_t *call);

/* Unary / client-stream: send msg and OK together. */
int rpc_call_reply(rpc_call_t *call, const ProtobufCMessage *msg, cr_err_t *err);

/* Ends the call with code and a details message (printf-style, may be NULL) once
 * queued sends are out. A second finish is ignored (returns CR_ECLOSED). */
int rpc_call_finish(rpc_call_t *call, rpc_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Ends the call with the status mapped from e->code and e->msg as details. */
int rpc_call_fail(rpc_call_t *call, const cr_err_t *e);

/* Extra references keep the call object (not the call) alive past on_done, e.g.
 * in a table of open sessions another thread sends on; sends then return
 * CR_ECLOSED. Every ref needs one unref. */
void rpc_call_ref(rpc_call_t *call);
void rpc_call_unref(rpc_call_t *call);

/* ---- client ------------------------------------------------------------- */

typedef struct rpc_channel rpc_channel_t;
typedef struct rpc_stream rpc_stream_t;

/* A channel to target ("host:port"). Connects lazily, reconnects with backoff. */
int rpc_channel_create(rpc_channel_t **out, const char *target, const rpc_opts_t *opts,
                       cr_err_t *err);

/* Cancels open streams, waits for their on_close, frees. NULL is a no-op. Streams
 * must still be destroyed by their owners (before or after). */
void rpc_channel_destroy(rpc_channel_t *ch);

/* Connects now if idle and waits up to timeout_ms for READY: 0; CR_EUNAVAIL as
 * soon as a connection attempt fails (nothing listens there, unreachable, TLS
 * handshake refused); CR_ETIMEDOUT when still connecting at the time-out. */
int rpc_channel_wait_ready(rpc_channel_t *ch, int64_t timeout_ms, cr_err_t *err);

/* Blocking unary call. On 0, *resp is a message of resp_desc owned by the caller:
 * free it with protobuf_c_message_free_unpacked(*resp, NULL). On error, *resp is
 * NULL and the return is rpc_code_to_err(status) with "STATUS_NAME: details" in
 * err; a request over the size limit fails before any call with CR_ETOOBIG.
 * timeout_ms <= 0 means no deadline (avoid: a dead peer is then noticed only by
 * keepalive). Thread-safe; many threads may call at once. */
int rpc_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
              const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
              int64_t timeout_ms, cr_err_t *err);

/* Same, and *code (may be NULL) receives the exact status. */
int rpc_unary_code(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                   int64_t timeout_ms, rpc_code_t *code, cr_err_t *err);

/* Callbacks of a client stream, run on the channel's thread: keep them short;
 * they must not call rpc_stream_destroy or rpc_channel_destroy. */
typedef struct rpc_stream_cbs {
    /* A reply (client-stream: the one reply). msg borrowed until return; the
     * next message is read only after it returns (flow control). Optional. */
    void (*on_message)(rpc_stream_t *st, const ProtobufCMessage *msg, void *user);
    /* The stream ended; called exactly once, last. details never NULL. */
    void (*on_close)(rpc_stream_t *st, rpc_code_t code, const char *details, void *user);
    void *user;
    /* Optional, instead of on_message: each reply as the bytes received, owned by
     * the callback (rpc_bytes_free); resp_desc then only documents the type. */
    void (*on_raw)(rpc_stream_t *st, rpc_bytes_t *msg, void *user);
} rpc_stream_cbs_t;

/* Opens a stream of any kind (server-stream: send the one request, then
 * rpc_stream_close_send). resp_desc unpacks replies. timeout_ms <= 0: no deadline.
 * cbs is copied. The stream object is the caller's until rpc_stream_destroy. */
int rpc_stream_open(rpc_channel_t *ch, rpc_stream_t **out, const char *method,
                    const ProtobufCMessageDescriptor *resp_desc, const rpc_stream_cbs_t *cbs,
                    int64_t timeout_ms, cr_err_t *err);

/* Queues msg (packed now). timeout_ms as rpc_call_send: CR_EBUSY when the queue
 * stays full, CR_ECLOSED after the stream ended or close_send. */
int rpc_stream_send(rpc_stream_t *st, const ProtobufCMessage *msg, int64_t timeout_ms,
                    cr_err_t *err);

/* Messages waiting in the send queue (including the one in flight). */
int rpc_stream_send_queued(const rpc_stream_t *st);

/* Half-close: no more sends; sent once queued messages are out. */
int rpc_stream_close_send(rpc_stream_t *st, cr_err_t *err);

/* Cancels the stream; on_close follows with CANCELLED (unless it already ran). */
void rpc_stream_cancel(rpc_stream_t *st);

/* Waits up to timeout_ms (<0 forever) for the stream to end. Returns
 * rpc_code_to_err(status) with "STATUS_NAME: details" in err, or CR_ETIMEDOUT if it
 * is still open; *code (may be NULL) receives the status. */
int rpc_stream_wait(rpc_stream_t *st, int64_t timeout_ms, rpc_code_t *code, cr_err_t *err);

/* Cancels if still open, waits for on_close, frees. NULL is a no-op. */
void rpc_stream_destroy(rpc_stream_t *st);

/* ---- messages as bytes: sending and keeping them without copies ----------- */

/* An outgoing message the caller packed itself (protobuf wire format of the
 * method's type), as a list of pieces sent in order. rpc_out_ref lends bytes: they
 * are neither copied nor read until gRPC writes them, so they must stay unchanged
 * until release(user) runs; it runs exactly once per piece, on any thread, when
 * gRPC is done with them (after the write, or when the message is dropped because
 * the call ended or a send failed), possibly after the send call returned.
 * rpc_out_copy copies small pieces (headers). rpc_out_bytes takes a range of a
 * received message by reference (forwarding without a copy). The add functions
 * return 0 or CR_ENOMEM (rpc_out_ref calls release itself when it fails). */
typedef struct rpc_out rpc_out_t;

rpc_out_t *rpc_out_create(void);   /* NULL when out of memory */
int rpc_out_copy(rpc_out_t *o, const void *data, size_t len);
int rpc_out_ref(rpc_out_t *o, const void *data, size_t len, void (*release)(void *user), void *user);
int rpc_out_bytes(rpc_out_t *o, const rpc_bytes_t *b, size_t off, size_t len);
size_t rpc_out_len(const rpc_out_t *o);
void rpc_out_destroy(rpc_out_t *o);   /* NULL is a no-op */

/* Queue o like rpc_stream_send / rpc_call_send (same timeouts, codes and size
 * limit). They take o in every case: it is destroyed on error and its pieces
 * released once sent. The bytes are not checked against the method's type. */
int rpc_stream_send_out(rpc_stream_t *st, rpc_out_t *o, int64_t timeout_ms, cr_err_t *err);
int rpc_call_send_out(rpc_call_t *call, rpc_out_t *o, int64_t timeout_ms, cr_err_t *err);

/* A received message kept as the slices gRPC read it into (no copy, not
 * contiguous), for on_raw handlers; valid until rpc_bytes_free, on any thread. */
size_t rpc_bytes_len(const rpc_bytes_t *b);
/* Copies up to n bytes from offset off into dst; returns how many (fewer at the end). */
size_t rpc_bytes_read(const rpc_bytes_t *b, size_t off, void *dst, size_t n);
void rpc_bytes_free(rpc_bytes_t *b);   /* NULL is a no-op */
/* A message as if received, made from len bytes copied out of data and cut into
 * slices of piece bytes (0: one slice), for tests and fuzzers of on_raw parsers.
 * NULL when out of memory. */
rpc_bytes_t *rpc_bytes_from(const void *data, size_t len, size_t piece);

/* ---- reconnect helper ---------------------------------------------------- */

/* Exponential backoff with jitter for re-opening a long-lived stream (an agent's
 * session): delays grow from initial_ms by x1.6 up to max_ms, +-20% jitter. */
typedef struct rpc_backoff {
    int initial_ms, max_ms;
    double next_ms;
} rpc_backoff_t;

void rpc_backoff_init(rpc_backoff_t *b, int initial_ms, int max_ms);
int rpc_backoff_next_ms(rpc_backoff_t *b);   /* the delay to sleep before the next try */
void rpc_backoff_reset(rpc_backoff_t *b);    /* after a success */

/* ---- certificates --------------------------------------------------------- */

/* Makes certificate directories for RPC_TLS / RPC_MTLS under dir:
 *   dir/ca.pem, dir/ca-key.pem       the CA (reused when present, so clients can
 *                                    be added later)
 *   dir/server/{ca,cert,key}.pem     CN = hosts[0]; SANs = hosts + localhost + 127.0.0.1
 *                                    (kept when n_hosts is 0 and it exists)
 *   dir/<client>/{ca,cert,key}.pem   one per client name, CN = the name
 * Keys are EC P-256, written 0600; certificates valid for 10 years. Each
 * directory is a complete cert_dir for rpc_opts_t. hosts may be empty
 * (n_hosts 0: "localhost"). Names must be simple (letters, digits, '.', '-', '_'). */
int rpc_certs_make(const char *dir, const char *const *hosts, size_t n_hosts,
                   const char *const *clients, size_t n_clients, cr_err_t *err);

#endif
