/* reach_env.h - a small 2-link planar reacher for the learning check, standing in
 * for the MuJoCo reach2d task: links of 0.10 and 0.11 m, actions in [-1, 1]^2 set
 * the joints' target velocities (3 rad/s at full scale) through a first-order
 * lag, 0.05 s steps, 50-step episodes, success when the fingertip ends within
 * 2 cm of the target. Observation (10): cos/sin of both joints, joint velocities
 * (scaled), the target position and the fingertip-to-target vector (x10). */
#ifndef CORRAL_TESTS_REACH_ENV_H
#define CORRAL_TESTS_REACH_ENV_H

#include "policies/nn/nn.h"

#include <math.h>

#define REACH_OBS 10
#define REACH_ACT 2
#define REACH_STEPS 50

typedef struct reach_env {
    float q[2], qd[2], target[2];
    int t;
    nn_rng_t rng;
} reach_env_t;

static inline void reach_tip(const reach_env_t *e, float *x, float *y)
{
    *x = 0.10f * cosf(e->q[0]) + 0.11f * cosf(e->q[0] + e->q[1]);
    *y = 0.10f * sinf(e->q[0]) + 0.11f * sinf(e->q[0] + e->q[1]);
}

static inline float reach_dist(const reach_env_t *e)
{
    float x, y;
    reach_tip(e, &x, &y);
    return hypotf(x - e->target[0], y - e->target[1]);
}

static inline void reach_obs(const reach_env_t *e, float *o)
{
    float x, y;
    reach_tip(e, &x, &y);
    o[0] = cosf(e->q[0]); o[1] = sinf(e->q[0]);
    o[2] = cosf(e->q[1]); o[3] = sinf(e->q[1]);
    o[4] = e->qd[0] / 3.0f; o[5] = e->qd[1] / 3.0f;
    o[6] = e->target[0] * 5.0f; o[7] = e->target[1] * 5.0f;
    o[8] = (x - e->target[0]) * 10.0f; o[9] = (y - e->target[1]) * 10.0f;
}

static inline void reach_reset(reach_env_t *e, float *obs)
{
    e->q[0] = (2.0f * nn_rng_uniform(&e->rng) - 1.0f) * (float)M_PI;
    e->q[1] = (2.0f * nn_rng_uniform(&e->rng) - 1.0f) * (float)M_PI;
    e->qd[0] = e->qd[1] = 0.0f;
    float r = 0.04f + 0.16f * nn_rng_uniform(&e->rng);
    float th = (2.0f * nn_rng_uniform(&e->rng) - 1.0f) * (float)M_PI;
    e->target[0] = r * cosf(th);
    e->target[1] = r * sinf(th);
    e->t = 0;
    reach_obs(e, obs);
}

/* Returns the reward; *end is 1 after the last step of the episode. */
static inline float reach_step(reach_env_t *e, const float *a, float *obs, int *end)
{
    for (int j = 0; j < 2; j++) {
        float u = a[j] > 1.0f ? 1.0f : a[j] < -1.0f ? -1.0f : a[j];
#ifdef REACH_LAG
        e->qd[j] = 0.5f * e->qd[j] + 0.5f * 3.0f * u;
#else
        e->qd[j] = 2.0f * u;
#endif
        e->q[j] += 0.05f * e->qd[j];
    }
    e->t++;
    reach_obs(e, obs);
    *end = e->t >= REACH_STEPS;
    float d = reach_dist(e);
#ifndef REACH_BONUS
#define REACH_BONUS 1.0f
#endif
    /* dense distance term plus a bonus inside the success radius: -dist alone
     * has too flat a gradient near the target to learn the last centimetres */
    return -10.0f * d + (d < 0.02f ? REACH_BONUS : 0.0f);
}

#endif
