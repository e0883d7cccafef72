#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Side by side, with the same patched QEMU binary and QEMU's A-B test guest, in one run:
  --where host  rdma+multifd: (libmfrdma over tcp; without libmfrdma's digest check, the
                default, and with it: it runs within the downtime) vs QEMU's own multifd
                over tcp
  --where vm    rdma+multifd: (rdma on rxe0, with and without digests) vs legacy rdma: vs
                multifd over tcp
                (run it inside the soft-RoCE VM: bench/qemu-bench.sh does)
For each mode, --repeats migrations of a fresh guest; prints a markdown table (median of the
repeats: total time, downtime, setup, bytes, source and destination CPU from /proc/PID/stat)
and, with --json FILE, every run. The downtime limit is raised after 3 dirty syncs so the A-B
guest (it dirties ~100 MB in a loop) switches over, as QEMU's own migration test does.
Where the downtime goes in rdma+multifd: (the source QEMU's mfrdma_* trace events): the pages
left at the stop, the final round barrier, COMPLETE and release (digests, when on), and the
round barriers QEMU waited for after each dirty sync."""

import argparse
import contextlib
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../qemu"))
import migtest  # noqa: E402


TRACE = ["-trace", "mfrdma_*"]


def delta(after, before):
    return {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()
            if v - before.get(k, 0.0) >= 0.01}


def one_run(qemu, boot, wd, mode, host, mem, timeout, profile=False, dst_prealloc=False):
    src = migtest.Vm(qemu, wd, "src", mem, boot, extra=TRACE)
    dst = None
    try:
        migtest.wait_until("guest printing B", lambda: src.serial_count() >= 2, 120)
        dst = migtest.Vm(qemu, wd, "dst", mem, boot, incoming=True, extra=TRACE,
                         prealloc=dst_prealloc)
        before = (migtest.thread_cpu_s(src.proc.pid), migtest.thread_cpu_s(dst.proc.pid),
                  migtest.system_cpu_s())
        _, cpu0 = migtest.start_migration(src, dst, mode, host)
        info = migtest.finish_migration(src, dst, cpu0, timeout)
        after = (migtest.thread_cpu_s(src.proc.pid), migtest.thread_cpu_s(dst.proc.pid),
                 migtest.system_cpu_s())
        s = migtest.summary(info)
        if profile:
            # per thread (live ones: libmfrdma's channel threads may have exited already),
            # and the machine's CPU by kind over the migration
            s["src_threads"] = delta(after[0], before[0])
            s["dst_threads"] = delta(after[1], before[1])
            s["system"] = delta(after[2], before[2])
        if s["status"] == "completed":
            # the source completes when it has sent everything: the destination may still
            # be loading (multifd's receivers), and its RAM is final once it is paused
            migtest.wait_until("the destination paused", lambda: dst.status() == "paused", 30)
            s["ram_identical"] = migtest.ram_identical(src, dst)
        if profile and mode.scheme == "rdma+multifd":
            with contextlib.suppress(Exception):
                migtest.wait_until("libmfrdma stats", lambda: os.path.exists(src.stats) and
                                   os.path.exists(dst.stats), 20)
                for side, vm in (("src_mfr", src), ("dst_mfr", dst)):
                    st = vm.mfrdma_stats()
                    s[side] = {k: st.get(k) for k in (
                        "setup_ms", "registration_ms", "registration_cpu_s", "transfer_ms",
                        "downtime_ms", "rounds", "packets", "cpu_s", "first_data_ms",
                        "region_wait_ms")}
                    s[side]["channel_cpu_s"] = [c["cpu_s"] for c in st.get("channel", [])]
        done = src.traces("mfrdma_save_complete")
        if done:
            s.update({k.replace("_us", "_ms"): v / 1000 for k, v in done[-1].items()})
            s["sync_barriers_ms"] = sum(t["barrier_us"] for t in
                                        src.traces("mfrdma_save_barrier")) / 1000
        return s
    finally:
        migtest.kill_quietly(dst, src)


def median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def busy_s(run):
    """The machine's busy CPU seconds over the migration (--profile): every process, the
    kernel and softirq, so rxe's work counts wherever it ran."""
    sysc = run.get("system")
    return None if sysc is None else round(sum(v for k, v in sysc.items()
                                                if k not in ("idle", "iowait", "steal")), 2)


def table(results, mem):
    prof = any("system" in r for _, runs in results for r in runs)
    out = [f"| mode ({mem} MiB A-B guest) | runs ok | total ms | downtime ms | setup ms | "
           "transferred MB | source CPU s | dest CPU s |" +
           (" machine busy CPU s |" if prof else "")
           + " RAM identical |", "|---" * (10 if prof else 9) + "|"]
    for name, runs in results:
        ok = [r for r in runs if r["status"] == "completed"]
        for r in ok:
            r["busy_s"] = busy_s(r)

        def f(key, scale=1.0, fmt="{:.0f}"):
            v = median(ok, key)
            return "-" if v is None else fmt.format(v / scale)
        out.append(f"| {name} | {len(ok)}/{len(runs)} | {f('total_ms')} | "
                   f"{f('downtime_ms')} | {f('setup_ms')} | {f('transferred', 1e6)} | "
                   f"{f('cpu_src_s', fmt='{:.2f}')} | {f('cpu_dst_s', fmt='{:.2f}')} | "
                   + (f"{f('busy_s', fmt='{:.2f}')} | " if prof else "") +
                   f"{'yes' if ok and all(r.get('ram_identical') for r in ok) else 'no'} |")
    return "\n".join(out)


PHASES = [("pages_ms", "pages left at the stop"), ("barrier_ms", "final barrier"),
          ("complete_ms", "COMPLETE + release"), ("verify_ms", "of which digests"),
          ("sync_barriers_ms", "round barriers after dirty syncs (whole migration)")]


def phase_table(results):
    """Medians of the source's trace phases, ms, for the rdma+multifd modes."""
    rows = [(name, [r for r in runs if r["status"] == "completed" and "pages_ms" in r])
            for name, runs in results]
    rows = [(n, ok) for n, ok in rows if ok]
    if not rows:
        return ""
    out = ["| mode | downtime ms | " + " | ".join(f"{label} ms" for _, label in PHASES) + " |",
           "|---" * (len(PHASES) + 2) + "|"]
    for name, ok in rows:
        cells = [f"{median(ok, 'downtime_ms'):.0f}"] + [f"{median(ok, k):.1f}"
                                                         for k, _ in PHASES]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--where", choices=["host", "vm"], default="host")
    ap.add_argument("--build", default=os.path.join(migtest.ROOT, "build"))
    ap.add_argument("--mem", type=int, default=128, help="guest RAM, MiB")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="write every run here")
    ap.add_argument("--modes", help="comma-separated subset of: mfrdma, verify, legacy, "
                    "multifd (default: host mfrdma,verify,multifd; vm mfrdma,legacy,multifd)")
    ap.add_argument("--dst-prealloc", action="store_true",
                    help="destination QEMUs populate their RAM at start (prealloc=on), every "
                    "mode alike: first touch of guest RAM off the migration's clock")
    ap.add_argument("--profile", action="store_true",
                    help="also record per-thread CPU of both QEMUs, the machine's CPU by kind "
                    "and libmfrdma's own stats for each run")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    qemu, qemu_src = migtest.qemu_binary(build, os.environ.get("CI") == "true")
    if args.where == "host":
        host = "127.0.0.1"
        transport, default = "tcp", "mfrdma,verify,multifd"
    else:
        host = os.environ.get("MFR_TEST_RDMA_ADDR")
        if not host:
            sys.exit("--where vm runs inside the soft-RoCE VM (MFR_TEST_RDMA_ADDR unset)")
        # digests cost every mode the same full read of RAM at the switchover; in the VM
        # each run is long, so the verify row is asked for by name
        transport, default = "rdma", "mfrdma,legacy,multifd"
    known = {"mfrdma": lambda: migtest.mode_mfrdma(transport, args.channels, verify=False),
             "verify": lambda: migtest.mode_mfrdma(transport, args.channels, verify=True),
             "legacy": migtest.mode_legacy_rdma,
             "multifd": lambda: migtest.mode_multifd_tcp(args.channels)}
    names = (args.modes or default).split(",")
    if any(n not in known for n in names) or (args.where == "host" and "legacy" in names):
        sys.exit(f"--modes: choose from {', '.join(known)} (legacy in the VM only)")
    modes = [known[n]() for n in names]
    results = [(m.name, []) for m in modes]
    with migtest.workdir("mfrdma-qemu-bench-") as wd:
        boot = os.path.join(wd, "boot.img")
        migtest.bootblock(qemu_src, boot)
        # interleaved, so drift of the shared machine hits every mode alike
        for rep in range(args.repeats):
            for m, (_, runs) in zip(modes, results):
                r = one_run(qemu, boot, wd, m, host, args.mem, args.timeout, args.profile,
                            args.dst_prealloc)
                print(f"run {rep + 1} {m.name}: {r}", flush=True)
                runs.append(r)
    print()
    print(table(results, args.mem))
    print()
    print(phase_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: runs for name, runs in results}, f, indent=1)


if __name__ == "__main__":
    main()
