"""FedAvg, simulated in one process: real training, simulated clocks and meters.

Each round samples K of the N clients uniformly without replacement; each sampled client starts from
the global model and takes E minibatch SGD steps on its own data; the server averages the K models
weighted by the clients' example counts (what Flower's FedAvg does). All K clients train at once
(``torch.func.vmap`` over stacked copies of the model), so a run costs about what one client's
training does. The round's time and energy come from ``ClientCosts``, the system model, not from
this machine's clock: the simulator shows what a federation of such devices would spend.

The objective is the global training loss F(w) = Σ_k n_k F_k(w) / n (cross-entropy plus an L2
term), measured after every round on every example. For the convex logistic model its optimum F*
is computed centrally (L-BFGS), so a target can be a gap ε = F - F*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from mlgauge.data.federated import ClientData
from mlgauge.errors import UsageError
from mlgauge.federated.costs import ClientCosts
from mlgauge.federated.models import build_model


@dataclass(frozen=True)
class Round:
    number: int  # 1-based
    clients: tuple[int, ...]  # the sampled clients that reported
    loss: float  # global training loss after aggregation
    time_s: float
    energy_j: float


@dataclass
class Trace:
    """One FedAvg run: the loss and the cost of every round, until the target or the round limit."""

    clients_per_round: int
    iterations: int
    target: float  # the loss the run stops at
    initial_loss: float
    rounds: list[Round] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        return bool(self.rounds) and self.rounds[-1].loss <= self.target

    @property
    def time_s(self) -> float:
        return float(sum(r.time_s for r in self.rounds))

    @property
    def energy_j(self) -> float:
        return float(sum(r.energy_j for r in self.rounds))

    def cost(self, gamma: float) -> float:
        # A weight of zero drops its term: a deployment without a meter has NaN joules but a time cost.
        time = (1.0 - gamma) * self.time_s if gamma < 1 else 0.0
        return time + gamma * self.energy_j if gamma > 0 else time

    def costed(self, costs: ClientCosts) -> Trace:
        """The same rounds on clients with other ``costs``: which clients were sampled and how many
        rounds the loss needed do not depend on what the clients cost."""
        e = self.iterations
        rounds = [replace(r, time_s=costs.round_time(r.clients, e), energy_j=costs.round_energy(r.clients, e))
                  for r in self.rounds]  # fmt: skip
        return replace(self, rounds=rounds)

    def recost(self, costs: ClientCosts) -> tuple[float, float]:
        """(seconds, joules) the same rounds would take on clients with other ``costs``."""
        again = self.costed(costs)
        return again.time_s, again.energy_j

    def to_dict(self) -> dict:
        return {"clients_per_round": self.clients_per_round, "iterations": self.iterations, "target": self.target,
                "reached": self.reached, "rounds": len(self.rounds), "time_s": self.time_s,
                "energy_j": self.energy_j, "initial_loss": self.initial_loss,
                "loss": [r.loss for r in self.rounds]}  # fmt: skip


def objective(model: torch.nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """What every client minimizes: cross-entropy plus 0.5 · weight decay · ||w||² (strongly convex for logistic)."""
    logits = functional_call(model, params, (x,))
    penalty = sum((p * p).sum() for p in params.values())
    return torch.nn.functional.cross_entropy(logits, y) + 0.5 * weight_decay * penalty


def step_size(lr: float, decay_steps: float, step: int) -> float:
    """The SGD step size at global local-step ``step`` (0-based, counting every client's local steps
    across rounds: round r's i-th step is (r - 1)·E + i). Constant when ``decay_steps`` is 0;
    otherwise lr · τ / (τ + step), the O(1/t) schedule Li et al.'s FedAvg theorem assumes (their
    η_t = 2 / (μ(γ + t))), which removes the floor a constant step leaves at small K."""
    return lr if decay_steps == 0 else lr * decay_steps / (decay_steps + step)


def check_plan_shape(clients: int, iterations: int, n: int) -> None:
    if not 1 <= clients <= n:
        raise UsageError(f"K = {clients} clients per round, but there are {n} clients", hint=f"Choose K between 1 and {n}")
    if iterations < 1:
        raise UsageError(f"E = {iterations} local iterations per round", hint="Choose E >= 1")


class FedAvgSimulator:
    """FedAvg over ``data`` with the ``model`` ("logistic" or "cnn") and the clients' ``costs``."""

    def __init__(self, data: ClientData, model: str, costs: ClientCosts, *, lr: float = 0.05, batch: int = 16,
                 weight_decay: float = 1e-3, seed: int = 0, lr_decay: float = 0.0) -> None:  # fmt: skip
        if costs.clients != data.clients:
            raise UsageError(f"{costs.clients} clients' costs for {data.clients} clients' data",
                             hint="Draw one cost per client")  # fmt: skip
        if lr <= 0 or batch < 1 or weight_decay < 0 or lr_decay < 0:
            raise UsageError(f"lr {lr}, batch {batch}, weight decay {weight_decay}, lr decay {lr_decay}",
                             hint="Use lr > 0, batch >= 1, weight decay >= 0, lr decay >= 0 steps")  # fmt: skip
        self.lr_decay = float(lr_decay)
        self.data, self.costs, self.model_name = data, costs, model
        self.lr, self.batch, self.weight_decay, self.seed = float(lr), int(batch), float(weight_decay), int(seed)
        self.model = build_model(model, data.features.shape[1], data.classes, data.image_shape, seed)
        self.x = torch.from_numpy(data.features)
        self.y = torch.from_numpy(data.labels)
        self.starts = data.starts[:-1]
        self.sizes = data.sizes()
        self._initial = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        self._step_grads = vmap(grad(self._objective), in_dims=(0, 0, 0))
        self._optimum: float | None = None

    def _objective(self, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return objective(self.model, params, x, y, self.weight_decay)

    def loss(self, params: dict) -> float:
        """F(w) over every client's examples."""
        with torch.no_grad():
            return float(self._objective(params, self.x, self.y))

    def optimum(self) -> float:
        """F*: central L-BFGS for the convex logistic model; 0 (cross-entropy's floor) for the CNN."""
        if self._optimum is None:
            self._optimum = self._solve_centrally() if self.model_name == "logistic" else 0.0
        return self._optimum

    def _solve_centrally(self) -> float:
        params = {k: v.clone().requires_grad_(True) for k, v in self._initial.items()}
        opt = torch.optim.LBFGS(list(params.values()), lr=1.0, max_iter=500, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=50, line_search_fn="strong_wolfe")  # fmt: skip

        def closure():
            opt.zero_grad()
            value = self._objective(params, self.x, self.y)
            value.backward()
            return value

        for _ in range(4):
            opt.step(closure)
        return self.loss({k: v.detach() for k, v in params.items()})

    def run(self, clients: int, iterations: int, *, target: float, max_rounds: int = 500, seed: int = 0,
            on_round: Callable[[Round], None] | None = None) -> Trace:  # fmt: skip
        """FedAvg with K = ``clients`` and E = ``iterations`` until the loss is <= ``target``."""
        check_plan_shape(clients, iterations, self.data.clients)
        rng = np.random.default_rng((self.seed, seed, clients, iterations))
        params = self.initial_params()
        trace = Trace(clients, iterations, float(target), self.loss(params))
        for number in range(1, max_rounds + 1):
            sampled = np.sort(rng.choice(self.data.clients, clients, replace=False))
            params = self.fedavg_round(params, sampled, iterations, rng, first_step=(number - 1) * iterations)
            done = Round(number, tuple(int(k) for k in sampled), self.loss(params),
                         self.costs.round_time(sampled, iterations), self.costs.round_energy(sampled, iterations))  # fmt: skip
            trace.rounds.append(done)
            if on_round is not None:
                on_round(done)
            if not np.isfinite(done.loss) or done.loss <= target:
                break
        return trace

    def initial_params(self) -> dict:
        return {k: v.clone() for k, v in self._initial.items()}

    def fedavg_round(self, params: dict, sampled: np.ndarray, iterations: int, rng: np.random.Generator,
                     first_step: int = 0) -> dict:  # fmt: skip
        """The next global model: ``sampled`` clients train ``iterations`` steps from ``params``, then average.
        Each step draws each client's minibatch uniformly from its own examples."""
        k = len(sampled)
        local = {name: p.unsqueeze(0).repeat(k, *([1] * p.dim())) for name, p in params.items()}  # (K, ...)
        starts = self.starts[sampled][:, None]
        sizes = self.sizes[sampled][:, None]
        for i in range(iterations):
            rows = torch.from_numpy(starts + (rng.random((k, self.batch)) * sizes).astype(np.int64))  # (K, b)
            grads = self._step_grads(local, self.x[rows], self.y[rows])
            lr = step_size(self.lr, self.lr_decay, first_step + i)
            with torch.no_grad():
                for name in local:
                    local[name] -= lr * grads[name]
        weights = torch.from_numpy(self.sizes[sampled] / self.sizes[sampled].sum()).to(torch.float32)  # (K,)
        return {name: torch.tensordot(weights, p, dims=1) for name, p in local.items()}
