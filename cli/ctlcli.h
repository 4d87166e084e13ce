/* ctlcli.h - what the control-plane subcommands (node, robot, gpu, controller,
 * agent) share: reaching the controller with the CLI's exit codes, tables and
 * JSON output, sizes like "80GiB". */
#ifndef CORRAL_CLI_CTLCLI_H
#define CORRAL_CLI_CTLCLI_H

#include "controller/controller.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>

/* The options every verb that reaches the controller takes, for --help texts. */
#define CLI_CONN_HELP \
    "  reaching the controller (every verb that calls it):\n" \
    "    --controller ADDR  host:port (default $CORRAL_CONTROLLER or " CTL_DEFAULT_LISTEN ")\n" \
    "    --tls DIR          mutual TLS with the certificate in DIR (ca.pem, cert.pem, key.pem,\n" \
    "                       or DIR/client/ of `corral certs DIR`); default $CORRAL_TLS_DIR\n" \
    "    --token-file F     the controller's admin token, in a file only you can read;\n" \
    "                       default $CORRAL_TOKEN_FILE\n"

/* Milliseconds a CLI call may take before the controller counts as unreachable. */
#define CLI_CALL_TIMEOUT_MS 10000

/* The options of every control-plane subcommand, parsed by one function so
 * they spell and fail the same way everywhere. */
#define CLI_MAX_SETS 64
typedef struct cli_args {
    const char *controller;   /* --controller ADDR */
    int json;                 /* --json */
    const char *node, *driver, *model, *port, *memory, *index, *uuid, *name, *role, *tail;
    int release, undo;
    const char *sets[CLI_MAX_SETS];
    size_t n_sets;
    const char *labels[CLI_MAX_SETS];  /* --label, repeated */
    size_t n_labels;
    const char *pos[4];       /* positional arguments after the verb */
    int npos;
} cli_args_t;

/* Parses argv[1..] (argv[0] is the verb). allowed lists the options this verb
 * takes besides --controller, --json, --tls and --token-file, e.g. "driver,node,set"; npos_min/max
 * bound the positional arguments. Prints the problem and returns CLI_EUSER on
 * bad input. */
int cli_args_parse(const char *prog, int argc, char **argv, const char *allowed, int npos_min,
                   int npos_max, cli_args_t *a);

/* Blocks SIGINT and SIGTERM (and ignores SIGPIPE) before any thread starts, so
 * the daemon's main thread alone takes them with sigwait(set). */
void cli_block_stop_signals(sigset_t *set);

/* Connects to addr (NULL: $CORRAL_CONTROLLER or the default) with the user's
 * credentials: mutual TLS from $CORRAL_TLS_DIR (a certificate directory, or the
 * root of `corral certs` holding client/) and the admin token in the file
 * $CORRAL_TOKEN_FILE (--tls and --token-file set them). On failure prints the
 * reason (naming the file) and returns CLI_EUSER, or CLI_EUNREACHABLE. */
int cli_ctl_connect(const char *prog, const char *addr, rpc_channel_t **ch);

/* Prints why a call to the controller failed and returns the exit status: a TLS
 * refusal (something answers, the handshake fails) and a refused token are
 * CLI_EUSER with what to check; UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED
 * otherwise CLI_EUNREACHABLE; the rest CLI_EUSER. */
int cli_ctl_failed(const char *prog, rpc_code_t code, const char *msg);

/* Makes one Registry call. On failure prints "prog: message" and returns the exit
 * status: CLI_EUNREACHABLE for UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED, else
 * CLI_EUSER. */
int cli_ctl_call(const char *prog, rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp);

/* A table: add a header row, then rows of the same width; print aligns columns. */
typedef struct cli_table cli_table_t;
cli_table_t *cli_table_new(int ncols, const char *const *headers);
void cli_table_row(cli_table_t *t, const char *const *cells);
void cli_table_print(cli_table_t *t, FILE *out);
void cli_table_free(cli_table_t *t);

/* Prints json (pretty) and a newline, then deletes it. */
void cli_json_print(cJSON *json);

/* A JSON array printed as it is built, one compact object per line (10,000
 * robots print in a few milliseconds): begin, item (deletes obj) ..., end. */
typedef struct cli_json_array {
    size_t n;
} cli_json_array_t;
void cli_json_array_begin(cli_json_array_t *a);
void cli_json_array_item(cli_json_array_t *a, cJSON *obj);
void cli_json_array_end(cli_json_array_t *a);

/* JSON objects of registry messages. */
cJSON *cli_node_json(const Corral__V1__Node *n);
cJSON *cli_robot_json(const Corral__V1__Robot *r);
cJSON *cli_gpu_json(const Corral__V1__Gpu *g);

/* "80GiB", "40GB", "512MiB", "1073741824" -> bytes; CR_EINVAL with a message. */
int cli_parse_size(const char *s, uint64_t *bytes, cr_err_t *err);
/* "80 GiB" (binary units, at most one decimal). */
void cli_format_size(uint64_t bytes, char *out, size_t cap);

#endif
