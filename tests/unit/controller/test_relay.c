/* test_relay.c - the controller hosts the data plane's tunnel relay on its own
 * port: an edge hub that listens nowhere (it accepts no inbound connection) gets
 * messages from a producer on another node through the controller, beside the
 * Registry calls the same server keeps answering; insecure on loopback, and with
 * the controller serving mutual TLS, where hubs dial with their node's certificate
 * (made by rpc_certs_make, as `corral certs` does) and a hub without a valid one
 * is refused with an error that says so; and a controller restart in the middle
 * of a tunnelled transfer loses and duplicates nothing. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"  /* harness.h's ASSERT_OK */
#include "tests/harness.h"
#include "channels/channel.h"
#include "common/time.h"
#include "controller/controller.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Starts a controller on o (its listen and state dir filled in when unset, the
 * state under the test's directory) and writes the address it serves on. */
static ctl_server_t *controller(ctl_opts_t *o, char *addr, size_t n)
{
    static char dir[4200];
    snprintf(dir, sizeof dir, "%s/ctl", test_tmpdir());
    if (!o->listen) o->listen = "127.0.0.1:0";
    if (!o->state_dir) o->state_dir = dir;
    ctl_server_t *srv;
    cr_err_t e = {0};
    ASSERT_OK(ctl_server_create(o, &srv, &e), &e);
    ASSERT_OK(ctl_server_start(srv, &e), &e);
    snprintf(addr, n, "127.0.0.1:%d", ctl_server_port(srv));
    return srv;
}

static void test_edge_reached_through_controller(void)
{
    ctl_opts_t o = {0};
    char addr[64];
    ctl_server_t *srv = controller(&o, addr, sizeof addr);
    cr_err_t e = {0};

    /* The edge: no listen address, only the controller to dial out to. */
    ch_hub_opts_t eo = {.node = "edge1", .shm = -1, .relay = addr, .reconnect_ms = 50};
    ch_hub_t *edge;
    ASSERT_OK(ch_hub_create(&eo, &edge, &e), &e);
    ch_where_t w;
    ch_hub_where(edge, &w);
    ASSERT_INT_EQ(w.inbound, 0);
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 256}; /* all of them fit: read after the puts */
    ASSERT_OK(ch_channel_create(edge, "act", &co, &c, &e), &e);

    ch_hub_opts_t po = {.node = "cloud", .shm = -1, .relay = addr, .reconnect_ms = 50};
    ch_hub_t *cloud;
    ASSERT_OK(ch_hub_create(&po, &cloud, &e), &e);
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(cloud, "act", &w, NULL, &p, &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(p)), "tunnel");

    enum { N = 200 };
    size_t len = 64 << 10;
    uint8_t *buf = malloc(len);
    for (int i = 0; i < N; i++) {
        memset(buf, i & 0xff, len);
        memcpy(buf, &i, sizeof i);
        ASSERT_OK(ch_put(p, buf, len, 1, 10000, &e), &e);
    }
    for (int i = 0; i < N; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 10000, &e), &e);
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, i);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ASSERT_INT_EQ(m->producer, ch_producer_id(p));
        ch_msg_free(m);
    }
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    /* The same port still serves the control plane. */
    rpc_channel_t *rch;
    ASSERT_OK(ctl_client_connect(addr, NULL, 3000, &rch, &e), &e);
    Corral__V1__ListNodesRequest req = CORRAL__V1__LIST_NODES_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_code_t code;
    ASSERT_OK(ctl_client_call(rch, "/corral.v1.Registry/ListNodes", &req.base,
                              &corral__v1__list_nodes_response__descriptor, &resp, 3000, &code, &e), &e);
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_channel_destroy(rch);

    free(buf);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(cloud);
    ch_hub_destroy(edge);
    ctl_server_destroy(srv);
}

static const char *sub(const char *dir, const char *name)
{
    static char buf[4][4300];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* A hub whose relay refuses it: asks again (for up to 20 s, for a loaded machine)
 * while its first attempt has not failed yet, so the answer carries the reason. */
static int relay_refusal(ch_hub_t *h, cr_err_t *e)
{
    int rc = CR_ETIMEDOUT;
    for (int64_t end = cr_now_ns() + 20 * CR_NS_PER_S; rc == CR_ETIMEDOUT && cr_now_ns() < end;)
        rc = ch_hub_relay_wait(h, 200, e);
    return rc;
}

static ch_hub_t *secure_hub(const char *node, const char *relay, const rpc_opts_t *ro)
{
    ch_hub_opts_t o = {.node = node, .shm = -1, .relay = relay, .relay_rpc = ro, .reconnect_ms = 50};
    ch_hub_t *h;
    cr_err_t e = {0};
    ASSERT_OK(ch_hub_create(&o, &h, &e), &e);
    return h;
}

static void test_edge_through_mtls_controller(void)
{
    /* One CA for the cluster; a second one stands for certificates made elsewhere. */
    char good[4200], other[4200], mixed[4200];
    snprintf(good, sizeof good, "%s/certs", test_tmpdir());
    snprintf(other, sizeof other, "%s/other", test_tmpdir());
    snprintf(mixed, sizeof mixed, "%s/mixed", test_tmpdir());
    const char *clients[] = {"edge1", "cloud"};
    cr_err_t e = {0};
    ASSERT_OK(rpc_certs_make(good, NULL, 0, clients, 2, &e), &e);
    ASSERT_OK(rpc_certs_make(other, NULL, 0, clients, 1, &e), &e);
    /* A node that trusts the cluster's CA but holds a certificate of another. */
    mkdir(mixed, 0755);
    char cmd[16000];
    snprintf(cmd, sizeof cmd, "cp %s/ca.pem %s/ && cp %s/edge1/cert.pem %s/edge1/key.pem %s/", good, mixed, other,
             other, mixed);
    ASSERT_INT_EQ(system(cmd), 0);

    ctl_opts_t o = {.rpc = {.security = RPC_MTLS, .cert_dir = sub(good, "server")}};
    char addr[64];
    ctl_server_t *srv = controller(&o, addr, sizeof addr);

    /* The edge and the producer's node dial with their own certificates. */
    rpc_opts_t edge_rpc = {.security = RPC_MTLS, .cert_dir = sub(good, "edge1")};
    rpc_opts_t cloud_rpc = {.security = RPC_MTLS, .cert_dir = sub(good, "cloud")};
    ch_hub_t *edge = secure_hub("edge1", addr, &edge_rpc);
    ch_hub_t *cloud = secure_hub("cloud", addr, &cloud_rpc);
    ASSERT_OK(ch_hub_relay_wait(edge, 10000, &e), &e);
    ASSERT_OK(ch_hub_relay_wait(cloud, 10000, &e), &e);
    ch_where_t w;
    ch_hub_where(edge, &w);
    ASSERT_INT_EQ(w.inbound, 0);
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 256};
    ASSERT_OK(ch_channel_create(edge, "act", &co, &c, &e), &e);
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(cloud, "act", &w, NULL, &p, &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(p)), "tunnel");
    enum { N = 100 };
    size_t len = 64 << 10;
    uint8_t *buf = calloc(1, len);
    for (int i = 0; i < N; i++) {
        memcpy(buf, &i, sizeof i);
        ASSERT_OK(ch_put(p, buf, len, 1, 10000, &e), &e);
    }
    for (int i = 0; i < N; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 10000, &e), &e);
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, i);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ch_msg_free(m);
    }
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);

    /* A certificate from another CA: the controller refuses the TLS handshake,
     * and the hub, and puts through it, say that the certificate is the matter. */
    rpc_opts_t bad_rpc = {.security = RPC_MTLS, .cert_dir = mixed};
    ch_hub_t *bad = secure_hub("intruder", addr, &bad_rpc);
    ASSERT_INT_EQ(relay_refusal(bad, &e), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(e.msg, "refused the TLS handshake") != NULL);
    ASSERT_TRUE(strstr(e.msg, "certificate") != NULL);
    ASSERT_TRUE(strstr(e.msg, mixed) != NULL);
    ch_producer_opts_t po = {.window = 2};
    ch_producer_t *q;
    ASSERT_OK(ch_producer_open(bad, "act", &w, &po, &q, &e), &e);
    int rc = 0, sent = 0;
    while (sent < 10 && (rc = ch_put(q, buf, 16, 1, 1500, &e)) == 0) sent++;
    ASSERT_INT_EQ(rc, CR_ETIMEDOUT);
    ASSERT_INT_EQ(sent, 2);
    ASSERT_TRUE(strstr(e.msg, "certificate") != NULL);
    ch_producer_close(q);
    ch_hub_destroy(bad);

    /* A hub that dials without TLS at all is refused, and told that TLS is wanted. */
    ch_hub_opts_t plain_o = {.node = "plain", .shm = -1, .relay = addr, .reconnect_ms = 50};
    ch_hub_t *plain;
    ASSERT_OK(ch_hub_create(&plain_o, &plain, &e), &e);
    ASSERT_INT_EQ(relay_refusal(plain, &e), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(e.msg, "without TLS") != NULL);
    ch_hub_destroy(plain);

    /* Certificates that are not there: the hub is not made, and the error names the file. */
    rpc_opts_t none_rpc = {.security = RPC_MTLS, .cert_dir = sub(good, "nosuch")};
    ch_hub_opts_t none_o = {.node = "none", .shm = -1, .relay = addr, .relay_rpc = &none_rpc};
    ch_hub_t *none = NULL;
    ASSERT_TRUE(ch_hub_create(&none_o, &none, &e) != 0);
    ASSERT_TRUE(strstr(e.msg, "nosuch/ca.pem") != NULL);

    /* Nothing of the refused ones reached the edge, and its link is still up. */
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(c, &m, 200, &e), CR_ETIMEDOUT);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.accepted, N);
    for (int i = N; i < N + 10; i++) {
        memcpy(buf, &i, sizeof i);
        ASSERT_OK(ch_put(p, buf, len, 1, 10000, &e), &e);
    }
    for (int i = N; i < N + 10; i++) {
        ASSERT_OK(ch_get(c, &m, 10000, &e), &e);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ch_msg_free(m);
    }
    free(buf);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(cloud);
    ch_hub_destroy(edge);
    ctl_server_destroy(srv);
}

/* The controller restarts in the middle of a tunnelled transfer: the edge's link
 * and the producer reconnect to the new one on the same port, the producer resends
 * what was not acknowledged, and the edge holds every message once, in order. */
static void test_tunnel_survives_controller_restart(void)
{
    ctl_opts_t o = {0};
    char addr[64];
    ctl_server_t *srv = controller(&o, addr, sizeof addr);
    cr_err_t e = {0};
    ch_hub_opts_t eo = {.node = "edge1", .shm = -1, .relay = addr, .reconnect_ms = 50};
    ch_hub_opts_t po = {.node = "cloud", .shm = -1, .relay = addr, .reconnect_ms = 50};
    ch_hub_t *edge, *cloud;
    ASSERT_OK(ch_hub_create(&eo, &edge, &e), &e);
    ASSERT_OK(ch_hub_create(&po, &cloud, &e), &e);
    ASSERT_OK(ch_hub_relay_wait(edge, 10000, &e), &e);
    ch_where_t w;
    ch_hub_where(edge, &w);
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 512};
    ASSERT_OK(ch_channel_create(edge, "act", &co, &c, &e), &e);
    ch_producer_opts_t pro = {.window = 128};
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open(cloud, "act", &w, &pro, &p, &e), &e);
    size_t len = 64 << 10;
    uint8_t *buf = calloc(1, len);
    for (int i = 0; i < 100; i++) {
        memcpy(buf, &i, sizeof i);
        ASSERT_OK(ch_put(p, buf, len, 1, 10000, &e), &e);
    }
    /* Gone with messages in flight, and back on the same port and state. */
    ctl_server_destroy(srv);
    o.listen = addr;
    ASSERT_OK(ctl_server_create(&o, &srv, &e), &e);
    ASSERT_OK(ctl_server_start(srv, &e), &e);
    for (int i = 100; i < 200; i++) {
        memcpy(buf, &i, sizeof i);
        ASSERT_OK(ch_put(p, buf, len, 1, 20000, &e), &e);
    }
    for (int i = 0; i < 200; i++) {
        ch_msg_t *m;
        ASSERT_OK(ch_get(c, &m, 20000, &e), &e);
        int v;
        memcpy(&v, m->data, sizeof v);
        ASSERT_INT_EQ(v, i);
        ASSERT_INT_EQ(m->seq, (uint64_t)i + 1);
        ch_msg_free(m);
    }
    ASSERT_OK(ch_producer_flush(p, 20000, &e), &e);
    ch_msg_t *m;
    ASSERT_INT_EQ(ch_get(c, &m, 200, &e), CR_ETIMEDOUT);
    ch_stats_t st;
    ch_channel_stats(c, &st);
    ASSERT_INT_EQ(st.accepted, 200);
    ASSERT_TRUE(ch_producer_reconnects(p) >= 1);
    free(buf);
    ch_producer_close(p);
    ch_channel_destroy(c);
    ch_hub_destroy(cloud);
    ch_hub_destroy(edge);
    ctl_server_destroy(srv);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"edge_reached_through_controller", test_edge_reached_through_controller},
        {"edge_through_mtls_controller", test_edge_through_mtls_controller},
        {"tunnel_survives_controller_restart", test_tunnel_survives_controller_restart},
        {NULL, NULL}};
    return test_main("controller.relay", cases, argc, argv);
}
