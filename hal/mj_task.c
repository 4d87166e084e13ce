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
#include <stdlib.h>
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

/* corral_targets: "name:body name:body ..." with mocap bodies. */
static int setup_goals(mj_robot_t *r, cr_err_t *err)
{
    const char *spec = mj_custom_text(r->m, "targets");
    r->n_goals = 0;
    if (!spec) return 0;
    if (r->task != MJ_TASK_REACH) return cr_err_set(err, CR_EINVAL, "corral_targets: only the reach task has named targets");
    const char *p = spec;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        size_t n = strcspn(p, " ");
        char item[2 * HAL_NAME_MAX];
        if (n >= sizeof item) return cr_err_set(err, CR_EINVAL, "corral_targets: entry '%.*s' too long", (int)n, p);
        memcpy(item, p, n);
        item[n] = '\0';
        p += n;
        char *colon = strchr(item, ':');
        if (!colon || colon == item || !colon[1])
            return cr_err_set(err, CR_EINVAL, "corral_targets: entry '%s' is not NAME:BODY", item);
        *colon = '\0';
        if (r->n_goals == HAL_MAX_GOALS)
            return cr_err_set(err, CR_EINVAL, "corral_targets: more than %d targets", HAL_MAX_GOALS);
        int body = mj_name2id(r->m, mjOBJ_BODY, colon + 1);
        if (body < 0 || r->m->body_mocapid[body] < 0)
            return cr_err_set(err, CR_EINVAL, "corral_targets: target '%s': no mocap body named '%s'", item, colon + 1);
        if (strlen(item) >= HAL_NAME_MAX)
            return cr_err_set(err, CR_EINVAL, "corral_targets: name '%s' too long", item);
        for (int i = 0; i < r->n_goals; i++)
            if (!strcmp(r->desc.goals[i], item))
                return cr_err_set(err, CR_EINVAL, "corral_targets: target '%s' listed twice", item);
        snprintf(r->desc.goals[r->n_goals], HAL_NAME_MAX, "%s", item);
        r->mocap_goal[r->n_goals++] = r->m->body_mocapid[body];
    }
    if (r->n_goals == 1) return cr_err_set(err, CR_EINVAL, "corral_targets: one target; list two or more or leave it out");
    r->desc.n_goals = r->n_goals;
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
    if (r->n_goals) drv_spec_vec(o, "ee_to_targets", "m", 3 * r->n_goals);
    else drv_spec_vec(o, "ee_to_target", "m", 3);
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
    if (!rc) rc = setup_goals(r, err);
    if (!rc) rc = setup_control(r, err);
    if (rc) return rc;
    setup_obs(r);
    r->success_dist = r->cfg.success_dist > 0 ? r->cfg.success_dist
                    : num_or(m, "success_dist", r->task == MJ_TASK_PUSH ? 0.05 : 0.02);
    r->reward_scale = r->cfg.reward_scale > 0 ? r->cfg.reward_scale : num_or(m, "reward_scale", 1);
    if (!(r->reward_scale > 0)) return cr_err_set(err, CR_EINVAL, "corral_reward_scale must be > 0");
    r->qpos_noise = num_or(m, "qpos_noise", 0.1);
    r->goal_separation = num_or(m, "target_separation", 0.06);
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

static void sample_target(const mj_robot_t *r, uint64_t *s, double *t)
{
    if (r->target_radius[1] > 0) {
        /* Uniform on the disc ring in the plane of the base. */
        double rmin = r->target_radius[0], rmax = r->target_radius[1];
        double rad = sqrt(uniform(s, rmin * rmin, rmax * rmax));
        double ang = uniform(s, -M_PI, M_PI);
        const double *p = r->m->body_pos + 3 * r->body_target;
        t[0] = rad * cos(ang);
        t[1] = rad * sin(ang);
        t[2] = p[2];
    } else {
        sample_box(s, r->target_box, t);
    }
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
    sample_target(r, &s, t);
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
    if (r->n_goals) {
        /* every named target, apart from the others; then the goal */
        double placed[HAL_MAX_GOALS][3];
        for (int i = 0; i < r->n_goals; i++) {
            for (int tries = 0; tries < 100; tries++) {
                sample_target(r, &s, placed[i]);
                int ok = 1;
                for (int j = 0; j < i; j++)
                    ok &= hypot(placed[i][0] - placed[j][0], placed[i][1] - placed[j][1]) > r->goal_separation;
                if (ok) break;
            }
            memcpy(d->mocap_pos + 3 * r->mocap_goal[i], placed[i], sizeof placed[i]);
        }
        r->goal = (int)(splitmix(&s) % (uint64_t)r->n_goals);
        r->mocap_target = r->mocap_goal[r->goal];
    }
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
    for (int i = 0; i < r->n_goals; i++) {
        const double *gi = d->mocap_pos + 3 * r->mocap_goal[i];
        for (int k = 0; k < 3; k++) p[3 + 3 * i + k] = (float)(gi[k] - ee[k]);
    }
    obs->goal = r->n_goals ? r->goal : 0;
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

int mj_task_expert(mj_robot_t *r, float *action, cr_err_t *err)
{
    if (r->task != MJ_TASK_REACH) return cr_err_set(err, CR_ENOTSUP, "the push task has no scripted expert");
    const mjModel *m = r->m;
    const mjData *d = r->d;
    const double *ee = d->site_xpos + 3 * r->site_ee, *tg = d->mocap_pos + 3 * r->mocap_target;
    const hal_act_spec_t *a = &r->desc.act;
    double e[3] = {tg[0] - ee[0], tg[1] - ee[1], tg[2] - ee[2]};
    if (a->mode == HAL_CTRL_EE_DELTA) {
        /* the whole displacement, shrunk (direction kept) to fit the bounds */
        double k = 1;
        for (int i = 0; i < a->dim; i++) {
            double u = fabs(e[i] / a->scale[i]);
            if (u * k > 1) k = 1 / u;
        }
        for (int i = 0; i < a->dim; i++) action[i] = (float)(k * e[i] / a->scale[i]);
        return 0;
    }
    int nv = m->nv, n = r->n;
    mjtNum *jac = malloc(sizeof(mjtNum) * 3 * (size_t)nv);
    if (!jac) return cr_err_set(err, CR_ENOMEM, "out of memory");
    mj_jacSite(m, d, jac, NULL, r->site_ee);
    double J[3][HAL_MAX_DOF], M[3][3], y[3];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < n; i++) J[k][i] = jac[k * nv + r->dadr[i]];
    free(jac);
    /* a planar arm's Jacobian has a zero z row: lambda keeps M invertible */
    const double lambda2 = 0.03 * 0.03;
    for (int p = 0; p < 3; p++)
        for (int q = 0; q < 3; q++) {
            double v = p == q ? lambda2 : 0;
            for (int i = 0; i < n; i++) v += J[p][i] * J[q][i];
            M[p][q] = v;
        }
    double det = M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1]) - M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0]) +
                 M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0]);
    double inv[3][3] = {
        {M[1][1] * M[2][2] - M[1][2] * M[2][1], M[0][2] * M[2][1] - M[0][1] * M[2][2], M[0][1] * M[1][2] - M[0][2] * M[1][1]},
        {M[1][2] * M[2][0] - M[1][0] * M[2][2], M[0][0] * M[2][2] - M[0][2] * M[2][0], M[0][2] * M[1][0] - M[0][0] * M[1][2]},
        {M[1][0] * M[2][1] - M[1][1] * M[2][0], M[0][1] * M[2][0] - M[0][0] * M[2][1], M[0][0] * M[1][1] - M[0][1] * M[1][0]}};
    for (int p = 0; p < 3; p++) y[p] = (inv[p][0] * e[0] + inv[p][1] * e[1] + inv[p][2] * e[2]) / det;
    for (int i = 0; i < n && i < a->dim; i++) {
        double dq = J[0][i] * y[0] + J[1][i] * y[1] + J[2][i] * y[2], u;
        if (a->mode == HAL_CTRL_JOINT_VELOCITY)
            u = 6.0 * dq / a->scale[i];               /* close the gap at 6 / s */
        else
            u = (d->qpos[r->qadr[i]] + 0.5 * dq) / a->scale[i];  /* half the gap per step */
        action[i] = (float)(u < a->low[i] ? a->low[i] : u > a->high[i] ? a->high[i] : u);
    }
    return 0;
}
