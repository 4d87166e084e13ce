"""itest.py - what the Python integration tests share: where the corral binary and
the sources are, a free loopback port, checks counted and printed, daemons started
with their output in the test's directory, CLI calls, polling, and the ending:
every daemon stopped, the CORRAL-RESULT line run-tests.sh reads, the logs shown
when a check failed (or CORRAL_KEEP_TMP is set) and the directory removed
otherwise."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CORRAL = os.environ.get("CORRAL") or os.path.join(os.environ.get("CORRAL_BUILD_DIR", "build"), "corral")
SRC = os.environ.get("CORRAL_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(fn, limit):
    """fn's first true value within limit seconds, else its last value."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return fn()


class Test:
    def __init__(self, suite, prefix):
        self.suite = suite
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.env = dict(os.environ)
        self.procs = {}
        self.passed = self.failed = 0
        self.t0 = time.monotonic()

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print("  ok   %s (%.0fs)" % (name, time.monotonic() - self.t0), flush=True)
        else:
            self.failed += 1
            print("  FAIL %s %s" % (name, detail), flush=True)
        return cond

    def start(self, name, *args):
        """Starts `corral args...` as daemon `name`, its output in name.log."""
        log = open(os.path.join(self.dir, name + ".log"), "ab")
        self.procs[name] = subprocess.Popen([CORRAL, *args], stdout=log, stderr=log, env=self.env)

    def kill9(self, name):
        self.procs[name].kill()
        self.procs[name].wait()

    def cli(self, *args, timeout=30):
        return subprocess.run([CORRAL, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def stop_daemons(self):
        """SIGTERM to every daemon still running, SIGKILL after 10 s."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def finish(self, log_dirs=(), tail=25):
        """Prints the result, shows or removes the logs, and exits."""
        print("CORRAL-RESULT suite=%s passed=%d failed=%d skipped=0 (%.0f s)"
              % (self.suite, self.passed, self.failed, time.monotonic() - self.t0))
        if self.failed or os.environ.get("CORRAL_KEEP_TMP"):
            print("logs kept in " + self.dir)
            for d in (self.dir, *log_dirs):
                for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                    if f.endswith(".log"):
                        print("--- " + os.path.join(d, f))
                        with open(os.path.join(d, f), errors="replace") as fh:
                            print("".join(fh.readlines()[-tail:]))
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        sys.exit(1 if self.failed else 0)
