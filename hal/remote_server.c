/* remote_server.c - serves an open HAL robot over corral.v1.RobotService: the
 * server side of the `remote` driver. A vendor writing a server in another
 * language implements the same five methods; this one lets corral expose any of
 * its own robots (and is what the tests run against).
 *
 * Requests are untrusted: a command of the wrong length is INVALID_ARGUMENT, and
 * every command goes through the served robot's own safety layer (command /
 * scale gives back the action), so a NaN or an out-of-range value sent by a
 * client is refused or clamped here too. */
#include "hal/hal.h"
#include "common/rpc/rpc.h"
#include "corral/v1/robot.pb-c.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct hal_remote_server {
    hal_robot_t *robot;
    rpc_server_t *srv;
    rpc_method_t methods[5];
    pthread_mutex_t mu;     /* guards obs */
    hal_obs_t obs;
};

static void reply_desc(hal_remote_server_t *s, rpc_call_t *c)
{
    const hal_robot_desc_t *d = hal_robot_desc(s->robot);
    Corral__V1__RobotDescription m = CORRAL__V1__ROBOT_DESCRIPTION__INIT;
    Corral__V1__VecSpec vecs[HAL_MAX_VECS], *vp[HAL_MAX_VECS];
    Corral__V1__CameraSpec cams[HAL_MAX_CAMS], *cp[HAL_MAX_CAMS];
    for (int i = 0; i < d->obs.n_vecs; i++) {
        corral__v1__vec_spec__init(&vecs[i]);
        vecs[i].name = (char *)d->obs.vecs[i].name;
        vecs[i].unit = (char *)d->obs.vecs[i].unit;
        vecs[i].dim = (uint32_t)d->obs.vecs[i].dim;
        vp[i] = &vecs[i];
    }
    for (int i = 0; i < d->obs.n_cams; i++) {
        corral__v1__camera_spec__init(&cams[i]);
        cams[i].name = (char *)d->obs.cams[i].name;
        cams[i].width = (uint32_t)d->obs.cams[i].width;
        cams[i].height = (uint32_t)d->obs.cams[i].height;
        cp[i] = &cams[i];
    }
    m.model = (char *)d->model;
    m.rate_hz = d->rate_hz;
    m.realtime = d->realtime;
    m.episode_steps = (uint32_t)d->episode_steps;
    m.n_vecs = (size_t)d->obs.n_vecs;
    m.vecs = vp;
    m.n_cameras = (size_t)d->obs.n_cams;
    m.cameras = cp;
    m.mode = (Corral__V1__ControlMode)d->act.mode;
    m.act_dim = (uint32_t)d->act.dim;
    m.n_act_low = m.n_act_high = m.n_act_scale = (size_t)d->act.dim;
    m.act_low = (float *)d->act.low;
    m.act_high = (float *)d->act.high;
    m.act_scale = (float *)d->act.scale;
    m.n_joint_low = m.n_joint_high = (size_t)d->limits.n_joints;
    m.joint_low = (double *)d->limits.joint_low;
    m.joint_high = (double *)d->limits.joint_high;
    m.has_workspace = d->limits.has_workspace;
    m.n_ws_low = m.n_ws_high = d->limits.has_workspace ? 3 : 0;
    m.ws_low = (double *)d->limits.ws_low;
    m.ws_high = (double *)d->limits.ws_high;
    m.max_step = d->limits.max_step;
    cr_err_t err = {0};
    rpc_call_reply(c, &m.base, &err);
}

/* Caller holds s->mu; s->obs holds the state to send. */
static void reply_obs(hal_remote_server_t *s, rpc_call_t *c, int with_images)
{
    const hal_robot_desc_t *d = hal_robot_desc(s->robot);
    Corral__V1__Observation m = CORRAL__V1__OBSERVATION__INIT;
    double q[HAL_MAX_DOF] = {0}, ee[3] = {0};
    cr_err_t err = {0};
    hal_robot_joints(s->robot, q, ee, &err);
    m.n_vec = (size_t)d->obs.vec_total;
    m.vec = s->obs.vec;
    if (with_images && s->obs.img) {
        m.images.data = s->obs.img;
        m.images.len = d->obs.img_total;
    }
    m.stamp_ns = s->obs.stamp_ns;
    m.step = s->obs.step;
    m.reward = s->obs.reward;
    m.terminated = s->obs.terminated;
    m.truncated = s->obs.truncated;
    m.success = s->obs.success;
    m.n_joint_pos = (size_t)d->limits.n_joints;
    m.joint_pos = q;
    m.n_ee_pos = 3;
    m.ee_pos = ee;
    rpc_call_reply(c, &m.base, &err);
}

static void on_message(rpc_call_t *c, const ProtobufCMessage *msg)
{
    hal_remote_server_t *s = rpc_call_method(c)->user;
    const char *name = strrchr(rpc_call_method(c)->name, '/') + 1;
    const hal_robot_desc_t *d = hal_robot_desc(s->robot);
    cr_err_t err = {0};
    int rc = 0;
    if (!strcmp(name, "Describe")) {
        reply_desc(s, c);
        return;
    }
    pthread_mutex_lock(&s->mu);
    uint8_t *img = s->obs.img;
    if (!strcmp(name, "Reset")) {
        const Corral__V1__ResetRequest *r = (const void *)msg;
        if (!r->with_images) s->obs.img = NULL;
        rc = hal_robot_reset(s->robot, r->seed, &s->obs, &err);
        s->obs.img = img;
        if (!rc) reply_obs(s, c, r->with_images);
    } else if (!strcmp(name, "Observe")) {
        const Corral__V1__ObserveRequest *r = (const void *)msg;
        if (!r->with_images) s->obs.img = NULL;
        rc = hal_robot_observe(s->robot, &s->obs, &err);
        s->obs.img = img;
        if (!rc) reply_obs(s, c, r->with_images);
    } else if (!strcmp(name, "Act")) {
        const Corral__V1__ActRequest *r = (const void *)msg;
        if ((int)r->n_command != d->act.dim) {
            rc = cr_err_set(&err, CR_EINVAL, "command has %zu values, the robot takes %d",
                            r->n_command, d->act.dim);
        } else {
            float a[HAL_MAX_DOF];
            for (int i = 0; i < d->act.dim; i++) a[i] = (float)(r->command[i] / d->act.scale[i]);
            rc = hal_robot_act(s->robot, a, &err);
            if (!rc) {
                Corral__V1__ActReply rep = CORRAL__V1__ACT_REPLY__INIT;
                rpc_call_reply(c, &rep.base, &err);
            }
        }
    } else if (!strcmp(name, "Estop")) {
        rc = hal_robot_estop(s->robot, &err);
        if (!rc) {
            Corral__V1__EstopReply rep = CORRAL__V1__ESTOP_REPLY__INIT;
            rpc_call_reply(c, &rep.base, &err);
        }
    }
    pthread_mutex_unlock(&s->mu);
    /* A latched e-stop is ABORTED (the client sees CR_EBUSY), not UNAVAILABLE,
     * which would read as "server down, retry". */
    if (rc == CR_EBUSY) rpc_call_finish(c, RPC_ABORTED, "%s", err.msg);
    else if (rc) rpc_call_fail(c, &err);
}

int hal_remote_server_create(hal_robot_t *robot, const char *addr, const void *rpc_opts,
                             hal_remote_server_t **out, cr_err_t *err)
{
    hal_remote_server_t *s = calloc(1, sizeof *s);
    if (!s) return cr_err_set(err, CR_ENOMEM, "out of memory");
    s->robot = robot;
    pthread_mutex_init(&s->mu, NULL);
    int rc = hal_obs_alloc(hal_robot_desc(robot), 1, &s->obs, err);
    if (rc) {
        free(s);
        return rc;
    }
    struct { const char *name; const ProtobufCMessageDescriptor *in, *out; } tab[5] = {
        {"/corral.v1.RobotService/Describe", &corral__v1__describe_request__descriptor,
         &corral__v1__robot_description__descriptor},
        {"/corral.v1.RobotService/Reset", &corral__v1__reset_request__descriptor,
         &corral__v1__observation__descriptor},
        {"/corral.v1.RobotService/Observe", &corral__v1__observe_request__descriptor,
         &corral__v1__observation__descriptor},
        {"/corral.v1.RobotService/Act", &corral__v1__act_request__descriptor,
         &corral__v1__act_reply__descriptor},
        {"/corral.v1.RobotService/Estop", &corral__v1__estop_request__descriptor,
         &corral__v1__estop_reply__descriptor},
    };
    for (int i = 0; i < 5; i++) {
        s->methods[i] = (rpc_method_t){.name = tab[i].name, .kind = RPC_UNARY, .input = tab[i].in,
                                       .output = tab[i].out, .user = s, .on_message = on_message};
    }
    rpc_opts_t dflt = {0};
    const rpc_opts_t *ro = rpc_opts ? rpc_opts : &dflt;
    rc = rpc_server_create(&s->srv, addr, ro, s->methods, 5, err);
    if (!rc) rc = rpc_server_start(s->srv, err);
    if (rc) {
        hal_remote_server_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

int hal_remote_server_port(const hal_remote_server_t *srv) { return rpc_server_port(srv->srv); }

void hal_remote_server_destroy(hal_remote_server_t *s)
{
    if (!s) return;
    rpc_server_destroy(s->srv);
    hal_obs_free(&s->obs);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
