#!/usr/bin/env python3
"""Same character model, same data, same optimizer, same steps: Recur's `recur train` against
PyTorch. Issue 5's quality check: validation bits per character within 2% of each other, and the
wall time of both.

    /work/venv/bin/python bench/charlm_vs_torch.py                       # alice29, 400 steps
    /work/venv/bin/python bench/charlm_vs_torch.py --steps 200 --threads 1
    /work/venv/bin/python bench/charlm_vs_torch.py --rounds 3            # alternating, medians

Both sides (float32, CPU, --threads threads):
  - the text's characters sorted by code point are the vocabulary; the last 5% validates;
  - Embedding(V, 64) -> LSTM(64, 256, 2 layers, batch_first) -> Linear(256, V), PyTorch's default
    initialisation (each library draws its own random numbers);
  - truncated BPTT: the training text cut into 32 contiguous rows, windows of 64 characters, the
    state carried (detached) between windows and reset at each pass;
  - Adam (lr 2e-3, PyTorch defaults otherwise), gradient norm clipped to 5, the cosine schedule of
    `recur train` (linear warm-up over min(steps/50, 100) steps, then cosine towards lr/20);
  - validation: the validation text cut into up to 32 rows, windows of 64, state carried, mean
    cross-entropy in nats -> bits per character.
Recur runs as `target/release/recur train --text FILE ...`; its validation loss is read from
metrics.jsonl. Wall time: the whole `recur train` process against PyTorch's loop plus its final
validation (both include one validation pass).

With `--rounds N` the two runs alternate N times (Recur, PyTorch, Recur, ...) and the medians are
reported, with every round: a shared machine's speed drifts by tens of percent within minutes, on
both sides and not together, so one pair of runs can read either way.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RECUR = ROOT / "target" / "release" / "recur"
DEFAULT_TEXT = Path("/work/shared/data/charlm/canterbury/alice29.txt")
E, H, L, B, T, LR, CLIP, VAL = 64, 256, 2, 32, 64, 2e-3, 5.0, 0.05


class CharLm(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.embedding = nn.Embedding(vocab, E)
        self.rnn = nn.LSTM(E, H, L, batch_first=True)
        self.linear = nn.Linear(H, vocab)

    def forward(self, x, state=None):
        out, state = self.rnn(self.embedding(x), state)
        return self.linear(out), state


def rows(ids, batch):
    n = len(ids) // batch
    return torch.tensor(ids[: n * batch]).view(batch, n)


def lr_at(t, steps):
    warmup, eta_min = min(steps // 50, 100), LR / 20
    if t < warmup:
        return LR * (t + 1) / (warmup + 1)
    s = min(t - warmup, steps)
    return eta_min + (LR - eta_min) * (1 + math.cos(math.pi * s / steps)) / 2


def evaluate(model, ids):
    batch = max(1, min(B, (len(ids) - 1) // T))
    data = rows(ids, batch)
    windows = (data.shape[1] - 1) // T
    total, count, state = 0.0, 0, None
    model.eval()
    with torch.no_grad():
        for w in range(windows):
            x, y = data[:, w * T : (w + 1) * T], data[:, w * T + 1 : (w + 1) * T + 1]
            logits, state = model(x, state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            total += loss.item() * y.numel()
            count += y.numel()
    model.train()
    return total / count


def torch_run(ids, vocab, steps, seed):
    torch.manual_seed(seed)
    split = len(ids) - round(len(ids) * VAL)
    train, val = ids[:split], ids[split:]
    model = CharLm(vocab)
    opt = torch.optim.Adam(model.parameters(), lr=lr_at(0, steps))
    data = rows(train, B)
    windows = (data.shape[1] - 1) // T
    start = time.perf_counter()
    state, position = None, 0
    for step in range(steps):
        x, y = data[:, position * T : (position + 1) * T], data[:, position * T + 1 : (position + 1) * T + 1]
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        for group in opt.param_groups:
            group["lr"] = lr_at(step + 1, steps)
        state = tuple(s.detach() for s in state)
        position += 1
        if position >= windows:
            position, state = 0, None
    val_loss = evaluate(model, val)
    return val_loss, time.perf_counter() - start


def recur_run(text, steps, threads, seed):
    if not RECUR.exists():
        subprocess.run(["cargo", "build", "--release", "-p", "recur-cli"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as out:
        command = [
            str(RECUR), "train", "--text", str(text), "--out", out, "--max-steps", str(steps),
            "--eval-every", str(steps), "--time-budget", "10h", "--threads", str(threads),
            "--seed", str(seed), "--quiet", "--sample-every", "0",
        ]  # fmt: skip
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        last = Path(out, "metrics.jsonl").read_text().strip().splitlines()[-1]
        return json.loads(last)["val_loss"], wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each side; medians reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Bytes as they are (no newline translation): Recur reads the file as it is, CRLF included.
    text = args.text.read_bytes().decode("utf-8")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = [index[c] for c in text]
    print(f"# {args.text.name}: {len(text)} characters, vocabulary {len(vocab)}; {args.steps} steps of {B}x{T}, "
          f"{args.threads} threads; torch {torch.__version__}")
    r_walls, t_walls = [], []
    for k in range(max(1, args.rounds)):
        r_loss, r_wall = recur_run(args.text, args.steps, args.threads, args.seed)
        t_loss, t_wall = torch_run(ids, len(vocab), args.steps, args.seed)
        r_walls.append(r_wall)
        t_walls.append(t_wall)
        if args.rounds > 1:
            print(f"round {k + 1}: recur {r_wall:.1f} s, pytorch {t_wall:.1f} s, ratio {r_wall / t_wall:.2f}", flush=True)
    r_wall, t_wall = statistics.median(r_walls), statistics.median(t_walls)
    r_bpc, t_bpc = r_loss / math.log(2), t_loss / math.log(2)
    if args.rounds > 1:
        ratios = sorted(r / t for r, t in zip(r_walls, t_walls))
        print(f"per-round ratios {', '.join(f'{x:.2f}' for x in ratios)}; wall times below are medians")
    print(f"{'':8} {'val bpc':>8} {'wall s':>8}")
    print(f"{'recur':8} {r_bpc:8.4f} {r_wall:8.1f}")
    print(f"{'pytorch':8} {t_bpc:8.4f} {t_wall:8.1f}")
    print(f"bpc difference {100 * (r_bpc - t_bpc) / t_bpc:+.2f}%, wall-time ratio recur/pytorch {r_wall / t_wall:.2f}")


if __name__ == "__main__":
    sys.exit(main())
