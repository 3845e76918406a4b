"""The cost model against enumeration of every K-subset, and the round bound against its formula by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mlgauge.errors import UsageError
from mlgauge.federated.bound import ConvergenceBound, sampling_factor
from mlgauge.federated.costs import ClientCosts, draw_client_costs, max_weights


def _costs() -> ClientCosts:
    return ClientCosts(compute_s=np.array([0.3, 0.1, 0.2, 0.05, 0.4, 0.1]), comm_s=np.array([1.0, 3.0, 2.0, 2.5, 0.2, 1.5]),
                       compute_j=np.array([1e-3, 2e-3, 1e-3, 5e-4, 3e-3, 1e-3]),
                       comm_j=np.array([0.02, 0.01, 0.03, 0.02, 0.05, 0.01]))  # fmt: skip


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_expected_round_time_and_energy_equal_the_average_over_every_subset(k):
    costs, es = _costs(), np.array([1, 4, 30])
    subsets = list(itertools.combinations(range(6), k))
    for j, e in enumerate(es):
        want_t = np.mean([costs.round_time(s, int(e)) for s in subsets])
        want_e = np.mean([costs.round_energy(s, int(e)) for s in subsets])
        assert costs.expected_round_time([k], es)[0, j] == pytest.approx(want_t, rel=1e-12)
        assert costs.expected_round_energy([k], es)[0, j] == pytest.approx(want_e, rel=1e-12)


def test_round_time_is_the_slowest_client_and_energy_the_sum():
    costs = _costs()
    assert costs.round_time([0, 4], 10) == pytest.approx(max(0.3 * 10 + 1.0, 0.4 * 10 + 0.2))
    assert costs.round_energy([0, 4], 10) == pytest.approx(1e-3 * 10 + 0.02 + 3e-3 * 10 + 0.05)


def test_order_statistic_weights_are_distributions_and_put_k_equal_n_on_the_slowest():
    w = max_weights(50, np.arange(1, 51))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-9)
    assert w[-1, -1] == pytest.approx(1.0) and w[0] == pytest.approx(np.full(50, 1 / 50))
    assert w[9, 8] == 0.0  # K = 10: the slowest of ten is at least the tenth fastest
    assert w[1, 4] == pytest.approx(4 / math.comb(50, 2))  # K = 2: (5th, one of the 4 faster)


def test_drawn_clients_are_reproducible_heterogeneous_and_positive():
    a, b = draw_client_costs(200, seed=3), draw_client_costs(200, seed=3)
    np.testing.assert_array_equal(a.comm_s, b.comm_s)
    assert not np.array_equal(a.comm_s, draw_client_costs(200, seed=4).comm_s)
    assert a.compute_s.mean() == pytest.approx(0.1, rel=0.1) and a.comm_j.mean() == pytest.approx(0.02, rel=0.1)
    assert a.comm_s.std() == pytest.approx(2.0 / 3, rel=0.2)
    assert min(arr.min() for arr in (a.compute_s, a.comm_s, a.compute_j, a.comm_j)) > 0
    slower = draw_client_costs(200, seed=3, means={"comm_s": 20.0})
    np.testing.assert_array_equal(slower.compute_s, a.compute_s)  # one override leaves the other draws alone
    np.testing.assert_allclose(slower.comm_s, a.comm_s * 10)


def test_costs_round_trip_through_a_dict():
    costs = _costs()
    again = ClientCosts.from_dict(costs.to_dict())
    np.testing.assert_array_equal(again.comm_j, costs.comm_j)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _costs().expected_round_time([7], [1]), "K = 7 clients per round, but there are 6"),
        (lambda: _costs().expected_round_energy([0], [1]), "K = 0"),
        (lambda: ClientCosts([0.1, -1], [1, 1], [1, 1], [1, 1]), "compute_s has a negative"),
        (lambda: ClientCosts([0.1], [1, 1], [1, 1], [1, 1]), "one value per client"),
        (lambda: ClientCosts.from_dict({"compute_s": [1]}), "lack comm_s"),
        (lambda: draw_client_costs(0), "0 clients"),
        (lambda: draw_client_costs(3, means={"latency": 1.0}), "unknown client cost 'latency'"),
        (lambda: ConvergenceBound(-1.0, 1.0, 5), "A0 = -1.0"),
        (lambda: ConvergenceBound(0.0, 0.0, 5), "one > 0"),
        (lambda: ConvergenceBound(1.0, 1.0, 5).rounds(2, 3, 0.0), "ε = 0.0"),
        (lambda: ConvergenceBound(1.0, 1.0, 5, solo=0.0), "K = 1 factor 0.0"),
    ],
)
def test_bad_inputs_are_usage_errors(make, message):
    with pytest.raises(UsageError, match=message):
        make()


def test_rounds_follow_the_formula():
    bound = ConvergenceBound(a0=4.0, b0=0.5, clients=11)
    s = 1 + (11 - 3) / (3 * 10)
    assert bound.rounds(3, 5, 0.1) == pytest.approx((4.0 + 0.5 * s * 25) / (0.1 * 5))
    assert sampling_factor(11, 11) == pytest.approx(1.0) and sampling_factor(11, 1) == pytest.approx(2.0)
    assert sampling_factor(1, 1) == pytest.approx(1.0)
    grid = bound.rounds(np.array([[1], [11]]), np.array([[1, 2, 3]]), 0.5)
    assert grid.shape == (2, 3) and (grid[0] > grid[1]).all()  # more clients per round, fewer rounds
    solo = ConvergenceBound(a0=4.0, b0=0.5, clients=11, solo=1.5)  # K = 1's own factor, nowhere else
    both = solo.rounds(np.array([[1], [2]]), np.array([[1, 4]]), 0.5) / bound.rounds(np.array([[1], [2]]), np.array([[1, 4]]), 0.5)
    assert both.ravel().tolist() == pytest.approx([1.5, 1.5, 1.0, 1.0])
