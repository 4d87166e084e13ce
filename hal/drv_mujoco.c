/* drv_mujoco.c - the `mujoco` driver: simulated robots from MJCF files.
 *
 * A model is a name in configs/robots/ (reach2d, arm7, push) or a path to a
 * user's MJCF file following the convention of configs/robots/README.md: one
 * named actuator per controlled joint, a site "ee", a mocap body "target" (and a
 * free body "box" for push), and optional <custom> fields corral_* that set the
 * task, control mode, rate and sampling ranges. One act is one control period:
 * the command is applied and the physics runs `substeps` steps of the model's
 * timestep. MuJoCo's warnings go to our log, never to stdout or MUJOCO_LOG.TXT,
 * and a diverged state (MuJoCo's silent reset on a bad qacc) is reported as an
 * error instead of being passed off as a fresh state. */
#include "hal/mj.h"
#include "common/log.h"
#include "common/time.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const hal_mujoco_models[] = {"reach2d", "arm7", "push", NULL};

#ifndef CORRAL_SOURCE_DIR
#define CORRAL_SOURCE_DIR "."
#endif

const char *hal_mujoco_models_dir(void)
{
    const char *env = getenv("CORRAL_ROBOTS_DIR");
    if (env && env[0]) return env;
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/configs/robots", CORRAL_SOURCE_DIR);
    return dir;
}

/* ---- MuJoCo's global hooks ------------------------------------------------------ */

static void mj_warning_hook(const char *msg) { CR_WARN("mujoco", "%s", msg); }
static void mj_error_hook(const char *msg) { CR_ERROR("mujoco", "%s", msg); }

static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
static void install_hooks(void)
{
    mju_user_warning = mj_warning_hook;
    mju_user_error = mj_error_hook;
}

/* ---- options ------------------------------------------------------------------------- */

#define OFF(f) offsetof(mj_cfg_t, f)
#define SZ(f) sizeof(((mj_cfg_t *)0)->f)
static const drv_opt_t mj_opts[] = {
    {"seed", DRV_INT, 0, 2147483647, OFF(seed), 0, "base seed mixed into every reset seed"},
    {"realtime", DRV_BOOL, 0, 1, OFF(realtime), 0, "pace steps to the control rate"},
    {"speed", DRV_DOUBLE, 0.01, 1000, OFF(speed), 0, "with realtime: pace at this multiple of real time"},
    {"episode_steps", DRV_INT, 1, 1e7, OFF(episode_steps), 0, "steps per episode"},
    {"control_hz", DRV_DOUBLE, 0.1, 10000, OFF(control_hz), 0, "control rate"},
    {"camera", DRV_STR, 0, 0, OFF(camera), SZ(camera), "MJCF camera rendered into obs images"},
    {"image_width", DRV_INT, 8, 4096, OFF(image_width), 0, "image width, pixels"},
    {"image_height", DRV_INT, 8, 4096, OFF(image_height), 0, "image height, pixels"},
    {"action_penalty", DRV_DOUBLE, 0, 100, OFF(action_penalty), 0, "reward -= k |action|^2"},
    {"success_dist", DRV_DOUBLE, 0, 10, OFF(success_dist), 0, "success tolerance, m"},
    {"reward_scale", DRV_DOUBLE, 1e-6, 1e6, OFF(reward_scale), 0, "reward multiplier"},
    {"task", DRV_STR, 0, 0, OFF(task), SZ(task), "reach or push"},
    {"gl", DRV_STR, 0, 0, OFF(gl), SZ(gl), "camera GL: auto (EGL, else OSMesa), egl or osmesa"},
};

/* ---- custom fields ------------------------------------------------------------------- */

const mjtNum *mj_custom_numeric(const mjModel *m, const char *name, int *size)
{
    char full[96];
    snprintf(full, sizeof full, "corral_%s", name);
    for (int i = 0; i < m->nnumeric; i++)
        if (strcmp(m->names + m->name_numericadr[i], full) == 0) {
            if (size) *size = m->numeric_size[i];
            return m->numeric_data + m->numeric_adr[i];
        }
    if (size) *size = 0;
    return NULL;
}

const char *mj_custom_text(const mjModel *m, const char *name)
{
    char full[96];
    snprintf(full, sizeof full, "corral_%s", name);
    for (int i = 0; i < m->ntext; i++)
        if (strcmp(m->names + m->name_textadr[i], full) == 0) return m->text_data + m->text_adr[i];
    return NULL;
}

/* ---- open / close -------------------------------------------------------------------- */

static int resolve_path(const char *model, char *path, size_t size, cr_err_t *err)
{
    if (!model[0]) return cr_err_set(err, CR_EINVAL, "no model given (one of reach2d, arm7, push, "
                                     "or a path to an MJCF file)");
    size_t len = strlen(model);
    if (strchr(model, '/') || (len > 4 && strcmp(model + len - 4, ".xml") == 0))
        snprintf(path, size, "%s", model);
    else
        snprintf(path, size, "%s/%s.xml", hal_mujoco_models_dir(), model);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return cr_err_set(err, CR_ENOENT, "model '%s': MJCF file %s: %s", model, path,
                          strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return cr_err_set(err, CR_EINVAL, "model '%s': %s is not a file", model, path);
    return 0;
}

static void mujoco_close(void *st)
{
    mj_robot_t *r = st;
    if (!r) return;
    if (r->render) mj_render_destroy(r->render);
    if (r->d) mj_deleteData(r->d);
    if (r->m) mj_deleteModel(r->m);
    free(r);
}

static int mujoco_open(const char *robot, const char *model, const hal_opt_t *opts, int n_opts,
                       void **state, cr_err_t *err)
{
    pthread_once(&hooks_once, install_hooks);
    mj_cfg_t cfg = {.image_width = 84, .image_height = 84};
    int rc = drv_opts_apply(robot, mj_opts, sizeof mj_opts / sizeof mj_opts[0], opts, n_opts,
                            &cfg, err);
    if (rc) return rc;
    char path[1024];
    rc = resolve_path(model, path, sizeof path, err);
    if (rc) return rc;
    mj_robot_t *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "out of memory");
    snprintf(r->robot, sizeof r->robot, "%s", robot);
    r->cfg = cfg;
    char mjerr[1000] = "";
    r->m = mj_loadXML(path, NULL, mjerr, sizeof mjerr);
    if (!r->m) {
        free(r);
        for (char *p = mjerr; *p; p++) if (*p == '\n') *p = ' ';
        return cr_err_set(err, CR_EINVAL, "model '%s': cannot load MJCF %s: %s", model, path,
                          mjerr[0] ? mjerr : "unknown MuJoCo error");
    }
    r->d = mj_makeData(r->m);
    if (!r->d) {
        mujoco_close(r);
        return cr_err_set(err, CR_ENOMEM, "model '%s': cannot allocate MuJoCo data", model);
    }
    snprintf(r->desc.model, sizeof r->desc.model, "%s", model);
    rc = mj_task_setup(r, err);
    if (rc == 0 && cfg.camera[0]) rc = mj_render_create(r, &r->render, err);
    if (rc) {
        mujoco_close(r);
        return cr_err_wrap(err, "model '%s'", model);
    }
    r->desc.realtime = cfg.realtime;
    mj_task_reset(r, 0);
    *state = r;
    return 0;
}

static void mujoco_describe(void *st, hal_robot_desc_t *d) { *d = ((mj_robot_t *)st)->desc; }

static int mujoco_reset(void *st, uint64_t seed, cr_err_t *err)
{
    mj_robot_t *r = st;
    mj_task_reset(r, seed ^ ((uint64_t)(unsigned)r->cfg.seed * 0xD1B54A32D192ED03ULL));
    r->bad_qacc_seen = r->d->warning[mjWARN_BADQACC].number;
    r->next_deadline_ns = 0;
    return 0;
}

static int mujoco_observe(void *st, hal_obs_t *obs, cr_err_t *err)
{
    mj_robot_t *r = st;
    mj_task_observe(r, obs);
    if (obs->img && r->render) {
        int rc = mj_render_image(r->render, r, obs->img, err);
        if (rc) { r->errors++; return rc; }
    }
    return 0;
}

/* Damped least squares: joint targets that move the end-effector by dx. */
static void ik_step(mj_robot_t *r, const double *dx)
{
    const mjModel *m = r->m;
    mjData *d = r->d;
    int nv = m->nv, n = r->n;
    mjtNum *jac = malloc(sizeof(mjtNum) * 3 * (size_t)nv);
    if (!jac) return;
    mj_jacSite(m, d, jac, NULL, r->site_ee);
    double A[3][HAL_MAX_DOF];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < n; i++) A[k][i] = jac[k * nv + r->dadr[i]];
    free(jac);
    /* M = A A^T + lambda^2 I (3x3), solve M y = dx, dq = A^T y. */
    const double lambda2 = 0.05 * 0.05;
    double M[3][3];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            double s = a == b ? lambda2 : 0;
            for (int i = 0; i < n; i++) s += A[a][i] * A[b][i];
            M[a][b] = s;
        }
    double det = M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1]) -
                 M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0]) +
                 M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0]);
    if (fabs(det) < 1e-12) return;
    double inv[3][3] = {
        {M[1][1] * M[2][2] - M[1][2] * M[2][1], M[0][2] * M[2][1] - M[0][1] * M[2][2],
         M[0][1] * M[1][2] - M[0][2] * M[1][1]},
        {M[1][2] * M[2][0] - M[1][0] * M[2][2], M[0][0] * M[2][2] - M[0][2] * M[2][0],
         M[0][2] * M[1][0] - M[0][0] * M[1][2]},
        {M[1][0] * M[2][1] - M[1][1] * M[2][0], M[0][1] * M[2][0] - M[0][0] * M[2][1],
         M[0][0] * M[1][1] - M[0][1] * M[1][0]}};
    double y[3];
    for (int a = 0; a < 3; a++)
        y[a] = (inv[a][0] * dx[0] + inv[a][1] * dx[1] + inv[a][2] * dx[2]) / det;
    const hal_limits_t *L = &r->desc.limits;
    for (int i = 0; i < n; i++) {
        double dq = A[0][i] * y[0] + A[1][i] * y[1] + A[2][i] * y[2];
        double q = d->qpos[r->qadr[i]] + dq;
        r->ctrl_target[i] = q < L->joint_low[i] ? L->joint_low[i]
                          : q > L->joint_high[i] ? L->joint_high[i] : q;
    }
}

static void pace(mj_robot_t *r)
{
    /* A simulation may run a known factor faster than real time: still paced
     * (steady, like a robot), only sooner. */
    double speed = r->cfg.speed > 0 ? r->cfg.speed : 1;
    int64_t period = (int64_t)(1e9 / (r->desc.rate_hz * speed));
    int64_t now = cr_now_ns();
    if (r->next_deadline_ns == 0 || now > r->next_deadline_ns + period)
        r->next_deadline_ns = now + period;   /* first step, or far behind: re-anchor */
    cr_sleep_until_ns(r->next_deadline_ns);
    r->next_deadline_ns += period;
}

static int mujoco_act(void *st, const double *cmd, cr_err_t *err)
{
    mj_robot_t *r = st;
    const mjModel *m = r->m;
    mjData *d = r->d;
    int n = r->n;
    memcpy(r->last_cmd, cmd, sizeof(double) * (size_t)r->desc.act.dim);
    if (r->desc.act.mode == HAL_CTRL_EE_DELTA) {
        /* A planar robot moves its end-effector in x, y only (ee_dims 2). */
        double dx[3] = {cmd[0], cmd[1], r->desc.act.dim == 3 ? cmd[2] : 0.0};
        ik_step(r, dx);
        for (int i = 0; i < n; i++) d->ctrl[i] = r->ctrl_target[i];
    } else {
        for (int i = 0; i < n; i++) d->ctrl[i] = cmd[i];
    }
    for (int s = 0; s < r->substeps; s++) {
        /* Gravity compensation on the arm joints, as a real arm's controller does. */
        for (int i = 0; i < n; i++) d->qfrc_applied[r->dadr[i]] = d->qfrc_bias[r->dadr[i]];
        mj_step(m, d);
    }
    r->step++;
    if (d->warning[mjWARN_BADQACC].number != r->bad_qacc_seen) {
        r->bad_qacc_seen = d->warning[mjWARN_BADQACC].number;
        r->errors++;
        return cr_err_set(err, CR_EINTERNAL, "physics diverged (bad acceleration at t=%.3f s); "
                          "MuJoCo reset the state, reset the episode", d->time);
    }
    if (r->cfg.realtime) pace(r);
    return 0;
}

static int mujoco_estop(void *st, cr_err_t *err)
{
    /* A simulated e-stop holds the arm where it is: joint targets at the current
     * positions, zero velocity commands; no physics runs until the next act. */
    mj_robot_t *r = st;
    for (int i = 0; i < r->n; i++)
        r->d->ctrl[i] = r->desc.act.mode == HAL_CTRL_JOINT_VELOCITY ? 0 : r->d->qpos[r->qadr[i]];
    return 0;
}

static void mujoco_health(void *st, hal_health_t *h)
{
    mj_robot_t *r = st;
    h->ok = 1;
    h->errors = r->errors;
    snprintf(h->detail, sizeof h->detail, "mujoco %d: t=%.3f s, %lld steps", mj_version(),
             r->d->time, (long long)r->step);
}

static int mujoco_joints(void *st, double *q, double *ee, cr_err_t *err)
{
    mj_robot_t *r = st;
    for (int i = 0; i < r->n; i++) q[i] = r->d->qpos[r->qadr[i]];
    for (int k = 0; k < 3; k++) ee[k] = r->d->site_xpos[3 * r->site_ee + k];
    return 0;
}

static int mujoco_expert(void *st, float *action, cr_err_t *err) { return mj_task_expert(st, action, err); }

const hal_driver_t hal_driver_mujoco = {
    .name = "mujoco", .open = mujoco_open, .close = mujoco_close, .describe = mujoco_describe,
    .reset = mujoco_reset, .observe = mujoco_observe, .act = mujoco_act, .estop = mujoco_estop,
    .health = mujoco_health, .joints = mujoco_joints, .expert = mujoco_expert,
};
