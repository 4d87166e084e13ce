/* certs.c - makes the certificate directories TLS and mutual TLS need, with
 * OpenSSL's libcrypto: a CA (reused when dir already has one, so clients can be
 * added later), a server certificate whose SANs cover the given hosts plus
 * loopback, and one client certificate per name, its CN being the identity
 * handlers see (rpc_peer_t.cert_cn). Each file is written to a temporary name and
 * renamed, keys with mode 0600. */
#define _GNU_SOURCE
#include "common/rpc/rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define VALID_DAYS (10 * 365)

static int ssl_fail(cr_err_t *err, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return cr_err_set(err, CR_EINTERNAL, "%s failed%s%s", what, buf[0] ? ": " : "", buf);
}

static int name_ok(const char *s, int allow_colon)
{
    if (!s || !*s || strlen(s) > 200) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_' || (allow_colon && *p == ':')))
            return 0;
    return 1;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value, cr_err_t *err)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!e) return ssl_fail(err, "certificate extension");
    int ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok ? 0 : ssl_fail(err, "adding a certificate extension");
}

/* A certificate for key with subject CN=cn, signed by ca/ca_key (self-signed
 * when ca is NULL). san: "DNS:a,IP:1.2.3.4" or NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *ca_key, const char *san,
                       cr_err_t *err)
{
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    if (!x || !bn) goto fail;
    X509_set_version(x, 2);
    if (!BN_rand(bn, 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
        goto fail;
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);   /* tolerate clocks an hour apart */
    X509_gmtime_adj(X509_getm_notAfter(x), (long)VALID_DAYS * 24 * 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"corral", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);

    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, ca ? ca : x, x, NULL, NULL, 0);
    int is_ca = ca == NULL;
    if (add_ext(x, &ctx, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE", err) ||
        add_ext(x, &ctx, NID_key_usage,
                is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature", err) ||
        add_ext(x, &ctx, NID_subject_key_identifier, "hash", err) ||
        (!is_ca && add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth", err)) ||
        (!is_ca && add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always", err)) ||
        (san && add_ext(x, &ctx, NID_subject_alt_name, san, err))) {
        BN_free(bn);
        X509_free(x);
        return NULL;
    }
    if (!X509_sign(x, ca_key ? ca_key : key, EVP_sha256())) goto fail;
    BN_free(bn);
    return x;
fail:
    ssl_fail(err, "making a certificate");
    BN_free(bn);
    X509_free(x);
    return NULL;
}

/* Writes path atomically (temporary file, rename); mode 0600 for keys. */
static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, cr_err_t *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, key ? 0600 : 0644);
    if (fd < 0) return cr_err_set(err, CR_EIO, "cannot write %s: %s", tmp, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return cr_err_set(err, CR_EIO, "cannot write %s: %s", tmp, strerror(errno));
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, cert);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return cr_err_set(err, CR_EIO, "cannot write %s", path);
    }
    return 0;
}

static int mkdir_p(const char *path, cr_err_t *err)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
    return cr_err_set(err, CR_EIO, "cannot create %s: %s", path, strerror(errno));
}

static int load_ca(const char *dir, X509 **ca, EVP_PKEY **key, cr_err_t *err)
{
    char cpath[4200], kpath[4200];
    snprintf(cpath, sizeof cpath, "%s/ca.pem", dir);
    snprintf(kpath, sizeof kpath, "%s/ca-key.pem", dir);
    if (access(cpath, F_OK) != 0) return 1;   /* none yet */
    FILE *f = fopen(cpath, "r");
    if (f) { *ca = PEM_read_X509(f, NULL, NULL, NULL); fclose(f); }
    f = fopen(kpath, "r");
    if (f) { *key = PEM_read_PrivateKey(f, NULL, NULL, NULL); fclose(f); }
    if (!*ca || !*key) {
        X509_free(*ca);
        EVP_PKEY_free(*key);
        *ca = NULL;
        *key = NULL;
        ERR_clear_error();
        return cr_err_set(err, CR_EINVAL, "%s exists but %s or %s cannot be read as a CA", cpath, cpath, kpath);
    }
    return 0;
}

/* dir/sub/{ca,cert,key}.pem for one identity. */
static int make_leaf(const char *dir, const char *sub, const char *cn, const char *san, X509 *ca,
                     EVP_PKEY *ca_key, cr_err_t *err)
{
    char d[4200], p[4300];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    int rc = mkdir_p(d, err);
    if (rc) return rc;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key) return ssl_fail(err, "making a key");
    X509 *cert = make_cert(key, cn, ca, ca_key, san, err);
    if (!cert) {
        EVP_PKEY_free(key);
        return err ? err->code : CR_EINTERNAL;
    }
    snprintf(p, sizeof p, "%s/key.pem", d);
    rc = write_pem(p, NULL, key, err);
    snprintf(p, sizeof p, "%s/cert.pem", d);
    if (!rc) rc = write_pem(p, cert, NULL, err);
    snprintf(p, sizeof p, "%s/ca.pem", d);
    if (!rc) rc = write_pem(p, ca, NULL, err);
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

int rpc_certs_make(const char *dir, const char *const *hosts, size_t n_hosts,
                   const char *const *clients, size_t n_clients, cr_err_t *err)
{
    for (size_t i = 0; i < n_hosts; i++)
        if (!name_ok(hosts[i], 1))
            return cr_err_set(err, CR_EINVAL, "host \"%s\": use letters, digits, '.', '-', '_', ':'", hosts[i]);
    for (size_t i = 0; i < n_clients; i++)
        if (!name_ok(clients[i], 0) || strcmp(clients[i], "server") == 0)
            return cr_err_set(err, CR_EINVAL, "client name \"%s\": use letters, digits, '.', '-', '_' (not \"server\")",
                              clients[i]);
    int rc = mkdir_p(dir, err);
    if (rc) return rc;

    X509 *ca = NULL;
    EVP_PKEY *ca_key = NULL;
    rc = load_ca(dir, &ca, &ca_key, err);
    if (rc < 0) return rc;
    if (rc == 1) {
        ca_key = EVP_EC_gen("P-256");
        if (!ca_key) return ssl_fail(err, "making the CA key");
        ca = make_cert(ca_key, "corral CA", NULL, NULL, NULL, err);
        char p[4200];
        snprintf(p, sizeof p, "%s/ca-key.pem", dir);
        rc = ca ? write_pem(p, NULL, ca_key, err) : (err ? err->code : CR_EINTERNAL);
        snprintf(p, sizeof p, "%s/ca.pem", dir);
        if (!rc) rc = write_pem(p, ca, NULL, err);
        if (rc) goto out;
    }

    /* The server's SANs: every host (IP or DNS), plus loopback so local tests
     * and single-machine clusters verify without a name override. */
    char san[8192];
    size_t off = 0;
    const char *first = n_hosts ? hosts[0] : "localhost";
    for (size_t i = 0; i < n_hosts; i++) {
        unsigned char buf[16];
        int ip = inet_pton(AF_INET, hosts[i], buf) == 1 || inet_pton(AF_INET6, hosts[i], buf) == 1;
        off += (size_t)snprintf(san + off, sizeof san - off, "%s:%s,", ip ? "IP" : "DNS", hosts[i]);
        if (off >= sizeof san) {
            rc = cr_err_set(err, CR_EINVAL, "too many hosts");
            goto out;
        }
    }
    snprintf(san + off, sizeof san - off, "DNS:localhost,IP:127.0.0.1,IP:::1");
    /* The server's certificate is kept when only clients are being added. */
    char probe[4300];
    snprintf(probe, sizeof probe, "%s/server/cert.pem", dir);
    if (n_hosts > 0 || access(probe, F_OK) != 0)
        rc = make_leaf(dir, "server", first, san, ca, ca_key, err);
    for (size_t i = 0; !rc && i < n_clients; i++)
        rc = make_leaf(dir, clients[i], clients[i], NULL, ca, ca_key, err);
out:
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return rc;
}
