"""Cost-optimal federated learning: does the planned (K, E) reach the target loss as cheaply as the
best setting an exhaustive search finds, and more cheaply than the common fixed settings?

On the FedAvg simulator (``mlgauge.federated.fedavg``: real training, the clients' time and energy
from the cost model with Luo et al.'s defaults):

1. pilot runs at a loose gap fit the bound's constants A0, B0 (``estimator``), and their cost is reported;
2. for each γ, the planner picks (K*, E*) for the target gap, and FedAvg runs it to the target;
3. every (K, E) of the grid runs to the same target: the best measured cost per γ;
4. the fixed settings K = 10% of N with E in {1, 5, 20};
5. the plan and the grid's best again on fresh seeds (``--holdout-seeds``): the best of a few hundred
   noisy means is partly luck, and fresh seeds show how much.

Each setting runs ``--seeds`` times and its cost is the mean over them (a setting that misses the
target within ``--max-rounds`` in any seed costs infinity). The rounds a run needs and the clients it
samples do not depend on what the clients cost, so one set of runs is re-costed for every γ and for
costlier communication (``Trace.recost``): the same runs answer every question below.

    python benchmarks/fl_plan.py [--data digits|synthetic] [--clients 50] [--model logistic|cnn]
        [--gap 0.1] [--pilot-gap 0.2] [--seeds 3] [--grid-e 1,...,30] [--json out.json] [--traces runs.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from mlgauge.data.federated import digits_clients, synthetic_clients
from mlgauge.federated.costs import DEFAULT_MEANS, ClientCosts, draw_client_costs
from mlgauge.federated.estimator import estimate
from mlgauge.federated.fedavg import FedAvgSimulator, Round, Trace
from mlgauge.federated.planner import plan

GAMMAS = (0.0, 0.5, 1.0)
COMM_SCALES = (0.1, 1.0, 10.0)  # communication costs (t_m, e_m) times this


class Runs:
    """Each (K, E) run once per seed, kept, and re-costed once per communication scale."""

    def __init__(self, sim: FedAvgSimulator, target: float, seeds: int, max_rounds: int, first_seed: int = 0) -> None:
        self.sim, self.target, self.seeds, self.max_rounds = sim, target, seeds, max_rounds
        self.first_seed = first_seed
        self.traces: dict[tuple[int, int], list] = {}
        self._costs: dict[float, ClientCosts] = {}
        self._totals: dict[tuple[int, int, float], tuple[float, float] | None] = {}

    def load(self, path: Path, costs: ClientCosts) -> int:
        """Runs an earlier invocation kept (``--traces``) for the same data, target and seeds: the
        simulator is deterministic per seed, so they are the runs this one would make."""
        saved = json.loads(path.read_text())
        if (saved.get("target"), saved.get("seeds"), saved.get("max_rounds"), saved.get("first_seed", 0),
                saved.get("simulator")) != (self.target, self.seeds, self.max_rounds, self.first_seed, self.identity()):  # fmt: skip
            raise SystemExit(f"{path} holds runs of another simulator, target, seed count or round limit")
        for key, runs in saved["runs"].items():
            k, e = (int(v) for v in key.split(","))
            self.traces[k, e] = [_trace(k, e, self.target, run, costs) for run in runs]
        return len(saved["runs"])

    def save(self, path: Path) -> None:
        runs = {f"{k},{e}": [{"initial": t.initial_loss, "loss": [r.loss for r in t.rounds],
                              "clients": [list(r.clients) for r in t.rounds]} for t in traces]
                for (k, e), traces in self.traces.items()}  # fmt: skip
        path.write_text(json.dumps({"target": self.target, "seeds": self.seeds, "max_rounds": self.max_rounds,
                                    "first_seed": self.first_seed, "simulator": self.identity(), "runs": runs}))  # fmt: skip

    def identity(self) -> dict:
        sim = self.sim
        return {"data": sim.data.name, "model": sim.model_name, "lr": sim.lr, "lr_decay": sim.lr_decay,
                "batch": sim.batch, "weight_decay": sim.weight_decay, "seed": sim.seed}  # fmt: skip

    def get(self, k: int, e: int) -> list:
        if (k, e) not in self.traces:
            self.traces[k, e] = [self.sim.run(k, e, target=self.target, max_rounds=self.max_rounds, seed=s)
                                 for s in range(self.first_seed, self.first_seed + self.seeds)]  # fmt: skip
        return self.traces[k, e]

    def costs_at(self, scale: float) -> ClientCosts:
        """The simulator's clients with communication (t_m, e_m) ``scale`` times as costly."""
        if scale not in self._costs:
            c = self.sim.costs
            self._costs[scale] = ClientCosts(c.compute_s, c.comm_s * scale, c.compute_j, c.comm_j * scale)
        return self._costs[scale]

    def cost(self, k: int, e: int, gamma: float, scale: float) -> float:
        key = (k, e, scale)
        if key not in self._totals:
            traces = self.get(k, e)
            reached = all(t.reached for t in traces)
            self._totals[key] = tuple(np.mean([t.recost(self.costs_at(scale)) for t in traces], axis=0)) if reached else None
        totals = self._totals[key]
        return math.inf if totals is None else float((1 - gamma) * totals[0] + gamma * totals[1])


def _trace(k: int, e: int, target: float, run: dict, costs: ClientCosts) -> Trace:
    trace = Trace(k, e, target, run["initial"])
    for number, (loss, clients) in enumerate(zip(run["loss"], run["clients"], strict=True), 1):
        trace.rounds.append(Round(number, tuple(clients), loss, costs.round_time(clients, e), costs.round_energy(clients, e)))
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--clients", type=int, default=50,
                        help="N; at 20 the fixed K = 2, E = 5 is itself the best setting, so nothing can beat it")
    parser.add_argument("--model", choices=("logistic", "cnn"), default="logistic")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr-decay", type=float, default=0.0, help="τ: step size lr·τ/(τ + t); 0 constant")
    parser.add_argument("--gap", type=float, default=0.1, help="target: loss <= F* + gap")
    parser.add_argument("--pilot-gap", type=float, help="the pilots' target gap (default: 2 x --gap)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-rounds", type=int, default=400)
    parser.add_argument("--holdout-seeds", type=int, default=6,
                        help="re-run the plan and the grid's best on this many fresh seeds: the grid's best was "
                             "picked as the least of many noisy means, so its own seeds flatter it")  # fmt: skip
    parser.add_argument("--grid-e", default="1,2,3,4,5,6,7,8,10,12,16,20,30")
    parser.add_argument("--json")
    parser.add_argument("--traces", type=Path,
                        help="keep every run (losses, sampled clients) here, and reuse the runs it already holds")  # fmt: skip
    args = parser.parse_args()

    n = args.clients
    data = digits_clients(n) if args.data == "digits" else synthetic_clients(n)
    costs = draw_client_costs(n, seed=0)
    sim = FedAvgSimulator(data, args.model, costs, lr=args.lr, batch=args.batch, lr_decay=args.lr_decay)
    started = time.perf_counter()
    optimum = sim.optimum()
    runs = Runs(sim, optimum + args.gap, args.seeds, args.max_rounds)
    heldout = Runs(sim, optimum + args.gap, args.holdout_seeds, args.max_rounds, first_seed=args.seeds)
    heldout_traces = args.traces.with_name(f"{args.traces.stem}-heldout.json") if args.traces else None
    for kept, path in ((runs, args.traces), (heldout, heldout_traces)):
        if path and path.exists():
            print(f"reusing the runs of {kept.load(path, costs)} (K, E) settings from {path}")
    print(f"{data.name}: {n} clients, {len(data.labels)} examples, {args.model}; F* {optimum:.4f}, "
          f"target F* + {args.gap}; client means {DEFAULT_MEANS}")  # fmt: skip

    pilot_gap = args.pilot_gap or 2 * args.gap
    pilots = estimate(lambda k, e, target, rounds, seed: sim.run(k, e, target=target, max_rounds=rounds, seed=seed),
                      n, optimum=optimum, gap=pilot_gap, seeds=range(args.seeds))  # fmt: skip
    b = pilots.bound
    print(f"pilots at gap {pilot_gap:g}: A0 {b.a0:.3g}, A1 {b.a1:.3g}, B0 {b.b0:.3g}, C0 {b.c0:.3g}, K = 1 x {b.solo:.3g}, misfit "
          f"{pilots.residual:.0%}; spent {pilots.spent(0):,.0f} s, {pilots.spent(1):,.2f} J")  # fmt: skip

    grid_e = [int(e) for e in args.grid_e.split(",")]
    max_e = max(grid_e)
    cells = [(k, e) for k in range(1, n + 1) for e in grid_e]
    for i, (k, e) in enumerate(cells, 1):
        runs.get(k, e)
        if i % n == 0:
            if args.traces:
                runs.save(args.traces)
            print(f"  grid {i}/{len(cells)} ({time.perf_counter() - started:.0f} s)", flush=True)

    fixed_k = max(1, round(0.1 * n))
    rows = []
    for scale in COMM_SCALES:
        clients = runs.costs_at(scale)
        for gamma in GAMMAS:
            chosen = plan(clients, pilots.bound, gamma=gamma, epsilon=args.gap, max_iterations=max_e)
            measured = runs.cost(chosen.clients, chosen.iterations, gamma, scale)
            grid = {(k, e): runs.cost(k, e, gamma, scale) for k, e in cells}
            best = min(grid, key=grid.get)
            fixed = {e: runs.cost(fixed_k, e, gamma, scale) for e in (1, 5, 20)}
            row = {"comm_scale": scale, "gamma": gamma, "plan": [chosen.clients, chosen.iterations],
                   "plan_predicted": chosen.cost, "plan_measured": measured, "grid_best": list(best),
                   "grid_best_cost": grid[best], "vs_best": measured / grid[best] - 1,
                   "fixed": {str(e): c for e, c in fixed.items()},
                   "savings_vs_fixed": {str(e): 1 - measured / c for e, c in fixed.items()}}  # fmt: skip
            row["grid"] = {f"{k},{e}": c for (k, e), c in grid.items()}
            if args.holdout_seeds:
                plan_h = heldout.cost(chosen.clients, chosen.iterations, gamma, scale)
                best_h = heldout.cost(*best, gamma, scale)
                row["heldout"] = {"seeds": [args.seeds, args.seeds + args.holdout_seeds - 1], "plan": plan_h,
                                  "grid_best": best_h, "vs_best": plan_h / best_h - 1}  # fmt: skip
            rows.append(row)
            fixed_text = "  ".join(f"E={e}: {c:,.1f} ({1 - measured / c:+.0%})" for e, c in fixed.items())
            print(f"comm x{scale:<4g} γ={gamma:.1f}: plan K={chosen.clients:>2} E={chosen.iterations:>2} "
                  f"cost {measured:,.2f} (model {chosen.cost:,.2f}); grid best K={best[0]} E={best[1]} "
                  f"{grid[best]:,.2f} ({measured / grid[best] - 1:+.1%}); fixed K={fixed_k} {fixed_text}",
                  flush=True)  # fmt: skip
            if args.holdout_seeds:
                h = row["heldout"]
                print(f"    on {args.holdout_seeds} fresh seeds: plan {h['plan']:,.2f}, grid best {h['grid_best']:,.2f} "
                      f"({h['vs_best']:+.1%})", flush=True)  # fmt: skip
    print(f"{len(runs.traces) * args.seeds} FedAvg runs in {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "optimum": optimum, "pilots": pilots.to_dict(),
                                               "rows": rows}, indent=2, default=str))  # fmt: skip
    if args.traces:
        runs.save(args.traces)
        heldout.save(heldout_traces)


if __name__ == "__main__":
    main()
