"""What a federated round costs: per-client time and energy, and their expectations under sampling.

The system model (Luo et al., "Cost-Effective Federated Learning Design", INFOCOM 2021, eqs. 5-6):
client k spends

    t_k = t_k,p · E + t_k,m   seconds,   e_k = e_k,p · E + e_k,m   joules

in a round of E local iterations: computation per iteration plus one model download and upload.
The costs differ between clients and stay the same from round to round. K clients are sampled
uniformly without replacement; a synchronous round lasts as long as its slowest sampled client and
uses the energy of all of them. With the round times sorted, t_(1) <= ... <= t_(N), the slowest
of a uniform K-subset is t_(i) exactly when the subset holds client (i) and K - 1 of the i - 1
faster ones, so

    E[round time]   = Σ_{i=K..N} C(i-1, K-1) / C(N, K) · t_(i)
    E[round energy] = (K / N) · Σ_k e_k.

Both are exact for the model; ``expected_round_time`` computes them for every (K, E) at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from mlgauge.errors import UsageError

# Luo et al.'s simulation defaults: Normal with these means and std = mean / 3.
DEFAULT_MEANS = {"compute_s": 0.1, "comm_s": 2.0, "compute_j": 1e-3, "comm_j": 2e-2}
DEFAULT_RELATIVE_STD = 1.0 / 3.0
_FLOOR = 0.01  # a draw below 1% of its mean is clipped there: a Normal with std mean/3 goes negative 0.1% of the time


@dataclass(frozen=True)
class ClientCosts:
    """Per-client costs, each an (N,) array: seconds and joules per local iteration and per round's exchange."""

    compute_s: np.ndarray  # t_k,p
    comm_s: np.ndarray  # t_k,m
    compute_j: np.ndarray  # e_k,p
    comm_j: np.ndarray  # e_k,m

    def __post_init__(self) -> None:
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float64) for name in DEFAULT_MEANS}
        sizes = {a.shape for a in arrays.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1 or next(iter(sizes))[0] < 1:
            raise UsageError("client costs need one value per client in each of the four arrays",
                             hint="Give compute_s, comm_s, compute_j and comm_j as equal-length lists")  # fmt: skip
        for name, values in arrays.items():
            if not np.isfinite(values).all() or (values < 0).any():
                raise UsageError(f"client costs: {name} has a negative or non-finite value",
                                 hint="Costs are seconds and joules, >= 0")  # fmt: skip
            object.__setattr__(self, name, values)

    @property
    def clients(self) -> int:
        return int(self.compute_s.shape[0])

    def round_time(self, sampled: Sequence[int], iterations: int) -> float:
        """Seconds of one round: its slowest sampled client."""
        idx = np.asarray(sampled, dtype=np.int64)
        return float(np.max(self.compute_s[idx] * iterations + self.comm_s[idx]))

    def round_energy(self, sampled: Sequence[int], iterations: int) -> float:
        """Joules of one round: all its sampled clients."""
        idx = np.asarray(sampled, dtype=np.int64)
        return float(np.sum(self.compute_j[idx] * iterations + self.comm_j[idx]))

    def expected_round_time(self, clients: np.ndarray, iterations: np.ndarray) -> np.ndarray:
        """(len(clients), len(iterations)) expected round seconds, by the order statistic above."""
        ks, es = _domain(clients, self.clients), np.asarray(iterations, dtype=np.float64)
        times = np.sort(self.compute_s[:, None] * es[None, :] + self.comm_s[:, None], axis=0)  # (N, nE)
        return max_weights(self.clients, ks) @ times

    def expected_round_energy(self, clients: np.ndarray, iterations: np.ndarray) -> np.ndarray:
        """(len(clients), len(iterations)) expected round joules."""
        ks, es = _domain(clients, self.clients), np.asarray(iterations, dtype=np.float64)
        mean_energy = self.compute_j.mean() * es + self.comm_j.mean()  # (nE,)
        return ks[:, None].astype(np.float64) * mean_energy[None, :]

    def to_dict(self) -> dict:
        return {name: getattr(self, name).tolist() for name in DEFAULT_MEANS}

    @classmethod
    def from_dict(cls, data: dict, *, time_only: bool = False) -> ClientCosts:
        """Costs from lists; ``null`` marks a value nobody measured. ``time_only`` (a plan with γ = 0,
        which never weighs energy) takes unmeasured energy as zero."""
        energy = ("compute_j", "comm_j")
        missing = [name for name in DEFAULT_MEANS if name not in data and not (time_only and name in energy)]
        if missing:
            raise UsageError(f"client costs lack {', '.join(missing)}", hint=f"Give all of {', '.join(DEFAULT_MEANS)}")
        n = len(data["compute_s"]) if isinstance(data["compute_s"], list) else 0
        arrays = {}
        for name in DEFAULT_MEANS:
            values = data.get(name, [None] * n)
            if not isinstance(values, list):
                raise UsageError(f"client costs: {name} is not a list", hint="Give one value per client")
            unmeasured = [i for i, v in enumerate(values) if v is None]
            if unmeasured and time_only and name in energy:
                values = [0.0 if v is None else v for v in values]
            elif unmeasured:
                which = ", ".join(str(i) for i in unmeasured[:5]) + (", ..." if len(unmeasured) > 5 else "")
                hint = ("Plan time only (--gamma 0), or fill in the joules from a meter" if name in energy else
                        "Deploy for more rounds, so that every client is sampled at least once")  # fmt: skip
                raise UsageError(f"client costs: {name} was not measured for client(s) {which}", hint=hint)
            arrays[name] = np.asarray(values, dtype=np.float64)
        return cls(**arrays)


def max_weights(n: int, clients: np.ndarray) -> np.ndarray:
    """(len(clients), n): row K holds P(the slowest of a uniform K-of-n sample is the i-th fastest)."""
    ks = _domain(clients, n)[:, None].astype(np.float64)
    i = np.arange(1, n + 1, dtype=np.float64)[None, :]
    log_choose = lambda a, b: gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)  # noqa: E731
    with np.errstate(invalid="ignore"):
        logs = log_choose(i - 1, ks - 1) - log_choose(float(n), ks)
    return np.where(i >= ks, np.exp(np.where(i >= ks, logs, 0.0)), 0.0)


def _domain(clients, n: int) -> np.ndarray:
    ks = np.atleast_1d(np.asarray(clients, dtype=np.int64))
    if (ks < 1).any() or (ks > n).any():
        raise UsageError(f"K = {int(ks[(ks < 1) | (ks > n)][0])} clients per round, but there are {n} clients",
                         hint=f"Choose K between 1 and {n}")  # fmt: skip
    return ks


def draw_client_costs(clients: int, *, means: dict[str, float] | None = None,
                      relative_std: float = DEFAULT_RELATIVE_STD, seed: int = 0) -> ClientCosts:  # fmt: skip
    """Heterogeneous clients: each cost ~ Normal(mean, relative_std · mean), drawn once per client."""
    if clients < 1:
        raise UsageError(f"{clients} clients: a federation needs at least one", hint="Give N >= 1")
    chosen = {**DEFAULT_MEANS, **(means or {})}
    unknown = sorted(set(chosen) - set(DEFAULT_MEANS))
    if unknown:
        raise UsageError(f"unknown client cost {unknown[0]!r}", hint=f"One of {', '.join(DEFAULT_MEANS)}")
    rng = np.random.default_rng(seed)
    drawn = {}
    for name in DEFAULT_MEANS:  # fixed order: the same seed gives the same clients whatever was overridden
        mean = float(chosen[name])
        if mean < 0:
            raise UsageError(f"client cost {name} has mean {mean}", hint="Costs are seconds and joules, >= 0")
        drawn[name] = np.maximum(rng.normal(mean, relative_std * mean, clients), _FLOOR * mean)
    return ClientCosts(**drawn)
