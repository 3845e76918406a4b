"""How many FedAvg rounds reach a loss within ε of the optimum, for K clients and E local iterations.

This is the model mlgauge plans with, derived (not quoted) from the FedAvg convergence theorem of
Li, Huang, Yang, Wang and Zhang (ICLR 2020, Theorem 3, K of N clients sampled uniformly without
replacement, step size η_t = 2 / (μ (γ + t)) with γ = max(8κ, E)). For a μ-strongly convex, L-smooth
objective with bounded gradients, after T = R·E local iterations the expected gap is at most

    κ / (γ + T - 1) · (2 (B + C) / μ + μ γ ‖w0 - w*‖² / 2),
    B = Σ p_k² σ_k² + 6 L Γ + 8 (E - 1)² G²,     C = 4 (N - K) / (K (N - 1)) · E² G².

Solving gap = ε for T and gathering the unknown constants (σ, Γ, G, L, μ, ‖w0 - w*‖) by the power of
E they multiply gives T·ε = A0 + A1·E + B0·E² + C0·q(K)·E², so the rounds needed are

    R(K, E) = (A0 + A1·E + B0·E² + C0·q(K)·E²) / (ε·E),      q(K) = (N - K) / (K (N - 1)):

- A0: what does not grow with E (initial distance, gradient noise, heterogeneity Γ);
- A1: what grows linearly (the offset γ = E once E > 8κ, and the cross term of 8(E - 1)²). It puts a
  floor of A1/ε under the rounds that more local work cannot remove;
- B0: local drift, 8(E - 1)²G², the same for every K;
- C0: the variance of sampling K of N without replacement; q(N) = 0.

The often-quoted two-constant form R = (A0 + B0·s(K)·E²)/(ε·E), s(K) = 1 + q(K), is the special
case A1 = 0, C0 = B0 (the default when only A0 and B0 are given). All four are >= 0 here, though
the theorem allows the cross term to make A1 negative: measured FedAvg needs a positive A1 (rounds
level off as E grows, before drift makes them climb). ε only scales R, so the best (K, E) depends
on the constants' ratios alone, which pilot runs at a looser target can measure.

K = 1 is outside the theorem's averaging: one client's model replaces the global one every round.
On non-IID data it needs more rounds than q(1) = 1 gives (about 1.3x at the pilots of every
federation measured here, and the gap grows toward the target), so R(1, E) carries a factor of its
own, ``solo``, which pilot runs at K = 1 calibrate (1 when none ran).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgauge.errors import UsageError


def sampling_variance(n: int, clients) -> np.ndarray:
    """q(K) = (N - K) / (K (N - 1)); 0 for a federation of one."""
    ks = np.asarray(clients, dtype=np.float64)
    if n == 1:
        return np.zeros_like(ks)
    return (n - ks) / (ks * (n - 1))


def sampling_factor(n: int, clients) -> np.ndarray:
    """s(K) = 1 + q(K)."""
    return 1.0 + sampling_variance(n, clients)


@dataclass(frozen=True)
class ConvergenceBound:
    """R(K, E) = (A0 + A1·E + B0·E² + C0·q(K)·E²) / (ε·E) rounds, for N clients, times ``solo`` at K = 1;
    C0 defaults to B0."""

    a0: float
    b0: float
    clients: int
    a1: float = 0.0
    c0: float | None = None
    solo: float = 1.0

    def __post_init__(self) -> None:
        if self.c0 is None:
            object.__setattr__(self, "c0", self.b0)
        values = {"A0": self.a0, "A1": self.a1, "B0": self.b0, "C0": self.c0}
        text = ", ".join(f"{k} = {v}" for k, v in values.items())
        if not all(np.isfinite(v) and v >= 0 for v in values.values()) or self.a0 + self.a1 + self.b0 + self.c0 == 0:
            raise UsageError(f"convergence constants {text}: all must be >= 0 and one > 0",
                             hint="Estimate them with pilot runs (mlgauge fl estimate)")  # fmt: skip
        if self.clients < 1:
            raise UsageError(f"{self.clients} clients: a federation needs at least one", hint="Give N >= 1")
        if not (np.isfinite(self.solo) and self.solo > 0):
            raise UsageError(f"K = 1 factor {self.solo}: it must be > 0", hint="Give 1 for the formula as it is")

    def rounds(self, clients, iterations, epsilon: float) -> np.ndarray:
        """Expected rounds to reach gap ``epsilon``, broadcast over ``clients`` and ``iterations``."""
        if not epsilon > 0:
            raise UsageError(f"target gap ε = {epsilon}: it must be > 0", hint="Give a positive loss gap")
        es = np.asarray(iterations, dtype=np.float64)
        drift = self.b0 + self.c0 * sampling_variance(self.clients, clients)
        solo = np.where(np.asarray(clients) == 1, self.solo, 1.0)
        return solo * (self.a0 + self.a1 * es + drift * es**2) / (epsilon * es)

    def to_dict(self) -> dict:
        return {"a0": self.a0, "a1": self.a1, "b0": self.b0, "c0": self.c0, "solo": self.solo, "clients": self.clients}
