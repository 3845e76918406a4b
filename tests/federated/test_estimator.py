"""The estimator: constants recovered from rounds the model itself predicts, and pilots on the simulator."""

from __future__ import annotations

import pytest

from mlgauge.data.federated import digits_clients
from mlgauge.errors import UsageError
from mlgauge.federated.bound import ConvergenceBound
from mlgauge.federated.costs import draw_client_costs
from mlgauge.federated.estimator import estimate, fit_bound, pilot_settings
from mlgauge.federated.fedavg import FedAvgSimulator, Round, Trace


def _trace(k: int, e: int, rounds: int, reached: bool = True) -> Trace:
    target = 0.5
    trace = Trace(k, e, target, 2.0)
    for r in range(1, rounds + 1):
        trace.rounds.append(Round(r, tuple(range(k)), target if (reached and r == rounds) else 1.0, 1.0, 0.1))
    return trace


def test_constants_come_back_from_rounds_the_model_predicts():
    truth = ConvergenceBound(a0=40.0, b0=0.2, clients=20, a1=8.0, c0=1.5)
    gap = 0.01  # hundreds of rounds: rounding R to whole rounds barely moves the fit
    pilots = [_trace(k, e, int(round(float(truth.rounds(k, e, gap))))) for k, e in pilot_settings(20)]
    fitted, residual = fit_bound(pilots, 20, gap)
    for name in ("a0", "a1", "b0", "c0"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=0.05), name
    assert residual < 0.01


def test_pilots_at_k1_scale_the_formula_at_k1_alone():
    from dataclasses import replace

    gap, pairs = 0.01, [*pilot_settings(20), (1, 10)]
    for solo in (1.0, 1.4):
        truth = ConvergenceBound(a0=40.0, b0=0.2, clients=20, a1=8.0, c0=1.5, solo=solo)
        pilots = [_trace(k, e, int(round(float(truth.rounds(k, e, gap))))) for k, e in pairs]
        fitted, _ = fit_bound(pilots, 20, gap)
        assert fitted.solo == pytest.approx(solo, abs=0.02) if solo == 1.0 else fitted.solo > 1.15
        solo_pilots = [p for p in pilots if p.clients_per_round == 1]
        assert sum(float(fitted.rounds(1, p.iterations, gap)) for p in solo_pilots) == \
            pytest.approx(sum(len(p.rounds) for p in solo_pilots))  # fmt: skip
        plain = replace(fitted, solo=1.0)  # every other K keeps the formula as fitted
        assert fitted.rounds(2, 7, gap) == plain.rounds(2, 7, gap) and fitted.rounds(1, 7, gap) > 0


def test_the_two_constant_form_is_recovered_as_c0_equal_to_b0():
    truth = ConvergenceBound(a0=40.0, b0=0.3, clients=20)
    pairs = [*pilot_settings(20), (5, 10)]
    fitted, residual = fit_bound([_trace(k, e, int(round(float(truth.rounds(k, e, 0.01))))) for k, e in pairs], 20, 0.01)
    assert fitted.a1 == pytest.approx(0.0, abs=0.5) and fitted.c0 == pytest.approx(fitted.b0, rel=0.1)
    assert residual < 0.01


def test_pilot_settings_vary_e_and_k():
    pairs = pilot_settings(20)
    assert pairs == [(2, 1), (2, 5), (2, 20), (1, 5), (20, 5)]  # K = 1 and N bracket every K's q(K)
    assert pilot_settings(8) == [(1, 1), (1, 5), (1, 20), (8, 5)]
    assert pilot_settings(1) == [(1, 1), (1, 5), (1, 20)]


def test_pilots_that_miss_are_left_out_and_too_few_are_refused():
    good = [_trace(2, 1, 50), _trace(2, 8, 20), _trace(2, 20, 15)]
    fitted, _ = fit_bound([*good, _trace(20, 8, 200, reached=False)], 20, 0.2)
    assert fitted.a0 > 0
    with pytest.raises(UsageError, match="1 of 2 pilot runs reached"):
        fit_bound([good[0], _trace(2, 8, 9, reached=False)], 20, 0.2)


def test_pilots_on_the_simulator_give_a_usable_bound():
    data = digits_clients(10)
    sim = FedAvgSimulator(data, "logistic", draw_client_costs(10), lr=0.5)
    result = estimate(lambda k, e, target, rounds, seed: sim.run(k, e, target=target, max_rounds=rounds, seed=seed),
                      10, optimum=sim.optimum(), gap=0.5, settings=[(1, 1), (1, 4), (10, 4)], max_rounds=150)  # fmt: skip
    assert result.bound.a0 + result.bound.a1 + result.bound.b0 > 0 and len(result.pilots) == 3
    assert result.spent(0) == pytest.approx(sum(p.time_s for p in result.pilots))
    assert result.to_dict()["pilots"][0]["clients"] == 1
    for pilot, row in zip(result.pilots, result.to_dict()["pilots"], strict=True):  # the fit beside each measurement
        assert row["fitted_rounds"] == pytest.approx(float(result.bound.rounds(pilot.clients_per_round,
                                                                               pilot.iterations, 0.5)))  # fmt: skip
    misfits = [result.fitted_rounds(p) / len(p.rounds) - 1 for p in result.pilots if p.reached]
    assert (sum(m * m for m in misfits) / len(misfits)) ** 0.5 == pytest.approx(result.residual, rel=1e-6)
    with pytest.raises(UsageError, match="pilot gap"):
        estimate(lambda *a: None, 10, optimum=0.0, gap=0.0)
