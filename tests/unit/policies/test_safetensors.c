/* test_safetensors.c - the safetensors codec: round trip in memory and on disk,
 * metadata, the layout Python's reader expects (checked with python3 + numpy when
 * present), and rejection of corrupt input with messages naming the fault. */
#include "tests/unit/policies/gradcheck.h"
#include "policies/nn/safetensors.h"

#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void build(void **buf, size_t *len)
{
    static float a[6] = {1, 2, 3, 4, 5, 6};
    static int64_t b[2] = {-7, 1LL << 40};
    static uint8_t c[3] = {9, 8, 7};
    int64_t sa[2] = {2, 3}, sb[1] = {2}, sc[1] = {3};
    cr_err_t err = {0};
    nn_st_writer_t *w = nn_st_writer_create();
    CHECK_OK(nn_st_writer_add(w, "layer.weight", NN_DT_F32, 2, sa, a, &err), &err);
    CHECK_OK(nn_st_writer_add(w, "steps", NN_DT_I64, 1, sb, b, &err), &err);
    CHECK_OK(nn_st_writer_add(w, "bytes", NN_DT_U8, 1, sc, c, &err), &err);
    ASSERT_INT_EQ(nn_st_writer_add(w, "bytes", NN_DT_U8, 1, sc, c, &err), CR_EEXIST);
    CHECK_OK(nn_st_writer_meta(w, "format", "test", &err), &err);
    CHECK_OK(nn_st_writer_meta(w, "note", "a \"quoted\" value", &err), &err);
    CHECK_OK(nn_st_writer_to_mem(w, buf, len, &err), &err);
    nn_st_writer_destroy(w);
}

static void test_roundtrip(void)
{
    void *buf;
    size_t len;
    build(&buf, &len);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    ASSERT_INT_EQ(hl % 8, 0);                 /* data section 8-byte aligned */
    ASSERT_INT_EQ(((char *)buf)[8], '{');
    nn_st_t *st;
    cr_err_t err = {0};
    CHECK_OK(nn_st_parse(&st, buf, len, &err), &err);
    ASSERT_INT_EQ(nn_st_count(st), 3);
    const nn_st_entry_t *e = nn_st_find(st, "layer.weight");
    ASSERT_TRUE(e && e->dtype == NN_DT_F32 && e->ndim == 2 && e->shape[1] == 3);
    float a[6];
    CHECK_OK(nn_st_get_f32(st, "layer.weight", a, 6, &err), &err);
    ASSERT_NEAR(a[5], 6, 1e-9);
    ASSERT_INT_EQ(nn_st_get_f32(st, "layer.weight", a, 5, &err), CR_ECORRUPT);
    ASSERT_INT_EQ(nn_st_get_f32(st, "steps", a, 2, &err), CR_ECORRUPT);
    ASSERT_INT_EQ(nn_st_get_f32(st, "nope", a, 2, &err), CR_ENOENT);
    int64_t steps[2];
    memcpy(steps, nn_st_data(st, nn_st_find(st, "steps")), sizeof steps);
    ASSERT_TRUE(steps[1] == (1LL << 40) && steps[0] == -7);
    ASSERT_STR_EQ(nn_st_meta(st, "note"), "a \"quoted\" value");
    ASSERT_TRUE(nn_st_meta(st, "missing") == NULL);
    nn_st_free(st);

    /* on disk, atomically; no temporary file left behind */
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/w.safetensors", test_tmpdir());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    nn_st_writer_t *w = nn_st_writer_create();
    float v[2] = {0.5f, -0.25f};
    int64_t s2 = 2;
    CHECK_OK(nn_st_writer_add(w, "v", NN_DT_F32, 1, &s2, v, &err), &err);
    CHECK_OK(nn_st_writer_to_file(w, path, &err), &err);
    nn_st_writer_destroy(w);
    ASSERT_TRUE(access(tmp, F_OK) != 0);
    CHECK_OK(nn_st_read_file(&st, path, &err), &err);
    CHECK_OK(nn_st_get_f32(st, "v", v, 2, &err), &err);
    ASSERT_NEAR(v[1], -0.25, 1e-9);
    nn_st_free(st);
    ASSERT_INT_EQ(nn_st_read_file(&st, "/nonexistent/x.safetensors", &err), CR_ENOENT);
    free(buf);
}

/* Python's reader (json + numpy, the same layout the safetensors package uses). */
static void test_python_reads_it(void)
{
    TEST_SKIP_IF(access("/usr/bin/python3", X_OK) != 0, "no /usr/bin/python3");
    TEST_SKIP_IF(system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0, "python3 has no numpy");
    void *buf;
    size_t len;
    build(&buf, &len);
    char path[4200], cmd[9000];
    snprintf(path, sizeof path, "%s/py.safetensors", test_tmpdir());
    FILE *f = fopen(path, "wb");
    ASSERT_TRUE(f && fwrite(buf, 1, len, f) == len);
    fclose(f);
    free(buf);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '\n"
             "import json, struct, numpy as np, sys\n"
             "b = open(\"%s\", \"rb\").read()\n"
             "n = struct.unpack(\"<Q\", b[:8])[0]\n"
             "h = json.loads(b[8:8+n])\n"
             "d = b[8+n:]\n"
             "w = h[\"layer.weight\"]; s, e = w[\"data_offsets\"]\n"
             "a = np.frombuffer(d[s:e], dtype=\"<f4\").reshape(w[\"shape\"])\n"
             "t = h[\"steps\"]; s, e = t[\"data_offsets\"]\n"
             "st = np.frombuffer(d[s:e], dtype=\"<i8\")\n"
             "ok = a[1,2] == 6 and a.shape == (2,3) and st[1] == 2**40 and h[\"__metadata__\"][\"format\"] == \"test\"\n"
             "sys.exit(0 if ok else 1)'", path);
    ASSERT_INT_EQ(WEXITSTATUS(system(cmd)), 0);
}

static int parse_str(const char *hdr, size_t data_len, cr_err_t *err)
{
    size_t hl = strlen(hdr), len = 8 + hl + data_len;
    uint8_t *b = calloc(1, len);
    uint64_t h64 = hl;
    memcpy(b, &h64, 8);
    memcpy(b + 8, hdr, hl);
    nn_st_t *st = NULL;
    int rc = nn_st_parse(&st, b, len, err);
    nn_st_free(st);
    free(b);
    return rc;
}

static void expect_corrupt(const char *hdr, size_t data_len, const char *needle)
{
    cr_err_t err = {0};
    int rc = parse_str(hdr, data_len, &err);
    if (rc != CR_ECORRUPT || !strstr(err.msg, needle))
        fprintf(stderr, "  header %s: rc %d msg '%s', wanted '%s'\n", hdr, rc, err.msg, needle);
    ASSERT_INT_EQ(rc, CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, needle) != NULL);
}

static void test_rejects_corrupt(void)
{
    cr_err_t err = {0};
    ASSERT_INT_EQ(parse_str("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, &err), 0);
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "tensors cover 8 bytes");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, "data section has 12");
    expect_corrupt("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "8 bytes for 3 elements");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 8, "begin <= end");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "gap or overlap");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "gap or overlap");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "appears twice");
    expect_corrupt("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
    expect_corrupt("{\"a\":[1,2]}", 0, "not an object");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "unknown field");
    expect_corrupt("{\"a\": not json", 0, "not valid JSON");
    expect_corrupt("[1,2,3]", 0, "start with '{'");
    expect_corrupt("{} trailing", 0, "after the JSON");
    expect_corrupt("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, "overflows");

    /* length field larger than the file, absurd lengths, too-short files */
    uint8_t b[16] = {0};
    uint64_t big = 1000;
    memcpy(b, &big, 8);
    nn_st_t *st;
    ASSERT_INT_EQ(nn_st_parse(&st, b, sizeof b, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "truncated") != NULL);
    big = UINT64_MAX;
    memcpy(b, &big, 8);
    ASSERT_INT_EQ(nn_st_parse(&st, b, sizeof b, &err), CR_ECORRUPT);
    ASSERT_INT_EQ(nn_st_parse(&st, b, 5, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "shorter than") != NULL);

    /* every truncation of a valid file is rejected, never accepted or crashing */
    void *buf;
    size_t len;
    build(&buf, &len);
    for (size_t n = 0; n < len; n++) {
        ASSERT_INT_EQ(nn_st_parse(&st, buf, n, &err), CR_ECORRUPT);
    }
    /* flipping header bytes never crashes (each either parses or is rejected) */
    uint8_t *m = malloc(len);
    for (size_t i = 8; i < len && i < 300; i++) {
        memcpy(m, buf, len);
        m[i] ^= 0x5a;
        if (nn_st_parse(&st, m, len, &err) == 0) nn_st_free(st);
    }
    free(m);
    free(buf);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"roundtrip", test_roundtrip},
        {"python_reads_it", test_python_reads_it},
        {"rejects_corrupt", test_rejects_corrupt},
        {NULL, NULL},
    };
    return test_main("policies.safetensors", cases, argc, argv);
}
