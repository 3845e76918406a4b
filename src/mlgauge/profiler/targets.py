"""Resolve ``mlgauge profile TASK [--train|--infer]`` to the benchmark or task whose steps are profiled."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from mlgauge.errors import UsageError, choice_error


@dataclass(frozen=True)
class Target:
    mode: str  # "train" or "infer"
    name: str  # training benchmark (train) or inference task (infer)

    @property
    def label(self) -> str:
        return f"{self.name} --{self.mode}"


@cache
def _table() -> dict:
    return tomllib.loads(resources.files("mlgauge.profiler").joinpath("targets.toml").read_text())


def resolve_target(task: str, mode: str | None) -> Target:
    """``mode`` None: the name's own kind decides."""
    from mlgauge.tasks import task_names
    from mlgauge.training.benchmarks import BENCHMARKS

    table = _table()
    if task in BENCHMARKS:
        if mode in (None, "train"):
            return Target("train", task)
        counterpart = table["inference_for_train"].get(task)
    elif task in task_names():
        if mode in (None, "infer"):
            return Target("infer", task)
        counterpart = table["train_for_inference"].get(task)
    else:
        raise choice_error("task or training benchmark", task, [*BENCHMARKS, *task_names()])
    if counterpart is None:
        pairs = table["train_for_inference"] if mode == "train" else table["inference_for_train"]
        raise UsageError(
            f"{task} has no {'training benchmark' if mode == 'train' else 'inference task'} to profile with --{mode}",
            hint=f"--{mode} works for {', '.join(pairs)}",
        )
    return Target(mode, counterpart)
