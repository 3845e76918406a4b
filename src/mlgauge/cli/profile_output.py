"""The terminal summary of one profile: ops, modules, time outside ops, oneDNN, shapes."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from mlgauge.cli.output import console


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_profile(summary, capture, warnings: list[str], top: int) -> None:
    per_step = max(summary.steps, 1)
    steps = f"{summary.steps} steps of {summary.step_ms:.1f} ms" if summary.steps else "the whole script"
    console.print(f"Profiled {steps}; {summary.coverage:.1%} of that time inside named PyTorch ops.")
    _ops(summary, top, per_step)
    _modules(summary, per_step)
    profiled = summary.profiled_ms or 1.0
    if summary.outside_ops:
        parts = ", ".join(f"{escape(k)} {v / profiled:.1%}" for k, v in list(summary.outside_ops.items())[:5]
                          if v / profiled >= 0.0005)  # fmt: skip
        console.print(f"Outside ops: {parts}")
    if summary.regions:
        parts = ", ".join(f"{escape(name)} {v['ms'] / per_step:.2f} ms ({v['ms'] / profiled:.1%})"
                          for name, v in list(summary.regions.items())[:8])  # fmt: skip
        console.print(f"Named regions per step: {parts}")
    _onednn(summary.onednn)
    _replay(summary.replay)
    if summary.shapes:
        heavy = "; ".join(f"{escape(r['op'])} {escape(r['dims'])} {r['ms'] / per_step:.2f} ms"
                          for r in summary.shapes[:3])  # fmt: skip
        console.print(f"Heaviest shapes per step: {heavy}")
    for note in summary.notes:
        console.print(f"[dim]note:[/dim] {escape(note)}")
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"Trace (Chrome/Perfetto): {capture.trace_path}")
    if capture.merged_trace_path.is_file():
        console.print(f"  with oneDNN primitives merged in: {capture.merged_trace_path} (open in ui.perfetto.dev)")


def _ops(summary, top: int, per_step: int) -> None:
    table = Table(title="Top ops by self time (per step)", title_justify="left")
    for col in ("Op", "Calls", "Self ms", "Share", "Bound", "GFLOP/s", "GB/s", "Efficiency"):
        table.add_column(col, justify="left" if col in ("Op", "Bound") else "right")
    for r in summary.ops[:top]:
        table.add_row(
            escape(r.name), f"{r.calls / per_step:g}", f"{r.self_ms / per_step:.2f}", f"{r.share:.1%}",
            r.bound or "-", _num(r.achieved_gflops, ".1f"), _num(r.achieved_gbs, ".1f"), _num(r.efficiency, ".0%"),
        )  # fmt: skip
    console.print(table)


def _modules(summary, per_step: int, top: int = 8) -> None:
    if not summary.modules:
        return
    table = Table(title="Modules by own op time (per step; submodules counted apart)", title_justify="left")
    for col in ("Module", "Forward ms", "Backward ms"):
        table.add_column(col, justify="left" if col == "Module" else "right")
    for name, row in list(summary.modules.items())[:top]:
        table.add_row(escape(name), f"{row['forward_ms'] / per_step:.2f}", f"{row['backward_ms'] / per_step:.2f}")
    console.print(table)


def _onednn(dnn: dict) -> None:
    if not dnn:
        return
    kinds = ", ".join(f"{k} {v['ms']:.2f} ms" for k, v in list(dnn["by_kind"].items())[:6])
    dirs = ", ".join(f"{k} {v['ms']:.2f} ms" for k, v in dnn["by_direction"].items())
    console.print(f"oneDNN {escape(str(dnn['version']))}: {dnn['total_ms']:.2f} ms in primitives: {escape(kinds)}")
    console.print(f"  by direction: {escape(dirs)}")
    reorder_ms = dnn["reorder_ms"]
    if reorder_ms:
        console.print(f"  reorders (memory-format conversions): {reorder_ms:.2f} ms, "
                      f"{reorder_ms / dnn['total_ms']:.0%} of oneDNN time")  # fmt: skip
    if "attributed_fraction" in dnn:
        console.print(f"  {dnn['attributed_fraction']:.0%} of primitive time attributed to the ops that issued it")


def _replay(replay: dict) -> None:
    if not replay or not replay.get("rows"):
        return
    console.print(
        f"Replay: the {len(replay['rows'])} heaviest ops alone (benchdnn-style) project an ideal step of "
        f"{replay['ideal_step_ms']:.1f} ms vs {replay['step_ms']:.1f} ms measured; they take "
        f"{replay['replayed_share']:.0%} of the step as traced"
        + (f" ({len(replay['skipped'])} not replayable)" if replay.get("skipped") else "")
    )
    worst = sorted(replay["rows"], key=lambda r: r["gap_ms_per_step"], reverse=True)[:3]
    parts = "; ".join(f"{escape(r['op'])} {r['traced_ms_per_call']:.3f} ms in the step vs "
                      f"{r['isolated_ms_per_call']:.3f} ms alone" for r in worst if r["gap_ms_per_step"] > 0)  # fmt: skip
    if parts:
        console.print(f"  largest gaps: {parts}")
