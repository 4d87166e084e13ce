/* ch_netns_node.c - one node of the channels network test (channels_netns.sh), run
 * inside a network namespace:
 *   ch_netns_node relay ADDR
 *       a stand-alone relay (the controller's role) until SIGTERM;
 *   ch_netns_node consume NODE RELAY CHANNEL COUNT IDFILE
 *       a hub behind NAT (dials the relay, listens nowhere) with one channel; writes
 *       its hub id to IDFILE, then reads until it holds COUNT messages from each of
 *       the producers it sees, checking every producer's messages arrive in order,
 *       each exactly once; exits 0 when all is well;
 *   ch_netns_node produce NODE RELAY CHANNEL CNODE CID COUNT RATE
 *       puts COUNT messages of 4 KiB at RATE per second to CHANNEL of the hub CID on
 *       node CNODE (which accepts no inbound connection, so the route is the tunnel),
 *       then waits for every acknowledgement;
 *   ch_netns_node replica NODE CHANNEL [PNODE PADDR PID]...
 *       a replica of CHANNEL on NODE (listening on 127.0.0.1), replicated with the
 *       peers given; prints "ADDR HUBID" on stdout, then consumes until killed (the
 *       replica tests kill it to take its node away);
 *   ch_netns_node rput NODE CHANNEL COUNT [PNODE PADDR PID]...
 *       the same replica, and COUNT messages of 1 KiB put to it by two producers of
 *       its node, one in its process (in-process route) and one through shared
 *       memory; once both flushed (every message acknowledged) prints "acked ID1
 *       ID2 COUNT MSGS_PER_S" and waits to be killed;
 *   ch_netns_node djoin NODE DIRECTORY CHANNEL OUTFILE
 *       a consumer on NODE whose channel joins the channel directory (the
 *       controller) as the node's replica; appends to OUTFILE "ready HUBID GEN" once
 *       in the set, "set GEN" whenever it is replicated with a new set, and "m
 *       PRODUCER SEQ VALUE" for every message, until killed;
 *   ch_netns_node dput NODE DIRECTORY CHANNEL
 *       a producer on NODE that opens CHANNEL by name through the directory and
 *       obeys lines on stdin: "put FROM TO" puts messages FROM..TO-1 (1 KiB, the
 *       value first) and flushes, answering "ok ID ROUTE" or "err MESSAGE"; "wait
 *       GEN" waits until its hub holds the set of generation GEN or newer, answering
 *       "ok". Ends at end of input. */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channels/channel.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#define MSG_BYTES 4096
#define MAX_PRODUCERS 8

static int run_relay(const char *addr)
{
    /* Blocked before any thread starts, so only sigwait below sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    cr_err_t e = {0};
    ch_relay_t *r;
    if (ch_relay_create(addr, &r, &e)) {
        fprintf(stderr, "relay: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "relay: serving on %s\n", ch_relay_addr(r));
    int sig;
    sigwait(&set, &sig);
    ch_relay_destroy(r);
    return 0;
}

static int run_consume(const char *node, const char *relay, const char *name, int count, const char *idfile)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = node, .shm = -1, .relay = relay, .reconnect_ms = 100};
    ch_hub_t *h;
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 4096};
    if (ch_hub_create(&ho, &h, &e) || ch_channel_create(h, name, &co, &c, &e)) {
        fprintf(stderr, "consume: %s\n", e.msg);
        return 1;
    }
    FILE *f = fopen(idfile, "w");
    if (!f) return 1;
    char hex[CR_ID_HEX_LEN + 1];
    cr_id_format(ch_hub_id(h), hex);
    fprintf(f, "%s\n", hex);
    fclose(f);
    uint64_t ids[MAX_PRODUCERS] = {0};
    int64_t got[MAX_PRODUCERS] = {0};
    int nprod = 0, bad = 0, done = 0;
    int64_t deadline = cr_now_ns() + 120 * CR_NS_PER_S;
    while (!done && cr_now_ns() < deadline) {
        ch_msg_t *m;
        if (ch_get(c, &m, 1000, &e)) continue;
        int k = 0;
        while (k < nprod && ids[k] != m->producer) k++;
        if (k == nprod) {
            if (nprod == MAX_PRODUCERS) return 2;
            ids[nprod++] = m->producer;
        }
        int64_t v;
        memcpy(&v, m->data, sizeof v);
        if (m->len != MSG_BYTES || v != got[k] || m->seq != (uint64_t)v + 1) {
            fprintf(stderr, "consume: producer %d: got message %lld (seq %llu), expected %lld\n", k,
                    (long long)v, (unsigned long long)m->seq, (long long)got[k]);
            bad++;
        } else {
            got[k]++;
        }
        ch_msg_free(m);
        done = nprod >= 2;
        for (int i = 0; i < nprod; i++) done &= got[i] == count;
    }
    ch_stats_t st;
    ch_channel_stats(c, &st);
    /* A late resend may still arrive: let it, so duplicates are counted. */
    cr_sleep_ns(500 * CR_NS_PER_MS);
    ch_channel_stats(c, &st);
    printf("consume: producers=%d", nprod);
    for (int i = 0; i < nprod; i++) printf(" got[%d]=%lld", i, (long long)got[i]);
    printf(" accepted=%llu duplicates_dropped=%llu out_of_order=%d extra_queued=%zu\n",
           (unsigned long long)st.accepted, (unsigned long long)st.duplicates, bad, st.queued);
    int ok = done && bad == 0 && st.queued == 0 && st.accepted == (uint64_t)count * (uint64_t)nprod;
    ch_channel_destroy(c);
    ch_hub_destroy(h);
    return ok ? 0 : 3;
}

static int run_produce(const char *node, const char *relay, const char *name, const char *cnode,
                       const char *cid, int count, int rate)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = node, .shm = -1, .relay = relay, .reconnect_ms = 100};
    ch_hub_t *h;
    uint64_t id;
    if (cr_id_parse(cid, &id) || ch_hub_create(&ho, &h, &e)) {
        fprintf(stderr, "produce: bad hub id or %s\n", e.msg);
        return 1;
    }
    ch_where_t to = {.node = cnode, .process = id, .addr = "", .inbound = 0};
    ch_producer_opts_t po = {.window = 256};
    ch_producer_t *p;
    if (ch_producer_open(h, name, &to, &po, &p, &e)) {
        fprintf(stderr, "produce: %s\n", e.msg);
        return 1;
    }
    if (ch_producer_route(p) != CH_ROUTE_TUNNEL) {
        fprintf(stderr, "produce: route is %s, expected tunnel\n", ch_route_name(ch_producer_route(p)));
        return 1;
    }
    static char buf[MSG_BYTES];
    int64_t t0 = cr_now_ns();
    for (int64_t i = 0; i < count; i++) {
        cr_sleep_until_ns(t0 + i * CR_NS_PER_S / rate);
        memcpy(buf, &i, sizeof i);
        /* During a cut the window fills and put waits: keep waiting, never drop. */
        int rc;
        while ((rc = ch_put(p, buf, sizeof buf, 1, 1000, &e)) == CR_ETIMEDOUT) {}
        if (rc) {
            fprintf(stderr, "produce: put %lld: %s\n", (long long)i, e.msg);
            return 1;
        }
    }
    int rc = ch_producer_flush(p, 90000, &e);
    printf("produce %s: %d messages, reconnects=%llu, flush=%s\n", node, count,
           (unsigned long long)ch_producer_reconnects(p), rc ? e.msg : "ok");
    ch_producer_close(p);
    ch_hub_destroy(h);
    return rc ? 1 : 0;
}

static int run_replica(const char *node, const char *name, char **peers, int npeers)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = node, .shm = -1, .listen = "127.0.0.1:0", .reconnect_ms = 50};
    ch_hub_t *h;
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 4096};
    if (ch_hub_create(&ho, &h, &e) || ch_channel_create(h, name, &co, &c, &e)) {
        fprintf(stderr, "replica: %s\n", e.msg);
        return 1;
    }
    ch_where_t w[MAX_PRODUCERS + 1];
    ch_hub_where(h, &w[0]);
    int n = 1;
    for (int i = 0; i + 2 < npeers * 3 && n <= MAX_PRODUCERS; i += 3, n++) {
        uint64_t id = strtoull(peers[i + 2], NULL, 16);
        w[n] = (ch_where_t){.node = peers[i], .process = id, .addr = peers[i + 1], .inbound = 1};
    }
    if (ch_channel_replicate(c, w, (size_t)n, NULL, &e)) {
        fprintf(stderr, "replica: %s\n", e.msg);
        return 1;
    }
    printf("%s %016llx\n", w[0].addr, (unsigned long long)w[0].process);
    for (;;) {
        ch_msg_t *m;
        if (ch_get(c, &m, 1000, &e) == 0) ch_msg_free(m);
    }
}

/* Reads "NODE ADDR HUBID" triples into w[1..], after w[0]; returns the count. */
static int parse_peers(ch_where_t *w, int n, char **peers, int npeers)
{
    for (int i = 0; i + 2 < npeers * 3 && n <= MAX_PRODUCERS; i += 3, n++) {
        uint64_t id = strtoull(peers[i + 2], NULL, 16);
        w[n] = (ch_where_t){.node = peers[i], .process = id, .addr = peers[i + 1], .inbound = 1};
    }
    return n;
}

static int run_rput(const char *node, const char *name, int count, char **peers, int npeers)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = node, .listen = "127.0.0.1:0", .reconnect_ms = 50};
    ch_hub_opts_t ho2 = {.node = node, .reconnect_ms = 50};
    ch_hub_t *h, *h2;
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 8192};
    if (ch_hub_create(&ho, &h, &e) || ch_hub_create(&ho2, &h2, &e) || ch_channel_create(h, name, &co, &c, &e)) {
        fprintf(stderr, "rput: %s\n", e.msg);
        return 1;
    }
    ch_where_t w[MAX_PRODUCERS + 1];
    ch_hub_where(h, &w[0]);
    int n = parse_peers(w, 1, peers, npeers);
    ch_producer_t *p[2];
    ch_producer_opts_t po = {.window = 256};
    if (ch_channel_replicate(c, w, (size_t)n, NULL, &e) ||
        ch_producer_open_replicated(h, name, w, (size_t)n, &po, &p[0], &e) ||
        ch_producer_open_replicated(h2, name, w, (size_t)n, &po, &p[1], &e)) {
        fprintf(stderr, "rput: %s\n", e.msg);
        return 1;
    }
    if (ch_producer_route(p[0]) != CH_ROUTE_INPROC || ch_producer_route(p[1]) != CH_ROUTE_SHM) {
        fprintf(stderr, "rput: routes %s and %s, expected inproc and shm\n", ch_route_name(ch_producer_route(p[0])),
                ch_route_name(ch_producer_route(p[1])));
        return 1;
    }
    static char buf[1024];
    int64_t t0 = cr_now_ns();
    for (int64_t i = 0; i < count; i++) {
        memcpy(buf, &i, sizeof i);
        for (int k = 0; k < 2; k++)
            if (ch_put(p[k], buf, sizeof buf, 1, 20000, &e)) {
                fprintf(stderr, "rput: put %lld: %s\n", (long long)i, e.msg);
                return 1;
            }
    }
    for (int k = 0; k < 2; k++)
        if (ch_producer_flush(p[k], 20000, &e)) {
            fprintf(stderr, "rput: flush: %s\n", e.msg);
            return 1;
        }
    double s = (double)(cr_now_ns() - t0) / CR_NS_PER_S;
    printf("acked %016llx %016llx %d %.0f\n", (unsigned long long)ch_producer_id(p[0]),
           (unsigned long long)ch_producer_id(p[1]), count, 2.0 * count / s);
    for (;;) {
        ch_msg_t *m;
        if (ch_get(c, &m, 1000, &e) == 0) ch_msg_free(m);
    }
}

static void out_line(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_line(FILE *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fflush(f);
}

static int run_djoin(const char *node, const char *dir, const char *name, const char *outfile)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = node, .listen = "127.0.0.1:0", .directory = dir, .reconnect_ms = 50};
    ch_hub_t *h;
    ch_channel_t *c;
    ch_opts_t co = {.capacity = 8192};
    FILE *f = fopen(outfile, "a");
    if (!f || ch_hub_create(&ho, &h, &e) || ch_channel_create(h, name, &co, &c, &e)) {
        fprintf(stderr, "djoin: %s\n", f ? e.msg : "cannot open the output file");
        return 1;
    }
    ch_replica_opts_t ro = {.peer_timeout_ms = 3000};
    if (ch_channel_join(c, &ro, 20000, &e)) {
        fprintf(stderr, "djoin: %s\n", e.msg);
        return 1;
    }
    uint64_t gen = ch_channel_directory_generation(c);
    out_line(f, "ready %016llx %llu\n", (unsigned long long)ch_hub_id(h), (unsigned long long)gen);
    for (;;) {
        ch_msg_t *m;
        int rc = ch_get(c, &m, 50, &e);
        uint64_t g = ch_channel_directory_generation(c);
        if (g != gen) out_line(f, "set %llu\n", (unsigned long long)(gen = g));
        if (rc) continue;
        int64_t v = -1;
        if (m->len >= sizeof v) memcpy(&v, m->data, sizeof v);
        out_line(f, "m %016llx %llu %lld\n", (unsigned long long)m->producer, (unsigned long long)m->seq,
                 (long long)v);
        ch_msg_free(m);
    }
}

static int run_dput(const char *node, const char *dir, const char *name)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho = {.node = node, .directory = dir, .reconnect_ms = 50};
    ch_hub_t *h;
    ch_producer_t *p;
    ch_producer_opts_t po = {.window = 256, .peer_timeout_ms = 3000};
    if (ch_hub_create(&ho, &h, &e) || ch_producer_open_named(h, name, &po, 20000, &p, &e)) {
        printf("err %s\n", e.msg);
        return 1;
    }
    char line[256];
    static char buf[1024];
    while (fgets(line, sizeof line, stdin)) {
        long long a, b;
        unsigned long long g;
        int rc = 0;
        if (sscanf(line, "put %lld %lld", &a, &b) == 2) {
            for (int64_t i = a; i < b && rc == 0; i++) {
                memcpy(buf, &i, sizeof i);
                rc = ch_put(p, buf, sizeof buf, 1, 20000, &e);
            }
            if (rc == 0) rc = ch_producer_flush(p, 20000, &e);
            if (rc) printf("err %s\n", e.msg);
            else printf("ok %016llx %s\n", (unsigned long long)ch_producer_id(p), ch_route_name(ch_producer_route(p)));
        } else if (sscanf(line, "wait %llu", &g) == 1) {
            int64_t deadline = cr_now_ns() + 20 * CR_NS_PER_S;
            while (ch_hub_directory_generation(h, name) < g && cr_now_ns() < deadline) cr_sleep_ns(10 * CR_NS_PER_MS);
            if (ch_hub_directory_generation(h, name) < g) printf("err generation %llu not reached\n", g);
            else printf("ok\n");
        } else {
            printf("err unknown command\n");
        }
    }
    ch_producer_close(p);
    ch_hub_destroy(h);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "relay") == 0) return run_relay(argv[2]);
    if (argc == 7 && strcmp(argv[1], "consume") == 0)
        return run_consume(argv[2], argv[3], argv[4], atoi(argv[5]), argv[6]);
    if (argc == 9 && strcmp(argv[1], "produce") == 0)
        return run_produce(argv[2], argv[3], argv[4], argv[5], argv[6], atoi(argv[7]), atoi(argv[8]));
    if (argc >= 4 && (argc - 4) % 3 == 0 && strcmp(argv[1], "replica") == 0)
        return run_replica(argv[2], argv[3], argv + 4, (argc - 4) / 3);
    if (argc >= 5 && (argc - 5) % 3 == 0 && strcmp(argv[1], "rput") == 0)
        return run_rput(argv[2], argv[3], atoi(argv[4]), argv + 5, (argc - 5) / 3);
    if (argc == 6 && strcmp(argv[1], "djoin") == 0) return run_djoin(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 5 && strcmp(argv[1], "dput") == 0) return run_dput(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: ch_netns_node relay ADDR | consume NODE RELAY CHANNEL COUNT IDFILE |"
                    " produce NODE RELAY CHANNEL CNODE CID COUNT RATE | replica NODE CHANNEL [PNODE PADDR PID]... |"
                    " rput NODE CHANNEL COUNT [PNODE PADDR PID]... | djoin NODE DIRECTORY CHANNEL OUTFILE |"
                    " dput NODE DIRECTORY CHANNEL\n");
    return 1;
}
