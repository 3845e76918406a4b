"""Recommendation: DLRM-v2 (DCNv2 interaction) on multi-hot Criteo 1TB, or its synthetic stand-in.

One class serves both MLPerf entries, ``dlrm-v2-99`` and ``dlrm-v2-99.9``: same model and data,
different AUC targets. One LoadGen sample is one impression (a dense row and its multi-hot ids);
MLPerf's own harness aggregates several impressions into one user sample (``samples_to_aggregate``,
up to ~700), mlgauge does not, so its sample counts and latencies are per impression.

Real: ``dataset_path`` is a folder in MLPerf DLRM-v2's inference layout (see ``mlgauge.data.criteo``):
``day_23_dense.npy`` (N, 13) float32, ``day_23_sparse_multi_hot.npz`` (members ``0`` .. ``25``, each
(N, k_f) int32 ids), ``day_23_labels.npy``; like the reference, the first ceil(N/2) rows are scored.
Weights: a PyTorch state dict of mlgauge's ``DLRMv2`` or of TorchRec's ``DLRM_DCN`` (MLPerf's
reference, ~97 GiB), or an ONNX file with inputs ``dense`` (B, 13) float32 and ``sparse`` (B, 214)
int64 and one output, the click probability.
Out of the box: a small DLRM-v2 trained by ``prepare`` on synthetic Criteo-like impressions with a
planted click model (so AUC has a known ceiling).

Accuracy is ROC AUC in percent (``sklearn.metrics.roc_auc_score``, as MLPerf's accuracy script).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlgauge.data.criteo import CriteoSamples, MultiHotCriteo, PlantedClickModel
from mlgauge.errors import ModelError, UsageError, choice_error
from mlgauge.rules import DEFAULT_ROUND, QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import AccuracyResult, ModelSource, Workload
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

BENCHMARKS = ("dlrm-v2-99", "dlrm-v2-99.9")
# Bump when the generator, the stand-in model or its training changes, so stale caches are rebuilt.
STANDIN_VERSION = "v1"
# Part of the stand-in's export cache key: bump it when the traced graph changes (not the weights),
# so cached .onnx/.pte files are rebuilt. 2: ROBE pools fixed-width bags by a gather and a sum.
DLRM_GRAPH_REVISION = 2
STANDIN_SPLITS = {"train": 131_072, "val": 16_384}
STANDIN_TABLE_CAP = 1_024  # rows per stand-in table: min(MLPerf's rows, this)
STANDIN_BATCH = 512
STANDIN_LR = 0.004
CALIBRATION_SAMPLES = 512
OUTPUT = TensorSpec("probability", (1,), "float32")


def standin_config():
    """The stand-in's sizes: MLPerf's layout (26 tables, same multi-hot widths, 3 cross layers), scaled down."""
    from mlgauge.models.dlrm import REFERENCE_MULTI_HOT_SIZES, REFERENCE_NUM_EMBEDDINGS, DlrmConfig

    return DlrmConfig(
        num_embeddings=tuple(min(n, STANDIN_TABLE_CAP) for n in REFERENCE_NUM_EMBEDDINGS),
        multi_hot_sizes=REFERENCE_MULTI_HOT_SIZES,
        embedding_dim=16,
        bottom_mlp=(64, 16),
        top_mlp=(128, 64, 1),
        dcn_layers=3,
        dcn_rank=32,
    )


def input_specs(sparse_width: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("dense", (13,), "float32"), TensorSpec("sparse", (sparse_width,), "int64"))


def probability_postprocess(outputs, indices=None) -> np.ndarray:
    """The click probability per sample, ``(B, 1)`` float32."""
    out = np.asarray(outputs[0] if isinstance(outputs, (tuple, list)) else outputs)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[1] != 1:
        raise ModelError(
            f"the model returned {out.shape} per batch; DLRM-v2 answers one click probability per sample (B, 1)",
            hint="Use a model whose single output is the sigmoid probability",
        )
    return out.astype(np.float32, copy=False)


def auc_percent(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return 100.0 * float(roc_auc_score(labels, scores))


def make_auc_score(labels: np.ndarray, target: QualityTarget) -> Callable[[dict[int, np.ndarray]], AccuracyResult]:
    def score(predictions: dict[int, np.ndarray]) -> AccuracyResult:
        if not predictions:
            return AccuracyResult("AUC", 0.0, "%", 0, target)
        idx = np.fromiter(predictions.keys(), dtype=np.int64, count=len(predictions))
        # Responses arrive flattened (one float32 each); take the first value of each.
        prob = np.array([np.asarray(v).reshape(-1)[0] for v in predictions.values()], dtype=np.float64)
        truth = labels[idx]
        positives = int(truth.sum())
        details = {"positives": positives, "negatives": int(len(idx) - positives)}
        if positives in (0, len(idx)):
            return AccuracyResult("AUC", 0.0, "%", len(idx), target, {**details, "note": "AUC needs both classes"})
        if not np.isfinite(prob).all():
            bad = int((~np.isfinite(prob)).sum())
            return AccuracyResult("AUC", 0.0, "%", len(idx), target, {**details, "note": f"{bad} non-finite outputs"})
        return AccuracyResult("AUC", auc_percent(truth, prob), "%", len(idx), target, details)

    return score


def train(model, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray,
          progress: Callable[[float], None] | None = None, *, batch: int = STANDIN_BATCH, lr: float = STANDIN_LR,
          epochs: int = 1, after_epoch: Callable[[int], None] | None = None, seed: int = 0):
    """Adam with one one-cycle schedule over ``epochs`` passes of shuffled impressions (the order drawn
    from ``seed``); ``after_epoch(e)`` runs after pass ``e`` (1-based), e.g. to score the model. MLPerf
    trains DLRM-v2 one epoch: a second pass mostly memorizes rare categories, though a compressed
    table may need it."""
    import torch

    torch.manual_seed(seed)
    x_dense, x_sparse = torch.from_numpy(dense), torch.from_numpy(sparse)
    y = torch.from_numpy(labels.astype(np.float32)).unsqueeze(1)
    steps = len(labels) // batch
    if steps * epochs < 2:
        raise UsageError(f"{len(labels)} impressions make {steps * epochs} steps of {batch}; the schedule needs 2",
                         hint="Train on more impressions or a smaller batch")  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * epochs, pct_start=0.1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    shuffle = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(labels), generator=shuffle)
        model.train()
        for step in range(steps):
            rows = order[step * batch : (step + 1) * batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model.logits(x_dense[rows], x_sparse[rows]), y[rows]).backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress(((epoch - 1) * steps + step + 1) / (steps * epochs))
        model.eval()
        if after_epoch is not None:
            after_epoch(epoch)
    return model


def predict(model, dense: np.ndarray, sparse: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Click probabilities ``(n,)`` of a PyTorch DLRM-v2."""
    import torch

    model.eval()
    with torch.inference_mode():
        parts = [
            model(torch.from_numpy(dense[i : i + batch_size]), torch.from_numpy(sparse[i : i + batch_size]))
            for i in range(0, len(dense), batch_size)
        ]
    return torch.cat(parts).numpy().reshape(-1) if parts else np.zeros(0, np.float32)


def _cache_name(choice) -> str:
    if choice.kind == "full":
        return "dlrm-v2"
    digest = hashlib.sha256(json.dumps(choice.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"dlrm-v2-{choice.kind}-{digest}"


class DlrmTask(StandinTask):
    title = "Recommendation (DLRM-v2 with DCNv2 on Criteo 1TB multi-hot; synthetic stand-in by default)"
    rules_round = DEFAULT_ROUND

    # The model's embedding layer may be swapped (models/dlrm_embeddings.py): `--embedding robe --robe-size 1MB`.
    MODEL_OPTIONS = ("embedding", "robe_size", "compression")

    def __init__(self, benchmark: str = "dlrm-v2-99", model_options: dict | None = None) -> None:
        from mlgauge.models.dlrm_embeddings import EmbeddingChoice, parse_size

        if benchmark not in BENCHMARKS:
            raise choice_error("benchmark", benchmark, BENCHMARKS)
        self.benchmark = benchmark
        self.name = benchmark
        options = dict(model_options or {})
        robe_size = options.get("robe_size")
        self.embedding = EmbeddingChoice(
            kind=options.get("embedding") or "full",
            robe_bytes=parse_size(robe_size) if robe_size is not None else None,
            compression=options.get("compression"),
        )  # fmt: skip
        # Both targets share the data and model, so one stand-in cache serves them; each embedding choice
        # trains its own stand-in model.
        self.cache = StandinCache(_cache_name(self.embedding), STANDIN_VERSION)

    def _model(self, config):
        from mlgauge.models.dlrm import DLRMv2
        from mlgauge.models.dlrm_embeddings import build_embeddings

        embeddings = build_embeddings(self.embedding, config.num_embeddings, config.multi_hot_sizes,
                                      config.embedding_dim)  # fmt: skip
        return DLRMv2(config, embeddings)

    # -- the synthetic stand-in -------------------------------------------------


    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic splits and train the small DLRM-v2; cached, so only the first call works."""
        if self.is_prepared():
            return self.cache.meta()
        import torch

        from mlgauge.training.fit import single_threaded

        report = progress or (lambda stage, fraction: None)
        start = time.perf_counter()
        config = standin_config()
        report("generating synthetic impressions", 0.0)
        planted = PlantedClickModel(config.num_embeddings, config.multi_hot_sizes)
        train_split = planted.generate(STANDIN_SPLITS["train"], "train")
        report("generating synthetic impressions", 0.12)
        val = planted.generate(STANDIN_SPLITS["val"], "val")
        report("generating synthetic impressions", 0.15)

        with single_threaded():
            torch.manual_seed(0)
            model = self._model(config)
            untrained = auc_percent(val.labels, predict(model, val.dense, val.sparse))
            train(model, train_split.dense, train_split.sparse, train_split.labels, lambda f: report("training the small DLRM-v2", 0.15 + 0.8 * f))
            trained = auc_percent(val.labels, predict(model, val.dense, val.sparse))
        report("training the small DLRM-v2", 1.0)

        meta = {
            "task": "dlrm-v2",
            "version": STANDIN_VERSION,
            "config": config.to_dict(),
            "embedding": self.embedding.to_dict(),
            "train_samples": STANDIN_SPLITS["train"],
            "val_samples": STANDIN_SPLITS["val"],
            "val_click_rate": float(val.labels.mean()),
            "val_auc_trained": trained,
            "val_auc_untrained": untrained,
            "val_auc_oracle": 100.0 * val.oracle_auc(),
            "generator_seed": planted.seed,
            "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__,
        }

        def fill(folder: Path) -> None:
            np.save(folder / "val_dense.npy", val.dense)
            np.save(folder / "val_sparse.npy", val.sparse)
            np.save(folder / "val_labels.npy", val.labels)
            torch.save(model.state_dict(), folder / "weights.pt")

        return self.cache.write(fill, meta)

    def _standin_workload(self, weights_path: Path | None, count: int | None) -> Workload:
        from mlgauge.models.dlrm import DlrmConfig

        d = self.cache.require(self.name)
        rule = standin_rules()[self.benchmark]
        meta = self.cache.meta()
        config = DlrmConfig.from_dict(meta["config"])
        arrays = {k: np.load(d / f"val_{k}.npy", allow_pickle=False) for k in ("dense", "sparse", "labels")}
        if count is not None:
            arrays = {k: v[:count] for k, v in arrays.items()}
        dataset = CriteoSamples(arrays["dense"], arrays["sparse"], arrays["labels"], rule.performance_sample_count)
        weights = existing_weights(weights_path or d / "weights.pt")

        def build():
            return load_into(self._model(config), load_state_dict(weights), weights)

        def calibration():
            planted = PlantedClickModel(config.num_embeddings, config.multi_hot_sizes, meta["generator_seed"])
            data = planted.generate(CALIBRATION_SAMPLES, "calibration")
            return {"dense": data.dense, "sparse": data.sparse}

        model = ModelSource(
            name="dlrm-v2-small",
            inputs=input_specs(config.sparse_width),
            outputs=(OUTPUT,),
            cache_key=f"{self.cache.name}-synthetic-{STANDIN_VERSION}-g{DLRM_GRAPH_REVISION}-{file_digest(weights)}",
            build=build,
            weights_path=weights,
            calibration=calibration,
        )
        return self._workload(dataset, model, rule.quality)

    # -- the real benchmark -----------------------------------------------------
    def _real_workload(self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str) -> Workload:
        from mlgauge.models.dlrm import REFERENCE_NUM_EMBEDDINGS

        rule = inference_rules(round).benchmark(self.benchmark)
        if self.embedding.kind != "full":
            raise UsageError(
                f"--embedding {self.embedding.kind} runs on the synthetic stand-in only: real Criteo needs the "
                "full model's weights", hint="Leave --dataset out, or --embedding out",
            )  # fmt: skip
        if weights_path is None:
            raise ModelError(
                "DLRM-v2 on Criteo needs weights",
                hint="Pass --weights with a DLRM-v2 state dict (mlgauge or TorchRec DLRM_DCN layout, .pt) or an .onnx file",
            )
        weights_path = existing_weights(weights_path)
        dataset = MultiHotCriteo(
            dataset_path,
            performance_count=rule.performance_sample_count,
            count=count,
            # MLPerf's ids are already reduced modulo these table sizes; larger ones mean damaged data.
            num_embeddings=REFERENCE_NUM_EMBEDDINGS,
        )
        digest = file_digest(weights_path)
        inputs = input_specs(dataset.sparse_width)
        if weights_path.suffix.lower() == ".onnx":
            model = ModelSource(
                name="dlrm-v2",
                inputs=inputs,
                outputs=(OUTPUT,),
                cache_key=f"dlrm-v2-onnx-{digest}",
                onnx_path=weights_path,
                weights_path=weights_path,
            )
        else:
            multi_hot_sizes = dataset.multi_hot_sizes

            def build():
                from mlgauge.models.dlrm import build_from_state_dict

                return build_from_state_dict(load_state_dict(weights_path), multi_hot_sizes, weights_path)

            model = ModelSource(
                name="dlrm-v2",
                inputs=inputs,
                outputs=(OUTPUT,),
                cache_key=f"dlrm-v2-torch-{digest}-{'-'.join(map(str, multi_hot_sizes))}",
                build=build,
                weights_path=weights_path,
            )
        return self._workload(dataset, model, rule.quality)

    def _workload(self, dataset, model: ModelSource, quality: QualityTarget) -> Workload:
        return Workload(
            task=self.name,
            benchmark=self.benchmark,
            dataset=dataset,
            model=model,
            quality=quality,
            response_dtype=np.dtype(np.float32),
            postprocess=probability_postprocess,
            score=make_auc_score(dataset.ground_truth(), quality),
        )

