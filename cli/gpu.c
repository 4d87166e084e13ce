/* gpu.c - `corral gpu register | list`: GPUs as the registry knows them, probed by
 * node agents or registered by hand for GPUs an agent cannot probe. */
#include "cli/cli.h"
#include "cli/ctlcli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: corral gpu <verb> [options]\n"
    "  register --node N --model M --memory SIZE [--index I] [--uuid U] [--json]\n"
    "           SIZE like 80GiB, 40GB, 24576MiB; without --index the lowest free index\n"
    "  list [--node N] [--json]\n"
    CLI_CONN_HELP;

static void gpu_row(cli_table_t *t, const Corral__V1__Gpu *g)
{
    char idx[16], mem[32];
    snprintf(idx, sizeof idx, "%u", g->index);
    cli_format_size(g->memory_bytes, mem, sizeof mem);
    const char *src = g->probed && g->registered ? "probed+registered" : g->probed ? "probed" : "registered";
    const char *cells[] = {g->node, idx, g->model, mem, ctl_resource_state_name(g->state), g->experiment, src};
    cli_table_row(t, cells);
}

/* Builds the request from the options; local mistakes are reported before any
 * connection is made (exit 1, whether or not a controller is up). */
static int gpu_request(const char *prog, const cli_args_t *a, Corral__V1__RegisterGpuRequest *req)
{
    corral__v1__register_gpu_request__init(req);
    if (!a->node || !a->model || !a->memory) {
        fprintf(stderr, "%s: --node, --model and --memory are required\n", prog);
        return CLI_EUSER;
    }
    cr_err_t err = {0};
    if (cli_parse_size(a->memory, &req->memory_bytes, &err)) {
        fprintf(stderr, "%s: --memory: %s\n", prog, err.msg);
        return CLI_EUSER;
    }
    req->index = -1;
    if (a->index) {
        char *end = NULL;
        errno = 0;
        long v = strtol(a->index, &end, 10);
        if (errno || end == a->index || *end || v < 0 || v > 4095) {
            fprintf(stderr, "%s: --index '%s': expected a number 0..4095\n", prog, a->index);
            return CLI_EUSER;
        }
        req->index = (int32_t)v;
    }
    req->node = (char *)a->node;
    req->model = (char *)a->model;
    req->uuid = (char *)(a->uuid ? a->uuid : "");
    return CLI_OK;
}

static int do_register(const char *prog, rpc_channel_t *ch, const cli_args_t *a,
                       const Corral__V1__RegisterGpuRequest *req)
{
    Corral__V1__RegisterGpuResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_REGISTER_GPU, &req->base, &corral__v1__register_gpu_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) {
        cli_json_print(cli_gpu_json(resp->gpu));
    } else {
        char mem[32];
        cli_format_size(resp->gpu->memory_bytes, mem, sizeof mem);
        printf("GPU %u of node %s registered (%s, %s, %s)\n", resp->gpu->index, resp->gpu->node, resp->gpu->model,
               mem, ctl_resource_state_name(resp->gpu->state));
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int do_list(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__ListGpusRequest req = CORRAL__V1__LIST_GPUS_REQUEST__INIT;
    req.node = (char *)(a->node ? a->node : "");
    Corral__V1__ListGpusResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_LIST_GPUS, &req.base, &corral__v1__list_gpus_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) {
        cli_json_array_t arr;
        cli_json_array_begin(&arr);
        for (size_t i = 0; i < resp->n_gpus; i++) cli_json_array_item(&arr, cli_gpu_json(resp->gpus[i]));
        cli_json_array_end(&arr);
    } else {
        static const char *const h[] = {"NODE", "INDEX", "MODEL", "MEMORY", "STATE", "EXPERIMENT", "SOURCE"};
        cli_table_t *t = cli_table_new(7, h);
        for (size_t i = 0; i < resp->n_gpus; i++) gpu_row(t, resp->gpus[i]);
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

int cli_gpu_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    const char *verb = argv[1];
    char prog[64];
    snprintf(prog, sizeof prog, "corral gpu %s", verb);
    int is_reg = strcmp(verb, "register") == 0;
    if (!is_reg && strcmp(verb, "list") != 0) {
        fprintf(stderr, "corral gpu: unknown verb '%s'\n%s", verb, usage_text);
        return CLI_EUSER;
    }
    cli_args_t a;
    int rc = cli_args_parse(prog, argc - 1, argv + 1, is_reg ? "node,model,memory,index,uuid" : "node", 0, 0, &a);
    if (rc) return rc;
    Corral__V1__RegisterGpuRequest req;
    if (is_reg && (rc = gpu_request(prog, &a, &req))) return rc;
    rpc_channel_t *ch = NULL;
    if ((rc = cli_ctl_connect(prog, a.controller, &ch))) return rc;
    rc = is_reg ? do_register(prog, ch, &a, &req) : do_list(prog, ch, &a);
    rpc_channel_destroy(ch);
    return rc;
}
