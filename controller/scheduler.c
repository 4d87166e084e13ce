/* scheduler.c - gang placement of an experiment's workers and its repair after a
 * node is lost; see scheduler.h for the rules.
 *
 * The order of decisions is fixed and is what makes refusals specific: robots
 * first (a robot is the scarcest thing in a lab and the one a user names), then
 * the learner's node and GPUs (whole GPUs, the next scarcest), then actors, which
 * always fit somewhere because the robot node's CPU is the last resort (where the
 * actor then runs inside its env's process). The buffer's slot always follows the
 * learner's: the buffer lives in the learner's process. Each step
 * reads the inventory plus what earlier steps took (gpu_taken), never the result
 * of a later step, so a refusal names the first resource that could not be had. */
#include "controller/scheduler.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ctl_role_name(ctl_role_t r)
{
    switch (r) {
    case CTL_ROLE_ENV: return "env";
    case CTL_ROLE_ACTOR: return "actor";
    case CTL_ROLE_LEARNER: return "learner";
    case CTL_ROLE_BUFFER: return "buffer";
    }
    return "unknown";
}

int ctl_role_parse(const char *s)
{
    for (int r = CTL_ROLE_ENV; r <= CTL_ROLE_BUFFER; r++)
        if (s && strcmp(s, ctl_role_name((ctl_role_t)r)) == 0) return r;
    return -1;
}

void ctl_placement_free(ctl_placement_t *p)
{
    if (!p) return;
    free(p->slots);
    free(p);
}

/* ---- inventory lookups -------------------------------------------------------- */

typedef struct ctx {
    const ctl_inventory_t *inv;
    const ctl_sched_request_t *req;
    char *gpu_taken; /* per inventory GPU: 1 held by this placement's learner */
    char *gpu_used;  /* per inventory GPU: 1 used by this placement's actors */
} ctx_t;

static int streq(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }
static int empty(const char *s) { return !s || !*s; }

static const ctl_inv_node_t *find_node(const ctl_inventory_t *inv, const char *name)
{
    if (empty(name)) return NULL;
    for (size_t i = 0; i < inv->n_nodes; i++)
        if (streq(inv->nodes[i].name, name)) return &inv->nodes[i];
    return NULL;
}

static const ctl_inv_robot_t *find_robot(const ctl_inventory_t *inv, const char *name)
{
    for (size_t i = 0; i < inv->n_robots; i++)
        if (streq(inv->robots[i].name, name)) return &inv->robots[i];
    return NULL;
}

static int node_ready(const ctl_inventory_t *inv, const char *name)
{
    const ctl_inv_node_t *n = find_node(inv, name);
    return n && n->state == CTL_NODE_READY;
}

static int held_by_other(const char *owner, const char *exp)
{
    return !empty(owner) && !streq(owner, exp);
}

/* A GPU this experiment may take: on a ready node, not lost, not held by another. */
static int gpu_usable(const ctx_t *c, size_t i)
{
    const ctl_inv_gpu_t *g = &c->inv->gpus[i];
    if (!node_ready(c->inv, g->node) || held_by_other(g->owner, c->req->experiment)) return 0;
    return g->state == CTL_RES_AVAILABLE ||
           (g->state == CTL_RES_IN_USE && streq(g->owner, c->req->experiment));
}

int ctl_sched_distance(const ctl_inv_node_t *a, const ctl_inv_node_t *b)
{
    if (!a || !b) return 3;
    if (streq(a->name, b->name)) return 0;
    if (!empty(a->site) && streq(a->site, b->site)) return 1;
    if (a->accepts_inbound || b->accepts_inbound) return 2;
    return 3;
}

static void fmt_mem(uint64_t bytes, char out[32])
{
    const uint64_t gib = 1ULL << 30, mib = 1ULL << 20;
    if (bytes >= gib && bytes % gib == 0) snprintf(out, 32, "%" PRIu64 " GiB", bytes / gib);
    else if (bytes >= gib) snprintf(out, 32, "%.1f GiB", (double)bytes / (double)gib);
    else snprintf(out, 32, "%" PRIu64 " MiB", (bytes + mib - 1) / mib);
}

/* Appends ", name" style items to a bounded message buffer. */
static void append(char *buf, size_t cap, const char *fmt, const char *a, const char *b)
{
    size_t len = strlen(buf);
    if (len + 1 >= cap) return;
    snprintf(buf + len, cap - len, fmt, a, b ? b : "");
}

/* ---- robots ------------------------------------------------------------------ */

/* Why robot r cannot serve the experiment, or 0 when it can. */
static int robot_refusal(const ctx_t *c, const ctl_inv_robot_t *r, cr_err_t *err)
{
    const char *exp = c->req->experiment;
    if (held_by_other(r->owner, exp))
        return cr_err_set(err, CR_EBUSY, "robot %s is in use by experiment %s", r->name, r->owner);
    if (r->state == CTL_RES_ESTOPPED)
        return cr_err_set(err, CR_EUNAVAIL,
                          "robot %s is e-stopped; release it with `corral robot estop --release %s`",
                          r->name, r->name);
    if (empty(r->node))
        return cr_err_set(err, CR_EUNAVAIL,
                          "robot %s has no node yet; start the agent of the machine it is attached to",
                          r->name);
    const ctl_inv_node_t *n = find_node(c->inv, r->node);
    if (!n || n->state == CTL_NODE_LOST || r->state == CTL_RES_LOST)
        return cr_err_set(err, CR_EUNAVAIL,
                          "robot %s is lost: its node %s is not connected (start its agent, or choose another robot)",
                          r->name, r->node);
    if (n->state == CTL_NODE_DRAINING || r->state == CTL_RES_DRAINING)
        return cr_err_set(err, CR_EUNAVAIL,
                          "robot %s is on node %s, which is draining (`corral node drain --undo %s` takes work again)",
                          r->name, r->node, r->node);
    if (r->state == CTL_RES_IN_USE && !streq(r->owner, exp))
        return cr_err_set(err, CR_EBUSY, "robot %s is in use", r->name);
    return 0;
}

static int robot_matches(const ctl_sched_request_t *q, const ctl_inv_robot_t *r)
{
    if (!empty(q->robot_driver) && !streq(q->robot_driver, r->driver)) return 0;
    if (!empty(q->robot_model) && !streq(q->robot_model, r->model)) return 0;
    for (size_t i = 0; i < q->n_robot_labels; i++) {
        int has = 0;
        for (size_t j = 0; j < r->n_labels && !has; j++) has = streq(q->robot_labels[i], r->labels[j]);
        if (!has) return 0;
    }
    return 1;
}

static int cmp_robot_name(const void *a, const void *b)
{
    const ctl_inv_robot_t *x = *(const ctl_inv_robot_t *const *)a, *y = *(const ctl_inv_robot_t *const *)b;
    return strcmp(x->name, y->name);
}

static void filter_text(const ctl_sched_request_t *q, char out[256])
{
    out[0] = '\0';
    if (!empty(q->robot_driver)) append(out, 256, "%sdriver=%s", out[0] ? " " : "", q->robot_driver);
    if (!empty(q->robot_model)) append(out, 256, "%smodel=%s", out[0] ? " " : "", q->robot_model);
    for (size_t i = 0; i < q->n_robot_labels; i++)
        append(out, 256, "%slabel=%s", out[0] ? " " : "", q->robot_labels[i]);
    if (!out[0]) snprintf(out, 256, "any driver");
}

/* Fills chosen[0..count) with the robots to use, in name order. */
static int select_robots(const ctx_t *c, const ctl_inv_robot_t **chosen, int *count, cr_err_t *err)
{
    const ctl_sched_request_t *q = c->req;
    if (q->n_robot_names > 0) {
        if (q->robot_count > 0 && (size_t)q->robot_count != q->n_robot_names)
            return cr_err_set(err, CR_EINVAL, "robots.count is %d but %zu robots are named; drop one of the two",
                              q->robot_count, q->n_robot_names);
        for (size_t i = 0; i < q->n_robot_names; i++) {
            for (size_t j = 0; j < i; j++)
                if (streq(q->robot_names[i], q->robot_names[j]))
                    return cr_err_set(err, CR_EINVAL, "robot %s is named twice", q->robot_names[i]);
            const ctl_inv_robot_t *r = find_robot(c->inv, q->robot_names[i]);
            if (!r) {
                char known[256] = "";
                for (size_t k = 0; k < c->inv->n_robots; k++)
                    append(known, sizeof known, "%s%s", known[0] ? ", " : "", c->inv->robots[k].name);
                return cr_err_set(err, CR_ENOENT, "robot %s does not exist (registered: %s)",
                                  q->robot_names[i], known[0] ? known : "none; see `corral robot register`");
            }
            int rc = robot_refusal(c, r, err);
            if (rc != 0) return rc;
            chosen[i] = r;
        }
        *count = (int)q->n_robot_names;
        qsort(chosen, (size_t)*count, sizeof *chosen, cmp_robot_name);
        return 0;
    }
    if (q->robot_count < 1)
        return cr_err_set(err, CR_EINVAL, "robots: name the robots or set count >= 1 (count is %d)",
                          q->robot_count);
    const ctl_inv_robot_t **all = calloc(c->inv->n_robots + 1, sizeof *all);
    if (!all) return cr_err_set(err, CR_ENOMEM, "scheduler");
    size_t nmatch = 0;
    for (size_t i = 0; i < c->inv->n_robots; i++)
        if (robot_matches(q, &c->inv->robots[i])) all[nmatch++] = &c->inv->robots[i];
    qsort(all, nmatch, sizeof *all, cmp_robot_name);
    int nfree = 0, nbusy = 0;
    char busy[256] = "", unavail[256] = "", freelist[256] = "";
    for (size_t i = 0; i < nmatch; i++) {
        cr_err_t why = {0};
        int rc = robot_refusal(c, all[i], &why);
        if (rc == 0) {
            if (nfree < q->robot_count) chosen[nfree] = all[i];
            nfree++;
            append(freelist, sizeof freelist, "%s%s", freelist[0] ? ", " : "", all[i]->name);
        } else if (rc == CR_EBUSY) {
            nbusy++;
            append(busy, sizeof busy, "%s%s", busy[0] ? "; " : "", why.msg);
        } else {
            append(unavail, sizeof unavail, "%s%s", unavail[0] ? "; " : "", why.msg);
        }
    }
    free(all);
    char filt[256];
    filter_text(q, filt);
    if (nmatch == 0)
        return cr_err_set(err, CR_ENOENT, "no robot matches %s; check `corral robot list`", filt);
    if (nfree < q->robot_count) {
        char why[512] = "";
        append(why, sizeof why, "%s%s", busy, busy[0] && unavail[0] ? "; " : "");
        append(why, sizeof why, "%s%s", unavail, NULL);
        return cr_err_set(err, nfree + nbusy >= q->robot_count ? CR_EBUSY : CR_EUNAVAIL,
                          "need %d robots with %s but %d %s free%s%s%s%s%s; lower robots.count or free robots",
                          q->robot_count, filt, nfree, nfree == 1 ? "is" : "are", freelist[0] ? " (" : "",
                          freelist, freelist[0] ? ")" : "", why[0] ? ": " : "", why);
    }
    *count = q->robot_count;
    return 0;
}

/* ---- learner ------------------------------------------------------------------- */

typedef struct gpu_ref {
    size_t i;
    uint64_t mem;
    int index;
} gpu_ref_t;

static int cmp_gpu_fit(const void *a, const void *b)
{
    const gpu_ref_t *x = a, *y = b;
    if (x->mem != y->mem) return x->mem < y->mem ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* GPUs on node that fit the learner and are free for it, best fit first. */
static size_t fitting_gpus(const ctx_t *c, const char *node, gpu_ref_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < c->inv->n_gpus; i++) {
        const ctl_inv_gpu_t *g = &c->inv->gpus[i];
        if (!streq(g->node, node) || !gpu_usable(c, i) || c->gpu_taken[i] || c->gpu_used[i]) continue;
        if (g->mem_bytes < c->req->learner_gpu_mem) continue;
        out[n++] = (gpu_ref_t){i, g->mem_bytes, g->index};
    }
    qsort(out, n, sizeof *out, cmp_gpu_fit);
    return n;
}

static int robots_on(const ctl_inv_robot_t *const *robots, int nrobots, const char *node)
{
    int k = 0;
    for (int i = 0; i < nrobots; i++) k += streq(robots[i]->node, node);
    return k;
}

static int gpus_on(const ctl_inventory_t *inv, const char *node)
{
    int k = 0;
    for (size_t i = 0; i < inv->n_gpus; i++) k += streq(inv->gpus[i].node, node);
    return k;
}

/* Whether node a is a better learner home than b (a, b both feasible). */
static int better_learner_node(const ctx_t *c, const ctl_inv_node_t *a, size_t fit_a,
                               const ctl_inv_node_t *b, size_t fit_b,
                               const ctl_inv_robot_t *const *robots, int nrobots)
{
    if (a->accepts_inbound != b->accepts_inbound) return a->accepts_inbound;
    int ra = robots_on(robots, nrobots, a->name), rb = robots_on(robots, nrobots, b->name);
    if (ra != rb) return ra > rb;
    if (c->req->learner_gpus > 0) {
        if (fit_a != fit_b) return fit_a < fit_b; /* best fit: leave big nodes whole */
    } else {
        int ga = gpus_on(c->inv, a->name), gb = gpus_on(c->inv, b->name);
        if (ga != gb) return ga < gb; /* a CPU learner keeps off GPU nodes */
    }
    return strcmp(a->name, b->name) < 0;
}

/* Chooses the learner's node and GPUs; marks them taken. */
static int place_learner(ctx_t *c, const ctl_inv_robot_t *const *robots, int nrobots,
                         ctl_slot_t *learner, cr_err_t *err)
{
    const ctl_sched_request_t *q = c->req;
    gpu_ref_t *refs = calloc(c->inv->n_gpus + 1, sizeof *refs);
    gpu_ref_t *best_refs = calloc(c->inv->n_gpus + 1, sizeof *best_refs);
    if (!refs || !best_refs) {
        free(refs);
        free(best_refs);
        return cr_err_set(err, CR_ENOMEM, "scheduler");
    }
    const ctl_inv_node_t *best = NULL, *most = NULL;
    size_t best_fit = 0, most_fit = 0;
    int rc = 0;
    for (size_t i = 0; i < c->inv->n_nodes; i++) {
        const ctl_inv_node_t *n = &c->inv->nodes[i];
        if (n->state != CTL_NODE_READY) continue;
        if (!empty(q->learner_node) && !streq(n->name, q->learner_node)) continue;
        size_t fit = fitting_gpus(c, n->name, refs);
        if (!most || fit > most_fit || (fit == most_fit && strcmp(n->name, most->name) < 0)) {
            most = n;
            most_fit = fit;
        }
        if (fit < (size_t)q->learner_gpus) continue;
        if (!best || better_learner_node(c, n, fit, best, best_fit, robots, nrobots)) {
            best = n;
            best_fit = fit;
            memcpy(best_refs, refs, fit * sizeof *refs);
        }
    }
    if (!best) {
        char mem[32] = "";
        if (q->learner_gpu_mem) fmt_mem(q->learner_gpu_mem, mem);
        const ctl_inv_node_t *hint = find_node(c->inv, q->learner_node);
        if (!empty(q->learner_node) && !hint)
            rc = cr_err_set(err, CR_ENOENT, "placement.learner_node %s does not exist; check `corral node list`",
                            q->learner_node);
        else if (hint && hint->state != CTL_NODE_READY)
            rc = cr_err_set(err, CR_EUNAVAIL, "placement.learner_node %s is %s; choose another node or drop the hint",
                            hint->name, hint->state == CTL_NODE_LOST ? "lost" : "draining");
        else if (q->learner_gpus == 0)
            rc = cr_err_set(err, CR_EUNAVAIL, "no node is ready to run the learner; start an agent");
        else if (hint)
            rc = cr_err_set(err, CR_EUNAVAIL,
                            "placement.learner_node %s has %zu free GPUs%s%s, the learner needs %d; lower learner.gpus or drop the hint",
                            hint->name, most_fit, mem[0] ? " with >= " : "", mem, q->learner_gpus);
        else {
            /* How many fitting GPUs other experiments hold, to say who to ask. */
            int held = 0;
            char holders[160] = "";
            for (size_t i = 0; i < c->inv->n_gpus; i++) {
                const ctl_inv_gpu_t *g = &c->inv->gpus[i];
                if (g->mem_bytes < q->learner_gpu_mem || !held_by_other(g->owner, q->experiment)) continue;
                held++;
                if (!strstr(holders, g->owner))
                    append(holders, sizeof holders, "%s%s", holders[0] ? ", " : "", g->owner);
            }
            char tail[256] = "";
            if (held) snprintf(tail, sizeof tail, "; %d more in use by %s", held, holders);
            rc = cr_err_set(err, CR_EUNAVAIL,
                            "no node has %d free GPUs%s%s; the most on one node: %s with %zu%s (lower learner.gpus%s)",
                            q->learner_gpus, mem[0] ? " with >= " : "", mem,
                            most && most_fit ? most->name : "none", most && most_fit ? most_fit : 0, tail,
                            mem[0] ? " or learner.gpu_memory" : "");
        }
    } else {
        learner->role = CTL_ROLE_LEARNER;
        snprintf(learner->node, sizeof learner->node, "%s", best->name);
        learner->n_gpus = q->learner_gpus;
        for (int k = 0; k < q->learner_gpus; k++) {
            learner->gpus[k] = best_refs[k].index;
            c->gpu_taken[best_refs[k].i] = 1;
        }
    }
    free(refs);
    free(best_refs);
    return rc;
}

/* ---- actors -------------------------------------------------------------------- */

/* The actor serving a robot on node robot_node: nearest usable GPU or the CPU. */
static void place_actor(ctx_t *c, const char *robot_node, ctl_slot_t *slot)
{
    const ctl_inv_node_t *home = find_node(c->inv, robot_node);
    snprintf(slot->node, sizeof slot->node, "%s", robot_node);
    slot->n_gpus = 0;
    if (c->req->actor_cpu) return;
    long best = -1;
    int best_d = 4, best_ours = 0;
    for (size_t i = 0; i < c->inv->n_gpus; i++) {
        if (!gpu_usable(c, i)) continue;
        const ctl_inv_gpu_t *g = &c->inv->gpus[i];
        int d = ctl_sched_distance(home, find_node(c->inv, g->node));
        /* Prefer GPUs this experiment already uses: actors pack, other GPUs stay free. */
        int ours = c->gpu_taken[i] || c->gpu_used[i] || streq(g->owner, c->req->experiment);
        int better = best < 0 || d < best_d || (d == best_d && ours > best_ours);
        if (!better && d == best_d && ours == best_ours) {
            const ctl_inv_gpu_t *b = &c->inv->gpus[best];
            int cmp = strcmp(g->node, b->node);
            better = cmp < 0 || (cmp == 0 && g->index < b->index);
        }
        if (better) {
            best = (long)i;
            best_d = d;
            best_ours = ours;
        }
    }
    if (best < 0) return; /* the robot node's CPU */
    c->gpu_used[best] = 1;
    snprintf(slot->node, sizeof slot->node, "%s", c->inv->gpus[best].node);
    slot->n_gpus = 1;
    slot->gpus[0] = c->inv->gpus[best].index;
}

/* ---- entry points -------------------------------------------------------------- */

static int check_request(const ctl_sched_request_t *q, cr_err_t *err)
{
    if (!q || empty(q->experiment)) return cr_err_set(err, CR_EINVAL, "the request names no experiment");
    if (q->learner_gpus < 0 || q->learner_gpus > CTL_SLOT_MAX_GPUS)
        return cr_err_set(err, CR_EINVAL, "learner.gpus is %d; it must be 0 (CPU) to %d", q->learner_gpus,
                          CTL_SLOT_MAX_GPUS);
    return 0;
}

static int ctx_init(ctx_t *c, const ctl_inventory_t *inv, const ctl_sched_request_t *q, cr_err_t *err)
{
    c->inv = inv;
    c->req = q;
    c->gpu_taken = calloc(inv->n_gpus + 1, 1);
    c->gpu_used = calloc(inv->n_gpus + 1, 1);
    if (!c->gpu_taken || !c->gpu_used) {
        free(c->gpu_taken);
        free(c->gpu_used);
        return cr_err_set(err, CR_ENOMEM, "scheduler");
    }
    return 0;
}

static void ctx_fini(ctx_t *c)
{
    free(c->gpu_taken);
    free(c->gpu_used);
}

int ctl_sched_place(const ctl_inventory_t *inv, const ctl_sched_request_t *req, ctl_placement_t **out,
                    cr_err_t *err)
{
    *out = NULL;
    int rc = check_request(req, err);
    if (rc != 0) return rc;
    ctx_t c;
    if ((rc = ctx_init(&c, inv, req, err)) != 0) return rc;
    size_t cap = (req->n_robot_names > 0 ? req->n_robot_names : (size_t)(req->robot_count > 0 ? req->robot_count : 0)) + 1;
    const ctl_inv_robot_t **robots = calloc(cap, sizeof *robots);
    ctl_placement_t *p = calloc(1, sizeof *p);
    int nrobots = 0;
    ctl_slot_t learner = {0};
    if (!robots || !p) rc = cr_err_set(err, CR_ENOMEM, "scheduler");
    if (rc == 0) rc = select_robots(&c, robots, &nrobots, err);
    if (rc == 0) rc = place_learner(&c, robots, nrobots, &learner, err);
    if (rc == 0) {
        p->n_slots = (size_t)nrobots * 2 + 2;
        p->slots = calloc(p->n_slots, sizeof *p->slots);
        if (!p->slots) rc = cr_err_set(err, CR_ENOMEM, "scheduler");
    }
    if (rc == 0) {
        for (int i = 0; i < nrobots; i++) {
            ctl_slot_t *env = &p->slots[i], *actor = &p->slots[nrobots + i];
            env->role = CTL_ROLE_ENV;
            env->index = i;
            snprintf(env->node, sizeof env->node, "%s", robots[i]->node);
            snprintf(env->robot, sizeof env->robot, "%s", robots[i]->name);
            actor->role = CTL_ROLE_ACTOR;
            actor->index = i;
            snprintf(actor->robot, sizeof actor->robot, "%s", robots[i]->name);
            place_actor(&c, robots[i]->node, actor);
        }
        p->slots[2 * nrobots] = learner;
        ctl_slot_t *buffer = &p->slots[2 * nrobots + 1];
        buffer->role = CTL_ROLE_BUFFER;
        snprintf(buffer->node, sizeof buffer->node, "%s", learner.node);
        *out = p;
        p = NULL;
    }
    ctl_placement_free(p);
    free(robots);
    ctx_fini(&c);
    return rc;
}

int ctl_sched_repair(const ctl_inventory_t *inv, const ctl_sched_request_t *req, const ctl_placement_t *cur,
                     ctl_placement_t **out, int *degraded, cr_err_t *err)
{
    *out = NULL;
    if (degraded) *degraded = 0;
    int rc = check_request(req, err);
    if (rc != 0) return rc;
    ctx_t c;
    if ((rc = ctx_init(&c, inv, req, err)) != 0) return rc;
    ctl_placement_t *p = calloc(1, sizeof *p);
    if (p) p->slots = calloc(cur->n_slots + 1, sizeof *p->slots);
    if (!p || !p->slots) {
        ctl_placement_free(p);
        ctx_fini(&c);
        return cr_err_set(err, CR_ENOMEM, "scheduler");
    }
    p->n_slots = cur->n_slots;
    if (cur->n_slots) memcpy(p->slots, cur->slots, cur->n_slots * sizeof *p->slots);
    /* GPUs of slots that stay count as this placement's, so movers do not take them. */
    for (size_t s = 0; s < p->n_slots; s++) {
        ctl_slot_t *slot = &p->slots[s];
        slot->waiting = slot->moved = 0;
        if (!node_ready(inv, slot->node)) continue;
        for (int k = 0; k < slot->n_gpus; k++)
            for (size_t i = 0; i < inv->n_gpus; i++)
                if (streq(inv->gpus[i].node, slot->node) && inv->gpus[i].index == slot->gpus[k])
                    (slot->role == CTL_ROLE_LEARNER ? c.gpu_taken : c.gpu_used)[i] = 1;
    }
    const ctl_inv_robot_t **robots = calloc(p->n_slots + 1, sizeof *robots);
    int nrobots = 0;
    for (size_t s = 0; robots && s < p->n_slots; s++)
        if (p->slots[s].role == CTL_ROLE_ENV) {
            const ctl_inv_robot_t *r = find_robot(inv, p->slots[s].robot);
            if (r) robots[nrobots++] = r;
        }
    ctl_slot_t *learner = NULL, *buffer = NULL;
    for (size_t s = 0; s < p->n_slots && rc == 0; s++) {
        ctl_slot_t *slot = &p->slots[s];
        if (slot->role == CTL_ROLE_LEARNER) learner = slot;
        if (slot->role == CTL_ROLE_BUFFER) buffer = slot;
        if (node_ready(inv, slot->node)) continue;
        if (slot->role == CTL_ROLE_ENV) {
            slot->waiting = 1;
        } else if (slot->role == CTL_ROLE_ACTOR) {
            const ctl_inv_robot_t *r = find_robot(inv, slot->robot);
            if (!r || !node_ready(inv, r->node)) {
                slot->waiting = 1; /* it has nothing to act for until its robot is back */
            } else {
                place_actor(&c, r->node, slot);
                slot->moved = 1;
            }
        }
    }
    if (learner && !node_ready(inv, learner->node)) {
        if (!req->state_movable) {
            learner->waiting = 1;
            if (buffer) buffer->waiting = 1;
        } else {
            ctl_slot_t moved = {0};
            ctl_sched_request_t q = *req;
            q.learner_node = NULL; /* the hinted node is the one that was lost */
            c.req = &q;
            char lost[CTL_NAME_MAX];
            snprintf(lost, sizeof lost, "%s", learner->node);
            rc = place_learner(&c, robots, nrobots, &moved, err);
            c.req = req;
            if (rc != 0) {
                cr_err_wrap(err, "the learner's node %s is lost and the learner cannot move", lost);
            } else {
                moved.index = learner->index;
                moved.moved = 1;
                *learner = moved;
                if (buffer) {
                    snprintf(buffer->node, sizeof buffer->node, "%s", moved.node);
                    buffer->moved = 1;
                }
            }
        }
    }
    free(robots);
    ctx_fini(&c);
    if (rc != 0) {
        ctl_placement_free(p);
        return rc;
    }
    if (degraded)
        for (size_t s = 0; s < p->n_slots; s++) *degraded |= p->slots[s].waiting;
    *out = p;
    return 0;
}
