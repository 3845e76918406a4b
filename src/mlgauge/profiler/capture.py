"""Profile a command: run it in a child process under torch.profiler with oneDNN's verbose log on.

The child (``profiler/child.py``) records a bounded number of training steps after warm-up, or
the whole script; its stdout, where oneDNN writes, goes to ``onednn_verbose.log`` and the
script's own output lines are kept apart from the verbose ones. A script that fails still leaves
what was recorded: the capture says so, and analysis goes on with a warning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlgauge import paths
from mlgauge.errors import RunError, UsageError
from mlgauge.profiler import task_steps
from mlgauge.profiler.child import STATUS, TRACE
from mlgauge.profiler.targets import Target

ONEDNN_LOG = "onednn_verbose.log"
STDERR = "stderr.log"
MERGED_TRACE = "trace.onednn.json.gz"
VERBOSE_ENV = {"ONEDNN_VERBOSE": "1", "ONEDNN_VERBOSE_TIMESTAMP": "1"}


@dataclass
class Capture:
    folder: Path
    command: list[str]
    exit_code: int
    status: dict  # the child's capture.json: steps seen and recorded, error, trace written
    summary_only: bool = False
    warnings: list[str] = field(default_factory=list)
    target: str = ""  # what was profiled, for people: "ssd --train" or the script's command line

    @property
    def trace_path(self) -> Path:
        return self.folder / TRACE

    @property
    def onednn_path(self) -> Path:
        return self.folder / ONEDNN_LOG

    @property
    def merged_trace_path(self) -> Path:
        """The trace with the oneDNN primitives merged in (written by the analysis)."""
        return self.folder / MERGED_TRACE


def _script(command: list[str]) -> list[str]:
    """``python x.py a`` or ``x.py a`` -> ``[x.py, a]``; the child runs it with this interpreter."""
    if command and Path(command[0]).name.startswith("python"):
        command = command[1:]
    if not command or not command[0].endswith(".py"):
        raise UsageError(
            f"cannot profile {' '.join(command) or 'nothing'}: give a Python script",
            hint="Write it as: mlgauge profile -- python train.py --your-args",
        )
    if not Path(command[0]).is_file():
        raise UsageError(f"no script at {command[0]}", hint="Check the path")
    return command


def capture_script(
    command: list[str],
    out_dir: Path,
    *,
    warmup: int = 2,
    steps: int = 5,
    timeout_s: float | None = None,
    summary_only: bool = False,
) -> Capture:
    """``summary_only``: op times alone, the lightest capture (no input shapes, so no FLOPs or
    rooflines, no module names, and no oneDNN verbose log)."""
    script = _script(command)
    return _capture(script, out_dir, warmup, steps, timeout_s, summary_only, " ".join(["python", *script]))


def capture_task(
    target: Target,
    out_dir: Path,
    *,
    warmup: int = 2,
    steps: int = 5,
    timeout_s: float | None = None,
    summary_only: bool = False,
    options: dict | None = None,
) -> Capture:
    """Profile a task's own loop (``python -m mlgauge.profiler.task_steps``): ``options`` are task_steps.py's flags
    without dashes (variant, global_batch_size, fused_focal_loss for training; batch, threads for
    inference); None values are left out."""
    if steps < 1:
        raise UsageError("a task profile records at least one step", hint="Use --steps 1 or more")
    flags = [f"--{target.mode}", target.name, "--steps", str(warmup + steps)]
    for key, value in (options or {}).items():
        if value is None or value is False:
            continue
        flags += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    label = " ".join([target.label, *flags[4:]])
    return _capture(["-m", task_steps.__name__, *flags], out_dir, warmup, steps, timeout_s, summary_only, label)


def _capture(script: list[str], out_dir: Path, warmup: int, steps: int, timeout_s: float | None,
             summary_only: bool, target: str) -> Capture:  # fmt: skip
    if warmup < 0 or steps < 0:
        raise UsageError("--warmup and --steps must be 0 or more", hint="For example --warmup 2 --steps 5")
    folder = paths.ensure_writable_dir(out_dir, "profile output")
    child = [sys.executable, "-m", "mlgauge.profiler.child", str(folder),
             "--warmup", str(warmup), "--steps", str(steps), *(["--summary-only"] if summary_only else []),
             "--", *script]  # fmt: skip
    env = os.environ | ({} if summary_only else VERBOSE_ENV)
    try:
        with open(folder / ONEDNN_LOG, "wb") as out, open(folder / STDERR, "wb") as err:
            done = subprocess.run(child, stdout=out, stderr=err, env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise RunError(
            f"the profiled script ran past {timeout_s:g} s", hint="Profile fewer steps, or raise --timeout"
        ) from None
    status = _status(folder)
    capture = Capture(folder, script, done.returncode, status, summary_only, target=target)
    if done.returncode != 0:
        last = status.get("error") or _last_line(folder / STDERR)
        capture.warnings.append(f"the script failed (exit code {done.returncode}): {last}")
    if steps and status.get("steps_recorded", 0) < steps:
        seen = status.get("steps_seen", 0)
        capture.warnings.append(
            f"{seen} optimizer step(s) ran; {warmup} warm-up + {steps} recorded were asked for"
            + ("" if seen else " (an inference script? use --steps 0 to record the whole script)")
        )
    if not capture.trace_path.is_file():
        raise RunError(
            "the profiler wrote no trace" + (f": {capture.warnings[0]}" if capture.warnings else ""),
            hint=f"See {folder / STDERR}; for scripts without optimizer.step() use --steps 0",
        )
    return capture


def _status(folder: Path) -> dict:
    try:
        return json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return {}  # the child died before writing it (killed, crashed in C++)


def _last_line(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
        # Kineto's own start/stop notes ("USDT:... profiler_stop") are not the script's error
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("USDT:")]
    except OSError:
        return "no error output"
    return lines[-1].strip() if lines else "no error output"
