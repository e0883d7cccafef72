#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mfrdma against a QEMU peer in one bench run: the same guest RAM (mfrdma-bench's synthetic
guest of --size and --mix, written once with mfrdma-bench --dump-guest) migrated over loopback
  - by mfrdma (mfrdma-bench, one case per repetition, with its raw tcp baseline),
    compression off, zstd and auto, and
  - between two QEMUs (Debian's qemu-system-x86, /usr/bin) with multifd, compression none
    and zstd,
with the same channels and the same --max-bandwidth, alternately, repetition by repetition,
so drift of the shared machine hits every mode alike. Each destination is on fresh memory
the way it is by default: mfrdma-bench's agent maps fresh anonymous memory (MADV_HUGEPAGE
unless --no-thp); QEMU's memory-backend-ram is fresh anonymous memory, which QEMU madvises
for huge pages itself. How much of each destination huge pages backed at the end is read
from smaps (mfrdma: MfrPlacement; QEMU: its RAM mapping's AnonHugePages). The QEMU source maps the dumped file privately (share=off) and stays
paused (-S): an idle guest, as mfrdma-bench's dirty rate 0. CPU: mfrdma's engine counts the
CPU of its migration threads (MfrStats.cpu_s); for QEMU the process's CPU from
/proc/PID/stat over the migration minus its vCPU threads (paused: none). Prints one
markdown table (medians) and writes every run to --json."""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "qemu"))
import migtest  # noqa: E402

GIB = 1024 ** 3


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (125M, 1G, 0)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


proc_cpu_s = migtest.proc_cpu_s


def huge_bytes(pid, size):
    """AnonHugePages of the process's mappings of at least size bytes (its guest RAM)."""
    total, cur = 0, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                cur = int(m.group(2), 16) - int(m.group(1), 16)
            elif line.startswith("AnonHugePages:") and cur is not None and cur >= size:
                total += int(line.split()[1]) * 1024
    return total


class Qemu:
    def __init__(self, binary, wd, name, size, extra):
        self.log = open(os.path.join(wd, name + ".log"), "w")
        qmp = os.path.join(wd, name + ".qmp")
        mb = size >> 20
        args = [binary, "-name", f"{name},debug-threads=on", "-M", "pc", "-accel", "tcg",
                "-m", f"{mb}M", "-nodefaults", "-display", "none", "-S",
                "-qmp", f"unix:{qmp},server=on,wait=off"] + extra
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.qmp = migtest.Qmp(qmp, 30)
        except Exception:
            self.kill()
            with open(self.log.name) as f:
                raise RuntimeError(f"{name}: QEMU did not start: {f.read()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def qemu_run(binary, wd, ram_file, size, channels, compress, cap, timeout):
    mb = size >> 20
    src = Qemu(binary, wd, "src", size,
               ["-object", f"memory-backend-file,id=mem0,size={mb}M,mem-path={ram_file},"
                "share=off", "-machine", "memory-backend=mem0"])
    dst = None
    try:
        dst = Qemu(binary, wd, "dst", size,
                   ["-object", f"memory-backend-ram,id=mem0,size={mb}M",
                    "-machine", "memory-backend=mem0", "-incoming", "defer"])
        for vm in (src, dst):
            vm.qmp.cmd("migrate-set-capabilities",
                       capabilities=[{"capability": "multifd", "state": True}])
            vm.qmp.cmd("migrate-set-parameters", **{"multifd-channels": channels,
                                                     "multifd-compression": compress})
        port = migtest.free_port_pair("127.0.0.1")
        uri = f"tcp:127.0.0.1:{port}"
        dst.qmp.cmd("migrate-incoming", uri=uri)
        # 0: no cap; QEMU's own default would be 128 MiB/s
        src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": 300,
                                                  "max-bandwidth": cap or 100 * GIB})
        cpu0 = (proc_cpu_s(src.proc.pid), proc_cpu_s(dst.proc.pid))
        src.qmp.cmd("migrate", uri=uri)

        def done():
            info = src.qmp.cmd("query-migrate")
            return info if info.get("status") in ("completed", "failed", "cancelled") else None
        info = migtest.wait_until("QEMU's migration", done, timeout, poll=0.01)
        if info["status"] != "completed":
            return {"status": info["status"], "error": info.get("error-desc")}
        # the destination finishes loading a moment after the source says completed
        migtest.wait_until("the destination", lambda: dst.qmp.cmd("query-migrate").get(
            "status") in ("completed", None), 30)
        # QEMU 7.2 counts (and rate-limits) page bytes as "transferred" even when zstd
        # shrank them: no wire figure for a compressed run
        transferred = info.get("ram", {}).get("transferred")
        return {"status": "completed", "total_ms": info["total-time"],
                "setup_ms": info.get("setup-time"), "downtime_ms": info.get("downtime"),
                "wire_bytes": transferred if compress == "none" else None,
                "qemu_transferred": transferred,
                "src_cpu_s": proc_cpu_s(src.proc.pid) - cpu0[0],
                "dst_cpu_s": proc_cpu_s(dst.proc.pid) - cpu0[1],
                "dst_huge_bytes": huge_bytes(dst.proc.pid, size)}
    finally:
        for vm in (dst, src):
            if vm:
                vm.kill()


def mfrdma_run(bench, wd, size, mix, channels, cap, comp, extra):
    out = os.path.join(wd, "mfrdma")
    shutil.rmtree(out, ignore_errors=True)
    spec = f"tcp/{channels}/{size >> 20}M/{mix}/0" + ("" if comp == "none" else f"/{comp}")
    # the warm-up migration (discarded) backs the host's pages as a previous run does for
    # the QEMU that follows: see "first touch" in docs/performance.md
    cmd = [bench, "-c", spec, "--repeats", "1", "--warmup", "1", "-o", out,
           "--max-bandwidth", str(cap)] + extra
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with open(os.path.join(out, "results.json")) as f:
        case = json.load(f)["cases"][0]
    if case["error"] or r.returncode != 0:
        return {"status": "failed", "error": case["error"] or r.stderr[-400:]}
    fig = {k: v["median"] for k, v in case["figures"].items()}
    gib = size / GIB
    return {"status": "completed", "total_ms": fig["total_ms"], "setup_ms": fig["setup_ms"],
            "downtime_ms": fig["downtime_ms"],
            "wire_bytes": fig["gib_s_wire"] * GIB * fig["transfer_ms"] / 1000,
            # per GiB handled (every page, as QEMU's figures below are per GiB of RAM)
            "src_cpu_s": fig["src_cpu_s_per_gib"] * gib,
            "dst_cpu_s": fig["dst_cpu_s_per_gib"] * gib,
            "base_gib_s": fig["base_gib_s_fresh"],
            "dst_huge_bytes": None if fig.get("dst_huge_pct") is None
            else fig["dst_huge_pct"] / 100 * size,
            "base_src_cpu_s_per_gib": fig["base_src_cpu_s_per_gib"],
            "base_dst_cpu_s_per_gib": fig["base_dst_cpu_s_per_gib_fresh"]}


def med(runs, key):
    vals = [r[key] for r in runs if r.get("status") == "completed" and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def cap_label(cap):
    return f"{cap / 1e6:.0f} MB/s" if cap else "none"


def table(results, size, channels, mix):
    gib = size / GIB
    out = [f"| {size >> 20} MiB guest, mix {mix}, {channels} channels | cap | runs ok | "
           "total ms | GiB/s (RAM / total) | wire MB | src CPU s/GiB | dst CPU s/GiB | "
           "dst huge pages | vs QEMU, same compression and cap: GiB/s, src CPU, dst CPU |",
           "|---|---|---|---|---|---|---|---|---|---|"]

    def figures(runs):
        t = med(runs, "total_ms")
        sc, dc = med(runs, "src_cpu_s"), med(runs, "dst_cpu_s")
        return (gib / (t / 1000) if t else None, sc and sc / gib, dc and dc / gib)
    qemu = {(comp, cap): figures(runs) for name, comp, cap, runs in results
            if name.startswith("QEMU")}

    def f(v, fmt):
        return "-" if v is None else fmt.format(v)
    for name, comp, cap, runs in results:
        ok = [r for r in runs if r.get("status") == "completed"]
        gibs, scg, dcg = figures(runs)
        w = med(runs, "wire_bytes")
        hb = med(runs, "dst_huge_bytes")
        huge = "-" if hb is None else f"{100 * hb / size:.0f}%"
        vs = "-"
        q = qemu.get(("zstd" if comp == "auto" else comp, cap))
        if name.startswith("mfrdma") and q and all(q) and gibs and scg and dcg:
            vs = f"{gibs / q[0]:.2f}x, {scg / q[1]:.2f}x, {dcg / q[2]:.2f}x"
        out.append(f"| {name} | {cap_label(cap)} | {len(ok)}/{len(runs)} | "
                   f"{f(med(runs, 'total_ms'), '{:.0f}')} | {f(gibs, '{:.3f}')} | "
                   f"{f(w and w / 1e6, '{:.0f}')} | {f(scg, '{:.2f}')} | {f(dcg, '{:.2f}')} | "
                   f"{huge} | {vs} |")
    # auto and zstd against off, per cap (issue 11: uncapped auto >= 0.95x off's GiB/s; at a
    # cap auto <= 0.6x off's total time)
    for cap in sorted({c for _, _, c, _ in results}):
        mine = {comp: runs for name, comp, c, runs in results
                if name.startswith("mfrdma") and c == cap}
        off = med(mine.get("none", []), "total_ms")
        parts = []
        for comp in ("zstd", "auto"):
            t = med(mine.get(comp, []), "total_ms")
            if off and t:
                parts.append(f"{comp} {t / off:.2f}x the total time of off "
                             f"({off / t:.2f}x its GiB/s)")
        if parts:
            out.append("")
            out.append(f"mfrdma at cap {cap_label(cap)}: " + "; ".join(parts))
    mfr = [runs for name, comp, cap, runs in results
           if name.startswith("mfrdma") and not cap and comp == "none"]
    base = med(mfr[0], "base_gib_s") if mfr else None
    if base:
        gibs = figures(mfr[0])[0]
        out.append("")
        out.append(f"raw tcp baseline of the same runs ({channels} streams into fresh memory, "
                   f"uncapped): {base:.3f} GiB/s, sender "
                   f"{med(mfr[0], 'base_src_cpu_s_per_gib'):.2f} / receiver "
                   f"{med(mfr[0], 'base_dst_cpu_s_per_gib'):.2f} CPU s/GiB; uncapped mfrdma "
                   f"(tcp) {gibs / base:.2f}x its GiB/s (guest RAM / total time: zero pages "
                   "count, as for QEMU)")
    return "\n".join(out)


def qemu_version(binary):
    out = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"version (\d+\.\d+)", out)
    return m.group(1) if m else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--qemu", default="/usr/bin/qemu-system-x86_64",
                    help="the peer QEMU (default: Debian's qemu-system-x86)")
    ap.add_argument("--size", type=parse_size, default=1 * GIB)
    ap.add_argument("--mix", default="40:40:20", help="random:compressible:zero percent")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--max-bandwidth", default="0",
                    help="bytes/s on the wire for both (binary suffixes: 125M); 0 = none; "
                         "comma-separated: every mode at every cap, e.g. 0,125M")
    ap.add_argument("--compress", default="none,zstd",
                    help="QEMU multifd compressions to run (none, zstd)")
    ap.add_argument("--mfrdma-compress", default="none,zstd,auto",
                    help="mfrdma compressions to run (none, zstd, auto); each is compared "
                         "with QEMU at the same compression (auto: with QEMU's zstd)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="discarded rounds of every mode first (default 1)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", help="write every run here")
    ap.add_argument("--no-thp", action="store_true",
                    help="mfrdma's destination without MADV_HUGEPAGE (QEMU's is its own)")
    ap.add_argument("--table-from", metavar="JSON",
                    help="only print the table of an earlier run's --json (same options)")
    args = ap.parse_args()
    caps = [parse_size(c) for c in args.max_bandwidth.split(",") if c]
    if args.table_from:
        with open(args.table_from) as f:
            runs = json.load(f)["runs"]
        results = []
        for key, r in runs.items():
            name, _, cap = key.partition(" @ ")
            comp = re.search(r"(none|zstd|auto)\)$", name)
            results.append((name, comp.group(1) if comp else "none",
                            int(cap) if cap else caps[0], r))
        print(table(results, args.size, args.channels, args.mix))
        return
    if not os.access(args.qemu, os.X_OK):
        print(f"SKIP: {args.qemu} missing (scripts/setup.sh installs qemu-system-x86)")
        sys.exit(77)
    bench = os.path.join(os.path.abspath(args.build), "bench", "mfrdma-bench")
    subprocess.run(["ninja", "-C", args.build, "bench/mfrdma-bench"], check=True,
                   stdout=subprocess.DEVNULL)
    comps = [c for c in args.compress.split(",") if c]
    extra = ["--no-thp"] if args.no_thp else []
    mfr_modes = [(f"mfrdma (tcp, {c})", c) for c in args.mfrdma_compress.split(",") if c]
    modes = mfr_modes + [(f"QEMU {qemu_version(args.qemu)} multifd (tcp, {c})", c)
                         for c in comps]
    results = [(n, c, cap, []) for cap in caps for n, c in modes]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="mfrdma-qemu-peer-", dir=base) as wd:
        ram = os.path.join(wd, "guest.ram")
        subprocess.run([bench, "-c", f"tcp/1/{args.size >> 20}M/{args.mix}/0",
                        "--dump-guest", ram], check=True)
        for rep in range(args.warmup + args.repeats):
            for name, comp, cap, runs in results:
                if name.startswith("mfrdma"):
                    r = mfrdma_run(bench, wd, args.size, args.mix, args.channels, cap, comp,
                                   extra)
                else:
                    r = qemu_run(args.qemu, wd, ram, args.size, args.channels, comp, cap,
                                 args.timeout)
                warm = rep < args.warmup
                print(f"{'warm-up' if warm else 'run'} {rep + 1} {name} (cap "
                      f"{cap_label(cap)}): {json.dumps(r)}", flush=True)
                if not warm:
                    runs.append(r)
    print()
    print(table(results, args.size, args.channels, args.mix))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": sys.argv,
                       "runs": {f"{n} @ {cap}": r for n, _, cap, r in results}}, f, indent=1)


if __name__ == "__main__":
    main()
