/* exphost.c - the controller's side of the Experiments service (expservice.h's
 * host) and of the worker traffic on the agents' sessions: it runs expctl.h's
 * logic on state.db with an inventory read from the registry, and turns the
 * resulting worker commands into StartWorker / StopWorker messages on the
 * AgentLink session of each command's node.
 *
 * Locking: exp_mu serialises every experiment change, so the inventory read
 * before a change and the change itself see the same experiments; the change
 * then runs under the registry's lock (ctl_registry_with_db). Order: exp_mu
 * before the registry lock; nothing here is called with a liveness lock held.
 * Commands are sent after both are released. A command for a node without a
 * session is dropped with a log line: when the node comes back its session
 * triggers ctl_expctl_nodes_changed, which sends every START again (an agent
 * answers a START of a running worker with EEXIST, so nothing is duplicated).
 *
 * Logs: `exp logs` reaches the controller only; each piece of a log is a ReadLog
 * sent to the agent of the node that holds the file, answered by a LogChunk on
 * that agent's session. A reader waits (bounded) for the chunk with its command
 * id in the table of pending reads; a chunk nobody waits for any more is dropped. */
#include "controller/server_int.h"
#include "common/log.h"
#include "common/time.h"
#include "controller/expctl_proto.h"
#include "policies/policies.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t wall_ms(void) { return cr_wall_ns() / CR_NS_PER_MS; }

/* ---- the inventory as the scheduler sees it ------------------------------------ */

typedef struct inv_buf {
    Corral__V1__ListNodesResponse *nodes;
    Corral__V1__ListGpusResponse *gpus;
    Corral__V1__ListRobotsResponse *robots;
    ctl_inv_node_t *n;
    ctl_inv_gpu_t *g;
    ctl_inv_robot_t *r;
    ctl_inventory_t inv;
} inv_buf_t;

static void inv_free(inv_buf_t *b)
{
    if (b->nodes) protobuf_c_message_free_unpacked(&b->nodes->base, NULL);
    if (b->gpus) protobuf_c_message_free_unpacked(&b->gpus->base, NULL);
    if (b->robots) protobuf_c_message_free_unpacked(&b->robots->base, NULL);
    free(b->n);
    free(b->g);
    free(b->r);
    memset(b, 0, sizeof *b);
}

static const char *owner(const char *experiment) { return experiment && *experiment ? experiment : NULL; }

/* The registry's messages carry the scheduler's state values (scheduler.h). */
static int inv_read(ctl_registry_t *reg, inv_buf_t *b, cr_err_t *err)
{
    memset(b, 0, sizeof *b);
    int rc = ctl_reg_node_list(reg, &b->nodes, err);
    if (!rc) rc = ctl_reg_gpu_list(reg, NULL, &b->gpus, err);
    if (!rc) rc = ctl_reg_robot_list(reg, NULL, &b->robots, err);
    if (rc) return rc;
    b->n = calloc(b->nodes->n_nodes + 1, sizeof *b->n);
    b->g = calloc(b->gpus->n_gpus + 1, sizeof *b->g);
    b->r = calloc(b->robots->n_robots + 1, sizeof *b->r);
    if (!b->n || !b->g || !b->r) return cr_err_set(err, CR_ENOMEM, "inventory");
    for (size_t i = 0; i < b->nodes->n_nodes; i++) {
        const Corral__V1__Node *n = b->nodes->nodes[i];
        b->n[i] = (ctl_inv_node_t){.name = n->name, .state = (ctl_node_state_t)n->state,
                                   .accepts_inbound = n->accepts_inbound};
    }
    for (size_t i = 0; i < b->gpus->n_gpus; i++) {
        const Corral__V1__Gpu *g = b->gpus->gpus[i];
        b->g[i] = (ctl_inv_gpu_t){.node = g->node, .index = (int)g->index, .mem_bytes = g->memory_bytes,
                                  .state = (ctl_res_state_t)g->state, .owner = owner(g->experiment)};
    }
    for (size_t i = 0; i < b->robots->n_robots; i++) {
        const Corral__V1__Robot *r = b->robots->robots[i];
        b->r[i] = (ctl_inv_robot_t){.name = r->name, .node = r->node, .driver = r->driver, .model = r->model,
                                    .labels = (const char *const *)r->labels, .n_labels = r->n_labels,
                                    .state = (ctl_res_state_t)r->state, .owner = owner(r->experiment)};
    }
    b->inv = (ctl_inventory_t){b->n, b->nodes->n_nodes, b->g, b->gpus->n_gpus, b->r, b->robots->n_robots};
    return 0;
}

/* ---- the host --------------------------------------------------------------------- */

typedef struct state_call {
    ctl_exp_state_fn fn;
    void *arg;
    const ctl_inventory_t *inv;
    ctl_cmds_t *cmds;
} state_call_t;

static int run_state(void *arg, sqlite3 *db, cr_err_t *err)
{
    state_call_t *c = arg;
    return c->fn(c->arg, db, c->inv, c->cmds, err);
}

/* need_inv 0: fn gets an empty inventory (worker reports place nothing), which
 * spares reading every node, GPU and robot on each report. */
static int run_locked(ctl_server_t *srv, int need_inv, ctl_exp_state_fn fn, void *arg, ctl_cmds_t *cmds,
                      cr_err_t *err)
{
    inv_buf_t b;
    memset(&b, 0, sizeof b);
    pthread_mutex_lock(&srv->exp_mu);
    int rc = need_inv ? inv_read(srv->reg, &b, err) : 0;
    if (!rc) {
        state_call_t c = {fn, arg, &b.inv, cmds};
        rc = ctl_registry_with_db(srv->reg, run_state, &c, err);
    }
    pthread_mutex_unlock(&srv->exp_mu);
    inv_free(&b);
    return rc;
}

static int with_state(void *ud, ctl_exp_state_fn fn, void *arg, ctl_cmds_t *cmds, cr_err_t *err)
{
    return run_locked(ud, 1, fn, arg, cmds, err);
}

typedef struct spec_read {
    const char *name;
    ctl_exp_t *out;
} spec_read_t;

static int read_spec(void *arg, sqlite3 *db, cr_err_t *err)
{
    spec_read_t *r = arg;
    return ctl_exp_get(db, r->name, r->out, err);
}

/* host:port of a peer node, "" when it takes no inbound connections (tunnel). */
static void node_addr(ctl_server_t *srv, const char *node, char *out, size_t cap)
{
    out[0] = '\0';
    if (!*node) return;
    Corral__V1__Node *n = NULL;
    if (ctl_reg_node_get(srv->reg, node, &n, NULL) == 0) {
        if (n->accepts_inbound) snprintf(out, cap, "%s", n->address);
        protobuf_c_message_free_unpacked(&n->base, NULL);
    }
}

/* A worker's extra arguments: the spec's --set overrides (the workers read the
 * stored spec text, which does not hold them) and, for an env worker, its robot
 * as registered (driver, model, port and settings). The strings live in *buf and
 * *robot until the message is sent. */
#define WORKER_ARGS_MAX 256 /* what an agent takes (workercmd.c) */
typedef struct worker_args {
    char *v[WORKER_ARGS_MAX];
    size_t n;
    char *sets;                 /* a copy of the overrides, split in place */
    char pairs[WORKER_ARGS_MAX / 2][320];
    size_t npairs;
    Corral__V1__Robot *robot;
} worker_args_t;

static void args_add(worker_args_t *a, const char *flag, char *value)
{
    if (a->n + 2 > WORKER_ARGS_MAX) return;
    a->v[a->n++] = (char *)flag;
    a->v[a->n++] = value;
}

static void worker_args(ctl_server_t *srv, const ctl_worker_cmd_t *c, const ctl_exp_t *e, worker_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->sets = strdup(e->sets ? e->sets : "");
    for (char *p = a->sets; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        if (*p) args_add(a, "--set", p);
        p = nl ? nl + 1 : NULL;
    }
    if (!*c->robot || ctl_reg_robot_get(srv->reg, c->robot, &a->robot, NULL) != 0) return;
    const Corral__V1__Robot *r = a->robot;
    if (*r->driver) args_add(a, "--robot-driver", r->driver);
    if (*r->model) args_add(a, "--robot-model", r->model);
    for (size_t i = 0; i <= r->n_settings && a->npairs < WORKER_ARGS_MAX / 2; i++) {
        char *pair = a->pairs[a->npairs++];
        if (i == r->n_settings) snprintf(pair, 320, "port=%s", r->port);
        else snprintf(pair, 320, "%s=%s", r->settings[i]->key, r->settings[i]->value);
        if (i < r->n_settings || *r->port) args_add(a, "--robot-set", pair);
    }
    if (a->n + 2 > WORKER_ARGS_MAX)
        CR_WARN("experiments", "%s/%s-%d: more overrides and robot settings than a worker takes; some left out",
                c->experiment, c->role, c->index);
}

static void worker_args_free(worker_args_t *a)
{
    free(a->sets);
    if (a->robot) protobuf_c_message_free_unpacked(&a->robot->base, NULL);
}

static void send_cmd(ctl_server_t *srv, const ctl_worker_cmd_t *c, ctl_exp_t *e)
{
    Corral__V1__ControllerMessage m = CORRAL__V1__CONTROLLER_MESSAGE__INIT;
    Corral__V1__StartWorker start;
    Corral__V1__WorkerSpec spec;
    Corral__V1__StopWorker stop;
    char buffer[256], learner[256];  /* borrowed by the message until it is sent */
    worker_args_t *args = NULL;
    uint64_t id = atomic_fetch_add(&srv->next_cmd, 1) + 1;
    cr_err_t err = {0};
    if (c->kind == CTL_CMD_START) {
        if (strcmp(e->name, c->experiment) != 0) {
            ctl_exp_clear(e);
            spec_read_t r = {c->experiment, e};
            if (ctl_registry_with_db(srv->reg, read_spec, &r, &err)) {
                CR_WARN("experiments", "START %s/%s-%d: %s", c->experiment, c->role, c->index, err.msg);
                e->name[0] = '\0';
                return;
            }
        }
        node_addr(srv, c->buffer_node, buffer, sizeof buffer);
        node_addr(srv, c->learner_node, learner, sizeof learner);
        ctl_cmd_start_proto(c, id, e->spec, buffer, learner, &start, &spec);
        args = malloc(sizeof *args);
        if (args) {
            worker_args(srv, c, e, args);
            spec.args = args->v;
            spec.n_args = args->n;
        }
        m.body_case = CORRAL__V1__CONTROLLER_MESSAGE__BODY_START_WORKER;
        m.start_worker = &start;
    } else {
        ctl_cmd_stop_proto(c, id, &stop);
        m.body_case = CORRAL__V1__CONTROLLER_MESSAGE__BODY_STOP_WORKER;
        m.stop_worker = &stop;
    }
    if (ctl_liveness_send(srv->lv, c->node, &m.base, &err))
        CR_INFO("experiments", "%s %s/%s-%d not sent to node %s (%s); sent again when it reconnects",
                c->kind == CTL_CMD_START ? "START" : "STOP", c->experiment, *c->role ? c->role : "*", c->index,
                c->node, err.msg);
    if (args) worker_args_free(args);
    free(args);
}

static void send_cmds(void *ud, const ctl_cmds_t *cmds)
{
    ctl_server_t *srv = ud;
    ctl_exp_t e = {0};  /* the spec of the last START's experiment, read once per run of them */
    for (size_t i = 0; i < cmds->n; i++) send_cmd(srv, &cmds->v[i], &e);
    ctl_exp_clear(&e);
}

/* ---- log reads ---------------------------------------------------------------------- */

typedef struct log_wait {
    uint64_t id;
    Corral__V1__LogChunk *chunk;  /* the answer (our copy), NULL until it came */
    struct log_wait *next;
} log_wait_t;

struct ctl_log_waits {
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC */
    log_wait_t *head;
    int stopping;
};

static int logs_create(ctl_server_t *srv)
{
    struct ctl_log_waits *w = calloc(1, sizeof *w);
    if (!w) return CR_ENOMEM;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    srv->logs = w;
    return 0;
}

static void logs_destroy(ctl_server_t *srv)
{
    struct ctl_log_waits *w = srv->logs;
    if (!w) return;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    srv->logs = NULL;
}

void ctl_exphost_log_chunk(ctl_server_t *srv, const Corral__V1__LogChunk *chunk)
{
    struct ctl_log_waits *w = srv->logs;
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    log_wait_t *x = w->head;
    while (x && x->id != chunk->command_id) x = x->next;
    if (x && !x->chunk) {
        size_t len = corral__v1__log_chunk__get_packed_size(chunk);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            corral__v1__log_chunk__pack(chunk, buf);
            x->chunk = corral__v1__log_chunk__unpack(NULL, len, buf);
            free(buf);
        }
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

static int read_log(void *ud, const char *node, const Corral__V1__ReadLog *req, int timeout_ms,
                    Corral__V1__LogChunk **out, cr_err_t *err)
{
    ctl_server_t *srv = ud;
    struct ctl_log_waits *w = srv->logs;
    *out = NULL;
    log_wait_t me = {.id = atomic_fetch_add(&srv->next_cmd, 1) + 1};
    Corral__V1__ReadLog r = *req;
    r.command_id = me.id;
    pthread_mutex_lock(&w->mu);
    if (w->stopping) {
        pthread_mutex_unlock(&w->mu);
        return cr_err_set(err, CR_ECANCELLED, "the controller is stopping");
    }
    me.next = w->head;
    w->head = &me;
    pthread_mutex_unlock(&w->mu);
    Corral__V1__ControllerMessage m = CORRAL__V1__CONTROLLER_MESSAGE__INIT;
    m.body_case = CORRAL__V1__CONTROLLER_MESSAGE__BODY_READ_LOG;
    m.read_log = &r;
    int rc = ctl_liveness_send(srv->lv, node, &m.base, err);
    if (rc == CR_ENOENT) rc = cr_err_set(err, CR_EUNAVAIL, "node %s is not connected; its logs are there", node);
    int64_t until = cr_now_ns() + (int64_t)timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&w->mu);
    while (rc == 0 && !me.chunk && !w->stopping && cr_now_ns() < until) {
        struct timespec ts = {.tv_sec = until / CR_NS_PER_S, .tv_nsec = until % CR_NS_PER_S};
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    for (log_wait_t **pp = &w->head; *pp; pp = &(*pp)->next)
        if (*pp == &me) {
            *pp = me.next;
            break;
        }
    pthread_mutex_unlock(&w->mu);
    if (rc == 0 && !me.chunk)
        rc = cr_err_set(err, CR_ETIMEDOUT, "node %s did not answer for the log of %s-%d within %d ms", node,
                        req->role, req->index, timeout_ms);
    if (rc == 0) *out = me.chunk;
    else if (me.chunk) corral__v1__log_chunk__free_unpacked(me.chunk, NULL);
    return rc;
}

void ctl_exphost_stop(ctl_server_t *srv)
{
    struct ctl_log_waits *w = srv->logs;
    if (w) {
        pthread_mutex_lock(&w->mu);
        w->stopping = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    if (srv->exp) ctl_exp_service_drain(srv->exp);
}

/* The controller refuses a plugin it cannot load at submit, not when a worker
 * fails to start on some node later. */
static int plugin_check(void *ud, const char *what, const char *path, cr_err_t *err)
{
    (void)ud;
    pol_plugin_t p;
    int rc = pol_plugin_open(path, &p, err);
    if (rc) return cr_err_wrap(err, "%s", what);
    pol_plugin_close(&p);
    return 0;
}

int ctl_exphost_create(ctl_server_t *srv, rpc_method_t *methods, size_t *n, cr_err_t *err)
{
    pthread_mutex_init(&srv->exp_mu, NULL);
    srv->exp_mu_init = 1;
    if (logs_create(srv) != 0) return cr_err_set(err, CR_ENOMEM, "controller");
    ctl_exp_host_t host = {.with_state = with_state, .send = send_cmds, .plugin_check = plugin_check,
                           .read_log = read_log, .ud = srv};
    int rc = ctl_exp_service_create(&host, &srv->exp, err);
    if (rc) return rc;
    *n += ctl_exp_service_methods(srv->exp, methods + *n);
    return 0;
}

void ctl_exphost_destroy(ctl_server_t *srv)
{
    ctl_exp_service_destroy(srv->exp);
    srv->exp = NULL;
    if (srv->exp_mu_init) pthread_mutex_destroy(&srv->exp_mu);
    srv->exp_mu_init = 0;
    logs_destroy(srv);
}

/* ---- events from the agents -------------------------------------------------------- */

typedef struct status_call {
    const char *node;
    const Corral__V1__WorkerStatus *ws;
} status_call_t;

static int status_fn(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)inv;
    status_call_t *c = arg;
    const Corral__V1__WorkerStatus *w = c->ws;
    return ctl_expctl_worker_status(db, c->node, w->experiment, w->generation, w->role, w->index, w->state,
                                    w->pid, w->restarts, wall_ms(), cmds, err);
}

void ctl_exphost_worker_status(ctl_server_t *srv, const char *node, const Corral__V1__WorkerStatus *ws)
{
    if (!srv->exp) return;
    ctl_cmds_t cmds = {0};
    cr_err_t err = {0};
    status_call_t c = {node, ws};
    if (run_locked(srv, 0, status_fn, &c, &cmds, &err))
        CR_WARN("experiments", "node %s: worker %s/%s-%d %s: %s", node, ws->experiment, ws->role, ws->index,
                ws->state, err.msg);
    else
        send_cmds(srv, &cmds);
    ctl_cmds_free(&cmds);
}

static int nodes_fn(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)arg;
    return ctl_expctl_nodes_changed(db, inv, wall_ms(), cmds, err);
}

/* Placements exist exactly while an experiment holds resources (experiment.c's
 * invariant I1): without any, a node change repairs nothing, and a thousand
 * agents connecting need not each read the whole inventory. */
static int any_placement(void *arg, sqlite3 *db, cr_err_t *err)
{
    (void)err;
    sqlite3_stmt *st = NULL;
    int *any = arg;
    *any = 1;  /* when in doubt, repair */
    if (sqlite3_prepare_v2(db, "SELECT EXISTS(SELECT 1 FROM placements)", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        *any = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

void ctl_exphost_nodes_changed(ctl_server_t *srv)
{
    if (!srv->exp) return;
    int any = 1;
    ctl_registry_with_db(srv->reg, any_placement, &any, NULL);
    if (!any) return;
    ctl_cmds_t cmds = {0};
    cr_err_t err = {0};
    if (with_state(srv, nodes_fn, NULL, &cmds, &err))
        CR_WARN("experiments", "repairing experiments after a node change: %s", err.msg);
    else
        send_cmds(srv, &cmds);
    ctl_cmds_free(&cmds);
}

/* ---- progress from the agents ------------------------------------------------------- */

typedef struct progress_call {
    const char *node;
    ctl_progress_report_t *r;
    size_t n;
} progress_call_t;

static int progress_fn(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)inv;
    progress_call_t *c = arg;
    return ctl_expctl_progress(db, c->node, c->r, c->n, wall_ms(), cmds, err);
}

void ctl_exphost_progress(ctl_server_t *srv, const char *node, const Corral__V1__ProgressReport *rep)
{
    if (!srv->exp || !rep->n_workers) return;
    progress_call_t c = {node, calloc(rep->n_workers, sizeof *c.r), rep->n_workers};
    if (!c.r) return;
    for (size_t i = 0; i < rep->n_workers; i++) ctl_progress_from_proto(rep->workers[i], &c.r[i]);
    ctl_cmds_t cmds = {0};
    cr_err_t err = {0};
    if (run_locked(srv, 0, progress_fn, &c, &cmds, &err))
        CR_WARN("experiments", "progress from node %s: %s", node, err.msg);
    send_cmds(srv, &cmds); /* what completed before an error stands */
    ctl_cmds_free(&cmds);
    free(c.r);
}
