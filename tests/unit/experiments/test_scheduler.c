/* test_scheduler.c - the pure placement function: robots, learner GPUs, actor
 * proximity, refusals whose messages say what to change, determinism and repair
 * after a node is lost. It checks slots (places of roles); which slots share a
 * process (an actor on its robot's node inside the env worker, the buffer inside
 * the learner) is expctl's business and tested there. */
#include "tests/harness.h"
#include "controller/scheduler.h"

#include <stdlib.h>

#define GIB (1ULL << 30)

/* A small lab:
 *   robo-a (site lab, robots arm-1 arm-2, one 24 GiB GPU)
 *   robo-b (site lab, robot arm-3, no GPU, behind NAT)
 *   gpu-1  (site lab, 1 x 80 GiB + 1 x 24 GiB)
 *   gpu-2  (site dc, accepts inbound, 4 x 48 GiB)
 *   far    (site dc2, behind NAT, robot arm-9) */
static ctl_inv_node_t nodes[] = {
    {"robo-a", CTL_NODE_READY, 1, "lab"},
    {"robo-b", CTL_NODE_READY, 0, "lab"},
    {"gpu-1", CTL_NODE_READY, 1, "lab"},
    {"gpu-2", CTL_NODE_READY, 1, "dc"},
    {"far", CTL_NODE_READY, 0, "dc2"},
};
static ctl_inv_gpu_t gpus[] = {
    {"robo-a", 0, 24 * GIB, CTL_RES_AVAILABLE, NULL},
    {"gpu-1", 0, 80 * GIB, CTL_RES_AVAILABLE, NULL},
    {"gpu-1", 1, 24 * GIB, CTL_RES_AVAILABLE, NULL},
    {"gpu-2", 0, 48 * GIB, CTL_RES_AVAILABLE, NULL},
    {"gpu-2", 1, 48 * GIB, CTL_RES_AVAILABLE, NULL},
    {"gpu-2", 2, 48 * GIB, CTL_RES_AVAILABLE, NULL},
    {"gpu-2", 3, 48 * GIB, CTL_RES_AVAILABLE, NULL},
};
static const char *const table[] = {"table"};
static const char *const table_cam[] = {"table", "camera"};
static ctl_inv_robot_t robots[] = {
    {"arm-1", "robo-a", "mujoco", "reach2d", table_cam, 2, CTL_RES_AVAILABLE, NULL},
    {"arm-2", "robo-a", "mujoco", "reach2d", table, 1, CTL_RES_AVAILABLE, NULL},
    {"arm-3", "robo-b", "mujoco", "reach2d", table_cam, 2, CTL_RES_AVAILABLE, NULL},
    {"arm-9", "far", "dynamixel", "wx250", NULL, 0, CTL_RES_AVAILABLE, NULL},
};

/* A fresh copy of the lab, so tests can change states. */
typedef struct lab {
    ctl_inv_node_t nodes[5];
    ctl_inv_gpu_t gpus[7];
    ctl_inv_robot_t robots[4];
    ctl_inventory_t inv;
} lab_t;

static lab_t *lab_new(void)
{
    lab_t *l = calloc(1, sizeof *l);
    memcpy(l->nodes, nodes, sizeof nodes);
    memcpy(l->gpus, gpus, sizeof gpus);
    memcpy(l->robots, robots, sizeof robots);
    l->inv = (ctl_inventory_t){l->nodes, 5, l->gpus, 7, l->robots, 4};
    return l;
}

static ctl_inv_node_t *node(lab_t *l, const char *name)
{
    for (int i = 0; i < 5; i++)
        if (strcmp(l->nodes[i].name, name) == 0) return &l->nodes[i];
    return NULL;
}

static ctl_inv_robot_t *robot(lab_t *l, const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(l->robots[i].name, name) == 0) return &l->robots[i];
    return NULL;
}

static const ctl_slot_t *slot(const ctl_placement_t *p, ctl_role_t role, int index)
{
    for (size_t i = 0; i < p->n_slots; i++)
        if (p->slots[i].role == role && p->slots[i].index == index) return &p->slots[i];
    return NULL;
}

static const char *const arms12[] = {"arm-2", "arm-1"};
static const char *const arm3[] = {"arm-3"};

static void test_demo_single_node_cpu(void)
{
    ctl_inv_node_t n[] = {{"local", CTL_NODE_READY, 1, NULL}};
    ctl_inv_robot_t r[] = {
        {"sim-1", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
        {"sim-0", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
    };
    ctl_inventory_t inv = {n, 1, NULL, 0, r, 2};
    ctl_sched_request_t q = {.experiment = "reach-sac", .robot_driver = "mujoco", .robot_count = 2};
    ctl_placement_t *p;
    cr_err_t err = {0};
    ASSERT_OK(ctl_sched_place(&inv, &q, &p, &err), &err);
    ASSERT_INT_EQ(p->n_slots, 6); /* 2 env + 2 actor + learner + buffer slots: 3 processes */
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ENV, 0)->robot, "sim-0"); /* name order */
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ENV, 1)->robot, "sim-1");
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ACTOR, 1)->robot, "sim-1");
    for (size_t i = 0; i < p->n_slots; i++) {
        ASSERT_STR_EQ(p->slots[i].node, "local");
        ASSERT_INT_EQ(p->slots[i].n_gpus, 0);
    }
    ASSERT_INT_EQ(p->slots[4].role, CTL_ROLE_LEARNER);
    ASSERT_INT_EQ(p->slots[5].role, CTL_ROLE_BUFFER);
    ctl_placement_free(p);
}

static void test_actor_prefers_robot_node_then_nearest(void)
{
    lab_t *l = lab_new();
    ctl_sched_request_t q = {.experiment = "e1", .robot_labels = table, .n_robot_labels = 1, .robot_count = 3};
    ctl_placement_t *p;
    cr_err_t err = {0};
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    /* arm-1, arm-2 on robo-a: both actors share robo-a's GPU. */
    const ctl_slot_t *a0 = slot(p, CTL_ROLE_ACTOR, 0), *a1 = slot(p, CTL_ROLE_ACTOR, 1),
                     *a2 = slot(p, CTL_ROLE_ACTOR, 2);
    ASSERT_STR_EQ(a0->robot, "arm-1");
    ASSERT_STR_EQ(a0->node, "robo-a");
    ASSERT_INT_EQ(a0->n_gpus, 1);
    ASSERT_INT_EQ(a0->gpus[0], 0);
    ASSERT_STR_EQ(a1->node, "robo-a");
    /* arm-3 on robo-b (no GPU): the nearest is robo-a (same site, already ours). */
    ASSERT_STR_EQ(a2->robot, "arm-3");
    ASSERT_STR_EQ(a2->node, "robo-a");
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ENV, 2)->node, "robo-b");
    /* CPU learner: prefers a node accepting inbound, then the one with most of
     * our robots: robo-a. */
    ASSERT_STR_EQ(slot(p, CTL_ROLE_LEARNER, 0)->node, "robo-a");
    ASSERT_STR_EQ(slot(p, CTL_ROLE_BUFFER, 0)->node, "robo-a");
    ctl_placement_free(p);

    /* robo-a's GPU held by another experiment: arm-3's actor goes to gpu-1 (same
     * site), not gpu-2 (another site). */
    l->gpus[0].state = CTL_RES_IN_USE;
    l->gpus[0].owner = "other";
    ctl_sched_request_t q3 = {.experiment = "e1", .robot_names = arm3, .n_robot_names = 1};
    ASSERT_OK(ctl_sched_place(&l->inv, &q3, &p, &err), &err);
    a0 = slot(p, CTL_ROLE_ACTOR, 0);
    ASSERT_STR_EQ(a0->node, "gpu-1");
    ctl_placement_free(p);
    /* gpu-1 lost too: gpu-2 (reachable directly). */
    node(l, "gpu-1")->state = CTL_NODE_LOST;
    ASSERT_OK(ctl_sched_place(&l->inv, &q3, &p, &err), &err);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ACTOR, 0)->node, "gpu-2");
    ctl_placement_free(p);
    /* actor_cpu: stays on the robot's node. */
    q3.actor_cpu = 1;
    ASSERT_OK(ctl_sched_place(&l->inv, &q3, &p, &err), &err);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ACTOR, 0)->node, "robo-b");
    ASSERT_INT_EQ(slot(p, CTL_ROLE_ACTOR, 0)->n_gpus, 0);
    ctl_placement_free(p);
    /* No usable GPU anywhere: the CPU of the robot's node. */
    q3.actor_cpu = 0;
    for (int i = 0; i < 7; i++) l->gpus[i].state = CTL_RES_LOST;
    ASSERT_OK(ctl_sched_place(&l->inv, &q3, &p, &err), &err);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ACTOR, 0)->node, "robo-b");
    ASSERT_INT_EQ(slot(p, CTL_ROLE_ACTOR, 0)->n_gpus, 0);
    ctl_placement_free(p);
    free(l);
}

static void test_learner_gpus_best_fit(void)
{
    lab_t *l = lab_new();
    ctl_sched_request_t q = {.experiment = "big", .robot_names = arm3, .n_robot_names = 1,
                             .learner_gpus = 2, .learner_gpu_mem = 40 * GIB};
    ctl_placement_t *p;
    cr_err_t err = {0};
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    const ctl_slot_t *ln = slot(p, CTL_ROLE_LEARNER, 0);
    ASSERT_STR_EQ(ln->node, "gpu-2");
    ASSERT_INT_EQ(ln->n_gpus, 2);
    ASSERT_INT_EQ(ln->gpus[0], 0);
    ASSERT_INT_EQ(ln->gpus[1], 1);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_BUFFER, 0)->node, "gpu-2");
    ctl_placement_free(p);

    /* One 40 GiB GPU: gpu-1's 80 GiB card and a 48 GiB one on gpu-2 both fit; the
     * node with fewer fitting GPUs left over wins (keep gpu-2 whole), and on it
     * the smallest card that fits. */
    q.learner_gpus = 1;
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ln = slot(p, CTL_ROLE_LEARNER, 0);
    ASSERT_STR_EQ(ln->node, "gpu-1");
    ASSERT_INT_EQ(ln->gpus[0], 0);
    ctl_placement_free(p);
    /* 20 GiB: robo-a's single 24 GiB card is now the best fit (one fitting GPU,
     * none left over); with robo-a's GPU busy, gpu-1's 24 GiB card is. */
    q.learner_gpu_mem = 20 * GIB;
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ln = slot(p, CTL_ROLE_LEARNER, 0);
    ASSERT_STR_EQ(ln->node, "robo-a");
    ctl_placement_free(p);
    l->gpus[0].state = CTL_RES_IN_USE;
    l->gpus[0].owner = "other";
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ln = slot(p, CTL_ROLE_LEARNER, 0);
    ASSERT_STR_EQ(ln->node, "gpu-1");
    ASSERT_INT_EQ(ln->gpus[0], 1);
    l->gpus[0].state = CTL_RES_AVAILABLE;
    l->gpus[0].owner = NULL;
    ctl_placement_free(p);

    /* Refusals say what exists and what to change. */
    q.learner_gpus = 5;
    q.learner_gpu_mem = 40 * GIB;
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_TRUE(p == NULL);
    ASSERT_STR_EQ(err.msg, "no node has 5 free GPUs with >= 40 GiB; the most on one node: gpu-2 with 4 "
                           "(lower learner.gpus or learner.gpu_memory)");
    l->gpus[3].state = l->gpus[4].state = l->gpus[5].state = CTL_RES_IN_USE;
    l->gpus[3].owner = l->gpus[4].owner = "pick-1";
    l->gpus[5].owner = "push-2";
    q.learner_gpus = 2;
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_STR_EQ(err.msg, "no node has 2 free GPUs with >= 40 GiB; the most on one node: gpu-1 with 1; "
                           "3 more in use by pick-1, push-2 (lower learner.gpus or learner.gpu_memory)");
    /* GPUs this experiment already holds count as free (resume). */
    l->gpus[3].owner = l->gpus[4].owner = "big";
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_LEARNER, 0)->node, "gpu-2");
    ctl_placement_free(p);
    /* The hint. */
    q.learner_node = "gpu-1";
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_STR_EQ(err.msg, "placement.learner_node gpu-1 has 1 free GPUs with >= 40 GiB, the learner needs 2; "
                           "lower learner.gpus or drop the hint");
    q.learner_node = "gpu-9";
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "gpu-9 does not exist") != NULL);
    node(l, "gpu-1")->state = CTL_NODE_LOST;
    q.learner_node = "gpu-1";
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(err.msg, "gpu-1 is lost") != NULL);
    free(l);
}

static void test_actor_shares_learner_gpu(void)
{
    lab_t *l = lab_new();
    /* Learner takes robo-a's only GPU (hint); the actors of arm-1/arm-2 pack onto it. */
    ctl_sched_request_t q = {.experiment = "e", .robot_names = arms12, .n_robot_names = 2,
                             .learner_gpus = 1, .learner_node = "robo-a"};
    ctl_placement_t *p;
    cr_err_t err = {0};
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_LEARNER, 0)->node, "robo-a");
    for (int i = 0; i < 2; i++) {
        ASSERT_STR_EQ(slot(p, CTL_ROLE_ACTOR, i)->node, "robo-a");
        ASSERT_INT_EQ(slot(p, CTL_ROLE_ACTOR, i)->gpus[0], 0);
    }
    ctl_placement_free(p);
    free(l);
}

static void test_robot_refusals(void)
{
    lab_t *l = lab_new();
    ctl_placement_t *p = (ctl_placement_t *)1;
    cr_err_t err = {0};
    const char *const missing[] = {"arm-1", "arm-7"};
    ctl_sched_request_t q = {.experiment = "e", .robot_names = missing, .n_robot_names = 2};
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_ENOENT);
    ASSERT_TRUE(p == NULL);
    ASSERT_STR_EQ(err.msg, "robot arm-7 does not exist (registered: arm-1, arm-2, arm-3, arm-9)");

    robot(l, "arm-3")->state = CTL_RES_IN_USE;
    robot(l, "arm-3")->owner = "pick-1";
    q.robot_names = arm3;
    q.n_robot_names = 1;
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EBUSY);
    ASSERT_STR_EQ(err.msg, "robot arm-3 is in use by experiment pick-1");
    q.experiment = "pick-1"; /* its own robot is fine */
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ctl_placement_free(p);
    q.experiment = "e";

    robot(l, "arm-3")->state = CTL_RES_ESTOPPED;
    robot(l, "arm-3")->owner = NULL;
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_STR_EQ(err.msg, "robot arm-3 is e-stopped; release it with `corral robot estop --release arm-3`");
    robot(l, "arm-3")->state = CTL_RES_AVAILABLE;
    node(l, "robo-b")->state = CTL_NODE_LOST;
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_STR_EQ(err.msg, "robot arm-3 is lost: its node robo-b is not connected (start its agent, or choose another robot)");
    node(l, "robo-b")->state = CTL_NODE_DRAINING;
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(err.msg, "draining") != NULL);
    robot(l, "arm-3")->node = "";
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(err.msg, "has no node yet") != NULL);

    /* Malformed requests. */
    const char *const twice[] = {"arm-1", "arm-1"};
    ctl_sched_request_t bad = {.experiment = "e", .robot_names = twice, .n_robot_names = 2};
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &bad, &p, &err), CR_EINVAL);
    ASSERT_STR_EQ(err.msg, "robot arm-1 is named twice");
    bad = (ctl_sched_request_t){.experiment = "e", .robot_names = arms12, .n_robot_names = 2, .robot_count = 3};
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &bad, &p, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robots.count is 3 but 2 robots are named") != NULL);
    bad = (ctl_sched_request_t){.experiment = "e", .robot_driver = "mujoco"};
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &bad, &p, &err), CR_EINVAL);
    bad = (ctl_sched_request_t){.experiment = "e", .robot_count = 1, .learner_gpus = -1};
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &bad, &p, &err), CR_EINVAL);
    bad = (ctl_sched_request_t){.robot_count = 1};
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &bad, &p, &err), CR_EINVAL);
    free(l);
}

static void test_robot_filter_shortage(void)
{
    lab_t *l = lab_new();
    ctl_placement_t *p;
    cr_err_t err = {0};
    ctl_sched_request_t q = {.experiment = "e", .robot_driver = "mujoco", .robot_labels = table_cam,
                             .n_robot_labels = 2, .robot_count = 2};
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ENV, 0)->robot, "arm-1");
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ENV, 1)->robot, "arm-3");
    ctl_placement_free(p);
    robot(l, "arm-3")->state = CTL_RES_IN_USE;
    robot(l, "arm-3")->owner = "pick-1";
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EBUSY);
    ASSERT_STR_EQ(err.msg, "need 2 robots with driver=mujoco label=table label=camera but 1 is free (arm-1): "
                           "robot arm-3 is in use by experiment pick-1; lower robots.count or free robots");
    node(l, "robo-a")->state = CTL_NODE_LOST;
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_TRUE(strstr(err.msg, "but 0 are free: robot arm-3 is in use by experiment pick-1; robot arm-1 is lost") != NULL);
    q.robot_model = "ur5";
    ASSERT_INT_EQ(ctl_sched_place(&l->inv, &q, &p, &err), CR_ENOENT);
    ASSERT_STR_EQ(err.msg, "no robot matches driver=mujoco model=ur5 label=table label=camera; check `corral robot list`");
    free(l);
}

static void test_deterministic_under_shuffle(void)
{
    lab_t *a = lab_new(), *b = lab_new();
    /* Reverse every table of b. */
    for (int i = 0; i < 5 / 2; i++) {
        ctl_inv_node_t t = b->nodes[i];
        b->nodes[i] = b->nodes[4 - i];
        b->nodes[4 - i] = t;
    }
    for (int i = 0; i < 7 / 2; i++) {
        ctl_inv_gpu_t t = b->gpus[i];
        b->gpus[i] = b->gpus[6 - i];
        b->gpus[6 - i] = t;
    }
    for (int i = 0; i < 4 / 2; i++) {
        ctl_inv_robot_t t = b->robots[i];
        b->robots[i] = b->robots[3 - i];
        b->robots[3 - i] = t;
    }
    ctl_sched_request_t q = {.experiment = "e", .robot_driver = "mujoco", .robot_count = 3,
                             .learner_gpus = 2, .learner_gpu_mem = 30 * GIB};
    ctl_placement_t *pa, *pb;
    cr_err_t err = {0};
    ASSERT_OK(ctl_sched_place(&a->inv, &q, &pa, &err), &err);
    ASSERT_OK(ctl_sched_place(&b->inv, &q, &pb, &err), &err);
    ASSERT_INT_EQ(pa->n_slots, pb->n_slots);
    ASSERT_TRUE(memcmp(pa->slots, pb->slots, pa->n_slots * sizeof *pa->slots) == 0);
    ctl_placement_free(pa);
    ctl_placement_free(pb);
    free(a);
    free(b);
}

static void test_repair_after_node_loss(void)
{
    lab_t *l = lab_new();
    ctl_sched_request_t q = {.experiment = "e", .robot_labels = table, .n_robot_labels = 1, .robot_count = 3,
                             .learner_gpus = 1, .learner_gpu_mem = 40 * GIB};
    ctl_placement_t *p, *r;
    cr_err_t err = {0};
    int degraded = -1;
    ASSERT_OK(ctl_sched_place(&l->inv, &q, &p, &err), &err);
    ASSERT_STR_EQ(slot(p, CTL_ROLE_LEARNER, 0)->node, "gpu-1");
    /* Nothing lost: nothing changes. */
    ASSERT_OK(ctl_sched_repair(&l->inv, &q, p, &r, &degraded, &err), &err);
    ASSERT_INT_EQ(degraded, 0);
    ASSERT_TRUE(memcmp(p->slots, r->slots, p->n_slots * sizeof *p->slots) == 0);
    ctl_placement_free(r);

    /* arm-3's actor (robo-b has no GPU) shares the learner's card on gpu-1: same
     * site as robo-a's GPU, both already ours, and gpu-1 sorts first. */
    ASSERT_STR_EQ(slot(p, CTL_ROLE_ACTOR, 2)->node, "gpu-1");
    ASSERT_INT_EQ(slot(p, CTL_ROLE_ACTOR, 2)->gpus[0], 0);

    /* robo-a lost: arm-1/arm-2's env and actor wait with their robots; the rest
     * stays. */
    node(l, "robo-a")->state = CTL_NODE_LOST;
    ASSERT_OK(ctl_sched_repair(&l->inv, &q, p, &r, &degraded, &err), &err);
    ASSERT_INT_EQ(degraded, 1);
    ASSERT_INT_EQ(slot(r, CTL_ROLE_ENV, 0)->waiting, 1);
    ASSERT_INT_EQ(slot(r, CTL_ROLE_ACTOR, 0)->waiting, 1);
    ASSERT_STR_EQ(slot(r, CTL_ROLE_ACTOR, 0)->node, "robo-a");
    ASSERT_INT_EQ(slot(r, CTL_ROLE_ENV, 2)->waiting, 0);
    ASSERT_INT_EQ(slot(r, CTL_ROLE_ACTOR, 2)->moved, 0);
    ASSERT_INT_EQ(slot(r, CTL_ROLE_LEARNER, 0)->moved, 0);
    ctl_placement_free(r);
    node(l, "robo-a")->state = CTL_NODE_READY;

    /* The learner's node lost: waits by default (its buffer is on that disk)... */
    node(l, "gpu-1")->state = CTL_NODE_LOST;
    ASSERT_OK(ctl_sched_repair(&l->inv, &q, p, &r, &degraded, &err), &err);
    ASSERT_INT_EQ(degraded, 1);
    ASSERT_INT_EQ(slot(r, CTL_ROLE_LEARNER, 0)->waiting, 1);
    ASSERT_INT_EQ(slot(r, CTL_ROLE_BUFFER, 0)->waiting, 1);
    /* arm-3's actor, whose robot is fine, moves to the nearest GPU: robo-a's. */
    const ctl_slot_t *a2 = slot(r, CTL_ROLE_ACTOR, 2);
    ASSERT_INT_EQ(a2->moved, 1);
    ASSERT_STR_EQ(a2->node, "robo-a");
    ASSERT_INT_EQ(a2->waiting, 0);
    ctl_placement_free(r);
    /* ...and moves with its buffer when the state is on shared storage. */
    q.state_movable = 1;
    ASSERT_OK(ctl_sched_repair(&l->inv, &q, p, &r, &degraded, &err), &err);
    ASSERT_INT_EQ(degraded, 0);
    ASSERT_STR_EQ(slot(r, CTL_ROLE_LEARNER, 0)->node, "gpu-2");
    ASSERT_INT_EQ(slot(r, CTL_ROLE_LEARNER, 0)->moved, 1);
    ASSERT_STR_EQ(slot(r, CTL_ROLE_BUFFER, 0)->node, "gpu-2");
    ASSERT_STR_EQ(slot(r, CTL_ROLE_ENV, 0)->node, "robo-a");
    ctl_placement_free(r);
    /* Nowhere to go: a refusal that names the lost node. */
    node(l, "gpu-2")->state = CTL_NODE_LOST;
    ASSERT_INT_EQ(ctl_sched_repair(&l->inv, &q, p, &r, &degraded, &err), CR_EUNAVAIL);
    ASSERT_TRUE(r == NULL);
    ASSERT_TRUE(strstr(err.msg, "the learner's node gpu-1 is lost and the learner cannot move: no node has 1 free GPUs") != NULL);
    ctl_placement_free(p);
    free(l);
}

static void test_distance(void)
{
    ctl_inv_node_t a = {"a", CTL_NODE_READY, 0, "lab"}, b = {"b", CTL_NODE_READY, 0, "lab"},
                   c = {"c", CTL_NODE_READY, 1, "dc"}, d = {"d", CTL_NODE_READY, 0, NULL},
                   e = {"e", CTL_NODE_READY, 0, NULL};
    ASSERT_INT_EQ(ctl_sched_distance(&a, &a), 0);
    ASSERT_INT_EQ(ctl_sched_distance(&a, &b), 1);
    ASSERT_INT_EQ(ctl_sched_distance(&a, &c), 2);
    ASSERT_INT_EQ(ctl_sched_distance(&d, &e), 3); /* no site is not a shared site */
    ASSERT_INT_EQ(ctl_sched_distance(&a, NULL), 3);
    ASSERT_STR_EQ(ctl_role_name(CTL_ROLE_BUFFER), "buffer");
    ASSERT_INT_EQ(ctl_role_parse("actor"), CTL_ROLE_ACTOR);
    ASSERT_INT_EQ(ctl_role_parse("critic"), -1);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"demo_single_node_cpu", test_demo_single_node_cpu},
        {"actor_prefers_robot_node_then_nearest", test_actor_prefers_robot_node_then_nearest},
        {"learner_gpus_best_fit", test_learner_gpus_best_fit},
        {"actor_shares_learner_gpu", test_actor_shares_learner_gpu},
        {"robot_refusals", test_robot_refusals},
        {"robot_filter_shortage", test_robot_filter_shortage},
        {"deterministic_under_shuffle", test_deterministic_under_shuffle},
        {"repair_after_node_loss", test_repair_after_node_loss},
        {"distance", test_distance},
        {NULL, NULL},
    };
    return test_main("scheduler", cases, argc, argv);
}
