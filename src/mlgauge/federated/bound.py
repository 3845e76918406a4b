"""How many FedAvg rounds reach a loss within ε of the optimum, for K clients and E local iterations.

This is the model mlgauge plans with, derived (not quoted) from the FedAvg convergence theorem of
Li, Huang, Yang, Wang and Zhang (ICLR 2020, Theorem 3, K of N clients sampled uniformly without
replacement). For a μ-strongly convex, L-smooth objective with bounded gradients, after T = R·E
local iterations the expected gap is O(1/T) times a numerator with two kinds of terms: ones that do
not depend on E (the initial distance, stochastic gradient noise, the clients' heterogeneity), and
ones that grow with E² (local drift, 8(E-1)²G², and the variance of sampling without replacement,
4(N-K)/(K(N-1))·E²G²). Gathering the unknown constants into A0 and B0:

    F(w_R) - F*  <=  (A0 + B0 · s(K) · E²) / (R · E),      s(K) = 1 + (N - K) / (K (N - 1))

so the rounds needed for a gap ε are

    R(K, E) = (A0 + B0 · s(K) · E²) / (ε · E).

Folding the drift term (E - 1)² into E² keeps one constant for both E² terms; the sampling term
is exact in K. s(N) = 1: with every client sampled only the drift remains. ε only scales R, so the
best (K, E) depends on A0 / B0 alone, which pilot runs at a loose target can measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgauge.errors import UsageError


def sampling_factor(n: int, clients) -> np.ndarray:
    """s(K) = 1 + (N - K) / (K (N - 1)); 1 for a federation of one."""
    ks = np.asarray(clients, dtype=np.float64)
    if n == 1:
        return np.ones_like(ks)
    return 1.0 + (n - ks) / (ks * (n - 1))


@dataclass(frozen=True)
class ConvergenceBound:
    """R(K, E) = (A0 + B0 · s(K) · E²) / (ε · E) rounds, for N clients."""

    a0: float
    b0: float
    clients: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.a0) and np.isfinite(self.b0)) or self.a0 < 0 or self.b0 < 0 or self.a0 + self.b0 == 0:
            raise UsageError(f"convergence constants A0 = {self.a0}, B0 = {self.b0}: both must be >= 0 and one > 0",
                             hint="Estimate them with pilot runs (mlgauge fl estimate)")  # fmt: skip
        if self.clients < 1:
            raise UsageError(f"{self.clients} clients: a federation needs at least one", hint="Give N >= 1")

    def rounds(self, clients, iterations, epsilon: float) -> np.ndarray:
        """Expected rounds to reach gap ``epsilon``, broadcast over ``clients`` and ``iterations``."""
        if not epsilon > 0:
            raise UsageError(f"target gap ε = {epsilon}: it must be > 0", hint="Give a positive loss gap")
        es = np.asarray(iterations, dtype=np.float64)
        return (self.a0 + self.b0 * sampling_factor(self.clients, clients) * es**2) / (epsilon * es)

    def to_dict(self) -> dict:
        return {"a0": self.a0, "b0": self.b0, "clients": self.clients}
