/* controller.c - load on the control plane: 1000 simulated agents on loopback, each
 * with its own AgentLink session, 1 Hz heartbeats and 10 robots, against a real
 * `corral controller` process.
 *
 * Figures, each beside a baseline from the same run:
 *   controller CPU share (of one core, from /proc/<pid>/stat) with 1000 agents,
 *     against the same controller serving a single agent;
 *   heartbeat round trip p50/p99 (agent send -> HeartbeatAck) with 1000 agents,
 *     against a single agent;
 *   `corral robot list --json` wall time for 10,000 robots (a process, a call, the
 *     JSON), against a plain SQLite SELECT of the same rows from state.db;
 *   the time until every agent has reconnected after the controller is killed
 *     with SIGKILL and restarted, against the time of the first connect.
 * Targets (the issue): CPU under 10% of one core; the listing under 200 ms.
 * usage: bench/controller [AGENTS] [SECONDS]   (defaults 1000 and 10) */
#include "agents/agent.h"
#include "bench/benchutil.h"
#include "common/log.h"
#include "common/time.h"
#include "controller/controller.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROBOTS_PER_AGENT 10
#define AGENTS_PER_CHANNEL 50
#define MAX_SAMPLES (1 << 20)

static double *samples;
static atomic_long nsamples;
static atomic_int recording;

static void on_ack(void *user, int64_t rtt_ns)
{
    if (!atomic_load(&recording)) return;
    long i = atomic_fetch_add(&nsamples, 1);
    if (i < MAX_SAMPLES) samples[i] = (double)rtt_ns / 1e6;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) {
        perror("free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* CPU seconds the process has used: the sum of its threads' run time from
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds), precise where the tick counts
 * of /proc/<pid>/stat would round an idle second to zero; falls back to those. */
static double cpu_seconds_ticks(pid_t pid);
static double cpu_seconds(pid_t pid)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return cpu_seconds_ticks(pid);
    double total = 0;
    int ok = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p2[400];
        snprintf(p2, sizeof p2, "%s/%s/schedstat", path, e->d_name);
        FILE *f = fopen(p2, "r");
        unsigned long long ns = 0;
        if (f && fscanf(f, "%llu", &ns) == 1) {
            total += (double)ns / 1e9;
            ok = 1;
        }
        if (f) fclose(f);
    }
    closedir(d);
    return ok ? total : cpu_seconds_ticks(pid);
}

static double cpu_seconds_ticks(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');  /* the command name may contain spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Controller CPU share over `seconds`, with the heartbeat round trips of that
 * window in samples[0..*n). */
static double measure(pid_t pid, double seconds, size_t *n)
{
    atomic_store(&nsamples, 0);
    atomic_store(&recording, 1);
    double c0 = cpu_seconds(pid), t0 = cr_now_s();
    cr_sleep_ns((int64_t)(seconds * 1e9));
    double c1 = cpu_seconds(pid), t1 = cr_now_s();
    atomic_store(&recording, 0);
    long k = atomic_load(&nsamples);
    *n = (size_t)(k < MAX_SAMPLES ? k : MAX_SAMPLES);
    return (c1 - c0) / (t1 - t0);
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Wall milliseconds of `corral robot list --json` with stdout to /dev/null. */
static double time_cli_list(const char *corral, const char *addr)
{
    double t0 = cr_now_s();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execl(corral, corral, "robot", "list", "--json", "--controller", addr, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    double ms = (cr_now_s() - t0) * 1e3;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "robot list --json failed (status %d)\n", st);
        return -1;
    }
    return ms;
}

static volatile size_t sink;

/* Wall milliseconds to read the same rows straight from state.db. */
static double time_sqlite_select(const char *db_path, long *rows)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return -1;
    double t0 = cr_now_s();
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "SELECT name, driver, node, model, port, settings, state, experiment, registered, "
                           "reported, estopped FROM robots ORDER BY name", -1, &st, NULL);
    long n = 0;
    size_t bytes = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int c = 0; c < 11; c++) bytes += (size_t)sqlite3_column_bytes(st, c);
        n++;
    }
    sqlite3_finalize(st);
    double ms = (cr_now_s() - t0) * 1e3;
    sqlite3_close(db);
    *rows = n;
    sink += bytes;  /* the bytes are read, as the CLI reads them */
    return ms;
}

/* Sum of stats.sessions over all agents (sessions accepted so far). */
static long sessions_total(agent_t **agents, int n, int *connected)
{
    long total = 0;
    *connected = 0;
    for (int i = 0; i < n; i++) {
        agent_stats_t s;
        agent_get_stats(agents[i], &s);
        total += s.sessions;
        *connected += s.connected;
    }
    return total;
}

static double median(double *v, int n) { return bench_percentile(v, (size_t)n, 50); }

int main(int argc, char **argv)
{
    int nagents = argc > 1 ? atoi(argv[1]) : 1000;
    double seconds = argc > 2 ? atof(argv[2]) : 10;
    if (nagents < 1 || seconds <= 0) {
        fprintf(stderr, "usage: %s [AGENTS] [SECONDS]\n", argv[0]);
        return 1;
    }
    cr_log_set_level(CR_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    samples = calloc(MAX_SAMPLES, sizeof *samples);

    char corral[4096], self[4096];
    const char *env = getenv("CORRAL");
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    self[l > 0 ? l : 0] = '\0';
    if (env) snprintf(corral, sizeof corral, "%s", env);
    else snprintf(corral, sizeof corral, "%.*s/../corral", (int)(strrchr(self, '/') - self), self);

    char tmp[] = "/tmp/corral-bench-ctl.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    char addr[64], state[256], log[256], db[300];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port());
    snprintf(state, sizeof state, "%s/ctl", tmp);
    snprintf(log, sizeof log, "%s/controller.log", tmp);
    snprintf(db, sizeof db, "%s/state.db", state);
    char *cargv[] = {corral, "controller", "--listen", addr, "--state", state, "--log-level", "warn", NULL};
    pid_t ctl = spawn(cargv, log);

    cr_err_t err = {0};
    rpc_channel_t *client = NULL;
    /* The controller just spawned may not listen yet, and a refused connection
     * ends a wait for readiness at once: ask again until 10 s have passed. */
    int64_t up_by = cr_now_ns() + 10 * CR_NS_PER_S;
    while (ctl_client_connect(addr, NULL, 1000, &client, &err) && cr_now_ns() < up_by) cr_sleep_ns(50 * CR_NS_PER_MS);
    if (!client) {
        fprintf(stderr, "controller did not come up: %s (log %s)\n", err.msg, log);
        return 1;
    }
    printf("controller bench: %d agents x %d robots, 1 Hz heartbeats, %.0f s windows, controller pid %d\n",
           nagents, ROBOTS_PER_AGENT, seconds, (int)ctl);

    int nch = (nagents + AGENTS_PER_CHANNEL - 1) / AGENTS_PER_CHANNEL;
    rpc_channel_t **chans = calloc((size_t)nch, sizeof *chans);
    agent_t **agents = calloc((size_t)nagents, sizeof *agents);
    for (int c = 0; c < nch; c++)
        if (rpc_channel_create(&chans[c], addr, &(rpc_opts_t){.backoff_max_ms = 1000}, &err)) {
            fprintf(stderr, "channel: %s\n", err.msg);
            return 1;
        }
    char specs[ROBOTS_PER_AGENT][64], dir[300], name[64];
    const char *spec_p[ROBOTS_PER_AGENT];
    for (int i = 0; i < nagents; i++) {
        for (int k = 0; k < ROBOTS_PER_AGENT; k++) {
            snprintf(specs[k], sizeof specs[k], "a%04d-r%02d:mock", i, k);
            spec_p[k] = specs[k];
        }
        snprintf(dir, sizeof dir, "%s/agent%04d", tmp, i);
        snprintf(name, sizeof name, "node%04d", i);
        agent_opts_t o = {.node = name, .state_dir = dir, .robots = spec_p, .n_robots = ROBOTS_PER_AGENT,
                          .channel = chans[i / AGENTS_PER_CHANNEL], .on_ack = on_ack, .backoff_max_ms = 2000};
        if (agent_create(&o, &agents[i], &err)) {
            fprintf(stderr, "agent %d: %s\n", i, err.msg);
            return 1;
        }
    }

    /* Baseline: the same controller with one agent. */
    agent_start(agents[0], &err);
    cr_sleep_ns(2 * CR_NS_PER_S);
    size_t n1 = 0;
    double cpu1 = measure(ctl, seconds / 2, &n1);
    double p50_1 = n1 ? bench_percentile(samples, n1, 50) : -1, p99_1 = n1 ? bench_percentile(samples, n1, 99) : -1;

    double t0 = cr_now_s();
    for (int i = 1; i < nagents; i++) agent_start(agents[i], &err);
    int connected = 0;
    while (cr_now_s() - t0 < 180) {
        connected = 0;
        for (int i = 0; i < nagents; i++) {
            agent_stats_t s;
            agent_get_stats(agents[i], &s);
            connected += s.connected;
        }
        if (connected == nagents) break;
        cr_sleep_ns(200 * CR_NS_PER_MS);
    }
    double connect_s = cr_now_s() - t0;
    printf("sessions: %d of %d accepted after %.1f s\n", connected, nagents, connect_s);
    cr_sleep_ns(2 * CR_NS_PER_S);
    size_t nn = 0;
    double cpuN = measure(ctl, seconds, &nn);
    double p50_N = nn ? bench_percentile(samples, nn, 50) : -1, p99_N = nn ? bench_percentile(samples, nn, 99) : -1;

    /* The listing: 5 runs each, medians. */
    double cli[5], sql[5];
    long rows = 0;
    for (int r = 0; r < 5; r++) {
        cli[r] = time_cli_list(corral, addr);
        sql[r] = time_sqlite_select(db, &rows);
    }
    double cli_ms = median(cli, 5), sql_ms = median(sql, 5);

    Corral__V1__ListNodesRequest lreq = CORRAL__V1__LIST_NODES_REQUEST__INIT;
    Corral__V1__ListNodesResponse *lresp = NULL;
    size_t ready = 0;
    if (ctl_client_call(client, CTL_M_LIST_NODES, &lreq.base, &corral__v1__list_nodes_response__descriptor,
                        (ProtobufCMessage **)&lresp, 10000, NULL, &err) == 0) {
        for (size_t i = 0; i < lresp->n_nodes; i++) ready += lresp->nodes[i]->state == CORRAL__V1__NODE_STATE__NODE_READY;
        protobuf_c_message_free_unpacked(&lresp->base, NULL);
    }

    printf("\n%-44s %12s %12s %8s\n", "figure", "measured", "baseline", "ratio");
    printf("%-44s %11.2f%% %11.2f%% %8.2f   (baseline: 1 agent)\n", "controller CPU, share of one core", cpuN * 100,
           cpu1 * 100, cpu1 > 0 ? cpuN / cpu1 : 0);
    printf("%-44s %10.3fms %10.3fms %8.2f   (baseline: 1 agent)\n", "heartbeat round trip p50", p50_N, p50_1,
           p50_1 > 0 ? p50_N / p50_1 : 0);
    printf("%-44s %10.3fms %10.3fms %8.2f   (baseline: 1 agent)\n", "heartbeat round trip p99", p99_N, p99_1,
           p99_1 > 0 ? p99_N / p99_1 : 0);
    printf("%-44s %12zu %12zu %8.2f   (expected %.0f/s x %.0f s)\n", "heartbeats acknowledged in the window", nn,
           (size_t)(nagents * seconds), nn / (nagents * seconds), (double)nagents, seconds);
    printf("%-44s %10.1fms %10.2fms %8.1f   (baseline: SQLite SELECT of the same %ld rows)\n",
           "`corral robot list --json`", cli_ms, sql_ms, sql_ms > 0 ? cli_ms / sql_ms : 0, rows);
    printf("%-44s %12zu %12d\n", "nodes ready", ready, nagents);

    /* The controller killed with SIGKILL and restarted on the same state: time until
     * every agent has a new accepted session (baseline: the first connect). */
    int before = 0;
    long base_sessions = sessions_total(agents, nagents, &before);
    kill(ctl, SIGKILL);
    waitpid(ctl, NULL, 0);
    cr_sleep_ns(500 * CR_NS_PER_MS);
    ctl = spawn(cargv, log);
    double r0 = cr_now_s();
    int back = 0;
    while (cr_now_s() - r0 < 120) {
        int c = 0;
        long total = sessions_total(agents, nagents, &c);
        back = (int)(total - base_sessions);
        if (back >= nagents && c == nagents) break;
        cr_sleep_ns(100 * CR_NS_PER_MS);
    }
    double reconnect_s = cr_now_s() - r0;
    printf("%-44s %11.1fs %11.1fs %8.2f   (baseline: first connect; %d of %d back)\n",
           "all agents back after controller kill -9", reconnect_s, connect_s,
           connect_s > 0 ? reconnect_s / connect_s : 0, back < nagents ? back : nagents, nagents);

    for (int i = 0; i < nagents; i++) agent_destroy(agents[i]);
    for (int c = 0; c < nch; c++) rpc_channel_destroy(chans[c]);
    rpc_channel_destroy(client);
    kill(ctl, SIGTERM);
    int st = 0;
    waitpid(ctl, &st, 0);
    printf("controller exit status %d after SIGTERM\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);

    printf("\n");
    bench_target("controller_cpu_share_1000_agents", cpuN, "<=0.10");
    bench_target("robot_list_json_10k_ms", cli_ms, "<=200");
    bench_target("sessions_accepted", (double)connected / nagents, ">=1.0");
    bench_target("agents_back_after_controller_restart", (double)(back < nagents ? back : nagents) / nagents, ">=1.0");
    free(samples);
    return 0;
}
