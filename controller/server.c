/* server.c - the controller daemon's object: registry, liveness table and the
 * gRPC server carrying Registry, AgentLink, Experiments and the data plane's tunnel
 * relay (Relay.Link, for nodes that accept no inbound connection) and channel
 * directory (ChannelDirectory.Watch: where each channel's replicas are; a lost
 * node's replicas leave their sets), started and stopped in the order that lets
 * every handler finish before what it uses goes away. */
#include "controller/server_int.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* One controller per state directory: a second one would split the agents'
 * sessions between two liveness tables over one registry. flock is released by
 * the kernel when the process dies, so a kill -9 leaves no stale lock. */
static void node_lost(void *ud, const char *node)
{
    ctl_server_t *srv = ud;
    size_t n = ch_directory_node_lost(srv->chdir, node);
    if (n) CR_INFO("controller", "node %s lost: %zu channel replica(s) left their sets", node, n);
    ctl_exphost_nodes_changed(ud);
}

static int lock_state_dir(ctl_server_t *srv, cr_err_t *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/controller.lock", srv->state_dir);
    srv->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (srv->lock_fd < 0) return cr_err_set(err, CR_EIO, "cannot open %s: %s", path, strerror(errno));
    if (flock(srv->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(srv->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        return cr_err_set(err, CR_EBUSY, "state directory %s is in use by another controller%s%s",
                          srv->state_dir, *pid ? " (pid " : "", *pid ? strcat(pid, ")") : "");
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(srv->lock_fd, 0) != 0 || pwrite(srv->lock_fd, pid, (size_t)len, 0) != len)
        CR_WARN("controller", "cannot write the pid into %s", path);
    return 0;
}

/* Which token each method takes: the CLI's services the admin token, an agent's
 * session the join token, the data plane (relay, channel directory), which an
 * agent's workers dial with the node's credentials, either. */
static int set_scopes(const ctl_opts_t *opts, rpc_opts_t *ro, rpc_method_t *m, size_t n, cr_err_t *err)
{
    const char *admin = opts->admin_token && *opts->admin_token ? opts->admin_token : NULL;
    const char *join = opts->join_token && *opts->join_token ? opts->join_token : NULL;
    if (admin && join && strcmp(admin, join) == 0)
        return cr_err_set(err, CR_EINVAL, "the join token and the admin token are the same: an agent's token "
                          "would then work as the admin's; give them different tokens");
    ro->tokens[CTL_SCOPE_ADMIN] = (rpc_token_t){"admin", admin};
    ro->tokens[CTL_SCOPE_JOIN] = (rpc_token_t){"join", join};
    static const struct { const char *service; unsigned scopes; } tab[] = {
        {"/corral.v1.AgentLink/", 1u << CTL_SCOPE_JOIN},
        {"/corral.v1.Relay/", 1u << CTL_SCOPE_JOIN | 1u << CTL_SCOPE_ADMIN},
        {"/corral.v1.ChannelDirectory/", 1u << CTL_SCOPE_JOIN | 1u << CTL_SCOPE_ADMIN},
    };
    for (size_t i = 0; i < n; i++) {
        m[i].scopes = 1u << CTL_SCOPE_ADMIN;   /* Registry, Experiments */
        for (size_t k = 0; k < sizeof tab / sizeof tab[0]; k++)
            if (strncmp(m[i].name, tab[k].service, strlen(tab[k].service)) == 0) m[i].scopes = tab[k].scopes;
    }
    return 0;
}

int ctl_server_create(const ctl_opts_t *opts, ctl_server_t **out, cr_err_t *err)
{
    *out = NULL;
    ctl_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) return cr_err_set(err, CR_ENOMEM, "controller");
    snprintf(srv->listen, sizeof srv->listen, "%s", opts->listen ? opts->listen : CTL_DEFAULT_LISTEN);
    snprintf(srv->state_dir, sizeof srv->state_dir, "%s",
             opts->state_dir ? opts->state_dir : CTL_DEFAULT_STATE_DIR);
    srv->heartbeat_ms = opts->heartbeat_ms > 0 ? opts->heartbeat_ms : CTL_DEFAULT_HEARTBEAT_MS;
    srv->missed = opts->missed > 0 ? opts->missed : CTL_DEFAULT_MISSED;
    srv->lock_fd = -1;
    int rc = ctl_registry_open(srv->state_dir, &srv->reg, err);  /* creates the directory */
    if (rc || (rc = lock_state_dir(srv, err))) goto fail;
    size_t n = ctl_service_methods(srv, srv->methods);
    ctl_agentlink_method(srv, &srv->methods[n++]);
    if ((rc = ctl_exphost_create(srv, srv->methods, &n, err))) goto fail;
    if ((rc = ch_relay_create(NULL, &srv->relay, err))) goto fail;
    ch_relay_method(srv->relay, &srv->methods[n++]);
    if ((rc = ch_directory_create(NULL, &srv->chdir, err))) goto fail;
    ch_directory_method(srv->chdir, &srv->methods[n++]);
    rpc_opts_t ro = opts->rpc;
    if ((rc = set_scopes(opts, &ro, srv->methods, n, err))) goto fail;
    /* A relay forward may wait up to 5 s for a slow receiver on a handler thread:
     * more of them, so tunnels never hold up Registry calls. */
    if (ro.pool_threads == 0) ro.pool_threads = 6;
    /* Tunnels carry the data plane's bulk streams through this port: the fixed
     * large flow-control windows of the data plane (BDP probing keeps windows
     * small on fast links, and a producer then waits on WINDOW_UPDATEs: the tunnel
     * ran ~20% slower, build/bench/channels), but not its large socket reads, whose
     * buffer would stay with each of many idle agent connections. The message
     * limit (64 MiB by default) must pass a tunnelled message of the channels'
     * default largest size with its envelope. */
    if (ro.bulk == 0) ro.bulk = RPC_BULK_WINDOWS;
    if (ro.max_message && ro.max_message < CH_RELAY_MIN_MESSAGE) ro.max_message = CH_RELAY_MIN_MESSAGE;
    rc = rpc_server_create(&srv->rpc, srv->listen, &ro, srv->methods, n, err);
    if (rc) {
        cr_err_wrap(err, "listen on %s", srv->listen);
        goto fail;
    }
    *out = srv;
    return 0;
fail:
    ctl_server_destroy(srv);
    return rc;
}

int ctl_server_port(const ctl_server_t *srv) { return rpc_server_port(srv->rpc); }

ctl_registry_t *ctl_server_registry(ctl_server_t *srv) { return srv->reg; }

size_t ctl_server_sessions(ctl_server_t *srv) { return srv->lv ? ctl_liveness_count(srv->lv) : 0; }

int ctl_server_start(ctl_server_t *srv, cr_err_t *err)
{
    /* Liveness first: a session may arrive as soon as the server starts. */
    int rc = ctl_liveness_create(srv->reg, srv->heartbeat_ms, srv->missed, &srv->lv, err);
    if (rc) return rc;
    ctl_liveness_on_lost(srv->lv, node_lost, srv);
    if ((rc = ctl_workq_create(&srv->wq, err))) return rc;
    if ((rc = rpc_server_start(srv->rpc, err))) return rc;
    srv->started = 1;
    CR_INFO("controller", "serving on %s (port %d), state in %s, heartbeat %d ms, lost after %d missed",
            srv->listen, ctl_server_port(srv), ctl_registry_path(srv->reg), srv->heartbeat_ms, srv->missed);
    return 0;
}

void ctl_server_stop(ctl_server_t *srv)
{
    if (!srv || srv->stopped) return;
    srv->stopped = 1;
    if (srv->lv) ctl_liveness_stopping(srv->lv);
    /* rpc_server_stop cancels every session and waits for their on_done, whose
     * jobs still use the liveness table and the registry: both outlive them. */
    if (srv->rpc) rpc_server_stop(srv->rpc);
    ctl_exphost_stop(srv);
    /* The sessions' last jobs (queued by on_done) run before the queue goes. */
    ctl_workq_destroy(srv->wq);
    srv->wq = NULL;
}

void ctl_server_destroy(ctl_server_t *srv)
{
    if (!srv) return;
    ctl_server_stop(srv);
    /* The liveness table holds call references: drop them while the RPC layer
     * (and gRPC under it) is still there to free what they hold. */
    ctl_liveness_destroy(srv->lv);
    srv->lv = NULL;
    rpc_server_destroy(srv->rpc);
    ch_relay_destroy(srv->relay); /* after the server: its streams are gone */
    ch_directory_destroy(srv->chdir);
    ctl_exphost_destroy(srv);
    ctl_registry_close(srv->reg);
    if (srv->lock_fd >= 0) close(srv->lock_fd);
    free(srv);
}
