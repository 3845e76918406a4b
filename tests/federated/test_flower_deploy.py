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


def _processes_with_env(entry: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours
            continue
    return found
