/* worker_env.c - `corral worker --role env` (and `actor`): one robot and its actor
 * in one process, so observations go from the HAL to the policy without a copy.
 *
 * The loop: at each episode boundary (the safe point) take the newest complete
 * weights from weight sync; pause while the policy lags the learner's newest
 * version by more than algorithm.max_staleness; run an evaluation (deterministic
 * policy, nothing sent to the buffer) when the learner has passed another
 * stop.eval_every_updates; then run one episode at the robot's control rate (as
 * fast as the CPU allows when the robot is not real-time), every step tagged with
 * the policy version that chose it. Until the learner has published a policy
 * (version 0) actions are uniform random: the warm-up.
 *
 * Delivery is at least once. Every transition gets the next sequence number of
 * this process's producer id and is kept in `pending` until an ACK from the learner
 * says it is committed in the buffer. When the learner changes (a new
 * learner.where, or ACKs from another learner) the env says HELLO again and resends
 * everything pending, in order; the buffer drops what it already holds. When
 * `pending` reaches max_unacked the env stops stepping until ACKs come: a slow or
 * absent learner throttles collection instead of losing data.
 *
 * Generative policies add three things (task.camera, task.instruction,
 * buffer.scripted): a camera image rendered each step, sent as uint8 with the
 * step and given to the policy as CHW floats in [0, 1] before the vector; an
 * instruction naming the episode's goal on a multi-target robot, tokenized and
 * appended to the observation vector (so the buffer stores it like any vector);
 * and the first buffer.scripted.episodes episodes driven by the robot's scripted
 * expert (noise on the executed action, the expert's action stored), sent as
 * demonstrations. Those count over the experiment, not the process: the first
 * ACK says how many ended demonstrations of this robot the buffer holds, and a
 * restarted env records only the rest (one cut short by the restart is redone).
 *
 * Policies acting in chunks (algorithm.params.horizon > 1) replan at every step:
 * the algorithm's act returns the first action of a fresh chunk (receding
 * horizon), so no chunk is carried across a step, and weights taken at an
 * episode boundary apply from its first step.
 *
 * Invariants: seqs in `pending` are consecutive, ascending, and all > acked;
 * pending[0 .. sent) went out on the current route; a HELLO precedes every resend. */
#include "agents/worker_int.h"
#include "channels/channel.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"
#include "hal/hal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TAG "env"
#define RECENT 100
#define WHERE_POLL_NS (300 * CR_NS_PER_MS)

enum { REW_TASK, REW_SPARSE, REW_PLUGIN };

typedef struct pend {
    uint64_t seq;
    size_t len;
    uint8_t *data;
} pend_t;

typedef struct env {
    const agent_worker_opts_t *o;
    const exp_spec_t *s;
    volatile sig_atomic_t *stop;
    /* robot */
    hal_robot_t *robot;
    const hal_robot_desc_t *desc;
    hal_obs_t obs;
    int od, ad;
    float scale[WK_MAX_OBS];
    int ctx;                      /* instruction tokens appended to the vector (0: none) */
    float *ids;                   /* [n_goals][ctx]: each goal's instruction */
    int img_c, img_h, img_w;      /* the camera image, 0: none */
    size_t img_bytes;
    float *pobs;                  /* the policy's observation: image CHW floats, vector, tokens */
    uint8_t *img_prev;            /* the image a step was taken from */
    int pdim;
    uint8_t *stepbuf;             /* one encoded STEP (image included) */
    size_t stepcap;
    /* reward */
    int rkind;
    pol_plugin_t rplug;
    void *rself;
    /* policy */
    wk_algo_cfg_t acfg;
    pol_algo_t algo;
    int have_algo;
    int64_t version;
    nn_rng_t rng;
    /* channels */
    ch_hub_t *hub;
    ch_channel_t *ctl, *weights;
    ch_wsync_sub_t *sub;
    ch_producer_t *tx;
    wk_where_t learner;           /* the learner connected to */
    wk_where_t flag_learner;      /* --learner, used when there is no learner.where */
    int fixed_learner;
    uint64_t learner_gen;         /* hub id of the learner the ACKs come from */
    int64_t where_checked_ns;
    /* delivery */
    uint64_t producer, next_seq, acked;
    pend_t *q;
    size_t head, n, cap, sent;
    /* what the learner says */
    int64_t learner_version, learner_updates, learner_steps;
    int64_t sync_want;            /* --sync: updates the last barrier waited for */
    int done, refused;
    int heard;                    /* an ACK for this producer arrived */
    int64_t demo_base;            /* scripted demonstrations recorded before this process */
    /* progress */
    int64_t steps, episodes, reconnects, paused_ns, started_ns;
    uint8_t recent[RECENT];
    int n_recent, recent_at;
    uint64_t eval_round;
    double eval_rate;
    int64_t status_ns;
    uint8_t msgbuf[16 + 8 * WK_MAX_OBS + 8 * WK_MAX_ACT + 128];
} env_t;

/* ---- the pending queue --------------------------------------------------------------- */

static pend_t *pend_at(env_t *E, size_t i) { return &E->q[(E->head + i) % E->cap]; }

static int pend_push(env_t *E, uint64_t seq, const void *data, size_t len, cr_err_t *err)
{
    if (E->n == E->cap) {
        size_t ncap = E->cap ? 2 * E->cap : 1024;
        pend_t *q = malloc(ncap * sizeof *q);
        if (!q) return cr_err_set(err, CR_ENOMEM, "out of memory");
        for (size_t i = 0; i < E->n; i++) q[i] = *pend_at(E, i);
        free(E->q);
        E->q = q;
        E->head = 0;
        E->cap = ncap;
    }
    pend_t *p = &E->q[(E->head + E->n) % E->cap];
    p->data = malloc(len);
    if (!p->data) return cr_err_set(err, CR_ENOMEM, "out of memory");
    memcpy(p->data, data, len);
    p->len = len;
    p->seq = seq;
    E->n++;
    return 0;
}

/* Drops what the learner acknowledged. */
static void pend_ack(env_t *E, uint64_t acked)
{
    if (acked > E->acked) E->acked = acked;
    while (E->n && E->q[E->head].seq <= E->acked) {
        free(E->q[E->head].data);
        E->head = (E->head + 1) % E->cap;
        E->n--;
        if (E->sent) E->sent--;
    }
}

/* ---- the route to the learner ------------------------------------------------------- */

static void disconnect(env_t *E, const char *why)
{
    if (E->tx) {
        CR_WARN(TAG, "learner route lost (%s); %zu transitions kept for resending", why, E->n);
        ch_producer_close(E->tx);
    }
    E->tx = NULL;
    E->sent = 0;
}

static int send_hello(env_t *E, cr_err_t *err)
{
    ch_where_t w;
    ch_hub_where(E->hub, &w);
    wk_hello_t h = {.index = (uint32_t)E->o->index, .producer = E->producer, .version = (uint64_t)E->version,
                    .acked = E->acked, .hub = w.process, .inbound = w.inbound, .obs_dim = E->od + E->ctx,
                    .act_dim = E->ad, .img_c = E->img_c, .img_h = E->img_h, .img_w = E->img_w};
    snprintf(h.node, sizeof h.node, "%s", w.node);
    snprintf(h.addr, sizeof h.addr, "%s", w.addr ? w.addr : "");
    snprintf(h.robot, sizeof h.robot, "%s", E->desc->name);
    size_t n = wk_hello_encode(&h, E->msgbuf, sizeof E->msgbuf);
    return ch_put(E->tx, E->msgbuf, n, 1.0, 1000, err);
}

/* Opens the route to the learner at E->learner, says HELLO, and marks everything
 * pending for resending. */
static int connect_learner(env_t *E)
{
    disconnect(E, "reconnecting");
    ch_where_t to = {.node = E->learner.node, .process = E->learner.process, .addr = E->learner.addr,
                     .inbound = E->learner.inbound};
    ch_producer_opts_t po = {.window = 256};
    cr_err_t e = {0};
    int rc = ch_producer_open(E->hub, "transitions", &to, &po, &E->tx, &e);
    if (rc == 0) rc = send_hello(E, &e);
    if (rc) {
        CR_DEBUG(TAG, "learner on %s not reachable yet: %s", E->learner.node, e.msg);
        if (E->tx) ch_producer_close(E->tx);
        E->tx = NULL;
        return rc;
    }
    E->sent = 0;
    E->reconnects++;
    if (E->learner.process) E->learner_gen = E->learner.process;
    CR_INFO(TAG, "connected to the learner on %s (%s route); resending %zu transitions", E->learner.node,
            ch_route_name(ch_producer_route(E->tx)), E->n);
    return 0;
}

/* Looks for a (re)started learner in learner.where and connects to it. */
static void check_learner(env_t *E, int force)
{
    int64_t now = cr_now_ns();
    if (!force && E->tx && now - E->where_checked_ns < WHERE_POLL_NS) return;
    if (!force && !E->tx && now - E->where_checked_ns < WHERE_POLL_NS / 3) return;
    E->where_checked_ns = now;
    wk_where_t w;
    cr_err_t e = {0};
    if (wk_where_read(E->o->dir, &w, &e) != 0) {
        if (!E->fixed_learner) return;
        if (!E->tx) { /* no location file: the learner named by the flag */
            E->learner = E->flag_learner;
            connect_learner(E);
        }
        return;
    }
    if (E->tx && w.process == E->learner.process) return;
    E->learner = w;
    connect_learner(E);
}

/* Sends what is pending and not yet sent on this route, without waiting. */
static void pump(env_t *E)
{
    while (E->tx && E->sent < E->n) {
        pend_t *p = pend_at(E, E->sent);
        cr_err_t e = {0};
        int rc = ch_put(E->tx, p->data, p->len, 1.0, 0, &e);
        if (rc == CR_ETIMEDOUT) return;
        if (rc) {
            disconnect(E, e.msg);
            return;
        }
        E->sent++;
    }
}

/* Reads ACKs for up to timeout_ms (0: what is there). */
static void poll_ctl(env_t *E, int64_t timeout_ms)
{
    for (;;) {
        ch_msg_t *m;
        cr_err_t e = {0};
        if (ch_get(E->ctl, &m, timeout_ms, &e) != 0) return;
        timeout_ms = 0;
        wk_ack_t a;
        if (wk_ack_decode(m->data, m->len, &a, &e) != 0 || a.producer != E->producer) {
            CR_WARN(TAG, "control message refused: %s", e.code ? e.msg : "for another producer");
            ch_msg_free(m);
            continue;
        }
        ch_msg_free(m);
        if (a.stop == 2) {
            E->refused = 1;
            continue;
        }
        if (!E->heard) {
            E->heard = 1;
            E->demo_base = a.demo_episodes > 0 ? a.demo_episodes : 0;
            if (E->demo_base > 0 && E->s->buffer.scripted.episodes > 0)
                CR_INFO(TAG, "the buffer holds %" PRId64 " of the %lld scripted demonstrations of robot %s: recording %lld",
                        E->demo_base, (long long)E->s->buffer.scripted.episodes, E->desc->name,
                        E->demo_base < E->s->buffer.scripted.episodes
                            ? (long long)(E->s->buffer.scripted.episodes - E->demo_base) : 0LL);
        }
        if (!E->learner.process && a.learner && E->learner_gen && a.learner != E->learner_gen && E->tx) {
            /* Another learner answers on the same route (a direct route by address to
             * a restarted learner): introduce ourselves again and resend. With a
             * learner.where the process is known and a late ACK of the previous
             * learner is only an acknowledgement (still true: it was committed). */
            E->learner_gen = a.learner;
            cr_err_t he = {0};
            if (send_hello(E, &he) != 0) disconnect(E, he.msg);
            E->sent = 0;
        }
        if (!E->learner_gen) E->learner_gen = a.learner;
        pend_ack(E, a.acked);
        if (a.version > E->learner_version || a.learner == E->learner_gen) E->learner_version = a.version;
        E->learner_updates = a.updates;
        E->learner_steps = a.env_steps;
        if (a.stop == 1) E->done = 1;
        if (a.stop == 3) E->sent = 0;
    }
}

/* ---- status ------------------------------------------------------------------------ */

static void write_status(env_t *E, const char *state)
{
    int ok = 0;
    for (int i = 0; i < E->n_recent; i++) ok += E->recent[i];
    double secs = (double)(cr_now_ns() - E->started_ns) / 1e9;
    char text[1200], path[4200];
    snprintf(text, sizeof text,
             "{\"role\":\"env\",\"state\":\"%s\",\"index\":%d,\"pid\":%d,\"generation\":%lld,\"robot\":\"%s\",\"producer\":%" PRIu64
             ",\"acked\":%" PRIu64 ",\"last_seq\":%" PRIu64 ",\"unacked\":%zu,\"env_steps\":%" PRId64
             ",\"episodes\":%" PRId64 ",\"success_rate\":%.4f,\"policy_version\":%" PRId64
             ",\"learner_version\":%" PRId64 ",\"learner_updates\":%" PRId64 ",\"eval_round\":%" PRIu64
             ",\"eval_success_rate\":%.4f,\"steps_per_s\":%.1f,\"paused_s\":%.2f,\"reconnects\":%" PRId64
             ",\"time_ns\":%" PRId64 "}\n",
             state, E->o->index, (int)getpid(), (long long)E->o->generation, E->desc ? E->desc->name : "", E->producer, E->acked,
             E->next_seq - 1, E->n, E->steps, E->episodes, E->n_recent ? (double)ok / E->n_recent : 0,
             E->version, E->learner_version, E->learner_updates, E->eval_round, E->eval_rate,
             secs > 0 ? (double)E->steps / secs : 0, (double)E->paused_ns / 1e9, E->reconnects, cr_wall_ns());
    snprintf(path, sizeof path, "%s/status/env-%d.json", E->o->dir, E->o->index);
    cr_err_t e = {0};
    if (wk_write_file(path, text, 0, &e) != 0) CR_WARN(TAG, "status: %s", e.msg);
}

static void maybe_status(env_t *E)
{
    int64_t now = cr_now_ns(), every = (E->o->status_ms > 0 ? E->o->status_ms : 500) * CR_NS_PER_MS;
    if (now - E->status_ns < every) return;
    E->status_ns = now;
    write_status(E, "running");
}

/* Keeps the learner fed and ACKs read while the loop waits for something. */
static void service(env_t *E, int64_t wait_ms)
{
    check_learner(E, 0);
    pump(E);
    poll_ctl(E, wait_ms);
    maybe_status(E);
}

/* ---- robot, reward, policy --------------------------------------------------------- */

static int vec_offset(const hal_robot_desc_t *d, const char *name, int *off, int *dim)
{
    for (int v = 0; v < d->obs.n_vecs; v++)
        if (!strcmp(d->obs.vecs[v].name, name)) {
            *off = d->obs.vecs[v].offset;
            *dim = d->obs.vecs[v].dim;
            return 0;
        }
    return -1;
}

static int open_robot(env_t *E, cr_err_t *err)
{
    const agent_worker_opts_t *o = E->o;
    hal_opt_t opts[AGENT_WORKER_MAX_ROBOT_OPTS + 8];
    int n = 0, has_seed = 0;
    if (o->n_robot_opts > AGENT_WORKER_MAX_ROBOT_OPTS)
        return cr_err_set(err, CR_EINVAL, "at most %d robot options", AGENT_WORKER_MAX_ROBOT_OPTS);
    int rc = hal_opts_parse(o->robot_opts, (int)o->n_robot_opts, opts, err);
    if (rc) return rc;
    n = (int)o->n_robot_opts;
    for (int i = 0; i < n; i++) has_seed |= !strcmp(opts[i].key, "seed");
    static char seed[32], steps[32], hz[32], iw[32], ih[32];
    if (!has_seed) {
        snprintf(seed, sizeof seed, "%lld", (long long)((E->s->seed * 1000 + o->index + 1) % 2147483647));
        opts[n++] = (hal_opt_t){"seed", seed};
    }
    if (E->s->task.episode_steps) {
        snprintf(steps, sizeof steps, "%d", (int)E->s->task.episode_steps);
        opts[n++] = (hal_opt_t){"episode_steps", steps};
    }
    if (E->s->task.control_hz > 0) {
        snprintf(hz, sizeof hz, "%g", E->s->task.control_hz);
        opts[n++] = (hal_opt_t){"control_hz", hz};
    }
    if (E->s->task.camera[0]) { /* room was kept: 4 above the user's options */
        snprintf(iw, sizeof iw, "%d", (int)E->s->task.image_width);
        snprintf(ih, sizeof ih, "%d", (int)E->s->task.image_height);
        opts[n++] = (hal_opt_t){"camera", E->s->task.camera};
        opts[n++] = (hal_opt_t){"image_width", iw};
        opts[n++] = (hal_opt_t){"image_height", ih};
    }
    rc = hal_robot_open(o->robot_name, o->robot_driver, o->robot_model, opts, n, &E->robot, err);
    if (rc) return rc;
    E->desc = hal_robot_desc(E->robot);
    E->od = E->desc->obs.vec_total;
    E->ad = E->desc->act.dim;
    if (E->od > WK_MAX_OBS || E->ad > WK_MAX_ACT)
        return cr_err_set(err, CR_EINVAL, "robot %s: obs %d / act %d larger than the worker handles",
                          o->robot_name, E->od, E->ad);
    if (E->desc->obs.n_cams > 1)
        CR_WARN(TAG, "robot %s has %d cameras: only the first (%s) is sent", o->robot_name, E->desc->obs.n_cams,
                E->desc->obs.cams[0].name);
    if (E->desc->obs.n_cams) {
        E->img_c = 3;
        E->img_h = E->desc->obs.cams[0].height;
        E->img_w = E->desc->obs.cams[0].width;
        E->img_bytes = (size_t)E->img_c * E->img_h * E->img_w;
        if (E->img_bytes > WK_MAX_IMG)
            return cr_err_set(err, CR_EINVAL, "robot %s: a %dx%d image is larger than a step carries (%u bytes)",
                              o->robot_name, E->img_w, E->img_h, WK_MAX_IMG);
    }
    rc = hal_obs_alloc(E->desc, E->img_bytes > 0, &E->obs, err);
    if (rc) return rc;
    for (int i = 0; i < E->od; i++) E->scale[i] = 1.0f;
    const cfg_node_t *sc = E->s->task.obs_scale;
    if (sc && sc->kind == CFG_NODE_MAP) {
        for (size_t i = 0; i < sc->count; i++) {
            const cfg_node_t *v = sc->items[i];
            int off, dim;
            char *end;
            double k = v->kind == CFG_NODE_SCALAR ? strtod(v->text, &end) : NAN;
            if (v->kind != CFG_NODE_SCALAR || end == v->text || *end || !isfinite(k))
                return cr_err_set(err, CR_EINVAL, "%s:%d:%d: %s: expected a number", v->source, v->line, v->col,
                                  v->path);
            if (vec_offset(E->desc, v->key, &off, &dim) != 0)
                return cr_err_set(err, CR_EINVAL, "%s:%d:%d: %s: robot %s has no observation vector '%s'",
                                  v->source, v->key_line, v->key_col, v->path, o->robot_name, v->key);
            for (int j = 0; j < dim; j++) E->scale[off + j] = (float)k;
        }
    } else if (sc && !(sc->kind == CFG_NODE_SCALAR && sc->is_null)) {
        return cr_err_set(err, CR_EINVAL, "%s:%d:%d: task.obs_scale: expected a map of vector: factor",
                          sc->source, sc->line, sc->col);
    }
    return 0;
}

static int open_reward(env_t *E, cr_err_t *err)
{
    const char *r = E->s->task.reward;
    if (!strcmp(r, "task")) return E->rkind = REW_TASK, 0;
    if (!strcmp(r, "sparse")) return E->rkind = REW_SPARSE, 0;
    E->rkind = REW_PLUGIN;
    size_t rl = strlen(r);
    int rc;
    if (rl > 3 && !strcmp(r + rl - 3, ".so")) {
        rc = pol_plugin_open(r, &E->rplug, err);
        if (rc) return cr_err_wrap(err, "task.reward");
        if (E->rplug.desc->kind != CORRAL_PLUGIN_REWARD)
            return cr_err_set(err, CR_EINVAL, "task.reward: %s is not a reward plugin", r);
    } else {
        E->rplug.desc = pol_builtin_find(r, CORRAL_PLUGIN_REWARD);
        if (!E->rplug.desc) return cr_err_set(err, CR_EINVAL, "task.reward: unknown reward '%s'", r);
    }
    corral_kv_t kv[34];
    size_t n = 0;
    static char off_s[16], dim_s[16];
    const cfg_node_t *p = E->s->task.reward_params;
    if (p && p->kind == CFG_NODE_MAP) {
        for (size_t i = 0; i < p->count && n < 32; i++) {
            const cfg_node_t *v = p->items[i];
            if (v->kind != CFG_NODE_SCALAR)
                return cr_err_set(err, CR_EINVAL, "%s:%d:%d: %s: expected a scalar", v->source, v->line, v->col,
                                  v->path);
            if (!strcmp(v->key, "vector")) { /* offset and dims of a named observation vector */
                int off, dim;
                if (vec_offset(E->desc, v->text, &off, &dim) != 0)
                    return cr_err_set(err, CR_EINVAL, "%s:%d:%d: %s: robot %s has no observation vector '%s'",
                                      v->source, v->line, v->col, v->path, E->desc->name, v->text);
                snprintf(off_s, sizeof off_s, "%d", off);
                snprintf(dim_s, sizeof dim_s, "%d", dim);
                kv[n++] = (corral_kv_t){"offset", off_s};
                kv[n++] = (corral_kv_t){"dims", dim_s};
                continue;
            }
            kv[n++] = (corral_kv_t){v->key, v->text};
        }
    }
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = E->od, .act_dim = E->ad};
    rc = E->rplug.desc->reward->create(kv, n, &spec, &E->rself, (corral_err_t *)err);
    if (rc) return cr_err_wrap(err, "task.reward %s", r);
    return 0;
}

static float reward_of(env_t *E, const float *before, const float *act, cr_err_t *err, int *rc)
{
    *rc = 0;
    if (E->rkind == REW_TASK) return (float)E->obs.reward;
    if (E->rkind == REW_SPARSE) return E->obs.success ? 1.0f : 0.0f;
    float r = 0;
    int ok = 0;
    *rc = E->rplug.desc->reward->compute(E->rself, before, act, E->obs.vec, &r, &ok, (corral_err_t *)err);
    return r;
}

/* The vector as the buffer stores it: scaled, then the episode's instruction. */
static void scaled(const env_t *E, float *out)
{
    for (int i = 0; i < E->od; i++) out[i] = E->obs.vec[i] * E->scale[i];
    if (E->ctx) memcpy(out + E->od, E->ids + (size_t)E->obs.goal * E->ctx, sizeof(float) * (size_t)E->ctx);
}

/* The policy's observation: the image as CHW floats in [0, 1] (from the HAL's
 * uint8 HWC), then the vector from scaled(). */
static const float *policy_obs(env_t *E, const float *vec)
{
    float *p = E->pobs;
    int H = E->img_h, W = E->img_w, C = E->img_c;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++)
                p[((size_t)c * H + y) * W + x] = E->obs.img[((size_t)y * W + x) * C + c] / 255.0f;
    memcpy(p + E->img_bytes, vec, sizeof(float) * (size_t)(E->od + E->ctx));
    return p;
}

/* The scripted expert's action in the policy's [-1, 1] units. */
static int expert_action(env_t *E, float *act, cr_err_t *err)
{
    float a[WK_MAX_ACT];
    int rc = hal_robot_expert(E->robot, a, err);
    if (rc) return cr_err_wrap(err, "buffer.scripted");
    for (int i = 0; i < E->ad; i++) {
        float lo = E->desc->act.low[i], hi = E->desc->act.high[i];
        act[i] = hi > lo ? 2.0f * (a[i] - lo) / (hi - lo) - 1.0f : 0.0f;
    }
    return 0;
}

/* The policy's action in [-1, 1] onto the robot's action bounds. */
static void to_robot(const env_t *E, const float *a, float *out)
{
    for (int i = 0; i < E->ad; i++) {
        float lo = E->desc->act.low[i], hi = E->desc->act.high[i];
        float x = a[i] < -1 ? -1 : a[i] > 1 ? 1 : a[i];
        out[i] = lo + (x + 1.0f) * 0.5f * (hi - lo);
    }
}

static void take_weights(env_t *E)
{
    ch_weights_t *w = NULL;
    if (!ch_wsync_sub_take(E->sub, (uint64_t)E->version, &w)) return;
    cr_err_t e = {0};
    if (w->n != 1 || pol_algo_import(&E->algo, w->t[0].data, w->t[0].bytes, &e) != 0)
        CR_WARN(TAG, "weights %" PRIu64 " refused: %s", w->version, e.code ? e.msg : "not one policy blob");
    else
        E->version = (int64_t)w->version;
    ch_weights_free(w);
}

/* ---- episodes --------------------------------------------------------------------- */

static int enqueue(env_t *E, const wk_step_t *st, cr_err_t *err)
{
    size_t n = wk_step_encode(st, E->stepbuf, E->stepcap);
    if (!n) return cr_err_set(err, CR_EINTERNAL, "step does not fit the message buffer");
    int rc = pend_push(E, st->seq, E->stepbuf, n, err);
    if (rc) return rc;
    E->next_seq++;
    pump(E);
    return 0;
}

/* One training episode: every step and the final observation are queued. The
 * first buffer.scripted.episodes episodes are the scripted expert's: it acts with
 * noise on the executed action, its own action is stored, and the episode is
 * sent as a demonstration. */
static int run_episode(env_t *E, cr_err_t *err)
{
    float obs[WK_MAX_OBS], raw[WK_MAX_OBS], act[WK_MAX_ACT], cmd[WK_MAX_ACT], run[WK_MAX_ACT];
    uint64_t ep = (uint64_t)E->episodes + 1;
    int demo = E->demo_base + E->episodes < (int64_t)E->s->buffer.scripted.episodes;
    int rc = hal_robot_reset(E->robot, ep, &E->obs, err);
    if (rc) return rc;
    int end = 0;
    while (!end) {
        while ((int64_t)E->n >= (E->o->max_unacked > 0 ? E->o->max_unacked : 4096) && !*E->stop) {
            int64_t t0 = cr_now_ns(); /* the learner is behind: wait for ACKs */
            service(E, 20);
            E->paused_ns += cr_now_ns() - t0;
            if (E->refused) return cr_err_set(err, CR_EINVAL, "the learner refused this env worker");
        }
        if (*E->stop) return CR_ECANCELLED;
        scaled(E, obs);
        memcpy(raw, E->obs.vec, sizeof(float) * (size_t)E->od);
        if (E->img_bytes) memcpy(E->img_prev, E->obs.img, E->img_bytes);   /* the step's image, before it moves */
        if (demo) {
            if ((rc = expert_action(E, act, err)) != 0) return rc;
        } else if (E->version == 0) {
            for (int i = 0; i < E->ad; i++) act[i] = 2.0f * nn_rng_uniform(&E->rng) - 1.0f;
        } else if ((rc = pol_algo_act(&E->algo, policy_obs(E, obs), 0, act, err)) != 0) {
            return rc;
        }
        memcpy(run, act, sizeof(float) * (size_t)E->ad);
        for (int i = 0; demo && i < E->ad; i++) run[i] += (float)E->s->buffer.scripted.noise * nn_rng_normal(&E->rng);
        to_robot(E, run, cmd);
        rc = hal_robot_step(E->robot, cmd, &E->obs, err);
        if (rc) return rc;
        float r = reward_of(E, raw, cmd, err, &rc);
        if (rc) return rc;
        end = E->obs.terminated || E->obs.truncated;
        wk_step_t st = {.producer = E->producer, .seq = E->next_seq, .episode = ep, .policy_version = E->version,
                        .reward = r, .done = (uint8_t)E->obs.terminated, .obs_dim = E->od + E->ctx, .act_dim = E->ad,
                        .obs = obs, .action = act, .demo = (uint8_t)demo, .img_bytes = (uint32_t)E->img_bytes,
                        .image = E->img_prev};
        if ((rc = enqueue(E, &st, err)) != 0) return rc;
        E->steps++;
        poll_ctl(E, 0);
        maybe_status(E);
    }
    scaled(E, obs);
    wk_step_t fin = {.producer = E->producer, .seq = E->next_seq, .episode = ep, .policy_version = E->version,
                     .final = 1, .done = (uint8_t)E->obs.terminated, .success = (uint8_t)E->obs.success,
                     .truncated = (uint8_t)(E->obs.truncated && !E->obs.terminated), .obs_dim = E->od + E->ctx,
                     .obs = obs, .demo = (uint8_t)demo, .img_bytes = (uint32_t)E->img_bytes, .image = E->obs.img};
    if ((rc = enqueue(E, &fin, err)) != 0) return rc;
    E->episodes++;
    E->recent[E->recent_at] = (uint8_t)E->obs.success;
    E->recent_at = (E->recent_at + 1) % RECENT;
    if (E->n_recent < RECENT) E->n_recent++;
    return 0;
}

/* Deterministic episodes on fresh seeds; nothing goes to the buffer. */
static int evaluate(env_t *E, uint64_t round, cr_err_t *err)
{
    float obs[WK_MAX_OBS], act[WK_MAX_ACT], cmd[WK_MAX_ACT];
    int eps = E->s->stop.eval_episodes, ok = 0;
    double ret = 0;
    for (int k = 0; k < eps && !*E->stop; k++) {
        uint64_t seed = 1000000000ULL + round * 100003ULL + (uint64_t)k;
        int rc = hal_robot_reset(E->robot, seed, &E->obs, err);
        if (rc) return rc;
        int end = 0;
        while (!end) {
            float raw[WK_MAX_OBS];
            memcpy(raw, E->obs.vec, sizeof(float) * (size_t)E->od);
            scaled(E, obs);
            if ((rc = pol_algo_act(&E->algo, policy_obs(E, obs), 1, act, err)) != 0) return rc;
            to_robot(E, act, cmd);
            if ((rc = hal_robot_step(E->robot, cmd, &E->obs, err)) != 0) return rc;
            ret += reward_of(E, raw, cmd, err, &rc);
            if (rc) return rc;
            end = E->obs.terminated || E->obs.truncated;
        }
        ok += E->obs.success;
        service(E, 0);
    }
    if (*E->stop) return CR_ECANCELLED;
    E->eval_round = round;
    E->eval_rate = (double)ok / eps;
    CR_INFO(TAG, "evaluation %" PRIu64 " (policy %" PRId64 "): %d/%d episodes succeeded", round, E->version, ok,
            eps);
    wk_eval_t ev = {.producer = E->producer, .round = round, .version = E->version, .episodes = (uint32_t)eps,
                    .successes = (uint32_t)ok, .mean_return = ret / eps};
    size_t n = wk_eval_encode(&ev, E->msgbuf, sizeof E->msgbuf);
    cr_err_t e = {0};
    if (E->tx && ch_put(E->tx, E->msgbuf, n, 1.0, 200, &e) != 0)
        CR_WARN(TAG, "evaluation %" PRIu64 " not reported: %s", round, e.msg);
    return 0;
}

/* Synchronous mode: wait until everything sent is committed, the learner has
 * trained on it (utd updates per env step past the warm-up) and weights of that
 * training arrived. */
static void sync_barrier(env_t *E)
{
    const exp_algorithm_t *a = &E->s->algorithm;
    int64_t t0 = cr_now_ns();
    for (;;) {
        if (*E->stop || E->done || E->refused) break;
        int64_t want = (int64_t)(a->utd * (double)(E->learner_steps - a->warmup_steps));
        if (E->n == 0 && E->learner_steps >= a->warmup_steps && E->learner_updates >= want) {
            if (want <= E->sync_want) break; /* no new training since the last round */
            if (E->learner_version > E->version) { /* published after that training */
                cr_err_t e = {0};
                if (ch_wsync_sub_wait(E->sub, (uint64_t)E->learner_version, 20, &e) == 0) {
                    E->sync_want = want;
                    break;
                }
            }
        }
        if (E->n == 0 && E->learner_steps < a->warmup_steps) break; /* warm-up: collect on */
        service(E, 5);
    }
    E->paused_ns += cr_now_ns() - t0;
}

/* The safe point between episodes: newest weights, staleness bound, evaluation. */
static int boundary(env_t *E, cr_err_t *err)
{
    service(E, 0);
    /* Start an episode only once the previous one is (nearly) committed: a learner
     * held back by its rate limiter then slows collection here, at the safe point,
     * instead of letting old transitions pile up (their data would be stale). */
    int64_t soft = E->desc->episode_steps > 0 ? E->desc->episode_steps + 1 : 64;
    int64_t hard = E->o->max_unacked > 0 ? E->o->max_unacked : 4096;
    if (soft > hard) soft = hard;
    int64_t t0 = cr_now_ns();
    while (!*E->stop && !E->done && !E->refused && (int64_t)E->n > soft) service(E, 10);
    if (E->o->sync) sync_barrier(E);
    take_weights(E);
    int64_t max_lag = E->s->algorithm.max_staleness;
    while (!*E->stop && !E->done && E->learner_version - E->version > max_lag) {
        cr_err_t e = {0};
        ch_wsync_sub_wait(E->sub, (uint64_t)E->learner_version - (uint64_t)max_lag, 20, &e);
        take_weights(E);
        service(E, 0);
    }
    E->paused_ns += cr_now_ns() - t0;
    uint64_t round = (uint64_t)(E->learner_updates / E->s->stop.eval_every_updates);
    if (E->version > 0 && round > E->eval_round) return evaluate(E, round, err);
    return 0;
}

/* Each goal's instruction, tokenized once: every one must fit the context. */
static int open_instruction(env_t *E, cr_err_t *err)
{
    const char *tmpl = E->s->task.instruction;
    if (!tmpl || !tmpl[0]) return 0;
    const hal_robot_desc_t *d = E->desc;
    if (d->n_goals < 1)
        return cr_err_set(err, CR_EINVAL, "task.instruction: robot %s (%s) has no named targets to instruct",
                          d->name, d->model);
    E->ctx = (int)E->s->task.instruction_tokens;
    if (E->od + E->ctx > WK_MAX_OBS)
        return cr_err_set(err, CR_EINVAL, "task.instruction_tokens %d: with %d observation floats more than %d",
                          E->ctx, E->od, WK_MAX_OBS);
    E->ids = calloc((size_t)d->n_goals * E->ctx, sizeof(float));
    if (!E->ids) return cr_err_set(err, CR_ENOMEM, "out of memory");
    for (int g = 0; g < d->n_goals; g++) {
        char text[1024];
        const char *at = strstr(tmpl, "{goal}");
        if (!at) return cr_err_set(err, CR_EINVAL, "task.instruction '%s' has no {goal}", tmpl);
        snprintf(text, sizeof text, "%.*s%s%s", (int)(at - tmpl), tmpl, d->goals[g], at + 6);
        int rc = pol_instruction_tokens(text, E->ids + (size_t)g * E->ctx, E->ctx, err);
        if (rc) return cr_err_wrap(err, "task.instruction for goal %s ('%s', task.instruction_tokens %d)",
                                   d->goals[g], text, E->ctx);
    }
    return 0;
}

/* ---- set-up and the run ----------------------------------------------------------- */

static int setup(env_t *E, cr_err_t *err)
{
    const agent_worker_opts_t *o = E->o;
    char p[4200];
    snprintf(p, sizeof p, "%s/status", o->dir);
    int rc = wk_mkdirs(p, err);
    if (rc) return rc;
    if (!o->robot_name || !o->robot_driver)
        return cr_err_set(err, CR_EINVAL, "the env role needs --robot NAME:DRIVER[:MODEL]");
    if ((rc = open_robot(E, err)) != 0) return rc;
    if ((rc = open_reward(E, err)) != 0) return rc;
    if ((rc = open_instruction(E, err)) != 0) return rc;
    E->pdim = (int)(E->img_bytes + (size_t)E->od + (size_t)E->ctx);
    E->stepcap = 256 + sizeof(float) * ((size_t)E->od + E->ctx + WK_MAX_ACT) + E->img_bytes;
    E->pobs = malloc(sizeof(float) * (size_t)E->pdim);
    E->stepbuf = malloc(E->stepcap);
    E->img_prev = malloc(E->img_bytes + 1);
    if (!E->pobs || !E->stepbuf || !E->img_prev) return cr_err_set(err, CR_ENOMEM, "out of memory");
    uint64_t seed = (uint64_t)E->s->seed + 1000ULL * (uint64_t)(o->index + 1);
    if ((rc = wk_algo_cfg_make(E->s, seed, &E->acfg, err)) != 0) return rc;
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = E->pdim, .act_dim = E->ad, .img_c = E->img_c,
                          .img_h = E->img_h, .img_w = E->img_w};
    rc = pol_algo_create(&E->algo, E->acfg.plugin.desc, E->acfg.kv, E->acfg.nkv, &spec, err);
    if (rc) return cr_err_wrap(err, "algorithm %s", E->s->algorithm.type);
    E->have_algo = 1;
    nn_rng_seed(&E->rng, seed ^ 0x9e3779b97f4a7c15ULL);
    ch_hub_opts_t ho;
    rpc_opts_t rpc;
    char lbuf[WK_STR_MAX];
    if ((rc = wk_hub_opts(o, NULL, &ho, &rpc, lbuf, sizeof lbuf, err)) != 0) return rc;
    if ((rc = ch_hub_create(&ho, &E->hub, err)) != 0) return rc;
    ch_where_t me;
    ch_hub_where(E->hub, &me);
    /* Where the learner's acknowledgements and weights come in, for the log. */
    if (me.inbound) CR_INFO(TAG, "node %s: the learner's traffic comes by the direct route at %s", me.node, me.addr);
    else if (ho.relay) CR_INFO(TAG, "node %s accepts no inbound connection: the learner's traffic comes by the tunnel "
                               "route through the relay at %s", me.node, ho.relay);
    ch_opts_t co = {.capacity = 1024};
    if ((rc = ch_channel_create(E->hub, "ctl", &co, &E->ctl, err)) != 0) return rc;
    if ((rc = ch_channel_create(E->hub, "weights", &co, &E->weights, err)) != 0) return rc;
    if ((rc = ch_wsync_sub_create(E->weights, &E->sub, err)) != 0) return rc;
    if (o->learner) {
        if ((rc = wk_where_parse(o->learner, &E->flag_learner, err)) != 0) return rc;
        E->fixed_learner = 1;
    }
    E->producer = cr_id_new() & INT64_MAX; /* SQLite stores it as a signed integer */
    if (!E->producer) E->producer = 1;
    E->next_seq = 1;
    return 0;
}

static void teardown(env_t *E)
{
    if (E->tx) ch_producer_close(E->tx);
    if (E->sub) ch_wsync_sub_destroy(E->sub);
    if (E->ctl) ch_channel_destroy(E->ctl);
    if (E->weights) ch_channel_destroy(E->weights);
    if (E->hub) ch_hub_destroy(E->hub);
    for (size_t i = 0; i < E->n; i++) free(pend_at(E, i)->data);
    free(E->q);
    if (E->have_algo) pol_algo_destroy(&E->algo);
    wk_algo_cfg_free(&E->acfg);
    if (E->rself) E->rplug.desc->reward->destroy(E->rself);
    if (E->rplug.dl) pol_plugin_close(&E->rplug);
    if (E->obs.vec) hal_obs_free(&E->obs);
    if (E->robot) hal_robot_close(E->robot);
    free(E->ids);
    free(E->pobs);
    free(E->stepbuf);
    free(E->img_prev);
}

int wk_env_run(const agent_worker_opts_t *o, const exp_spec_t *s, volatile sig_atomic_t *stop, cr_err_t *err)
{
    env_t *E = calloc(1, sizeof *E);
    if (!E) return cr_err_set(err, CR_ENOMEM, "out of memory");
    E->o = o;
    E->s = s;
    E->stop = stop;
    E->eval_rate = -1;
    E->started_ns = cr_now_ns();
    int rc = setup(E, err);
    if (rc == 0) {
        CR_INFO(TAG, "env %d: robot %s (%s %s), producer %" PRIu64 "; waiting for the learner", o->index,
                E->desc->name, o->robot_driver, o->robot_model ? o->robot_model : "", E->producer);
        while (!*stop && !E->tx) { /* the first learner */
            check_learner(E, 1);
            if (!E->tx) cr_sleep_ns(100 * CR_NS_PER_MS);
        }
        /* its first ACK says which scripted demonstrations are recorded already */
        while (!*stop && s->buffer.scripted.episodes > 0 && !E->heard && !E->refused) service(E, 50);
        E->started_ns = cr_now_ns();
    }
    while (rc == 0 && !*stop && !E->done && !E->refused) {
        rc = boundary(E, err);
        if (rc == 0 && !*stop && !E->done) rc = run_episode(E, err);
    }
    if (rc == CR_ECANCELLED) rc = 0;
    if (rc == 0 && E->refused) rc = cr_err_set(err, CR_EINVAL, "the learner refused this env worker (see its log)");
    if (E->hub) { /* a last chance for ACKs of what is pending */
        int64_t until = cr_now_ns() + CR_NS_PER_S;
        while (E->n && E->tx && cr_now_ns() < until) {
            pump(E);
            poll_ctl(E, 50);
        }
        write_status(E, rc ? "failed" : E->done ? "done" : "stopped");
    }
    if (E->done) CR_INFO(TAG, "env %d: the experiment is done", o->index);
    teardown(E);
    free(E);
    return rc;
}
