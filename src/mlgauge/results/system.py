"""Describe the machine a result came from, so numbers from different hosts are never compared blindly.

Everything here is best effort: a field that cannot be read is ``None`` (or
absent, for libraries) rather than an error, because a missing detail must
never stop a benchmark from being recorded.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

# Distribution names (as pip knows them) whose versions change results.
LIBRARIES = (
    "mlgauge",
    "mlcommons-loadgen",
    "torch",
    "onnxruntime",
    "onnx",
    "numpy",
    "executorch",
    "ai-edge-litert",
    "mlperf-logging",
    "flwr",
    "scikit-learn",
)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_cpuinfo(text: str) -> dict:
    """Read ``model_name``, ``logical`` and ``physical`` core counts from /proc/cpuinfo text.

    Physical cores are unique (physical id, core id) pairs; both fields are
    missing on some architectures and in some containers, so ``physical`` is
    None then rather than a guess.
    """
    model: str | None = None
    logical = 0
    cores: set[tuple[str, str]] = set()
    # Blocks are separated by blank lines, one per logical CPU.
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if "processor" not in fields:
            continue
        logical += 1
        if model is None:
            # "model name" on x86 and many ARM kernels, "cpu model" on MIPS; x86's bare
            # "model" is a number, so it is not used as a name.
            model = fields.get("model name") or fields.get("cpu model") or None
        if "physical id" in fields and "core id" in fields:
            cores.add((fields["physical id"], fields["core id"]))
    return {
        "model_name": model,
        "logical": logical or None,
        "physical": len(cores) or None,
    }


def parse_meminfo(text: str) -> int | None:
    """Total memory in bytes from /proc/meminfo text ("MemTotal: 24576000 kB")."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or key.strip() != "MemTotal":
            continue
        parts = value.split()
        try:
            amount = int(parts[0])
        except (IndexError, ValueError):
            return None
        unit = parts[1].lower() if len(parts) > 1 else "b"
        # The kernel writes "kB" but means KiB.
        scale = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}.get(unit)
        return amount * scale if scale else None
    return None


def _memory_bytes() -> int | None:
    text = _read_text("/proc/meminfo")
    if text is not None:
        total = parse_meminfo(text)
        if total:
            return total
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _affinity() -> int | None:
    # The CPUs this process may run on, which in a container or under taskset
    # can be far fewer than cpu_count().
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    try:
        return len(getaffinity(0))
    except OSError:
        return None


def _libraries() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _torch() -> object | None:
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch
    try:
        if importlib.util.find_spec("torch") is None:
            return None
        # Heavy (seconds); imported only here so importing this module stays cheap.
        import torch
    except Exception:  # a broken torch install must not stop a result being recorded
        return None
    return torch


def _torch_facts() -> tuple[list[dict], int | None]:
    torch = _torch()
    if torch is None:
        return [], None
    gpus: list[dict] = []
    threads: int | None = None
    try:
        threads = int(torch.get_num_threads())
    except Exception:
        threads = None
    try:
        # is_available() does not create a CUDA context; get_device_properties
        # does, so it is only reached when there is a GPU to describe.
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(index)
                gpus.append({"name": str(props.name), "memory_bytes": int(props.total_memory)})
    except Exception:
        gpus = []
    return gpus, threads


@functools.cache
def _describe() -> dict:
    cpuinfo_text = _read_text("/proc/cpuinfo")
    cpu = parse_cpuinfo(cpuinfo_text) if cpuinfo_text else {"model_name": None, "physical": None}
    gpus, threads = _torch_facts()
    info: dict = {
        "cpu_model": cpu["model_name"] or platform.processor() or platform.machine() or None,
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": cpu["physical"],
        "cpu_affinity": _affinity(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "libraries": _libraries(),
        "gpus": gpus,
    }
    if threads is not None:
        info["torch_threads"] = threads
    return info


def describe_system() -> dict:
    """A JSON-serialisable description of this machine, computed once per process.

    Returns a fresh copy each call so a caller that edits it cannot change what
    later records see.
    """
    return copy.deepcopy(_describe())
