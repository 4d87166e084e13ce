/* test_remote.c - the remote driver against RobotService servers: a separate
 * process serving a mock robot (compared step by step with the same robot
 * opened locally), killed with SIGKILL mid-episode; and in-process servers that
 * send malformed descriptions and observations. */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tests/harness.h"
#include "hal/hal.h"
#include "common/rpc/rpc.h"
#include "common/time.h"
#include "corral/v1/robot.pb-c.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct server_proc {
    pid_t pid;
    int port;
} server_proc_t;

static server_proc_t spawn_server(const char *const *args)
{
    server_proc_t sp = {0};
    int fds[2];
    ASSERT_TRUE(pipe(fds) == 0);
    sp.pid = fork();
    if (sp.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive a failed test */
        dup2(fds[1], 1);
        close(fds[0]);
        execv(test_build_path("tests/hal_robot_server"), (char *const *)args);
        _exit(127);
    }
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    ASSERT_TRUE(fscanf(f, "port %d", &sp.port) == 1);
    fclose(f);
    return sp;
}

static void kill_server(server_proc_t *sp)
{
    kill(sp->pid, SIGKILL);
    waitpid(sp->pid, NULL, 0);
}

static hal_robot_t *open_remote(int port, const char *extra, cr_err_t *err, int *rc)
{
    char target[64];
    snprintf(target, sizeof target, "target=127.0.0.1:%d", port);
    const char *kv[] = {target, "timeout_ms=1000", extra};
    hal_opt_t opts[3];
    int n = extra ? 3 : 2;
    hal_opts_parse(kv, n, opts, err);
    hal_robot_t *r = NULL;
    *rc = hal_robot_open("far-arm", "remote", "", opts, n, &r, err);
    return r;
}

static void test_matches_local(void)
{
    const char *args[] = {"robot_server", "mock", "", "dof=3", "max_step=0.3", NULL};
    server_proc_t sp = spawn_server(args);
    cr_err_t err = {0};
    int rc;
    hal_robot_t *rem = open_remote(sp.port, NULL, &err, &rc);
    ASSERT_OK(rc, &err);
    const char *kv[] = {"dof=3", "max_step=0.3"};
    hal_opt_t opts[2];
    hal_opts_parse(kv, 2, opts, &err);
    hal_robot_t *loc;
    ASSERT_OK(hal_robot_open("near-arm", "mock", "", opts, 2, &loc, &err), &err);
    const hal_robot_desc_t *dr = hal_robot_desc(rem), *dl = hal_robot_desc(loc);
    ASSERT_STR_EQ(dr->driver, "remote");
    ASSERT_INT_EQ(dr->obs.vec_total, dl->obs.vec_total);
    ASSERT_INT_EQ(dr->act.dim, dl->act.dim);
    ASSERT_STR_EQ(dr->obs.vecs[2].name, "ee_pos");
    ASSERT_NEAR(dr->limits.max_step, 0.3, 1e-12);
    ASSERT_NEAR(dr->limits.joint_high[2], dl->limits.joint_high[2], 0);
    hal_obs_t orem, oloc;
    ASSERT_OK(hal_obs_alloc(dr, 0, &orem, &err), &err);
    ASSERT_OK(hal_obs_alloc(dl, 0, &oloc, &err), &err);
    ASSERT_OK(hal_robot_reset(rem, 9, &orem, &err), &err);
    ASSERT_OK(hal_robot_reset(loc, 9, &oloc, &err), &err);
    for (int t = 0; t < 10; t++) {
        float a[3] = {0.5f * (float)t, -0.1f, 3.0f};   /* steps capped, last clamped */
        ASSERT_OK(hal_robot_step(rem, a, &orem, &err), &err);
        ASSERT_OK(hal_robot_step(loc, a, &oloc, &err), &err);
        /* Commands cross the wire as doubles and come back to float actions on
         * the server: equal to float rounding. */
        for (int i = 0; i < dl->obs.vec_total; i++)
            ASSERT_NEAR(orem.vec[i], oloc.vec[i], 1e-5 * (1 + fabs(oloc.vec[i])));
        ASSERT_NEAR(orem.reward, oloc.reward, 1e-6);
    }
    hal_safety_stats_t s;
    hal_robot_safety_stats(rem, &s);
    ASSERT_TRUE(s.capped_step > 0 && s.clamped_range > 0);
    /* NaN is refused before it leaves this process. */
    float bad[3] = {0, NAN, 0};
    ASSERT_INT_EQ(hal_robot_act(rem, bad, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robot far-arm") != NULL);
    /* E-stop reaches the server's robot: it refuses actions even from another client. */
    ASSERT_OK(hal_robot_estop(rem, &err), &err);
    hal_robot_t *rem2 = open_remote(sp.port, NULL, &err, &rc);
    ASSERT_OK(rc, &err);
    float ok[3] = {0, 0, 0};
    ASSERT_INT_EQ(hal_robot_act(rem2, ok, &err), CR_EBUSY);
    ASSERT_TRUE(strstr(err.msg, "e-stop latched") != NULL);
    hal_robot_close(rem2);

    /* The server dies mid-episode: calls fail quickly with an error naming the robot. */
    kill_server(&sp);
    int64_t t0 = cr_now_ns();
    rc = hal_robot_observe(rem, &orem, &err);
    ASSERT_TRUE(rc == CR_EUNAVAIL || rc == CR_ETIMEDOUT);
    ASSERT_TRUE((cr_now_ns() - t0) < 3 * CR_NS_PER_S);
    ASSERT_TRUE(strstr(err.msg, "robot far-arm") && strstr(err.msg, "Observe"));
    hal_health_t h;
    hal_robot_health(rem, &h);
    ASSERT_INT_EQ(h.ok, 0);
    hal_obs_free(&orem);
    hal_obs_free(&oloc);
    hal_robot_close(rem);
    hal_robot_close(loc);
}

static void test_server_checks_commands(void)
{
    cr_err_t err = {0};
    const char *kv[] = {"dof=2"};
    hal_opt_t opts[1];
    hal_opts_parse(kv, 1, opts, &err);
    hal_robot_t *r;
    ASSERT_OK(hal_robot_open("served", "mock", "", opts, 1, &r, &err), &err);
    hal_remote_server_t *srv;
    ASSERT_OK(hal_remote_server_create(r, "127.0.0.1:0", NULL, &srv, &err), &err);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", hal_remote_server_port(srv));
    rpc_opts_t ro = {0};
    rpc_channel_t *ch;
    ASSERT_OK(rpc_channel_create(&ch, target, &ro, &err), &err);
    Corral__V1__ActRequest req = CORRAL__V1__ACT_REQUEST__INIT;
    double three[3] = {0, 0, 0};
    req.n_command = 3;
    req.command = three;
    ProtobufCMessage *resp = NULL;
    ASSERT_INT_EQ(rpc_unary(ch, "/corral.v1.RobotService/Act", &req.base,
                            &corral__v1__act_reply__descriptor, &resp, 1000, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "command has 3 values, the robot takes 2") != NULL);
    double nan2[2] = {NAN, 0};
    req.n_command = 2;
    req.command = nan2;
    ASSERT_INT_EQ(rpc_unary(ch, "/corral.v1.RobotService/Act", &req.base,
                            &corral__v1__act_reply__descriptor, &resp, 1000, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "NaN") != NULL);
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.rejected_nan, 1);
    rpc_channel_destroy(ch);
    hal_remote_server_destroy(srv);
    hal_robot_close(r);
}

/* A server that lies: its description or its observations are malformed. */
typedef struct liar {
    int mode;   /* 0: act_dim too large; 1: observation of the wrong size */
} liar_t;

static void liar_message(rpc_call_t *c, const ProtobufCMessage *msg)
{
    liar_t *l = rpc_call_method(c)->user;
    cr_err_t err = {0};
    const char *name = strrchr(rpc_call_method(c)->name, '/') + 1;
    if (!strcmp(name, "Describe")) {
        Corral__V1__RobotDescription d = CORRAL__V1__ROBOT_DESCRIPTION__INIT;
        Corral__V1__VecSpec v = CORRAL__V1__VEC_SPEC__INIT, *vp = &v;
        v.name = "joint_pos";
        v.unit = "rad";
        v.dim = 2;
        float lo[2] = {-1, -1}, hi[2] = {1, 1}, sc[2] = {1, 1};
        double jl[2] = {-1, -1}, jh[2] = {1, 1};
        d.rate_hz = 50;
        d.n_vecs = 1;
        d.vecs = &vp;
        d.act_dim = l->mode == 0 ? 99 : 2;
        d.n_act_low = d.n_act_high = d.n_act_scale = 2;
        d.act_low = lo; d.act_high = hi; d.act_scale = sc;
        d.n_joint_low = d.n_joint_high = 2;
        d.joint_low = jl; d.joint_high = jh;
        rpc_call_reply(c, &d.base, &err);
    } else {
        Corral__V1__Observation o = CORRAL__V1__OBSERVATION__INIT;
        float v[5] = {0};
        o.n_vec = 5;
        o.vec = v;
        rpc_call_reply(c, &o.base, &err);
    }
}

static void test_malformed_server(void)
{
    for (int mode = 0; mode < 2; mode++) {
        liar_t l = {mode};
        rpc_method_t m[3] = {
            {.name = "/corral.v1.RobotService/Describe", .input = &corral__v1__describe_request__descriptor,
             .output = &corral__v1__robot_description__descriptor, .user = &l, .on_message = liar_message},
            {.name = "/corral.v1.RobotService/Reset", .input = &corral__v1__reset_request__descriptor,
             .output = &corral__v1__observation__descriptor, .user = &l, .on_message = liar_message},
            {.name = "/corral.v1.RobotService/Observe", .input = &corral__v1__observe_request__descriptor,
             .output = &corral__v1__observation__descriptor, .user = &l, .on_message = liar_message},
        };
        rpc_opts_t ro = {0};
        rpc_server_t *srv;
        cr_err_t err = {0};
        ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", &ro, m, 3, &err), &err);
        ASSERT_OK(rpc_server_start(srv, &err), &err);
        int rc;
        hal_robot_t *r = open_remote(rpc_server_port(srv), NULL, &err, &rc);
        if (mode == 0) {
            ASSERT_INT_EQ(rc, CR_EPROTO);
            ASSERT_TRUE(strstr(err.msg, "robot far-arm") && strstr(err.msg, "act_dim"));
        } else {
            ASSERT_OK(rc, &err);
            hal_obs_t o;
            ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
            ASSERT_INT_EQ(hal_robot_observe(r, &o, &err), CR_EPROTO);
            ASSERT_TRUE(strstr(err.msg, "5 floats, the description says 2") != NULL);
            /* Unimplemented methods (Act) are an error, not a crash. */
            float a[2] = {0, 0};
            ASSERT_TRUE(hal_robot_act(r, a, &err) != 0);
            ASSERT_TRUE(strstr(err.msg, "Act") != NULL);
            hal_obs_free(&o);
            hal_robot_close(r);
        }
        rpc_server_destroy(srv);
    }
    /* Nobody listening, and a missing target. */
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_remote(1, NULL, &err, &rc);
    ASSERT_TRUE(rc == CR_EUNAVAIL || rc == CR_ETIMEDOUT);
    ASSERT_TRUE(r == NULL);
    ASSERT_INT_EQ(hal_robot_open("far-arm", "remote", "", NULL, 0, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "option target is required") != NULL);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    static const test_case_t cases[] = {
        {"matches_local", test_matches_local},
        {"server_checks_commands", test_server_checks_commands},
        {"malformed_server", test_malformed_server},
        {NULL, NULL},
    };
    return test_main("hal_remote", cases, argc, argv);
}
