"""The ROBE experiment: one DLRM-v2, trained and served with full embedding tables and with ROBE at
100x, 1000x and 10000x less embedding memory, on the same synthetic Criteo-like impressions.

Data: the planted click model of ``mlgauge.data.criteo`` (Zipf-distributed ids, per-category effects,
a dense x sparse cross term) over MLPerf's 26 tables capped at ``--cap`` rows, one id per feature
(Criteo's one-hot layout) or MLPerf DLRM-v2's multi-hot sizes, so the full tables (rows x dim x 4
bytes) are far larger than the CPU's last-level cache. Every model trains ``--epochs`` passes with the
same optimizer, batch and schedule (Adam, one cycle over all passes) at each learning rate of ``--lr``
and is scored after each pass on a validation split; the (learning rate, pass) with the best
validation AUC is then scored on a separate test split (scikit-learn's ROC AUC), so each embedding
gets its own best step size and no number is picked on the data it reports. With ``--seeds n`` the
chosen (learning rate, pass) is trained again from n - 1 more initializations and shuffles, and the
test AUC is reported as the mean and spread over all n (the AUC gap of one seed is within a few
thousandths of noise). The full tables pool
through ``embedding_bag``, PyTorch's fastest CPU path for them. Inference is the forward pass alone
(no data loading), batch ``--infer-batch``, median of ``--infer-rounds`` passes over the test split,
timed after all the training with the models taking turns;
"lookups" times the embedding layer alone, which bounds what any embedding can save (Amdahl). The
oracle AUC (the planted probabilities) bounds what any model reaches.

Goals (README): ROBE at 1000x within 0.002 AUC of the full model; inference with ROBE >= 1.5x the
full model's samples/s when the full tables exceed the cache.

    python benchmarks/robe_dlrm.py [--cap 200000] [--dim 32] [--train 400000] [--val 100000] [--epochs 3]
        [--lr 0.001,0.002,0.004,0.008] [--seeds 1]
        [--choices full,robe:100,robe:1000,robe:10000] [--multi-hot one|reference] [--block 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
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
from mlgauge.tasks.recommendation import train


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


def _pass_rate(step, n: int, batch: int) -> float:
    """Samples/s of one pass of ``step(start, stop)`` over ``n`` samples in batches."""
    started = time.perf_counter()
    for i in range(0, n, batch):
        step(i, min(i + batch, n))
    return n / (time.perf_counter() - started)


@torch.inference_mode()
def auc(model: DLRMv2, data, batch: int = 8192) -> float:
    model.eval()
    dense, sparse = torch.from_numpy(data.dense), torch.from_numpy(data.sparse)
    out = [model.logits(dense[i : i + batch], sparse[i : i + batch]) for i in range(0, len(dense), batch)]
    return float(roc_auc_score(data.labels, torch.cat(out).reshape(-1).numpy()))


@torch.inference_mode()
def rates(models: list[DLRMv2], data, batch: int, rounds: int) -> list[tuple[float, float]]:
    """For each model, (samples/s of the whole forward pass, samples/s of the embedding lookups alone):
    medians of ``rounds`` passes, the models taking turns in each round, so that the machine's speed
    drifting over minutes is not read as one embedding being faster than another."""
    dense, sparse = torch.from_numpy(data.dense), torch.from_numpy(data.sparse)

    def one_round(model: DLRMv2) -> tuple[float, float]:
        model.eval()
        return (_pass_rate(lambda a, b: model.logits(dense[a:b], sparse[a:b]), len(dense), batch),
                _pass_rate(lambda a, b: model.embeddings(sparse[a:b]), len(dense), batch))  # fmt: skip

    seen = [[one_round(model) for model in models] for _ in range(rounds)]
    return [(statistics.median(r[i][0] for r in seen), statistics.median(r[i][1] for r in seen)) for i in range(len(models))]


def train_and_pick(model: DLRMv2, train_split, val, args, lr: float, seed: int = 0) -> tuple[int, list[float], float]:
    """Train ``args.epochs`` passes at ``lr`` (shuffled by ``seed``), keep the weights of the pass with the
    best validation AUC: (that pass, validation AUC after each pass, training seconds per pass without
    the scoring)."""
    epoch_auc, best, scoring = [], {"auc": -1.0, "epoch": 0, "state": None}, 0.0

    def keep_best(epoch: int) -> None:
        nonlocal scoring
        started = time.perf_counter()
        epoch_auc.append(auc(model, val))
        if epoch_auc[-1] > best["auc"]:
            best.update(auc=epoch_auc[-1], epoch=epoch, state=copy.deepcopy(model.state_dict()))
        scoring += time.perf_counter() - started

    started = time.perf_counter()
    train(model, train_split.dense, train_split.sparse, train_split.labels, batch=args.batch, lr=lr,
          epochs=args.epochs, after_epoch=keep_best, seed=seed)  # fmt: skip
    seconds = (time.perf_counter() - started - scoring) / args.epochs
    model.load_state_dict(best["state"])
    return best["epoch"], epoch_auc, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=int, default=200_000, help="rows per table at most")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--train", type=int, default=400_000)
    parser.add_argument("--val", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--lr", default="0.001,0.002,0.004,0.008",
                        help="learning rates to try; each embedding keeps the one its validation AUC prefers")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training split; the best on validation is kept")
    parser.add_argument("--seeds", type=int, default=1,
                        help="initializations and shuffles to train each embedding's chosen learning rate from")
    parser.add_argument("--infer-batch", type=int, default=4096)
    parser.add_argument("--infer-rounds", type=int, default=5)
    parser.add_argument("--choices", default="full,robe:100,robe:1000,robe:10000")
    parser.add_argument("--multi-hot", choices=("one", "reference"), default="one",
                        help="ids per feature: one (Criteo's layout) or MLPerf DLRM-v2's multi-hot sizes (214 per sample)")
    parser.add_argument("--block", type=int, default=32, help="ROBE's Z")
    parser.add_argument("--json")
    args = parser.parse_args()

    lrs = [float(v) for v in args.lr.split(",")]
    rows = tuple(min(n, args.cap) for n in REFERENCE_NUM_EMBEDDINGS)
    hots = REFERENCE_MULTI_HOT_SIZES if args.multi_hot == "reference" else (1,) * len(rows)
    config = DlrmConfig(rows, hots, embedding_dim=args.dim, bottom_mlp=(64, args.dim), top_mlp=(128, 64, 1),
                        dcn_layers=2, dcn_rank=32)  # fmt: skip
    planted = PlantedClickModel(rows, hots)
    train_split, val = planted.generate(args.train, "train"), planted.generate(args.val, "val")
    test = planted.generate(args.val, "test")
    full_bytes = sum(rows) * args.dim * FLOAT_BYTES
    llc = _llc_bytes()
    print(f"{sum(hots)} ids per sample; {sum(rows):,} rows x dim {args.dim}: full tables {full_bytes / 1e6:,.1f} MB; last-level cache "
          f"{llc / 1e6 if llc else float('nan'):,.1f} MB; {torch.get_num_threads()} threads; "
          f"oracle AUC {test.oracle_auc():.4f}")  # fmt: skip
    results, models = [], []
    for spec in args.choices.split(","):
        choice = choice_for(spec, full_bytes, args.block)

        def fresh(seed: int) -> DLRMv2:
            torch.manual_seed(seed)
            return DLRMv2(config, build_embeddings(choice, rows, hots, args.dim))  # noqa: B023 (used in this pass)

        tried, times, kept = {}, [], None  # kept: (lr, model, best pass) of the best validation AUC so far
        for step_size in lrs:
            candidate = fresh(0)
            epoch, tried[step_size], seconds = train_and_pick(candidate, train_split, val, args, step_size)
            times.append(seconds)
            if kept is None or max(tried[step_size]) > max(tried[kept[0]]):
                kept = (step_size, candidate, epoch)
        lr, model, best_epoch = kept
        seed_auc = [auc(model, test)]
        for seed in range(1, args.seeds):
            again = fresh(seed)
            times.append(train_and_pick(again, train_split, val, args, lr, seed)[2])
            seed_auc.append(auc(again, test))
        epoch_auc, seconds = tried[lr], statistics.median(times)
        spread = statistics.stdev(seed_auc) if len(seed_auc) > 1 else 0.0
        row = {"choice": spec, "embedding": choice.describe(), "embedding_bytes": embedding_bytes(model),
               "compression": full_bytes / embedding_bytes(model), "auc": statistics.mean(seed_auc),
               "auc_per_seed": seed_auc, "auc_std": spread, "lr": lr, "best_epoch": best_epoch,
               "val_auc_per_epoch": epoch_auc, "val_auc_per_lr": {str(r): a for r, a in tried.items()},
               "train_s_per_epoch": seconds}  # fmt: skip
        results.append(row)
        models.append(model)
        over = f" ± {spread:.4f} over {len(seed_auc)} seeds" if len(seed_auc) > 1 else ""
        print(f"{spec:12s} {row['embedding_bytes'] / 1e6:9.3f} MB ({row['compression']:6.0f}x)  AUC {row['auc']:.4f}{over} "
              f"(lr {lr:g}, epoch {best_epoch})  train {seconds:5.1f} s/epoch", flush=True)  # fmt: skip
    print(f"inference, batch {args.infer_batch}, median of {args.infer_rounds} rounds:")
    for row, (rate, lookups) in zip(results, rates(models, test, args.infer_batch, args.infer_rounds), strict=True):
        row.update(infer_samples_per_s=rate, lookup_samples_per_s=lookups)
        print(f"{row['choice']:12s} {rate:9,.0f} samples/s, lookups alone {lookups:11,.0f} samples/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "full_bytes": full_bytes, "llc_bytes": llc,
                                               "oracle_auc": test.oracle_auc(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
