/* test_directory.c - replica placement through the channel directory, with real
 * processes on loopback.
 *
 * controller_places_replicas: the real controller (`corral controller`), consumers
 * on nodes a and b (each a process whose channel joins the directory), producers
 * opened by name on a, b and c (c has no replica), each a process of its own. Each
 * consumer gets every message exactly once. Then a's consumer is SIGKILLed and
 * started again: it joins the set as a new process and gets exactly what is put
 * afterwards, from all three producers, which followed the set without being
 * restarted; b still has everything once. Last, node a's agent is SIGKILLed: the
 * controller marks the node lost and a's replica leaves its set.
 * directory_set_changes: a stand-alone directory in this process: a lost node's
 * replica leaves the set (and joins again while its hub still reaches the
 * directory), a destroyed channel leaves it, a newer replica on the same node
 * replaces the older.
 * directory_bad_input: hubs without a directory, a directory that does not answer,
 * malformed Watch requests. */
#define _GNU_SOURCE /* pipe2 */
#include "tests/harness.h"
/* ASSERT_OK puts its if and its body on one expanded line. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "channels/channel.h"
#include "channels/directory.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "corral/v1/directory.pb-c.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

enum { NPROD = 3, MAXSEQ = 1000 };

static char tmp[64];

static void read_file(const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    *out = NULL;
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    *out = s;
}

/* Waits up to timeout_s for a line starting with `key` in path; copies it. */
static int wait_line(const char *path, const char *key, char *line, size_t len, int timeout_s)
{
    int64_t deadline = cr_now_ns() + (int64_t)timeout_s * CR_NS_PER_S;
    while (cr_now_ns() < deadline) {
        char *s;
        read_file(path, &s);
        char *hit = NULL;
        for (char *p = s; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p))
            if (strncmp(p, key, strlen(key)) == 0) hit = p; /* the newest */
        if (hit) {
            size_t n = strcspn(hit, "\n");
            snprintf(line, len, "%.*s", (int)n, hit);
            free(s);
            return 0;
        }
        free(s);
        cr_sleep_ns(20 * CR_NS_PER_MS);
    }
    return -1;
}

static pid_t spawn(const char *logname, int in_fd, int out_fd, char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no process behind */
        char path[128];
        snprintf(path, sizeof path, "%s/%s", tmp, logname);
        int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(log, 2);
        if (out_fd < 0) dup2(log, 1);
        else dup2(out_fd, 1);
        if (in_fd >= 0) dup2(in_fd, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static pid_t start_controller(int *port)
{
    char state[96], exe[512];
    snprintf(state, sizeof state, "%s/state", tmp);
    snprintf(exe, sizeof exe, "%s", test_build_path("corral"));
    char *argv[] = {exe, "controller", "--listen", "127.0.0.1:0", "--state", state, NULL};
    pid_t pid = spawn("controller.log", -1, -1, argv);
    char path[128], line[512];
    snprintf(path, sizeof path, "%s/controller.log", tmp);
    *port = 0;
    int64_t deadline = cr_now_ns() + 20 * CR_NS_PER_S;
    while (!*port && cr_now_ns() < deadline) {
        char *s;
        read_file(path, &s);
        char *p = s ? strstr(s, "(port ") : NULL;
        if (p) *port = atoi(p + 6);
        free(s);
        if (!*port) cr_sleep_ns(20 * CR_NS_PER_MS);
    }
    (void)line;
    return pid;
}

static pid_t start_agent(const char *node, const char *dir)
{
    char exe[512], state[96];
    snprintf(exe, sizeof exe, "%s", test_build_path("corral"));
    snprintf(state, sizeof state, "%s/agent-%s", tmp, node);
    char *argv[] = {exe, "agent", "--name", (char *)node, "--controller", (char *)dir, "--state", state,
                    "--no-gpus", NULL};
    return spawn("agent.log", -1, -1, argv);
}

static pid_t start_consumer(const char *node, const char *dir, const char *outname)
{
    char exe[512], out[128], logname[64];
    snprintf(exe, sizeof exe, "%s", test_build_path("tests/ch_netns_node"));
    snprintf(out, sizeof out, "%s/%s", tmp, outname);
    snprintf(logname, sizeof logname, "%s.log", outname);
    char *argv[] = {exe, "djoin", (char *)node, (char *)dir, "w", out, NULL};
    return spawn(logname, -1, -1, argv);
}

typedef struct prod {
    pid_t pid;
    FILE *in, *out;
    uint64_t id;
    char route[16];
} prod_t;

static void start_producer(prod_t *p, const char *node, const char *dir)
{
    char exe[512], logname[64];
    snprintf(exe, sizeof exe, "%s", test_build_path("tests/ch_netns_node"));
    snprintf(logname, sizeof logname, "producer-%s.log", node);
    int in[2], out[2];
    /* Close-on-exec: no other child may hold this producer's input open. */
    ASSERT_TRUE(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
    char *argv[] = {exe, "dput", (char *)node, (char *)dir, "w", NULL};
    p->pid = spawn(logname, in[0], out[1], argv);
    close(in[0]);
    close(out[1]);
    p->in = fdopen(in[1], "w");
    p->out = fdopen(out[0], "r");
    setvbuf(p->in, NULL, _IOLBF, 0);
}

static void prod_send(prod_t *p, const char *cmd) { fprintf(p->in, "%s\n", cmd); }

/* Reads the answer to a command: "ok [ID ROUTE]" (0) or "err ...". */
static int prod_answer(prod_t *p, const char *what)
{
    char line[512] = "";
    if (!fgets(line, sizeof line, p->out)) snprintf(line, sizeof line, "err no answer (the process ended)");
    line[strcspn(line, "\n")] = 0;
    if (strncmp(line, "ok", 2) != 0) {
        fprintf(stderr, "  producer %d, %s: %s\n", (int)p->pid, what, line);
        return -1;
    }
    unsigned long long id;
    if (sscanf(line, "ok %llx %15s", &id, p->route) == 2) p->id = id;
    return 0;
}

/* Checks consumer file `name`: for every producer, seqs lo..hi each exactly once
 * and no other message; waits up to 20 s for them to arrive. */
static int check_consumer(const char *name, prod_t *ps, uint64_t lo, uint64_t hi)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    static int count[NPROD][MAXSEQ + 1];
    int extra = 0, missing = 0, twice = 0;
    int64_t deadline = cr_now_ns() + 20 * CR_NS_PER_S;
    for (int settle = 0; settle < 2;) {
        memset(count, 0, sizeof count);
        extra = missing = twice = 0;
        char *s;
        read_file(path, &s);
        for (char *p = s; p && *p;) {
            unsigned long long prod, seq;
            long long v;
            if (sscanf(p, "m %llx %llu %lld", &prod, &seq, &v) == 3) {
                int k = -1;
                for (int i = 0; i < NPROD; i++)
                    if (ps[i].id == prod) k = i;
                if (k < 0 || seq > MAXSEQ || v != (long long)seq - 1) extra++;
                else count[k][seq]++;
            }
            char *nl = strchr(p, '\n');
            p = nl ? nl + 1 : p + strlen(p);
        }
        free(s);
        for (int k = 0; k < NPROD; k++)
            for (uint64_t q = 1; q <= MAXSEQ; q++) {
                int want = q >= lo && q <= hi;
                if (count[k][q] == 0 && want) missing++;
                if (count[k][q] > 1) twice++;
                if (count[k][q] && !want) extra++;
            }
        if (missing && cr_now_ns() < deadline) {
            cr_sleep_ns(50 * CR_NS_PER_MS);
            continue;
        }
        if (missing) break;
        cr_sleep_ns(300 * CR_NS_PER_MS); /* anything late would be a duplicate */
        settle++;
    }
    fprintf(stderr, "  consumer %s: seqs %llu..%llu of %d producers: missing %d, twice %d, others %d\n", name,
            (unsigned long long)lo, (unsigned long long)hi, NPROD, missing, twice, extra);
    return missing || twice || extra ? -1 : 0;
}

static void test_controller_places_replicas(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/corral-chdir-XXXXXX");
    ASSERT_TRUE(mkdtemp(tmp) != NULL);
    int port;
    pid_t ctl = start_controller(&port);
    ASSERT_TRUE(port > 0);
    char dir[64], line[256], path[128];
    snprintf(dir, sizeof dir, "127.0.0.1:%d", port);
    pid_t agent = start_agent("a", dir);
    pid_t ca = start_consumer("a", dir, "a1.out");
    pid_t cb = start_consumer("b", dir, "b.out");
    snprintf(path, sizeof path, "%s/a1.out", tmp);
    ASSERT_INT_EQ(wait_line(path, "ready ", line, sizeof line, 20), 0);
    snprintf(path, sizeof path, "%s/b.out", tmp);
    ASSERT_INT_EQ(wait_line(path, "ready ", line, sizeof line, 20), 0);
    /* b joined last, so its first set holds both; a hears of b as a new set. */
    prod_t ps[NPROD];
    const char *pnodes[NPROD] = {"a", "b", "c"};
    const char *routes[NPROD] = {"shm", "shm", "fanout"};
    for (int i = 0; i < NPROD; i++) start_producer(&ps[i], pnodes[i], dir);
    for (int i = 0; i < NPROD; i++) prod_send(&ps[i], "put 0 300");
    for (int i = 0; i < NPROD; i++) ASSERT_INT_EQ(prod_answer(&ps[i], "put 0 300"), 0);
    for (int i = 0; i < NPROD; i++) ASSERT_STR_EQ(ps[i].route, routes[i]);
    ASSERT_INT_EQ(check_consumer("a1.out", ps, 1, 300), 0);
    ASSERT_INT_EQ(check_consumer("b.out", ps, 1, 300), 0);

    /* a's consumer dies; a new process takes its place and joins the set. */
    kill(ca, SIGKILL);
    waitpid(ca, NULL, 0);
    ca = start_consumer("a", dir, "a2.out");
    snprintf(path, sizeof path, "%s/a2.out", tmp);
    ASSERT_INT_EQ(wait_line(path, "ready ", line, sizeof line, 20), 0);
    unsigned long long hub, gen;
    ASSERT_INT_EQ(sscanf(line, "ready %llx %llu", &hub, &gen), 2);
    fprintf(stderr, "  a's consumer restarted as process %016llx, in the set of generation %llu\n", hub, gen);
    /* Everyone holds that set (or newer) before the next puts. */
    char cmd[64];
    snprintf(cmd, sizeof cmd, "wait %llu", gen);
    for (int i = 0; i < NPROD; i++) prod_send(&ps[i], cmd);
    for (int i = 0; i < NPROD; i++) ASSERT_INT_EQ(prod_answer(&ps[i], cmd), 0);
    snprintf(path, sizeof path, "%s/b.out", tmp);
    int64_t deadline = cr_now_ns() + 20 * CR_NS_PER_S;
    unsigned long long bgen = 0;
    while (bgen < gen && cr_now_ns() < deadline) {
        if (wait_line(path, "set ", line, sizeof line, 1) == 0) sscanf(line, "set %llu", &bgen);
    }
    ASSERT_TRUE(bgen >= gen);
    for (int i = 0; i < NPROD; i++) prod_send(&ps[i], "put 300 600");
    for (int i = 0; i < NPROD; i++) ASSERT_INT_EQ(prod_answer(&ps[i], "put 300 600"), 0);
    for (int i = 0; i < NPROD; i++) ASSERT_STR_EQ(ps[i].route, routes[i]);
    ASSERT_INT_EQ(check_consumer("a2.out", ps, 301, 600), 0);
    ASSERT_INT_EQ(check_consumer("b.out", ps, 1, 600), 0);

    /* Node a's agent dies: once the controller marks the node lost, a's replica
     * leaves the set (its process, still alive here, joins again). */
    snprintf(path, sizeof path, "%s/controller.log", tmp);
    char *log;
    read_file(path, &log);
    ASSERT_TRUE(log && strstr(log, "node a lost") == NULL);
    free(log);
    kill(agent, SIGKILL);
    waitpid(agent, NULL, 0);
    deadline = cr_now_ns() + 20 * CR_NS_PER_S;
    int lost = 0;
    while (!lost && cr_now_ns() < deadline) {
        read_file(path, &log);
        lost = log && strstr(log, "node a lost: 1 channel replica(s) left their sets") != NULL;
        free(log);
        if (!lost) cr_sleep_ns(100 * CR_NS_PER_MS);
    }
    ASSERT_TRUE(lost);

    for (int i = 0; i < NPROD; i++) { /* at the end of their input they close and exit 0 */
        fclose(ps[i].in);
        fclose(ps[i].out);
        int status = -1;
        waitpid(ps[i].pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fprintf(stderr, "  producer on node %s ended with status %#x\n", pnodes[i], status);
        ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    kill(ca, SIGKILL);
    kill(cb, SIGKILL);
    waitpid(ca, NULL, 0);
    waitpid(cb, NULL, 0);
    kill(ctl, SIGTERM);
    waitpid(ctl, NULL, 0);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", tmp);
    if (system(rm) != 0) fprintf(stderr, "  could not remove %s\n", tmp);
}

static ch_hub_t *dir_hub(const char *node, const char *dir, int64_t reconnect_ms)
{
    ch_hub_opts_t o = {.node = node, .listen = "127.0.0.1:0", .directory = dir, .reconnect_ms = reconnect_ms};
    ch_hub_t *h;
    cr_err_t e = {0};
    ASSERT_OK(ch_hub_create(&o, &h, &e), &e);
    return h;
}

static void wait_replicas(ch_directory_t *d, size_t n)
{
    int64_t deadline = cr_now_ns() + 10 * CR_NS_PER_S;
    while (ch_directory_replicas(d, "x") != n && cr_now_ns() < deadline) cr_sleep_ns(10 * CR_NS_PER_MS);
    ASSERT_INT_EQ(ch_directory_replicas(d, "x"), n);
}

/* Waits until c's replica set has n peers (the directory's set reached it). */
static void wait_peers(ch_channel_t *c, size_t n)
{
    ch_replica_peer_stats_t st[4];
    int64_t deadline = cr_now_ns() + 10 * CR_NS_PER_S;
    while (ch_channel_replica_stats(c, st, 4) != n && cr_now_ns() < deadline) cr_sleep_ns(10 * CR_NS_PER_MS);
    ASSERT_INT_EQ(ch_channel_replica_stats(c, st, 4), n);
}

static void test_directory_set_changes(void)
{
    cr_err_t e = {0};
    ch_directory_t *d;
    ASSERT_OK(ch_directory_create("127.0.0.1:0", &d, &e), &e);
    const char *addr = ch_directory_addr(d);
    /* a comes back slowly after its call is ended, so the gap is seen. */
    ch_hub_t *ha = dir_hub("a", addr, 1500), *hb = dir_hub("b", addr, 50), *hc = dir_hub("c", addr, 50);
    ch_channel_t *ca, *cb;
    ASSERT_OK(ch_channel_create(ha, "x", NULL, &ca, &e), &e);
    ASSERT_OK(ch_channel_create(hb, "x", NULL, &cb, &e), &e);
    ASSERT_OK(ch_channel_join(ca, NULL, 10000, &e), &e);
    ASSERT_OK(ch_channel_join(cb, NULL, 10000, &e), &e);
    ASSERT_INT_EQ(ch_channel_join(cb, NULL, 10000, &e), CR_EEXIST);
    wait_replicas(d, 2);
    wait_peers(ca, 1);
    ch_producer_t *p;
    ASSERT_OK(ch_producer_open_named(hc, "x", NULL, 10000, &p, &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(p)), "fanout");
    ASSERT_OK(ch_put(p, "1", 1, 1, 5000, &e), &e);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    ch_msg_t *m;
    ASSERT_OK(ch_get(ca, &m, 5000, &e), &e);
    ch_msg_free(m);
    ASSERT_OK(ch_get(cb, &m, 5000, &e), &e);
    ch_msg_free(m);

    /* Node a lost: its replica leaves the set at once; b drops it as a peer. */
    uint64_t g0 = ch_channel_directory_generation(cb);
    ASSERT_INT_EQ(ch_directory_node_lost(d, "a"), 1);
    ASSERT_INT_EQ(ch_directory_replicas(d, "x"), 1);
    wait_peers(cb, 0);
    /* The hub notes the set's generation just after re-replicating to it. */
    int64_t noted_by = cr_now_ns() + 10 * CR_NS_PER_S;
    while (ch_channel_directory_generation(cb) <= g0 && cr_now_ns() < noted_by) cr_sleep_ns(10 * CR_NS_PER_MS);
    ASSERT_TRUE(ch_channel_directory_generation(cb) > g0);
    /* a's hub still reaches the directory: it joins again, and b forwards to it. */
    wait_replicas(d, 2);
    wait_peers(cb, 1);

    /* A newer replica on node b replaces the older one. */
    ch_hub_t *hb2 = dir_hub("b", addr, 50);
    ch_channel_t *cb2;
    ASSERT_OK(ch_channel_create(hb2, "x", NULL, &cb2, &e), &e);
    ASSERT_OK(ch_channel_join(cb2, NULL, 10000, &e), &e);
    wait_replicas(d, 2);
    cr_sleep_ns(300 * CR_NS_PER_MS); /* the old one must not take its place back */
    ASSERT_INT_EQ(ch_directory_replicas(d, "x"), 2);
    /* The producer follows: its next message reaches a and the new b, not the old. */
    uint64_t want = ch_channel_directory_generation(cb2);
    int64_t deadline = cr_now_ns() + 10 * CR_NS_PER_S;
    while (ch_hub_directory_generation(hc, "x") < want && cr_now_ns() < deadline) cr_sleep_ns(10 * CR_NS_PER_MS);
    wait_peers(ca, 1);
    ASSERT_OK(ch_put(p, "2", 1, 1, 5000, &e), &e);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    ASSERT_OK(ch_get(cb2, &m, 5000, &e), &e);
    ASSERT_INT_EQ(m->seq, 2);
    ch_msg_free(m);
    ASSERT_OK(ch_get(ca, &m, 5000, &e), &e);
    ASSERT_INT_EQ(m->seq, 2);
    ch_msg_free(m);
    ASSERT_INT_EQ(ch_get(cb, &m, 300, &e), CR_ETIMEDOUT);

    /* A destroyed channel leaves the set; with one replica left the producer
     * writes to it plainly. */
    ch_channel_destroy(ca);
    wait_replicas(d, 1);
    wait_peers(cb2, 0);
    want = ch_channel_directory_generation(cb2);
    deadline = cr_now_ns() + 10 * CR_NS_PER_S;
    while (ch_hub_directory_generation(hc, "x") < want && cr_now_ns() < deadline) cr_sleep_ns(10 * CR_NS_PER_MS);
    ASSERT_OK(ch_put(p, "3", 1, 1, 5000, &e), &e);
    ASSERT_OK(ch_producer_flush(p, 10000, &e), &e);
    ASSERT_STR_EQ(ch_route_name(ch_producer_route(p)), "direct");
    ASSERT_OK(ch_get(cb2, &m, 5000, &e), &e);
    ASSERT_INT_EQ(m->seq, 3);
    ch_msg_free(m);
    ch_producer_close(p);
    ch_channel_destroy(cb);
    ch_channel_destroy(cb2);
    ch_hub_destroy(ha);
    ch_hub_destroy(hb);
    ch_hub_destroy(hb2);
    ch_hub_destroy(hc);
    ch_directory_destroy(d);
}

static void test_directory_bad_input(void)
{
    cr_err_t e = {0};
    ch_hub_opts_t o = {.node = "a", .shm = -1};
    ch_hub_t *h;
    ch_channel_t *c;
    ch_producer_t *p;
    ASSERT_OK(ch_hub_create(&o, &h, &e), &e);
    ASSERT_OK(ch_channel_create(h, "x", NULL, &c, &e), &e);
    ASSERT_INT_EQ(ch_channel_join(c, NULL, 100, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "no channel directory") != NULL);
    ASSERT_INT_EQ(ch_producer_open_named(h, "x", NULL, 100, &p, &e), CR_EINVAL);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
    /* Nobody answers at the directory's address. */
    ch_directory_t *d;
    ASSERT_OK(ch_directory_create("127.0.0.1:0", &d, &e), &e);
    char gone[64];
    snprintf(gone, sizeof gone, "%s", ch_directory_addr(d));
    ch_directory_destroy(d);
    h = dir_hub("a", gone, 50);
    ASSERT_INT_EQ(ch_producer_open_named(h, "x", NULL, 500, &p, &e), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(e.msg, gone) != NULL);
    ASSERT_OK(ch_channel_create(h, "x", NULL, &c, &e), &e);
    ASSERT_INT_EQ(ch_channel_join(c, NULL, 300, &e), CR_ETIMEDOUT);
    ch_channel_destroy(c);
    ch_hub_destroy(h);
    /* Malformed requests get INVALID_ARGUMENT naming what was wrong. */
    ASSERT_OK(ch_directory_create("127.0.0.1:0", &d, &e), &e);
    rpc_opts_t ro = {0};
    rpc_channel_t *rch;
    ASSERT_OK(rpc_channel_create(&rch, ch_directory_addr(d), &ro, &e), &e);
    Corral__V1__ChReplica rep = CORRAL__V1__CH_REPLICA__INIT;
    rep.node = "a";
    rep.addr = "";
    for (int k = 0; k < 2; k++) {
        Corral__V1__ChWatch req = CORRAL__V1__CH_WATCH__INIT;
        req.channel = k == 0 ? "B A D" : "x";
        if (k == 1) req.replica = &rep; /* no process id */
        rpc_stream_cbs_t cbs = {0};
        rpc_stream_t *st;
        ASSERT_OK(rpc_stream_open(rch, &st, "/corral.v1.ChannelDirectory/Watch",
                                  &corral__v1__ch_replica_set__descriptor, &cbs, 10000, &e), &e);
        ASSERT_OK(rpc_stream_send(st, &req.base, 1000, &e), &e);
        ASSERT_OK(rpc_stream_close_send(st, &e), &e);
        rpc_code_t code;
        rpc_stream_wait(st, 10000, &code, &e);
        ASSERT_INT_EQ(code, RPC_INVALID_ARGUMENT);
        fprintf(stderr, "  refused: %s\n", e.msg);
        ASSERT_TRUE(strstr(e.msg, k == 0 ? "not valid" : "process") != NULL);
        rpc_stream_destroy(st);
    }
    ASSERT_INT_EQ(ch_directory_replicas(d, "x"), 0);
    rpc_channel_destroy(rch);
    ch_directory_destroy(d);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"controller_places_replicas", test_controller_places_replicas},
        {"directory_set_changes", test_directory_set_changes},
        {"directory_bad_input", test_directory_bad_input},
        {NULL, NULL},
    };
    return test_main("channels_directory", cases, argc, argv);
}
