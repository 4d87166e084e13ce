/* controller.c - `corral controller`: runs the control-plane daemon until SIGTERM
 * or SIGINT, then shuts down in order (no new calls, sessions ended, handlers
 * finished, registry closed). */
#include "cli/cli.h"
#include "cli/ctlcli.h"
#include "common/log.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: corral controller [--listen ADDR] [--state DIR] [--heartbeat-ms N] [--log-level L]\n"
    "  --listen ADDR      host:port to serve on (default " CTL_DEFAULT_LISTEN ")\n"
    "  --state DIR        where state.db lives (default " CTL_DEFAULT_STATE_DIR ")\n"
    "  --heartbeat-ms N   heartbeat interval agents use; a node is lost after 3 missed (default 1000)\n"
    "  --log-level L      debug, info, warn, error\n";

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

int cli_controller_main(int argc, char **argv)
{
    ctl_opts_t o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return CLI_OK;
        }
        if (!v && (strcmp(a, "--listen") == 0 || strcmp(a, "--state") == 0 || strcmp(a, "--heartbeat-ms") == 0 ||
                   strcmp(a, "--log-level") == 0)) {
            fprintf(stderr, "corral controller: %s needs a value\n", a);
            return CLI_EUSER;
        }
        if (strcmp(a, "--listen") == 0) o.listen = argv[++i];
        else if (strcmp(a, "--state") == 0) o.state_dir = argv[++i];
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
    sigset_t set;
    cli_block_stop_signals(&set);
    ctl_server_t *srv = NULL;
    cr_err_t err = {0};
    if (ctl_server_create(&o, &srv, &err) || ctl_server_start(srv, &err)) {
        CR_ERROR("controller", "%s", err.msg);
        ctl_server_destroy(srv);
        return CLI_EUSER;
    }
    int sig = 0;
    sigwait(&set, &sig);
    CR_INFO("controller", "%s: shutting down", strsignal(sig));
    ctl_server_destroy(srv);
    CR_INFO("controller", "stopped");
    return CLI_OK;
}
