/* liveness.c - the table of agent sessions and the sweep that declares nodes lost.
 *
 * Each node has at most one current session: the AgentLink stream whose inventory
 * was accepted last. Rules:
 *   - claim: a node with no current session, or whose session belongs to the same
 *     agent instance (the agent reconnected before the old stream was noticed
 *     dead), or whose session has missed its heartbeats, is taken by the new
 *     session; the old stream, if any, is ended with ABORTED. A node held by a
 *     live session of another instance is refused (ALREADY_EXISTS): two agents
 *     configured with one name must not take turns owning it.
 *   - a heartbeat renews the current session only; one from a replaced session is
 *     answered with CR_ENOENT and that stream is ended by its handler.
 *   - lost: no heartbeat for missed * interval (the sweep, every interval/4), or
 *     the current stream ended (release). The registry then marks the node and its
 *     robots and GPUs lost, and the stream is ended with UNAVAILABLE so an agent
 *     that is merely slow reconnects and resends its inventory.
 *
 * Locks: `trans` serialises every claim / release / loss together with its
 * registry write, so the registry sees a node's transitions in the order they
 * were decided; `mu` guards the table itself and is held only for a few loads and
 * stores, so heartbeats (1000/s with 1000 agents) never wait for SQLite. Order:
 * trans before mu. Calls are ended only after both locks are released, because
 * ending a call may run its callbacks. */
#include "controller/liveness.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char node[64];
    uint64_t session;     /* 0: none (lost, or waiting for a reconnect after a restart) */
    uint64_t instance;
    int64_t last_ns;      /* last heartbeat (or claim, or controller start) */
    int grace;            /* seeded at start: no session yet, lost when the grace ends */
    rpc_call_t *call;     /* referenced while session != 0 */
    struct entry *next;
} entry_t;

#define NBUCKETS 4096

struct ctl_liveness {
    ctl_registry_t *reg;
    int64_t timeout_ns, period_ns;
    pthread_mutex_t trans, mu;
    pthread_cond_t wake;
    entry_t *buckets[NBUCKETS];
    size_t live;
    int stop, stopping, started;
    pthread_t sweeper;
    void (*on_lost)(void *ud, const char *node);
    void *on_lost_ud;
};

void ctl_liveness_on_lost(ctl_liveness_t *lv, void (*fn)(void *ud, const char *node), void *ud)
{
    lv->on_lost = fn;
    lv->on_lost_ud = ud;
}

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s) h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % NBUCKETS;
}

static entry_t *find(ctl_liveness_t *lv, const char *node, int create)
{
    unsigned b = hash(node);
    for (entry_t *e = lv->buckets[b]; e; e = e->next)
        if (strcmp(e->node, node) == 0) return e;
    if (!create) return NULL;
    entry_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    snprintf(e->node, sizeof e->node, "%s", node);
    e->next = lv->buckets[b];
    lv->buckets[b] = e;
    return e;
}

static int64_t wall_ms(void) { return cr_wall_ns() / CR_NS_PER_MS; }

static void end_calls(rpc_call_t **calls, size_t n, rpc_code_t code, const char *why)
{
    for (size_t i = 0; i < n; i++) {
        rpc_call_finish(calls[i], code, "%s", why);
        rpc_call_unref(calls[i]);
    }
}

/* ---- sweep --------------------------------------------------------------- */

static void sweep(ctl_liveness_t *lv)
{
    int64_t now = cr_now_ns();
    size_t cap = 16, n = 0;
    char (*names)[64] = malloc(cap * sizeof *names);
    rpc_call_t **calls = malloc(cap * sizeof *calls);
    if (!names || !calls) goto out;
    pthread_mutex_lock(&lv->trans);
    pthread_mutex_lock(&lv->mu);
    for (size_t b = 0; b < NBUCKETS; b++)
        for (entry_t *e = lv->buckets[b]; e; e = e->next) {
            if (!(e->session || e->grace) || now - e->last_ns <= lv->timeout_ns) continue;
            if (n == cap) {
                cap *= 2;
                void *a = realloc(names, cap * sizeof *names), *c = realloc(calls, cap * sizeof *calls);
                if (a) names = a;
                if (c) calls = c;
                if (!a || !c) goto unlock;
            }
            snprintf(names[n], 64, "%s", e->node);
            calls[n++] = e->call;
            if (e->session) lv->live--;
            e->session = 0;
            e->grace = 0;
            e->call = NULL;
        }
unlock:
    pthread_mutex_unlock(&lv->mu);
    for (size_t i = 0; i < n; i++) {
        cr_err_t err = {0};
        CR_WARN("liveness", "node %s lost: no heartbeat for %lld ms", names[i],
                (long long)(lv->timeout_ns / CR_NS_PER_MS));
        if (ctl_reg_node_lost(lv->reg, names[i], "no heartbeat", wall_ms(), &err))
            CR_ERROR("liveness", "marking node %s lost: %s", names[i], err.msg);
    }
    pthread_mutex_unlock(&lv->trans);
    for (size_t i = 0; i < n; i++)
        if (calls[i]) end_calls(&calls[i], 1, RPC_UNAVAILABLE, "no heartbeat received in time");
    for (size_t i = 0; i < n && lv->on_lost; i++) lv->on_lost(lv->on_lost_ud, names[i]);
out:
    free(names);
    free(calls);
}

static void *sweeper_main(void *arg)
{
    ctl_liveness_t *lv = arg;
    pthread_mutex_lock(&lv->mu);
    while (!lv->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t at = (int64_t)ts.tv_sec * CR_NS_PER_S + ts.tv_nsec + lv->period_ns;
        ts.tv_sec = at / CR_NS_PER_S;
        ts.tv_nsec = at % CR_NS_PER_S;
        pthread_cond_timedwait(&lv->wake, &lv->mu, &ts);
        if (lv->stop) break;
        pthread_mutex_unlock(&lv->mu);
        sweep(lv);
        pthread_mutex_lock(&lv->mu);
    }
    pthread_mutex_unlock(&lv->mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------ */

int ctl_liveness_create(ctl_registry_t *reg, int interval_ms, int missed, ctl_liveness_t **out,
                        cr_err_t *err)
{
    *out = NULL;
    if (interval_ms <= 0 || missed <= 0)
        return cr_err_set(err, CR_EINVAL, "heartbeat interval and missed count must be positive");
    ctl_liveness_t *lv = calloc(1, sizeof *lv);
    if (!lv) return cr_err_set(err, CR_ENOMEM, "liveness table");
    lv->reg = reg;
    lv->timeout_ns = (int64_t)interval_ms * missed * CR_NS_PER_MS;
    lv->period_ns = (int64_t)interval_ms * CR_NS_PER_MS / 4;
    pthread_mutex_init(&lv->trans, NULL);
    pthread_mutex_init(&lv->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&lv->wake, &ca);
    pthread_condattr_destroy(&ca);

    char **names = NULL;
    size_t n = 0;
    int rc = ctl_reg_nodes_live(reg, &names, &n, err);
    if (rc) goto fail;
    int64_t now = cr_now_ns();
    for (size_t i = 0; i < n; i++) {
        entry_t *e = find(lv, names[i], 1);
        if (!e) {
            rc = cr_err_set(err, CR_ENOMEM, "liveness table");
            break;
        }
        e->grace = 1;
        e->last_ns = now;
    }
    ctl_names_free(names, n);
    if (rc) goto fail;
    if (pthread_create(&lv->sweeper, NULL, sweeper_main, lv) != 0) {
        rc = cr_err_set(err, CR_EINTERNAL, "cannot start the liveness thread");
        goto fail;
    }
    lv->started = 1;
    *out = lv;
    return 0;
fail:
    ctl_liveness_destroy(lv);
    return rc;
}

void ctl_liveness_stopping(ctl_liveness_t *lv)
{
    pthread_mutex_lock(&lv->mu);
    lv->stopping = 1;
    pthread_mutex_unlock(&lv->mu);
}

void ctl_liveness_destroy(ctl_liveness_t *lv)
{
    if (!lv) return;
    pthread_mutex_lock(&lv->mu);
    int started = lv->started;
    lv->stop = 1;
    pthread_cond_signal(&lv->wake);
    pthread_mutex_unlock(&lv->mu);
    if (started) pthread_join(lv->sweeper, NULL);
    for (size_t b = 0; b < NBUCKETS; b++)
        for (entry_t *e = lv->buckets[b], *next; e; e = next) {
            next = e->next;
            if (e->call) rpc_call_unref(e->call);
            free(e);
        }
    pthread_cond_destroy(&lv->wake);
    pthread_mutex_destroy(&lv->mu);
    pthread_mutex_destroy(&lv->trans);
    free(lv);
}

/* ---- sessions --------------------------------------------------------------- */

int ctl_liveness_claim(ctl_liveness_t *lv, const Corral__V1__Inventory *inv, rpc_call_t *call,
                       uint64_t *session_id, cr_err_t *err)
{
    *session_id = 0;
    int rc = ctl_reg_inventory_check(lv->reg, inv, err);  /* validates inv->node too */
    if (rc) return rc;
    rpc_call_t *old = NULL;
    pthread_mutex_lock(&lv->trans);
    pthread_mutex_lock(&lv->mu);
    entry_t *e = find(lv, inv->node, 1);
    int64_t now = cr_now_ns();
    if (!e) {
        rc = cr_err_set(err, CR_ENOMEM, "liveness table");
    } else if (e->session && e->instance != inv->agent_instance && now - e->last_ns <= lv->timeout_ns) {
        char a[CR_ID_HEX_LEN + 1], b[CR_ID_HEX_LEN + 1];
        cr_id_format(e->instance, a);
        cr_id_format(inv->agent_instance, b);
        rc = cr_err_set(err, CR_EEXIST,
                        "node %s is already connected from another agent (instance %s, this one %s); "
                        "give each agent its own --name", inv->node, a, b);
    }
    pthread_mutex_unlock(&lv->mu);
    if (!rc) rc = ctl_reg_node_up(lv->reg, inv, wall_ms(), err);
    if (!rc) {
        pthread_mutex_lock(&lv->mu);
        old = e->call;
        if (!e->session) lv->live++;
        e->session = cr_id_new();
        e->instance = inv->agent_instance;
        e->last_ns = cr_now_ns();
        e->grace = 0;
        e->call = call;
        rpc_call_ref(call);
        *session_id = e->session;
        pthread_mutex_unlock(&lv->mu);
    }
    pthread_mutex_unlock(&lv->trans);
    if (old) end_calls(&old, 1, RPC_ABORTED, "replaced by a newer session of the same agent");
    return rc;
}

int ctl_liveness_update(ctl_liveness_t *lv, const Corral__V1__Inventory *inv, uint64_t session_id,
                        cr_err_t *err)
{
    pthread_mutex_lock(&lv->trans);
    pthread_mutex_lock(&lv->mu);
    entry_t *e = find(lv, inv->node, 0);
    int current = e && e->session == session_id;
    pthread_mutex_unlock(&lv->mu);
    int rc = current ? ctl_reg_node_up(lv->reg, inv, wall_ms(), err)
                     : cr_err_set(err, CR_EINVAL, "this session does not speak for node %s", inv->node);
    pthread_mutex_unlock(&lv->trans);
    return rc;
}

int ctl_liveness_beat(ctl_liveness_t *lv, const char *node, uint64_t session_id)
{
    int rc = CR_ENOENT;
    pthread_mutex_lock(&lv->mu);
    entry_t *e = find(lv, node, 0);
    if (e && e->session == session_id) {
        e->last_ns = cr_now_ns();
        rc = 0;
    }
    pthread_mutex_unlock(&lv->mu);
    return rc;
}

void ctl_liveness_release(ctl_liveness_t *lv, const char *node, uint64_t session_id,
                          const char *why)
{
    rpc_call_t *call = NULL;
    pthread_mutex_lock(&lv->trans);
    pthread_mutex_lock(&lv->mu);
    entry_t *e = find(lv, node, 0);
    int current = e && session_id && e->session == session_id;
    int stopping = lv->stopping;
    if (current) {
        call = e->call;
        e->call = NULL;
        e->session = 0;
        lv->live--;
    }
    pthread_mutex_unlock(&lv->mu);
    if (current && !stopping) {
        cr_err_t err = {0};
        CR_WARN("liveness", "node %s lost: %s", node, why);
        if (ctl_reg_node_lost(lv->reg, node, why, wall_ms(), &err))
            CR_ERROR("liveness", "marking node %s lost: %s", node, err.msg);
    }
    pthread_mutex_unlock(&lv->trans);
    if (call) rpc_call_unref(call);
    if (current && !stopping && lv->on_lost) lv->on_lost(lv->on_lost_ud, node);
}

int ctl_liveness_send(ctl_liveness_t *lv, const char *node, const ProtobufCMessage *msg,
                      cr_err_t *err)
{
    rpc_call_t *call = NULL;
    pthread_mutex_lock(&lv->mu);
    entry_t *e = find(lv, node, 0);
    if (e && e->session && e->call) {
        call = e->call;
        rpc_call_ref(call);
    }
    pthread_mutex_unlock(&lv->mu);
    if (!call) return cr_err_set(err, CR_ENOENT, "node %s has no agent connected", node);
    int rc = rpc_call_send(call, msg, 0, err);
    rpc_call_unref(call);
    return rc;
}

size_t ctl_liveness_count(ctl_liveness_t *lv)
{
    pthread_mutex_lock(&lv->mu);
    size_t n = lv->live;
    pthread_mutex_unlock(&lv->mu);
    return n;
}

int64_t ctl_liveness_last_seen_ms(ctl_liveness_t *lv, const char *node)
{
    int64_t ms = 0;
    pthread_mutex_lock(&lv->mu);
    entry_t *e = find(lv, node, 0);
    if (e && e->session) ms = (cr_wall_ns() - (cr_now_ns() - e->last_ns)) / CR_NS_PER_MS;
    pthread_mutex_unlock(&lv->mu);
    return ms;
}
