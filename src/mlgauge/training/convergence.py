"""A stored training set's convergence points: what RCPs are built from and checked against.

The point of a run is the epoch it reached the target at (the RCP checker reads the
``epoch_num`` of the last ``eval_accuracy`` before a successful ``run_stop``); a run that
did not converge has none.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlgauge.errors import UsageError
from mlgauge.results.training_record import TrainingRecord
from mlgauge.rules.training import TrainingRule, training_rules


@dataclass(frozen=True)
class SetPoints:
    benchmark: str
    global_batch_size: int
    rule: TrainingRule
    points: list[float | None]  # one per run, None where the run did not converge
    hyperparameters: dict


def _point(record: TrainingRecord) -> float | None:
    if not record.converged or not record.evals:
        return None
    return float(record.evals[-1]["epoch"])


def set_points(records: list[TrainingRecord], what: str) -> SetPoints:
    """The points of runs that share one configuration; mixing configurations is refused."""
    if not records:
        raise UsageError(f"no stored training runs for {what}", hint="List them with 'mlgauge report' or train a set first")
    configs = {(r.benchmark, r.config.get("global_batch_size"), r.config.get("variant"), r.config.get("ruleset")) for r in records}
    if len(configs) > 1:
        raise UsageError(
            f"{what} mixes configurations {sorted(map(str, configs))}",
            hint="Build or check RCPs one configuration (benchmark, batch size, variant) at a time",
        )
    benchmark, batch, variant, ruleset = configs.pop()
    rules = training_rules(ruleset or "4.0.0")
    rule = rules.synthetic_variant(benchmark, variant) if variant else rules.benchmark(benchmark)
    hyper = {k: v for k, v in records[0].config.items() if k.startswith("opt_") or k == "global_batch_size"}
    return SetPoints(benchmark, int(batch), rule, [_point(r) for r in records], hyper)
