"""Run the planned FedAvg app on Flower: a SuperLink and N SuperNodes on this machine, N virtual
SuperNodes in Flower's Simulation Runtime (Ray) behind a local SuperLink, or a SuperLink that is
already running elsewhere, driven by Flower's own ``flwr run``.

Locally, every process is Flower's own executable from this environment (``flower-superlink``,
``flower-supernode``), each node told its partition through ``--node-config``. Flower's home (app
installs, the SuperLink's state, the CLI's connection settings) lives in the run's work folder, not in
the user's ``~/.flwr``, and the SuperLink never installs dependencies at run time: the app is
mlgauge's own, already installed here. Every process logs to a file in the work folder; all of them
are stopped when the run ends, however it ends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from mlgauge import paths
from mlgauge.errors import RunError, UsageError
from mlgauge.federated.flower.protocol import RUN_CONFIG
from mlgauge.interrupts import terminate_as_interrupt

_APP_NAME = "mlgauge-fedavg"
_CONNECTION = "mlgauge"


@dataclass
class Node:
    partition: int
    extra_config: dict[str, int | float | str] = field(default_factory=dict)  # e.g. {"drop-in-round": 2}


def _bin(name: str) -> str:
    """Flower's executable next to this Python, so a deployment uses this environment's flwr."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise UsageError(f"'{name}' is not installed", hint="Install the federated extra: pip install 'mlgauge[federated]'")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def write_app(folder: Path) -> Path:
    """The Flower app project: its components are mlgauge's modules, its config keys ``RUN_CONFIG``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{key} = {_toml_value(value)}" for key, value in RUN_CONFIG.items())
    (folder / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{_APP_NAME}"
version = "1.0.0"
description = "FedAvg with a planned clients-per-round K and local iterations E (mlgauge)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "mlgauge"

[tool.flwr.app.components]
serverapp = "mlgauge.federated.flower.server_app:app"
clientapp = "mlgauge.federated.flower.client_app:app"

[tool.flwr.app.config]
{config}
""")
    return folder


def run_config_text(config: dict) -> str:
    unknown = sorted(set(config) - set(RUN_CONFIG))
    if unknown:
        raise UsageError(f"unknown run-config keys {', '.join(unknown)}", hint=f"Known: {', '.join(RUN_CONFIG)}")
    # Flower checks each override against the default's type: a float stays a float.
    typed = {key: float(value) if isinstance(RUN_CONFIG[key], float) else value for key, value in config.items()}
    return _assignments(typed)


def _assignments(values: dict) -> str:
    """``key=value ...`` with TOML values: how Flower's run, node and federation configs are overridden."""
    return " ".join(f"{key}={_toml_value(value)}" for key, value in values.items())


class _Processes:
    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it until it exits
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=self.env, start_new_session=True)  # fmt: skip
        log.close()
        self.running.append((name, process))
        return process

    def check_alive(self) -> None:
        for name, process in self.running:
            if process.poll() is not None:
                raise RunError(f"{name} exited with code {process.returncode}",
                                      hint=f"See {self.logs / (name + '.log')}")  # fmt: skip

    def stop_all(self) -> None:
        """SIGTERM to each process group (SuperNodes start SuperExec children), SIGKILL what is left after 5 s."""
        for _, process in self.running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for _, process in self.running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        # A leader can exit before the SuperExec and app processes it started: clear each group out.
        for _, process in self.running:
            _signal_group(process, signal.SIGKILL)
            for _ in range(50):
                try:
                    os.killpg(process.pid, 0)
                except (ProcessLookupError, PermissionError):
                    break
                time.sleep(0.05)
        self.running.clear()
        # Some leave the groups (Ray's own processes start sessions of their own) but keep the
        # environment: this deployment's FLWR_HOME finds them.
        marker = f"FLWR_HOME={self.env['FLWR_HOME']}".encode()
        deadline = time.monotonic() + 5.0
        while (left := _with_environment(marker)) and time.monotonic() < deadline:
            for pid in left:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def _with_environment(entry: bytes) -> list[int]:
    """Processes whose environment holds ``entry`` (Linux's /proc; elsewhere none are found)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with suppress(OSError):  # gone, or not ours
            if entry in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(process.pid, sig)


def _wait_for_port(port: int, processes: _Processes, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        processes.check_alive()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RunError(f"the SuperLink did not listen on port {port} within {timeout_s:.0f} s",
                          hint=f"See {processes.logs / 'superlink.log'}")  # fmt: skip


def _flower_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(home)
    # The SuperLink and SuperNodes start flower-superexec / flwr-serverapp / flwr-clientapp from PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _write_connection(home: Path, address: str, insecure: bool, root_certificates: Path | None) -> None:
    lines = ["[superlink]", f'default = "{_CONNECTION}"', "", f"[superlink.{_CONNECTION}]", f"address = {json.dumps(address)}"]
    if insecure:
        lines.append("insecure = true")
    elif root_certificates is not None:
        lines.append(f"root-certificates = {json.dumps(str(root_certificates))}")
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("\n".join(lines) + "\n")


def check_simulation_runtime() -> None:
    """Flower's Simulation Runtime runs the ClientApps on Ray, which ``flwr`` does not install itself."""
    if importlib.util.find_spec("ray") is None:
        raise UsageError("Flower's Simulation Runtime needs Ray, which is not installed here",
                         hint="Install the simulation extra: pip install 'mlgauge[simulation]' (Linux or macOS)")  # fmt: skip


@contextmanager
def local_federation(nodes: list[Node], workdir: Path, *, simulation: bool = False) -> Iterator[str]:
    """A SuperLink and one SuperNode per ``nodes`` entry on 127.0.0.1, or (``simulation``) a SuperLink
    whose runs execute in Flower's Simulation Runtime, the SuperNodes virtual; yields its address.
    Every process is stopped on the way out, after an error, Ctrl-C or SIGTERM alike."""
    if simulation:
        check_simulation_runtime()
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    home = workdir / "flwr-home"
    processes = _Processes(logs, _flower_env(home))
    with terminate_as_interrupt():
        try:
            port = free_port()
            processes.start("superlink", [_bin("flower-superlink"), "--insecure", "--port", str(port),
                                          "--disable-runtime-dependency-installation",
                                          "--database", str(workdir / "superlink.db")]
                                         + (["--simulation"] if simulation else []))  # fmt: skip
            _wait_for_port(port, processes)
            for node in [] if simulation else nodes:
                config = {"partition-id": node.partition, "num-partitions": len(nodes), **node.extra_config}
                processes.start(f"supernode-{node.partition}", [
                    _bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                    "--port", str(free_port()), "--node-config", _assignments(config)])  # fmt: skip
            yield f"127.0.0.1:{port}"
            processes.check_alive()
        finally:
            processes.stop_all()


def run_app(address: str, config: dict, workdir: Path, *, insecure: bool = True, root_certificates: Path | None = None,
            on_progress: Callable[[dict], None] | None = None, timeout_s: float | None = None,
            simulation: dict | None = None) -> dict:  # fmt: skip
    """``flwr run`` the app on the SuperLink at ``address`` with ``config``; the trace the ServerApp wrote.

    ``on_progress`` gets the trace so far each time it grows (the ServerApp rewrites it every round).
    ``simulation``: the federation config of a SuperLink started with ``--simulation``, e.g.
    ``{"num-supernodes": 20, "client-resources-num-cpus": 1}``.
    """
    home = workdir / "flwr-home"
    _write_connection(home, address, insecure, root_certificates)
    output = (workdir / "trace.json").resolve()
    output.unlink(missing_ok=True)
    app = write_app(workdir / "app")
    argv = [_bin("flwr"), "run", str(app), _CONNECTION, "--stream",
            "--run-config", run_config_text({**config, "output": str(output)})]  # fmt: skip
    if simulation:
        argv += ["--federation-config", _assignments(simulation)]
    log_path = workdir / "logs" / "flwr-run.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log, terminate_as_interrupt():
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=_flower_env(home), start_new_session=True)  # fmt: skip
        started, seen = time.monotonic(), -1
        try:
            while process.poll() is None:
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    raise RunError(f"the Flower run did not finish within {timeout_s:.0f} s",
                                          hint=f"See {log_path}; allow more time (--timeout)")  # fmt: skip
                trace = _read_trace(output)
                if trace is not None and len(trace["rounds"]) != seen and on_progress is not None:
                    seen = len(trace["rounds"])
                    on_progress(trace)
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
                process.wait()
    trace = _read_trace(output)
    if process.returncode != 0 or trace is None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"the Flower run failed (flwr exit code {process.returncode}): {tail[0][:200]}",
                              hint=f"See {log_path} and the logs beside it")  # fmt: skip
    if on_progress is not None and len(trace["rounds"]) != seen:
        on_progress(trace)
    return trace


def _read_trace(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_config(base: dict, clients_per_round: int, iterations: int, *, target_loss: float, max_rounds: int,
               seed: int) -> dict:  # fmt: skip
    """One run's config: the shared ``base`` (data, model, N, optimizer, round timeout) and the plan."""
    return {**base, "clients-per-round": clients_per_round, "local-iterations": iterations,
            "target-loss": target_loss, "max-rounds": max_rounds, "seed": seed}  # fmt: skip


class LocalRuns:
    """A local SuperLink and N SuperNodes kept up for one or several ``flwr run``s (a deployment, or
    pilots and then a plan).

    ``run`` returns each run's trace and keeps a copy in the work folder; ``base`` is the run config
    every run shares (data, model, N, optimizer, round timeout). ``nodes`` defaults to one plain
    SuperNode per partition; ``timeout_s`` bounds each run. With ``client_cpus`` the N SuperNodes are
    virtual, in Flower's Simulation Runtime, each ClientApp given that many of Ray's CPUs: one process
    for the whole federation instead of one per client, for N beyond what a machine can start."""

    def __init__(self, base: dict, workdir: Path, on_progress: Callable[[dict], None] | None = None, *,
                 nodes: list[Node] | None = None, timeout_s: float | None = None,
                 client_cpus: int | None = None) -> None:  # fmt: skip
        self.base, self.workdir, self.on_progress = dict(base), workdir, on_progress
        self.nodes = nodes if nodes is not None else [Node(i) for i in range(int(self.base["num-clients"]))]
        self.timeout_s = timeout_s
        if client_cpus is not None and any(node.extra_config for node in self.nodes):
            raise ValueError("virtual SuperNodes take no node config beyond their partition")
        self.simulation = None if client_cpus is None else {"num-supernodes": len(self.nodes),
                                                            "client-resources-num-cpus": client_cpus}  # fmt: skip
        self.traces: list[dict] = []
        self._federation = None

    def __enter__(self) -> LocalRuns:
        self._federation = local_federation(self.nodes, self.workdir, simulation=self.simulation is not None)
        self.address = self._federation.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._federation.__exit__(*exc)

    def run(self, clients_per_round: int, iterations: int, *, target_loss: float, max_rounds: int, seed: int) -> dict:
        config = run_config(self.base, clients_per_round, iterations, target_loss=target_loss, max_rounds=max_rounds,
                            seed=seed)  # fmt: skip
        trace = run_app(self.address, config, self.workdir, on_progress=self.on_progress, timeout_s=self.timeout_s,
                        simulation=self.simulation)  # fmt: skip
        name = f"trace-{len(self.traces) + 1:02d}-K{clients_per_round}-E{iterations}-seed{seed}.json"
        paths.write_text_atomic(self.workdir / name, json.dumps(trace, indent=1))
        self.traces.append(trace)
        return trace
