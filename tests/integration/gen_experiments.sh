#!/bin/sh
# gen_experiments.sh - the generative-policy experiment files run as workers,
# exactly like the SAC experiment: for configs/experiments/reach-flow.yaml and
# reach-vla.yaml, a learner and one env worker on MuJoCo (realtime off), made
# short with --set (a few scripted episodes, 150 BC updates, then RL to 300
# updates). Checks: the env records the scripted expert's episodes as
# demonstrations in buffer.db; the learner passes from BC to RL and stops at the
# update limit (status "done"); the newest checkpoint holds the policy's weights
# (the flow's velocity MLP, or the VLA's patch embedding, token table and blocks)
# and the RL phase's frozen copy, noise and value networks; for the VLA, the
# buffer holds each step's camera image as uint8 (32x32x3) and each step's vector
# ends with the instruction's byte tokens naming that episode's goal.
# reach-flow again with action chunks of 4 (algorithm.params.horizon=4), its env
# worker SIGKILLed while it records the scripted demonstrations and restarted,
# then the learner SIGKILLed after a checkpoint and restarted (it resumes from
# it): the learner trains on chunk batches (its status says chunk 4 and counts padded
# rows), passes BC then RL, evaluations are reported, it stops done; buffer.db
# holds exactly buffer.scripted.episodes ended demonstrations, recorded by both
# env processes (the restarted one records only the missing ones, and the one
# the kill cut short again). Both files also go through `corral exp submit`
# (reach-flow there with chunks of 4).
set -u
CORRAL=${CORRAL:-${CORRAL_BUILD_DIR:-build}/corral}
SRC=${CORRAL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$(mktemp -d "${TMPDIR:-/tmp}/corral-gen.XXXXXX")
PASS=0
FAIL=0
SKIP=0
L_PID= E_PID= C_PID= A_PID=

cleanup() {
    for p in $L_PID $E_PID $C_PID $A_PID; do kill -9 "$p" 2>/dev/null; done
    [ -d "$T/agent" ] && "$CORRAL" agent --stop-workers --state "$T/agent" >/dev/null 2>&1
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

field() {
    python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))[sys.argv[2]])
except Exception: print(-1)' "$1" "$2"
}

# run NAME MODEL [extra --set ...]: learner and env of configs/experiments/NAME.yaml
# until the learner stops; returns its exit status.
run() {
    name=$1 model=$2; shift 2
    D=$T/$name
    SETS="--set stop.updates=300 --set algorithm.bc_updates=150 --set buffer.scripted.episodes=4
          --set algorithm.warmup_steps=200 --set checkpoint.every_updates=100 --set stop.eval_every_updates=100000
          --set algorithm.max_staleness=4 $*"
    # shellcheck disable=SC2086
    "$CORRAL" worker --role learner --spec "$SRC/configs/experiments/$name.yaml" --dir "$D" --publish-every 20 \
        --status-ms 100 $SETS >"$T/$name-learner.log" 2>&1 &
    L_PID=$!
    # shellcheck disable=SC2086
    "$CORRAL" worker --role env --spec "$SRC/configs/experiments/$name.yaml" --dir "$D" --index 0 \
        --robot "arm0:mujoco:$model" --robot-set realtime=false --status-ms 100 $SETS >"$T/$name-env.log" 2>&1 &
    E_PID=$!
    start=$(date +%s)
    while kill -0 "$L_PID" 2>/dev/null && [ $(( $(date +%s) - start )) -lt 240 ]; do sleep 0.5; done
    if kill -0 "$L_PID" 2>/dev/null; then
        kill -TERM "$L_PID"
        echo "  (learner still running after 240 s: stopped)"
    fi
    wait "$L_PID"; lrc=$?; L_PID=
    start=$(date +%s)
    while kill -0 "$E_PID" 2>/dev/null && [ $(( $(date +%s) - start )) -lt 20 ]; do sleep 0.2; done
    kill -TERM "$E_PID" 2>/dev/null
    wait "$E_PID" 2>/dev/null; E_PID=
    return $lrc
}

# check_ckpt DIR PYTHON-EXPR-OF-NAMES...: the newest checkpoint's tensors.
ckpt_has() {
    python3 - "$1" "$2" <<'PY'
import json, os, struct, sys
d, want = sys.argv[1] + "/checkpoints", sys.argv[2].split()
ck = sorted((int(n.split("-")[1]), n) for n in os.listdir(d) if n.startswith("ckpt-") and n.split("-")[1].isdigit())
assert ck, "no checkpoint in %s" % d
path = "%s/%s/algo.safetensors" % (d, ck[-1][1])
with open(path, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    head = json.loads(f.read(n))
meta = head.pop("__metadata__", {})
names = set(head)
missing = [w for w in want if not any(k == w or k.startswith(w + ".") for k in names)]
assert not missing, "%s lacks %s (has %s...)" % (path, missing, sorted(names)[:12])
state = json.loads(meta.get("state", "{}"))
assert state.get("phase") == 1, "checkpoint phase %s, expected the RL phase (1)" % state.get("phase")
print("    %s: %d tensors, algo %s, %s updates, phase %s" % (path.split("/checkpoints/")[1], len(names),
      meta.get("algo"), state.get("updates"), state.get("phase")))
PY
}

# --- reach-flow: flow-rl on reach2d -------------------------------------------------------
run reach-flow reach2d; rc=$?
D=$T/reach-flow
[ $rc -eq 0 ] && [ "$(field "$D/status/learner.json" state)" = done ] \
    && ok "reach-flow: the learner ran to its stop ($(field "$D/status/learner.json" updates) updates)" \
    || bad "reach-flow: learner exit $rc, status $(cat "$D/status/learner.json" 2>/dev/null)"
if python3 - "$D/buffer.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
demo = db.execute("select count(*) from episodes where source = 1").fetchone()[0]
online = db.execute("select count(*) from episodes where source = 0").fetchone()[0]
assert demo == 4, "%d demonstration episodes, expected 4" % demo
assert online >= 1, "no online episodes"
print("    buffer.db: %d scripted demonstration episodes, %d online" % (demo, online))
PY
then ok "reach-flow: the scripted expert's episodes are demonstrations in buffer.db"; else bad "reach-flow: buffer.db demonstrations"; fi
ckpt_has "$D" "flow.vel frozen.vel old.vel noise.log_std value.value optim.flow.m optim.value.m" \
    && ok "reach-flow: the checkpoint holds the flow's networks, frozen copy, noise and value" \
    || bad "reach-flow: checkpoint contents"

# --- reach-flow with action chunks of 4; the env SIGKILLed during its scripted demonstrations ---
D=$T/reach-flow-h4
F=$SRC/configs/experiments/reach-flow.yaml
H4_SETS="--set stop.updates=500 --set algorithm.bc_updates=150 --set buffer.scripted.episodes=6
         --set algorithm.warmup_steps=200 --set checkpoint.every_updates=100 --set stop.eval_every_updates=100
         --set algorithm.max_staleness=4 --set algorithm.params.horizon=4"
# shellcheck disable=SC2086
"$CORRAL" worker --role learner --spec "$F" --dir "$D" --publish-every 20 --status-ms 100 $H4_SETS \
    >"$T/h4-learner.log" 2>&1 &
L_PID=$!
# paced (speed 4: 80 steps/s) so that the kill lands among the demonstrations
# shellcheck disable=SC2086
"$CORRAL" worker --role env --spec "$F" --dir "$D" --index 0 --robot "arm0:mujoco:reach2d" --robot-set realtime=true \
    --robot-set speed=4 --status-ms 100 $H4_SETS >"$T/h4-env.log" 2>&1 &
E_PID=$!
start=$(date +%s)
until [ "$(field "$D/status/env-0.json" episodes)" -ge 2 ] 2>/dev/null || [ $(( $(date +%s) - start )) -gt 60 ]; do
    sleep 0.1
done
killed_at=$(field "$D/status/env-0.json" episodes)
kill -9 "$E_PID"; wait "$E_PID" 2>/dev/null; E_PID=
# shellcheck disable=SC2086
"$CORRAL" worker --role env --spec "$F" --dir "$D" --index 0 --robot "arm0:mujoco:reach2d" --robot-set realtime=false \
    --status-ms 100 $H4_SETS >"$T/h4-env2.log" 2>&1 &
E_PID=$!
# the learner SIGKILLed after a checkpoint of the RL phase: it resumes from it and the buffer
start=$(date +%s)
until [ "$(field "$D/status/learner.json" checkpoint)" -ge 200 ] 2>/dev/null || [ $(( $(date +%s) - start )) -gt 120 ]; do
    sleep 0.1
done
ck=$(field "$D/status/learner.json" checkpoint)
kill -9 "$L_PID"; wait "$L_PID" 2>/dev/null
# shellcheck disable=SC2086
"$CORRAL" worker --role learner --spec "$F" --dir "$D" --publish-every 20 --status-ms 100 $H4_SETS \
    >"$T/h4-learner2.log" 2>&1 &
L_PID=$!
start=$(date +%s)
while kill -0 "$L_PID" 2>/dev/null && [ $(( $(date +%s) - start )) -lt 240 ]; do sleep 0.5; done
kill -0 "$L_PID" 2>/dev/null && { kill -TERM "$L_PID"; echo "  (learner still running after 240 s: stopped)"; }
wait "$L_PID"; rc=$?; L_PID=
start=$(date +%s)
while kill -0 "$E_PID" 2>/dev/null && [ $(( $(date +%s) - start )) -lt 20 ]; do sleep 0.2; done
kill -TERM "$E_PID" 2>/dev/null; wait "$E_PID" 2>/dev/null; E_PID=
S=$D/status/learner.json
[ $rc -eq 0 ] && [ "$(field "$S" state)" = done ] && [ "$(field "$S" chunk)" = 4 ] && [ "$(field "$S" padded_rows)" -gt 0 ] \
    && [ "$(field "$S" eval_round)" -ge 1 ] \
    && ok "reach-flow, chunks of 4: done after $(field "$S" updates) updates on chunk batches ($(field "$S" padded_rows) padded rows), evaluation $(field "$S" eval_round) reported (success $(field "$S" eval_success_rate))" \
    || bad "reach-flow, chunks of 4: learner exit $rc, status $(cat "$S" 2>/dev/null)"
ckpt_has "$D" "flow.vel frozen.vel old.vel noise.log_std value.value" \
    && ok "reach-flow, chunks of 4: BC then RL (the checkpoint is of the RL phase)" || bad "reach-flow, chunks of 4: checkpoint"
resumed=$(sed -n 's/.*resumed from .*ckpt-[0-9]*\/algo.safetensors: \([0-9]*\) updates.*/\1/p' "$T/h4-learner2.log")
[ -n "$resumed" ] && [ "$resumed" -ge "$ck" ] && [ "$resumed" -lt 500 ] \
    && ok "reach-flow, chunks of 4: the learner SIGKILLed after checkpoint $ck resumed from checkpoint $resumed and went on" \
    || bad "reach-flow, chunks of 4: no resume from checkpoint $ck or later ($(grep -h "resumed\|error" "$T/h4-learner2.log" | head -2))"
held=$(sed -n 's/.*the buffer holds \([0-9]*\) of the 6 scripted demonstrations.*/\1/p' "$T/h4-env2.log")
if [ -n "$held" ] && python3 - "$D/buffer.db" "$held" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
held = int(sys.argv[2])
ended = db.execute("select count(*) from episodes where source = 1 and ended = 1").fetchone()[0]
cut = db.execute("select count(*) from episodes where source = 1 and ended = 0").fetchone()[0]
producers = db.execute("select count(distinct producer) from episodes where source = 1 and ended = 1").fetchone()[0]
assert ended == 6, "%d ended demonstrations, expected 6 (buffer.scripted.episodes)" % ended
assert cut <= 1, "%d demonstrations cut short, at most the one the kill cut" % cut
assert 1 <= held < 6, "the restarted env was told %d were recorded" % held
assert producers == 2, "demonstrations from %d env processes, expected both" % producers
print("    buffer.db: 6 ended demonstrations (%d before the kill, %d after), %d cut short" % (held, 6 - held, cut))
PY
then ok "reach-flow, env SIGKILLed during its demonstrations (after $killed_at episodes): the restarted env records only the missing ones"
else bad "scripted demonstrations after an env restart (told ${held:-nothing}; $(grep -h "scripted\|demonstr" "$T/h4-env2.log" | head -2))"; fi

# --- reach-vla: the VLA with images and instructions on reach2d_multi ---------------------------
run reach-vla reach2d_multi; rc=$?
D=$T/reach-vla
if grep -q "EGL\|rendering" "$T/reach-vla-env.log" && ! [ -f "$D/buffer.db" ]; then
    SKIP=$((SKIP + 1))
    echo "SKIPPED reach-vla: no headless rendering here ($(grep -m1 "EGL\|rendering" "$T/reach-vla-env.log"))"
else
    [ $rc -eq 0 ] && [ "$(field "$D/status/learner.json" state)" = done ] \
        && ok "reach-vla: the learner ran to its stop ($(field "$D/status/learner.json" updates) updates)" \
        || bad "reach-vla: learner exit $rc, status $(cat "$D/status/learner.json" 2>/dev/null)"
    if python3 - "$D/buffer.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
demo = db.execute("select count(*) from episodes where source = 1").fetchone()[0]
assert demo == 4, "%d demonstration episodes, expected 4" % demo
# every step row holds its camera image: 32 x 32 x 3 bytes, not all alike
n, good = db.execute("select count(*), sum(length(images) = 3072) from steps").fetchone()
assert n > 0 and good == n, "%d step rows, %s with a 3072-byte image" % (n, good)
distinct = db.execute("select count(distinct images) from (select images from steps limit 200)").fetchone()[0]
assert distinct > 10, "only %d different images in 200 steps" % distinct
print("    buffer.db: %d demonstration episodes, %d camera images of 32x32x3 bytes" % (demo, n))
PY
    then ok "reach-vla: camera images stored as uint8 in buffer.db, scripted demonstrations recorded"
    else bad "reach-vla: buffer.db images or demonstrations"; fi
    if python3 - "$D/buffer.db" <<'PY'
import sqlite3, struct, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
texts = set()
for (blob,) in db.execute("select proprio from steps limit 400"):
    v = struct.unpack("<%df" % (len(blob) // 4), blob)
    ids = [int(x) for x in v[-24:]]
    assert ids[0] == 1, "the vector does not end with an instruction (BOS first): %s" % ids
    texts.add(bytes(i - 2 for i in ids[1:] if i >= 2).decode())
ok = {"reach the red target", "reach the green target", "reach the blue target"}
assert texts and texts <= ok, "instructions %s" % texts
print("    instructions seen: %s" % sorted(texts))
PY
    then ok "reach-vla: every step ends with the tokens of its episode's instruction"
    else bad "reach-vla: instruction tokens in the stored vectors"; fi
    ckpt_has "$D" "vla.patch vla.tok.embed vla.blk.0 vla.blk.1 vla.obj vla.obj.pos frozen.patch noise.log_std value.value optim.vla.m" \
        && ok "reach-vla: the checkpoint holds the VLA (image patches, tokens, blocks, objects and their slot embeddings), frozen copy, noise and value" \
        || bad "reach-vla: checkpoint contents"
fi

# --- bad input: an instruction longer than the context, an image of another size ---------------
if [ -f "$T/reach-vla/buffer.db" ]; then
    V=$SRC/configs/experiments/reach-vla.yaml
    timeout 30 "$CORRAL" worker --role env --spec "$V" --dir "$T/bad-ctx" --robot "arm0:mujoco:reach2d_multi" \
        --robot-set realtime=false --set task.instruction_tokens=12 >"$T/bad-ctx.log" 2>&1; rc=$?
    [ $rc -ne 0 ] && grep -q "task.instruction for goal red ('reach the red target', task.instruction_tokens 12)" "$T/bad-ctx.log" \
        && grep -q "instruction of 20 bytes needs 21 tokens with BOS, the context holds 12" "$T/bad-ctx.log" \
        && ok "an instruction longer than the context: the env refuses to start, naming it and both lengths" \
        || bad "long instruction: exit $rc, $(tail -n 2 "$T/bad-ctx.log")"
    D=$T/reach-vla
    "$CORRAL" worker --role learner --spec "$V" --dir "$D" --set stop.updates=1000000 >"$T/bad-img-learner.log" 2>&1 &
    L_PID=$!
    timeout 60 "$CORRAL" worker --role env --spec "$V" --dir "$D" --index 1 --robot "arm1:mujoco:reach2d_multi" \
        --robot-set realtime=false --set task.image_width=16 >"$T/bad-img-env.log" 2>&1; rc=$?
    kill -TERM "$L_PID"; wait "$L_PID" 2>/dev/null; L_PID=
    [ $rc -ne 0 ] && grep -q "refused" "$T/bad-img-env.log" \
        && grep -q "its camera image is 3x32x16 (CxHxW), the experiment's buffer holds 3x32x32" "$T/bad-img-learner.log" \
        && ok "an env with images of another size is refused, both sizes named" \
        || bad "wrong image size: env exit $rc; $(grep -h "refused" "$T/bad-img-learner.log" "$T/bad-img-env.log" | head -2)"
fi

# --- both files through `corral exp submit`: a controller, an agent, registered robots ----------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CORRAL_CONTROLLER=127.0.0.1:$PORT
"$CORRAL" controller --listen "$CORRAL_CONTROLLER" --state "$T/controller" >"$T/controller.log" 2>&1 &
C_PID=$!
"$CORRAL" agent --name gen-node --controller "$CORRAL_CONTROLLER" --state "$T/agent" >"$T/agent.log" 2>&1 &
A_PID=$!
i=0
until "$CORRAL" node list --json 2>/dev/null | grep -q '"state": *"ready"' || [ $i -gt 100 ]; do
    i=$((i + 1)); sleep 0.1
done
"$CORRAL" robot register flow-0 --driver mujoco --node gen-node --model reach2d --set realtime=false >/dev/null
"$CORRAL" robot register vla-0 --driver mujoco --node gen-node --model reach2d_multi --set realtime=false >/dev/null
SUBMIT_SETS="--set stop.updates=300 --set algorithm.bc_updates=150 --set buffer.scripted.episodes=4
             --set algorithm.warmup_steps=200 --set checkpoint.every_updates=100 --set stop.eval_every_updates=100000"
for name in reach-flow reach-vla; do
    extra=
    [ "$name" = reach-flow ] && extra="--set algorithm.params.horizon=4"
    # shellcheck disable=SC2086
    "$CORRAL" exp submit "$SRC/configs/experiments/$name.yaml" $SUBMIT_SETS $extra >"$T/submit-$name.log" 2>&1 \
        || bad "exp submit $name: $(cat "$T/submit-$name.log")"
done
for name in reach-flow reach-vla; do
    start=$(date +%s) state=
    while [ $(( $(date +%s) - start )) -lt 240 ]; do
        "$CORRAL" exp status "$name" --json >"$T/status-$name.json" 2>/dev/null
        state=$(field "$T/status-$name.json" state)
        case $state in done|failed|stopped) break ;; esac
        sleep 0.5
    done
    updates=$(field "$T/status-$name.json" updates)
    [ "$state" = done ] && [ "$updates" -ge 300 ] \
        && ok "$name through exp submit: done after $updates updates, $(field "$T/status-$name.json" env_steps) env steps" \
        || bad "$name through exp submit: state $state, updates $updates"
done

echo "CORRAL-RESULT suite=integration.gen_experiments passed=$PASS failed=$FAIL skipped=$SKIP"
[ "$FAIL" -eq 0 ]
