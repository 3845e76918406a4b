"""ROBE-Z embedding bags vs nn.EmbeddingBag on CPU: forward and forward + backward throughput.

DLRM's sparse side in miniature: F tables of R rows and dimension D (defaults: 26 x 81,920 x 128
float32 = 1.09 GB, far past the last-level cache, whose size is printed), one bag of ``--bag`` ids
per sample and table (Criteo is one-hot), a batch of B samples. The same tables three ways:

- nn.EmbeddingBag (mode "sum"), dense gradients (every step allocates and fills a gradient of
  the full tables, as ``zero_grad(set_to_none=True)`` leaves it) and sparse=True;
- RobeEmbeddingBag.shared with one array at 100x and 1000x compression (m = F R D / c), Z = 32,
  through the C++ kernel, each table called on its own and all tables in one call (RobeTables,
  one m-float gradient per step instead of one per table); and at 1000x through the PyTorch ops
  (the path other devices take).

nn.EmbeddingBag tables are called one by one, as DLRM does. Forward is timed under no_grad (inference);
forward + backward runs torch.autograd.backward on fixed output gradients. Ids come from a pool
of batches (uniform, or Zipf with ``--zipf``), a new batch every step. Rounds alternate the ways
so drift hits all alike; the figure is the median round. Goal (issue 8): ROBE >= nn.EmbeddingBag.

    python benchmarks/robe_embedding_bag.py [--tables 26] [--rows 81920] [--dim 128] [--batch 2048]
        [--bag 1] [--block 32] [--zipf 0] [--rounds 7] [--steps 10] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mlgauge.ops import RobeEmbeddingBag
from mlgauge.ops.build import fused_kernel

Step = Callable[[int], None]


def last_level_cache() -> str:
    """The largest cache level of cpu0, from sysfs (e.g. 'L3 32768K')."""
    best = (0, "unknown")
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        best = max(best, (level, f"L{level} {size}"))
    return best[1]


def id_pool(args, generator: torch.Generator) -> list[list[torch.Tensor]]:
    """pool[k][t]: batch k's ids for table t, (B, bag) int64."""
    rows = args.rows
    if args.zipf > 0:  # hot rows spread over the table by a random permutation
        probs = torch.arange(1, rows + 1, dtype=torch.float64) ** -args.zipf
        perm = torch.randperm(rows, generator=generator)

        def draw() -> torch.Tensor:
            flat = torch.multinomial(probs, args.batch * args.bag, replacement=True, generator=generator)
            return perm[flat].view(args.batch, args.bag)
    else:

        def draw() -> torch.Tensor:
            return torch.randint(0, rows, (args.batch, args.bag), generator=generator)

    return [[draw() for _ in range(args.tables)] for _ in range(args.pool)]


def lookup(tables: nn.ModuleList, batch: list[torch.Tensor], together: bool) -> list[torch.Tensor]:
    """Every table's (B, D) output: one call per table, or one call for all (RobeTables)."""
    if together:
        return tables(batch)
    return [table(ids) for table, ids in zip(tables, batch, strict=True)]


def forward_step(tables: nn.ModuleList, pool, together: bool = False) -> Step:
    def step(k: int) -> None:
        with torch.no_grad():
            lookup(tables, pool[k % len(pool)], together)

    return step


def train_step(tables: nn.ModuleList, pool, grads: list[torch.Tensor], together: bool = False) -> Step:
    params = list(tables.parameters())  # a shared ROBE array appears once

    def step(k: int) -> None:
        for p in params:
            p.grad = None  # as optimizer.zero_grad(set_to_none=True) before every step
        torch.autograd.backward(lookup(tables, pool[k % len(pool)], together), grads)

    return step


def dense_step(tables: nn.ModuleList, pool, grads, sparse: bool) -> Step:
    inner = train_step(tables, pool, grads)

    def step(k: int) -> None:
        for table in tables:
            table.sparse = sparse  # one set of tables serves both gradient kinds
        inner(k)

    return step


def robe_tables(args, compression: int, backend: str = "auto") -> nn.ModuleList:
    size = args.tables * args.rows * args.dim // compression
    tables = RobeEmbeddingBag.shared([args.rows] * args.tables, args.dim, size, block_size=args.block)
    for table in tables:
        table.backend = backend
    return tables


def measure(ways: dict[str, Step], args) -> dict[str, list[float]]:
    """Seconds per step of every way, one figure per round (the mean of --steps steps)."""
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for step in ways.values():
        step(0)  # warm-up: first-touch of the gradients, the kernel's thread pool
    for r in range(args.rounds):
        for name, step in ways.items():
            start = time.perf_counter()
            for k in range(args.steps):
                step(r * args.steps + k)
            seconds[name].append((time.perf_counter() - start) / args.steps)
    return seconds


def report(title: str, seconds: dict[str, list[float]], baseline: str, args) -> dict[str, float]:
    print(f"\n{title}  (samples/s = batch / median step; lookups/s = x tables x bag; speed vs {baseline})")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        samples = args.batch / value
        spread = (max(seconds[name]) - min(seconds[name])) / value
        print(
            f"  {name:34s} {value * 1e3:9.2f} ms  {samples:12,.0f} samples/s  "
            f"{samples * args.tables * args.bag:14,.0f} lookups/s  {medians[baseline] / value:6.2f}x  "
            f"(spread {spread:.0%})"
        )
    return medians


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=26)
    parser.add_argument("--rows", type=int, default=81_920)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--bag", type=int, default=1)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--compression", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--zipf", type=float, default=0.0, help="Zipf exponent of the ids; 0: uniform")
    parser.add_argument("--pool", type=int, default=8, help="distinct batches cycled through")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, help="intra-op threads; default: PyTorch's")
    parser.add_argument("--json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    full_bytes = args.tables * args.rows * args.dim * 4
    print(
        f"{args.tables} tables x {args.rows:,} rows x dim {args.dim}: {full_bytes / 2**30:.2f} GiB float32; "
        f"last-level cache {last_level_cache()}; threads {torch.get_num_threads()}; batch {args.batch}, "
        f"bag {args.bag}, Z {args.block}, ids {'Zipf ' + str(args.zipf) if args.zipf else 'uniform'}"
    )
    fused_kernel("robe")  # built (or loaded from the cache) before any timing
    pool = id_pool(args, generator)
    grads = [torch.randn(args.batch, args.dim, generator=generator) for _ in range(args.tables)]
    full = nn.ModuleList(nn.EmbeddingBag(args.rows, args.dim, mode="sum") for _ in range(args.tables))
    robe = {c: robe_tables(args, c) for c in args.compression}
    slow = robe_tables(args, max(args.compression), backend="torch")
    fwd = {"nn.EmbeddingBag": forward_step(full, pool)}
    train = {
        "nn.EmbeddingBag (dense grad)": dense_step(full, pool, grads, False),
        "nn.EmbeddingBag (sparse=True)": dense_step(full, pool, grads, True),
    }
    for c, tables in robe.items():
        fwd[f"ROBE {c}x ({tables[0].memory_bytes() / 2**20:.1f} MiB)"] = forward_step(tables, pool)
        fwd[f"ROBE {c}x, one call"] = forward_step(tables, pool, together=True)
        train[f"ROBE {c}x"] = train_step(tables, pool, grads)
        train[f"ROBE {c}x, one call"] = train_step(tables, pool, grads, together=True)
    fwd[f"ROBE {max(args.compression)}x, PyTorch ops"] = forward_step(slow, pool)
    train[f"ROBE {max(args.compression)}x, PyTorch ops"] = train_step(slow, pool, grads)
    results = {}
    for title, ways, base in (
        ("forward (inference, no_grad)", fwd, "nn.EmbeddingBag"),
        ("forward + backward", train, "nn.EmbeddingBag (sparse=True)"),
    ):
        seconds = measure(ways, args)
        results[title] = {"seconds": seconds, "median_s": report(title, seconds, base, args)}
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "llc": last_level_cache(), **results}, indent=2)
        )


if __name__ == "__main__":
    main()
