"""MLPerf compliance audits through LoadGen's own ``audit.config`` mechanism.

LoadGen applies an ``audit.config`` it finds at the path given to
``StartTest`` on top of mlperf.conf and user.conf ("Found Audit Config file"
in the log). mlgauge writes the audit's file into the run folder and then
checks the result the way MLPerf's ``run_verification.py`` scripts do:

* TEST01 logs a sample of responses in performance mode; they must equal the
  accuracy run's responses for the same samples (or, where the system is
  allowed to be non-deterministic, score within the target's tolerance on that
  subset), and performance must be within 10% of the normal run.
* TEST04 issues the same sample over and over; a system that caches results
  would be much faster, so the audit may be at most 10% faster than normal.

Values are from mlcommons/inference compliance/TEST01 and TEST04 (v6.0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlgauge.loadgen import logparse
from mlgauge.rules import BenchmarkRule

TEST01_SEED = 720381539243781796
PERF_TOLERANCE = 0.10
# verify_performance.py relaxes to 20% for very short latencies, where timer
# noise alone moves the result: SingleStream <= 200 us, MultiStream <= 1.6 ms.
SHORT_LATENCY_TOLERANCE = 0.20
SHORT_LATENCY_NS = {"SingleStream": 200_000, "MultiStream": 1_600_000}


def audit_config(test: str, benchmark: BenchmarkRule) -> str:
    """The audit.config text for ``test`` (mode 2 = PerformanceOnly)."""
    if test == "TEST01":
        target = benchmark.test01_sampling_target or 4096
        lines = [
            "*.*.mode = 2",
            f"*.*.accuracy_log_rng_seed = {TEST01_SEED}",
            f"*.*.accuracy_log_sampling_target = {target}",
        ]
    elif test == "TEST04":
        lines = ["*.*.mode = 2", "*.*.performance_issue_same = 1", "*.*.performance_issue_same_index = 3"]
    else:
        raise ValueError(f"unknown audit {test}")
    return f"# LoadGen compliance audit {test}, written by mlgauge\n" + "\n".join(lines) + "\n"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class AuditVerdict:
    test: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"test": self.test, "passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def _tolerance(scenario: str, metric_value: float) -> float:
    limit = SHORT_LATENCY_NS.get(scenario)
    return SHORT_LATENCY_TOLERANCE if limit is not None and metric_value <= limit else PERF_TOLERANCE


def _speedup(audit_value: float, normal_value: float, higher_is_better: bool) -> float:
    """How much faster the audit run was than the normal run (0.05 = 5% faster)."""
    if higher_is_better:
        return audit_value / normal_value - 1.0
    return normal_value / audit_value - 1.0


def check_performance(test: str, scenario: str, audit_value: float, normal_value: float, higher_is_better: bool) -> Check:
    tol = _tolerance(scenario, normal_value)
    faster = _speedup(audit_value, normal_value, higher_is_better)
    if test == "TEST04":
        return Check(
            "not faster on a repeated sample",
            faster <= tol,
            f"{faster:+.1%} vs the normal run (limit +{tol:.0%})",
        )
    return Check("performance within tolerance", abs(faster) <= tol, f"{faster:+.1%} vs the normal run (limit ±{tol:.0%})")


def compare_responses(audit_log: Path, accuracy_log: Path) -> tuple[int, int, list[int]]:
    """(compared, identical, qsl indices that differ) between the audit's logged
    responses and the accuracy run's, first response per sample as the MLPerf scripts do."""
    reference: dict[int, bytes] = {}
    for idx, data in logparse.read_accuracy_log(accuracy_log):
        reference.setdefault(idx, data)
    seen: dict[int, bytes] = {}
    for idx, data in logparse.read_accuracy_log(audit_log):
        seen.setdefault(idx, data)
    differing = sorted(i for i, data in seen.items() if i in reference and reference[i] != data)
    compared = sum(1 for i in seen if i in reference)
    return compared, compared - len(differing), differing


def verify_test01(
    *,
    scenario: str,
    audit_dir: Path,
    accuracy_dir: Path,
    audit_value: float,
    normal_value: float,
    higher_is_better: bool,
    subset_scores: tuple[float, float] | None = None,
    score_tolerance: float = 0.0,
) -> AuditVerdict:
    """``subset_scores``: (accuracy-run score, audit score) on the differing samples'
    subset, when responses differ; ``score_tolerance`` the allowed drop (e.g. 1% of
    the score for a 99% target)."""
    verdict = AuditVerdict("TEST01")
    compared, same, differing = compare_responses(audit_dir / "mlperf_log_accuracy.json", accuracy_dir / "mlperf_log_accuracy.json")
    if compared == 0:
        verdict.checks.append(Check("responses logged in performance mode", False, "no logged response matched a sample of the accuracy run"))
    elif not differing:
        verdict.checks.append(Check("responses match the accuracy run", True, f"{same}/{compared} identical"))
    elif subset_scores is None:
        verdict.checks.append(Check("responses match the accuracy run", False, f"{len(differing)}/{compared} differ (e.g. qsl_idx {differing[0]})"))
    else:
        base, audit = subset_scores
        ok = base - audit <= score_tolerance
        verdict.checks.append(
            Check(
                "accuracy on the logged subset",
                ok,
                f"{len(differing)}/{compared} responses differ; subset score {audit:.4f} vs {base:.4f} (allowed drop {score_tolerance:.4f})",
            )
        )
    verdict.checks.append(check_performance("TEST01", scenario, audit_value, normal_value, higher_is_better))
    return verdict


def verify_test04(*, scenario: str, audit_value: float, normal_value: float, higher_is_better: bool) -> AuditVerdict:
    verdict = AuditVerdict("TEST04")
    verdict.checks.append(check_performance("TEST04", scenario, audit_value, normal_value, higher_is_better))
    return verdict
