#!/bin/sh
# The demo: a whole single-machine cluster. Starts a controller and a node agent on
# loopback, registers two simulated reach2d arms through the CLI, submits
# configs/experiments/reach-sac.yaml with `corral exp submit` (the controller
# places it, the agent starts a learner with the replay buffer inside and one env
# worker per arm), shows live progress with `corral exp watch` (everything it
# prints comes from the controller), and ends with a summary whose last line is
# `success_rate: X` (the final greedy evaluation, as the controller recorded it).
#
# Leaves no process running, whatever happens. CORRAL_DEMO_DIR (./corral-demo)
# and CORRAL_DEMO_SECONDS (600) change where its state goes and how long it may run.
set -u
build=${1:-build}
CORRAL=$(cd "$build" && pwd)/corral
export CORRAL
HERE=$(cd "$(dirname "$0")" && pwd)
SPEC=$(cd "$HERE/../configs/experiments" && pwd)/reach-sac.yaml
root=${CORRAL_DEMO_DIR:-$PWD/corral-demo}
limit=${CORRAL_DEMO_SECONDS:-600}
name=reach-sac

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

# field KEY: one field of `corral exp status NAME --json` ("" when unreachable).
field() {
    "$CORRAL" exp status "$name" --json 2>/dev/null | python3 -c 'import json,sys
try: print(json.load(sys.stdin)[sys.argv[1]])
except Exception: print("")' "$1"
}

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

echo "demo: training SAC on sim-0 and sim-1 (learner + 2 env workers, CPU), goal: 90% success"
"$CORRAL" exp submit "$SPEC" || exit 1
# Live progress until the experiment ends (done, stopped or failed); past the
# time limit it is stopped, and watch ends when the workers have.
"$CORRAL" exp watch "$name" &
watch_pid=$!
while kill -0 "$watch_pid" 2>/dev/null; do
    if [ $(( $(date +%s) - start )) -ge "$limit" ]; then
        echo "demo: time limit ($limit s) reached; stopping the experiment"
        "$CORRAL" exp stop "$name" >/dev/null
        break
    fi
    sleep 1
done
wait "$watch_pid"
echo
"$CORRAL" exp status "$name"

state=$(field state)
rate=$(field success_rate)
dir=$(field dir)
echo
echo "demo summary"
echo "  experiment:   $name $state after $(field running_s) s running, $(field env_steps) env steps, $(field updates) updates"
echo "  wall time:    $(( $(date +%s) - start )) s (everything, from the controller's start)"
echo "  logs:         $root/logs (controller, agent); $dir/logs (workers; also \`corral exp logs $name\`)"
echo "  checkpoints:  $dir/checkpoints"
echo "  buffer:       $dir/buffer.db ($("$CORRAL" buffer stats "$dir/buffer.db" --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["steps"]["total"], "steps,", d["episodes"]["total"], "episodes")' 2>/dev/null || echo see corral buffer stats))"
echo "success_rate: ${rate:-0}"
[ "$state" = done ]
