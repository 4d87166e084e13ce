/* test_spec_request.c - from the demo's YAML to a placement: the spec maps onto
 * the scheduler's request, and the refusals a user sees at submit come out. */
#include "tests/harness.h"
#include "controller/spec_request.h"

static void test_reach_sac_places_on_the_demo_node(void)
{
    exp_spec_t spec;
    cr_err_t err = {0};
    ASSERT_OK(exp_spec_load_file(&spec, test_source_path("configs/experiments/reach-sac.yaml"), NULL, 0, &err), &err);
    ctl_sched_request_t q;
    ctl_sched_request_from_spec(&spec, &q);
    ASSERT_STR_EQ(q.experiment, "reach-sac");
    ASSERT_INT_EQ(q.robot_count, 2);
    ASSERT_INT_EQ(q.actor_cpu, 1);
    ASSERT_TRUE(q.learner_node == NULL);
    /* The embedded demo: one node, two simulated reach2d robots, no GPU. */
    ctl_inv_node_t n[] = {{"local", CTL_NODE_READY, 1, NULL}};
    ctl_inv_robot_t r[] = {
        {"sim-0", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
        {"sim-1", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
    };
    ctl_inventory_t inv = {n, 1, NULL, 0, r, 2};
    ctl_placement_t *p;
    ASSERT_OK(ctl_sched_place(&inv, &q, &p, &err), &err);
    ASSERT_INT_EQ(p->n_slots, 6);
    ctl_placement_free(p);
    /* A second experiment on the same robots is refused with the holder's name. */
    r[0].state = r[1].state = CTL_RES_IN_USE;
    r[0].owner = r[1].owner = "reach-sac";
    ctl_sched_request_t q2 = q;
    q2.experiment = "reach-2";
    ASSERT_INT_EQ(ctl_sched_place(&inv, &q2, &p, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "robot sim-0 is in use by experiment reach-sac") != NULL);
    exp_spec_free(&spec);

    /* GPUs that cannot be had. */
    const char *sets[] = {"learner.gpus=2", "learner.gpu_memory=40GiB", "placement.learner_node=local"};
    ASSERT_OK(exp_spec_load_file(&spec, test_source_path("configs/experiments/reach-sac.yaml"), sets, 3, &err), &err);
    ctl_sched_request_from_spec(&spec, &q);
    ASSERT_STR_EQ(q.learner_node, "local");
    ASSERT_TRUE(q.learner_gpu_mem == 40ULL << 30);
    r[0].state = r[1].state = CTL_RES_AVAILABLE;
    r[0].owner = r[1].owner = NULL;
    ASSERT_INT_EQ(ctl_sched_place(&inv, &q, &p, &err), CR_EUNAVAIL);
    ASSERT_STR_EQ(err.msg, "placement.learner_node local has 0 free GPUs with >= 40 GiB, the learner needs 2; "
                           "lower learner.gpus or drop the hint");
    exp_spec_free(&spec);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"reach_sac_places_on_the_demo_node", test_reach_sac_places_on_the_demo_node},
        {NULL, NULL},
    };
    return test_main("spec_request", cases, argc, argv);
}
