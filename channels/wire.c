/* wire.c - the data plane's frames (proto/corral/v1/channel.proto) written and read
 * by hand around the bulk bytes, so a message's data is never packed into or
 * unpacked out of a protobuf buffer: the sender puts a few header bytes in front of
 * the data it lends to gRPC, and the receiver reads the small fields from the bytes
 * gRPC received and copies the data once, straight to where it belongs.
 *
 * What is written is plain protobuf (the data field last, which the format allows),
 * so any protobuf peer reads it. What is read is any valid encoding of the same
 * messages, in any field order, with unknown fields skipped; anything else is an
 * error naming what was wrong, never a crash: the bytes come from the network. */
#include "channels/wire.h"

#include <stdio.h>
#include <string.h>

enum { WT_VARINT = 0, WT_FIXED64 = 1, WT_LEN = 2, WT_FIXED32 = 5 };

/* ---- writing ---- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t put_tag(uint8_t *p, unsigned field, unsigned wt) { return put_varint(p, (uint64_t)field << 3 | wt); }

static size_t put_str(uint8_t *p, unsigned field, const char *s)
{
    size_t len = strlen(s), n = put_tag(p, field, WT_LEN);
    n += put_varint(p + n, len);
    memcpy(p + n, s, len);
    return n + len;
}

/* The ChFrame DATA fields before the data's bytes (the data tag and length last). */
static size_t frame_head(uint8_t *p, const char *channel, uint64_t producer, uint64_t seq, double weight,
                         size_t len)
{
    size_t n = put_str(p, 2, channel); /* kind DATA is 0: the default, not written */
    n += put_tag(p + n, 3, WT_VARINT);
    n += put_varint(p + n, producer);
    n += put_tag(p + n, 4, WT_VARINT);
    n += put_varint(p + n, seq);
    if (weight != 0) {
        n += put_tag(p + n, 5, WT_FIXED64);
        memcpy(p + n, &weight, 8); /* little-endian, as protobuf's fixed64 */
        n += 8;
    }
    n += put_tag(p + n, 6, WT_LEN);
    n += put_varint(p + n, len);
    return n;
}

size_t ch_wire_data_head(uint8_t *out, const char *dst, const char *channel, uint64_t producer, uint64_t seq,
                         double weight, size_t len)
{
    if (!dst) return frame_head(out, channel, producer, seq, weight, len);
    uint8_t inner[CH_WIRE_HEAD_MAX];
    size_t in = frame_head(inner, channel, producer, seq, weight, len);
    size_t n = put_str(out, 3, dst);
    n += put_tag(out + n, 4, WT_LEN);
    n += put_varint(out + n, in + len);
    memcpy(out + n, inner, in);
    return n + in;
}

size_t ch_wire_relay_head(uint8_t *out, const char *src, size_t frame_len)
{
    size_t n = put_str(out, 2, src);
    n += put_tag(out + n, 4, WT_LEN);
    n += put_varint(out + n, frame_len);
    return n;
}

/* ---- reading ---- */

typedef struct cur {
    const rpc_bytes_t *b;
    size_t off, end;
} cur_t;

static int get_varint(cur_t *c, uint64_t *v)
{
    uint8_t buf[10];
    size_t n = rpc_bytes_read(c->b, c->off, buf, c->end - c->off < 10 ? c->end - c->off : 10);
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        x |= (uint64_t)(buf[i] & 0x7f) << (7 * i);
        if (!(buf[i] & 0x80)) {
            c->off += i + 1;
            *v = x;
            return 0;
        }
    }
    return -1; /* truncated, or longer than 10 bytes */
}

/* Reads the length of a length-delimited field and checks it fits. */
static int get_len(cur_t *c, size_t *len)
{
    uint64_t v;
    if (get_varint(c, &v) || v > c->end - c->off) return -1;
    *len = (size_t)v;
    return 0;
}

/* A string field into out (cap bytes with the NUL); -1 when longer, or when it
 * holds a NUL, unless truncate (free text: cut at cap, or at the NUL). */
static int get_str(cur_t *c, char *out, size_t cap, int truncate)
{
    size_t len;
    if (get_len(c, &len)) return -1;
    if (len >= cap && !truncate) return -1;
    size_t take = len < cap ? len : cap - 1;
    rpc_bytes_read(c->b, c->off, out, take);
    out[take] = 0;
    if (!truncate && memchr(out, 0, take)) return -1; /* a name with a NUL in it is not a name */
    c->off += len;
    return 0;
}

static int skip(cur_t *c, unsigned wt)
{
    uint64_t v;
    size_t len;
    switch (wt) {
    case WT_VARINT: return get_varint(c, &v);
    case WT_FIXED64: if (c->end - c->off < 8) return -1; c->off += 8; return 0;
    case WT_FIXED32: if (c->end - c->off < 4) return -1; c->off += 4; return 0;
    case WT_LEN: if (get_len(c, &len)) return -1; c->off += len; return 0;
    }
    return -1; /* groups and reserved wire types */
}

static int bad(cr_err_t *err, const char *what, unsigned field)
{
    return cr_err_set(err, CR_EINVAL, "malformed %s (field %u)", what, field);
}

int ch_wire_parse_frame(const rpc_bytes_t *b, size_t off, size_t len, ch_wire_frame_t *f, cr_err_t *err)
{
    memset(f, 0, sizeof *f);
    cur_t c = {b, off, off + len};
    while (c.off < c.end) {
        uint64_t tag, v;
        if (get_varint(&c, &tag)) return bad(err, "ChFrame", 0);
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        int rc = 0;
        switch (field) {
        case 1: case 3: case 4: case 7:
            if (wt != WT_VARINT || get_varint(&c, &v)) rc = -1;
            else if (field == 1) f->kind = (int)v;
            else if (field == 3) f->producer = v;
            else if (field == 4) f->seq = v;
            else f->code = (int32_t)((uint32_t)(v >> 1) ^ -(uint32_t)(v & 1)); /* zigzag */
            break;
        case 2:
            rc = wt != WT_LEN ? -1 : get_str(&c, f->channel, sizeof f->channel, 0);
            if (rc) return cr_err_set(err, CR_EINVAL, "frame names no valid channel (too long or malformed)");
            break;
        case 5:
            if (wt != WT_FIXED64 || c.end - c.off < 8) rc = -1;
            else {
                rpc_bytes_read(b, c.off, &f->weight, 8);
                c.off += 8;
            }
            break;
        case 6:
            if (wt != WT_LEN || get_len(&c, &f->data_len)) rc = -1;
            else {
                f->data_off = c.off; /* a repeated field: the last one wins, as protobuf says */
                c.off += f->data_len;
            }
            break;
        case 8:
            rc = wt != WT_LEN ? -1 : get_str(&c, f->message, sizeof f->message, 1);
            break;
        default:
            rc = skip(&c, wt);
        }
        if (rc) return bad(err, "ChFrame", field);
    }
    return 0;
}

int ch_wire_parse_relay(const rpc_bytes_t *b, int inner, ch_wire_relay_t *r, cr_err_t *err)
{
    memset(r, 0, sizeof *r);
    cur_t c = {b, 0, rpc_bytes_len(b)};
    while (c.off < c.end) {
        uint64_t tag;
        if (get_varint(&c, &tag)) return bad(err, "RelayFrame", 0);
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        int rc;
        switch (field) {
        case 1: rc = wt != WT_LEN ? -1 : get_str(&c, r->hello, sizeof r->hello, 0); break;
        case 2: rc = wt != WT_LEN ? -1 : get_str(&c, r->src, sizeof r->src, 0); break;
        case 3: rc = wt != WT_LEN ? -1 : get_str(&c, r->dst, sizeof r->dst, 0); break;
        case 4:
            rc = wt != WT_LEN || get_len(&c, &r->frame_len) ? -1 : 0;
            if (rc == 0) {
                r->has_frame = 1;
                r->frame_off = c.off;
                c.off += r->frame_len;
            }
            break;
        default: rc = skip(&c, wt);
        }
        if (rc) return bad(err, "RelayFrame", field);
    }
    if (inner && r->has_frame) return ch_wire_parse_frame(b, r->frame_off, r->frame_len, &r->f, err);
    return 0;
}
