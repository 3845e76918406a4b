"""FedAvg on real Flower processes: a SuperLink and three SuperNodes on localhost, one of which goes
away in the second round. The round completes with the clients that answered, and says who did not."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flwr")

from mlgauge.errors import UsageError  # noqa: E402
from mlgauge.federated.bound import ConvergenceBound  # noqa: E402
from mlgauge.federated.costs import ClientCosts  # noqa: E402
from mlgauge.federated.flower.deploy import LocalRuns, Node  # noqa: E402
from mlgauge.federated.flower.measured import as_trace, measured_costs  # noqa: E402
from mlgauge.federated.planner import plan  # noqa: E402


@pytest.mark.integration
def test_three_supernodes_train_and_a_dropout_leaves_a_round_of_the_rest(tmp_path):
    seen = []
    nodes = [Node(0), Node(1), Node(2, {"drop-in-round": 2})]
    with LocalRuns({"num-clients": 3, "round-timeout": 25}, tmp_path, on_progress=lambda t: seen.append(len(t["rounds"])),
                   nodes=nodes, timeout_s=240) as runs:  # fmt: skip
        trace = runs.run(3, 5, target_loss=0.0, max_rounds=2, seed=0)
    assert runs.traces == [trace] and (tmp_path / "trace-01-K3-E5-seed0.json").exists()

    first, second = trace["rounds"]
    assert [c["partition"] for c in first["clients"]] == [0, 1, 2] and first["dropped"] == []
    assert first["loss"] < trace["initial_loss"]
    assert all(c["compute_s"] > 0 and c["comm_s"] > 0 and c["examples"] > 0 for c in first["clients"])
    dropper = next(c["node"] for c in first["clients"] if c["partition"] == 2)
    assert dropper in second["dropped"]
    assert 1 <= len(second["clients"]) <= 2 and 2 not in [c["partition"] for c in second["clients"]]
    assert seen[-1] == 2
    # As the estimator reads it: each round's wall time and the partitions that answered.
    pilot = as_trace(trace)
    assert (pilot.clients_per_round, pilot.iterations, len(pilot.rounds)) == (3, 5, 2)
    assert pilot.time_s == pytest.approx(first["wall_s"] + second["wall_s"])
    assert pilot.rounds[1].clients == tuple(c["partition"] for c in second["clients"])
    # What the clients measured is what the planner reads; nothing meters the radio, so energy is
    # only usable for a time-only plan.
    costs = measured_costs(trace)
    assert all(v > 0 for v in costs["compute_s"] + costs["comm_s"]) and costs["comm_j"] == [None] * 3
    with pytest.raises(UsageError, match=r"_j was not measured for client"):  # compute_j too, without a meter
        ClientCosts.from_dict(costs)
    assert plan(ClientCosts.from_dict(costs, time_only=True), ConvergenceBound(10, 1, 3), gamma=0.0, epsilon=0.1).clients >= 1
    assert _processes_with_env(f"FLWR_HOME={tmp_path / 'flwr-home'}") == []  # every Flower process stopped


@pytest.mark.integration
def test_virtual_supernodes_in_flowers_simulation_runtime_run_the_same_apps(tmp_path, capsys):
    pytest.importorskip("ray")
    import json

    from mlgauge.cli import main

    code = main(["fl", "deploy", "--simulation", "--clients", "6", "-K", "3", "-E", "4", "--rounds", "2",
                 "--round-timeout", "60", "--workdir", str(tmp_path), "--json"])  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["costs"] is None and not (tmp_path / "client_costs.json").exists()  # no device's
    trace = result["trace"]
    assert not (tmp_path / "logs" / "supernode-0.log").exists()  # no SuperNode processes: virtual ones
    assert [r["number"] for r in trace["rounds"]] == [1, 2]
    for r in trace["rounds"]:
        partitions = [c["partition"] for c in r["clients"]]
        assert r["dropped"] == [] and len(r["sampled"]) == 3
        assert len(set(partitions)) == 3 and set(partitions) <= set(range(6))  # Flower numbers them 0 .. N - 1
        assert all(c["compute_s"] > 0 and c["examples"] > 0 for c in r["clients"])
    # The same apps ran: every round's global loss is what FedAvg over the partitions that answered gives.
    assert [r["loss"] for r in trace["rounds"]] == pytest.approx(_replay(trace), rel=1e-5)
    assert _processes_with_env(f"FLWR_HOME={tmp_path / 'flwr-home'}") == []  # Ray's workers too


@pytest.mark.integration
def test_sigterm_ends_a_deployment_and_every_process_it_started(tmp_path):
    pytest.importorskip("ray")
    import json
    import signal
    import subprocess
    import sys
    import time

    workdir = tmp_path / "fl"
    argv = [str(Path(sys.executable).parent / "mlgauge"), "fl", "deploy", "--simulation", "--clients", "4", "-K", "2",
            "-E", "2", "--rounds", "100000", "--workdir", str(workdir), "--json"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not _rounds(workdir / "trace.json") and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None and _rounds(workdir / "trace.json"), process.communicate()
    process.send_signal(signal.SIGTERM)  # as a job scheduler or `timeout` ends a run
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and err.strip().splitlines()[-1] == "error: terminated", err
    assert _processes_with_env(f"FLWR_HOME={workdir / 'flwr-home'}") == []
    assert json.loads((workdir / "trace.json").read_text())["rounds"]  # the rounds it finished are kept


def _rounds(path: Path) -> int:
    import json

    try:
        return len(json.loads(path.read_text())["rounds"])
    except (OSError, ValueError):
        return 0


def _replay(trace: dict) -> list[float]:
    """The global loss after each round of ``trace``, recomputed here: each answering partition's E local
    steps (the ClientApp's minibatch seed) from the global model, averaged by example count."""
    import numpy as np
    import torch

    from mlgauge.federated.fedavg import objective
    from mlgauge.federated.flower.client_app import local_sgd
    from mlgauge.federated.flower.protocol import federation, model_for

    config = trace["config"]
    data = federation(config)
    net = model_for(config, data)
    params = {name: value.detach().clone() for name, value in net.named_parameters()}
    e, losses = int(config["local-iterations"]), []
    for r in trace["rounds"]:
        total = {name: torch.zeros_like(value) for name, value in params.items()}
        for client in r["clients"]:
            net.load_state_dict(params)
            x, y = data.client(client["partition"])
            local_sgd(net, torch.from_numpy(x), torch.from_numpy(y), iterations=e, lr=float(config["lr"]),
                      batch=int(config["batch"]), weight_decay=float(config["weight-decay"]),
                      rng=np.random.default_rng((int(config["seed"]), r["number"], client["partition"])),
                      lr_decay=float(config["lr-decay"]), first_step=(r["number"] - 1) * e)  # fmt: skip
            for name, value in net.named_parameters():
                total[name] += client["examples"] * value.detach()
        examples = sum(client["examples"] for client in r["clients"])
        params = {name: value / examples for name, value in total.items()}
        net.load_state_dict(params)
        x, y = torch.from_numpy(data.features), torch.from_numpy(data.labels)
        with torch.no_grad():
            losses.append(float(objective(net, dict(net.named_parameters()), x, y, float(config["weight-decay"]))))
    return losses


def _processes_with_env(entry: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return found
