"""Read LoadGen's own view of a user.conf: ``TestSettings`` after ``FromConfig``,
in a fresh process per case (LoadGen accepts one configuration per process).
Shared by the tests that check mlgauge's config handling against LoadGen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LG_READ = r"""
import json, sys
import mlperf_loadgen as lg
path, model, scenario = sys.argv[1:4]
s = lg.TestSettings()
out = {"rc": s.FromConfig(path, model, scenario)}
for name in dir(s):
    if not name.startswith("_"):
        v = getattr(s, name)
        if isinstance(v, (bool, int, float)):
            out[name] = v
print(json.dumps(out))
"""


def loadgen_read(cases: list[tuple[Path, str, str]]) -> list[dict]:
    """TestSettings after LoadGen's FromConfig, one fresh process per case (in parallel)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LG_READ, str(path), model, scenario],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path, model, scenario in cases
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def loadgen_view(settings: dict, scenario: str, key: str) -> float:
    """The user.conf value that TestSettings holds for ``key``, in user.conf units."""
    prefix = {"SingleStream": "single_stream", "MultiStream": "multi_stream", "Server": "server"}.get(
        scenario
    )
    if key == "target_latency":
        attr = "server_target_latency_ns" if scenario == "Server" else f"{prefix}_expected_latency_ns"
        return settings[attr] / 1e6
    if key == "target_latency_percentile":
        return settings[f"{prefix}_target_latency_percentile"] / 0.01
    if key == "target_qps":
        return settings["server_target_qps" if scenario == "Server" else "offline_expected_qps"]
    attr = {
        "min_duration": "min_duration_ms",
        "max_duration": "max_duration_ms",
        "samples_per_query": "multi_stream_samples_per_query",
        "max_async_queries": "server_max_async_queries",
        "coalesce_queries": "server_coalesce_queries",
    }.get(key, key)
    return float(settings[attr])
