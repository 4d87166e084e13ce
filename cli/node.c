/* node.c - `corral node list | show | drain`: the nodes whose agents have reported
 * to the controller, with their state (ready, lost, draining). */
#include "cli/cli.h"
#include "cli/ctlcli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: corral node <verb> [options]\n"
    "  list [--json]\n"
    "  show NAME [--json]      the node, its robots and its GPUs\n"
    "  drain NAME [--undo]     place no new work on it (--undo: take work again)\n"
    CLI_CONN_HELP;

static void age(int64_t unix_ms, char *out, size_t cap)
{
    if (unix_ms <= 0) {
        snprintf(out, cap, "never");
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t s = (now - unix_ms) / 1000;
    if (s < 0) s = 0;
    if (s < 120) snprintf(out, cap, "%llds ago", (long long)s);
    else if (s < 7200) snprintf(out, cap, "%lldm ago", (long long)s / 60);
    else snprintf(out, cap, "%lldh ago", (long long)s / 3600);
}

static int get_node(const char *prog, rpc_channel_t *ch, const char *name, Corral__V1__GetNodeResponse **resp)
{
    Corral__V1__GetNodeRequest req = CORRAL__V1__GET_NODE_REQUEST__INIT;
    req.name = (char *)name;
    return cli_ctl_call(prog, ch, CTL_M_GET_NODE, &req.base, &corral__v1__get_node_response__descriptor,
                        (ProtobufCMessage **)resp);
}

static int do_list(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__ListNodesRequest req = CORRAL__V1__LIST_NODES_REQUEST__INIT;
    Corral__V1__ListNodesResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_LIST_NODES, &req.base, &corral__v1__list_nodes_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) {
        cli_json_array_t arr;
        cli_json_array_begin(&arr);
        for (size_t i = 0; i < resp->n_nodes; i++) cli_json_array_item(&arr, cli_node_json(resp->nodes[i]));
        cli_json_array_end(&arr);
    } else {
        static const char *const h[] = {"NAME", "STATE", "ADDRESS", "CORES", "MEMORY", "ROBOTS", "GPUS", "LAST-SEEN"};
        cli_table_t *t = cli_table_new(8, h);
        for (size_t i = 0; i < resp->n_nodes; i++) {
            const Corral__V1__Node *n = resp->nodes[i];
            char cores[16], mem[32], robots[16], gpus[16], seen[32];
            snprintf(cores, sizeof cores, "%u", n->cores);
            cli_format_size(n->memory_bytes, mem, sizeof mem);
            snprintf(robots, sizeof robots, "%u", n->robot_count);
            snprintf(gpus, sizeof gpus, "%u", n->gpu_count);
            age(n->last_seen_unix_ms, seen, sizeof seen);
            const char *cells[] = {n->name, ctl_node_state_name(n->state), *n->address ? n->address : "(no inbound)",
                                   cores, mem, robots, gpus, seen};
            cli_table_row(t, cells);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int do_show(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__GetNodeResponse *node = NULL;
    int rc = get_node(prog, ch, a->pos[0], &node);
    if (rc) return rc;
    Corral__V1__ListRobotsRequest rreq = CORRAL__V1__LIST_ROBOTS_REQUEST__INIT;
    rreq.node = (char *)a->pos[0];
    Corral__V1__ListRobotsResponse *robots = NULL;
    Corral__V1__ListGpusRequest greq = CORRAL__V1__LIST_GPUS_REQUEST__INIT;
    greq.node = (char *)a->pos[0];
    Corral__V1__ListGpusResponse *gpus = NULL;
    if ((rc = cli_ctl_call(prog, ch, CTL_M_LIST_ROBOTS, &rreq.base, &corral__v1__list_robots_response__descriptor,
                           (ProtobufCMessage **)&robots)) ||
        (rc = cli_ctl_call(prog, ch, CTL_M_LIST_GPUS, &greq.base, &corral__v1__list_gpus_response__descriptor,
                           (ProtobufCMessage **)&gpus)))
        goto out;
    const Corral__V1__Node *n = node->node;
    if (a->json) {
        cJSON *o = cli_node_json(n);
        cJSON *ra = cJSON_AddArrayToObject(o, "robot_list");
        for (size_t i = 0; i < robots->n_robots; i++) cJSON_AddItemToArray(ra, cli_robot_json(robots->robots[i]));
        cJSON *ga = cJSON_AddArrayToObject(o, "gpu_list");
        for (size_t i = 0; i < gpus->n_gpus; i++) cJSON_AddItemToArray(ga, cli_gpu_json(gpus->gpus[i]));
        cli_json_print(o);
    } else {
        char mem[32], seen[32];
        cli_format_size(n->memory_bytes, mem, sizeof mem);
        age(n->last_seen_unix_ms, seen, sizeof seen);
        printf("name:        %s\nstate:       %s%s\naddress:     %s\ncores:       %u\nmemory:      %s\n"
               "agent:       %s\nlast seen:   %s\n", n->name, ctl_node_state_name(n->state),
               n->drain && n->state != CORRAL__V1__NODE_STATE__NODE_DRAINING ? " (drain requested)" : "",
               *n->address ? n->address : "(accepts no inbound connections)", n->cores, mem,
               *n->agent_version ? n->agent_version : "-", seen);
        printf("robots:      %zu\n", robots->n_robots);
        for (size_t i = 0; i < robots->n_robots; i++)
            printf("  %-20s %-10s %s\n", robots->robots[i]->name, robots->robots[i]->driver,
                   ctl_resource_state_name(robots->robots[i]->state));
        printf("gpus:        %zu\n", gpus->n_gpus);
        for (size_t i = 0; i < gpus->n_gpus; i++) {
            cli_format_size(gpus->gpus[i]->memory_bytes, mem, sizeof mem);
            printf("  %-3u %-16s %-10s %s\n", gpus->gpus[i]->index, gpus->gpus[i]->model, mem,
                   ctl_resource_state_name(gpus->gpus[i]->state));
        }
    }
out:
    if (robots) protobuf_c_message_free_unpacked(&robots->base, NULL);
    if (gpus) protobuf_c_message_free_unpacked(&gpus->base, NULL);
    protobuf_c_message_free_unpacked(&node->base, NULL);
    return rc;
}

static int do_drain(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__DrainNodeRequest req = CORRAL__V1__DRAIN_NODE_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.undo = a->undo;
    Corral__V1__DrainNodeResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_DRAIN_NODE, &req.base, &corral__v1__drain_node_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) cli_json_print(cli_node_json(resp->node));
    else printf("node %s: %s (state %s)\n", resp->node->name, a->undo ? "takes work again" : "draining",
                ctl_node_state_name(resp->node->state));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

int cli_node_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    const char *verb = argv[1];
    char prog[64];
    snprintf(prog, sizeof prog, "corral node %s", verb);
    static const struct {
        const char *verb, *opts;
        int npos;
        int (*fn)(const char *, rpc_channel_t *, const cli_args_t *);
    } verbs[] = {
        {"list", "", 0, do_list},
        {"show", "", 1, do_show},
        {"drain", "undo", 1, do_drain},
    };
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(verb, verbs[i].verb) != 0) continue;
        cli_args_t a;
        int rc = cli_args_parse(prog, argc - 1, argv + 1, verbs[i].opts, verbs[i].npos, verbs[i].npos, &a);
        if (rc) return rc;
        rpc_channel_t *ch = NULL;
        if ((rc = cli_ctl_connect(prog, a.controller, &ch))) return rc;
        rc = verbs[i].fn(prog, ch, &a);
        rpc_channel_destroy(ch);
        return rc;
    }
    fprintf(stderr, "corral node: unknown verb '%s'\n%s", verb, usage_text);
    return CLI_EUSER;
}
