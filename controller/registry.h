/* registry.h - the controller's registry of nodes, robots and GPUs, kept in SQLite.
 *
 * The registry is the one writer of DIR/state.db (WAL). Every public call runs
 * under one mutex and, when it changes anything, inside one transaction: a call
 * that fails leaves the database exactly as it was. Results come back as the
 * protobuf-c messages of corral/v1/registry.proto, allocated with malloc; the
 * caller frees each with protobuf_c_message_free_unpacked(&msg->base, NULL).
 *
 * Errors: CR_EINVAL (bad name, unknown driver, malformed field), CR_ENOENT
 * (unknown robot or node), CR_EEXIST (duplicate), CR_EBUSY (the current state
 * forbids the change, or an agent's report contradicts the registry),
 * CR_EVERSION (state.db is newer than this binary), CR_EIO (SQLite failed).
 * ctl_status_from_err maps them onto gRPC status codes. */
#ifndef CORRAL_CONTROLLER_REGISTRY_H
#define CORRAL_CONTROLLER_REGISTRY_H

#include "common/err.h"
#include "corral/v1/agentlink.pb-c.h"
#include "corral/v1/registry.pb-c.h"

#include <stdint.h>

typedef struct ctl_registry ctl_registry_t;
typedef struct sqlite3 sqlite3;

/* The schema version this binary writes (PRAGMA user_version of state.db). */
#define CTL_SCHEMA_VERSION 4

/* Opens (creating dir and state.db as needed) and migrates the registry.
 * On success *out owns the database; close it with ctl_registry_close. */
int ctl_registry_open(const char *dir, ctl_registry_t **out, cr_err_t *err);
void ctl_registry_close(ctl_registry_t *reg);

/* The schema version of the open database. */
int ctl_registry_schema_version(ctl_registry_t *reg);

/* Path of state.db; borrowed, valid until close. */
const char *ctl_registry_path(const ctl_registry_t *reg);

/* Runs fn(arg, db, err) with the registry's lock held, for the tables other
 * files keep in state.db (experiment.h's). fn must not call ctl_reg_*: the lock
 * is not recursive. Returns fn's code. */
int ctl_registry_with_db(ctl_registry_t *reg, int (*fn)(void *arg, sqlite3 *db, cr_err_t *err),
                         void *arg, cr_err_t *err);

/* Robots. */
int ctl_reg_robot_register(ctl_registry_t *reg, const Corral__V1__RegisterRobotRequest *req,
                           Corral__V1__Robot **out, cr_err_t *err);
/* node "" or NULL lists every robot, ordered by name. */
int ctl_reg_robot_list(ctl_registry_t *reg, const char *node,
                       Corral__V1__ListRobotsResponse **out, cr_err_t *err);
int ctl_reg_robot_get(ctl_registry_t *reg, const char *name, Corral__V1__Robot **out,
                      cr_err_t *err);
int ctl_reg_robot_remove(ctl_registry_t *reg, const char *name, cr_err_t *err);
/* Latches (release 0) or releases (release 1) the e-stop. *node_out (may be NULL)
 * receives the robot's node name ("" when none), for delivering the command. */
int ctl_reg_robot_estop(ctl_registry_t *reg, const char *name, int release,
                        Corral__V1__Robot **out, char node_out[64], cr_err_t *err);

/* The scheduler's hold on a robot: claim makes an available robot in-use by
 * experiment (CR_EBUSY naming the state otherwise, CR_ENOENT when unknown);
 * release frees it (0 when it is not held; CR_EBUSY when another experiment holds
 * it). A held robot whose node is lost shows lost and keeps its experiment, so it
 * is in-use again when the node returns. */
int ctl_reg_robot_claim(ctl_registry_t *reg, const char *name, const char *experiment, cr_err_t *err);
int ctl_reg_robot_release(ctl_registry_t *reg, const char *name, const char *experiment, cr_err_t *err);

/* GPUs. */
int ctl_reg_gpu_register(ctl_registry_t *reg, const Corral__V1__RegisterGpuRequest *req,
                         Corral__V1__Gpu **out, cr_err_t *err);
int ctl_reg_gpu_list(ctl_registry_t *reg, const char *node, Corral__V1__ListGpusResponse **out,
                     cr_err_t *err);

/* The same for one GPU (node, index). */
int ctl_reg_gpu_claim(ctl_registry_t *reg, const char *node, uint32_t index, const char *experiment,
                      cr_err_t *err);
int ctl_reg_gpu_release(ctl_registry_t *reg, const char *node, uint32_t index, const char *experiment,
                        cr_err_t *err);

/* Nodes. */
int ctl_reg_node_list(ctl_registry_t *reg, Corral__V1__ListNodesResponse **out, cr_err_t *err);
int ctl_reg_node_get(ctl_registry_t *reg, const char *name, Corral__V1__Node **out,
                     cr_err_t *err);
/* Sets (undo 0) or clears (undo 1) the node's drain flag. */
int ctl_reg_node_drain(ctl_registry_t *reg, const char *name, int undo, Corral__V1__Node **out,
                       cr_err_t *err);

/* Checks an agent's inventory against the registry without changing anything:
 * the same errors ctl_reg_node_up would return. */
int ctl_reg_inventory_check(ctl_registry_t *reg, const Corral__V1__Inventory *inv,
                            cr_err_t *err);
/* The node's agent opened a session and sent inv: the node becomes ready (or
 * draining), its reported robots and probed GPUs are replaced by inv's, and they
 * become available again. Rejects a contradictory inventory (CR_EINVAL / CR_EBUSY)
 * without changing anything. now_ms is wall-clock time for last_seen. */
int ctl_reg_node_up(ctl_registry_t *reg, const Corral__V1__Inventory *inv, int64_t now_ms,
                    cr_err_t *err);
/* The node's agent stopped heartbeating or its session ended: the node and its
 * robots and GPUs become lost. CR_ENOENT for an unknown node. */
int ctl_reg_node_lost(ctl_registry_t *reg, const char *name, const char *why, int64_t now_ms,
                      cr_err_t *err);
/* Names of nodes not lost, for the liveness table after a restart. *names is one
 * malloc'd array of malloc'd strings; free with ctl_names_free. */
int ctl_reg_nodes_live(ctl_registry_t *reg, char ***names, size_t *n, cr_err_t *err);
void ctl_names_free(char **names, size_t n);

/* Validation shared with the CLI and the agent. */
int ctl_driver_known(const char *driver);
/* "mujoco, dynamixel, remote, mock"; static storage. */
const char *ctl_driver_names(void);

/* State names as the CLI shows them: "ready" / "lost" / "draining", and
 * "available" / "in-use" / "lost" / "estopped" / "draining"; "unknown" otherwise. */
const char *ctl_node_state_name(Corral__V1__NodeState s);
const char *ctl_resource_state_name(Corral__V1__ResourceState s);

#endif
