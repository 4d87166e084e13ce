/* test_faults.c - peers that fail as real processes do: a client SIGKILLed in the
 * middle of a stream, a client or a server frozen with SIGSTOP (keepalive must
 * notice within 3 s), and a server that dies and comes back on the same port (the channel
 * reconnects with backoff). The peers are rpc_peer processes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/time.h"
#include "fixture.h"
#include "tests/harness.h"

static void test_client_vanishes(void)
{
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    fx_log_capture();
    cr_log_level_t level = cr_log_get_level();
    cr_log_set_level(CR_LOG_DEBUG); /* a stream ended by its client is routine: debug */
    pid_t pid = fx_peer_stream(f.target);
    long before = atomic_load(&f.echo.messages);
    ASSERT_TRUE(fx_wait_atomic(&f.echo.messages, before + 20, 5000));
    int64_t t0 = cr_now_ns();
    fx_peer_kill(pid);
    ASSERT_TRUE(fx_wait_atomic(&f.echo.cancelled, 1, 5000));
    fprintf(stderr, "  server saw the SIGKILLed client gone after %.0f ms\n",
            (double)(cr_now_ns() - t0) / CR_NS_PER_MS);
    /* everyone else is still served */
    rpc_channel_t *ch = fx_channel(f.target, NULL);
    cr_err_t err = {0};
    rpc_code_t st;
    ASSERT_OK(fx_echo(ch, "others", 0, 0, 0, 2000, &st, NULL, 0, &err), &err);
    rpc_channel_destroy(ch);
    fx_log_release();
    cr_log_set_level(level);
    ASSERT_TRUE(fx_log_has("/corral.v1.Echo/Collect from ipv4:127.0.0.1:"));
    ASSERT_TRUE(fx_log_has("call ended early after"));
    fx_server_stop(&f);
}

static void test_frozen_client(void)
{
    /* the server's keepalive notices a client that stopped answering */
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    pid_t pid = fx_peer_stream(f.target);
    long before = atomic_load(&f.echo.messages);
    ASSERT_TRUE(fx_wait_atomic(&f.echo.messages, before + 5, 5000));
    kill(pid, SIGSTOP);
    int64_t t0 = cr_now_ns();
    ASSERT_TRUE(fx_wait_atomic(&f.echo.cancelled, 1, 5000));
    double ms = (double)(cr_now_ns() - t0) / CR_NS_PER_MS;
    fprintf(stderr, "  server noticed the frozen client after %.0f ms\n", ms);
    ASSERT_TRUE(ms <= 3000);
    fx_peer_kill(pid);
    fx_server_stop(&f);
}

static void test_frozen_server(void)
{
    int port;
    pid_t pid = fx_peer_serve(0, NULL, &port);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel_t *ch = fx_channel(target, NULL);
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *s;
    cr_err_t err = {0};
    ASSERT_OK(rpc_stream_open(ch, &s, RPC_ECHO_CHAT, &corral__v1__echo_reply__descriptor, &cbs, 0, &err), &err);
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    ASSERT_OK(rpc_stream_send(s, &q.base, -1, &err), &err);
    ASSERT_TRUE(fx_rec_wait(&r, 1, 3000));
    kill(pid, SIGSTOP);
    int64_t t0 = cr_now_ns();
    /* an idle stream, no deadline: only keepalive can tell */
    ASSERT_TRUE(fx_rec_wait(&r, -1, 5000));
    double ms = (double)(r.closed_ns - t0) / CR_NS_PER_MS;
    fprintf(stderr, "  frozen server noticed after %.0f ms: %s %s\n", ms, rpc_code_name(r.code), r.details);
    ASSERT_INT_EQ(r.code, RPC_UNAVAILABLE);
    ASSERT_TRUE(ms <= 3000);
    /* a unary call with a long deadline fails fast too */
    rpc_code_t st;
    t0 = cr_now_ns();
    int rc = fx_echo(ch, "x", 0, 0, 0, 20000, &st, NULL, 0, &err);
    ms = (double)(cr_now_ns() - t0) / CR_NS_PER_MS;
    ASSERT_TRUE(rc != 0);
    ASSERT_TRUE(ms <= 3500);
    rpc_stream_destroy(s);
    rpc_channel_destroy(ch);
    fx_peer_kill(pid);
}

static void test_reconnect(void)
{
    int port;
    pid_t pid = fx_peer_serve(0, NULL, &port);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_opts_t co = {.backoff_initial_ms = 100, .backoff_max_ms = 500};
    rpc_channel_t *ch = fx_channel(target, &co);
    cr_err_t err = {0};
    rpc_code_t st;
    ASSERT_OK(fx_echo(ch, "first", 0, 0, 0, 3000, &st, NULL, 0, &err), &err);
    fx_peer_kill(pid);
    ASSERT_INT_EQ(fx_echo(ch, "down", 0, 0, 0, 1000, &st, NULL, 0, &err), CR_EUNAVAIL);
    int port2;
    pid = fx_peer_serve(port, NULL, &port2);
    ASSERT_INT_EQ(port2, port);
    int64_t t0 = cr_now_ns();
    ASSERT_OK(rpc_channel_wait_ready(ch, 5000, &err), &err);
    fprintf(stderr, "  reconnected %.0f ms after the server came back\n", (double)(cr_now_ns() - t0) / CR_NS_PER_MS);
    ASSERT_TRUE(cr_now_ns() - t0 < 2 * CR_NS_PER_S);
    ASSERT_OK(fx_echo(ch, "again", 0, 0, 0, 3000, &st, NULL, 0, &err), &err);
    rpc_channel_destroy(ch);
    fx_peer_kill(pid);
}

static void test_wait_for_ready(void)
{
    /* with wait_for_ready a call made while the server is down waits for it */
    int port;
    pid_t pid = fx_peer_serve(0, NULL, &port);
    fx_peer_kill(pid);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_opts_t co = {.backoff_initial_ms = 100, .backoff_max_ms = 300, .wait_for_ready = 1};
    rpc_channel_t *ch = fx_channel(target, &co);
    cr_err_t err = {0};
    rpc_code_t st;
    int64_t t0 = cr_now_ns();
    ASSERT_INT_EQ(fx_echo(ch, "x", 0, 0, 0, 500, &st, NULL, 0, &err), CR_ETIMEDOUT);
    ASSERT_TRUE(cr_now_ns() - t0 >= 450 * CR_NS_PER_MS);
    int port2;
    pid = fx_peer_serve(port, NULL, &port2);
    ASSERT_OK(fx_echo(ch, "y", 0, 0, 0, 5000, &st, NULL, 0, &err), &err);
    rpc_channel_destroy(ch);
    fx_peer_kill(pid);
}

static void test_wait_ready_refused(void)
{
    /* Nothing listens on the port: wait_ready says so at the first refused
     * attempt instead of waiting out its whole time-out. */
    int port;
    pid_t pid = fx_peer_serve(0, NULL, &port);
    fx_peer_kill(pid);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel_t *ch = fx_channel(target, NULL);
    cr_err_t err = {0};
    int64_t t0 = cr_now_ns();
    ASSERT_INT_EQ(rpc_channel_wait_ready(ch, 10000, &err), CR_EUNAVAIL);
    double ms = (double)(cr_now_ns() - t0) / CR_NS_PER_MS;
    fprintf(stderr, "  refused connection reported after %.0f ms\n", ms);
    ASSERT_TRUE(ms < 3000);
    ASSERT_TRUE(strstr(err.msg, "connection failed") != NULL);
    rpc_channel_destroy(ch);
}

/* A relay for one connection that holds it for delay_ms before passing bytes:
 * a server whose handshake is slow, as on a loaded host or a far-away one. */
typedef struct slow_relay {
    int ls, up_port, delay_ms;
    pthread_t thread;
} slow_relay_t;

static void *slow_relay_main(void *arg)
{
    slow_relay_t *x = arg;
    int a = accept(x->ls, NULL, NULL);
    if (a < 0) return NULL;
    cr_sleep_ns((int64_t)x->delay_ms * CR_NS_PER_MS);
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in up = {.sin_family = AF_INET, .sin_port = htons((uint16_t)x->up_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(b, (struct sockaddr *)&up, sizeof up) == 0) {
        char buf[1 << 14];
        for (;;) {
            struct pollfd pf[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
            if (poll(pf, 2, 5000) <= 0) break;
            int from = (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) ? a : b, to = from == a ? b : a;
            ssize_t n = read(from, buf, sizeof buf);
            if (n <= 0 || write(to, buf, (size_t)n) != n) break;
        }
    }
    close(a);
    close(b);
    return NULL;
}

static void test_slow_handshake(void)
{
    /* A connection attempt that takes longer than the reconnect backoff (100 ms)
     * still succeeds: gRPC reads the minimum reconnect backoff argument as the
     * connect time-out, and a loaded host needs more than 100 ms for a handshake. */
    fx_server_t f;
    fx_server_start(&f, NULL, 0);
    slow_relay_t x = {.up_port = rpc_server_port(f.srv), .delay_ms = 400};
    x.ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    ASSERT_TRUE(bind(x.ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(x.ls, 4) == 0 &&
                getsockname(x.ls, (struct sockaddr *)&a, &al) == 0);
    pthread_create(&x.thread, NULL, slow_relay_main, &x);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", ntohs(a.sin_port));
    rpc_opts_t co = {.backoff_initial_ms = 100, .backoff_max_ms = 1000};
    rpc_channel_t *ch = fx_channel(target, &co);
    cr_err_t err = {0};
    rpc_code_t st;
    ASSERT_OK(fx_echo(ch, "slow", 0, 0, 0, 5000, &st, NULL, 0, &err), &err);
    rpc_channel_destroy(ch);
    pthread_join(x.thread, NULL);
    close(x.ls);
    fx_server_stop(&f);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static const test_case_t cases[] = {
        {"client_vanishes", test_client_vanishes},
        {"frozen_client", test_frozen_client},
        {"frozen_server", test_frozen_server},
        {"reconnect", test_reconnect},
        {"wait_for_ready", test_wait_for_ready},
        {"wait_ready_refused", test_wait_ready_refused},
        {"slow_handshake", test_slow_handshake},
        {NULL, NULL}};
    return test_main("rpc.faults", cases, argc, argv);
}
