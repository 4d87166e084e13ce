/* ctlcli.c - shared pieces of the control-plane subcommands: reaching the
 * controller with the user's credentials (--tls / CORRAL_TLS_DIR, --token-file /
 * CORRAL_TOKEN_FILE), exit codes and messages from RPC statuses, aligned tables,
 * JSON objects for nodes, robots and GPUs, and sizes. */
#include "cli/ctlcli.h"
#include "cli/cli.h"
#include "cli/creds.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The address the CLI talks to and its certificate directory, for messages. */
static char target[256];
static char cert_dir[4200];
static int secure;

/* $CORRAL_TLS_DIR and $CORRAL_TOKEN_FILE (--tls and --token-file set them) into o;
 * the token is kept for the process's life (the channel copies it anyway). */
static int client_security(const char *prog, rpc_opts_t *o)
{
    cr_err_t err = {0};
    const char *tls = getenv("CORRAL_TLS_DIR"), *tok = getenv("CORRAL_TOKEN_FILE");
    if (tls && *tls) {
        if (cli_tls_dir(tls, "client", cert_dir, sizeof cert_dir, &err)) goto fail;
        o->security = RPC_MTLS;
        o->cert_dir = cert_dir;
        /* The controller's certificate names the hosts `corral certs --hosts` was
         * given, plus localhost and 127.0.0.1. */
        secure = 1;
    }
    if (tok && *tok) {
        static char *token;
        if (!token && cli_token_read(tok, &token, &err)) goto fail;
        o->token = token;
    }
    return CLI_OK;
fail:
    fprintf(stderr, "%s: %s\n", prog, err.msg);
    return CLI_EUSER;
}

int cli_ctl_connect(const char *prog, const char *addr, rpc_channel_t **ch)
{
    cr_err_t err = {0};
    const char *env = getenv("CORRAL_CONTROLLER");
    snprintf(target, sizeof target, "%s", addr && *addr ? addr : env && *env ? env : CTL_DEFAULT_LISTEN);
    rpc_opts_t o = {0};
    int rc = client_security(prog, &o);
    if (rc) return rc;
    /* No wait for READY: a controller that is down fails the first call at once. */
    if (ctl_client_connect(target, &o, 0, ch, &err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return CLI_EUNREACHABLE;
    }
    return CLI_OK;
}

int cli_ctl_failed(const char *prog, rpc_code_t code, const char *msg)
{
    if (code == RPC_UNAVAILABLE && cli_tcp_answers(target, 1000)) {
        /* Something answers there, so the connection itself was refused: TLS. */
        char why[CR_ERR_MSG_MAX + 512];
        cli_explain_refusal(target, secure ? cert_dir : NULL, msg, why, sizeof why);
        fprintf(stderr, "%s: %s\n", prog, why);
        return CLI_EUSER;
    }
    if (code == RPC_UNAVAILABLE || code == RPC_DEADLINE_EXCEEDED || code == RPC_CANCELLED) {
        fprintf(stderr, "%s: controller %s unreachable (is `corral controller` running there? set "
                "--controller or CORRAL_CONTROLLER): %s\n", prog, target, msg);
        return CLI_EUNREACHABLE;
    }
    if (code == RPC_UNAUTHENTICATED || code == RPC_PERMISSION_DENIED) {
        fprintf(stderr, "%s: controller %s refused the call: %s (the CLI sends the admin token of "
                "--token-file or CORRAL_TOKEN_FILE%s%s)\n", prog, target, msg,
                getenv("CORRAL_TOKEN_FILE") && *getenv("CORRAL_TOKEN_FILE") ? ": " : ", which is not set",
                getenv("CORRAL_TOKEN_FILE") && *getenv("CORRAL_TOKEN_FILE") ? getenv("CORRAL_TOKEN_FILE") : "");
        return CLI_EUSER;
    }
    fprintf(stderr, "%s: %s\n", prog, msg);
    return CLI_EUSER;
}

int cli_ctl_call(const char *prog, rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp)
{
    cr_err_t err = {0};
    rpc_code_t code = RPC_OK;
    if (ctl_client_call(ch, method, req, resp_desc, resp, CLI_CALL_TIMEOUT_MS, &code, &err) == 0)
        return CLI_OK;
    return cli_ctl_failed(prog, code, err.msg);
}

/* ---- tables ---------------------------------------------------------------- */

struct cli_table {
    int ncols;
    size_t nrows, cap;
    char **cells;   /* nrows * ncols, row 0 the headers */
};

cli_table_t *cli_table_new(int ncols, const char *const *headers)
{
    cli_table_t *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->ncols = ncols;
    cli_table_row(t, headers);
    return t;
}

void cli_table_row(cli_table_t *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 32;
        t->cells = realloc(t->cells, t->cap * (size_t)t->ncols * sizeof *t->cells);
        if (!t->cells) abort();
    }
    for (int c = 0; c < t->ncols; c++) {
        char *s = strdup(cells[c] && *cells[c] ? cells[c] : "-");
        if (!s) abort();
        t->cells[t->nrows * (size_t)t->ncols + (size_t)c] = s;
    }
    t->nrows++;
}

void cli_table_print(cli_table_t *t, FILE *out)
{
    size_t *w = calloc((size_t)t->ncols, sizeof *w);
    if (!w) abort();
    for (size_t r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols; c++) {
            size_t l = strlen(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (l > w[c]) w[c] = l;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * (size_t)t->ncols + (size_t)c];
            if (c == t->ncols - 1) fprintf(out, "%s\n", s);
            else fprintf(out, "%-*s  ", (int)w[c], s);
        }
    }
    free(w);
}

void cli_table_free(cli_table_t *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* ---- JSON ------------------------------------------------------------------------ */

void cli_json_print(cJSON *json)
{
    char *s = cJSON_Print(json);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        cJSON_free(s);
    }
    cJSON_Delete(json);
}

void cli_json_array_begin(cli_json_array_t *a)
{
    a->n = 0;
    fputc('[', stdout);
}

void cli_json_array_item(cli_json_array_t *a, cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!s) return;
    fputs(a->n++ ? ",\n  " : "\n  ", stdout);
    fputs(s, stdout);
    cJSON_free(s);
}

void cli_json_array_end(cli_json_array_t *a)
{
    fputs(a->n ? "\n]\n" : "]\n", stdout);
}

static void add_str_or_null(cJSON *o, const char *key, const char *s)
{
    if (s && *s) cJSON_AddStringToObject(o, key, s);
    else cJSON_AddNullToObject(o, key);
}

cJSON *cli_node_json(const Corral__V1__Node *n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", n->name);
    cJSON_AddStringToObject(o, "state", ctl_node_state_name(n->state));
    add_str_or_null(o, "address", n->address);
    cJSON_AddBoolToObject(o, "accepts_inbound", n->accepts_inbound);
    cJSON_AddNumberToObject(o, "cores", n->cores);
    cJSON_AddNumberToObject(o, "memory_bytes", (double)n->memory_bytes);
    cJSON_AddStringToObject(o, "agent_version", n->agent_version);
    cJSON_AddNumberToObject(o, "last_seen_unix_ms", (double)n->last_seen_unix_ms);
    cJSON_AddBoolToObject(o, "drain", n->drain);
    cJSON_AddNumberToObject(o, "robots", n->robot_count);
    cJSON_AddNumberToObject(o, "gpus", n->gpu_count);
    return o;
}

cJSON *cli_robot_json(const Corral__V1__Robot *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", r->name);
    cJSON_AddStringToObject(o, "driver", r->driver);
    add_str_or_null(o, "node", r->node);
    cJSON_AddStringToObject(o, "state", ctl_resource_state_name(r->state));
    add_str_or_null(o, "experiment", r->experiment);
    cJSON_AddStringToObject(o, "model", r->model);
    cJSON_AddStringToObject(o, "port", r->port);
    cJSON *s = cJSON_AddObjectToObject(o, "settings");
    for (size_t i = 0; i < r->n_settings; i++)
        cJSON_AddStringToObject(s, r->settings[i]->key, r->settings[i]->value);
    cJSON *l = cJSON_AddArrayToObject(o, "labels");
    for (size_t i = 0; i < r->n_labels; i++) cJSON_AddItemToArray(l, cJSON_CreateString(r->labels[i]));
    cJSON_AddBoolToObject(o, "registered", r->registered);
    cJSON_AddBoolToObject(o, "reported", r->reported);
    cJSON_AddBoolToObject(o, "estopped", r->estopped);
    return o;
}

cJSON *cli_gpu_json(const Corral__V1__Gpu *g)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "node", g->node);
    cJSON_AddNumberToObject(o, "index", g->index);
    cJSON_AddStringToObject(o, "model", g->model);
    cJSON_AddNumberToObject(o, "memory_bytes", (double)g->memory_bytes);
    cJSON_AddStringToObject(o, "state", ctl_resource_state_name(g->state));
    add_str_or_null(o, "experiment", g->experiment);
    cJSON_AddBoolToObject(o, "registered", g->registered);
    cJSON_AddBoolToObject(o, "probed", g->probed);
    add_str_or_null(o, "uuid", g->uuid);
    return o;
}

/* ---- sizes -------------------------------------------------------------------------- */

int cli_parse_size(const char *s, uint64_t *bytes, cr_err_t *err)
{
    static const struct { const char *suffix; uint64_t mult; } units[] = {
        {"", 1}, {"B", 1},
        {"K", 1ull << 10}, {"KiB", 1ull << 10}, {"KB", 1000ull},
        {"M", 1ull << 20}, {"MiB", 1ull << 20}, {"MB", 1000000ull},
        {"G", 1ull << 30}, {"GiB", 1ull << 30}, {"GB", 1000000000ull},
        {"T", 1ull << 40}, {"TiB", 1ull << 40}, {"TB", 1000000000000ull},
    };
    if (!s || !*s) return cr_err_set(err, CR_EINVAL, "size is empty");
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return cr_err_set(err, CR_EINVAL, "bad size '%s': expected a number and a unit such as 80GiB", s);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(end, units[i].suffix) == 0 && strcmp(end, "b") != 0) {
            double b = v * (double)units[i].mult;
            if (b >= 18446744073709551615.0)
                return cr_err_set(err, CR_EINVAL, "size '%s' is too large", s);
            *bytes = (uint64_t)(b + 0.5);
            return 0;
        }
    return cr_err_set(err, CR_EINVAL, "bad size '%s': unknown unit '%s' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)",
                      s, end);
}

void cli_format_size(uint64_t bytes, char *out, size_t cap)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    int i = 0;
    while (v >= 1024 && i < 5) {
        v /= 1024;
        i++;
    }
    if (i == 0) snprintf(out, cap, "%" PRIu64 " B", bytes);
    else if (v == (double)(uint64_t)v) snprintf(out, cap, "%.0f %s", v, u[i]);
    else snprintf(out, cap, "%.1f %s", v, u[i]);
}

/* ---- arguments ------------------------------------------------------------------------- */

static int allowed_has(const char *allowed, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = allowed; p && *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l == n && strncmp(p, name, n) == 0) return 1;
        p = c ? c + 1 : p + l;
    }
    return 0;
}

int cli_args_parse(const char *prog, int argc, char **argv, const char *allowed, int npos_min,
                   int npos_max, cli_args_t *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || strcmp(arg, "--") == 0) {
            if (a->npos >= npos_max || a->npos >= 4) {
                fprintf(stderr, "%s: unexpected argument '%s'\n", prog, arg);
                return CLI_EUSER;
            }
            a->pos[a->npos++] = arg;
            continue;
        }
        char name[64];
        const char *eq = strchr(arg + 2, '=');
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - arg - 2) : (int)strlen(arg + 2), arg + 2);
        int flag = strcmp(name, "json") == 0 || strcmp(name, "release") == 0 || strcmp(name, "undo") == 0;
        int known = strcmp(name, "controller") == 0 || strcmp(name, "json") == 0 || strcmp(name, "tls") == 0 ||
                    strcmp(name, "token-file") == 0 || allowed_has(allowed, name);
        if (!known) {
            fprintf(stderr, "%s: unknown option --%s\n", prog, name);
            return CLI_EUSER;
        }
        const char *val = NULL;
        if (flag) {
            if (eq) {
                fprintf(stderr, "%s: --%s takes no value\n", prog, name);
                return CLI_EUSER;
            }
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "%s: --%s needs a value\n", prog, name);
            return CLI_EUSER;
        }
        if (strcmp(name, "json") == 0) a->json = 1;
        else if (strcmp(name, "release") == 0) a->release = 1;
        else if (strcmp(name, "undo") == 0) a->undo = 1;
        else if (strcmp(name, "controller") == 0) a->controller = val;
        /* Through the environment cli_ctl_connect reads, as `corral --tls DIR <command>` does. */
        else if (strcmp(name, "tls") == 0) setenv("CORRAL_TLS_DIR", val, 1);
        else if (strcmp(name, "token-file") == 0) setenv("CORRAL_TOKEN_FILE", val, 1);
        else if (strcmp(name, "node") == 0) a->node = val;
        else if (strcmp(name, "driver") == 0) a->driver = val;
        else if (strcmp(name, "model") == 0) a->model = val;
        else if (strcmp(name, "port") == 0) a->port = val;
        else if (strcmp(name, "memory") == 0) a->memory = val;
        else if (strcmp(name, "index") == 0) a->index = val;
        else if (strcmp(name, "uuid") == 0) a->uuid = val;
        else if (strcmp(name, "name") == 0) a->name = val;
        else if (strcmp(name, "role") == 0) a->role = val;
        else if (strcmp(name, "tail") == 0) a->tail = val;
        else if (strcmp(name, "label") == 0) {
            if (a->n_labels == CLI_MAX_SETS) {
                fprintf(stderr, "%s: at most %d --label options\n", prog, CLI_MAX_SETS);
                return CLI_EUSER;
            }
            a->labels[a->n_labels++] = val;
        } else if (strcmp(name, "set") == 0) {
            if (a->n_sets == CLI_MAX_SETS) {
                fprintf(stderr, "%s: at most %d --set options\n", prog, CLI_MAX_SETS);
                return CLI_EUSER;
            }
            a->sets[a->n_sets++] = val;
        }
    }
    if (a->npos < npos_min) {
        fprintf(stderr, "%s: missing argument (see --help)\n", prog);
        return CLI_EUSER;
    }
    return CLI_OK;
}
