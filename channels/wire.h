/* wire.h - reading and writing the data plane's frames around their bulk bytes
 * (wire.c), for the routes between nodes and the relay. Private to channels/. */
#ifndef CORRAL_CHANNELS_WIRE_H
#define CORRAL_CHANNELS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/rpc/rpc.h"

/* Room enough for any header ch_wire_data_head writes (names are short). */
#define CH_WIRE_HEAD_MAX 256

/* Writes into out the bytes that, followed by the len bytes of a message's data,
 * make a packed ChFrame DATA (dst NULL: the direct route) or a RelayFrame to dst
 * carrying one (the tunnel). channel < 64 and dst < 40 bytes. Returns the count. */
size_t ch_wire_data_head(uint8_t *out, const char *dst, const char *channel, uint64_t producer, uint64_t seq,
                         double weight, size_t len);
/* The bytes that, followed by a packed ChFrame of frame_len bytes, make the
 * RelayFrame the relay delivers: {src, frame}. */
size_t ch_wire_relay_head(uint8_t *out, const char *src, size_t frame_len);

/* A ChFrame as read: the small fields, and where its data lies in the bytes. */
typedef struct ch_wire_frame {
    int kind;
    char channel[64];
    uint64_t producer, seq;
    double weight;
    int32_t code;
    char message[256];  /* truncated when longer */
    size_t data_off, data_len;
} ch_wire_frame_t;

/* Parses the ChFrame in bytes [off, off+len) of b. CR_EINVAL, with what was
 * malformed (or a channel name too long) in err. */
int ch_wire_parse_frame(const rpc_bytes_t *b, size_t off, size_t len, ch_wire_frame_t *f, cr_err_t *err);

typedef struct ch_wire_relay {
    char hello[40], src[40], dst[40];
    int has_frame;
    size_t frame_off, frame_len;
    ch_wire_frame_t f;  /* parsed when asked (inner) and has_frame */
} ch_wire_relay_t;

/* Parses a RelayFrame; with inner set, its ChFrame too. */
int ch_wire_parse_relay(const rpc_bytes_t *b, int inner, ch_wire_relay_t *r, cr_err_t *err);

#endif
