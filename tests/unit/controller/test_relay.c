/* test_relay.c - the controller hosts the data plane's tunnel relay on its own
 * port: an edge hub that listens nowhere (it accepts no inbound connection) gets
 * messages from a producer on another node through the controller, beside the
 * Registry calls the same server keeps answering. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"  /* harness.h's ASSERT_OK */
#include "tests/harness.h"
#include "channels/channel.h"
#include "common/time.h"
#include "controller/controller.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_edge_reached_through_controller(void)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/ctl", test_tmpdir());
    ctl_opts_t o = {.listen = "127.0.0.1:0", .state_dir = dir};
    ctl_server_t *srv;
    cr_err_t e = {0};
    ASSERT_OK(ctl_server_create(&o, &srv, &e), &e);
    ASSERT_OK(ctl_server_start(srv, &e), &e);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ctl_server_port(srv));

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

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"edge_reached_through_controller", test_edge_reached_through_controller},
        {NULL, NULL}};
    return test_main("controller.relay", cases, argc, argv);
}
