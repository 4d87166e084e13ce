/* conn.c - what both ends of a connection are configured with: channel
 * arguments (message limits, keepalive on both sides so a dead or frozen peer is
 * noticed in about two ping periods, reconnect backoff) and credentials read from a
 * certificate directory (ca.pem, cert.pem, key.pem). */
#include "common/rpc/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The flow-control window of a bulk stream (see rpc_args_build). */
#define RPC_BULK_WINDOW (16 << 20)

/* How long one connection attempt may take at least: a TLS handshake on a busy
 * host takes hundreds of milliseconds; a frozen peer is given up after this. */
#define RPC_CONNECT_TIMEOUT_MS 5000

size_t rpc_opts_max_message(const rpc_opts_t *o)
{
    return o && o->max_message ? o->max_message : RPC_DEFAULT_MAX_MESSAGE;
}

int rpc_opts_send_queue(const rpc_opts_t *o)
{
    return o && o->send_queue > 0 ? o->send_queue : RPC_DEFAULT_SEND_QUEUE;
}

static void arg_int(rpc_args_t *a, const char *key, int v)
{
    grpc_arg *g = &a->arg[a->set.num_args++];
    g->type = GRPC_ARG_INTEGER;
    g->key = (char *)key;
    g->value.integer = v;
}

static void arg_str(rpc_args_t *a, const char *key, const char *v)
{
    grpc_arg *g = &a->arg[a->set.num_args++];
    g->type = GRPC_ARG_STRING;
    g->key = (char *)key;
    g->value.string = (char *)v;
}

void rpc_args_build(rpc_args_t *a, const rpc_opts_t *o, int server)
{
    a->set.num_args = 0;
    a->set.args = a->arg;
    size_t max = rpc_opts_max_message(o);
    int lim = max > 0x7fffffff ? 0x7fffffff : (int)max;
    /* A server lets gRPC take messages up to twice the limit and checks the
     * limit itself, so the usual oversized message gets a log line naming the
     * call and its size instead of vanishing inside gRPC. */
    size_t recv = server ? max * 2 : max;
    arg_int(a, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, recv > 0x7fffffff ? 0x7fffffff : (int)recv);
    arg_int(a, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, lim);
    int ka = o && o->keepalive_ms ? o->keepalive_ms : RPC_DEFAULT_KEEPALIVE_MS;
    if (ka > 0) {
        arg_int(a, GRPC_ARG_KEEPALIVE_TIME_MS, ka);
        arg_int(a, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ka);
        arg_int(a, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
        arg_int(a, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
        if (server) {
            /* Accept the client's pings at the rate it sends them; the default
             * answers frequent pings with GOAWAY "too_many_pings". */
            arg_int(a, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, ka / 2);
            arg_int(a, GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
        }
    }
    if (o && o->bulk) {
        /* gRPC sizes each stream's flow-control window from a bandwidth-delay
         * estimate (BDP pings). On loopback and LANs the delay is microseconds, so
         * the estimate keeps the window small, and a sender on a busy host stalls
         * waiting for WINDOW_UPDATEs (1 MiB streams ran at 0.1-0.2x TCP). A fixed
         * window the size of RPC_BULK_WINDOW instead: it still fills a 100 ms WAN
         * path at 160 MB/s, and the receiver holds at most that much per stream. */
        arg_int(a, GRPC_ARG_HTTP2_BDP_PROBE, 0);
        arg_int(a, GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, RPC_BULK_WINDOW);
        /* Left at gRPC's defaults, measured without a gain on 1 MiB streams:
         * GRPC_ARG_HTTP2_MAX_FRAME_SIZE (16 KiB frames; 64 KiB to 16 MiB changed
         * nothing beyond noise) and GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE (it only
         * matters with write-buffer hints, which the send queue sets anyway).
         * Message size limits are set above for every channel (max_message). */
    }
    if (o && o->bulk == 1) {
        /* Socket reads start at 1 MiB and adapt between 256 KiB and 4 MiB (gRPC's
         * default starts at 8 KiB): fewer reads and fewer, larger slices per
         * message, so less work per byte in the HTTP/2 parser and for on_raw
         * readers; each read buffer is that large, hence bulk channels only. */
        arg_int(a, GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
        arg_int(a, GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
        arg_int(a, GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
    }
    if (server) /* a second server on a taken port is an error, not a silent share */
        arg_int(a, GRPC_ARG_ALLOW_REUSEPORT, 0);
    /* Per-call machinery the layer does not use: gRPC's transparent retries
     * (callers decide about retrying) and channelz statistics. */
    arg_int(a, GRPC_ARG_ENABLE_CHANNELZ, 0);
    if (!server) arg_int(a, GRPC_ARG_ENABLE_RETRIES, 0);
    if (!server) {
        int b0 = o && o->backoff_initial_ms > 0 ? o->backoff_initial_ms : 100;
        int bmax = o && o->backoff_max_ms > 0 ? o->backoff_max_ms : 2000;
        arg_int(a, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, b0);
        arg_int(a, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, bmax);
        /* Despite its name, gRPC 1.51 reads this as the time one connection
         * attempt (TCP, TLS handshake, HTTP/2 SETTINGS) may take, not as a
         * backoff. At the initial backoff (100 ms) a handshake on a loaded host
         * timed out, and every fail-fast call failed UNAVAILABLE with "connection
         * attempt timed out before receiving SETTINGS frame". */
        arg_int(a, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, bmax > RPC_CONNECT_TIMEOUT_MS ? bmax : RPC_CONNECT_TIMEOUT_MS);
        if (o && o->server_name && o->security != RPC_INSECURE)
            arg_str(a, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, o->server_name);
    }
}

/* Reads dir/name into a NUL-terminated string the caller frees. */
static char *read_pem(const char *dir, const char *name, cr_err_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        cr_err_set(err, errno == ENOENT ? CR_ENOENT : CR_EIO, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); cr_err_set(err, CR_ENOMEM, "reading %s", path); return NULL; }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096) break;
    }
    int bad = ferror(f);
    fclose(f);
    buf[len] = '\0';
    if (bad || !strstr(buf, "-----BEGIN ")) {
        free(buf);
        cr_err_set(err, CR_EINVAL, "%s is not a PEM file", path);
        return NULL;
    }
    return buf;
}

typedef struct pems {
    char *ca, *cert, *key;
} pems_t;

static void pems_free(pems_t *p)
{
    free(p->ca);
    free(p->cert);
    if (p->key) {
        memset(p->key, 0, strlen(p->key));   /* do not leave the key in freed memory */
        free(p->key);
    }
}

static int pems_read(const rpc_opts_t *o, int need_ca, int need_pair, pems_t *p, cr_err_t *err)
{
    memset(p, 0, sizeof *p);
    if (!o->cert_dir)
        return cr_err_set(err, CR_EINVAL, "TLS needs a certificate directory (cert_dir)");
    if ((need_ca && !(p->ca = read_pem(o->cert_dir, "ca.pem", err))) ||
        (need_pair && !(p->cert = read_pem(o->cert_dir, "cert.pem", err))) ||
        (need_pair && !(p->key = read_pem(o->cert_dir, "key.pem", err)))) {
        pems_free(p);
        return err ? err->code : CR_EIO;
    }
    return 0;
}

int rpc_server_creds(const rpc_opts_t *o, grpc_server_credentials **out, cr_err_t *err)
{
    if (!o || o->security == RPC_INSECURE) {
        *out = grpc_insecure_server_credentials_create();
        return 0;
    }
    int mtls = o->security == RPC_MTLS;
    pems_t p;
    int rc = pems_read(o, mtls, 1, &p, err);
    if (rc) return rc;
    grpc_ssl_pem_key_cert_pair pair = {p.key, p.cert};
    *out = grpc_ssl_server_credentials_create_ex(
        p.ca, &pair, 1,
        mtls ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
             : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
    pems_free(&p);
    if (!*out) return cr_err_set(err, CR_EINVAL, "gRPC refused the certificates in %s", o->cert_dir);
    return 0;
}

int rpc_channel_creds(const rpc_opts_t *o, grpc_channel_credentials **out, cr_err_t *err)
{
    if (!o || o->security == RPC_INSECURE) {
        *out = grpc_insecure_credentials_create();
        return 0;
    }
    int mtls = o->security == RPC_MTLS;
    pems_t p;
    int rc = pems_read(o, 1, mtls, &p, err);
    if (rc) return rc;
    grpc_ssl_pem_key_cert_pair pair = {p.key, p.cert};
    *out = grpc_ssl_credentials_create(p.ca, mtls ? &pair : NULL, NULL, NULL);
    pems_free(&p);
    if (!*out) return cr_err_set(err, CR_EINVAL, "gRPC refused the certificates in %s", o->cert_dir);
    return 0;
}

int rpc_token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned diff = alen != blen;
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
    return diff == 0;
}
