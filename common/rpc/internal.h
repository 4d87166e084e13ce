/* internal.h - what the files of common/rpc share and callers never see: gRPC
 * includes, completion-queue tags, message packing, channel arguments and
 * credentials, the bounded send queue and the handler pool. */
#ifndef CORRAL_COMMON_RPC_INTERNAL_H
#define CORRAL_COMMON_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>

#include "common/rpc/rpc.h"

/* Every completion-queue tag points at one of these, embedded in the object the
 * event belongs to; kind says which operation finished. */
typedef struct rpc_tag {
    int kind;
    void *obj;
} rpc_tag_t;

/* Set on completion-queue threads (server queues, channel threads): a send from
 * there must never wait, since the completion that frees room would be processed
 * by the waiting thread itself. */
extern _Thread_local int rpc_on_queue_thread;

/* grpc_init plus, once per process, gRPC's log routed to cr_log and malloc
 * tuned for large messages; release undoes grpc_init. */
void rpc_lib_acquire(void);
void rpc_lib_release(void);

/* Packs msg (which must be of type want, when want is not NULL) into a byte
 * buffer that owns the bytes; CR_ETOOBIG above max. NULL on error. */
grpc_byte_buffer *rpc_msg_pack(const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *want,
                               size_t max, cr_err_t *err);
/* Unpacks bb with desc; NULL when malformed. *len receives the byte count. */
ProtobufCMessage *rpc_msg_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                                 size_t *len);

/* bytes.c: the byte buffer of a caller-packed message (o is consumed), and a
 * received byte buffer as the application's rpc_bytes_t (bb is consumed; NULL
 * when out of memory). */
grpc_byte_buffer *rpc_out_take(rpc_out_t *o);
rpc_bytes_t *rpc_bytes_wrap(grpc_byte_buffer *bb);

/* Channel arguments for one end, from opts (defaults filled in). */
#define RPC_MAX_ARGS 32
typedef struct rpc_args {
    grpc_arg arg[RPC_MAX_ARGS];
    grpc_channel_args set;
} rpc_args_t;
void rpc_args_build(rpc_args_t *a, const rpc_opts_t *o, int server);

size_t rpc_opts_max_message(const rpc_opts_t *o);
int rpc_opts_send_queue(const rpc_opts_t *o);

int rpc_server_creds(const rpc_opts_t *o, grpc_server_credentials **out, cr_err_t *err);
int rpc_channel_creds(const rpc_opts_t *o, grpc_channel_credentials **out, cr_err_t *err);

/* "Bearer <token>" compare, in time independent of where they differ. */
int rpc_token_equal(const char *a, size_t alen, const char *b, size_t blen);

/* Deadline helpers: a gpr deadline timeout_ms from now (<= 0: none), and the
 * milliseconds left before one. */
gpr_timespec rpc_deadline(int64_t timeout_ms);
int64_t rpc_deadline_left_ms(gpr_timespec deadline);

/* Bounded FIFO of packed messages; the head is the one in flight. */
typedef struct rpc_sendq {
    grpc_byte_buffer **item;
    int cap, head, count;
} rpc_sendq_t;
int rpc_sendq_init(rpc_sendq_t *q, int cap);
void rpc_sendq_push(rpc_sendq_t *q, grpc_byte_buffer *bb);   /* count < cap */
grpc_byte_buffer *rpc_sendq_head(const rpc_sendq_t *q);
void rpc_sendq_pop(rpc_sendq_t *q);        /* destroys the head */
void rpc_sendq_clear(rpc_sendq_t *q);      /* destroys all */
void rpc_sendq_free(rpc_sendq_t *q);

/* Waits on cv until deadline_ns (monotonic; <0 forever). 0, or ETIMEDOUT. */
int rpc_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns);
void rpc_cond_init_monotonic(pthread_cond_t *cv);

/* Handler pool: items are embedded in their owners and run once per submit. */
typedef struct rpc_work {
    struct rpc_work *next;
    void (*fn)(struct rpc_work *w);
} rpc_work_t;

typedef struct rpc_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_work_t *head, *tail;
    pthread_t *thread;
    int n, started, stop;
} rpc_pool_t;

int rpc_pool_start(rpc_pool_t *p, int n, cr_err_t *err);
void rpc_pool_submit(rpc_pool_t *p, rpc_work_t *w);
/* Runs what is queued, then joins the threads. */
void rpc_pool_stop(rpc_pool_t *p);

#endif
