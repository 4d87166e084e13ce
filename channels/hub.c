/* hub.c - a process's data-plane endpoint: its node name and id, the registry of
 * the channels its consumers created, and the servers that make them reachable
 * (shared-memory rings always; the direct gRPC route and the relay link when asked),
 * and its client of the channel directory (dirclient.c) when one is named.
 * The registry is a short list under one mutex: channels are created and looked up
 * rarely (once per stream), never per message. */
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/log.h"

/* net.c: the direct-route server and the relay link of a hub. */
int ch_net_start(ch_hub_t *h, const char *listen, const char *advertise, const char *relay, void **net,
                 cr_err_t *err);
void ch_net_stop(void *net);
const char *ch_net_addr(void *net);

ch_channel_t **ch_channel_next_ptr(ch_channel_t *c);

struct ch_hub {
    char node[CH_NAME_MAX];
    uint64_t id;
    int shm;
    char *relay;
    int64_t reconnect_ms;
    pthread_mutex_t mu;
    ch_channel_t *channels;
    void *net;
    ch_dirclient_t *dir;  /* the channel directory's client, or NULL */
};

int ch_hub_create(const ch_hub_opts_t *o, ch_hub_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!o || !o->node || !cr_name_valid(o->node))
        return cr_err_set(err, CR_EINVAL, "hub: node name \"%s\" is not valid",
                          o && o->node ? o->node : "(null)");
    ch_hub_t *h = calloc(1, sizeof *h);
    if (!h) return cr_err_set(err, CR_ENOMEM, "hub: out of memory");
    snprintf(h->node, sizeof h->node, "%s", o->node);
    h->id = cr_id_new();
    h->shm = o->shm >= 0;
    h->reconnect_ms = o->reconnect_ms > 0 ? o->reconnect_ms : 100;
    h->relay = o->relay ? strdup(o->relay) : NULL;
    pthread_mutex_init(&h->mu, NULL);
    if (h->shm) {
        int n = ch_ring_sweep();
        if (n) CR_INFO("channels", "removed %d shared-memory ring(s) of dead processes", n);
    }
    if (o->listen || o->relay) {
        int rc = ch_net_start(h, o->listen, o->advertise, o->relay, &h->net, err);
        if (rc) {
            pthread_mutex_destroy(&h->mu);
            free(h->relay);
            free(h);
            return rc;
        }
    }
    if (o->directory) {
        int rc = ch_dirclient_start(h, o->directory, &h->dir, err);
        if (rc) {
            if (h->net) ch_net_stop(h->net);
            pthread_mutex_destroy(&h->mu);
            free(h->relay);
            free(h);
            return rc;
        }
    }
    *out = h;
    return 0;
}

void ch_hub_destroy(ch_hub_t *h)
{
    if (!h) return;
    if (h->channels) CR_WARN("channels", "hub %s destroyed with channel %s still open", h->node,
                             ch_channel_name(h->channels));
    ch_dirclient_stop(h->dir); /* its producers' watches go with it: close producers first */
    if (h->net) ch_net_stop(h->net);
    pthread_mutex_destroy(&h->mu);
    free(h->relay);
    free(h);
}

void ch_hub_where(const ch_hub_t *h, ch_where_t *out)
{
    out->node = h->node;
    out->process = h->id;
    out->addr = h->net ? ch_net_addr(h->net) : "";
    out->inbound = out->addr && out->addr[0];
    out->max_msg = 0;
}

uint64_t ch_hub_id(const ch_hub_t *h) { return h->id; }
const char *ch_hub_node(const ch_hub_t *h) { return h->node; }
const char *ch_hub_relay(const ch_hub_t *h) { return h->relay; }
int64_t ch_hub_reconnect_ms(const ch_hub_t *h) { return h->reconnect_ms; }
int ch_hub_shm(const ch_hub_t *h) { return h->shm; }
ch_dirclient_t *ch_hub_dir(const ch_hub_t *h) { return h->dir; }

void ch_hub_lock(ch_hub_t *h) { pthread_mutex_lock(&h->mu); }
void ch_hub_unlock(ch_hub_t *h) { pthread_mutex_unlock(&h->mu); }

ch_channel_t *ch_hub_lookup_locked(ch_hub_t *h, const char *name)
{
    for (ch_channel_t *c = h->channels; c; c = *ch_channel_next_ptr(c))
        if (strcmp(ch_channel_name(c), name) == 0) return c;
    return NULL;
}

int ch_hub_register(ch_hub_t *h, ch_channel_t *c, cr_err_t *err)
{
    pthread_mutex_lock(&h->mu);
    if (ch_hub_lookup_locked(h, ch_channel_name(c))) {
        pthread_mutex_unlock(&h->mu);
        return cr_err_set(err, CR_EEXIST, "channel %s already exists on node %s",
                          ch_channel_name(c), h->node);
    }
    *ch_channel_next_ptr(c) = h->channels;
    h->channels = c;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

void ch_hub_unregister(ch_hub_t *h, ch_channel_t *c)
{
    pthread_mutex_lock(&h->mu);
    for (ch_channel_t **p = &h->channels; *p; p = ch_channel_next_ptr(*p)) {
        if (*p == c) {
            *p = *ch_channel_next_ptr(c);
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
}
