/* safety.c - the rules every action passes before a driver sees it.
 *
 * The filter is pure (no I/O, no clock): given the action, the current joints and
 * end-effector, it produces the physical command and counts each intervention.
 * Order matters and is fixed: (1) NaN/Inf anywhere refuses the whole action, so a
 * half-valid vector never moves a joint; (2) each value is clamped to the action
 * bounds; (3) the change from the previous command is capped (max_step); (4) the
 * result is cut at joint limits (position, velocity) or the workspace box
 * (ee_delta), last, so no later rule can push it back outside. */
#include "hal/hal.h"

#include <math.h>
#include <string.h>

const char *hal_ctrl_mode_name(hal_ctrl_mode_t m)
{
    switch (m) {
    case HAL_CTRL_JOINT_POSITION: return "joint_position";
    case HAL_CTRL_JOINT_VELOCITY: return "joint_velocity";
    case HAL_CTRL_EE_DELTA: return "ee_delta";
    }
    return "unknown";
}

int hal_ctrl_mode_parse(const char *s, hal_ctrl_mode_t *out)
{
    for (int m = HAL_CTRL_JOINT_POSITION; m <= HAL_CTRL_EE_DELTA; m++)
        if (strcmp(s, hal_ctrl_mode_name((hal_ctrl_mode_t)m)) == 0) {
            *out = (hal_ctrl_mode_t)m;
            return 0;
        }
    return CR_EINVAL;
}

void hal_safety_init(hal_safety_t *s, const hal_act_spec_t *act, const hal_limits_t *lim,
                     double rate_hz)
{
    memset(s, 0, sizeof *s);
    s->act = *act;
    s->lim = *lim;
    s->dt = rate_hz > 0 ? 1.0 / rate_hz : 0.0;
}

void hal_safety_hold(const hal_safety_t *s, const double *q, double *cmd)
{
    for (int i = 0; i < s->act.dim; i++) {
        if (s->act.mode == HAL_CTRL_JOINT_POSITION)
            cmd[i] = (q && i < s->lim.n_joints) ? q[i] : (s->have_prev ? s->prev_cmd[i] : 0.0);
        else
            cmd[i] = 0.0;  /* zero velocity / zero displacement */
    }
}

void hal_safety_reset(hal_safety_t *s, const double *q)
{
    hal_safety_hold(s, q, s->prev_cmd);
    s->have_prev = 1;
}

static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Rule 3: cap the change from the previous command; joint modes per joint, the
 * end-effector displacement by its norm (so the direction is kept). */
static void cap_step(hal_safety_t *s, double *cmd)
{
    double cap = s->lim.max_step;
    if (cap <= 0 || !s->have_prev) return;
    int n = s->act.dim, capped = 0;
    if (s->act.mode == HAL_CTRL_EE_DELTA) {
        /* The displacement itself is the change per step. */
        double norm = 0;
        int k = n < 3 ? n : 3;
        for (int i = 0; i < k; i++) norm += cmd[i] * cmd[i];
        norm = sqrt(norm);
        if (norm > cap) {
            for (int i = 0; i < k; i++) cmd[i] *= cap / norm;
            capped = 1;
        }
    } else {
        for (int i = 0; i < n; i++) {
            double d = cmd[i] - s->prev_cmd[i];
            if (d > cap) { cmd[i] = s->prev_cmd[i] + cap; capped = 1; }
            else if (d < -cap) { cmd[i] = s->prev_cmd[i] - cap; capped = 1; }
        }
    }
    s->stats.capped_step += capped;
}

/* Rule 4: limits of the joints or of the workspace. */
static void cut_limits(hal_safety_t *s, const double *q, const double *ee, double *cmd)
{
    const hal_limits_t *L = &s->lim;
    int cut = 0;
    if (s->act.mode == HAL_CTRL_JOINT_POSITION) {
        for (int i = 0; i < s->act.dim && i < L->n_joints; i++) {
            double v = clampd(cmd[i], L->joint_low[i], L->joint_high[i]);
            if (v != cmd[i]) { cmd[i] = v; cut = 1; }
        }
        s->stats.clamped_joint += cut;
    } else if (s->act.mode == HAL_CTRL_JOINT_VELOCITY) {
        if (!q || s->dt <= 0) return;
        /* Never command a velocity that crosses a limit within one period. */
        for (int i = 0; i < s->act.dim && i < L->n_joints; i++) {
            double vmax = (L->joint_high[i] - q[i]) / s->dt;
            double vmin = (L->joint_low[i] - q[i]) / s->dt;
            if (vmax < 0) vmax = 0;
            if (vmin > 0) vmin = 0;
            double v = clampd(cmd[i], vmin, vmax);
            if (v != cmd[i]) { cmd[i] = v; cut = 1; }
        }
        s->stats.clamped_joint += cut;
    } else if (L->has_workspace && ee) {
        for (int i = 0; i < 3 && i < s->act.dim; i++) {
            double lo = L->ws_low[i] - ee[i], hi = L->ws_high[i] - ee[i];
            if (lo > 0) lo = 0;   /* already outside: allow moving back in only */
            if (hi < 0) hi = 0;
            double v = clampd(cmd[i], lo, hi);
            if (v != cmd[i]) { cmd[i] = v; cut = 1; }
        }
        s->stats.clamped_workspace += cut;
    }
}

int hal_safety_filter(hal_safety_t *s, const float *action, const double *q, const double *ee,
                      double *cmd, cr_err_t *err)
{
    int n = s->act.dim;
    s->stats.actions++;
    for (int i = 0; i < n; i++)
        if (!isfinite(action[i])) {
            s->stats.rejected_nan++;
            hal_safety_hold(s, q, cmd);
            return cr_err_set(err, CR_EINVAL, "action[%d] is %s; holding position", i,
                              isnan(action[i]) ? "NaN" : "infinite");
        }
    int clamped = 0;
    for (int i = 0; i < n; i++) {
        double a = action[i];
        double c = clampd(a, s->act.low[i], s->act.high[i]);
        clamped |= c != a;
        cmd[i] = c * s->act.scale[i];
    }
    s->stats.clamped_range += clamped;
    cap_step(s, cmd);
    cut_limits(s, q, ee, cmd);
    memcpy(s->prev_cmd, cmd, (size_t)n * sizeof *cmd);
    s->have_prev = 1;
    return 0;
}
