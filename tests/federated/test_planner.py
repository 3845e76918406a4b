"""The planner against a brute-force search written out with loops, and the solution properties the
model implies (energy only: the fewest clients; costlier communication: more local iterations)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mlgauge.errors import UsageError
from mlgauge.federated.bound import ConvergenceBound
from mlgauge.federated.costs import draw_client_costs
from mlgauge.federated.planner import plan


def _brute_force(costs, bound, gamma, epsilon, max_e):
    n = costs.clients
    best = (np.inf, None)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        for e in range(1, max_e + 1):
            t = np.mean([costs.round_time(s, e) for s in subsets])
            en = np.mean([costs.round_energy(s, e) for s in subsets])
            q_k = (n - k) / (k * (n - 1))
            rounds = (bound.a0 + bound.a1 * e + (bound.b0 + bound.c0 * q_k) * e * e) / (epsilon * e)
            cost = rounds * ((1 - gamma) * t + gamma * en)
            best = min(best, (cost, (k, e)))
    return best


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("bound", [ConvergenceBound(a0=30.0, b0=0.2, clients=6),
                                   ConvergenceBound(a0=30.0, b0=0.05, clients=6, a1=12.0, c0=0.9)], ids=["s(K)", "4"])
def test_the_plan_is_the_brute_force_minimum(gamma, bound):
    costs = draw_client_costs(6, seed=1)
    got = plan(costs, bound, gamma=gamma, epsilon=0.05)
    cost, (k, e) = _brute_force(costs, bound, gamma, 0.05, max_e=60)
    assert (got.clients, got.iterations) == (k, e)
    assert got.cost == pytest.approx(cost, rel=1e-9)
    assert got.surface.cost.shape == (6, got.surface.iterations.size)
    assert got.cost == pytest.approx(got.surface.cost.min())


def test_the_search_goes_past_its_first_window_when_the_bound_requires():
    costs = draw_client_costs(5, seed=2)
    bound = ConvergenceBound(a0=1e6, b0=1e-3, clients=5)  # drift nearly free: E* in the hundreds
    got = plan(costs, bound, gamma=0.0, epsilon=0.1)
    assert got.iterations > 256
    e = np.arange(1, 20_001)
    per_round = costs.expected_round_time([got.clients], e)[0]
    totals = bound.rounds(got.clients, e, 0.1) * per_round
    assert got.iterations == int(e[np.argmin(totals)])


def test_with_a_linear_term_only_the_search_still_ends_where_the_bound_proves():
    costs = draw_client_costs(5, seed=2)
    bound = ConvergenceBound(a0=5e4, b0=0.0, clients=5, a1=0.5, c0=0.0)  # rounds level off at A1/ε, never climb
    got = plan(costs, bound, gamma=0.5, epsilon=0.1)
    e = np.arange(1, 50_001)
    per_round = 0.5 * costs.expected_round_time([got.clients], e)[0] + 0.5 * costs.expected_round_energy([got.clients], e)[0]
    assert got.iterations == int(e[np.argmin(bound.rounds(got.clients, e, 0.1) * per_round)])


def test_a_limit_on_e_is_respected():
    costs = draw_client_costs(5, seed=2)
    bound = ConvergenceBound(a0=1e6, b0=1e-3, clients=5)
    assert plan(costs, bound, gamma=0.0, epsilon=0.1, max_iterations=40).iterations == 40


def test_energy_only_samples_the_fewest_clients_and_time_only_more():
    costs = draw_client_costs(40, seed=0, relative_std=0.05)
    bound = ConvergenceBound(a0=50.0, b0=0.05, clients=40)
    energy, time = plan(costs, bound, gamma=1.0, epsilon=0.01), plan(costs, bound, gamma=0.0, epsilon=0.01)
    assert energy.clients == 1
    assert time.clients > 10


def test_identical_clients_in_time_only_use_all_of_them():
    costs = draw_client_costs(12, seed=0, relative_std=0.0)  # every round lasts the same whatever K
    assert plan(costs, ConvergenceBound(a0=5.0, b0=0.5, clients=12), gamma=0.0, epsilon=0.1).clients == 12


def test_costlier_communication_means_more_local_iterations():
    bound = ConvergenceBound(a0=50.0, b0=0.05, clients=30)
    es = [plan(draw_client_costs(30, seed=0, means={"comm_s": m}), bound, gamma=0.0, epsilon=0.01).iterations
          for m in (0.2, 2.0, 20.0)]  # fmt: skip
    assert es[0] < es[1] < es[2]


def test_epsilon_scales_the_cost_but_not_the_plan():
    costs = draw_client_costs(8, seed=4)
    bound = ConvergenceBound(a0=10.0, b0=0.3, clients=8)
    loose, tight = plan(costs, bound, gamma=0.5, epsilon=0.1), plan(costs, bound, gamma=0.5, epsilon=0.01)
    assert (loose.clients, loose.iterations) == (tight.clients, tight.iterations)
    assert tight.cost == pytest.approx(10 * loose.cost)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gamma": 1.5}, "γ = 1.5 is outside"),
        ({"gamma": -0.1}, "outside"),
        ({"max_iterations": 0}, "E <= 0"),
        ({"epsilon": -1.0}, "ε = -1.0"),
    ],
)
def test_bad_plans_are_usage_errors(kwargs, message):
    args = {"gamma": 0.5, "epsilon": 0.1, **kwargs}
    with pytest.raises(UsageError, match=message):
        plan(draw_client_costs(4), ConvergenceBound(1.0, 1.0, 4), **args)


def test_a_bound_for_another_federation_is_refused():
    with pytest.raises(UsageError, match="bound is for 5 clients"):
        plan(draw_client_costs(4), ConvergenceBound(1.0, 1.0, 5), gamma=0.0, epsilon=0.1)
    with pytest.raises(UsageError, match="B0 = 0"):
        plan(draw_client_costs(4), ConvergenceBound(1.0, 0.0, 4), gamma=0.0, epsilon=0.1)
