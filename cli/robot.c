/* robot.c - `corral robot register | list | show | remove | estop`: the user's view
 * of the robots in the registry, through the controller's Registry service. */
#include "cli/cli.h"
#include "cli/ctlcli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: corral robot <verb> [options]\n"
    "  register NAME --driver D [--node N] [--model M] [--port P] [--set key=value ...]\n"
    "           [--label key=value ...] [--json]   (labels: what experiments select robots by)\n"
    "  list [--node N] [--json]\n"
    "  show NAME [--json]\n"
    "  remove NAME\n"
    "  estop NAME [--release] [--json]\n"
    "drivers: mujoco, dynamixel, remote, mock. Names: a-z 0-9 _ -, at most 63 characters.\n"
    CLI_CONN_HELP;

static void robot_row(cli_table_t *t, const Corral__V1__Robot *r)
{
    const char *cells[] = {r->name, r->driver, r->node, ctl_resource_state_name(r->state), r->experiment,
                           r->model};
    cli_table_row(t, cells);
}

static void robot_print(const Corral__V1__Robot *r)
{
    printf("name:        %s\n", r->name);
    printf("driver:      %s\n", r->driver);
    printf("node:        %s\n", *r->node ? r->node : "-");
    printf("state:       %s%s%s\n", ctl_resource_state_name(r->state), *r->experiment ? " by " : "",
           r->experiment);
    printf("model:       %s\n", *r->model ? r->model : "-");
    printf("port:        %s\n", *r->port ? r->port : "-");
    printf("e-stop:      %s\n", r->estopped ? "latched" : "released");
    printf("source:      %s%s%s\n", r->registered ? "registered" : "", r->registered && r->reported ? ", " : "",
           r->reported ? "reported by its agent" : "");
    for (size_t i = 0; i < r->n_settings; i++)
        printf("%s %s=%s\n", i ? "            " : "settings:   ", r->settings[i]->key, r->settings[i]->value);
    if (r->n_labels) {
        printf("labels:     ");
        for (size_t i = 0; i < r->n_labels; i++) printf(" %s", r->labels[i]);
        printf("\n");
    }
}

static int do_register(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__RegisterRobotRequest req = CORRAL__V1__REGISTER_ROBOT_REQUEST__INIT;
    Corral__V1__Setting set[CLI_MAX_SETS], *setp[CLI_MAX_SETS];
    char keys[CLI_MAX_SETS][64];
    for (size_t i = 0; i < a->n_sets; i++) {
        const char *eq = strchr(a->sets[i], '=');
        if (!eq || eq == a->sets[i] || eq - a->sets[i] >= 64) {
            fprintf(stderr, "%s: --set '%s': expected key=value\n", prog, a->sets[i]);
            return CLI_EUSER;
        }
        snprintf(keys[i], sizeof keys[i], "%.*s", (int)(eq - a->sets[i]), a->sets[i]);
        corral__v1__setting__init(&set[i]);
        set[i].key = keys[i];
        set[i].value = (char *)eq + 1;
        setp[i] = &set[i];
    }
    req.name = (char *)a->pos[0];
    req.driver = (char *)a->driver;
    req.node = (char *)(a->node ? a->node : "");
    req.model = (char *)(a->model ? a->model : "");
    req.port = (char *)(a->port ? a->port : "");
    req.settings = setp;
    req.n_settings = a->n_sets;
    req.labels = (char **)a->labels;
    req.n_labels = a->n_labels;
    Corral__V1__RegisterRobotResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_REGISTER_ROBOT, &req.base, &corral__v1__register_robot_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) {
        cli_json_print(cli_robot_json(resp->robot));
    } else {
        printf("robot %s registered (driver %s, node %s, %s)\n", resp->robot->name, resp->robot->driver,
               *resp->robot->node ? resp->robot->node : "none yet", ctl_resource_state_name(resp->robot->state));
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int do_list(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__ListRobotsRequest req = CORRAL__V1__LIST_ROBOTS_REQUEST__INIT;
    req.node = (char *)(a->node ? a->node : "");
    Corral__V1__ListRobotsResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_LIST_ROBOTS, &req.base, &corral__v1__list_robots_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) {
        cli_json_array_t arr;
        cli_json_array_begin(&arr);
        for (size_t i = 0; i < resp->n_robots; i++) cli_json_array_item(&arr, cli_robot_json(resp->robots[i]));
        cli_json_array_end(&arr);
    } else {
        static const char *const h[] = {"NAME", "DRIVER", "NODE", "STATE", "EXPERIMENT", "MODEL"};
        cli_table_t *t = cli_table_new(6, h);
        for (size_t i = 0; i < resp->n_robots; i++) robot_row(t, resp->robots[i]);
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int do_show(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__GetRobotRequest req = CORRAL__V1__GET_ROBOT_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    Corral__V1__GetRobotResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_GET_ROBOT, &req.base, &corral__v1__get_robot_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) cli_json_print(cli_robot_json(resp->robot));
    else robot_print(resp->robot);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

static int do_remove(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__RemoveRobotRequest req = CORRAL__V1__REMOVE_ROBOT_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    ProtobufCMessage *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_REMOVE_ROBOT, &req.base, &corral__v1__remove_robot_response__descriptor,
                          &resp);
    if (rc) return rc;
    protobuf_c_message_free_unpacked(resp, NULL);
    printf("robot %s removed\n", a->pos[0]);
    return CLI_OK;
}

static int do_estop(const char *prog, rpc_channel_t *ch, const cli_args_t *a)
{
    Corral__V1__EstopRobotRequest req = CORRAL__V1__ESTOP_ROBOT_REQUEST__INIT;
    req.name = (char *)a->pos[0];
    req.release = a->release;
    Corral__V1__EstopRobotResponse *resp = NULL;
    int rc = cli_ctl_call(prog, ch, CTL_M_ESTOP_ROBOT, &req.base, &corral__v1__estop_robot_response__descriptor,
                          (ProtobufCMessage **)&resp);
    if (rc) return rc;
    if (a->json) {
        cJSON *o = cli_robot_json(resp->robot);
        cJSON_AddBoolToObject(o, "delivered", resp->delivered);
        cli_json_print(o);
    } else {
        printf("robot %s: e-stop %s%s\n", a->pos[0], a->release ? "released" : "latched",
               resp->delivered ? " (sent to its node's agent)"
                               : " (in the registry; its node's agent is not connected)");
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return CLI_OK;
}

int cli_robot_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    const char *verb = argv[1];
    char prog[64];
    snprintf(prog, sizeof prog, "corral robot %s", verb);
    static const struct {
        const char *verb, *opts;
        int npos;
        int (*fn)(const char *, rpc_channel_t *, const cli_args_t *);
    } verbs[] = {
        {"register", "driver,node,model,port,set,label", 1, do_register},
        {"list", "node", 0, do_list},
        {"show", "", 1, do_show},
        {"remove", "", 1, do_remove},
        {"estop", "release", 1, do_estop},
    };
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strcmp(verb, verbs[i].verb) != 0) continue;
        cli_args_t a;
        int rc = cli_args_parse(prog, argc - 1, argv + 1, verbs[i].opts, verbs[i].npos, verbs[i].npos, &a);
        if (rc) return rc;
        if (verbs[i].fn == do_register && (!a.driver || !*a.driver)) {
            fprintf(stderr, "%s: --driver is required (one of %s)\n", prog, ctl_driver_names());
            return CLI_EUSER;
        }
        for (size_t k = 0; k < a.n_sets; k++) {  /* local mistakes before any connection */
            const char *eq = strchr(a.sets[k], '=');
            if (!eq || eq == a.sets[k] || eq - a.sets[k] >= 64) {
                fprintf(stderr, "%s: --set '%s': expected key=value\n", prog, a.sets[k]);
                return CLI_EUSER;
            }
        }
        rpc_channel_t *ch = NULL;
        if ((rc = cli_ctl_connect(prog, a.controller, &ch))) return rc;
        rc = verbs[i].fn(prog, ch, &a);
        rpc_channel_destroy(ch);
        return rc;
    }
    fprintf(stderr, "corral robot: unknown verb '%s'\n%s", verb, usage_text);
    return CLI_EUSER;
}
