"""The ROBE experiment: one DLRM-v2, trained and served with full embedding tables and with ROBE at
100x, 1000x and 10000x less embedding memory, on the same synthetic Criteo-like impressions.

Data: the planted click model of ``mlgauge.data.criteo`` (Zipf-distributed ids, per-category effects,
a dense x sparse cross term) over MLPerf's 26 tables capped at ``--cap`` rows, one id per feature
(Criteo's one-hot layout), so the full tables (rows x dim x 4 bytes) are far larger than the CPU's
last-level cache. Each model trains one epoch with the same optimizer, batch and schedule (Adam, one
cycle), and is scored on a held-out split with scikit-learn's ROC AUC. Inference is the model's
forward pass alone (no data loading), batch ``--infer-batch``, median of ``--infer-rounds`` passes
over the validation split. The oracle AUC (the planted probabilities) bounds what any model reaches.

Goals (README): ROBE at 1000x within 0.002 AUC of the full model; inference with ROBE >= 1.5x the
full model's samples/s when the full tables exceed the cache.

    python benchmarks/robe_dlrm.py [--cap 200000] [--dim 32] [--train 400000] [--val 100000]
        [--choices full,robe:100,robe:1000,robe:10000] [--multi-hot one|reference] [--block 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from mlgauge.data.criteo import PlantedClickModel
from mlgauge.models.dlrm import REFERENCE_MULTI_HOT_SIZES, REFERENCE_NUM_EMBEDDINGS, DlrmConfig, DLRMv2
from mlgauge.models.dlrm_embeddings import FLOAT_BYTES, EmbeddingChoice, build_embeddings, embedding_bytes
from mlgauge.tasks.recommendation import train_epoch


def _llc_bytes() -> int | None:
    caches = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"))
    sizes = []
    for c in caches:
        try:
            text = (c / "size").read_text().strip()
        except OSError:
            continue
        sizes.append(int(text[:-1]) * 1024 if text.endswith("K") else int(text))
    return max(sizes) if sizes else None


def choice_for(spec: str, full_bytes: int, block: int = 32) -> EmbeddingChoice:
    """``full``, ``robe:1000`` (1000x less memory than the full tables), ``hashing:1000``, ``qr:1000``."""
    kind, _, factor = spec.partition(":")
    if kind == "full":
        return EmbeddingChoice()
    if kind == "robe":
        floats = max(64, math.ceil(full_bytes / float(factor) / FLOAT_BYTES))
        return EmbeddingChoice(kind="robe", robe_bytes=floats * FLOAT_BYTES, block_size=block)
    return EmbeddingChoice(kind=kind, compression=float(factor))


@torch.inference_mode()
def score_and_rate(model: DLRMv2, data, batch: int, rounds: int) -> tuple[float, float]:
    """(ROC AUC on the split, median samples/s of the forward pass over it)."""
    model.eval()
    dense, sparse = torch.from_numpy(data.dense), torch.from_numpy(data.sparse)
    rates, scores = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        out = [model.logits(dense[i : i + batch], sparse[i : i + batch]) for i in range(0, len(dense), batch)]
        rates.append(len(dense) / (time.perf_counter() - started))
        scores = torch.cat(out).reshape(-1).numpy()
    return float(roc_auc_score(data.labels, scores)), statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=int, default=200_000, help="rows per table at most")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--train", type=int, default=400_000)
    parser.add_argument("--val", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--infer-batch", type=int, default=4096)
    parser.add_argument("--infer-rounds", type=int, default=5)
    parser.add_argument("--choices", default="full,robe:100,robe:1000,robe:10000")
    parser.add_argument("--multi-hot", choices=("one", "reference"), default="one",
                        help="ids per feature: one (Criteo's layout) or MLPerf DLRM-v2's multi-hot sizes (214 per sample)")
    parser.add_argument("--block", type=int, default=32, help="ROBE's Z")
    parser.add_argument("--json")
    args = parser.parse_args()

    rows = tuple(min(n, args.cap) for n in REFERENCE_NUM_EMBEDDINGS)
    hots = REFERENCE_MULTI_HOT_SIZES if args.multi_hot == "reference" else (1,) * len(rows)
    config = DlrmConfig(rows, hots, embedding_dim=args.dim, bottom_mlp=(64, args.dim), top_mlp=(128, 64, 1),
                        dcn_layers=2, dcn_rank=32)  # fmt: skip
    planted = PlantedClickModel(rows, hots)
    train, val = planted.generate(args.train, "train"), planted.generate(args.val, "val")
    full_bytes = sum(rows) * args.dim * FLOAT_BYTES
    llc = _llc_bytes()
    print(f"{sum(hots)} ids per sample; {sum(rows):,} rows x dim {args.dim}: full tables {full_bytes / 1e6:,.1f} MB; last-level cache "
          f"{llc / 1e6 if llc else float('nan'):,.1f} MB; {torch.get_num_threads()} threads; "
          f"oracle AUC {val.oracle_auc():.4f}")  # fmt: skip
    results = []
    for spec in args.choices.split(","):
        choice = choice_for(spec, full_bytes, args.block)
        torch.manual_seed(0)
        model = DLRMv2(config, build_embeddings(choice, rows, hots, args.dim))
        started = time.perf_counter()
        train_epoch(model, train.dense, train.sparse, train.labels, batch=args.batch, lr=args.lr)
        seconds = time.perf_counter() - started
        auc, rate = score_and_rate(model, val, args.infer_batch, args.infer_rounds)
        row = {"choice": spec, "embedding": choice.describe(), "embedding_bytes": embedding_bytes(model),
               "compression": full_bytes / embedding_bytes(model), "auc": auc, "train_s": seconds,
               "infer_samples_per_s": rate}  # fmt: skip
        results.append(row)
        print(f"{spec:14s} {row['embedding_bytes'] / 1e6:10.3f} MB ({row['compression']:8.0f}x)  AUC {auc:.4f}  "
              f"train {seconds:6.1f} s/epoch  inference {rate:10,.0f} samples/s", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "full_bytes": full_bytes, "llc_bytes": llc,
                                               "oracle_auc": val.oracle_auc(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
