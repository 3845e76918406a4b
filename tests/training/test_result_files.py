"""The MLPerf Training submission layout, and the official system-description checker on what we write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlgauge.errors import OutputError, UsageError
from mlgauge.training.result_files import SYSTEM_FIELDS, system_description, write_result_set

HOST = {
    "cpu_model": "Example CPU 9000",
    "cpu_logical_cores": 16,
    "cpu_physical_cores": 8,
    "memory_bytes": 64 * 1024**3,
    "os": "Linux-6.1-x86_64",
    "python": "3.11.9",
    "libraries": {"torch": "2.13.0", "numpy": "2.1.0"},
    "gpus": [{"name": "Example GPU", "memory_bytes": 80 * 1024**3}],
}


def make_logs(folder: Path, count: int, tag: str = "run") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    logs = []
    for index in range(count):
        path = folder / f"{tag}-{index}.log"
        path.write_text(f':::MLLOG {{"key": "seed", "value": {index}, "tag": "{tag}"}}\n')
        logs.append(path)
    return logs


def run_checker(path: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlperf_logging.system_desc_checker", str(path), "training", "4.0.0"]
    command += ["--log_output", str(log)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_layout_and_the_official_system_checker(tmp_path):
    logs = make_logs(tmp_path / "logs", 5)
    # This machine's own description, as a `mlgauge train` would write it.
    written = write_result_set(
        tmp_path / "sub",
        org="mlgauge",
        system="host_cpu",
        benchmark="resnet",
        logs=logs,
        description=system_description("mlgauge", "host_cpu", "closed"),
    )
    results = tmp_path / "sub" / "mlgauge" / "results" / "host_cpu" / "resnet"
    assert written.results_dir == results
    assert sorted(p.name for p in results.iterdir()) == [f"result_{i}.txt" for i in range(5)]
    assert written.result_files == tuple(results / f"result_{i}.txt" for i in range(5))
    for index, log in enumerate(logs):
        assert (results / f"result_{index}.txt").read_bytes() == log.read_bytes()
    assert written.system_file == tmp_path / "sub" / "mlgauge" / "systems" / "host_cpu.json"
    # No staging folders are left beside the set.
    assert [p.name for p in results.parent.iterdir()] == ["resnet"]

    broken = tmp_path / "broken.json"
    desc = json.loads(written.system_file.read_text())
    broken.write_text(json.dumps({**desc, "status": "available"}))
    good_run = run_checker(written.system_file, tmp_path / "good.log")
    bad_run = run_checker(broken, tmp_path / "bad.log")
    good_out = good_run.communicate(timeout=60)[0]
    bad_out = bad_run.communicate(timeout=60)[0]
    # The checker exits 0 either way; its verdict is in the log line.
    assert "System description checker passed for host_cpu" in good_out, good_out
    assert "System description checker failed for host_cpu" in bad_out, bad_out

    assert list(desc) == list(SYSTEM_FIELDS)
    assert desc["status"] == "Research, Development, or Internal (RDI)"
    assert desc["accelerators_per_node"] == "0"
    assert desc["framework"].startswith("PyTorch 2.")
    # The result summarizer int()-s these.
    assert int(desc["number_of_nodes"]) == 1 and int(desc["host_processors_per_node"]) >= 1


def test_description_fields_from_a_host():
    desc = system_description("acme", "box", "open", host=HOST)
    assert desc["host_processor_model_name"] == "Example CPU 9000"
    assert (desc["host_processor_core_count"], desc["host_processor_vcpu_count"]) == ("8", "16")
    assert desc["host_memory_capacity"] == "64 GB"
    assert desc["framework"] == "PyTorch 2.13.0"
    assert desc["operating_system"] == "Linux-6.1-x86_64"
    assert "numpy 2.1.0" in desc["other_software_stack"]
    assert desc["division"] == "open"
    # Trained on the CPU: the GPU in the box is not an accelerator of this result.
    assert (desc["accelerators_per_node"], desc["accelerator_model_name"]) == ("0", "N/A")
    on_gpu = system_description("acme", "box", "open", host=HOST, device="cuda:0")
    assert (on_gpu["accelerators_per_node"], on_gpu["accelerator_model_name"]) == ("1", "Example GPU")
    assert on_gpu["accelerator_memory_capacity"] == "80 GB"
    two_sockets = system_description("acme", "box", "open", host={**HOST, "cpu_sockets": 2})
    assert (two_sockets["host_processors_per_node"], two_sockets["host_processor_core_count"]) == ("2", "4")
    assert all(isinstance(value, str) for value in desc.values())
    with pytest.raises(UsageError, match="division"):
        system_description("acme", "box", "preview", host=HOST)


def write(root: Path, logs: list[Path], **kwargs) -> object:
    args = {"org": "acme", "system": "box", "benchmark": "ssd", "logs": logs}
    args["description"] = system_description("acme", "box", "closed", host=HOST)
    return write_result_set(root, **{**args, **kwargs})


def test_existing_set_is_refused_unless_overwrite(tmp_path):
    root = tmp_path / "sub"
    write(root, make_logs(tmp_path / "a", 5, "first"))
    with pytest.raises(OutputError, match="already exists"):
        write(root, make_logs(tmp_path / "b", 3, "second"))
    written = write(root, make_logs(tmp_path / "b", 3, "second"), overwrite=True)
    # The old set is replaced whole: no result_3/4 left from the five-run set.
    assert sorted(p.name for p in written.results_dir.iterdir()) == [
        "result_0.txt",
        "result_1.txt",
        "result_2.txt",
    ]
    assert '"tag": "second"' in (written.results_dir / "result_0.txt").read_text()
    assert [p.name for p in written.results_dir.parent.iterdir()] == ["ssd"]


def test_system_json_is_shared_by_benchmarks_but_not_silently_changed(tmp_path):
    root = tmp_path / "sub"
    first = write(root, make_logs(tmp_path / "a", 5))
    # Same system, same description, another benchmark: fine.
    write(root, make_logs(tmp_path / "b", 5), benchmark="resnet")
    changed = system_description("acme", "box", "open", host=HOST)
    with pytest.raises(OutputError, match="different description"):
        write(root, make_logs(tmp_path / "c", 5), benchmark="bert", description=changed)
    assert not (root / "acme" / "results" / "box" / "bert").exists()
    write(root, make_logs(tmp_path / "c", 5), benchmark="bert", description=changed, overwrite=True)
    assert json.loads(first.system_file.read_text())["division"] == "open"


def test_scaling_factor_is_written_as_the_checker_does(tmp_path):
    written = write(tmp_path, make_logs(tmp_path / "a", 5), scaling_factor=1.0347)
    assert json.loads((written.results_dir / "scaling.json").read_text()) == {"scaling_factor": 1.0347}


def test_bad_inputs_are_refused(tmp_path):
    logs = make_logs(tmp_path / "a", 2)
    with pytest.raises(UsageError, match="safe folder name"):
        write(tmp_path, logs, system="../escape")
    with pytest.raises(UsageError, match="not found"):
        write(tmp_path, [*logs, tmp_path / "nope.log"])
    with pytest.raises(UsageError, match="no mllog files"):
        write(tmp_path, [])
    desc = system_description("acme", "box", "closed", host=HOST)
    with pytest.raises(UsageError, match="must be strings: number_of_nodes"):
        write(tmp_path, logs, description={**desc, "number_of_nodes": 1})
    with pytest.raises(UsageError, match="but the set is for 'other' by 'acme'"):
        write(tmp_path, logs, system="other")
    with pytest.raises(UsageError, match="lacks cooling"):
        write(tmp_path, logs, description={k: v for k, v in desc.items() if k != "cooling"})
    assert not (tmp_path / "acme").exists()
