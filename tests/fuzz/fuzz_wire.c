/* fuzz_wire.c - libFuzzer target for the data plane's hand-written frame reader
 * (channels/wire.c), which reads bytes straight from the network.
 *
 * The first input byte chooses the slice size the bytes arrive in (gRPC hands a
 * message over in slices of any size); the rest is parsed as a ChFrame and as a
 * RelayFrame. Besides what the sanitizers catch, the target traps when the
 * reader's contract breaks: an error comes with a message, and a frame that parses
 * has its data (and a relay frame its body) inside the bytes, with NUL-terminated
 * names. */
#include "channels/wire.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t piece = data[0] % 17;
    data++;
    size--;
    rpc_bytes_t *b = rpc_bytes_from(data, size, piece);
    if (!b) return 0;
    ch_wire_frame_t f;
    cr_err_t e = {0};
    if (ch_wire_parse_frame(b, 0, size, &f, &e) == 0) {
        if (f.data_off > size || f.data_len > size - f.data_off) abort();
        if (!memchr(f.channel, 0, sizeof f.channel) || !memchr(f.message, 0, sizeof f.message)) abort();
    } else if (e.msg[0] == 0) {
        abort();
    }
    ch_wire_relay_t r;
    memset(&e, 0, sizeof e);
    if (ch_wire_parse_relay(b, 1, &r, &e) == 0) {
        if (r.has_frame && (r.frame_off > size || r.frame_len > size - r.frame_off)) abort();
        if (!memchr(r.hello, 0, sizeof r.hello) || !memchr(r.src, 0, sizeof r.src) ||
            !memchr(r.dst, 0, sizeof r.dst))
            abort();
    } else if (e.msg[0] == 0) {
        abort();
    }
    rpc_bytes_free(b);
    return 0;
}
