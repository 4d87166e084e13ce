/* test_registry.c - the SQLite registry: schema migrations, validation, the
 * node / robot / GPU state machine, merging of CLI and agent reports, and the
 * rule that a refused change leaves the registry unchanged. */
/* harness.h's ASSERT_OK puts a statement after a one-line if on the same
 * continuation line, which gcc flags as misleading indentation. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tests/harness.h"
#include "controller/registry.h"
#include "controller/schema.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

static ctl_registry_t *open_fresh(void)
{
    static int n;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/state%d", test_tmpdir(), n++);
    ctl_registry_t *reg = NULL;
    cr_err_t err = {0};
    ASSERT_OK(ctl_registry_open(dir, &reg, &err), &err);
    return reg;
}

/* Inventory builder: robots given as "name:driver", GPUs as model strings. */
typedef struct inv_buf {
    Corral__V1__Inventory inv;
    Corral__V1__HostFacts host;
    Corral__V1__RobotInfo robots[8];
    Corral__V1__RobotInfo *rp[8];
    Corral__V1__GpuInfo gpus[8];
    Corral__V1__GpuInfo *gp[8];
    char names[8][64], drivers[8][32];
} inv_buf_t;

static Corral__V1__Inventory *inv_make(inv_buf_t *b, const char *node, const char *robots[],
                                       const char *gpus[])
{
    memset(b, 0, sizeof *b);
    corral__v1__inventory__init(&b->inv);
    corral__v1__host_facts__init(&b->host);
    b->inv.node = (char *)node;
    b->inv.agent_instance = 42;
    b->inv.host = &b->host;
    b->host.cores = 8;
    b->host.memory_bytes = 1ull << 34;
    for (int i = 0; robots && robots[i]; i++) {
        corral__v1__robot_info__init(&b->robots[i]);
        sscanf(robots[i], "%63[^:]:%31s", b->names[i], b->drivers[i]);
        b->robots[i].name = b->names[i];
        b->robots[i].driver = b->drivers[i];
        b->rp[i] = &b->robots[i];
        b->inv.n_robots++;
    }
    for (int i = 0; gpus && gpus[i]; i++) {
        corral__v1__gpu_info__init(&b->gpus[i]);
        b->gpus[i].index = (uint32_t)i;
        b->gpus[i].model = (char *)gpus[i];
        b->gpus[i].memory_bytes = 80ull << 30;
        b->gp[i] = &b->gpus[i];
        b->inv.n_gpus++;
    }
    b->inv.robots = b->rp;
    b->inv.gpus = b->gp;
    return &b->inv;
}

static int robot_register(ctl_registry_t *reg, const char *name, const char *driver,
                          const char *node, cr_err_t *err)
{
    Corral__V1__RegisterRobotRequest req;
    corral__v1__register_robot_request__init(&req);
    req.name = (char *)name;
    req.driver = (char *)driver;
    req.node = (char *)(node ? node : "");
    Corral__V1__Robot *r = NULL;
    int rc = ctl_reg_robot_register(reg, &req, &r, err);
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
}

/* State name of robot `name`, or "absent"; static storage. */
static const char *robot_state(ctl_registry_t *reg, const char *name)
{
    static char buf[32];
    Corral__V1__Robot *r = NULL;
    cr_err_t err = {0};
    if (ctl_reg_robot_get(reg, name, &r, &err) != 0) return "absent";
    snprintf(buf, sizeof buf, "%s", ctl_resource_state_name(r->state));
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return buf;
}

static const char *node_state(ctl_registry_t *reg, const char *name)
{
    static char buf[32];
    Corral__V1__Node *n = NULL;
    cr_err_t err = {0};
    if (ctl_reg_node_get(reg, name, &n, &err) != 0) return "absent";
    snprintf(buf, sizeof buf, "%s", ctl_node_state_name(n->state));
    protobuf_c_message_free_unpacked(&n->base, NULL);
    return buf;
}

static size_t robot_count(ctl_registry_t *reg)
{
    Corral__V1__ListRobotsResponse *l = NULL;
    cr_err_t err = {0};
    ASSERT_OK(ctl_reg_robot_list(reg, NULL, &l, &err), &err);
    size_t n = l->n_robots;
    protobuf_c_message_free_unpacked(&l->base, NULL);
    return n;
}

static void gpu_states(ctl_registry_t *reg, const char *node, char *out, size_t cap)
{
    Corral__V1__ListGpusResponse *l = NULL;
    cr_err_t err = {0};
    ASSERT_OK(ctl_reg_gpu_list(reg, node, &l, &err), &err);
    out[0] = '\0';
    for (size_t i = 0; i < l->n_gpus; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%u:%s:%s", i ? " " : "", l->gpus[i]->index,
                 l->gpus[i]->model, ctl_resource_state_name(l->gpus[i]->state));
    protobuf_c_message_free_unpacked(&l->base, NULL);
}

static void test_schema_fresh_and_reopen(void)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/reopen", test_tmpdir());
    ctl_registry_t *reg = NULL;
    cr_err_t err = {0};
    ASSERT_OK(ctl_registry_open(dir, &reg, &err), &err);
    ASSERT_INT_EQ(ctl_registry_schema_version(reg), CTL_SCHEMA_VERSION);
    ASSERT_INT_EQ(ctl_schema_latest(), CTL_SCHEMA_VERSION);
    inv_buf_t b;
    const char *robots[] = {"arm1:mock", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", robots, NULL), 1, &err), &err);
    ctl_registry_close(reg);
    ASSERT_OK(ctl_registry_open(dir, &reg, &err), &err);
    ASSERT_INT_EQ(ctl_registry_schema_version(reg), CTL_SCHEMA_VERSION);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "available");
    ASSERT_STR_EQ(node_state(reg, "n1"), "ready");
    ctl_registry_close(reg);
}

static void test_schema_migrates_old_and_refuses_newer(void)
{
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/old", test_tmpdir());
    ASSERT_INT_EQ(system(NULL) != 0, 1);
    snprintf(path, sizeof path, "mkdir -p %s", dir);
    ASSERT_INT_EQ(system(path), 0);
    snprintf(path, sizeof path, "%s/state.db", dir);
    sqlite3 *db = NULL;
    ASSERT_INT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    cr_err_t err = {0};
    ASSERT_OK(ctl_schema_migrate_to(db, 1, &err), &err);
    ASSERT_INT_EQ(sqlite3_exec(db, "INSERT INTO nodes(name, state, created_ms) VALUES ('old1','lost',0)",
                               NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    ctl_registry_t *reg = NULL;
    ASSERT_OK(ctl_registry_open(dir, &reg, &err), &err);
    ASSERT_INT_EQ(ctl_registry_schema_version(reg), CTL_SCHEMA_VERSION);
    ASSERT_STR_EQ(node_state(reg, "old1"), "lost");
    ctl_registry_close(reg);

    /* Migration 3 made the experiment tables. */
    ASSERT_INT_EQ(sqlite3_open(path, &db), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_exec(db, "SELECT count(*) FROM experiments, placements, experiment_meta", NULL, NULL,
                               NULL), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ASSERT_INT_EQ(ctl_registry_open(dir, &reg, &err), CR_EVERSION);
    ASSERT_TRUE(strstr(err.msg, "newer") != NULL);
    ASSERT_TRUE(reg == NULL);
}

static void test_bad_names_and_drivers(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    ASSERT_INT_EQ(robot_register(reg, long_name, "mock", NULL, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "63") != NULL);
    long_name[63] = '\0';
    ASSERT_OK(robot_register(reg, long_name, "mock", NULL, &err), &err);
    ASSERT_INT_EQ(robot_register(reg, "Arm1", "mock", NULL, &err), CR_EINVAL);
    ASSERT_INT_EQ(robot_register(reg, "arm 1", "mock", NULL, &err), CR_EINVAL);
    ASSERT_INT_EQ(robot_register(reg, "-arm", "mock", NULL, &err), CR_EINVAL);
    ASSERT_INT_EQ(robot_register(reg, "", "mock", NULL, &err), CR_EINVAL);
    ASSERT_INT_EQ(robot_register(reg, "arm_2-b", "warp", NULL, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "unknown driver 'warp'") != NULL);
    ASSERT_INT_EQ(robot_register(reg, "arm3", "mock", "nowhere", &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "unknown node 'nowhere'") != NULL);
    ASSERT_INT_EQ(robot_register(reg, "arm3", "mock", "Bad Node", &err), CR_EINVAL);
    ASSERT_INT_EQ(robot_count(reg), 1);  /* only the valid 63-character one */
    ASSERT_OK(robot_register(reg, "arm3", "dynamixel", NULL, &err), &err);
    ASSERT_INT_EQ(robot_register(reg, "arm3", "dynamixel", NULL, &err), CR_EEXIST);
    ASSERT_TRUE(strstr(err.msg, "already exists") != NULL);
    ASSERT_INT_EQ(robot_count(reg), 2);
    /* A robot with no node is not usable yet. */
    ASSERT_STR_EQ(robot_state(reg, "arm3"), "lost");
    ctl_registry_close(reg);
}

static void test_settings_validated_and_stored(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    Corral__V1__Setting s1 = CORRAL__V1__SETTING__INIT, s2 = CORRAL__V1__SETTING__INIT;
    s1.key = "baud";
    s1.value = "1000000";
    s2.key = "baud";
    s2.value = "57600";
    Corral__V1__Setting *ss[] = {&s1, &s2};
    Corral__V1__RegisterRobotRequest req = CORRAL__V1__REGISTER_ROBOT_REQUEST__INIT;
    req.name = "dx1";
    req.driver = "dynamixel";
    req.port = "/dev/ttyUSB0";
    req.settings = ss;
    req.n_settings = 2;
    Corral__V1__Robot *r = NULL;
    ASSERT_INT_EQ(ctl_reg_robot_register(reg, &req, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "twice") != NULL);
    s2.key = "Bad Key";
    ASSERT_INT_EQ(ctl_reg_robot_register(reg, &req, &r, &err), CR_EINVAL);
    req.n_settings = 1;
    ASSERT_OK(ctl_reg_robot_register(reg, &req, &r, &err), &err);
    ASSERT_INT_EQ(r->n_settings, 1);
    ASSERT_STR_EQ(r->settings[0]->key, "baud");
    ASSERT_STR_EQ(r->settings[0]->value, "1000000");
    ASSERT_STR_EQ(r->port, "/dev/ttyUSB0");
    ASSERT_TRUE(r->registered && !r->reported);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ctl_registry_close(reg);
}

/* Labels come from a registration and from the robot's agent, and add up;
 * malformed ones are refused with the label named. */
static void test_labels_registered_and_reported(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    char *labels[] = {"site=lab2", "table", "site=lab2"};
    Corral__V1__RegisterRobotRequest req = CORRAL__V1__REGISTER_ROBOT_REQUEST__INIT;
    req.name = "arm1";
    req.driver = "mujoco";
    req.labels = labels;
    req.n_labels = 3;
    Corral__V1__Robot *r = NULL;
    ASSERT_INT_EQ(ctl_reg_robot_register(reg, &req, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "label 'site=lab2' given twice") != NULL);
    char *spaced[] = {"has space"};
    req.labels = spaced;
    req.n_labels = 1;
    ASSERT_INT_EQ(ctl_reg_robot_register(reg, &req, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "label 'has space' is not") != NULL);
    req.labels = labels;
    req.n_labels = 2;
    ASSERT_OK(ctl_reg_robot_register(reg, &req, &r, &err), &err);
    ASSERT_INT_EQ(r->n_labels, 2);
    ASSERT_STR_EQ(r->labels[0], "site=lab2");
    ASSERT_STR_EQ(r->labels[1], "table");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* Its agent adds one of its own; the registered ones stay. */
    inv_buf_t b;
    const char *robots[] = {"arm1:mujoco", NULL};
    Corral__V1__Inventory *inv = inv_make(&b, "n1", robots, NULL);
    char *agent_labels[] = {"camera", "table"};
    b.robots[0].labels = agent_labels;
    b.robots[0].n_labels = 2;
    ASSERT_OK(ctl_reg_node_up(reg, inv, 1, &err), &err);
    ASSERT_OK(ctl_reg_robot_get(reg, "arm1", &r, &err), &err);
    ASSERT_INT_EQ(r->n_labels, 3);
    ASSERT_STR_EQ(r->labels[2], "camera");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* A malformed label in an inventory refuses the inventory. */
    char *bad[] = {"a,b"};
    b.robots[0].labels = bad;
    b.robots[0].n_labels = 1;
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv, 2, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "inventory of node n1") && strstr(err.msg, "label 'a,b'"));
    ctl_registry_close(reg);
}

static void test_node_lifecycle_lost_and_back(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *robots[] = {"arm1:mujoco", "arm2:mock", NULL};
    const char *gpus[] = {"H100", "H100", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", robots, gpus), 1000, &err), &err);
    ASSERT_STR_EQ(node_state(reg, "n1"), "ready");
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "available");
    char g[256];
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "0:H100:available 1:H100:available");

    ASSERT_OK(ctl_reg_node_lost(reg, "n1", "no heartbeat", 2000, &err), &err);
    ASSERT_STR_EQ(node_state(reg, "n1"), "lost");
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "lost");
    ASSERT_STR_EQ(robot_state(reg, "arm2"), "lost");
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "0:H100:lost 1:H100:lost");
    /* Losing a lost node again is harmless; an unknown node is an error. */
    ASSERT_OK(ctl_reg_node_lost(reg, "n1", "again", 2100, &err), &err);
    ASSERT_INT_EQ(ctl_reg_node_lost(reg, "ghost", "x", 2100, &err), CR_ENOENT);

    char **live = NULL;
    size_t nlive = 0;
    ASSERT_OK(ctl_reg_nodes_live(reg, &live, &nlive, &err), &err);
    ASSERT_INT_EQ(nlive, 0);
    ctl_names_free(live, nlive);

    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", robots, gpus), 3000, &err), &err);
    ASSERT_STR_EQ(node_state(reg, "n1"), "ready");
    ASSERT_STR_EQ(robot_state(reg, "arm2"), "available");
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "0:H100:available 1:H100:available");
    Corral__V1__Node *n = NULL;
    ASSERT_OK(ctl_reg_node_get(reg, "n1", &n, &err), &err);
    ASSERT_INT_EQ(n->robot_count, 2);
    ASSERT_INT_EQ(n->gpu_count, 2);
    ASSERT_INT_EQ(n->cores, 8);
    ASSERT_INT_EQ(n->last_seen_unix_ms, 3000);
    protobuf_c_message_free_unpacked(&n->base, NULL);
    ASSERT_OK(ctl_reg_nodes_live(reg, &live, &nlive, &err), &err);
    ASSERT_INT_EQ(nlive, 1);
    ASSERT_STR_EQ(live[0], "n1");
    ctl_names_free(live, nlive);
    ctl_registry_close(reg);
}

static void test_cli_and_agent_report_are_one_record(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    ASSERT_OK(robot_register(reg, "arm1", "mujoco", NULL, &err), &err);
    inv_buf_t b;
    const char *robots[] = {"arm1:mujoco", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", robots, NULL), 1, &err), &err);
    ASSERT_INT_EQ(robot_count(reg), 1);
    Corral__V1__Robot *r = NULL;
    ASSERT_OK(ctl_reg_robot_get(reg, "arm1", &r, &err), &err);
    ASSERT_STR_EQ(r->node, "n1");
    ASSERT_TRUE(r->registered && r->reported);
    ASSERT_STR_EQ(ctl_resource_state_name(r->state), "available");
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* The other order: reported first, registered second, also one record. */
    const char *more[] = {"arm1:mujoco", "arm2:mock", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", more, NULL), 2, &err), &err);
    ASSERT_OK(robot_register(reg, "arm2", "mock", "n1", &err), &err);
    ASSERT_INT_EQ(robot_register(reg, "arm2", "mock", "n1", &err), CR_EEXIST);
    ASSERT_INT_EQ(robot_count(reg), 2);
    ctl_registry_close(reg);
}

static void test_contradictory_inventory_changes_nothing(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *r1[] = {"arm1:mujoco", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, NULL), 1, &err), &err);
    ASSERT_OK(robot_register(reg, "cam1", "remote", "n1", &err), &err);

    /* n2 claims n1's robot: refused, and n2 is not even created. */
    const char *r2[] = {"arm9:mock", "arm1:mujoco", NULL};
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "n2", r2, NULL), 2, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "robot arm1 belongs to node n1, but node n2 reports it") != NULL);
    ASSERT_STR_EQ(node_state(reg, "n2"), "absent");
    ASSERT_STR_EQ(robot_state(reg, "arm9"), "absent");
    ASSERT_INT_EQ(ctl_reg_inventory_check(reg, inv_make(&b, "n2", r2, NULL), &err), CR_EBUSY);

    /* n1 reports a registered robot with another driver. */
    const char *r3[] = {"arm1:mujoco", "cam1:mock", NULL};
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "n1", r3, NULL), 3, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "driver 'mock' but the registry has 'remote'") != NULL);

    /* Malformed inventories. */
    const char *dup[] = {"arm1:mujoco", "arm1:mujoco", NULL};
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "n1", dup, NULL), 4, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "twice") != NULL);
    const char *bad[] = {"ARM:mujoco", NULL};
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "n1", bad, NULL), 4, &err), CR_EINVAL);
    const char *drv[] = {"arm5:warp", NULL};
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "n1", drv, NULL), 4, &err), CR_EINVAL);
    const char *gpus[] = {"H100", "H100", NULL};
    inv_make(&b, "n1", r1, gpus);
    b.gpus[1].index = 0;
    ASSERT_INT_EQ(ctl_reg_node_up(reg, &b.inv, 4, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "GPU index 0 twice") != NULL);
    inv_make(&b, "n1", r1, NULL);
    b.host.accepts_inbound = 1;
    ASSERT_INT_EQ(ctl_reg_node_up(reg, &b.inv, 4, &err), CR_EINVAL);
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "N1", r1, NULL), 4, &err), CR_EINVAL);

    /* After all that, the registry is as before. */
    ASSERT_INT_EQ(robot_count(reg), 2);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "available");
    ASSERT_STR_EQ(robot_state(reg, "cam1"), "available");
    char g[64];
    gpu_states(reg, NULL, g, sizeof g);
    ASSERT_STR_EQ(g, "");
    ctl_registry_close(reg);
}

static void test_agent_only_robots_follow_inventory(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *two[] = {"arm1:mock", "arm2:mock", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", two, NULL), 1, &err), &err);
    ASSERT_OK(robot_register(reg, "arm2", "mock", NULL, &err), &err);
    const char *none[] = {NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", none, NULL), 2, &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "absent");   /* only the agent knew it */
    ASSERT_STR_EQ(robot_state(reg, "arm2"), "available"); /* registered: stays */
    ctl_registry_close(reg);
}

static void test_estop_latches_over_everything(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *r1[] = {"arm1:mock", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, NULL), 1, &err), &err);
    Corral__V1__Robot *r = NULL;
    char node[64];
    ASSERT_OK(ctl_reg_robot_estop(reg, "arm1", 0, &r, node, &err), &err);
    ASSERT_STR_EQ(node, "n1");
    ASSERT_TRUE(r->estopped);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "estopped");
    ASSERT_OK(ctl_reg_node_lost(reg, "n1", "x", 2, &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "estopped");
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, NULL), 3, &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "estopped");  /* reconnecting does not release */
    ASSERT_OK(ctl_reg_robot_estop(reg, "arm1", 1, &r, NULL, &err), &err);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "available");
    ASSERT_INT_EQ(ctl_reg_robot_estop(reg, "ghost", 0, &r, NULL, &err), CR_ENOENT);
    ctl_registry_close(reg);
}

static void test_drain_survives_loss(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *r1[] = {"arm1:mock", NULL};
    const char *g1[] = {"A100", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, g1), 1, &err), &err);
    Corral__V1__Node *n = NULL;
    ASSERT_OK(ctl_reg_node_drain(reg, "n1", 0, &n, &err), &err);
    ASSERT_STR_EQ(ctl_node_state_name(n->state), "draining");
    protobuf_c_message_free_unpacked(&n->base, NULL);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "draining");
    char g[64];
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "0:A100:draining");
    ASSERT_OK(ctl_reg_node_lost(reg, "n1", "x", 2, &err), &err);
    ASSERT_STR_EQ(node_state(reg, "n1"), "lost");
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, g1), 3, &err), &err);
    ASSERT_STR_EQ(node_state(reg, "n1"), "draining");
    ASSERT_OK(ctl_reg_node_drain(reg, "n1", 1, &n, &err), &err);
    protobuf_c_message_free_unpacked(&n->base, NULL);
    ASSERT_STR_EQ(node_state(reg, "n1"), "ready");
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "available");
    ASSERT_INT_EQ(ctl_reg_node_drain(reg, "ghost", 0, &n, &err), CR_ENOENT);
    ctl_registry_close(reg);
}

static int gpu_register(ctl_registry_t *reg, const char *node, int index, const char *model,
                        uint64_t mem, int *got, cr_err_t *err)
{
    Corral__V1__RegisterGpuRequest req = CORRAL__V1__REGISTER_GPU_REQUEST__INIT;
    req.node = (char *)node;
    req.index = index;
    req.model = (char *)model;
    req.memory_bytes = mem;
    Corral__V1__Gpu *g = NULL;
    int rc = ctl_reg_gpu_register(reg, &req, &g, err);
    if (g) {
        if (got) *got = (int)g->index;
        protobuf_c_message_free_unpacked(&g->base, NULL);
    }
    return rc;
}

static void test_gpu_register(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *g1[] = {"H100", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", NULL, g1), 1, &err), &err);
    int idx = -1;
    ASSERT_INT_EQ(gpu_register(reg, "n9", -1, "A100", 40ull << 30, &idx, &err), CR_ENOENT);
    ASSERT_INT_EQ(gpu_register(reg, "n1", -1, "", 40ull << 30, &idx, &err), CR_EINVAL);
    ASSERT_INT_EQ(gpu_register(reg, "n1", -1, "A100", 0, &idx, &err), CR_EINVAL);
    ASSERT_INT_EQ(gpu_register(reg, "n1", 0, "A100", 40ull << 30, &idx, &err), CR_EEXIST);
    ASSERT_TRUE(strstr(err.msg, "probed") != NULL);
    ASSERT_OK(gpu_register(reg, "n1", -1, "A100", 40ull << 30, &idx, &err), &err);
    ASSERT_INT_EQ(idx, 1);
    ASSERT_OK(gpu_register(reg, "n1", 5, "A100", 40ull << 30, &idx, &err), &err);
    ASSERT_OK(gpu_register(reg, "n1", -1, "A100", 40ull << 30, &idx, &err), &err);
    ASSERT_INT_EQ(idx, 2);
    char g[256];
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "0:H100:available 1:A100:available 2:A100:available 5:A100:available");

    /* The agent now probes index 1 as something else: a contradiction. */
    const char *g2[] = {"H100", "H100", NULL};
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "n1", NULL, g2), 2, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "GPU 1 of node n1 was registered as A100") != NULL);
    /* A later inventory without index 0 drops the probed GPU but keeps registered ones. */
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", NULL, NULL), 3, &err), &err);
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "1:A100:available 2:A100:available 5:A100:available");
    ctl_registry_close(reg);
}

static void test_robot_remove(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *r1[] = {"arm1:mock", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, NULL), 1, &err), &err);
    ASSERT_OK(robot_register(reg, "cam1", "remote", "n1", &err), &err);
    ASSERT_INT_EQ(ctl_reg_robot_remove(reg, "arm1", &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "configuration") != NULL);
    ASSERT_OK(ctl_reg_robot_remove(reg, "cam1", &err), &err);
    ASSERT_INT_EQ(ctl_reg_robot_remove(reg, "cam1", &err), CR_ENOENT);
    ASSERT_OK(ctl_reg_node_lost(reg, "n1", "x", 2, &err), &err);
    ASSERT_OK(ctl_reg_robot_remove(reg, "arm1", &err), &err);
    ASSERT_INT_EQ(robot_count(reg), 0);
    ctl_registry_close(reg);
}

static void test_list_filters_by_node(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *r1[] = {"b1:mock", "a1:mock", NULL};
    const char *r2[] = {"c2:mock", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, NULL), 1, &err), &err);
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n2", r2, NULL), 1, &err), &err);
    Corral__V1__ListRobotsResponse *l = NULL;
    ASSERT_OK(ctl_reg_robot_list(reg, "n1", &l, &err), &err);
    ASSERT_INT_EQ(l->n_robots, 2);
    ASSERT_STR_EQ(l->robots[0]->name, "a1");  /* ordered by name */
    protobuf_c_message_free_unpacked(&l->base, NULL);
    Corral__V1__ListNodesResponse *nl = NULL;
    ASSERT_OK(ctl_reg_node_list(reg, &nl, &err), &err);
    ASSERT_INT_EQ(nl->n_nodes, 2);
    ASSERT_STR_EQ(nl->nodes[1]->name, "n2");
    protobuf_c_message_free_unpacked(&nl->base, NULL);
    ctl_registry_close(reg);
}

static void test_holds_by_experiments(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    inv_buf_t b;
    const char *r1[] = {"arm1:mock", "arm2:mock", NULL};
    const char *g1[] = {"H100", NULL};
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, g1), 1, &err), &err);
    ASSERT_OK(ctl_reg_robot_claim(reg, "arm1", "exp1", &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "in-use");
    ASSERT_OK(ctl_reg_robot_claim(reg, "arm1", "exp1", &err), &err);  /* idempotent */
    ASSERT_INT_EQ(ctl_reg_robot_claim(reg, "arm1", "exp2", &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "in use by experiment exp1") != NULL);
    ASSERT_INT_EQ(ctl_reg_robot_claim(reg, "ghost", "exp2", &err), CR_ENOENT);
    ASSERT_INT_EQ(ctl_reg_robot_claim(reg, "arm2", "Bad Exp", &err), CR_EINVAL);
    ASSERT_OK(ctl_reg_gpu_claim(reg, "n1", 0, "exp1", &err), &err);
    ASSERT_INT_EQ(ctl_reg_gpu_claim(reg, "n1", 0, "exp2", &err), CR_EBUSY);
    ASSERT_INT_EQ(ctl_reg_gpu_claim(reg, "n1", 7, "exp2", &err), CR_ENOENT);
    char g[64];
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "0:H100:in-use");
    /* An in-use robot cannot be removed; a lost node keeps the hold. */
    ASSERT_OK(ctl_reg_node_lost(reg, "n1", "x", 2, &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "lost");
    ASSERT_INT_EQ(ctl_reg_robot_remove(reg, "arm1", &err), CR_EBUSY);
    ASSERT_INT_EQ(ctl_reg_robot_claim(reg, "arm2", "exp2", &err), CR_EBUSY);  /* lost: not claimable */
    ASSERT_TRUE(strstr(err.msg, "robot arm2 is lost") != NULL);
    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, g1), 3, &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "in-use");
    Corral__V1__Robot *r = NULL;
    ASSERT_OK(ctl_reg_robot_get(reg, "arm1", &r, &err), &err);
    ASSERT_STR_EQ(r->experiment, "exp1");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ASSERT_INT_EQ(ctl_reg_robot_release(reg, "arm1", "exp2", &err), CR_EBUSY);
    ASSERT_OK(ctl_reg_robot_release(reg, "arm1", "exp1", &err), &err);
    ASSERT_OK(ctl_reg_robot_release(reg, "arm1", "exp1", &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "available");
    ASSERT_OK(ctl_reg_gpu_release(reg, "n1", 0, "exp1", &err), &err);
    gpu_states(reg, "n1", g, sizeof g);
    ASSERT_STR_EQ(g, "0:H100:available");
    ctl_registry_close(reg);
}

/* Faults injected through SQLite itself: a trigger (created over a second
 * connection, as another process could) makes one statement in the middle of a
 * transaction fail; everything before it in that transaction must be undone. */
static void test_sqlite_failure_mid_transaction_rolls_back(void)
{
    ctl_registry_t *reg = open_fresh();
    cr_err_t err = {0};
    sqlite3 *db = NULL;
    ASSERT_INT_EQ(sqlite3_open(ctl_registry_path(reg), &db), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_exec(db, "CREATE TRIGGER inject BEFORE INSERT ON gpus BEGIN "
                                   "SELECT RAISE(ABORT, 'injected fault'); END", NULL, NULL, NULL), SQLITE_OK);
    inv_buf_t b;
    const char *r1[] = {"arm1:mock", "arm2:mock", NULL};
    const char *g1[] = {"H100", NULL};
    /* node_up writes the node and two robots, then fails on the GPU. */
    ASSERT_INT_EQ(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, g1), 1, &err), CR_EIO);
    ASSERT_TRUE(strstr(err.msg, "injected fault") != NULL);
    ASSERT_STR_EQ(node_state(reg, "n1"), "absent");
    ASSERT_INT_EQ(robot_count(reg), 0);

    ASSERT_OK(ctl_reg_node_up(reg, inv_make(&b, "n1", r1, NULL), 2, &err), &err);
    ASSERT_INT_EQ(sqlite3_exec(db, "DROP TRIGGER inject; CREATE TRIGGER inject BEFORE UPDATE OF state ON robots "
                                   "BEGIN SELECT RAISE(ABORT, 'injected fault'); END", NULL, NULL, NULL), SQLITE_OK);
    /* node_lost marks the node lost, then fails recomputing its robots. */
    ASSERT_INT_EQ(ctl_reg_node_lost(reg, "n1", "x", 3, &err), CR_EIO);
    ASSERT_STR_EQ(node_state(reg, "n1"), "ready");
    ASSERT_INT_EQ(ctl_reg_robot_estop(reg, "arm1", 0, &(Corral__V1__Robot *){NULL}, NULL, &err), CR_EIO);
    ASSERT_INT_EQ(sqlite3_exec(db, "DROP TRIGGER inject", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_STR_EQ(robot_state(reg, "arm1"), "available");  /* the e-stop flag was rolled back too */
    Corral__V1__Robot *r = NULL;
    ASSERT_OK(ctl_reg_robot_get(reg, "arm1", &r, &err), &err);
    ASSERT_TRUE(!r->estopped);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ASSERT_OK(ctl_reg_node_lost(reg, "n1", "x", 4, &err), &err);
    ASSERT_STR_EQ(robot_state(reg, "arm2"), "lost");
    sqlite3_stmt *st;
    ASSERT_INT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    ASSERT_INT_EQ(sqlite3_step(st), SQLITE_ROW);
    ASSERT_STR_EQ((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
    ctl_registry_close(reg);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"schema_fresh_and_reopen", test_schema_fresh_and_reopen},
        {"schema_migrates_old_and_refuses_newer", test_schema_migrates_old_and_refuses_newer},
        {"bad_names_and_drivers", test_bad_names_and_drivers},
        {"settings_validated_and_stored", test_settings_validated_and_stored},
        {"labels_registered_and_reported", test_labels_registered_and_reported},
        {"node_lifecycle_lost_and_back", test_node_lifecycle_lost_and_back},
        {"cli_and_agent_report_are_one_record", test_cli_and_agent_report_are_one_record},
        {"contradictory_inventory_changes_nothing", test_contradictory_inventory_changes_nothing},
        {"agent_only_robots_follow_inventory", test_agent_only_robots_follow_inventory},
        {"estop_latches_over_everything", test_estop_latches_over_everything},
        {"drain_survives_loss", test_drain_survives_loss},
        {"gpu_register", test_gpu_register},
        {"robot_remove", test_robot_remove},
        {"list_filters_by_node", test_list_filters_by_node},
        {"holds_by_experiments", test_holds_by_experiments},
        {"sqlite_failure_mid_transaction_rolls_back", test_sqlite_failure_mid_transaction_rolls_back},
        {NULL, NULL},
    };
    return test_main("controller.registry", cases, argc, argv);
}
