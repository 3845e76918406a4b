"""Export the records of one run as an MLPerf Inference submission tree.

Layout (MLPerf v6.0, tools/submission/submission_structure.md)::

    <out>/<division>/<org>/
        systems/<system>.json
        code/<checker_id>/README.md
        results/<system>/<checker_id>/<scenario>/
            user.conf  measurements.json  README.md
            performance/run_1/  mlperf_log_detail.txt  mlperf_log_summary.txt
            accuracy/  accuracy.txt  mlperf_log_accuracy.json  mlperf_log_detail.txt  mlperf_log_summary.txt
            TEST01/  verify_accuracy.txt  verify_performance.txt  accuracy/  performance/run_1/
            TEST04/  verify_performance.txt  performance/run_1/

LoadGen's logs are copied byte for byte; the rest is written from the records.
The tree is built in a temporary folder beside ``<out>`` and renamed into place,
so a failed export never leaves half a tree behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlgauge import __version__, paths
from mlgauge.config.run_spec import RunSpec
from mlgauge.config.userconf import format_value
from mlgauge.errors import OutputError, UsageError
from mlgauge.results.record import ResultRecord
from mlgauge.results.store import ResultStore
from mlgauge.rules import DEFAULT_ROUND, SCENARIOS, inference_rules
from mlgauge.submission import SubmissionRules, submission_rules

__all__ = [
    "ScenarioRecords",
    "Selection",
    "build_tree",
    "records_for_run",
    "reproduce_command",
    "select_records",
]

# LoadGen files copied into each kind of folder (mlperf_log_trace.json is left out:
# it is empty unless tracing was on, and the checker does not read it).
_PERF_LOGS = ("mlperf_log_detail.txt", "mlperf_log_summary.txt")
_ACCURACY_LOGS = ("mlperf_log_accuracy.json", "mlperf_log_detail.txt", "mlperf_log_summary.txt")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GIB = 1024**3


@dataclass
class ScenarioRecords:
    """Everything exported into one ``<checker_id>/<scenario>`` folder."""

    benchmark: str
    scenario: str
    performance: ResultRecord | None = None
    accuracy: ResultRecord | None = None
    audits: dict[str, ResultRecord] = field(default_factory=dict)

    def records(self) -> list[ResultRecord]:
        return [r for r in (self.performance, self.accuracy, *self.audits.values()) if r is not None]

    @property
    def main(self) -> ResultRecord:
        return self.records()[0]


@dataclass
class Selection:
    scenarios: dict[tuple[str, str], ScenarioRecords]
    skipped: list[tuple[ResultRecord, str]]  # (record, why it is not exported)

    def benchmarks(self) -> list[str]:
        return list(dict.fromkeys(b for b, _ in self.scenarios))


def records_for_run(store: ResultStore, run_id: str | None = None) -> tuple[str, list[ResultRecord]]:
    """(run id, its records); the latest run when ``run_id`` is None."""
    run_id = run_id or store.last_run_id()
    if not run_id:
        raise UsageError(
            "the results database holds no runs",
            hint="Run a benchmark first, e.g. 'mlgauge run --suite edge --audits'",
        )
    records = store.query(run_id=run_id)
    if not records:
        raise UsageError(f"no results for run '{run_id}'", hint="List the runs with 'mlgauge results --runs'")
    return run_id, records


def select_records(records: Iterable[ResultRecord]) -> Selection:
    """Group records by (benchmark, scenario); FAILED runs, runs whose logs are gone and
    runs repeated later in the same set are skipped, each with its reason."""
    groups: dict[tuple[str, str], ScenarioRecords] = {}
    skipped: list[tuple[ResultRecord, str]] = []
    latest: dict[tuple[str, str, str], ResultRecord] = {}
    # Oldest first, so a later record of the same test replaces an earlier one.
    for record in sorted(records, key=lambda r: r.created_at):
        if record.validity == "FAILED":
            reason = record.invalid_reasons[0] if record.invalid_reasons else "no reason recorded"
            skipped.append((record, f"the run failed: {reason}"))
            continue
        if not (Path(record.log_dir) / "mlperf_log_detail.txt").is_file():
            skipped.append((record, f"its LoadGen logs are gone from {record.log_dir}"))
            continue
        key = (record.benchmark, record.scenario, record.audit or record.mode)
        if key in latest:
            skipped.append((latest[key], "superseded by a later run of the same test"))
        latest[key] = record
    for (benchmark, scenario, kind), record in latest.items():
        group = groups.setdefault((benchmark, scenario), ScenarioRecords(benchmark, scenario))
        if record.audit:
            group.audits[record.audit] = record
        elif kind == "accuracy":
            group.accuracy = record
        else:
            group.performance = record
    order = {s: i for i, s in enumerate(SCENARIOS)}
    ordered = dict(sorted(groups.items(), key=lambda item: (item[0][0], order.get(item[0][1], 9))))
    return Selection(ordered, skipped)


# -- facts about a record ----------------------------------------------------


def _spec(record: ResultRecord) -> RunSpec | None:
    """The run's spec.json, which holds what the record does not (precision, weights, count)."""
    try:
        return RunSpec.from_json((Path(record.log_dir) / "spec.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None


def _round(record: ResultRecord) -> str:
    spec = _spec(record)
    return str(record.harness.get("rules_round") or (spec.rules_round if spec else "") or DEFAULT_ROUND)


def _checker_id(benchmark: str, round: str) -> str:
    rule = inference_rules(round).benchmarks.get(benchmark)
    return rule.checker_id if rule is not None else benchmark


def _system_type(selection: Selection, round: str) -> str:
    """The system types whose suites in the round hold the exported benchmarks."""
    benchmarks = set(selection.benchmarks())
    types = sorted(
        {s.system_type for s in inference_rules(round).suites.values() if benchmarks & set(s.required)}
    )
    return ",".join(types) or "edge"


def _default_system_name(record: ResultRecord) -> str:
    cpu = str(record.system.get("cpu_model") or record.system.get("machine") or "system")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{cpu}_{record.backend}").strip("_.-")
    return name or "system"


def _gib(value: object) -> str:
    return f"{value / _GIB:.0f} GB" if isinstance(value, int | float) and value > 0 else "N/A"


# -- file contents -------------------------------------------------------------


def system_description(
    selection: Selection, *, division: str, org: str, system_name: str, system_type: str, status: str
) -> dict:
    """``systems/<system>.json``: the fields MLPerf's checker requires, from what mlgauge recorded."""
    records = [r for g in selection.scenarios.values() for r in g.records()]
    first = records[0]
    system = first.system
    gpus = [g for g in system.get("gpus") or [] if isinstance(g, dict)]
    on_gpu = any(str(r.backend_info.get("device", "")).startswith("cuda") for r in records)
    libraries = system.get("libraries") or {}
    backends = {f"{r.backend} {r.backend_info.get('version', '')}".strip() for r in records}
    loadgen = libraries.get("mlcommons-loadgen", "?")
    return {
        "division": division,
        "submitter": org,
        "status": status,
        "system_name": system_name,
        "system_type": system_type,
        "system_type_detail": "N/A",
        "number_of_nodes": 1,
        "host_processor_model_name": system.get("cpu_model") or "N/A",
        "host_processors_per_node": 1,  # mlgauge does not count sockets
        "host_processor_core_count": int(
            system.get("cpu_physical_cores") or system.get("cpu_logical_cores") or 0
        ),
        "host_processor_frequency": "N/A",
        "host_processor_caches": "N/A",
        "host_processor_interconnect": "N/A",
        "host_memory_capacity": _gib(system.get("memory_bytes")),
        "host_memory_configuration": "N/A",
        "host_storage_capacity": "N/A",
        "host_storage_type": "N/A",
        "host_networking": "N/A",
        "host_networking_topology": "N/A",
        "host_networking_card_count": "N/A",
        "accelerators_per_node": len(gpus) if on_gpu else 0,
        "accelerator_model_name": str(gpus[0].get("name", "N/A")) if on_gpu and gpus else "N/A",
        "accelerator_memory_capacity": _gib(gpus[0].get("memory_bytes")) if on_gpu and gpus else "N/A",
        "accelerator_frequency": "N/A",
        "accelerator_host_interconnect": "N/A",
        "accelerator_interconnect": "N/A",
        "accelerator_interconnect_topology": "N/A",
        "accelerator_memory_configuration": "N/A",
        "accelerator_on-chip_memories": "N/A",
        "cooling": "N/A",
        "hw_notes": "",
        "framework": ", ".join(sorted(backends)) + f"; mlgauge {__version__}; LoadGen {loadgen}",
        "operating_system": system.get("os") or "N/A",
        "other_software_stack": ", ".join(
            [f"python {system.get('python', '?')}"] + [f"{k} {v}" for k, v in sorted(libraries.items())]
        ),
        "sw_notes": f"Measured with mlgauge {__version__} on the official LoadGen.",
    }


def measurements(group: ScenarioRecords, round: str) -> dict:
    """``measurements.json``: MLPerf's five required fields plus what mlgauge ran."""
    main = group.main
    spec = _spec(main)
    precision = spec.precision if spec else str(main.backend_info.get("precision", "fp32"))
    weights = spec.weights_path if spec else None
    if group.accuracy is not None and group.accuracy.accuracy:
        dataset_size = group.accuracy.accuracy.get("samples")
    else:
        dataset_size = main.settings.get("accuracy_sample_count")
    return {
        "input_data_types": f"as prepared by mlgauge's {main.task} task",
        "retraining": "no",
        "starting_weights_filename": Path(weights).name
        if weights
        else f"mlgauge stand-in weights ('mlgauge prepare {main.task}')",
        "weight_data_types": precision,
        "weight_transformations": "none"
        if precision == "fp32"
        else f"post-training {precision} quantization by the {main.backend} backend",
        "benchmark": main.benchmark,
        "task": main.task,
        "dataset": main.dataset,
        "dataset_kind": "synthetic stand-in" if main.dataset == "synthetic" else "real",
        "dataset_size": dataset_size,
        "count": spec.count if spec else None,
        "backend": main.backend,
        "backend_version": main.backend_info.get("version"),
        "device": main.backend_info.get("device"),
        "precision": precision,
        "rules_round": round,
        "style": main.style,
        "mlgauge_version": __version__,
        "loadgen_version": (main.system.get("libraries") or {}).get("mlcommons-loadgen"),
        "run_id": main.run_id,
        "records": {(r.audit or r.mode): r.record_id for r in group.records()},
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def accuracy_text(accuracy: dict, accuracy_log: Path, rules: SubmissionRules) -> str:
    """``accuracy.txt``: the metric line the checker parses, then the accuracy log's sha256."""
    metric, unit = str(accuracy.get("metric", "accuracy")), str(accuracy.get("unit", ""))
    value = float(accuracy.get("value", float("nan")))
    # "%" sticks to the number as in the MLPerf accuracy scripts ("accuracy=76.456%").
    suffix = unit if unit == "%" else (f" {unit}" if unit else "")
    line = f"{rules.accuracy_label(metric)}={value:.6f}{suffix}"
    details = accuracy.get("details") or {}
    scalars = [
        f"{k}={v}" for k, v in details.items() if isinstance(v, int | float | str) and not isinstance(v, bool)
    ]
    lines = [", ".join([line, *scalars])]
    target = accuracy.get("target") or {}
    if "threshold" in target:
        lines.append(
            f"target: {metric} >= {float(target['threshold']):.6f} {unit} ({target.get('source', '')})"
        )
    lines.append(f"{rules.hash_prefix}{file_sha256(accuracy_log)}")
    return "\n".join(lines) + "\n"


def verify_texts(test: str, compliance: dict | None, rules: SubmissionRules) -> dict[str, str]:
    """The audit's verify files, from mlgauge's verdict, each ending in an explicit pass/fail line.

    Timing checks go to verify_performance.txt, the rest to the other verify file(s); a
    test with one verify file gets all of its checks.
    """
    rule = rules.audits[test]
    checks = [c for c in (compliance or {}).get("checks") or [] if isinstance(c, dict)]
    out = {}
    for name in rule.verify_files:
        if len(rule.verify_files) == 1:
            mine = checks
        elif name == "verify_performance.txt":
            mine = [c for c in checks if c.get("name") in rule.performance_checks]
        else:
            mine = [c for c in checks if c.get("name") not in rule.performance_checks]
        part = name.removeprefix("verify_").removesuffix(".txt")
        lines = [f"# {test} {part} verification, written by mlgauge from the audit's verdict"]
        lines += [
            f"{c.get('name')}: {c.get('detail', '')}: {'PASS' if c.get('passed') else 'FAIL'}" for c in mine
        ]
        if not mine:
            lines.append("no verdict was recorded for this audit")
        passed = bool(mine) and all(c.get("passed") for c in mine)
        lines.append(rules.pass_line if passed else rules.fail_line)
        out[name] = "\n".join(lines) + "\n"
    return out


def reproduce_command(group_records: list[ResultRecord], scenarios: list[str], audits: list[str]) -> str:
    """The ``mlgauge run`` command line that repeats these runs."""
    main = group_records[0]
    spec = _spec(main)
    parts = [
        "mlgauge",
        "run",
        "--task",
        main.task,
        "--scenario",
        ",".join(scenarios),
        "--backend",
        main.backend,
    ]
    parts.append("--valid" if main.style == "valid" else "--quick")
    if audits:
        parts += ["--audit", ",".join(sorted(audits))]
    if spec is not None:
        if spec.precision != "fp32":
            parts += ["--precision", spec.precision]
        if spec.rules_round != DEFAULT_ROUND:
            parts += ["--rules", spec.rules_round]
        for flag, value in (
            ("--dataset", spec.dataset_path),
            ("--weights", spec.weights_path),
            ("--conf", spec.conf_path),
        ):
            if value:
                parts += [flag, value]
        if spec.count:
            parts += ["--count", str(spec.count)]
        # The system-under-test knobs, where they differ from 'mlgauge run' defaults.
        knobs = (
            ("--threads", spec.threads, 0),
            ("--workers", spec.workers, 0),
            ("--max-batch", spec.max_batch, 0),
            ("--max-wait-ms", spec.max_wait_ms, 1.0),
            ("--calibration-s", spec.calibration_s, 1.0),
            ("--device", spec.device, "cpu"),
        )
        for flag, value, default in knobs:
            if value != default:
                parts += [flag, format_value(value) if isinstance(value, int | float) else str(value)]
        if spec.compile:
            parts.append("--compile")
        for key, value in sorted(spec.flags.items()):
            parts += [f"--{key.replace('_', '-')}", format_value(value)]
    return shlex.join(parts)


# -- writing -------------------------------------------------------------------


def _copy(src_dir: Path, names: Iterable[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = src_dir / name
        if src.is_file():
            shutil.copyfile(src, dest / name)


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _write_scenario(group: ScenarioRecords, folder: Path, round: str, rules: SubmissionRules) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    perf = group.performance
    if perf is not None:
        _copy(Path(perf.log_dir), _PERF_LOGS, folder / rules.performance_dir)
    # user.conf is the performance run's: the file LoadGen read for the result that counts.
    conf_source = perf or group.accuracy
    if conf_source is not None and (Path(conf_source.log_dir) / "user.conf").is_file():
        shutil.copyfile(Path(conf_source.log_dir) / "user.conf", folder / "user.conf")
    acc = group.accuracy
    if acc is not None:
        acc_dir = folder / rules.accuracy_dir
        _copy(Path(acc.log_dir), _ACCURACY_LOGS, acc_dir)
        if acc.accuracy and (acc_dir / "mlperf_log_accuracy.json").is_file():
            text = accuracy_text(acc.accuracy, acc_dir / "mlperf_log_accuracy.json", rules)
            (acc_dir / "accuracy.txt").write_text(text, encoding="utf-8")
    for test, record in group.audits.items():
        test_dir = folder / test
        _copy(Path(record.log_dir), _PERF_LOGS, test_dir / rules.performance_dir)
        responses = rules.audits[test].logged_responses if test in rules.audits else ""
        if responses:
            _copy(Path(record.log_dir), [Path(responses).name], test_dir / Path(responses).parent)
        texts = verify_texts(test, record.compliance, rules) if test in rules.audits else {}
        for name, text in texts.items():
            (test_dir / name).write_text(text, encoding="utf-8")
    _write_json(folder / "measurements.json", measurements(group, round))
    command = reproduce_command(group.records(), [group.scenario], sorted(group.audits))
    (folder / "README.md").write_text(
        f"# {group.benchmark} {group.scenario}\n\n"
        f"Measured with mlgauge {__version__}. To repeat these runs:\n\n```\n{command}\n```\n",
        encoding="utf-8",
    )


def _code_readme(benchmark: str, groups: list[ScenarioRecords], run_id: str) -> str:
    records = [r for g in groups for r in g.records()]
    scenarios = [g.scenario for g in groups]
    audits = sorted({t for g in groups for t in g.audits})
    main = records[0]
    steps = []
    if main.dataset == "synthetic":
        steps.append(f"mlgauge prepare {main.task}   # builds the synthetic stand-in (data and weights) once")
    steps.append(reproduce_command(records, scenarios, audits))
    steps.append("mlgauge submit --out <DIR>   # a tree like this one, from the latest run")
    steps.append("mlgauge check <DIR>")
    return (
        f"# {benchmark}\n\n"
        f"These results were measured by mlgauge {__version__} ({main.task} task, {main.backend} backend, "
        f"{'synthetic stand-in data' if main.dataset == 'synthetic' else 'dataset ' + main.dataset}), "
        f"run {run_id}. The harness is mlgauge itself, installed from its source tree.\n\n"
        "To reproduce:\n\n```\n" + "\n".join(steps) + "\n```\n"
    )


def _check_name(kind: str, value: str) -> str:
    if not _SAFE_NAME.match(value):
        raise UsageError(
            f"{kind} name '{value}' cannot be a folder name in a submission tree",
            hint="Use letters, digits, '.', '_' and '-' only, starting with a letter or digit",
        )
    return value


def _target_ready(out: Path, overwrite: bool, divisions: tuple[str, ...]) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder", hint="Choose another --out")
    if not out.is_dir():
        return
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    if not overwrite:
        raise UsageError(
            f"{out} already holds a submission tree or other files",
            hint="Pass --overwrite (overwrite=True) to replace the tree, or choose another --out",
        )
    strangers = [p.name for p in entries if p.name not in divisions]
    if strangers:
        # --overwrite replaces a tree, never an arbitrary folder someone pointed --out at.
        raise UsageError(
            f"{out} holds {', '.join(sorted(strangers)[:5])}, which are not submission division folders; "
            "refusing to replace it",
            hint="Choose an empty or new folder for --out",
        )


def build_tree(
    records: Iterable[ResultRecord],
    out_dir: Path,
    *,
    division: str | None = None,
    org: str = "mlgauge",
    system_name: str | None = None,
    system_type: str | None = None,
    status: str = "available",
    overwrite: bool = False,
) -> Path:
    """Write the submission tree for ``records`` (one run's) under ``out_dir``; returns ``out_dir``.

    ``division`` defaults to closed when every exported run used a real dataset, else
    open; ``system_type`` to the types of the round's suites holding the benchmarks.
    """
    rules = submission_rules()
    selection = select_records(records)
    if not selection.scenarios:
        why = f" ({len(selection.skipped)} skipped: {selection.skipped[0][1]})" if selection.skipped else ""
        raise UsageError(
            f"no results to export{why}", hint="Export a run that finished; see 'mlgauge results --runs'"
        )
    groups = list(selection.scenarios.values())
    first = groups[0].main
    if division is None:
        synthetic = any(g.main.dataset == "synthetic" for g in groups)
        division = "open" if synthetic else "closed"
    if division not in rules.divisions_allowed:
        raise UsageError(
            f"unknown division '{division}'", hint=f"Use one of {', '.join(rules.divisions_allowed)}"
        )
    _check_name("submitter", org)
    system_name = _check_name("system", system_name or _default_system_name(first))
    round = _round(first)
    system_type = system_type or _system_type(selection, round)

    out = Path(out_dir).expanduser().absolute()
    _target_ready(out, overwrite, rules.divisions_allowed)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot create the submission tree: {exc.strerror or exc}", path=out) from None
    try:
        org_dir = building / division / org
        description = system_description(
            selection,
            division=division,
            org=org,
            system_name=system_name,
            system_type=system_type,
            status=status,
        )
        _write_json(org_dir / rules.systems_dir / f"{system_name}.json", description)
        by_benchmark: dict[str, list[ScenarioRecords]] = {}
        for group in groups:
            by_benchmark.setdefault(group.benchmark, []).append(group)
        for benchmark, bench_groups in by_benchmark.items():
            bench_round = _round(bench_groups[0].main)
            checker_id = _checker_id(benchmark, bench_round)
            for group in bench_groups:
                folder = org_dir / rules.results_dir / system_name / checker_id / group.scenario
                _write_scenario(group, folder, bench_round, rules)
            readme = org_dir / rules.code_dir / checker_id / "README.md"
            readme.parent.mkdir(parents=True, exist_ok=True)
            readme.write_text(_code_readme(benchmark, bench_groups, first.run_id), encoding="utf-8")
        paths.replace_folder(building, out)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise OutputError(
            f"cannot write the submission tree: {exc.strerror or exc}",
            hint="Check that the folder is writable, the disk is not full and the run's logs are readable",
            path=getattr(exc, "filename", None) or out,
        ) from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out
