/* mj_task.c - what makes a simulated robot a learning task: the model's
 * conventions checked once (actuators, sites, bodies), the per-episode start
 * state and target drawn from a seed, the observation layout, the reward and the
 * success test.
 *
 * reach: reward = s (-|ee - target| - k |a|^2), success when the end-effector
 * is within success_dist of the target. push: reward = s (-|box - target| -
 * 0.5 |ee - box| - k |a|^2), success when the box centre is within success_dist
 * of the goal. s is the model's reward scale (1 unless corral_reward_scale or
 * the reward_scale option says otherwise). Success is evaluated on every observation; at the end of an
 * episode (truncated) it is the episode's result. */
#include "hal/mj.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(splitmix(s) >> 11) / (double)(1ULL << 53);
}

static double num_or(const mjModel *m, const char *name, double dflt)
{
    int size;
    const mjtNum *v = mj_custom_numeric(m, name, &size);
    return v && size >= 1 ? v[0] : dflt;
}

static int get_vec(const mjModel *m, const char *name, double *out, int want)
{
    int size;
    const mjtNum *v = mj_custom_numeric(m, name, &size);
    if (!v || size < want) return 0;
    for (int i = 0; i < want; i++) out[i] = v[i];
    return 1;
}

static int setup_actuators(mj_robot_t *r, cr_err_t *err)
{
    const mjModel *m = r->m;
    if (m->nu < 1) return cr_err_set(err, CR_EINVAL, "MJCF has no actuators (one named actuator "
                                     "per controlled joint is required)");
    if (m->nu > HAL_MAX_DOF)
        return cr_err_set(err, CR_EINVAL, "MJCF has %d actuators, at most %d supported", m->nu,
                          HAL_MAX_DOF);
    r->n = m->nu;
    for (int i = 0; i < m->nu; i++) {
        const char *name = mj_id2name(m, mjOBJ_ACTUATOR, i);
        if (!name || !name[0])
            return cr_err_set(err, CR_EINVAL, "actuator %d has no name (actuators must be named)", i);
        if (m->actuator_trntype[i] != mjTRN_JOINT)
            return cr_err_set(err, CR_EINVAL, "actuator '%s' does not drive a joint", name);
        int j = m->actuator_trnid[2 * i];
        if (m->jnt_type[j] != mjJNT_HINGE && m->jnt_type[j] != mjJNT_SLIDE)
            return cr_err_set(err, CR_EINVAL, "actuator '%s' drives a joint that is not a hinge or "
                              "slide", name);
        r->jnt[i] = j;
        r->qadr[i] = m->jnt_qposadr[j];
        r->dadr[i] = m->jnt_dofadr[j];
        hal_limits_t *L = &r->desc.limits;
        if (m->jnt_limited[j]) {
            L->joint_low[i] = m->jnt_range[2 * j];
            L->joint_high[i] = m->jnt_range[2 * j + 1];
        } else {
            L->joint_low[i] = -1e6;
            L->joint_high[i] = 1e6;
        }
    }
    r->desc.limits.n_joints = r->n;
    return 0;
}

static int setup_names(mj_robot_t *r, cr_err_t *err)
{
    const mjModel *m = r->m;
    r->site_ee = mj_name2id(m, mjOBJ_SITE, "ee");
    if (r->site_ee < 0)
        return cr_err_set(err, CR_EINVAL, "MJCF has no site named 'ee' (the end-effector)");
    r->body_target = mj_name2id(m, mjOBJ_BODY, "target");
    if (r->body_target < 0 || m->body_mocapid[r->body_target] < 0)
        return cr_err_set(err, CR_EINVAL, "MJCF has no mocap body named 'target'");
    r->mocap_target = m->body_mocapid[r->body_target];
    r->site_target = mj_name2id(m, mjOBJ_SITE, "target");
    r->body_box = -1;
    if (r->task == MJ_TASK_PUSH) {
        r->body_box = mj_name2id(m, mjOBJ_BODY, "box");
        if (r->body_box < 0)
            return cr_err_set(err, CR_EINVAL, "push task: MJCF has no body named 'box'");
        int j = m->body_jntadr[r->body_box];
        if (j < 0 || m->jnt_type[j] != mjJNT_FREE)
            return cr_err_set(err, CR_EINVAL, "push task: body 'box' needs a free joint");
        r->box_qadr = m->jnt_qposadr[j];
    }
    r->key_home = mj_name2id(m, mjOBJ_KEY, "home");
    return 0;
}

static int setup_control(mj_robot_t *r, cr_err_t *err)
{
    const mjModel *m = r->m;
    hal_robot_desc_t *d = &r->desc;
    const char *mode = mj_custom_text(m, "mode");
    if (!mode) mode = "joint_position";
    if (hal_ctrl_mode_parse(mode, &d->act.mode))
        return cr_err_set(err, CR_EINVAL, "custom corral_mode='%s' must be joint_position, "
                          "joint_velocity or ee_delta", mode);
    double hz = r->cfg.control_hz > 0 ? r->cfg.control_hz : num_or(m, "control_hz", 20);
    if (!(hz > 0)) return cr_err_set(err, CR_EINVAL, "corral_control_hz must be > 0");
    r->substeps = (int)lround(1.0 / (hz * m->opt.timestep));
    if (r->substeps < 1) r->substeps = 1;
    d->rate_hz = hz;
    d->episode_steps = r->cfg.episode_steps > 0 ? r->cfg.episode_steps
                                                : (int)num_or(m, "episode_steps", 50);
    double dflt_scale = d->act.mode == HAL_CTRL_EE_DELTA ? 0.03 : 2.0;
    double scale = num_or(m, "action_scale", dflt_scale);
    int ee_dims = (int)num_or(m, "ee_dims", 3);
    if (ee_dims != 2 && ee_dims != 3)
        return cr_err_set(err, CR_EINVAL, "corral_ee_dims must be 2 (planar) or 3");
    d->act.dim = d->act.mode == HAL_CTRL_EE_DELTA ? ee_dims : r->n;
    for (int i = 0; i < d->act.dim; i++) {
        if (d->act.mode == HAL_CTRL_JOINT_POSITION) {
            d->act.low[i] = (float)d->limits.joint_low[i];
            d->act.high[i] = (float)d->limits.joint_high[i];
            d->act.scale[i] = 1.0f;
        } else {
            d->act.low[i] = -1.0f;
            d->act.high[i] = 1.0f;
            d->act.scale[i] = (float)scale;
        }
    }
    double ws[6];
    if (get_vec(m, "workspace", ws, 6)) {
        d->limits.has_workspace = 1;
        memcpy(d->limits.ws_low, ws, sizeof(double) * 3);
        memcpy(d->limits.ws_high, ws + 3, sizeof(double) * 3);
    }
    d->limits.max_step = 0;
    d->limits.watchdog_periods = 2;
    return 0;
}

static void setup_obs(mj_robot_t *r)
{
    hal_obs_spec_t *o = &r->desc.obs;
    drv_spec_vec(o, "joint_cos_sin", "1", 2 * r->n);
    drv_spec_vec(o, "joint_vel", "rad/s", r->n);
    drv_spec_vec(o, "ee_pos", "m", 3);
    drv_spec_vec(o, "ee_to_target", "m", 3);
    if (r->task == MJ_TASK_PUSH) {
        drv_spec_vec(o, "box_pos", "m", 3);
        drv_spec_vec(o, "ee_to_box", "m", 3);
        drv_spec_vec(o, "box_to_target", "m", 3);
    }
    if (r->cfg.camera[0]) {
        hal_cam_spec_t *c = &o->cams[o->n_cams++];
        snprintf(c->name, sizeof c->name, "%s", r->cfg.camera);
        c->width = r->cfg.image_width;
        c->height = r->cfg.image_height;
        c->offset = o->img_total;
        o->img_total += (size_t)c->width * (size_t)c->height * 3;
    }
}

int mj_task_setup(mj_robot_t *r, cr_err_t *err)
{
    const mjModel *m = r->m;
    const char *task = r->cfg.task[0] ? r->cfg.task : mj_custom_text(m, "task");
    if (!task) task = "reach";
    if (strcmp(task, "reach") == 0) r->task = MJ_TASK_REACH;
    else if (strcmp(task, "push") == 0) r->task = MJ_TASK_PUSH;
    else return cr_err_set(err, CR_EINVAL, "task '%s' is not reach or push", task);
    int rc = setup_actuators(r, err);
    if (!rc) rc = setup_names(r, err);
    if (!rc) rc = setup_control(r, err);
    if (rc) return rc;
    setup_obs(r);
    r->success_dist = r->cfg.success_dist > 0 ? r->cfg.success_dist
                    : num_or(m, "success_dist", r->task == MJ_TASK_PUSH ? 0.05 : 0.02);
    r->reward_scale = r->cfg.reward_scale > 0 ? r->cfg.reward_scale : num_or(m, "reward_scale", 1);
    if (!(r->reward_scale > 0)) return cr_err_set(err, CR_EINVAL, "corral_reward_scale must be > 0");
    r->qpos_noise = num_or(m, "qpos_noise", 0.1);
    r->target_radius[1] = 0;
    get_vec(m, "target_radius", r->target_radius, 2);
    const double *p = m->body_pos + 3 * r->body_target;
    double dflt[6] = {p[0] - 0.1, p[1] - 0.1, p[2], p[0] + 0.1, p[1] + 0.1, p[2]};
    if (!get_vec(m, "target_box", r->target_box, 6)) memcpy(r->target_box, dflt, sizeof dflt);
    if (r->task == MJ_TASK_PUSH) {
        const double *b = m->body_pos + 3 * r->body_box;
        double bd[6] = {b[0] - 0.1, b[1] - 0.1, b[2], b[0] + 0.1, b[1] + 0.1, b[2]};
        if (!get_vec(m, "box_box", r->box_box, 6)) memcpy(r->box_box, bd, sizeof bd);
    }
    return 0;
}

static void sample_box(uint64_t *s, const double *box, double *out)
{
    for (int k = 0; k < 3; k++) out[k] = uniform(s, box[k], box[k + 3]);
}

void mj_task_reset(mj_robot_t *r, uint64_t seed)
{
    const mjModel *m = r->m;
    mjData *d = r->d;
    uint64_t s = seed;
    if (r->key_home >= 0) mj_resetDataKeyframe(m, d, r->key_home);
    else mj_resetData(m, d);
    const hal_limits_t *L = &r->desc.limits;
    for (int i = 0; i < r->n; i++) {
        double q = d->qpos[r->qadr[i]] + uniform(&s, -r->qpos_noise, r->qpos_noise);
        q = q < L->joint_low[i] ? L->joint_low[i] : q > L->joint_high[i] ? L->joint_high[i] : q;
        d->qpos[r->qadr[i]] = q;
        r->ctrl_target[i] = q;
        d->ctrl[i] = r->desc.act.mode == HAL_CTRL_JOINT_VELOCITY ? 0 : q;
    }
    double t[3];
    if (r->target_radius[1] > 0) {
        /* Uniform on the disc ring in the plane of the base. */
        double rmin = r->target_radius[0], rmax = r->target_radius[1];
        double rad = sqrt(uniform(&s, rmin * rmin, rmax * rmax));
        double ang = uniform(&s, -M_PI, M_PI);
        const double *p = m->body_pos + 3 * r->body_target;
        t[0] = rad * cos(ang);
        t[1] = rad * sin(ang);
        t[2] = p[2];
    } else {
        sample_box(&s, r->target_box, t);
    }
    if (r->task == MJ_TASK_PUSH) {
        double b[3];
        for (int tries = 0; tries < 50; tries++) {
            sample_box(&s, r->box_box, b);
            double dx = b[0] - t[0], dy = b[1] - t[1];
            if (dx * dx + dy * dy >= 0.1 * 0.1) break;
        }
        double *q = d->qpos + r->box_qadr;
        q[0] = b[0]; q[1] = b[1]; q[2] = b[2];
        q[3] = 1; q[4] = q[5] = q[6] = 0;
    }
    memcpy(d->mocap_pos + 3 * r->mocap_target, t, sizeof t);
    mj_forward(m, d);
    r->step = 0;
    memset(r->last_cmd, 0, sizeof r->last_cmd);
}

static double dist3(const double *a, const double *b)
{
    double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
    return sqrt(dx * dx + dy * dy + dz * dz);
}

void mj_task_observe(mj_robot_t *r, hal_obs_t *obs)
{
    const mjData *d = r->d;
    int n = r->n;
    float *v = obs->vec;
    for (int i = 0; i < n; i++) {
        double q = d->qpos[r->qadr[i]];
        v[i] = (float)cos(q);
        v[n + i] = (float)sin(q);
        v[2 * n + i] = (float)d->qvel[r->dadr[i]];
    }
    const double *ee = d->site_xpos + 3 * r->site_ee;
    const double *tg = d->mocap_pos + 3 * r->mocap_target;
    float *p = v + 3 * n;
    for (int k = 0; k < 3; k++) {
        p[k] = (float)ee[k];
        p[3 + k] = (float)(tg[k] - ee[k]);
    }
    double pen = 0;
    for (int i = 0; i < r->desc.act.dim; i++) {
        double a = r->last_cmd[i] / r->desc.act.scale[i];
        pen += a * a;
    }
    double reward, dsucc;
    if (r->task == MJ_TASK_PUSH) {
        const double *box = d->qpos + r->box_qadr;
        for (int k = 0; k < 3; k++) {
            p[6 + k] = (float)box[k];
            p[9 + k] = (float)(box[k] - ee[k]);
            p[12 + k] = (float)(tg[k] - box[k]);
        }
        dsucc = dist3(box, tg);
        reward = -dsucc - 0.5 * dist3(ee, box);
    } else {
        dsucc = dist3(ee, tg);
        reward = -dsucc;
    }
    obs->reward = r->reward_scale * (reward - r->cfg.action_penalty * pen);
    obs->success = dsucc < r->success_dist;
    obs->terminated = 0;
    obs->truncated = r->desc.episode_steps > 0 && r->step >= r->desc.episode_steps;
    obs->step = r->step;
    obs->stamp_ns = (int64_t)(d->time * 1e9);
}
