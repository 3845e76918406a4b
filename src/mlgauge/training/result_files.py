"""Write a training set's mllog files in the MLPerf Training submission layout.

Layout the package checker walks (mlperf_logging/package_checker)::

    <root>/<org>/systems/<system>.json
    <root>/<org>/results/<system>/<benchmark>/result_0.txt ... result_<N-1>.txt

The system description carries the fields ``system_desc_checker`` requires.
Values are strings, as in published submissions: the checker joins several of
them with ``",".join`` and the result summarizer ``int()``-s the counts, so a
JSON number would crash the one and an empty count the other.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlgauge import paths
from mlgauge.errors import OutputError, UsageError
from mlgauge.results.system import describe_system

__all__ = ["SYSTEM_FIELDS", "ResultSetFiles", "system_description", "write_result_set"]

# The 33 fields mlperf_logging/system_desc_checker/system_desc_checker.py requires, in its order.
SYSTEM_FIELDS = (
    "submitter",
    "division",
    "status",
    "system_name",
    "number_of_nodes",
    "host_processors_per_node",
    "host_processor_model_name",
    "host_processor_core_count",
    "host_processor_vcpu_count",
    "host_processor_frequency",
    "host_processor_caches",
    "host_processor_interconnect",
    "host_memory_capacity",
    "host_storage_type",
    "host_storage_capacity",
    "host_networking",
    "host_networking_topology",
    "host_memory_configuration",
    "accelerators_per_node",
    "accelerator_model_name",
    "accelerator_host_interconnect",
    "accelerator_frequency",
    "accelerator_on-chip_memories",
    "accelerator_memory_configuration",
    "accelerator_memory_capacity",
    "accelerator_interconnect",
    "accelerator_interconnect_topology",
    "cooling",
    "hw_notes",
    "framework",
    "other_software_stack",
    "operating_system",
    "sw_notes",
)
# From ruleset 4.0 the checker accepts only these availability values; a measurement on a
# lab machine is research, not a product anyone can buy.
RDI_STATUS = "Research, Development, or Internal (RDI)"
_DIVISIONS = ("closed", "open")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_GIB = 1024**3


@dataclass(frozen=True)
class ResultSetFiles:
    """Where a written set lives."""

    results_dir: Path
    result_files: tuple[Path, ...]
    system_file: Path


def system_description(
    org: str,
    system: str,
    division: str,
    *,
    device: str = "cpu",
    status: str = RDI_STATUS,
    host: Mapping | None = None,
) -> dict[str, str]:
    """The ``systems/<system>.json`` content for this host, with every field the checker requires.

    ``host`` is a :func:`mlgauge.results.system.describe_system` result (this
    machine's when omitted). Fields a process cannot learn (storage, cooling,
    interconnects) are empty strings rather than guesses. Accelerators are
    counted only when training ran on them (``device`` "cuda...").
    """
    if division not in _DIVISIONS:
        raise UsageError(f"unknown division '{division}'", hint=f"Use one of: {', '.join(_DIVISIONS)}")
    info = dict(host) if host is not None else describe_system()
    desc = dict.fromkeys(SYSTEM_FIELDS, "")
    desc.update(
        submitter=org,
        division=division,
        status=status,
        system_name=system,
        number_of_nodes="1",
        operating_system=str(info.get("os") or ""),
        framework=_framework(info),
        other_software_stack=_software(info),
    )
    desc.update(_host_fields(info))
    desc.update(_accelerator_fields(info, device))
    return desc


def _framework(info: Mapping) -> str:
    version = (info.get("libraries") or {}).get("torch")
    return f"PyTorch {version}" if version else "PyTorch"


def _software(info: Mapping) -> str:
    libraries = info.get("libraries") or {}
    parts = [f"Python {info['python']}"] if info.get("python") else []
    parts += [f"{name} {version}" for name, version in sorted(libraries.items()) if name != "torch"]
    return ", ".join(parts)


def _host_fields(info: Mapping) -> dict[str, str]:
    physical = info.get("cpu_physical_cores") or info.get("cpu_logical_cores")
    logical = info.get("cpu_logical_cores")
    memory = info.get("memory_bytes")
    sockets = info.get("cpu_sockets")
    fields = {
        "host_processor_model_name": str(info.get("cpu_model") or ""),
        "host_processors_per_node": str(sockets or 1),
        # MLPerf counts cores per processor, not per node.
        "host_processor_core_count": str(physical // sockets if physical and sockets else physical or ""),
        "host_processor_vcpu_count": str(logical or ""),
        "host_memory_capacity": f"{memory / _GIB:.0f} GB" if memory else "",
    }
    if not sockets:
        # The summarizer int()-s this field, so it cannot stay empty; say that it is assumed.
        fields["hw_notes"] = "socket count unknown: the host is described as one processor with all its cores"
    return fields


def _accelerator_fields(info: Mapping, device: str) -> dict[str, str]:
    gpus = list(info.get("gpus") or []) if device.startswith("cuda") else []
    if not gpus:
        return {"accelerators_per_node": "0", "accelerator_model_name": "N/A"}
    memory = gpus[0].get("memory_bytes")
    return {
        "accelerators_per_node": str(len(gpus)),
        "accelerator_model_name": str(gpus[0].get("name") or ""),
        "accelerator_memory_capacity": f"{memory / _GIB:.0f} GB" if memory else "",
    }


def write_result_set(
    root: str | Path,
    *,
    org: str,
    system: str,
    benchmark: str,
    logs: Sequence[str | Path],
    description: Mapping[str, str],
    scaling_factor: float | None = None,
    overwrite: bool = False,
) -> ResultSetFiles:
    """Copy a set's mllog files to ``result_<i>.txt`` (run order) and write the system JSON.

    The benchmark folder is built in a temporary folder beside its target and
    renamed into place, so a failure never leaves a half-written set. An
    existing set, or a different description of the same system, is refused
    unless ``overwrite``. ``scaling_factor`` (from an RCP check) is written to
    ``scaling.json``, which the result summarizer multiplies the score by.
    """
    sources = _check_inputs(org, system, benchmark, logs, description)
    org_dir = Path(root) / org
    target = org_dir / "results" / system / benchmark
    system_file = org_dir / "systems" / f"{system}.json"
    system_text = json.dumps(dict(description), indent=2) + "\n"
    _refuse_existing(target, system_file, system_text, overwrite)
    try:
        _write_set(target, sources, scaling_factor)
        system_file.parent.mkdir(parents=True, exist_ok=True)
        paths.write_text_atomic(system_file, system_text)
    except OSError as err:
        raise OutputError(
            f"cannot write the result set: {err}", hint="Check the folder is writable", file=target
        ) from err
    files = tuple(target / f"result_{i}.txt" for i in range(len(sources)))
    return ResultSetFiles(results_dir=target, result_files=files, system_file=system_file)


def _check_inputs(
    org: str, system: str, benchmark: str, logs: Sequence[str | Path], description: Mapping[str, str]
) -> list[Path]:
    for kind, name in (("org", org), ("system", system), ("benchmark", benchmark)):
        if not _SAFE_NAME.match(name):
            raise UsageError(
                f"{kind} name '{name}' is not a safe folder name", hint="Use letters, digits, . _ -"
            )
    missing = [field for field in SYSTEM_FIELDS if field not in description]
    if missing:
        raise UsageError(
            f"system description lacks {', '.join(missing)}", hint="Build it with system_description()"
        )
    not_text = [key for key, value in description.items() if not isinstance(value, str)]
    if not_text:
        # The checker ",".join()-s several fields and would crash on a number.
        raise UsageError(
            f"system description fields must be strings: {', '.join(not_text)}", hint='Write 8 as "8"'
        )
    if description.get("system_name") != system or description.get("submitter") != org:
        # The checkers find the JSON by folder name and the summarizer reports the fields.
        raise UsageError(
            f"system description names '{description.get('system_name')}' by '{description.get('submitter')}', "
            f"but the set is for '{system}' by '{org}'",
            hint="Build the description with the same org and system names",
        )
    sources = [Path(log) for log in logs]
    if not sources:
        raise UsageError("no mllog files to write", hint="Pass the logs of every run of the set")
    for source in sources:
        if not source.is_file():
            raise UsageError(
                "mllog file not found", hint="Pass the logs the training runs wrote", file=source
            )
    return sources


def _refuse_existing(target: Path, system_file: Path, system_text: str, overwrite: bool) -> None:
    if overwrite:
        return
    if target.exists():
        raise OutputError(
            "a result set already exists there",
            hint="Pass overwrite=True (--overwrite) to replace it",
            file=target,
        )
    if system_file.exists() and system_file.read_text(encoding="utf-8") != system_text:
        raise OutputError(
            "a different description of this system already exists",
            hint="Use another system name, or overwrite=True (--overwrite) to replace it",
            file=system_file,
        )


def _write_set(target: Path, sources: list[Path], scaling_factor: float | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for index, source in enumerate(sources):
            shutil.copyfile(source, staging / f"result_{index}.txt")
        if scaling_factor is not None:
            # The shape rcp_checker._set_results_scaling writes.
            (staging / "scaling.json").write_text(json.dumps({"scaling_factor": scaling_factor}))
        paths.replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

