/* dirclient.c - a hub's side of the channel directory (directory.c, hosted by the
 * controller): one Watch call per channel the hub consumes as a replica (its
 * registration: the replica is in the set while the call lasts) and one per
 * channel its producers open by name. Each call receives every change of the
 * channel's replica set; a joined channel is re-replicated with each new set
 * (ch_channel_replicate), and named producers follow the set on their next put
 * (route_named.c).
 *
 * One thread per hub owns the calls: it opens them, reopens them with back-off
 * when they end (a controller restart, a lost connection; the replica then keeps
 * its last set meanwhile), applies new sets to joined channels, and ends the calls
 * of channels that leave. Stream callbacks only store the newest set and wake the
 * thread. A replica whose call ends with ABORTED was replaced by a newer process
 * of the same channel on its node: it does not join again (it would take the
 * place back and the two would alternate), and says so in the log.
 *
 * Sets are told apart by the hub's own count of sets received (version), not by
 * the directory's generation, which starts again when the controller restarts.
 *
 * Invariants, under dc->mu: a watch is removed from the list only by the thread;
 * `c` is cleared by ch_dirclient_leave, which waits until no new set is being
 * applied to it, so the channel is never used after it left. */
#include "channels/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/log.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "corral/v1/directory.pb-c.h"

#define METHOD "/corral.v1.ChannelDirectory/Watch"
#define TICK_MS 100

typedef struct stream_ctx {
    ch_dir_watch_t *w;
    uint64_t gen;
} stream_ctx_t;

struct ch_dir_watch {
    ch_dirclient_t *dc;
    char name[CH_NAME_MAX];
    ch_channel_t *c;          /* the replica here (joined), or NULL: producers' watch */
    int joined;               /* registered as a replica (c may be gone: leaving) */
    ch_replica_opts_t ro;
    size_t max_msg;
    rpc_stream_t *st;         /* the thread's */
    stream_ctx_t *ctx;
    uint64_t stream_gen;
    int dead, replaced, leaving, applying;
    int64_t next_try_ns;
    rpc_backoff_t bo;
    ch_dir_set_t set;         /* newest received */
    uint64_t applied;         /* generation applied to c */
    uint64_t applied_version; /* version (ch_dir_set_t) applied to c: 0 none */
    struct ch_dir_watch *next;
};

struct ch_dirclient {
    ch_hub_t *h;
    char addr[160];
    rpc_channel_t *rch;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    ch_dir_watch_t *ws;
};

static int timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) return pthread_cond_wait(cv, mu);
    if (cr_now_ns() >= deadline_ns) return ETIMEDOUT;
    struct timespec ts = {.tv_sec = deadline_ns / CR_NS_PER_S, .tv_nsec = deadline_ns % CR_NS_PER_S};
    return pthread_cond_timedwait(cv, mu, &ts);
}

static void set_copy(ch_dir_set_t *dst, const ch_dir_set_t *src)
{
    dst->gen = src->gen;
    dst->version = src->version;
    dst->n = src->n;
    for (size_t i = 0; i < src->n; i++) {
        memcpy(dst->node[i], src->node[i], sizeof dst->node[i]);
        memcpy(dst->addr[i], src->addr[i], sizeof dst->addr[i]);
        dst->w[i] = src->w[i];
        dst->w[i].node = dst->node[i];
        dst->w[i].addr = dst->addr[i];
    }
}

/* ---- stream callbacks (the rpc channel's thread) ---- */

static void on_message(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    stream_ctx_t *x = user;
    ch_dir_watch_t *w = x->w;
    const Corral__V1__ChReplicaSet *s = (const Corral__V1__ChReplicaSet *)msg;
    ch_dirclient_t *dc = w->dc;
    pthread_mutex_lock(&dc->mu);
    if (x->gen == w->stream_gen && s->channel && strcmp(s->channel, w->name) == 0) {
        ch_dir_set_t *d = &w->set;
        d->n = 0;
        for (size_t i = 0; i < s->n_replicas && d->n < CH_DIR_MAX; i++) {
            const Corral__V1__ChReplica *r = s->replicas[i];
            if (!r->node || !cr_name_valid(r->node) || !r->process || !r->addr || strlen(r->addr) >= 160) {
                CR_WARN("channels", "channel directory: set of %s: replica %zu ignored (no valid node, process "
                        "or address)", w->name, i);
                continue;
            }
            snprintf(d->node[d->n], sizeof d->node[0], "%s", r->node);
            snprintf(d->addr[d->n], sizeof d->addr[0], "%s", r->addr);
            d->w[d->n] = (ch_where_t){.node = d->node[d->n], .process = r->process, .addr = d->addr[d->n],
                                      .inbound = r->inbound, .max_msg = (size_t)r->max_msg};
            d->n++;
        }
        d->gen = s->generation;
        d->version++;
        rpc_backoff_reset(&w->bo);
        pthread_cond_broadcast(&dc->cv);
    }
    pthread_mutex_unlock(&dc->mu);
}

static void on_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    stream_ctx_t *x = user;
    ch_dir_watch_t *w = x->w;
    ch_dirclient_t *dc = w->dc;
    pthread_mutex_lock(&dc->mu);
    if (x->gen == w->stream_gen) {
        w->dead = 1;
        w->next_try_ns = cr_now_ns() + (int64_t)rpc_backoff_next_ms(&w->bo) * CR_NS_PER_MS;
        if (code == RPC_ABORTED && w->joined) {
            w->replaced = 1;
            CR_ERROR("channels", "channel %s: the directory took a newer replica on this node instead of this "
                     "one (%s); this one is no longer in the set", w->name, details);
        } else if (!dc->stop && !w->leaving) {
            CR_DEBUG("channels", "channel directory: watch of %s ended (%s: %s); again soon", w->name,
                     rpc_code_name(code), details);
        }
        pthread_cond_broadcast(&dc->cv);
    }
    pthread_mutex_unlock(&dc->mu);
}

/* ---- the thread ---- */

/* Opens w's call; dc->mu held on entry and exit, released meanwhile. */
static void open_call(ch_dirclient_t *dc, ch_dir_watch_t *w)
{
    rpc_stream_t *old = w->st;
    stream_ctx_t *old_ctx = w->ctx;
    w->st = NULL;
    w->ctx = NULL;
    stream_ctx_t *x = malloc(sizeof *x);
    if (x) *x = (stream_ctx_t){w, ++w->stream_gen};
    w->dead = 0;
    int joined = w->joined;
    size_t max_msg = w->max_msg;
    pthread_mutex_unlock(&dc->mu);
    rpc_stream_destroy(old);
    free(old_ctx);
    cr_err_t e = {0};
    rpc_stream_t *st = NULL;
    int rc = x ? 0 : cr_err_set(&e, CR_ENOMEM, "out of memory");
    if (rc == 0) {
        rpc_stream_cbs_t cbs = {.on_message = on_message, .on_close = on_close, .user = x};
        rc = rpc_stream_open(dc->rch, &st, METHOD, &corral__v1__ch_replica_set__descriptor, &cbs, 0, &e);
    }
    if (rc == 0) {
        Corral__V1__ChWatch req = CORRAL__V1__CH_WATCH__INIT;
        Corral__V1__ChReplica rep = CORRAL__V1__CH_REPLICA__INIT;
        req.channel = w->name;
        if (joined) {
            ch_where_t me;
            ch_hub_where(dc->h, &me);
            rep.node = (char *)me.node;
            rep.process = me.process;
            rep.addr = (char *)(me.addr ? me.addr : "");
            rep.inbound = me.inbound;
            rep.max_msg = max_msg;
            req.replica = &rep;
        }
        rc = rpc_stream_send(st, &req.base, 1000, &e);
        if (rc == 0) rc = rpc_stream_close_send(st, &e);
    }
    pthread_mutex_lock(&dc->mu);
    w->st = st;
    w->ctx = x;
    if (rc) {
        CR_DEBUG("channels", "channel directory %s: watch of %s: %s", dc->addr, w->name, e.msg);
        w->dead = 1;
    }
    if (w->dead) w->next_try_ns = cr_now_ns() + (int64_t)rpc_backoff_next_ms(&w->bo) * CR_NS_PER_MS;
}

/* Applies w's newest set to its channel; dc->mu held on entry and exit. */
static void apply_set(ch_dirclient_t *dc, ch_dir_watch_t *w)
{
    static __thread ch_dir_set_t s; /* large: not on the stack */
    set_copy(&s, &w->set);
    ch_channel_t *c = w->c;
    ch_replica_opts_t ro = w->ro;
    w->applying = 1;
    pthread_mutex_unlock(&dc->mu);
    cr_err_t e = {0};
    if (ch_channel_replicate(c, s.w, s.n, &ro, &e) != 0)
        CR_ERROR("channels", "channel %s: the directory's replica set (generation %llu) not applied: %s", w->name,
                 (unsigned long long)s.gen, e.msg);
    pthread_mutex_lock(&dc->mu);
    w->applying = 0;
    w->applied = s.gen;
    w->applied_version = s.version;
    pthread_cond_broadcast(&dc->cv);
}

static void watch_free(ch_dirclient_t *dc, ch_dir_watch_t *w)
{
    rpc_stream_destroy(w->st);
    free(w->ctx);
    free(w);
}

static void *dir_main(void *arg)
{
    ch_dirclient_t *dc = arg;
    pthread_mutex_lock(&dc->mu);
    while (!dc->stop) {
        int again = 0;
        for (ch_dir_watch_t **pp = &dc->ws; *pp && !dc->stop;) {
            ch_dir_watch_t *w = *pp;
            if (w->leaving) { /* its call ends: the replica leaves the set */
                *pp = w->next;
                pthread_mutex_unlock(&dc->mu);
                watch_free(dc, w);
                pthread_mutex_lock(&dc->mu);
                again = 1;
                break;
            }
            if ((!w->st || w->dead) && !w->replaced && cr_now_ns() >= w->next_try_ns) {
                open_call(dc, w);
                again = 1;
            }
            if (w->c && w->set.version != w->applied_version && !w->leaving) {
                apply_set(dc, w);
                again = 1;
            }
            pp = &w->next;
        }
        if (!again && !dc->stop) timed_wait(&dc->cv, &dc->mu, cr_now_ns() + TICK_MS * CR_NS_PER_MS);
    }
    pthread_mutex_unlock(&dc->mu);
    return NULL;
}

/* ---- the hub's calls ---- */

int ch_dirclient_start(ch_hub_t *h, const char *addr, ch_dirclient_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_dirclient_t *dc = calloc(1, sizeof *dc);
    if (!dc) return cr_err_set(err, CR_ENOMEM, "hub: out of memory");
    dc->h = h;
    snprintf(dc->addr, sizeof dc->addr, "%s", addr);
    rpc_opts_t o = {0};
    ch_hub_relay_security(h, &o); /* the directory is the controller: the same credentials */
    o.backoff_initial_ms = (int)ch_hub_reconnect_ms(h);
    o.backoff_max_ms = 2000;
    int rc = rpc_channel_create(&dc->rch, addr, &o, err);
    if (rc) {
        free(dc);
        return cr_err_wrap(err, "hub %s: channel directory %s", ch_hub_node(h), addr);
    }
    pthread_mutex_init(&dc->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&dc->cv, &a);
    pthread_condattr_destroy(&a);
    if (pthread_create(&dc->thread, NULL, dir_main, dc) != 0) {
        rpc_channel_destroy(dc->rch);
        pthread_mutex_destroy(&dc->mu);
        pthread_cond_destroy(&dc->cv);
        free(dc);
        return cr_err_set(err, CR_EIO, "hub %s: cannot start the channel directory thread", ch_hub_node(h));
    }
    *out = dc;
    return 0;
}

void ch_dirclient_stop(ch_dirclient_t *dc)
{
    if (!dc) return;
    pthread_mutex_lock(&dc->mu);
    dc->stop = 1;
    pthread_cond_broadcast(&dc->cv);
    pthread_mutex_unlock(&dc->mu);
    pthread_join(dc->thread, NULL);
    while (dc->ws) {
        ch_dir_watch_t *w = dc->ws;
        dc->ws = w->next;
        watch_free(dc, w);
    }
    rpc_channel_destroy(dc->rch);
    pthread_mutex_destroy(&dc->mu);
    pthread_cond_destroy(&dc->cv);
    free(dc);
}

static ch_dir_watch_t *watch_new(ch_dirclient_t *dc, const char *name)
{
    ch_dir_watch_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->dc = dc;
    snprintf(w->name, sizeof w->name, "%s", name);
    rpc_backoff_init(&w->bo, (int)ch_hub_reconnect_ms(dc->h), 2000);
    return w;
}

/* Whether w's newest set holds this hub's own replica. */
static int set_has_me(ch_dirclient_t *dc, const ch_dir_set_t *s)
{
    uint64_t me = ch_hub_id(dc->h);
    for (size_t i = 0; i < s->n; i++)
        if (s->w[i].process == me) return 1;
    return 0;
}

int ch_channel_join(ch_channel_t *c, const ch_replica_opts_t *o, int64_t timeout_ms, cr_err_t *err)
{
    ch_hub_t *h = ch_channel_hub(c);
    ch_dirclient_t *dc = ch_hub_dir(h);
    const char *name = ch_channel_name(c);
    if (!dc)
        return cr_err_set(err, CR_EINVAL, "channel %s: hub of node %s has no channel directory (hub option "
                          "directory)", name, ch_hub_node(h));
    int64_t deadline = timeout_ms < 0 ? -1 : cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    pthread_mutex_lock(&dc->mu);
    for (ch_dir_watch_t *w = dc->ws; w; w = w->next) {
        if (w->joined && !w->leaving && strcmp(w->name, name) == 0) {
            pthread_mutex_unlock(&dc->mu);
            return cr_err_set(err, CR_EEXIST, "channel %s has joined the directory already", name);
        }
    }
    ch_dir_watch_t *w = watch_new(dc, name);
    if (!w) {
        pthread_mutex_unlock(&dc->mu);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", name);
    }
    w->c = c;
    w->joined = 1;
    if (o) w->ro = *o;
    w->max_msg = ch_channel_max_msg(c);
    w->next = dc->ws;
    dc->ws = w;
    pthread_cond_broadcast(&dc->cv);
    int rc = 0;
    while (!(w->applied_version && w->applied_version == w->set.version && set_has_me(dc, &w->set))) {
        if (w->replaced) {
            rc = cr_err_set(err, CR_EBUSY, "channel %s: another replica on node %s took this one's place", name,
                            ch_hub_node(h));
            break;
        }
        if (timed_wait(&dc->cv, &dc->mu, deadline) == ETIMEDOUT) {
            rc = cr_err_set(err, CR_ETIMEDOUT, "channel %s: the channel directory at %s has not answered yet "
                            "(the channel stays registered and joins when it does)", name, dc->addr);
            break;
        }
    }
    pthread_mutex_unlock(&dc->mu);
    return rc;
}

uint64_t ch_channel_directory_generation(ch_channel_t *c)
{
    ch_dirclient_t *dc = ch_hub_dir(ch_channel_hub(c));
    if (!dc) return 0;
    uint64_t g = 0;
    pthread_mutex_lock(&dc->mu);
    for (ch_dir_watch_t *w = dc->ws; w; w = w->next)
        if (w->c == c) g = w->applied;
    pthread_mutex_unlock(&dc->mu);
    return g;
}

void ch_dirclient_leave(ch_dirclient_t *dc, ch_channel_t *c)
{
    pthread_mutex_lock(&dc->mu);
    for (ch_dir_watch_t *w = dc->ws; w; w = w->next) {
        if (w->c != c) continue;
        w->c = NULL;
        w->leaving = 1;
        while (w->applying) pthread_cond_wait(&dc->cv, &dc->mu);
    }
    pthread_cond_broadcast(&dc->cv);
    pthread_mutex_unlock(&dc->mu);
}

int ch_dirclient_watch(ch_dirclient_t *dc, const char *name, int64_t deadline_ns, ch_dir_watch_t **out,
                       cr_err_t *err)
{
    pthread_mutex_lock(&dc->mu);
    ch_dir_watch_t *w = dc->ws;
    while (w && (w->joined || strcmp(w->name, name) != 0)) w = w->next;
    if (!w) {
        w = watch_new(dc, name);
        if (!w) {
            pthread_mutex_unlock(&dc->mu);
            return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", name);
        }
        w->next = dc->ws;
        dc->ws = w;
        pthread_cond_broadcast(&dc->cv);
    }
    int rc = 0;
    while (!w->set.version) {
        if (timed_wait(&dc->cv, &dc->mu, deadline_ns) == ETIMEDOUT) {
            rc = cr_err_set(err, CR_EUNAVAIL, "channel %s: the channel directory at %s did not answer", name,
                            dc->addr);
            break;
        }
    }
    pthread_mutex_unlock(&dc->mu);
    *out = w;
    return rc;
}

void ch_dir_watch_get(ch_dir_watch_t *w, ch_dir_set_t *out)
{
    pthread_mutex_lock(&w->dc->mu);
    set_copy(out, &w->set);
    pthread_mutex_unlock(&w->dc->mu);
}

uint64_t ch_dir_watch_version(ch_dir_watch_t *w)
{
    pthread_mutex_lock(&w->dc->mu);
    uint64_t v = w->set.version;
    pthread_mutex_unlock(&w->dc->mu);
    return v;
}

int ch_dir_watch_wait(ch_dir_watch_t *w, uint64_t v, int64_t deadline_ns, cr_err_t *err)
{
    int rc = 0;
    pthread_mutex_lock(&w->dc->mu);
    while (w->set.version == v && rc == 0)
        if (timed_wait(&w->dc->cv, &w->dc->mu, deadline_ns) == ETIMEDOUT)
            rc = cr_err_set(err, CR_ETIMEDOUT, "channel %s: the replica set did not change in time", w->name);
    pthread_mutex_unlock(&w->dc->mu);
    return rc;
}

uint64_t ch_hub_directory_generation(ch_hub_t *h, const char *name)
{
    ch_dirclient_t *dc = ch_hub_dir(h);
    uint64_t g = 0;
    if (!dc || !name) return 0;
    pthread_mutex_lock(&dc->mu);
    for (ch_dir_watch_t *w = dc->ws; w; w = w->next)
        if (!w->joined && strcmp(w->name, name) == 0) g = w->set.gen;
    pthread_mutex_unlock(&dc->mu);
    return g;
}
