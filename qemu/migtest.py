# SPDX-License-Identifier: LGPL-2.1-or-later
"""Drives real QEMU migrations of QEMU's own A-B test guest (a boot sector that increments
the first byte of every page in [1 MiB, 100 MiB) in a loop and prints 'B' after each pass)
between two QEMU processes over QMP. Shared by tests/qemu/ and bench/qemu-bench.py; stdlib
only. RAM lives in memory-backend-file files, so both sides can be compared byte for byte."""

import contextlib
import filecmp
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class QmpError(Exception):
    pass


class Qmp:
    """One QMP connection: commands in order, events kept aside."""

    def __init__(self, path, timeout, alive=None):
        """alive: false once the QEMU process is gone (no point waiting any longer)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline or (alive and not alive()):
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        self.events = []
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise QmpError("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                raise QmpError(msg["error"]["desc"])
            else:
                return msg["return"]

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


def bootblock(qemu_src, path):
    """Writes the A-B boot sector (its bytes from QEMU's a-b-bootblock.h) to a disk image."""
    header = os.path.join(qemu_src, "tests/qtest/migration/i386/a-b-bootblock.h")
    with open(header) as f:
        array = re.search(r"x86_bootsect\[\] = \{(.*?)\};", f.read(), re.S)
    data = bytes(int(x, 16) for x in re.findall(r"0x([0-9a-fA-F]{2})", array.group(1))) \
        if array else b""
    if len(data) != 512 or data[510:] != b"\x55\xaa":
        raise RuntimeError(f"{header}: not a 512-byte boot sector")
    with open(path, "wb") as f:
        f.write(data)


class Vm:
    """One QEMU; RAM in dir/<name>.ram, serial in dir/<name>.serial. boot is the A-B guest's
    disk image, or a list of QEMU arguments that make another guest (linuxguest.py)."""

    def __init__(self, qemu, workdir, name, mem_mb, boot, incoming=False, env=None,
                 lib_dir=None, wrap=None, memlock=None, extra=None, prealloc=False):
        """wrap: a command QEMU runs under (ip netns exec NS, setpriv ...); memlock: its
        RLIMIT_MEMLOCK in bytes. lib_dir: for a QEMU without the run path of
        qemu/fetch-build.sh's (LD_LIBRARY_PATH). prealloc: QEMU populates the RAM file at
        start (memory-backend prealloc=on)."""
        self.name = name
        self.ram = os.path.join(workdir, name + ".ram")
        self.serial = os.path.join(workdir, name + ".serial")
        self.stats = os.path.join(workdir, name + ".mfrdma.json")
        self.log = os.path.join(workdir, name + ".log")
        qmp_path = os.path.join(workdir, name + ".qmp")
        for p in (self.ram, self.serial, self.stats, qmp_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        # debug-threads: named threads, so cpu_s() can tell the vCPUs apart
        args = [qemu, "-name", f"{name},debug-threads=on", "-M", "pc", "-accel", "tcg",
                "-m", f"{mem_mb}M",
                "-object", f"memory-backend-file,id=mem0,size={mem_mb}M,mem-path={self.ram},"
                "share=on" + (",prealloc=on" if prealloc else ""),
                "-machine", "memory-backend=mem0",
                "-L", "/usr/share/seabios", "-nodefaults", "-display", "none",
                "-serial", f"file:{self.serial}",
                "-qmp", f"unix:{qmp_path},server=on,wait=off"]
        if isinstance(boot, str):
            args += ["-drive", f"if=none,id=d0,file={boot},format=raw",
                     "-device", "ide-hd,drive=d0,secs=1,cyls=1,heads=1"]
        else:
            args += boot
        args += extra or []
        if incoming:
            args += ["-S", "-incoming", "defer"]
        e = dict(os.environ)
        e["MFRDMA_QEMU_STATS"] = self.stats
        if lib_dir:
            e["LD_LIBRARY_PATH"] = lib_dir + ":" + e.get("LD_LIBRARY_PATH", "")
        e.update(env or {})
        self.logf = open(self.log, "w")

        def limit():
            if memlock is not None:
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
        self.proc = subprocess.Popen((wrap or []) + args, stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=e, preexec_fn=limit)
        try:
            # generous: nested TCG in the soft-RoCE VM, on a loaded machine, once took over
            # 30 s to open the socket; a QEMU that exited is reported at once
            self.qmp = Qmp(qmp_path, 120, alive=lambda: self.proc.poll() is None)
        except Exception:
            self.kill()
            raise RuntimeError(f"{name}: QEMU did not start (exit status "
                               f"{self.proc.returncode}): {self.log_text()}")

    def log_text(self):
        with open(self.log) as f:
            return f.read().strip()

    def serial_text(self):
        try:
            with open(self.serial, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def serial_count(self, ch="B"):
        try:
            with open(self.serial, "rb") as f:
                return f.read().count(ch.encode())
        except FileNotFoundError:
            return 0

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def cpu_s(self):
        """CPU seconds (user + system) this QEMU used so far, minus its vCPU threads' (the
        guest's own work is no migration cost). The process total also counts threads that
        exited, such as libmfrdma's when its session ended."""
        return proc_cpu_s(self.proc.pid)

    def traces(self, event):
        """The name=value fields of each of QEMU's trace lines for event (QEMU started with
        extra=["-trace", "mfrdma_*"]), from its log."""
        return [{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
                for line in self.log_text().splitlines()
                if re.search(rf"(^|:){event} ", line)]

    def mfrdma_stats(self):
        with open(self.stats) as f:
            return json.load(f)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.logf.close()

    def quit(self):
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp.cmd("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def wait_until(what, cond, timeout, poll=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def free_port_pair(host):
    """A port P with P+1 free as well (rdma+multifd uses both). Chosen below the kernel's
    ephemeral range: there, connections of other programs (thousands in TIME_WAIT on a busy
    machine) leave few pairs of neighbours free."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError):
        low = 32768
    low = max(low, 2048)
    for _ in range(200):
        p = random.randrange(1024, low - 1)
        try:
            for port in (p, p + 1):
                with socket.socket(fam) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((host, port))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def hostport(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Mode:
    """How to migrate: the URI scheme, and the caps/params both sides need."""

    def __init__(self, name, scheme, caps=None, params=None):
        self.name, self.scheme = name, scheme
        self.caps = caps or {}
        self.params = params or {}

    def setup(self, vm):
        if self.caps:
            vm.qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": k, "state": v} for k, v in self.caps.items()])
        if self.params:
            vm.qmp.cmd("migrate-set-parameters", **self.params)


def mode_mfrdma(transport, channels, verify=True):
    return Mode(f"rdma+multifd ({transport}, {channels} ch{', verify' if verify else ''})",
                "rdma+multifd", params={"mfrdma-transport": transport,
                                        "multifd-channels": channels, "mfrdma-verify": verify})


def mode_multifd_tcp(channels):
    return Mode(f"multifd tcp ({channels} ch)", "tcp", caps={"multifd": True},
                params={"multifd-channels": channels})


def mode_legacy_rdma():
    return Mode("legacy rdma", "rdma")


def start_migration(src, dst, mode, host, max_bandwidth=0, port=None):
    """port: where the destination listens (and port + 1); by default a free pair here."""
    port = port or free_port_pair(host)
    uri = f"{mode.scheme}:{hostport(host, port)}"
    mode.setup(dst)
    dst.qmp.cmd("migrate-incoming", uri=uri)
    mode.setup(src)
    # 0 = QEMU's default (128 MiB/s); the tests want the link's own speed
    src.qmp.cmd("migrate-set-parameters", **{
        "downtime-limit": 300, "max-bandwidth": max_bandwidth or 100 * 1024 ** 3})
    cpu0 = (src.cpu_s(), dst.cpu_s())
    src.qmp.cmd("migrate", uri=uri)
    return uri, cpu0


def proc_cpu_s(pid, skip_vcpus=True):
    """CPU seconds (user + system) of process pid so far; skip_vcpus: minus its threads
    named "CPU n/..." (a QEMU's vCPUs). Shared with bench/qemu-peer.py."""
    def ticks(path):
        with open(path) as f:
            head, rest = f.read().rsplit(")", 1)
        fields = rest.split()
        return head.split("(", 1)[1], int(fields[11]) + int(fields[12])
    total = ticks(f"/proc/{pid}/stat")[1]
    if skip_vcpus:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                comm, t = ticks(f"/proc/{pid}/task/{tid}/stat")
            except OSError:  # the thread exited (ENOENT, or ESRCH while reading)
                continue
            if re.match(r"CPU \d+/", comm):
                total -= t
    return total / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid):
    """CPU seconds (user + system) of each thread of process pid, summed by thread name with
    the digits dropped ("mfr-send-3" -> "mfr-send-N", "CPU 0/TCG" -> "CPU N/TCG"): where a
    process spends its CPU, for bench/qemu-bench.py --profile. Threads that exited are not
    listed (their time is in the process total only)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:  # the thread exited
            continue
        fields = rest.split()
        name = re.sub(r"\d+", "N", head.split("(", 1)[1])
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / \
            os.sysconf("SC_CLK_TCK")
    return out


def system_cpu_s():
    """The whole machine's CPU seconds by kind (/proc/stat's first line): user, nice, system,
    idle, iowait, irq, softirq, steal. Inside the soft-RoCE VM, rxe's work runs in softirq
    and kernel threads that no QEMU thread is charged for."""
    with open("/proc/stat") as f:
        vals = f.readline().split()[1:9]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return {n: int(v) / os.sysconf("SC_CLK_TCK") for n, v in zip(names, vals)}


def finish_migration(src, dst, cpu0, timeout, raise_after_syncs=3):
    """Waits for the end; after a few dirty syncs raises downtime-limit so the A-B guest
    (it dirties ~100 MB again and again) switches over, as QEMU's own test does."""
    raised = False

    def done():
        nonlocal raised
        info = src.qmp.cmd("query-migrate")
        st = info.get("status")
        if st in ("completed", "failed", "cancelled"):
            return info
        syncs = info.get("ram", {}).get("dirty-sync-count", 0)
        if not raised and syncs >= raise_after_syncs:
            src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": 60000})
            raised = True
        return None

    info = wait_until("the migration's end", done, timeout, poll=0.02)
    info["cpu_src_s"] = src.cpu_s() - cpu0[0]
    info["cpu_dst_s"] = dst.cpu_s() - cpu0[1] if dst.proc.poll() is None else None
    info["downtime_raised"] = raised
    return info


class NetNs:
    """A network namespace joined to this one by a veth pair, for a destination whose link
    the test can take down: the host side has HOST_ADDR, the namespace PEER_ADDR."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.name = f"mfrq{tag}"
        self.veth = f"mfrq{tag}h"
        net = 64 + os.getpid() % 128
        self.host_addr, self.peer_addr = f"10.231.{net}.1", f"10.231.{net}.2"
        self.wrap = ["ip", "netns", "exec", self.name]
        # the namespace is new: nothing listens in it (and the host cannot bind its address)
        self.port = random.randrange(20000, 30000)
        self.up = False

    def _ip(self, *args):
        r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")

    def __enter__(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            raise PermissionError("network namespaces need root and iproute2")
        self._ip("netns", "add", self.name)
        self.up = True
        try:
            self._ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                     "netns", self.name)
            self._ip("addr", "add", self.host_addr + "/24", "dev", self.veth)
            self._ip("link", "set", self.veth, "up")
            for cmd in (["addr", "add", self.peer_addr + "/24", "dev", "eth0"],
                        ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
                self._ip("-n", self.name, *cmd)
        except Exception:
            self.__exit__()
            raise
        return self

    def link_down(self):
        """Both ends down: packets vanish, no reset reaches either side."""
        self._ip("link", "set", self.veth, "down")
        self._ip("-n", self.name, "link", "set", "eth0", "down")

    def __exit__(self, *exc):
        if self.up:
            # the veth pair goes with the namespace
            with contextlib.suppress(RuntimeError):
                self._ip("netns", "del", self.name)
            self.up = False


def ram_identical(a, b):
    return filecmp.cmp(a.ram, b.ram, shallow=False)


def qemu_binary(build_dir, ci):
    """The patched QEMU: MFR_QEMU_BINARY, or built (cached) by qemu/fetch-build.sh.
    Returns (binary, source dir); exits 77 (skip) with the reason when it cannot be had,
    unless in CI, where that is a failure."""
    binary = os.environ.get("MFR_QEMU_BINARY")
    if not binary:
        r = subprocess.run([os.path.join(ROOT, "qemu/fetch-build.sh"), "--mfrdma-build",
                            build_dir], stdout=subprocess.PIPE, text=True)
        if r.returncode == 0 and r.stdout.strip():
            binary = r.stdout.strip().splitlines()[-1]
        else:
            msg = f"qemu/fetch-build.sh failed (status {r.returncode}): no patched QEMU"
            if ci:
                sys.exit(f"error: {msg} (CI=true: the build must work)")
            print(f"SKIP: {msg}")
            sys.exit(77)
    if not os.access(binary, os.X_OK):
        msg = f"QEMU binary {binary} is missing"
        if ci:
            sys.exit(f"error: {msg}")
        print(f"SKIP: {msg}")
        sys.exit(77)
    src = os.path.join(os.path.dirname(os.path.dirname(binary)), "src")
    return binary, src


@contextlib.contextmanager
def workdir(prefix):
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
        else None
    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        yield d
    finally:
        if os.environ.get("MFR_QEMU_KEEP"):
            print(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def summary(info):
    ram = info.get("ram", {})
    return {"status": info.get("status"), "total_ms": info.get("total-time"),
            "downtime_ms": info.get("downtime"), "setup_ms": info.get("setup-time"),
            "transferred": ram.get("transferred"), "normal": ram.get("normal"),
            "duplicate": ram.get("duplicate"), "mbps": ram.get("mbps"),
            "syncs": ram.get("dirty-sync-count"),
            "cpu_src_s": round(info["cpu_src_s"], 2),
            "cpu_dst_s": None if info["cpu_dst_s"] is None else round(info["cpu_dst_s"], 2),
            "error": info.get("error-desc")}


def kill_quietly(*vms):
    for vm in vms:
        if vm is not None:
            with contextlib.suppress(Exception):
                vm.quit()


signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
