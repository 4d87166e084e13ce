/* worker_msg.c - the messages env workers and the learner exchange over channels,
 * as bytes: a 4-byte magic, a 2-byte type, then the fields in little-endian order.
 * Every decoder checks the magic, the type, each length against what is left, and
 * the exact total, so a message from a confused or hostile peer is refused with a
 * message naming what was wrong instead of being read past its end. */
#include "agents/worker_int.h"

#include <string.h>

#define WK_MAGIC 0x4b575243u /* "CRWK" */

typedef struct wr {
    uint8_t *p;
    size_t cap, n;
    int bad;
} wr_t;

typedef struct rd {
    const uint8_t *p;
    size_t len, n;
    int bad;
} rd_t;

static void put(wr_t *w, const void *v, size_t k)
{
    if (w->bad || w->cap - w->n < k) {
        w->bad = 1;
        return;
    }
    memcpy(w->p + w->n, v, k);
    w->n += k;
}

/* Fixed-width integers are written in the host's order, which is little-endian on
 * every platform corral builds for (checked at compile time below). */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "wire format assumes little-endian hosts");

static void put_u64(wr_t *w, uint64_t v) { put(w, &v, 8); }
static void put_u32(wr_t *w, uint32_t v) { put(w, &v, 4); }
static void put_f32(wr_t *w, float v) { put(w, &v, 4); }
static void put_f64(wr_t *w, double v) { put(w, &v, 8); }
static void put_u8(wr_t *w, uint8_t v) { put(w, &v, 1); }

static void put_str(wr_t *w, const char *s)
{
    size_t n = strnlen(s, WK_STR_MAX - 1);
    put_u32(w, (uint32_t)n);
    put(w, s, n);
}

static void get(rd_t *r, void *v, size_t k)
{
    if (r->bad || r->len - r->n < k) {
        r->bad = 1;
        memset(v, 0, k);
        return;
    }
    memcpy(v, r->p + r->n, k);
    r->n += k;
}

static uint64_t get_u64(rd_t *r) { uint64_t v; get(r, &v, 8); return v; }
static uint32_t get_u32(rd_t *r) { uint32_t v; get(r, &v, 4); return v; }
static float get_f32(rd_t *r) { float v; get(r, &v, 4); return v; }
static double get_f64(rd_t *r) { double v; get(r, &v, 8); return v; }
static uint8_t get_u8(rd_t *r) { uint8_t v; get(r, &v, 1); return v; }

static void get_str(rd_t *r, char *out)
{
    uint32_t n = get_u32(r);
    if (n >= WK_STR_MAX) {
        r->bad = 1;
        n = 0;
    }
    get(r, out, n);
    out[r->bad ? 0 : n] = '\0';
}

static void header(wr_t *w, uint16_t type)
{
    put_u32(w, WK_MAGIC);
    put(w, &type, 2);
}

static size_t done(const wr_t *w) { return w->bad ? 0 : w->n; }

int wk_msg_type(const void *buf, size_t len, cr_err_t *err)
{
    rd_t r = {buf, len, 0, 0};
    uint32_t magic = get_u32(&r);
    uint16_t type = 0;
    get(&r, &type, 2);
    if (r.bad || magic != WK_MAGIC)
        return cr_err_set(err, CR_EPROTO, "worker message: bad magic or shorter than a header (%zu bytes)", len);
    if (type < WK_MSG_HELLO || type > WK_MSG_ACK)
        return cr_err_set(err, CR_EPROTO, "worker message: unknown type %u", type);
    return type;
}

/* Starts reading a message of the given type. */
static int open_rd(rd_t *r, const void *buf, size_t len, int type, const char *what, cr_err_t *err)
{
    int t = wk_msg_type(buf, len, err);
    if (t < 0) return t;
    if (t != type) return cr_err_set(err, CR_EPROTO, "worker message: expected %s, got type %d", what, t);
    *r = (rd_t){buf, len, 6, 0};
    return 0;
}

static int close_rd(const rd_t *r, const char *what, cr_err_t *err)
{
    if (r->bad) return cr_err_set(err, CR_EPROTO, "worker message %s: truncated or a field too long", what);
    if (r->n != r->len)
        return cr_err_set(err, CR_EPROTO, "worker message %s: %zu bytes left over", what, r->len - r->n);
    return 0;
}

size_t wk_hello_encode(const wk_hello_t *m, void *buf, size_t cap)
{
    wr_t w = {buf, cap, 0, 0};
    header(&w, WK_MSG_HELLO);
    put_u32(&w, m->index);
    put_u64(&w, m->producer);
    put_u64(&w, m->version);
    put_u64(&w, m->acked);
    put_u64(&w, m->hub);
    put_u32(&w, (uint32_t)m->inbound);
    put_u32(&w, (uint32_t)m->obs_dim);
    put_u32(&w, (uint32_t)m->act_dim);
    put_str(&w, m->node);
    put_str(&w, m->addr);
    put_str(&w, m->robot);
    put_u32(&w, (uint32_t)m->img_c);
    put_u32(&w, (uint32_t)m->img_h);
    put_u32(&w, (uint32_t)m->img_w);
    return done(&w);
}

int wk_hello_decode(const void *buf, size_t len, wk_hello_t *m, cr_err_t *err)
{
    rd_t r;
    int rc = open_rd(&r, buf, len, WK_MSG_HELLO, "HELLO", err);
    if (rc) return rc;
    memset(m, 0, sizeof *m);
    m->index = get_u32(&r);
    m->producer = get_u64(&r);
    m->version = get_u64(&r);
    m->acked = get_u64(&r);
    m->hub = get_u64(&r);
    m->inbound = (int32_t)get_u32(&r);
    m->obs_dim = (int32_t)get_u32(&r);
    m->act_dim = (int32_t)get_u32(&r);
    get_str(&r, m->node);
    get_str(&r, m->addr);
    get_str(&r, m->robot);
    m->img_c = (int32_t)get_u32(&r);
    m->img_h = (int32_t)get_u32(&r);
    m->img_w = (int32_t)get_u32(&r);
    rc = close_rd(&r, "HELLO", err);
    if (rc) return rc;
    if (m->producer == 0) return cr_err_set(err, CR_EPROTO, "worker message HELLO: producer id 0");
    if (m->obs_dim <= 0 || m->obs_dim > WK_MAX_OBS || m->act_dim <= 0 || m->act_dim > WK_MAX_ACT)
        return cr_err_set(err, CR_EPROTO, "worker message HELLO: dimensions obs %d act %d out of range",
                          m->obs_dim, m->act_dim);
    int noimg = !m->img_c && !m->img_h && !m->img_w;
    if (!noimg && (m->img_c < 1 || m->img_c > 4 || m->img_h < 1 || m->img_w < 1 ||
                   (uint64_t)m->img_c * (uint64_t)m->img_h * (uint64_t)m->img_w > WK_MAX_IMG))
        return cr_err_set(err, CR_EPROTO, "worker message HELLO: image %dx%dx%d (CxHxW) out of range", m->img_c,
                          m->img_h, m->img_w);
    return 0;
}

size_t wk_step_encode(const wk_step_t *m, void *buf, size_t cap)
{
    wr_t w = {buf, cap, 0, 0};
    header(&w, WK_MSG_STEP);
    put_u64(&w, m->producer);
    put_u64(&w, m->seq);
    put_u64(&w, m->episode);
    put_u64(&w, (uint64_t)m->policy_version);
    put_f32(&w, m->reward);
    put_u8(&w, m->final);
    put_u8(&w, m->done);
    put_u8(&w, m->success);
    put_u8(&w, m->truncated);
    put_u32(&w, (uint32_t)m->obs_dim);
    put_u32(&w, (uint32_t)m->act_dim);
    put(&w, m->obs, sizeof(float) * (size_t)m->obs_dim);
    if (m->act_dim) put(&w, m->action, sizeof(float) * (size_t)m->act_dim);
    put_u8(&w, m->demo);
    put_u32(&w, m->img_bytes);
    if (m->img_bytes) put(&w, m->image, m->img_bytes);
    return done(&w);
}

int wk_step_decode(const void *buf, size_t len, wk_step_t *m, float *obs, int max_obs, float *act,
                   int max_act, cr_err_t *err)
{
    rd_t r;
    int rc = open_rd(&r, buf, len, WK_MSG_STEP, "STEP", err);
    if (rc) return rc;
    memset(m, 0, sizeof *m);
    m->producer = get_u64(&r);
    m->seq = get_u64(&r);
    m->episode = get_u64(&r);
    m->policy_version = (int64_t)get_u64(&r);
    m->reward = get_f32(&r);
    m->final = get_u8(&r);
    m->done = get_u8(&r);
    m->success = get_u8(&r);
    m->truncated = get_u8(&r);
    m->obs_dim = (int32_t)get_u32(&r);
    m->act_dim = (int32_t)get_u32(&r);
    if (r.bad) return close_rd(&r, "STEP", err);
    if (m->obs_dim <= 0 || m->obs_dim > max_obs || m->act_dim < 0 || m->act_dim > max_act ||
        (m->final ? m->act_dim != 0 : m->act_dim == 0))
        return cr_err_set(err, CR_EPROTO, "worker message STEP: dimensions obs %d act %d (final %d) do not fit",
                          m->obs_dim, m->act_dim, m->final);
    get(&r, obs, sizeof(float) * (size_t)m->obs_dim);
    if (m->act_dim) get(&r, act, sizeof(float) * (size_t)m->act_dim);
    m->demo = get_u8(&r);
    m->img_bytes = get_u32(&r);
    if (!r.bad && (m->img_bytes > WK_MAX_IMG || r.len - r.n < m->img_bytes)) r.bad = 1;
    if (!r.bad && m->img_bytes) {
        m->image = r.p + r.n;   /* borrowed from the message */
        r.n += m->img_bytes;
    }
    rc = close_rd(&r, "STEP", err);
    if (rc) return rc;
    if (m->producer == 0 || m->seq == 0)
        return cr_err_set(err, CR_EPROTO, "worker message STEP: producer and seq must be non-zero");
    m->obs = obs;
    m->action = m->act_dim ? act : NULL;
    return 0;
}

size_t wk_eval_encode(const wk_eval_t *m, void *buf, size_t cap)
{
    wr_t w = {buf, cap, 0, 0};
    header(&w, WK_MSG_EVAL);
    put_u64(&w, m->producer);
    put_u64(&w, m->round);
    put_u64(&w, (uint64_t)m->version);
    put_u32(&w, m->episodes);
    put_u32(&w, m->successes);
    put_f64(&w, m->mean_return);
    return done(&w);
}

int wk_eval_decode(const void *buf, size_t len, wk_eval_t *m, cr_err_t *err)
{
    rd_t r;
    int rc = open_rd(&r, buf, len, WK_MSG_EVAL, "EVAL", err);
    if (rc) return rc;
    m->producer = get_u64(&r);
    m->round = get_u64(&r);
    m->version = (int64_t)get_u64(&r);
    m->episodes = get_u32(&r);
    m->successes = get_u32(&r);
    m->mean_return = get_f64(&r);
    rc = close_rd(&r, "EVAL", err);
    if (rc) return rc;
    if (m->successes > m->episodes || m->episodes == 0)
        return cr_err_set(err, CR_EPROTO, "worker message EVAL: %u successes of %u episodes", m->successes,
                          m->episodes);
    return 0;
}

size_t wk_ack_encode(const wk_ack_t *m, void *buf, size_t cap)
{
    wr_t w = {buf, cap, 0, 0};
    header(&w, WK_MSG_ACK);
    put_u64(&w, m->producer);
    put_u64(&w, m->acked);
    put_u64(&w, m->learner);
    put_u64(&w, (uint64_t)m->version);
    put_u64(&w, (uint64_t)m->updates);
    put_u64(&w, (uint64_t)m->env_steps);
    put_u32(&w, (uint32_t)m->stop);
    put_u64(&w, (uint64_t)m->demo_episodes);
    return done(&w);
}

int wk_ack_decode(const void *buf, size_t len, wk_ack_t *m, cr_err_t *err)
{
    rd_t r;
    int rc = open_rd(&r, buf, len, WK_MSG_ACK, "ACK", err);
    if (rc) return rc;
    m->producer = get_u64(&r);
    m->acked = get_u64(&r);
    m->learner = get_u64(&r);
    m->version = (int64_t)get_u64(&r);
    m->updates = (int64_t)get_u64(&r);
    m->env_steps = (int64_t)get_u64(&r);
    m->stop = (int32_t)get_u32(&r);
    m->demo_episodes = (int64_t)get_u64(&r);
    return close_rd(&r, "ACK", err);
}
