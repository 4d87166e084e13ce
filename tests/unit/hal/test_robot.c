/* test_robot.c - the device model through the mock driver: determinism, every
 * safety rule and its counter, the watchdog, the e-stop latch, bad actions and
 * options, and the fixed-rate control loop. */
/* ASSERT_OK's one-line if trips this warning inside multi-line test bodies. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tests/harness.h"
#include "hal/hal.h"
#include "common/time.h"

#include <math.h>
#include <stdlib.h>

static hal_robot_t *open_mock(const char **kv, int n)
{
    hal_opt_t opts[16];
    cr_err_t err = {0};
    ASSERT_OK(hal_opts_parse(kv, n, opts, &err), &err);
    hal_robot_t *r = NULL;
    ASSERT_OK(hal_robot_open("m1", "mock", "", opts, n, &r, &err), &err);
    return r;
}

static void test_mock_deterministic(void)
{
    const char *kv[] = {"dof=3"};
    hal_robot_t *a = open_mock(kv, 1), *b = open_mock(kv, 1);
    const hal_robot_desc_t *d = hal_robot_desc(a);
    ASSERT_INT_EQ(d->obs.vec_total, 12);
    ASSERT_INT_EQ(d->act.dim, 3);
    ASSERT_STR_EQ(d->obs.vecs[1].name, "joint_vel");
    ASSERT_STR_EQ(d->obs.vecs[1].unit, "rad/s");
    hal_obs_t oa, ob;
    cr_err_t err = {0};
    ASSERT_OK(hal_obs_alloc(d, 1, &oa, &err), &err);
    ASSERT_OK(hal_obs_alloc(d, 1, &ob, &err), &err);
    ASSERT_OK(hal_robot_reset(a, 42, &oa, &err), &err);
    ASSERT_OK(hal_robot_reset(b, 42, &ob, &err), &err);
    for (int t = 0; t < 20; t++) {
        float act[3] = {0.01f * (float)t, -0.02f, 0.03f};
        ASSERT_OK(hal_robot_step(a, act, &oa, &err), &err);
        ASSERT_OK(hal_robot_step(b, act, &ob, &err), &err);
        ASSERT_TRUE(memcmp(oa.vec, ob.vec, sizeof(float) * 12) == 0);
        ASSERT_NEAR(oa.reward, ob.reward, 0);
    }
    /* A different seed is a different episode. */
    ASSERT_OK(hal_robot_reset(b, 43, &ob, &err), &err);
    ASSERT_OK(hal_robot_reset(a, 42, &oa, &err), &err);
    ASSERT_TRUE(memcmp(oa.vec, ob.vec, sizeof(float) * 12) != 0);
    hal_obs_free(&oa);
    hal_obs_free(&ob);
    hal_robot_close(a);
    hal_robot_close(b);
}

static void test_safety_joint_limits_and_range(void)
{
    const char *kv[] = {"dof=2", "joint_limit=1.0"};
    hal_robot_t *r = open_mock(kv, 2);
    hal_obs_t o;
    cr_err_t err = {0};
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 1, &o, &err), &err);
    float act[2] = {5.0f, -0.5f};  /* outside the bounds [-1, 1] */
    ASSERT_OK(hal_robot_step(r, act, &o, &err), &err);
    ASSERT_NEAR(o.vec[0], 1.0, 1e-6);
    ASSERT_NEAR(o.vec[1], -0.5, 1e-6);
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.clamped_range, 1);
    ASSERT_INT_EQ(s.actions, 1);
    hal_obs_free(&o);
    hal_robot_close(r);

    /* The pure filter: joint limits cut commands that the bounds allow. */
    hal_act_spec_t as = {.dim = 1, .mode = HAL_CTRL_JOINT_POSITION, .low = {-3}, .high = {3},
                         .scale = {1}};
    hal_limits_t lim = {.n_joints = 1, .joint_low = {-0.5}, .joint_high = {0.5}};
    hal_safety_t sf;
    hal_safety_init(&sf, &as, &lim, 100);
    double q[1] = {0}, cmd[1];
    hal_safety_reset(&sf, q);
    float a1[1] = {2.0f};
    ASSERT_OK(hal_safety_filter(&sf, a1, q, NULL, cmd, &err), &err);
    ASSERT_NEAR(cmd[0], 0.5, 1e-12);
    ASSERT_INT_EQ(sf.stats.clamped_joint, 1);
    ASSERT_INT_EQ(sf.stats.clamped_range, 0);
}

static void test_safety_step_cap(void)
{
    const char *kv[] = {"dof=2", "max_step=0.1"};
    hal_robot_t *r = open_mock(kv, 2);
    hal_obs_t o;
    cr_err_t err = {0};
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 7, &o, &err), &err);
    double q0 = o.vec[0], q1 = o.vec[1];
    float act[2] = {1.5f, (float)q1 + 0.05f};
    ASSERT_OK(hal_robot_step(r, act, &o, &err), &err);
    ASSERT_NEAR(o.vec[0], q0 + 0.1, 1e-6);           /* capped */
    ASSERT_NEAR(o.vec[1], q1 + 0.05, 1e-6);          /* within the cap */
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.capped_step, 1);
    hal_obs_free(&o);
    hal_robot_close(r);
}

static void test_safety_velocity_and_workspace(void)
{
    cr_err_t err = {0};
    /* Velocity mode: a joint 0.01 rad below its limit may move at most 1 rad/s at 100 Hz. */
    hal_act_spec_t as = {.dim = 1, .mode = HAL_CTRL_JOINT_VELOCITY, .low = {-1}, .high = {1},
                         .scale = {5}};
    hal_limits_t lim = {.n_joints = 1, .joint_low = {-1}, .joint_high = {1}};
    hal_safety_t sf;
    hal_safety_init(&sf, &as, &lim, 100);
    double q[1] = {0.99}, cmd[1];
    hal_safety_reset(&sf, q);
    float a[1] = {1.0f};
    ASSERT_OK(hal_safety_filter(&sf, a, q, NULL, cmd, &err), &err);
    ASSERT_NEAR(cmd[0], 1.0, 1e-9);
    ASSERT_INT_EQ(sf.stats.clamped_joint, 1);
    float back[1] = {-1.0f};
    ASSERT_OK(hal_safety_filter(&sf, back, q, NULL, cmd, &err), &err);
    ASSERT_NEAR(cmd[0], -5.0, 1e-9);                 /* away from the limit: free */
    ASSERT_INT_EQ(sf.stats.clamped_joint, 1);

    /* ee_delta through the mock: the workspace box and the step cap by norm. */
    const char *kv[] = {"mode=ee_delta", "workspace=0.06", "max_step=0.04"};
    hal_robot_t *r = open_mock(kv, 3);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 3, &o, &err), &err);
    const float *ee = hal_obs_vec(hal_robot_desc(r), &o, "ee_pos");
    ASSERT_TRUE(ee != NULL);
    float step[3] = {1, 0, 0};   /* 0.05 m, capped to 0.04 */
    ASSERT_OK(hal_robot_step(r, step, &o, &err), &err);
    ASSERT_NEAR(ee[0], 0.04, 1e-6);
    ASSERT_OK(hal_robot_step(r, step, &o, &err), &err);
    ASSERT_NEAR(ee[0], 0.06, 1e-6);                  /* stopped at the box */
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.capped_step, 2);
    ASSERT_INT_EQ(s.clamped_workspace, 1);
    hal_obs_free(&o);
    hal_robot_close(r);
}

static void test_nan_action_holds(void)
{
    const char *kv[] = {"dof=2", "mode=joint_velocity"};
    hal_robot_t *r = open_mock(kv, 2);
    hal_obs_t o;
    cr_err_t err = {0};
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 5, &o, &err), &err);
    float go[2] = {0.5f, 0.5f};
    ASSERT_OK(hal_robot_step(r, go, &o, &err), &err);
    float q0 = o.vec[0];
    float bad[2] = {0.1f, NAN};
    ASSERT_INT_EQ(hal_robot_act(r, bad, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robot m1") != NULL);
    ASSERT_TRUE(strstr(err.msg, "action[1] is NaN") != NULL);
    ASSERT_OK(hal_robot_observe(r, &o, &err), &err);
    ASSERT_NEAR(o.vec[0], q0, 1e-7);     /* held: zero velocity was sent */
    ASSERT_NEAR(o.vec[2], 0, 1e-7);
    float inf[2] = {INFINITY, 0};
    ASSERT_INT_EQ(hal_robot_act(r, inf, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "infinite") != NULL);
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.rejected_nan, 2);
    hal_obs_free(&o);
    hal_robot_close(r);
}

static void test_estop_latch(void)
{
    const char *kv[] = {"dof=1"};
    hal_robot_t *r = open_mock(kv, 1);
    cr_err_t err = {0};
    ASSERT_OK(hal_robot_reset(r, 1, NULL, &err), &err);
    ASSERT_OK(hal_robot_estop(r, &err), &err);
    ASSERT_TRUE(hal_robot_estopped(r));
    float a[1] = {0.2f};
    ASSERT_INT_EQ(hal_robot_act(r, a, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "e-stop latched") != NULL);
    ASSERT_INT_EQ(hal_robot_act(r, a, &err), CR_EBUSY);
    ASSERT_INT_EQ(hal_robot_reset(r, 2, NULL, &err), CR_EBUSY);   /* reset does not clear it */
    hal_health_t h;
    hal_robot_health(r, &h);
    ASSERT_INT_EQ(h.estopped, 1);
    ASSERT_OK(hal_robot_estop(r, &err), &err);   /* a second e-stop is not a second event */
    ASSERT_OK(hal_robot_estop_clear(r, &err), &err);
    ASSERT_OK(hal_robot_act(r, a, &err), &err);
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.estops, 1);
    ASSERT_INT_EQ(s.estop_blocked, 2);
    hal_robot_close(r);
}

static void test_watchdog(void)
{
    /* 20 Hz: the watchdog holds after 2 periods = 100 ms of silence. The
     * thread is off so the test decides when the check runs. */
    const char *kv[] = {"dof=1", "rate_hz=20", "realtime=true", "mode=joint_velocity",
                        "watchdog_thread=0"};
    hal_robot_t *r = open_mock(kv, 5);
    hal_obs_t o;
    cr_err_t err = {0};
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 1, &o, &err), &err);
    float a[1] = {1.0f};
    ASSERT_OK(hal_robot_act(r, a, &err), &err);
    ASSERT_INT_EQ(hal_robot_watchdog(r), 0);      /* fresh action: no hold */
    cr_sleep_ns(250 * CR_NS_PER_MS);
    ASSERT_INT_EQ(hal_robot_watchdog(r), 1);
    ASSERT_INT_EQ(hal_robot_watchdog(r), 0);      /* once per silence */
    ASSERT_OK(hal_robot_observe(r, &o, &err), &err);
    ASSERT_NEAR(o.vec[1], 0, 1e-9);               /* velocity 0: holding */
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.watchdog_holds, 1);
    hal_obs_free(&o);
    hal_robot_close(r);

    /* With its thread, the watchdog fires without any call from us. */
    const char *kv2[] = {"dof=1", "rate_hz=200", "realtime=true", "mode=joint_velocity"};
    r = open_mock(kv2, 4);
    ASSERT_OK(hal_robot_reset(r, 1, NULL, &err), &err);
    ASSERT_OK(hal_robot_act(r, a, &err), &err);
    for (int i = 0; i < 100; i++) {
        hal_robot_safety_stats(r, &s);
        if (s.watchdog_holds) break;
        cr_sleep_ns(5 * CR_NS_PER_MS);
    }
    ASSERT_INT_EQ(s.watchdog_holds, 1);
    hal_robot_close(r);

    /* Not real-time (a simulation stepped as fast as possible): no watchdog. */
    const char *kv3[] = {"dof=1", "rate_hz=200"};
    r = open_mock(kv3, 2);
    ASSERT_OK(hal_robot_reset(r, 1, NULL, &err), &err);
    cr_sleep_ns(15 * CR_NS_PER_MS);
    ASSERT_INT_EQ(hal_robot_watchdog(r), 0);
    hal_robot_close(r);
}

static void test_bad_options(void)
{
    hal_opt_t opts[4];
    cr_err_t err = {0};
    hal_robot_t *r = NULL;
    const char *bad_kv[] = {"noequals"};
    ASSERT_INT_EQ(hal_opts_parse(bad_kv, 1, opts, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "noequals") != NULL);

    const char *kv1[] = {"colour=red"};
    hal_opts_parse(kv1, 1, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("arm-1", "mock", "", opts, 1, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robot arm-1") && strstr(err.msg, "unknown option 'colour'"));
    const char *kv2[] = {"dof=abc"};
    hal_opts_parse(kv2, 1, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("arm-1", "mock", "", opts, 1, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "option dof='abc'") != NULL);
    const char *kv3[] = {"dof=99"};
    hal_opts_parse(kv3, 1, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("arm-1", "mock", "", opts, 1, &r, &err), CR_EINVAL);
    const char *kv4[] = {"max_step=-1"};
    hal_opts_parse(kv4, 1, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("arm-1", "mock", "", opts, 1, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "max_step") != NULL);
    const char *kv5[] = {"mode=torque"};
    hal_opts_parse(kv5, 1, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("arm-1", "mock", "", opts, 1, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "mode='torque'") != NULL);
    ASSERT_INT_EQ(hal_robot_open("Arm 1!", "mock", "", NULL, 0, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robot name 'Arm 1!' is not valid") != NULL);
    ASSERT_INT_EQ(hal_robot_open("arm-1", "warp-drive", "", NULL, 0, &r, &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "unknown driver 'warp-drive'") != NULL);
    ASSERT_TRUE(r == NULL);
}

static int busy_tick(void *ctx, int64_t tick)
{
    int64_t *ticks = ctx;
    (*ticks)++;
    if (tick == 5) cr_sleep_ns(25 * CR_NS_PER_MS);   /* one overrun of 2+ periods */
    return 0;
}

static int stop_at_3(void *ctx, int64_t tick) { return tick == 3 ? 7 : 0; }

static void test_control_loop(void)
{
    int64_t ticks = 0;
    hal_loop_stats_t st;
    int64_t t0 = cr_now_ns();
    ASSERT_INT_EQ(hal_loop_run(10 * CR_NS_PER_MS, 20, busy_tick, &ticks, &st), 0);
    double el = (double)(cr_now_ns() - t0) / 1e6;
    ASSERT_INT_EQ(ticks, 20);
    ASSERT_INT_EQ(st.ticks, 20);
    ASSERT_TRUE(st.overruns >= 1);
    /* Absolute deadlines: 20 ticks plus the overrun's skipped deadlines, not more. */
    ASSERT_TRUE(el >= 200 && el < 1500);   /* generous: the machine may be loaded */
    /* Jitter is the machine's wake-up latency (several ms under load); what the
     * loop owns is measuring it from the right deadline: a wrong one would put
     * the median near a whole period (10 ms) or beyond. */
    fprintf(stderr, "  jitter p50 %.0f us, p99 %.0f us\n", st.jitter_p50_us, st.jitter_p99_us);
    ASSERT_TRUE(st.jitter_p50_us >= 0 && st.jitter_p50_us < 9000);
    ASSERT_TRUE(st.jitter_p99_us >= st.jitter_p50_us);
    ASSERT_INT_EQ(hal_loop_run(CR_NS_PER_MS, 100, stop_at_3, NULL, &st), 7);
    ASSERT_INT_EQ(st.ticks, 4);
}

static void test_modes_and_registry(void)
{
    hal_ctrl_mode_t m;
    ASSERT_INT_EQ(hal_ctrl_mode_parse("ee_delta", &m), 0);
    ASSERT_INT_EQ(m, HAL_CTRL_EE_DELTA);
    ASSERT_STR_EQ(hal_ctrl_mode_name(HAL_CTRL_JOINT_VELOCITY), "joint_velocity");
    ASSERT_INT_EQ(hal_ctrl_mode_parse("force", &m), CR_EINVAL);
    ASSERT_TRUE(hal_driver_find("mujoco") == &hal_driver_mujoco);
    cr_err_t err = {0};
    ASSERT_INT_EQ(hal_driver_register(&hal_driver_mock, &err), CR_EEXIST);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"mock_deterministic", test_mock_deterministic},
        {"safety_joint_limits_and_range", test_safety_joint_limits_and_range},
        {"safety_step_cap", test_safety_step_cap},
        {"safety_velocity_and_workspace", test_safety_velocity_and_workspace},
        {"nan_action_holds", test_nan_action_holds},
        {"estop_latch", test_estop_latch},
        {"watchdog", test_watchdog},
        {"bad_options", test_bad_options},
        {"control_loop", test_control_loop},
        {"modes_and_registry", test_modes_and_registry},
        {NULL, NULL},
    };
    return test_main("hal_robot", cases, argc, argv);
}
