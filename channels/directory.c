/* directory.c - the channel directory (corral.v1.ChannelDirectory/Watch), hosted by
 * the controller: which process on which node holds each replica of a named
 * channel, told to the replicas (so they forward to each other) and to producers
 * (so they write to the replica on their node, or to all when there is none).
 *
 * State: a list of watchers, one per open Watch call, each holding a call
 * reference. A watcher with a replica is in its channel's set while `live`; it
 * stops being live when its call ends (on_done), when a newer replica of the same
 * channel on the same node replaces it, or when its node is lost. Every change of
 * a set bumps the directory's counter and sends the new set, with that counter as
 * its generation, to every watcher of the channel. Sends never wait (they happen
 * under the lock): a watcher whose send queue is full is ended with UNAVAILABLE and
 * comes back with a fresh call, which is sent the current set first; so a watcher
 * never holds a stale set without knowing its call ended. Nothing is stored:
 * after a controller restart the hubs call again and the sets form anew. */
#include "channels/directory.h"
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/log.h"
#include "corral/v1/directory.pb-c.h"

#define MAX_SET 64

typedef struct watcher {
    rpc_call_t *call;
    char channel[CH_NAME_MAX];
    int replica, live;
    char node[CH_NAME_MAX], addr[160];
    uint64_t process, max_msg;
    int inbound;
    struct watcher *next;
} watcher_t;

typedef struct chan_gen {
    char name[CH_NAME_MAX];
    uint64_t gen;
    struct chan_gen *next;
} chan_gen_t;

struct ch_directory {
    pthread_mutex_t mu;
    watcher_t *ws;
    chan_gen_t *gens;
    uint64_t counter;
    rpc_server_t *srv;
    rpc_method_t method;
    char addr[64];
};

static chan_gen_t *gen_of(ch_directory_t *d, const char *name)
{
    for (chan_gen_t *g = d->gens; g; g = g->next)
        if (strcmp(g->name, name) == 0) return g;
    chan_gen_t *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    snprintf(g->name, sizeof g->name, "%s", name);
    g->next = d->gens;
    d->gens = g;
    return g;
}

/* Under d->mu: sends channel name's set to w (never waits). */
static void send_set(ch_directory_t *d, watcher_t *w, uint64_t gen)
{
    Corral__V1__ChReplica reps[MAX_SET], *ptrs[MAX_SET];
    size_t n = 0;
    for (watcher_t *x = d->ws; x && n < MAX_SET; x = x->next) {
        if (!x->replica || !x->live || strcmp(x->channel, w->channel) != 0) continue;
        corral__v1__ch_replica__init(&reps[n]);
        reps[n].node = x->node;
        reps[n].process = x->process;
        reps[n].addr = x->addr;
        reps[n].inbound = x->inbound;
        reps[n].max_msg = x->max_msg;
        ptrs[n] = &reps[n];
        n++;
    }
    Corral__V1__ChReplicaSet set = CORRAL__V1__CH_REPLICA_SET__INIT;
    set.channel = w->channel;
    set.generation = gen;
    set.n_replicas = n;
    set.replicas = ptrs;
    cr_err_t e = {0};
    int rc = rpc_call_send(w->call, &set.base, 0, &e);
    if (rc == CR_EBUSY)
        rpc_call_finish(w->call, RPC_UNAVAILABLE, "channel directory: watcher of %s too slow to follow its set",
                        w->channel);
}

/* Under d->mu: channel name's set changed; every watcher of it hears so. */
static void changed(ch_directory_t *d, const char *name)
{
    chan_gen_t *g = gen_of(d, name);
    uint64_t gen = ++d->counter;
    if (g) g->gen = gen;
    for (watcher_t *w = d->ws; w; w = w->next)
        if (strcmp(w->channel, name) == 0) send_set(d, w, gen);
}

static void log_set(ch_directory_t *d, const char *name, const char *what, const watcher_t *w)
{
    size_t n = 0;
    for (watcher_t *x = d->ws; x; x = x->next) n += x->replica && x->live && strcmp(x->channel, name) == 0;
    CR_INFO("channels", "channel directory: %s: replica on node %s (process %016llx) %s; %zu replica(s) now", name,
            w->node, (unsigned long long)w->process, what, n);
}

static void dir_message(rpc_call_t *call, const ProtobufCMessage *msg)
{
    ch_directory_t *d = rpc_call_method(call)->user;
    const Corral__V1__ChWatch *req = (const Corral__V1__ChWatch *)msg;
    if (rpc_call_data(call)) {
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "channel directory: one request per call");
        return;
    }
    if (!req->channel || !cr_name_valid(req->channel)) {
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "channel directory: channel name \"%.64s\" is not valid",
                        req->channel ? req->channel : "");
        return;
    }
    const Corral__V1__ChReplica *r = req->replica;
    if (r && (!r->node || !cr_name_valid(r->node) || r->process == 0 || !r->addr || strlen(r->addr) >= 160)) {
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "channel directory: replica of %s lacks a valid node name, "
                        "process id or address", req->channel);
        return;
    }
    watcher_t *w = calloc(1, sizeof *w);
    if (!w) {
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, "channel directory: out of memory");
        return;
    }
    snprintf(w->channel, sizeof w->channel, "%s", req->channel);
    w->call = call;
    rpc_call_ref(call);
    rpc_call_set_data(call, w);
    if (r) {
        w->replica = w->live = 1;
        snprintf(w->node, sizeof w->node, "%s", r->node);
        snprintf(w->addr, sizeof w->addr, "%s", r->addr);
        w->process = r->process;
        w->inbound = r->inbound;
        w->max_msg = r->max_msg;
    }
    pthread_mutex_lock(&d->mu);
    size_t n = 0;
    if (r) { /* one replica per node: the newer (a restart) replaces the older */
        for (watcher_t *x = d->ws; x; x = x->next) {
            if (!x->replica || !x->live || strcmp(x->channel, w->channel) != 0) continue;
            n++;
            if (strcmp(x->node, w->node) != 0) continue;
            x->live = 0;
            n--;
            log_set(d, w->channel, "replaced by a newer one", x);
            rpc_call_finish(x->call, RPC_ABORTED, "channel directory: the replica of %s on node %s is now "
                            "process %016llx", w->channel, w->node, (unsigned long long)w->process);
        }
    }
    w->next = d->ws;
    d->ws = w;
    if (r && n >= MAX_SET) {
        w->live = 0;
        pthread_mutex_unlock(&d->mu);
        rpc_call_finish(call, RPC_RESOURCE_EXHAUSTED, "channel directory: channel %s has %d replicas already",
                        w->channel, MAX_SET);
        return;
    }
    if (r) {
        log_set(d, w->channel, "joined", w);
        changed(d, w->channel);
    } else {
        chan_gen_t *g = gen_of(d, w->channel);
        send_set(d, w, g ? g->gen : 0);
    }
    pthread_mutex_unlock(&d->mu);
}

static void dir_done(rpc_call_t *call, rpc_code_t code)
{
    ch_directory_t *d = rpc_call_method(call)->user;
    watcher_t *w = rpc_call_data(call);
    if (!w) return;
    pthread_mutex_lock(&d->mu);
    for (watcher_t **pp = &d->ws; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    if (w->replica && w->live) {
        w->live = 0;
        log_set(d, w->channel, code == RPC_OK ? "left" : "is gone (its call ended)", w);
        changed(d, w->channel);
    }
    pthread_mutex_unlock(&d->mu);
    rpc_call_unref(w->call);
    free(w);
}

void ch_directory_method(ch_directory_t *d, rpc_method_t *out)
{
    *out = (rpc_method_t){.name = "/corral.v1.ChannelDirectory/Watch", .kind = RPC_SERVER_STREAM,
                          .input = &corral__v1__ch_watch__descriptor,
                          .output = &corral__v1__ch_replica_set__descriptor, .user = d,
                          .on_message = dir_message, .on_done = dir_done};
}

size_t ch_directory_node_lost(ch_directory_t *d, const char *node)
{
    size_t n = 0;
    pthread_mutex_lock(&d->mu);
    for (watcher_t *w = d->ws; w; w = w->next) {
        if (!w->replica || !w->live || strcmp(w->node, node) != 0) continue;
        w->live = 0;
        n++;
        log_set(d, w->channel, "left: its node was lost", w);
        rpc_call_finish(w->call, RPC_UNAVAILABLE, "channel directory: node %s was lost", node);
        changed(d, w->channel);
    }
    pthread_mutex_unlock(&d->mu);
    return n;
}

size_t ch_directory_replicas(ch_directory_t *d, const char *name)
{
    size_t n = 0;
    pthread_mutex_lock(&d->mu);
    for (watcher_t *w = d->ws; w; w = w->next) n += w->replica && w->live && strcmp(w->channel, name) == 0;
    pthread_mutex_unlock(&d->mu);
    return n;
}

int ch_directory_create(const char *listen, ch_directory_t **out, cr_err_t *err)
{
    *out = NULL;
    ch_directory_t *d = calloc(1, sizeof *d);
    if (!d) return cr_err_set(err, CR_ENOMEM, "channel directory: out of memory");
    pthread_mutex_init(&d->mu, NULL);
    ch_directory_method(d, &d->method);
    if (listen) {
        rpc_opts_t o = {0};
        int rc = rpc_server_create(&d->srv, listen, &o, &d->method, 1, err);
        if (rc == 0) rc = rpc_server_start(d->srv, err);
        if (rc) {
            rpc_server_destroy(d->srv);
            pthread_mutex_destroy(&d->mu);
            free(d);
            return cr_err_wrap(err, "channel directory on %s", listen);
        }
        ch_listen_addr(listen, NULL, rpc_server_port(d->srv), d->addr, sizeof d->addr);
    }
    *out = d;
    return 0;
}

const char *ch_directory_addr(const ch_directory_t *d) { return d->addr; }

void ch_directory_destroy(ch_directory_t *d)
{
    if (!d) return;
    rpc_server_destroy(d->srv); /* every call's on_done runs: the list empties */
    pthread_mutex_lock(&d->mu);
    while (d->ws) {
        watcher_t *w = d->ws;
        d->ws = w->next;
        rpc_call_unref(w->call);
        free(w);
    }
    while (d->gens) {
        chan_gen_t *g = d->gens;
        d->gens = g->next;
        free(g);
    }
    pthread_mutex_unlock(&d->mu);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
