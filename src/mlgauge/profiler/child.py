"""Runs inside the profiled process: a user's script under torch.profiler, for a bounded number of steps.

``python -m mlgauge.profiler.child OUT --warmup W --steps N -- script.py args...`` (or ``-- -m module args``). A step is one
``optimizer.step()`` (a global post-hook counts them) or a call of
:func:`mlgauge.profiler.steps.step_done` (loops without an optimizer): the first W are warm-up,
the next N are recorded, then the profiler stops while the script runs on. ``--steps 0`` records
the whole script instead. Full captures also name every module call (profiler/modules.py). oneDNN's verbose lines go to this process's
stdout, which the parent sends to a file; ONEDNN_VERBOSE and ONEDNN_VERBOSE_TIMESTAMP are set by
the parent before PyTorch loads. The trace is written even when the script fails, and
``capture.json`` says how far it got.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
import traceback
from pathlib import Path

TRACE = "trace.json"
STATUS = "capture.json"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mlgauge.profiler.child")
    parser.add_argument("out", type=Path)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--summary-only", action="store_true", help="op times only: no shapes (no FLOPs), no module names")
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    script = argv[split + 1 :]
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    state = {"steps": 0, "recorded": 0, "exported": False}

    def export(prof) -> None:
        prof.export_chrome_trace(str(args.out / TRACE))
        state["exported"] = True

    bounded = args.steps > 0
    prof = profile(
        activities=activities,
        record_shapes=not args.summary_only,
        schedule=schedule(wait=0, warmup=args.warmup, active=args.steps, repeat=1) if bounded else None,
        on_trace_ready=export if bounded else None,
    )

    def on_step(*_: object) -> None:
        state["steps"] += 1
        if state["steps"] > args.warmup and state["recorded"] < args.steps:
            state["recorded"] += 1
        prof.step()

    from torch.optim.optimizer import register_optimizer_step_post_hook

    from mlgauge.profiler.modules import ModuleSpans
    from mlgauge.profiler.steps import listen

    hook = register_optimizer_step_post_hook(on_step)
    unlisten = listen(on_step)
    spans = None if args.summary_only else ModuleSpans().install()
    code, error = 0, ""
    started = time.time()
    as_module = script[0] == "-m"  # `-m package.module args`, as `python -m` runs it
    sys.argv = script[1:] if as_module else script
    if not as_module:
        sys.path.insert(0, str(Path(script[0]).resolve().parent))  # as `python script.py` would
    prof.start()
    try:
        if as_module:
            runpy.run_module(script[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(script[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the script's own failure: report it, keep what was recorded
        traceback.print_exc()
        code, error = 1, f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        hook.remove()
        unlisten()
        if spans is not None:
            spans.remove()
        prof.stop()
        if not bounded:
            export(prof)
    status = {
        "exit_code": code, "error": error, "steps_seen": state["steps"], "steps_recorded": state["recorded"],
        "warmup": args.warmup, "steps": args.steps, "trace_written": state["exported"],
        "seconds": round(time.time() - started, 3),
    }  # fmt: skip
    (args.out / STATUS).write_text(json.dumps(status, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
