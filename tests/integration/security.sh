#!/bin/sh
# security.sh - the cluster's security contract end to end with real processes:
# `corral certs` makes a CA; a controller serves mutual TLS on every interface with
# an admin token and a join token; an agent with its certificate and the join token
# registers; the CLI with the admin token lists nodes and submits and lists an
# experiment. Then each refusal is checked for its exit status and its named
# reason, with the controller still serving after each: a wrong token, no token,
# the join token used as the admin token (and the admin token used to join), a
# certificate from another CA, a plaintext client, a token file others can read;
# a controller on a network address without TLS, and one given the same token
# twice, refuse to start. The experiment's workers are the stand-in worker.
set -u
CORRAL=${CORRAL:-${CORRAL_BUILD_DIR:-build}/corral}
SRC=${CORRAL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/corral-sec.XXXXXX")
PASS=0
FAIL=0
CTL_PID= A1_PID= A2_PID=

cleanup() {
    for p in $CTL_PID $A1_PID $A2_PID; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    # The stand-in workers outlive their agent, as real workers do.
    [ -f "$T/starts.log" ] && while read -r pid _; do kill -9 "$pid" 2>/dev/null; done <"$T/starts.log"
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
# refused NAME WANT_RC PATTERN CMD...: CMD exits WANT_RC and its stderr has PATTERN.
refused() {
    name=$1 want=$2 pat=$3; shift 3
    "$@" >"$T/out.txt" 2>"$T/err.txt"
    rc=$?
    if [ "$rc" -eq "$want" ] && grep -q -- "$pat" "$T/err.txt"; then
        ok "$name (exit $rc: $(grep -o -- "$pat" "$T/err.txt" | head -1))"
    else
        bad "$name: exit $rc, want $want and '$pat' in: $(cat "$T/err.txt")"
    fi
}
# serving: the controller answers the admin with node n1 ready, after a refusal.
serving() {
    if kill -0 "$CTL_PID" 2>/dev/null && [ "$(state_of n1)" = ready ]; then ok "controller still serving after: $1"
    else bad "controller not serving after: $1"; fi
}
# The state of node NAME as the admin sees it ("absent", "unreachable").
state_of() {
    CORRAL_TLS_DIR=$T/pki/admin CORRAL_TOKEN_FILE=$T/admin.tok "$CORRAL" node list --json 2>/dev/null | python3 -c '
import json, sys
try: rows = json.load(sys.stdin)
except Exception: print("unreachable"); sys.exit(0)
print(next((r["state"] for r in rows if r["name"] == sys.argv[1]), "absent"))' "$1"
}
# wait_state SECONDS NAME STATE
wait_state() {
    end=$(( $(date +%s) + $1 ))
    while [ "$(state_of "$2")" != "$3" ]; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.2
    done
}

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
export CORRAL_CONTROLLER=$ADDR
unset CORRAL_TLS_DIR CORRAL_TOKEN_FILE

# --- certificates and tokens -----------------------------------------------------------------
"$CORRAL" certs "$T/pki" --clients n1,n2,admin >"$T/certs.log" 2>&1 &&
    "$CORRAL" certs "$T/other" --clients admin,n2 >>"$T/certs.log" 2>&1 &&
    [ -f "$T/pki/server/cert.pem" ] && [ -f "$T/pki/n1/key.pem" ] && ok "corral certs made a CA, server/, n1/, admin/" ||
    bad "corral certs: $(cat "$T/certs.log")"
(umask 077
 for t in admin join wrong; do head -c 32 /dev/urandom | base64 >"$T/$t.tok"; done)
cp "$T/admin.tok" "$T/loose.tok" && chmod 644 "$T/loose.tok"

# --- a controller that must not start --------------------------------------------------------
refused "controller on 0.0.0.0 without TLS refused" 1 "refusing to serve 0.0.0.0:$PORT without TLS" \
    "$CORRAL" controller --listen "0.0.0.0:$PORT" --state "$T/ctl0"
refused "controller with a token file others can read refused" 1 "token file $T/loose.tok is readable" \
    "$CORRAL" controller --listen "$ADDR" --state "$T/ctl0" --tls "$T/pki" --admin-token-file "$T/loose.tok"
refused "controller with the same join and admin token refused" 1 "join token and the admin token are the same" \
    "$CORRAL" controller --listen "$ADDR" --state "$T/ctl0" --tls "$T/pki" --admin-token-file "$T/admin.tok" \
    --join-token-file "$T/admin.tok"
refused "controller with a TLS directory without certificates refused" 1 "has no cert.pem" \
    "$CORRAL" controller --listen "$ADDR" --state "$T/ctl0" --tls "$T"

# --- the secure cluster ----------------------------------------------------------------------
# On every interface: TLS makes a network address acceptable.
"$CORRAL" controller --listen "0.0.0.0:$PORT" --state "$T/ctl" --tls "$T/pki" \
    --admin-token-file "$T/admin.tok" --join-token-file "$T/join.tok" >"$T/controller.log" 2>&1 &
CTL_PID=$!
WIRE_DIR=$T CORRAL_WORKER_CMD=$SRC/tests/integration/standin_worker.sh \
    "$CORRAL" agent --name n1 --state "$T/a1" --no-gpus --tls "$T/pki" --join-token-file "$T/join.tok" \
    --robot arm1:mujoco:reach2d --robot arm2:mujoco:reach2d >"$T/agent1.log" 2>&1 &
A1_PID=$!
wait_state 15 n1 ready && ok "agent n1 (its certificate, the join token) registered: ready" ||
    bad "n1 not ready: $(state_of n1)"

export CORRAL_TLS_DIR=$T/pki/admin CORRAL_TOKEN_FILE=$T/admin.tok
"$CORRAL" node list >"$T/out.txt" 2>&1 && grep -q "^n1 *ready" "$T/out.txt" &&
    ok "node list with the admin token (CORRAL_TLS_DIR, CORRAL_TOKEN_FILE)" || bad "node list: $(cat "$T/out.txt")"
"$CORRAL" exp submit "$SRC/configs/experiments/reach-sac.yaml" >"$T/out.txt" 2>&1 &&
    ok "exp submit with the admin token" || bad "exp submit: $(cat "$T/out.txt")"
"$CORRAL" exp list >"$T/out.txt" 2>&1 && grep -q "^reach-sac" "$T/out.txt" &&
    ok "exp list shows the experiment" || bad "exp list: $(cat "$T/out.txt")"
unset CORRAL_TLS_DIR CORRAL_TOKEN_FILE
"$CORRAL" --tls "$T/pki/admin" --token-file "$T/admin.tok" robot list >"$T/out.txt" 2>&1 && grep -q "^arm1" "$T/out.txt" &&
    ok "robot list with the global options --tls DIR --token-file F" ||
    bad "global options: $(cat "$T/out.txt")"

# --- refusals, each with its reason, the controller serving after each ----------------------
A="--tls $T/pki/admin"
# shellcheck disable=SC2086
refused "wrong token refused" 1 "UNAUTHENTICATED: wrong bearer token" \
    "$CORRAL" node list $A --token-file "$T/wrong.tok"
serving "a wrong token"
# shellcheck disable=SC2086
refused "no token refused" 1 "UNAUTHENTICATED: no bearer token" "$CORRAL" node list $A
serving "no token"
# shellcheck disable=SC2086
refused "join token used as admin refused" 1 "PERMISSION_DENIED: the join token may not call" \
    "$CORRAL" exp list $A --token-file "$T/join.tok"
serving "the join token as admin"
# shellcheck disable=SC2086
refused "join token cannot submit" 1 "PERMISSION_DENIED: the join token may not call /corral.v1.Experiments/Submit" \
    "$CORRAL" exp submit "$SRC/configs/experiments/reach-sac.yaml" $A --token-file "$T/join.tok"
refused "certificate from another CA refused" 1 "the TLS handshake failed" \
    "$CORRAL" node list --tls "$T/other/admin" --token-file "$T/admin.tok"
serving "a certificate from another CA"
# A client that trusts the controller's CA but shows a certificate of another one:
# the controller is the one that refuses.
mkdir -p "$T/mixed" && cp "$T/pki/ca.pem" "$T/mixed/" && cp "$T/other/admin/cert.pem" "$T/other/admin/key.pem" "$T/mixed/"
refused "client certificate from another CA refused by the controller" 1 "the TLS handshake failed" \
    "$CORRAL" node list --tls "$T/mixed" --token-file "$T/admin.tok"
serving "a client certificate from another CA"
refused "plaintext client refused" 1 "closed this one, made without TLS" \
    "$CORRAL" node list --token-file "$T/admin.tok"
serving "a plaintext client"
# shellcheck disable=SC2086
refused "CLI token file others can read refused" 1 "loose.tok is readable or writable by others" \
    "$CORRAL" node list $A --token-file "$T/loose.tok"
refused "CLI TLS directory without certificates refused" 1 "has no cert.pem" \
    "$CORRAL" node list --tls "$T/ctl" --token-file "$T/admin.tok"

# An agent with the admin token as its join token, then with a wrong one, then
# with a certificate from another CA, then without TLS: never registered.
agent2() { # LOGNAME ARGS...
    log=$1; shift
    "$CORRAL" agent --name n2 --state "$T/a2" --no-gpus "$@" >"$T/$log.log" 2>&1 &
    A2_PID=$!
}
# wait_log SECONDS FILE PATTERN
wait_log() {
    end=$(( $(date +%s) + $1 ))
    until grep -q -- "$3" "$2"; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.2
    done
}
stop_agent2() { kill -TERM "$A2_PID" 2>/dev/null; wait "$A2_PID" 2>/dev/null; A2_PID=; }
check_agent2() { # NAME LOGNAME PATTERN
    if wait_log 10 "$T/$2.log" "$3" && [ "$(state_of n2)" = absent ]; then ok "$1 ($3)"
    else bad "$1: n2 $(state_of n2); log: $(tail -n 3 "$T/$2.log")"; fi
    stop_agent2
    serving "$1"
}
agent2 agent2-admin --tls "$T/pki" --join-token-file "$T/admin.tok"
check_agent2 "agent with the admin token refused" agent2-admin \
    "refused node n2: PERMISSION_DENIED: the admin token may not call /corral.v1.AgentLink/Session"
agent2 agent2-wrong --tls "$T/pki" --join-token-file "$T/wrong.tok"
check_agent2 "agent with a wrong join token refused" agent2-wrong "refused node n2: UNAUTHENTICATED: wrong bearer token"
agent2 agent2-other --tls "$T/other/n2" --join-token-file "$T/join.tok"
check_agent2 "agent with a certificate from another CA refused" agent2-other "certificate verify failed"
agent2 agent2-plain --join-token-file "$T/join.tok"
check_agent2 "agent without TLS refused" agent2-plain "still cannot open a session"
grep -q "rejected: the join token may not call /corral.v1.Experiments/List" "$T/controller.log" &&
    grep -q "rejected: wrong bearer token" "$T/controller.log" &&
    ok "the controller logged each refused call with its reason" || bad "controller log lacks the refusals"

# --- clean shutdown ----------------------------------------------------------------------------
kill -TERM $A1_PID; wait $A1_PID; rc=$?; A1_PID=
[ $rc -eq 0 ] && ok "agent n1 exits 0 on SIGTERM" || bad "agent n1 exit $rc"
kill -TERM $CTL_PID; wait $CTL_PID; rc=$?; CTL_PID=
[ $rc -eq 0 ] && ok "controller exits 0 on SIGTERM" || bad "controller exit $rc"

echo "CORRAL-RESULT suite=integration.security passed=$PASS failed=$FAIL skipped=0"
[ "$FAIL" -eq 0 ]
