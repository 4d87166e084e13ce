/* exp.c - `corral exp`: the user's experiments. `validate` and `doc` work alone;
 * submit, list, status, watch, stop, resume and logs talk to the controller's
 * Experiments service only (exit 2 when it cannot be reached, 1 when it refuses,
 * with its message saying what to change). */
#include "cli/cli.h"
#include "cli/ctlcli.h"
#include "common/durable.h"
#include "common/expspec/expspec.h"
#include "corral/v1/experiments.pb-c.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SETS 64
#define SPEC_MAX (4u << 20)

static const char usage_text[] =
    "usage: corral exp <verb> [options]\n"
    "  validate FILE [--set key=value ...]   check an experiment file as submit does\n"
    "  doc                                   every field of an experiment file, with defaults\n"
    "  submit FILE [--set key=value ...] [--json]\n"
    "  list [--json]\n"
    "  status NAME [--json]\n"
    "  watch NAME                            live progress until the experiment ends (exit 1 if it failed)\n"
    "  stop NAME\n"
    "  resume NAME [--set key=value ...]\n"
    "  logs NAME [--role env|learner] [--index I] [--tail BYTES]   workers' logs, from the nodes that hold them\n"
    CLI_CONN_HELP;

static const char *const policy_names[] = {"mlp", "cnn", "flow", "vla"};
static const char *const state_names[] = {"unknown", "submitted", "scheduled", "running", "degraded",
                                          "stopping", "stopped", "failed", "done"};

static const char *state_name(int s)
{
    return s >= 0 && s < (int)(sizeof state_names / sizeof state_names[0]) ? state_names[s] : "unknown";
}

/* ---- validate, doc ------------------------------------------------------------------ */

static void summary(const exp_spec_t *s)
{
    printf("name:        %s\n", s->name);
    if (s->robots.n_names) {
        printf("robots:     ");
        for (size_t i = 0; i < s->robots.n_names; i++) printf(" %s", s->robots.names[i]);
        printf("\n");
    } else {
        printf("robots:      %d with driver=%s model=%s%s\n", (int)s->robots.count,
               *s->robots.driver ? s->robots.driver : "any", *s->robots.model ? s->robots.model : "any",
               s->robots.n_labels ? " and labels" : "");
    }
    printf("task:        reward %s, %g Hz, %d steps per episode (0: the robot's)\n", s->task.reward,
           s->task.control_hz, (int)s->task.episode_steps);
    printf("policy:      %s", policy_names[s->policy.type]);
    for (size_t i = 0; i < s->policy.n_hidden; i++) printf("%s%d", i ? "x" : " ", (int)s->policy.hidden[i]);
    printf("\nalgorithm:   %s, batch %lld, lr %g, utd %g, max staleness %lld\n", s->algorithm.type,
           (long long)s->algorithm.batch_size, s->algorithm.lr, s->algorithm.utd,
           (long long)s->algorithm.max_staleness);
    if (s->learner.gpus) printf("learner:     %d GPUs\n", (int)s->learner.gpus);
    else printf("learner:     CPU\n");
    printf("stop:        env_steps %lld, updates %lld, success_rate %g, wall_time %llds\n",
           (long long)s->stop.env_steps, (long long)s->stop.updates, s->stop.success_rate,
           (long long)(s->stop.wall_time / 1000000000LL));
}

static int validate(const cli_args_t *a)
{
    exp_spec_t spec;
    cr_err_t err = {0};
    if (exp_spec_load_file(&spec, a->pos[0], a->sets, a->n_sets, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return CLI_EUSER;
    }
    summary(&spec);
    printf("ok: %s is a valid experiment file\n", a->pos[0]);
    exp_spec_free(&spec);
    return CLI_OK;
}

/* ---- output ------------------------------------------------------------------------- */

static cJSON *exp_json(const Corral__V1__Experiment *e)
{
    cJSON *o = cJSON_CreateObject();
    const Corral__V1__Progress *p = e->progress;
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "state", state_name(e->state));
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddNumberToObject(o, "run", (double)e->generation);
    cJSON_AddNumberToObject(o, "env_steps", p ? (double)p->env_steps : 0);
    cJSON_AddNumberToObject(o, "episodes", p ? (double)p->episodes : 0);
    cJSON_AddNumberToObject(o, "success_rate", p ? p->success_rate : 0);
    cJSON_AddNumberToObject(o, "mean_return", p ? p->mean_return : 0);
    cJSON_AddNumberToObject(o, "updates", p ? (double)p->updates : 0);
    cJSON_AddNumberToObject(o, "policy_version", p ? (double)p->policy_version : 0);
    cJSON_AddNumberToObject(o, "staleness", p ? (double)p->staleness : 0);
    cJSON_AddNumberToObject(o, "train_success_rate", p ? p->train_success_rate : 0);
    cJSON_AddNumberToObject(o, "env_steps_per_s", p ? p->env_steps_per_s : 0);
    cJSON_AddNumberToObject(o, "updates_per_s", p ? p->updates_per_s : 0);
    cJSON_AddNumberToObject(o, "running_s", p ? (double)p->running_ms / 1000.0 : 0);
    cJSON_AddNumberToObject(o, "checkpoint", (double)e->checkpoint);
    cJSON_AddNumberToObject(o, "checkpoint_updates", (double)e->checkpoint_updates);
    cJSON_AddStringToObject(o, "learner_node", e->learner_node);
    cJSON_AddStringToObject(o, "dir", e->dir);
    if (e->goal) {
        cJSON *g = cJSON_AddObjectToObject(o, "goal");
        cJSON_AddNumberToObject(g, "env_steps", (double)e->goal->env_steps);
        cJSON_AddNumberToObject(g, "updates", (double)e->goal->updates);
        cJSON_AddNumberToObject(g, "success_rate", e->goal->success_rate);
        cJSON_AddNumberToObject(g, "wall_time_s", (double)e->goal->wall_time_ms / 1000.0);
    }
    cJSON *ws = cJSON_AddArrayToObject(o, "workers");
    for (size_t i = 0; i < e->n_placements; i++) {
        const Corral__V1__Placement *pl = e->placements[i];
        cJSON *w = cJSON_CreateObject();
        cJSON_AddStringToObject(w, "role", pl->role);
        cJSON_AddNumberToObject(w, "index", pl->index);
        cJSON_AddStringToObject(w, "node", pl->node);
        cJSON_AddStringToObject(w, "robot", pl->robot);
        cJSON *g = cJSON_AddArrayToObject(w, "gpus");
        for (size_t k = 0; k < pl->n_gpus; k++) cJSON_AddItemToArray(g, cJSON_CreateNumber(pl->gpus[k]));
        cJSON_AddStringToObject(w, "state", pl->worker_state);
        cJSON_AddNumberToObject(w, "pid", pl->pid);
        cJSON_AddNumberToObject(w, "restarts", pl->restarts);
        cJSON_AddBoolToObject(w, "waiting", pl->waiting);
        cJSON_AddStringToObject(w, "progress_state", pl->progress_state);
        cJSON_AddNumberToObject(w, "env_steps", (double)pl->env_steps);
        cJSON_AddNumberToObject(w, "steps_per_s", pl->steps_per_s);
        cJSON_AddNumberToObject(w, "updates", (double)pl->updates);
        cJSON_AddNumberToObject(w, "policy_version", (double)pl->policy_version);
        cJSON_AddItemToArray(ws, w);
    }
    return o;
}

static void exp_print(const Corral__V1__Experiment *e)
{
    const Corral__V1__Progress *p = e->progress;
    printf("name:           %s\n", e->name);
    printf("state:          %s%s%s\n", state_name(e->state), *e->message ? " - " : "", e->message);
    printf("run:            %lld\n", (long long)e->generation);
    if (p) {
        printf("env_steps:      %lld (%lld episodes, %.0f steps/s)\n", (long long)p->env_steps,
               (long long)p->episodes, p->env_steps_per_s);
        printf("success_rate:   %.3f (newest evaluation; training episodes %.3f)\n", p->success_rate,
               p->train_success_rate);
        printf("mean_return:    %.3f\n", p->mean_return);
        printf("updates:        %lld (%.1f/s, policy version %lld, staleness %lld)\n", (long long)p->updates,
               p->updates_per_s, (long long)p->policy_version, (long long)p->staleness);
        printf("running:        %.0f s\n", (double)p->running_ms / 1000.0);
    }
    printf("checkpoint:     %lld updates\n", (long long)e->checkpoint_updates);
    if (*e->dir) printf("files:          %s on node %s (logs/, checkpoints/, buffer.db)\n", e->dir, e->learner_node);
    if (!e->n_placements) return;
    const char *hdr[] = {"WORKER", "NODE", "ROBOT", "GPUS", "STATE", "PID", "RESTARTS", "PROGRESS"};
    cli_table_t *t = cli_table_new(8, hdr);
    for (size_t i = 0; i < e->n_placements; i++) {
        const Corral__V1__Placement *pl = e->placements[i];
        char who[48], gpus[64] = "", pid[16], restarts[16], state[32];
        snprintf(who, sizeof who, "%s-%d", pl->role, pl->index);
        for (size_t k = 0; k < pl->n_gpus; k++) {
            size_t len = strlen(gpus);
            snprintf(gpus + len, sizeof gpus - len, "%s%d", k ? "," : "", pl->gpus[k]);
        }
        snprintf(pid, sizeof pid, "%d", pl->pid);
        snprintf(restarts, sizeof restarts, "%u", pl->restarts);
        snprintf(state, sizeof state, "%s%s", pl->worker_state, pl->waiting ? " (waiting)" : "");
        char prog[96] = "-";
        if (strcmp(pl->role, "learner") == 0 && *pl->progress_state)
            snprintf(prog, sizeof prog, "%s: %lld updates, v%lld", pl->progress_state, (long long)pl->updates,
                     (long long)pl->policy_version);
        else if (strcmp(pl->role, "env") == 0 && *pl->progress_state)
            snprintf(prog, sizeof prog, "%s: %lld steps (%.0f/s), v%lld", pl->progress_state,
                     (long long)pl->env_steps, pl->steps_per_s, (long long)pl->policy_version);
        const char *cells[] = {who, pl->node, *pl->robot ? pl->robot : "-", *gpus ? gpus : "cpu", state, pid,
                               restarts, prog};
        cli_table_row(t, cells);
    }
    printf("\n");
    cli_table_print(t, stdout);
    cli_table_free(t);
}

/* ---- controller verbs --------------------------------------------------------------- */

static int submit(rpc_channel_t *ch, const cli_args_t *a)
{
    char *yaml;
    cr_err_t err = {0};
    if (cr_read_file(a->pos[0], SPEC_MAX, &yaml, NULL, &err) != 0) {
        fprintf(stderr, "corral exp submit: %s\n", err.msg);
        return CLI_EUSER;
    }
    /* Checked here first, so a typo never needs a round trip (the controller
     * checks again: it trusts no client). */
    exp_spec_t spec;
    if (exp_spec_load_string(&spec, a->pos[0], yaml, strlen(yaml), a->sets, a->n_sets, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        free(yaml);
        return CLI_EUSER;
    }
    exp_spec_free(&spec);
    Corral__V1__SubmitRequest req = CORRAL__V1__SUBMIT_REQUEST__INIT;
    req.spec_yaml = yaml;
    req.source_name = (char *)a->pos[0];
    req.sets = (char **)a->sets;
    req.n_sets = a->n_sets;
    Corral__V1__SubmitResponse *resp;
    int rc = cli_ctl_call("corral exp submit", ch, "/corral.v1.Experiments/Submit", &req.base,
                          &corral__v1__submit_response__descriptor, (ProtobufCMessage **)&resp);
    free(yaml);
    if (rc != CLI_OK) return rc;
    if (a->json) cli_json_print(exp_json(resp->experiment));
    else printf("submitted %s: %s\n", resp->experiment->name, state_name(resp->experiment->state));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int list(rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__ListExperimentsRequest req = CORRAL__V1__LIST_EXPERIMENTS_REQUEST__INIT;
    Corral__V1__ListExperimentsResponse *resp;
    int rc = cli_ctl_call("corral exp list", ch, "/corral.v1.Experiments/List", &req.base,
                          &corral__v1__list_experiments_response__descriptor, (ProtobufCMessage **)&resp);
    if (rc != CLI_OK) return rc;
    if (a->json) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < resp->n_experiments; i++) cJSON_AddItemToArray(arr, exp_json(resp->experiments[i]));
        cli_json_print(arr);
    } else {
        const char *hdr[] = {"NAME", "STATE", "RUN", "ENV_STEPS", "UPDATES", "SUCCESS"};
        cli_table_t *t = cli_table_new(6, hdr);
        for (size_t i = 0; i < resp->n_experiments; i++) {
            const Corral__V1__Experiment *e = resp->experiments[i];
            char run[24], steps[24], upd[24], succ[24];
            snprintf(run, sizeof run, "%lld", (long long)e->generation);
            snprintf(steps, sizeof steps, "%lld", (long long)(e->progress ? e->progress->env_steps : 0));
            snprintf(upd, sizeof upd, "%lld", (long long)(e->progress ? e->progress->updates : 0));
            snprintf(succ, sizeof succ, "%.2f", e->progress ? e->progress->success_rate : 0);
            const char *cells[] = {e->name, state_name(e->state), run, steps, upd, succ};
            cli_table_row(t, cells);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int status(rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__GetExperimentRequest req = CORRAL__V1__GET_EXPERIMENT_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    Corral__V1__GetExperimentResponse *resp;
    int rc = cli_ctl_call("corral exp status", ch, "/corral.v1.Experiments/Get", &req.base,
                          &corral__v1__get_experiment_response__descriptor, (ProtobufCMessage **)&resp);
    if (rc != CLI_OK) return rc;
    if (a->json) cli_json_print(exp_json(resp->experiment));
    else exp_print(resp->experiment);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int stop_or_resume(rpc_channel_t *ch, const cli_args_t *a, int resume)
{
    Corral__V1__Experiment *e;
    ProtobufCMessage *resp;
    int rc;
    if (resume) {
        Corral__V1__ResumeExperimentRequest req = CORRAL__V1__RESUME_EXPERIMENT_REQUEST__INIT;
        req.name = (char *)a->pos[0];
        req.sets = (char **)a->sets;
        req.n_sets = a->n_sets;
        rc = cli_ctl_call("corral exp resume", ch, "/corral.v1.Experiments/Resume", &req.base,
                          &corral__v1__resume_experiment_response__descriptor, &resp);
        if (rc != CLI_OK) return rc;
        e = ((Corral__V1__ResumeExperimentResponse *)resp)->experiment;
    } else {
        Corral__V1__StopExperimentRequest req = CORRAL__V1__STOP_EXPERIMENT_REQUEST__INIT;
        req.name = (char *)a->pos[0];
        rc = cli_ctl_call("corral exp stop", ch, "/corral.v1.Experiments/Stop", &req.base,
                          &corral__v1__stop_experiment_response__descriptor, &resp);
        if (rc != CLI_OK) return rc;
        e = ((Corral__V1__StopExperimentResponse *)resp)->experiment;
    }
    if (a->json) cli_json_print(exp_json(e));
    else printf("%s: %s (run %lld)\n", e->name, state_name(e->state), (long long)e->generation);
    protobuf_c_message_free_unpacked(resp, NULL);
    return CLI_OK;
}

/* ---- watch -------------------------------------------------------------------------- */

typedef struct watch_out {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int closed;
    rpc_code_t code;
    char details[512];
    int tty;
    int64_t last_updates, last_ms;
    int state;         /* of the newest snapshot */
} watch_out_t;

/* Fraction of the way to the stop condition: the furthest of its parts. */
static double progress_of(const Corral__V1__Experiment *e)
{
    const Corral__V1__Goal *g = e->goal;
    const Corral__V1__Progress *p = e->progress;
    if (!g || !p) return 0;
    double f = 0;
    if (g->env_steps > 0 && (double)p->env_steps / (double)g->env_steps > f) f = (double)p->env_steps / (double)g->env_steps;
    if (g->updates > 0 && (double)p->updates / (double)g->updates > f) f = (double)p->updates / (double)g->updates;
    if (g->success_rate > 0 && p->success_rate / g->success_rate > f) f = p->success_rate / g->success_rate;
    if (g->wall_time_ms > 0 && (double)p->running_ms / (double)g->wall_time_ms > f)
        f = (double)p->running_ms / (double)g->wall_time_ms;
    return f > 1 ? 1 : f;
}

static void on_watch(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    (void)st;
    watch_out_t *w = user;
    const Corral__V1__WatchExperimentResponse *r = (const Corral__V1__WatchExperimentResponse *)msg;
    for (size_t i = 0; i < r->n_events; i++) {
        const Corral__V1__ExperimentEvent *ev = r->events[i];
        if (strcmp(ev->kind, "state") == 0)
            printf("%s%s -> %s: %s\n", w->tty ? "\r\033[K" : "", *ev->from_state ? ev->from_state : "(new)",
                   ev->to_state, ev->message);
        else if (strcmp(ev->kind, "worker") != 0)
            printf("%s%s: %s\n", w->tty ? "\r\033[K" : "", ev->kind, ev->message);
    }
    const Corral__V1__Experiment *e = r->snapshot;
    if (e) w->state = e->state;
    if (e && e->progress) {
        const Corral__V1__Progress *p = e->progress;
        double frac = progress_of(e), ups = p->updates_per_s;
        if (ups <= 0 && w->last_ms && e->updated_unix_ms > w->last_ms)
            ups = (double)(p->updates - w->last_updates) * 1000.0 / (double)(e->updated_unix_ms - w->last_ms);
        w->last_updates = p->updates;
        w->last_ms = e->updated_unix_ms;
        char bar[31];
        int fill = (int)(frac * 30 + 0.5);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        printf("%s[%s] %3.0f%%  %s  success %.2f  return %.2f  steps %lld (%.0f/s)  updates %lld (%.1f/s)  "
               "staleness %lld%s",
               w->tty ? "\r\033[K" : "", bar, frac * 100, state_name(e->state), p->success_rate, p->mean_return,
               (long long)p->env_steps, p->env_steps_per_s, (long long)p->updates, ups, (long long)p->staleness,
               w->tty ? "" : "\n");
    }
    fflush(stdout);
}

static void on_watch_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    (void)st;
    watch_out_t *w = user;
    pthread_mutex_lock(&w->mu);
    w->closed = 1;
    w->code = code;
    snprintf(w->details, sizeof w->details, "%s", details);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int watch(rpc_channel_t *ch, const cli_args_t *a)
{
    watch_out_t w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .tty = isatty(1)};
    rpc_stream_cbs_t cbs = {.on_message = on_watch, .on_close = on_watch_close, .user = &w};
    rpc_stream_t *st;
    cr_err_t err = {0};
    Corral__V1__WatchExperimentRequest req = CORRAL__V1__WATCH_EXPERIMENT_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    if (rpc_stream_open(ch, &st, "/corral.v1.Experiments/Watch", &corral__v1__watch_experiment_response__descriptor,
                        &cbs, 0, &err) != 0 ||
        rpc_stream_send(st, &req.base, CLI_CALL_TIMEOUT_MS, &err) != 0 || rpc_stream_close_send(st, &err) != 0) {
        fprintf(stderr, "corral exp watch: %s\n", err.msg);
        return CLI_EUNREACHABLE;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.closed) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    rpc_stream_destroy(st);
    if (w.tty) printf("\n");
    /* A run that failed is the user's to look into: exit 1, like a refusal. */
    if (w.code == RPC_OK) return w.state == CORRAL__V1__EXPERIMENT_STATE__EXPERIMENT_FAILED ? CLI_EUSER : CLI_OK;
    char m[1024];
    snprintf(m, sizeof m, "%s: %s", rpc_code_name(w.code), w.details);
    return cli_ctl_failed("corral exp watch", w.code, m);
}

/* ---- logs --------------------------------------------------------------------------- */

typedef struct logs_out {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int closed;
    rpc_code_t code;
    char details[512];
    char cur[160];     /* the worker whose lines are printing */
    int errors, pieces;
} logs_out_t;

static void on_log(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    (void)st;
    logs_out_t *o = user;
    const Corral__V1__ExperimentLogsResponse *r = (const Corral__V1__ExperimentLogsResponse *)msg;
    char who[160];
    snprintf(who, sizeof who, "%s-%d on %s", r->role, r->index, r->node);
    if (*r->error) {
        fprintf(stderr, "corral exp logs: %s: %s\n", who, r->error);
        o->errors++;
        return;
    }
    if (strcmp(who, o->cur) != 0) {
        printf("%s==> %s <==\n", o->pieces ? "\n" : "", who);
        snprintf(o->cur, sizeof o->cur, "%s", who);
    }
    o->pieces++;
    fwrite(r->data.data, 1, r->data.len, stdout);
    fflush(stdout);
}

static void on_logs_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    (void)st;
    logs_out_t *o = user;
    pthread_mutex_lock(&o->mu);
    o->closed = 1;
    o->code = code;
    snprintf(o->details, sizeof o->details, "%s", details);
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

static int logs(rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__ExperimentLogsRequest req = CORRAL__V1__EXPERIMENT_LOGS_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.role = (char *)(a->role ? a->role : "");
    req.index = -1;
    cr_err_t err = {0};
    if (a->index) {
        char *end;
        long v = strtol(a->index, &end, 10);
        if (*end || end == a->index || v < 0 || v > 1000000) {
            fprintf(stderr, "corral exp logs: --index '%s': expected a worker index (0, 1, ...)\n", a->index);
            return CLI_EUSER;
        }
        req.index = (int32_t)v;
    }
    if (a->tail) {
        uint64_t bytes;
        if (cli_parse_size(a->tail, &bytes, &err) != 0) {
            fprintf(stderr, "corral exp logs: --tail: %s\n", err.msg);
            return CLI_EUSER;
        }
        req.tail_bytes = (int64_t)bytes;
    }
    logs_out_t o = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    rpc_stream_cbs_t cbs = {.on_message = on_log, .on_close = on_logs_close, .user = &o};
    rpc_stream_t *st;
    if (rpc_stream_open(ch, &st, "/corral.v1.Experiments/Logs", &corral__v1__experiment_logs_response__descriptor,
                        &cbs, 0, &err) != 0 ||
        rpc_stream_send(st, &req.base, CLI_CALL_TIMEOUT_MS, &err) != 0 || rpc_stream_close_send(st, &err) != 0) {
        fprintf(stderr, "corral exp logs: %s\n", err.msg);
        return CLI_EUNREACHABLE;
    }
    pthread_mutex_lock(&o.mu);
    while (!o.closed) pthread_cond_wait(&o.cv, &o.mu);
    pthread_mutex_unlock(&o.mu);
    rpc_stream_destroy(st);
    if (o.code != RPC_OK) {
        return cli_ctl_failed("corral exp logs", o.code, o.details);
    }
    return o.errors && !o.pieces ? CLI_EUSER : CLI_OK;
}

int cli_exp_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    const char *verb = argv[1];
    cli_args_t a;
    char prog[64];
    snprintf(prog, sizeof prog, "corral exp %s", verb);
    if (strcmp(verb, "doc") == 0) return exp_spec_doc(stdout) == 0 ? CLI_OK : CLI_EUSER;
    struct { const char *verb, *allowed; int npos; } verbs[] = {
        {"validate", "set", 1}, {"submit", "set", 1}, {"list", "", 0}, {"status", "", 1},
        {"watch", "", 1},       {"stop", "", 1},      {"resume", "set", 1},
        {"logs", "role,index,tail", 1},
    };
    int k = -1;
    for (int i = 0; i < (int)(sizeof verbs / sizeof verbs[0]); i++)
        if (strcmp(verb, verbs[i].verb) == 0) k = i;
    if (k < 0) {
        fprintf(stderr, "corral exp: unknown verb '%s'\n%s", verb, usage_text);
        return CLI_EUSER;
    }
    if (cli_args_parse(prog, argc - 1, argv + 1, verbs[k].allowed, verbs[k].npos, verbs[k].npos, &a) != CLI_OK)
        return CLI_EUSER;
    if (k == 0) return validate(&a);
    rpc_channel_t *ch;
    int rc = cli_ctl_connect(prog, a.controller, &ch);
    if (rc != CLI_OK) return rc;
    switch (k) {
    case 1: rc = submit(ch, &a); break;
    case 2: rc = list(ch, &a); break;
    case 3: rc = status(ch, &a); break;
    case 4: rc = watch(ch, &a); break;
    case 5: rc = stop_or_resume(ch, &a, 0); break;
    case 6: rc = stop_or_resume(ch, &a, 1); break;
    default: rc = logs(ch, &a); break;
    }
    rpc_channel_destroy(ch);
    return rc;
}
