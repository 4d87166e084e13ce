/* mj.h - private to the mujoco driver: the simulated robot's state, shared by the
 * driver (drv_mujoco.c), its tasks (mj_task.c) and its renderer (mj_render.c). */
#ifndef CORRAL_HAL_MJ_H
#define CORRAL_HAL_MJ_H

#include "hal/drv.h"

#include <mujoco/mujoco.h>

typedef enum mj_task_kind { MJ_TASK_REACH = 0, MJ_TASK_PUSH } mj_task_kind_t;

typedef struct mj_cfg {
    int seed;
    int realtime;
    double speed;            /* realtime pace as a multiple of real time; 0: 1 */
    int episode_steps;       /* 0: from the model */
    double control_hz;       /* 0: from the model */
    char camera[64];         /* "" : no images */
    int image_width, image_height;
    double action_penalty;
    double reward_scale;     /* 0: from the model (corral_reward_scale, else 1) */
    double success_dist;     /* 0: from the model */
    char task[16];           /* "" : from the model */
    char gl[16];             /* "", "auto", "egl" or "osmesa": the headless GL */
} mj_cfg_t;

typedef struct mj_render mj_render_t;

typedef struct mj_robot {
    char robot[HAL_NAME_MAX];
    mj_cfg_t cfg;
    mjModel *m;
    mjData *d;
    hal_robot_desc_t desc;
    mj_task_kind_t task;
    int n;                      /* controlled joints = actuators */
    int qadr[HAL_MAX_DOF], dadr[HAL_MAX_DOF], jnt[HAL_MAX_DOF];
    int site_ee, site_target, body_target, mocap_target, body_box, box_qadr;
    int key_home;
    int substeps;
    double target_radius[2];    /* reach2d style polar sampling when [1] > 0 */
    int n_goals;                /* corral_targets: named mocap targets (0: the one "target") */
    int mocap_goal[HAL_MAX_GOALS];
    int goal;                   /* this episode's goal (index into desc.goals) */
    double goal_separation;     /* m between the targets of a multi-target scene */
    double target_box[6], box_box[6];
    double qpos_noise;
    double success_dist;
    double reward_scale;
    double last_cmd[HAL_MAX_DOF];
    double ctrl_target[HAL_MAX_DOF];   /* ee_delta: joint targets from IK */
    int64_t step;
    int64_t next_deadline_ns;   /* realtime pacing */
    int64_t errors;
    int bad_qacc_seen;
    mj_render_t *render;
} mj_robot_t;

/* Tasks: start state, observation layout, reward, success. */
int mj_task_setup(mj_robot_t *r, cr_err_t *err);
void mj_task_reset(mj_robot_t *r, uint64_t seed);
void mj_task_observe(mj_robot_t *r, hal_obs_t *obs);
/* The reach task's scripted expert (CR_ENOTSUP for push). */
int mj_task_expert(mj_robot_t *r, float *action, cr_err_t *err);

/* Headless rendering (EGL surfaceless, else OSMesa). */
int mj_render_create(mj_robot_t *r, mj_render_t **out, cr_err_t *err);
int mj_render_image(mj_render_t *rd, mj_robot_t *r, uint8_t *rgb, cr_err_t *err);
void mj_render_destroy(mj_render_t *rd);

/* Custom MJCF fields: corral_<name>; NULL / 0 when absent. */
const mjtNum *mj_custom_numeric(const mjModel *m, const char *name, int *size);
const char *mj_custom_text(const mjModel *m, const char *name);

#endif
