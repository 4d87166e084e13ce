/* expservice.c - the Experiments gRPC service; see expservice.h.
 * Messages built here are allocated piece by piece with malloc (every string
 * duplicated), so protobuf_c_message_free_unpacked frees them. */
#include "controller/expservice.h"
#include "common/expspec/expspec.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct ctl_exp_service {
    ctl_exp_host_t host;
    rpc_method_t methods[CTL_EXP_METHODS];
    atomic_int watchers;       /* Watch and Logs threads */
};

/* ---- messages ------------------------------------------------------------------- */

static char *dup(const char *s) { return strdup(s ? s : ""); }

static void *zalloc(size_t n, int *oom)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) *oom = 1;
    return p;
}

static int build_experiment(sqlite3 *db, const ctl_exp_t *e, Corral__V1__Experiment **out, cr_err_t *err)
{
    int oom = 0;
    Corral__V1__Experiment *m = zalloc(sizeof *m, &oom);
    if (!m) return cr_err_set(err, CR_ENOMEM, "experiment message");
    corral__v1__experiment__init(m);
    m->name = dup(e->name);
    m->state = (Corral__V1__ExperimentState)(e->state + 1);
    m->message = dup(e->message);
    m->generation = e->generation;
    m->created_unix_ms = e->created_ms;
    m->updated_unix_ms = e->updated_ms;
    m->checkpoint = e->ckpt_n;
    m->checkpoint_updates = e->ckpt_updates;
    m->spec_yaml = dup(e->spec);
    m->dir = dup(e->dir);
    m->learner_node = dup(e->learner_node);
    Corral__V1__Progress *p = m->progress = zalloc(sizeof *p, &oom);
    if (p) {
        corral__v1__progress__init(p);
        p->env_steps = e->progress.env_steps;
        p->episodes = e->progress.episodes;
        p->updates = e->progress.updates;
        p->policy_version = e->progress.policy_version;
        p->success_rate = e->progress.success_rate;
        p->mean_return = e->progress.mean_return;
        p->staleness = e->progress.staleness;
        p->train_success_rate = e->progress.train_success_rate;
        p->env_steps_per_s = e->progress.env_steps_per_s;
        p->updates_per_s = e->progress.updates_per_s;
        p->running_ms = e->progress.running_ms;
    }
    /* The goal, from the spec with its overrides (a stored spec that no longer
     * loads leaves it empty rather than failing the call). */
    Corral__V1__Goal *g = m->goal = zalloc(sizeof *g, &oom);
    if (g) {
        corral__v1__goal__init(g);
        exp_spec_t spec;
        cr_err_t ignored = {0};
        const char *sets[128];
        size_t n = 0;
        char *buf = dup(e->sets);
        for (char *s = buf; s && *s && n < 128;) {
            char *nl = strchr(s, '\n');
            if (nl) *nl = '\0';
            if (*s) sets[n++] = s;
            s = nl ? nl + 1 : NULL;
        }
        if (e->spec && exp_spec_load_string(&spec, e->name, e->spec, strlen(e->spec), sets, n, &ignored) == 0) {
            g->env_steps = spec.stop.env_steps;
            g->updates = spec.stop.updates;
            g->success_rate = spec.stop.success_rate;
            g->wall_time_ms = spec.stop.wall_time / CR_NS_PER_MS;
            exp_spec_free(&spec);
        }
        free(buf);
    }
    ctl_exp_worker_t *ws = NULL;
    size_t nw = 0;
    int rc = ctl_exp_workers(db, e->name, &ws, &nw, err);
    if (rc == 0 && nw) {
        m->placements = zalloc(nw * sizeof *m->placements, &oom);
        for (size_t i = 0; m->placements && i < nw; i++) {
            Corral__V1__Placement *pl = zalloc(sizeof *pl, &oom);
            if (!pl) break;
            corral__v1__placement__init(pl);
            m->placements[m->n_placements++] = pl;
            pl->role = dup(ctl_role_name(ws[i].slot.role));
            pl->index = ws[i].slot.index;
            pl->node = dup(ws[i].slot.node);
            pl->robot = dup(ws[i].slot.robot);
            pl->waiting = ws[i].slot.waiting != 0;
            pl->worker_state = dup(ws[i].state);
            pl->pid = ws[i].pid;
            pl->restarts = ws[i].restarts;
            pl->env_steps = ws[i].progress.env_steps;
            pl->steps_per_s = ws[i].progress.steps_per_s;
            pl->updates = ws[i].progress.updates;
            pl->policy_version = ws[i].progress.policy_version;
            pl->progress_state = dup(ws[i].progress.state);
            if (ws[i].slot.n_gpus) {
                pl->gpus = zalloc((size_t)ws[i].slot.n_gpus * sizeof *pl->gpus, &oom);
                for (int k = 0; pl->gpus && k < ws[i].slot.n_gpus; k++) pl->gpus[pl->n_gpus++] = ws[i].slot.gpus[k];
            }
            if (ws[i].slot.role == CTL_ROLE_LEARNER && !*e->learner_node) {
                free(m->learner_node);
                m->learner_node = dup(ws[i].slot.node);
            }
        }
    }
    free(ws);
    if (rc == 0 && oom) rc = cr_err_set(err, CR_ENOMEM, "experiment message");
    if (rc != 0) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        return rc;
    }
    *out = m;
    return 0;
}

int ctl_exp_to_proto(sqlite3 *db, const char *name, Corral__V1__Experiment **out, cr_err_t *err)
{
    *out = NULL;
    ctl_exp_t e;
    int rc = ctl_exp_get(db, name, &e, err);
    if (rc != 0) return rc;
    rc = build_experiment(db, &e, out, err);
    ctl_exp_clear(&e);
    return rc;
}

/* ---- unary methods ---------------------------------------------------------------- */

typedef struct op {
    ctl_exp_service_t *svc;
    const ProtobufCMessage *req;
    ProtobufCMessage *resp;
} op_t;

static char **sets_of(char **sets, size_t n) { return n ? sets : NULL; }

static int do_submit(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    op_t *op = arg;
    const Corral__V1__SubmitRequest *r = (const Corral__V1__SubmitRequest *)op->req;
    char name[CTL_NAME_MAX] = "";
    int rc = ctl_expctl_submit(db, inv, *r->source_name ? r->source_name : "<submitted>", r->spec_yaml,
                               strlen(r->spec_yaml), (const char *const *)sets_of(r->sets, r->n_sets), r->n_sets,
                               op->svc->host.plugin_check, op->svc->host.ud, cr_wall_ns() / CR_NS_PER_MS, name,
                               cmds, err);
    if (rc != 0) return rc;
    Corral__V1__SubmitResponse *resp = calloc(1, sizeof *resp);
    if (!resp) return cr_err_set(err, CR_ENOMEM, "reply");
    corral__v1__submit_response__init(resp);
    op->resp = &resp->base;
    return ctl_exp_to_proto(db, name, &resp->experiment, err);
}

static int do_list(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)inv;
    (void)cmds;
    op_t *op = arg;
    ctl_exp_t *list;
    size_t n;
    int rc = ctl_exp_list(db, &list, &n, err);
    if (rc != 0) return rc;
    Corral__V1__ListExperimentsResponse *resp = calloc(1, sizeof *resp);
    if (resp) {
        corral__v1__list_experiments_response__init(resp);
        op->resp = &resp->base;
        resp->experiments = calloc(n + 1, sizeof *resp->experiments);
    }
    if (!resp || !resp->experiments) rc = cr_err_set(err, CR_ENOMEM, "reply");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = build_experiment(db, &list[i], &resp->experiments[i], err);
        if (rc == 0) resp->n_experiments++;
    }
    ctl_exp_list_free(list, n);
    return rc;
}

static int do_get(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)inv;
    (void)cmds;
    op_t *op = arg;
    const Corral__V1__GetExperimentRequest *r = (const Corral__V1__GetExperimentRequest *)op->req;
    Corral__V1__GetExperimentResponse *resp = calloc(1, sizeof *resp);
    if (!resp) return cr_err_set(err, CR_ENOMEM, "reply");
    corral__v1__get_experiment_response__init(resp);
    op->resp = &resp->base;
    return ctl_exp_to_proto(db, r->name, &resp->experiment, err);
}

static int do_stop(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)inv;
    op_t *op = arg;
    const Corral__V1__StopExperimentRequest *r = (const Corral__V1__StopExperimentRequest *)op->req;
    int rc = ctl_expctl_stop(db, r->name, 0, cr_wall_ns() / CR_NS_PER_MS, cmds, err);
    if (rc != 0) return rc;
    Corral__V1__StopExperimentResponse *resp = calloc(1, sizeof *resp);
    if (!resp) return cr_err_set(err, CR_ENOMEM, "reply");
    corral__v1__stop_experiment_response__init(resp);
    op->resp = &resp->base;
    return ctl_exp_to_proto(db, r->name, &resp->experiment, err);
}

static int do_resume(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    op_t *op = arg;
    const Corral__V1__ResumeExperimentRequest *r = (const Corral__V1__ResumeExperimentRequest *)op->req;
    int rc = ctl_expctl_resume(db, inv, r->name, (const char *const *)sets_of(r->sets, r->n_sets), r->n_sets,
                               op->svc->host.plugin_check, op->svc->host.ud, cr_wall_ns() / CR_NS_PER_MS, cmds, err);
    if (rc != 0) return rc;
    Corral__V1__ResumeExperimentResponse *resp = calloc(1, sizeof *resp);
    if (!resp) return cr_err_set(err, CR_ENOMEM, "reply");
    corral__v1__resume_experiment_response__init(resp);
    op->resp = &resp->base;
    return ctl_exp_to_proto(db, r->name, &resp->experiment, err);
}

static void unary(rpc_call_t *call, const ProtobufCMessage *msg, ctl_exp_state_fn fn)
{
    ctl_exp_service_t *svc = rpc_call_method(call)->user;
    op_t op = {svc, msg, NULL};
    ctl_cmds_t cmds = {0};
    cr_err_t err = {0};
    int rc = svc->host.with_state(svc->host.ud, fn, &op, &cmds, &err);
    if (rc == 0) {
        if (cmds.n && svc->host.send) svc->host.send(svc->host.ud, &cmds);
        rpc_call_reply(call, op.resp, &err);
    } else if (rc == CR_EBUSY || rc == CR_EUNAVAIL) {
        /* A refusal about resources or state, not an unreachable controller:
         * clients (the CLI's exit status 2) must not mistake it for one. */
        rpc_call_finish(call, RPC_FAILED_PRECONDITION, "%s", err.msg);
    } else {
        rpc_call_fail(call, &err);
    }
    if (op.resp) protobuf_c_message_free_unpacked(op.resp, NULL);
    ctl_cmds_free(&cmds);
}

static void on_submit(rpc_call_t *c, const ProtobufCMessage *m) { unary(c, m, do_submit); }
static void on_list(rpc_call_t *c, const ProtobufCMessage *m) { unary(c, m, do_list); }
static void on_get(rpc_call_t *c, const ProtobufCMessage *m) { unary(c, m, do_get); }
static void on_stop(rpc_call_t *c, const ProtobufCMessage *m) { unary(c, m, do_stop); }
static void on_resume(rpc_call_t *c, const ProtobufCMessage *m) { unary(c, m, do_resume); }

/* ---- Watch ----------------------------------------------------------------------- */

typedef struct watch {
    ctl_exp_service_t *svc;
    rpc_call_t *call;
    char name[CTL_NAME_MAX];
    int64_t after;
    int64_t last_updated;
    int final;
    Corral__V1__WatchExperimentResponse *resp;
} watch_t;

static int watch_step(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)inv;
    (void)cmds;
    watch_t *w = arg;
    w->resp = NULL;
    ctl_exp_t e;
    int rc = ctl_exp_get(db, w->name, &e, err);
    if (rc != 0) return rc;
    ctl_exp_event_t *ev = NULL;
    size_t n = 0;
    rc = ctl_exp_events(db, w->name, w->after, 256, &ev, &n, err);
    int changed = e.updated_ms != w->last_updated;
    if (rc == 0 && (n || changed)) {
        int oom = 0;
        Corral__V1__WatchExperimentResponse *r = zalloc(sizeof *r, &oom);
        if (r) {
            corral__v1__watch_experiment_response__init(r);
            if (changed) rc = build_experiment(db, &e, &r->snapshot, err);
            if (n) r->events = zalloc(n * sizeof *r->events, &oom);
            for (size_t i = 0; rc == 0 && r->events && i < n; i++) {
                Corral__V1__ExperimentEvent *x = zalloc(sizeof *x, &oom);
                if (!x) break;
                corral__v1__experiment_event__init(x);
                r->events[r->n_events++] = x;
                x->id = ev[i].id;
                x->time_unix_ms = ev[i].time_ms;
                x->experiment = dup(ev[i].experiment);
                x->kind = dup(ev[i].kind);
                x->from_state = dup(ev[i].from_state);
                x->to_state = dup(ev[i].to_state);
                x->message = dup(ev[i].message);
            }
        }
        if (rc == 0 && (oom || !r)) rc = cr_err_set(err, CR_ENOMEM, "watch");
        if (rc == 0) {
            w->resp = r;
            if (n) w->after = ev[n - 1].id;
            w->last_updated = e.updated_ms;
        } else if (r) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
    }
    w->final = rc == 0 && n < 256 &&
               (e.state == CTL_EXP_STOPPED || e.state == CTL_EXP_FAILED || e.state == CTL_EXP_DONE);
    free(ev);
    ctl_exp_clear(&e);
    return rc;
}

/* Serves a streaming call on a detached thread of its own: the thread holds a
 * reference to the call and counts as a watcher until it ends. On failure the
 * call is finished and arg (malloc'd) freed. */
static void start_call_thread(ctl_exp_service_t *svc, rpc_call_t *call, void *(*fn)(void *), void *arg,
                              const char *what)
{
    rpc_call_ref(call);
    atomic_fetch_add(&svc->watchers, 1);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, fn, arg) != 0) {
        atomic_fetch_sub(&svc->watchers, 1);
        rpc_call_unref(call);
        free(arg);
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, what);
    }
    pthread_attr_destroy(&attr);
}

static void *watch_thread(void *arg)
{
    watch_t *w = arg;
    ctl_exp_service_t *svc = w->svc;
    int period = svc->host.watch_period_ms > 0 ? svc->host.watch_period_ms : 500;
    int64_t last_send = cr_now_ns();
    for (;;) {
        cr_err_t err = {0};
        ctl_cmds_t cmds = {0};
        int rc = svc->host.with_state(svc->host.ud, watch_step, w, &cmds, &err);
        ctl_cmds_free(&cmds);
        if (rc != 0) {
            rpc_call_fail(w->call, &err);
            break;
        }
        /* A message at least every few seconds, so a departed client is noticed. */
        if (!w->resp && cr_now_ns() - last_send > 5 * CR_NS_PER_S) {
            w->resp = calloc(1, sizeof *w->resp);
            if (w->resp) corral__v1__watch_experiment_response__init(w->resp);
        }
        if (w->resp) {
            rc = rpc_call_send(w->call, &w->resp->base, 10000, &err);
            protobuf_c_message_free_unpacked(&w->resp->base, NULL);
            w->resp = NULL;
            last_send = cr_now_ns();
            if (rc != 0) break; /* CR_ECLOSED: the client went away */
        }
        if (w->final) {
            rpc_call_finish(w->call, RPC_OK, NULL);
            break;
        }
        cr_sleep_ns((int64_t)period * CR_NS_PER_MS);
    }
    rpc_call_unref(w->call);
    free(w);
    atomic_fetch_sub(&svc->watchers, 1);
    return NULL;
}

static void on_watch(rpc_call_t *call, const ProtobufCMessage *msg)
{
    ctl_exp_service_t *svc = rpc_call_method(call)->user;
    const Corral__V1__WatchExperimentRequest *r = (const Corral__V1__WatchExperimentRequest *)msg;
    if (!cr_name_valid(r->name)) {
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "bad experiment name '%s'", r->name);
        return;
    }
    watch_t *w = calloc(1, sizeof *w);
    if (!w) {
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->svc = svc;
    w->call = call;
    snprintf(w->name, sizeof w->name, "%s", r->name);
    w->after = r->after_event;
    w->last_updated = -1;
    start_call_thread(svc, call, watch_thread, w, "cannot start a watch");
}

/* ---- Logs ------------------------------------------------------------------------ */

#define LOG_PIECE (256u << 10)   /* bytes per ReadLog: well under the message limit */
#define LOG_WAIT_MS 5000

typedef struct log_target {
    ctl_role_t role;
    int index;
    char node[CTL_NAME_MAX];
} log_target_t;

typedef struct logs {
    ctl_exp_service_t *svc;
    rpc_call_t *call;
    char name[CTL_NAME_MAX];
    char role[16];
    int index;
    int64_t tail;
    log_target_t *t;
    size_t n, cap;
    int oom;
} logs_t;

static void add_target(void *ud, ctl_role_t role, int index, const char *node, const char *dir)
{
    (void)dir;
    logs_t *l = ud;
    /* Actors and buffers run inside env and learner processes: their logs are
     * those processes' logs. */
    if (role == CTL_ROLE_ACTOR) role = CTL_ROLE_ENV;
    if (role == CTL_ROLE_BUFFER) role = CTL_ROLE_LEARNER;
    for (size_t i = 0; i < l->n; i++)
        if (l->t[i].role == role && l->t[i].index == index && strcmp(l->t[i].node, node) == 0) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        log_target_t *grown = realloc(l->t, cap * sizeof *grown);
        if (!grown) {
            l->oom = 1;
            return;
        }
        l->t = grown;
        l->cap = cap;
    }
    log_target_t *t = &l->t[l->n++];
    t->role = role;
    t->index = index;
    snprintf(t->node, sizeof t->node, "%s", node);
}

static int logs_targets(void *arg, sqlite3 *db, const ctl_inventory_t *inv, ctl_cmds_t *cmds, cr_err_t *err)
{
    (void)inv;
    (void)cmds;
    logs_t *l = arg;
    ctl_exp_t e;
    int rc = ctl_exp_get(db, l->name, &e, err);
    if (rc != 0) return rc;
    ctl_exp_clear(&e);
    /* Asked for an actor or a buffer: its host's log (add_target maps the rows). */
    const char *role = strcmp(l->role, "actor") == 0 ? "env" : strcmp(l->role, "buffer") == 0 ? "learner" : l->role;
    rc = ctl_exp_worker_nodes(db, l->name, *role ? role : NULL, l->index, add_target, l, err);
    if (rc == 0 && *role && strcmp(role, l->role) != 0)
        rc = ctl_exp_worker_nodes(db, l->name, l->role, l->index, add_target, l, err);
    if (rc == 0 && l->oom) rc = cr_err_set(err, CR_ENOMEM, "logs");
    return rc;
}

/* Sends one response; 0, or the send's error (the client went away). */
static int logs_send(logs_t *l, const log_target_t *t, const Corral__V1__LogChunk *c, const char *error)
{
    Corral__V1__ExperimentLogsResponse r = CORRAL__V1__EXPERIMENT_LOGS_RESPONSE__INIT;
    r.role = (char *)ctl_role_name(t->role);
    r.index = t->index;
    r.node = (char *)t->node;
    if (c) {
        r.data = c->data;
        r.offset = c->offset;
        r.file_size = c->file_size;
    }
    r.error = (char *)(error ? error : "");
    cr_err_t err = {0};
    return rpc_call_send(l->call, &r.base, 10000, &err);
}

/* One worker's log on one node, piece by piece. */
static int logs_one(logs_t *l, const log_target_t *t)
{
    Corral__V1__ReadLog req = CORRAL__V1__READ_LOG__INIT;
    req.experiment = l->name;
    req.role = (char *)ctl_role_name(t->role);
    req.index = t->index;
    req.offset = l->tail > 0 ? -l->tail : 0;
    req.max_bytes = LOG_PIECE;
    for (;;) {
        Corral__V1__LogChunk *c = NULL;
        cr_err_t err = {0};
        if (l->svc->host.read_log(l->svc->host.ud, t->node, &req, LOG_WAIT_MS, &c, &err) != 0)
            return logs_send(l, t, NULL, err.msg);
        int rc = *c->error ? logs_send(l, t, NULL, c->error) : logs_send(l, t, c, NULL);
        int64_t next = c->offset + (int64_t)c->data.len;
        int more = rc == 0 && !*c->error && c->data.len > 0 && next < c->file_size;
        corral__v1__log_chunk__free_unpacked(c, NULL);
        if (!more) return rc;
        req.offset = next;
    }
}

static void *logs_thread(void *arg)
{
    logs_t *l = arg;
    ctl_exp_service_t *svc = l->svc;
    ctl_cmds_t cmds = {0};
    cr_err_t err = {0};
    int rc = svc->host.with_state(svc->host.ud, logs_targets, l, &cmds, &err);
    ctl_cmds_free(&cmds);
    if (rc != 0) {
        rpc_call_fail(l->call, &err);
    } else if (l->n == 0) {
        rpc_call_finish(l->call, RPC_NOT_FOUND, "no worker of experiment %s matches%s%s%s; its workers are env "
                        "(one per robot) and learner", l->name, *l->role ? " role " : "", l->role,
                        l->index >= 0 ? " and that index" : "");
    } else {
        rc = 0;
        for (size_t i = 0; i < l->n && rc == 0; i++) rc = logs_one(l, &l->t[i]);
        if (rc == 0) rpc_call_finish(l->call, RPC_OK, NULL);
    }
    rpc_call_unref(l->call);
    free(l->t);
    free(l);
    atomic_fetch_sub(&svc->watchers, 1);
    return NULL;
}

static void on_logs(rpc_call_t *call, const ProtobufCMessage *msg)
{
    ctl_exp_service_t *svc = rpc_call_method(call)->user;
    const Corral__V1__ExperimentLogsRequest *r = (const Corral__V1__ExperimentLogsRequest *)msg;
    if (!svc->host.read_log) {
        rpc_call_finish(call, RPC_UNIMPLEMENTED, "this controller cannot read logs");
        return;
    }
    if (!cr_name_valid(r->name)) {
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "bad experiment name '%s'", r->name);
        return;
    }
    if (*r->role && ctl_role_parse(r->role) < 0) {
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "unknown role '%s': use env, learner (actor and buffer run "
                        "inside them)", r->role);
        return;
    }
    logs_t *l = calloc(1, sizeof *l);
    if (!l) {
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    l->svc = svc;
    l->call = call;
    snprintf(l->name, sizeof l->name, "%s", r->name);
    snprintf(l->role, sizeof l->role, "%s", r->role);
    l->index = r->index;
    l->tail = r->tail_bytes;
    start_call_thread(svc, call, logs_thread, l, "cannot start a log read");
}

/* ---- table ------------------------------------------------------------------------ */

int ctl_exp_service_create(const ctl_exp_host_t *host, ctl_exp_service_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!host || !host->with_state) return cr_err_set(err, CR_EINVAL, "the Experiments service needs with_state");
    ctl_exp_service_t *svc = calloc(1, sizeof *svc);
    if (!svc) return cr_err_set(err, CR_ENOMEM, "Experiments service");
    svc->host = *host;
    atomic_init(&svc->watchers, 0);
#define M(i, n, k, in, outd, fn) \
    svc->methods[i] = (rpc_method_t){.name = "/corral.v1.Experiments/" n, .kind = k, .input = &in, \
                                     .output = &outd, .user = svc, .on_message = fn}
    M(0, "Submit", RPC_UNARY, corral__v1__submit_request__descriptor, corral__v1__submit_response__descriptor,
      on_submit);
    M(1, "List", RPC_UNARY, corral__v1__list_experiments_request__descriptor,
      corral__v1__list_experiments_response__descriptor, on_list);
    M(2, "Get", RPC_UNARY, corral__v1__get_experiment_request__descriptor,
      corral__v1__get_experiment_response__descriptor, on_get);
    M(3, "Stop", RPC_UNARY, corral__v1__stop_experiment_request__descriptor,
      corral__v1__stop_experiment_response__descriptor, on_stop);
    M(4, "Resume", RPC_UNARY, corral__v1__resume_experiment_request__descriptor,
      corral__v1__resume_experiment_response__descriptor, on_resume);
    M(5, "Watch", RPC_SERVER_STREAM, corral__v1__watch_experiment_request__descriptor,
      corral__v1__watch_experiment_response__descriptor, on_watch);
    M(6, "Logs", RPC_SERVER_STREAM, corral__v1__experiment_logs_request__descriptor,
      corral__v1__experiment_logs_response__descriptor, on_logs);
#undef M
    *out = svc;
    return 0;
}

size_t ctl_exp_service_methods(ctl_exp_service_t *svc, rpc_method_t *out)
{
    memcpy(out, svc->methods, sizeof svc->methods);
    return CTL_EXP_METHODS;
}

void ctl_exp_service_drain(ctl_exp_service_t *svc)
{
    while (svc && atomic_load(&svc->watchers) > 0) cr_sleep_ns(5 * CR_NS_PER_MS);
}

void ctl_exp_service_destroy(ctl_exp_service_t *svc)
{
    if (!svc) return;
    ctl_exp_service_drain(svc);
    free(svc);
}
