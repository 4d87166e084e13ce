#!/bin/sh
# standin_worker.sh - a stand-in for `corral worker`, used ONLY by workers_wire.py
# to test how the controller and the agents start, restart, adopt and stop worker
# processes. It records its pid and arguments in $WIRE_DIR/starts.log and idles
# until killed. The real worker roles are tested by their own unit and integration
# tests. It keeps its own command line (no exec), as the supervisor's adoption
# check requires of every worker.
echo "$$ $*" >>"$WIRE_DIR/starts.log"
trap 'exit 0' TERM
while :; do sleep 0.2; done
