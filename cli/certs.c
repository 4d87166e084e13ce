/* certs.c - `corral certs DIR [--hosts h1,h2] [--clients n1,n2]`: makes the CA
 * and the certificate directories mutual TLS needs (see rpc_certs_make). Run it
 * again with more --clients to add identities under the same CA. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/rpc/rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAMES 64

static void usage(FILE *out)
{
    fprintf(out,
            "usage: corral certs DIR [--hosts h1,h2,...] [--clients n1,n2,...]\n"
            "  Makes DIR/ca.pem + DIR/ca-key.pem (kept if present), DIR/server/ for the\n"
            "  server (CN = first host; SANs = hosts, localhost, 127.0.0.1) and DIR/<name>/\n"
            "  per client (CN = name; default one client named \"client\"). Each directory\n"
            "  holds ca.pem, cert.pem and key.pem. Then: `corral controller --tls DIR`, `corral\n"
            "  agent --name N --tls DIR` (uses DIR/N/), and the CLI with --tls DIR/<client>.\n");
}

/* Splits a comma list in place into names[]; returns the count or -1. */
static int split(char *list, const char **names, int max)
{
    int n = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == max) return -1;
        names[n++] = t;
    }
    return n;
}

int cli_certs_main(int argc, char **argv)
{
    const char *dir = NULL;
    const char *hosts[MAX_NAMES], *clients[MAX_NAMES];
    int n_hosts = 0, n_clients = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return CLI_OK;
        } else if ((strcmp(argv[i], "--hosts") == 0 || strcmp(argv[i], "--clients") == 0) && i + 1 < argc) {
            int is_hosts = argv[i][2] == 'h';
            int n = split(argv[++i], is_hosts ? hosts : clients, MAX_NAMES);
            if (n < 0) {
                fprintf(stderr, "corral certs: at most %d names in %s\n", MAX_NAMES, argv[i - 1]);
                return CLI_EUSER;
            }
            if (is_hosts) n_hosts = n;
            else n_clients = n;
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "corral certs: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return CLI_EUSER;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        usage(stderr);
        return CLI_EUSER;
    }
    if (n_clients < 0) {
        clients[0] = "client";
        n_clients = 1;
    }
    cr_err_t err = {0};
    if (rpc_certs_make(dir, hosts, (size_t)n_hosts, clients, (size_t)n_clients, &err) != 0) {
        fprintf(stderr, "corral certs: %s\n", err.msg);
        return CLI_EUSER;
    }
    printf("certificates in %s: ca.pem, server/", dir);
    for (int i = 0; i < n_clients; i++) printf(", %s/", clients[i]);
    printf("\n");
    return CLI_OK;
}
