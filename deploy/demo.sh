#!/bin/sh
# The demo: a whole single-machine cluster. Starts a controller and a node agent on
# loopback, registers two simulated reach2d arms through the CLI, then trains SAC on
# them with a learner worker (replay buffer inside) and two env workers as separate
# processes, showing live progress, and ends with a summary whose last line is
# `success_rate: X` (the final greedy evaluation).
#
# The experiment goes through `corral exp submit`: the controller places it and the
# agent starts the workers. Leaves no process running, whatever happens.
set -u
build=${1:-build}
CORRAL=$(cd "$build" && pwd)/corral
export CORRAL
HERE=$(cd "$(dirname "$0")" && pwd)
root=${CORRAL_DEMO_DIR:-$PWD/corral-demo}
limit=${CORRAL_DEMO_SECONDS:-600}

rm -rf "$root"
mkdir -p "$root/logs"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ctl=127.0.0.1:$port
export CORRAL_CONTROLLER=$ctl

daemon_pids=
cleanup() {
    "$CORRAL" agent --stop-workers --state "$root/agent" >/dev/null 2>&1
    for p in $daemon_pids; do kill -TERM "$p" 2>/dev/null; done
    for p in $daemon_pids; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
echo "demo: corral $("$CORRAL" version | cut -d' ' -f2), state under $root"
"$CORRAL" controller --listen "$ctl" --state "$root/controller" >"$root/logs/controller.log" 2>&1 &
daemon_pids="$daemon_pids $!"
"$CORRAL" agent --name demo-node --controller "$ctl" --state "$root/agent" \
    >"$root/logs/agent.log" 2>&1 &
daemon_pids="$daemon_pids $!"

# Wait for the agent's node to be ready.
i=0
until "$CORRAL" node list --json 2>/dev/null | grep -q '"state": *"ready"'; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        echo "demo: the node did not come up; see $root/logs" >&2
        exit 1
    fi
    sleep 0.1
done
"$CORRAL" robot register sim-0 --driver mujoco --node demo-node --model reach2d --set seed=1
"$CORRAL" robot register sim-1 --driver mujoco --node demo-node --model reach2d --set seed=2
echo
"$CORRAL" node list
echo
"$CORRAL" robot list
echo

echo "demo: training SAC on sim-0 and sim-1 (learner + 2 env workers, CPU)"
. "$HERE/demo-local.sh" # demo_json
"$CORRAL" exp submit "$HERE/demo-reach.yaml" || exit 1
exp=$root/agent/experiments/reach-demo
ok=1
while [ $(( $(date +%s) - start )) -lt "$limit" ]; do
    sleep 2
    st=$(demo_json "$exp/status/learner.json" state)
    echo "  learner: ${st:-starting}, env steps $(demo_json "$exp/status/learner.json" env_steps), eval success $(demo_json "$exp/status/learner.json" eval_success_rate)"
    if [ "$st" = done ]; then ok=0; break; fi
    if [ "$st" = failed ]; then break; fi
done
"$CORRAL" exp status reach-demo
rate=$(demo_json "$exp/status/learner.json" eval_success_rate)
echo
echo "demo summary"
echo "  wall time:    $(( $(date +%s) - start )) s"
echo "  env steps:    $(demo_json "$exp/status/learner.json" env_steps)"
echo "  updates:      $(demo_json "$exp/status/learner.json" updates)"
echo "  logs:         $root/logs, $exp/logs"
echo "  checkpoints:  $exp/checkpoints"
echo "  buffer:       $exp/buffer.db ($("$CORRAL" buffer stats "$exp/buffer.db" --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["steps"]["total"], "steps,", d["episodes"]["total"], "episodes")' 2>/dev/null || echo see corral buffer stats))"
echo "success_rate: ${rate:-0}"
exit $ok
