/* test_config.c - the YAML config layer: every type, every error message in its exact
 * form, --set, did-you-mean, defaults, nested sections and lists, the untyped tree,
 * the reference text, and that a loaded or failed struct owns nothing after cfg_free
 * (the ASan build checks the last). */
#include "tests/harness.h"
#include "common/config/config.h"

#include <stdlib.h>
#include <string.h>

/* ASSERT_OK with braces: the harness's version trips gcc's -Wmisleading-indentation. */
#define CHECK_OK(expr, e) do { int rc_ = (expr); if (rc_ != 0) { \
    fprintf(stderr, "  %s:%d: %s failed: %d %s\n", __FILE__, __LINE__, #expr, rc_, (e)->msg); } \
    CU_ASSERT_EQUAL_FATAL(rc_, 0); } while (0)

/* ---- an experiment file, the way the controller will describe one ---------------- */

typedef struct robot_cfg {
    char *name;
    int kind;
    bool sim;
    cfg_node_t *options;
} robot_cfg_t;

typedef struct algo_cfg {
    char *name;
    int64_t batch_size;
    double lr;
    int32_t updates;
    float tau;
} algo_cfg_t;

typedef struct buffer_cfg {
    uint64_t capacity;
    int64_t flush;
} buffer_cfg_t;

typedef struct exp_cfg {
    char *name;
    bool resume;
    algo_cfg_t algorithm;
    buffer_cfg_t buffer;
    int32_t *hidden;
    size_t n_hidden;
    char **tags;
    size_t n_tags;
    int64_t *periods;
    size_t n_periods;
    robot_cfg_t *robots;
    size_t n_robots;
} exp_cfg_t;

static int pow2(const void *value, cr_err_t *err)
{
    int64_t v = *(const int64_t *)value;
    return v & (v - 1) ? cr_err_set(err, CR_EINVAL, "must be a power of two, got %lld",
                                    (long long)v) : 0;
}

static int even(const void *value, cr_err_t *err)
{
    return *(const int32_t *)value % 2 ? cr_err_set(err, CR_EINVAL, "must be even") : 0;
}

static int exp_check(const void *obj, cr_err_t *err)
{
    const exp_cfg_t *c = obj;
    for (size_t i = 0; i < c->n_robots; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->robots[i].name, c->robots[j].name) == 0)
                return cr_err_set(err, CR_EINVAL, "robots %zu and %zu are both named '%s'", j, i,
                                  c->robots[i].name);
    return 0;
}

static const char *const kinds[] = {"mujoco", "dynamixel", "mock", NULL};
static const cfg_field_t robot_fields[] = {
    {CFG_STRING(robot_cfg_t, name, CFG_REQUIRED, "robot name, unique in the experiment")},
    {CFG_ENUM(robot_cfg_t, kind, "mujoco", kinds, "HAL driver")},
    {CFG_BOOL(robot_cfg_t, sim, "true", "simulated")},
    {CFG_NODE(robot_cfg_t, options, "driver-specific options")},
};
static const cfg_table_t robot_table = {CFG_TABLE(robot_cfg_t, robot_fields)};

static const cfg_field_t algo_fields[] = {
    {CFG_STRING(algo_cfg_t, name, "sac", "algorithm plugin")},
    {CFG_INT(algo_cfg_t, batch_size, "256", 1, 65536, "samples per update"), .check = pow2},
    {CFG_DOUBLE(algo_cfg_t, lr, "3e-4", 0, 1, "learning rate")},
    {CFG_INT(algo_cfg_t, updates, "1", 1, INT32_MAX, "updates per step")},
    {CFG_DOUBLE(algo_cfg_t, tau, "0.005", 0, 0, "target smoothing")},
};
static const cfg_table_t algo_table = {CFG_TABLE(algo_cfg_t, algo_fields)};

static const cfg_field_t buffer_fields[] = {
    {CFG_SIZE(buffer_cfg_t, capacity, "1GiB", CFG_MiB, 80 * CFG_GiB, "bytes on disk")},
    {CFG_DURATION(buffer_cfg_t, flush, "10ms", 0, 0, "group commit period")},
};
static const cfg_table_t buffer_table = {CFG_TABLE(buffer_cfg_t, buffer_fields)};

static const cfg_field_t exp_fields[] = {
    {CFG_STRING(exp_cfg_t, name, "exp", "experiment name")},
    {CFG_BOOL(exp_cfg_t, resume, "false", "resume from the newest checkpoint")},
    {CFG_STRUCT(exp_cfg_t, algorithm, &algo_table, "learner algorithm")},
    {CFG_STRUCT(exp_cfg_t, buffer, &buffer_table, "replay buffer")},
    {CFG_LIST(exp_cfg_t, hidden, n_hidden, CFG_INT, "[256, 256]", 4, "hidden widths"),
     .imin = 2, .imax = 4096, .check = even},
    {CFG_LIST(exp_cfg_t, tags, n_tags, CFG_STRING, "[]", 8, "labels")},
    {CFG_LIST(exp_cfg_t, periods, n_periods, CFG_DURATION, "[]", 3, "periods"),
     .imin = CFG_MSEC, .imax = CFG_SEC},
    {CFG_STRUCT_LIST(exp_cfg_t, robots, n_robots, &robot_table, CFG_REQUIRED, 3, "robots")},
};
static const cfg_table_t exp_table = {CFG_TABLE(exp_cfg_t, exp_fields), .check = exp_check};

static const char *one_robot = "robots:\n  - name: arm\n";

static bool all_zero(const void *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i]) return false;
    return true;
}

static int load(exp_cfg_t *c, const char *yaml, const char *const *sets, size_t nsets,
                cr_err_t *err)
{
    return cfg_load_string(&exp_table, c, "t.yaml", yaml, strlen(yaml), sets, nsets, err);
}

/* Loads yaml (+ sets), expects failure with exactly msg, and a zeroed struct. */
static void expect_error(const char *yaml, const char *const *sets, size_t nsets, int code,
                         const char *msg)
{
    exp_cfg_t c;
    memset(&c, 0xa5, sizeof c);
    cr_err_t err = {0};
    int rc = load(&c, yaml, sets, nsets, &err);
    if (rc == 0) cfg_free(&exp_table, &c);
    ASSERT_INT_EQ(rc, code);
    ASSERT_STR_EQ(err.msg, msg);
    ASSERT_TRUE(all_zero(&c, sizeof c));
}

/* ---- tables ----------------------------------------------------------------------- */

static void test_table_check(void)
{
    cr_err_t err = {0};
    CHECK_OK(cfg_table_check(&exp_table, &err), &err);

    typedef struct bad { int32_t a; bool b; char *s; int64_t d; } bad_t;
    struct { cfg_field_t f; const char *msg; } cases[] = {
        {{CFG_BOOL(bad_t, a, "true", "")}, "table bad_t: a: member size does not fit the type"},
        {{CFG_INT(bad_t, a, "5", 1, 1LL << 40, "")}, "table bad_t: a: range does not fit the member"},
        {{CFG_INT(bad_t, a, "0", 1, 9, "")},
         "table bad_t: a: bad default '0': <default>:1:1: a: expected an integer between 1 and 9, got '0'"},
        {{CFG_ENUM(bad_t, a, "x", NULL, "")}, "table bad_t: a: an enum needs names"},
        {{CFG_STRING(bad_t, b, "x", "")}, "table bad_t: b: member size does not fit the type"},
        {{CFG_DURATION(bad_t, d, "10", 0, 0, "")},
         "table bad_t: d: bad default '10': <default>:1:1: d: expected a duration (like 10ms), got '10'"},
        {{CFG_INT(bad_t, a, "1", 5, 1, "")}, "table bad_t: a: imin > imax"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const cfg_table_t t = {.name = "bad_t", .size = sizeof(bad_t), .fields = &cases[i].f,
                               .nfields = 1};
        ASSERT_INT_EQ(cfg_table_check(&t, &err), CR_EINTERNAL);
        ASSERT_STR_EQ(err.msg, cases[i].msg);
        /* A bad table stops the loader before it reads anything. */
        bad_t b;
        ASSERT_INT_EQ(cfg_load_string(&t, &b, "x", "a: 1", 4, NULL, 0, &err), CR_EINTERNAL);
    }
    const cfg_field_t twice[] = {{CFG_INT(bad_t, a, "1", 0, 9, "")}, {CFG_INT(bad_t, a, "1", 0, 9, "")}};
    const cfg_table_t t2 = {CFG_TABLE(bad_t, twice)};
    ASSERT_INT_EQ(cfg_table_check(&t2, &err), CR_EINTERNAL);
    ASSERT_STR_EQ(err.msg, "table bad_t: a: repeated");
}

/* ---- values ----------------------------------------------------------------------- */

static void test_defaults(void)
{
    exp_cfg_t c;
    cr_err_t err = {0};
    CHECK_OK(load(&c, one_robot, NULL, 0, &err), &err);
    ASSERT_STR_EQ(c.name, "exp");
    ASSERT_INT_EQ(c.resume, 0);
    ASSERT_STR_EQ(c.algorithm.name, "sac");
    ASSERT_INT_EQ(c.algorithm.batch_size, 256);
    ASSERT_NEAR(c.algorithm.lr, 3e-4, 1e-12);
    ASSERT_INT_EQ(c.algorithm.updates, 1);
    ASSERT_NEAR(c.algorithm.tau, 0.005, 1e-7);
    ASSERT_INT_EQ(c.buffer.capacity, 1LL << 30);
    ASSERT_INT_EQ(c.buffer.flush, 10 * CFG_MSEC);
    ASSERT_INT_EQ(c.n_hidden, 2);
    ASSERT_INT_EQ(c.hidden[0], 256);
    ASSERT_INT_EQ(c.hidden[1], 256);
    ASSERT_INT_EQ(c.n_tags, 0);
    ASSERT_TRUE(c.tags == NULL);
    ASSERT_INT_EQ(c.n_robots, 1);
    ASSERT_STR_EQ(c.robots[0].name, "arm");
    ASSERT_INT_EQ(c.robots[0].kind, 0);
    ASSERT_INT_EQ(c.robots[0].sim, 1);
    ASSERT_TRUE(c.robots[0].options == NULL);
    cfg_free(&exp_table, &c);
    ASSERT_TRUE(all_zero(&c, sizeof c));
    cfg_free(&exp_table, &c);  /* a zeroed struct is fine to free again */
}

static void test_every_type(void)
{
    const char *yaml =
        "name: \"reach: v2\"\n"
        "resume: yes\n"
        "algorithm:\n"
        "  name: rlpd\n"
        "  batch_size: 0x400\n"
        "  lr: 1e-3\n"
        "  updates: 2147483647\n"
        "  tau: -0.5\n"
        "buffer: {capacity: 80GiB, flush: 1.5s}\n"
        "hidden: [64, 4096, 2]\n"
        "tags:\n  - a\n  - 'b c'\n  - \"\"\n"
        "periods: [1ms, 250000us, 1s]\n"
        "robots:\n"
        "  - name: arm\n    kind: dynamixel\n    sim: off\n"
        "    options: {port: /dev/ttyUSB0, baud: 1000000, ids: [1, 2]}\n"
        "  - {name: sim, kind: mock}\n";
    exp_cfg_t c;
    cr_err_t err = {0};
    CHECK_OK(load(&c, yaml, NULL, 0, &err), &err);
    ASSERT_STR_EQ(c.name, "reach: v2");
    ASSERT_INT_EQ(c.resume, 1);
    ASSERT_STR_EQ(c.algorithm.name, "rlpd");
    ASSERT_INT_EQ(c.algorithm.batch_size, 1024);
    ASSERT_NEAR(c.algorithm.lr, 1e-3, 1e-12);
    ASSERT_INT_EQ(c.algorithm.updates, INT32_MAX);
    ASSERT_NEAR(c.algorithm.tau, -0.5, 0);
    ASSERT_INT_EQ(c.buffer.capacity, 80LL << 30);
    ASSERT_INT_EQ(c.buffer.flush, 1500 * CFG_MSEC);
    ASSERT_INT_EQ(c.n_hidden, 3);
    ASSERT_INT_EQ(c.hidden[0], 64);
    ASSERT_INT_EQ(c.hidden[1], 4096);
    ASSERT_INT_EQ(c.hidden[2], 2);
    ASSERT_INT_EQ(c.n_tags, 3);
    ASSERT_STR_EQ(c.tags[0], "a");
    ASSERT_STR_EQ(c.tags[1], "b c");
    ASSERT_STR_EQ(c.tags[2], "");
    ASSERT_INT_EQ(c.n_periods, 3);
    ASSERT_INT_EQ(c.periods[0], CFG_MSEC);
    ASSERT_INT_EQ(c.periods[1], 250 * CFG_MSEC);
    ASSERT_INT_EQ(c.periods[2], CFG_SEC);
    ASSERT_INT_EQ(c.n_robots, 2);
    ASSERT_STR_EQ(c.robots[0].name, "arm");
    ASSERT_INT_EQ(c.robots[0].kind, 1);
    ASSERT_INT_EQ(c.robots[0].sim, 0);
    const cfg_node_t *o = c.robots[0].options;
    ASSERT_TRUE(o && o->kind == CFG_NODE_MAP);
    ASSERT_STR_EQ(o->path, "robots.0.options");
    ASSERT_STR_EQ(cfg_node_get(o, "port")->text, "/dev/ttyUSB0");
    ASSERT_STR_EQ(cfg_node_get(o, "ids.1")->text, "2");
    ASSERT_STR_EQ(cfg_node_get(o, "ids.1")->path, "robots.0.options.ids.1");
    ASSERT_INT_EQ(cfg_node_get(o, "baud")->line, 20);
    ASSERT_TRUE(cfg_node_get(o, "ids.2") == NULL);
    ASSERT_TRUE(cfg_node_get(o, "nope") == NULL);
    ASSERT_STR_EQ(c.robots[1].name, "sim");
    ASSERT_INT_EQ(c.robots[1].kind, 2);
    ASSERT_INT_EQ(c.robots[1].sim, 1);
    cfg_free(&exp_table, &c);
    ASSERT_TRUE(all_zero(&c, sizeof c));
}

static void test_sizes_and_durations(void)
{
    struct { const char *text; long long bytes; } sizes[] = {
        {"1048576", 1048576}, {"4096", -1}, {"1MiB", CFG_MiB}, {"512MiB", 512 * CFG_MiB}, {"1.5GiB", 3 * CFG_GiB / 2},
        {"2GB", 2000000000LL}, {"80 GiB", 80 * CFG_GiB}, {"3000000kb", 3000000000LL},
        {"1TiB", -1}, {"1KiB", -1}, {"-1MiB", -1}, {"MiB", -1}, {"1XB", -1}, {"1.", CFG_MiB * 0 - 1},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char yaml[128];
        snprintf(yaml, sizeof yaml, "%sbuffer: {capacity: '%s'}", one_robot, sizes[i].text);
        exp_cfg_t c;
        cr_err_t err = {0};
        int rc = load(&c, yaml, NULL, 0, &err);
        if (sizes[i].bytes < 0) {
            if (rc == 0) fprintf(stderr, "  size '%s' accepted\n", sizes[i].text);
            ASSERT_INT_EQ(rc, CR_EINVAL);
            ASSERT_TRUE(strstr(err.msg, "buffer.capacity: expected a size (like 512MiB) "
                                        "between 1MiB and 80GiB, got") != NULL);
            continue;
        }
        CHECK_OK(rc, &err);
        ASSERT_INT_EQ(c.buffer.capacity, sizes[i].bytes);
        cfg_free(&exp_table, &c);
    }
    struct { const char *text; long long ns; } durs[] = {
        {"0", 0}, {"100ns", 100}, {"250us", 250000}, {"10ms", 10 * CFG_MSEC}, {"2s", 2 * CFG_SEC},
        {"1.5m", 90 * CFG_SEC}, {"2min", 120 * CFG_SEC}, {"1h", 3600 * CFG_SEC}, {"10", -1},
        {"ms", -1}, {"1d", -1}, {"-1s", -1}, {"99999999999h", -1},
    };
    for (size_t i = 0; i < sizeof durs / sizeof durs[0]; i++) {
        char yaml[128];
        snprintf(yaml, sizeof yaml, "%sbuffer: {flush: '%s'}", one_robot, durs[i].text);
        exp_cfg_t c;
        cr_err_t err = {0};
        int rc = load(&c, yaml, NULL, 0, &err);
        if (durs[i].ns < 0) {
            if (rc == 0) fprintf(stderr, "  duration '%s' accepted\n", durs[i].text);
            ASSERT_INT_EQ(rc, CR_EINVAL);
            ASSERT_TRUE(strstr(err.msg, "buffer.flush: expected a duration (like 10ms), got") != NULL);
            continue;
        }
        CHECK_OK(rc, &err);
        ASSERT_INT_EQ(c.buffer.flush, durs[i].ns);
        cfg_free(&exp_table, &c);
    }
}

static void test_null_means_default(void)
{
    exp_cfg_t c;
    cr_err_t err = {0};
    CHECK_OK(load(&c, "name:\nresume: ~\nalgorithm:\nhidden: null\nrobots: [{name: a}]\n",
                   NULL, 0, &err), &err);
    ASSERT_STR_EQ(c.name, "exp");
    ASSERT_INT_EQ(c.algorithm.batch_size, 256);
    ASSERT_INT_EQ(c.n_hidden, 2);
    cfg_free(&exp_table, &c);
    /* A quoted "null" is a string, not null. */
    CHECK_OK(load(&c, "name: 'null'\nrobots: [{name: a}]\n", NULL, 0, &err), &err);
    ASSERT_STR_EQ(c.name, "null");
    cfg_free(&exp_table, &c);
}

/* ---- error messages, exactly ------------------------------------------------------ */

static void test_value_errors(void)
{
    expect_error("algorithm:\n  batch_size: abc\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:15: algorithm.batch_size: expected an integer between 1 and 65536, "
                 "got 'abc'");
    expect_error("algorithm:\n  batch_size: 131072\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:15: algorithm.batch_size: expected an integer between 1 and 65536, "
                 "got '131072'");
    expect_error("algorithm: {updates: 0}", NULL, 0, CR_EINVAL,
                 "t.yaml:1:22: algorithm.updates: expected a positive integer, got '0'");
    expect_error("algorithm: {updates: 2147483648}", NULL, 0, CR_EINVAL,
                 "t.yaml:1:22: algorithm.updates: expected a positive integer, got '2147483648'");
    expect_error("algorithm: {lr: 1.5}", NULL, 0, CR_EINVAL,
                 "t.yaml:1:17: algorithm.lr: expected a number between 0 and 1, got '1.5'");
    expect_error("algorithm: {tau: .nan}", NULL, 0, CR_EINVAL,
                 "t.yaml:1:18: algorithm.tau: expected a number, got '.nan'");
    expect_error("resume: maybe", NULL, 0, CR_EINVAL,
                 "t.yaml:1:9: resume: expected true or false, got 'maybe'");
    expect_error("robots: [{name: a, kind: dynamixl}]", NULL, 0, CR_EINVAL,
                 "t.yaml:1:26: robots.0.kind: expected one of mujoco, dynamixel, mock, got "
                 "'dynamixl'; did you mean 'dynamixel'?");
    expect_error("robots: [{name: a, kind: zzz}]", NULL, 0, CR_EINVAL,
                 "t.yaml:1:26: robots.0.kind: expected one of mujoco, dynamixel, mock, got 'zzz'");
    expect_error("hidden: [64, 5000]", NULL, 0, CR_EINVAL,
                 "t.yaml:1:14: hidden.1: expected an integer between 2 and 4096, got '5000'");
    expect_error("hidden: [64, ~]", NULL, 0, CR_EINVAL,
                 "t.yaml:1:14: hidden.1: expected an integer between 2 and 4096, got nothing");
    expect_error("periods: [1ms, 2s]", NULL, 0, CR_EINVAL,
                 "t.yaml:1:16: periods.1: expected a duration (like 10ms) between 1ms and 1s, "
                 "got '2s'");
    /* A long or binary value is shortened and made printable in the message. */
    expect_error("name: x\nresume: \"\\t0123456789012345678901234567890123456789012345678901234\"",
                 NULL, 0, CR_EINVAL,
                 "t.yaml:2:9: resume: expected true or false, got "
                 "'?01234567890123456789012345678901234567890123456...'");
}

static void test_validators(void)
{
    expect_error("algorithm:\n  batch_size: 100\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:15: algorithm.batch_size: must be a power of two, got 100");
    expect_error("hidden: [64, 33]\nrobots: [{name: a}]", NULL, 0, CR_EINVAL,
                 "t.yaml:1:14: hidden.1: must be even");
    expect_error("robots:\n  - name: a\n  - name: b\n  - name: a\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:1: robots 0 and 2 are both named 'a'");
}

static void test_structure_errors(void)
{
    expect_error("algorithm:\n  batchsize: 64\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:3: algorithm.batchsize: unknown key; did you mean 'batch_size'?");
    expect_error("algorithm:\n  Batch-Size: 64\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:3: algorithm.Batch-Size: unknown key; did you mean 'batch_size'?");
    expect_error("bufer: {}\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:1: bufer: unknown key; did you mean 'buffer'?");
    expect_error("algorithm: {zzz: 1}\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:13: algorithm.zzz: unknown key; valid keys are name, batch_size, lr, "
                 "updates, tau");
    expect_error("name: x\n", NULL, 0, CR_EINVAL, "t.yaml:1:1: robots: required field is missing");
    expect_error("robots: []\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:9: robots: expected at least one item, got an empty list");
    expect_error("robots:\n  - kind: mock\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:5: robots.0.name: required field is missing");
    expect_error("robots: [{name: a}, {name: b}, {name: c}, {name: d}]\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:9: robots: expected at most 3 items, got 4");
    expect_error("name: a\nresume: true\nname: b\n", NULL, 0, CR_EINVAL,
                 "t.yaml:3:1: name: duplicate key (first at line 1)");
    expect_error("algorithm:\n  - 1\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:3: algorithm: expected a mapping, got a list");
    expect_error("algorithm: fast\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:12: algorithm: expected a mapping, got 'fast'");
    expect_error("name: {a: 1}\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:7: name: expected a string, got a mapping");
    expect_error("hidden: 64\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:9: hidden: expected a list, got '64'");
    expect_error("robots: {name: a}\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:9: robots: expected a list of mappings, got a mapping");
    expect_error("robots: [arm]\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:10: robots.0: expected a mapping, got 'arm'");
    expect_error("- a\n- b\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:1: expected a mapping at the top level, got a list");
    expect_error("? [a, b]\n: 1\n", NULL, 0, CR_EINVAL,
                 "t.yaml:1:3: a key must be a plain value, not a mapping or a list");
}

static void test_yaml_errors(void)
{
    expect_error("algorithm:\n  lr: 1\n batch_size: 2\n", NULL, 0, CR_EINVAL,
                 "t.yaml:3:2: syntax error: did not find expected key (while parsing a block "
                 "mapping at 1:1)");
    expect_error("name: [a, b\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:1: syntax error: did not find expected ',' or ']' (while parsing a "
                 "flow sequence at 1:7)");
    expect_error("name: \"abc\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:1: syntax error: found unexpected end of stream (while scanning a "
                 "quoted scalar at 1:7)");
    expect_error("a: &x 1\nname: *x\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:7: aliases (*name) are not supported");
    expect_error("name: a\n---\nname: b\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:1: a second YAML document is not supported");
    expect_error("name: \"a\\0b\"\n", NULL, 0, CR_EINVAL, "t.yaml:1:7: name: NUL byte in a value");
    expect_error("name: ok\nresume: \xff\n", NULL, 0, CR_EINVAL,
                 "t.yaml:2:9: invalid input: invalid leading UTF-8 octet");
    char deep[400] = "a: ";
    for (int i = 0; i < 70; i++)
        strcat(deep, "[");
    /* The root map is level 1, "a" level 2: the 63rd '[' (column 66) is the last allowed. */
    char want[400] = "t.yaml:1:67: a";
    for (int i = 0; i < 63; i++)
        strcat(want, ".0");
    strcat(want, ": nested deeper than 64 levels");
    expect_error(deep, NULL, 0, CR_EINVAL, want);
}

/* A struct half-filled when the error strikes is freed (ASan's leak check sees it). */
static void test_partial_failure_frees(void)
{
    expect_error("name: x\ntags: [a, b]\nrobots:\n  - {name: a, options: {x: 1}}\n"
                 "  - {name: b, kind: bad}\n", NULL, 0, CR_EINVAL,
                 "t.yaml:5:21: robots.1.kind: expected one of mujoco, dynamixel, mock, got 'bad'");
}

/* ---- --set ------------------------------------------------------------------------- */

static void test_set(void)
{
    const char *sets[] = {
        "algorithm.lr=0.01",
        "name=a=b",                         /* the first '=' splits */
        "robots.0.options.port=/dev/ttyACM0",
        "robots.1.name=second",             /* appends */
        "robots.1.kind=mock",
        "hidden=[32, 16]",
        "tags=[x, {y: 1}]",                 /* a flow value parsed as YAML (and then rejected) */
    };
    exp_cfg_t c;
    cr_err_t err = {0};
    CHECK_OK(load(&c, "name: orig\nalgorithm: {lr: 0.5}\nrobots:\n  - name: arm\n", sets, 6,
                   &err), &err);
    ASSERT_STR_EQ(c.name, "a=b");
    ASSERT_NEAR(c.algorithm.lr, 0.01, 1e-12);
    ASSERT_INT_EQ(c.n_robots, 2);
    ASSERT_STR_EQ(c.robots[0].name, "arm");
    ASSERT_STR_EQ(cfg_node_get(c.robots[0].options, "port")->text, "/dev/ttyACM0");
    ASSERT_STR_EQ(cfg_node_get(c.robots[0].options, "port")->source, "--set");
    ASSERT_STR_EQ(c.robots[1].name, "second");
    ASSERT_INT_EQ(c.robots[1].kind, 2);
    ASSERT_INT_EQ(c.n_hidden, 2);
    ASSERT_INT_EQ(c.hidden[1], 16);
    cfg_free(&exp_table, &c);
    expect_error("robots: [{name: a}]", sets + 6, 1, CR_EINVAL,
                 "--set:1:10: tags.1: expected a string, got a mapping");

    /* With no file at all: defaults and overrides only; an empty value resets. */
    const char *only[] = {"robots.0.name=x", "algorithm.batch_size=", "resume=on"};
    CHECK_OK(cfg_load_string(&exp_table, &c, "none", NULL, 0, only, 3, &err), &err);
    ASSERT_STR_EQ(c.robots[0].name, "x");
    ASSERT_INT_EQ(c.algorithm.batch_size, 256);
    ASSERT_INT_EQ(c.resume, 1);
    cfg_free(&exp_table, &c);
}

static void test_set_errors(void)
{
    const char *r = "robots: [{name: a}]\n";
    const char *s1[] = {"name=x", "algorithm.batch_size=abc"};
    expect_error(r, s1, 2, CR_EINVAL,
                 "--set:2:22: algorithm.batch_size: expected an integer between 1 and 65536, "
                 "got 'abc'");
    const char *s2[] = {"algorithm.batchsize=64"};
    expect_error(r, s2, 1, CR_EINVAL,
                 "--set:1:11: algorithm.batchsize: unknown key; did you mean 'batch_size'?");
    const char *s3[] = {"resume"};
    expect_error(r, s3, 1, CR_EINVAL, "--set:1:1: expected KEY=VALUE, got 'resume'");
    const char *s4[] = {"robots.5.name=x"};
    expect_error(r, s4, 1, CR_EINVAL,
                 "--set:1:8: robots: index 5 is past the end of the list (1 items; 1 appends)");
    const char *s5[] = {"name.first=x"};
    expect_error("name: x\nrobots: [{name: a}]\n", s5, 1, CR_EINVAL,
                 "--set:1:1: name: holds a value, not a section: cannot set 'first' inside it");
    const char *s6[] = {"robots.x.name=a"};
    expect_error(r, s6, 1, CR_EINVAL,
                 "--set:1:8: robots: is a list: expected an item index, got 'x'");
    const char *s7[] = {"algorithm..lr=1"};
    expect_error(r, s7, 1, CR_EINVAL, "--set:1:11: algorithm: empty key in 'algorithm..lr=1'");
    const char *s8[] = {"hidden=[1, 2"};
    expect_error(r, s8, 1, CR_EINVAL,
                 "--set:1:13: syntax error: did not find expected ',' or ']' (while parsing a "
                 "flow sequence at 1:8)");
    const char *s9[] = {"robots.1.kind=mock"};
    expect_error(r, s9, 1, CR_EINVAL, "--set:1:8: robots.1.name: required field is missing");
}

/* ---- the untyped tree ------------------------------------------------------------- */

typedef struct dxl_opts {
    char *port;
    int64_t baud;
} dxl_opts_t;

static void test_node_tree(void)
{
    cfg_node_t *n;
    cr_err_t err = {0};
    const char *y = "a:\n  b: [x, {c: 'd'}]\n  e: ~\n";
    CHECK_OK(cfg_node_parse("n.yaml", y, strlen(y), &n, &err), &err);
    ASSERT_INT_EQ(n->kind, CFG_NODE_MAP);
    const cfg_node_t *c = cfg_node_get(n, "a.b.1.c");
    ASSERT_TRUE(c != NULL);
    ASSERT_STR_EQ(c->text, "d");
    ASSERT_STR_EQ(c->path, "a.b.1.c");
    ASSERT_INT_EQ(c->line, 2);
    ASSERT_INT_EQ(c->col, 14);
    ASSERT_INT_EQ(c->key_col, 11);
    ASSERT_TRUE(cfg_node_get(n, "a.e")->is_null);
    ASSERT_TRUE(cfg_node_get(n, "a.b.1")->key == NULL);
    CHECK_OK(cfg_node_set(n, "a.b.0=y", 1, &err), &err);
    CHECK_OK(cfg_node_set(n, "f.g=1", 2, &err), &err);
    ASSERT_STR_EQ(cfg_node_get(n, "a.b.0")->text, "y");
    ASSERT_STR_EQ(cfg_node_get(n, "f.g")->path, "f.g");
    cfg_node_t *copy = cfg_node_copy(cfg_node_get(n, "a"));
    cfg_node_free(n);
    ASSERT_STR_EQ(cfg_node_get(copy, "b.1.c")->path, "a.b.1.c");
    cfg_node_free(copy);

    /* A driver decodes its free-form options later, with errors pointing at the file. */
    static const cfg_field_t f[] = {
        {CFG_STRING(dxl_opts_t, port, CFG_REQUIRED, "serial device")},
        {CFG_INT(dxl_opts_t, baud, "57600", 9600, 4000000, "bit rate")},
    };
    static const cfg_table_t dxl = {CFG_TABLE(dxl_opts_t, f)};
    exp_cfg_t e;
    CHECK_OK(load(&e, "robots:\n  - name: a\n  - name: b\n    options:\n      baud: fast\n",
                   NULL, 0, &err), &err);
    dxl_opts_t o;
    ASSERT_INT_EQ(cfg_decode(&dxl, &o, e.robots[1].options, &err), CR_EINVAL);
    ASSERT_STR_EQ(err.msg, "t.yaml:5:13: robots.1.options.baud: expected an integer between "
                           "9600 and 4000000, got 'fast'");
    ASSERT_TRUE(all_zero(&o, sizeof o));
    ASSERT_INT_EQ(cfg_decode(&dxl, &o, NULL, &err), CR_EINVAL);
    ASSERT_STR_EQ(err.msg, "<defaults>:1:1: port: required field is missing");
    cfg_free(&exp_table, &e);
}

/* ---- files and docs --------------------------------------------------------------- */

static void test_file(void)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(path, sizeof path, "%s/exp.yaml", dir);
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("# an experiment\nalgorithm:\n  batch_size: 64\n\nrobots:\n  - name: arm\n"
          "    kind: mokc\n", f);
    fclose(f);
    exp_cfg_t c;
    cr_err_t err = {0};
    const char *fix[] = {"robots.0.kind=mock"};
    CHECK_OK(cfg_load_file(&exp_table, &c, path, fix, 1, &err), &err);
    ASSERT_INT_EQ(c.algorithm.batch_size, 64);
    ASSERT_INT_EQ(c.robots[0].kind, 2);
    cfg_free(&exp_table, &c);
    ASSERT_INT_EQ(cfg_load_file(&exp_table, &c, path, NULL, 0, &err), CR_EINVAL);
    char want[4400];
    snprintf(want, sizeof want, "%s:7:11: robots.0.kind: expected one of mujoco, dynamixel, mock, "
             "got 'mokc'; did you mean 'mock'?", path);
    ASSERT_STR_EQ(err.msg, want);

    snprintf(path, sizeof path, "%s/missing.yaml", dir);
    ASSERT_INT_EQ(cfg_load_file(&exp_table, &c, path, NULL, 0, &err), CR_ENOENT);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    ASSERT_STR_EQ(err.msg, want);
    ASSERT_TRUE(all_zero(&c, sizeof c));

    /* A directory opens but does not read; an oversized file is refused, not cut. */
    ASSERT_INT_EQ(cfg_load_file(&exp_table, &c, dir, NULL, 0, &err), CR_EIO);
    snprintf(want, sizeof want, "%s: read failed: Is a directory", dir);
    ASSERT_STR_EQ(err.msg, want);
    snprintf(path, sizeof path, "%s/big.yaml", dir);
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    static char line[4096];
    memset(line, ' ', sizeof line - 1);
    line[0] = '#';
    line[sizeof line - 2] = '\n';
    for (size_t n = 0; n <= CFG_MAX_INPUT; n += sizeof line - 1)
        fputs(line, f);
    fclose(f);
    ASSERT_INT_EQ(cfg_load_file(&exp_table, &c, path, NULL, 0, &err), CR_ETOOBIG);
    snprintf(want, sizeof want, "%s: larger than the %u bytes a config may have", path,
             CFG_MAX_INPUT);
    ASSERT_STR_EQ(err.msg, want);
}

static void test_doc(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    ASSERT_TRUE(m != NULL);
    ASSERT_INT_EQ(cfg_doc(&exp_table, m), 0);
    fclose(m);
    const char *want[] = {
        "name                         string = \"exp\": experiment name\n",
        "algorithm                    section: learner algorithm\n",
        "algorithm.batch_size         int = 256, an integer between 1 and 65536: samples per update\n",
        "algorithm.lr                 number = 3e-4, a number between 0 and 1: learning rate\n",
        "buffer.capacity              size = 1GiB, a size (like 512MiB) between 1MiB and 80GiB: bytes on disk\n",
        "buffer.flush                 duration = 10ms, a duration (like 10ms): group commit period\n",
        "hidden                       list of int, at most 4, each an integer between 2 and 4096, default [256, 256]: hidden widths\n",
        "robots                       list of sections, at most 3, required: robots\n",
        "robots.N.name                string, required, a string: robot name, unique in the experiment\n",
        "robots.N.kind                enum = mujoco, one of mujoco, dynamixel, mock: HAL driver\n",
        "robots.N.options             free-form: driver-specific options\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(buf, want[i])) fprintf(stderr, "  missing: %s  in:\n%s", want[i], buf);
        ASSERT_TRUE(strstr(buf, want[i]) != NULL);
    }
    free(buf);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"table_check", test_table_check},
        {"defaults", test_defaults},
        {"every_type", test_every_type},
        {"sizes_and_durations", test_sizes_and_durations},
        {"null_means_default", test_null_means_default},
        {"value_errors", test_value_errors},
        {"validators", test_validators},
        {"structure_errors", test_structure_errors},
        {"yaml_errors", test_yaml_errors},
        {"partial_failure_frees", test_partial_failure_frees},
        {"set", test_set},
        {"set_errors", test_set_errors},
        {"node_tree", test_node_tree},
        {"file", test_file},
        {"doc", test_doc},
        {NULL, NULL},
    };
    return test_main("config", cases, argc, argv);
}
