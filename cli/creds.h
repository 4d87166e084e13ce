/* creds.h - credentials from the command line (creds.c): token files, certificate
 * directories, loopback addresses and the wording of TLS refusals. */
#ifndef CORRAL_CLI_CREDS_H
#define CORRAL_CLI_CREDS_H

#include "common/err.h"

#include <stddef.h>

#define CLI_TOKEN_MIN 16   /* characters; shorter tokens are refused */

/* Reads the bearer token in path (surrounding newline and blanks trimmed). Refused,
 * with a message naming path: a file others may read or write (mode & 077), not
 * a regular file, shorter than CLI_TOKEN_MIN, longer than 4096, or with
 * characters other than printable ASCII. On 0 *out is the caller's
 * (cli_token_free wipes it). */
int cli_token_read(const char *path, char **out, cr_err_t *err);
void cli_token_free(char *tok);

/* The certificate directory (ca.pem, cert.pem, key.pem) for dir: dir itself when
 * it holds cert.pem, else dir/sub (the layout of `corral certs DIR`: sub is
 * "server", a node's or a client's name; NULL: dir only). Into out; an error
 * names the missing file. */
int cli_tls_dir(const char *dir, const char *sub, char *out, size_t cap, cr_err_t *err);

/* 1 when addr ("host:port") is a loopback address (127.*, localhost, ::1). */
int cli_addr_is_loopback(const char *addr);

/* 1 when something accepts TCP connections at target within timeout_ms. */
int cli_tcp_answers(const char *target, int timeout_ms);

/* Why a connection to the controller at target, which accepts TCP connections,
 * failed: the TLS handshake (cert_dir: the client's certificate directory, or
 * NULL for a plaintext client) with gRPC's details in brackets. */
void cli_explain_refusal(const char *target, const char *cert_dir, const char *details, char *out, size_t n);

#endif
