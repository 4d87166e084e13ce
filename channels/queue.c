/* queue.c - the consumer side of a channel: a bounded FIFO of messages with
 * back-pressure, a latest-wins mode, batches by count or summed weight, and the
 * (producer, seq) record that drops duplicates.
 *
 * Invariants, under c->mu:
 *   - count + reserved <= capacity (capacity is 1 in latest-wins mode, where
 *     nothing is reserved: a put replaces instead of waiting);
 *   - for each producer, last[producer] is the highest seq ever queued; a message
 *     with seq <= last is a duplicate (a route resending after a reconnect), so it is
 *     acknowledged again but never queued twice;
 *   - refs counts threads inside the channel (server threads delivering, in-process
 *     producers, blocked readers); destroy unregisters, wakes everyone with
 *     closed, waits for refs to reach 0, then frees.
 * Every route ends in push (ch_channel_push and its variants), so these rules hold
 * whatever the route. On a replica, push also hands a local producer's message to
 * the peers (replica.c) and tells the producer's route when every live peer has it
 * (the _acked variants); destroy first leaves the channel directory, so no new
 * replica set reaches a channel being freed. */
#include "channels/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/id.h"
#include "common/time.h"

typedef struct seen {
    uint64_t producer;
    uint64_t last;
} seen_t;

struct ch_channel {
    ch_hub_t *hub;
    char name[CH_NAME_MAX];
    ch_opts_t o;
    pthread_mutex_t mu;
    pthread_cond_t nonempty, nonfull, unref;
    ch_msg_t **slots;
    size_t cap, head, count;
    size_t reserved;     /* slots held by in-process producers writing in place */
    double weight;       /* summed weight of queued messages */
    seen_t *seen;
    size_t nseen, capseen;
    int closed;
    int refs;
    ch_stats_t st;
    void *shm_export;    /* route_shm.c's consumer state, or NULL */
    _Atomic(ch_replica_t *) replica; /* set once by ch_channel_replicate */
    ch_channel_t *next;  /* hub registry */
};

/* Hub registry, in hub.c. */
int ch_hub_register(ch_hub_t *h, ch_channel_t *c, cr_err_t *err);
void ch_hub_unregister(ch_hub_t *h, ch_channel_t *c);
ch_channel_t *ch_hub_lookup_locked(ch_hub_t *h, const char *name);
void ch_hub_lock(ch_hub_t *h);
void ch_hub_unlock(ch_hub_t *h);
ch_channel_t **ch_channel_next_ptr(ch_channel_t *c);
void *ch_shm_export_start(ch_hub_t *h, ch_channel_t *c, cr_err_t *err);
void ch_shm_export_stop(void *x);

ch_channel_t **ch_channel_next_ptr(ch_channel_t *c) { return &c->next; }

ch_msg_t *ch_msg_alloc(size_t len)
{
    ch_msg_t *m = malloc(sizeof *m + (len ? len : 1));
    if (!m) return NULL;
    memset(m, 0, sizeof *m);
    m->len = len;
    m->data = m + 1;
    return m;
}

void ch_msg_free(ch_msg_t *m)
{
    if (!m) return;
    if (m->data != (void *)(m + 1)) ch_shm_view_free(m); /* zero-copy from a ring */
    else free(m);
}

/* Absolute CLOCK_MONOTONIC deadline for a time-out in ms; -1 forever, 0 now. */
static int64_t deadline_of(int64_t timeout_ms)
{
    if (timeout_ms < 0) return -1;
    if (timeout_ms == 0) return 0;
    return cr_now_ns() + timeout_ms * CR_NS_PER_MS;
}

/* Waits on cv until deadline (-1 forever, 0 no wait); ETIMEDOUT when it passed. */
static int wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) return pthread_cond_wait(cv, mu);
    if (deadline_ns == 0 || cr_now_ns() >= deadline_ns) return ETIMEDOUT;
    struct timespec ts = {.tv_sec = deadline_ns / CR_NS_PER_S, .tv_nsec = deadline_ns % CR_NS_PER_S};
    return pthread_cond_timedwait(cv, mu, &ts);
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

int ch_channel_create(ch_hub_t *h, const char *name, const ch_opts_t *o, ch_channel_t **out,
                      cr_err_t *err)
{
    *out = NULL;
    if (!h || !name) return cr_err_set(err, CR_EINVAL, "channel: hub and name are required");
    if (!cr_name_valid(name))
        return cr_err_set(err, CR_EINVAL, "channel name \"%s\" is not valid ([a-z0-9_-], 1..63)", name);
    ch_channel_t *c = calloc(1, sizeof *c);
    if (!c) return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", name);
    c->hub = h;
    snprintf(c->name, sizeof c->name, "%s", name);
    if (o) c->o = *o;
    if (!c->o.capacity) c->o.capacity = CH_DEFAULT_CAPACITY;
    if (!c->o.max_msg_bytes) c->o.max_msg_bytes = CH_DEFAULT_MAX_MSG;
    c->cap = c->o.latest_wins ? 1 : c->o.capacity;
    c->slots = calloc(c->cap, sizeof *c->slots);
    if (!c->slots) {
        free(c);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", name);
    }
    pthread_mutex_init(&c->mu, NULL);
    cond_init_mono(&c->nonempty);
    cond_init_mono(&c->nonfull);
    cond_init_mono(&c->unref);
    int rc = ch_hub_register(h, c, err);
    if (rc == 0 && ch_hub_shm(h)) {
        c->shm_export = ch_shm_export_start(h, c, err);
        if (!c->shm_export) {
            rc = err && err->code ? err->code : CR_EIO;
            ch_hub_unregister(h, c);
        }
    }
    if (rc) {
        free(c->slots);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void ch_channel_destroy(ch_channel_t *c)
{
    if (!c) return;
    if (ch_hub_dir(c->hub)) ch_dirclient_leave(ch_hub_dir(c->hub), c); /* no new set is applied to it */
    ch_replica_t *r = atomic_load(&c->replica);
    if (r) ch_replica_stop(r); /* puts waiting for room to forward give up */
    ch_hub_unregister(c->hub, c);
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    pthread_cond_broadcast(&c->nonempty);
    pthread_cond_broadcast(&c->nonfull);
    pthread_mutex_unlock(&c->mu);
    if (c->shm_export) ch_shm_export_stop(c->shm_export);
    pthread_mutex_lock(&c->mu);
    while (c->refs > 0) pthread_cond_wait(&c->unref, &c->mu);
    pthread_mutex_unlock(&c->mu);
    if (r) ch_replica_destroy(r); /* no put can reach it any more */
    for (size_t i = 0; i < c->count; i++) ch_msg_free(c->slots[(c->head + i) % c->cap]);
    free(c->slots);
    free(c->seen);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->nonempty);
    pthread_cond_destroy(&c->nonfull);
    pthread_cond_destroy(&c->unref);
    free(c);
}

const char *ch_channel_name(const ch_channel_t *c) { return c->name; }
ch_hub_t *ch_channel_hub(const ch_channel_t *c) { return c->hub; }
size_t ch_channel_max_msg(const ch_channel_t *c) { return c->o.max_msg_bytes; }

int ch_channel_find(ch_hub_t *h, const char *name, ch_channel_t **out, cr_err_t *err)
{
    ch_hub_lock(h);
    *out = name ? ch_hub_lookup_locked(h, name) : NULL;
    ch_hub_unlock(h);
    if (!*out)
        return cr_err_set(err, CR_ENOENT, "no channel named \"%s\" on node %s", name ? name : "(null)",
                          ch_hub_node(h));
    return 0;
}

int ch_channel_acquire(ch_hub_t *h, const char *name, ch_channel_t **out, cr_err_t *err)
{
    ch_hub_lock(h);
    ch_channel_t *c = ch_hub_lookup_locked(h, name);
    if (c) {
        pthread_mutex_lock(&c->mu);
        c->refs++;
        pthread_mutex_unlock(&c->mu);
    }
    ch_hub_unlock(h);
    *out = c;
    if (!c) return cr_err_set(err, CR_ENOENT, "no channel named \"%s\" on node %s", name, ch_hub_node(h));
    return 0;
}

void ch_channel_release(ch_channel_t *c)
{
    pthread_mutex_lock(&c->mu);
    if (--c->refs == 0) pthread_cond_broadcast(&c->unref);
    pthread_mutex_unlock(&c->mu);
}

static seen_t *seen_find(ch_channel_t *c, uint64_t producer)
{
    for (size_t i = 0; i < c->nseen; i++)
        if (c->seen[i].producer == producer) return &c->seen[i];
    return NULL;
}

int ch_channel_seen(ch_channel_t *c, uint64_t producer, uint64_t seq)
{
    pthread_mutex_lock(&c->mu);
    seen_t *s = seen_find(c, producer);
    int dup = s && seq <= s->last;
    if (dup) c->st.duplicates++;
    pthread_mutex_unlock(&c->mu);
    return dup;
}

void ch_channel_count_rejected(ch_channel_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->st.rejected++;
    pthread_mutex_unlock(&c->mu);
}

/* Records seq as the producer's newest; -1 when out of memory. */
static int seen_note(ch_channel_t *c, uint64_t producer, uint64_t seq)
{
    seen_t *s = seen_find(c, producer);
    if (s) {
        s->last = seq;
        return 0;
    }
    if (c->nseen == c->capseen) {
        size_t ncap = c->capseen ? 2 * c->capseen : 8;
        seen_t *n = realloc(c->seen, ncap * sizeof *n);
        if (!n) return -1;
        c->seen = n;
        c->capseen = ncap;
    }
    c->seen[c->nseen++] = (seen_t){producer, seq};
    return 0;
}

/* Whether a message can be queued now (a reserved one always can). */
static int has_room(ch_channel_t *c, int reserved)
{
    if (reserved || c->o.latest_wins) return 1;
    return c->count + c->reserved < c->cap;
}

/* Under c->mu: waits until the channel has room, it closes or the deadline passes. */
static int wait_room_locked(ch_channel_t *c, int64_t deadline_ns, cr_err_t *err)
{
    while (!c->closed && !has_room(c, 0))
        if (wait_until(&c->nonfull, &c->mu, deadline_ns) == ETIMEDOUT)
            return cr_err_set(err, CR_ETIMEDOUT, "channel %s is full (%zu messages)", c->name, c->cap);
    if (c->closed) return cr_err_set(err, CR_ECLOSED, "channel %s is closed", c->name);
    return 0;
}

int ch_channel_reserve(ch_channel_t *c, int64_t deadline_ns, cr_err_t *err)
{
    pthread_mutex_lock(&c->mu);
    int rc = wait_room_locked(c, deadline_ns, err);
    if (rc == 0 && !c->o.latest_wins) c->reserved++;
    pthread_mutex_unlock(&c->mu);
    ch_replica_t *r = atomic_load(&c->replica);
    if (rc == 0 && r && (rc = ch_replica_reserve(r, deadline_ns, err)) != 0) {
        pthread_mutex_lock(&c->mu); /* no room to forward: give the slot back */
        if (!c->o.latest_wins && c->reserved) c->reserved--;
        pthread_cond_signal(&c->nonfull);
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

/* Gives back the queue slot of a reservation only (its replica room goes with
 * the ch_replica_commit of the push). */
static void ch_channel_unreserve_slot(ch_channel_t *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->o.latest_wins && c->reserved) {
        c->reserved--;
        pthread_cond_signal(&c->nonfull);
    }
    pthread_mutex_unlock(&c->mu);
}

void ch_channel_unreserve(ch_channel_t *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->o.latest_wins && c->reserved) {
        c->reserved--;
        pthread_cond_signal(&c->nonfull);
    }
    pthread_mutex_unlock(&c->mu);
    ch_replica_t *r = atomic_load(&c->replica);
    if (r) ch_replica_commit(r, NULL);
}

enum { PUSH_RESERVED = 1, PUSH_REMOTE = 2, PUSH_TRY = 4 };

typedef struct ack_cb {
    ch_ack_fn fn;
    void *user;
    uint64_t arg;
} ack_cb_t;

static int push(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, int flags, const ack_cb_t *ack, cr_err_t *err);

int ch_channel_push(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, cr_err_t *err)
{
    return push(c, m, deadline_ns, 0, NULL, err);
}

int ch_channel_push_reserved(ch_channel_t *c, ch_msg_t *m, cr_err_t *err)
{
    return push(c, m, 0, PUSH_RESERVED, NULL, err);
}

int ch_channel_push_acked(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, ch_ack_fn done, void *user,
                          uint64_t arg, cr_err_t *err)
{
    ack_cb_t a = {done, user, arg};
    return push(c, m, deadline_ns, 0, &a, err);
}

int ch_channel_push_reserved_acked(ch_channel_t *c, ch_msg_t *m, ch_ack_fn done, void *user, uint64_t arg,
                                   cr_err_t *err)
{
    ack_cb_t a = {done, user, arg};
    return push(c, m, 0, PUSH_RESERVED, &a, err);
}

int ch_channel_push_remote(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, cr_err_t *err)
{
    return push(c, m, deadline_ns, PUSH_REMOTE, NULL, err);
}

int ch_channel_try_push_remote(ch_channel_t *c, ch_msg_t *m, cr_err_t *err)
{
    return push(c, m, 0, PUSH_REMOTE | PUSH_TRY, NULL, err);
}

int ch_channel_full(ch_channel_t *c)
{
    pthread_mutex_lock(&c->mu);
    int full = !has_room(c, 0);
    pthread_mutex_unlock(&c->mu);
    return full;
}

int ch_channel_wait_room(ch_channel_t *c, int64_t deadline_ns, cr_err_t *err)
{
    pthread_mutex_lock(&c->mu);
    int rc = wait_room_locked(c, deadline_ns, err);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static int queue_msg(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, int flags, cr_err_t *err);

static void ack_now(const ack_cb_t *ack)
{
    if (ack && ack->fn) ack->fn(ack->user, ack->arg);
}

/* A message of this node's producers on a replicated channel is also queued for
 * the other replicas, with room there taken first, so nothing accepted here is
 * missing there; one that came from another node is only queued here. The local
 * producer's acknowledgement (ack) waits for every live peer: its copy's last
 * reference runs it, so a replica that dies right after acknowledging leaves
 * nothing acknowledged that only it had. */
static int push(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, int flags, const ack_cb_t *ack, cr_err_t *err)
{
    ch_replica_t *r = (flags & PUSH_REMOTE) ? NULL : atomic_load(&c->replica);
    if (!r) {
        int rc = queue_msg(c, m, deadline_ns, flags, err);
        ack_now(ack);
        return rc;
    }
    if (!(flags & PUSH_RESERVED)) {
        int rc = ch_replica_reserve(r, deadline_ns, err);
        if (rc) {
            ch_msg_free(m);
            ack_now(ack);
            return rc;
        }
    }
    char node[CH_NAME_MAX];
    size_t limit = ch_replica_limit(r, node, sizeof node);
    if (m->len > limit) { /* refused here, for this message only: no peer would take it */
        size_t len = m->len;
        ch_replica_commit(r, NULL);
        if (flags & PUSH_RESERVED) ch_channel_unreserve_slot(c);
        ch_msg_free(m);
        ch_channel_count_rejected(c);
        ack_now(ack);
        return cr_err_set(err, CR_ETOOBIG, "channel %s: message of %zu bytes is over the limit of %zu of "
                          "the replica on node %s", c->name, len, limit, node);
    }
    ch_fwd_t *f = ch_fwd_new(m);
    if (!f) {
        ch_replica_commit(r, NULL);
        if (flags & PUSH_RESERVED) ch_channel_unreserve_slot(c);
        ch_msg_free(m);
        ack_now(ack);
        return cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", c->name);
    }
    if (ack) {
        f->done = ack->fn;
        f->done_user = ack->user;
        f->done_arg = ack->arg;
    }
    int rc = queue_msg(c, m, deadline_ns, flags, err);
    if (rc == 0) {
        ch_replica_commit(r, f); /* takes f: done runs when the last peer lets go */
    } else {
        ch_replica_commit(r, NULL);
        ch_fwd_unref(f); /* runs done: nothing to wait for */
    }
    return rc;
}

static int queue_msg(ch_channel_t *c, ch_msg_t *m, int64_t deadline_ns, int flags, cr_err_t *err)
{
    int reserved = flags & PUSH_RESERVED;
    if (m->len > c->o.max_msg_bytes) {
        size_t len = m->len;
        ch_msg_free(m);
        if (reserved) ch_channel_unreserve_slot(c);
        ch_channel_count_rejected(c);
        return cr_err_set(err, CR_ETOOBIG, "channel %s: message of %zu bytes is over the limit of %zu",
                          c->name, len, c->o.max_msg_bytes);
    }
    pthread_mutex_lock(&c->mu);
    /* The reserved slot becomes this message's under the same lock, so no other
     * put can take it in between. */
    if (reserved && !c->o.latest_wins && c->reserved) {
        c->reserved--;
        pthread_cond_signal(&c->nonfull); /* in case the message turns out a duplicate */
    }
    int rc = 0;
    for (;;) {
        if (c->closed) {
            rc = cr_err_set(err, CR_ECLOSED, "channel %s is closed", c->name);
            break;
        }
        seen_t *s = seen_find(c, m->producer);
        if (s && m->seq <= s->last) {
            c->st.duplicates++;
            rc = 1;
            break;
        }
        if (c->o.latest_wins && c->count == 1) {
            c->weight -= c->slots[c->head]->weight;
            ch_msg_free(c->slots[c->head]);
            c->count = 0;
            c->st.replaced++;
        }
        if (has_room(c, reserved)) {
            if (seen_note(c, m->producer, m->seq) < 0) {
                rc = cr_err_set(err, CR_ENOMEM, "channel %s: out of memory", c->name);
                break;
            }
            c->slots[(c->head + c->count) % c->cap] = m;
            c->count++;
            c->weight += m->weight;
            c->st.accepted++;
            m = NULL;
            pthread_cond_signal(&c->nonempty);
            break;
        }
        if (flags & PUSH_TRY) { /* the caller keeps m and comes back */
            pthread_mutex_unlock(&c->mu);
            return cr_err_set(err, CR_EBUSY, "channel %s is full (%zu messages)", c->name, c->cap);
        }
        if (wait_until(&c->nonfull, &c->mu, deadline_ns) == ETIMEDOUT) {
            rc = cr_err_set(err, CR_ETIMEDOUT, "channel %s is full (%zu messages)", c->name, c->cap);
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    ch_msg_free(m);
    return rc;
}

static ch_msg_t *take_locked(ch_channel_t *c)
{
    ch_msg_t *m = c->slots[c->head];
    c->slots[c->head] = NULL;
    c->head = (c->head + 1) % c->cap;
    c->count--;
    c->weight -= m->weight;
    if (c->count == 0) c->weight = 0; /* no drift from float sums */
    return m;
}

static int get_batch(ch_channel_t *c, ch_msg_t **out, size_t max_count, double max_weight,
                     int64_t timeout_ms, size_t *n, int views, cr_err_t *err);

int ch_get(ch_channel_t *c, ch_msg_t **out, int64_t timeout_ms, cr_err_t *err)
{
    size_t n;
    return get_batch(c, out, 1, 0, timeout_ms, &n, 0, err);
}

int ch_get_view(ch_channel_t *c, ch_msg_t **out, int64_t timeout_ms, cr_err_t *err)
{
    size_t n;
    return get_batch(c, out, 1, 0, timeout_ms, &n, 1, err);
}

int ch_get_batch(ch_channel_t *c, ch_msg_t **out, size_t max_count, double max_weight,
                 int64_t timeout_ms, size_t *n, cr_err_t *err)
{
    return get_batch(c, out, max_count, max_weight, timeout_ms, n, 0, err);
}

int ch_get_batch_view(ch_channel_t *c, ch_msg_t **out, size_t max_count, double max_weight,
                      int64_t timeout_ms, size_t *n, cr_err_t *err)
{
    return get_batch(c, out, max_count, max_weight, timeout_ms, n, 1, err);
}

/* A view into a shared-memory ring as a message of the caller's own: copied, and
 * the view freed so the ring moves on. Out of memory: the view itself, which is
 * still valid, only slower to give back. */
static ch_msg_t *own_copy(ch_msg_t *v)
{
    if (v->data == (void *)(v + 1)) return v;
    ch_msg_t *m = ch_msg_alloc(v->len);
    if (!m) return v;
    m->producer = v->producer;
    m->seq = v->seq;
    m->weight = v->weight;
    memcpy(m->data, v->data, v->len);
    ch_msg_free(v);
    return m;
}

/* Whether the queue already holds a full batch. */
static int batch_ready(ch_channel_t *c, size_t max_count, double max_weight)
{
    if (c->count >= max_count) return 1;
    if (max_weight > 0 && c->weight >= max_weight) return 1;
    return 0;
}

static int get_batch(ch_channel_t *c, ch_msg_t **out, size_t max_count, double max_weight,
                     int64_t timeout_ms, size_t *n, int views, cr_err_t *err)
{
    *n = 0;
    if (max_count == 0) return cr_err_set(err, CR_EINVAL, "channel %s: batch of 0 messages", c->name);
    int64_t deadline = deadline_of(timeout_ms);
    pthread_mutex_lock(&c->mu);
    c->refs++; /* destroy waits for readers it woke to leave */
    /* A batch larger than the queue can hold could never fill: stop at capacity. */
    size_t want = max_count < c->cap ? max_count : c->cap;
    while (!c->closed && !batch_ready(c, want, max_weight)) {
        if (wait_until(&c->nonempty, &c->mu, deadline) == ETIMEDOUT) break;
    }
    double w = 0;
    while (c->count > 0 && *n < max_count) {
        ch_msg_t *next = c->slots[c->head];
        if (max_weight > 0 && *n > 0 && w + next->weight > max_weight) break;
        w += next->weight;
        out[(*n)++] = take_locked(c);
    }
    int closed = c->closed;
    if (*n) pthread_cond_broadcast(&c->nonfull);
    if (--c->refs == 0) pthread_cond_broadcast(&c->unref);
    pthread_mutex_unlock(&c->mu);
    if (!views)
        for (size_t i = 0; i < *n; i++) out[i] = own_copy(out[i]);
    if (*n) return 0;
    if (closed) return cr_err_set(err, CR_ECLOSED, "channel %s is closed", c->name);
    return cr_err_set(err, CR_ETIMEDOUT, "channel %s: nothing to get within %lld ms", c->name,
                      (long long)timeout_ms);
}

void ch_channel_stats(ch_channel_t *c, ch_stats_t *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    out->queued = c->count;
    pthread_mutex_unlock(&c->mu);
}

int ch_channel_replicate(ch_channel_t *c, const ch_where_t *replicas, size_t n, const ch_replica_opts_t *o,
                         cr_err_t *err)
{
    ch_replica_t *r = atomic_load(&c->replica);
    if (!r) {
        int rc = ch_replica_create(c, c->hub, &r, err);
        if (rc) return rc;
        ch_replica_t *none = NULL;
        if (!atomic_compare_exchange_strong(&c->replica, &none, r)) { /* another caller won */
            ch_replica_destroy(r);
            r = none;
        }
    }
    return ch_replica_set(r, replicas, n, o, err);
}

size_t ch_channel_replica_stats(ch_channel_t *c, ch_replica_peer_stats_t *out, size_t max)
{
    ch_replica_t *r = atomic_load(&c->replica);
    return r ? ch_replica_stats(r, out, max) : 0;
}

int ch_channel_replica_flush(ch_channel_t *c, int64_t timeout_ms, cr_err_t *err)
{
    ch_replica_t *r = atomic_load(&c->replica);
    return r ? ch_replica_flush(r, deadline_of(timeout_ms), err) : 0;
}
