/* msg.c - protobuf-c messages in and out of gRPC byte buffers, and the bounded
 * per-call queue of packed messages waiting for their turn on the wire. Packing
 * happens in the sender's thread, so the queue holds bytes, not borrowed messages. */
#include "common/rpc/internal.h"

#include <stdlib.h>
#include <string.h>

grpc_byte_buffer *rpc_msg_pack(const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *want,
                               size_t max, cr_err_t *err)
{
    if (!msg || msg->descriptor == NULL) {
        cr_err_set(err, CR_EINVAL, "no message to send");
        return NULL;
    }
    if (want && msg->descriptor != want) {
        cr_err_set(err, CR_EINVAL, "message is a %s, the method sends %s",
                   msg->descriptor->name, want->name);
        return NULL;
    }
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > max) {
        cr_err_set(err, CR_ETOOBIG, "%s of %zu bytes exceeds the message limit of %zu bytes",
                   msg->descriptor->name, n, max);
        return NULL;
    }
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        cr_err_set(err, CR_ENOMEM, "no memory for a message of %zu bytes", n);
        return NULL;
    }
    protobuf_c_message_pack(msg, buf);
    grpc_slice s = grpc_slice_new(buf, n, free);   /* the slice owns buf */
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

ProtobufCMessage *rpc_msg_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                                 size_t *len)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) {
        *len = 0;
        return NULL;
    }
    ProtobufCMessage *m;
    grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    if (bb->data.raw.compression == GRPC_COMPRESS_NONE && sb->count == 1) {
        /* The common case: one slice, read in place with no copy. */
        *len = GRPC_SLICE_LENGTH(sb->slices[0]);
        m = protobuf_c_message_unpack(desc, NULL, *len, GRPC_SLICE_START_PTR(sb->slices[0]));
    } else {
        grpc_slice all = grpc_byte_buffer_reader_readall(&r);
        *len = GRPC_SLICE_LENGTH(all);
        m = protobuf_c_message_unpack(desc, NULL, *len, GRPC_SLICE_START_PTR(all));
        grpc_slice_unref(all);
    }
    grpc_byte_buffer_reader_destroy(&r);
    return m;
}

int rpc_sendq_init(rpc_sendq_t *q, int cap)
{
    q->item = calloc((size_t)cap, sizeof *q->item);
    q->cap = cap;
    q->head = q->count = 0;
    return q->item ? 0 : CR_ENOMEM;
}

void rpc_sendq_push(rpc_sendq_t *q, grpc_byte_buffer *bb)
{
    q->item[(q->head + q->count) % q->cap] = bb;
    q->count++;
}

grpc_byte_buffer *rpc_sendq_head(const rpc_sendq_t *q)
{
    return q->count ? q->item[q->head] : NULL;
}

void rpc_sendq_pop(rpc_sendq_t *q)
{
    if (!q->count) return;
    grpc_byte_buffer_destroy(q->item[q->head]);
    q->item[q->head] = NULL;
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

void rpc_sendq_clear(rpc_sendq_t *q)
{
    while (q->count) rpc_sendq_pop(q);
}

void rpc_sendq_free(rpc_sendq_t *q)
{
    if (!q->item) return;
    rpc_sendq_clear(q);
    free(q->item);
    q->item = NULL;
}
