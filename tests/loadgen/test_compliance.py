"""Compliance audits: the audit.config LoadGen reads, and the verdict rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlgauge.loadgen import compliance
from mlgauge.rules import inference_rules

READ_AUDIT = r"""
import json, sys
import mlperf_loadgen as lg
s = lg.TestSettings()
rc = s.FromConfig(sys.argv[1], "resnet50", "Offline", 2)
print(json.dumps({"rc": rc, "mode": str(s.mode), "seed": s.accuracy_log_rng_seed,
                  "target": s.accuracy_log_sampling_target, "same": s.performance_issue_same,
                  "same_index": s.performance_issue_same_index}))
"""


def _loadgen_reads(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", READ_AUDIT, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_test01_audit_config_is_what_loadgen_applies(tmp_path):
    path = tmp_path / "audit.config"
    path.write_text(compliance.audit_config("TEST01", inference_rules().benchmark("retinanet")))
    got = _loadgen_reads(path)
    assert got["rc"] == 0
    assert got["mode"].endswith("PerformanceOnly")
    assert got["seed"] == compliance.TEST01_SEED
    assert got["target"] == 256  # retinanet's sampling target, from the rule file


def test_test04_audit_config_is_what_loadgen_applies(tmp_path):
    path = tmp_path / "audit.config"
    path.write_text(compliance.audit_config("TEST04", inference_rules().benchmark("resnet50")))
    got = _loadgen_reads(path)
    assert got["rc"] == 0 and got["same"] is True and got["same_index"] == 3


def test_unknown_audit():
    with pytest.raises(ValueError, match="TEST99"):
        compliance.audit_config("TEST99", inference_rules().benchmark("resnet50"))


@pytest.mark.parametrize(
    ("scenario", "audit", "normal", "higher", "passed"),
    [
        ("Offline", 1090.0, 1000.0, True, True),  # 9% faster: within 10%
        ("Offline", 1120.0, 1000.0, True, False),  # 12% faster: caching suspected
        ("Offline", 500.0, 1000.0, True, True),  # slower is never caching
        ("SingleStream", 900_000.0, 1_000_000.0, False, False),  # latency 10% lower = 11.1% faster
        ("SingleStream", 90_000.0, 100_000.0, False, True),  # <= 200 us: 20% allowed
    ],
)
def test_test04_speedup_limit(scenario, audit, normal, higher, passed):
    verdict = compliance.verify_test04(scenario=scenario, audit_value=audit, normal_value=normal, higher_is_better=higher)
    assert verdict.passed is passed


def _accuracy_log(path: Path, entries: list[tuple[int, int]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rows = [{"seq_id": i, "qsl_idx": idx, "data": value.to_bytes(4, "little").hex().upper()} for i, (idx, value) in enumerate(entries)]
    (path / "mlperf_log_accuracy.json").write_text(json.dumps(rows))
    return path


def test_test01_identical_responses_and_performance(tmp_path):
    acc = _accuracy_log(tmp_path / "acc", [(i, i * 3) for i in range(10)])
    audit = _accuracy_log(tmp_path / "audit", [(2, 6), (7, 21), (2, 6)])
    ok = compliance.verify_test01(
        scenario="Offline", audit_dir=audit, accuracy_dir=acc, audit_value=1050, normal_value=1000, higher_is_better=True
    )
    assert ok.passed and ok.checks[0].detail == "2/2 identical"
    slow = compliance.verify_test01(
        scenario="Offline", audit_dir=audit, accuracy_dir=acc, audit_value=800, normal_value=1000, higher_is_better=True
    )
    assert not slow.passed and slow.checks[0].passed and not slow.checks[1].passed


def test_test01_differing_responses(tmp_path):
    acc = _accuracy_log(tmp_path / "acc", [(i, i * 3) for i in range(10)])
    audit = _accuracy_log(tmp_path / "audit", [(2, 6), (7, 99)])
    assert compliance.compare_responses(audit / "mlperf_log_accuracy.json", acc / "mlperf_log_accuracy.json") == (2, 1, [7])
    strict = compliance.verify_test01(
        scenario="Offline", audit_dir=audit, accuracy_dir=acc, audit_value=1000, normal_value=1000, higher_is_better=True
    )
    assert not strict.passed and "1/2 differ" in strict.checks[0].detail
    tolerated = compliance.verify_test01(
        scenario="Offline", audit_dir=audit, accuracy_dir=acc, audit_value=1000, normal_value=1000,
        higher_is_better=True, subset_scores=(80.0, 79.5), score_tolerance=0.8,
    )
    assert tolerated.passed
    too_far = compliance.verify_test01(
        scenario="Offline", audit_dir=audit, accuracy_dir=acc, audit_value=1000, normal_value=1000,
        higher_is_better=True, subset_scores=(80.0, 79.0), score_tolerance=0.8,
    )
    assert not too_far.passed
