/* progress.c - the workers' status files read back into WorkerProgress messages
 * for the controller; see progress.h. */
#include "agents/progress.h"
#include "common/durable.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_MAX (64u << 10) /* a status file is well under 2 KiB */

/* The newest worker time stamp sent, per worker. */
typedef struct seen {
    char experiment[AGENT_NAME_MAX], role[AGENT_NAME_MAX];
    int index;
    int64_t generation, time_ms;
} seen_t;

struct agent_progress {
    char state_dir[4096];
    seen_t *seen;
    size_t n, cap;
};

int agent_progress_create(const char *state_dir, agent_progress_t **out, cr_err_t *err)
{
    agent_progress_t *pr = calloc(1, sizeof *pr);
    if (!pr) return cr_err_set(err, CR_ENOMEM, "progress");
    snprintf(pr->state_dir, sizeof pr->state_dir, "%s", state_dir);
    *out = pr;
    return 0;
}

void agent_progress_destroy(agent_progress_t *pr)
{
    if (!pr) return;
    free(pr->seen);
    free(pr);
}

/* ---- one file ----------------------------------------------------------------------- */

static double num(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

void agent_progress_clear(Corral__V1__WorkerProgress *p)
{
    free(p->experiment);
    free(p->role);
    free(p->state);
    free(p->dir);
    corral__v1__worker_progress__init(p);
}

int agent_progress_read(const char *state_dir, const agent_worker_info_t *info, Corral__V1__WorkerProgress *out,
                        cr_err_t *err)
{
    corral__v1__worker_progress__init(out);
    /* The learner's file has no index: there is one learner per experiment. */
    char dir[4200], path[4400];
    snprintf(dir, sizeof dir, "%s/experiments/%s", state_dir, info->experiment);
    if (strcmp(info->role, "learner") == 0) snprintf(path, sizeof path, "%s/status/learner.json", dir);
    else snprintf(path, sizeof path, "%s/status/env-%d.json", dir, info->index);
    char *text = NULL;
    int rc = cr_read_file(path, STATUS_MAX, &text, NULL, err);
    if (rc != 0) return rc;
    cJSON *o = cJSON_Parse(text);
    free(text);
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(o, "state");
    if (!cJSON_IsObject(o) || !cJSON_IsString(state)) {
        cJSON_Delete(o);
        return cr_err_set(err, CR_ECORRUPT, "%s is not a worker status file", path);
    }
    int64_t gen = (int64_t)num(o, "generation", 0);
    if (gen != info->generation) {
        cJSON_Delete(o);
        return cr_err_set(err, CR_EBUSY, "%s is of run %lld, the worker of run %lld", path, (long long)gen,
                          (long long)info->generation);
    }
    out->experiment = strdup(info->experiment);
    out->role = strdup(info->role);
    out->state = strdup(state->valuestring);
    out->dir = strdup(dir);
    out->generation = info->generation;
    out->index = info->index;
    out->pid = (int32_t)num(o, "pid", 0);
    out->env_steps = (int64_t)num(o, "env_steps", 0);
    out->episodes = (int64_t)num(o, "episodes", 0);
    out->success_rate = num(o, "success_rate", 0);
    out->eval_success_rate = num(o, "eval_success_rate", -1);
    out->eval_round = (int64_t)num(o, "eval_round", 0);
    out->mean_return = num(o, "eval_mean_return", 0);
    out->updates = (int64_t)num(o, "updates", 0);
    out->updates_per_s = num(o, "updates_per_s", 0);
    out->policy_version = (int64_t)num(o, "policy_version", 0);
    out->staleness = num(o, "staleness", 0);
    out->steps_per_s = num(o, "steps_per_s", 0);
    out->checkpoint = (int64_t)num(o, "checkpoint", 0);
    out->time_unix_ms = (int64_t)(num(o, "time_ns", 0) / 1e6);
    cJSON_Delete(o);
    if (!out->experiment || !out->role || !out->state || !out->dir) {
        agent_progress_clear(out);
        return cr_err_set(err, CR_ENOMEM, "progress");
    }
    return 0;
}

/* ---- collecting -------------------------------------------------------------------- */

static seen_t *seen_of(agent_progress_t *pr, const agent_worker_info_t *w)
{
    for (size_t i = 0; i < pr->n; i++) {
        seen_t *s = &pr->seen[i];
        if (s->index == w->index && strcmp(s->experiment, w->experiment) == 0 && strcmp(s->role, w->role) == 0)
            return s;
    }
    if (pr->n == pr->cap) {
        size_t cap = pr->cap ? 2 * pr->cap : 16;
        seen_t *grown = realloc(pr->seen, cap * sizeof *grown);
        if (!grown) return NULL;
        pr->seen = grown;
        pr->cap = cap;
    }
    seen_t *s = &pr->seen[pr->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->experiment, sizeof s->experiment, "%s", w->experiment);
    snprintf(s->role, sizeof s->role, "%s", w->role);
    s->index = w->index;
    return s;
}

void agent_progress_report_free(Corral__V1__ProgressReport *r)
{
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
}

int agent_progress_collect(agent_progress_t *pr, const agent_sup_t *sup, const char *experiment, int force,
                           Corral__V1__ProgressReport **out, cr_err_t *err)
{
    *out = NULL;
    size_t n = agent_sup_list(sup, NULL, 0);
    if (n == 0) return 0;
    agent_worker_info_t *info = calloc(n, sizeof *info);
    Corral__V1__ProgressReport *r = calloc(1, sizeof *r);
    if (r) {
        corral__v1__progress_report__init(r);
        r->workers = calloc(n, sizeof *r->workers);
    }
    if (!info || !r || !r->workers) {
        free(info);
        if (r) free(r->workers);
        free(r);
        return cr_err_set(err, CR_ENOMEM, "progress");
    }
    n = agent_sup_list(sup, info, n);
    for (size_t i = 0; i < n; i++) {
        const agent_worker_info_t *w = &info[i];
        if (experiment && strcmp(w->experiment, experiment) != 0) continue;
        Corral__V1__WorkerProgress p;
        cr_err_t e = {0};
        if (agent_progress_read(pr->state_dir, w, &p, &e) != 0) continue; /* not written yet, or of another run */
        seen_t *s = seen_of(pr, w);
        int64_t t = p.time_unix_ms;
        int fresh = !s || s->generation != w->generation || s->time_ms != t;
        Corral__V1__WorkerProgress *heap = (force || fresh) ? malloc(sizeof *heap) : NULL;
        if (!heap) {
            agent_progress_clear(&p);
            continue;
        }
        *heap = p;
        r->workers[r->n_workers++] = heap;
        if (s) {
            s->generation = w->generation;
            s->time_ms = t;
        }
    }
    free(info);
    if (!r->n_workers) {
        agent_progress_report_free(r);
        return 0;
    }
    *out = r;
    return 0;
}
