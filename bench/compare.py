#!/usr/bin/env python3
"""Side-by-side timing of Recur and PyTorch on the cases of shared/bench/cases.md.

For each case x mode (train, infer) x thread count (1, 2) this times, in the same run and one
right after the other:
  - Recur: target/release/examples/bench_layers (built with cargo first if missing, or with
    --rebuild), with RAYON_NUM_THREADS set for the child process;
  - PyTorch: the same network and work in this process, after torch.set_num_threads(n);
both with the protocol of cases.md: 3 warm-up iterations, then iterations until at least
--min-seconds have passed, and the median. It prints a table with ratio = recur_ms / torch_ms
(below 1: Recur is faster); --json FILE also writes the rows.

    /work/venv/bin/python bench/compare.py                      # every case, about 10 minutes
    /work/venv/bin/python bench/compare.py --cases S,M --json bench/results.json
    /work/venv/bin/python bench/compare.py --modes train --threads 1 --rounds 3   # alternating

The work, as in crates/recur/benches/common/mod.rs (float32, CPU):
  - layers: input (T, B, I), initial state (h0[, c0]) and a fixed target (T, B, D*H), uniform in
    [-1, 1); train = forward + MSE(output, target) + backward to input, h0, c0 and parameters;
  - M-packed: M with lengths spread over [T/4, T], packed (PyTorch: pack_padded_sequence with
    enforce_sorted=False, pad_packed_sequence; Recur: forward_with_lengths), MSE on the padded output;
  - charrnn: Embedding(65, 128) -> LSTM(128, 256, 2 layers, batch_first) -> Linear(256, 65) on
    random tokens (B, T); train = forward + cross-entropy at every step + backward + Adam step;
  - infer = forward only under torch.inference_mode() (Recur: detached weights and inputs).

Allocator: bench_layers calls recur::keep_freed_memory() first, as the `recur` command does
(glibc keeps freed blocks of up to 32 MiB for reuse instead of unmapping them, so per-step
tensors are not page-faulted in afresh every step); --malloc-defaults runs it without, and the
header line says which. PyTorch runs with its own defaults.

Environment: the machine notes' hint about OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which slow down
a current numpy's OpenBLAS) is irrelevant here: PyTorch's CPU wheels use MKL and oneDNN, not
OpenBLAS, and Recur uses neither. Leave both variables as they are.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
BENCH_BINARY = ROOT / "target" / "release" / "examples" / "bench_layers"
WARM_UPS = 3

# name: (cell, layers, I, H, B, T, bidirectional, vocab)  -- the table of cases.md
CASES = {
    "S": ("lstm", 1, 32, 64, 16, 50, False, None),
    "M": ("lstm", 2, 128, 256, 32, 100, False, None),
    "L": ("lstm", 1, 512, 1024, 64, 50, False, None),
    "M-GRU": ("gru", 2, 128, 256, 32, 100, False, None),
    "M-RNN": ("rnn", 2, 128, 256, 32, 100, False, None),
    "M-Bi": ("lstm", 2, 128, 256, 32, 100, True, None),
    "charrnn": ("lstm", 2, 128, 256, 32, 100, False, 65),
    # M with lengths spread over [T/4, T] (packed_lengths); run packed, padded output and loss.
    "M-packed": ("lstm", 2, 128, 256, 32, 100, False, None),
}
PACKED = {"M-packed"}


def packed_lengths(batch, seq_len):
    """As crates/recur/benches/common/mod.rs: evenly over [T/4, T], shuffled by b -> 7b mod B."""
    low = seq_len // 4
    even = [low + b * (seq_len - low) // max(batch - 1, 1) for b in range(batch)]
    return [even[(7 * b) % batch] for b in range(batch)]
MODES = ("train", "infer")


def uniform(*shape, requires_grad=False):
    return (torch.rand(*shape) * 2 - 1).requires_grad_(requires_grad)


class CharRnn(nn.Module):
    def __init__(self, vocab, input_size, hidden_size, num_layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab, input_size)
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab)

    def forward(self, tokens):  # (B, T) -> (B*T, V)
        output, _ = self.lstm(self.embedding(tokens))
        return self.linear(output.reshape(-1, output.shape[-1]))


def torch_workload(name, mode):
    """Returns a function that runs one iteration of `name` in `mode`."""
    cell, layers, input_size, hidden, batch, seq_len, bidirectional, vocab = CASES[name]
    torch.manual_seed(2024)
    train = mode == "train"
    if vocab is not None:
        model = CharRnn(vocab, input_size, hidden, layers)
        tokens = torch.randint(vocab, (batch, seq_len))
        targets = torch.randint(vocab, (batch * seq_len,))
        if not train:
            model.eval()

            def infer():
                with torch.inference_mode():
                    model(tokens)

            return infer
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

        def step():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(tokens), targets).backward()
            optimizer.step()

        return step

    layer_type = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
    layer = layer_type(input_size, hidden, layers, bidirectional=bidirectional)
    states = layers * (2 if bidirectional else 1)
    x = uniform(seq_len, batch, input_size, requires_grad=train)
    h0 = uniform(states, batch, hidden, requires_grad=train)
    state = (h0, uniform(states, batch, hidden, requires_grad=train)) if cell == "lstm" else h0
    target = uniform(seq_len, batch, hidden * (2 if bidirectional else 1))
    leaves = [x, *(state if cell == "lstm" else (state,))]
    lengths = torch.tensor(packed_lengths(batch, seq_len)) if name in PACKED else None

    def forward():
        if lengths is None:
            return layer(x, state)[0]
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, _ = layer(packed, state)
        return nn.utils.rnn.pad_packed_sequence(output, total_length=seq_len)[0]

    if not train:
        layer.eval()

        def infer():
            with torch.inference_mode():
                forward()

        return infer

    def step():
        layer.zero_grad(set_to_none=True)
        for leaf in leaves:
            leaf.grad = None
        F.mse_loss(forward(), target).backward()

    return step


def time_torch(name, mode, threads, min_seconds):
    torch.set_num_threads(threads)
    run = torch_workload(name, mode)
    for _ in range(WARM_UPS):
        run()
    times = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def build_recur(rebuild):
    if BENCH_BINARY.exists() and not rebuild:
        return
    print("building bench_layers (cargo build --release -p recur --example bench_layers)...", file=sys.stderr)
    subprocess.run(
        ["cargo", "build", "--release", "-p", "recur", "--example", "bench_layers"], cwd=ROOT, check=True
    )


def time_recur(name, mode, threads, min_seconds, malloc_defaults):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    command = [
        str(BENCH_BINARY),
        "--case", name,
        "--mode", mode,
        "--threads", str(threads),
        "--min-seconds", str(min_seconds),
        "--json",
    ] + (["--malloc-defaults"] if malloc_defaults else [])  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench_layers failed on {name}/{mode}/{threads}:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])["median_ms"]


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_revision():
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def split_list(value, allowed, what):
    items = [item for item in value.split(",") if item]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        sys.exit(f"unknown {what} {', '.join(unknown)}; expected some of {', '.join(map(str, allowed))}")
    return items


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names (default: all)")
    parser.add_argument("--modes", default=",".join(MODES), help="train, infer or both (default: both)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per measurement (default: 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    parser.add_argument("--rebuild", action="store_true", help="rebuild bench_layers even if it exists")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time each row this many times, alternating Recur and PyTorch, and report the medians "
        "(the machine's speed drifts over minutes; alternating keeps both sides in the same phases)",
    )
    parser.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="run bench_layers with glibc's malloc settings (by default it calls recur::keep_freed_memory, "
        "as the recur command does)",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit(f"--rounds wants a whole number >= 1, got {args.rounds}")

    cases = split_list(args.cases, list(CASES), "case")
    modes = split_list(args.modes, MODES, "mode")
    try:
        threads = [int(n) for n in args.threads.split(",") if n]
    except ValueError:
        sys.exit(f"--threads wants comma-separated whole numbers, got {args.threads!r}")
    build_recur(args.rebuild)

    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {cpu_model()}, {os.cpu_count()} CPUs")
    print(f"# recur {git_revision()}  vs  torch {torch.__version__}  (python {platform.python_version()})")
    print(f"# median of >= {args.min_seconds:g} s after {WARM_UPS} warm-ups; ratio = recur_ms / torch_ms")
    if args.rounds > 1:
        print(f"# each row: median over {args.rounds} rounds, Recur and PyTorch alternating")
    malloc = "glibc defaults (--malloc-defaults)" if args.malloc_defaults else "recur::keep_freed_memory()"
    print(f"# Recur's malloc settings: {malloc}")
    header = f"{'case':<8} {'mode':<6} {'threads':>7} {'recur_ms':>10} {'torch_ms':>10} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    rows = []
    for name in cases:
        for mode in modes:
            for n in threads:
                recur_runs, torch_runs = [], []
                for _ in range(args.rounds):
                    recur_runs.append(time_recur(name, mode, n, args.min_seconds, args.malloc_defaults))
                    torch_runs.append(time_torch(name, mode, n, args.min_seconds))
                recur_ms, torch_ms = statistics.median(recur_runs), statistics.median(torch_runs)
                row = {
                    "case": name,
                    "mode": mode,
                    "threads": n,
                    "recur_ms": round(recur_ms, 4),
                    "torch_ms": round(torch_ms, 4),
                    "ratio": round(recur_ms / torch_ms, 3),
                }
                if args.rounds > 1:
                    row["recur_rounds_ms"] = [round(t, 4) for t in recur_runs]
                    row["torch_rounds_ms"] = [round(t, 4) for t in torch_runs]
                rows.append(row)
                print(f"{name:<8} {mode:<6} {n:>7} {recur_ms:>10.3f} {torch_ms:>10.3f} {row['ratio']:>6.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}")


if __name__ == "__main__":
    main()
