/* controller.c - `corral controller`: runs the control-plane daemon until SIGTERM
 * or SIGINT, then shuts down in order (no new calls, sessions ended, handlers
 * finished, registry closed). Its security options (DESIGN.md, Security): mutual
 * TLS from a `corral certs` directory, an admin token for the CLI and a join token
 * for agents; plaintext only on loopback unless --insecure says otherwise. */
#include "cli/cli.h"
#include "cli/creds.h"
#include "cli/ctlcli.h"
#include "common/log.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: corral controller [--listen ADDR] [--state DIR] [--heartbeat-ms N] [--log-level L]\n"
    "                         [--tls DIR] [--admin-token-file F] [--join-token-file F] [--insecure]\n"
    "  --listen ADDR      host:port to serve on (default " CTL_DEFAULT_LISTEN ")\n"
    "  --state DIR        where state.db lives (default " CTL_DEFAULT_STATE_DIR ")\n"
    "  --heartbeat-ms N   heartbeat interval agents use; a node is lost after 3 missed (default 1000)\n"
    "  --log-level L      debug, info, warn, error\n"
    "  --tls DIR          serve mutual TLS: DIR/server/ of `corral certs DIR` (or a directory with\n"
    "                     ca.pem, cert.pem, key.pem); agents, workers and the CLI must then\n"
    "                     present a certificate signed by the same CA\n"
    "  --admin-token-file F  the CLI's calls (robots, GPUs, nodes, experiments) must present\n"
    "                     the token in F (--token-file of the CLI); the file must be private (600)\n"
    "  --join-token-file F   agents must present the token in F to open a session; it does not\n"
    "                     work as the admin token (nor the other way round)\n"
    "  --insecure         allow serving a non-loopback address without TLS (plaintext, anyone\n"
    "                     who reaches the port can call); without --tls that is refused\n";

/* Every thread (gRPC's included) inherits the mask, so sigwait alone receives them. */
void cli_block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* The security options, checked before anything binds: a controller on a network
 * address without TLS is refused unless --insecure says so. */
typedef struct sec_args {
    const char *tls, *admin_file, *join_file;
    int insecure;
    char cert_dir[4200];
    char *admin, *join;
} sec_args_t;

static int apply_security(sec_args_t *s, ctl_opts_t *o)
{
    cr_err_t err = {0};
    const char *listen = o->listen ? o->listen : CTL_DEFAULT_LISTEN;
    if (s->tls) {
        if (cli_tls_dir(s->tls, "server", s->cert_dir, sizeof s->cert_dir, &err)) goto fail;
        o->rpc.security = RPC_MTLS;
        o->rpc.cert_dir = s->cert_dir;
    } else if (!cli_addr_is_loopback(listen) && !s->insecure) {
        fprintf(stderr, "corral controller: refusing to serve %s without TLS: anyone who reaches it could "
                "control the cluster. Give --tls DIR (certificates from `corral certs`), or --insecure to "
                "serve plaintext anyway\n", listen);
        return CLI_EUSER;
    }
    if (s->admin_file && cli_token_read(s->admin_file, &s->admin, &err)) goto fail;
    if (s->join_file && cli_token_read(s->join_file, &s->join, &err)) goto fail;
    o->admin_token = s->admin;
    o->join_token = s->join;
    if (!s->tls && (s->admin || s->join) && !cli_addr_is_loopback(listen))
        CR_WARN("controller", "tokens without TLS travel in plaintext on %s", listen);
    if (s->tls && !s->admin)
        CR_WARN("controller", "no --admin-token-file: any holder of a certificate of this CA may change the "
                "registry and experiments");
    if (s->tls && !s->join)
        CR_WARN("controller", "no --join-token-file: any holder of a certificate of this CA may join as a node");
    return CLI_OK;
fail:
    fprintf(stderr, "corral controller: %s\n", err.msg);
    return CLI_EUSER;
}

int cli_controller_main(int argc, char **argv)
{
    ctl_opts_t o = {0};
    sec_args_t sec = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return CLI_OK;
        }
        if (strcmp(a, "--insecure") == 0) {
            sec.insecure = 1;
            continue;
        }
        if (!v && (strcmp(a, "--listen") == 0 || strcmp(a, "--state") == 0 || strcmp(a, "--heartbeat-ms") == 0 ||
                   strcmp(a, "--log-level") == 0 || strcmp(a, "--tls") == 0 || strcmp(a, "--admin-token-file") == 0 ||
                   strcmp(a, "--join-token-file") == 0)) {
            fprintf(stderr, "corral controller: %s needs a value\n", a);
            return CLI_EUSER;
        }
        if (strcmp(a, "--listen") == 0) o.listen = argv[++i];
        else if (strcmp(a, "--state") == 0) o.state_dir = argv[++i];
        else if (strcmp(a, "--tls") == 0) sec.tls = argv[++i];
        else if (strcmp(a, "--admin-token-file") == 0) sec.admin_file = argv[++i];
        else if (strcmp(a, "--join-token-file") == 0) sec.join_file = argv[++i];
        else if (strcmp(a, "--heartbeat-ms") == 0) {
            if (parse_int(argv[++i], 10, 60000, &o.heartbeat_ms)) {
                fprintf(stderr, "corral controller: --heartbeat-ms '%s': expected 10..60000\n", argv[i]);
                return CLI_EUSER;
            }
        } else if (strcmp(a, "--log-level") == 0) {
            int l = cr_log_level_parse(argv[++i]);
            if (l < 0) {
                fprintf(stderr, "corral controller: --log-level '%s': expected debug, info, warn or error\n", argv[i]);
                return CLI_EUSER;
            }
            cr_log_set_level((cr_log_level_t)l);
        } else {
            fprintf(stderr, "corral controller: unknown option '%s'\n%s", a, usage_text);
            return CLI_EUSER;
        }
    }
    int rc = apply_security(&sec, &o);
    if (rc) goto out;
    sigset_t set;
    cli_block_stop_signals(&set);
    ctl_server_t *srv = NULL;
    cr_err_t err = {0};
    if (ctl_server_create(&o, &srv, &err) || ctl_server_start(srv, &err)) {
        CR_ERROR("controller", "%s", err.msg);
        ctl_server_destroy(srv);
        rc = CLI_EUSER;
        goto out;
    }
    CR_INFO("controller", "security: %s%s%s%s", sec.tls ? "mutual TLS with " : "plaintext (no TLS)",
            sec.tls ? sec.cert_dir : "", sec.admin ? ", admin token" : ", no admin token",
            sec.join ? ", join token" : ", no join token");
    int sig = 0;
    sigwait(&set, &sig);
    CR_INFO("controller", "%s: shutting down", strsignal(sig));
    ctl_server_destroy(srv);
    CR_INFO("controller", "stopped");
out:
    cli_token_free(sec.admin);
    cli_token_free(sec.join);
    return rc;
}
