/* worker_learner.c - `corral worker --role learner`: the replay buffer and the
 * learner of one experiment in one process (the buffer lives on the learner's node).
 *
 * Two threads. The ingest thread reads the "transitions" channel: a HELLO from an
 * env worker opens producers back to that env's "ctl" channel (acknowledgements)
 * and "weights" channel (weight sync); a STEP goes into the buffer, and the buffer's
 * commit callback advances that env's committed sequence number, which the ingest
 * thread sends back as an ACK. So an env sees a transition acknowledged only after
 * its transaction committed, and keeps everything else to send again.
 * The train thread (the caller's) samples batches through the buffer's rate limiter
 * (which holds the update-to-data ratio in both directions), updates the algorithm,
 * publishes the policy every publish_every updates as a new version, checkpoints
 * every checkpoint.every_updates, evaluates the stop conditions and writes the
 * status file.
 *
 * Action chunks: an algorithm with algorithm.params.horizon H > 1 gets batches of
 * whole chunks from the buffer (buf_config_t.chunk = H): algorithm.batch_size rows
 * (a multiple of H), rows s*H .. s*H+H-1 being H consecutive transitions of one
 * episode, padded past its end with copies of its last transition, which carry
 * CORRAL_SAMPLE_PAD. The rate limiter counts rows, so algorithm.utd keeps its
 * meaning (updates per inserted transition) at any horizon.
 *
 * Camera images arrive with each step (uint8 HWC, as the buffer stores them);
 * the algorithm sees each sampled row as the image in CHW floats in [0, 1]
 * followed by the vector. Steps of scripted demonstrations go into the buffer as
 * demonstration episodes (buffer.scripted.ratio of each batch).
 *
 * Invariants:
 *  - for every env slot, committed only grows, and every seq <= committed of that
 *    producer is in buffer.db (puts of one producer are queued in seq order with no
 *    gap: a STEP that would leave a gap is refused and the env told to resend);
 *  - policy versions only grow, across restarts too: a HELLO carries the version the
 *    env holds and the learner's next version is above it;
 *  - the update counter restarts from the newest complete checkpoint, never below. */
#include "agents/worker_int.h"
#include "buffer/buffer.h"
#include "channels/channel.h"
#include "common/log.h"
#include "common/time.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG "learner"
#define MAX_SLOTS 256
#define RECENT 100
#define ROUNDS 16
#define ACK_EVERY_NS (20 * CR_NS_PER_MS)

enum { ACK_RUN = 0, ACK_DONE = 1, ACK_REFUSED = 2, ACK_RESEND = 3 };

typedef struct slot {
    uint64_t producer;
    uint32_t index;
    char robot[WK_STR_MAX];
    _Atomic uint64_t committed;   /* written by the buffer's writer thread */
    atomic_int failed;
    uint64_t queued;              /* last seq handed to the buffer (ingest thread) */
    uint64_t ack_sent;
    int64_t ack_sent_ns;
    int resend;                   /* tell the env to send again from committed + 1 */
    ch_producer_t *ctl, *wprod;   /* ctl: ingest thread only; wprod: the publisher's */
    ch_wsync_pub_t *pub;
    int live;
    int need_weights;
    int64_t demo_episodes;        /* ended scripted demonstrations of its robot, at its HELLO */
} slot_t;

typedef struct round {
    uint64_t round;
    uint32_t episodes, successes, reports;
    double return_sum;            /* over its episodes */
} round_t;

typedef struct learner {
    const agent_worker_opts_t *o;
    const exp_spec_t *s;
    ch_hub_t *hub;
    ch_channel_t *tx;
    buf_t *buf;
    buf_layout_t layout;
    int obs_dim, act_dim;
    int img_c, img_h, img_w;      /* the camera image of every step, 0: none */
    size_t img_bytes;
    float *pobs, *pnext;          /* [batch][img + obs]: rows as the algorithm sees them */
    wk_algo_cfg_t acfg;
    pol_algo_t algo;
    int have_algo;
    int chunk;                    /* rows per sampled chunk: the algorithm's horizon */
    _Atomic int64_t padded;       /* sampled rows that were padding */

    pthread_mutex_t mu;           /* slots, version, episodes, rounds */
    slot_t slots[MAX_SLOTS];
    int nslots;
    int64_t version;
    int64_t episodes;
    uint8_t recent[RECENT];
    int n_recent, recent_at;
    round_t rounds[ROUNDS];
    double eval_rate;             /* newest complete evaluation round, -1 none */
    double eval_return;           /* its mean episode return */
    double staleness;             /* mean version lag of inserted transitions (EMA) */
    uint64_t eval_round;

    _Atomic int64_t updates;
    atomic_int done;              /* the experiment reached a stop condition */
    atomic_int quit;              /* ingest thread: stop */
    atomic_int fatal;
    cr_err_t fatal_err;
    pthread_t ingest;
    uint8_t *pending_hello;       /* first HELLO, read before the buffer existed */
    size_t pending_len;
    float obs[WK_MAX_OBS], act[WK_MAX_ACT];
} learner_t;

static void set_fatal(learner_t *L, const cr_err_t *e)
{
    if (atomic_exchange(&L->fatal, 1) == 0) L->fatal_err = *e;
}

/* ---- acknowledgements (buffer writer thread) ------------------------------------ */

static void on_commit(void *ctx, const buf_ack_t *ack)
{
    slot_t *sl = ctx;
    if (ack->status != 0) {
        if (!atomic_exchange(&sl->failed, 1))
            CR_ERROR(TAG, "producer %" PRIu64 " seq %" PRIu64 " not stored: %s", ack->producer, ack->seq,
                     cr_err_str(ack->status));
        return;
    }
    if (atomic_load(&sl->failed)) return; /* nothing after a failure counts as committed */
    uint64_t cur = atomic_load(&sl->committed);
    if (ack->seq > cur) atomic_store(&sl->committed, ack->seq);
}

/* ---- slots ------------------------------------------------------------------------ */

static void slot_drop(slot_t *sl)
{
    if (sl->pub) ch_wsync_pub_destroy(sl->pub);
    if (sl->wprod) ch_producer_close(sl->wprod);
    if (sl->ctl) ch_producer_close(sl->ctl);
    sl->pub = NULL;
    sl->wprod = sl->ctl = NULL;
    sl->live = 0;
}

static slot_t *slot_find(learner_t *L, uint64_t producer)
{
    for (int i = 0; i < L->nslots; i++)
        if (L->slots[i].producer == producer) return &L->slots[i];
    return NULL;
}

static int64_t env_steps(learner_t *L)
{
    buf_counters_t c;
    buf_counters(L->buf, &c);
    return c.inserts;
}

static void send_ack(learner_t *L, slot_t *sl, int64_t now)
{
    if (!sl->ctl) return;
    uint8_t buf[128];
    pthread_mutex_lock(&L->mu);
    int64_t version = L->version;
    pthread_mutex_unlock(&L->mu);
    wk_ack_t a = {.producer = sl->producer, .acked = atomic_load(&sl->committed), .learner = ch_hub_id(L->hub),
                  .version = version, .updates = atomic_load(&L->updates), .env_steps = env_steps(L),
                  .demo_episodes = sl->demo_episodes, .stop = atomic_load(&L->done) ? ACK_DONE : sl->resend ? ACK_RESEND : ACK_RUN};
    size_t n = wk_ack_encode(&a, buf, sizeof buf);
    cr_err_t e = {0};
    int rc = ch_put(sl->ctl, buf, n, 1.0, 0, &e);
    if (rc == CR_ETIMEDOUT) return; /* the env is not reading: try again later */
    if (rc) {
        CR_WARN(TAG, "env %u (producer %" PRIu64 ") gone: %s", sl->index, sl->producer, e.msg);
        pthread_mutex_lock(&L->mu);
        slot_drop(sl);
        pthread_mutex_unlock(&L->mu);
        return;
    }
    sl->resend = 0;
    sl->ack_sent = a.acked;
    sl->ack_sent_ns = now;
}

static void send_acks(learner_t *L, int force)
{
    int64_t now = cr_now_ns();
    for (int i = 0; i < L->nslots; i++) {
        slot_t *sl = &L->slots[i];
        if (!sl->live) continue;
        if (atomic_load(&sl->failed)) {
            cr_err_t e;
            cr_err_set(&e, CR_EIO, "the buffer refused a transition of env %u; restart to resend", sl->index);
            set_fatal(L, &e);
            return;
        }
        if (force || sl->resend || atomic_load(&sl->committed) != sl->ack_sent || now - sl->ack_sent_ns > ACK_EVERY_NS)
            send_ack(L, sl, now);
    }
}

/* Opens producers from this hub to channel `name` of the env at h. */
static int open_to_env(learner_t *L, const wk_hello_t *h, const char *name, ch_producer_t **out, cr_err_t *err)
{
    ch_where_t to = {.node = h->node, .process = h->hub, .addr = h->addr, .inbound = h->inbound};
    ch_producer_opts_t po = {.window = 64};
    return ch_producer_open(L->hub, name, &to, &po, out, err);
}

static void refuse(learner_t *L, const wk_hello_t *h, const char *why)
{
    CR_ERROR(TAG, "env %u (%s on %s) refused: %s", h->index, h->robot, h->node, why);
    ch_producer_t *p = NULL;
    cr_err_t e = {0};
    if (open_to_env(L, h, "ctl", &p, &e) != 0) return;
    uint8_t buf[128];
    wk_ack_t a = {.producer = h->producer, .learner = ch_hub_id(L->hub), .stop = ACK_REFUSED};
    size_t n = wk_ack_encode(&a, buf, sizeof buf);
    ch_put(p, buf, n, 1.0, 200, &e);
    ch_producer_flush(p, 500, &e);
    ch_producer_close(p);
}

/* The scripted demonstrations of h's robot already in the buffer (ended ones; an
 * episode cut short is recorded again), so a restarted env worker records only
 * the missing ones: everything queued is committed first. -1 when not counted. */
static int64_t demos_recorded(learner_t *L, const wk_hello_t *h)
{
    if (L->s->buffer.scripted.episodes <= 0) return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/buffer.db", L->o->dir);
    int64_t n = -1;
    cr_err_t e = {0};
    if (buf_flush(L->buf, &e) != 0 || buf_count_episodes(path, h->robot, BUF_SRC_DEMO, &n, &e) != 0) {
        CR_WARN(TAG, "env %u: scripted demonstrations of %s not counted: %s", h->index, h->robot, e.msg);
        return -1;
    }
    return n;
}

static void on_hello(learner_t *L, const wk_hello_t *h)
{
    if (h->obs_dim != L->obs_dim || h->act_dim != L->act_dim) {
        char why[160];
        snprintf(why, sizeof why, "its robot has obs %d / act %d, the experiment's buffer obs %d / act %d",
                 h->obs_dim, h->act_dim, L->obs_dim, L->act_dim);
        refuse(L, h, why);
        return;
    }
    if (h->img_c != L->img_c || h->img_h != L->img_h || h->img_w != L->img_w) {
        char why[200];
        snprintf(why, sizeof why, "its camera image is %dx%dx%d (CxHxW), the experiment's buffer holds %dx%dx%d",
                 h->img_c, h->img_h, h->img_w, L->img_c, L->img_h, L->img_w);
        refuse(L, h, why);
        return;
    }
    int64_t demos = demos_recorded(L, h);
    pthread_mutex_lock(&L->mu);
    slot_t *sl = slot_find(L, h->producer);
    for (int i = 0; i < L->nslots; i++) /* an older instance of the same env is gone */
        if (&L->slots[i] != sl && L->slots[i].index == h->index && L->slots[i].live) slot_drop(&L->slots[i]);
    if (!sl) {
        if (L->nslots == MAX_SLOTS) {
            pthread_mutex_unlock(&L->mu);
            refuse(L, h, "too many env workers");
            return;
        }
        sl = &L->slots[L->nslots++];
        memset(sl, 0, sizeof *sl);
        sl->producer = h->producer;
        atomic_store(&sl->committed, h->acked);
        sl->queued = h->acked;
    } else {
        slot_drop(sl);
        /* The env resends from what it saw acknowledged. */
        sl->queued = atomic_load(&sl->committed);
        if (h->acked > sl->queued) {
            atomic_store(&sl->committed, h->acked);
            sl->queued = h->acked;
        }
    }
    sl->index = h->index;
    sl->demo_episodes = demos;
    snprintf(sl->robot, sizeof sl->robot, "%s", h->robot);
    if ((int64_t)h->version > L->version) L->version = (int64_t)h->version;
    cr_err_t e = {0};
    int rc = open_to_env(L, h, "ctl", &sl->ctl, &e);
    if (rc == 0) rc = open_to_env(L, h, "weights", &sl->wprod, &e);
    ch_wsync_opts_t wo = {0};
    if (rc == 0) rc = ch_wsync_pub_create(&wo, &sl->wprod, 1, &sl->pub, &e);
    if (rc) {
        CR_WARN(TAG, "env %u: cannot reach it back (%s); waiting for its next HELLO", h->index, e.msg);
        slot_drop(sl);
        pthread_mutex_unlock(&L->mu);
        return;
    }
    sl->live = 1;
    sl->need_weights = 1;
    sl->ack_sent = UINT64_MAX;
    pthread_mutex_unlock(&L->mu);
    CR_INFO(TAG, "env %u (robot %s on %s, producer %" PRIu64 ") connected; acknowledged through %" PRIu64
            "; acknowledgements and weights by the %s route",
            h->index, h->robot, h->node, h->producer, atomic_load(&sl->committed),
            ch_route_name(ch_producer_route(sl->wprod)));
    send_ack(L, sl, cr_now_ns());
}

static void on_eval(learner_t *L, const wk_eval_t *ev)
{
    pthread_mutex_lock(&L->mu);
    round_t *r = &L->rounds[ev->round % ROUNDS];
    if (r->round != ev->round) *r = (round_t){.round = ev->round};
    r->episodes += ev->episodes;
    r->successes += ev->successes;
    r->return_sum += ev->mean_return * ev->episodes;
    r->reports++;
    int live = 0;
    for (int i = 0; i < L->nslots; i++) live += L->slots[i].live;
    /* A round is complete when every connected env reported it. */
    if ((int)r->reports >= live && ev->round >= L->eval_round) {
        L->eval_round = ev->round;
        L->eval_rate = (double)r->successes / r->episodes;
        L->eval_return = r->return_sum / r->episodes;
        CR_INFO(TAG, "evaluation %" PRIu64 " (policy %" PRId64 "): %u/%u episodes succeeded", ev->round,
                ev->version, r->successes, r->episodes);
    }
    pthread_mutex_unlock(&L->mu);
}

static void on_step(learner_t *L, const ch_msg_t *m)
{
    cr_err_t e = {0};
    wk_step_t st;
    if (wk_step_decode(m->data, m->len, &st, L->obs, L->obs_dim, L->act, L->act_dim, &e) != 0 ||
        st.obs_dim != L->obs_dim || (!st.final && st.act_dim != L->act_dim) || st.img_bytes != L->img_bytes) {
        CR_WARN(TAG, "transition refused: %s", e.code ? e.msg : "dimensions (or image size) do not match the buffer");
        return;
    }
    slot_t *sl = slot_find(L, st.producer);
    if (!sl || !sl->live) return; /* not introduced (or refused): the env says HELLO again */
    if (st.seq <= sl->queued) return; /* already stored: a resend */
    if (st.seq != sl->queued + 1) {
        if (!sl->resend)
            CR_WARN(TAG, "env %u: seq %" PRIu64 " after %" PRIu64 ": asking for a resend", sl->index, st.seq,
                    sl->queued);
        sl->resend = 1;
        return;
    }
    buf_step_t bs = {.producer = st.producer, .seq = st.seq, .episode = st.episode, .robot = sl->robot,
                     .source = st.demo ? BUF_SRC_DEMO : BUF_SRC_ONLINE, .image = {st.image},
                     .proprio = st.obs, .action = st.action, .reward = st.reward,
                     .done = st.done, .policy_version = st.policy_version, .success = st.success,
                     .truncated = st.truncated};
    for (;;) {
        int rc = buf_put(L->buf, &bs, on_commit, sl, 100, &e);
        if (rc == 0) break;
        if (rc == CR_ETIMEDOUT && !atomic_load(&L->quit)) { /* the rate limiter holds inserts */
            send_acks(L, 0);
            continue;
        }
        if (rc == CR_ETIMEDOUT) return;
        set_fatal(L, &e);
        return;
    }
    sl->queued = st.seq;
    pthread_mutex_lock(&L->mu);
    if (!st.final) /* versions between the one that acted and the newest, at insert */
        L->staleness = 0.99 * L->staleness + 0.01 * (double)(L->version - st.policy_version);
    pthread_mutex_unlock(&L->mu);
    if (st.final) {
        pthread_mutex_lock(&L->mu);
        L->episodes++;
        L->recent[L->recent_at] = st.success;
        L->recent_at = (L->recent_at + 1) % RECENT;
        if (L->n_recent < RECENT) L->n_recent++;
        pthread_mutex_unlock(&L->mu);
    }
}

static void handle(learner_t *L, const void *data, size_t len)
{
    cr_err_t e = {0};
    int type = wk_msg_type(data, len, &e);
    if (type == WK_MSG_STEP) {
        ch_msg_t m = {.data = (void *)data, .len = len};
        on_step(L, &m);
    } else if (type == WK_MSG_HELLO) {
        wk_hello_t h;
        if (wk_hello_decode(data, len, &h, &e) == 0) on_hello(L, &h);
        else CR_WARN(TAG, "%s", e.msg);
    } else if (type == WK_MSG_EVAL) {
        wk_eval_t ev;
        if (wk_eval_decode(data, len, &ev, &e) == 0) on_eval(L, &ev);
        else CR_WARN(TAG, "%s", e.msg);
    } else {
        CR_WARN(TAG, "message refused: %s", e.code ? e.msg : "unexpected type");
    }
}

static void *ingest_main(void *arg)
{
    learner_t *L = arg;
    if (L->pending_hello) {
        handle(L, L->pending_hello, L->pending_len);
        free(L->pending_hello);
        L->pending_hello = NULL;
    }
    ch_msg_t *msgs[256];
    while (!atomic_load(&L->quit) && !atomic_load(&L->fatal)) {
        size_t n = 0;
        cr_err_t e = {0};
        /* Views: each message is decoded into the buffer and freed at once. */
        int rc = ch_get_batch_view(L->tx, msgs, 256, 0, 20, &n, &e);
        if (rc && rc != CR_ETIMEDOUT) {
            set_fatal(L, &e);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (!atomic_load(&L->fatal) && !atomic_load(&L->quit)) handle(L, msgs[i]->data, msgs[i]->len);
            ch_msg_free(msgs[i]);
        }
        send_acks(L, 0);
    }
    return NULL;
}

/* ---- weights, checkpoints, status (train thread) ------------------------------------ */

static int publish(learner_t *L, cr_err_t *err)
{
    void *blob = NULL;
    size_t len = 0;
    int rc = pol_algo_export(&L->algo, &blob, &len, err);
    if (rc) return rc;
    ch_tensor_t t = {.name = "policy", .data = blob, .bytes = len};
    pthread_mutex_lock(&L->mu);
    int64_t v = ++L->version;
    for (int i = 0; i < L->nslots; i++) {
        slot_t *sl = &L->slots[i];
        if (!sl->live || !sl->pub) continue;
        cr_err_t e = {0};
        if (ch_wsync_publish(sl->pub, (uint64_t)v, &t, 1, &e) != 0)
            CR_WARN(TAG, "env %u: weights %" PRId64 " not published: %s", sl->index, v, e.msg);
        sl->need_weights = 0;
    }
    pthread_mutex_unlock(&L->mu);
    free(blob);
    return 0;
}

static int any_need_weights(learner_t *L)
{
    int need = 0;
    pthread_mutex_lock(&L->mu);
    for (int i = 0; i < L->nslots; i++) need |= L->slots[i].live && L->slots[i].need_weights;
    pthread_mutex_unlock(&L->mu);
    return need;
}

static void counters(learner_t *L, wk_counters_t *c)
{
    pthread_mutex_lock(&L->mu);
    c->version = L->version;
    c->episodes = L->episodes;
    pthread_mutex_unlock(&L->mu);
    c->updates = atomic_load(&L->updates);
    c->env_steps = env_steps(L);
}

static int checkpoint(learner_t *L, int64_t *last, cr_err_t *err)
{
    wk_counters_t c;
    counters(L, &c);
    if (c.updates == *last) return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/checkpoints", L->o->dir);
    int64_t t0 = cr_now_ns();
    int rc = wk_ckpt_write(dir, &L->algo, &c, L->s->checkpoint.keep, err);
    if (rc) return rc;
    *last = c.updates;
    CR_INFO(TAG, "checkpoint %" PRId64 " written (%.0f ms)", c.updates, (double)(cr_now_ns() - t0) / 1e6);
    return 0;
}

typedef struct rate {
    int64_t at_ns, at_updates;
    double per_s;
} rate_t;

static void write_status(learner_t *L, const char *state, rate_t *r, int64_t ckpt)
{
    int64_t now = cr_now_ns(), u = atomic_load(&L->updates);
    if (!r->at_ns || now - r->at_ns >= 2 * CR_NS_PER_S) { /* a window long enough to be steady */
        if (r->at_ns) r->per_s = (double)(u - r->at_updates) * 1e9 / (double)(now - r->at_ns);
        r->at_ns = now;
        r->at_updates = u;
    }
    wk_counters_t c;
    counters(L, &c);
    pthread_mutex_lock(&L->mu);
    int ok = 0, live = 0;
    for (int i = 0; i < L->n_recent; i++) ok += L->recent[i];
    double sr = L->n_recent ? (double)ok / L->n_recent : 0;
    for (int i = 0; i < L->nslots; i++) live += L->slots[i].live;
    double er = L->eval_rate, eret = L->eval_return;
    uint64_t eround = L->eval_round;
    double staleness = L->staleness;
    pthread_mutex_unlock(&L->mu);
    char text[1024], path[4200];
    snprintf(text, sizeof text,
             "{\"role\":\"learner\",\"state\":\"%s\",\"pid\":%d,\"generation\":%lld,\"env_steps\":%" PRId64 ",\"episodes\":%" PRId64
             ",\"success_rate\":%.4f,\"eval_success_rate\":%.4f,\"eval_mean_return\":%.4f,\"eval_round\":%" PRIu64 ",\"updates\":%" PRId64
             ",\"updates_per_s\":%.2f,\"policy_version\":%" PRId64 ",\"staleness\":%.3f,\"envs\":%d"
             ",\"chunk\":%d,\"padded_rows\":%" PRId64 ",\"checkpoint\":%" PRId64 ",\"time_ns\":%" PRId64 "}\n",
             state, (int)getpid(), (long long)L->o->generation, c.env_steps, c.episodes, sr, er, eret, eround, c.updates, r->per_s, c.version,
             staleness, live, L->chunk, atomic_load(&L->padded), ckpt, cr_wall_ns());
    snprintf(path, sizeof path, "%s/status/learner.json", L->o->dir);
    cr_err_t e = {0};
    if (wk_write_file(path, text, 0, &e) != 0) CR_WARN(TAG, "status: %s", e.msg);
}

/* Whether a stop condition of the spec holds. */
static int stop_reached(learner_t *L, int64_t started_ns)
{
    const exp_stop_t *st = &L->s->stop;
    if (st->updates && atomic_load(&L->updates) >= st->updates) return 1;
    if (st->env_steps && env_steps(L) >= st->env_steps) return 1;
    if (st->wall_time && cr_now_ns() - started_ns >= st->wall_time) return 1;
    if (st->success_rate > 0) {
        pthread_mutex_lock(&L->mu);
        int hit = L->eval_rate >= st->success_rate;
        pthread_mutex_unlock(&L->mu);
        if (hit) return 1;
    }
    return 0;
}

/* ---- set-up ------------------------------------------------------------------------- */

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Waits for the first HELLO to learn the observation and action sizes of a new
 * experiment; keeps it for the ingest thread. */
static int first_hello(learner_t *L, volatile sig_atomic_t *stop, wk_hello_t *h, cr_err_t *err)
{
    CR_INFO(TAG, "new experiment: waiting for the first env worker to learn the robot's sizes");
    while (!*stop) {
        ch_msg_t *m;
        int rc = ch_get(L->tx, &m, 200, err);
        if (rc == CR_ETIMEDOUT) continue;
        if (rc) return rc;
        cr_err_t e = {0};
        if (wk_msg_type(m->data, m->len, &e) == WK_MSG_HELLO && wk_hello_decode(m->data, m->len, h, &e) == 0) {
            L->pending_hello = malloc(m->len);
            if (!L->pending_hello) {
                ch_msg_free(m);
                return cr_err_set(err, CR_ENOMEM, "out of memory");
            }
            memcpy(L->pending_hello, m->data, m->len);
            L->pending_len = m->len;
            ch_msg_free(m);
            return 0;
        }
        CR_WARN(TAG, "before any HELLO: message dropped (%s)", e.code ? e.msg : "not a HELLO");
        ch_msg_free(m);
    }
    return CR_ECANCELLED;
}

static int open_buffer(learner_t *L, volatile sig_atomic_t *stop, cr_err_t *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/buffer.db", L->o->dir);
    const exp_spec_t *s = L->s;
    buf_config_t cfg;
    buf_config_default(&cfg);
    cfg.samples_per_insert = L->o->no_rate_limit ? 0 : s->algorithm.utd * (double)s->algorithm.batch_size;
    cfg.min_size = s->algorithm.warmup_steps > s->algorithm.batch_size ? s->algorithm.warmup_steps
                                                                        : s->algorithm.batch_size;
    cfg.gamma = s->algorithm.gamma;
    cfg.seed = (uint64_t)s->seed * 7919u + 17u;
    cfg.cache_bytes = 64u << 20;
    cfg.capacity = s->buffer.capacity;
    cfg.chunk = L->chunk;
    int demos = s->buffer.n_demos || s->buffer.scripted.ratio > 0;
    cfg.ratio[BUF_SRC_ONLINE] = demos ? s->buffer.online_ratio : 0;
    if (demos) {
        cfg.ratio[BUF_SRC_DEMO] = s->buffer.scripted.ratio;
        for (size_t i = 0; i < s->buffer.n_demos; i++) cfg.ratio[BUF_SRC_DEMO] += s->buffer.demos[i].ratio;
    }
    if (s->buffer.sampler == EXP_SAMPLER_RECENT) {
        cfg.sampler = BUF_SAMPLE_RECENT;
        cfg.recent_window = s->buffer.recent_window;
    }
    const buf_layout_t *lay = NULL;
    buf_layout_t want = {0};
    if (!file_exists(path)) {
        wk_hello_t h;
        int rc = first_hello(L, stop, &h, err);
        if (rc) return rc;
        want.n_proprio = 1;
        want.proprio_dim[0] = h.obs_dim;
        want.act_dim = h.act_dim;
        if (h.img_c) {
            want.n_cams = 1;
            want.cam_c[0] = h.img_c;
            want.cam_h[0] = h.img_h;
            want.cam_w[0] = h.img_w;
        }
        lay = &want;
    }
    int rc = buf_open(path, lay, &cfg, &L->buf, err);
    if (rc) return rc;
    L->layout = *buf_layout(L->buf);
    L->obs_dim = buf_layout_obs_dim(&L->layout);
    L->act_dim = L->layout.act_dim;
    if (L->layout.n_cams > 1)
        return cr_err_set(err, CR_ENOTSUP, "%s: %d cameras; the worker handles one", path, L->layout.n_cams);
    if (L->layout.n_cams) {
        L->img_c = L->layout.cam_c[0];
        L->img_h = L->layout.cam_h[0];
        L->img_w = L->layout.cam_w[0];
        L->img_bytes = buf_layout_cam_bytes(&L->layout, 0);
    }
    if (L->obs_dim > WK_MAX_OBS || L->act_dim > WK_MAX_ACT)
        return cr_err_set(err, CR_EINVAL, "%s: obs %d / act %d larger than the worker handles", path, L->obs_dim,
                          L->act_dim);
    for (size_t i = 0; i < s->buffer.n_demos; i++) {
        rc = buf_attach_demo(L->buf, s->buffer.demos[i].path, err);
        if (rc) return cr_err_wrap(err, "buffer.demos.%zu.path", i);
    }
    return 0;
}

/* The algorithm's horizon (algorithm.params.horizon, 1 without one): the rows of
 * each chunk the buffer samples. A batch is whole chunks. */
static int chunk_of(learner_t *L, cr_err_t *err)
{
    L->chunk = 1;
    for (size_t i = 0; i < L->acfg.nkv; i++) {
        if (strcmp(L->acfg.kv[i].key, "horizon")) continue;
        char *end;
        long h = strtol(L->acfg.kv[i].value, &end, 10);
        if (end == L->acfg.kv[i].value || *end || h < 1 || h > BUF_MAX_CHUNK)
            return cr_err_set(err, CR_EINVAL, "algorithm.params.horizon '%s': expected an integer between 1 and %d",
                              L->acfg.kv[i].value, BUF_MAX_CHUNK);
        L->chunk = (int)h;
    }
    if (L->s->algorithm.batch_size % L->chunk)
        return cr_err_set(err, CR_EINVAL, "algorithm.batch_size %lld is not a multiple of algorithm.params.horizon %d: "
                          "a batch holds whole chunks of that many consecutive transitions",
                          (long long)L->s->algorithm.batch_size, L->chunk);
    if (L->chunk > 1) CR_INFO(TAG, "chunks of %d transitions: %lld per batch", L->chunk,
                               (long long)L->s->algorithm.batch_size / L->chunk);
    return 0;
}

static int setup(learner_t *L, volatile sig_atomic_t *stop, cr_err_t *err)
{
    const agent_worker_opts_t *o = L->o;
    char p[4200];
    snprintf(p, sizeof p, "%s/status", o->dir);
    int rc = wk_mkdirs(p, err);
    if (rc) return rc;
    char listen[WK_STR_MAX], lbuf[WK_STR_MAX];
    const char *placed = NULL;
    if (o->learner) { /* the address the controller placed us at */
        wk_where_t w;
        rc = wk_where_parse(o->learner, &w, err);
        if (rc) return rc;
        snprintf(listen, sizeof listen, "%s", w.addr);
        placed = listen;
    }
    ch_hub_opts_t ho;
    rpc_opts_t rpc;
    rc = wk_hub_opts(o, placed, &ho, &rpc, lbuf, sizeof lbuf, err);
    if (rc) return rc;
    rc = ch_hub_create(&ho, &L->hub, err);
    if (rc) return rc;
    ch_opts_t co = {.capacity = 4096};
    rc = ch_channel_create(L->hub, "transitions", &co, &L->tx, err);
    if (rc) return rc;
    ch_where_t w;
    ch_hub_where(L->hub, &w);
    wk_where_t ww = {.process = w.process, .inbound = w.inbound};
    snprintf(ww.node, sizeof ww.node, "%s", w.node);
    snprintf(ww.addr, sizeof ww.addr, "%s", w.addr ? w.addr : "");
    rc = wk_where_write(o->dir, &ww, err);
    if (rc) return rc;
    rc = wk_algo_cfg_make(L->s, (uint64_t)L->s->seed, &L->acfg, err);
    if (rc) return rc;
    if ((rc = chunk_of(L, err)) != 0) return rc;
    rc = open_buffer(L, stop, err);
    if (rc) return rc;
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = (int)L->img_bytes + L->obs_dim, .act_dim = L->act_dim,
                          .img_c = L->img_c, .img_h = L->img_h, .img_w = L->img_w};
    rc = pol_algo_create(&L->algo, L->acfg.plugin.desc, L->acfg.kv, L->acfg.nkv, &spec, err);
    if (rc) return cr_err_wrap(err, "algorithm %s", L->s->algorithm.type);
    L->have_algo = 1;
    char ck[4200], dir[4200];
    wk_counters_t c;
    snprintf(dir, sizeof dir, "%s/checkpoints", o->dir);
    cr_err_t e = {0};
    rc = wk_ckpt_newest(dir, ck, sizeof ck, &c, &e);
    if (rc == 0) {
        rc = pol_algo_load(&L->algo, ck, err);
        if (rc) return cr_err_wrap(err, "resume from %s", ck);
        atomic_store(&L->updates, c.updates);
        L->version = c.version;
        L->episodes = c.episodes;
        CR_INFO(TAG, "resumed from %s: %" PRId64 " updates, policy version %" PRId64 ", %" PRId64 " env steps",
                ck, c.updates, c.version, env_steps(L));
    } else if (rc != CR_ENOENT) {
        *err = e;
        return rc;
    }
    return 0;
}

static void teardown(learner_t *L)
{
    for (int i = 0; i < L->nslots; i++) slot_drop(&L->slots[i]);
    if (L->tx) ch_channel_destroy(L->tx);
    if (L->hub) ch_hub_destroy(L->hub);
    if (L->buf) buf_close(L->buf);
    if (L->have_algo) pol_algo_destroy(&L->algo);
    wk_algo_cfg_free(&L->acfg);
    free(L->pending_hello);
    free(L->pobs);
    free(L->pnext);
    pthread_mutex_destroy(&L->mu);
}

/* Rows as the algorithm sees them: image CHW floats in [0, 1], then the vector. */
static void with_images(const learner_t *L, const buf_batch_t *b, int next, float *out)
{
    int H = L->img_h, W = L->img_w, C = L->img_c, O = L->obs_dim;
    size_t row = L->img_bytes + (size_t)O;
    for (int i = 0; i < b->size; i++) {
        const uint8_t *img = (next ? b->next_image[0] : b->image[0]) + (size_t)i * L->img_bytes;
        float *o = out + (size_t)i * row;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) o[((size_t)c * H + y) * W + x] = img[((size_t)y * W + x) * C + c] / 255.0f;
        memcpy(o + L->img_bytes, (next ? b->next_obs : b->obs) + (size_t)i * O, sizeof(float) * O);
    }
}

/* One update from one batch. */
static int train_step(learner_t *L, buf_batch_t *b, uint8_t *flags, cr_err_t *err)
{
    int rc = buf_sample(L->buf, b, 100, err);
    if (rc) return rc;
    int64_t pads = 0;
    for (int i = 0; i < b->size; i++) {
        flags[i] = b->source[i] == BUF_SRC_DEMO ? CORRAL_SAMPLE_DEMO
                 : b->source[i] == BUF_SRC_INTERVENTION ? CORRAL_SAMPLE_INTERVENTION : 0;
        if (b->pad[i]) flags[i] |= CORRAL_SAMPLE_PAD;
        pads += b->pad[i];
    }
    atomic_fetch_add(&L->padded, pads);
    corral_batch_t cb = {.struct_size = sizeof cb, .size = b->size, .obs = b->obs, .action = b->action,
                         .reward = b->reward, .next_obs = b->next_obs, .done = b->done, .flags = flags};
    if (L->img_bytes) {
        with_images(L, b, 0, L->pobs);
        with_images(L, b, 1, L->pnext);
        cb.obs = L->pobs;
        cb.next_obs = L->pnext;
    }
    corral_metrics_t m = {0};
    rc = pol_algo_update(&L->algo, &cb, &m, err);
    if (rc) return rc;
    atomic_fetch_add(&L->updates, 1);
    return 0;
}

int wk_learner_run(const agent_worker_opts_t *o, const exp_spec_t *s, volatile sig_atomic_t *stop, cr_err_t *err)
{
    learner_t *L = calloc(1, sizeof *L);
    if (!L) return cr_err_set(err, CR_ENOMEM, "out of memory");
    L->o = o;
    L->s = s;
    L->eval_rate = -1;
    pthread_mutex_init(&L->mu, NULL);
    int rc = setup(L, stop, err);
    if (rc) {
        teardown(L);
        free(L);
        return rc;
    }
    rc = pthread_create(&L->ingest, NULL, ingest_main, L);
    if (rc) {
        teardown(L);
        free(L);
        return cr_err_set(err, CR_EIO, "cannot start the ingest thread");
    }
    int64_t publish_every = o->publish_every > 0 ? o->publish_every : 100;
    int64_t status_ns = (o->status_ms > 0 ? o->status_ms : 500) * CR_NS_PER_MS;
    int64_t started = cr_now_ns(), last_status = 0, last_ckpt_ns = started;
    int64_t last_ckpt = atomic_load(&L->updates), last_pub = last_ckpt;
    rate_t rate = {0};
    buf_batch_t *batch = NULL;
    uint8_t *flags = malloc((size_t)s->algorithm.batch_size);
    rc = buf_batch_create(L->buf, (int)s->algorithm.batch_size, &batch, err);
    if (!flags && rc == 0) rc = cr_err_set(err, CR_ENOMEM, "out of memory");
    if (rc == 0 && L->img_bytes) {
        size_t n = (size_t)s->algorithm.batch_size * (L->img_bytes + (size_t)L->obs_dim);
        L->pobs = malloc(n * sizeof(float));
        L->pnext = malloc(n * sizeof(float));
        if (!L->pobs || !L->pnext) rc = cr_err_set(err, CR_ENOMEM, "out of memory for image batches");
    }
    while (rc == 0 && !*stop && !atomic_load(&L->fatal)) {
        int64_t now = cr_now_ns();
        if (now - last_status >= status_ns) {
            write_status(L, "running", &rate, last_ckpt);
            last_status = now;
        }
        if (stop_reached(L, started)) {
            /* Said in the status file before the envs hear it (and end): the agent
             * forwards it, so the controller knows the run is done, not broken. */
            write_status(L, "done", &rate, last_ckpt);
            atomic_store(&L->done, 1);
            CR_INFO(TAG, "experiment done: a stop condition holds");
            break;
        }
        if (any_need_weights(L) && atomic_load(&L->updates) > 0 && (rc = publish(L, err)) != 0) break;
        int64_t have = env_steps(L);
        if (have < s->algorithm.warmup_steps) {
            cr_sleep_ns(20 * CR_NS_PER_MS);
            continue;
        }
        if (o->sync && atomic_load(&L->updates) >= (int64_t)(s->algorithm.utd * (double)(have - s->algorithm.warmup_steps))) {
            /* caught up with the data: publish, then wait for more */
            if (atomic_load(&L->updates) > last_pub && (rc = publish(L, err)) != 0) break;
            last_pub = atomic_load(&L->updates);
            cr_sleep_ns(2 * CR_NS_PER_MS);
            continue;
        }
        cr_err_t e = {0};
        int r = train_step(L, batch, flags, &e);
        if (r == CR_ETIMEDOUT) continue;
        if (r) {
            *err = e;
            rc = r;
            break;
        }
        int64_t u = atomic_load(&L->updates);
        if (!o->sync && u % publish_every == 0) {
            if ((rc = publish(L, err)) != 0) break;
            last_pub = u;
        }
        if (u - last_ckpt >= s->checkpoint.every_updates ||
            (s->checkpoint.interval && cr_now_ns() - last_ckpt_ns >= s->checkpoint.interval)) {
            if ((rc = checkpoint(L, &last_ckpt, err)) != 0) break;
            last_ckpt_ns = cr_now_ns();
        }
    }
    if (rc == 0 && atomic_load(&L->fatal)) {
        *err = L->fatal_err;
        rc = err->code ? err->code : CR_EIO;
    }
    /* Tell the envs (done or not) what is committed, checkpoint, then leave. */
    atomic_store(&L->quit, 1);
    pthread_join(L->ingest, NULL);
    cr_err_t e = {0};
    buf_flush(L->buf, &e);
    send_acks(L, 1);
    if (atomic_load(&L->updates) > 0 && (rc == 0 || rc == CR_ETIMEDOUT)) {
        if (checkpoint(L, &last_ckpt, &e) != 0) CR_ERROR(TAG, "final checkpoint: %s", e.msg);
    }
    if (atomic_load(&L->done)) { /* give the envs a moment to read DONE */
        int64_t until = cr_now_ns() + CR_NS_PER_S;
        while (cr_now_ns() < until) {
            cr_sleep_ns(100 * CR_NS_PER_MS);
            send_acks(L, 1);
        }
    }
    write_status(L, rc ? "failed" : atomic_load(&L->done) ? "done" : "stopped", &rate, last_ckpt);
    buf_batch_destroy(batch);
    free(flags);
    teardown(L);
    free(L);
    return rc;
}
