"""The figure for the README from ``benchmarks/fl_plan.py --json``: one panel per (communication
scale, γ), the measured cost of every (K, E) of the grid relative to the grid's best, with the
grid's best, the plan and the fixed settings marked. Needs the ``plots`` extra (matplotlib).

    python benchmarks/plot_fl_plan.py fl_plan.json docs/fl_plan.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def cost_grid(row: dict) -> tuple[list[int], list[int], np.ndarray]:
    """Ks, Es and the cost of each (K, E) relative to the row's grid best (NaN: never reached)."""
    cells = {tuple(int(v) for v in key.split(",")): cost for key, cost in row["grid"].items()}
    ks = sorted({k for k, _ in cells})
    es = sorted({e for _, e in cells})
    best = row["grid_best_cost"]
    grid = np.full((len(es), len(ks)), np.nan)
    for (k, e), cost in cells.items():
        if cost is not None and math.isfinite(cost):
            grid[es.index(e), ks.index(k)] = cost / best
    return ks, es, grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="the JSON that benchmarks/fl_plan.py --json wrote")
    parser.add_argument("figure", help="where to write the figure (.svg or .png)")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    data = json.loads(Path(args.results).read_text())
    rows = data["rows"]
    scales = sorted({r["comm_scale"] for r in rows})
    gammas = sorted({r["gamma"] for r in rows})
    fig, axes = plt.subplots(len(scales), len(gammas), figsize=(3.6 * len(gammas), 2.9 * len(scales)),
                             sharex=True, sharey=True, squeeze=False, constrained_layout=True)  # fmt: skip
    norm = LogNorm(vmin=1, vmax=4)
    cmap = plt.get_cmap("viridis_r").with_extremes(bad="#dddddd", over="#30123b")
    image = None
    for row in rows:
        ax = axes[scales.index(row["comm_scale"])][gammas.index(row["gamma"])]
        ks, es, grid = cost_grid(row)
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, norm=norm,
                          extent=(-0.5, len(ks) - 0.5, -0.5, len(es) - 0.5))  # fmt: skip

        def at(k: int, e: int, ks: list[int] = ks, es: list[int] = es) -> tuple[float, float]:
            # A plan may choose an E between the grid's rows: drawn where it falls between them.
            return float(np.interp(k, ks, range(len(ks)))), float(np.interp(e, es, range(len(es))))

        fixed_k = max(1, round(0.1 * max(ks)))
        for e in row["fixed"]:
            if int(e) in es:
                ax.plot(*at(fixed_k, int(e)), "x", color="white", markersize=7, mew=2)
        ax.plot(*at(*row["grid_best"]), "*", color="gold", markersize=15, markeredgecolor="black")
        k, e = row["plan"]
        ax.plot(*at(k, e), "o", markerfacecolor="none", markeredgecolor="red", markersize=11, mew=2)
        ax.set_title(f"γ = {row['gamma']:g}, communication ×{row['comm_scale']:g}\n"
                     f"plan K={k} E={e}: {row['vs_best']:+.0%} vs best", fontsize=9)  # fmt: skip
        step = max(1, math.ceil(len(ks) / 12))
        ax.set_xticks(range(0, len(ks), step), [str(v) for v in ks[::step]], fontsize=7)
        ax.set_yticks(range(len(es)), [str(v) for v in es], fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("clients per round K")
    for ax in axes[:, 0]:
        ax.set_ylabel("local iterations E")
    bar = fig.colorbar(image, ax=axes, shrink=0.6, extend="max")
    bar.set_ticks([1, 1.25, 1.5, 2, 3, 4], labels=["1", "1.25", "1.5", "2", "3", "≥ 4"])
    bar.minorticks_off()
    bar.set_label("measured cost / grid best (grey: target not reached)")
    fig.suptitle("★ grid best   ○ plan   × fixed K = 10% of N, E ∈ {1, 5, 20}", fontsize=10)
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure)
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
