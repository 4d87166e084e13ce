#!/bin/sh
# workers.sh - the worker processes of one experiment end to end, as real processes
# on one node: a learner (with its buffer) and two env workers on MuJoCo reach2d
# (realtime off). Checks that transitions reach buffer.db, updates happen and weights
# flow back (the envs' policy version rises); then SIGKILLs the learner mid-run and
# restarts it: it resumes from its newest complete checkpoint (its update counter
# never falls below it), the envs reconnect and resend; an env worker SIGKILLed and
# restarted is served again; at the end buffer.db holds every transition any env
# saw acknowledged (the killed one included) exactly once.
set -u
CORRAL=${CORRAL:-${CORRAL_BUILD_DIR:-build}/corral}
SRC=${CORRAL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/corral-wk.XXXXXX")
D=$T/exp
PASS=0
FAIL=0
L_PID= E0_PID= E1_PID=

cleanup() {
    for p in $L_PID $E0_PID $E1_PID; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAIL" -ne 0 ] || [ -n "${CORRAL_KEEP_TMP:-}" ]; then
        echo "logs kept in $T"
        for f in "$T"/*.log; do echo "--- $f"; tail -n 30 "$f"; done
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); echo "  ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "  FAIL $1"; }

# The demo experiment, made to run on (no success stop) and checkpoint often.
SPEC=$SRC/configs/experiments/reach-sac.yaml
SETS="--set stop.success_rate=0 --set stop.wall_time=30m --set checkpoint.every_updates=300
      --set stop.eval_every_updates=100000 --set algorithm.warmup_steps=500"

start_learner() {
    # shellcheck disable=SC2086
    "$CORRAL" worker --role learner --spec "$SPEC" --dir "$D" --publish-every 50 --status-ms 100 $SETS \
        >>"$T/learner.log" 2>&1 &
    L_PID=$!
}
start_env() { # INDEX
    # shellcheck disable=SC2086
    "$CORRAL" worker --role env --spec "$SPEC" --dir "$D" --index "$1" --robot "arm$1:mujoco:reach2d" \
        --robot-set realtime=false --status-ms 100 $SETS >>"$T/env$1.log" 2>&1 &
    eval "E$1_PID=\$!"
}

# field FILE KEY: a field of a status file, or -1.
field() {
    python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))[sys.argv[2]])
except Exception: print(-1)' "$1" "$2"
}
# wait_until SECONDS CMD...: polls CMD every 0.2 s; prints the seconds it took.
wait_until() {
    limit=$1; shift
    start=$(date +%s)
    while ! "$@" 2>/dev/null; do
        [ $(( $(date +%s) - start )) -ge "$limit" ] && return 1
        sleep 0.2
    done
    echo $(( $(date +%s) - start ))
}
gt() { [ "$(field "$1" "$2" | cut -d. -f1)" -gt "$3" ]; }
steps_in_db() {
    python3 -c 'import sqlite3,sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
print(db.execute("select count(*) from steps").fetchone()[0])' "$D/buffer.db" 2>/dev/null || echo 0
}
# The update count of the newest checkpoint directory (ckpt-<zero-padded N>), as a plain number.
newest_ckpt() { ls "$D/checkpoints" 2>/dev/null | sed -n 's/^ckpt-0*\([0-9][0-9]*\)$/\1/p' | sort -n | tail -1; }

# --- start ------------------------------------------------------------------------------
start_learner
start_env 0
start_env 1
t=$(wait_until 60 gt "$D/status/learner.json" updates 600) && ok "learner updating (600 updates after ${t}s)" \
    || bad "learner reached no 600 updates: $(cat "$D/status/learner.json" 2>/dev/null)"
n=$(steps_in_db)
[ "$n" -gt 600 ] && ok "transitions committed to buffer.db ($n rows)" || bad "buffer.db has $n rows"
t=$(wait_until 30 gt "$D/status/env-0.json" policy_version 0) && t=$(wait_until 30 gt "$D/status/env-1.json" policy_version 0) \
    && ok "weights reached both envs (versions $(field "$D/status/env-0.json" policy_version), $(field "$D/status/env-1.json" policy_version))" \
    || bad "no weights at the envs"
t=$(wait_until 60 gt "$D/status/learner.json" updates 1400) || bad "learner stalled before the kill"

# --- SIGKILL the learner mid-run, restart it ---------------------------------------------
ck=$(newest_ckpt)
v0=$(field "$D/status/env-0.json" policy_version)
u_kill=$(field "$D/status/learner.json" updates)
kill -9 "$L_PID"; wait "$L_PID" 2>/dev/null; L_PID=
[ -n "$ck" ] && ok "checkpoint $ck complete before the kill (learner at $u_kill updates)" || bad "no checkpoint before the kill"
sleep 2
start_learner
# Watch the update counter from the first status on: never below the checkpoint.
min=-1
start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt 60 ]; do
    u=$(field "$D/status/learner.json" updates)
    pid=$(field "$D/status/learner.json" pid)
    if [ "$pid" = "$L_PID" ]; then
        if [ "$min" -lt 0 ] || [ "$u" -lt "$min" ]; then min=$u; fi
        [ "$u" -gt $((ck + 600)) ] && break
    fi
    sleep 0.1
done
[ "$min" -ge "${ck:-0}" ] && ok "restarted learner resumed at $min updates (>= checkpoint $ck)" \
    || bad "restarted learner showed $min updates, checkpoint was $ck"
grep -q "resumed from" "$T/learner.log" && ok "learner resumed from its newest checkpoint" || bad "no resume in the log"
[ "$u" -gt $((ck + 600)) ] && ok "updates continue after the restart ($u)" || bad "updates stuck at $u after the restart"
t=$(wait_until 30 gt "$D/status/env-0.json" policy_version "$v0") \
    && ok "env 0 took newer weights from the restarted learner ($v0 -> $(field "$D/status/env-0.json" policy_version))" \
    || bad "env 0 policy version stuck at $(field "$D/status/env-0.json" policy_version)"
r0=$(field "$D/status/env-0.json" reconnects); r1=$(field "$D/status/env-1.json" reconnects)
[ "$r0" -ge 2 ] && [ "$r1" -ge 2 ] && ok "both envs reconnected ($r0, $r1 routes)" || bad "reconnects $r0 $r1"

# --- SIGKILL an env worker, restart it: the learner serves its successor ---------------------
cp "$D/status/env-1.json" "$T/env1-before-kill.json"
kill -9 "$E1_PID"; wait "$E1_PID" 2>/dev/null; E1_PID=
start_env 1
newenv() { [ "$(field "$D/status/env-1.json" pid)" = "$E1_PID" ] && gt "$D/status/env-1.json" policy_version 0 \
           && gt "$D/status/env-1.json" acked 100; }
t=$(wait_until 30 newenv) && ok "a restarted env worker is served (weights and acknowledgements after ${t}s)" \
    || bad "restarted env 1 not served: $(cat "$D/status/env-1.json")"

# --- stop: envs first (their last ACKs), then the learner ------------------------------------
kill -TERM "$E0_PID" "$E1_PID"; wait "$E0_PID"; rc0=$?; wait "$E1_PID"; rc1=$?; E0_PID= E1_PID=
[ $rc0 -eq 0 ] && [ $rc1 -eq 0 ] && ok "envs exit 0 on SIGTERM" || bad "env exits $rc0 $rc1"
kill -TERM "$L_PID"; wait "$L_PID"; rc=$?; L_PID=
[ $rc -eq 0 ] && ok "learner exits 0 on SIGTERM" || bad "learner exit $rc"
[ "$(field "$D/status/learner.json" state)" = stopped ] && ok "learner status says stopped" || bad "learner state"

if python3 - "$D/buffer.db" "$D/status/env-0.json" "$D/status/env-1.json" "$T/env1-before-kill.json" <<'PY'
import json, sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
total = 0
for f in sys.argv[2:]:
    st = json.load(open(f))
    p, acked = st["producer"], st["acked"]
    assert acked > 0, "%s: nothing acknowledged" % f
    n, lo, hi, d = db.execute("select count(*), min(seq), max(seq), count(distinct seq) from steps "
                              "where producer=? and seq<=?", (p, acked)).fetchone()
    assert (n, lo, hi, d) == (acked, 1, acked, acked), \
        "env %d: acked through %d but buffer holds %d rows (%s..%s, %d distinct)" % (st["index"], acked, n, lo, hi, d)
    total += acked
print("    %d acknowledged transitions, each stored exactly once" % total)
PY
then ok "every acknowledged transition in buffer.db exactly once"; else bad "buffer.db and the envs' acknowledgements disagree"; fi

echo "CORRAL-RESULT suite=integration.workers passed=$PASS failed=$FAIL skipped=0"
[ "$FAIL" -eq 0 ]
