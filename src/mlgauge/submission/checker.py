"""Check a submission tree the way MLPerf's submission checker does, and explain every failure.

Each check adds a :class:`Finding` (path, check id, passed, message). The rules
come from data: the tree's own rules (``rules/submission.toml``: files, fields,
allowed values, log keys) and the round's rule file (durations, query counts,
quality targets, required scenarios and audits). The round is read from the
tree (``measurements.json``), the suite from the system's ``system_type``.

A broken tree is a list of findings, never a traceback: every file is read
defensively, and each folder is checked under a guard that turns an unexpected
error into a failing ``checker.internal`` finding, so one bad folder cannot hide
the verdicts on the others.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlgauge.config import userconf
from mlgauge.errors import MlgaugeError, UsageError
from mlgauge.loadgen import logparse
from mlgauge.rules import (
    DEFAULT_ROUND,
    BenchmarkRule,
    InferenceRules,
    available_rounds,
    inference_rules,
    standin_rules,
)
from mlgauge.submission import DivisionPolicy, FieldRules, SubmissionRules, submission_rules
from mlgauge.submission.tree import file_sha256

__all__ = ["CheckReport", "Finding", "check_tree"]

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
# Settings and rule values are compared as floats; this only absorbs float noise
# (90 * 0.01 != 0.9), not LoadGen's 6-digit rounding (that tolerance is rule data).
_FLOAT_NOISE = 1e-9


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the tree's root, "/"-separated; "." is the root
    check: str  # stable id, e.g. "performance.min_duration"
    passed: bool
    message: str


@dataclass
class CheckReport:
    root: Path
    findings: list[Finding] = field(default_factory=list)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    @property
    def passed(self) -> bool:
        return bool(self.findings) and not self.failures

    def failed(self, check: str, path: str | None = None) -> list[Finding]:
        """Failing findings of one check, optionally at one path."""
        return [f for f in self.failures if f.check == check and (path is None or f.path == path)]

    def summary(self) -> str:
        failed = len(self.failures)
        if failed:
            return f"{failed} of {len(self.findings)} checks failed in {self.root}"
        return f"all {len(self.findings)} checks passed in {self.root}"

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "passed": self.passed,
            "checks": len(self.findings),
            "failed": len(self.failures),
            "findings": [asdict(f) for f in self.findings],
        }


def check_tree(root: Path) -> CheckReport:
    """Check the submission tree at ``root`` (the folder holding ``closed/``, ``open/`` ...)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UsageError(f"{root} does not exist", hint="Pass the folder that 'mlgauge submit --out' wrote")
    report = CheckReport(root)
    checker = _Checker(root, submission_rules(), report)
    checker.guard(root, checker.run)
    return report


# -- reading, defensively -----------------------------------------------------------


def _read_text(path: Path) -> tuple[str | None, str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace"), ""
    except OSError as exc:
        return None, f"cannot read it: {exc.strerror or exc}"


def _read_json(path: Path) -> tuple[object, str]:
    text, error = _read_text(path)
    if text is None:
        return None, error
    try:
        return json.loads(text), ""
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"


def _number(value: object) -> float | None:
    """A log or JSON value as a number; booleans count as 0/1 (LoadGen logs flags as true/false)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _fmt(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # exact: seeds exceed a float's 53-bit mantissa
    number = _number(value)
    if number is None:
        return repr(value)
    return str(int(number)) if number.is_integer() and abs(number) < 1e18 else f"{number:.6g}"


def _compare(actual: float, expected: float, how: str, rel_tol: float) -> bool:
    slack = abs(expected) * rel_tol
    if how == "at_least":
        return actual >= expected - slack
    if how == "at_most":
        return actual <= expected + slack
    return math.isclose(actual, expected, rel_tol=rel_tol, abs_tol=_FLOAT_NOISE)


_WORDS = {"at_least": "at least", "at_most": "at most", "equal": "exactly"}


def _same(actual: object, expected: object) -> bool:
    if isinstance(actual, int) and isinstance(expected, int):
        return actual == expected  # bools included (True == 1); seeds compared exactly, not as floats
    a, e = _number(actual), _number(expected)
    if a is not None and e is not None:
        return a == e
    return actual == expected


@dataclass
class _Context:
    """What every check below a system folder needs."""

    division: str
    policy: DivisionPolicy
    round: str
    rules: InferenceRules


class _Checker:
    def __init__(self, root: Path, rules: SubmissionRules, report: CheckReport) -> None:
        self.root = root
        self.rules = rules
        self.report = report

    # -- findings ---------------------------------------------------------------

    def rel(self, path: Path) -> str:
        try:
            text = path.relative_to(self.root).as_posix()
        except ValueError:
            text = path.as_posix()
        return text or "."

    def add(self, path: Path, check: str, passed: bool, message: str) -> None:
        self.report.findings.append(Finding(self.rel(path), check, bool(passed), message))

    def guard(self, path: Path, fn: Callable[..., object], *args: object) -> None:
        """Run one folder's checks; a bug or an unforeseen file turns into a finding, not a traceback."""
        try:
            fn(*args)
        except Exception as exc:
            self.add(
                path,
                "checker.internal",
                False,
                f"the checker could not finish here: {type(exc).__name__}: {exc}",
            )

    def entries(self, path: Path) -> list[Path]:
        try:
            return sorted(p for p in path.iterdir() if not p.name.startswith("."))
        except OSError as exc:
            self.add(path, "structure.read", False, f"cannot list this folder: {exc.strerror or exc}")
            return []

    # -- the walk ------------------------------------------------------------------

    def run(self) -> None:
        if not self.root.is_dir():
            self.add(self.root, "structure.root", False, "is a file, not a submission tree folder")
            return
        allowed = self.rules.divisions_allowed
        divisions = []
        for entry in self.entries(self.root):
            if entry.is_dir() and entry.name in allowed:
                divisions.append(entry)
            else:
                self.add(
                    entry,
                    "structure.division",
                    False,
                    f"'{entry.name}' is not a division folder ({', '.join(allowed)})",
                )
        if not divisions:
            self.add(
                self.root,
                "structure.division",
                False,
                f"no division folder ({', '.join(allowed)}): "
                "is this the folder 'mlgauge submit --out' wrote?",
            )
        for division in divisions:
            self.guard(division, self._division, division)

    def _division(self, path: Path) -> None:
        policy = self.rules.divisions[path.name]
        orgs = []
        for entry in self.entries(path):
            if entry.is_dir():
                orgs.append(entry)
            else:
                self.add(entry, "structure.org", False, "expected one folder per submitter here, not a file")
        if not orgs:
            self.add(path, "structure.org", False, "no submitter folder in this division")
        for org in orgs:
            self.guard(org, self._org, path.name, policy, org)

    def _org(self, division: str, policy: DivisionPolicy, org: Path) -> None:
        r = self.rules
        known = {r.systems_dir, r.results_dir, r.code_dir, *r.org_optional}
        for entry in self.entries(org):
            if entry.name not in known:
                self.add(entry, "structure.org", False, f"unexpected '{entry.name}' in a submitter folder")
        for name in (r.systems_dir, r.results_dir, r.code_dir):
            present = (org / name).is_dir()
            self.add(
                org / name,
                "structure.org",
                present,
                f"{name}/ present" if present else f"{name}/ folder is missing",
            )
        systems: dict[str, dict | None] = {}
        if (org / r.systems_dir).is_dir():
            for entry in self.entries(org / r.systems_dir):
                if entry.suffix == ".json" and entry.is_file():
                    systems[entry.stem] = self._system_json(entry, division, org.name)
                else:
                    self.add(entry, "structure.systems", False, "expected <system>.json files only")
        if not (org / r.results_dir).is_dir():
            return
        system_dirs = []
        for entry in self.entries(org / r.results_dir):
            if entry.is_dir():
                system_dirs.append(entry)
            else:
                self.add(entry, "structure.results", False, "expected one folder per system here, not a file")
        if not system_dirs:
            self.add(org / r.results_dir, "structure.results", False, "no system folder with results")
        for system in system_dirs:
            described = system.name in systems
            self.add(
                system,
                "system.description",
                described,
                f"described by {r.systems_dir}/{system.name}.json"
                if described
                else f"no {r.systems_dir}/{system.name}.json describes this system",
            )
            self.guard(
                system, self._system_results, division, policy, org, system, systems.get(system.name) or {}
            )

    # -- JSON descriptions ----------------------------------------------------------

    def _json_object(self, path: Path, check: str) -> dict | None:
        data, error = _read_json(path)
        if error:
            self.add(path, check, False, error)
            return None
        if not isinstance(data, dict):
            self.add(path, check, False, f"holds a JSON {type(data).__name__}, not an object")
            return None
        self.add(path, check, True, f"parsed, {len(data)} fields")
        return data

    def _fields(self, path: Path, prefix: str, data: dict, rules: FieldRules, stricter: dict) -> None:
        missing = [k for k in rules.required if k not in data]
        self.add(
            path,
            f"{prefix}.fields",
            not missing,
            f"missing required field(s): {', '.join(missing)}" if missing else "every required field present",
        )
        blank = [k for k in rules.non_empty if k in data and (data[k] is None or str(data[k]).strip() == "")]
        if blank:
            self.add(path, f"{prefix}.empty", False, f"field(s) need a meaningful value: {', '.join(blank)}")
        not_int = [
            k
            for k in rules.integer
            if k in data and (isinstance(data[k], bool) or not isinstance(data[k], int) or data[k] < 0)
        ]
        if not_int:
            self.add(
                path,
                f"{prefix}.integers",
                False,
                f"field(s) must be whole numbers >= 0: {', '.join(not_int)}",
            )
        for key, allowed in {**rules.allowed, **stricter}.items():
            if key in data:
                ok = data[key] in allowed
                self.add(
                    path,
                    f"{prefix}.values",
                    ok,
                    f"{key} = {data[key]!r}" + ("" if ok else f", allowed here: {', '.join(allowed)}"),
                )

    def _system_json(self, path: Path, division: str, org: str) -> dict | None:
        data = self._json_object(path, "system.json")
        if data is None:
            return None
        self._fields(path, "system", data, self.rules.systems, {})
        for key, want in (("division", division), ("submitter", org)):
            got = data.get(key)
            self.add(
                path,
                f"system.{key}",
                got == want,
                f"{key} = {got!r}" + ("" if got == want else f", the folder says {want!r}"),
            )
        return data

    # -- one system's results ---------------------------------------------------------

    def _round(self, path: Path, measurements: list[object], description: dict) -> str:
        named = Counter(
            m["rules_round"]
            for m in measurements
            if isinstance(m, dict) and isinstance(m.get("rules_round"), str)
        )
        known = available_rounds()
        good = [(r, n) for r, n in named.most_common() if r in known]
        unknown = [str(r) for r in named if r not in known]
        if unknown:
            self.add(
                path,
                "rules.round",
                False,
                f"unknown rules round(s) {', '.join(unknown)} (known: {', '.join(known)})",
            )
        if good:
            round = str(good[0][0])
            agree = len(named) == 1
            self.add(
                path,
                "rules.round",
                agree,
                f"round {round} (from measurements.json)"
                if agree
                else f"measurements.json files name different rounds ({', '.join(map(str, named))}); "
                f"checking against {round}",
            )
            return round
        system_type = str(description.get("system_type", ""))
        fallback = self.rules.round_by_system_type.get(system_type, DEFAULT_ROUND)
        self.add(
            path,
            "rules.round",
            False,
            f"no measurements.json names the rules round; checking against {fallback}",
        )
        return fallback

    def _system_results(
        self, division: str, policy: DivisionPolicy, org: Path, path: Path, description: dict
    ) -> None:
        bench_dirs = []
        for entry in self.entries(path):
            if entry.is_dir():
                bench_dirs.append(entry)
            else:
                self.add(
                    entry, "structure.benchmark", False, "expected one folder per benchmark here, not a file"
                )
        if not bench_dirs:
            self.add(path, "structure.benchmark", False, "no benchmark folders")
        found = [
            self._json_quiet(s / "measurements.json")
            for b in bench_dirs
            for s in self.entries(b)
            if s.is_dir()
        ]
        round = self._round(path, found, description)
        ctx = _Context(division, policy, round, inference_rules(round))
        by_checker_id = {rule.checker_id: key for key, rule in ctx.rules.benchmarks.items()}
        required = self._required(path, ctx, description)

        present = {}
        for bench in bench_dirs:
            key = by_checker_id.get(bench.name)
            if key is None:
                known = ", ".join(sorted(by_checker_id))
                self.add(
                    bench,
                    "structure.benchmark",
                    False,
                    f"'{bench.name}' is not a {round} benchmark (known: {known})",
                )
                continue
            present[key] = bench
            self.guard(bench, self._benchmark, ctx, key, bench, (required or {}).get(key))
            readme = org / self.rules.code_dir / bench.name
            self._files(readme, self.rules.files["code"])

        if policy.require_suite and required is not None:
            for key in required:
                checker_id = ctx.rules.benchmarks[key].checker_id
                ok = key in present
                self.add(
                    path / checker_id,
                    "suite.benchmarks",
                    ok,
                    f"{checker_id} present"
                    if ok
                    else f"{checker_id} is required of a {description.get('system_type')} system in {round}",
                )
            for key, bench in present.items():
                if key not in required:
                    self.add(
                        bench,
                        "suite.benchmarks",
                        False,
                        f"{bench.name} is not part of the {description.get('system_type')} suite in {round}",
                    )

    def _json_quiet(self, path: Path) -> object:
        # A first, silent read to learn the round; the scenario check reports problems.
        data, _ = _read_json(path) if path.is_file() else (None, "")
        return data

    def _required(self, path: Path, ctx: _Context, description: dict) -> dict[str, tuple[str, ...]] | None:
        """benchmark -> required scenarios, from the round's suites for the system type; None if unknown."""
        types = [t.strip() for t in str(description.get("system_type") or "").split(",") if t.strip()]
        suites = [s for s in ctx.rules.suites.values() if s.system_type in types]
        if not suites:
            known = sorted({s.system_type for s in ctx.rules.suites.values()})
            self.add(
                path,
                "suite.system_type",
                False,
                f"no {ctx.round} suite for system_type {description.get('system_type')!r} "
                f"(known: {', '.join(known)})",
            )
            return None
        required: dict[str, tuple[str, ...]] = {}
        for s in suites:
            for bench, scenarios in s.required.items():
                required[bench] = tuple(dict.fromkeys(required.get(bench, ()) + scenarios))
        return required

    def _benchmark(self, ctx: _Context, key: str, path: Path, required: tuple[str, ...] | None) -> None:
        for entry in self.entries(path):
            if entry.is_dir() and entry.name in ctx.rules.scenarios:
                self.guard(entry, self._scenario, ctx, key, entry)
            else:
                known = ", ".join(ctx.rules.scenarios)
                self.add(
                    entry,
                    "structure.scenario",
                    False,
                    f"'{entry.name}' is not a {ctx.round} scenario ({known})",
                )
        if ctx.policy.require_scenarios and required:
            for scenario in required:
                ok = (path / scenario).is_dir()
                self.add(
                    path / scenario,
                    "suite.scenarios",
                    ok,
                    f"{scenario} present" if ok else f"{scenario} is required for {path.name} in {ctx.round}",
                )

    # -- one scenario ---------------------------------------------------------------

    def _scenario(self, ctx: _Context, key: str, path: Path) -> None:
        scenario = path.name
        self._files(path, self.rules.files["scenario"])
        measured = self._measurements(ctx, key, path / "measurements.json")
        official = ctx.rules.benchmarks[key]
        rule: BenchmarkRule = official
        if measured.get("dataset") == "synthetic":
            standin = standin_rules().get(key)
            if standin is None:
                self.add(
                    path / "measurements.json",
                    "rules.standin",
                    False,
                    f"mlgauge has no synthetic stand-in for {key}",
                )
            else:
                rule = standin
        conf = {**ctx.rules.scenarios[scenario].conf, **rule.conf.get(scenario, {})}

        perf = path / self.rules.performance_dir
        if perf.is_dir():
            self._performance(ctx, perf, scenario, rule, conf, userconf_path=path / "user.conf")
        else:
            self.add(perf, "files.required", False, f"{self.rules.performance_dir}/ is missing")
        accuracy = path / self.rules.accuracy_dir
        if accuracy.is_dir():
            self._accuracy(ctx, accuracy, scenario, rule, measured)
        else:
            self.add(accuracy, "files.required", False, f"{self.rules.accuracy_dir}/ is missing")
        if ctx.policy.audits:
            # Which audits a benchmark needs is the round's rule, also for its stand-in.
            for test in official.audits:
                self._audit(ctx, path / test, test, scenario, rule, conf)

    def _files(self, path: Path, names: Iterable[str]) -> None:
        missing, empty = [], []
        for name in names:
            target = path / name
            try:
                if not target.is_file():
                    missing.append(name)
                elif target.stat().st_size == 0:
                    empty.append(name)
            except OSError:
                missing.append(name)
        problems = [f"missing: {', '.join(missing)}"] if missing else []
        problems += [f"empty: {', '.join(empty)}"] if empty else []
        self.add(path, "files.required", not problems, "; ".join(problems) or "every required file present")

    def _measurements(self, ctx: _Context, key: str, path: Path) -> dict:
        if not path.is_file():
            return {}  # files.required has said so
        data = self._json_object(path, "measurements.json")
        if data is None:
            return {}
        self._fields(path, "measurements", data, self.rules.measurements, ctx.policy.measurements)
        bench = data.get("benchmark")
        self.add(
            path,
            "measurements.benchmark",
            bench == key,
            f"benchmark = {bench!r}" + ("" if bench == key else f", the folder is {key}'s"),
        )
        dataset = data.get("dataset")
        if ctx.policy.real_dataset:
            real = isinstance(dataset, str) and dataset not in ("", "synthetic")
            self.add(
                path,
                "division.dataset",
                real,
                f"dataset {dataset!r}"
                if real
                else f"{ctx.division} division needs the real dataset (measurements.json says {dataset!r}); "
                "results on mlgauge's synthetic stand-ins belong in the open division",
            )
        if ctx.policy.full_dataset:
            count = data.get("count")
            self.add(
                path,
                "division.full_dataset",
                count is None,
                "the whole dataset was used"
                if count is None
                else f"{ctx.division} division needs the whole dataset, not --count {count}",
            )
        return data

    # -- LoadGen logs -------------------------------------------------------------------

    def _log(self, path: Path, check: str) -> logparse.DetailLog | None:
        if not path.is_file():
            return None  # files.required has said so
        try:
            log = logparse.parse_detail_log(path)
        except MlgaugeError as exc:
            self.add(path, check, False, exc.message + (f" ({exc.hint})" if exc.hint else ""))
            return None
        self.add(path, check, True, f"{len(log.values)} LoadGen entries")
        return log

    def _no_errors(self, path: Path, log: logparse.DetailLog, check: str) -> None:
        count = int(_number(log.values.get("num_errors")) or 0)
        errors = list(log.errors)
        ok = not errors and count == 0
        detail = "; ".join(errors[:3]) or f"num_errors = {count}"
        self.add(path, check, ok, "no LoadGen errors" if ok else f"LoadGen logged errors: {detail}")

    def _equal(self, path: Path, check: str, log: logparse.DetailLog, key: str, want: object) -> None:
        got = log.values.get(key)
        self.add(
            path, check, got == want, f"{key} = {got!r}" + ("" if got == want else f", expected {want!r}")
        )

    def _audit_marker(self, path: Path, log: logparse.DetailLog, expected: bool) -> None:
        marker = self.rules.audit_marker
        applied = any(marker in w for w in log.warnings)
        if expected:
            message = (
                "LoadGen applied the audit.config"
                if applied
                else "LoadGen did not apply an audit.config in this audit run"
            )
        else:
            message = (
                "no audit.config applied"
                if not applied
                else "LoadGen applied an audit.config in this normal run; "
                "a leftover audit.config changes the result"
            )
        self.add(path, "audit.config", applied == expected, message)

    def _performance(
        self,
        ctx: _Context,
        path: Path,
        scenario: str,
        rule: BenchmarkRule,
        conf: dict,
        *,
        userconf_path: Path | None,
        audit: str = "",
    ) -> logparse.DetailLog | None:
        self._files(path, self.rules.files["performance"])
        detail = path / "mlperf_log_detail.txt"
        log = self._log(detail, "performance.log")
        if log is None:
            return None
        verdict = log.values.get("result_validity")
        try:
            _, reasons = logparse.validity(log)
        except MlgaugeError:
            reasons = []
        self.add(
            detail,
            "performance.valid",
            verdict == "VALID",
            f"result_validity = {verdict!r}"
            + (f" ({'; '.join(reasons)})" if reasons and verdict != "VALID" else ""),
        )
        self._no_errors(detail, log, "performance.errors")
        self._equal(detail, "performance.scenario", log, "effective_scenario", scenario)
        self._equal(detail, "performance.mode", log, "effective_test_mode", self.rules.modes["performance"])
        self._audit_marker(detail, log, expected=bool(audit))
        self._run_length(ctx, detail, log, scenario, rule, conf)
        self._seeds(detail, log)
        self._summary(path / "mlperf_log_summary.txt", log)
        if userconf_path is not None:
            self._userconf(userconf_path, log, scenario, rule)
        return log

    def _run_length(
        self,
        ctx: _Context,
        path: Path,
        log: logparse.DetailLog,
        scenario: str,
        rule: BenchmarkRule,
        conf: dict,
    ) -> None:
        required = {**conf, "performance_sample_count": rule.performance_sample_count}
        for key, value in required.items():
            how = self.rules.run_length_rule(key, scenario)
            if how is None:
                continue
            want = float(value) * how.scale
            got = _number(log.values.get(how.log_key))
            if got is None:
                self.add(path, f"performance.{key}", False, f"{how.log_key} is missing from the log")
                continue
            ok = _compare(got, want, how.compare, _FLOAT_NOISE)
            message = (
                f"{how.log_key} = {_fmt(got)}; "
                f"the {ctx.round} rule for {scenario} needs {_WORDS[how.compare]} {_fmt(want)}"
            )
            if how.achieved_key:
                achieved = _number(log.values.get(how.achieved_key))
                reached = achieved is not None and _compare(achieved, want, how.compare, _FLOAT_NOISE)
                ok = ok and reached
                message += f"; {how.achieved_key} = {_fmt(log.values.get(how.achieved_key))}"
            self.add(path, f"performance.{key}", ok, message)

    def _seeds(self, path: Path, log: logparse.DetailLog) -> None:
        version = str(log.values.get("loadgen_version", "")).split("@")[0].strip()
        expected = self.rules.seeds.get(version)
        if expected is None:
            known = ", ".join(self.rules.seeds)
            self.add(
                path,
                "performance.seeds",
                False,
                f"no known seeds for LoadGen {version or '?'} (known: {known})",
            )
            return
        wrong = [
            f"{k} = {_fmt(log.values.get(k))}, expected {v}"
            for k, v in expected.items()
            if not _same(log.values.get(k), v)
        ]
        self.add(
            path,
            "performance.seeds",
            not wrong,
            "; ".join(wrong) if wrong else f"LoadGen {version}'s default seeds",
        )

    def _summary(self, path: Path, log: logparse.DetailLog) -> None:
        if not path.is_file():
            return
        text, error = _read_text(path)
        if text is None:
            self.add(path, "performance.summary", False, error)
            return
        lines: dict[str, str] = {}
        for line in text.splitlines():
            label, sep, value = line.partition(":")
            if sep:
                lines.setdefault(label.strip(), value.strip())
        wrong = []
        for label, key in self.rules.summary.items():
            want = str(log.values.get(key))
            if lines.get(label) != want:
                wrong.append(f"'{label}' is {lines.get(label)!r}, the detail log's {key} is {want!r}")
        self.add(path, "performance.summary", not wrong, "; ".join(wrong) or "agrees with the detail log")

    def _userconf(self, path: Path, log: logparse.DetailLog, scenario: str, rule: BenchmarkRule) -> None:
        if not path.is_file():
            return
        try:
            entries = userconf.parse_file(path)
        except MlgaugeError as exc:
            self.add(path, "userconf.parse", False, exc.message)
            return
        resolved = userconf.resolve(entries, rule.loadgen_model, scenario)
        if entries and not resolved:
            self.add(
                path, "userconf.consistent", False, f"no line applies to {rule.loadgen_model}.{scenario}"
            )
            return
        wrong = []
        for key, entry in resolved.items():
            how = self.rules.userconf_rule(key, scenario)
            if how is None:
                continue
            got = _number(log.values.get(how.log_key))
            want = entry.value * how.scale
            if got is None or not _compare(got, want, how.compare, self.rules.userconf_tolerance):
                wrong.append(
                    f"{entry.qualified} = {userconf.format_value(entry.value)} "
                    f"but {how.log_key} = {_fmt(log.values.get(how.log_key))}"
                )
        self.add(
            path,
            "userconf.consistent",
            not wrong,
            "; ".join(wrong) or f"{len(resolved)} settings agree with the performance run's log",
        )

    # -- accuracy -------------------------------------------------------------------------

    def _accuracy(
        self, ctx: _Context, path: Path, scenario: str, rule: BenchmarkRule, measured: dict
    ) -> None:
        self._files(path, self.rules.files["accuracy"])
        detail = path / "mlperf_log_detail.txt"
        log = self._log(detail, "accuracy.log")
        if log is not None:
            self._no_errors(detail, log, "accuracy.errors")
            self._equal(detail, "accuracy.scenario", log, "effective_scenario", scenario)
            self._equal(detail, "accuracy.mode", log, "effective_test_mode", self.rules.modes["accuracy"])
            self._audit_marker(detail, log, expected=False)
            self._sample_count(detail, log, measured)
        self._accuracy_txt(ctx, path, rule)

    def _sample_count(self, path: Path, log: logparse.DetailLog, measured: dict) -> None:
        size = measured.get("dataset_size")
        if isinstance(size, bool) or not isinstance(size, int):
            self.add(
                path,
                "accuracy.sample_count",
                False,
                "measurements.json declares no whole-number dataset_size to compare with",
            )
            return
        used = log.values.get("effective_accuracy_sample_count")
        total = log.values.get("qsl_reported_total_count")
        ok = _same(used, size) and _same(total, size)
        self.add(
            path,
            "accuracy.sample_count",
            ok,
            f"effective_accuracy_sample_count = {_fmt(used)}, qsl_reported_total_count = {_fmt(total)}, "
            f"dataset_size = {size}"
            + ("" if ok else ": the accuracy run must cover the whole declared dataset"),
        )

    def _accuracy_txt(self, ctx: _Context, path: Path, rule: BenchmarkRule) -> None:
        txt = path / "accuracy.txt"
        if not txt.is_file():
            return
        text, error = _read_text(txt)
        if text is None:
            self.add(txt, "accuracy.value", False, error)
            return
        quality = rule.quality
        label = self.rules.accuracy_label(quality.metric)
        match = re.search(rf"^{re.escape(label)}={_NUMBER}", text, re.MULTILINE)
        value = float(match.group(1)) if match else None
        if value is None or math.isnan(value):
            self.add(txt, "accuracy.value", False, f"no '{label}=<number>' line")
        else:
            self.add(txt, "accuracy.value", True, f"{label} = {value:g}")
            if ctx.policy.accuracy_target:
                self.add(
                    txt,
                    "accuracy.target",
                    quality.passed(value),
                    f"{quality.metric} {value:.4f}{quality.unit} vs target >= "
                    f"{quality.threshold:.4f}{quality.unit} ({quality.source})",
                )
        prefix = self.rules.hash_prefix
        hashes = [line[len(prefix) :].strip() for line in text.splitlines() if line.startswith(prefix)]
        log_file = path / "mlperf_log_accuracy.json"
        if not hashes:
            self.add(txt, "accuracy.hash", False, f"no '{prefix}<sha256 of mlperf_log_accuracy.json>' line")
            return
        try:
            actual = file_sha256(log_file)
        except OSError as exc:
            self.add(
                txt, "accuracy.hash", False, f"cannot hash mlperf_log_accuracy.json: {exc.strerror or exc}"
            )
            return
        ok = hashes[-1] == actual
        self.add(
            txt,
            "accuracy.hash",
            ok,
            "matches mlperf_log_accuracy.json"
            if ok
            else f"hash {hashes[-1][:16]}... does not match mlperf_log_accuracy.json ({actual[:16]}...)",
        )

    # -- compliance audits ---------------------------------------------------------------

    def _audit(
        self, ctx: _Context, path: Path, test: str, scenario: str, rule: BenchmarkRule, conf: dict
    ) -> None:
        bench = path.parent.parent.name
        if not path.is_dir():
            self.add(
                path,
                "audit.present",
                False,
                f"{test} is required for {bench} in {ctx.round}, but {test}/ is missing",
            )
            return
        audit = self.rules.audits.get(test)
        if audit is None:
            self.add(path, "audit.present", False, f"mlgauge does not know how to check {test}")
            return
        self.add(path, "audit.present", True, f"{test} present")
        self._files(path, audit.files)
        for name in audit.verify_files:
            verify = path / name
            if not verify.is_file():
                continue
            text, error = _read_text(verify)
            passed = text is not None and self.rules.pass_line in text and self.rules.fail_line not in text
            if passed:
                reason = self.rules.pass_line
            elif text is not None and self.rules.fail_line in text:
                # mlgauge's verify files list each check as "name: detail: PASS|FAIL".
                why = [line.strip() for line in text.splitlines() if line.rstrip().endswith(": FAIL")]
                reason = f"says {self.rules.fail_line}" + (f" ({'; '.join(why)})" if why else "")
            else:
                reason = error or f"has no {self.rules.pass_line} line"
            self.add(verify, "audit.verdict", passed, reason)
        perf = path / self.rules.performance_dir
        if perf.is_dir():
            log = self._performance(ctx, perf, scenario, rule, conf, userconf_path=None, audit=test)
            if log is not None:
                wrong = [
                    f"{k} = {_fmt(log.values.get(k))}, {test} needs {_fmt(v)}"
                    for k, v in audit.settings.items()
                    if not _same(log.values.get(k), v)
                ]
                self.add(
                    perf / "mlperf_log_detail.txt",
                    "audit.settings",
                    not wrong,
                    "; ".join(wrong) or f"{test}'s audit.config in effect",
                )
        else:
            self.add(perf, "files.required", False, f"{test}/{self.rules.performance_dir}/ is missing")
        if audit.logged_responses and (path / audit.logged_responses).is_file():
            responses = path / audit.logged_responses
            try:
                count = len(logparse.read_accuracy_log(responses))
            except MlgaugeError as exc:
                self.add(responses, "audit.responses", False, exc.message)
                return
            self.add(responses, "audit.responses", count > 0, f"{count} responses logged in performance mode")
