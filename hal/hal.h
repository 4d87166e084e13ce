/* hal.h - the hardware abstraction layer: robots, cameras and GPUs as devices.
 *
 * A robot is opened by driver name ("mujoco", "dynamixel", "mock", "remote"), a
 * model name and a list of key=value options, and is then used only through this
 * header: describe it (observation spec, action spec, control rate, safety limits),
 * reset it, observe into a caller-owned buffer, act. Every action passes through
 * the safety layer (safety.c) before a driver sees it: NaN rejection, clamping to
 * action bounds, joint and workspace limits, a cap on the change per step, a
 * watchdog that holds position when actions stop, and an e-stop that latches until
 * cleared; each intervention is counted (hal_safety_stats_t).
 *
 * Units and layout: an observation is one flat float vector (the named vectors of
 * the spec, concatenated in spec order) plus, when the spec has cameras, one uint8
 * image buffer (each camera height x width x 3 RGB, row 0 at the top, concatenated
 * in spec order). A policy's action lives in the action spec's bounds; the
 * physical command is action[i] * scale[i] in the unit of the control mode.
 *
 * Threads: a robot is used by one thread at a time, except that the watchdog
 * thread (real-time robots only) and hal_robot_estop may run concurrently with
 * it; the robot serialises those internally. */
#ifndef CORRAL_HAL_HAL_H
#define CORRAL_HAL_HAL_H

#include "common/err.h"

#include <stddef.h>
#include <stdint.h>

#define HAL_NAME_MAX   64
#define HAL_UNIT_MAX   16
#define HAL_MAX_VECS   16
#define HAL_MAX_CAMS   4
#define HAL_MAX_DOF    32
#define HAL_MAX_GPUS   64
#define HAL_MAX_GOALS  8

/* ---- device model --------------------------------------------------------- */

typedef enum hal_ctrl_mode {
    HAL_CTRL_JOINT_POSITION = 0, /* command: absolute joint targets, rad */
    HAL_CTRL_JOINT_VELOCITY,     /* command: joint velocities, rad/s */
    HAL_CTRL_EE_DELTA,           /* command: end-effector displacement x,y,z per step, m */
} hal_ctrl_mode_t;

const char *hal_ctrl_mode_name(hal_ctrl_mode_t m);
/* "joint_position" | "joint_velocity" | "ee_delta"; returns 0 or CR_EINVAL. */
int hal_ctrl_mode_parse(const char *s, hal_ctrl_mode_t *out);

/* One named proprioceptive vector inside the flat observation. */
typedef struct hal_vec_spec {
    char name[HAL_NAME_MAX];  /* "joint_pos", "ee_to_target", ... */
    char unit[HAL_UNIT_MAX];  /* "rad", "rad/s", "m", "1" */
    int dim;
    int offset;               /* first float of this vector in hal_obs_t.vec */
} hal_vec_spec_t;

/* A camera, itself a device: images of height x width x 3 uint8. */
typedef struct hal_cam_spec {
    char name[HAL_NAME_MAX];
    int width, height;
    size_t offset;            /* first byte of this image in hal_obs_t.img */
} hal_cam_spec_t;

typedef struct hal_obs_spec {
    int n_vecs;
    hal_vec_spec_t vecs[HAL_MAX_VECS];
    int vec_total;            /* floats in hal_obs_t.vec */
    int n_cams;
    hal_cam_spec_t cams[HAL_MAX_CAMS];
    size_t img_total;         /* bytes in hal_obs_t.img (0 without cameras) */
} hal_obs_spec_t;

typedef struct hal_act_spec {
    int dim;
    hal_ctrl_mode_t mode;
    float low[HAL_MAX_DOF], high[HAL_MAX_DOF]; /* bounds of the policy's action */
    float scale[HAL_MAX_DOF];                  /* physical command = action * scale */
} hal_act_spec_t;

/* Safety limits, enforced by the HAL whatever the policy sends. */
typedef struct hal_limits {
    int n_joints;
    double joint_low[HAL_MAX_DOF], joint_high[HAL_MAX_DOF];  /* rad */
    int has_workspace;
    double ws_low[3], ws_high[3];    /* end-effector box, m (EE_DELTA and sims) */
    double max_step;                 /* cap on |command change| per step in the mode's
                                        unit (position: rad; velocity: rad/s;
                                        ee_delta: m of displacement); <= 0: none */
    double watchdog_periods;         /* hold after this many silent periods (2) */
} hal_limits_t;

typedef struct hal_robot_desc {
    char name[HAL_NAME_MAX];         /* the robot's registered name */
    char driver[HAL_NAME_MAX];
    char model[256];
    double rate_hz;                  /* native control rate */
    int realtime;                    /* steps are paced by wall time */
    int episode_steps;               /* 0 when the robot has no episodes */
    hal_obs_spec_t obs;
    hal_act_spec_t act;
    hal_limits_t limits;
    /* A multi-target task names its targets ("red", "green", ...); each episode
     * one of them is the goal (hal_obs_t.goal), the one an instruction names.
     * 0 for a task with a single target. */
    int n_goals;
    char goals[HAL_MAX_GOALS][HAL_NAME_MAX];
} hal_robot_desc_t;

/* Caller-owned observation buffer. vec must hold desc.obs.vec_total floats; img
 * desc.obs.img_total bytes, or NULL to skip images (rendering is then not done). */
typedef struct hal_obs {
    float *vec;
    uint8_t *img;
    int64_t stamp_ns;        /* monotonic time the state was read */
    int64_t step;            /* steps since reset */
    double reward;           /* task reward of the last step (0 without a task) */
    int terminated;          /* task ended (failure or goal), not a time limit */
    int truncated;           /* episode_steps reached */
    int success;             /* task success test on the current state */
    int goal;                /* this episode's goal: an index into desc.goals (0 when none) */
} hal_obs_t;

/* What a health call reports. */
typedef struct hal_health {
    int ok;                  /* 1: the driver talks to its hardware */
    int estopped;            /* the e-stop latch is set */
    int64_t errors;          /* driver-level errors since open */
    char detail[256];
} hal_health_t;

/* Every safety intervention since open, by rule. */
typedef struct hal_safety_stats {
    int64_t actions;          /* actions received */
    int64_t rejected_nan;     /* NaN/Inf actions refused (robot held) */
    int64_t clamped_range;    /* actions outside the spec's bounds, clamped */
    int64_t clamped_joint;    /* commands cut at a joint limit */
    int64_t clamped_workspace;/* end-effector targets cut at the workspace box */
    int64_t capped_step;      /* commands whose change per step was capped */
    int64_t watchdog_holds;   /* holds commanded because actions stopped */
    int64_t estops;           /* e-stops triggered */
    int64_t estop_blocked;    /* actions refused while latched */
} hal_safety_stats_t;

/* A key=value option (both borrowed for the duration of the call). */
typedef struct hal_opt {
    const char *key;
    const char *value;
} hal_opt_t;

/* Parses "key=value" strings (as from `--set key=value`) into opts, which borrow
 * from the strings. Returns 0 or CR_EINVAL naming the malformed entry. */
int hal_opts_parse(const char *const *kv, int n, hal_opt_t *opts, cr_err_t *err);

/* ---- drivers --------------------------------------------------------------- */

/* The driver vtable. A driver owns its state (returned by open, freed by close).
 * Commands reaching act have passed the safety layer and are in physical units of
 * desc.act.mode (dim desc.act.dim). Each call returns 0 or a negative CR_E* code
 * with a message; the robot wrapper prefixes the robot's name. */
typedef struct hal_driver {
    const char *name;
    /* Options not known to the driver are an error naming the option. */
    int (*open)(const char *robot, const char *model, const hal_opt_t *opts, int n_opts,
                void **state, cr_err_t *err);
    void (*close)(void *state);
    void (*describe)(void *state, hal_robot_desc_t *desc);
    int (*reset)(void *state, uint64_t seed, cr_err_t *err);
    int (*observe)(void *state, hal_obs_t *obs, cr_err_t *err);
    int (*act)(void *state, const double *cmd, cr_err_t *err);
    /* Stops motion now (hold position or torque off, the driver says which). */
    int (*estop)(void *state, cr_err_t *err);
    void (*health)(void *state, hal_health_t *h);
    /* Current joint positions (n_joints) and end-effector position (3, may be
     * left untouched when unknown) for the safety layer; cheap, no new I/O
     * required. */
    int (*joints)(void *state, double *q, double *ee, cr_err_t *err);
    /* Optional (NULL: none): a scripted expert's action for the current state,
     * desc.act.dim floats within the action bounds, for demonstrations. */
    int (*expert)(void *state, float *action, cr_err_t *err);
} hal_driver_t;

/* Built-in drivers (and hal_driver_remote below), and a registry for more. */
extern const hal_driver_t hal_driver_mock;
extern const hal_driver_t hal_driver_mujoco;
extern const hal_driver_t hal_driver_dynamixel;

/* Looks a driver up by name; NULL when unknown. */
const hal_driver_t *hal_driver_find(const char *name);
/* Adds a driver (borrowed; must outlive every robot using it). CR_EEXIST when
 * the name is taken, CR_ENOSPC when the table is full. */
int hal_driver_register(const hal_driver_t *drv, cr_err_t *err);

/* ---- robots ---------------------------------------------------------------- */

typedef struct hal_robot hal_robot_t;

/* Opens robot `name` with driver `driver` and `model` (for mujoco a name in
 * configs/robots/ or a path to an MJCF file). Options are validated; errors name
 * the robot and the option. Options every driver accepts (consumed by the safety
 * layer): max_step=<float>, watchdog=<periods>, watchdog_thread=0|1. *out is
 * owned by the caller: free with hal_robot_close. */
int hal_robot_open(const char *name, const char *driver, const char *model,
                   const hal_opt_t *opts, int n_opts, hal_robot_t **out, cr_err_t *err);
void hal_robot_close(hal_robot_t *r);

/* The description; borrowed, valid until close. */
const hal_robot_desc_t *hal_robot_desc(const hal_robot_t *r);

/* Starts an episode: randomises start and target from seed (same seed, same
 * episode) and fills obs when obs is not NULL. Refused while the e-stop latches. */
int hal_robot_reset(hal_robot_t *r, uint64_t seed, hal_obs_t *obs, cr_err_t *err);

/* Reads the current state into the caller's buffer. */
int hal_robot_observe(hal_robot_t *r, hal_obs_t *obs, cr_err_t *err);

/* Sends one action (desc.act.dim floats) through the safety layer to the driver.
 * Values outside the spec's bounds are clamped and counted (clamped_range, a
 * warning logged for the first few). NaN/Inf: CR_EINVAL naming the index, the
 * robot holds position. E-stop latched: CR_EBUSY. For simulated robots one act
 * advances one control period (paced to wall time when realtime=true). */
int hal_robot_act(hal_robot_t *r, const float *action, cr_err_t *err);

/* A scripted expert's action for the current state (desc.act.dim floats inside
 * the action bounds), to record demonstrations: the simulated reach tasks move
 * the end-effector straight at the episode's goal (inverse kinematics for
 * joint-space control). CR_ENOTSUP when the driver or task has no expert. */
int hal_robot_expert(hal_robot_t *r, float *action, cr_err_t *err);

/* act then observe: the usual environment step. */
int hal_robot_step(hal_robot_t *r, const float *action, hal_obs_t *obs, cr_err_t *err);

/* Latches the e-stop (the driver stops motion); act and reset return CR_EBUSY
 * until hal_robot_estop_clear. Safe to call from any thread. */
int hal_robot_estop(hal_robot_t *r, cr_err_t *err);
int hal_robot_estop_clear(hal_robot_t *r, cr_err_t *err);
int hal_robot_estopped(hal_robot_t *r);

/* Watchdog check: when no action arrived within watchdog_periods control
 * periods, commands a hold (once per silence) and counts it. Returns 1 when it
 * held. Real-time robots run this from their own thread (watchdog_thread=1,
 * the default for real drivers); hal_robot_observe also calls it. */
int hal_robot_watchdog(hal_robot_t *r);

void hal_robot_health(hal_robot_t *r, hal_health_t *h);
void hal_robot_safety_stats(hal_robot_t *r, hal_safety_stats_t *s);

/* Allocates obs buffers sized for desc (img only when with_images and the spec has
 * cameras); free with hal_obs_free. */
int hal_obs_alloc(const hal_robot_desc_t *desc, int with_images, hal_obs_t *obs, cr_err_t *err);
void hal_obs_free(hal_obs_t *obs);
/* The named vector's first float inside obs->vec, or NULL. */
const float *hal_obs_vec(const hal_robot_desc_t *desc, const hal_obs_t *obs, const char *name);

/* Names of the robot models shipped in configs/robots/ (built-in list). */
extern const char *const hal_mujoco_models[];
/* Directory holding the MJCF models: $CORRAL_ROBOTS_DIR, else the source tree's
 * configs/robots. Static storage. */
const char *hal_mujoco_models_dir(void);

/* ---- safety layer (pure; used by hal_robot, exposed for tests and tools) ---- */

typedef struct hal_safety {
    hal_act_spec_t act;
    hal_limits_t lim;
    double dt;                     /* control period, s */
    double prev_cmd[HAL_MAX_DOF];  /* last command sent */
    int have_prev;
    hal_safety_stats_t stats;
} hal_safety_t;

void hal_safety_init(hal_safety_t *s, const hal_act_spec_t *act, const hal_limits_t *lim,
                     double rate_hz);
/* Forget the previous command (after reset); q is the current joint position
 * (used as the previous command in joint-position mode). */
void hal_safety_reset(hal_safety_t *s, const double *q);
/* Turns an action into a safe command. q: current joints (n_joints), ee: current
 * end-effector (3) or NULL. Returns 0, or CR_EINVAL for NaN/Inf (cmd then holds
 * and the message names the offending index). */
int hal_safety_filter(hal_safety_t *s, const float *action, const double *q, const double *ee,
                      double *cmd, cr_err_t *err);
/* The command that holds the robot where it is. */
void hal_safety_hold(const hal_safety_t *s, const double *q, double *cmd);

/* ---- fixed-rate control loop ------------------------------------------------ */

typedef struct hal_loop_stats {
    int64_t ticks;
    int64_t overruns;      /* ticks whose work ended after the next deadline */
    double jitter_p50_us;  /* wake-up lateness after the absolute deadline */
    double jitter_p99_us;
    double jitter_max_us;
} hal_loop_stats_t;

/* Calls fn(ctx, tick) every period_ns on absolute deadlines (clock_nanosleep,
 * CLOCK_MONOTONIC) for n_ticks ticks or until fn returns non-zero. An overrun
 * skips the missed deadlines instead of bursting. Returns fn's non-zero value or
 * 0; stats may be NULL. */
int hal_loop_run(int64_t period_ns, int64_t n_ticks, int (*fn)(void *ctx, int64_t tick),
                 void *ctx, hal_loop_stats_t *stats);

/* Asks for real-time scheduling (SCHED_FIFO at priority 1..99) and locks memory,
 * for the thread that runs a robot's control loop. CR_EPERM when not allowed
 * (no CAP_SYS_NICE / rtprio limit): the loop still runs, with more jitter. */
int hal_loop_realtime(int priority, cr_err_t *err);
/* Back to normal scheduling for the calling thread. */
void hal_loop_normal(void);

/* ---- GPUs ------------------------------------------------------------------- */

typedef struct hal_gpu {
    int index;
    char model[96];
    uint64_t mem_total, mem_free;    /* bytes */
    int cc_major, cc_minor;          /* compute capability */
    int util_pct;                    /* -1 when unknown */
    int simulated;
} hal_gpu_t;

/* Finds GPUs: simulated ones from sim_spec (or $CORRAL_SIM_GPUS when sim_spec
 * is NULL) when given, else NVML (dlopen libnvidia-ml.so.1), else the CUDA
 * runtime (dlopen), else none. Never fails for lack of a driver: *n = 0 and
 * source "none". source (>= 32 bytes) gets "sim", "nvml", "cudart" or "none".
 * Returns CR_EINVAL only for a malformed simulation spec. */
int hal_gpu_probe(const char *sim_spec, hal_gpu_t *gpus, int max, int *n, char *source,
                  cr_err_t *err);
/* Parses "2xH100-80GB,1xA100-40GB" (count x model-memory). */
int hal_gpu_parse_sim(const char *spec, hal_gpu_t *gpus, int max, int *n, cr_err_t *err);

/* ---- Dynamixel bus (Protocol 2.0) ----------------------------------------- */

typedef struct hal_dxl_bus hal_dxl_bus_t;

/* Opens a serial port (termios, raw 8N1) at baud. timeout_ms bounds each reply. */
int hal_dxl_open(const char *port, int baud, int timeout_ms, hal_dxl_bus_t **out, cr_err_t *err);
void hal_dxl_close(hal_dxl_bus_t *bus);
/* Pings one id, or the broadcast id 0xFE collecting up to max answering ids.
 * model_out (may be NULL) gets each answer's model number. */
int hal_dxl_ping(hal_dxl_bus_t *bus, int id, int *ids, uint16_t *models, int max, int *n,
                 cr_err_t *err);
int hal_dxl_write(hal_dxl_bus_t *bus, int id, uint16_t addr, const uint8_t *data, int len,
                  cr_err_t *err);
int hal_dxl_read(hal_dxl_bus_t *bus, int id, uint16_t addr, uint8_t *data, int len,
                 cr_err_t *err);
/* Sync read of len bytes at addr from each id: out holds n*len bytes. */
int hal_dxl_sync_read(hal_dxl_bus_t *bus, const int *ids, int n, uint16_t addr, int len,
                      uint8_t *out, cr_err_t *err);
/* Sync write of len bytes per id (data holds n*len bytes); no replies. */
int hal_dxl_sync_write(hal_dxl_bus_t *bus, const int *ids, int n, uint16_t addr, int len,
                       const uint8_t *data, cr_err_t *err);
int64_t hal_dxl_errors(const hal_dxl_bus_t *bus);
/* CRC-16 (poly 0x8005, init 0) as Protocol 2.0 specifies. */
uint16_t hal_dxl_crc(uint16_t crc, const uint8_t *data, size_t n);

#define HAL_DXL_BROADCAST 0xFE
/* X-series control table addresses used by the driver. */
#define HAL_DXL_TORQUE_ENABLE  64
#define HAL_DXL_GOAL_POSITION  116
#define HAL_DXL_PRESENT_VELOCITY 128
#define HAL_DXL_PRESENT_POSITION 132

/* ---- remote robots (proto/corral/v1/robot.proto, corral.v1.RobotService) ---- */

/* Driver `remote`: options target=host:port (required), timeout_ms (per call,
 * default 2000), security=insecure|tls|mtls, cert_dir, server_name, token. The
 * model is passed to the server's Describe. */
extern const hal_driver_t hal_driver_remote;

/* Serves an open robot over RobotService at addr ("127.0.0.1:0" picks a port),
 * insecure unless rpc_opts (a const rpc_opts_t *, see common/rpc/rpc.h; NULL for
 * insecure defaults) says otherwise. Commands arriving through Act pass this
 * robot's own safety layer too. The robot is borrowed and must outlive the
 * server. */
typedef struct hal_remote_server hal_remote_server_t;
int hal_remote_server_create(hal_robot_t *robot, const char *addr, const void *rpc_opts,
                             hal_remote_server_t **out, cr_err_t *err);
int hal_remote_server_port(const hal_remote_server_t *srv);
void hal_remote_server_destroy(hal_remote_server_t *srv);

/* Current joints (desc.limits.n_joints) and end-effector (3) as the safety layer
 * sees them. */
int hal_robot_joints(hal_robot_t *r, double *q, double *ee, cr_err_t *err);

/* ---- hardware probe (`corral hal probe`) ----------------------------------- */

#define HAL_PROBE_MAX_PORTS 16
#define HAL_PROBE_MAX_SERVOS 32

typedef struct hal_probe_port {
    char path[256];
    int baud;                          /* the rate that answered, or the last tried */
    int n_servos;
    int ids[HAL_PROBE_MAX_SERVOS];
    uint16_t models[HAL_PROBE_MAX_SERVOS];
    char error[200];                   /* "" when the port opened */
} hal_probe_port_t;

typedef struct hal_probe_model {
    char name[64];
    int obs_dim, act_dim, n_cams;
    char mode[32];
    double rate_hz;
    int episode_steps;
    char error[300];                   /* "" when the model loads */
} hal_probe_model_t;

typedef struct hal_probe {
    char gpu_source[32];
    int n_gpus;
    hal_gpu_t gpus[HAL_MAX_GPUS];
    int n_ports;
    hal_probe_port_t ports[HAL_PROBE_MAX_PORTS];
    int n_models;
    hal_probe_model_t models[16];
} hal_probe_t;

/* Probes GPUs, serial ports (the given ones, else /dev/ttyUSB* and /dev/ttyACM*)
 * with a broadcast ping at each baud rate (0: 57600 then 1000000), and the
 * simulated robots in hal_mujoco_models_dir(). Per-device failures are recorded
 * in the report, not returned. */
int hal_probe_run(const char *const *ports, int n_ports, int baud, hal_probe_t *out, cr_err_t *err);
/* The report as JSON; malloc'ed, the caller frees. NULL when out of memory. */
char *hal_probe_json(const hal_probe_t *p);

#endif
