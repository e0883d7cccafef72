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
Usage: test-qemu-migrate.py CASE --build DIR [--transport tcp|rdma] [--mem MB]
       [--channels N,...]  (rdma: host from MFR_TEST_RDMA_ADDR, skipped without it)"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../qemu"))
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
        self.qemu, self.src_dir = migtest.qemu_binary(args.build, self.ci)
        self.lib_dir = os.path.join(args.build, "multifd-rdma")
        self.host = "127.0.0.1"
        if args.transport == "rdma":
            self.host = os.environ.get("MFR_TEST_RDMA_ADDR")
            if not self.host:
                print("SKIP: no RDMA device here (MFR_TEST_RDMA_ADDR unset: runs in the "
                      "soft-RoCE VM)")
                sys.exit(77)
        self.timeout = args.timeout

    def vm(self, wd, name, incoming=False, env=None):
        return Vm(self.qemu, wd, name, self.args.mem, self.boot, incoming=incoming,
                  env=env, lib_dir=self.lib_dir)

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

    def interrupted(self, wd, action, expect_status, expect_error):
        """Migrates at a limited bandwidth, does action(src, dst) while it runs, and checks
        the source's report and that its guest keeps running."""
        src = self.running_source(wd)
        dst = self.vm(wd, "dst", incoming=True, env=self.args.dst_env)
        try:
            mode = migtest.mode_mfrdma(self.args.transport, 2)
            _, cpu0 = migtest.start_migration(src, dst, mode, self.host,
                                              max_bandwidth=16 * 1024 ** 2)
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
        finally:
            migtest.kill_quietly(dst)

    def run(self, name):
        with migtest.workdir("mfrdma-qemu-") as wd:
            self.boot = os.path.join(wd, "boot.img")
            migtest.bootblock(self.src_dir, self.boot)
            getattr(self, "case_" + name.replace("-", "_"))(wd)
        print(f"PASS: {name}")

    def case_migrate(self, wd):
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


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["migrate", "bad-dest-killed", "cancel", "bad-token",
                                     "bad-postcopy"])
    ap.add_argument("--build", required=True, help="libmfrdma build directory")
    ap.add_argument("--transport", choices=["tcp", "rdma"], default="tcp")
    ap.add_argument("--mem", type=int, default=128, help="guest RAM, MiB")
    ap.add_argument("--channels", default="1,4",
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
