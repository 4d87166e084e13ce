/* drv_mock.c - a deterministic robot for tests: an ideal servo with no physics.
 *
 * In joint_position mode the joints go exactly where commanded; in
 * joint_velocity mode they integrate the command over one period; in ee_delta
 * mode a free end-effector point moves by the command. The start state and a
 * target come from the reset seed (splitmix64), so the same seed and actions
 * always give the same observations; this lets tests read back exactly what the
 * safety layer let through. */
#include "hal/drv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mock_cfg {
    int dof;
    double rate_hz;
    int realtime;
    char mode[32];
    int episode_steps;
    double joint_limit;   /* symmetric joint limits, rad */
    double workspace;     /* symmetric workspace box half-size, m */
    double max_step;
} mock_cfg_t;

#define OFF(f) offsetof(mock_cfg_t, f)
static const drv_opt_t mock_opts[] = {
    {"dof", DRV_INT, 1, HAL_MAX_DOF, OFF(dof), 0, "number of joints"},
    {"rate_hz", DRV_DOUBLE, 1, 10000, OFF(rate_hz), 0, "control rate"},
    {"realtime", DRV_BOOL, 0, 1, OFF(realtime), 0, "pace by wall time (enables the watchdog)"},
    {"mode", DRV_STR, 0, 0, OFF(mode), sizeof(((mock_cfg_t *)0)->mode), "control mode"},
    {"episode_steps", DRV_INT, 0, 1e9, OFF(episode_steps), 0, "steps per episode"},
    {"joint_limit", DRV_DOUBLE, 0, 100, OFF(joint_limit), 0, "joint limit, rad"},
    {"workspace", DRV_DOUBLE, 0, 100, OFF(workspace), 0, "workspace half-size, m"},
    {"max_step", DRV_DOUBLE, 0, 1e9, OFF(max_step), 0, "cap on change per step"},
};

typedef struct mock {
    mock_cfg_t cfg;
    hal_robot_desc_t desc;
    double q[HAL_MAX_DOF], qd[HAL_MAX_DOF], ee[3], target[3];
    int64_t step, acts;
    int estopped;
} mock_t;

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

static int mock_open(const char *robot, const char *model, const hal_opt_t *opts, int n_opts,
                     void **state, cr_err_t *err)
{
    mock_cfg_t cfg = {.dof = 3, .rate_hz = 100, .mode = "joint_position", .episode_steps = 50,
                      .joint_limit = 2.0, .workspace = 1.0, .max_step = 0};
    int rc = drv_opts_apply(robot, mock_opts, sizeof mock_opts / sizeof mock_opts[0], opts,
                            n_opts, &cfg, err);
    if (rc) return rc;
    hal_ctrl_mode_t mode;
    if (hal_ctrl_mode_parse(cfg.mode, &mode))
        return cr_err_set(err, CR_EINVAL, "robot %s: option mode='%s' must be joint_position, "
                          "joint_velocity or ee_delta", robot, cfg.mode);
    mock_t *m = calloc(1, sizeof *m);
    if (!m) return cr_err_set(err, CR_ENOMEM, "out of memory");
    m->cfg = cfg;
    hal_robot_desc_t *d = &m->desc;
    snprintf(d->model, sizeof d->model, "%s", model[0] ? model : "mock");
    d->rate_hz = cfg.rate_hz;
    d->realtime = cfg.realtime;
    d->episode_steps = cfg.episode_steps;
    drv_spec_vec(&d->obs, "joint_pos", "rad", cfg.dof);
    drv_spec_vec(&d->obs, "joint_vel", "rad/s", cfg.dof);
    drv_spec_vec(&d->obs, "ee_pos", "m", 3);
    drv_spec_vec(&d->obs, "ee_to_target", "m", 3);
    d->act.mode = mode;
    d->act.dim = mode == HAL_CTRL_EE_DELTA ? 3 : cfg.dof;
    for (int i = 0; i < d->act.dim; i++) {
        d->act.low[i] = mode == HAL_CTRL_JOINT_POSITION ? (float)-cfg.joint_limit : -1.0f;
        d->act.high[i] = mode == HAL_CTRL_JOINT_POSITION ? (float)cfg.joint_limit : 1.0f;
        d->act.scale[i] = mode == HAL_CTRL_EE_DELTA ? 0.05f : 1.0f;
    }
    d->limits.n_joints = cfg.dof;
    for (int i = 0; i < cfg.dof; i++) {
        d->limits.joint_low[i] = -cfg.joint_limit;
        d->limits.joint_high[i] = cfg.joint_limit;
    }
    d->limits.has_workspace = 1;
    for (int i = 0; i < 3; i++) {
        d->limits.ws_low[i] = -cfg.workspace;
        d->limits.ws_high[i] = cfg.workspace;
    }
    d->limits.max_step = cfg.max_step;
    d->limits.watchdog_periods = 2;
    *state = m;
    return 0;
}

static void mock_close(void *st) { free(st); }
static void mock_describe(void *st, hal_robot_desc_t *d) { *d = ((mock_t *)st)->desc; }

static void update_ee(mock_t *m)
{
    if (m->desc.act.mode == HAL_CTRL_EE_DELTA) return;
    for (int i = 0; i < 3; i++) m->ee[i] = i < m->cfg.dof ? 0.1 * m->q[i] : 0.0;
}

static int mock_reset(void *st, uint64_t seed, cr_err_t *err)
{
    mock_t *m = st;
    uint64_t s = seed;
    for (int i = 0; i < m->cfg.dof; i++) {
        m->q[i] = uniform(&s, -0.1, 0.1);
        m->qd[i] = 0;
    }
    for (int i = 0; i < 3; i++) {
        m->target[i] = uniform(&s, -0.1, 0.1);
        m->ee[i] = 0;
    }
    update_ee(m);
    m->step = 0;
    m->estopped = 0;
    return 0;
}

static int mock_observe(void *st, hal_obs_t *o, cr_err_t *err)
{
    mock_t *m = st;
    int n = m->cfg.dof;
    double dist = 0;
    for (int i = 0; i < n; i++) {
        o->vec[i] = (float)m->q[i];
        o->vec[n + i] = (float)m->qd[i];
    }
    for (int i = 0; i < 3; i++) {
        o->vec[2 * n + i] = (float)m->ee[i];
        o->vec[2 * n + 3 + i] = (float)(m->target[i] - m->ee[i]);
        dist += (m->target[i] - m->ee[i]) * (m->target[i] - m->ee[i]);
    }
    dist = sqrt(dist);
    o->stamp_ns = m->step * (int64_t)(1e9 / m->cfg.rate_hz);
    o->step = m->step;
    o->reward = -dist;
    o->success = dist < 0.01;
    o->terminated = 0;
    o->truncated = m->cfg.episode_steps > 0 && m->step >= m->cfg.episode_steps;
    return 0;
}

static int mock_act(void *st, const double *cmd, cr_err_t *err)
{
    mock_t *m = st;
    double dt = 1.0 / m->cfg.rate_hz;
    for (int i = 0; i < m->desc.act.dim; i++) {
        switch (m->desc.act.mode) {
        case HAL_CTRL_JOINT_POSITION:
            m->qd[i] = (cmd[i] - m->q[i]) / dt;
            m->q[i] = cmd[i];
            break;
        case HAL_CTRL_JOINT_VELOCITY:
            m->qd[i] = cmd[i];
            m->q[i] += cmd[i] * dt;
            break;
        case HAL_CTRL_EE_DELTA:
            m->ee[i] += cmd[i];
            break;
        }
    }
    update_ee(m);
    m->step++;
    m->acts++;
    return 0;
}

static int mock_estop(void *st, cr_err_t *err)
{
    mock_t *m = st;
    memset(m->qd, 0, sizeof m->qd);
    m->estopped = 1;
    return 0;
}

static void mock_health(void *st, hal_health_t *h)
{
    mock_t *m = st;
    h->ok = 1;
    snprintf(h->detail, sizeof h->detail, "mock: %lld actions", (long long)m->acts);
}

static int mock_joints(void *st, double *q, double *ee, cr_err_t *err)
{
    mock_t *m = st;
    memcpy(q, m->q, sizeof(double) * (size_t)m->cfg.dof);
    memcpy(ee, m->ee, sizeof m->ee);
    return 0;
}

const hal_driver_t hal_driver_mock = {
    .name = "mock", .open = mock_open, .close = mock_close, .describe = mock_describe,
    .reset = mock_reset, .observe = mock_observe, .act = mock_act, .estop = mock_estop,
    .health = mock_health, .joints = mock_joints,
};
