/* scheduler.h - where the workers of an experiment run: a pure function from the
 * cluster's inventory and an experiment's resource request to a gang placement,
 * or to a refusal that says what to change.
 *
 * Pure: no I/O, no clock, no globals; the same inputs give the same placement
 * (ties break by name), so the controller can call it under its registry lock,
 * tests can enumerate cases, and a re-run after a restart reproduces a decision.
 *
 * A placement has one slot per role instance (env, actor and, per experiment,
 * learner and buffer); slots are places, not processes. The processes are one
 * env worker per robot, with the actor inside it when the actor's slot is on the
 * robot's node, and one learner worker with the buffer inside it (expctl.c's
 * host_slot decides; hosted slots report their host's state).
 *
 * Placement rules (DESIGN.md "Scheduling"):
 *   - a robot serves at most one experiment: robots held by another experiment,
 *     lost, e-stopped or on a draining node are refused with who holds them;
 *   - one env worker per robot, pinned to the robot's node;
 *   - the learner and the buffer share one node that has `learner_gpus` GPUs free
 *     with at least `learner_gpu_mem` bytes each (0 GPUs: a CPU learner); GPUs are
 *     taken whole and best-fit (smallest sufficient memory first);
 *   - one actor per robot: on a GPU of the robot's node if it has one, else on the
 *     nearest usable GPU (same node < same site < reachable directly < tunnelled),
 *     else on the robot node's CPU; `actor_cpu` forces the CPU. Actors of one
 *     experiment may share a GPU with each other and with their own learner; a GPU
 *     an actor uses belongs to that experiment while it runs;
 *   - gang: either every worker is placed, or nothing is and the refusal names
 *     the first resource that could not be had.
 * Resources already held by the requesting experiment (a resume, a re-placement)
 * count as free for it.
 *
 * Ownership: the inventory and request are borrowed for the call; a placement is
 * allocated by the scheduler and freed with ctl_placement_free. */
#ifndef CORRAL_CONTROLLER_SCHEDULER_H
#define CORRAL_CONTROLLER_SCHEDULER_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

/* The values of corral.v1.NodeState / ResourceState, so the registry's messages
 * convert by assignment. */
typedef enum ctl_node_state {
    CTL_NODE_READY = 1,
    CTL_NODE_LOST = 2,
    CTL_NODE_DRAINING = 3,
} ctl_node_state_t;

typedef enum ctl_res_state {
    CTL_RES_AVAILABLE = 1,
    CTL_RES_IN_USE = 2,   /* owner names the experiment */
    CTL_RES_LOST = 3,
    CTL_RES_ESTOPPED = 4,
    CTL_RES_DRAINING = 5,
} ctl_res_state_t;

typedef struct ctl_inv_node {
    const char *name;
    ctl_node_state_t state;
    int accepts_inbound;
    const char *site;          /* topology: nodes of one non-empty site are near; may be NULL */
} ctl_inv_node_t;

typedef struct ctl_inv_gpu {
    const char *node;
    int index;
    uint64_t mem_bytes;
    ctl_res_state_t state;
    const char *owner;         /* experiment holding it, or NULL */
} ctl_inv_gpu_t;

typedef struct ctl_inv_robot {
    const char *name;
    const char *node;          /* "" or NULL until a node claims it */
    const char *driver, *model;
    const char *const *labels; /* n_labels strings */
    size_t n_labels;
    ctl_res_state_t state;
    const char *owner;         /* experiment holding it, or NULL */
} ctl_inv_robot_t;

typedef struct ctl_inventory {
    const ctl_inv_node_t *nodes;
    size_t n_nodes;
    const ctl_inv_gpu_t *gpus;
    size_t n_gpus;
    const ctl_inv_robot_t *robots;
    size_t n_robots;
} ctl_inventory_t;

/* What an experiment asks for. Robots: either by name (names, count ignored or
 * equal to n_names), or by filter (driver, model, every label; NULL or empty
 * matches anything) taking `robot_count` of the matches. */
typedef struct ctl_sched_request {
    const char *experiment;
    const char *const *robot_names;
    size_t n_robot_names;
    const char *robot_driver, *robot_model;
    const char *const *robot_labels;
    size_t n_robot_labels;
    int robot_count;            /* >= 1 when selecting by filter */
    int learner_gpus;           /* 0: CPU learner */
    uint64_t learner_gpu_mem;   /* minimum bytes per learner GPU; 0: any */
    const char *learner_node;   /* placement hint: this node or refuse; NULL: any */
    int actor_cpu;              /* actors on the robot node's CPU, never a GPU */
    int state_movable;          /* learner/buffer state is on shared storage: they may move
                                 * when their node is lost (else they wait for it) */
} ctl_sched_request_t;

typedef enum ctl_role {
    CTL_ROLE_ENV = 0,
    CTL_ROLE_ACTOR,
    CTL_ROLE_LEARNER,
    CTL_ROLE_BUFFER,
} ctl_role_t;

/* "env", "actor", "learner", "buffer"; ctl_role_parse returns -1 when unknown. */
const char *ctl_role_name(ctl_role_t r);
int ctl_role_parse(const char *s);

#define CTL_SLOT_MAX_GPUS 16
#define CTL_NAME_MAX 64

/* One role instance's place (a worker process, or a role hosted in one: see
 * above). gpus[] are indices on `node`; n_gpus 0 means the CPU. */
typedef struct ctl_slot {
    ctl_role_t role;
    int index;                     /* per role: env/actor i serve robot i */
    char node[CTL_NAME_MAX];
    char robot[CTL_NAME_MAX];      /* env and actor: the robot served; "" otherwise */
    int n_gpus;
    int gpus[CTL_SLOT_MAX_GPUS];
    int waiting;                   /* its node is not ready and it cannot move (repair) */
    int moved;                     /* repair placed it on a new node */
} ctl_slot_t;

typedef struct ctl_placement {
    ctl_slot_t *slots;             /* envs, actors (by index), then learner, buffer */
    size_t n_slots;
} ctl_placement_t;

void ctl_placement_free(ctl_placement_t *p);

/* The gang placement for req, or a refusal: CR_EINVAL (malformed request),
 * CR_ENOENT (a named robot or the hinted node does not exist), CR_EBUSY (held by
 * another experiment), CR_EUNAVAIL (lost, e-stopped, draining, not enough
 * matching robots or GPUs). err's message says what to change, e.g.
 *   robot arm-3 is in use by experiment pick-1
 *   no node has 2 free GPUs with >= 40 GiB; the most on one node: gpu-1 with 1
 * On success *out is owned by the caller. */
int ctl_sched_place(const ctl_inventory_t *inv, const ctl_sched_request_t *req,
                    ctl_placement_t **out, cr_err_t *err);

/* Repairs a placement after nodes were lost or came back. Slots whose node is
 * ready stay where they are. Others: env slots wait for their robot's node; an
 * actor whose robot's node is lost waits with it; an actor serving a robot on a
 * ready node is re-placed by the actor rule; learner and buffer move together to
 * a node chosen by the learner rule when req->state_movable, else wait. Moved
 * slots have `moved` set; waiting ones `waiting`. *degraded (may be NULL) is 1
 * when any slot waits. CR_EUNAVAIL when a slot must move and cannot (the message
 * says why); *out is then NULL. */
int ctl_sched_repair(const ctl_inventory_t *inv, const ctl_sched_request_t *req,
                     const ctl_placement_t *cur, ctl_placement_t **out, int *degraded,
                     cr_err_t *err);

/* Distance used for "nearest GPU": 0 same node, 1 same non-empty site, 2 one of
 * the two accepts inbound connections (a direct route), 3 neither (tunnelled). */
int ctl_sched_distance(const ctl_inv_node_t *a, const ctl_inv_node_t *b);

#endif
