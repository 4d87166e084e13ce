/* hub.c - a process's data-plane endpoint: its node name and id, the registry of
 * the channels its consumers created, and the servers that make them reachable
 * (shared-memory rings always; the direct gRPC route and the relay link when asked),
 * and its client of the channel directory (dirclient.c) when one is named.
 * It also keeps how to dial the relay (the node's security settings: with a
 * controller serving mutual TLS, the node's certificate), which the hub's own link,
 * its tunnelled producers and the directory client all use. The registry is a
 * short list under one mutex: channels are created and looked up rarely (once per
 * stream), never per message. */
#include "channels/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/log.h"
#include "common/rpc/rpc.h"

/* net.c: the direct-route server and the relay link of a hub. */
int ch_net_start(ch_hub_t *h, const char *listen, const char *advertise, const char *relay, void **net,
                 cr_err_t *err);
void ch_net_stop(void *net);
const char *ch_net_addr(void *net);
int ch_net_relay_wait(void *net, int64_t timeout_ms, cr_err_t *err);
void ch_net_relay_error(void *net, char *buf, size_t n);

ch_channel_t **ch_channel_next_ptr(ch_channel_t *c);

struct ch_hub {
    char node[CH_NAME_MAX];
    uint64_t id;
    int shm;
    char *relay;
    /* how to dial the relay (copied from ch_hub_opts_t.relay_rpc) */
    rpc_security_t relay_security;
    char *relay_cert_dir, *relay_server_name, *relay_token;
    int64_t reconnect_ms;
    pthread_mutex_t mu;
    ch_channel_t *channels;
    void *net;
    ch_dirclient_t *dir;  /* the channel directory's client, or NULL */
};

static void hub_free(ch_hub_t *h)
{
    free(h->relay);
    free(h->relay_cert_dir);
    free(h->relay_server_name);
    if (h->relay_token) memset(h->relay_token, 0, strlen(h->relay_token)); /* no secret left in freed memory */
    free(h->relay_token);
    free(h);
}

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
    if ((o->relay || o->directory) && o->relay_rpc) {
        const rpc_opts_t *r = o->relay_rpc;
        h->relay_security = r->security;
        h->relay_cert_dir = r->cert_dir ? strdup(r->cert_dir) : NULL;
        h->relay_server_name = r->server_name ? strdup(r->server_name) : NULL;
        h->relay_token = r->token ? strdup(r->token) : NULL;
        if (r->security != RPC_INSECURE && !r->cert_dir) {
            hub_free(h);
            return cr_err_set(err, CR_EINVAL, "hub %s: the relay's security is TLS but relay_rpc gives no "
                              "certificate directory (cert_dir)", o->node);
        }
    }
    pthread_mutex_init(&h->mu, NULL);
    if (h->shm) {
        int n = ch_ring_sweep();
        if (n) CR_INFO("channels", "removed %d shared-memory ring(s) of dead processes", n);
    }
    if (o->listen || o->relay) {
        int rc = ch_net_start(h, o->listen, o->advertise, o->relay, &h->net, err);
        if (rc) {
            pthread_mutex_destroy(&h->mu);
            hub_free(h);
            return rc;
        }
    }
    if (o->directory) {
        int rc = ch_dirclient_start(h, o->directory, &h->dir, err);
        if (rc) {
            if (h->net) ch_net_stop(h->net);
            pthread_mutex_destroy(&h->mu);
            hub_free(h);
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
    hub_free(h);
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

void ch_hub_relay_security(const ch_hub_t *h, rpc_opts_t *o)
{
    o->security = h->relay_security;
    o->cert_dir = h->relay_cert_dir;
    o->server_name = h->relay_server_name;
    o->token = h->relay_token;
}

int ch_hub_relay_wait(ch_hub_t *h, int64_t timeout_ms, cr_err_t *err)
{
    if (!h->relay || !h->net) return cr_err_set(err, CR_EINVAL, "hub %s has no relay", h->node);
    return ch_net_relay_wait(h->net, timeout_ms, err);
}

void ch_hub_relay_error(ch_hub_t *h, char *buf, size_t n)
{
    buf[0] = 0;
    if (h->relay && h->net) ch_net_relay_error(h->net, buf, n);
}

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
