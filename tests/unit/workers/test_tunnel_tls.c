/* test_tunnel_tls.c - real worker processes across two nodes through a controller
 * that serves mutual TLS: the learner (node cloud) listens for the direct route,
 * the env worker (node edge) takes no inbound connection, and each is given the
 * controller and its own node's certificate with the flags an agent passes
 * (--controller, --rpc-security mtls, --rpc-cert-dir, --no-inbound). The
 * learner's acknowledgements and weights can reach the env worker only through
 * the controller's relay, so a run that ends done with the env's policy version
 * past 0 shows the node's credentials carried the tunnel. An env worker given a
 * certificate of another CA is refused by the relay, and its log says so. */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "common/durable.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "controller/controller.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[4096];

static const char *sub(const char *dir, const char *name)
{
    static char buf[8][4300];
    static int k;
    char t[4300]; /* dir may be an earlier answer */
    snprintf(t, sizeof t, "%s/%s", dir, name);
    k = (k + 1) % 8;
    memcpy(buf[k], t, sizeof t);
    return buf[k];
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t spawn(const char *log, char **argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = fopen(sub(tmp, log), "a");
        if (f) {
            dup2(fileno(f), 1);
            dup2(fileno(f), 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to ms for pid to exit: its exit status, or -1 (then it is killed). */
static int wait_exit(pid_t pid, int64_t ms)
{
    int64_t dl = cr_now_ns() + ms * CR_NS_PER_MS;
    int st;
    while (cr_now_ns() < dl) {
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        cr_sleep_ns(50 * CR_NS_PER_MS);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static char *read_text(const char *path)
{
    char *s = NULL;
    cr_err_t e = {0};
    if (cr_read_file(path, 1 << 22, &s, NULL, &e) != 0) return NULL;
    return s;
}

/* "policy_version":N of an env status file, -1 when unreadable. */
static long policy_version(const char *dir)
{
    char *s = read_text(sub(dir, "status/env-0.json"));
    char *p = s ? strstr(s, "\"policy_version\":") : NULL;
    long v = p ? atol(p + 17) : -1;
    free(s);
    return v;
}

static long acked(const char *dir)
{
    char *s = read_text(sub(dir, "status/env-0.json"));
    char *p = s ? strstr(s, "\"acked\":") : NULL;
    long v = p ? atol(p + 8) : -1;
    free(s);
    return v;
}

static void test_weights_through_mtls_relay(void)
{
    const char *corral = test_build_path("corral");
    TEST_SKIP_IF(access(corral, X_OK) != 0, "no corral binary at %s", corral);
    snprintf(tmp, sizeof tmp, "%s", test_tmpdir());
    const char *certs = sub(tmp, "certs"), *other = sub(tmp, "other");
    const char *clients[] = {"edge", "cloud"};
    cr_err_t e = {0};
    ASSERT_OK(rpc_certs_make(certs, NULL, 0, clients, 2, &e), &e);
    ASSERT_OK(rpc_certs_make(other, NULL, 0, clients, 1, &e), &e);

    ctl_opts_t co = {.listen = "127.0.0.1:0", .state_dir = sub(tmp, "ctl"),
                     .rpc = {.security = RPC_MTLS, .cert_dir = sub(certs, "server")}};
    ctl_server_t *srv;
    ASSERT_OK(ctl_server_create(&co, &srv, &e), &e);
    ASSERT_OK(ctl_server_start(srv, &e), &e);
    char ctl[64], learner[64], spec[4200];
    snprintf(ctl, sizeof ctl, "127.0.0.1:%d", ctl_server_port(srv));
    snprintf(learner, sizeof learner, "127.0.0.1:%d", free_port());
    snprintf(spec, sizeof spec, "%s", test_source_path("configs/experiments/reach-sac.yaml"));
    char ldir[4300], edir[4300], xdir[4300], cloud_certs[4300], edge_certs[4300], other_certs[4300];
    snprintf(ldir, sizeof ldir, "%s", sub(tmp, "cloud"));
    snprintf(edir, sizeof edir, "%s", sub(tmp, "edge"));
    snprintf(xdir, sizeof xdir, "%s", sub(tmp, "intruder"));
    snprintf(cloud_certs, sizeof cloud_certs, "%s", sub(certs, "cloud"));
    snprintf(edge_certs, sizeof edge_certs, "%s", sub(certs, "edge"));
    snprintf(other_certs, sizeof other_certs, "%s", sub(other, "edge"));
#define SETS "--set", "robots.count=1", "--set", "stop.updates=400", "--set", "algorithm.warmup_steps=200", \
             "--set", "stop.eval_every_updates=100000", "--set", "checkpoint.every_updates=1000"
    char *largv[] = {(char *)corral, "worker", "--role", "learner", "--spec", spec, "--dir", ldir, "--node", "cloud",
                     "--listen", learner, "--controller", ctl, "--rpc-security", "mtls", "--rpc-cert-dir",
                     cloud_certs, "--status-ms", "100", SETS, NULL};
    char *eargv[] = {(char *)corral, "worker", "--role", "env", "--spec", spec, "--dir", edir, "--node", "edge",
                     "--learner", learner, "--robot", "arm0:mujoco:reach2d", "--robot-set", "realtime=false",
                     "--controller", ctl, "--rpc-security", "mtls", "--rpc-cert-dir", edge_certs, "--no-inbound",
                     "--status-ms", "100", SETS, NULL};
    char *xargv[] = {(char *)corral, "worker", "--role", "env", "--spec", spec, "--dir", xdir, "--node", "edge",
                     "--index", "1", "--learner", learner, "--robot", "arm1:mujoco:reach2d", "--robot-set",
                     "realtime=false", "--controller", ctl, "--rpc-security", "mtls", "--rpc-cert-dir", other_certs,
                     "--no-inbound", "--status-ms", "100", SETS, NULL};
    /* First an env worker holding a certificate of another CA: the controller's
     * relay refuses it, and its log says why. */
    pid_t xp = spawn("intruder.log", xargv);
    char *xlog = NULL;
    for (int i = 0; i < 200; i++) {
        free(xlog);
        xlog = read_text(sub(tmp, "intruder.log"));
        if (xlog && strstr(xlog, "relay link down")) break;
        cr_sleep_ns(50 * CR_NS_PER_MS);
    }
    kill(xp, SIGTERM);
    wait_exit(xp, 10000);
    if (!xlog || !strstr(xlog, "refused the TLS handshake")) fprintf(stderr, "intruder:\n%s\n", xlog ? xlog : "");
    ASSERT_TRUE(xlog && strstr(xlog, "refused the TLS handshake") != NULL);
    free(xlog);
    pid_t lp = spawn("learner.log", largv);
    pid_t ep = spawn("env.log", eargv);
    int lrc = wait_exit(lp, 120000), erc = wait_exit(ep, 30000);
    ctl_server_destroy(srv);
    char *llog = read_text(sub(tmp, "learner.log")), *elog = read_text(sub(tmp, "env.log"));
    if (lrc != 0 || erc != 0)
        fprintf(stderr, "learner (exit %d):\n%s\nenv (exit %d):\n%s\n", lrc, llog ? llog : "", erc,
                elog ? elog : "");
    ASSERT_INT_EQ(lrc, 0);
    ASSERT_INT_EQ(erc, 0);
    ASSERT_TRUE(elog && strstr(elog, "the learner's traffic comes by the tunnel route") != NULL);
    ASSERT_TRUE(llog && strstr(llog, "on edge") && strstr(llog, "weights by the tunnel route") != NULL);
    ASSERT_TRUE(elog && strstr(elog, "the experiment is done") != NULL);
    ASSERT_TRUE(policy_version(edir) > 0);
    ASSERT_TRUE(acked(edir) > 400);
    free(llog);
    free(elog);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"weights_through_mtls_relay", test_weights_through_mtls_relay},
        {NULL, NULL},
    };
    return test_main("workers.tunnel_tls", cases, argc, argv);
}
