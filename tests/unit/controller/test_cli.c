/* test_cli.c - the control-plane CLI's own logic, without a controller: option
 * parsing (the same spelling and errors for every verb), sizes such as 80GiB,
 * and the JSON objects `--json` prints. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"  /* harness.h's ASSERT_OK */
#include "tests/harness.h"
#include "cli/cli.h"
#include "cli/ctlcli.h"

static void test_sizes(void)
{
    uint64_t b = 0;
    cr_err_t err = {0};
    ASSERT_OK(cli_parse_size("80GiB", &b, &err), &err);
    ASSERT_INT_EQ(b, 80ull << 30);
    ASSERT_OK(cli_parse_size("40GB", &b, &err), &err);
    ASSERT_INT_EQ(b, 40000000000ull);
    ASSERT_OK(cli_parse_size("1.5gib", &b, &err), &err);
    ASSERT_INT_EQ(b, 3ull << 29);
    ASSERT_OK(cli_parse_size("4096", &b, &err), &err);
    ASSERT_INT_EQ(b, 4096);
    ASSERT_INT_EQ(cli_parse_size("lots", &b, &err), CR_EINVAL);
    ASSERT_INT_EQ(cli_parse_size("10XB", &b, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "unknown unit 'XB'") != NULL);
    ASSERT_INT_EQ(cli_parse_size("-1GiB", &b, &err), CR_EINVAL);
    ASSERT_INT_EQ(cli_parse_size("", &b, &err), CR_EINVAL);
    char out[32];
    cli_format_size(80ull << 30, out, sizeof out);
    ASSERT_STR_EQ(out, "80 GiB");
    cli_format_size(1536ull << 20, out, sizeof out);
    ASSERT_STR_EQ(out, "1.5 GiB");
    cli_format_size(100, out, sizeof out);
    ASSERT_STR_EQ(out, "100 B");
}

static void test_args(void)
{
    cli_args_t a;
    char *ok[] = {"register", "arm1", "--driver", "mujoco", "--set", "kp=2", "--set=kd=0.1", "--json",
                  "--controller=h:1"};
    ASSERT_INT_EQ(cli_args_parse("t", 9, ok, "driver,set", 1, 1, &a), CLI_OK);
    ASSERT_STR_EQ(a.pos[0], "arm1");
    ASSERT_STR_EQ(a.driver, "mujoco");
    ASSERT_INT_EQ(a.n_sets, 2);
    ASSERT_STR_EQ(a.sets[1], "kd=0.1");
    ASSERT_TRUE(a.json);
    ASSERT_STR_EQ(a.controller, "h:1");
    char *unknown[] = {"list", "--driver", "x"};
    ASSERT_INT_EQ(cli_args_parse("t", 3, unknown, "node", 0, 0, &a), CLI_EUSER);
    char *novalue[] = {"list", "--node"};
    ASSERT_INT_EQ(cli_args_parse("t", 2, novalue, "node", 0, 0, &a), CLI_EUSER);
    char *flagval[] = {"list", "--json=yes"};
    ASSERT_INT_EQ(cli_args_parse("t", 2, flagval, "", 0, 0, &a), CLI_EUSER);
    char *extra[] = {"show", "a", "b"};
    ASSERT_INT_EQ(cli_args_parse("t", 3, extra, "", 1, 1, &a), CLI_EUSER);
    char *missing[] = {"show"};
    ASSERT_INT_EQ(cli_args_parse("t", 1, missing, "", 1, 1, &a), CLI_EUSER);
}

static void test_json_objects(void)
{
    Corral__V1__Robot r = CORRAL__V1__ROBOT__INIT;
    Corral__V1__Setting s = CORRAL__V1__SETTING__INIT, *sp[] = {&s};
    s.key = "baud";
    s.value = "57600";
    r.name = "arm1";
    r.driver = "dynamixel";
    r.node = "";
    r.state = CORRAL__V1__RESOURCE_STATE__RESOURCE_IN_USE;
    r.experiment = "exp1";
    r.settings = sp;
    r.n_settings = 1;
    cJSON *o = cli_robot_json(&r);
    char *txt = cJSON_PrintUnformatted(o);
    ASSERT_TRUE(strstr(txt, "\"name\":\"arm1\",\"driver\":\"dynamixel\",\"node\":null,\"state\":\"in-use\","
                            "\"experiment\":\"exp1\"") != NULL);
    ASSERT_TRUE(strstr(txt, "\"settings\":{\"baud\":\"57600\"}") != NULL);
    cJSON_free(txt);
    cJSON_Delete(o);
    Corral__V1__Gpu g = CORRAL__V1__GPU__INIT;
    g.node = "n1";
    g.index = 3;
    g.model = "H100";
    g.memory_bytes = 80ull << 30;
    g.state = CORRAL__V1__RESOURCE_STATE__RESOURCE_LOST;
    o = cli_gpu_json(&g);
    txt = cJSON_PrintUnformatted(o);
    ASSERT_TRUE(strstr(txt, "\"node\":\"n1\",\"index\":3,\"model\":\"H100\",\"memory_bytes\":85899345920,"
                            "\"state\":\"lost\"") != NULL);
    cJSON_free(txt);
    cJSON_Delete(o);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"sizes", test_sizes},
        {"args", test_args},
        {"json_objects", test_json_objects},
        {NULL, NULL},
    };
    return test_main("controller.cli", cases, argc, argv);
}
