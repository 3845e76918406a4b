"""Time-to-train benchmark ``dlrm_dcnv2``: recommendation, DLRM-v2 (DCNv2 cross layers) trained with Adagrad.

Real: a folder of MLPerf's multi-hot Criteo 1TB in the torchrec reference's layout, ``day_<d>_dense.npy``,
``day_<d>_sparse_multi_hot.npz`` and ``day_<d>_labels.npy`` (see ``mlgauge.data.criteo``). As in
mlcommons/training ``recommendation_v2/torchrec_dlrm``:

* training reads days 0 .. 22 (those present) once, in file order and unshuffled: the MLPerf command in
  its README passes neither ``--shuffle_batches`` nor ``--shuffle_training_set``; each process takes its
  share of every global batch;
* evaluation is the validation half of day 23, its first ceil(N/2) rows: ``data/multi_hot_criteo.py``
  splits the last day into stage "val" (first half) and "test" (second half), and ``dlrm_main.py``
  evaluates "val" within the epoch and "test" only after training. ceil(178,274,637 / 2) = 89,137,319
  is the ``eval_samples`` closed_dlrm_dcnv2.yaml pins;
* ids are reduced modulo the table sizes, as ``multi_hot_criteo.py`` does (``feat % hash``);
* the model is ``DlrmConfig.reference()`` with Adagrad at 0.005 for a global batch of 65,536, one epoch
  (README, "Running the MLPerf DLRM v2 benchmark"). Variant ``default`` is that model (Closed division);
  ``small`` and ``tiny`` are the scaled-down models of the synthetic variants, their capped tables
  hashing the ids (Open division).

Synthetic (variant ``default`` or ``tiny``, Open division): a small DLRM-v2 (the recommendation inference
stand-in's, or a smaller one) on impressions of ``PlantedClickModel``, generated in memory during the
untimed initialisation, with mlgauge's own AUC target.

The quality is ROC AUC over the whole evaluation set (``sklearn.metrics.roc_auc_score``), as a fraction:
the checker compares eval_accuracy with 0.80275.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlperf_logging.mllog import constants as C
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, TensorDataset

from mlgauge.data.criteo import (
    DENSE_FILE,
    NUM_DENSE,
    MultiHotCriteo,
    MultiHotDay,
    PlantedClickModel,
    multihot_file_names,
    read_multihot_day,
)
from mlgauge.errors import DataError
from mlgauge.models.dlrm import DlrmConfig, DLRMv2
from mlgauge.models.dlrm_embeddings import EmbeddingChoice, build_embeddings, parse_size
from mlgauge.rules.training import DEFAULT_RULESET, SYNTHETIC_DIVISION, TrainingRule, training_rules
from mlgauge.tasks.recommendation import STANDIN_BATCH, STANDIN_SPLITS, standin_config
from mlgauge.training.benchmarks.options import check_global_batch_size, check_max_epochs, check_variant
from mlgauge.training.loop import Parallel, Trainable

NAME = C.DLRM_DCNv2
TRAIN_DAYS = range(23)  # Criteo 1TB days 0 .. 22; day 23 is held out for evaluation
LAYOUT_HINT = (
    "Give the folder of MLPerf DLRM-v2's multi-hot Criteo 1TB: day_<d>_dense.npy, "
    "day_<d>_sparse_multi_hot.npz and day_<d>_labels.npy for training days 0 .. 22 and for day 23, "
    "whose first half is evaluated"
)


@dataclass(frozen=True)
class AdagradRecipe:
    """Adagrad at a constant learning rate. closed_dlrm_dcnv2.yaml pins every value but the LR and batch."""

    global_batch_size: int
    base_lr: float
    epochs: int = 1  # the run's epoch bound; the reference trains one epoch
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    # closed_dlrm_dcnv2.yaml checks 1e-8; the reference script's own constant is 1e-10, but a log must pass.
    eps: float = 1e-8
    warmup_steps: int = 0
    decay_start_step: int = 0
    decay_steps: int = 0


REFERENCE_RECIPE = AdagradRecipe(global_batch_size=65_536, base_lr=0.005)


def tiny_config() -> DlrmConfig:
    """The inference stand-in's layout shrunk further: 256-row tables, one cross layer, narrow MLPs."""
    return replace(
        standin_config(),
        num_embeddings=tuple(min(n, 256) for n in standin_config().num_embeddings),
        embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(32, 1), dcn_layers=1, dcn_rank=8,
    )  # fmt: skip


# Scaled-down models; "small" is the recommendation inference stand-in (its tables capped at
# STANDIN_TABLE_CAP rows). On real data their tables hash the ids, which makes a run Open division.
MODELS: dict[str, Callable[[], DlrmConfig]] = {"small": standin_config, "tiny": tiny_config}
REAL_VARIANTS: dict[str, Callable[[], DlrmConfig]] = {"default": DlrmConfig.reference, **MODELS}


@dataclass(frozen=True)
class SyntheticConfig:
    train_samples: int
    eval_samples: int
    model: str  # a key of MODELS
    recipe: AdagradRecipe


# Variant names match [synthetic.dlrm_dcnv2.<variant>] in the training rule file, which holds the
# target and epoch bound measured with these. ``default`` trains the inference stand-in's model on its
# split sizes and batch, at the reference's learning rate.
SYNTHETIC = {
    "default": SyntheticConfig(
        train_samples=STANDIN_SPLITS["train"], eval_samples=STANDIN_SPLITS["val"], model="small",
        recipe=AdagradRecipe(global_batch_size=STANDIN_BATCH, base_lr=0.005),
    ),
    "tiny": SyntheticConfig(
        train_samples=16_384, eval_samples=4_096, model="tiny",
        recipe=AdagradRecipe(global_batch_size=256, base_lr=0.03),
    ),
}  # fmt: skip


class ClickLogits(nn.Module):
    """A DLRM-v2 whose ``forward`` gives the click logit: DistributedDataParallel averages gradients
    only through ``forward``, and BCE on logits is the numerically stable loss."""

    def __init__(self, dlrm: DLRMv2) -> None:
        super().__init__()
        self.dlrm = dlrm

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return self.dlrm.logits(dense, sparse)


class _SyntheticSource:
    dataset_name = "synthetic"

    def __init__(self, config: SyntheticConfig) -> None:
        self.model_config = MODELS[config.model]()
        self.train_samples = config.train_samples
        self.eval_samples = config.eval_samples
        self._splits: tuple[Any, Any] | None = None

    def _data(self) -> tuple[Any, Any]:
        if self._splits is None:  # generated once per benchmark object, reused by every run of a set
            c = self.model_config
            planted = PlantedClickModel(c.num_embeddings, c.multi_hot_sizes)
            self._splits = (
                planted.generate(self.train_samples, "train"),
                planted.generate(self.eval_samples, "val"),
            )
        return self._splits

    def train_batches(
        self, seed: int, parallel: Parallel, global_batch: int, workers: int
    ) -> Callable[[int], DataLoader]:
        train, _ = self._data()
        labels = torch.from_numpy(train.labels.astype(np.float32))
        dataset = TensorDataset(torch.from_numpy(train.dense), torch.from_numpy(train.sparse), labels)
        # A DistributedSampler with explicit rank/size needs no process group: one code path for one
        # process and for data parallelism. Its shuffle depends on (seed, epoch) only. Whole batches
        # of indices go to the dataset, which slices its tensors once per batch.
        sampler = DistributedSampler(
            dataset, num_replicas=parallel.world_size, rank=parallel.rank, shuffle=True, seed=seed
        )
        by_batch = BatchSampler(sampler, parallel.local_batch_size(global_batch), drop_last=False)

        def batches(epoch: int) -> DataLoader:
            sampler.set_epoch(epoch)
            return DataLoader(dataset, sampler=by_batch, batch_size=None, num_workers=workers)

        return batches

    def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        _, val = self._data()
        for start in range(0, len(val), batch_size):
            end = start + batch_size
            yield val.dense[start:end], val.sparse[start:end], val.labels[start:end]


class _CriteoSource:
    dataset_name = "criteo"

    def __init__(self, root: Path, variant: str, *, count: int | None, eval_count: int | None) -> None:
        if not root.is_dir():
            raise DataError(f"Criteo multi-hot folder {root} does not exist", hint=LAYOUT_HINT)
        present = [d for d in TRAIN_DAYS if (root / multihot_file_names(d)[0]).is_file()]
        if not present:
            raise DataError(f"{root} holds no training day (day_0 .. day_22 files)", hint=LAYOUT_HINT)
        if not (root / DENSE_FILE).is_file():
            raise DataError(f"{root} has no evaluation day ({DENSE_FILE})", hint=LAYOUT_HINT)
        self.days = [read_multihot_day(root, d) for d in present]
        self.val = MultiHotCriteo(root, performance_count=0, count=eval_count)
        sizes = self.val.multi_hot_sizes
        for day, data in zip(present, self.days, strict=True):
            if tuple(a.shape[1] for a in data.sparse) != sizes:
                raise DataError(
                    f"day {day} of {root} has other multi-hot sizes than day 23 {sizes}",
                    hint="Every day must come from the same multi-hot materialisation",
                )
        self.model_config = _real_model(variant, sizes)
        total = sum(len(d) for d in self.days)
        self.train_samples = total if count is None else min(total, int(count))
        self.eval_samples = self.val.total_count
        if self.train_samples < 1 or self.eval_samples < 1:
            raise DataError(
                f"{root} gives {self.train_samples} training and {self.eval_samples} evaluation rows",
                hint="Training and evaluation need at least one impression each",
            )
        c = self.model_config
        self.modulus = np.repeat(np.asarray(c.num_embeddings, dtype=np.int64), c.multi_hot_sizes)

    def train_batches(
        self, seed: int, parallel: Parallel, global_batch: int, workers: int
    ) -> Callable[[int], DataLoader]:
        dataset = _TrainDays(self.days, self.train_samples, global_batch, parallel, self.modulus)
        # The same order every epoch, whatever the seed: the reference reads the days unshuffled.
        return lambda epoch: DataLoader(dataset, batch_size=None, num_workers=workers)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        labels = self.val.ground_truth()
        for start in range(0, self.eval_samples, batch_size):
            end = min(start + batch_size, self.eval_samples)
            x = self.val.load(range(start, end))
            yield x["dense"], x["sparse"] % self.modulus, labels[start:end]


def _real_model(variant: str, sizes: tuple[int, ...]) -> DlrmConfig:
    config = REAL_VARIANTS[variant]()
    if variant == "default" and sizes != config.multi_hot_sizes:
        raise DataError(
            f"the data's multi-hot sizes {sizes} are not the reference's {config.multi_hot_sizes}",
            hint="Closed DLRM-v2 trains on the reference's materialised multi-hot data; "
            f"for other data use an Open variant ({', '.join(MODELS)})",
        )
    return replace(config, multi_hot_sizes=sizes)


class _TrainDays(Dataset):
    """Item ``i``: this process's share of global batch ``i``, the training rows ``[i·G, (i+1)·G)`` of
    the days in order, split evenly over the processes. Items are whole batches read as slices of
    the memory-mapped days."""

    def __init__(self, days: list[MultiHotDay], samples: int, global_batch: int, parallel: Parallel,
                 modulus: np.ndarray) -> None:  # fmt: skip
        self.days, self.samples, self.global_batch = days, samples, global_batch
        self.parallel, self.modulus = parallel, modulus
        self.starts = np.cumsum([0, *(len(d) for d in days)])

    def __len__(self) -> int:
        return math.ceil(self.samples / self.global_batch)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low = step * self.global_batch
        size = min(low + self.global_batch, self.samples) - low
        rank, world = self.parallel.rank, self.parallel.world_size
        return self.rows(low + size * rank // world, low + size * (rank + 1) // world)

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dense, sparse, labels = [], [], []
        for day, first in zip(self.days, self.starts[:-1], strict=True):
            a, b = max(start - first, 0), min(stop - first, len(day))
            if a < b:
                dense.append(np.asarray(day.dense[a:b], dtype=np.float32))
                sparse.append(
                    np.concatenate([np.asarray(f[a:b], dtype=np.int64) for f in day.sparse], axis=1)
                )
                labels.append(np.asarray(day.labels[a:b], dtype=np.float32))
        if not dense:  # an empty share of the last batch
            width = len(self.modulus)
            return torch.zeros(0, NUM_DENSE), torch.zeros(0, width, dtype=torch.int64), torch.zeros(0)
        ids = np.concatenate(sparse) % self.modulus
        return (
            torch.from_numpy(np.concatenate(dense)),
            torch.from_numpy(ids),
            torch.from_numpy(np.concatenate(labels)),
        )


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as a fraction; DataError when the labels hold one class only (AUC is undefined)."""
    from sklearn.metrics import roc_auc_score

    if labels.size == 0 or labels.min() == labels.max():
        raise DataError(
            f"the evaluation set's {labels.size} labels are all {labels.max() if labels.size else '-'}",
            hint="AUC needs both clicks and non-clicks among the evaluated impressions",
        )
    return float(roc_auc_score(labels, scores))


class Recommendation:
    """The ``dlrm_dcnv2`` training benchmark (see the module docstring)."""

    name = NAME

    def __init__(
        self,
        dataset: Path | None = None,
        *,
        variant: str = "default",
        ruleset: str = DEFAULT_RULESET,
        global_batch_size: int | None = None,
        max_epochs: int | None = None,
        count: int | None = None,
        eval_count: int | None = None,
        workers: int = 0,
        eval_batch_size: int = 16_384,
        embedding: str = "full",
        robe_size: str | None = None,
        compression: float | None = None,
    ) -> None:
        rules = training_rules(ruleset)
        # ROBE, hashing or QR instead of the full tables (models/dlrm_embeddings.py); a UsageError when incomplete
        self.embedding = EmbeddingChoice(
            kind=embedding, robe_bytes=parse_size(robe_size) if robe_size is not None else None,
            compression=compression,
        )  # fmt: skip
        if dataset is None:
            check_variant(NAME, variant, SYNTHETIC)
            self.rule: TrainingRule = rules.synthetic_variant(NAME, variant)
            self.source: Any = _SyntheticSource(SYNTHETIC[variant])
            recipe = replace(SYNTHETIC[variant].recipe, epochs=self.rule.max_epochs)
        else:
            check_variant(NAME, variant, REAL_VARIANTS, "Criteo")
            closed = rules.benchmark(NAME)
            # Only the reference model is Closed; a scaled-down one is an Open entry on the real data.
            open_entry = replace(closed, division=SYNTHETIC_DIVISION, variant=variant)
            self.rule = closed if variant == "default" else open_entry
            self.source = _CriteoSource(Path(dataset), variant, count=count, eval_count=eval_count)
            recipe = REFERENCE_RECIPE
        if self.embedding.kind != "full" and self.rule.division != SYNTHETIC_DIVISION:
            # the reference model's tables are part of Closed: compressed embeddings are an Open entry
            self.rule = replace(self.rule, division=SYNTHETIC_DIVISION)
        if global_batch_size is not None:
            check_global_batch_size(global_batch_size, example=65_536)
            # The LR is kept: Adagrad divides each step by the gradients' running RMS, so its steps do not
            # grow with the batch as SGD's do (closed_dlrm_dcnv2.yaml leaves the LR to the submitter).
            recipe = replace(recipe, global_batch_size=global_batch_size)
        if max_epochs is not None:
            check_max_epochs(max_epochs)
            recipe = replace(recipe, epochs=max_epochs)
        self.recipe = recipe
        self.dataset_name: str = self.source.dataset_name
        self.model_config: DlrmConfig = self.source.model_config
        self.global_batch_size = recipe.global_batch_size
        self.max_epochs = recipe.epochs
        self.train_samples = self.source.train_samples
        self.eval_samples = self.source.eval_samples
        self.workers = workers
        self.eval_batch_size = eval_batch_size

    def build(self, seed: int, parallel: Parallel) -> Trainable:
        torch.manual_seed(seed)
        cfg = self.model_config
        embeddings = build_embeddings(self.embedding, cfg.num_embeddings, cfg.multi_hot_sizes, cfg.embedding_dim)
        model = ClickLogits(DLRMv2(cfg, embeddings)).to(parallel.device)
        r = self.recipe
        optimizer = torch.optim.Adagrad(
            model.parameters(), lr=r.base_lr, lr_decay=r.lr_decay, weight_decay=r.weight_decay,
            initial_accumulator_value=r.initial_accumulator_value, eps=r.eps,
        )  # fmt: skip
        batches = self.source.train_batches(seed, parallel, self.global_batch_size, self.workers)
        return Trainable(model=model, optimizer=optimizer, batches=batches)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        dense, sparse, labels = batch  # (B, 13) float32, (B, W) int64, (B,) float32
        logits = model(dense, sparse).reshape(-1)
        # Sum / count, not mean: a process's share of the last batch can be empty, and its mean is NaN.
        total = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        return total / max(len(labels), 1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """AUC as a fraction. Scored on logits: AUC depends on the order of the scores only, and
        logits keep the order that float32 sigmoids flatten into ties near 0 and 1."""
        model.eval()
        device = next(model.parameters()).device
        scores, labels = [], []
        for dense, sparse, y in self.source.eval_batches(self.eval_batch_size):
            dense_t, sparse_t = (torch.from_numpy(np.asarray(a)).to(device) for a in (dense, sparse))
            scores.append(model(dense_t, sparse_t).reshape(-1).cpu())
            labels.append(np.asarray(y))
        return auc(np.concatenate(labels), torch.cat(scores).numpy())

    def hyperparameters(self, parallel: Parallel) -> dict[str, object]:
        """The optimizer keys closed_dlrm_dcnv2.yaml requires, with the values build() gives Adagrad."""
        r = self.recipe
        return {
            C.OPT_NAME: "adagrad",
            C.OPT_BASE_LR: r.base_lr,
            C.OPT_ADAGRAD_LR_DECAY: r.lr_decay,
            C.OPT_WEIGHT_DECAY: r.weight_decay,
            C.OPT_ADAGRAD_INITIAL_ACCUMULATOR_VALUE: r.initial_accumulator_value,
            C.OPT_ADAGRAD_EPSILON: r.eps,
            C.OPT_LR_WARMUP_STEPS: r.warmup_steps,
            C.OPT_LR_DECAY_START_STEP: r.decay_start_step,
            C.OPT_LR_DECAY_STEPS: r.decay_steps,
        }
