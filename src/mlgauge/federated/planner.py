"""The cost-optimal (K, E): clients per round and local iterations per round.

    minimize over K in 1..N, E >= 1:   R(K, E) · [(1 - γ) · E[round time] + γ · E[round energy]]

with R from ``bound`` and the expectations from ``costs``; γ weighs a joule against a second
(γ = 0: time only, γ = 1: energy only). The search is exhaustive over the integers, so the plan is
the exact minimizer of the model. K has N values. E is unbounded, but not its useful range: the
per-round cost is smallest at K = 1, where it is c_1(E) = p·E + q (p, q: the clients' mean
per-iteration and per-round costs, weighted by γ), and q(K) >= 0, so every (K, E) costs at least

    L(E) = (A0 + A1·E + B0·E²)(p·E + q) / (ε·E)  >=  p·(A0 + A1·E + B0·E²) / ε.

Any E with p·(A0 + A1·E + B0·E²) > best·ε loses to the best cost found so far. The planner first
searches E <= 256, then as far as that bound requires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlgauge.errors import UsageError
from mlgauge.federated.bound import ConvergenceBound
from mlgauge.federated.costs import ClientCosts

_FIRST_WINDOW = 256
_MAX_SURFACE = 20_000_000  # (K, E) cells evaluated at most; about 0.5 GB of float64 across the surfaces


@dataclass(frozen=True)
class CostSurface:
    """The model's prediction on the integer grid: row i is K = clients[i], column j is E = iterations[j]."""

    clients: np.ndarray  # (nK,)
    iterations: np.ndarray  # (nE,)
    rounds: np.ndarray  # (nK, nE)
    time_s: np.ndarray  # (nK, nE) expected total seconds
    energy_j: np.ndarray  # (nK, nE) expected total joules
    cost: np.ndarray  # (nK, nE)


@dataclass(frozen=True)
class Plan:
    clients: int  # K*
    iterations: int  # E*
    rounds: float  # expected rounds to the target
    time_s: float  # expected total seconds
    energy_j: float  # expected total joules
    cost: float  # (1 - γ) · time + γ · energy
    gamma: float
    epsilon: float
    surface: CostSurface

    def to_dict(self) -> dict:
        keys = ("clients", "iterations", "rounds", "time_s", "energy_j", "cost", "gamma", "epsilon")
        return {k: getattr(self, k) for k in keys}


def check_gamma(gamma: float) -> float:
    if not 0.0 <= gamma <= 1.0:
        raise UsageError(f"γ = {gamma} is outside [0, 1]", hint="γ weighs energy against time: 0 time only, 1 energy only")
    return float(gamma)


def surface(costs: ClientCosts, bound: ConvergenceBound, *, gamma: float, epsilon: float,
            clients: np.ndarray, iterations: np.ndarray) -> CostSurface:  # fmt: skip
    """The expected totals for every K in ``clients`` and E in ``iterations``."""
    gamma = check_gamma(gamma)
    ks, es = np.asarray(clients, dtype=np.int64), np.asarray(iterations, dtype=np.int64)
    if (es < 1).any():
        raise UsageError(f"E = {int(es[es < 1][0])} local iterations per round", hint="Choose E >= 1")
    rounds = bound.rounds(ks[:, None], es[None, :], epsilon)
    time_s = rounds * costs.expected_round_time(ks, es)
    energy_j = rounds * costs.expected_round_energy(ks, es)
    return CostSurface(ks, es, rounds, time_s, energy_j, (1.0 - gamma) * time_s + gamma * energy_j)


def plan(costs: ClientCosts, bound: ConvergenceBound, *, gamma: float, epsilon: float,
         max_iterations: int | None = None) -> Plan:  # fmt: skip
    """The exact minimizer of the expected total cost over K in 1..N and E in 1..max_iterations."""
    if bound.clients != costs.clients:
        raise UsageError(f"the bound is for {bound.clients} clients but the costs describe {costs.clients}",
                         hint="Estimate the bound on the same federation")  # fmt: skip
    if max_iterations is not None and max_iterations < 1:
        raise UsageError(f"E <= {max_iterations}: no local iteration count is allowed", hint="Give a limit >= 1")
    if max_iterations is None and bound.b0 == 0 and bound.a1 == 0:
        raise UsageError("with A1 = B0 = 0 the model rewards ever more local iterations",
                         hint="Give a limit on E (--max-iterations)")  # fmt: skip
    ks = np.arange(1, costs.clients + 1)
    limit = _FIRST_WINDOW if max_iterations is None else min(_FIRST_WINDOW, max_iterations)
    grid = surface(costs, bound, gamma=gamma, epsilon=epsilon, clients=ks, iterations=np.arange(1, limit + 1))
    if max_iterations is None or max_iterations > limit:
        needed = _iterations_bound(costs, bound, gamma, epsilon, float(grid.cost.min()))
        wanted = needed if max_iterations is None else min(needed, max_iterations)
        if wanted > limit:
            if wanted * ks.size > _MAX_SURFACE:
                raise UsageError(f"the plan would search E up to {wanted:,} for {ks.size} clients",
                                 hint="Give a limit on E (--max-iterations)")  # fmt: skip
            grid = surface(costs, bound, gamma=gamma, epsilon=epsilon, clients=ks, iterations=np.arange(1, wanted + 1))
    i, j = np.unravel_index(int(np.argmin(grid.cost)), grid.cost.shape)
    return Plan(int(grid.clients[i]), int(grid.iterations[j]), float(grid.rounds[i, j]), float(grid.time_s[i, j]),
                float(grid.energy_j[i, j]), float(grid.cost[i, j]), gamma, float(epsilon), grid)  # fmt: skip


def _iterations_bound(costs: ClientCosts, bound: ConvergenceBound, gamma: float, epsilon: float, best: float) -> int:
    """The largest E whose cost can still be <= ``best``, from the lower bound L(E) above."""
    # K = 1's factor, where it is below 1, lowers the least rounds any (K, E) can need.
    shrink = min(1.0, bound.solo)
    p = shrink * ((1.0 - gamma) * costs.compute_s.mean() + gamma * costs.compute_j.mean())
    q = shrink * ((1.0 - gamma) * costs.comm_s.mean() + gamma * costs.comm_j.mean())
    if p > 0:  # the largest root of B0·E² + A1·E + A0 - best·ε/p = 0
        a, b, c = bound.b0, bound.a1, bound.a0 - best * epsilon / p
        if a > 0:
            return max(1, math.floor((-b + math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a)))
        if b > 0:
            return max(1, math.floor(-c / b))
        return _FIRST_WINDOW
    if q > 0 and bound.b0 > 0:  # no per-iteration cost: L(E) >= B0·q·E / ε
        return max(1, math.floor(best * epsilon / (bound.b0 * q)))
    return _FIRST_WINDOW  # E costs nothing, or the model cannot tell large E apart
