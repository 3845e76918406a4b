"""Scoring a Tiny accuracy run the way the runner does (main.py, script.py).

Classifiers: top-1 over the accuracy set, one output vector per file. ad01: each clip's score is
the mean of its windows' outputs, and the metric is ``sklearn.metrics.roc_auc_score`` over clips.
"""

from __future__ import annotations

import numpy as np

from mlgauge.rules.tiny import TinyBenchmark
from mlgauge.tiny.data import TinySplit


def clip_scores(outputs: np.ndarray, groups: np.ndarray, clips: int) -> np.ndarray:
    """The mean output of each clip's windows."""
    values = np.asarray(outputs, dtype=np.float64).reshape(len(groups), -1)[:, 0]
    sums = np.bincount(groups, weights=values, minlength=clips)
    counts = np.bincount(groups, minlength=clips)
    return sums / np.maximum(counts, 1)


def score(bench: TinyBenchmark, split: TinySplit, outputs: np.ndarray) -> dict:
    """``outputs``: one row per sample of ``split`` (per window for ad01)."""
    if split.groups is not None:
        from sklearn.metrics import roc_auc_score

        value = float(roc_auc_score(split.labels, clip_scores(outputs, split.groups, split.count)))
    else:
        predicted = np.asarray(outputs).reshape(split.count, -1).argmax(axis=1)
        value = float(np.mean(predicted == split.labels))
    return {
        "metric": bench.metric,
        "value": value,
        "target": bench.target,
        "passed": bench.reached(value),
        "samples": split.count,
    }
