/* drv_remote.c - the `remote` driver: a robot served by another process over
 * gRPC (corral.v1.RobotService, proto/corral/v1/robot.proto), so any vendor SDK
 * in any language can stand behind the HAL.
 *
 * Everything the server sends is checked before use: a description whose sizes
 * exceed the HAL's limits or disagree with each other, an observation whose
 * vector or image size differs from the description, are protocol errors naming
 * the server and the field; they never reach a caller's buffer. Every call has a
 * deadline, so a dead or frozen server is an error within timeout_ms, and the
 * caller's robot keeps its last safe command. */
#include "hal/drv.h"
#include "common/rpc/rpc.h"
#include "corral/v1/robot.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct remote_cfg {
    char target[256];
    int timeout_ms;
    char security[16];
    char cert_dir[512];
    char server_name[256];
    char token[512];
} remote_cfg_t;

#define OFF(f) offsetof(remote_cfg_t, f)
#define SZ(f) sizeof(((remote_cfg_t *)0)->f)
static const drv_opt_t remote_opts[] = {
    {"target", DRV_STR, 0, 0, OFF(target), SZ(target), "host:port of the RobotService"},
    {"timeout_ms", DRV_INT, 1, 600000, OFF(timeout_ms), 0, "deadline of each call"},
    {"security", DRV_STR, 0, 0, OFF(security), SZ(security), "insecure, tls or mtls"},
    {"cert_dir", DRV_STR, 0, 0, OFF(cert_dir), SZ(cert_dir), "ca.pem, cert.pem, key.pem"},
    {"server_name", DRV_STR, 0, 0, OFF(server_name), SZ(server_name), "TLS name override"},
    {"token", DRV_STR, 0, 0, OFF(token), SZ(token), "bearer token"},
};

#define M_DESCRIBE "/corral.v1.RobotService/Describe"
#define M_RESET "/corral.v1.RobotService/Reset"
#define M_OBSERVE "/corral.v1.RobotService/Observe"
#define M_ACT "/corral.v1.RobotService/Act"
#define M_ESTOP "/corral.v1.RobotService/Estop"

typedef struct remote {
    remote_cfg_t cfg;
    rpc_channel_t *ch;
    hal_robot_desc_t desc;
    double q[HAL_MAX_DOF], ee[3];
    int ok;
    int64_t errors;
    char last_error[200];
} remote_t;

static int call(remote_t *r, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, cr_err_t *err)
{
    int rc = rpc_unary(r->ch, method, req, resp_desc, resp, r->cfg.timeout_ms, err);
    r->ok = rc == 0;
    if (rc) {
        r->errors++;
        cr_err_wrap(err, "remote %s %s", r->cfg.target, strrchr(method, '/') + 1);
        snprintf(r->last_error, sizeof r->last_error, "%s", err ? err->msg : "call failed");
    }
    return rc;
}

static int bad(remote_t *r, cr_err_t *err, const char *what)
{
    r->errors++;
    r->ok = 0;
    return cr_err_set(err, CR_EPROTO, "remote %s: bad description from server: %s", r->cfg.target,
                      what);
}

/* Copies a RobotDescription into the HAL's, refusing anything out of bounds. */
static int take_desc(remote_t *r, const Corral__V1__RobotDescription *m, cr_err_t *err)
{
    hal_robot_desc_t *d = &r->desc;
    if (!(m->rate_hz > 0 && m->rate_hz <= 100000)) return bad(r, err, "rate_hz out of range");
    if (m->n_vecs > HAL_MAX_VECS) return bad(r, err, "too many vecs");
    if (m->n_cameras > HAL_MAX_CAMS) return bad(r, err, "too many cameras");
    if (m->act_dim < 1 || m->act_dim > HAL_MAX_DOF) return bad(r, err, "act_dim out of range");
    if (m->n_act_low != m->act_dim || m->n_act_high != m->act_dim || m->n_act_scale != m->act_dim)
        return bad(r, err, "act_low/act_high/act_scale must have act_dim values");
    if (m->n_joint_low != m->n_joint_high || m->n_joint_low > HAL_MAX_DOF)
        return bad(r, err, "joint_low/joint_high sizes differ or exceed the limit");
    if (m->has_workspace && (m->n_ws_low != 3 || m->n_ws_high != 3))
        return bad(r, err, "ws_low/ws_high must have 3 values");
    if (m->mode > CORRAL__V1__CONTROL_MODE__EE_DELTA) return bad(r, err, "unknown control mode");
    snprintf(d->model, sizeof d->model, "%s", m->model);
    d->rate_hz = m->rate_hz;
    d->realtime = m->realtime;
    d->episode_steps = (int)m->episode_steps;
    int total = 0;
    for (size_t i = 0; i < m->n_vecs; i++) {
        if (m->vecs[i]->dim < 1 || m->vecs[i]->dim > 4096 || (total += (int)m->vecs[i]->dim) > 65536)
            return bad(r, err, "vec dim out of range");
        drv_spec_vec(&d->obs, m->vecs[i]->name, m->vecs[i]->unit, (int)m->vecs[i]->dim);
    }
    for (size_t i = 0; i < m->n_cameras; i++) {
        const Corral__V1__CameraSpec *c = m->cameras[i];
        if (c->width < 1 || c->width > 4096 || c->height < 1 || c->height > 4096)
            return bad(r, err, "camera size out of range");
        hal_cam_spec_t *cs = &d->obs.cams[d->obs.n_cams++];
        snprintf(cs->name, sizeof cs->name, "%s", c->name);
        cs->width = (int)c->width;
        cs->height = (int)c->height;
        cs->offset = d->obs.img_total;
        d->obs.img_total += (size_t)c->width * c->height * 3;
    }
    d->act.dim = (int)m->act_dim;
    d->act.mode = (hal_ctrl_mode_t)m->mode;
    for (int i = 0; i < d->act.dim; i++) {
        d->act.low[i] = m->act_low[i];
        d->act.high[i] = m->act_high[i];
        d->act.scale[i] = m->act_scale[i];
        if (!(d->act.low[i] <= d->act.high[i]) || !(d->act.scale[i] > 0))
            return bad(r, err, "action bounds or scale invalid");
    }
    d->limits.n_joints = (int)m->n_joint_low;
    for (int i = 0; i < d->limits.n_joints; i++) {
        d->limits.joint_low[i] = m->joint_low[i];
        d->limits.joint_high[i] = m->joint_high[i];
    }
    d->limits.has_workspace = m->has_workspace;
    for (int k = 0; m->has_workspace && k < 3; k++) {
        d->limits.ws_low[k] = m->ws_low[k];
        d->limits.ws_high[k] = m->ws_high[k];
    }
    d->limits.max_step = m->max_step;
    d->limits.watchdog_periods = 2;
    return 0;
}

static void remote_close(void *st)
{
    remote_t *r = st;
    if (!r) return;
    rpc_channel_destroy(r->ch);
    free(r);
}

static int remote_open(const char *robot, const char *model, const hal_opt_t *opts, int n_opts,
                       void **state, cr_err_t *err)
{
    remote_cfg_t cfg = {.timeout_ms = 2000, .security = "insecure"};
    int rc = drv_opts_apply(robot, remote_opts, sizeof remote_opts / sizeof remote_opts[0], opts,
                            n_opts, &cfg, err);
    if (rc) return rc;
    if (!cfg.target[0]) return cr_err_set(err, CR_EINVAL, "robot %s: option target is required", robot);
    rpc_opts_t ro = {0};
    if (!strcmp(cfg.security, "insecure")) ro.security = RPC_INSECURE;
    else if (!strcmp(cfg.security, "tls")) ro.security = RPC_TLS;
    else if (!strcmp(cfg.security, "mtls")) ro.security = RPC_MTLS;
    else return cr_err_set(err, CR_EINVAL, "robot %s: option security='%s' must be insecure, tls "
                           "or mtls", robot, cfg.security);
    ro.cert_dir = cfg.cert_dir[0] ? cfg.cert_dir : NULL;
    ro.server_name = cfg.server_name[0] ? cfg.server_name : NULL;
    ro.token = cfg.token[0] ? cfg.token : NULL;
    remote_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "out of memory");
    r->cfg = cfg;
    rc = rpc_channel_create(&r->ch, cfg.target, &ro, err);
    if (rc) {
        free(r);
        return rc;
    }
    Corral__V1__DescribeRequest req = CORRAL__V1__DESCRIBE_REQUEST__INIT;
    req.robot = (char *)robot;
    req.model = (char *)model;
    ProtobufCMessage *resp = NULL;
    rc = call(r, M_DESCRIBE, &req.base, &corral__v1__robot_description__descriptor, &resp, err);
    if (!rc) rc = take_desc(r, (const Corral__V1__RobotDescription *)resp, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (rc) {
        remote_close(r);
        return rc;
    }
    *state = r;
    return 0;
}

static void remote_describe(void *st, hal_robot_desc_t *d) { *d = ((remote_t *)st)->desc; }

/* Checks and copies an observation; also caches joints for the safety layer. */
static int take_obs(remote_t *r, const Corral__V1__Observation *m, hal_obs_t *obs, cr_err_t *err)
{
    const hal_robot_desc_t *d = &r->desc;
    if ((int)m->n_vec != d->obs.vec_total) {
        r->errors++;
        return cr_err_set(err, CR_EPROTO, "remote %s: observation has %zu floats, the description "
                          "says %d", r->cfg.target, m->n_vec, d->obs.vec_total);
    }
    if (obs && obs->img && m->images.len != d->obs.img_total) {
        r->errors++;
        return cr_err_set(err, CR_EPROTO, "remote %s: observation has %zu image bytes, expected %zu",
                          r->cfg.target, m->images.len, d->obs.img_total);
    }
    if ((int)m->n_joint_pos == d->limits.n_joints)
        memcpy(r->q, m->joint_pos, sizeof(double) * m->n_joint_pos);
    if (m->n_ee_pos == 3) memcpy(r->ee, m->ee_pos, sizeof r->ee);
    if (!obs) return 0;
    memcpy(obs->vec, m->vec, sizeof(float) * m->n_vec);
    if (obs->img && m->images.len) memcpy(obs->img, m->images.data, m->images.len);
    obs->stamp_ns = m->stamp_ns;
    obs->step = m->step;
    obs->reward = m->reward;
    obs->terminated = m->terminated;
    obs->truncated = m->truncated;
    obs->success = m->success;
    return 0;
}

static int remote_reset(void *st, uint64_t seed, cr_err_t *err)
{
    remote_t *r = st;
    Corral__V1__ResetRequest req = CORRAL__V1__RESET_REQUEST__INIT;
    req.seed = seed;
    ProtobufCMessage *resp = NULL;
    int rc = call(r, M_RESET, &req.base, &corral__v1__observation__descriptor, &resp, err);
    if (!rc) rc = take_obs(r, (const Corral__V1__Observation *)resp, NULL, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int remote_observe(void *st, hal_obs_t *obs, cr_err_t *err)
{
    remote_t *r = st;
    Corral__V1__ObserveRequest req = CORRAL__V1__OBSERVE_REQUEST__INIT;
    req.with_images = obs->img != NULL && r->desc.obs.img_total > 0;
    ProtobufCMessage *resp = NULL;
    int rc = call(r, M_OBSERVE, &req.base, &corral__v1__observation__descriptor, &resp, err);
    if (!rc) rc = take_obs(r, (const Corral__V1__Observation *)resp, obs, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int remote_act(void *st, const double *cmd, cr_err_t *err)
{
    remote_t *r = st;
    Corral__V1__ActRequest req = CORRAL__V1__ACT_REQUEST__INIT;
    req.n_command = (size_t)r->desc.act.dim;
    req.command = (double *)cmd;
    ProtobufCMessage *resp = NULL;
    int rc = call(r, M_ACT, &req.base, &corral__v1__act_reply__descriptor, &resp, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static int remote_estop(void *st, cr_err_t *err)
{
    remote_t *r = st;
    Corral__V1__EstopRequest req = CORRAL__V1__ESTOP_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = call(r, M_ESTOP, &req.base, &corral__v1__estop_reply__descriptor, &resp, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

static void remote_health(void *st, hal_health_t *h)
{
    remote_t *r = st;
    h->ok = r->ok;
    h->errors = r->errors;
    snprintf(h->detail, sizeof h->detail, "remote %s%s%s", r->cfg.target, r->ok ? "" : ": ",
             r->ok ? "" : r->last_error);
}

static int remote_joints(void *st, double *q, double *ee, cr_err_t *err)
{
    remote_t *r = st;
    memcpy(q, r->q, sizeof(double) * (size_t)r->desc.limits.n_joints);
    memcpy(ee, r->ee, sizeof r->ee);
    return 0;
}

const hal_driver_t hal_driver_remote = {
    .name = "remote", .open = remote_open, .close = remote_close, .describe = remote_describe,
    .reset = remote_reset, .observe = remote_observe, .act = remote_act, .estop = remote_estop,
    .health = remote_health, .joints = remote_joints,
};
