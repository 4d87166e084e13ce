#!/bin/sh
# controlplane.sh - the control plane end to end with real processes on loopback:
# a controller and two agents; robots and GPUs registered through the CLI; bad
# input refused with exit status 1 and the registry unchanged; an agent killed
# with SIGKILL is seen lost within 3 s and back after a restart; the controller
# killed with SIGKILL and restarted serves the same registry and the agents
# reconnect by themselves; SIGTERM stops every daemon cleanly.
set -u
CORRAL=${CORRAL:-${CORRAL_BUILD_DIR:-build}/corral}
T=$(mktemp -d "${TMPDIR:-/tmp}/corral-cp.XXXXXX")
PASS=0
FAIL=0
CTL_PID= A1_PID= A2_PID= A3_PID=

cleanup() {
    for p in $CTL_PID $A1_PID $A2_PID $A3_PID; do kill -9 "$p" 2>/dev/null; done
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
check() { # check NAME CMD...: passes when CMD succeeds
    name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

# A free loopback port, kept for the controller's restart.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
export CORRAL_CONTROLLER=$ADDR

start_controller() {
    "$CORRAL" controller --listen "$ADDR" --state "$T/ctl" >>"$T/controller.log" 2>&1 &
    CTL_PID=$!
}
start_agent1() {
    CORRAL_SIM_GPUS=2xH100-80GB "$CORRAL" agent --name n1 --state "$T/a1" --advertise 127.0.0.1:7801 \
        --robot arm1:mujoco:reacher >>"$T/agent1.log" 2>&1 &
    A1_PID=$!
}
start_agent2() {
    "$CORRAL" agent --name n2 --state "$T/a2" --no-gpus --robot arm2:mock >>"$T/agent2.log" 2>&1 &
    A2_PID=$!
}

# JSON field of the object named NAME in `corral <what> list --json`, or "absent".
field() { # field WHAT NAME KEY
    "$CORRAL" "$1" list --json 2>/dev/null | python3 -c '
import json, sys
what, name, key = sys.argv[1:4]
try:
    rows = json.load(sys.stdin)
except Exception:
    print("unreachable"); sys.exit(0)
for r in rows:
    if r.get("name", "%s/%s" % (r.get("node"), r.get("index"))) == name:
        print(r.get(key)); sys.exit(0)
print("absent")' "$1" "$2" "$3"
}
# wait_for SECONDS WHAT NAME KEY VALUE: polls every 0.1 s; prints the seconds taken.
wait_for() {
    python3 - "$@" <<'PY'
import json, subprocess, sys, time, os
limit, what, name, key, want = float(sys.argv[1]), *sys.argv[2:6]
t0 = time.monotonic()
while True:
    p = subprocess.run([os.environ["CORRAL"], what, "list", "--json"], capture_output=True, text=True)
    got = "unreachable"
    if p.returncode == 0:
        got = "absent"
        for r in json.loads(p.stdout):
            if r.get("name", "%s/%s" % (r.get("node"), r.get("index"))) == name:
                got = str(r.get(key))
    if got == want:
        print("%.2f" % (time.monotonic() - t0)); sys.exit(0)
    if time.monotonic() - t0 > limit:
        print("timeout (last %s)" % got); sys.exit(1)
    time.sleep(0.1)
PY
}
# wait_seen SECONDS NODE SINCE_MS: until the node's agent has opened a session
# after SINCE_MS (unix ms); a restarted controller shows the nodes it knew as
# ready for a grace period, so state alone does not prove a reconnect.
wait_seen() {
    python3 - "$@" <<'PY'
import json, subprocess, sys, time, os
limit, name, since = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
t0 = time.monotonic()
while True:
    p = subprocess.run([os.environ["CORRAL"], "node", "list", "--json"], capture_output=True, text=True)
    if p.returncode == 0:
        for r in json.loads(p.stdout):
            if r["name"] == name and r["state"] == "ready" and r["last_seen_unix_ms"] >= since:
                print("%.2f" % (time.monotonic() - t0)); sys.exit(0)
    if time.monotonic() - t0 > limit:
        print("timeout"); sys.exit(1)
    time.sleep(0.1)
PY
}
now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }
export CORRAL

echo "controlplane: controller on $ADDR, state in $T"
start_controller
start_agent1
start_agent2
t=$(wait_for 15 node n1 state ready) && ok "agent n1 ready after ${t}s" || bad "agent n1 ready ($t)"
t=$(wait_for 15 node n2 state ready) && ok "agent n2 ready after ${t}s" || bad "agent n2 ready ($t)"

# --- registration through the CLI ------------------------------------------------
check "register cam1 on n2" "$CORRAL" robot register cam1 --driver remote --node n2 --set url=rtsp://cam --model c920
check "register arm1 (reported by n1's agent: merged)" "$CORRAL" robot register arm1 --driver mujoco
check "register a GPU n1 cannot probe" "$CORRAL" gpu register --node n2 --model A100 --memory 40GiB
"$CORRAL" robot list --json >"$T/robots.json"
check "robot list --json: one record per robot" python3 - "$T/robots.json" <<'PY'
import json, sys
rows = {r["name"]: r for r in json.load(open(sys.argv[1]))}
assert sorted(rows) == ["arm1", "arm2", "cam1"], sorted(rows)
a = rows["arm1"]
assert (a["node"], a["driver"], a["state"], a["registered"], a["reported"]) == ("n1", "mujoco", "available", True, True), a
assert rows["cam1"]["settings"] == {"url": "rtsp://cam"} and rows["cam1"]["node"] == "n2"
assert rows["arm2"]["state"] == "available"
PY
"$CORRAL" gpu list --json >"$T/gpus.json"
check "gpu list --json: 2 probed H100 on n1, 1 registered A100 on n2" python3 - "$T/gpus.json" <<'PY'
import json, sys
g = [(x["node"], x["index"], x["model"], x["memory_bytes"], x["state"]) for x in json.load(open(sys.argv[1]))]
assert g == [("n1", 0, "H100", 80 << 30, "available"), ("n1", 1, "H100", 80 << 30, "available"),
             ("n2", 0, "A100", 40 << 30, "available")], g
PY
"$CORRAL" node list --json >"$T/nodes.json"
check "node list --json: name, state, address" python3 - "$T/nodes.json" <<'PY'
import json, sys
n = {x["name"]: x for x in json.load(open(sys.argv[1]))}
assert n["n1"]["state"] == "ready" and n["n1"]["address"] == "127.0.0.1:7801", n["n1"]
assert n["n2"]["address"] is None and n["n2"]["accepts_inbound"] is False and n["n2"]["cores"] > 0, n["n2"]
PY
check "robot list prints a table" sh -c '"$CORRAL" robot list | head -1 | grep -q "^NAME *DRIVER *NODE *STATE"'
check "node show n1 lists its GPUs" sh -c '"$CORRAL" node show n1 | grep -q "H100"'

# --- bad input: exit 1, clear message, registry unchanged ---------------------------
expect_user_error() { # NAME PATTERN CMD...
    name=$1 pat=$2; shift 2
    out=$("$@" 2>&1); rc=$?
    if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q -- "$pat"; then ok "$name"; else bad "$name (rc $rc: $out)"; fi
}
expect_user_error "duplicate robot" "ALREADY_EXISTS.*already exists" "$CORRAL" robot register cam1 --driver remote
expect_user_error "invalid robot name" "INVALID_ARGUMENT.*invalid robot name" "$CORRAL" robot register Bad.Name --driver mock
expect_user_error "name of 64 characters" "at most 63" "$CORRAL" robot register \
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa --driver mock
expect_user_error "unknown driver" "unknown driver 'warp'" "$CORRAL" robot register arm9 --driver warp
expect_user_error "unknown node" "NOT_FOUND.*unknown node 'n9'" "$CORRAL" robot register arm9 --driver mock --node n9
expect_user_error "contradicting driver" "FAILED_PRECONDITION" "$CORRAL" robot register arm2 --driver dynamixel
expect_user_error "duplicate GPU index" "ALREADY_EXISTS" "$CORRAL" gpu register --node n1 --index 0 --model X --memory 1GiB
expect_user_error "bad memory size" "bad size" "$CORRAL" gpu register --node n1 --model X --memory lots
expect_user_error "unknown robot" "NOT_FOUND" "$CORRAL" robot show nosuch
expect_user_error "missing --driver" "driver is required" "$CORRAL" robot register arm9
"$CORRAL" robot list --json >"$T/robots2.json"
check "registry unchanged by refused calls" cmp -s "$T/robots.json" "$T/robots2.json"
out=$("$CORRAL" controller --listen 127.0.0.1:0 --state "$T/ctl" 2>&1); rc=$?
[ $rc -eq 1 ] && printf '%s' "$out" | grep -q "in use by another controller (pid $CTL_PID)" \
    && ok "second controller on the same state refused" || bad "second controller: rc $rc ($out)"
out=$("$CORRAL" --controller 127.0.0.1:1 node list 2>&1); rc=$?
[ $rc -eq 2 ] && ok "unreachable controller: exit 2" || bad "unreachable controller: rc $rc ($out)"

# A third agent whose inventory contradicts the registry (claims n1's robot).
"$CORRAL" agent --name n3 --state "$T/a3" --no-gpus --robot arm1:mujoco >>"$T/agent3.log" 2>&1 &
A3_PID=$!
sleep 1.5
check "contradictory inventory refused and logged by the agent" grep -q "refused node n3.*FAILED_PRECONDITION.*arm1 belongs to node n1" "$T/agent3.log"
[ "$(field node n3 state)" = absent ] && ok "refused node not in the registry" || bad "refused node n3 registered"
[ "$(field robot arm1 node)" = n1 ] && ok "arm1 still on n1" || bad "arm1 moved"
kill -TERM $A3_PID; wait $A3_PID; A3_PID=

# --- e-stop and drain ---------------------------------------------------------------
out=$("$CORRAL" robot estop arm2 --json)
check "estop latched and delivered" python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert r["state"]=="estopped" and r["delivered"], r' "$out"
sleep 0.3
check "agent n2 received the e-stop" grep -q "e-stop LATCHED for robot arm2" "$T/agent2.log"
check "estop released" "$CORRAL" robot estop arm2 --release
check "drain n2" "$CORRAL" node drain n2
[ "$(field node n2 state)" = draining ] && ok "n2 draining" || bad "n2 not draining"
[ "$(field robot cam1 state)" = draining ] && ok "cam1 draining" || bad "cam1 not draining"
check "undrain n2" "$CORRAL" node drain n2 --undo
"$CORRAL" node list --json >"$T/nodes2.json"
listed_ms=$(date +%s%3N)   # the age is judged at the listing, not after python starts
check "live nodes show their last heartbeat (under 2.5 s old)" python3 - "$T/nodes2.json" "$listed_ms" <<'PY'
import json, sys
for n in json.load(open(sys.argv[1])):
    age = int(sys.argv[2]) - n["last_seen_unix_ms"]
    assert n["state"] != "ready" or age < 2500, (n["name"], age)
PY

# --- an agent killed with SIGKILL ------------------------------------------------------
kill -9 $A1_PID; wait $A1_PID 2>/dev/null; A1_PID=
t=$(wait_for 3 node n1 state lost) && ok "n1 lost ${t}s after SIGKILL (limit 3 s)" || bad "n1 lost within 3 s ($t)"
[ "$(field robot arm1 state)" = lost ] && ok "arm1 lost with its node" || bad "arm1 not lost"
[ "$(field gpu n1/0 state)" = lost ] && ok "n1's GPUs lost" || bad "n1's GPUs not lost"
[ "$(field robot arm2 state)" = available ] && ok "n2's robot unaffected" || bad "arm2 affected"
start_agent1
t=$(wait_for 10 node n1 state ready) && ok "n1 back ${t}s after restart" || bad "n1 back ($t)"
t=$(wait_for 3 robot arm1 state available) && ok "arm1 available again" || bad "arm1 available again ($t)"

# --- a frozen agent (SIGSTOP): its connection stays open, its heartbeats stop ---------
kill -STOP $A2_PID
t=$(wait_for 4 node n2 state lost) && ok "frozen n2 lost ${t}s after SIGSTOP (keepalive or 3 missed heartbeats)" \
    || bad "frozen n2 lost ($t)"
kill -CONT $A2_PID
t=$(wait_for 10 node n2 state ready) && ok "n2 back ${t}s after SIGCONT" || bad "n2 back after SIGCONT ($t)"

# --- the controller killed with SIGKILL and restarted --------------------------------------
"$CORRAL" robot list --json >"$T/before.json"
"$CORRAL" gpu list --json >"$T/gpus-before.json"
kill -9 $CTL_PID; wait $CTL_PID 2>/dev/null; CTL_PID=
out=$("$CORRAL" node list 2>&1); rc=$?
[ $rc -eq 2 ] && ok "controller down: CLI exit 2" || bad "controller down: rc $rc"
sleep 1   # the agents notice and back off while no controller answers
since=$(now_ms)
start_controller
t=$(wait_seen 10 n1 "$since") && ok "n1 reconnected by itself (${t}s)" || bad "n1 reconnect ($t)"
t=$(wait_seen 10 n2 "$since") && ok "n2 reconnected by itself (${t}s)" || bad "n2 reconnect ($t)"
"$CORRAL" robot list --json >"$T/after.json"
"$CORRAL" gpu list --json >"$T/gpus-after.json"
check "robots intact after controller restart" cmp -s "$T/before.json" "$T/after.json"
check "GPUs intact after controller restart" cmp -s "$T/gpus-before.json" "$T/gpus-after.json"

# --- acknowledged registrations survive kill -9 of the controller mid-stream ----------
( i=0; while [ $i -lt 500 ]; do
      "$CORRAL" robot register d$i --driver mock >/dev/null 2>&1 || break
      echo d$i; i=$((i + 1))
  done ) >"$T/acked.txt" &
LOOP=$!
sleep 0.8
kill -9 $CTL_PID; wait $CTL_PID 2>/dev/null; CTL_PID=
wait $LOOP
since=$(now_ms)
start_controller
t=$(wait_seen 10 n1 "$since") && t=$(wait_seen 10 n2 "$since") && ok "agents back after the second kill" \
    || bad "agents back after the second kill"
"$CORRAL" robot list --json >"$T/after-kill.json"
check "every acknowledged registration survived kill -9 ($(wc -l <"$T/acked.txt") acknowledged)" \
    python3 - "$T/acked.txt" "$T/after-kill.json" "$T/ctl/state.db" <<'PY'
import json, sqlite3, sys
acked = open(sys.argv[1]).read().split()
have = {r["name"] for r in json.load(open(sys.argv[2]))}
assert len(acked) > 0, "no registration was acknowledged before the kill"
missing = [n for n in acked if n not in have]
assert not missing, missing
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[3], uri=True)
assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
PY

# --- clean shutdown -----------------------------------------------------------------------
kill -TERM $A2_PID; wait $A2_PID; rc=$?; A2_PID=
[ $rc -eq 0 ] && ok "agent n2 exits 0 on SIGTERM" || bad "agent n2 exit $rc"
t=$(wait_for 2 node n2 state lost) && ok "n2 lost at once after its agent said goodbye (${t}s)" || bad "n2 goodbye ($t)"
kill -TERM $A1_PID; wait $A1_PID; rc=$?; A1_PID=
[ $rc -eq 0 ] && ok "agent n1 exits 0 on SIGTERM" || bad "agent n1 exit $rc"
kill -TERM $CTL_PID; wait $CTL_PID; rc=$?; CTL_PID=
[ $rc -eq 0 ] && ok "controller exits 0 on SIGTERM" || bad "controller exit $rc"

echo "CORRAL-RESULT suite=integration.controlplane passed=$PASS failed=$FAIL skipped=0"
[ "$FAIL" -eq 0 ]
