#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fault-injection matrix over real processes: `mfrdma listen` and `mfrdma migrate` on
loopback tcp (or rdma with --transport rdma --address, e.g. in the soft-RoCE VM), one of them hit by a fault when the source's progress shows a given point
(setup, precopy, switchover, verify):
  kill9   SIGKILL (a peer that dies),
  stop    SIGSTOP (a peer that hangs; killed afterwards),
  cancel  SIGINT (the tool cancels the migration).
The survivor must exit with status 1 and 'migration failed: <cause>' within its --timeout
plus one second of the fault; a surviving source must report its idle guest's RAM
unchanged (digest before and after). A migration that ended before the fault landed counts
as 'missed'; a listener whose source was lost before its session was accepted goes on
listening (documented) and must then answer SIGINT: 'listening'. Prints one table (fault x side x point x channels: runs, clean ends, missed,
worst time to error) and exits 1 on any unclean end.
Usage: tests/faults/matrix.py [--tool build/tools/mfrdma] [--runs N] [--sample K] [--seed S]
       [--transport tcp|rdma --address ADDR]
"""
import argparse
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

TOKEN = "00112233445566778899aabbccddeeff"
FAULTS = {"kill9": signal.SIGKILL, "stop": signal.SIGSTOP, "cancel": signal.SIGINT}
POINTS = ["setup", "precopy", "switchover", "verify"]
# the source's output line that opens each point, and how far into it the fault may land
# (random, so that setup and precopy are hit anywhere: progress lines come ~10 a second)
POINT_RE = {
    "setup": re.compile(r"^guest: "),
    "precopy": re.compile(r"^source: precopy round 1"),
    "switchover": re.compile(r"^source: switchover "),
    "verify": re.compile(r"^source: verify "),
}
POINT_DELAY_S = {"setup": 0.03, "precopy": 0.1, "switchover": 0, "verify": 0}
TIMEOUT_MS = 1000
SLACK_S = 1.0


class Proc:
    """A tool process whose stdout is read line by line (with arrival times) in a thread."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True, bufsize=1)
        self.lines = []
        self.cond = threading.Condition()
        self.err = ""
        self.t_exit = None
        threading.Thread(target=self._read, daemon=True).start()
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        self.p.wait()
        with self.cond:
            self.t_exit = time.monotonic()
            self.cond.notify_all()

    def _read_err(self):
        self.err = self.p.stderr.read()

    def wait_line(self, regex, timeout):
        """The first line matching regex, or None at exit or timeout."""
        end = time.monotonic() + timeout
        with self.cond:
            i = 0
            while True:
                for line in self.lines[i:]:
                    if regex.search(line):
                        return line
                i = len(self.lines)
                if self.t_exit is not None or time.monotonic() >= end:
                    return None
                self.cond.wait(end - time.monotonic())

    def wait_exit(self, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while self.t_exit is None and time.monotonic() < end:
                self.cond.wait(end - time.monotonic())
            return self.t_exit

    def result(self):
        """Exit status and the whole of stderr (the process has ended)."""
        rc = self.p.wait()
        self.err_reader.join(5)
        return rc, self.err

    def out(self):
        with self.cond:
            return "\n".join(self.lines)

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.kill()
        self.p.wait()


def one_run(tool, fault, side, point, channels, size, rnd, listen_uri):
    """Returns (result, seconds from fault to the survivor's exit, detail)."""
    dest = Proc([tool, "listen", listen_uri, "--token", TOKEN,
                 "--timeout", str(TIMEOUT_MS)])
    src = None
    try:
        line = dest.wait_line(re.compile(r"^listening: "), 10)
        if not line:
            return "unclean", 0, "listen did not start: " + dest.err.strip()
        uri = line.split(" ", 1)[1]
        src = Proc([tool, "migrate", uri, "--token", TOKEN, "--size", size, "--channels",
                    str(channels), "--dirty-rate", "0", "--timeout", str(TIMEOUT_MS)])
        if not src.wait_line(POINT_RE[point], 30):
            return "missed", 0, "point not reached"
        victim, survivor = (src, dest) if side == "source" else (dest, src)
        time.sleep(rnd.uniform(0, POINT_DELAY_S[point]))
        t_fault = time.monotonic()
        victim.p.send_signal(FAULTS[fault])
        t_exit = survivor.wait_exit(TIMEOUT_MS / 1000 + SLACK_S + 2)
        if t_exit is None and survivor is dest and point == "setup":
            # A source lost before its session was accepted is one failed connection attempt:
            # the listener refuses it and goes on waiting (documented). It must still answer
            # Ctrl-C at once.
            dest.p.send_signal(signal.SIGINT)
            if dest.wait_exit(TIMEOUT_MS / 1000 + SLACK_S) is None:
                return "unclean", 99, "listener ignored SIGINT"
            rc, err = dest.result()
            if rc != 1 or "cancelled" not in err:
                return "unclean", 99, "listener exited %d: %s" % (rc, err)
            return "listening", 0, "went on listening, then cancelled"
        if t_exit is None:
            return "unclean", 99, "survivor (%s) still running" % (
                "destination" if side == "source" else "source")
        took = t_exit - t_fault
        if fault == "stop":
            victim.kill()
        else:
            victim.wait_exit(10)
        rc, err = survivor.result()
        if fault == "cancel" and side == "source":
            # the cancelled side itself must end cleanly too
            vrc, verr = victim.result()
            if vrc != 1 or "migration failed: " not in verr:
                return "unclean", took, "cancelled source exited %s" % victim.p.returncode
        if rc == 0:
            return "missed", took, "migration completed before the fault"
        if rc != 1:
            return "unclean", took, "survivor exited %d: %s" % (rc, err.strip()[-300:])
        m = re.search(r"migration failed: (.*)", err)
        if not m:
            return "unclean", took, "no 'migration failed:' message: " + err[-300:]
        if took > TIMEOUT_MS / 1000 + SLACK_S:
            return "unclean", took, "error after %.2f s: %s" % (took, m.group(1))
        if survivor is src and "source RAM: unchanged" not in src.out():
            return "unclean", took, "source RAM not reported unchanged"
        return "clean", took, m.group(1)
    finally:
        for p in (src, dest):
            if p:
                p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", default="build/tools/mfrdma")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell")
    ap.add_argument("--sample", type=int, default=0, help="only K random cells (CI)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--size", default="128M")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "rdma"])
    ap.add_argument("--address", default="127.0.0.1",
                    help="listen address (rdma: the device's, e.g. $MFR_TEST_RDMA_ADDR in the VM)")
    a = ap.parse_args()
    listen_uri = "%s:%s:0" % (a.transport, a.address)
    rnd = random.Random(a.seed)
    cells = list(itertools.product(FAULTS, ["source", "destination"], POINTS, [1, 8]))
    if a.sample:
        cells = rnd.sample(cells, a.sample)
    print("fault matrix: %s, %d cells x %d runs, seed %d, timeout %d ms" % (
        a.transport, len(cells), a.runs, a.seed, TIMEOUT_MS))
    t0 = time.monotonic()
    rows, bad = [], 0
    for fault, side, point, ch in cells:
        n = clean = missed = listening = 0
        worst = 0.0
        for _ in range(a.runs):
            res, took, detail = one_run(a.tool, fault, side, point, ch, a.size, rnd, listen_uri)
            n += 1
            if res == "clean":
                clean += 1
                worst = max(worst, took)
            elif res == "missed":
                missed += 1
            elif res == "listening":
                listening += 1
            else:
                bad += 1
                print("UNCLEAN %s %s at %s, %d channels: %s" % (fault, side, point, ch, detail))
            if a.verbose:
                print("  %s %s %s %d: %s %.2f s %s" % (fault, side, point, ch, res, took, detail))
        rows.append((fault, side, point, ch, n, clean, listening, missed, worst))
    print("| fault | hit side | point | channels | runs | clean ends | went on listening | missed "
          "| worst s to error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %s | %s | %d | %d | %d | %d | %d | %.2f |" % r)
    total = sum(r[4] for r in rows)
    print("fault matrix: %d runs, %d clean, %d went on listening, %d missed, %d unclean in %.0f s"
          % (total, sum(r[5] for r in rows), sum(r[6] for r in rows), sum(r[7] for r in rows),
             bad, time.monotonic() - t0))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
