/* test_wire.c - the data plane's frames read and written by hand (channels/wire.c):
 * what is written is a ChFrame / RelayFrame any protobuf library reads; what
 * protobuf-c writes is read back; a message's bytes may arrive in slices of any
 * size; and bytes from a bad peer (every truncation of a good frame, random flips,
 * random garbage) give an error or a frame whose data lies inside the bytes, never
 * a crash or a read out of bounds (run under ASan in make test-asan). */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/wire.h"
#include "corral/v1/channel.pb-c.h"

#include <stdlib.h>
#include <string.h>

static const size_t pieces[] = {0, 1, 3, 7, 64, 4096};

/* Header + data as one buffer. */
static size_t data_frame(uint8_t *out, const char *dst, uint64_t producer, uint64_t seq, double weight,
                         const uint8_t *data, size_t len)
{
    size_t n = ch_wire_data_head(out, dst, "transitions", producer, seq, weight, len);
    memcpy(out + n, data, len);
    return n + len;
}

static void test_direct_frame_roundtrip(void)
{
    static uint8_t data[20000], buf[21000], back[20000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 13 + 5);
    size_t n = data_frame(buf, NULL, 0xfedcba9876543210ULL, 300, 2.5, data, sizeof data);
    /* Any protobuf library reads it as a ChFrame. */
    Corral__V1__ChFrame *pf = corral__v1__ch_frame__unpack(NULL, n, buf);
    ASSERT_TRUE(pf != NULL);
    ASSERT_INT_EQ(pf->kind, CORRAL__V1__CH_FRAME__KIND__DATA);
    ASSERT_STR_EQ(pf->channel, "transitions");
    ASSERT_TRUE(pf->producer == 0xfedcba9876543210ULL);
    ASSERT_INT_EQ(pf->seq, 300);
    ASSERT_NEAR(pf->weight, 2.5, 0);
    ASSERT_INT_EQ(pf->data.len, sizeof data);
    ASSERT_TRUE(memcmp(pf->data.data, data, sizeof data) == 0);
    corral__v1__ch_frame__free_unpacked(pf, NULL);
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        rpc_bytes_t *b = rpc_bytes_from(buf, n, pieces[k]);
        ch_wire_frame_t f;
        cr_err_t e = {0};
        ASSERT_OK(ch_wire_parse_frame(b, 0, rpc_bytes_len(b), &f, &e), &e);
        ASSERT_STR_EQ(f.channel, "transitions");
        ASSERT_TRUE(f.producer == 0xfedcba9876543210ULL);
        ASSERT_INT_EQ(f.seq, 300);
        ASSERT_NEAR(f.weight, 2.5, 0);
        ASSERT_INT_EQ(f.data_len, sizeof data);
        ASSERT_INT_EQ(rpc_bytes_read(b, f.data_off, back, f.data_len), sizeof data);
        ASSERT_TRUE(memcmp(back, data, sizeof data) == 0);
        rpc_bytes_free(b);
    }
}

static void test_tunnel_frames(void)
{
    static uint8_t data[3000], buf[4000], fwd[4000];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)i;
    /* The producer's frame to the relay: {dst, frame}. */
    size_t n = data_frame(buf, "h-00000000000000aa", 7, 1, 0, data, sizeof data);
    Corral__V1__RelayFrame *rf = corral__v1__relay_frame__unpack(NULL, n, buf);
    ASSERT_TRUE(rf != NULL && rf->frame != NULL);
    ASSERT_STR_EQ(rf->dst, "h-00000000000000aa");
    ASSERT_INT_EQ(rf->frame->data.len, sizeof data);
    corral__v1__relay_frame__free_unpacked(rf, NULL);
    rpc_bytes_t *b = rpc_bytes_from(buf, n, 5);
    ch_wire_relay_t r;
    cr_err_t e = {0};
    ASSERT_OK(ch_wire_parse_relay(b, 1, &r, &e), &e);
    ASSERT_STR_EQ(r.dst, "h-00000000000000aa");
    ASSERT_INT_EQ(r.hello[0], 0);
    ASSERT_TRUE(r.has_frame);
    ASSERT_INT_EQ(r.f.producer, 7);
    ASSERT_INT_EQ(r.f.data_len, sizeof data);
    /* The relay's delivery: {src, the same frame bytes}. */
    size_t h = ch_wire_relay_head(fwd, "p-0000000000000007", r.frame_len);
    ASSERT_INT_EQ(rpc_bytes_read(b, r.frame_off, fwd + h, r.frame_len), r.frame_len);
    rpc_bytes_free(b);
    b = rpc_bytes_from(fwd, h + r.frame_len, 0);
    ASSERT_OK(ch_wire_parse_relay(b, 1, &r, &e), &e);
    ASSERT_STR_EQ(r.src, "p-0000000000000007");
    ASSERT_INT_EQ(r.f.seq, 1);
    uint8_t last;
    rpc_bytes_read(b, r.f.data_off + r.f.data_len - 1, &last, 1);
    ASSERT_INT_EQ(last, data[sizeof data - 1]);
    rpc_bytes_free(b);
}

static void test_protobuf_c_frames_read(void)
{
    /* What protobuf-c packs (fields in number order, data before code and
     * message) reads the same: an ERROR frame and a DATA frame. */
    Corral__V1__ChFrame f = CORRAL__V1__CH_FRAME__INIT;
    f.kind = CORRAL__V1__CH_FRAME__KIND__ERROR;
    f.code = -5;
    f.message = "no channel named \"x\"";
    uint8_t buf[256];
    size_t n = corral__v1__ch_frame__pack(&f, buf);
    rpc_bytes_t *b = rpc_bytes_from(buf, n, 2);
    ch_wire_frame_t w;
    cr_err_t e = {0};
    ASSERT_OK(ch_wire_parse_frame(b, 0, n, &w, &e), &e);
    ASSERT_INT_EQ(w.kind, CORRAL__V1__CH_FRAME__KIND__ERROR);
    ASSERT_INT_EQ(w.code, -5);
    ASSERT_STR_EQ(w.message, "no channel named \"x\"");
    rpc_bytes_free(b);
    corral__v1__ch_frame__init(&f);
    f.channel = "obs";
    f.producer = 1;
    f.seq = 2;
    uint8_t payload[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    f.data.data = payload;
    f.data.len = sizeof payload;
    f.message = "trailing";
    n = corral__v1__ch_frame__pack(&f, buf);
    b = rpc_bytes_from(buf, n, 0);
    ASSERT_OK(ch_wire_parse_frame(b, 0, n, &w, &e), &e);
    ASSERT_INT_EQ(w.data_len, 10);
    uint8_t back[10];
    rpc_bytes_read(b, w.data_off, back, 10);
    ASSERT_TRUE(memcmp(back, payload, 10) == 0);
    rpc_bytes_free(b);
}

/* Parses buf[0..n) both ways in slices of piece; a frame that parses has its data
 * inside the bytes. Returns how many of the two parsed. */
static int parse_any(const uint8_t *buf, size_t n, size_t piece)
{
    rpc_bytes_t *b = rpc_bytes_from(buf, n, piece);
    ASSERT_TRUE(b != NULL);
    ch_wire_frame_t f;
    ch_wire_relay_t r;
    cr_err_t e = {0};
    int ok = 0;
    int rc = ch_wire_parse_frame(b, 0, n, &f, &e);
    ASSERT_TRUE(rc == 0 || rc == CR_EINVAL);
    if (rc == 0) {
        ok++;
        ASSERT_TRUE(f.data_off <= n && f.data_len <= n - f.data_off);
        ASSERT_TRUE(memchr(f.channel, 0, sizeof f.channel) != NULL);
    } else {
        ASSERT_TRUE(e.msg[0] != 0);
    }
    rc = ch_wire_parse_relay(b, 1, &r, &e);
    ASSERT_TRUE(rc == 0 || rc == CR_EINVAL);
    if (rc == 0) {
        ok++;
        if (r.has_frame) ASSERT_TRUE(r.frame_off <= n && r.frame_len <= n - r.frame_off);
    }
    rpc_bytes_free(b);
    return ok;
}

static void test_bad_bytes(void)
{
    static uint8_t data[300], buf[600], mut[600];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);
    size_t n = data_frame(buf, "h-0000000000000001", 99, 12345, 1.0, data, sizeof data);
    /* Every truncation of a good tunnel frame. */
    int parsed = 0;
    for (size_t cut = 0; cut < n; cut++) parsed += parse_any(buf, cut, cut % 5);
    ASSERT_TRUE(parsed > 0); /* some prefixes are complete messages, most are not */
    /* Random byte flips, and random garbage. */
    uint64_t x = 88172645463325252ULL;
    for (int it = 0; it < 20000; it++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t len;
        if (it % 2) {
            memcpy(mut, buf, n);
            for (int k = 0; k < 1 + (int)(x % 4); k++) mut[(x >> (8 * k + 3)) % n] ^= (uint8_t)(x >> (8 * k));
            len = n;
        } else {
            len = x % 64;
            for (size_t k = 0; k < len; k++) mut[k] = (uint8_t)(x >> ((k * 5) % 57));
        }
        parse_any(mut, len, 1 + x % 9);
    }
    /* Fields named in errors: a channel name longer than any valid one. */
    uint8_t lng[80] = {2 << 3 | 2, 70};
    memset(lng + 2, 'a', 70);
    rpc_bytes_t *b = rpc_bytes_from(lng, 72, 0);
    ch_wire_frame_t f;
    cr_err_t e = {0};
    ASSERT_INT_EQ(ch_wire_parse_frame(b, 0, 72, &f, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "channel") != NULL);
    rpc_bytes_free(b);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"direct_frame_roundtrip", test_direct_frame_roundtrip},
        {"tunnel_frames", test_tunnel_frames},
        {"protobuf_c_frames_read", test_protobuf_c_frames_read},
        {"bad_bytes", test_bad_bytes},
        {NULL, NULL},
    };
    return test_main("channels_wire", cases, argc, argv);
}
