#!/usr/bin/env python3
"""edge_tunnel.py - an experiment whose robot sits on a node behind NAT, end to end
on loopback with real processes: a controller serving mutual TLS with an admin and a
join token, an agent "cloud" that peers can dial (--advertise) and an agent "edge"
that accepts no inbound connection (--no-inbound), with a MuJoCo reach2d arm; each
agent has its own certificate and the join token, which its workers dial the
controller's relay with. The learner is placed on cloud (placement.learner_node),
the env worker on edge (its robot's node), both started by their agents, which
tell them the controller's address as their channels' relay.

The env worker sends its transitions to the learner by the direct route (cloud
takes inbound connections); the learner's acknowledgements and weights reach the
env worker only through the tunnel relayed by the controller. Checked: the
registry records edge as accepting no inbound connection; both workers were told
the relay (their command lines, the env's log); the learner's log says the
acknowledgements and weights go by the tunnel route; the env's policy version
grows (weights arrived); the controller, killed with SIGKILL mid-run and started
again, takes its relay back and the run goes on (the tunnel reconnects) to `done`;
buffer.db on cloud holds every transition the env saw acknowledged, exactly once.
No process is left at the end."""
import json
import os
import sqlite3
import subprocess
import time

from itest import CORRAL, SRC, Test, free_port, wait

SPEC = os.path.join(SRC, "configs", "experiments", "reach-sac.yaml")
NAME = "edge-sac"
UPDATES = 3000
# One robot on edge, paced at 5x real time (100 steps/s): the run lasts about half a
# minute, long enough to restart the controller inside it.
SETS = ["name=" + NAME, "robots.count=1", "placement.learner_node=cloud", "stop.updates=%d" % UPDATES,
        "algorithm.warmup_steps=300", "checkpoint.every_updates=1000", "stop.eval_every_updates=100000",
        "stop.wall_time=4m"]

TEST = Test("integration.edge_tunnel", "corral-edge.")
T, procs, check, start, cli = TEST.dir, TEST.procs, TEST.check, TEST.start, TEST.cli
CLOUD, EDGE = os.path.join(T, "cloud"), os.path.join(T, "edge")
CLOUD_DIR = os.path.join(CLOUD, "experiments", NAME)
EDGE_DIR = os.path.join(EDGE, "experiments", NAME)


ADDR = "127.0.0.1:%d" % free_port()
CLOUD_ADDR = "127.0.0.1:%d" % free_port()
PKI = os.path.join(T, "pki")
ADMIN_TOK, JOIN_TOK = os.path.join(T, "admin.tok"), os.path.join(T, "join.tok")
for path, secret in ((ADMIN_TOK, "admin-%s" % os.urandom(8).hex()), (JOIN_TOK, "join-%s" % os.urandom(8).hex())):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(secret + "\n")
ENV = TEST.env
ENV.update(CORRAL_CONTROLLER=ADDR, CORRAL_TLS_DIR=os.path.join(PKI, "client"),
           CORRAL_TOKEN_FILE=ADMIN_TOK)
CONTROLLER = ["controller", "--listen", ADDR, "--state", os.path.join(T, "ctl"), "--tls", PKI,
              "--admin-token-file", ADMIN_TOK, "--join-token-file", JOIN_TOK]
SECURE = ["--tls", PKI, "--join-token-file", JOIN_TOK]


def status():
    try:
        p = cli("exp", "status", NAME, "--json", timeout=10)
        return json.loads(p.stdout) if p.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def worker_pids(st):
    return {(w["role"], w["index"]): w["pid"] for w in st["workers"] if w["role"] in ("env", "learner")} if st else {}


def alive(pid):
    return b"worker" in cmdline(pid)


def flag(argv, name):
    name = name.encode()
    return argv[argv.index(name) + 1].decode() if name in argv[:-1] else None


def main():
    p = cli("certs", PKI, "--clients", "cloud,edge,client")
    if not check("corral certs: a CA, the controller's and each node's certificate", p.returncode == 0, p.stderr):
        return
    start("controller", *CONTROLLER)
    start("cloud", "agent", "--name", "cloud", "--state", CLOUD, "--no-gpus", "--advertise", CLOUD_ADDR, *SECURE)
    start("edge", "agent", "--name", "edge", "--state", EDGE, "--no-gpus", "--no-inbound", *SECURE)
    nodes = wait(lambda: (lambda n: n if len(n) == 2 else None)(
        json.loads(cli("node", "list", "--json").stdout or "[]")), 15) or []
    inbound = {n["name"]: n.get("accepts_inbound") for n in nodes}
    check("the registry: cloud accepts inbound connections, edge does not",
          inbound == {"cloud": True, "edge": False}, str(nodes))
    p = cli("robot", "register", "arm1", "--driver", "mujoco", "--model", "reach2d", "--node", "edge",
            "--set", "realtime=true", "--set", "speed=5")
    check("robot arm1 registered on edge", p.returncode == 0, p.stderr)
    p = subprocess.run([CORRAL, "agent", "--name", "x", "--state", os.path.join(T, "x"), "--advertise",
                        "127.0.0.1:1", "--no-inbound"], capture_output=True, text=True, env=ENV, timeout=10)
    check("--advertise with --no-inbound is refused", p.returncode != 0 and "contradict" in p.stderr, p.stderr)

    p = cli("exp", "submit", SPEC, *[a for s in SETS for a in ("--set", s)])
    if not check("exp submit", p.returncode == 0, p.stdout + p.stderr):
        return
    st = wait(lambda: (lambda s: s if s and s["state"] == "running" and len(worker_pids(s)) == 2
                       and s["updates"] > 0 else None)(status()), 60)
    if not check("running: learner on cloud, env on edge, training", st is not None, json.dumps(status())):
        return
    where = {(w["role"], w["index"]): w["node"] for w in st["workers"]}
    check("placement: learner on cloud, env on edge",
          where.get(("learner", 0)) == "cloud" and where.get(("env", 0)) == "edge", str(where))
    pids = worker_pids(st)
    largv, eargv = cmdline(pids[("learner", 0)]), cmdline(pids[("env", 0)])
    check("the learner is told its node, the controller as relay with cloud's certificate, where peers dial it",
          flag(largv, "--node") == "cloud" and flag(largv, "--controller") == ADDR
          and flag(largv, "--rpc-security") == "mtls" and flag(largv, "--rpc-cert-dir") == os.path.join(PKI, "cloud")
          and flag(largv, "--advertise") == "127.0.0.1" and b"--no-inbound" not in largv, str(largv))
    check("the env worker is told its node, the controller as relay with edge's certificate, no inbound",
          flag(eargv, "--node") == "edge" and flag(eargv, "--controller") == ADDR
          and flag(eargv, "--rpc-security") == "mtls" and flag(eargv, "--rpc-cert-dir") == os.path.join(PKI, "edge")
          and b"--no-inbound" in eargv, str(eargv))
    with open(JOIN_TOK) as f:
        join = f.read().strip().encode()
    check("the join token is in no worker's command line", join not in b" ".join(largv + eargv))
    elog = os.path.join(EDGE_DIR, "logs", "env-0.log")
    llog = os.path.join(CLOUD_DIR, "logs", "learner-0.log")
    check("env log: the learner's traffic comes by the tunnel route",
          wait(lambda: "comes by the tunnel route through the relay at " + ADDR in read_text(elog), 10),
          read_text(elog)[-800:])
    check("env log: its transitions go to the learner by the direct route",
          wait(lambda: "connected to the learner on remote-learner (direct route)" in read_text(elog), 10),
          read_text(elog)[-800:])
    check("learner log: acknowledgements and weights to edge by the tunnel route",
          wait(lambda: "on edge" in read_text(llog) and "weights by the tunnel route" in read_text(llog), 10),
          read_text(llog)[-800:])
    env = wait(lambda: (lambda e: e if e and e["policy_version"] > 0 and e["acked"] > 0 else None)(
        read_json(os.path.join(EDGE_DIR, "status", "env-0.json"))), 60)
    check("weights reached the env worker through the tunnel (policy version > 0), ACKs too", env is not None,
          json.dumps(read_json(os.path.join(EDGE_DIR, "status", "env-0.json"))))

    # SIGKILL the controller mid-run (it hosts the relay): the tunnel must come back.
    learner = read_json(os.path.join(CLOUD_DIR, "status", "learner.json")) or {}
    if learner.get("updates", 0) < UPDATES * 0.8:
        procs["controller"].kill()
        procs["controller"].wait()
        e0 = read_json(os.path.join(EDGE_DIR, "status", "env-0.json")) or {}
        time.sleep(1.0)
        start("controller", *CONTROLLER)
        ok = wait(lambda: (lambda e: e if e and e["acked"] > e0.get("acked", 0) + 200
                           and e["policy_version"] > e0.get("policy_version", 0) else None)(
            read_json(os.path.join(EDGE_DIR, "status", "env-0.json"))), 60)
        check("controller SIGKILLed and restarted: ACKs and weights flow through the tunnel again", ok is not None,
              "before %s, now %s" % (json.dumps(e0), json.dumps(read_json(os.path.join(EDGE_DIR, "status",
                                                                                        "env-0.json")))))
    else:
        print("       (the run was nearly over: the controller restart was skipped)")

    st = wait(lambda: (lambda s: s if s and s["state"] in ("done", "failed", "stopped") else None)(status()), 150)
    check("experiment done", st is not None and st["state"] == "done", json.dumps(status()))
    if not st:
        return
    check("no worker process left", wait(lambda: not any(alive(p) for p in pids.values()), 15),
          str([p for p in pids.values() if alive(p)]))
    e = read_json(os.path.join(EDGE_DIR, "status", "env-0.json")) or {}
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(CLOUD_DIR, "buffer.db"), uri=True)
    n, lo, hi, d = db.execute("SELECT count(*), min(seq), max(seq), count(DISTINCT seq) FROM steps "
                              "WHERE producer = ? AND seq <= ?", (e.get("producer", -1), e.get("acked", 0))).fetchone()
    dup = db.execute("SELECT count(*) FROM (SELECT producer, seq FROM steps GROUP BY producer, seq "
                     "HAVING count(*) > 1)").fetchone()[0]
    acked = e.get("acked", 0)
    check("buffer.db on cloud: each of the %d transitions edge saw acknowledged, exactly once" % acked,
          acked > UPDATES * 0.5 and (n, lo, hi, d) == (acked, 1, acked, acked) and dup == 0,
          "acked %s: %s rows (%s..%s, %s distinct), %d duplicates" % (acked, n, lo, hi, d, dup))


try:
    main()
except Exception as e:  # a crash of the test itself is a failure, with its reason
    check("test ran to the end", False, repr(e))
finally:
    TEST.stop_daemons()
    for state in (CLOUD, EDGE):
        cli("agent", "--stop-workers", "--state", state)
    TEST.finish([os.path.join(CLOUD_DIR, "logs"), os.path.join(EDGE_DIR, "logs")])
