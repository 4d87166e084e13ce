/* robot.c - a robot: one driver instance behind the safety layer.
 *
 * State machine: open -> (reset -> (act|observe)*)* -> close, with the e-stop
 * latch orthogonal to it: hal_robot_estop sets it from any state, act and reset
 * are refused while it is set, only hal_robot_estop_clear unsets it. Invariants:
 * every command a driver receives came out of hal_safety_filter or
 * hal_safety_hold; every driver call happens under r->mu, so the watchdog thread
 * and an e-stop from another thread never interleave with a step. Every error
 * leaving this file names the robot. */
#include "hal/hal.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct hal_robot {
    const hal_driver_t *drv;
    void *st;
    hal_robot_desc_t desc;
    hal_safety_t safety;
    pthread_mutex_t mu;
    int estopped;
    int64_t last_act_ns;     /* monotonic time of the last action or reset */
    int held;                /* the watchdog already held for this silence */
    int wd_enabled;
    int wd_thread_on;
    int wd_stop;
    pthread_t wd_thread;
    pthread_cond_t wd_cond;
};

/* ---- driver registry ------------------------------------------------------- */

#define MAX_DRIVERS 16
static const hal_driver_t *extra_drivers[MAX_DRIVERS];
static int n_extra;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;

const hal_driver_t *hal_driver_find(const char *name)
{
    const hal_driver_t *builtin[] = {&hal_driver_mock, &hal_driver_mujoco, &hal_driver_dynamixel,
                                     &hal_driver_remote};
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (strcmp(builtin[i]->name, name) == 0) return builtin[i];
    const hal_driver_t *found = NULL;
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < n_extra; i++)
        if (strcmp(extra_drivers[i]->name, name) == 0) found = extra_drivers[i];
    pthread_mutex_unlock(&reg_mu);
    return found;
}

int hal_driver_register(const hal_driver_t *drv, cr_err_t *err)
{
    if (hal_driver_find(drv->name))
        return cr_err_set(err, CR_EEXIST, "driver '%s' is already registered", drv->name);
    pthread_mutex_lock(&reg_mu);
    int rc = 0;
    if (n_extra == MAX_DRIVERS)
        rc = cr_err_set(err, CR_ENOSPC, "driver table full (%d)", MAX_DRIVERS);
    else
        extra_drivers[n_extra++] = drv;
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

/* ---- options ----------------------------------------------------------------- */

int hal_opts_parse(const char *const *kv, int n, hal_opt_t *opts, cr_err_t *err)
{
    /* Keys and values borrow from kv: the '=' is found, never written. */
    for (int i = 0; i < n; i++) {
        const char *eq = strchr(kv[i], '=');
        if (!eq || eq == kv[i])
            return cr_err_set(err, CR_EINVAL, "option '%s' is not key=value", kv[i]);
        opts[i].key = kv[i];
        opts[i].value = eq + 1;
    }
    return 0;
}

/* Compares an option key, which may be "key" or the "key=value" string itself. */
static int key_is(const char *key, const char *name)
{
    size_t n = strlen(name);
    return strncmp(key, name, n) == 0 && (key[n] == 0 || key[n] == '=');
}

static int parse_double(const char *robot, const char *key, const char *v, double lo, double hi,
                        double *out, cr_err_t *err)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi))
        return cr_err_set(err, CR_EINVAL, "robot %s: option %s='%s' must be a number in [%g, %g]",
                          robot, key, v, lo, hi);
    *out = d;
    return 0;
}

/* Options the safety layer owns; the rest go to the driver. */
typedef struct robot_opts {
    double max_step;     /* < 0: the driver's default */
    double watchdog;     /* periods; < 0: default */
    int wd_thread;       /* -1: default (real-time robots) */
} robot_opts_t;

static int take_robot_opts(const char *name, const hal_opt_t *opts, int n, hal_opt_t *rest,
                           int *n_rest, robot_opts_t *ro, cr_err_t *err)
{
    ro->max_step = -1;
    ro->watchdog = -1;
    ro->wd_thread = -1;
    *n_rest = 0;
    for (int i = 0; i < n; i++) {
        double d;
        int rc = 0;
        if (key_is(opts[i].key, "max_step")) {
            rc = parse_double(name, "max_step", opts[i].value, 0, 1e9, &ro->max_step, err);
        } else if (key_is(opts[i].key, "watchdog")) {
            rc = parse_double(name, "watchdog", opts[i].value, 0, 1e6, &ro->watchdog, err);
        } else if (key_is(opts[i].key, "watchdog_thread")) {
            rc = parse_double(name, "watchdog_thread", opts[i].value, 0, 1, &d, err);
            ro->wd_thread = d != 0;
        } else {
            rest[(*n_rest)++] = opts[i];
        }
        if (rc) return rc;
    }
    return 0;
}

/* ---- watchdog ------------------------------------------------------------------ */

static int read_joints(hal_robot_t *r, double *q, double *ee)
{
    cr_err_t e = {0};
    memset(q, 0, sizeof(double) * HAL_MAX_DOF);
    ee[0] = ee[1] = ee[2] = 0;
    return r->drv->joints(r->st, q, ee, &e);
}

/* Caller holds r->mu. */
static int watchdog_locked(hal_robot_t *r)
{
    if (!r->wd_enabled || r->estopped || r->held || r->last_act_ns == 0) return 0;
    double periods = r->desc.limits.watchdog_periods;
    int64_t limit = (int64_t)(periods * 1e9 / r->desc.rate_hz);
    if (cr_now_ns() - r->last_act_ns <= limit) return 0;
    double q[HAL_MAX_DOF], ee[3], cmd[HAL_MAX_DOF];
    read_joints(r, q, ee);
    hal_safety_hold(&r->safety, q, cmd);
    cr_err_t e = {0};
    if (r->drv->act(r->st, cmd, &e) != 0)
        CR_WARN("hal", "robot %s: watchdog hold failed: %s", r->desc.name, e.msg);
    r->held = 1;
    r->safety.stats.watchdog_holds++;
    CR_WARN("hal", "robot %s: no action for %.1f control periods; holding position",
            r->desc.name, periods);
    return 1;
}

int hal_robot_watchdog(hal_robot_t *r)
{
    pthread_mutex_lock(&r->mu);
    int held = watchdog_locked(r);
    pthread_mutex_unlock(&r->mu);
    return held;
}

static void *watchdog_main(void *arg)
{
    hal_robot_t *r = arg;
    int64_t period = (int64_t)(1e9 / r->desc.rate_hz);
    pthread_mutex_lock(&r->mu);
    while (!r->wd_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t t = (int64_t)ts.tv_sec * CR_NS_PER_S + ts.tv_nsec + period / 2;
        ts.tv_sec = t / CR_NS_PER_S;
        ts.tv_nsec = t % CR_NS_PER_S;
        pthread_cond_timedwait(&r->wd_cond, &r->mu, &ts);
        if (!r->wd_stop) watchdog_locked(r);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------- */

int hal_robot_open(const char *name, const char *driver, const char *model,
                   const hal_opt_t *opts, int n_opts, hal_robot_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!name || !cr_name_valid(name))
        return cr_err_set(err, CR_EINVAL, "robot name '%s' is not valid ([a-z0-9_-], 1..63 "
                          "characters, starting with a letter or digit)", name ? name : "");
    const hal_driver_t *drv = hal_driver_find(driver ? driver : "");
    if (!drv)
        return cr_err_set(err, CR_ENOENT, "robot %s: unknown driver '%s' (known: mock, mujoco, "
                          "dynamixel, remote)", name, driver ? driver : "");
    hal_opt_t *rest = calloc((size_t)n_opts + 1, sizeof *rest);
    hal_robot_t *r = calloc(1, sizeof *r);
    if (!rest || !r) {
        free(rest); free(r);
        return cr_err_set(err, CR_ENOMEM, "robot %s: out of memory", name);
    }
    robot_opts_t ro;
    int n_rest, rc = take_robot_opts(name, opts, n_opts, rest, &n_rest, &ro, err);
    if (rc == 0) {
        rc = drv->open(name, model ? model : "", rest, n_rest, &r->st, err);
        if (rc) cr_err_wrap(err, "robot %s", name);
    }
    free(rest);
    if (rc) { free(r); return rc; }
    r->drv = drv;
    drv->describe(r->st, &r->desc);
    snprintf(r->desc.name, sizeof r->desc.name, "%s", name);
    snprintf(r->desc.driver, sizeof r->desc.driver, "%s", drv->name);
    if (ro.max_step >= 0) r->desc.limits.max_step = ro.max_step;
    if (ro.watchdog >= 0) r->desc.limits.watchdog_periods = ro.watchdog;
    if (r->desc.limits.watchdog_periods <= 0) r->desc.limits.watchdog_periods = 2;
    hal_safety_init(&r->safety, &r->desc.act, &r->desc.limits, r->desc.rate_hz);
    r->wd_enabled = r->desc.realtime && r->desc.rate_hz > 0 && ro.watchdog != 0;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->wd_cond, NULL);
    int want_thread = ro.wd_thread >= 0 ? ro.wd_thread : r->wd_enabled;
    if (want_thread && r->wd_enabled) {
        if (pthread_create(&r->wd_thread, NULL, watchdog_main, r) != 0) {
            hal_robot_close(r);
            return cr_err_set(err, CR_ENOMEM, "robot %s: cannot start watchdog thread", name);
        }
        r->wd_thread_on = 1;
    }
    double q[HAL_MAX_DOF], ee[3];
    read_joints(r, q, ee);
    hal_safety_reset(&r->safety, q);
    *out = r;
    return 0;
}

void hal_robot_close(hal_robot_t *r)
{
    if (!r) return;
    if (r->wd_thread_on) {
        pthread_mutex_lock(&r->mu);
        r->wd_stop = 1;
        pthread_cond_signal(&r->wd_cond);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->wd_thread, NULL);
    }
    r->drv->close(r->st);
    pthread_cond_destroy(&r->wd_cond);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

const hal_robot_desc_t *hal_robot_desc(const hal_robot_t *r) { return &r->desc; }

/* ---- operations ------------------------------------------------------------------ */

static int named(hal_robot_t *r, int rc, cr_err_t *err)
{
    if (rc) cr_err_wrap(err, "robot %s", r->desc.name);
    return rc;
}

int hal_robot_reset(hal_robot_t *r, uint64_t seed, hal_obs_t *obs, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    int rc;
    if (r->estopped) {
        rc = cr_err_set(err, CR_EBUSY, "e-stop latched; clear it before reset");
    } else {
        rc = r->drv->reset(r->st, seed, err);
        if (rc == 0) {
            double q[HAL_MAX_DOF], ee[3];
            read_joints(r, q, ee);
            hal_safety_reset(&r->safety, q);
            r->last_act_ns = cr_now_ns();
            r->held = 0;
            if (obs) rc = r->drv->observe(r->st, obs, err);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return named(r, rc, err);
}

int hal_robot_observe(hal_robot_t *r, hal_obs_t *obs, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    watchdog_locked(r);
    int rc = r->drv->observe(r->st, obs, err);
    pthread_mutex_unlock(&r->mu);
    return named(r, rc, err);
}

int hal_robot_expert(hal_robot_t *r, float *action, cr_err_t *err)
{
    if (!r->drv->expert)
        return named(r, cr_err_set(err, CR_ENOTSUP, "driver %s has no scripted expert", r->drv->name), err);
    pthread_mutex_lock(&r->mu);
    int rc = r->drv->expert(r->st, action, err);
    pthread_mutex_unlock(&r->mu);
    return named(r, rc, err);
}

int hal_robot_act(hal_robot_t *r, const float *action, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    int rc;
    double q[HAL_MAX_DOF], ee[3], cmd[HAL_MAX_DOF];
    if (r->estopped) {
        r->safety.stats.estop_blocked++;
        rc = cr_err_set(err, CR_EBUSY, "e-stop latched; action refused");
        goto out;
    }
    read_joints(r, q, ee);
    int64_t clamped = r->safety.stats.clamped_range;
    rc = hal_safety_filter(&r->safety, action, q, ee, cmd, err);
    if (r->safety.stats.clamped_range != clamped && r->safety.stats.clamped_range <= 3)
        CR_WARN("hal", "robot %s: action outside its bounds; clamped (counted in clamped_range)",
                r->desc.name);
    if (rc) {
        /* Refused: the filter produced a hold; send it so the robot stays safe. */
        cr_err_t e2 = {0};
        r->drv->act(r->st, cmd, &e2);
        goto out;
    }
    rc = r->drv->act(r->st, cmd, err);
    r->last_act_ns = cr_now_ns();
    r->held = 0;
out:
    pthread_mutex_unlock(&r->mu);
    return named(r, rc, err);
}

int hal_robot_step(hal_robot_t *r, const float *action, hal_obs_t *obs, cr_err_t *err)
{
    int rc = hal_robot_act(r, action, err);
    if (rc) return rc;
    return hal_robot_observe(r, obs, err);
}

int hal_robot_estop(hal_robot_t *r, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    int rc = r->drv->estop(r->st, err);
    if (!r->estopped) r->safety.stats.estops++;
    r->estopped = 1;   /* latched even when the driver call failed */
    pthread_mutex_unlock(&r->mu);
    CR_WARN("hal", "robot %s: e-stop latched", r->desc.name);
    return named(r, rc, err);
}

int hal_robot_estop_clear(hal_robot_t *r, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    r->estopped = 0;
    double q[HAL_MAX_DOF], ee[3];
    read_joints(r, q, ee);
    hal_safety_reset(&r->safety, q);
    r->last_act_ns = cr_now_ns();
    r->held = 0;
    pthread_mutex_unlock(&r->mu);
    CR_INFO("hal", "robot %s: e-stop cleared", r->desc.name);
    return 0;
}

int hal_robot_estopped(hal_robot_t *r)
{
    pthread_mutex_lock(&r->mu);
    int v = r->estopped;
    pthread_mutex_unlock(&r->mu);
    return v;
}

int hal_robot_joints(hal_robot_t *r, double *q, double *ee, cr_err_t *err)
{
    pthread_mutex_lock(&r->mu);
    int rc = r->drv->joints(r->st, q, ee, err);
    pthread_mutex_unlock(&r->mu);
    return named(r, rc, err);
}

void hal_robot_health(hal_robot_t *r, hal_health_t *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_lock(&r->mu);
    r->drv->health(r->st, h);
    h->estopped = r->estopped;
    pthread_mutex_unlock(&r->mu);
}

void hal_robot_safety_stats(hal_robot_t *r, hal_safety_stats_t *s)
{
    pthread_mutex_lock(&r->mu);
    *s = r->safety.stats;
    pthread_mutex_unlock(&r->mu);
}

/* ---- observation buffers ------------------------------------------------------------ */

int hal_obs_alloc(const hal_robot_desc_t *desc, int with_images, hal_obs_t *obs, cr_err_t *err)
{
    memset(obs, 0, sizeof *obs);
    obs->vec = calloc((size_t)desc->obs.vec_total + 1, sizeof(float));
    if (with_images && desc->obs.img_total) obs->img = calloc(desc->obs.img_total, 1);
    if (!obs->vec || (with_images && desc->obs.img_total && !obs->img)) {
        hal_obs_free(obs);
        return cr_err_set(err, CR_ENOMEM, "robot %s: cannot allocate observation", desc->name);
    }
    return 0;
}

void hal_obs_free(hal_obs_t *obs)
{
    free(obs->vec);
    free(obs->img);
    obs->vec = NULL;
    obs->img = NULL;
}

const float *hal_obs_vec(const hal_robot_desc_t *desc, const hal_obs_t *obs, const char *name)
{
    for (int i = 0; i < desc->obs.n_vecs; i++)
        if (strcmp(desc->obs.vecs[i].name, name) == 0) return obs->vec + desc->obs.vecs[i].offset;
    return NULL;
}
