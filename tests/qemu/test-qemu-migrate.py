#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Real-guest migrations over rdma+multifd: with the patched QEMU (qemu/fetch-build.sh) and
QEMU's A-B test guest. One case per run (the meson test name):
  migrate        1 and N channels: RAM files byte-identical, libmfrdma's digests matched on
                 both sides, the guest prints 'B' again on the destination after cont
  bad-dest-killed  destination killed mid-migration: the source reports failed with the
                 cause, its guest keeps running
  cancel         migrate_cancel mid-migration: cancelled, guest runs, a second migration
                 to a fresh destination then succeeds
  bad-token      the destination expects another token: failed, "token" in the error
  bad-postcopy   postcopy-ram on: migrate and migrate-incoming refused with the reason
  bad-link-down  the link taken down mid-migration, the source fails naming the cause and
                 its guest keeps running: tcp transport, the destination in a network
                 namespace whose veth goes down; rdma, in the soft-RoCE VM: eth0 under rxe0
                 goes down, then eth0 and rxe0 are restored
  bad-memlock    (rdma) the destination with RLIMIT_MEMLOCK 1 MiB and no CAP_IPC_LOCK:
                 failed with the cause ('ulimit -l'), the source's guest running; then the
                 same source migrates to a sound destination with every check of migrate;
                 then a source under that limit: failed with its own limit and the
                 'ulimit -l' it needs, its guest running
  linux-guest    Debian's kernel + a busybox initramfs with virtio-net (qemu/linuxguest.py):
                 RAM identical, and after cont the destination's guest goes on counting
                 where it stopped, its 16 MiB pattern intact and its NIC answering (from the
                 destination QEMU's netdev): device state loaded after every page landed
Usage: test-qemu-migrate.py CASE --build DIR [--transport tcp|rdma] [--mem MB]
       [--channels N,...]  (rdma: host from MFR_TEST_RDMA_ADDR, skipped without it)"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../qemu"))
import linuxguest  # noqa: E402
import migtest  # noqa: E402
from migtest import Vm, wait_until  # noqa: E402


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


class Case:
    def __init__(self, args):
        self.args = args
        self.ci = os.environ.get("CI") == "true"
        self.host = "127.0.0.1"
        if args.transport == "rdma":
            # before looking for QEMU: the host copy of this test must not build it to skip
            self.host = os.environ.get("MFR_TEST_RDMA_ADDR")
            if not self.host:
                print("SKIP: no RDMA device here (MFR_TEST_RDMA_ADDR unset: runs in the "
                      "soft-RoCE VM)")
                sys.exit(77)
        self.qemu, self.src_dir = migtest.qemu_binary(args.build, self.ci)
        self.timeout = args.timeout
        self.vms = []  # every QEMU started: none outlives the case, whatever failed

    def vm(self, wd, name, incoming=False, env=None, boot=None, wrap=None, memlock=None):
        vm = Vm(self.qemu, wd, name, self.args.mem, boot or self.boot, incoming=incoming,
                env=env, wrap=wrap, memlock=memlock)
        self.vms.append(vm)
        return vm

    def check_rpath(self):
        """The binary finds this build's libmfrdma by its run path, not LD_LIBRARY_PATH."""
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        out = subprocess.run(["ldd", self.qemu], capture_output=True, text=True,
                             env=env).stdout
        line = next((ln for ln in out.splitlines() if "libmfrdma" in ln), "")
        found = line.split("=>")[1].split("(")[0].strip() if "=>" in line else ""
        want = os.path.join(self.args.build, "multifd-rdma", "libmfrdma.so.0")
        check(found and os.path.realpath(found) == os.path.realpath(want),
              f"{self.qemu} loads libmfrdma from '{found or line.strip()}', not {want}")

    def running_source(self, wd, name="src"):
        src = self.vm(wd, name)
        # the guest is up and dirtying its memory once it printed a few 'B's
        wait_until(f"{name}'s guest printing B", lambda: src.serial_count() >= 2, 120)
        return src

    def guest_alive(self, vm, what):
        check(vm.status() == "running", f"{what}: {vm.name} is {vm.status()}, not running")
        n = vm.serial_count()
        wait_until(f"{vm.name}'s guest printing B again ({what})",
                   lambda: vm.serial_count() > n, 60)

    def migrate_ok(self, wd, src, dst_name, channels):
        dst = self.vm(wd, dst_name, incoming=True)
        try:
            mode = migtest.mode_mfrdma(self.args.transport, channels)
            _, cpu0 = migtest.start_migration(src, dst, mode, self.host)
            info = migtest.finish_migration(src, dst, cpu0, self.timeout)
            s = migtest.summary(info)
            print(f"{mode.name}: {s}")
            check(info["status"] == "completed", f"migration {info['status']}: "
                  f"{info.get('error-desc')}; dest log: {dst.log_text()}")
            wait_until("destination paused after the migration",
                       lambda: dst.status() == "paused", 30)
            check(src.status() == "postmigrate", f"source is {src.status()}")
            check(migtest.ram_identical(src, dst),
                  f"RAM of {src.name} and {dst.name} differ after migration")
            ram = info["ram"]
            check(ram["normal"] + ram["duplicate"] >= self.args.mem * 256,
                  f"query-migrate counts {ram['normal']} normal + {ram['duplicate']} zero "
                  f"pages, fewer than the guest's {self.args.mem * 256}")
            # stats files are written when the sessions are released (the source's in
            # QEMU's cleanup, which may follow the 'completed' status)
            wait_until("libmfrdma stats of both sides",
                       lambda: os.path.exists(src.stats) and os.path.exists(dst.stats), 30)
            src_stats = src.mfrdma_stats()
            dst_stats = dst.mfrdma_stats()
            print(f"libmfrdma source: {src_stats}")
            print(f"libmfrdma destination: {dst_stats}")
            check(src_stats["verified"] and dst_stats["verified"],
                  "libmfrdma did not verify the digests")
            check(src_stats["channels"] == channels,
                  f"libmfrdma used {src_stats['channels']} channels, not {channels}")
            check(src_stats["transport"] == self.args.transport,
                  f"libmfrdma used {src_stats['transport']}")
            dst.qmp.cmd("cont")
            self.guest_alive(dst, "after cont on the destination")
            return s
        finally:
            migtest.kill_quietly(dst)

    def interrupted(self, wd, action, expect_status, expect_error, src=None, host=None,
                    port=None, dst_wrap=None, dst_memlock=None, dst_name="dst"):
        """Migrates at a limited bandwidth, does action(src, dst) while it runs, and checks
        the source's report and that its guest keeps running."""
        own = src is None
        src = src or self.running_source(wd)
        dst = None
        try:
            dst = self.vm(wd, dst_name, incoming=True, env=self.args.dst_env, wrap=dst_wrap,
                          memlock=dst_memlock)
            mode = migtest.mode_mfrdma(self.args.transport, 2)
            _, cpu0 = migtest.start_migration(src, dst, mode, host or self.host,
                                              max_bandwidth=16 * 1024 ** 2, port=port)
            if action:
                wait_until("the migration moving pages", lambda: src.qmp.cmd(
                    "query-migrate").get("ram", {}).get("transferred", 0) > 8 << 20, 60)
                action(src, dst)
            info = migtest.finish_migration(src, dst, cpu0, self.timeout)
            print(f"{self.args.case}: {migtest.summary(info)}")
            check(info["status"] == expect_status,
                  f"expected {expect_status}, got {info['status']} "
                  f"({info.get('error-desc')})")
            if expect_error:
                err = info.get("error-desc", "")
                check(expect_error in err,
                      f"error-desc '{err}' does not name the cause ('{expect_error}')")
            self.guest_alive(src, f"after the migration {expect_status}")
            return src
        except BaseException:
            if own:  # a failed check must not leave the source QEMU running
                migtest.kill_quietly(src)
            raise
        finally:
            migtest.kill_quietly(dst)

    def run(self, name):
        with migtest.workdir("mfrdma-qemu-") as wd:
            self.boot = os.path.join(wd, "boot.img")
            if name != "linux-guest":
                migtest.bootblock(self.src_dir, self.boot)
            try:
                getattr(self, "case_" + name.replace("-", "_"))(wd)
            finally:
                migtest.kill_quietly(*self.vms)
        print(f"PASS: {name}")

    def case_migrate(self, wd):
        self.check_rpath()
        for i, ch in enumerate(self.args.channels):
            src = self.running_source(wd, f"src{i}")
            try:
                self.migrate_ok(wd, src, f"dst{i}", ch)
            finally:
                migtest.kill_quietly(src)

    def case_bad_dest_killed(self, wd):
        src = self.interrupted(wd, lambda s, d: d.kill(), "failed", "rdma+multifd")
        migtest.kill_quietly(src)

    def case_cancel(self, wd):
        src = self.interrupted(wd, lambda s, d: s.qmp.cmd("migrate_cancel"), "cancelled",
                               None)
        try:
            # the source is clean after a cancel: a new migration succeeds
            self.migrate_ok(wd, src, "dst2", 2)
        finally:
            migtest.kill_quietly(src)

    def case_bad_token(self, wd):
        self.args.dst_env = {"MFRDMA_QEMU_TEST_BAD_TOKEN": "1"}
        src = self.interrupted(wd, None, "failed", "token")
        migtest.kill_quietly(src)

    def case_bad_link_down(self, wd):
        if self.args.transport == "rdma":
            return self.link_down_rxe(wd)
        try:
            ns = migtest.NetNs().__enter__()
        except (PermissionError, RuntimeError) as e:
            if self.ci:
                raise Fail(f"no network namespace here (CI=true): {e}")
            print(f"SKIP: {e}")
            sys.exit(77)
        try:
            # libmfrdma's message names the peer it lost
            src = self.interrupted(wd, lambda s, d: ns.link_down(), "failed", ns.peer_addr,
                                   host=ns.peer_addr, port=ns.port, dst_wrap=ns.wrap)
            migtest.kill_quietly(src)
        finally:
            ns.__exit__()

    def link_down_rxe(self, wd):
        """Soft-RoCE VM: eth0, under rxe0 and the main stream, goes down mid-migration. The
        source must fail with libmfrdma's cause, its guest running; then eth0 and a fresh rxe0
        come back (MFR_VM_LINK_UP), which needs every QEMU gone first: rxe0 cannot be deleted
        while a process holds it open."""
        link_up = os.environ.get("MFR_VM_LINK_UP")
        if os.environ.get("MFR_VM") != "1" or not link_up:
            print("SKIP: only inside the soft-RoCE VM (tests/softroce/vm-run.sh): takes eth0 "
                  "down")
            sys.exit(77)
        t_down = []

        def down(src, dst):
            t_down.append(time.monotonic())
            subprocess.run(["ip", "link", "set", "eth0", "down"], check=True, timeout=30)
        try:
            src = self.interrupted(wd, down, "failed", "rdma+multifd: ")
            took = time.monotonic() - t_down[0]
            err = src.qmp.cmd("query-migrate").get("error-desc", "")
            print(f"source failed, {took:.1f} s after link down: {err}")
            # libmfrdma's message names the channel or control connection and its peer
            check(self.host in err, f"error-desc '{err}' does not name the peer {self.host}")
            migtest.kill_quietly(src)
        finally:
            migtest.kill_quietly(*self.vms)
            r = subprocess.run([link_up], capture_output=True, text=True, timeout=120)
            if r.returncode:
                stuck = subprocess.run(["ps", "-eo", "pid,stat,wchan:32,comm"],
                                       capture_output=True, text=True).stdout
                stuck = "\n".join(ln for ln in stuck.splitlines() if " D" in ln)
                raise Fail(f"eth0 and rxe0 not restored after the test: {r.stdout}"
                           f"{r.stderr}; processes in D state: {stuck or 'none'}")

    def case_bad_memlock(self, wd):
        # root has CAP_IPC_LOCK, for which the kernel ignores RLIMIT_MEMLOCK: drop it
        nocap = ["setpriv", "--bounding-set", "-ipc_lock", "--"]
        src = self.running_source(wd)
        try:
            self.interrupted(wd, None, "failed", "ulimit -l", src=src, dst_wrap=nocap,
                             dst_memlock=1 << 20)
            # and the source can migrate again: a second attempt to a sound destination
            self.migrate_ok(wd, src, "dst2", 2)
        finally:
            migtest.kill_quietly(src)
        # the source side: a source QEMU whose own limit is too low fails the migration at
        # set-up with the limit it needs, and its guest keeps running
        low = self.vm(wd, "src-low", wrap=nocap, memlock=1 << 20)
        try:
            wait_until("src-low's guest printing B", lambda: low.serial_count() >= 2, 120)
            self.interrupted(wd, None, "failed", "ulimit -l", src=low, dst_name="dst3")
            err = low.qmp.cmd("query-migrate").get("error-desc", "")
            print(f"source under a 1 MiB limit: {err}")
            check("RLIMIT_MEMLOCK is 1.0 MiB" in err,
                  f"error-desc '{err}' does not give the source's own limit")
        finally:
            migtest.kill_quietly(low)

    def case_bad_postcopy(self, wd):
        src = self.running_source(wd)
        dst = self.vm(wd, "dst", incoming=True)
        try:
            uri = f"rdma+multifd:{migtest.hostport(self.host, migtest.free_port_pair(self.host))}"
            want = "rdma+multifd cannot be used with postcopy"
            for vm, cmd in ((dst, "migrate-incoming"), (src, "migrate")):
                try:
                    vm.qmp.cmd("migrate-set-capabilities", capabilities=[
                        {"capability": "postcopy-ram", "state": True}])
                except migtest.QmpError as e:
                    # an incoming QEMU checks userfaultfd first; dirty-bitmaps is the
                    # other postcopy capability, and needs none
                    print(f"{vm.name}: postcopy-ram: {e}; using dirty-bitmaps")
                    vm.qmp.cmd("migrate-set-capabilities", capabilities=[
                        {"capability": "dirty-bitmaps", "state": True}])
                try:
                    vm.qmp.cmd(cmd, uri=uri)
                    raise Fail(f"{cmd} with postcopy-ram on was accepted")
                except migtest.QmpError as e:
                    print(f"{cmd}: refused: {e}")
                    check(want in str(e), f"{cmd}: '{e}' does not say '{want}'")
            self.guest_alive(src, "after the refused migrate")
        finally:
            migtest.kill_quietly(dst, src)


    def case_linux_guest(self, wd):
        try:
            linuxguest.ensure_packages()
            kver, kernel = linuxguest.pick_kernel()
            initrd = os.path.join(wd, "initrd.gz")
            linuxguest.build_initramfs(kver, initrd)
        except linuxguest.Unavailable as e:
            if self.ci:
                raise Fail(f"no Linux guest here (CI=true): {e}")
            print(f"SKIP: {e}")
            sys.exit(77)
        firmware = os.path.join(os.path.dirname(os.path.dirname(self.qemu)), "firmware")
        resp = linuxguest.Responder()
        src = dst = None
        try:
            ports = linuxguest.free_udp_port(), linuxguest.free_udp_port()
            src = self.vm(wd, "src", boot=linuxguest.guest_args(kernel, initrd, firmware,
                                                                 resp, ports[0]))

            def good_ticks(vm):
                return [t for t in linuxguest.ticks(vm.serial_text())
                        if t[1:] == ("OK", "OK")]
            wait_until("the Linux guest's pattern and NIC checks on the source",
                       lambda: len(good_ticks(src)) >= 2, 240, poll=0.2)
            dst = self.vm(wd, "dst", incoming=True, boot=linuxguest.guest_args(
                kernel, initrd, firmware, resp, ports[1]))
            ch = self.args.channels[-1]
            mode = migtest.mode_mfrdma(self.args.transport, ch)
            _, cpu0 = migtest.start_migration(src, dst, mode, self.host)
            info = migtest.finish_migration(src, dst, cpu0, self.timeout)
            print(f"{mode.name}: {migtest.summary(info)}")
            check(info["status"] == "completed", f"migration {info['status']}: "
                  f"{info.get('error-desc')}; dest log: {dst.log_text()}")
            wait_until("destination paused after the migration",
                       lambda: dst.status() == "paused", 30)
            check(migtest.ram_identical(src, dst), "RAM of src and dst differ")
            last = max(t[0] for t in linuxguest.ticks(src.serial_text()))
            echoes = resp.echo_count(ports[1])
            check(echoes == 0, f"the paused destination's NIC sent {echoes} pings")
            dst.qmp.cmd("cont")
            # a ping in flight at the switchover went to the source's netdev: its tick may
            # report net=FAIL; the next ones must be good, from the destination's NIC
            wait_until("two good ticks of the guest on the destination",
                       lambda: len(good_ticks(dst)) >= 2, 120, poll=0.2)
            after = linuxguest.ticks(dst.serial_text())
            text = dst.serial_text()
            print(f"source's last tick {last}; destination: {after[:4]}")
            check(last < after[0][0] <= last + 2,
                  f"the guest on the destination counts from {after[0][0]}, not on from "
                  f"{last}: not the same guest")
            check(all(t[1] == "OK" for t in after), f"guest memory changed: {after}")
            check("GUEST ERROR" not in text and "Kernel panic" not in text,
                  f"guest trouble on the destination: {text[-2000:]}")
            check(resp.echo_count(ports[1]) >= 2, "no pings from the destination's NIC")
            check(dst.status() == "running", f"destination is {dst.status()}")
        finally:
            migtest.kill_quietly(dst, src)
            resp.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["migrate", "bad-dest-killed", "cancel", "bad-token",
                                     "bad-postcopy", "bad-link-down", "bad-memlock",
                                     "linux-guest"])
    ap.add_argument("--build", required=True, help="libmfrdma build directory")
    ap.add_argument("--transport", choices=["tcp", "rdma"], default="tcp")
    ap.add_argument("--mem", type=int, default=128, help="guest RAM, MiB")
    ap.add_argument("--channels", default="1,4,8",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--timeout", type=float, default=300, help="per migration, seconds")
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    args.dst_env = None
    try:
        Case(args).run(args.case)
    except (Fail, TimeoutError, migtest.QmpError, RuntimeError) as e:
        print(f"FAIL: {args.case}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
