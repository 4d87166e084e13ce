/* dxl_bus.c - ROBOTIS Dynamixel Protocol 2.0 over a serial port.
 *
 * A packet is FF FF FD 00 | id | length (LE16) | instruction | parameters | CRC
 * (LE16). length counts instruction, parameters and CRC; parameters are
 * byte-stuffed (FF FF FD -> FF FF FD FD) so the header never appears inside a
 * packet; the CRC (poly 0x8005, init 0, not reflected) covers everything from
 * the header to the last parameter byte as sent. A servo answers with a status
 * packet (instruction 0x55, then an error byte, then data).
 *
 * Everything read from the wire is untrusted: bytes before a header are skipped,
 * a length beyond the largest reply we asked for, a CRC mismatch, a reply from
 * the wrong id and a silence past the time-out are each an error naming the
 * servo. Stale input is flushed before every request and drained after a
 * failed one; a late reply that still slips past both (the sender was slow,
 * the machine loaded) comes from another id than the one awaited and is
 * dropped, so it is never taken for the answer to this request. */
#include "hal/hal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define INST_PING 0x01
#define INST_READ 0x02
#define INST_WRITE 0x03
#define INST_SYNC_READ 0x82
#define INST_SYNC_WRITE 0x83
#define INST_STATUS 0x55
#define MAX_PACKET 1024

struct hal_dxl_bus {
    int fd;
    int timeout_ms;
    char port[256];
    int64_t errors;
    uint8_t rx[4 * MAX_PACKET];
    size_t rx_len;
};

uint16_t hal_dxl_crc(uint16_t crc, const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(data[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x8005) : (uint16_t)(crc << 1);
    }
    return crc;
}

static speed_t baud_const(int baud)
{
    switch (baud) {
    case 9600: return B9600;
    case 57600: return B57600;
    case 115200: return B115200;
    case 1000000: return B1000000;
    case 2000000: return B2000000;
    case 3000000: return B3000000;
    case 4000000: return B4000000;
    }
    return 0;
}

int hal_dxl_open(const char *port, int baud, int timeout_ms, hal_dxl_bus_t **out, cr_err_t *err)
{
    speed_t sp = baud_const(baud);
    if (!sp)
        return cr_err_set(err, CR_EINVAL, "serial %s: unsupported baud rate %d (9600, 57600, "
                          "115200, 1000000..4000000)", port, baud);
    int fd = open(port, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return cr_err_set(err, errno == ENOENT ? CR_ENOENT : CR_EIO, "serial %s: %s", port,
                          strerror(errno));
    struct termios tio;
    if (tcgetattr(fd, &tio) != 0) {
        int e = errno;
        close(fd);
        return cr_err_set(err, CR_EIO, "serial %s: not a terminal: %s", port, strerror(e));
    }
    cfmakeraw(&tio);
    tio.c_cflag |= CLOCAL | CREAD;
    tio.c_cc[VMIN] = 0;
    tio.c_cc[VTIME] = 0;
    cfsetispeed(&tio, sp);
    cfsetospeed(&tio, sp);
    if (tcsetattr(fd, TCSANOW, &tio) != 0) {
        int e = errno;
        close(fd);
        return cr_err_set(err, CR_EIO, "serial %s: cannot configure: %s", port, strerror(e));
    }
    tcflush(fd, TCIOFLUSH);
    hal_dxl_bus_t *bus = calloc(1, sizeof *bus);
    if (!bus) {
        close(fd);
        return cr_err_set(err, CR_ENOMEM, "out of memory");
    }
    bus->fd = fd;
    bus->timeout_ms = timeout_ms > 0 ? timeout_ms : 20;
    snprintf(bus->port, sizeof bus->port, "%s", port);
    *out = bus;
    return 0;
}

void hal_dxl_close(hal_dxl_bus_t *bus)
{
    if (!bus) return;
    close(bus->fd);
    free(bus);
}

int64_t hal_dxl_errors(const hal_dxl_bus_t *bus) { return bus->errors; }

/* After a failed exchange, the rest of it (other servos' replies to a sync
 * read, the tail of a corrupt packet) may still be on its way: discard input
 * until the line has been quiet for a few milliseconds (bounded by the
 * time-out), so it cannot be taken for the answer to the next request. */
static void drain(hal_dxl_bus_t *bus)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t end = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + bus->timeout_ms;
    uint8_t junk[256];
    for (;;) {
        struct pollfd p = {.fd = bus->fd, .events = POLLIN};
        if (poll(&p, 1, 3) <= 0) break;
        if (read(bus->fd, junk, sizeof junk) <= 0) break;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 > end) break;
    }
    bus->rx_len = 0;
}

static int fail(hal_dxl_bus_t *bus, cr_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(hal_dxl_bus_t *bus, cr_err_t *err, int code, const char *fmt, ...)
{
    drain(bus);
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bus->errors++;
    return cr_err_set(err, code, "serial %s: %s", bus->port, msg);
}

/* ---- sending ------------------------------------------------------------------ */

static int send_packet(hal_dxl_bus_t *bus, int id, int inst, const uint8_t *params, int n,
                       cr_err_t *err)
{
    uint8_t pkt[2 * MAX_PACKET + 16];
    size_t len = 0;
    pkt[len++] = 0xFF; pkt[len++] = 0xFF; pkt[len++] = 0xFD; pkt[len++] = 0x00;
    pkt[len++] = (uint8_t)id;
    size_t len_at = len;
    len += 2;
    pkt[len++] = (uint8_t)inst;
    for (int i = 0; i < n; i++) {
        pkt[len++] = params[i];
        /* Stuffing: after FF FF FD in the body, insert an extra FD. */
        if (len >= 7 + 3 && pkt[len - 1] == 0xFD && pkt[len - 2] == 0xFF && pkt[len - 3] == 0xFF)
            pkt[len++] = 0xFD;
    }
    size_t body = len - 7 + 2;  /* instruction + params (stuffed) + CRC */
    pkt[len_at] = (uint8_t)(body & 0xFF);
    pkt[len_at + 1] = (uint8_t)(body >> 8);
    uint16_t crc = hal_dxl_crc(0, pkt, len);
    pkt[len++] = (uint8_t)(crc & 0xFF);
    pkt[len++] = (uint8_t)(crc >> 8);
    tcflush(bus->fd, TCIFLUSH);
    bus->rx_len = 0;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(bus->fd, pkt + off, len - off);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = bus->fd, .events = POLLOUT};
            if (poll(&p, 1, bus->timeout_ms) <= 0)
                return fail(bus, err, CR_ETIMEDOUT, "write to id %d timed out", id);
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return fail(bus, err, CR_EIO, "write to id %d: %s", id, strerror(errno));
        off += (size_t)w;
    }
    return 0;
}

/* ---- receiving ----------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads more bytes into rx until the deadline; 0, or CR_ETIMEDOUT / CR_EIO. */
static int fill(hal_dxl_bus_t *bus, int64_t deadline)
{
    if (bus->rx_len == sizeof bus->rx) {
        /* Only garbage fills the buffer: drop the older half. */
        memmove(bus->rx, bus->rx + sizeof bus->rx / 2, sizeof bus->rx / 2);
        bus->rx_len = sizeof bus->rx / 2;
    }
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return CR_ETIMEDOUT;
        struct pollfd p = {.fd = bus->fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return CR_EIO;
        if (pr == 0) return CR_ETIMEDOUT;
        ssize_t r = read(bus->fd, bus->rx + bus->rx_len, sizeof bus->rx - bus->rx_len);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r <= 0) return CR_EIO;
        bus->rx_len += (size_t)r;
        return 0;
    }
}

static void consume(hal_dxl_bus_t *bus, size_t n)
{
    memmove(bus->rx, bus->rx + n, bus->rx_len - n);
    bus->rx_len -= n;
}

static const char *servo_error_name(int e)
{
    switch (e & 0x7F) {
    case 1: return "result fail";
    case 2: return "instruction error";
    case 3: return "CRC error reported by servo";
    case 4: return "data range error";
    case 5: return "data length error";
    case 6: return "data limit error";
    case 7: return "access error";
    }
    return "unknown error";
}

/* Receives one status packet from `want_id` (any id when -1) with at most
 * max_data data bytes. */
static int recv_status(hal_dxl_bus_t *bus, int want_id, uint8_t *data, int max_data, int *n_data,
                       int *from_id, cr_err_t *err)
{
    int64_t deadline = now_ms() + bus->timeout_ms;
    size_t skipped = 0;
    int stale = 0;
    for (;;) {
        /* Find a header. */
        size_t h = 0;
        while (h + 4 <= bus->rx_len && !(bus->rx[h] == 0xFF && bus->rx[h + 1] == 0xFF &&
                                          bus->rx[h + 2] == 0xFD && bus->rx[h + 3] == 0x00))
            h++;
        if (h) {
            skipped += h;
            consume(bus, h);
        }
        if (bus->rx_len >= 7) {
            size_t body = (size_t)bus->rx[5] | ((size_t)bus->rx[6] << 8);
            if (body < 4 || body > (size_t)(2 * max_data + 8)) {
                /* Not a reply we could have asked for: drop this header and resync. */
                consume(bus, 1);
                skipped++;
                continue;
            }
            if (bus->rx_len >= 7 + body) {
                size_t total = 7 + body;
                uint16_t crc = hal_dxl_crc(0, bus->rx, total - 2);
                uint16_t got = (uint16_t)(bus->rx[total - 2] | (bus->rx[total - 1] << 8));
                int id = bus->rx[4];
                if (crc != got) {
                    consume(bus, total);
                    return fail(bus, err, CR_ECORRUPT, "CRC mismatch in reply from id %d "
                                "(got %04x, computed %04x)", id, got, crc);
                }
                if (bus->rx[7] != INST_STATUS) {
                    consume(bus, total);
                    return fail(bus, err, CR_EPROTO, "id %d sent instruction 0x%02x, expected a "
                                "status packet", id, bus->rx[7]);
                }
                int serr = bus->rx[8];
                /* Unstuff the data. */
                int nd = 0;
                const uint8_t *p = bus->rx + 9;
                size_t plen = total - 2 - 9;
                for (size_t i = 0; i < plen; i++) {
                    if (i >= 3 && p[i] == 0xFD && p[i - 1] == 0xFD && p[i - 2] == 0xFF &&
                        p[i - 3] == 0xFF)
                        continue;
                    if (nd < max_data) data[nd] = p[i];
                    nd++;
                }
                consume(bus, total);
                if (want_id >= 0 && id != want_id) {
                    /* Servos answer in request order, so another id's reply is a
                     * late one to an earlier request (arrived after the flush):
                     * drop it and keep waiting for ours. */
                    stale++;
                    continue;
                }
                if (serr & 0x7F)
                    return fail(bus, err, CR_EIO, "id %d reports error %d (%s)", id, serr & 0x7F,
                                servo_error_name(serr));
                if (nd > max_data)
                    return fail(bus, err, CR_EPROTO, "id %d sent %d data bytes, expected at most %d",
                                id, nd, max_data);
                *n_data = nd;
                if (from_id) *from_id = id;
                return 0;
            }
        }
        int rc = fill(bus, deadline);
        if (rc == CR_ETIMEDOUT) {
            if (skipped)
                return fail(bus, err, CR_EPROTO, "garbage on the line (%zu bytes without a valid "
                            "packet) waiting for id %d", skipped + bus->rx_len, want_id);
            return fail(bus, err, CR_ETIMEDOUT, "no reply from id %d within %d ms%s", want_id,
                        bus->timeout_ms, stale ? " (only late replies from other ids)" : "");
        }
        if (rc) return fail(bus, err, CR_EIO, "read: %s", strerror(errno));
    }
}

/* ---- instructions ---------------------------------------------------------------- */

int hal_dxl_ping(hal_dxl_bus_t *bus, int id, int *ids, uint16_t *models, int max, int *n,
                 cr_err_t *err)
{
    *n = 0;
    int rc = send_packet(bus, id, INST_PING, NULL, 0, err);
    if (rc) return rc;
    for (;;) {
        uint8_t data[3];
        int nd, from;
        cr_err_t e = {0};
        rc = recv_status(bus, id == HAL_DXL_BROADCAST ? -1 : id, data, 3, &nd, &from, &e);
        if (rc == CR_ETIMEDOUT && id == HAL_DXL_BROADCAST) {
            bus->errors--;   /* the end of a broadcast is silence, not an error */
            return 0;
        }
        if (rc) {
            if (err) *err = e;
            return rc;
        }
        if (*n < max) {
            ids[*n] = from;
            if (models) models[*n] = nd >= 2 ? (uint16_t)(data[0] | (data[1] << 8)) : 0;
            (*n)++;
        }
        if (id != HAL_DXL_BROADCAST) return 0;
    }
}

int hal_dxl_write(hal_dxl_bus_t *bus, int id, uint16_t addr, const uint8_t *data, int len,
                  cr_err_t *err)
{
    uint8_t p[MAX_PACKET];
    if (len + 2 > MAX_PACKET) return cr_err_set(err, CR_EINVAL, "write of %d bytes too large", len);
    p[0] = (uint8_t)(addr & 0xFF); p[1] = (uint8_t)(addr >> 8);
    memcpy(p + 2, data, (size_t)len);
    int rc = send_packet(bus, id, INST_WRITE, p, len + 2, err);
    if (rc || id == HAL_DXL_BROADCAST) return rc;
    uint8_t none[1];
    int nd;
    return recv_status(bus, id, none, 0, &nd, NULL, err);
}

int hal_dxl_read(hal_dxl_bus_t *bus, int id, uint16_t addr, uint8_t *data, int len, cr_err_t *err)
{
    uint8_t p[4] = {(uint8_t)(addr & 0xFF), (uint8_t)(addr >> 8), (uint8_t)(len & 0xFF),
                    (uint8_t)(len >> 8)};
    int rc = send_packet(bus, id, INST_READ, p, 4, err);
    if (rc) return rc;
    int nd;
    rc = recv_status(bus, id, data, len, &nd, NULL, err);
    if (rc == 0 && nd != len)
        return fail(bus, err, CR_EPROTO, "id %d returned %d bytes, asked for %d", id, nd, len);
    return rc;
}

int hal_dxl_sync_read(hal_dxl_bus_t *bus, const int *ids, int n, uint16_t addr, int len,
                      uint8_t *out, cr_err_t *err)
{
    uint8_t p[4 + 253];
    if (n < 1 || n > 253) return cr_err_set(err, CR_EINVAL, "sync read of %d servos", n);
    p[0] = (uint8_t)(addr & 0xFF); p[1] = (uint8_t)(addr >> 8);
    p[2] = (uint8_t)(len & 0xFF); p[3] = (uint8_t)(len >> 8);
    for (int i = 0; i < n; i++) p[4 + i] = (uint8_t)ids[i];
    int rc = send_packet(bus, HAL_DXL_BROADCAST, INST_SYNC_READ, p, 4 + n, err);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        int nd;
        rc = recv_status(bus, ids[i], out + (size_t)i * (size_t)len, len, &nd, NULL, err);
        if (rc) return rc;
        if (nd != len)
            return fail(bus, err, CR_EPROTO, "id %d returned %d bytes, asked for %d", ids[i], nd, len);
    }
    return 0;
}

int hal_dxl_sync_write(hal_dxl_bus_t *bus, const int *ids, int n, uint16_t addr, int len,
                       const uint8_t *data, cr_err_t *err)
{
    uint8_t p[MAX_PACKET];
    size_t need = 4 + (size_t)n * (size_t)(len + 1);
    if (n < 1 || need > sizeof p)
        return cr_err_set(err, CR_EINVAL, "sync write of %d servos x %d bytes too large", n, len);
    p[0] = (uint8_t)(addr & 0xFF); p[1] = (uint8_t)(addr >> 8);
    p[2] = (uint8_t)(len & 0xFF); p[3] = (uint8_t)(len >> 8);
    size_t o = 4;
    for (int i = 0; i < n; i++) {
        p[o++] = (uint8_t)ids[i];
        memcpy(p + o, data + (size_t)i * (size_t)len, (size_t)len);
        o += (size_t)len;
    }
    return send_packet(bus, HAL_DXL_BROADCAST, INST_SYNC_WRITE, p, (int)o, err);
}
