"""Train a Tiny reference model on a benchmark's data with its recipe, or load the result from the cache.

Training starts from the device-format samples (tiny/inputs.py), so the model learns from exactly
the bytes a device is later sent. A trained model is cached under ``cache_dir()/tiny`` by a digest
of the benchmark, recipe, seed and the training data itself, and saved as tensors plus plain
metadata (read back with ``torch.load(weights_only=True)``): a second run on the same data skips
training and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlgauge import paths
from mlgauge.errors import ModelError
from mlgauge.models.tiny import build_tiny_model
from mlgauge.tiny.data import TinyData
from mlgauge.tiny.recipes import TinyRecipe
from mlgauge.tiny.serve import AnomalyScore, Probabilities

TRAINER_VERSION = 1  # bump when training changes what a recipe produces
EpochCallback = Callable[[int, int, float], None]  # (epoch done, of epochs, mean training loss)


@dataclass
class Trained:
    served: nn.Module  # Probabilities or AnomalyScore, eval mode
    info: dict  # {"source", "recipe", "epochs", "seconds", "final_loss", "cached", "seed"}


def _digest(data: TinyData, recipe: TinyRecipe, seed: int) -> str:
    h = hashlib.sha256()
    header = {"benchmark": data.benchmark, "recipe": recipe.to_dict(), "seed": seed, "version": TRAINER_VERSION}
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(np.ascontiguousarray(data.train.samples).tobytes())
    h.update(np.ascontiguousarray(data.train.labels).tobytes())
    return h.hexdigest()[:16]


def cached_model_path(data: TinyData, recipe: TinyRecipe, seed: int) -> Path:
    return paths.cache_dir() / "tiny" / f"{data.benchmark}-{_digest(data, recipe, seed)}.pt"


def _served(benchmark: str, model: nn.Module, data: TinyData) -> nn.Module:
    if benchmark != "ad01":
        return Probabilities(model)
    windows = torch.from_numpy(data.codec.to_model(data.train.samples))
    return AnomalyScore(model, windows.mean(0), windows.std(0) + 1e-6)


def train_or_load(
    data: TinyData, recipe: TinyRecipe, *, seed: int = 0, retrain: bool = False, on_epoch: EpochCallback | None = None
) -> Trained:
    path = cached_model_path(data, recipe, seed)
    if path.is_file() and not retrain:
        return _load(path, data)
    torch.manual_seed(seed)
    served = _served(data.benchmark, build_tiny_model(data.benchmark), data)
    started = time.perf_counter()
    loss = _fit(served, data, recipe, seed, on_epoch)
    info = {"source": "trained", "recipe": recipe.name, "recipe_values": recipe.to_dict(), "seed": seed,
            "epochs": recipe.epochs, "train_samples": len(data.train.samples),
            "seconds": round(time.perf_counter() - started, 2), "final_loss": loss}  # fmt: skip
    _save(path, served, info)
    return Trained(served.eval(), info | {"cached": False})


def _fit(served: nn.Module, data: TinyData, recipe: TinyRecipe, seed: int, on_epoch: EpochCallback | None) -> float:
    # A backend loaded earlier in this process may have pinned torch to one thread.
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    model = served.model
    samples, labels, codec = data.train.samples, torch.from_numpy(data.train.labels), data.codec
    steps = -(-len(samples) // recipe.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    scheduler = recipe.scheduler(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(samples), generator=generator).numpy()
        total = 0.0
        for start in range(0, len(samples), recipe.batch_size):
            chosen = order[start : start + recipe.batch_size]
            x = torch.from_numpy(codec.to_model(samples[chosen]))
            if recipe.flip:
                flip = torch.rand(len(chosen), generator=generator) < 0.5
                x[flip] = x[flip].flip(-1)
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(served, x, labels[chosen])
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(chosen)
        loss_value = total / len(samples)
        if not np.isfinite(loss_value):
            raise ModelError(
                f"training {data.benchmark} diverged (loss {loss_value}) in epoch {epoch + 1}",
                hint="Lower the learning rate in the recipe, or check the dataset",
            )
        if on_epoch is not None:
            on_epoch(epoch + 1, recipe.epochs, loss_value)
    served.eval()
    return round(loss_value, 6)


def _loss(served: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if isinstance(served, AnomalyScore):
        z = served.standardise(x)
        return nn.functional.mse_loss(served.model(z), z)
    return nn.functional.cross_entropy(served.model(x), y)


def _save(path: Path, served: nn.Module, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".train-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"state_dict": served.state_dict(), "info": json.dumps(info)}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path, data: TinyData) -> Trained:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        served = _served(data.benchmark, build_tiny_model(data.benchmark), data)
        served.load_state_dict(saved["state_dict"])
        info = json.loads(saved["info"])
    except Exception as exc:
        raise ModelError(
            f"the cached {data.benchmark} model {path} cannot be read: {type(exc).__name__}",
            hint=f"Delete {path} (or pass --retrain) to train it again",
        ) from None
    return Trained(served.eval(), info | {"cached": True})


def load_weights(path: Path, data: TinyData) -> Trained:
    """The user's own trained weights: a state dict of the served module, or of the bare reference model."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path} is not a readable PyTorch weights file: {type(exc).__name__}",
            hint="Give a state dict saved with torch.save(model.state_dict(), path)",
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    served = _served(data.benchmark, build_tiny_model(data.benchmark), data)
    target = served if any(k.startswith("model.") for k in state) else served.model
    try:
        target.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{path} does not hold {data.benchmark} reference-model weights: {first}",
            hint=f"Save the state dict of mlgauge.models.tiny.build_tiny_model('{data.benchmark}')",
        ) from None
    return Trained(served.eval(), {"source": "weights", "path": str(path), "cached": False})
