/* rpc.c - benchmark of the RPC layer (common/rpc) against plain TCP sockets,
 * both measured in this run over loopback in one process.
 *
 * For 4 KiB and 1 MiB messages, insecure and mutual TLS:
 *   unary   Echo round trips (request and reply both carry the payload): p50 and
 *           p99 latency, beside a TCP ping-pong of the same sizes;
 *   stream  Collect client stream: payload bytes per second until the server's
 *           reply, beside a TCP writer / reader pair moving the same bytes.
 * Ends with the targets: 4 KiB insecure unary p50 <= 100 us, and 1 MiB
 * insecure streaming >= 50% of TCP. Stream figures are medians of 5 pairs of
 * runs, TCP and RPC alternating, so drifting load on a shared machine hits both. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/benchutil.h"
#include "common/log.h"
#include "common/rpc/echo.h"
#include "common/time.h"

#define KIB 1024
#define MIB (1024 * 1024)
#define REPS 5

typedef struct lat {
    double p50, p99;
} lat_t;

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench rpc: %s: %s\n", what, msg);
    exit(1);
}

/* ---- TCP baseline ----------------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

typedef struct tcp_srv {
    int lfd, port, mode;   /* mode 0: echo frames back; 1: swallow frames, ack at EOF */
    pthread_t thread;
} tcp_srv_t;

static void *tcp_serve(void *arg)
{
    tcp_srv_t *t = arg;
    int fd = accept(t->lfd, NULL, NULL);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *buf = malloc(MIB);
    uint32_t len;
    while (read_all(fd, &len, sizeof len) == 0 && len > 0 && len <= MIB && read_all(fd, buf, len) == 0) {
        if (t->mode == 0 && (write_all(fd, &len, sizeof len) || write_all(fd, buf, len))) break;
    }
    if (t->mode == 1) write_all(fd, "k", 1);   /* all frames read: tell the writer */
    free(buf);
    close(fd);
    return NULL;
}

static int tcp_start(tcp_srv_t *t, int mode)
{
    t->mode = mode;
    t->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(t->lfd, (struct sockaddr *)&a, sizeof a) || listen(t->lfd, 1) ||
        getsockname(t->lfd, (struct sockaddr *)&a, &al))
        die("tcp", "cannot listen");
    t->port = ntohs(a.sin_port);
    pthread_create(&t->thread, NULL, tcp_serve, t);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) die("tcp", "cannot connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void tcp_stop(tcp_srv_t *t, int fd)
{
    close(fd);
    pthread_join(t->thread, NULL);
    close(t->lfd);
}

static lat_t tcp_pingpong(size_t size, int n)
{
    tcp_srv_t t;
    int fd = tcp_start(&t, 0);
    char *buf = calloc(1, size);
    double *us = malloc(sizeof(double) * (size_t)n);
    uint32_t len = (uint32_t)size, rl;
    for (int i = -n / 10; i < n; i++) {   /* the first tenth warms up */
        int64_t t0 = cr_now_ns();
        if (write_all(fd, &len, 4) || write_all(fd, buf, size) || read_all(fd, &rl, 4) || read_all(fd, buf, rl))
            die("tcp", "ping-pong failed");
        if (i >= 0) us[i] = (double)(cr_now_ns() - t0) / 1e3;
    }
    tcp_stop(&t, fd);
    lat_t r = {bench_percentile(us, (size_t)n, 50), bench_percentile(us, (size_t)n, 99)};
    free(us);
    free(buf);
    return r;
}

static double tcp_stream_once(size_t size, int n)
{
    tcp_srv_t t;
    int fd = tcp_start(&t, 1);
    char *buf = calloc(1, size);
    uint32_t len = (uint32_t)size;
    int64_t t0 = cr_now_ns();
    for (int i = 0; i < n; i++)
        if (write_all(fd, &len, 4) || write_all(fd, buf, size)) die("tcp", "stream failed");
    uint32_t zero = 0;
    char ack;
    if (write_all(fd, &zero, 4) || read_all(fd, &ack, 1)) die("tcp", "stream end failed");
    double s = (double)(cr_now_ns() - t0) / 1e9;
    tcp_stop(&t, fd);
    free(buf);
    return (double)size * n / s;
}

/* ---- the RPC layer ---------------------------------------------------------- */

static void make_req(Corral__V1__EchoRequest *q, uint8_t *buf, size_t size)
{
    corral__v1__echo_request__init(q);
    q->payload.data = buf;
    q->payload.len = size;
    q->text = "";
}

static lat_t rpc_pingpong(rpc_channel_t *ch, size_t size, int n)
{
    uint8_t *buf = calloc(1, size);
    double *us = malloc(sizeof(double) * (size_t)n);
    Corral__V1__EchoRequest q;
    make_req(&q, buf, size);
    cr_err_t err = {0};
    for (int i = -n / 10; i < n; i++) {
        ProtobufCMessage *resp;
        int64_t t0 = cr_now_ns();
        if (rpc_unary(ch, RPC_ECHO_UNARY, &q.base, &corral__v1__echo_reply__descriptor, &resp, 10000, &err))
            die("unary", err.msg);
        if (i >= 0) us[i] = (double)(cr_now_ns() - t0) / 1e3;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    lat_t r = {bench_percentile(us, (size_t)n, 50), bench_percentile(us, (size_t)n, 99)};
    free(us);
    free(buf);
    return r;
}

static double rpc_stream_once(rpc_channel_t *ch, size_t size, int n)
{
    uint8_t *buf = calloc(1, size);
    Corral__V1__EchoRequest q;
    make_req(&q, buf, size);
    cr_err_t err = {0};
    rpc_stream_t *st;
    int64_t t0 = cr_now_ns();
    if (rpc_stream_open(ch, &st, RPC_ECHO_COLLECT, &corral__v1__echo_reply__descriptor, NULL, 60000, &err))
        die("stream", err.msg);
    for (int i = 0; i < n; i++)
        if (rpc_stream_send(st, &q.base, -1, &err)) die("stream send", err.msg);
    if (rpc_stream_close_send(st, &err) || rpc_stream_wait(st, 60000, NULL, &err)) die("stream end", err.msg);
    double s = (double)(cr_now_ns() - t0) / 1e9;
    rpc_stream_destroy(st);
    free(buf);
    return (double)size * n / s;
}

typedef struct pair {
    double rpc, tcp, ratio;   /* medians over REPS interleaved runs */
} pair_t;

/* Alternates a TCP run and an RPC run REPS times, so load that drifts during the
 * benchmark (the machine is shared) hits both sides alike. */
static pair_t stream_pair(rpc_channel_t *ch, size_t size, int n)
{
    double r[REPS], t[REPS], q[REPS];
    rpc_stream_once(ch, size, n / 10);   /* warm-up */
    for (int i = 0; i < REPS; i++) {
        t[i] = tcp_stream_once(size, n);
        r[i] = rpc_stream_once(ch, size, n);
        q[i] = r[i] / t[i];
    }
    return (pair_t){bench_percentile(r, REPS, 50), bench_percentile(t, REPS, 50), bench_percentile(q, REPS, 50)};
}

typedef struct setup {
    rpc_server_t *srv;
    rpc_channel_t *ch;
    rpc_method_t methods[RPC_ECHO_N_METHODS];
    rpc_echo_t echo;
} setup_t;

static void setup_start(setup_t *s, const rpc_opts_t *so, const rpc_opts_t *co, unsigned flags)
{
    memset(s, 0, sizeof *s);
    rpc_echo_methods(s->methods, &s->echo, flags);
    cr_err_t err = {0};
    if (rpc_server_create(&s->srv, "127.0.0.1:0", so, s->methods, RPC_ECHO_N_METHODS, &err) ||
        rpc_server_start(s->srv, &err))
        die("server", err.msg);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(s->srv));
    if (rpc_channel_create(&s->ch, target, co, &err) || rpc_channel_wait_ready(s->ch, 5000, &err))
        die("channel", err.msg);
}

static void setup_stop(setup_t *s)
{
    rpc_channel_destroy(s->ch);
    rpc_server_destroy(s->srv);
}

int main(void)
{
    cr_log_set_level(CR_LOG_WARN);
    char dir[] = "/tmp/corral-bench-rpc-XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp", "failed");
    const char *clients[] = {"bench"};
    cr_err_t err = {0};
    if (rpc_certs_make(dir, NULL, 0, clients, 1, &err)) die("certs", err.msg);
    char sdir[4200], cdir[4200];
    snprintf(sdir, sizeof sdir, "%s/server", dir);
    snprintf(cdir, sizeof cdir, "%s/bench", dir);

    const size_t sizes[2] = {4 * KIB, MIB};
    const int unary_n[2] = {3000, 200};
    const int stream_n[2] = {40000, 600};
    const char *size_name[2] = {"4KiB", "1MiB"};

    rpc_opts_t big = {.max_message = 4 * MIB};
    rpc_opts_t smtls = {.security = RPC_MTLS, .cert_dir = sdir, .max_message = 4 * MIB};
    rpc_opts_t cmtls = {.security = RPC_MTLS, .cert_dir = cdir, .max_message = 4 * MIB};

    /* One setup at a time: an idle server's queue thread still takes part in
     * gRPC's polling and would slow the one being measured. */
    const char *names[3] = {"insecure", "insecure pool", "mtls"};
    const unsigned flags[3] = {RPC_METHOD_INLINE, 0, RPC_METHOD_INLINE};
    const rpc_opts_t *sopts[3] = {&big, &big, &smtls}, *copts[3] = {&big, &big, &cmtls};
    lat_t lat[3][2], tcp_lat[3][2];
    pair_t bw[3][2];
    for (int k = 0; k < 3; k++) {
        setup_t s;
        setup_start(&s, sopts[k], copts[k], flags[k]);
        for (int i = 0; i < 2; i++) {
            tcp_lat[k][i] = tcp_pingpong(sizes[i], unary_n[i]);   /* right before, same load */
            lat[k][i] = rpc_pingpong(s.ch, sizes[i], unary_n[i]);
            if (k != 1) bw[k][i] = stream_pair(s.ch, sizes[i], stream_n[i]);
        }
        setup_stop(&s);
    }

    printf("rpc bench: loopback, one process; TCP baseline measured in the same run\n");
    printf("(handlers inline on the queue thread unless \"pool\"; TCP runs interleaved with\n the RPC runs; stream figures and ratios are medians of %d pairs)\n\n", REPS);
    printf("%-26s %9s %9s %9s %9s %8s\n", "unary echo latency", "p50 us", "p99 us", "tcp p50", "tcp p99",
           "p50 x");
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 2; i++) {
            char label[64];
            snprintf(label, sizeof label, "%s %s", names[k], size_name[i]);
            printf("%-26s %9.1f %9.1f %9.1f %9.1f %8.2f\n", label, lat[k][i].p50, lat[k][i].p99,
                   tcp_lat[k][i].p50, tcp_lat[k][i].p99, lat[k][i].p50 / tcp_lat[k][i].p50);
        }
    printf("\n%-26s %9s %9s %8s\n", "client stream throughput", "MB/s", "tcp MB/s", "ratio");
    for (int k = 0; k < 3; k += 2)
        for (int i = 0; i < 2; i++) {
            char label[64];
            snprintf(label, sizeof label, "%s %s", names[k], size_name[i]);
            printf("%-26s %9.0f %9.0f %8.2f\n", label, bw[k][i].rpc / 1e6, bw[k][i].tcp / 1e6, bw[k][i].ratio);
        }
    double unary_4k_insecure = lat[0][0].p50, stream_1m_ratio = bw[0][1].ratio;
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "bench rpc: could not remove %s\n", dir);

    printf("\n");
    /* A short target is reported on its line; the exit status is for crashes. */
    bench_target("unary_p50_us", unary_4k_insecure, "<=100");
    bench_target("stream_1mib_vs_tcp", stream_1m_ratio, ">=0.50");
    return 0;
}
