"""The system description: parsed /proc facts pinned on fixtures, and the live description is safe to store."""

from __future__ import annotations

import json

from mlgauge.results.system import describe_system, parse_cpuinfo, parse_meminfo


def _cpuinfo(sockets: int, cores: int, threads: int, model: str) -> str:
    blocks = []
    processor = 0
    for thread in range(threads):
        for socket in range(sockets):
            for core in range(cores):
                blocks.append(
                    f"processor\t: {processor}\n"
                    "vendor_id\t: GenuineIntel\n"
                    "model\t\t: 85\n"
                    f"model name\t: {model}\n"
                    f"physical id\t: {socket}\n"
                    f"siblings\t: {cores * threads}\n"
                    f"core id\t\t: {core}\n"
                    f"cpu cores\t: {cores}\n"
                    f"apicid\t\t: {socket * 16 + core * 2 + thread}\n"
                    "flags\t\t: fpu vme de pse avx2 avx512f\n"
                )
                processor += 1
    return "\n".join(blocks) + "\n"


def test_cpuinfo_two_sockets_two_cores_two_threads() -> None:
    model = "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"
    parsed = parse_cpuinfo(_cpuinfo(2, 2, 2, model))
    assert parsed == {"model_name": model, "logical": 8, "physical": 4}


def test_cpuinfo_without_topology_gives_no_physical_count() -> None:
    # Some ARM kernels and containers omit physical id / core id.
    text = "processor\t: 0\nBogoMIPS\t: 50.00\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n"
    assert parse_cpuinfo(text) == {"model_name": None, "logical": 2, "physical": None}


def test_cpuinfo_garbage_does_not_crash() -> None:
    assert parse_cpuinfo("") == {"model_name": None, "logical": None, "physical": None}
    assert parse_cpuinfo("no colons here\n\n:::\n")["logical"] is None


def test_meminfo_total_in_bytes() -> None:
    text = "MemTotal:       24576000 kB\nMemFree:         1234567 kB\nMemAvailable:   20000000 kB\n"
    assert parse_meminfo(text) == 24576000 * 1024


def test_meminfo_missing_or_malformed() -> None:
    assert parse_meminfo("") is None
    assert parse_meminfo("MemFree: 10 kB\n") is None
    assert parse_meminfo("MemTotal: lots kB\n") is None


def test_describe_system_is_complete_and_json_serialisable() -> None:
    info = describe_system()
    required = {
        "cpu_model",
        "cpu_logical_cores",
        "cpu_physical_cores",
        "cpu_affinity",
        "memory_bytes",
        "os",
        "kernel",
        "machine",
        "hostname",
        "python",
        "libraries",
        "gpus",
    }
    assert required <= set(info)
    assert json.loads(json.dumps(info)) == info
    assert info["cpu_logical_cores"] >= 1
    assert info["memory_bytes"] > 0
    assert info["libraries"]["mlgauge"]
    assert "not-a-real-library" not in info["libraries"]
    # This test machine has no GPU (CPU-only torch build).
    assert info["gpus"] == []


def test_describe_system_is_cached_but_returns_independent_copies() -> None:
    first = describe_system()
    first["libraries"]["mlgauge"] = "edited"
    first["gpus"].append({"name": "fake"})
    second = describe_system()
    assert second["libraries"]["mlgauge"] != "edited"
    assert second["gpus"] == []
