/* agent.c - the agent's session loop: connect, send the inventory, heartbeat,
 * and on any end of the stream reconnect with backoff and start over.
 *
 * One thread per agent runs the loop; the stream's callbacks run on the channel's
 * thread and only record what arrived under the agent's mutex and wake the loop.
 * Session states, as the loop sees them:
 *   idle --open+inventory--> waiting --SessionAccepted--> accepted
 *   waiting|accepted --stream ended--> idle (backoff, then again)
 *   any --agent_stop--> closing (half-close, wait for the controller) --> done
 * The backoff resets after every accepted session, so a controller restart costs
 * one short delay; a refused inventory backs off to the cap and is logged each time.
 *
 * Workers: the supervisor is not thread-safe, so the callbacks only queue worker
 * commands (copies) under mu; the loop thread carries them out, polls the
 * supervisor between waits and sends WorkerStatus from the supervisor's events.
 * With each heartbeat it forwards the workers' progress (progress.h): what their
 * status files say changed; all of it after every Inventory and before a
 * worker's final state. `st` (the open stream) is touched by the loop thread only. */
#include "agents/agent.h"
#include "agents/progress.h"
#include "agents/workercmd.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SESSION_METHOD "/corral.v1.AgentLink/Session"
#define ACCEPT_TIMEOUT_MS 10000
#define RTT_SLOTS 64
#define SUP_POLL_NS (100 * CR_NS_PER_MS)  /* reaping a dead worker waits at most this */
#define STATUS_SEND_MS 1000

typedef struct cmd {
    Corral__V1__ControllerMessage *msg;  /* a copy: StartWorker, StopWorker or ReadLog */
    struct cmd *next;
} cmd_t;

struct agent {
    char controller[256];
    char node[64];
    char state_dir[4096];
    uint64_t id;
    Corral__V1__Inventory *inv;
    rpc_channel_t *ch;
    int own_channel;
    int backoff_max_ms;
    void (*on_ack)(void *user, int64_t rtt_ns);
    void *user;

    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int stop;
    /* current session, under mu */
    int accepted, closed;
    int interval_ms;
    rpc_code_t close_code;
    char close_details[256];
    int64_t sent_ns[RTT_SLOTS];
    uint64_t seq;
    agent_stats_t stats;
    cmd_t *cmd_head, **cmd_tail;   /* worker commands, under mu */
    /* workers: loop thread only */
    agent_sup_t *sup;
    agent_progress_t *prog;
    char worker_exe[4096];
    rpc_stream_t *st;
    /* what every worker is told of the node (agent_wcmd_node_t points into these) */
    agent_wcmd_node_t wnode;
    char adv_host[256];
    char *cert_dir, *server_name, *token;
};

/* ---- the agent id -------------------------------------------------------- */

/* The id lives in state_dir/agent-id so a restarted agent is recognised as the
 * same one (and may take its node's session over at once), while a second agent
 * wrongly given the same --name is refused. Written temp + fsync + rename. */
static int load_id(const char *dir, uint64_t *id, cr_err_t *err)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cr_err_set(err, CR_EIO, "cannot create state directory %s: %s", dir, strerror(errno));
    char path[4200], tmp[4300], buf[64] = "";
    snprintf(path, sizeof path, "%s/agent-id", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        int ok = fgets(buf, sizeof buf, f) != NULL;
        fclose(f);
        buf[strcspn(buf, "\n")] = '\0';
        if (ok && cr_id_parse(buf, id) == 0) return 0;
        CR_WARN("agent", "%s is corrupt ('%s'); making a new agent id", path, buf);
    }
    *id = cr_id_new();
    cr_id_format(*id, buf);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return cr_err_set(err, CR_EIO, "cannot write %s: %s", tmp, strerror(errno));
    strcat(buf, "\n");
    int bad = write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf) || fsync(fd) != 0;
    close(fd);
    if (bad || rename(tmp, path) != 0)
        return cr_err_set(err, CR_EIO, "cannot write %s: %s", path, strerror(errno));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- create / destroy ------------------------------------------------------ */

static void on_worker_event(void *ud, const agent_worker_info_t *w, agent_worker_state_t old);

static int workers_create(agent_t *a, const agent_opts_t *o, cr_err_t *err)
{
    if (o->worker_exe && *o->worker_exe) {
        snprintf(a->worker_exe, sizeof a->worker_exe, "%s", o->worker_exe);
    } else {
        /* The real path, so the workers' command lines name the binary. */
        ssize_t n = readlink("/proc/self/exe", a->worker_exe, sizeof a->worker_exe - 1);
        if (n <= 0) return cr_err_set(err, CR_EIO, "cannot read /proc/self/exe: %s", strerror(errno));
        a->worker_exe[n] = '\0';
    }
    static const char *const security[] = {"insecure", "tls", "mtls"};
    a->cert_dir = o->rpc.cert_dir ? strdup(o->rpc.cert_dir) : NULL;
    a->server_name = o->rpc.server_name ? strdup(o->rpc.server_name) : NULL;
    a->token = o->rpc.token ? strdup(o->rpc.token) : NULL;
    if ((o->rpc.cert_dir && !a->cert_dir) || (o->rpc.server_name && !a->server_name) || (o->rpc.token && !a->token))
        return cr_err_set(err, CR_ENOMEM, "agent");
    int inbound = o->advertise && *o->advertise;
    if (inbound) /* the host part ("[v6]" kept whole): workers listen on a port of their own there */
        snprintf(a->adv_host, sizeof a->adv_host, "%.*s", (int)(strrchr(o->advertise, ':') - o->advertise),
                 o->advertise);
    a->wnode = (agent_wcmd_node_t){
        .node = a->node,
        .controller = a->controller,
        .security = o->rpc.security <= RPC_MTLS ? security[o->rpc.security] : "insecure",
        .cert_dir = a->cert_dir,
        .server_name = a->server_name,
        .token = a->token,
        .inbound = inbound,
        .advertise_host = a->adv_host,
    };
    agent_sup_config_t cfg = {.state_dir = a->state_dir, .on_event = on_worker_event, .ud = a};
    int rc = agent_progress_create(a->state_dir, &a->prog, err);
    return rc ? rc : agent_sup_create(&cfg, &a->sup, err);
}

int agent_stop_workers(const char *state_dir, int64_t timeout_ms, cr_err_t *err)
{
    agent_sup_config_t cfg = {.state_dir = state_dir ? state_dir : AGENT_DEFAULT_STATE_DIR};
    agent_sup_t *sup = NULL;
    int rc = agent_sup_create(&cfg, &sup, err);
    if (rc) return rc;
    agent_worker_info_t w[1];
    size_t n = agent_sup_list(sup, w, 0);
    rc = agent_sup_stop_all(sup, timeout_ms, err);
    if (!rc) CR_INFO("agent", "stopped %zu workers of %s", n, cfg.state_dir);
    agent_sup_destroy(sup);
    return rc;
}

/* "name:label" gives robot name the label (the controller checks its form). */
static int add_label(Corral__V1__Inventory *inv, const char *spec, cr_err_t *err)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec || !colon[1])
        return cr_err_set(err, CR_EINVAL, "robot label '%.100s': expected ROBOT:LABEL (e.g. arm-1:site=lab2)", spec);
    for (size_t i = 0; i < inv->n_robots; i++) {
        Corral__V1__RobotInfo *r = inv->robots[i];
        if (strlen(r->name) != (size_t)(colon - spec) || strncmp(r->name, spec, (size_t)(colon - spec)) != 0)
            continue;
        char **grown = realloc(r->labels, (r->n_labels + 1) * sizeof *grown);
        char *label = strdup(colon + 1);
        if (!grown || !label) {
            free(label);
            if (grown) r->labels = grown;
            return cr_err_set(err, CR_ENOMEM, "robot labels");
        }
        r->labels = grown;
        r->labels[r->n_labels++] = label;
        return 0;
    }
    return cr_err_set(err, CR_EINVAL, "robot label '%.100s': no robot %.*s is configured on this node (--robot)",
                      spec, (int)(colon - spec), spec);
}

static int build_inventory(agent_t *a, const agent_opts_t *o, cr_err_t *err)
{
    Corral__V1__Inventory *inv = calloc(1, sizeof *inv);
    if (!inv) return cr_err_set(err, CR_ENOMEM, "inventory");
    corral__v1__inventory__init(inv);
    a->inv = inv;
    inv->node = strdup(a->node);
    inv->agent_version = strdup(AGENT_VERSION);
    inv->agent_instance = a->id;
    if (!inv->node || !inv->agent_version) return cr_err_set(err, CR_ENOMEM, "inventory");
    int rc = agent_host_facts(o->advertise, &inv->host, err);
    if (rc) return rc;
    if (o->probe_gpus && (rc = agent_gpu_probe(&inv->gpus, &inv->n_gpus, err))) return rc;
    if (o->n_robots) {
        inv->robots = calloc(o->n_robots, sizeof *inv->robots);
        if (!inv->robots) return cr_err_set(err, CR_ENOMEM, "inventory");
    }
    for (size_t i = 0; i < o->n_robots; i++) {
        if ((rc = agent_robot_parse(o->robots[i], &inv->robots[i], err))) return rc;
        inv->n_robots++;
        for (size_t j = 0; j < i; j++)
            if (strcmp(inv->robots[j]->name, inv->robots[i]->name) == 0)
                return cr_err_set(err, CR_EINVAL, "robot %s is configured twice", inv->robots[i]->name);
    }
    for (size_t i = 0; i < o->n_robot_labels; i++)
        if ((rc = add_label(inv, o->robot_labels[i], err))) return rc;
    return 0;
}

int agent_create(const agent_opts_t *o, agent_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!o->node || !*o->node) return cr_err_set(err, CR_EINVAL, "the node needs a name (--name)");
    if (!cr_name_valid(o->node))
        return cr_err_set(err, CR_EINVAL, "invalid node name '%.80s': use a-z, 0-9, '_' and '-', start "
                          "with a letter or digit, at most 63 characters", o->node);
    if (o->advertise && *o->advertise) {
        const char *colon = strrchr(o->advertise, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == o->advertise || !end || *end || port < 1 || port > 65535)
            return cr_err_set(err, CR_EINVAL, "--advertise '%.100s': expected HOST:PORT with a port 1..65535",
                              o->advertise);
        if (o->no_inbound)
            return cr_err_set(err, CR_EINVAL, "--advertise %.100s and --no-inbound contradict each other: a node "
                              "peers can dial advertises where, one behind NAT says --no-inbound", o->advertise);
    }
    agent_t *a = calloc(1, sizeof *a);
    if (!a) return cr_err_set(err, CR_ENOMEM, "agent");
    pthread_mutex_init(&a->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &ca);
    pthread_condattr_destroy(&ca);
    const char *ctl = o->controller && *o->controller ? o->controller : getenv("CORRAL_CONTROLLER");
    snprintf(a->controller, sizeof a->controller, "%s", ctl && *ctl ? ctl : "127.0.0.1:7070");
    snprintf(a->node, sizeof a->node, "%s", o->node);
    snprintf(a->state_dir, sizeof a->state_dir, "%s", o->state_dir ? o->state_dir : AGENT_DEFAULT_STATE_DIR);
    a->backoff_max_ms = o->backoff_max_ms > 0 ? o->backoff_max_ms : 5000;
    a->on_ack = o->on_ack;
    a->user = o->user;
    a->interval_ms = 1000;
    a->cmd_tail = &a->cmd_head;
    int rc = load_id(a->state_dir, &a->id, err);
    char abs[PATH_MAX];
    /* Workers run in their experiment's directory: the paths given to them must be absolute. */
    if (!rc && realpath(a->state_dir, abs)) snprintf(a->state_dir, sizeof a->state_dir, "%s", abs);
    if (!rc) rc = build_inventory(a, o, err);
    if (!rc && o->workers) rc = workers_create(a, o, err);
    if (!rc) {
        if (o->channel) {
            a->ch = o->channel;
        } else {
            rpc_opts_t ro = o->rpc;
            /* Reconnect quickly: a controller restart should cost about a second. */
            if (!ro.backoff_initial_ms) ro.backoff_initial_ms = 100;
            if (!ro.backoff_max_ms) ro.backoff_max_ms = 1000;
            rc = rpc_channel_create(&a->ch, a->controller, &ro, err);
            a->own_channel = rc == 0;
        }
    }
    if (rc) {
        agent_destroy(a);
        return rc;
    }
    *out = a;
    return 0;
}

const Corral__V1__Inventory *agent_inventory(const agent_t *a) { return a->inv; }
uint64_t agent_id(const agent_t *a) { return a->id; }

void agent_get_stats(agent_t *a, agent_stats_t *out)
{
    pthread_mutex_lock(&a->mu);
    *out = a->stats;
    pthread_mutex_unlock(&a->mu);
}

/* ---- stream callbacks (channel thread) --------------------------------------- */

static void on_estop(agent_t *a, rpc_stream_t *st, const Corral__V1__EstopCommand *cmd)
{
    /* The HAL's latched e-stop sits in the worker that drives the robot; until
     * workers exist the agent records the command and acknowledges it. */
    CR_WARN("agent", "e-stop %s for robot %s", cmd->release ? "released" : "LATCHED", cmd->robot);
    Corral__V1__CommandResult res = CORRAL__V1__COMMAND_RESULT__INIT;
    res.command_id = cmd->command_id;
    res.ok = 1;
    res.message = (char *)(cmd->release ? "e-stop released" : "e-stop latched");
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_COMMAND_RESULT;
    m.command_result = &res;
    rpc_stream_send(st, &m.base, 0, NULL);
    pthread_mutex_lock(&a->mu);
    a->stats.estops++;
    pthread_mutex_unlock(&a->mu);
}

/* Copies a borrowed worker command for the loop thread. */
static void queue_cmd(agent_t *a, const Corral__V1__ControllerMessage *m)
{
    size_t len = corral__v1__controller_message__get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    cmd_t *c = calloc(1, sizeof *c);
    if (buf && c) {
        corral__v1__controller_message__pack(m, buf);
        c->msg = corral__v1__controller_message__unpack(NULL, len, buf);
    }
    free(buf);
    if (!c || !c->msg || !a->sup) {
        /* Out of memory or no workers here: the controller sends it again after the next event. */
        CR_WARN("agent", "worker command dropped (%s)", a->sup ? "out of memory" : "this agent runs no workers");
        if (c && c->msg) corral__v1__controller_message__free_unpacked(c->msg, NULL);
        free(c);
        return;
    }
    pthread_mutex_lock(&a->mu);
    *a->cmd_tail = c;
    a->cmd_tail = &c->next;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->mu);
}

static void on_message(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    agent_t *a = user;
    const Corral__V1__ControllerMessage *m = (const void *)msg;
    switch (m->body_case) {
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_ACCEPTED:
        pthread_mutex_lock(&a->mu);
        a->accepted = 1;
        if (m->accepted->heartbeat_interval_ms >= 10 && m->accepted->heartbeat_interval_ms <= 60000)
            a->interval_ms = (int)m->accepted->heartbeat_interval_ms;
        a->stats.connected = 1;
        a->stats.sessions++;
        pthread_cond_broadcast(&a->cond);
        pthread_mutex_unlock(&a->mu);
        break;
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_HEARTBEAT_ACK: {
        int64_t now = cr_now_ns(), rtt = -1;
        pthread_mutex_lock(&a->mu);
        uint64_t seq = m->heartbeat_ack->seq;
        if (seq && seq <= a->seq && a->seq - seq < RTT_SLOTS) rtt = now - a->sent_ns[seq % RTT_SLOTS];
        a->stats.acks++;
        pthread_mutex_unlock(&a->mu);
        if (rtt >= 0 && a->on_ack) a->on_ack(a->user, rtt);
        break;
    }
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_ESTOP:
        on_estop(a, st, m->estop);
        break;
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_START_WORKER:
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_STOP_WORKER:
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_READ_LOG:
        queue_cmd(a, m);
        break;
    default:
        CR_WARN("agent", "controller sent a message this agent does not know (case %d); ignored",
                (int)m->body_case);
        break;
    }
}

static void on_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    agent_t *a = user;
    pthread_mutex_lock(&a->mu);
    a->closed = 1;
    a->close_code = code;
    snprintf(a->close_details, sizeof a->close_details, "%s", details);
    a->stats.connected = 0;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->mu);
}

/* ---- the loop ------------------------------------------------------------------ */

/* One wait on the agent's condition, until woken or abs_ns (monotonic) passes; mu held.
 * Callers loop on their own condition. */
static void wait_until(agent_t *a, int64_t abs_ns)
{
    struct timespec ts = {.tv_sec = abs_ns / CR_NS_PER_S, .tv_nsec = abs_ns % CR_NS_PER_S};
    pthread_cond_timedwait(&a->cond, &a->mu, &ts);
}

static int send_msg(rpc_stream_t *st, Corral__V1__AgentMessage *m, int64_t timeout_ms, cr_err_t *err)
{
    return rpc_stream_send(st, &m->base, timeout_ms, err);
}

/* ---- workers (loop thread) ------------------------------------------------------ */

/* The workers' progress that changed (all of it with force; of experiment only
 * when not NULL) on the open session. */
static void send_progress(agent_t *a, const char *experiment, int force)
{
    if (!a->st || !a->prog) return;
    Corral__V1__ProgressReport *r = NULL;
    cr_err_t err = {0};
    if (agent_progress_collect(a->prog, a->sup, experiment, force, &r, &err) != 0) {
        CR_WARN("agent", "progress not read: %s", err.msg);
        return;
    }
    if (!r) return;
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_PROGRESS;
    m.progress = r;
    if (send_msg(a->st, &m, STATUS_SEND_MS, &err)) CR_DEBUG("agent", "progress not sent: %s", err.msg);
    agent_progress_report_free(r);
}

/* A state change: reported on the open session; without one, the WorkerList of
 * the next session carries it. */
static void on_worker_event(void *ud, const agent_worker_info_t *w, agent_worker_state_t old)
{
    agent_t *a = ud;
    CR_INFO("agent", "worker %s/%s-%d: %s -> %s (pid %d)%s%s", w->experiment, w->role, w->index,
            agent_worker_state_name(old), agent_worker_state_name(w->state), (int)w->pid,
            *w->message ? ": " : "", w->message);
    if (!a->st) return;
    /* Its last words first: a learner that ended because the goal was reached
     * says "done" in its status file, and the controller must know before it
     * hears that the process exited. */
    if (w->state == AGENT_WORKER_STOPPED || w->state == AGENT_WORKER_EXITED || w->state == AGENT_WORKER_FAILED)
        send_progress(a, w->experiment, 1);
    Corral__V1__WorkerStatus ws;
    agent_wcmd_status(w, &ws);
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_WORKER_STATUS;
    m.worker_status = &ws;
    cr_err_t err = {0};
    if (send_msg(a->st, &m, STATUS_SEND_MS, &err))
        CR_WARN("agent", "worker %s/%s-%d status not sent: %s", w->experiment, w->role, w->index, err.msg);
}

static void send_result(agent_t *a, uint64_t id, int rc, const cr_err_t *err)
{
    if (!a->st) return;
    Corral__V1__CommandResult res = CORRAL__V1__COMMAND_RESULT__INIT;
    res.command_id = id;
    res.ok = rc == 0;
    res.message = (char *)(rc ? err->msg : "done");
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_COMMAND_RESULT;
    m.command_result = &res;
    send_msg(a->st, &m, STATUS_SEND_MS, NULL);
}

static void read_log(agent_t *a, const Corral__V1__ReadLog *cmd)
{
    uint8_t *buf = malloc(AGENT_LOG_CHUNK_MAX);
    char errbuf[256];
    Corral__V1__LogChunk chunk;
    if (!buf) {
        corral__v1__log_chunk__init(&chunk);
        chunk.command_id = cmd->command_id;
        chunk.error = "agent out of memory";
    } else {
        agent_wcmd_read_log(a->state_dir, cmd, buf, AGENT_LOG_CHUNK_MAX, &chunk, errbuf);
    }
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_LOG_CHUNK;
    m.log_chunk = &chunk;
    if (a->st) send_msg(a->st, &m, STATUS_SEND_MS, NULL);
    free(buf);
}

static void run_cmd(agent_t *a, const Corral__V1__ControllerMessage *m)
{
    cr_err_t err = {0};
    int rc;
    switch (m->body_case) {
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_START_WORKER: {
        const Corral__V1__WorkerSpec *w = m->start_worker->spec;
        rc = agent_wcmd_start(a->sup, a->state_dir, a->worker_exe, &a->wnode, w, &err);
        if (rc == CR_EEXIST) rc = 0;  /* already running (adopted, or a repeated START) */
        if (rc) CR_WARN("agent", "cannot start worker: %s", err.msg);
        send_result(a, m->start_worker->command_id, rc, &err);
        break;
    }
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_STOP_WORKER:
        rc = agent_wcmd_stop(a->sup, m->stop_worker, &err);
        if (rc == CR_ENOENT) rc = 0;  /* never ran here, or already forgotten */
        if (rc) CR_WARN("agent", "cannot stop worker: %s", err.msg);
        send_result(a, m->stop_worker->command_id, rc, &err);
        break;
    case CORRAL__V1__CONTROLLER_MESSAGE__BODY_READ_LOG:
        read_log(a, m->read_log);
        break;
    default:
        break;
    }
}

/* Carries out the queued commands and polls the supervisor; mu not held. */
static void serve_workers(agent_t *a)
{
    for (;;) {
        pthread_mutex_lock(&a->mu);
        cmd_t *c = a->cmd_head;
        if (c) {
            a->cmd_head = c->next;
            if (!a->cmd_head) a->cmd_tail = &a->cmd_head;
        }
        pthread_mutex_unlock(&a->mu);
        if (!c) break;
        run_cmd(a, c->msg);
        corral__v1__controller_message__free_unpacked(c->msg, NULL);
        free(c);
    }
    agent_sup_poll(a->sup);
}

/* The WorkerList that follows every Inventory. */
static void send_worker_list(agent_t *a)
{
    Corral__V1__WorkerList *l = NULL;
    cr_err_t err = {0};
    if (agent_wcmd_list(a->sup, &l, &err)) {
        CR_WARN("agent", "worker list not sent: %s", err.msg);
        return;
    }
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_WORKER_LIST;
    m.worker_list = l;
    if (send_msg(a->st, &m, STATUS_SEND_MS, &err)) CR_DEBUG("agent", "worker list not sent: %s", err.msg);
    agent_wcmd_list_free(l);
}

/* wait_until, serving the workers first and waking for the supervisor; mu held.
 * Returns at once when commands are queued. Callers loop on their own condition. */
static void wait_serving(agent_t *a, int64_t abs_ns)
{
    if (a->sup) {
        pthread_mutex_unlock(&a->mu);
        serve_workers(a);
        pthread_mutex_lock(&a->mu);
        if (a->cmd_head) return;
        int64_t w = agent_sup_next_wakeup_ns(a->sup), cap = cr_now_ns() + SUP_POLL_NS;
        if (w <= 0 || w > cap) w = cap;
        if (w < abs_ns) abs_ns = w;
    }
    wait_until(a, abs_ns);
}

/* One session, from open to end. Returns 1 when it was accepted. */
static int run_session(agent_t *a)
{
    rpc_stream_cbs_t cbs = {.on_message = on_message, .on_close = on_close, .user = a};
    rpc_stream_t *st = NULL;
    cr_err_t err = {0};
    pthread_mutex_lock(&a->mu);
    a->accepted = a->closed = 0;
    a->close_details[0] = '\0';
    pthread_mutex_unlock(&a->mu);
    if (rpc_stream_open(a->ch, &st, SESSION_METHOD, &corral__v1__controller_message__descriptor, &cbs, 0,
                        &err)) {
        pthread_mutex_lock(&a->mu);
        snprintf(a->stats.last_error, sizeof a->stats.last_error, "%s", err.msg);
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    Corral__V1__AgentMessage m = CORRAL__V1__AGENT_MESSAGE__INIT;
    m.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_INVENTORY;
    m.inventory = a->inv;
    if (send_msg(st, &m, 1000, &err))
        CR_DEBUG("agent", "inventory not sent: %s", err.msg);
    if (a->sup) {
        a->st = st;
        send_progress(a, NULL, 1); /* before the list: "done" before "exited" */
        send_worker_list(a);
    }

    int was_accepted = 0;
    int64_t deadline = cr_now_ns() + (int64_t)ACCEPT_TIMEOUT_MS * CR_NS_PER_MS;
    pthread_mutex_lock(&a->mu);
    while (!a->accepted && !a->closed && !a->stop && cr_now_ns() < deadline) wait_serving(a, deadline);
    if (a->accepted && !a->closed) {
        was_accepted = 1;
        CR_INFO("agent", "node %s connected to %s (heartbeat %d ms)", a->node, a->controller, a->interval_ms);
        int64_t next = cr_now_ns();
        while (!a->closed && !a->stop) {
            if (cr_now_ns() >= next) {
                uint64_t seq = ++a->seq;
                a->sent_ns[seq % RTT_SLOTS] = cr_now_ns();
                a->stats.heartbeats++;
                pthread_mutex_unlock(&a->mu);
                Corral__V1__Heartbeat hb = CORRAL__V1__HEARTBEAT__INIT;
                hb.seq = seq;
                hb.sent_unix_ms = cr_wall_ns() / CR_NS_PER_MS;
                Corral__V1__AgentMessage h = CORRAL__V1__AGENT_MESSAGE__INIT;
                h.body_case = CORRAL__V1__AGENT_MESSAGE__BODY_HEARTBEAT;
                h.heartbeat = &hb;
                send_msg(st, &h, 0, NULL);  /* a full queue skips one beat; 3 in a row are needed to be lost */
                send_progress(a, NULL, 0);
                pthread_mutex_lock(&a->mu);
                next += (int64_t)a->interval_ms * CR_NS_PER_MS;
                if (next < cr_now_ns()) next = cr_now_ns();
            }
            wait_serving(a, next);
        }
    }
    int stopping = a->stop;
    int closed = a->closed;
    pthread_mutex_unlock(&a->mu);

    if (stopping && !closed) {
        /* Say goodbye: half-close, and give the controller a moment to record it. */
        rpc_stream_close_send(st, NULL);
        rpc_stream_wait(st, 2000, NULL, NULL);
    }
    a->st = NULL;
    rpc_stream_destroy(st);
    pthread_mutex_lock(&a->mu);
    a->stats.connected = 0;
    if (!stopping) {
        const char *why = a->closed ? a->close_details : "no answer to the inventory";
        rpc_code_t code = a->closed ? a->close_code : RPC_DEADLINE_EXCEEDED;
        snprintf(a->stats.last_error, sizeof a->stats.last_error, "%s: %s", rpc_code_name(code), why);
        /* A refused token is the operator's to fix, like a refused inventory. */
        int refused = code == RPC_INVALID_ARGUMENT || code == RPC_ALREADY_EXISTS ||
                      code == RPC_FAILED_PRECONDITION || code == RPC_NOT_FOUND ||
                      code == RPC_UNAUTHENTICATED || code == RPC_PERMISSION_DENIED;
        if (refused) {
            a->stats.refusals++;
            CR_ERROR("agent", "controller %s refused node %s: %s", a->controller, a->node, a->stats.last_error);
        } else if (was_accepted) {
            CR_WARN("agent", "session with %s ended: %s; reconnecting", a->controller, a->stats.last_error);
        } else {
            CR_DEBUG("agent", "cannot reach %s: %s", a->controller, a->stats.last_error);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return was_accepted;
}

static void *agent_main(void *arg)
{
    agent_t *a = arg;
    rpc_backoff_t bo;
    rpc_backoff_init(&bo, 200, a->backoff_max_ms);
    int failures = 0;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        pthread_mutex_unlock(&a->mu);
        if (run_session(a)) {
            rpc_backoff_reset(&bo);
            failures = 0;
        } else if (++failures == 5) {
            CR_WARN("agent", "still cannot open a session with %s: %s", a->controller, a->stats.last_error);
        }
        int delay = rpc_backoff_next_ms(&bo);
        pthread_mutex_lock(&a->mu);
        int64_t until = cr_now_ns() + (int64_t)delay * CR_NS_PER_MS;
        while (!a->stop && cr_now_ns() < until) wait_serving(a, until);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int agent_start(agent_t *a, cr_err_t *err)
{
    if (a->started) return 0;
    if (pthread_create(&a->thread, NULL, agent_main, a) != 0)
        return cr_err_set(err, CR_EINTERNAL, "cannot start the agent thread");
    a->started = 1;
    CR_INFO("agent", "node %s: dialing %s with %zu robots, %zu GPUs", a->node, a->controller,
            a->inv->n_robots, a->inv->n_gpus);
    return 0;
}

void agent_stop(agent_t *a)
{
    if (!a || !a->started) return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->started = 0;
}

void agent_destroy(agent_t *a)
{
    if (!a) return;
    agent_stop(a);
    if (a->own_channel) rpc_channel_destroy(a->ch);
    agent_sup_destroy(a->sup);  /* workers keep running, for the next agent to adopt */
    agent_progress_destroy(a->prog);
    while (a->cmd_head) {
        cmd_t *c = a->cmd_head;
        a->cmd_head = c->next;
        corral__v1__controller_message__free_unpacked(c->msg, NULL);
        free(c);
    }
    if (a->inv) protobuf_c_message_free_unpacked(&a->inv->base, NULL);
    free(a->cert_dir);
    free(a->server_name);
    if (a->token) memset(a->token, 0, strlen(a->token)); /* no secret left in freed memory */
    free(a->token);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
