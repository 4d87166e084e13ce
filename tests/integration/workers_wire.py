#!/usr/bin/env python3
"""workers_wire.py - `corral exp submit` on a real controller starts workers through a
real agent, end to end on loopback: robots registered through the CLI; one process
per placed worker with the flags of its placement (the robot as registered among
them); `exp status --json` running, with the learner's counters its agent
forwarded from its status file; a worker killed with SIGKILL is restarted; a
controller killed with SIGKILL and restarted adopts the running workers (no
duplicates), and so does a restarted agent; `exp stop` ends every worker; `exp
logs` still reads their logs through the controller afterwards. Then robots by
label (given at registration and in the agent's configuration), and submissions
that must be refused with a message saying what to change while that experiment
runs on unaffected. No process is left at the end.

The workers here are tests/integration/standin_worker.sh (through $CORRAL_WORKER_CMD),
which records its arguments and idles: this test is about the wiring between
controller, agent and supervisor. The real worker roles are tested elsewhere."""
import json
import os
import signal
import time

from itest import CORRAL, SRC, Test, free_port

STANDIN = os.path.abspath(os.path.join(SRC, "tests", "integration", "standin_worker.sh"))
SPEC = os.path.join(SRC, "configs", "experiments", "reach-sac.yaml")
# One process per robot (its env, the actor inside) and one learner (the buffer inside).
WORKERS = {("env", 0), ("env", 1), ("learner", 0)}
HOSTED = {("actor", 0): ("env", 0), ("actor", 1): ("env", 1), ("buffer", 0): ("learner", 0)}

TEST = Test("integration.workers_wire", "corral-wire.")
T, procs, check, start, cli = TEST.dir, TEST.procs, TEST.check, TEST.start, TEST.cli


PORT, AGENT_PORT = free_port(), free_port()
ADDR = "127.0.0.1:%d" % PORT
TEST.env.update(CORRAL_CONTROLLER=ADDR, WIRE_DIR=T, CORRAL_WORKER_CMD=STANDIN)


def starts():
    """[(pid, role, index, argv)] from the stand-in's record, in order."""
    out = []
    try:
        with open(os.path.join(T, "starts.log")) as f:
            for line in f:
                words = line.split()
                argv = words[1:]
                opt = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
                out.append((int(words[0]), opt.get("--role"), int(opt.get("--index", -1)), argv, opt))
    except FileNotFoundError:
        pass
    return out


def alive(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return STANDIN.encode() in f.read()
    except OSError:
        return False


def status():
    p = cli("exp", "status", "reach-sac", "--json")
    return json.loads(p.stdout) if p.returncode == 0 else None


def wait(what, fn, limit=15.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()


def running_pids():
    """{(role, index): pid} of the workers alive now, from the record."""
    live = {}
    for pid, role, idx, _, _ in starts():
        if alive(pid):
            live.setdefault((role, idx), []).append(pid)
    return live


def main():
    start("controller", "controller", "--listen", ADDR, "--state", os.path.join(T, "ctl"))
    agent = ["agent", "--name", "n1", "--state", os.path.join(T, "a1"), "--no-gpus",
             "--advertise", "127.0.0.1:%d" % AGENT_PORT, "--robot", "arm3:mujoco:reach2d",
             "--robot-label", "arm3:site=a"]
    start("agent", *agent)
    wait("agent up", lambda: "n1" in cli("node", "list").stdout)
    for r, site in (("arm1", "a"), ("arm2", "b")):
        p = cli("robot", "register", r, "--driver", "mujoco", "--model", "reach2d", "--node", "n1", "--set", "seed=7",
                "--label", "site=" + site, "--label", "table")
        check("robot register %s" % r, p.returncode == 0, p.stderr)
    robots = {r["name"]: r for r in json.loads(cli("robot", "list", "--json").stdout or "[]")}
    check("labels from registration and from the agent's configuration",
          robots.get("arm1", {}).get("labels") == ["site=a", "table"] and robots.get("arm3", {}).get("labels") == ["site=a"],
          str(robots))
    p = cli("robot", "register", "arm9", "--driver", "mujoco", "--label", "bad label")
    check("a label with a space is refused", p.returncode == 1 and "label 'bad label'" in p.stderr, p.stderr)
    p = cli("exp", "submit", SPEC)
    check("exp submit", p.returncode == 0, p.stdout + p.stderr)

    # One process per placed worker, with the flags of its placement.
    ok = wait("three starts", lambda: len(starts()) >= 3)
    rec = starts()
    check("one process per placed worker", ok and {(r, i) for _, r, i, _, _ in rec} == WORKERS and len(rec) == 3,
          str([(r, i) for _, r, i, _, _ in rec]))
    for pid, role, idx, argv, opt in rec:
        robot = "arm%d" % (idx + 1) if role in ("env", "actor") else None
        good = (argv[0] == "worker" and opt.get("--experiment") == "reach-sac" and opt.get("--generation") == "1"
                and opt.get("--robot") == robot and opt.get("--buffer") == "127.0.0.1:%d" % AGENT_PORT
                and os.path.isabs(opt.get("--spec", "")) and os.path.isfile(opt.get("--spec", ""))
                and (robot is None or (opt.get("--robot-driver") == "mujoco" and opt.get("--robot-set") == "seed=7")))
        check("flags of %s-%d" % (role, idx), good, " ".join(argv))
    st = wait("running", lambda: (lambda s: s if s and s["state"] == "running" else None)(status()))
    check("exp status --json: running", st is not None and all(w["state"] == "running" for w in st["workers"]),
          json.dumps(st))
    st = wait("progress", lambda: (lambda s: s if s and s["updates"] == 4242 else None)(status()))
    check("the learner's counters reach exp status through its agent",
          st is not None and st["env_steps"] == 777 and st["policy_version"] == 42 and st["checkpoint_updates"] == 4000
          and st["dir"] == os.path.join(T, "a1", "experiments", "reach-sac"), json.dumps(status()))
    pids = {(w["role"], w["index"]): w["pid"] for w in (st or {}).get("workers", [])}
    procpids = {(r, i): p for p, r, i, _, _ in rec}
    check("status pids are the processes",
          pids == {**procpids, **{k: procpids.get(h) for k, h in HOSTED.items()}}, str(pids))

    # SIGKILL one worker: the supervisor restarts it and the controller hears of it.
    victim = pids.get(("env", 0), 0)
    os.kill(victim, signal.SIGKILL)
    ok = wait("restart", lambda: len(starts()) == 4 and starts()[-1][1:3] == ("env", 0) and alive(starts()[-1][0]))
    check("killed worker restarted", ok)
    st = wait("restarts", lambda: (lambda s: s if s and any(w["restarts"] == 1 for w in s["workers"]) else None)(status()))
    check("status shows the restart", st is not None and st["state"] == "running", json.dumps(st))

    # The controller killed and restarted: the agent's WorkerList is adopted, nothing started twice.
    before = running_pids()
    procs["controller"].kill()
    procs["controller"].wait()
    start("controller", "controller", "--listen", ADDR, "--state", os.path.join(T, "ctl"))
    st = wait("back", lambda: (lambda s: s if s and s["state"] == "running" else None)(status()))
    time.sleep(2.0)  # room for a wrong START to show
    check("controller restart: still running", st is not None, json.dumps(st))
    check("controller restart: workers adopted, none duplicated",
          len(starts()) == 4 and running_pids() == before, "%s vs %s" % (running_pids(), before))

    # The agent restarted: its new supervisor adopts the same processes.
    procs["agent"].send_signal(signal.SIGTERM)
    procs["agent"].wait()
    check("agent stop leaves workers running", running_pids() == before)
    start("agent", *agent)
    time.sleep(3.0)
    st = status()
    check("agent restart: workers adopted, none duplicated",
          len(starts()) == 4 and running_pids() == before and st and st["state"] == "running",
          "%s vs %s, %s" % (running_pids(), before, st and st["state"]))

    # exp stop: every worker ends.
    p = cli("exp", "stop", "reach-sac")
    check("exp stop", p.returncode == 0, p.stderr)
    st = wait("stopped", lambda: (lambda s: s if s and s["state"] == "stopped" else None)(status()))
    check("experiment stopped", st is not None, json.dumps(status()))
    check("no worker process left", wait("gone", lambda: not running_pids(), 10.0), str(running_pids()))

    # exp logs through the controller, from the node that holds them, after the placement is gone.
    p = cli("exp", "logs", "reach-sac", "--role", "learner")
    check("exp logs --role learner", p.returncode == 0 and "==> learner-0 on n1 <==" in p.stdout
          and "standin learner-0 of reach-sac (run 1)" in p.stdout, p.stdout + p.stderr)
    p = cli("exp", "logs", "reach-sac")
    check("exp logs: every worker, the restarted one's runs both", p.returncode == 0
          and p.stdout.count("standin env-0 of reach-sac") == 2 and "standin env-1" in p.stdout
          and "==> actor-" not in p.stdout, p.stdout + p.stderr)
    p = cli("exp", "logs", "ghost")
    check("exp logs of no such experiment: exit 1", p.returncode == 1 and "no experiment named ghost" in p.stderr,
          p.stderr)

    # Robots by label: site=a is arm1 (registered so) and arm3 (its agent says so).
    n0 = len(starts())
    p = cli("exp", "submit", SPEC, "--set", "name=lab-a", "--set", "robots.labels=[site=a]")
    check("exp submit with robots.labels", p.returncode == 0, p.stdout + p.stderr)
    st = wait("lab-a running", lambda: (lambda s: s if s and s["state"] == "running" else None)(
        (lambda p: json.loads(p.stdout) if p.returncode == 0 else None)(cli("exp", "status", "lab-a", "--json"))))
    check("the robots with the label were taken",
          st is not None and sorted(w["robot"] for w in st["workers"] if w["role"] == "env") == ["arm1", "arm3"],
          json.dumps(st))
    lab_pids = running_pids()
    # Refused at submit, each with what to change; lab-a runs on untouched.
    BY_NAME = ["--set", "robots.count=0", "--set", "robots.driver=", "--set", "robots.model="]
    refusals = [
        (["--set", "name=b1", "--set", "robots.labels=[site=zzz]"], "label=site=zzz"),
        (["--set", "name=b2"] + BY_NAME + ["--set", "robots.names=[arm1]"], "robot arm1 is in use by experiment lab-a"),
        (["--set", "name=b3"] + BY_NAME + ["--set", "robots.names=[arm7]"], "arm7"),
        (["--set", "name=b4", "--set", "robots.labels=[site=b]", "--set", "robots.count=1", "--set", "learner.gpus=1"], "GPU"),
        (["--set", "name=b5", "--set", "robots.labels=[site=b]", "--set", "robots.count=1",
          "--set", "algorithm.type=/nonexistent/algo.so"], "algorithm.type"),
        (["--set", "name=b6", "--set", "stop.success_rate=2"], "stop.success_rate"),
        (["--set", "name=lab-a"], "already exists"),
    ]
    for sets, want in refusals:
        p = cli("exp", "submit", SPEC, *sets)
        check("refused: %s" % " ".join(sets[1::2]), p.returncode == 1 and want in p.stderr + p.stdout,
              "rc %d: %s" % (p.returncode, p.stderr + p.stdout))
    st = (lambda p: json.loads(p.stdout) if p.returncode == 0 else None)(cli("exp", "status", "lab-a", "--json"))
    check("lab-a unaffected by the refusals", st is not None and st["state"] == "running" and running_pids() == lab_pids
          and len(starts()) == n0 + 3, "%s %s" % (st and st["state"], running_pids()))
    names = [e["name"] for e in json.loads(cli("exp", "list", "--json").stdout or "[]")]
    check("no refused experiment was recorded", sorted(names) == ["lab-a", "reach-sac"], str(names))
    p = cli("exp", "stop", "lab-a")
    check("lab-a stopped", p.returncode == 0 and wait("gone", lambda: not running_pids(), 10.0), p.stderr)


try:
    main()
except Exception as e:  # a crash of the test itself is a failure, with its reason
    check("test ran to the end", False, repr(e))
finally:
    TEST.stop_daemons()
    # Whatever the outcome, end the workers the agent left (as a demo's teardown would).
    cli("agent", "--stop-workers", "--state", os.path.join(T, "a1"))
    left = running_pids()
    for pids in left.values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    check("nothing left after teardown", not left, str(left))
    TEST.finish(tail=30)
