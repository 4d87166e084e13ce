#!/usr/bin/env python3
"""exp_faults.py - one experiment end to end through a real controller and agent,
with real worker processes (a learner with its buffer, two env workers on MuJoCo
reach2d), killed with SIGKILL one after the other while it trains:

  1. the learner (its agent restarts it; it resumes from its newest complete
     checkpoint and the buffer),
  2. the agent (a new one adopts the running workers, starts none twice),
  3. the controller (a new one adopts them from the agent's report).

Then it must still reach its goal (stop.success_rate 0.9 over an evaluation) and
end `done` with its robots free and no worker process left. Checked throughout
from `corral exp status --json` (the controller's view, fed by the agent's progress
reports) and the learner's status file: the update counter never falls below a
checkpoint seen before. Checked at the end in buffer.db: every transition an env
worker saw acknowledged is there exactly once, and no (producer, seq) twice.
`corral exp logs` (through the controller, after the placement is gone) shows the
learner's resume.

The robots are paced at 10x real time (20 Hz control, so 200 steps/s each): the
run takes about a minute, and the kills land mid-run on any machine."""
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

from itest import CORRAL, SRC, Test, free_port, wait

SPEC = os.path.join(SRC, "configs", "experiments", "reach-sac.yaml")
NAME = "reach-sac"
SETS = ["checkpoint.every_updates=500", "stop.eval_episodes=20", "stop.wall_time=4m"]

TEST = Test("integration.exp_faults", "corral-faults.")
T, procs, check, start, kill9, cli = TEST.dir, TEST.procs, TEST.check, TEST.start, TEST.kill9, TEST.cli
AGENT_STATE = os.path.join(T, "a1")
EXPDIR = os.path.join(AGENT_STATE, "experiments", NAME)


ADDR = "127.0.0.1:%d" % free_port()
TEST.env.update(CORRAL_CONTROLLER=ADDR)


def status():
    try:
        p = cli("exp", "status", NAME, "--json", timeout=10)
        return json.loads(p.stdout) if p.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def learner_file():
    try:
        with open(os.path.join(EXPDIR, "status", "learner.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def worker_pids(st):
    return {(w["role"], w["index"]): w["pid"] for w in st["workers"] if w["role"] in ("env", "learner")} if st else {}


def alive(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"worker" in f.read()
    except OSError:
        return False


class Monitor(threading.Thread):
    """Samples the update counter and the newest checkpoint, from the controller and
    from the learner's own status file (whichever learner process wrote it), and
    records every fall below a checkpoint that source showed earlier."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = False
        self.ckpt = {}          # source -> newest checkpoint seen (update count)
        self.samples = 0
        self.falls = []

    def sample(self, src, updates, ckpt, who):
        if updates is None:
            return
        self.samples += 1
        if updates < self.ckpt.get(src, 0):
            self.falls.append("%s (%s): %d updates after checkpoint %d" % (src, who, updates, self.ckpt[src]))
        self.ckpt[src] = max(self.ckpt.get(src, 0), ckpt or 0)

    def run(self):
        while not self.stop:
            lf = learner_file()
            if lf:
                self.sample("learner.json", lf.get("updates"), lf.get("checkpoint"), "pid %s" % lf.get("pid"))
            st = status()
            if st and st["state"] in ("running", "degraded", "stopping", "done"):
                self.sample("exp status", st["updates"], st["checkpoint_updates"], st["state"])
            time.sleep(0.1)


def buffer_check():
    """Every acknowledged transition of each env once; no (producer, seq) twice."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(EXPDIR, "buffer.db"), uri=True)
    problems = []
    if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
        problems.append("integrity_check failed")
    dup = db.execute("SELECT count(*) FROM (SELECT producer, seq FROM steps GROUP BY producer, seq "
                     "HAVING count(*) > 1)").fetchone()[0]
    if dup:
        problems.append("%d (producer, seq) stored twice" % dup)
    total = 0
    for i in (0, 1):
        with open(os.path.join(EXPDIR, "status", "env-%d.json" % i)) as f:
            st = json.load(f)
        p, acked = st["producer"], st["acked"]
        n, lo, hi, d = db.execute("SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM steps "
                                  "WHERE producer = ? AND seq <= ?", (p, acked)).fetchone()
        if acked <= 0 or (n, lo, hi, d) != (acked, 1, acked, acked):
            problems.append("env %d: acknowledged through %d, buffer holds %s rows (%s..%s, %s distinct)"
                            % (i, acked, n, lo, hi, d))
        total += acked
    return total, problems


def main():
    start("controller", "controller", "--listen", ADDR, "--state", os.path.join(T, "ctl"))
    agent = ["agent", "--name", "n1", "--state", AGENT_STATE, "--no-gpus"]
    start("agent", *agent)
    wait(lambda: '"ready"' in cli("node", "list", "--json").stdout, 15)
    for r in ("arm1", "arm2"):
        p = cli("robot", "register", r, "--driver", "mujoco", "--model", "reach2d", "--node", "n1",
                "--set", "realtime=true", "--set", "speed=10")
        check("robot register %s" % r, p.returncode == 0, p.stderr)
    sets = [a for s in SETS for a in ("--set", s)]
    p = cli("exp", "submit", SPEC, *sets)
    if not check("exp submit", p.returncode == 0, p.stdout + p.stderr):
        return
    mon = Monitor()
    mon.start()

    # --- 1. SIGKILL the learner after its first checkpoint ---------------------------
    st = wait(lambda: (lambda s: s if s and s["state"] == "running" and s["checkpoint_updates"] >= 500
                       and s["updates"] >= 700 else None)(status()), 90)
    if not check("running, progress reported to the controller, a checkpoint", st is not None, json.dumps(status())):
        return
    check("exp status shows env steps, episodes, policy version", st["env_steps"] >= 700 and st["episodes"] > 0
          and st["policy_version"] > 0, json.dumps(st))
    pids = worker_pids(st)
    ck = st["checkpoint_updates"]
    os.kill(pids[("learner", 0)], signal.SIGKILL)
    st = wait(lambda: (lambda s: s if s and worker_pids(s).get(("learner", 0)) not in (None, 0, pids[("learner", 0)])
                       and s["updates"] > ck + 200 and s["state"] == "running" else None)(status()), 60)
    check("learner SIGKILLed after checkpoint %d: restarted, training on" % ck, st is not None,
          json.dumps(status()))
    if not st:
        return
    lw = [w for w in st["workers"] if w["role"] == "learner"][0]
    check("the controller shows the learner's restart", lw["restarts"] >= 1, json.dumps(lw))
    pids = worker_pids(st)

    # --- 2. SIGKILL the agent, start a new one: the workers are adopted -------------------
    kill9("agent")
    check("agent SIGKILLed: its workers run on", all(alive(p) for p in pids.values()), str(pids))
    u0 = (learner_file() or {}).get("updates", 0)
    start("agent", *agent)
    st = wait(lambda: (lambda s: s if s and s["state"] == "running" and s["updates"] > u0 else None)(status()), 30)
    check("agent restarted: experiment running, progress flows again", st is not None, json.dumps(status()))
    time.sleep(1.0)  # room for a wrong START to show
    st = status()
    check("agent restart: same worker processes, none started twice",
          st is not None and worker_pids(st) == pids and all(alive(p) for p in pids.values()),
          "%s vs %s" % (worker_pids(st), pids))

    # --- 3. SIGKILL the controller, start a new one: it adopts the workers -----------------
    kill9("controller")
    u0 = (learner_file() or {}).get("updates", 0)
    start("controller", "controller", "--listen", ADDR, "--state", os.path.join(T, "ctl"))
    st = wait(lambda: (lambda s: s if s and s["state"] in ("running", "stopping", "done")
                       and s["updates"] > u0 else None)(status()), 30)
    check("controller restarted: experiment %s, progress flows again" % (st or {}).get("state"), st is not None,
          json.dumps(status()))
    st = status()
    if st and st["state"] == "running":
        check("controller restart: same worker processes", worker_pids(st) == pids,
              "%s vs %s" % (worker_pids(st), pids))
    else:
        print("       (the goal was reached while the controller was down; processes ended by themselves)")

    # --- the goal -----------------------------------------------------------------------------
    st = wait(lambda: (lambda s: s if s and s["state"] in ("done", "failed", "stopped") else None)(status()), 150)
    mon.stop = True
    mon.join()
    check("experiment done", st is not None and st["state"] == "done", json.dumps(status()))
    if not st:
        return
    check("goal reached: evaluation success %.2f >= 0.9" % st["success_rate"], st["success_rate"] >= 0.9,
          json.dumps(st))
    check("update counter never below a checkpoint seen before (%d samples, last checkpoint %d)"
          % (mon.samples, mon.ckpt.get("learner.json", 0)), mon.samples > 20 and not mon.falls,
          "; ".join(mon.falls[:5]))
    robots = json.loads(cli("robot", "list", "--json").stdout or "[]")
    check("robots free again", len(robots) == 2 and all(r["state"] == "available" for r in robots), str(robots))
    check("no worker process left", wait(lambda: not any(alive(p) for p in pids.values()), 10),
          str([p for p in pids.values() if alive(p)]))
    total, problems = buffer_check()
    check("buffer.db: each of %d acknowledged transitions exactly once" % total, not problems, "; ".join(problems))

    # --- logs through the controller, after the placement is gone ---------------------------------
    p = cli("exp", "logs", NAME, "--role", "learner")
    check("exp logs --role learner: the resume is in it", p.returncode == 0 and "resumed from" in p.stdout
          and "==> learner-0 on n1 <==" in p.stdout, p.stderr + p.stdout[-500:])
    p = cli("exp", "logs", NAME, "--role", "actor", "--index", "1", "--tail", "2KiB")
    check("exp logs --role actor --index 1 --tail: env-1's log end", p.returncode == 0
          and "==> env-1 on n1 <==" in p.stdout and len(p.stdout) <= 2048 + 200, p.stderr + p.stdout[-300:])
    p = cli("exp", "logs", NAME, "--role", "critic")
    check("exp logs with an unknown role is refused", p.returncode == 1 and "unknown role" in p.stderr, p.stderr)


try:
    main()
except Exception as e:  # a crash of the test itself is a failure, with its reason
    check("test ran to the end", False, repr(e))
finally:
    TEST.stop_daemons()
    cli("agent", "--stop-workers", "--state", AGENT_STATE)
    TEST.finish([os.path.join(EXPDIR, "logs")])
