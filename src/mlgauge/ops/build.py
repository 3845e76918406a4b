"""Compile mlgauge's C++ operators once per machine and PyTorch version, and cache them.

``python -m mlgauge.ops`` builds ahead of time (the Makefile does it at install), so a run
never waits for the compiler. The build goes through ``torch.utils.cpp_extension.load`` into
``cache_dir()/ops/<digest>``: the digest covers the source, the PyTorch version and the flags, so a
changed source or a new PyTorch builds afresh. Vector width follows what PyTorch's own kernels use
on this CPU (``torch.backends.cpu.get_cpu_capability``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import warnings
from functools import cache
from pathlib import Path

from mlgauge import paths

# kernel name -> its C++ source beside this file
KERNELS = {"focal_loss": "focal_loss.cpp", "robe": "robe.cpp"}
# Where compiled operators live, when not under cache_dir(): a build depends only on the source, the
# PyTorch version and the flags, so throwaway homes (the test suite's) may share the machine's.
OPS_CACHE_ENV = "MLGAUGE_OPS_CACHE"
_ISA_FLAGS = {
    # ATen's Vectorized<T> picks its implementation from CPU_CAPABILITY_*; SLEEF's exp/log1p come from libtorch.
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY_AVX512",
               "-DCPU_CAPABILITY=AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
}


class BuildFailed(Exception):
    """The kernel could not be compiled here (no compiler, or it failed)."""


def _flags() -> list[str]:
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    # -fopenmp: at::parallel_for is inline OpenMP in PyTorch's headers; without it the loop runs on one thread.
    return ["-O3", "-std=c++17", "-fopenmp", *_ISA_FLAGS.get(capability, [])]


def _source(name: str) -> Path:
    return Path(__file__).with_name(KERNELS[name])


def _build_dir(name: str, flags: list[str]) -> Path:
    import torch

    h = hashlib.sha256(_source(name).read_bytes())
    h.update(f"{torch.__version__}|{' '.join(flags)}".encode())
    root = os.environ.get(OPS_CACHE_ENV)
    return (Path(root) if root else paths.cache_dir() / "ops") / f"{name}-{h.hexdigest()[:12]}"


def build_kernel(name: str):
    """Compile (or load the cached build of) one kernel of KERNELS; raises BuildFailed."""
    from torch.utils import cpp_extension

    flags = _flags()
    folder = _build_dir(name, flags)
    # pip's ninja lands beside this interpreter, which is not on PATH unless the venv is activated
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    folder.mkdir(parents=True, exist_ok=True)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            return cpp_extension.load(
                name=f"mlgauge_{name}_{folder.name.rsplit('-', 1)[1]}",
                sources=[str(_source(name))],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(folder),
                verbose=False,
            )
    except (OSError, RuntimeError, ImportError, SystemExit) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildFailed(first) from None


@cache
def fused_kernel(name: str = "focal_loss"):
    """The compiled kernel module, or None (with one warning) when it cannot be built here."""
    try:
        return build_kernel(name)
    except BuildFailed as exc:
        warnings.warn(
            f"mlgauge's {name} kernel could not be built ({exc}); using PyTorch ops instead. "
            "Install a C++ compiler (g++) and ninja, then run 'python -m mlgauge.ops'",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def main() -> int:
    failed = 0
    for name in KERNELS:
        if not _source(name).is_file():
            continue
        try:
            build_kernel(name)
        except BuildFailed as exc:
            print(f"error: the {name} kernel could not be built: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"built the {name} kernel in {_build_dir(name, _flags())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
