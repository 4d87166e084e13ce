/* test_mujoco.c - the mujoco driver: each shipped task resets, steps, observes,
 * rewards and tests success; seeds reproduce episodes; a user's own MJCF file
 * loads by the documented convention; missing and malformed files, models that
 * break the convention and bad options are clear errors; camera images render
 * headless or the test says why it cannot; the multi-target scene places every
 * named target and draws the goal from the seed; the scripted expert reaches the
 * goal with end-effector and with joint-velocity control. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tests/harness.h"
#include "hal/hal.h"
#include "common/time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static hal_robot_t *open_model(const char *model, const char **kv, int n, cr_err_t *err, int *rc)
{
    hal_opt_t opts[16];
    hal_robot_t *r = NULL;
    *rc = hal_opts_parse(kv, n, opts, err);
    if (*rc == 0) *rc = hal_robot_open("sim-1", "mujoco", model, opts, n, &r, err);
    return r;
}

static void setup_env(void)
{
    setenv("CORRAL_ROBOTS_DIR", test_source_path("configs/robots"), 1);
}

/* Runs one episode with a fixed action pattern; returns the final observation's
 * reward, copying the first observation into first. */
static double run_episode(hal_robot_t *r, uint64_t seed, float *first, int *success, int *steps)
{
    const hal_robot_desc_t *d = hal_robot_desc(r);
    hal_obs_t o;
    cr_err_t err = {0};
    ASSERT_OK(hal_obs_alloc(d, 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, seed, &o, &err), &err);
    memcpy(first, o.vec, sizeof(float) * (size_t)d->obs.vec_total);
    int t = 0;
    while (!o.truncated) {
        float a[HAL_MAX_DOF];
        for (int i = 0; i < d->act.dim; i++) a[i] = (float)(0.5 * sin(0.3 * t + i));
        ASSERT_OK(hal_robot_step(r, a, &o, &err), &err);
        t++;
        ASSERT_TRUE(t <= d->episode_steps);
    }
    for (int i = 0; i < d->obs.vec_total; i++) ASSERT_TRUE(isfinite(o.vec[i]));
    *success = o.success;
    *steps = t;
    double rew = o.reward;
    hal_obs_free(&o);
    return rew;
}

static void check_task(const char *model, int vec_total, int act_dim, hal_ctrl_mode_t mode)
{
    setup_env();
    cr_err_t err = {0};
    int rc;
    const char *kv[] = {"seed=3", "realtime=false"};
    hal_robot_t *r = open_model(model, kv, 2, &err, &rc);
    ASSERT_OK(rc, &err);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    ASSERT_INT_EQ(d->obs.vec_total, vec_total);
    ASSERT_INT_EQ(d->act.dim, act_dim);
    ASSERT_INT_EQ(d->act.mode, mode);
    ASSERT_TRUE(d->rate_hz > 0 && d->episode_steps > 0);
    ASSERT_STR_EQ(d->obs.vecs[0].name, "joint_cos_sin");
    float f1[64], f2[64], f3[64];
    int s1, s2, s3, n1, n2, n3;
    double r1 = run_episode(r, 11, f1, &s1, &n1);
    double r2 = run_episode(r, 11, f2, &s2, &n2);
    double r3 = run_episode(r, 12, f3, &s3, &n3);
    ASSERT_INT_EQ(n1, d->episode_steps);
    ASSERT_TRUE(memcmp(f1, f2, sizeof(float) * (size_t)vec_total) == 0);   /* same seed */
    ASSERT_NEAR(r1, r2, 0);
    ASSERT_INT_EQ(s1, s2);
    ASSERT_TRUE(memcmp(f1, f3, sizeof(float) * (size_t)vec_total) != 0);   /* new seed */
    ASSERT_TRUE(r1 < 0 && r3 < 0);   /* dense reward: minus a distance */
    hal_robot_close(r);

    /* The `seed` option changes the episodes drawn for the same reset seed. */
    const char *kv2[] = {"seed=4"};
    r = open_model(model, kv2, 1, &err, &rc);
    ASSERT_OK(rc, &err);
    run_episode(r, 11, f2, &s2, &n2);
    ASSERT_TRUE(memcmp(f1, f2, sizeof(float) * (size_t)vec_total) != 0);
    hal_robot_close(r);
}

static void test_reach2d(void) { check_task("reach2d", 12, 2, HAL_CTRL_EE_DELTA); }
static void test_arm7(void) { check_task("arm7", 27, 3, HAL_CTRL_EE_DELTA); }
static void test_push(void) { check_task("push", 36, 3, HAL_CTRL_EE_DELTA); }

/* A proportional controller toward the target must succeed: the reward and the
 * success test measure the right thing, and the task is reachable. */
static void check_reach_success(const char *model)
{
    setup_env();
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model(model, NULL, 0, &err, &rc);
    ASSERT_OK(rc, &err);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(d, 0, &o, &err), &err);
    int wins = 0;
    for (int ep = 0; ep < 5; ep++) {
        ASSERT_OK(hal_robot_reset(r, (uint64_t)ep, &o, &err), &err);
        const float *e2t = hal_obs_vec(d, &o, "ee_to_target");
        double r0 = o.reward;
        ASSERT_NEAR(r0, -sqrt(e2t[0] * e2t[0] + e2t[1] * e2t[1] + e2t[2] * e2t[2]), 1e-5);
        while (!o.truncated) {
            float a[3];
            for (int k = 0; k < d->act.dim; k++) a[k] = e2t[k] / d->act.scale[k];
            ASSERT_OK(hal_robot_step(r, a, &o, &err), &err);
        }
        ASSERT_TRUE(o.reward > r0);
        wins += o.success;
    }
    ASSERT_TRUE(wins >= 4);
    /* Away from the target: no success. */
    ASSERT_OK(hal_robot_reset(r, 99, &o, &err), &err);
    ASSERT_INT_EQ(o.success, 0);
    hal_obs_free(&o);
    hal_robot_close(r);
}

static void test_reach_success(void)
{
    check_reach_success("arm7");
    check_reach_success("reach2d");
}

static void test_realtime_pacing(void)
{
    setup_env();
    cr_err_t err = {0};
    int rc;
    const char *kv[] = {"realtime=true", "control_hz=50", "watchdog_thread=0"};
    hal_robot_t *r = open_model("reach2d", kv, 3, &err, &rc);
    ASSERT_OK(rc, &err);
    ASSERT_OK(hal_robot_reset(r, 1, NULL, &err), &err);
    float a[2] = {0, 0};
    int64_t t0 = cr_now_ns();
    for (int i = 0; i < 10; i++) ASSERT_OK(hal_robot_act(r, a, &err), &err);
    double ms = (double)(cr_now_ns() - t0) / 1e6;
    ASSERT_TRUE(ms >= 170 && ms < 1000);   /* 10 periods of 20 ms (first one anchors) */
    hal_robot_close(r);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs(text, f);
    fclose(f);
}

static const char *user_mjcf =
    "<mujoco model='slider'>\n"
    "  <custom><text name='corral_mode' data='joint_position'/>\n"
    "    <numeric name='corral_control_hz' data='10'/>\n"
    "    <numeric name='corral_target_box' data='-0.3 0 0 0.3 0 0'/></custom>\n"
    "  <worldbody>\n"
    "    <body name='cart'><joint name='x' type='slide' axis='1 0 0' limited='true' range='-0.5 0.5' damping='20'/>\n"
    "      <geom type='box' size='0.05 0.05 0.05'/><site name='ee'/></body>\n"
    "    <body name='target' mocap='true' pos='0.2 0 0'><site name='target'/></body>\n"
    "  </worldbody>\n"
    "  <actuator><position name='x' joint='x' kp='50'/></actuator>\n"
    "</mujoco>\n";

static void test_user_mjcf(void)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/slider.xml", test_tmpdir());
    write_file(path, user_mjcf);
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model(path, NULL, 0, &err, &rc);
    ASSERT_OK(rc, &err);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    ASSERT_INT_EQ(d->act.dim, 1);
    ASSERT_INT_EQ(d->act.mode, HAL_CTRL_JOINT_POSITION);
    ASSERT_NEAR(d->act.high[0], 0.5, 1e-6);
    ASSERT_NEAR(d->rate_hz, 10, 1e-9);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(d, 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 5, &o, &err), &err);
    const float *e2t = hal_obs_vec(d, &o, "ee_to_target");
    float goal[1] = {hal_obs_vec(d, &o, "ee_pos")[0] + e2t[0]};
    for (int i = 0; i < 30; i++) ASSERT_OK(hal_robot_step(r, goal, &o, &err), &err);
    ASSERT_TRUE(fabs(e2t[0]) < 0.02);
    ASSERT_INT_EQ(o.success, 1);
    /* Commands beyond the slide's range are cut by the safety layer. */
    float far[1] = {0.9f};
    ASSERT_OK(hal_robot_act(r, far, &err), &err);
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.clamped_range, 1);
    hal_obs_free(&o);
    hal_robot_close(r);
}

static void test_bad_models(void)
{
    setup_env();
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model("no-such-robot", NULL, 0, &err, &rc);
    ASSERT_INT_EQ(rc, CR_ENOENT);
    ASSERT_TRUE(r == NULL);
    ASSERT_TRUE(strstr(err.msg, "robot sim-1") && strstr(err.msg, "no-such-robot.xml"));

    char path[4300];
    snprintf(path, sizeof path, "%s/broken.xml", test_tmpdir());
    write_file(path, "<mujoco><worldbody><body name='a'><geom type='sphere' size='0.1'/></worldbody>");
    r = open_model(path, NULL, 0, &err, &rc);
    ASSERT_INT_EQ(rc, CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robot sim-1") && strstr(err.msg, "cannot load MJCF"));

    snprintf(path, sizeof path, "%s/noee.xml", test_tmpdir());
    write_file(path, "<mujoco><worldbody><body><joint name='j' axis='0 0 1'/>"
               "<geom type='sphere' size='0.1'/></body></worldbody>"
               "<actuator><motor name='m' joint='j'/></actuator></mujoco>");
    r = open_model(path, NULL, 0, &err, &rc);
    ASSERT_INT_EQ(rc, CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "no site named 'ee'") != NULL);

    snprintf(path, sizeof path, "%s/noact.xml", test_tmpdir());
    write_file(path, "<mujoco><worldbody><geom type='sphere' size='0.1'/></worldbody></mujoco>");
    r = open_model(path, NULL, 0, &err, &rc);
    ASSERT_INT_EQ(rc, CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "no actuators") != NULL);

    const char *kv[] = {"episode_steps=0"};
    r = open_model("reach2d", kv, 1, &err, &rc);
    ASSERT_INT_EQ(rc, CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "option episode_steps='0'") != NULL);
    const char *kv2[] = {"camera=nope"};
    r = open_model("reach2d", kv2, 1, &err, &rc);
    ASSERT_INT_EQ(rc, CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "camera='nope'") != NULL);
    ASSERT_INT_EQ(hal_robot_open("sim-1", "mujoco", "", NULL, 0, &r, &err), CR_EINVAL);
}

static void test_nan_action_sim(void)
{
    setup_env();
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model("reach2d", NULL, 0, &err, &rc);
    ASSERT_OK(rc, &err);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 1, &o, &err), &err);
    float bad[2] = {NAN, 0.5f};
    ASSERT_INT_EQ(hal_robot_step(r, bad, &o, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robot sim-1: action[0] is NaN") != NULL);
    ASSERT_OK(hal_robot_observe(r, &o, &err), &err);
    for (int i = 0; i < 12; i++) ASSERT_TRUE(isfinite(o.vec[i]));
    float ok[2] = {0.1f, 0.1f};
    ASSERT_OK(hal_robot_step(r, ok, &o, &err), &err);
    hal_obs_free(&o);
    hal_robot_close(r);
}

/* Physics that blows up (an absurd actuator gain on a tiny mass) is an error
 * naming the problem, not a silently reset state passed off as valid. */
static void test_diverged_physics(void)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/unstable.xml", test_tmpdir());
    write_file(path, "<mujoco><custom><text name='corral_mode' data='joint_position'/></custom>"
               "<worldbody><body><joint name='x' type='slide' axis='1 0 0' limited='true' range='-1 1'/>"
               "<geom type='sphere' size='0.01' mass='0.000001'/><site name='ee'/></body>"
               "<body name='target' mocap='true'/></worldbody>"
               "<actuator><position name='x' joint='x' kp='1e15'/></actuator></mujoco>");
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model(path, NULL, 0, &err, &rc);
    ASSERT_OK(rc, &err);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 1, &o, &err), &err);
    float a[1] = {0.9f};
    rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++) rc = hal_robot_step(r, a, &o, &err);
    ASSERT_INT_EQ(rc, CR_EINTERNAL);
    ASSERT_TRUE(strstr(err.msg, "robot sim-1") && strstr(err.msg, "physics diverged"));
    hal_health_t h;
    hal_robot_health(r, &h);
    ASSERT_TRUE(h.errors >= 1);
    ASSERT_OK(hal_robot_reset(r, 2, &o, &err), &err);   /* a reset recovers */
    hal_obs_free(&o);
    hal_robot_close(r);
}

/* Renders reach2d's first frame after reset 1 with the given GL into img
 * (48x32x3). Returns 0, or CR_EUNAVAIL with why filled. */
static int first_frame(const char *gl, uint8_t *img, char *why, size_t why_len)
{
    cr_err_t err = {0};
    int rc;
    char glopt[32];
    snprintf(glopt, sizeof glopt, "gl=%s", gl);
    const char *kv[] = {"camera=top", "image_width=48", "image_height=32", glopt};
    hal_robot_t *r = open_model("reach2d", kv, 4, &err, &rc);
    if (rc) {
        snprintf(why, why_len, "%s", err.msg);
        return rc;
    }
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 1, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 1, &o, &err), &err);
    memcpy(img, o.img, 48 * 32 * 3);
    hal_obs_free(&o);
    hal_robot_close(r);
    return 0;
}

/* OSMesa is the fallback where EGL is missing; both must draw the same scene.
 * MuJoCo renders with one GL per process, so the OSMesa frame is drawn in a
 * child process and sent back through a pipe. */
static void test_camera_backends(void)
{
    setup_env();
    static uint8_t egl[48 * 32 * 3], osm[48 * 32 * 3];
    char why[300] = "";
    int fd[2];
    ASSERT_INT_EQ(pipe(fd), 0);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        int rc = first_frame("osmesa", osm, why, sizeof why);
        ssize_t n = rc ? write(fd[1], why, strlen(why)) : write(fd[1], osm, sizeof osm);
        _exit(rc == 0 && n == (ssize_t)sizeof osm ? 0 : rc == CR_EUNAVAIL ? 3 : 1);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t n;
    while (got < sizeof osm && (n = read(fd[0], osm + got, sizeof osm - got)) > 0) got += (size_t)n;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 3) {
        memcpy(why, osm, got < sizeof why - 1 ? got : sizeof why - 1);
        TEST_SKIP_IF(1, "OSMesa unavailable here: %s", why);
    }
    ASSERT_INT_EQ(WEXITSTATUS(status), 0);
    ASSERT_INT_EQ((int)got, (int)sizeof osm);
    int distinct = 0;
    for (size_t i = 0; i < sizeof osm; i += 3) distinct += memcmp(osm + i, osm, 3) != 0;
    ASSERT_TRUE(distinct > 20);

    int rc = first_frame("egl", egl, why, sizeof why);
    TEST_SKIP_IF(rc == CR_EUNAVAIL, "EGL unavailable here (OSMesa works): %s", why);
    ASSERT_INT_EQ(rc, 0);
    double diff = 0;
    for (size_t i = 0; i < sizeof osm; i++) diff += abs((int)osm[i] - (int)egl[i]);
    diff /= (double)sizeof osm;
    printf("    mean |osmesa - egl| per channel: %.2f\n", diff);
    ASSERT_TRUE(diff < 8.0);

    /* Now that this process renders with EGL, asking for OSMesa says why not. */
    rc = first_frame("osmesa", osm, why, sizeof why);
    ASSERT_INT_EQ(rc, CR_EINVAL);
    ASSERT_TRUE(strstr(why, "already renders with egl") != NULL);
    /* A GL that does not exist is a clear error, not a silent fallback. */
    cr_err_t err = {0};
    const char *kv[] = {"camera=top", "gl=vulkan"};
    hal_robot_t *r = open_model("reach2d", kv, 2, &err, &rc);
    ASSERT_TRUE(r == NULL && rc == CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "gl='vulkan'") != NULL);
}

/* reach2d_multi: three named targets, a goal per episode drawn from the seed,
 * ee_to_targets instead of ee_to_target, reward measured to the goal. */
static void test_multi_target(void)
{
    setup_env();
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model("reach2d_multi", NULL, 0, &err, &rc);
    ASSERT_OK(rc, &err);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    ASSERT_INT_EQ(d->n_goals, 3);
    ASSERT_STR_EQ(d->goals[0], "red");
    ASSERT_STR_EQ(d->goals[2], "blue");
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(d, 0, &o, &err), &err);
    ASSERT_TRUE(hal_obs_vec(d, &o, "ee_to_target") == NULL);
    int seen[3] = {0};
    for (uint64_t ep = 0; ep < 30; ep++) {
        ASSERT_OK(hal_robot_reset(r, ep, &o, &err), &err);
        ASSERT_TRUE(o.goal >= 0 && o.goal < 3);
        seen[o.goal]++;
        const float *e = hal_obs_vec(d, &o, "ee_to_targets");
        ASSERT_TRUE(e != NULL);
        /* the reward is minus the distance to the goal */
        const float *g = e + 3 * o.goal;
        ASSERT_NEAR(o.reward, -sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]), 1e-5);
        /* the targets are apart */
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < i; j++)
                ASSERT_TRUE(hypot(e[3 * i] - e[3 * j], e[3 * i + 1] - e[3 * j + 1]) > 0.05);
    }
    ASSERT_TRUE(seen[0] && seen[1] && seen[2]);
    int goal = o.goal;
    ASSERT_OK(hal_robot_reset(r, 29, &o, &err), &err);
    ASSERT_INT_EQ(o.goal, goal);   /* same seed, same goal */
    hal_obs_free(&o);
    hal_robot_close(r);

    /* a malformed target list is named */
    char path[4300];
    snprintf(path, sizeof path, "%s/badtargets.xml", test_tmpdir());
    write_file(path, "<mujoco><custom><text name='corral_targets' data='red:target green:nobody'/></custom>"
               "<worldbody><body name='l'><joint name='j' axis='0 0 1'/><geom type='capsule' fromto='0 0 0 .1 0 0' "
               "size='.01'/><site name='ee' pos='.1 0 0'/></body><body name='target' mocap='true'>"
               "<geom type='sphere' size='.01'/></body></worldbody>"
               "<actuator><velocity name='m' joint='j'/></actuator></mujoco>");
    r = open_model(path, NULL, 0, &err, &rc);
    ASSERT_INT_EQ(rc, CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "target 'green': no mocap body named 'nobody'") != NULL);
}

/* The scripted expert reaches the goal: end-effector control (reach2d) and
 * joint-velocity control through inverse kinematics (reach2d_multi). */
static void check_expert(const char *model, int min_wins)
{
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model(model, NULL, 0, &err, &rc);
    ASSERT_OK(rc, &err);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(d, 0, &o, &err), &err);
    int wins = 0;
    for (uint64_t ep = 0; ep < 20; ep++) {
        ASSERT_OK(hal_robot_reset(r, 100 + ep, &o, &err), &err);
        while (!o.truncated) {
            float a[HAL_MAX_DOF];
            ASSERT_OK(hal_robot_expert(r, a, &err), &err);
            for (int i = 0; i < d->act.dim; i++) ASSERT_TRUE(a[i] >= d->act.low[i] && a[i] <= d->act.high[i]);
            ASSERT_OK(hal_robot_step(r, a, &o, &err), &err);
        }
        wins += o.success;
    }
    fprintf(stderr, "  %s expert: %d/20\n", model, wins);
    ASSERT_TRUE(wins >= min_wins);
    hal_obs_free(&o);
    hal_robot_close(r);
}

static void test_expert(void)
{
    setup_env();
    check_expert("reach2d", 18);
    check_expert("reach2d_multi", 18);
    /* push has none: a clear refusal */
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_model("push", NULL, 0, &err, &rc);
    ASSERT_OK(rc, &err);
    float a[3];
    ASSERT_INT_EQ(hal_robot_expert(r, a, &err), CR_ENOTSUP);
    ASSERT_TRUE(strstr(err.msg, "push task has no scripted expert") != NULL);
    hal_robot_close(r);
}

static void test_camera(void)
{
    setup_env();
    cr_err_t err = {0};
    int rc;
    const char *kv[] = {"camera=top", "image_width=48", "image_height=32"};
    hal_robot_t *r = open_model("reach2d", kv, 3, &err, &rc);
    TEST_SKIP_IF(rc == CR_EUNAVAIL, "headless rendering unavailable here: %s", err.msg);
    ASSERT_OK(rc, &err);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    ASSERT_INT_EQ(d->obs.n_cams, 1);
    ASSERT_INT_EQ(d->obs.img_total, 48 * 32 * 3);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(d, 1, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 1, &o, &err), &err);
    /* The image is not blank: the arm, target and floor differ in colour. */
    int distinct = 0;
    uint8_t first[3] = {o.img[0], o.img[1], o.img[2]};
    for (size_t i = 0; i < d->obs.img_total; i += 3)
        distinct += memcmp(o.img + i, first, 3) != 0;
    ASSERT_TRUE(distinct > 20);
    uint8_t *before = malloc(d->obs.img_total);
    memcpy(before, o.img, d->obs.img_total);
    float a[2] = {1, 1};
    for (int i = 0; i < 5; i++) ASSERT_OK(hal_robot_step(r, a, &o, &err), &err);
    ASSERT_TRUE(memcmp(before, o.img, d->obs.img_total) != 0);   /* the arm moved */
    /* Without an image buffer nothing is rendered and the step still works. */
    free(o.img);
    o.img = NULL;
    ASSERT_OK(hal_robot_step(r, a, &o, &err), &err);
    free(before);
    hal_obs_free(&o);
    hal_robot_close(r);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"reach2d", test_reach2d},
        {"arm7", test_arm7},
        {"push", test_push},
        {"reach_success", test_reach_success},
        {"camera_backends", test_camera_backends},
        {"realtime_pacing", test_realtime_pacing},
        {"user_mjcf", test_user_mjcf},
        {"bad_models", test_bad_models},
        {"nan_action_sim", test_nan_action_sim},
        {"diverged_physics", test_diverged_physics},
        {"camera", test_camera},
        {"multi_target", test_multi_target},
        {"expert", test_expert},
        {NULL, NULL},
    };
    return test_main("hal_mujoco", cases, argc, argv);
}
