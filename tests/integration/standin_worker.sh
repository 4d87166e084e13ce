#!/bin/sh
# standin_worker.sh - a stand-in for `corral worker`, used ONLY by workers_wire.py
# to test how the controller and the agents start, restart, adopt and stop worker
# processes, forward their progress and serve their logs (and by security.sh, whose
# experiment needs workers that start, not ones that learn). It records its pid and
# arguments in $WIRE_DIR/starts.log, says who it is on stdout (its log file), as a
# learner writes a status file with fixed counters, and idles until killed. The
# real worker roles are tested by their own unit and integration tests. It keeps
# its own command line (no exec), as the supervisor's adoption check requires of
# every worker.
echo "$$ $*" >>"$WIRE_DIR/starts.log"
role= exp= gen= index= state=
while [ $# -gt 1 ]; do
    case $1 in
    --role) role=$2 ;;
    --experiment) exp=$2 ;;
    --generation) gen=$2 ;;
    --index) index=$2 ;;
    --state-dir) state=$2 ;;
    esac
    shift
done
echo "standin $role-$index of $exp (run $gen), pid $$"
if [ "$role" = learner ] && [ -n "$state" ]; then
    d=$state/experiments/$exp/status
    mkdir -p "$d"
    printf '{"role":"learner","state":"running","pid":%d,"generation":%s,"env_steps":777,"episodes":15,"updates":4242,"policy_version":42,"checkpoint":4000,"time_ns":%s000000000}\n' \
        "$$" "$gen" "$(date +%s)" >"$d/learner.json.tmp" && mv "$d/learner.json.tmp" "$d/learner.json"
fi
trap 'exit 0' TERM
while :; do sleep 0.2; done
