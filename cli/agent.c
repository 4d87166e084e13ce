/* agent.c - `corral agent`: runs the node agent until SIGTERM or SIGINT; on either
 * it closes its session so the controller records the node as gone at once. Its
 * workers keep running so the next agent adopts them; `corral agent --stop-workers`
 * ends the workers a stopped agent left behind. $CORRAL_WORKER_CMD replaces the
 * program started as `PROGRAM worker --role ...` (tests of the wiring use it). */
#include "cli/cli.h"
#include "cli/creds.h"
#include "cli/ctlcli.h"
#include "agents/agent.h"
#include "common/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: corral agent --name NODE [--controller ADDR] [--state DIR] [--advertise HOST:PORT]\n"
    "                    [--robot NAME:DRIVER[:MODEL[:PORT]] ...] [--robot-label NAME:LABEL ...]\n"
    "                    [--no-inbound] [--no-gpus] [--log-level L] [--tls DIR] [--join-token-file F]\n"
    "       corral agent --stop-workers [--state DIR]\n"
    "  --name NODE        this node's name (a-z 0-9 _ -, at most 63 characters)\n"
    "  --controller ADDR  the controller (default $CORRAL_CONTROLLER or 127.0.0.1:7070)\n"
    "  --state DIR        the agent's state (default " AGENT_DEFAULT_STATE_DIR ")\n"
    "  --advertise ADDR   where peers can dial this node; without it the node accepts no\n"
    "                     inbound connections and its traffic is relayed\n"
    "  --no-inbound       say outright that the node is behind NAT (no --advertise): its\n"
    "                     workers serve no direct route, their traffic is tunnelled\n"
    "                     through the controller\n"
    "  --robot SPEC       a robot attached to this node (repeat for several)\n"
    "  --robot-label NAME:LABEL  a label (key=value or a tag) of robot NAME, which\n"
    "                     experiments select robots by (robots.labels); repeat\n"
    "  --no-gpus          report no GPUs even if the probe finds some\n"
    "  --tls DIR          dial the controller with mutual TLS: DIR/NODE/ of `corral certs DIR\n"
    "                     --clients NODE` (or a directory with ca.pem, cert.pem, key.pem)\n"
    "  --join-token-file F  the controller's join token (--join-token-file of `corral\n"
    "                     controller`), in a file only this user can read (chmod 600)\n"
    "  --stop-workers     stop the workers a stopped agent of --state left running, and exit\n";

#define MAX_ROBOTS 256

int cli_agent_main(int argc, char **argv)
{
    agent_opts_t o = {0};
    const char *robots[MAX_ROBOTS], *labels[MAX_ROBOTS];
    o.robots = robots;
    o.robot_labels = labels;
    o.probe_gpus = 1;
    o.workers = 1;
    o.worker_exe = getenv("CORRAL_WORKER_CMD");
    int stop_workers = 0;
    const char *tls = NULL, *join_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return CLI_OK;
        }
        if (strcmp(a, "--no-gpus") == 0) {
            o.probe_gpus = 0;
            continue;
        }
        if (strcmp(a, "--no-inbound") == 0) {
            o.no_inbound = 1;
            continue;
        }
        if (strcmp(a, "--stop-workers") == 0) {
            stop_workers = 1;
            continue;
        }
        static const char *const valued[] = {"--name", "--controller", "--state", "--advertise", "--robot",
                                             "--log-level", "--robot-label", "--tls", "--join-token-file"};
        int k = -1;
        for (int j = 0; j < 9; j++)
            if (strcmp(a, valued[j]) == 0) k = j;
        if (k < 0) {
            fprintf(stderr, "corral agent: unknown option '%s'\n%s", a, usage_text);
            return CLI_EUSER;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "corral agent: %s needs a value\n", a);
            return CLI_EUSER;
        }
        const char *v = argv[++i];
        switch (k) {
        case 0: o.node = v; break;
        case 1: o.controller = v; break;
        case 2: o.state_dir = v; break;
        case 3: o.advertise = v; break;
        case 4:
            if (o.n_robots == MAX_ROBOTS) {
                fprintf(stderr, "corral agent: at most %d robots\n", MAX_ROBOTS);
                return CLI_EUSER;
            }
            robots[o.n_robots++] = v;
            break;
        case 5: {
            int l = cr_log_level_parse(v);
            if (l < 0) {
                fprintf(stderr, "corral agent: --log-level '%s': expected debug, info, warn or error\n", v);
                return CLI_EUSER;
            }
            cr_log_set_level((cr_log_level_t)l);
            break;
        }
        case 6:
            if (o.n_robot_labels == MAX_ROBOTS) {
                fprintf(stderr, "corral agent: at most %d robot labels\n", MAX_ROBOTS);
                return CLI_EUSER;
            }
            labels[o.n_robot_labels++] = v;
            break;
        case 7: tls = v; break;
        case 8: join_file = v; break;
        }
    }
    cr_err_t err = {0};
    if (stop_workers) {
        /* Longer than the supervisor's SIGTERM grace, after which it SIGKILLs. */
        if (agent_stop_workers(o.state_dir, 15000, &err)) {
            CR_ERROR("agent", "%s", err.msg);
            return CLI_EUSER;
        }
        return CLI_OK;
    }
    if (!o.node) {
        fprintf(stderr, "corral agent: --name is required\n%s", usage_text);
        return CLI_EUSER;
    }
    /* Kept for the agent's life: the connection's settings borrow them. */
    static char cert_dir[4200];
    char *token = NULL;
    if (tls) {
        if (cli_tls_dir(tls, o.node, cert_dir, sizeof cert_dir, &err)) {
            fprintf(stderr, "corral agent: %s\n", err.msg);
            return CLI_EUSER;
        }
        o.rpc.security = RPC_MTLS;
        o.rpc.cert_dir = cert_dir;
    }
    if (join_file) {
        if (cli_token_read(join_file, &token, &err)) {
            fprintf(stderr, "corral agent: %s\n", err.msg);
            return CLI_EUSER;
        }
        o.rpc.token = token;
    }
    sigset_t set;
    cli_block_stop_signals(&set);
    agent_t *ag = NULL;
    if (agent_create(&o, &ag, &err) || agent_start(ag, &err)) {
        CR_ERROR("agent", "%s", err.msg);
        agent_destroy(ag);
        cli_token_free(token);
        return CLI_EUSER;
    }
    int sig = 0;
    sigwait(&set, &sig);
    CR_INFO("agent", "%s: closing the session", strsignal(sig));
    agent_destroy(ag);
    cli_token_free(token);
    CR_INFO("agent", "stopped");
    return CLI_OK;
}
