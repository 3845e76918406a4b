"""The simulator: one vectorized round against each client trained alone with torch.optim.SGD, cost
accounting against the cost model, reproducibility, the central optimum, and bad plans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlgauge.data.federated import digits_clients, synthetic_clients
from mlgauge.errors import UsageError
from mlgauge.federated.costs import draw_client_costs
from mlgauge.federated.fedavg import FedAvgSimulator, step_size
from mlgauge.federated.models import build_model


def _simulator(model="logistic", n=8, **kwargs):
    data = digits_clients(n, seed=0)
    return FedAvgSimulator(data, model, draw_client_costs(n, seed=0), seed=0, **kwargs)


@pytest.mark.parametrize("model", ["logistic", "cnn"])
def test_a_round_equals_each_client_training_alone_then_a_size_weighted_average(model):
    sim = _simulator(model, lr=0.1, batch=4, weight_decay=1e-2)
    start = sim.initial_params()
    sampled, iterations = np.array([1, 4, 6]), 3
    got = sim.fedavg_round(start, sampled, iterations, np.random.default_rng(7))

    rng = np.random.default_rng(7)
    draws = [rng.random((3, 4)) for _ in range(iterations)]  # the same minibatch draws, client by client
    data = sim.data
    models, sizes = [], data.sizes()[sampled]
    for c, k in enumerate(sampled):
        net = build_model(model, 64, 10, (1, 8, 8))
        net.load_state_dict(start)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, y = data.client(int(k))
        for u in draws:
            rows = (u[c] * sizes[c]).astype(np.int64)
            opt.zero_grad()
            penalty = sum((p * p).sum() for p in net.parameters())
            loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]))
            (loss + 0.5 * 1e-2 * penalty).backward()
            opt.step()
        models.append(net.state_dict())
    for name in got:
        want = sum(float(n) / sizes.sum() * m[name] for n, m in zip(sizes, models, strict=True))
        torch.testing.assert_close(got[name], want, rtol=1e-5, atol=1e-6)


def test_a_run_reaches_its_target_and_accounts_every_round():
    sim = _simulator(n=10)
    initial = sim.loss(sim.initial_params())
    trace = sim.run(3, 5, target=0.6 * initial, max_rounds=200, seed=1)
    assert trace.reached and trace.initial_loss == pytest.approx(initial)
    assert all(len(set(r.clients)) == 3 for r in trace.rounds)
    assert trace.time_s == pytest.approx(sum(sim.costs.round_time(r.clients, 5) for r in trace.rounds))
    assert trace.energy_j == pytest.approx(sum(sim.costs.round_energy(r.clients, 5) for r in trace.rounds))
    assert trace.cost(0.5) == pytest.approx(0.5 * trace.time_s + 0.5 * trace.energy_j)
    assert trace.recost(sim.costs) == pytest.approx((trace.time_s, trace.energy_j))
    slow_links = draw_client_costs(10, seed=0, means={"comm_s": 20.0})
    assert trace.recost(slow_links)[0] > trace.time_s and trace.recost(slow_links)[1] == pytest.approx(trace.energy_j)
    assert all(r.loss > trace.target for r in trace.rounds[:-1])
    again = sim.run(3, 5, target=0.6 * initial, max_rounds=200, seed=1)
    assert [r.loss for r in again.rounds] == [r.loss for r in trace.rounds]
    other = sim.run(3, 5, target=0.6 * initial, max_rounds=200, seed=2)
    assert [r.clients for r in other.rounds] != [r.clients for r in trace.rounds]


def test_a_run_that_misses_its_target_says_so():
    sim = _simulator(n=6)
    trace = sim.run(2, 1, target=0.0, max_rounds=3)
    assert not trace.reached and len(trace.rounds) == 3


def test_the_central_optimum_is_below_what_fedavg_reaches():
    sim = _simulator(n=6)
    best = sim.optimum()
    trace = sim.run(6, 10, target=-1.0, max_rounds=40)
    assert best < min(r.loss for r in trace.rounds)
    assert _simulator("cnn", n=6).optimum() == 0.0


def test_synthetic_data_trains_the_logistic_model():
    data = synthetic_clients(12, seed=0)
    sim = FedAvgSimulator(data, "logistic", draw_client_costs(12), lr=0.01)
    trace = sim.run(4, 5, target=-1.0, max_rounds=15)
    assert trace.rounds[-1].loss < 0.8 * trace.initial_loss


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.run(9, 1, target=0.1), "K = 9 clients per round, but there are 8"),
        (lambda s: s.run(2, 0, target=0.1), "E = 0"),
    ],
)
def test_bad_plans_are_usage_errors(call, message):
    with pytest.raises(UsageError, match=message):
        call(_simulator())


def test_mismatched_costs_and_cnn_on_flat_data_are_refused():
    with pytest.raises(UsageError, match="5 clients' costs for 8"):
        FedAvgSimulator(digits_clients(8), "logistic", draw_client_costs(5))
    with pytest.raises(UsageError, match="cnn model needs images"):
        FedAvgSimulator(synthetic_clients(4), "cnn", draw_client_costs(4))


def test_the_decaying_step_follows_li_et_als_schedule_and_zero_keeps_it_constant():
    assert step_size(0.5, 0.0, 1_000) == 0.5
    assert step_size(0.5, 10.0, 0) == 0.5 and step_size(0.5, 10.0, 10) == pytest.approx(0.25)
    assert step_size(0.5, 10.0, 90) == pytest.approx(0.05)


def test_a_decaying_step_continues_across_rounds():
    """Round r's steps start at global step (r - 1)·E, so two runs with different decay differ and a
    run's second round is not its first round again."""
    data = digits_clients(6)
    runs = {tau: FedAvgSimulator(data, "logistic", draw_client_costs(6), lr=0.5, lr_decay=tau)
            .run(2, 5, target=0.0, max_rounds=4, seed=1) for tau in (0.0, 5.0)}  # fmt: skip
    constant, decayed = ([r.loss for r in runs[t].rounds] for t in (0.0, 5.0))
    assert [r.clients for r in runs[0.0].rounds] == [r.clients for r in runs[5.0].rounds]  # same sampling
    assert constant[0] != decayed[0] and constant[-1] != decayed[-1]
    with pytest.raises(UsageError, match="lr decay -1"):
        FedAvgSimulator(data, "logistic", draw_client_costs(6), lr_decay=-1)
