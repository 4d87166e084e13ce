/* test_secure.c - TLS and mutual TLS with certificates from rpc_certs_make (what
 * `corral certs` runs): the identity handlers see, and the refusals: a client
 * certificate from another CA, no client certificate, a client that does not
 * trust the server. The server keeps serving good clients through all of them. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/time.h"
#include "fixture.h"
#include "tests/harness.h"

static char dir_a[4200], dir_b[4200];

static void make_certs(void)
{
    if (dir_a[0]) return;
    snprintf(dir_a, sizeof dir_a, "%s/a", test_tmpdir());
    snprintf(dir_b, sizeof dir_b, "%s/b", test_tmpdir());
    const char *hosts[] = {"node1", "10.1.2.3"};
    const char *clients[] = {"agent-7", "admin"};
    cr_err_t err = {0};
    ASSERT_OK(rpc_certs_make(dir_a, hosts, 2, clients, 2, &err), &err);
    ASSERT_OK(rpc_certs_make(dir_b, hosts, 1, clients, 1, &err), &err);   /* another CA */
}

static const char *sub(const char *dir, const char *name)
{
    static char p[2][4300];
    static int w;
    w ^= 1;
    snprintf(p[w], sizeof p[w], "%s/%s", dir, name);
    return p[w];
}

static void test_certs_make(void)
{
    make_certs();
    struct stat sb;
    ASSERT_INT_EQ(stat(sub(dir_a, "server/key.pem"), &sb), 0);
    ASSERT_INT_EQ(sb.st_mode & 0777, 0600);
    ASSERT_INT_EQ(stat(sub(dir_a, "agent-7/cert.pem"), &sb), 0);
    /* a second run keeps the CA and adds a client */
    FILE *f = fopen(sub(dir_a, "ca.pem"), "r");
    char before[4096] = "", after[4096] = "";
    ASSERT_TRUE(f && fread(before, 1, sizeof before - 1, f) > 0);
    fclose(f);
    const char *more[] = {"late"};
    cr_err_t err = {0};
    ASSERT_OK(rpc_certs_make(dir_a, NULL, 0, more, 1, &err), &err);
    f = fopen(sub(dir_a, "ca.pem"), "r");
    ASSERT_TRUE(f && fread(after, 1, sizeof after - 1, f) > 0);
    fclose(f);
    ASSERT_STR_EQ(before, after);
    ASSERT_INT_EQ(stat(sub(dir_a, "late/key.pem"), &sb), 0);
    /* names that would escape the directory are refused */
    const char *evil[] = {"../x"};
    ASSERT_INT_EQ(rpc_certs_make(dir_a, NULL, 0, evil, 1, &err), CR_EINVAL);
    const char *server[] = {"server"};
    ASSERT_INT_EQ(rpc_certs_make(dir_a, NULL, 0, server, 1, &err), CR_EINVAL);
}

static void test_certs_cli(void)
{
    const char *corral = test_build_path("corral");
    TEST_SKIP_IF(access(corral, X_OK) != 0, "%s is not built", corral);
    char cmd[9000];
    const char *dir = test_tmpdir();
    snprintf(cmd, sizeof cmd, "%s certs %s/c --hosts ctl.lab,10.0.0.9 --clients agent-1,admin >/dev/null", corral, dir);
    ASSERT_INT_EQ(system(cmd), 0);
    char p[4300];
    snprintf(p, sizeof p, "%s/c/agent-1/key.pem", dir);
    ASSERT_INT_EQ(access(p, R_OK), 0);
    snprintf(p, sizeof p, "%s/c/server/cert.pem", dir);
    ASSERT_INT_EQ(access(p, R_OK), 0);
    /* user errors exit 1 with a message */
    snprintf(cmd, sizeof cmd, "%s certs %s/c --clients ../up 2>/dev/null", corral, dir);
    ASSERT_INT_EQ(WEXITSTATUS(system(cmd)), 1);
    snprintf(cmd, sizeof cmd, "%s certs 2>/dev/null", corral);
    ASSERT_INT_EQ(WEXITSTATUS(system(cmd)), 1);
}

static void test_tls(void)
{
    make_certs();
    rpc_opts_t so = {.security = RPC_TLS, .cert_dir = sub(dir_a, "server")};
    fx_server_t f;
    fx_server_start(&f, &so, 0);
    rpc_opts_t co = {.security = RPC_TLS, .cert_dir = sub(dir_a, "agent-7")};
    rpc_channel_t *ch = fx_channel(f.target, &co);
    cr_err_t err = {0};
    rpc_code_t st;
    char peer[64];
    ASSERT_OK(fx_echo(ch, "tls", 0, 0, 5000, 5000, &st, peer, sizeof peer, &err), &err);
    ASSERT_STR_EQ(peer, "");   /* TLS only: no client identity */
    rpc_channel_destroy(ch);
    /* a plaintext client cannot talk to a TLS server */
    ch = fx_channel(f.target, NULL);
    ASSERT_INT_EQ(fx_echo(ch, "plain", 0, 0, 0, 2000, &st, NULL, 0, &err), CR_EUNAVAIL);
    rpc_channel_destroy(ch);
    /* a client trusting another CA refuses the server */
    rpc_opts_t other = {.security = RPC_TLS, .cert_dir = sub(dir_b, "agent-7")};
    ch = fx_channel(f.target, &other);
    ASSERT_INT_EQ(fx_echo(ch, "x", 0, 0, 0, 2000, &st, NULL, 0, &err), CR_EUNAVAIL);
    rpc_channel_destroy(ch);
    /* by host name, with the certificate's name */
    rpc_opts_t named = {.security = RPC_TLS, .cert_dir = sub(dir_a, "admin"), .server_name = "node1"};
    ch = fx_channel(f.target, &named);
    ASSERT_OK(fx_echo(ch, "named", 0, 0, 0, 5000, &st, NULL, 0, &err), &err);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_mtls(void)
{
    make_certs();
    rpc_opts_t so = {.security = RPC_MTLS, .cert_dir = sub(dir_a, "server"), .token = "tok"};
    fx_server_t f;
    fx_server_start(&f, &so, 0);
    rpc_opts_t co = {.security = RPC_MTLS, .cert_dir = sub(dir_a, "agent-7"), .token = "tok"};
    rpc_channel_t *ch = fx_channel(f.target, &co);
    cr_err_t err = {0};
    rpc_code_t st;
    char peer[64];
    ASSERT_OK(fx_echo(ch, "mtls", 0, 0, 100000, 5000, &st, peer, sizeof peer, &err), &err);
    ASSERT_STR_EQ(peer, "agent-7");
    /* a stream sees the same identity */
    fx_rec_t r;
    fx_rec_init(&r);
    rpc_stream_cbs_t cbs = fx_rec_cbs(&r);
    rpc_stream_t *s;
    ASSERT_OK(rpc_stream_open(ch, &s, RPC_ECHO_CHAT, &corral__v1__echo_reply__descriptor, &cbs, 5000, &err), &err);
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    ASSERT_OK(rpc_stream_send(s, &q.base, -1, &err), &err);
    ASSERT_OK(rpc_stream_close_send(s, &err), &err);
    ASSERT_OK(rpc_stream_wait(s, 5000, NULL, &err), &err);
    ASSERT_STR_EQ(r.last_peer, "agent-7");
    rpc_stream_destroy(s);
    rpc_channel_destroy(ch);
    fx_server_stop(&f);
}

static void test_mtls_refusals(void)
{
    make_certs();
    rpc_opts_t so = {.security = RPC_MTLS, .cert_dir = sub(dir_a, "server")};
    fx_server_t f;
    fx_server_start(&f, &so, 0);
    fx_log_capture();
    cr_err_t err = {0};
    rpc_code_t st;
    /* a client certificate from another CA (trusting our CA, so only the client
     * side is wrong) */
    char mixed[4300];
    snprintf(mixed, sizeof mixed, "%s/mixed", test_tmpdir());
    mkdir(mixed, 0755);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp %s/ca.pem %s/ && cp %s/agent-7/cert.pem %s/agent-7/key.pem %s/",
             dir_a, mixed, dir_b, dir_b, mixed);
    ASSERT_INT_EQ(system(cmd), 0);
    rpc_opts_t wrong = {.security = RPC_MTLS, .cert_dir = mixed};
    rpc_channel_t *ch = fx_channel(f.target, &wrong);
    int64_t t0 = cr_now_ns();
    ASSERT_INT_EQ(fx_echo(ch, "x", 0, 0, 0, 5000, &st, NULL, 0, &err), CR_EUNAVAIL);
    ASSERT_INT_EQ(st, RPC_UNAVAILABLE);
    ASSERT_TRUE(cr_now_ns() - t0 < 3 * CR_NS_PER_S);
    rpc_channel_destroy(ch);
    /* no client certificate at all */
    rpc_opts_t none = {.security = RPC_TLS, .cert_dir = sub(dir_a, "agent-7")};
    ch = fx_channel(f.target, &none);
    ASSERT_INT_EQ(fx_echo(ch, "x", 0, 0, 0, 5000, &st, NULL, 0, &err), CR_EUNAVAIL);
    rpc_channel_destroy(ch);
    /* a good client is still served */
    rpc_opts_t good = {.security = RPC_MTLS, .cert_dir = sub(dir_a, "admin")};
    ch = fx_channel(f.target, &good);
    char peer[64];
    ASSERT_OK(fx_echo(ch, "ok", 0, 0, 0, 5000, &st, peer, sizeof peer, &err), &err);
    ASSERT_STR_EQ(peer, "admin");
    rpc_channel_destroy(ch);
    fx_log_release();
    ASSERT_INT_EQ(atomic_load(&f.echo.started), 1);
    ASSERT_TRUE(fx_log_has("andshake"));   /* gRPC's own line names the failed handshake */
    fx_server_stop(&f);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"certs_make", test_certs_make},
        {"certs_cli", test_certs_cli},
        {"tls", test_tls},
        {"mtls", test_mtls},
        {"mtls_refusals", test_mtls_refusals},
        {NULL, NULL}};
    return test_main("rpc.secure", cases, argc, argv);
}
