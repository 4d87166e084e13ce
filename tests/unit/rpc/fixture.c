/* fixture.c - shared set-up of the RPC suites; see fixture.h. */
#define _GNU_SOURCE
#include "fixture.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/time.h"
#include "tests/harness.h"

void fx_server_start(fx_server_t *f, const rpc_opts_t *opts, unsigned flags)
{
    memset(f, 0, sizeof *f);
    rpc_echo_methods(f->methods, &f->echo, flags);
    cr_err_t err = {0};
    ASSERT_OK(rpc_server_create(&f->srv, "127.0.0.1:0", opts, f->methods, RPC_ECHO_N_METHODS, &err), &err);
    ASSERT_OK(rpc_server_start(f->srv, &err), &err);
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", rpc_server_port(f->srv));
}

void fx_server_stop(fx_server_t *f)
{
    rpc_server_destroy(f->srv);
    f->srv = NULL;
}

rpc_channel_t *fx_channel(const char *target, const rpc_opts_t *opts)
{
    rpc_channel_t *ch = NULL;
    cr_err_t err = {0};
    ASSERT_OK(rpc_channel_create(&ch, target, opts, &err), &err);
    return ch;
}

int fx_echo(rpc_channel_t *ch, const char *text, int code, int64_t sleep_ms, size_t payload,
            int64_t timeout_ms, rpc_code_t *st, char *peer_out, size_t peer_cap, cr_err_t *err)
{
    echo_req_t q;
    corral__v1__echo_request__init(&q);
    q.text = (char *)text;
    q.code = code;
    q.sleep_ms = sleep_ms;
    q.seq = 7;
    uint8_t *buf = payload ? malloc(payload) : NULL;
    if (buf) memset(buf, 0xab, payload);
    q.payload.data = buf;
    q.payload.len = payload;
    ProtobufCMessage *resp = NULL;
    int rc = rpc_unary_code(ch, RPC_ECHO_UNARY, &q.base, &corral__v1__echo_reply__descriptor, &resp,
                            timeout_ms, st, err);
    if (rc == 0) {
        echo_reply_t *r = (echo_reply_t *)resp;
        if (strcmp(r->text, text) != 0 || r->seq != 7 || r->payload.len != payload) rc = -100;
        if (peer_out) snprintf(peer_out, peer_cap, "%s", r->peer);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(buf);
    return rc;
}

static void rec_msg(rpc_stream_t *st, const ProtobufCMessage *m, void *user)
{
    (void)st;
    fx_rec_t *r = user;
    const echo_reply_t *e = (const echo_reply_t *)m;
    while (r->gate && !*r->gate) cr_sleep_ns(CR_NS_PER_MS);
    pthread_mutex_lock(&r->mu);
    if (e->seq != r->next_seq) r->out_of_order++;
    r->next_seq = e->seq + 1;
    r->last_count = e->count;
    r->last_bytes = e->bytes;
    snprintf(r->last_peer, sizeof r->last_peer, "%s", e->peer);
    r->n++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    (void)st;
    fx_rec_t *r = user;
    pthread_mutex_lock(&r->mu);
    r->closed++;
    r->code = code;
    snprintf(r->details, sizeof r->details, "%s", details);
    r->closed_ns = cr_now_ns();
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void fx_rec_init(fx_rec_t *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

rpc_stream_cbs_t fx_rec_cbs(fx_rec_t *r)
{
    return (rpc_stream_cbs_t){.on_message = rec_msg, .on_close = rec_close, .user = r};
}

int fx_rec_wait(fx_rec_t *r, long n, int64_t ms)
{
    int64_t end = cr_now_ns() + ms * CR_NS_PER_MS;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int ok = n < 0 ? r->closed > 0 : r->n >= n;
        pthread_mutex_unlock(&r->mu);
        if (ok) return 1;
        if (cr_now_ns() > end) return 0;
        cr_sleep_ns(2 * CR_NS_PER_MS);
    }
}

int fx_wait_atomic(atomic_long *v, long want, int64_t ms)
{
    int64_t end = cr_now_ns() + ms * CR_NS_PER_MS;
    while (atomic_load(v) < want) {
        if (cr_now_ns() > end) return 0;
        cr_sleep_ns(2 * CR_NS_PER_MS);
    }
    return 1;
}

static char log_path[4200];

void fx_log_capture(void)
{
    snprintf(log_path, sizeof log_path, "%s/rpc.log", test_tmpdir());
    ASSERT_INT_EQ(cr_log_open(log_path), 0);
}

int fx_log_has(const char *needle)
{
    FILE *f = fopen(log_path, "r");
    if (!f) return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

void fx_log_release(void)
{
    cr_log_open(NULL);
    /* echo what was captured, so a failing run shows it */
    FILE *f = fopen(log_path, "r");
    if (!f) return;
    char line[2048];
    while (fgets(line, sizeof line, f)) fprintf(stderr, "  log| %s", line);
    fclose(f);
}

static pid_t spawn(char *const argv[], int *out_fd)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    *out_fd = p[0];
    return pid;
}

/* Reads one line from fd, up to ms. */
static int read_line(int fd, char *buf, size_t cap, int64_t ms)
{
    size_t n = 0;
    int64_t end = cr_now_ns() + ms * CR_NS_PER_MS;
    while (n + 1 < cap && cr_now_ns() < end) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r <= 0) break;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = '\0';
    return (int)n;
}

pid_t fx_peer_serve(int port, const char *mtls_dir, int *port_out)
{
    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    char *argv[] = {(char *)test_build_path("tests/rpc_peer"), "serve", portbuf, (char *)mtls_dir, NULL};
    int fd;
    pid_t pid = spawn(argv, &fd);
    ASSERT_TRUE(pid > 0);
    char line[64];
    read_line(fd, line, sizeof line, 10000);
    close(fd);
    *port_out = 0;
    sscanf(line, "port %d", port_out);
    if (*port_out <= 0) fprintf(stderr, "  rpc_peer serve said \"%s\"\n", line);
    ASSERT_TRUE(*port_out > 0);
    return pid;
}

pid_t fx_peer_stream(const char *target)
{
    char *argv[] = {(char *)test_build_path("tests/rpc_peer"), "stream", (char *)target, NULL};
    int fd;
    pid_t pid = spawn(argv, &fd);
    ASSERT_TRUE(pid > 0);
    char line[64];
    read_line(fd, line, sizeof line, 10000);
    close(fd);
    if (strcmp(line, "streaming") != 0) fprintf(stderr, "  rpc_peer stream said \"%s\"\n", line);
    ASSERT_STR_EQ(line, "streaming");
    return pid;
}

void fx_peer_kill(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    kill(pid, SIGCONT);
    waitpid(pid, NULL, 0);
}
