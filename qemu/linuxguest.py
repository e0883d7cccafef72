# SPDX-License-Identifier: LGPL-2.1-or-later
"""A Linux guest for real-guest migration tests: the installed Debian kernel with a tiny
busybox initramfs whose init fills 16 MiB with random bytes, brings up a virtio-net NIC and
then, in a loop, re-checks the pattern's md5, pings a peer over the NIC, dirties 2 MiB and
prints 'GUEST TICK n mem=OK|BAD net=OK|FAIL' on the serial port. The NIC's peer is the test
itself (Responder): QEMU's socket netdev sends the guest's Ethernet frames to a UDP port where
the Responder answers ARP and ICMP echo, so the test sees which QEMU's NIC is talking.
A virtio device's state names ring indices that live in guest RAM, so a destination that
loaded device state before every page landed would break the NIC (or refuse to load)."""

import contextlib
import glob
import gzip
import io
import lzma
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading

GUEST_IP = "10.0.3.15"
PEER_IP = "10.0.3.2"
GUEST_MAC = "52:54:00:12:34:56"
PEER_MAC = bytes.fromhex("525400abcdef")
MODULES = ["virtio_pci", "virtio_net"]
PACKAGES = ["linux-image-amd64", "busybox-static"]
TICK_RE = re.compile(r"GUEST TICK (\d+) mem=(\w+) net=(\w+)")

INIT = f"""#!/bin/busybox sh
# mfrdma migration test guest: a pattern in RAM, virtio-net, a loop that checks both.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
    insmod /modules/$m || echo "GUEST ERROR insmod $m"
done
ip link set lo up
ip addr add {GUEST_IP}/24 dev eth0 && ip link set eth0 up || echo "GUEST ERROR eth0"
dd if=/dev/urandom of=/pattern bs=1M count=16 2>/dev/null
want=$(md5sum </pattern)
echo "GUEST READY"
n=0
while :; do
    n=$((n + 1))
    dd if=/dev/urandom of=/scratch bs=1M count=2 conv=notrunc 2>/dev/null
    if [ "$(md5sum </pattern)" = "$want" ]; then mem=OK; else mem=BAD; fi
    if ping -c 1 -W 2 {PEER_IP} >/dev/null 2>&1; then net=OK; else net=FAIL; fi
    echo "GUEST TICK $n mem=$mem net=$net"
done
"""


class Unavailable(Exception):
    """This machine cannot run the guest (and the test should skip, or fail in CI)."""


def ensure_packages():
    """Installs the kernel and busybox-static when missing (as root, with apt-get), like
    tests/softroce/vm-run.sh does for its VM."""
    missing = []
    for p in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                           text=True)
        if "install ok installed" not in r.stdout:
            missing.append(p)
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(f"missing packages {' '.join(missing)} (run as root to install)")
    print(f"installing {' '.join(missing)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise Unavailable(f"apt-get install {' '.join(missing)} failed: {r.stderr[-500:]}")


def pick_kernel():
    """The kernel tests/softroce/vm-run.sh boots: MFR_VM_KERNEL, or the newest
    /boot/vmlinuz-* whose modules are installed. Returns (version, path)."""
    best = os.environ.get("MFR_VM_KERNEL")
    if not best:
        vers = [p[len("/boot/vmlinuz-"):] for p in glob.glob("/boot/vmlinuz-*")
                if os.path.isdir("/lib/modules/" + p[len("/boot/vmlinuz-"):])]

        def key(v):
            return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)]
        vers.sort(key=key)
        best = vers[-1] if vers else None
    if not best:
        raise Unavailable("no kernel in /boot with modules (install linux-image-amd64)")
    path = "/boot/vmlinuz-" + best
    if not os.access(path, os.R_OK):
        raise Unavailable(f"{path} is missing or not readable")
    return best, path


def _module_paths(kver):
    paths = []
    for m in MODULES:
        r = subprocess.run(["modprobe", "-S", kver, "--show-depends", m], capture_output=True,
                           text=True, env=dict(os.environ, PATH=os.environ.get("PATH", "") +
                                               ":/usr/sbin:/sbin"))
        if r.returncode:
            raise Unavailable(f"modprobe cannot resolve {m} for {kver}: {r.stderr.strip()}")
        for line in r.stdout.splitlines():
            f = line.split()
            if f and f[0] == "insmod" and f[1] not in paths:
                paths.append(f[1])  # "builtin NAME" lines need nothing
    return paths


def _ko_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-qdc", path], capture_output=True,
                              check=True).stdout
    return data


class _Cpio:
    """An initramfs image: cpio 'newc' entries."""

    def __init__(self):
        self.out = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
            len(name) + 1, 0))
        self.ino += 1
        self.out.write(hdr.encode() + name.encode() + b"\0")
        self.out.write(b"\0" * (-(110 + len(name) + 1) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def dir(self, name):
        self._entry(name, 0o040755)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name, major, minor):
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def build_initramfs(kver, out):
    busybox = shutil.which("busybox")
    if not busybox:
        raise Unavailable("no busybox (package busybox-static)")
    if subprocess.run(["ldd", busybox], capture_output=True).returncode == 0:
        raise Unavailable(f"{busybox} is not statically linked (package busybox-static)")
    c = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    order = []
    for i, p in enumerate(_module_paths(kver)):
        name = f"{i:02d}-" + re.sub(r"\.ko\.(xz|gz|zst)$", ".ko", os.path.basename(p))
        c.file("modules/" + name, _ko_bytes(p))
        order.append(name)
    c.file("modules/order", ("\n".join(order) + "\n").encode())
    c.file("init", INIT.encode(), 0o755)
    with open(out, "wb") as f:
        f.write(gzip.compress(c.finish(), compresslevel=1))


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


class Responder:
    """The guest NIC's peer at PEER_IP: a UDP socket that QEMU's socket netdev sends the
    guest's Ethernet frames to. Answers ARP requests and ICMP echo requests for PEER_IP,
    to whichever QEMU sent them, and counts echo requests per QEMU (its netdev's port)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.echoes = {}
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def netdev_args(self, local_port):
        return ["-netdev", f"socket,id=n0,udp=127.0.0.1:{self.port},"
                f"localaddr=127.0.0.1:{local_port}",
                "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC},romfile="]

    def echo_count(self, local_port):
        with self.lock:
            return self.echoes.get(local_port, 0)

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                frame, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(frame, addr[1])
            if reply:
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply, addr)

    def _answer(self, frame, port):
        if len(frame) < 42:
            return None
        dst, src, etype = frame[0:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
        peer = socket.inet_aton(PEER_IP)
        if etype == 0x0806:  # ARP request for PEER_IP
            op, sha, spa, tpa = (struct.unpack("!H", frame[20:22])[0], frame[22:28],
                                 frame[28:32], frame[38:42])
            if op != 1 or tpa != peer:
                return None
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + PEER_MAC + peer + sha + spa
            return src + PEER_MAC + struct.pack("!H", 0x0806) + arp
        if etype != 0x0800 or dst != PEER_MAC:
            return None
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 1 or ip[16:20] != peer or len(ip) < ihl + 8 or ip[ihl] != 8:
            return None
        total = struct.unpack("!H", ip[2:4])[0]
        icmp = bytearray(ip[ihl:total])
        icmp[0] = 0  # echo reply
        icmp[2:4] = b"\0\0"
        icmp[2:4] = struct.pack("!H", _csum(bytes(icmp)))
        hdr = bytearray(ip[:ihl])
        hdr[12:16], hdr[16:20] = ip[16:20], ip[12:16]
        hdr[8] = 64
        hdr[10:12] = b"\0\0"
        hdr[10:12] = struct.pack("!H", _csum(bytes(hdr)))
        with self.lock:
            self.echoes[port] = self.echoes.get(port, 0) + 1
        return src + PEER_MAC + struct.pack("!H", 0x0800) + bytes(hdr) + bytes(icmp)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guest_args(kernel, initrd, firmware_dir, responder, local_port):
    """QEMU arguments for one side: the kernel, the initramfs, the NIC."""
    return (["-kernel", kernel, "-initrd", initrd,
             "-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
             "-no-reboot", "-L", firmware_dir] +
            responder.netdev_args(local_port))


def ticks(text):
    """[(n, mem, net)] of the guest's TICK lines in text."""
    return [(int(n), mem, net) for n, mem, net in TICK_RE.findall(text)]


if __name__ == "__main__":
    # builds the initramfs for a quick look: linuxguest.py OUT
    v, k = pick_kernel()
    build_initramfs(v, sys.argv[1])
    print(k)
