/* test_agentlink.c - the controller over real gRPC on loopback, in one process:
 * AgentLink sessions (accept, heartbeat acks, loss after missed heartbeats, one
 * agent instance per node, protocol errors with their statuses), the Registry
 * service's statuses, and the agent library against the live server. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"  /* harness.h's ASSERT_OK */
#include "tests/harness.h"
#include "agents/agent.h"
#include "common/time.h"
#include "controller/controller.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define HB_MS 100
/* Heartbeats a session may miss before it is lost. Only the test of that loss
 * uses the tight 3; the others allow 3 s of silence, since a loaded machine
 * (ASan, other builds) can stall a thread for longer than 300 ms, and a session
 * lost in the middle of a test that expects it alive is a false failure. */
#define MISSED_SLACK 30

static ctl_server_t *srv;
static rpc_channel_t *ch;
static char addr[64];

static void start_server_missed(int missed)
{
    static int n;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/ctl%d", test_tmpdir(), n++);
    ctl_opts_t o = {.listen = "127.0.0.1:0", .state_dir = dir, .heartbeat_ms = HB_MS, .missed = missed};
    cr_err_t err = {0};
    ASSERT_OK(ctl_server_create(&o, &srv, &err), &err);
    ASSERT_OK(ctl_server_start(srv, &err), &err);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ctl_server_port(srv));
    ASSERT_OK(ctl_client_connect(addr, NULL, 3000, &ch, &err), &err);
}

static void start_server(void) { start_server_missed(MISSED_SLACK); }

static void stop_server(void)
{
    rpc_channel_destroy(ch);
    ch = NULL;
    ctl_server_destroy(srv);
    srv = NULL;
}

static const char *node_state(const char *name)
{
    static char buf[32];
    Corral__V1__Node *n = NULL;
    cr_err_t err = {0};
    if (ctl_reg_node_get(ctl_server_registry(srv), name, &n, &err)) return "absent";
    snprintf(buf, sizeof buf, "%s", ctl_node_state_name(n->state));
    protobuf_c_message_free_unpacked(&n->base, NULL);
    return buf;
}

/* Polls until node's state is want; returns the milliseconds it took or -1. */
static int64_t wait_state(const char *node, const char *want, int64_t limit_ms)
{
    int64_t t0 = cr_now_ns();
    while (strcmp(node_state(node), want) != 0) {
        if (cr_now_ns() - t0 > limit_ms * CR_NS_PER_MS) return -1;
        cr_sleep_ns(5 * CR_NS_PER_MS);
    }
    return (cr_now_ns() - t0) / CR_NS_PER_MS;
}

/* ---- a raw session, driven by hand -------------------------------------- */

typedef struct raw {
    rpc_stream_t *st;
    atomic_int accepted, acks;
} raw_t;

static void raw_msg(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    raw_t *r = user;
    const Corral__V1__ControllerMessage *m = (const void *)msg;
    if (m->body_case == CORRAL__V1__CONTROLLER_MESSAGE__BODY_ACCEPTED) atomic_store(&r->accepted, 1);
    if (m->body_case == CORRAL__V1__CONTROLLER_MESSAGE__BODY_HEARTBEAT_ACK) atomic_fetch_add(&r->acks, 1);
}

static void raw_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user) {}

static void raw_open(raw_t *r)
{
    memset(r, 0, sizeof *r);
    rpc_stream_cbs_t cbs = {.on_message = raw_msg, .on_close = raw_close, .user = r};
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &r->st, CTL_M_SESSION, &corral__v1__controller_message__descriptor, &cbs, 0, &err),
              &err);
}

static void raw_inventory(raw_t *r, const char *node, uint64_t instance, const char *robot)
{
    Corral__V1__RobotInfo ri = CORRAL__V1__ROBOT_INFO__INIT, *rp[1] = {&ri};
    ri.name = (char *)robot;
    ri.driver = "mock";
    Corral__V1__Inventory inv = CORRAL__V1__INVENTORY__INIT;
    inv.node = (char *)node;
    inv.agent_instance = instance;
    inv.robots = rp;
    inv.n_robots = robot ? 1 : 0;
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_INVENTORY;
    m.inventory = &inv;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_send(r->st, &m.base, 1000, &err), &err);
}

static void raw_heartbeat(raw_t *r, uint64_t seq)
{
    Corral__V1__Heartbeat hb = CORRAL__V1__HEARTBEAT__INIT;
    hb.seq = seq;
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    rpc_stream_send(r->st, &m.base, 1000, NULL);
}

static int raw_wait_accepted(raw_t *r)
{
    for (int i = 0; i < 400 && !atomic_load(&r->accepted); i++) cr_sleep_ns(5 * CR_NS_PER_MS);
    return atomic_load(&r->accepted);
}

/* Waits for the stream to end; returns its status. */
static rpc_code_t raw_end(raw_t *r, int64_t ms, char *details, size_t cap)
{
    rpc_code_t code = RPC_OK;
    cr_err_t err = {0};
    int rc = rpc_stream_wait(r->st, ms, &code, &err);
    if (details) snprintf(details, cap, "%s", err.msg);
    if (rc == CR_ETIMEDOUT) return (rpc_code_t)-1;
    return code;
}

static void test_session_accepted_and_acked(void)
{
    start_server();
    raw_t r;
    raw_open(&r);
    raw_inventory(&r, "n1", 7, "arm1");
    ASSERT_TRUE(raw_wait_accepted(&r));
    ASSERT_STR_EQ(node_state("n1"), "ready");
    ASSERT_INT_EQ(ctl_server_sessions(srv), 1);
    for (int i = 1; i <= 5; i++) {
        raw_heartbeat(&r, (uint64_t)i);
        cr_sleep_ns(40 * CR_NS_PER_MS);
    }
    for (int i = 0; i < 300 && atomic_load(&r.acks) < 5; i++) cr_sleep_ns(10 * CR_NS_PER_MS);  /* the last in flight */
    ASSERT_INT_EQ(atomic_load(&r.acks), 5);
    ASSERT_STR_EQ(node_state("n1"), "ready");  /* 200 ms of heartbeats at 40 ms: alive */
    rpc_stream_destroy(r.st);
    stop_server();
}

static void test_silent_session_lost_after_missed_heartbeats(void)
{
    start_server_missed(3);
    raw_t r;
    raw_open(&r);
    raw_inventory(&r, "n1", 7, "arm1");
    ASSERT_TRUE(raw_wait_accepted(&r));
    int64_t t0 = cr_now_ns();
    int64_t ms = wait_state("n1", "lost", 3000);
    ms = (cr_now_ns() - t0) / CR_NS_PER_MS;
    fprintf(stderr, "  silent session lost after %lld ms (3 x %d ms)\n", (long long)ms, HB_MS);
    ASSERT_TRUE(ms >= 3 * HB_MS - 20 && ms <= 3 * HB_MS + 300);
    char details[256];
    ASSERT_INT_EQ(raw_end(&r, 2000, details, sizeof details), RPC_UNAVAILABLE);
    ASSERT_TRUE(strstr(details, "no heartbeat") != NULL);
    Corral__V1__Robot *rb = NULL;
    cr_err_t err = {0};
    ASSERT_OK(ctl_reg_robot_get(ctl_server_registry(srv), "arm1", &rb, &err), &err);
    ASSERT_STR_EQ(ctl_resource_state_name(rb->state), "lost");
    protobuf_c_message_free_unpacked(&rb->base, NULL);
    rpc_stream_destroy(r.st);
    stop_server();
}

static void test_one_instance_per_node(void)
{
    start_server();
    raw_t a, b, c;
    raw_open(&a);
    raw_inventory(&a, "n1", 1, NULL);
    ASSERT_TRUE(raw_wait_accepted(&a));
    raw_heartbeat(&a, 1);
    /* Another agent instance under the same name is refused while a lives. */
    raw_open(&b);
    raw_inventory(&b, "n1", 2, NULL);
    char details[256];
    ASSERT_INT_EQ(raw_end(&b, 2000, details, sizeof details), RPC_ALREADY_EXISTS);
    ASSERT_TRUE(strstr(details, "already connected from another agent") != NULL);
    ASSERT_STR_EQ(node_state("n1"), "ready");
    /* The same instance reconnecting takes the node over; the old stream ends. */
    raw_open(&c);
    raw_inventory(&c, "n1", 1, NULL);
    ASSERT_TRUE(raw_wait_accepted(&c));
    ASSERT_INT_EQ(raw_end(&a, 2000, NULL, 0), RPC_ABORTED);
    cr_sleep_ns(50 * CR_NS_PER_MS);
    ASSERT_STR_EQ(node_state("n1"), "ready");  /* a's end did not mark it lost */
    ASSERT_INT_EQ(ctl_server_sessions(srv), 1);
    rpc_stream_destroy(a.st);
    rpc_stream_destroy(b.st);
    rpc_stream_destroy(c.st);
    stop_server();
}

static void test_protocol_errors(void)
{
    start_server();
    raw_t r;
    char details[256];
    raw_open(&r);
    raw_heartbeat(&r, 1);
    ASSERT_INT_EQ(raw_end(&r, 2000, details, sizeof details), RPC_FAILED_PRECONDITION);
    ASSERT_TRUE(strstr(details, "inventory before heartbeats") != NULL);
    rpc_stream_destroy(r.st);

    raw_open(&r);
    Corral__V1__AgentMessage empty = CORRAL__V1__AGENT_MESSAGE__INIT;
    rpc_stream_send(r.st, &empty.base, 1000, NULL);
    ASSERT_INT_EQ(raw_end(&r, 2000, NULL, 0), RPC_INVALID_ARGUMENT);
    rpc_stream_destroy(r.st);

    raw_open(&r);
    raw_inventory(&r, "n1", 1, "Bad Robot");
    ASSERT_INT_EQ(raw_end(&r, 2000, details, sizeof details), RPC_INVALID_ARGUMENT);
    ASSERT_TRUE(strstr(details, "invalid robot name") != NULL);
    rpc_stream_destroy(r.st);
    ASSERT_STR_EQ(node_state("n1"), "absent");

    /* The daemon still serves. */
    raw_open(&r);
    raw_inventory(&r, "n1", 1, "arm1");
    ASSERT_TRUE(raw_wait_accepted(&r));
    rpc_stream_destroy(r.st);
    stop_server();
}

static rpc_code_t call_register(const char *name, const char *driver, const char *node, char *details, size_t cap)
{
    Corral__V1__RegisterRobotRequest req = CORRAL__V1__REGISTER_ROBOT_REQUEST__INIT;
    req.name = (char *)name;
    req.driver = (char *)driver;
    req.node = (char *)node;
    ProtobufCMessage *resp = NULL;
    rpc_code_t code = RPC_OK;
    cr_err_t err = {0};
    ctl_client_call(ch, CTL_M_REGISTER_ROBOT, &req.base, &corral__v1__register_robot_response__descriptor, &resp,
                    3000, &code, &err);
    if (details) snprintf(details, cap, "%s", err.msg);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

static void test_registry_statuses(void)
{
    start_server();
    char d[512];
    ASSERT_INT_EQ(call_register("arm1", "mock", "", d, sizeof d), RPC_OK);
    ASSERT_INT_EQ(call_register("arm1", "mock", "", d, sizeof d), RPC_ALREADY_EXISTS);
    ASSERT_INT_EQ(call_register("ARM", "mock", "", d, sizeof d), RPC_INVALID_ARGUMENT);
    ASSERT_INT_EQ(call_register("arm2", "warp", "", d, sizeof d), RPC_INVALID_ARGUMENT);
    ASSERT_TRUE(strstr(d, "unknown driver") != NULL);
    ASSERT_INT_EQ(call_register("arm2", "mock", "n9", d, sizeof d), RPC_NOT_FOUND);
    ASSERT_INT_EQ(call_register("arm1", "dynamixel", "", d, sizeof d), RPC_ALREADY_EXISTS);
    raw_t r;
    raw_open(&r);
    raw_inventory(&r, "n1", 1, "arm3");
    ASSERT_TRUE(raw_wait_accepted(&r));
    ASSERT_INT_EQ(call_register("arm3", "dynamixel", "", d, sizeof d), RPC_FAILED_PRECONDITION);
    ASSERT_INT_EQ(call_register("arm3", "mock", "", d, sizeof d), RPC_OK);
    rpc_stream_destroy(r.st);
    stop_server();
}

static atomic_int acks_seen;
static void count_ack(void *user, int64_t rtt_ns) { atomic_fetch_add(&acks_seen, 1); }

static void test_agent_library_end_to_end(void)
{
    start_server();
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/agent", test_tmpdir());
    const char *robots[] = {"arm1:mock", "cam1:remote::10.0.0.5:9000"};
    agent_opts_t o = {.controller = addr, .node = "n1", .state_dir = dir, .robots = robots, .n_robots = 2,
                      .advertise = "127.0.0.1:7000", .on_ack = count_ack};
    agent_t *a = NULL;
    cr_err_t err = {0};
    ASSERT_OK(agent_create(&o, &a, &err), &err);
    ASSERT_STR_EQ(agent_inventory(a)->robots[1]->port, "10.0.0.5:9000");
    ASSERT_OK(agent_start(a, &err), &err);
    ASSERT_TRUE(wait_state("n1", "ready", 3000) >= 0);
    /* Heartbeats go every HB_MS; wait for two acknowledged ones (a loaded
     * machine may take far longer than 2 x HB_MS to deliver them). */
    agent_stats_t s;
    int64_t t0 = cr_now_ns();
    do {
        cr_sleep_ns(10 * CR_NS_PER_MS);
        agent_get_stats(a, &s);
    } while ((s.heartbeats < 2 || atomic_load(&acks_seen) < 2) && cr_now_ns() - t0 < 5 * CR_NS_PER_S);
    ASSERT_TRUE(s.connected && s.sessions == 1 && s.heartbeats >= 2);
    ASSERT_TRUE(atomic_load(&acks_seen) >= 2);

    /* An e-stop reaches the connected agent. */
    Corral__V1__EstopRobotRequest req = CORRAL__V1__ESTOP_ROBOT_REQUEST__INIT;
    req.name = "arm1";
    Corral__V1__EstopRobotResponse *resp = NULL;
    ASSERT_OK(ctl_client_call(ch, CTL_M_ESTOP_ROBOT, &req.base, &corral__v1__estop_robot_response__descriptor,
                              (ProtobufCMessage **)&resp, 3000, NULL, &err), &err);
    ASSERT_TRUE(resp->delivered);
    ASSERT_STR_EQ(ctl_resource_state_name(resp->robot->state), "estopped");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    for (int i = 0; i < 500 && (agent_get_stats(a, &s), s.estops == 0); i++) cr_sleep_ns(10 * CR_NS_PER_MS);
    ASSERT_INT_EQ(s.estops, 1);

    /* The id persists: a second agent object with the same state dir is the same agent. */
    uint64_t id = agent_id(a);
    agent_destroy(a);
    ASSERT_TRUE(wait_state("n1", "lost", 1000) >= 0);  /* a goodbye, not a time-out */
    ASSERT_OK(agent_create(&o, &a, &err), &err);
    ASSERT_TRUE(agent_id(a) == id);
    agent_destroy(a);

    /* Bad robot specs and names are refused before dialing. */
    const char *bad[] = {"arm1"};
    agent_opts_t o2 = {.node = "n2", .state_dir = dir, .robots = bad, .n_robots = 1};
    ASSERT_INT_EQ(agent_create(&o2, &a, &err), CR_EINVAL);
    o2.n_robots = 0;
    o2.node = "N2";
    ASSERT_INT_EQ(agent_create(&o2, &a, &err), CR_EINVAL);
    o2.node = "n2";
    o2.advertise = "10.0.0.1";
    ASSERT_INT_EQ(agent_create(&o2, &a, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "HOST:PORT") != NULL);
    o2.advertise = "10.0.0.1:99999";
    ASSERT_INT_EQ(agent_create(&o2, &a, &err), CR_EINVAL);
    stop_server();
}

static void test_agent_reconnects_after_controller_restart(void)
{
    start_server();
    char dir[4200], sdir[4200];
    snprintf(dir, sizeof dir, "%s/agent-r", test_tmpdir());
    int port = ctl_server_port(srv);
    agent_opts_t o = {.controller = addr, .node = "n1", .state_dir = dir, .backoff_max_ms = 300};
    agent_t *a = NULL;
    cr_err_t err = {0};
    ASSERT_OK(agent_create(&o, &a, &err), &err);
    ASSERT_OK(agent_start(a, &err), &err);
    ASSERT_TRUE(wait_state("n1", "ready", 3000) >= 0);
    /* The registry says ready before SessionAccepted is sent: wait until the
     * agent has it, or the restart below may cancel the session first and the
     * agent's count would be one short through no fault of its own. */
    agent_stats_t s;
    int64_t t0 = cr_now_ns();
    do {
        cr_sleep_ns(10 * CR_NS_PER_MS);
        agent_get_stats(a, &s);
    } while (s.sessions < 1 && cr_now_ns() - t0 < 5 * CR_NS_PER_S);
    ASSERT_INT_EQ(s.sessions, 1);
    snprintf(sdir, sizeof sdir, "%s", ctl_registry_path(ctl_server_registry(srv)));
    *strrchr(sdir, '/') = '\0';
    stop_server();
    cr_sleep_ns(200 * CR_NS_PER_MS);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    ctl_opts_t co = {.listen = listen, .state_dir = sdir, .heartbeat_ms = HB_MS, .missed = MISSED_SLACK};
    ASSERT_OK(ctl_server_create(&co, &srv, &err), &err);
    ASSERT_OK(ctl_server_start(srv, &err), &err);
    ASSERT_OK(ctl_client_connect(listen, NULL, 3000, &ch, &err), &err);
    t0 = cr_now_ns();
    do {
        cr_sleep_ns(10 * CR_NS_PER_MS);
        agent_get_stats(a, &s);
    } while (s.sessions < 2 && cr_now_ns() - t0 < 5 * CR_NS_PER_S);
    ASSERT_INT_EQ(s.sessions, 2);
    ASSERT_INT_EQ(ctl_server_sessions(srv), 1);
    ASSERT_STR_EQ(node_state("n1"), "ready");
    agent_destroy(a);
    stop_server();
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"session_accepted_and_acked", test_session_accepted_and_acked},
        {"silent_session_lost_after_missed_heartbeats", test_silent_session_lost_after_missed_heartbeats},
        {"one_instance_per_node", test_one_instance_per_node},
        {"protocol_errors", test_protocol_errors},
        {"registry_statuses", test_registry_statuses},
        {"agent_library_end_to_end", test_agent_library_end_to_end},
        {"agent_reconnects_after_controller_restart", test_agent_reconnects_after_controller_restart},
        {NULL, NULL},
    };
    return test_main("controller.agentlink", cases, argc, argv);
}
