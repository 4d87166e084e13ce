/* spec_request.h - the scheduler's resource request taken from an experiment spec. */
#ifndef CORRAL_CONTROLLER_SPEC_REQUEST_H
#define CORRAL_CONTROLLER_SPEC_REQUEST_H

#include "common/expspec/expspec.h"
#include "controller/scheduler.h"

/* Fills *req from spec. Every string and list in *req is borrowed from spec and
 * valid while spec lives and is unchanged. */
void ctl_sched_request_from_spec(const exp_spec_t *spec, ctl_sched_request_t *req);

#endif
