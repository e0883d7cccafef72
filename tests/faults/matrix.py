#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fault-injection matrix over real processes: `mfrdma listen` and `mfrdma migrate` (tcp on the
host, rdma with --transport rdma --address in the soft-RoCE VM), one of them hit by a fault
when the source's progress shows a point (setup, precopy, switchover, verify: the rounds of an
idle guest are precopy round 1 and the switchover round). Faults:
  kill9   SIGKILL of one side (a peer that dies)
  stop    SIGSTOP of one side (a peer that hangs; killed afterwards)
  cancel  SIGINT of one side (the tool cancels its migration)
  link    the link goes down for 0.2 s to 2.5 x timeout, then up (tcp: a veth pair between
          two network namespaces; rdma: eth0 under rxe0 in the VM, re-created afterwards);
          both survive
  qperr   the source's channel 0 fails in the transport (rdma: a bad rkey, so an error
          completion and both QPs in the error state; tcp: EIO): SIGUSR2 to the tool built
          with its fault seams (--seams-tool, tests/faults/mfrdma-seams)
  slow    a throttled destination: SIGSTOP/SIGCONT bursts (stopped 50 ms to 0.4 x timeout,
          running 50-150 ms) from the point to the end: it completes, or (a keepalive that
          did not get out in a running slot, under load) fails with a named error in time
  alloc   the destination cannot allocate guest RAM: RLIMIT_AS set below what the blocks need
A clean end: every survivor exits 1 with 'migration failed: <cause>' within --timeout + 1 s of
the fault (link, slow: or the migration completes, verified; where both sides survive, the
destination may have completed while the source never heard its answer, the last message
of any protocol being losable, but never the other way round); a surviving source reports its
idle guest's RAM unchanged (digest before and after); and every process that ended its
session (the tools' MFR_TOOL_TEST_SEAMS hold, see tools/mfrdma.c) has no thread left beyond its
start, VmPin back at its start value, and (rdma) no MR and no QP left in `rdma resource`.
'missed': the migration ended before the fault landed. 'went on listening': a listener whose
source was lost before its session was accepted refuses it and waits on (documented); it
must then answer SIGINT. One table (fault x side x point x channels: runs, clean ends, of
which completed, went on listening, missed, worst time to error); exit 1 on an unclean end.
Usage: tests/faults/matrix.py [--tool build/tools/mfrdma]
       [--seams-tool build/tests/faults/mfrdma-seams] [--runs N] [--faults a,b]
       [--sample K] [--points p,q] [--channels 1,8] [--seed S]
       [--transport tcp|rdma --address ADDR] [--json OUT]
       tests/faults/matrix.py --table A.json [B.json...]   (one table of several runs; rows
       of the same cell are added up)
"""
import argparse
import itertools
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

TOKEN = "00112233445566778899aabbccddeeff"
SIGNALS = {"kill9": signal.SIGKILL, "stop": signal.SIGSTOP, "cancel": signal.SIGINT}
POINTS = ["setup", "precopy", "switchover", "verify"]
# fault -> (sides, points)
FAULTS = {
    "kill9": (["source", "destination"], POINTS),
    "stop": (["source", "destination"], POINTS),
    "cancel": (["source", "destination"], POINTS),
    "link": (["link"], ["precopy", "switchover", "verify"]),
    "qperr": (["source"], ["precopy", "switchover"]),
    "slow": (["destination"], ["precopy"]),
    "alloc": (["destination"], ["setup"]),
}
# the source's output line that opens each point, and how far into it the fault may land
POINT_RE = {
    "setup": re.compile(r"^guest: "),
    # the first precopy line comes as setup ends (round 0: a plain progress line shows once a
    # second, so round 1's own line shows only when the round lasts longer than that)
    "precopy": re.compile(r"^source: precopy "),
    "switchover": re.compile(r"^source: switchover "),
    "verify": re.compile(r"^source: verify "),
}
# The source holds each new phase this long (MFR_TOOL_PAUSE_MS), and the fault lands
# uniformly in [0, POINT_DELAY_S]: inside the held phase or just after it. Without the hold
# an idle guest's switchover and verification are over before a signal sent on seeing their
# line arrives (the 'missed' runs of the first rdma sample).
# rdma runs in the VM under TCG, where everything (python's reaction included) is ~10x slower.
PAUSE_MS = {"tcp": 150, "rdma": 600}
POINT_DELAY_S = {"setup": 0.03, "precopy": 0.5, "switchover": 0.2, "verify": 0.2}
DELAY_SCALE = {"tcp": 1, "rdma": 2.5}
# --timeout of both tools; rdma in the VM: 8 channels' CM exchanges under TCG on a loaded host
# once took longer than 1 s (setup failed in time, with a named error, before any fault)
TIMEOUT_MS = {"tcp": 1000, "rdma": 3000}
SLACK_S = 1.0
NETNS = ("mfrfa-s-%d" % os.getpid(), "mfrfa-d-%d" % os.getpid())
VETH_ADDR = ("10.199.77.1", "10.199.77.2")


def proc_status(pid):
    """Threads and VmPin (kB) of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            text = f.read()
    except OSError:
        return None
    get = lambda k: int(re.search(r"^%s:\s+(\d+)" % k, text, re.M).group(1))
    return {"threads": get("Threads"), "vmpin": get("VmPin"), "vmsize": get("VmSize")}


def proc_state(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            state = re.search(r"^State:\s+(.*)", f.read(), re.M).group(1)
        with open("/proc/%d/wchan" % pid) as f:
            return "%s in %s" % (state, f.read())
    except OSError as e:
        return str(e)


def rdma_objects(pid):
    """MRs and QPs the rdma tool lists for pid."""
    n = {}
    for kind in ("mr", "qp"):
        try:
            out = subprocess.run(["rdma", "resource", "show", kind], capture_output=True,
                                 text=True, timeout=30).stdout
        except subprocess.TimeoutExpired:
            return None
        n[kind] = len(re.findall(r"\bpid %d\b" % pid, out))
    return n


class Proc:
    """A tool process whose stdout is read line by line in a thread. Its session has ended
    at its 'held: exit status N' line (or at its exit, if killed)."""

    def __init__(self, argv, env, preexec=None):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.PIPE, text=True, bufsize=1, env=env,
                                  preexec_fn=preexec)
        self.lines = []
        self.cond = threading.Condition()
        self.err = ""
        self.t_end = None
        self.held_rc = None
        self.start = None
        threading.Thread(target=self._read, daemon=True).start()
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.err_reader.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cond:
                line = line.rstrip("\n")
                self.lines.append(line)
                m = re.match(r"^held: exit status (\d+)", line)
                if m:
                    self.held_rc = int(m.group(1))
                    self.t_end = time.monotonic()
                self.cond.notify_all()
        self.p.wait()
        with self.cond:
            if self.t_end is None:
                self.t_end = time.monotonic()
            self.cond.notify_all()

    def _read_err(self):
        self.err = self.p.stderr.read()

    def note_start(self):
        self.start = proc_status(self.p.pid)

    def wait_line(self, regex, timeout):
        """The first line matching regex, or None at the end or timeout."""
        end = time.monotonic() + timeout
        with self.cond:
            i = 0
            while True:
                for line in self.lines[i:]:
                    if regex.search(line):
                        return line
                i = len(self.lines)
                if self.t_end is not None or time.monotonic() >= end:
                    return None
                self.cond.wait(end - time.monotonic())

    def wait_end(self, timeout):
        end = time.monotonic() + timeout
        with self.cond:
            while self.t_end is None and time.monotonic() < end:
                self.cond.wait(end - time.monotonic())
            return self.t_end

    def leftovers(self, rdma):
        """What a held process still has of its session: a list of complaints."""
        if self.held_rc is None or self.start is None:
            return []
        now = proc_status(self.p.pid)
        bad = []
        if now is None:
            return ["gone before its leftovers were read"]
        if now["threads"] > self.start["threads"]:
            bad.append("%d threads left (%d at start)" % (now["threads"], self.start["threads"]))
        if now["vmpin"] != self.start["vmpin"]:
            bad.append("VmPin %d kB (%d kB at start)" % (now["vmpin"], self.start["vmpin"]))
        if rdma:
            objs = rdma_objects(self.p.pid)
            if objs is None:
                return bad + ["`rdma resource show` did not answer within 30 s"]
            bad += ["%d %s%s left" % (n, k.upper(), "s" if n > 1 else "")
                    for k, n in objs.items() if n]
        return bad

    def result(self):
        """Exit status (the held one) and the whole of stderr; lets a held process exit."""
        self.release()
        rc = self.wait_dead()
        self.err_reader.join(5)
        return (self.held_rc if self.held_rc is not None else rc), self.err

    def out(self):
        with self.cond:
            return "\n".join(self.lines)

    def release(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGCONT)
            self.p.kill()
        self.wait_dead()

    def wait_dead(self):
        # a process stuck in the kernel (uninterruptible) outlives SIGKILL: say so, go on
        try:
            return self.p.wait(60)
        except subprocess.TimeoutExpired:
            print("matrix: pid %d does not die: %s" % (self.p.pid, proc_state(self.p.pid)),
                  flush=True)
            return None


class Link:
    """The link between the two sides: tcp runs the link cells across a veth pair between two
    network namespaces; rdma takes the VM's eth0 (and re-creates rxe0 afterwards)."""

    def __init__(self, transport):
        self.transport = transport
        self.ready = False
        self.why = ""

    def setup(self):
        if self.transport == "rdma":
            self.ready = bool(os.environ.get("MFR_VM_LINK_UP"))
            self.why = "" if self.ready else "no MFR_VM_LINK_UP (not in the soft-RoCE VM)"
            return self.ready
        cmds = [["ip", "netns", "add", NETNS[0]], ["ip", "netns", "add", NETNS[1]],
                ["ip", "link", "add", "mfrfa-s", "netns", NETNS[0], "type", "veth", "peer",
                 "name", "mfrfa-d", "netns", NETNS[1]]]
        for i in (0, 1):
            dev = ("mfrfa-s", "mfrfa-d")[i]
            cmds += [["ip", "-n", NETNS[i], "addr", "add", VETH_ADDR[i] + "/30", "dev", dev],
                     ["ip", "-n", NETNS[i], "link", "set", dev, "up"],
                     ["ip", "-n", NETNS[i], "link", "set", "lo", "up"]]
        for c in cmds:
            r = subprocess.run(c, capture_output=True, text=True)
            if r.returncode:
                self.why = "%s: %s" % (" ".join(c), r.stderr.strip())
                self.teardown()
                return False
        self.ready = True
        return True

    def teardown(self):
        if self.transport == "tcp":
            for ns in NETNS:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def wrap(self, argv, side):
        if self.transport == "tcp":
            return ["ip", "netns", "exec", NETNS[0 if side == "source" else 1]] + argv
        return argv

    def set(self, up):
        if self.transport == "tcp":
            c = ["ip", "-n", NETNS[1], "link", "set", "mfrfa-d", "up" if up else "down"]
        else:
            c = ["ip", "link", "set", "eth0", "up" if up else "down"]
        subprocess.run(c, check=True, timeout=30)

    def restore(self):
        """After a run: rdma needs a fresh rxe0 (rxe completes no new CM exchange after its
        netdev went down under traffic); its processes have exited by now."""
        if self.transport == "rdma":
            subprocess.run([os.environ["MFR_VM_LINK_UP"]], check=True, capture_output=True,
                           timeout=120)


class Run:
    """One run of one cell; returns (result, seconds from fault to the last end, detail)."""

    def __init__(self, a, fault, side, point, channels, rnd, link):
        self.a, self.fault, self.side, self.point = a, fault, side, point
        self.channels, self.rnd, self.link = channels, rnd, link
        self.via_link = fault == "link"
        self.tool = a.seams_tool if fault == "qperr" else a.tool
        self.addr = VETH_ADDR[1] if self.via_link and a.transport == "tcp" else a.address
        self.env = dict(os.environ, MFR_TOOL_TEST_SEAMS="1",
                        MFR_TOOL_PAUSE_MS=str(PAUSE_MS[a.transport]))
        self.dest = self.src = None
        self.timer = None
        self.mrs = None  # rdma: MRs the survivors held as the fault landed

    def argv(self, argv, side):
        return self.link.wrap(argv, side) if self.via_link else argv

    def start(self):
        a = self.a
        self.dest = Proc(self.argv([self.tool, "listen", "%s:%s:0" % (a.transport, self.addr),
                                    "--token", TOKEN, "--timeout", str(self.a.timeout)],
                                   "destination"), self.env)
        line = self.dest.wait_line(re.compile(r"^listening: "), 20)
        if not line:
            return "listen did not start: " + self.dest.result()[1].strip()[-300:]
        self.dest.note_start()
        if self.fault == "alloc":
            # below what the blocks need (at least half of them missing), above what the
            # listener has mapped already (its threads and the transport's buffers)
            limit = (self.dest.start["vmsize"] << 10) + self.rnd.randrange(
                0, parse_size(a.size) // 2)
            resource.prlimit(self.dest.p.pid, resource.RLIMIT_AS, (limit, limit))
        uri = line.split(" ", 1)[1]
        self.src = Proc(self.argv([self.tool, "migrate", uri, "--token", TOKEN, "--size", a.size,
                                   "--channels", str(self.channels), "--dirty-rate", "0",
                                   "--timeout", str(self.a.timeout)], "source"), self.env)
        if not self.src.wait_line(POINT_RE["setup"], 60):
            return "the source printed no guest line: " + self.src.result()[1].strip()[-300:]
        self.src.note_start()
        return None

    def inject(self):
        """Lands the fault; the time it landed."""
        f = self.fault
        if self.a.transport == "rdma":
            threading.Thread(target=self.count_mrs, daemon=True).start()
        time.sleep(self.rnd.uniform(0, POINT_DELAY_S[self.point] *
                                    DELAY_SCALE[self.a.transport]))
        t = time.monotonic()
        if f in SIGNALS:
            (self.src if self.side == "source" else self.dest).p.send_signal(SIGNALS[f])
        elif f == "qperr":
            self.src.p.send_signal(signal.SIGUSR2)
        elif f == "link":
            self.link.set(False)
            up_after = self.rnd.uniform(0.2, 2.5 * self.a.timeout / 1000)
            self.timer = threading.Timer(up_after, lambda: self.link.set(True))
            self.timer.start()
        elif f == "slow":
            threading.Thread(target=self.throttle, daemon=True).start()
        return t

    def count_mrs(self):
        # What the leftover check compares with: the survivors' MRs around the time the
        # fault lands (it shows the MRs the check looks for exist). In a thread: `rdma`
        # takes a good part of a second under TCG, and the fault must not wait for it.
        objs = [rdma_objects(p.p.pid) for p in self.survivors()]
        self.mrs = sum(o["mr"] for o in objs if o)

    def throttle(self):
        d = self.dest
        while d.t_end is None and self.src.t_end is None:
            try:
                d.p.send_signal(signal.SIGSTOP)
                time.sleep(self.rnd.uniform(0.05, 0.4 * self.a.timeout / 1000))
                d.p.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                return
            time.sleep(self.rnd.uniform(0.05, 0.15))

    def survivors(self):
        if self.fault in ("link", "qperr", "slow", "alloc"):
            return [self.src, self.dest]
        return [self.dest] if self.side == "source" else [self.src]

    def go(self):
        try:
            why = self.start()
            if why:
                return "unclean", 0, why
            t_fault = time.monotonic()
            if self.point != "setup" and not self.src.wait_line(POINT_RE[self.point], 60):
                if self.src.held_rc == 0 and self.dest.wait_end(5) and \
                        self.dest.held_rc == 0:
                    return "missed", 0, "point not reached: completed before it"
                rc, err = self.src.result()
                return "unclean", 0, "point not reached: source exited %s: %s; output: %s" % (
                    rc, err.strip()[-300:], self.src.out()[-300:])
            if self.fault != "alloc":
                t_fault = self.inject()
            return self.judge(t_fault)
        finally:
            for p in (self.src, self.dest):
                if p:
                    p.kill()
            if self.via_link:
                if self.timer:
                    self.timer.cancel()
                    self.timer.join()
                try:
                    self.link.set(True)
                    self.link.restore()
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                    print("matrix: restoring the link failed: %s" % e, flush=True)

    def judge(self, t_fault):
        surv = self.survivors()
        bound = self.a.timeout / 1000 + self.a.slack
        wait = bound + 2 + (30 if self.fault == "slow" else 0)
        ends = [p.wait_end(wait) for p in surv]
        if self.side == "source" and self.point == "setup" and ends[0] is None:
            return self.went_on_listening()
        if None in ends:
            # where it is (a process stuck in the kernel shows its wait channel) and what it
            # printed last (its stderr is read at its exit only)
            return "unclean", 99, "; ".join(
                "%s still running: %s, last output: %s" % (
                    p_name(self, p), proc_state(p.p.pid), (p.out() or "-").splitlines()[-1])
                for p, e in zip(surv, ends) if e is None)
        took = max(ends) - t_fault
        victim = None if self.fault not in SIGNALS else (
            self.src if self.side == "source" else self.dest)
        bad = []
        if victim and self.fault == "cancel":
            victim.wait_end(bound + 2)
        for p in surv + ([victim] if victim and self.fault == "cancel" else []):
            bad += ["%s: %s" % (p_name(self, p), b)
                    for b in p.leftovers(self.a.transport == "rdma")]
        if victim and self.fault == "stop":
            victim.kill()
        results = [(p, *p.result()) for p in surv]
        if victim and self.fault == "cancel":
            vrc, verr = victim.result()
            if (vrc == 0 and not bad and all(rc == 0 for _, rc, _ in results)
                    and "verification: OK" in victim.out()):
                # Ctrl-C landed after both sides had the verified result (seen in CI at the
                # verify point with 8 channels): nothing was left to cancel, and exit 0 says
                # the truth; a cancelled side that claims success alone stays unclean.
                return "completed", took, "completed, verified, before the cancel"
            if vrc != 1 or "migration failed: " not in verr:
                bad.append("cancelled %s exited %s" % (p_name(self, victim), vrc))
        if bad:
            return "unclean", took, "; ".join(bad)
        if all(rc == 0 for _, rc, _ in results):
            if self.fault in ("link", "slow") and "verification: OK" in self.src.out():
                return "completed", took, "completed, verified"
            return "missed", took, "migration completed before the fault"
        failed = []
        for p, rc, err in results:
            if rc == 0 and p is self.dest and len(results) > 1:
                # The destination verified and answered; the source never heard the answer
                # (the link went down under COMPLETE_REPLY): the last message of any
                # protocol can be lost. The source must then fail cleanly (below); the
                # other way round (a source that completed over a failed destination) is not
                # allowed: it would stop a guest the destination does not have.
                continue
            m = re.search(r"migration failed: (.*)", err)
            if rc != 1 or not m:
                return "unclean", took, "%s exited %d: %s" % (p_name(self, p), rc,
                                                              err.strip()[-300:])
            failed.append("%s: %s" % (p_name(self, p), m.group(1)))
        took = max(p.t_end for p, rc, _ in results if rc != 0) - t_fault
        if took > bound:
            return "unclean", took, "error after %.2f s: %s" % (took, " / ".join(failed))
        if self.src in surv and "source RAM: unchanged" not in self.src.out():
            return "unclean", took, "source RAM not reported unchanged"
        if len(failed) < len(results):
            failed.append("destination: completed, verified")
        return "clean", took, " / ".join(failed)

    def went_on_listening(self):
        # A source lost before its session was accepted is one failed connection attempt:
        # the listener refuses it and goes on waiting (documented). It must still answer
        # Ctrl-C at once.
        dest = self.dest
        if self.fault == "stop":
            self.src.kill()
        dest.p.send_signal(signal.SIGINT)
        if dest.wait_end(self.a.timeout / 1000 + self.a.slack) is None:
            return "unclean", 99, "listener ignored SIGINT"
        bad = dest.leftovers(self.a.transport == "rdma")
        rc, err = dest.result()
        if rc != 1 or "cancelled" not in err or bad:
            return "unclean", 99, "listener exited %d: %s %s" % (rc, err, "; ".join(bad))
        return "listening", 0, "went on listening, then cancelled"


def p_name(run, p):
    return "source" if p is run.src else "destination"


def parse_size(s):
    return int(s[:-1]) << {"K": 10, "M": 20, "G": 30}[s[-1].upper()] if s[-1].isalpha() \
        else int(s)


COLS = ("fault", "hit side", "point", "transport", "channels", "runs", "clean ends",
        "of which completed", "went on listening", "missed", "unclean", "worst s to error",
        "survivors' MRs at the fault (max)")


def print_table(rows):
    print("| " + " | ".join(COLS) + " |")
    print("|" + "---|" * len(COLS))
    for r in rows:
        vals = [r[c] for c in ("fault", "side", "point", "transport", "channels", "runs",
                               "clean", "completed", "listening", "missed", "unclean",
                               "worst")]
        vals.append("-" if r.get("mrs") is None else r["mrs"])
        print("| %s | %s | %s | %s | %d | %d | %d | %d | %d | %d | %d | %.2f | %s |" %
              tuple(vals))
    tot = lambda k: sum(r[k] for r in rows)
    print("total: %d runs, %d clean ends (%d of them completed), %d went on listening, "
          "%d missed, %d unclean" % (tot("runs"), tot("clean"), tot("completed"),
                                     tot("listening"), tot("missed"), tot("unclean")))


def cells_of(a, rnd, link):
    want = a.faults.split(",") if a.faults else list(FAULTS)
    cells = []
    for f in want:
        sides, points = FAULTS[f]
        if f == "link" and not link.setup():
            print("matrix: link cells skipped: %s" % link.why)
            continue
        if f == "qperr" and not a.seams_tool:
            print("matrix: qperr cells skipped: no --seams-tool")
            continue
        if a.points:
            points = [q for q in points if q in a.points.split(",")]
        channels = [int(c) for c in a.channels.split(",")] if a.channels else [1, 8]
        cells += itertools.product([f], sides, points, channels)
    return rnd.sample(cells, min(a.sample, len(cells))) if a.sample else cells


def merge_rows(rows):
    """Rows of the same cell (from several invocations: rdma's link cells run one per VM
    boot) become one: counts added, the worst time and MRs the largest."""
    out = {}
    for r in rows:
        k = (r["fault"], r["side"], r["point"], r["transport"], r["channels"])
        if k not in out:
            out[k] = dict(r)
            continue
        m = out[k]
        for c in ("runs", "clean", "completed", "listening", "missed", "unclean"):
            m[c] += r[c]
        m["worst"] = max(m["worst"], r["worst"])
        if r.get("mrs") is not None:
            m["mrs"] = max(m.get("mrs") or 0, r["mrs"])
    return list(out.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", default="build/tools/mfrdma")
    ap.add_argument("--seams-tool", help="the tool with its fault seams (qperr)")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell")
    ap.add_argument("--faults", default="", help="comma-separated (default: all)")
    ap.add_argument("--sample", type=int, default=0, help="only K random cells (CI)")
    ap.add_argument("--points", default="", help="only these points, comma-separated")
    ap.add_argument("--channels", default="", help="only these channel counts (default 1,8)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--size", default="128M")
    ap.add_argument("--timeout", type=int, help="ms, both tools (default: tcp 1000, rdma 3000)")
    ap.add_argument("--slack", type=float, default=SLACK_S,
                    help="s past the timeout a survivor may take to end (default 1)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--transport", default="tcp", choices=["tcp", "rdma"])
    ap.add_argument("--address", help="listen address (default: tcp 127.0.0.1, rdma "
                    "$MFR_TEST_RDMA_ADDR, which the soft-RoCE VM sets)")
    ap.add_argument("--json", help="also write the rows to this file (for --table); "
                    "-: print them on a line 'json: ROWS'")
    ap.add_argument("--table", nargs="+", help="print one table of these --json files")
    a = ap.parse_args()
    if a.table:
        rows = []
        for path in a.table:
            with open(path) as f:
                rows += json.load(f)
        print_table(merge_rows(rows))
        return 0
    a.timeout = a.timeout or TIMEOUT_MS[a.transport]
    if not a.address:
        a.address = "127.0.0.1" if a.transport == "tcp" else os.environ.get("MFR_TEST_RDMA_ADDR")
    if not a.address:
        print("matrix: skipped: no RDMA address (MFR_TEST_RDMA_ADDR: run it in the VM)")
        return 77
    rnd = random.Random(a.seed)
    link = Link(a.transport)
    try:
        cells = cells_of(a, rnd, link)
        print("fault matrix: %s, %d cells x %d runs, seed %d, timeout %d ms, %s guest" % (
            a.transport, len(cells), a.runs, a.seed, a.timeout, a.size), flush=True)
        t0 = time.monotonic()
        rows = []
        for fault, side, point, ch in cells:
            r = {"fault": fault, "side": side, "point": point, "transport": a.transport,
                 "channels": ch, "runs": 0, "clean": 0, "completed": 0, "listening": 0,
                 "missed": 0, "unclean": 0, "worst": 0.0, "mrs": None}
            for _ in range(a.runs):
                run = Run(a, fault, side, point, ch, rnd, link)
                res, took, detail = run.go()
                if run.mrs is not None:
                    r["mrs"] = max(r["mrs"] or 0, run.mrs)
                r["runs"] += 1
                if res in ("clean", "completed"):
                    r["clean"] += 1
                    r["completed"] += res == "completed"
                    if res == "clean":
                        r["worst"] = max(r["worst"], took)
                else:
                    r[res] += 1
                if res == "unclean":
                    print("UNCLEAN %s %s at %s, %d channels: %s" % (fault, side, point, ch,
                                                                    detail), flush=True)
                if a.verbose:
                    print("  %s %s %s %d: %s %.2f s %s" % (fault, side, point, ch, res, took,
                                                           detail), flush=True)
            rows.append(r)
    finally:
        link.teardown()
    print_table(rows)
    print("fault matrix: %.0f s" % (time.monotonic() - t0))
    if a.json == "-":
        # from inside the soft-RoCE VM, whose files are thrown away: the rows on stdout
        print("json: " + json.dumps(rows))
    elif a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if sum(r["unclean"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
