/* workercmd.c - worker commands from the controller, carried out through the
 * supervisor; see workercmd.h. */
#define _GNU_SOURCE /* asprintf */
#include "agents/workercmd.h"
#include "common/durable.h"
#include "common/id.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ARGS 256 /* the robot's settings and the spec's overrides, as flags */
#define MAX_ENV 64

/* "host:port" or "[v6]:port", printable, no spaces: what may become an argument. */
static int address_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0) return 1;
    if (n > 255 || !strchr(s, ':')) return 0;
    for (const char *p = s; *p; p++)
        if (*p <= ' ' || *p > '~') return 0;
    return 1;
}

/* The node's part of a worker's command line (at most 14 words); see workercmd.h. */
static size_t node_args(const agent_wcmd_node_t *nd, char **argv)
{
    size_t n = 0;
    if (nd->node && *nd->node) argv[n++] = "--node", argv[n++] = (char *)nd->node;
    if (nd->controller && *nd->controller) argv[n++] = "--controller", argv[n++] = (char *)nd->controller;
    if (nd->security && *nd->security) argv[n++] = "--rpc-security", argv[n++] = (char *)nd->security;
    if (nd->cert_dir && *nd->cert_dir) argv[n++] = "--rpc-cert-dir", argv[n++] = (char *)nd->cert_dir;
    if (nd->server_name && *nd->server_name) argv[n++] = "--rpc-server-name", argv[n++] = (char *)nd->server_name;
    if (!nd->inbound) argv[n++] = "--no-inbound";
    else if (nd->advertise_host && *nd->advertise_host) argv[n++] = "--advertise", argv[n++] = (char *)nd->advertise_host;
    return n;
}

int agent_wcmd_start(agent_sup_t *sup, const char *state_dir, const char *corral,
                     const agent_wcmd_node_t *node, const Corral__V1__WorkerSpec *spec, cr_err_t *err)
{
    if (!spec) return cr_err_set(err, CR_EINVAL, "StartWorker without a spec");
    if (!cr_name_valid(spec->experiment))
        return cr_err_set(err, CR_EINVAL, "StartWorker: bad experiment name '%s'", spec->experiment);
    if (!cr_name_valid(spec->role)) return cr_err_set(err, CR_EINVAL, "StartWorker: bad role '%s'", spec->role);
    if (spec->index < 0) return cr_err_set(err, CR_EINVAL, "StartWorker: negative index %d", spec->index);
    if (spec->generation < 1)
        return cr_err_set(err, CR_EINVAL, "StartWorker: generation %" PRId64 " (runs count from 1)", spec->generation);
    if (*spec->robot && !cr_name_valid(spec->robot))
        return cr_err_set(err, CR_EINVAL, "StartWorker: bad robot name '%s'", spec->robot);
    if (!address_ok(spec->buffer_address) || !address_ok(spec->learner_address))
        return cr_err_set(err, CR_EINVAL, "StartWorker: a peer address is not host:port");
    if (spec->n_args > MAX_ARGS || spec->n_env > MAX_ENV || spec->n_gpus > 16)
        return cr_err_set(err, CR_EINVAL, "StartWorker: too many args, env entries or GPUs");
    for (size_t i = 0; i < spec->n_env; i++)
        if (!strchr(spec->env[i], '=') || spec->env[i][0] == '=')
            return cr_err_set(err, CR_EINVAL, "StartWorker: env entry '%s' is not KEY=VALUE", spec->env[i]);

    /* The experiment file, where the worker reads it. */
    char dir[4096], spec_path[4200];
    snprintf(dir, sizeof dir, "%s/experiments/%s", state_dir, spec->experiment);
    snprintf(spec_path, sizeof spec_path, "%s/spec.yaml", dir);
    int rc = cr_mkdir_p(dir, 0755, err);
    if (rc != 0) return rc;
    if (*spec->spec_yaml) {
        rc = cr_durable_write(spec_path, spec->spec_yaml, strlen(spec->spec_yaml), 0644, err);
        if (rc != 0) return rc;
    }

    char idx[16], gen[24], gpus[160] = "CUDA_VISIBLE_DEVICES=";
    snprintf(idx, sizeof idx, "%d", spec->index);
    snprintf(gen, sizeof gen, "%" PRId64, spec->generation);
    for (size_t i = 0; i < spec->n_gpus; i++) {
        if (spec->gpus[i] < 0) return cr_err_set(err, CR_EINVAL, "StartWorker: negative GPU index");
        size_t len = strlen(gpus);
        snprintf(gpus + len, sizeof gpus - len, "%s%d", i ? "," : "", spec->gpus[i]);
    }
    char *argv[MAX_ARGS + 48];
    size_t n = 0;
    argv[n++] = (char *)corral;
    argv[n++] = "worker";
    argv[n++] = "--role", argv[n++] = spec->role;
    argv[n++] = "--experiment", argv[n++] = spec->experiment;
    argv[n++] = "--index", argv[n++] = idx;
    argv[n++] = "--generation", argv[n++] = gen;
    argv[n++] = "--spec", argv[n++] = spec_path;
    argv[n++] = "--state-dir", argv[n++] = (char *)state_dir;
    if (*spec->robot) argv[n++] = "--robot", argv[n++] = spec->robot;
    if (*spec->buffer_address) argv[n++] = "--buffer", argv[n++] = spec->buffer_address;
    if (*spec->learner_address) argv[n++] = "--learner", argv[n++] = spec->learner_address;
    if (node) n += node_args(node, argv + n);
    for (size_t i = 0; i < spec->n_args; i++) argv[n++] = spec->args[i];
    argv[n] = NULL;
    char *env[MAX_ENV + 3], *token = NULL;
    size_t ne = 0;
    env[ne++] = gpus;
    if (node && node->token && *node->token) {
        if (asprintf(&token, "%s=%s", AGENT_WCMD_TOKEN_ENV, node->token) < 0)
            return cr_err_set(err, CR_ENOMEM, "StartWorker: out of memory");
        env[ne++] = token;
    }
    for (size_t i = 0; i < spec->n_env; i++) env[ne++] = spec->env[i];
    env[ne] = NULL;

    agent_worker_spec_t ws = {
        .experiment = spec->experiment,
        .role = spec->role,
        .index = spec->index,
        .generation = spec->generation,
        .argv = argv,
        .env = env,
    };
    int rc2 = agent_sup_start(sup, &ws, err);
    if (token) {
        memset(token, 0, strlen(token)); /* no secret left in freed memory */
        free(token);
    }
    return rc2;
}

int agent_wcmd_stop(agent_sup_t *sup, const Corral__V1__StopWorker *cmd, cr_err_t *err)
{
    if (!cmd || !cr_name_valid(cmd->experiment))
        return cr_err_set(err, CR_EINVAL, "StopWorker: bad experiment name '%s'", cmd ? cmd->experiment : "");
    if (!*cmd->role) return agent_sup_stop_experiment(sup, cmd->experiment, err);
    if (!cr_name_valid(cmd->role)) return cr_err_set(err, CR_EINVAL, "StopWorker: bad role '%s'", cmd->role);
    return agent_sup_stop(sup, cmd->experiment, cmd->role, cmd->index, err);
}

void agent_wcmd_status(const agent_worker_info_t *info, Corral__V1__WorkerStatus *out)
{
    corral__v1__worker_status__init(out);
    out->experiment = (char *)info->experiment;
    out->generation = info->generation;
    out->role = (char *)info->role;
    out->index = info->index;
    out->state = (char *)agent_worker_state_name(info->state);
    out->pid = info->pid;
    out->restarts = info->restarts;
    out->last_exit_code = info->last_exit_code;
    out->last_signal = info->last_signal;
    out->adopted = info->adopted != 0;
    out->message = (char *)info->message;
    out->started_unix_ms = info->started_wall_ms;
}

/* One allocation per list: the message, the pointer array, the statuses and the
 * snapshots their strings point into. */
typedef struct list_block {
    Corral__V1__WorkerList list;
    size_t n;
    Corral__V1__WorkerStatus **ptrs;
    Corral__V1__WorkerStatus *st;
    agent_worker_info_t *info;
} list_block_t;

int agent_wcmd_list(const agent_sup_t *sup, Corral__V1__WorkerList **out, cr_err_t *err)
{
    *out = NULL;
    size_t n = agent_sup_list(sup, NULL, 0);
    list_block_t *b = calloc(1, sizeof *b);
    if (b) {
        b->ptrs = calloc(n + 1, sizeof *b->ptrs);
        b->st = calloc(n + 1, sizeof *b->st);
        b->info = calloc(n + 1, sizeof *b->info);
    }
    if (!b || !b->ptrs || !b->st || !b->info) {
        if (b) {
            free(b->ptrs);
            free(b->st);
            free(b->info);
            free(b);
        }
        return cr_err_set(err, CR_ENOMEM, "worker list");
    }
    b->n = agent_sup_list(sup, b->info, n);
    corral__v1__worker_list__init(&b->list);
    for (size_t i = 0; i < b->n; i++) {
        agent_wcmd_status(&b->info[i], &b->st[i]);
        b->ptrs[i] = &b->st[i];
    }
    b->list.workers = b->ptrs;
    b->list.n_workers = b->n;
    *out = &b->list; /* list is the first member: the block's address */
    return 0;
}

void agent_wcmd_list_free(Corral__V1__WorkerList *list)
{
    if (!list) return;
    list_block_t *b = (list_block_t *)list;
    free(b->ptrs);
    free(b->st);
    free(b->info);
    free(b);
}

int agent_wcmd_read_log(const char *state_dir, const Corral__V1__ReadLog *cmd, uint8_t *buf, size_t cap,
                        Corral__V1__LogChunk *out, char errbuf[256])
{
    corral__v1__log_chunk__init(out);
    out->command_id = cmd->command_id;
    errbuf[0] = '\0';
    int rc = 0;
    if (!cr_name_valid(cmd->experiment) || !cr_name_valid(cmd->role) || cmd->index < 0) {
        snprintf(errbuf, 256, "bad log name %s/%s-%d", cmd->experiment, cmd->role, cmd->index);
        out->error = errbuf;
        return CR_EINVAL;
    }
    char path[4300];
    snprintf(path, sizeof path, "%s/experiments/%s/logs/%s-%d.log", state_dir, cmd->experiment, cmd->role,
             cmd->index);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rc = errno == ENOENT ? CR_ENOENT : CR_EIO;
        snprintf(errbuf, 256, "no log for %s-%d of %s on this node (%s)", cmd->role, cmd->index, cmd->experiment,
                 strerror(errno));
        if (fd >= 0) close(fd);
        out->error = errbuf;
        return rc;
    }
    int64_t size = sb.st_size;
    size_t want = cmd->max_bytes ? cmd->max_bytes : AGENT_LOG_CHUNK_MAX;
    if (want > AGENT_LOG_CHUNK_MAX) want = AGENT_LOG_CHUNK_MAX;
    if (want > cap) want = cap;
    int64_t off = cmd->offset < 0 ? size + cmd->offset : cmd->offset;
    if (off < 0) off = 0;
    if (off > size) off = size;
    ssize_t got = pread(fd, buf, want, off);
    close(fd);
    if (got < 0) {
        snprintf(errbuf, 256, "reading %s-%d's log: %s", cmd->role, cmd->index, strerror(errno));
        out->error = errbuf;
        return CR_EIO;
    }
    out->offset = off;
    out->file_size = size;
    out->data.data = buf;
    out->data.len = (size_t)got;
    out->error = errbuf;
    return 0;
}
