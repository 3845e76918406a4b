"""A deployment's trace in the planner's terms: per-client means over the rounds each answered."""

from __future__ import annotations

import math

import pytest

from mlgauge.errors import UsageError
from mlgauge.federated.costs import ClientCosts
from mlgauge.federated.flower.measured import as_trace, client_summary, measured_costs


def _client(partition: int, compute_s: float, comm_s: float, compute_j: float | None = None) -> dict:
    return {"partition": partition, "node": 100 + partition, "examples": 50, "compute_s": compute_s,
            "comm_s": comm_s, "compute_j": compute_j}  # fmt: skip


def _trace(rounds: list[list[dict]], clients: int = 3, iterations: int = 4) -> dict:
    return {"config": {"num-clients": clients, "local-iterations": iterations},
            "rounds": [{"number": i + 1, "clients": c} for i, c in enumerate(rounds)]}  # fmt: skip


def test_means_per_client_over_the_rounds_it_answered():
    trace = _trace([[_client(0, 0.4, 2.0, 0.8), _client(2, 1.2, 3.0)], [_client(0, 0.8, 4.0, 1.6)]])
    summary = {c["partition"]: c for c in client_summary(trace)}
    assert summary[0]["rounds"] == 2
    assert summary[0]["compute_s_per_iteration"] == pytest.approx(0.6 / 4)
    assert summary[0]["comm_s"] == pytest.approx(3.0)
    assert summary[0]["compute_j_per_iteration"] == pytest.approx(1.2 / 4)
    assert summary[2]["compute_j_per_iteration"] is None and 1 not in summary

    costs = measured_costs(trace)
    assert costs["compute_s"][1] is None
    assert costs["compute_s"][0] == pytest.approx(0.15) and costs["compute_s"][2] == pytest.approx(0.3)
    assert costs["comm_j"] == [None, None, None]


def test_a_client_never_sampled_is_named():
    costs = measured_costs(_trace([[_client(0, 0.4, 2.0), _client(2, 1.2, 3.0)]]))
    with pytest.raises(UsageError, match=r"compute_s was not measured for client\(s\) 1") as err:
        ClientCosts.from_dict(costs, time_only=True)
    assert "more rounds" in err.value.hint


def test_unmetered_energy_serves_a_time_only_plan_and_nothing_else():
    costs = measured_costs(_trace([[_client(0, 0.4, 2.0), _client(1, 1.2, 3.0)]], clients=2))
    with pytest.raises(UsageError, match="compute_j was not measured") as err:
        ClientCosts.from_dict(costs)
    assert "--gamma 0" in err.value.hint
    time_only = ClientCosts.from_dict(costs, time_only=True)
    assert time_only.comm_s.tolist() == pytest.approx([2.0, 3.0])
    assert time_only.compute_j.tolist() == [0.0, 0.0]


def test_a_deployment_reads_as_a_simulator_trace_for_the_estimator():
    flower = _trace([[_client(0, 0.4, 2.0), _client(2, 1.2, 3.0)], [_client(1, 0.5, 2.5, 0.9)]], iterations=4)
    flower["config"].update({"clients-per-round": 2, "target-loss": 0.5})
    flower["initial_loss"] = 2.3
    for r, (loss, wall) in zip(flower["rounds"], [(1.0, 3.5), (0.4, 2.9)], strict=True):
        r.update({"loss": loss, "wall_s": wall})
    trace = as_trace(flower)
    assert (trace.clients_per_round, trace.iterations, trace.initial_loss) == (2, 4, 2.3)
    assert trace.reached and [r.clients for r in trace.rounds] == [(0, 2), (1,)]
    assert trace.time_s == pytest.approx(6.4)
    # Round 1 had an unmetered client, so the run's energy is unknown, yet its time cost is not.
    assert math.isnan(trace.energy_j) and trace.rounds[1].energy_j == pytest.approx(0.9)
    assert trace.cost(0.0) == pytest.approx(6.4) and math.isnan(trace.cost(0.5))

    # Virtual nodes' own timings are not a device's: the same rounds costed with given client costs.
    given = ClientCosts(compute_s=[0.1, 0.2, 0.3], comm_s=[2.0, 1.0, 4.0], compute_j=[1e-3] * 3, comm_j=[2e-2] * 3)
    costed = trace.costed(given)
    assert [(r.clients, r.loss) for r in costed.rounds] == [(r.clients, r.loss) for r in trace.rounds]
    assert [r.time_s for r in costed.rounds] == pytest.approx([max(0.4 + 2.0, 1.2 + 4.0), 0.8 + 1.0])
    assert costed.energy_j == pytest.approx(3 * (4e-3 + 2e-2)) and costed.reached
    assert trace.recost(given) == pytest.approx((costed.time_s, costed.energy_j))
