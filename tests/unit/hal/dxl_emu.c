/* dxl_emu.c - Dynamixel servos emulated behind a pseudo-terminal (see dxl_emu.h).
 * One thread reads instruction packets from the pty master and answers as the
 * addressed servos would: ping, read, write, sync read, sync write. With torque
 * on, a servo's present position follows its goal at once (an ideal servo). */
#define _GNU_SOURCE
#include "dxl_emu.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define MAX_SERVOS 16

typedef struct servo {
    int id, dead;
    uint8_t table[256];
} servo_t;

struct dxl_emu {
    int master, slave;
    char port[128];
    pthread_t thread;
    pthread_mutex_t mu;
    int stop;
    servo_t servos[MAX_SERVOS];
    int n;
    int corrupt, drop, garbage, gap_ms, packets;
    uint8_t in[8192];
    size_t in_len;
};

static uint16_t crc_table[256];

static void make_table(void)
{
    for (int i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++) c = (c & 0x8000) ? (uint16_t)((c << 1) ^ 0x8005) : (uint16_t)(c << 1);
        crc_table[i] = c;
    }
}

static uint16_t crc(const uint8_t *p, size_t n)
{
    uint16_t c = 0;
    for (size_t i = 0; i < n; i++) c = (uint16_t)((c << 8) ^ crc_table[((c >> 8) ^ p[i]) & 0xFF]);
    return c;
}

static servo_t *find(dxl_emu_t *e, int id)
{
    for (int i = 0; i < e->n; i++)
        if (e->servos[i].id == id) return &e->servos[i];
    return NULL;
}

static void put32(uint8_t *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)u; p[1] = (uint8_t)(u >> 8); p[2] = (uint8_t)(u >> 16); p[3] = (uint8_t)(u >> 24);
}

static int32_t get32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
}

static void write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

/* Sends a status packet, applying whichever fault is armed; 0 when dropped. */
static int reply(dxl_emu_t *e, int id, const uint8_t *data, int n)
{
    if (e->drop > 0) { e->drop--; return 0; }
    if (e->garbage > 0) {
        e->garbage--;
        uint8_t junk[40];
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(0x5A ^ (i * 37));
        write_all(e->master, junk, sizeof junk);
        return 1;
    }
    uint8_t pkt[1100];
    size_t len = 0;
    pkt[len++] = 0xFF; pkt[len++] = 0xFF; pkt[len++] = 0xFD; pkt[len++] = 0x00;
    pkt[len++] = (uint8_t)id;
    len += 2;
    pkt[len++] = 0x55;
    pkt[len++] = 0x00;   /* error */
    for (int i = 0; i < n; i++) {
        pkt[len++] = data[i];
        if (pkt[len - 1] == 0xFD && pkt[len - 2] == 0xFF && pkt[len - 3] == 0xFF) pkt[len++] = 0xFD;
    }
    size_t body = len - 7 + 2;
    pkt[5] = (uint8_t)body;
    pkt[6] = (uint8_t)(body >> 8);
    uint16_t c = crc(pkt, len);
    if (e->corrupt > 0) { e->corrupt--; c ^= 0x1234; }
    pkt[len++] = (uint8_t)c;
    pkt[len++] = (uint8_t)(c >> 8);
    write_all(e->master, pkt, len);
    return 1;
}

static void on_write(servo_t *s, int addr, const uint8_t *d, int n)
{
    for (int i = 0; i < n && addr + i < 256; i++) s->table[addr + i] = d[i];
    if (s->table[64]) memcpy(s->table + 132, s->table + 116, 4);  /* ideal servo */
}

static void handle(dxl_emu_t *e, int id, int inst, const uint8_t *p, int n)
{
    e->packets++;
    servo_t *s = find(e, id);
    if (inst == 0x01) {                    /* ping */
        for (int i = 0; i < e->n; i++) {
            servo_t *t = &e->servos[i];
            if (t->dead || (id != 0xFE && t->id != id)) continue;
            uint8_t d[3] = {t->table[0], t->table[1], 0x2D};
            reply(e, t->id, d, 3);
        }
    } else if (inst == 0x02 && s && !s->dead && n == 4) {   /* read */
        int addr = p[0] | (p[1] << 8), len = p[2] | (p[3] << 8);
        if (addr + len <= 256) reply(e, id, s->table + addr, len);
    } else if (inst == 0x03 && n >= 2) {                    /* write */
        int addr = p[0] | (p[1] << 8);
        if (s && !s->dead) {
            on_write(s, addr, p + 2, n - 2);
            reply(e, id, NULL, 0);
        }
    } else if (inst == 0x82 && n >= 4) {                    /* sync read */
        int addr = p[0] | (p[1] << 8), len = p[2] | (p[3] << 8);
        for (int i = 4; i < n; i++) {
            /* Each servo answers after the one before it in the list: a silent
             * servo silences the rest, as on a real bus. */
            servo_t *t = find(e, p[i]);
            if (!t || t->dead || addr + len > 256) break;
            if (i == 5 && e->gap_ms) {
                usleep((useconds_t)e->gap_ms * 1000);
                e->gap_ms = 0;
            }
            if (!reply(e, t->id, t->table + addr, len)) break;
        }
    } else if (inst == 0x83 && n >= 4) {                    /* sync write */
        int addr = p[0] | (p[1] << 8), len = p[2] | (p[3] << 8);
        for (int o = 4; o + 1 + len <= n; o += 1 + len) {
            servo_t *t = find(e, p[o]);
            if (t && !t->dead) on_write(t, addr, p + o + 1, len);
        }
    }
}

/* Parses whole packets out of e->in; bad ones are dropped as a servo would. */
static void parse(dxl_emu_t *e)
{
    for (;;) {
        size_t h = 0;
        while (h + 4 <= e->in_len && memcmp(e->in + h, "\xFF\xFF\xFD\x00", 4) != 0) h++;
        memmove(e->in, e->in + h, e->in_len - h);
        e->in_len -= h;
        if (e->in_len < 7) return;
        size_t body = e->in[5] | ((size_t)e->in[6] << 8);
        if (e->in_len < 7 + body) return;
        size_t total = 7 + body;
        uint16_t c = (uint16_t)(e->in[total - 2] | (e->in[total - 1] << 8));
        if (body >= 3 && c == crc(e->in, total - 2)) {
            uint8_t params[1100];
            int n = 0;
            const uint8_t *q = e->in + 8;
            size_t qn = total - 2 - 8;
            for (size_t i = 0; i < qn; i++) {
                if (i >= 3 && q[i] == 0xFD && q[i - 1] == 0xFD && q[i - 2] == 0xFF && q[i - 3] == 0xFF)
                    continue;
                params[n++] = q[i];
            }
            handle(e, e->in[4], e->in[7], params, n);
        }
        memmove(e->in, e->in + total, e->in_len - total);
        e->in_len -= total;
    }
}

static void *run(void *arg)
{
    dxl_emu_t *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        int stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) return NULL;
        struct pollfd p = {.fd = e->master, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0) continue;
        ssize_t r = read(e->master, e->in + e->in_len, sizeof e->in - e->in_len);
        if (r <= 0) {
            usleep(1000);
            continue;
        }
        pthread_mutex_lock(&e->mu);
        e->in_len += (size_t)r;
        parse(e);
        if (e->in_len == sizeof e->in) e->in_len = 0;
        pthread_mutex_unlock(&e->mu);
    }
}

int dxl_emu_start(const int *ids, int n, dxl_emu_t **out)
{
    make_table();
    dxl_emu_t *e = calloc(1, sizeof *e);
    if (!e) return -1;
    e->master = posix_openpt(O_RDWR | O_NOCTTY);
    if (e->master < 0 || grantpt(e->master) || unlockpt(e->master) ||
        ptsname_r(e->master, e->port, sizeof e->port)) {
        free(e);
        return -1;
    }
    struct termios t;
    tcgetattr(e->master, &t);
    cfmakeraw(&t);
    tcsetattr(e->master, TCSANOW, &t);
    /* Keep a slave descriptor open so the master never sees a hang-up between
     * the driver's opens; set it raw so nothing is echoed back. */
    e->slave = open(e->port, O_RDWR | O_NOCTTY);
    tcgetattr(e->slave, &t);
    cfmakeraw(&t);
    tcsetattr(e->slave, TCSANOW, &t);
    for (int i = 0; i < n && i < MAX_SERVOS; i++) {
        servo_t *s = &e->servos[e->n++];
        s->id = ids[i];
        s->table[0] = 0x24; s->table[1] = 0x04;   /* model 1060 */
        put32(s->table + 116, 2048);
        put32(s->table + 132, 2048);
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_create(&e->thread, NULL, run, e);
    *out = e;
    return 0;
}

void dxl_emu_stop(dxl_emu_t *e)
{
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    close(e->slave);
    close(e->master);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const char *dxl_emu_port(const dxl_emu_t *e) { return e->port; }

#define LOCKED(stmt) do { pthread_mutex_lock(&e->mu); stmt; pthread_mutex_unlock(&e->mu); } while (0)
void dxl_emu_corrupt_crc(dxl_emu_t *e, int n) { LOCKED(e->corrupt = n); }
void dxl_emu_drop(dxl_emu_t *e, int n) { LOCKED(e->drop = n); }
void dxl_emu_garbage(dxl_emu_t *e, int n) { LOCKED(e->garbage = n); }
void dxl_emu_gap(dxl_emu_t *e, int ms) { LOCKED(e->gap_ms = ms); }
void dxl_emu_kill(dxl_emu_t *e, int id) { LOCKED(servo_t *s = find(e, id); if (s) s->dead = 1); }
int dxl_emu_packets(dxl_emu_t *e) { int v; LOCKED(v = e->packets); return v; }

int dxl_emu_torque(dxl_emu_t *e, int id)
{
    int v = -1;
    LOCKED(servo_t *s = find(e, id); if (s) v = s->table[64]);
    return v;
}

int32_t dxl_emu_goal(dxl_emu_t *e, int id)
{
    int32_t v = -1;
    LOCKED(servo_t *s = find(e, id); if (s) v = get32(s->table + 116));
    return v;
}

void dxl_emu_set_present(dxl_emu_t *e, int id, int32_t pos, int32_t vel)
{
    LOCKED(servo_t *s = find(e, id); if (s) { put32(s->table + 132, pos); put32(s->table + 128, vel); });
}
