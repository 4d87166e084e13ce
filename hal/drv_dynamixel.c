/* drv_dynamixel.c - the `dynamixel` driver: an arm built from ROBOTIS X-series
 * servos on one Protocol 2.0 bus (dxl_bus.c).
 *
 * Options: port (required), ids=1,2,3 (required, one servo per joint, in joint
 * order), baud, rate_hz, timeout_ms, joint_low/joint_high (rad, every joint),
 * max_step (rad per step). Positions are 4096 ticks per turn with 2048 at 0 rad;
 * velocities 0.229 rpm per unit. On open every servo must answer a ping, its
 * goal is set to where it stands and torque is switched on, so the arm does not
 * jump. The e-stop holds position (goal = last read position): for an arm under
 * gravity that is safer than cutting torque. Close switches torque off. A failed
 * read or write is an error naming the port and servo; the servos keep their
 * last goal, which holds the arm. */
#include "hal/drv.h"
#include "common/log.h"
#include "common/time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dxl_cfg {
    char port[256];
    char ids[256];
    int baud;
    double rate_hz;
    int timeout_ms;
    double joint_low, joint_high;
    double max_step;
} dxl_cfg_t;

#define OFF(f) offsetof(dxl_cfg_t, f)
#define SZ(f) sizeof(((dxl_cfg_t *)0)->f)
static const drv_opt_t dxl_opts[] = {
    {"port", DRV_STR, 0, 0, OFF(port), SZ(port), "serial device, e.g. /dev/ttyUSB0"},
    {"ids", DRV_STR, 0, 0, OFF(ids), SZ(ids), "servo ids in joint order, e.g. 1,2,3"},
    {"baud", DRV_INT, 9600, 4000000, OFF(baud), 0, "baud rate"},
    {"rate_hz", DRV_DOUBLE, 1, 1000, OFF(rate_hz), 0, "control rate"},
    {"timeout_ms", DRV_INT, 1, 5000, OFF(timeout_ms), 0, "reply time-out"},
    {"joint_low", DRV_DOUBLE, -3.14159, 3.14159, OFF(joint_low), 0, "lower joint limit, rad"},
    {"joint_high", DRV_DOUBLE, -3.14159, 3.14159, OFF(joint_high), 0, "upper joint limit, rad"},
    {"max_step", DRV_DOUBLE, 0, 6.3, OFF(max_step), 0, "cap on goal change per step, rad"},
};

typedef struct dxl_robot {
    char robot[HAL_NAME_MAX];
    dxl_cfg_t cfg;
    hal_dxl_bus_t *bus;
    int n, ids[HAL_MAX_DOF];
    double q[HAL_MAX_DOF], qd[HAL_MAX_DOF];
    int64_t stamp_ns, steps;
    hal_robot_desc_t desc;
    int ok;
    char last_error[200];
} dxl_robot_t;

#define TICKS_PER_RAD (4096.0 / (2 * M_PI))
#define RADS_PER_VEL_UNIT (0.229 * 2 * M_PI / 60.0)

static int parse_ids(const char *robot, const char *s, int *ids, int *n, cr_err_t *err)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 252 || (*end && *end != ','))
            return cr_err_set(err, CR_EINVAL, "robot %s: option ids='%s' must be a comma-separated "
                              "list of servo ids 0..252", robot, s);
        if (*n == HAL_MAX_DOF)
            return cr_err_set(err, CR_EINVAL, "robot %s: option ids: more than %d servos", robot,
                              HAL_MAX_DOF);
        for (int i = 0; i < *n; i++)
            if (ids[i] == v)
                return cr_err_set(err, CR_EINVAL, "robot %s: option ids: id %ld appears twice",
                                  robot, v);
        ids[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (*n == 0) return cr_err_set(err, CR_EINVAL, "robot %s: option ids is required", robot);
    return 0;
}

static int32_t le32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                     ((uint32_t)p[3] << 24));
}

static void put_le32(uint8_t *p, int32_t v)
{
    uint32_t u = (uint32_t)v;
    p[0] = (uint8_t)u; p[1] = (uint8_t)(u >> 8); p[2] = (uint8_t)(u >> 16); p[3] = (uint8_t)(u >> 24);
}

static int read_state(dxl_robot_t *r, cr_err_t *err)
{
    uint8_t buf[HAL_MAX_DOF * 8];
    int rc = hal_dxl_sync_read(r->bus, r->ids, r->n, HAL_DXL_PRESENT_VELOCITY, 8, buf, err);
    if (rc) {
        r->ok = 0;
        snprintf(r->last_error, sizeof r->last_error, "%s", err ? err->msg : "read failed");
        return rc;
    }
    for (int i = 0; i < r->n; i++) {
        r->qd[i] = le32(buf + 8 * i) * RADS_PER_VEL_UNIT;
        r->q[i] = (le32(buf + 8 * i + 4) - 2048) / TICKS_PER_RAD;
    }
    r->stamp_ns = cr_now_ns();
    r->ok = 1;
    return 0;
}

static int write_goals(dxl_robot_t *r, const double *q, cr_err_t *err)
{
    uint8_t buf[HAL_MAX_DOF * 4];
    for (int i = 0; i < r->n; i++) {
        double t = 2048 + q[i] * TICKS_PER_RAD;
        t = t < 0 ? 0 : t > 4095 ? 4095 : t;
        put_le32(buf + 4 * i, (int32_t)lround(t));
    }
    int rc = hal_dxl_sync_write(r->bus, r->ids, r->n, HAL_DXL_GOAL_POSITION, 4, buf, err);
    if (rc) {
        r->ok = 0;
        snprintf(r->last_error, sizeof r->last_error, "%s", err ? err->msg : "write failed");
    }
    return rc;
}

/* Switching on stops at the first failure (the open fails); switching off
 * tries every servo, so one dead servo does not leave the others powered. */
static int torque(dxl_robot_t *r, int on, cr_err_t *err)
{
    uint8_t v = (uint8_t)on;
    int first = 0;
    for (int i = 0; i < r->n; i++) {
        cr_err_t e = {0};
        int rc = hal_dxl_write(r->bus, r->ids[i], HAL_DXL_TORQUE_ENABLE, &v, 1, &e);
        if (rc && !first) {
            first = rc;
            if (err) *err = e;
        }
        if (rc && on) return rc;
    }
    return first;
}

static void dxl_close(void *st)
{
    dxl_robot_t *r = st;
    if (!r) return;
    if (r->bus) {
        cr_err_t e = {0};
        if (torque(r, 0, &e)) CR_WARN("hal", "robot %s: torque off at close failed: %s", r->robot, e.msg);
        hal_dxl_close(r->bus);
    }
    free(r);
}

static void build_desc(dxl_robot_t *r)
{
    hal_robot_desc_t *d = &r->desc;
    snprintf(d->model, sizeof d->model, "dynamixel-x");
    d->rate_hz = r->cfg.rate_hz;
    d->realtime = 1;
    d->episode_steps = 0;
    drv_spec_vec(&d->obs, "joint_pos", "rad", r->n);
    drv_spec_vec(&d->obs, "joint_vel", "rad/s", r->n);
    d->act.mode = HAL_CTRL_JOINT_POSITION;
    d->act.dim = r->n;
    d->limits.n_joints = r->n;
    for (int i = 0; i < r->n; i++) {
        d->act.low[i] = (float)r->cfg.joint_low;
        d->act.high[i] = (float)r->cfg.joint_high;
        d->act.scale[i] = 1.0f;
        d->limits.joint_low[i] = r->cfg.joint_low;
        d->limits.joint_high[i] = r->cfg.joint_high;
    }
    d->limits.max_step = r->cfg.max_step;
    d->limits.watchdog_periods = 2;
}

static int dxl_open(const char *robot, const char *model, const hal_opt_t *opts, int n_opts,
                    void **state, cr_err_t *err)
{
    dxl_cfg_t cfg = {.baud = 57600, .rate_hz = 50, .timeout_ms = 20, .joint_low = -2.6,
                     .joint_high = 2.6, .max_step = 0.1};
    int rc = drv_opts_apply(robot, dxl_opts, sizeof dxl_opts / sizeof dxl_opts[0], opts, n_opts,
                            &cfg, err);
    if (rc) return rc;
    if (!cfg.port[0]) return cr_err_set(err, CR_EINVAL, "robot %s: option port is required", robot);
    if (!(cfg.joint_low < cfg.joint_high))
        return cr_err_set(err, CR_EINVAL, "robot %s: joint_low %g must be below joint_high %g",
                          robot, cfg.joint_low, cfg.joint_high);
    dxl_robot_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "out of memory");
    snprintf(r->robot, sizeof r->robot, "%s", robot);
    r->cfg = cfg;
    rc = parse_ids(robot, cfg.ids, r->ids, &r->n, err);
    if (!rc) rc = hal_dxl_open(cfg.port, cfg.baud, cfg.timeout_ms, &r->bus, err);
    for (int i = 0; rc == 0 && i < r->n; i++) {
        int got, n;
        rc = hal_dxl_ping(r->bus, r->ids[i], &got, NULL, 1, &n, err);
    }
    if (!rc) rc = read_state(r, err);
    if (!rc) rc = write_goals(r, r->q, err);
    if (!rc) rc = torque(r, 1, err);
    if (rc) {
        hal_dxl_bus_t *bus = r->bus;
        r->bus = NULL;   /* torque was never switched on: close without writing */
        hal_dxl_close(bus);
        dxl_close(r);
        return rc;
    }
    build_desc(r);
    *state = r;
    return 0;
}

static void dxl_describe(void *st, hal_robot_desc_t *d) { *d = ((dxl_robot_t *)st)->desc; }

static int dxl_reset(void *st, uint64_t seed, cr_err_t *err)
{
    /* A real arm has no episode start of its own: hold where it stands. */
    dxl_robot_t *r = st;
    int rc = read_state(r, err);
    return rc ? rc : write_goals(r, r->q, err);
}

static int dxl_observe(void *st, hal_obs_t *obs, cr_err_t *err)
{
    dxl_robot_t *r = st;
    int rc = read_state(r, err);
    if (rc) return rc;
    for (int i = 0; i < r->n; i++) {
        obs->vec[i] = (float)r->q[i];
        obs->vec[r->n + i] = (float)r->qd[i];
    }
    obs->stamp_ns = r->stamp_ns;
    obs->reward = 0;
    obs->terminated = obs->truncated = obs->success = 0;
    obs->step = ++r->steps;
    return 0;
}

static int dxl_act(void *st, const double *cmd, cr_err_t *err) { return write_goals(st, cmd, err); }

static int dxl_estop(void *st, cr_err_t *err)
{
    dxl_robot_t *r = st;
    cr_err_t e = {0};
    read_state(r, &e);   /* best effort: hold at the freshest position we have */
    return write_goals(r, r->q, err);
}

static void dxl_health(void *st, hal_health_t *h)
{
    dxl_robot_t *r = st;
    h->ok = r->ok;
    h->errors = hal_dxl_errors(r->bus);
    snprintf(h->detail, sizeof h->detail, "%s, %d servos%s%s", r->cfg.port, r->n,
             r->ok ? "" : ", last error: ", r->ok ? "" : r->last_error);
}

static int dxl_joints(void *st, double *q, double *ee, cr_err_t *err)
{
    dxl_robot_t *r = st;
    memcpy(q, r->q, sizeof(double) * (size_t)r->n);
    return 0;
}

const hal_driver_t hal_driver_dynamixel = {
    .name = "dynamixel", .open = dxl_open, .close = dxl_close, .describe = dxl_describe,
    .reset = dxl_reset, .observe = dxl_observe, .act = dxl_act, .estop = dxl_estop,
    .health = dxl_health, .joints = dxl_joints,
};
