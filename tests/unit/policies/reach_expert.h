/* reach_expert.h - the scripted expert for reach2d and a small environment
 * wrapper over the HAL's MuJoCo robot, shared by the generative-policy tests and
 * the policies bench. The expert is damped-least-squares inverse kinematics on
 * the 2-link arm (link lengths 0.1 m and 0.11 m to the fingertip site): joint
 * velocities dq = k J^T (J J^T + lambda^2 I)^-1 e toward the target, scaled into
 * the action range, for joint-velocity arms; with end-effector control the
 * expert steps straight at the target. The policy sees the observation scaled per named vector
 * (joint_vel / 4, ee_pos x 5, ee_to_target x 10), as in the SAC learning check. */
#ifndef CORRAL_TESTS_REACH_EXPERT_H
#define CORRAL_TESTS_REACH_EXPERT_H

#include "hal/hal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define RX_MAXO 32

typedef struct rx_env {
    hal_robot_t *robot;
    const hal_robot_desc_t *desc;
    hal_obs_t obs;
    float scale[RX_MAXO];
    int od, ad, goal;
} rx_env_t;

static inline int rx_open(rx_env_t *e, const char *model, uint64_t seed, cr_err_t *err)
{
    char s[32];
    snprintf(s, sizeof s, "%llu", (unsigned long long)seed);
    hal_opt_t opts[] = {{"seed", s}};
    int rc = hal_robot_open("rx", "mujoco", model, opts, 1, &e->robot, err);
    if (rc) return rc;
    e->desc = hal_robot_desc(e->robot);
    e->od = e->desc->obs.vec_total;
    e->ad = e->desc->act.dim;
    if (e->od > RX_MAXO) return cr_err_set(err, CR_EINVAL, "reach env: %d observation floats", e->od);
    if ((rc = hal_obs_alloc(e->desc, 0, &e->obs, err))) return rc;
    e->goal = -1;
    for (int v = 0; v < e->desc->obs.n_vecs; v++) {
        const hal_vec_spec_t *vs = &e->desc->obs.vecs[v];
        float k = !strcmp(vs->name, "joint_vel") ? 0.25f : !strcmp(vs->name, "ee_pos") ? 5.0f
                : !strcmp(vs->name, "ee_to_target") ? 10.0f : 1.0f;
        for (int i = 0; i < vs->dim; i++) e->scale[vs->offset + i] = k;
        if (!strcmp(vs->name, "ee_to_target")) e->goal = vs->offset;
    }
    return 0;
}

static inline void rx_close(rx_env_t *e)
{
    hal_obs_free(&e->obs);
    hal_robot_close(e->robot);
}

static inline void rx_scaled(const rx_env_t *e, float *out)
{
    for (int i = 0; i < e->od; i++) out[i] = e->obs.vec[i] * e->scale[i];
}

/* The expert's joint-velocity action for a target at ee + (ex, ey), from the
 * joint angles in the raw observation (cos q0, cos q1, sin q0, sin q1, ...). */
static inline void rx_expert_to(const float *raw, float ex, float ey, float *act)
{
    const double l1 = 0.1, l2 = 0.11, lam = 0.03, k = 6.0, vmax = 4.0;
    double q0 = atan2(raw[2], raw[0]), q1 = atan2(raw[3], raw[1]);
    double s0 = sin(q0), c0 = cos(q0), s01 = sin(q0 + q1), c01 = cos(q0 + q1);
    double J[2][2] = {{-l1 * s0 - l2 * s01, -l2 * s01}, {l1 * c0 + l2 * c01, l2 * c01}};
    /* M = J J^T + lam^2 I; y = M^-1 e; dq = J^T y */
    double a = J[0][0] * J[0][0] + J[0][1] * J[0][1] + lam * lam;
    double b = J[0][0] * J[1][0] + J[0][1] * J[1][1];
    double d = J[1][0] * J[1][0] + J[1][1] * J[1][1] + lam * lam;
    double det = a * d - b * b;
    double y0 = (d * ex - b * ey) / det, y1 = (a * ey - b * ex) / det;
    double dq[2] = {J[0][0] * y0 + J[1][0] * y1, J[0][1] * y0 + J[1][1] * y1};
    for (int j = 0; j < 2; j++) {
        double u = k * dq[j] / vmax;
        act[j] = (float)(u > 1 ? 1 : u < -1 ? -1 : u);
    }
}

/* The expert for the open robot: with end-effector control (reach2d) it moves the
 * fingertip straight at the target, a whole step's worth when far; with joint
 * velocity control (reach2d_multi) it uses the inverse kinematics above. */
static inline void rx_expert(const rx_env_t *e, float *act)
{
    const float *g = e->obs.vec + e->goal;
    if (e->desc->act.mode != HAL_CTRL_EE_DELTA) {
        rx_expert_to(e->obs.vec, g[0], g[1], act);
        return;
    }
    for (int j = 0; j < 2; j++) {
        float u = g[j] / e->desc->act.scale[j];
        act[j] = u > 1 ? 1 : u < -1 ? -1 : u;
    }
}

#endif
