#!/usr/bin/env python3
"""Where kube-apiserver's CPU goes in the initial sync against the floor (issue 28).

Reads the two CPU profiles a profiled scale run leaves in target/bench:

    SECRET_RELAY_BENCH_PPROF_SECS=20 SECRET_RELAY_BENCH_INITIAL_ONLY=true \\
        SECRET_RELAY_BENCH_OUT=/tmp/prof hack/bench.sh 10000
    python3 hack/bench_profile.py [N]        # N = 10000 by default

or of the whole of both phases, each in profiles of S seconds back to back from its start
(apiserver-PHASE-N-K.pprof, K = 0, 1, ...; the run waits for the last before its next step,
so at most S seconds of an idle API server follow the phase in it):

    SECRET_RELAY_BENCH_PPROF_SECS=5 SECRET_RELAY_BENCH_PPROF_WHOLE=true \\
        SECRET_RELAY_BENCH_INITIAL_ONLY=true SECRET_RELAY_BENCH_OUT=/tmp/prof hack/bench.sh 10000
    python3 hack/bench_profile.py N --whole  # writes BENCHMARKS-sync-profile-whole.md

(apiserver-floor-N.pprof: the benchmark's own Secret POSTs and status PATCHes, no operator;
apiserver-initial-sync-N.pprof: the operator's initial sync), and writes
BENCHMARKS-sync-profile.md at the repo root (SECRET_RELAY_BENCH_OUT elsewhere).

Each profile's samples are summed by category with `go tool pprof -top -focus=REGEX` (every
node, so the sum of the flat column is all the samples under the matched frames); categories
may overlap (a CRD watch is served under ListResource). A status merge PATCH costs the same in
both phases, so the sync's figures are scaled by floor PATCH CPU / sync PATCH CPU: per the same
number of ExternalSecrets as the floor's window, what the sync spends beyond the floor, by
category. Needs the Go toolchain on PATH.
"""

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CATEGORIES = [
    ("all samples", "."),
    ("status PATCH (patchResource)", r"patchResource"),
    ("POST: Secrets and Events (createHandler)", r"createHandler"),
    ("watch serving (WatchServer, cacheWatcher)", r"WatchServer|serveWatch|cacheWatcher"),
    ("LIST requests and CRD watches (ListResource; holds most of the watch serving above)",
     r"ListResource"),
    ("watch cache fed from etcd (watchChan, watchCache)",
     r"watchChan|watchCache|Cacher..dispatch|Cacher..processEvent"),
    ("Go's garbage collector (gcBgMarkWorker)", r"gcBgMarkWorker"),
    ("authentication and the filter chain around each request", r"withAuthentication"),
]


def seconds(v):
    for unit, scale in (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("s", 1.0)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * scale
    return float(v)


def total(paths, focus):
    out = subprocess.run(
        ["go", "tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0",
         f"-focus={focus}", *paths],
        capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "flat%" in line) + 1
    return sum(seconds(line.split()[0]) for line in lines[start:] if line.strip())


def main():
    args = [a for a in sys.argv[1:] if a != "--whole"]
    whole = "--whole" in sys.argv[1:]
    n = int(args[0]) if args else 10000
    bench = os.path.join(ROOT, "target", "bench")
    def profiles(phase):
        if not whole:
            return [os.path.join(bench, f"apiserver-{phase}-{n}.pprof")]
        found = sorted(glob.glob(os.path.join(bench, f"apiserver-{phase}-{n}-*.pprof")))
        if not found:
            sys.exit(f"no apiserver-{phase}-{n}-K.pprof in {bench}")
        return found
    floor = profiles("floor")
    sync = profiles("initial-sync")
    f = {name: total(floor, rx) for name, rx in CATEGORIES}
    s = {name: total(sync, rx) for name, rx in CATEGORIES}
    patch = CATEGORIES[1][0]
    scale = f[patch] / s[patch]
    everything = CATEGORIES[0][0]
    rows = []
    for name, _ in CATEGORIES:
        scaled = s[name] * scale
        rows.append(
            f"| {name} | {f[name]:.2f} | {s[name]:.2f} | {scaled:.2f} | {scaled - f[name]:+.2f} "
            f"({100 * (scaled - f[name]) / f[everything]:+.1f} %) |")
    md = [
        "# kube-apiserver in the initial sync against the floor"
        + (", whole phases" if whole else ""),
        "",
        f"Made by `python3 hack/bench_profile.py {n}{' --whole' if whole else ''}` from "
        f"`target/bench/apiserver-floor-{n}{'-K' if whole else ''}.pprof` "
        f"and `target/bench/apiserver-initial-sync-{n}{'-K' if whole else ''}.pprof` "
        f"({len(floor)} and {len(sync)} profiles; method: its docstring). CPU "
        "seconds of kube-apiserver's samples under each category in each profile's window ("
        + ("the whole phase, from its first request, and at most one chunk's seconds of an "
           "idle API server after it" if whole else "a window of the phase's middle")
        + "); the "
        f"sync's scaled by {scale:.3f} (floor status PATCH CPU / sync status PATCH CPU) to the "
        "floor's number of ExternalSecrets.",
        "",
        "| category | floor, s | initial sync, s | initial sync scaled, s | beyond the floor, s (% of the floor's API server CPU) |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    out = os.environ.get("SECRET_RELAY_BENCH_OUT", ROOT)
    page = "BENCHMARKS-sync-profile-whole.md" if whole else "BENCHMARKS-sync-profile.md"
    with open(os.path.join(out, page), "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
