/* peer.c - rpc_peer, the other process in the RPC fault tests (a test cannot just
 * fork itself: gRPC's threads do not survive fork).
 *   rpc_peer serve PORT [MTLS_DIR]  Echo server on 127.0.0.1:PORT (0: any); prints
 *                                   "port N" and serves until killed.
 *   rpc_peer stream TARGET          opens a Collect stream and sends a message
 *                                   every millisecond; prints "streaming" after
 *                                   the first one and runs until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rpc/echo.h"
#include "common/time.h"

static int serve(int port, const char *mtls_dir)
{
    static rpc_echo_t echo;
    rpc_method_t methods[RPC_ECHO_N_METHODS];
    rpc_echo_methods(methods, &echo, 0);
    rpc_opts_t o = {0};
    if (mtls_dir) {
        o.security = RPC_MTLS;
        o.cert_dir = mtls_dir;
    }
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rpc_server_t *s;
    cr_err_t err = {0};
    if (rpc_server_create(&s, addr, &o, methods, RPC_ECHO_N_METHODS, &err) != 0 ||
        rpc_server_start(s, &err) != 0) {
        printf("error %s\n", err.msg);
        return 1;
    }
    printf("port %d\n", rpc_server_port(s));
    fflush(stdout);
    for (;;) pause();
}

static int stream(const char *target)
{
    rpc_channel_t *ch;
    rpc_stream_t *st;
    cr_err_t err = {0};
    if (rpc_channel_create(&ch, target, NULL, &err) != 0 ||
        rpc_stream_open(ch, &st, RPC_ECHO_COLLECT, &corral__v1__echo_reply__descriptor, NULL, 0, &err) != 0) {
        printf("error %s\n", err.msg);
        return 1;
    }
    Corral__V1__EchoRequest q;
    corral__v1__echo_request__init(&q);
    for (uint64_t i = 0;; i++) {
        q.seq = i;
        if (rpc_stream_send(st, &q.base, -1, &err) != 0) {
            printf("error %s\n", err.msg);
            return 1;
        }
        if (i == 0) {
            printf("streaming\n");
            fflush(stdout);
        }
        cr_sleep_ns(CR_NS_PER_MS);
    }
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]), argc > 3 ? argv[3] : NULL);
    if (argc >= 3 && strcmp(argv[1], "stream") == 0) return stream(argv[2]);
    fprintf(stderr, "usage: rpc_peer serve PORT [MTLS_DIR] | stream TARGET\n");
    return 2;
}
