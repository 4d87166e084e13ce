#!/bin/sh
# demo-local.sh - one experiment on this machine without a controller: a learner
# worker (with the replay buffer) and N env workers (MuJoCo reach2d, as fast as the
# CPU allows), started as the agent's supervisor would start them. Prints progress
# every few seconds and waits until the learner says the experiment is done (its
# evaluation reached stop.success_rate) or the time limit passes.
#
# usage: deploy/demo-local.sh [-n ENVS] [-t SECONDS] [-d DIR] [-s SPEC] [-- --set k=v ...]
# Exit status: 0 when the final evaluation reached the spec's stop.success_rate,
# 1 otherwise. Sourcing is also supported: `demo_local_run DIR SPEC ENVS SECONDS`.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
CORRAL=${CORRAL:-$HERE/../build/corral}

# json FILE KEY: one field of a status file ("" when absent).
demo_json() {
    python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))
except Exception: print("")' "$1" "$2"
}

demo_local_run() { # DIR SPEC ENVS SECONDS [--set ...]
    dir=$1 spec=$2 envs=$3 limit=$4
    shift 4
    mkdir -p "$dir/logs"
    pids=
    "$CORRAL" worker --role learner --spec "$spec" --dir "$dir" "$@" >>"$dir/logs/learner.log" 2>&1 &
    lpid=$!
    i=0
    while [ "$i" -lt "$envs" ]; do
        "$CORRAL" worker --role env --spec "$spec" --dir "$dir" --index "$i" \
            --robot "arm$i:mujoco:reach2d" --robot-set realtime=false "$@" >>"$dir/logs/env-$i.log" 2>&1 &
        pids="$pids $!"
        i=$((i + 1))
    done
    start=$(date +%s)
    state=running
    while kill -0 "$lpid" 2>/dev/null; do
        sleep 5
        now=$(date +%s)
        st=$dir/status/learner.json
        if [ -f "$st" ]; then
            echo "  $((now - start))s env_steps $(demo_json "$st" env_steps) updates $(demo_json "$st" updates)" \
                 "($(demo_json "$st" updates_per_s)/s) policy $(demo_json "$st" policy_version)" \
                 "train success $(demo_json "$st" success_rate) eval $(demo_json "$st" eval_success_rate)"
        fi
        if [ $((now - start)) -ge "$limit" ]; then
            echo "  time limit ($limit s) reached"
            kill -TERM "$lpid"
            break
        fi
    done
    wait "$lpid"
    state=$(demo_json "$dir/status/learner.json" state)
    for p in $pids; do kill -TERM "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
    rate=$(demo_json "$dir/status/learner.json" eval_success_rate)
    target=$(python3 -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["stop"]["success_rate"])' "$spec" 2>/dev/null || echo 0.9)
    echo "learner $state after $(( $(date +%s) - start ))s: final evaluation success $rate (target $target)"
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1] or -1) >= float(sys.argv[2]) else 1)' "$rate" "$target"
}

if [ "${0##*/}" = "demo-local.sh" ]; then
    envs=2 limit=300 dir= spec=$HERE/../configs/experiments/reach-sac.yaml
    while [ $# -gt 0 ]; do
        case $1 in
        -n) envs=$2; shift 2 ;;
        -t) limit=$2; shift 2 ;;
        -d) dir=$2; shift 2 ;;
        -s) spec=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [-n ENVS] [-t SECONDS] [-d DIR] [-s SPEC] [-- --set k=v ...]" >&2; exit 1 ;;
        esac
    done
    [ -n "$dir" ] || dir=$(mktemp -d "${TMPDIR:-/tmp}/corral-demo.XXXXXX")
    echo "experiment directory $dir"
    demo_local_run "$dir" "$spec" "$envs" "$limit" "$@"
fi
