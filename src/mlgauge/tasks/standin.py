"""The on-disk cache of a synthetic stand-in: data and trained weights, built once.

A stand-in lives in ``<cache>/tasks/<name>-synthetic/<version>/`` and counts as
prepared when its ``prepared.json`` exists. It is built in a temporary sibling
folder and renamed into place, so an interrupted ``prepare`` leaves no half cache.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlgauge import paths
from mlgauge.errors import DataError

Progress = Callable[[str, float], None]  # (stage, overall fraction done 0..1)


class StandinCache:
    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version

    @property
    def dir(self) -> Path:
        return paths.cache_dir() / "tasks" / f"{self.name}-synthetic" / self.version

    def is_prepared(self) -> bool:
        return (self.dir / "prepared.json").is_file()

    def meta(self) -> dict:
        return json.loads((self.dir / "prepared.json").read_text())

    def require(self, task: str) -> Path:
        """The cache folder, or a DataError telling the user how to build it."""
        if not self.is_prepared():
            raise DataError(
                f"the synthetic stand-in for {task} is not prepared",
                hint=f"Run 'mlgauge prepare {task}' (mlgauge run does this automatically)",
            )
        return self.dir

    def write(self, fill: Callable[[Path], None], meta: dict) -> dict:
        """``fill(folder)`` writes the files; ``meta`` becomes prepared.json. Atomic."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=self.dir.parent))
        try:
            fill(tmp)
            (tmp / "prepared.json").write_text(json.dumps(meta, indent=2))
            if self.dir.exists():
                shutil.rmtree(self.dir)
            os.replace(tmp, self.dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return meta


class StandinTask:
    """What every task shares: the stand-in cache and the choice between the stand-in
    (no dataset given) and the real dataset format.

    Subclasses set ``name``, ``title``, ``rules_round`` and ``cache``, and implement
    ``prepare``, ``_standin_workload(weights_path, count)`` and
    ``_real_workload(dataset_path, weights_path, count, round)``.
    """

    name: str
    title: str
    rules_round: str
    cache: StandinCache

    @property
    def standin_dir(self) -> Path:
        return self.cache.dir

    def is_prepared(self) -> bool:
        return self.cache.is_prepared()

    def workload(
        self,
        dataset_path: Path | None = None,
        weights_path: Path | None = None,
        count: int | None = None,
        round: str | None = None,
    ):
        """Bind to the real dataset at ``dataset_path`` (rules of ``round``, default the
        task's), or to the prepared synthetic stand-in when it is None."""
        if dataset_path is None:
            return self._standin_workload(weights_path, count)
        return self._real_workload(Path(dataset_path), weights_path, count, round or self.rules_round)

    def _standin_workload(self, weights_path: Path | None, count: int | None):
        raise NotImplementedError

    def _real_workload(self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str):
        raise NotImplementedError
