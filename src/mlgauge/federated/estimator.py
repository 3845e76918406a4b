"""Learn the convergence constants from a few short pilot runs, then plan.

The bound's constants (gradient noise, heterogeneity, smoothness) are unknown for real data, but
the model says how rounds depend on them: a run with K clients and E iterations that first reaches
a gap ε' after R rounds gives one linear equation

    R · ε' · E = A0 + A1·E + B0·E² + C0·q(K)·E².

Pilot runs at a looser target ε' at (K, E) pairs that vary E at a small K and K over its range at one E determine
the four constants by non-negative least squares on relative errors (a pilot of 10 rounds counts as
much as one of 200). Because ε only scales R in the model, constants fitted at ε' serve the real
target ε; on measured FedAvg the drift terms weigh more near the optimum, so ε' should not be far
from ε (the default is 2ε). A pilot that misses ε' within its round limit is reported and left out
of the fit. What the pilots spent is reported with the estimate: the sampling is not free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

from mlgauge.errors import UsageError
from mlgauge.federated.bound import ConvergenceBound, sampling_variance
from mlgauge.federated.fedavg import Trace

# run(K, E, target_loss, max_rounds, seed) -> Trace: the simulator, or a deployment.
PilotRunner = Callable[[int, int, float, int, int], Trace]


@dataclass(frozen=True)
class Estimate:
    bound: ConvergenceBound
    pilots: tuple[Trace, ...]
    gap: float  # ε' the pilots ran to
    optimum: float  # F* the gaps are measured from
    residual: float  # relative RMS misfit of R·ε'·E over the pilots that reached ε'

    def spent(self, gamma: float) -> float:
        return float(sum(p.cost(gamma) for p in self.pilots))

    def fitted_rounds(self, pilot: Trace) -> float:
        """The rounds the fitted bound gives ``pilot``'s (K, E) at the pilots' gap: set beside the
        measured ones, it shows where the model is off (e.g. K = 1), which the misfit alone hides."""
        return float(self.bound.rounds(pilot.clients_per_round, pilot.iterations, self.gap))

    def to_dict(self) -> dict:
        return {"bound": self.bound.to_dict(), "gap": self.gap, "optimum": self.optimum, "residual": self.residual,
                "pilots": [{"clients": p.clients_per_round, "iterations": p.iterations, "rounds": len(p.rounds),
                            "fitted_rounds": self.fitted_rounds(p), "reached": p.reached, "time_s": p.time_s,
                            "energy_j": p.energy_j} for p in self.pilots]}  # fmt: skip


def pilot_settings(clients: int, iterations: Sequence[int] = (1, 5, 20)) -> list[tuple[int, int]]:
    """(K, E) pairs that separate the constants: E from ``iterations`` at K = N/10, and K = 1 and K = N
    at the middle E.

    A0 shows at small E (R·E ≈ A0), A1 in the middle, the E² terms at large E. K = 1 (q = 1) and
    K = N (q = 0) bracket the sampling factor, so every other K the planner weighs is interpolated
    between pilots rather than extrapolated from them; they separate drift (B0) from sampling
    variance (C0).
    """
    small = max(1, round(clients / 10))
    middle = sorted(iterations)[len(iterations) // 2]
    pairs = [(small, e) for e in iterations]
    for k in (1, clients):
        if (k, middle) not in pairs:
            pairs.append((k, middle))
    return pairs


def fit_bound(traces: Sequence[Trace], clients: int, gap: float) -> tuple[ConvergenceBound, float]:
    """The constants from the pilots that reached their target, with the fit's relative RMS residual."""
    reached = [t for t in traces if t.reached]
    shapes = {(t.clients_per_round, t.iterations) for t in reached}
    if len(shapes) < 2:
        raise UsageError(f"{len(reached)} of {len(traces)} pilot runs reached the loose target at {len(shapes)} "
                         "(K, E) settings; the fit needs two",
                         hint="Loosen the pilot target (--pilot-gap) or allow more pilot rounds")  # fmt: skip
    e = np.array([t.iterations for t in reached], dtype=np.float64)
    q = sampling_variance(clients, [t.clients_per_round for t in reached])
    measured = np.array([len(t.rounds) for t in reached], dtype=np.float64)
    lhs = measured * gap * e
    design = np.stack([np.ones_like(e), e, e**2, q * e**2], axis=1)
    constants, _ = nnls(design / lhs[:, None], np.ones_like(lhs))
    if not constants.any():
        raise UsageError("the pilot runs fit every constant to 0", hint="Run pilots at more (K, E) settings")
    a0, a1, b0, c0 = (float(c) for c in constants)
    bound = ConvergenceBound(a0, b0, clients, a1=a1, c0=c0)
    fitted = design @ constants / (gap * e)  # the formula's rounds at each pilot
    # K = 1 is the one setting without averaging, which the formula misjudges: its own pilots scale it
    # (unless they are all the formula was fitted to).
    solo = np.array([t.clients_per_round == 1 for t in reached])
    if solo.any() and not solo.all():
        bound = replace(bound, solo=float(measured[solo].sum() / fitted[solo].sum()))
        fitted[solo] *= bound.solo
    return bound, float(np.sqrt(np.mean((fitted / measured - 1.0) ** 2)))


def estimate(run: PilotRunner, clients: int, *, optimum: float, gap: float,
             settings: Sequence[tuple[int, int]] | None = None, seeds: Sequence[int] = (0,),
             max_rounds: int = 200) -> Estimate:  # fmt: skip
    """Pilot FedAvg at ``settings`` (default ``pilot_settings``) to F* + ``gap``, and fit the constants."""
    if not gap > 0:
        raise UsageError(f"pilot gap ε' = {gap}: it must be > 0", hint="Give a loose positive loss gap")
    pairs = list(settings) if settings is not None else pilot_settings(clients)
    traces = tuple(run(k, e, optimum + gap, max_rounds, seed) for k, e in pairs for seed in seeds)
    bound, residual = fit_bound(traces, clients, gap)
    return Estimate(bound, traces, float(gap), float(optimum), residual)
