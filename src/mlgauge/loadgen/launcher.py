"""Start one worker process per LoadGen run and bring back its record or its error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from mlgauge.config.run_spec import RunSpec
from mlgauge.errors import WorkerError, error_from_dict
from mlgauge.results.record import ResultRecord


def run_in_worker(spec: RunSpec, timeout_s: float | None = None) -> ResultRecord:
    out = spec.out_path
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_file.write_text(spec.to_json())
    log = out / "worker.log"
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log, "wb") as fh:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "mlgauge.loadgen.worker", str(spec_file)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise WorkerError(
                f"the {spec.label} worker did not finish within {timeout_s:.0f} s",
                hint=f"Its output is in {log}; shorten the run or raise the limit",
            ) from None
    record_file, error_file = out / "record.json", out / "error.json"
    if proc.returncode == 0 and record_file.is_file():
        return ResultRecord.from_dict(json.loads(record_file.read_text()))
    if error_file.is_file():
        raise error_from_dict(json.loads(error_file.read_text()))
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        how = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        how = f"exited with code {proc.returncode}"
    raise WorkerError(f"the {spec.label} worker {how} without a result", hint=f"Its output is in {log}")

