/* test_cli.c - the control-plane CLI's own logic, without a controller: option
 * parsing (the same spelling and errors for every verb), sizes such as 80GiB,
 * the JSON objects `--json` prints, and credentials (token files, certificate
 * directories, loopback addresses). */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"  /* harness.h's ASSERT_OK */
#include "tests/harness.h"
#include "cli/cli.h"
#include "cli/creds.h"
#include "cli/ctlcli.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Writes text into dir/name with mode; returns the path (static). */
static const char *put(const char *dir, const char *name, const char *text, mode_t mode)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

static void test_token_files(void)
{
    char dir[] = "/tmp/corral-creds.XXXXXX";
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    cr_err_t err = {0};
    char *tok = NULL;
    ASSERT_OK(cli_token_read(put(dir, "ok", "abcdefghijklmnop0123\n", 0600), &tok, &err), &err);
    ASSERT_STR_EQ(tok, "abcdefghijklmnop0123");   /* the newline trimmed */
    cli_token_free(tok);
    tok = NULL;
    ASSERT_INT_EQ(cli_token_read(put(dir, "loose", "abcdefghijklmnop0123\n", 0644), &tok, &err), CR_EPERM);
    ASSERT_TRUE(strstr(err.msg, "loose is readable or writable by others (mode 0644)") != NULL);
    ASSERT_TRUE(strstr(err.msg, "chmod 600") != NULL);
    ASSERT_INT_EQ(cli_token_read(put(dir, "group", "abcdefghijklmnop0123\n", 0640), &tok, &err), CR_EPERM);
    ASSERT_INT_EQ(cli_token_read(put(dir, "short", "abc\n", 0600), &tok, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "shorter than 16") != NULL);
    ASSERT_INT_EQ(cli_token_read(put(dir, "space", "abcdefgh ijklmnop0123\n", 0600), &tok, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "printable ASCII") != NULL);
    ASSERT_INT_EQ(cli_token_read(put(dir, "empty", "", 0600), &tok, &err), CR_EINVAL);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none", dir);
    ASSERT_INT_EQ(cli_token_read(missing, &tok, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "/none: No such file") != NULL);
    ASSERT_INT_EQ(cli_token_read(dir, &tok, &err), CR_EINVAL);   /* a directory */
    ASSERT_TRUE(tok == NULL);
    static const char *const names[] = {"ok", "loose", "group", "short", "space", "empty"};
    for (int i = 0; i < 6; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void test_tls_dirs(void)
{
    char dir[] = "/tmp/corral-tls.XXXXXX";
    ASSERT_TRUE(mkdtemp(dir) != NULL);
    cr_err_t err = {0};
    char out[4200];
    ASSERT_INT_EQ(cli_tls_dir(dir, "server", out, sizeof out, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "has no cert.pem") != NULL);
    const char *const hosts[] = {"localhost"}, *const clients[] = {"n1"};
    ASSERT_OK(rpc_certs_make(dir, hosts, 1, clients, 1, &err), &err);
    ASSERT_OK(cli_tls_dir(dir, "server", out, sizeof out, &err), &err);   /* the root: DIR/server */
    ASSERT_TRUE(strlen(out) > 7 && strcmp(out + strlen(out) - 7, "/server") == 0);
    char n1[4300];
    snprintf(n1, sizeof n1, "%s/n1", dir);
    ASSERT_OK(cli_tls_dir(n1, "n1", out, sizeof out, &err), &err);        /* the directory itself */
    ASSERT_STR_EQ(out, n1);
    ASSERT_INT_EQ(cli_tls_dir(dir, "n2", out, sizeof out, &err), CR_EINVAL);
    char key[4400];
    snprintf(key, sizeof key, "%s/key.pem", n1);
    unlink(key);
    ASSERT_INT_EQ(cli_tls_dir(n1, NULL, out, sizeof out, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "has no key.pem") != NULL);
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_INT_EQ(system(cmd), 0);

    ASSERT_TRUE(cli_addr_is_loopback("127.0.0.1:7070"));
    ASSERT_TRUE(cli_addr_is_loopback("localhost:7070"));
    ASSERT_TRUE(cli_addr_is_loopback("[::1]:7070"));
    ASSERT_TRUE(!cli_addr_is_loopback("0.0.0.0:7070"));
    ASSERT_TRUE(!cli_addr_is_loopback("10.0.0.5:7070"));
    ASSERT_TRUE(!cli_addr_is_loopback("[::]:7070"));
    ASSERT_TRUE(!cli_addr_is_loopback(":7070"));
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"sizes", test_sizes},
        {"args", test_args},
        {"json_objects", test_json_objects},
        {"token_files", test_token_files},
        {"tls_dirs", test_tls_dirs},
        {NULL, NULL},
    };
    return test_main("controller.cli", cases, argc, argv);
}
