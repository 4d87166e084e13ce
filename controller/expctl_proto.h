/* expctl_proto.h - worker commands (expctl.h) as the AgentLink messages of
 * corral/v1/workers.proto, for the controller's session layer to send, and the
 * agents' progress reports as expctl takes them. */
#ifndef CORRAL_CONTROLLER_EXPCTL_PROTO_H
#define CORRAL_CONTROLLER_EXPCTL_PROTO_H

#include "controller/expctl.h"
#include "corral/v1/workers.pb-c.h"

/* Fills *out and *spec (out->spec = spec) for a START command. Every string and
 * array points into c or the arguments (borrowed: keep them alive until the
 * message is packed). buffer_addr / learner_addr are the host:port of the peers
 * (from the registry's node addresses; "" when reached through the tunnel). */
void ctl_cmd_start_proto(const ctl_worker_cmd_t *c, uint64_t command_id, const char *spec_yaml,
                         const char *buffer_addr, const char *learner_addr, Corral__V1__StartWorker *out,
                         Corral__V1__WorkerSpec *spec);

/* Fills *out for a STOP command (strings borrowed from c). */
void ctl_cmd_stop_proto(const ctl_worker_cmd_t *c, uint64_t command_id, Corral__V1__StopWorker *out);

/* A WorkerProgress as expctl's report; out's strings point into w (borrowed). */
void ctl_progress_from_proto(const Corral__V1__WorkerProgress *w, ctl_progress_report_t *out);

#endif
