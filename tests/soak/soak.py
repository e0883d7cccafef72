#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Soak: back-to-back tcp migrations on this host with random guest sizes, block counts,
channel counts, page mixes, dirty rates and writer counts, every one verified. Three of four
run in one process (`mfrdma demo`: digests and a memcmp of every byte); one of four as a
`mfrdma listen` / `mfrdma migrate` pair (digests checked by both). Each run's settings come
from --seed, so a failing run can be repeated alone (its command line is printed).
Usage: tests/soak/soak.py [--tool build/tools/mfrdma] [--runs N] [--seed S] [--max-mib M]
"""
import argparse
import random
import re
import subprocess
import sys
import time

TOKEN = "00112233445566778899aabbccddeeff"


def settings(rnd, max_mib):
    blocks = rnd.randint(1, 4)
    per_block = rnd.randint(1, max(1, max_mib // blocks))
    r = rnd.randint(0, 100)
    c = rnd.randint(0, 100 - r)
    return [
        "--size", "%dM" % (per_block * blocks), "--blocks", str(blocks),
        "--channels", str(rnd.randint(1, 8)),
        "--mix", "%d:%d:%d" % (r, c, 100 - r - c),
        "--dirty-rate", str(rnd.choice([0, 0, 4, 16, 64, 256])),
        "--writers", str(rnd.randint(1, 3)),
        "--seed", str(rnd.randint(1, 1 << 30)),
        # a high dirty rate must still end, verified: switch over after a few rounds
        "--max-rounds", str(rnd.randint(2, 10)), "--force-switchover",
    ]


def run_demo(tool, args):
    p = subprocess.run([tool, "demo", "--transport", "tcp"] + args, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    ok = (p.returncode == 0 and "verification: OK" in p.stdout
          and "memcmp: OK" in p.stdout)
    return ok, p.stdout + p.stderr


def run_pair(tool, args):
    listen = subprocess.Popen([tool, "listen", "tcp:127.0.0.1:0", "--token", TOKEN],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    try:
        uri = None
        for line in listen.stdout:
            m = re.match(r"listening: (\S+)", line)
            if m:
                uri = m.group(1)
                break
        if not uri:
            return False, "listen did not start"
        src = subprocess.run([tool, "migrate", uri, "--token", TOKEN] + args,
                             capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
        lout, lerr = listen.communicate(timeout=60)
        ok = (src.returncode == 0 and listen.returncode == 0
              and "verification: OK" in src.stdout and "verification: OK" in lout)
        return ok, src.stdout + src.stderr + lout + lerr
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tool", default="build/tools/mfrdma")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--max-mib", type=int, default=96, help="largest guest, MiB")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    print("soak: %d tcp migrations, seed %d" % (a.runs, a.seed), flush=True)
    t0 = time.monotonic()
    passed = failed = 0
    mib = 0
    for i in range(a.runs):
        args = settings(rnd, a.max_mib)
        pair = rnd.random() < 0.25
        try:
            ok, out = (run_pair if pair else run_demo)(a.tool, args)
        except subprocess.TimeoutExpired:
            ok, out = False, "timed out"
        mib += int(args[1][:-1])
        if ok:
            passed += 1
        else:
            failed += 1
            print("soak: run %d FAILED: %s %s\n%s" % (i, "listen/migrate" if pair else "demo",
                                                      " ".join(args), out[-2000:]), flush=True)
    dt = time.monotonic() - t0
    print("soak: %d runs, %d MiB of guest RAM in %.0f s (%.2f s a run)" % (
        a.runs, mib, dt, dt / max(a.runs, 1)))
    print("soak: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
