/* creds.c - credentials from the command line: bearer tokens read from files
 * (refused when others may read them), certificate directories as `corral certs`
 * lays them out, whether an address is loopback, and why a connection to the
 * controller failed when something does answer there (a TLS refusal is not an
 * unreachable controller). The daemons and the CLI clients share them so every
 * refusal is worded the same way. */
#define _GNU_SOURCE
#include "cli/creds.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_MAX 4096

int cli_token_read(const char *path, char **out, cr_err_t *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cr_err_set(err, CR_EINVAL, "token file %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cr_err_set(err, CR_EINVAL, "token file %s is not a regular file", path);
    }
    /* Like ssh with a private key: a secret others can read is no secret. */
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        close(fd);
        return cr_err_set(err, CR_EPERM, "token file %s is readable or writable by others (mode %04o): "
                          "refused; make it private with `chmod 600 %s`", path,
                          (unsigned)(st.st_mode & 07777), path);
    }
    char *buf = calloc(1, TOKEN_MAX + 2);
    if (!buf) {
        close(fd);
        return cr_err_set(err, CR_ENOMEM, "token file %s", path);
    }
    size_t len = 0;
    ssize_t n;
    while (len <= TOKEN_MAX && (n = read(fd, buf + len, TOKEN_MAX + 1 - len)) > 0) len += (size_t)n;
    close(fd);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        buf[--len] = '\0';
    const char *why = NULL;
    if (len > TOKEN_MAX) why = "is longer than 4096 characters";
    else if (len < CLI_TOKEN_MIN) why = "holds a token shorter than 16 characters (make one with "
                                        "`head -c 32 /dev/urandom | base64`)";
    for (size_t i = 0; !why && i < len; i++)   /* it travels as an HTTP header value */
        if (buf[i] < 0x21 || buf[i] > 0x7e) why = "holds characters other than printable ASCII without spaces";
    if (why) {
        explicit_bzero(buf, TOKEN_MAX + 2);
        free(buf);
        return cr_err_set(err, CR_EINVAL, "token file %s %s", path, why);
    }
    *out = buf;
    return 0;
}

void cli_token_free(char *tok)
{
    if (!tok) return;
    explicit_bzero(tok, strlen(tok));
    free(tok);
}

static int has_file(const char *dir, const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

int cli_tls_dir(const char *dir, const char *sub, char *out, size_t cap, cr_err_t *err)
{
    if (!dir || !*dir) return cr_err_set(err, CR_EINVAL, "the TLS directory is empty");
    struct stat st;
    if (stat(dir, &st) != 0) return cr_err_set(err, CR_EINVAL, "TLS directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return cr_err_set(err, CR_EINVAL, "TLS directory %s is not a directory", dir);
    if (has_file(dir, "cert.pem")) {
        snprintf(out, cap, "%s", dir);
    } else {
        char d[4200];
        snprintf(d, sizeof d, "%s/%s", dir, sub ? sub : "");
        if (!sub || !has_file(d, "cert.pem"))
            return cr_err_set(err, CR_EINVAL, "TLS directory %s has no cert.pem%s%s%s (make them with "
                              "`corral certs`)", dir, sub ? " (nor has " : "", sub ? d : "", sub ? ")" : "");
        snprintf(out, cap, "%s", d);
    }
    static const char *const need[] = {"ca.pem", "cert.pem", "key.pem"};
    for (int i = 0; i < 3; i++)
        if (!has_file(out, need[i]))
            return cr_err_set(err, CR_EINVAL, "TLS directory %s has no %s (make it with `corral certs`)", out,
                              need[i]);
    return 0;
}

/* host and port of "host:port", "[v6]:port" or ":port". */
static void split_addr(const char *addr, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon = strrchr(addr, ':');
    size_t hl = colon ? (size_t)(colon - addr) : strlen(addr);
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    }
    snprintf(host, hcap, "%.*s", (int)hl, addr);
    snprintf(port, pcap, "%s", colon ? colon + 1 : "");
}

int cli_addr_is_loopback(const char *addr)
{
    char host[256], port[32];
    split_addr(addr, host, sizeof host, port, sizeof port);
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0;
}

int cli_tcp_answers(const char *target, int timeout_ms)
{
    char host[256], port[32];
    split_addr(target, host, sizeof host, port, sizeof port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res) return 0;
    int ok = 0;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int rc = connect(fd, res->ai_addr, res->ai_addrlen);
        if (rc == 0) {
            ok = 1;
        } else if (errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int e = 0;
            socklen_t el = sizeof e;
            ok = poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

void cli_explain_refusal(const char *target, const char *cert_dir, const char *details, char *out, size_t n)
{
    if (cert_dir)
        snprintf(out, n, "controller %s accepts connections but the TLS handshake failed: the controller does "
                 "not accept this certificate (%s/cert.pem, from another CA?), this CA (%s/ca.pem) did not sign "
                 "the controller's, or the controller serves no TLS [%s]", target, cert_dir, cert_dir, details);
    else
        snprintf(out, n, "controller %s accepts connections but closed this one, made without TLS: a controller "
                 "serving mutual TLS refuses plaintext clients; give --tls DIR or set CORRAL_TLS_DIR (a "
                 "certificate directory made by `corral certs`) [%s]", target, details);
}
