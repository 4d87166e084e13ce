/* liveness.h - which agent session speaks for which node, and when a node is lost
 * (private to controller/). See liveness.c for the rules. */
#ifndef CORRAL_CONTROLLER_LIVENESS_H
#define CORRAL_CONTROLLER_LIVENESS_H

#include "common/err.h"
#include "common/rpc/rpc.h"
#include "controller/registry.h"

#include <stdint.h>

typedef struct ctl_liveness ctl_liveness_t;

/* reg is borrowed and must outlive the table. Nodes the registry holds as live
 * get a grace period of missed * interval_ms to reconnect (after a controller
 * restart); the sweep thread starts here. */
int ctl_liveness_create(ctl_registry_t *reg, int interval_ms, int missed, ctl_liveness_t **out,
                        cr_err_t *err);
/* fn(ud, node) runs after a node was marked lost in the registry (on the sweep
 * thread or the caller of ctl_liveness_release, with no lock of the table held).
 * Set it before sessions arrive. */
void ctl_liveness_on_lost(ctl_liveness_t *lv, void (*fn)(void *ud, const char *node), void *ud);
/* Stops the sweep thread and drops every session reference. */
void ctl_liveness_destroy(ctl_liveness_t *lv);
/* From now on ended sessions do not mark their nodes lost: a controller shutting
 * down is not evidence that the nodes are gone. */
void ctl_liveness_stopping(ctl_liveness_t *lv);

/* A session (call, borrowed; a reference is taken) presents inv. Refuses a node
 * another agent instance holds with a live session (CR_EEXIST); a session of the
 * same instance replaces the old one, which is ended. Applies inv to the registry
 * (its errors pass through) and makes this session current: *session_id != 0. */
int ctl_liveness_claim(ctl_liveness_t *lv, const Corral__V1__Inventory *inv, rpc_call_t *call,
                       uint64_t *session_id, cr_err_t *err);
/* A later inventory on the current session: re-applies it to the registry. */
int ctl_liveness_update(ctl_liveness_t *lv, const Corral__V1__Inventory *inv, uint64_t session_id,
                        cr_err_t *err);
/* A heartbeat; CR_ENOENT when session_id is no longer the node's current one. */
int ctl_liveness_beat(ctl_liveness_t *lv, const char *node, uint64_t session_id);
/* The session ended: if it was current, its node becomes lost (why is recorded). */
void ctl_liveness_release(ctl_liveness_t *lv, const char *node, uint64_t session_id,
                          const char *why);
/* Queues msg on the node's current session without waiting. CR_ENOENT when the
 * node has no session; rpc_call_send's errors otherwise. */
int ctl_liveness_send(ctl_liveness_t *lv, const char *node, const ProtobufCMessage *msg,
                      cr_err_t *err);
/* Wall-clock time (unix ms) of the node's last heartbeat when it has a live
 * session; 0 otherwise. */
int64_t ctl_liveness_last_seen_ms(ctl_liveness_t *lv, const char *node);
/* Sessions currently live. */
size_t ctl_liveness_count(ctl_liveness_t *lv);

#endif
