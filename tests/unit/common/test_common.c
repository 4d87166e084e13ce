/* test_common.c - errors, logging, clocks and ids from common/. */
#include "tests/harness.h"
#include "common/err.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void test_err_codes(void)
{
    ASSERT_STR_EQ(cr_err_name(CR_EINVAL), "EINVAL");
    ASSERT_STR_EQ(cr_err_str(CR_ENOENT), "not found");
    ASSERT_STR_EQ(cr_err_name(-999), "EUNKNOWN");
    cr_err_t e = {0};
    ASSERT_INT_EQ(cr_err_set(&e, CR_EIO, "write %s failed", "x.db"), CR_EIO);
    ASSERT_STR_EQ(e.msg, "write x.db failed");
    ASSERT_INT_EQ(cr_err_wrap(&e, "buffer %d", 3), CR_EIO);
    ASSERT_STR_EQ(e.msg, "buffer 3: write x.db failed");
    cr_err_clear(&e);
    ASSERT_INT_EQ(e.code, 0);
    ASSERT_STR_EQ(e.msg, "");
    /* A NULL error struct is allowed and still returns the code. */
    ASSERT_INT_EQ(cr_err_set(NULL, CR_EBUSY, "x"), CR_EBUSY);
}

static void test_err_truncates(void)
{
    cr_err_t e;
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_err_set(&e, CR_EINVAL, "%s", big);
    ASSERT_INT_EQ(strlen(e.msg), CR_ERR_MSG_MAX - 1);
    cr_err_wrap(&e, "prefix");
    ASSERT_INT_EQ(strlen(e.msg), CR_ERR_MSG_MAX - 1);
    ASSERT_TRUE(strncmp(e.msg, "prefix: aaa", 11) == 0);
}

static void test_log_to_file(void)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/log.txt", test_tmpdir());
    ASSERT_INT_EQ(cr_log_open(path), 0);
    cr_log_set_level(CR_LOG_INFO);
    CR_DEBUG("unit", "hidden %d", 1);
    CR_INFO("unit", "shown %d", 2);
    CR_ERROR("buffer", "bad thing");
    ASSERT_INT_EQ(cr_log_open(NULL), 0);
    FILE *f = fopen(path, "r");
    ASSERT_TRUE(f != NULL);
    char l1[512] = "", l2[512] = "", l3[512] = "";
    ASSERT_TRUE(fgets(l1, sizeof l1, f) != NULL);
    ASSERT_TRUE(fgets(l2, sizeof l2, f) != NULL);
    ASSERT_TRUE(fgets(l3, sizeof l3, f) == NULL);
    fclose(f);
    ASSERT_TRUE(strstr(l1, "INFO  [unit] shown 2\n") != NULL);
    ASSERT_TRUE(strstr(l2, "ERROR [buffer] bad thing") != NULL);
    /* ISO-8601 timestamp with milliseconds and Z. */
    ASSERT_TRUE(l1[4] == '-' && l1[10] == 'T' && l1[23] == 'Z');
    ASSERT_INT_EQ(cr_log_level_parse("warn"), CR_LOG_WARN);
    ASSERT_INT_EQ(cr_log_level_parse("loud"), -1);
    ASSERT_INT_EQ(cr_log_open("/nonexistent-dir/x/log"), CR_ENOENT);
}

static void test_time(void)
{
    int64_t t0 = cr_now_ns();
    cr_sleep_ns(2 * CR_NS_PER_MS);
    int64_t dt = cr_now_ns() - t0;
    ASSERT_TRUE(dt >= 2 * CR_NS_PER_MS);
    ASSERT_TRUE(dt < 500 * CR_NS_PER_MS);
    ASSERT_TRUE(cr_wall_ns() > 1600000000LL * CR_NS_PER_S);
    ASSERT_INT_EQ(cr_deadline_left_ms(cr_now_ns() - 1), 0);
    ASSERT_TRUE(cr_deadline_left_ms(cr_now_ns() + 50 * CR_NS_PER_MS) > 40);
    ASSERT_TRUE(cr_deadline_left_ms(0) == INT64_MAX);
}

static void test_ids(void)
{
    uint64_t a = cr_id_new(), b = cr_id_new(), back;
    ASSERT_TRUE(a != 0 && a != b);
    char hex[CR_ID_HEX_LEN + 1];
    cr_id_format(0x00ab, hex);
    ASSERT_STR_EQ(hex, "00000000000000ab");
    cr_id_format(a, hex);
    ASSERT_INT_EQ(cr_id_parse(hex, &back), 0);
    ASSERT_TRUE(back == a);
    ASSERT_INT_EQ(cr_id_parse("xyz", &back), CR_EINVAL);
    ASSERT_INT_EQ(cr_id_parse("00000000000000g0", &back), CR_EINVAL);
}

static void test_names(void)
{
    ASSERT_TRUE(cr_name_valid("reach2d-0"));
    ASSERT_TRUE(cr_name_valid("a_b"));
    ASSERT_TRUE(!cr_name_valid(""));
    ASSERT_TRUE(!cr_name_valid("Robot"));
    ASSERT_TRUE(!cr_name_valid("-x"));
    ASSERT_TRUE(!cr_name_valid("a b"));
    char n64[65];
    memset(n64, 'a', 64);
    n64[64] = 0;
    ASSERT_TRUE(!cr_name_valid(n64));
    n64[63] = 0;
    ASSERT_TRUE(cr_name_valid(n64));
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"err_codes", test_err_codes},
        {"err_truncates", test_err_truncates},
        {"log_to_file", test_log_to_file},
        {"time", test_time},
        {"ids", test_ids},
        {"names", test_names},
        {NULL, NULL},
    };
    return test_main("common", cases, argc, argv);
}
