/* bytes.c - messages as bytes, for bulk data that should not be copied: an
 * outgoing message built from pieces the caller lends (rpc_out_t, a slice buffer
 * whose slices point at the caller's memory and call its release when gRPC drops
 * the last reference), and a received message kept as the slices gRPC read it
 * into (rpc_bytes_t, a raw byte buffer owned by the application until it frees it).
 * Forwarding a range of a received message takes references to its slices, so a
 * relay moves bulk bytes without touching them. */
#include "common/rpc/internal.h"

#include <stdlib.h>
#include <string.h>

struct rpc_out {
    grpc_slice_buffer sb;
};

struct rpc_bytes {
    grpc_byte_buffer *bb; /* raw, uncompressed */
};

rpc_out_t *rpc_out_create(void)
{
    rpc_out_t *o = malloc(sizeof *o);
    if (o) grpc_slice_buffer_init(&o->sb);
    return o;
}

int rpc_out_copy(rpc_out_t *o, const void *data, size_t len)
{
    if (len) grpc_slice_buffer_add(&o->sb, grpc_slice_from_copied_buffer(data, len));
    return 0;
}

int rpc_out_ref(rpc_out_t *o, const void *data, size_t len, void (*release)(void *user), void *user)
{
    if (len == 0) {
        if (release) release(user);
        return 0;
    }
    /* gRPC calls release(user) when the slice's last reference goes: after the
     * write, or when the byte buffer holding it is destroyed unsent. */
    grpc_slice s = grpc_slice_new_with_user_data((void *)data, len, release, user);
    grpc_slice_buffer_add(&o->sb, s);
    return 0;
}

int rpc_out_bytes(rpc_out_t *o, const rpc_bytes_t *b, size_t off, size_t len)
{
    const grpc_slice_buffer *in = &b->bb->data.raw.slice_buffer;
    size_t pos = 0;
    for (size_t i = 0; i < in->count && len; i++) {
        size_t n = GRPC_SLICE_LENGTH(in->slices[i]);
        if (off < pos + n) {
            size_t a = off - pos, take = n - a < len ? n - a : len;
            /* a reference to part of the slice (a copy only for tiny inlined ones) */
            grpc_slice_buffer_add(&o->sb, grpc_slice_sub(in->slices[i], a, a + take));
            off += take;
            len -= take;
        }
        pos += n;
    }
    return 0;
}

size_t rpc_out_len(const rpc_out_t *o) { return o->sb.length; }

void rpc_out_destroy(rpc_out_t *o)
{
    if (!o) return;
    grpc_slice_buffer_destroy(&o->sb);
    free(o);
}

grpc_byte_buffer *rpc_out_take(rpc_out_t *o)
{
    /* The byte buffer takes its own references; ours go with o. */
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(o->sb.slices, o->sb.count);
    rpc_out_destroy(o);
    return bb;
}

rpc_bytes_t *rpc_bytes_wrap(grpc_byte_buffer *bb)
{
    rpc_bytes_t *b = malloc(sizeof *b);
    if (!b) {
        grpc_byte_buffer_destroy(bb);
        return NULL;
    }
    if (bb->data.raw.compression != GRPC_COMPRESS_NONE) {
        /* Not expected (the layer asks for no compression), but read it plainly. */
        grpc_byte_buffer_reader r;
        grpc_slice all = grpc_empty_slice();
        if (grpc_byte_buffer_reader_init(&r, bb)) {
            all = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
        }
        grpc_byte_buffer_destroy(bb);
        bb = grpc_raw_byte_buffer_create(&all, 1);
        grpc_slice_unref(all);
    }
    b->bb = bb;
    return b;
}

size_t rpc_bytes_len(const rpc_bytes_t *b) { return b->bb->data.raw.slice_buffer.length; }

size_t rpc_bytes_read(const rpc_bytes_t *b, size_t off, void *dst, size_t n)
{
    const grpc_slice_buffer *in = &b->bb->data.raw.slice_buffer;
    uint8_t *out = dst;
    size_t pos = 0, done = 0;
    for (size_t i = 0; i < in->count && done < n; i++) {
        size_t len = GRPC_SLICE_LENGTH(in->slices[i]);
        if (off < pos + len) {
            size_t a = off - pos, take = len - a < n - done ? len - a : n - done;
            memcpy(out + done, GRPC_SLICE_START_PTR(in->slices[i]) + a, take);
            done += take;
            off += take;
        }
        pos += len;
    }
    return done;
}

void rpc_bytes_free(rpc_bytes_t *b)
{
    if (!b) return;
    grpc_byte_buffer_destroy(b->bb);
    free(b);
}

rpc_bytes_t *rpc_bytes_from(const void *data, size_t len, size_t piece)
{
    if (piece == 0 || piece > len) piece = len ? len : 1;
    size_t n = len ? (len + piece - 1) / piece : 0;
    grpc_slice *s = malloc((n ? n : 1) * sizeof *s);
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t take = len - i * piece < piece ? len - i * piece : piece;
        s[i] = grpc_slice_from_copied_buffer((const char *)data + i * piece, take);
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(s, n);
    for (size_t i = 0; i < n; i++) grpc_slice_unref(s[i]);
    free(s);
    return bb ? rpc_bytes_wrap(bb) : NULL;
}
