#!/usr/bin/env python3
"""A/B timing of Recur's CPU paths (RECUR_CPU) on the cases of shared/bench/cases.md.

Runs target/release/examples/bench_layers for each case x mode, alternating the paths within each
round (avx2, avx512, avx2, avx512, ...), each run under `flock /tmp/recur-cpu.lock` so that it
never overlaps another timed job on a shared machine, and prints the median of the rounds' medians
as a Markdown table (ratio = second path / first path).

    cargo build --release -p recur --example bench_layers
    python3 bench/ab_cpu_paths.py --threads 1 --rounds 3
    python3 bench/ab_cpu_paths.py --paths portable,avx2 --cases M --modes infer
"""

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_BINARY = ROOT / "target" / "release" / "examples" / "bench_layers"
CASES = ["S", "M", "L", "M-GRU", "M-RNN", "M-Bi", "charrnn"]


def run(path, case, mode, threads, min_seconds):
    env = dict(os.environ, RECUR_CPU=path, RAYON_NUM_THREADS=str(threads))
    command = ["flock", "/tmp/recur-cpu.lock", str(BENCH_BINARY), "--case", case, "--mode", mode,
               "--threads", str(threads), "--min-seconds", str(min_seconds), "--json"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", default="avx2,avx512", help="two RECUR_CPU values (default: avx2,avx512)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    a, b = args.paths.split(",")
    print(f"| case | mode | threads | {a} ms | {b} ms | {b} / {a} |")
    print("|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        for mode in args.modes.split(","):
            if case == "charrnn" and mode == "infer":
                continue
            times = {a: [], b: []}
            for _ in range(args.rounds):
                for path in (a, b):
                    times[path].append(run(path, case, mode, args.threads, args.min_seconds))
            ma, mb = statistics.median(times[a]), statistics.median(times[b])
            print(f"| {case} | {mode} | {args.threads} | {ma:.3g} | {mb:.3g} | {mb / ma:.2f} |", flush=True)


if __name__ == "__main__":
    main()
