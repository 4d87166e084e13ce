/* worker.c - `corral worker`: one process of an experiment, as an agent's supervisor
 * starts it. Parses the flags into agent_worker_opts_t, turns SIGTERM / SIGINT into
 * a clean stop (final checkpoint and status), and maps the outcome to the exit
 * status: 0 done or stopped, 1 bad input, 3 runtime failure (restart me). */
#include "cli/cli.h"
#include "agents/worker.h"
#include "common/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: corral worker --role learner|env|actor --spec FILE --dir DIR [options]\n"
    "       corral worker --role R --experiment NAME --index I --generation G --spec FILE\n"
    "                     --state-dir DIR [--robot NAME] [--buffer ADDR] [--learner ADDR] [options]\n"
    "  (the second form is how an agent starts workers: DIR/experiments/NAME is the\n"
    "  experiment directory; --buffer is accepted and ignored: the buffer lives in the\n"
    "  learner process)\n"
    "  --role R            learner (learner and replay buffer), env or actor (a robot and\n"
    "                      its policy in one process)\n"
    "  --spec FILE         the experiment YAML\n"
    "  --set KEY=VALUE     override a spec field (repeat)\n"
    "  --dir DIR           the experiment's directory on this node (buffer.db, checkpoints/,\n"
    "                      status/, learner.where)\n"
    "  --node NAME         this node's name (default local)\n"
    "  --log-level L       debug, info, warn or error\n"
    "  --threads N         BLAS threads for the networks (default 1)\n"
    "  --status-ms N       status file period (default 500)\n"
    "  --listen HOST:PORT  serve the direct route for peers on other nodes (the learner for\n"
    "                      its envs; an env for the learner's acknowledgements and weights)\n"
    "  --advertise HOST    the host they dial (default: the listen host); without --listen:\n"
    "                      serve the direct route on a free port of that host\n"
    "  --controller ADDR   the controller: the relay that tunnels channels to and from nodes\n"
    "                      that accept no inbound connection, and the channel directory\n"
    "  --rpc-security S    how to dial it: insecure (default), tls or mtls\n"
    "  --rpc-cert-dir DIR  the node's certificates for tls / mtls (ca.pem, cert.pem, key.pem)\n"
    "  --rpc-server-name N the name in the controller's certificate, when not its host\n"
    "                      (the node's token for it, if any: $CORRAL_NODE_TOKEN)\n"
    "  --no-inbound        this node accepts no inbound connection: serve no direct route;\n"
    "                      peers on other nodes come through the controller's relay\n"
    " learner:\n"
    "  --publish-every N   updates between policy versions (default 100)\n"
    "  --no-rate-limit     train without the update-to-data cap (for comparisons)\n"
    " env / actor:\n"
    "  --index N           which env worker of the experiment (default 0)\n"
    "  --robot NAME[:DRIVER[:MODEL]]  the robot, as registered on this node (driver and\n"
    "                      model default to the spec's robots.driver and robots.model;\n"
    "                      or give --robot-driver D --robot-model M)\n"
    "  --robot-set K=V     a robot (driver or safety) option (repeat), e.g. realtime=false\n"
    "  --learner [NODE@]HOST:PORT  the learner when DIR/learner.where is not there\n"
    "                      (a learner on another node)\n"
    "  --max-unacked N     transitions kept unacknowledged before collection pauses (4096)\n"
    " both:\n"
    "  --sync              alternate collection and training instead of overlapping them\n"
    "                      (give it to the learner and every env; for comparisons)\n";

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static int parse_i64(const char *flag, const char *v, int64_t lo, int64_t *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x < lo) {
        fprintf(stderr, "corral worker: %s '%s': expected an integer >= %lld\n", flag, v, (long long)lo);
        return -1;
    }
    *out = x;
    return 0;
}

/* Splits NAME[:DRIVER[:MODEL]] in place. */
static int parse_robot(char *spec, agent_worker_opts_t *o)
{
    char *a = strchr(spec, ':');
    if (!a) {
        o->robot_name = spec;
        return 0;
    }
    if (a == spec || !a[1]) {
        fprintf(stderr, "corral worker: --robot '%s': expected NAME[:DRIVER[:MODEL]]\n", spec);
        return -1;
    }
    *a = '\0';
    o->robot_name = spec;
    o->robot_driver = a + 1;
    char *b = strchr(a + 1, ':');
    if (b) {
        *b = '\0';
        o->robot_model = b + 1;
    }
    return 0;
}

int cli_worker_main(int argc, char **argv)
{
    agent_worker_opts_t o = {0};
    const char *sets[AGENT_WORKER_MAX_SETS], *ropts[AGENT_WORKER_MAX_ROBOT_OPTS];
    o.sets = sets;
    o.robot_opts = ropts;
    int have_role = 0;
    o.rpc_token = getenv("CORRAL_NODE_TOKEN"); /* the agent's, for the controller's relay */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return CLI_OK;
        }
        if (!strcmp(a, "--sync")) {
            o.sync = 1;
            continue;
        }
        if (!strcmp(a, "--no-inbound")) {
            o.no_inbound = 1;
            continue;
        }
        if (!strcmp(a, "--no-rate-limit")) {
            o.no_rate_limit = 1;
            continue;
        }
        if (a[0] != '-' || a[1] != '-') {
            fprintf(stderr, "corral worker: unexpected argument '%s'\n%s", a, usage_text);
            return CLI_EUSER;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "corral worker: %s needs a value\n", a);
            return CLI_EUSER;
        }
        char *v = argv[++i];
        int64_t x;
        if (!strcmp(a, "--role")) {
            int r = agent_worker_role_parse(v, &o.role);
            if (r == CR_ENOTSUP) {
                fprintf(stderr, "corral worker: --role buffer: the buffer runs inside the learner process "
                                "(--role learner); it is not started on its own\n");
                return CLI_EUSER;
            }
            if (r != 0) {
                fprintf(stderr, "corral worker: --role '%s': expected learner, env or actor\n", v);
                return CLI_EUSER;
            }
            have_role = 1;
        } else if (!strcmp(a, "--spec")) {
            o.spec_path = v;
        } else if (!strcmp(a, "--set")) {
            if (o.n_sets == AGENT_WORKER_MAX_SETS) {
                fprintf(stderr, "corral worker: at most %d --set\n", AGENT_WORKER_MAX_SETS);
                return CLI_EUSER;
            }
            sets[o.n_sets++] = v;
        } else if (!strcmp(a, "--dir")) {
            o.dir = v;
        } else if (!strcmp(a, "--experiment")) {
            o.experiment = v;
        } else if (!strcmp(a, "--state-dir")) {
            o.state_dir = v;
        } else if (!strcmp(a, "--generation")) {
            if (parse_i64(a, v, 0, &o.generation)) return CLI_EUSER;
        } else if (!strcmp(a, "--buffer")) {
            /* the buffer lives in the learner process: its address is the learner's */
        } else if (!strcmp(a, "--robot-driver")) {
            o.robot_driver = v;
        } else if (!strcmp(a, "--robot-model")) {
            o.robot_model = v;
        } else if (!strcmp(a, "--node")) {
            o.node = v;
        } else if (!strcmp(a, "--listen")) {
            o.listen = v;
        } else if (!strcmp(a, "--advertise")) {
            o.advertise = v;
        } else if (!strcmp(a, "--controller")) {
            o.controller = v;
        } else if (!strcmp(a, "--rpc-security")) {
            o.rpc_security = v;
        } else if (!strcmp(a, "--rpc-cert-dir")) {
            o.rpc_cert_dir = v;
        } else if (!strcmp(a, "--rpc-server-name")) {
            o.rpc_server_name = v;
        } else if (!strcmp(a, "--learner")) {
            o.learner = v;
        } else if (!strcmp(a, "--index")) {
            if (parse_i64(a, v, 0, &x)) return CLI_EUSER;
            o.index = (int)x;
        } else if (!strcmp(a, "--robot")) {
            if (parse_robot(v, &o)) return CLI_EUSER;
        } else if (!strcmp(a, "--robot-set")) {
            if (o.n_robot_opts == AGENT_WORKER_MAX_ROBOT_OPTS) {
                fprintf(stderr, "corral worker: at most %d --robot-set\n", AGENT_WORKER_MAX_ROBOT_OPTS);
                return CLI_EUSER;
            }
            ropts[o.n_robot_opts++] = v;
        } else if (!strcmp(a, "--publish-every")) {
            if (parse_i64(a, v, 1, &o.publish_every)) return CLI_EUSER;
        } else if (!strcmp(a, "--max-unacked")) {
            if (parse_i64(a, v, 16, &o.max_unacked)) return CLI_EUSER;
        } else if (!strcmp(a, "--threads")) {
            if (parse_i64(a, v, 1, &x)) return CLI_EUSER;
            o.threads = (int)x;
        } else if (!strcmp(a, "--status-ms")) {
            if (parse_i64(a, v, 10, &o.status_ms)) return CLI_EUSER;
        } else if (!strcmp(a, "--log-level")) {
            int l = cr_log_level_parse(v);
            if (l < 0) {
                fprintf(stderr, "corral worker: --log-level '%s': expected debug, info, warn or error\n", v);
                return CLI_EUSER;
            }
            cr_log_set_level((cr_log_level_t)l);
        } else {
            fprintf(stderr, "corral worker: unknown option '%s'\n%s", a, usage_text);
            return CLI_EUSER;
        }
    }
    if (!have_role) {
        fprintf(stderr, "corral worker: --role is required\n%s", usage_text);
        return CLI_EUSER;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    cr_err_t err = {0};
    int rc = agent_worker_run(&o, &stop_flag, &err);
    if (rc == 0) return CLI_OK;
    fprintf(stderr, "corral worker: %s\n", err.msg[0] ? err.msg : cr_err_str(rc));
    return rc == CR_EINVAL ? CLI_EUSER : 3;
}
