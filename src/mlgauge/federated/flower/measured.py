"""What a deployment measured, per client, in the planner's terms.

The ServerApp's trace holds, per round and answering client, the computation the client timed
(and metered, where it has a RAPL or NVML counter) and the round trip the server saw. Averaged
over the rounds a client answered, they become the cost model's t_k,p (seconds per local
iteration), t_k,m (seconds of one exchange) and e_k,p (joules per local iteration), written in the
format ``mlgauge fl plan --costs`` reads. A quantity nobody measured stays ``null`` there: the
radio's energy e_k,m has no meter on a host, and a client that was never sampled has no times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mlgauge.federated.fedavg import Round, Trace


def client_summary(traces: dict | Sequence[dict]) -> list[dict]:
    """Per partition that answered at least once, over one or several runs' ``traces``: rounds
    answered and mean measured costs (computation per local iteration, so runs with different E mix)."""
    traces = [traces] if isinstance(traces, dict) else list(traces)
    by_partition: dict[int, list[tuple[dict, int]]] = {}
    for trace in traces:
        e = int(trace["config"]["local-iterations"])
        for r in trace["rounds"]:
            for c in r["clients"]:
                by_partition.setdefault(int(c["partition"]), []).append((c, e))
    summary = []
    for partition, rows in sorted(by_partition.items()):
        joules = [c["compute_j"] / e for c, e in rows if c.get("compute_j") is not None]
        summary.append({"partition": partition, "rounds": len(rows),
                        "compute_s_per_iteration": float(np.mean([c["compute_s"] / e for c, e in rows])),
                        "comm_s": float(np.mean([c["comm_s"] for c, _ in rows])),
                        "compute_j_per_iteration": float(np.mean(joules)) if joules else None})  # fmt: skip
    return summary


def measured_costs(traces: dict | Sequence[dict]) -> dict:
    """{compute_s, comm_s, compute_j, comm_j: one value per partition 0..N-1, None where not measured}."""
    traces = [traces] if isinstance(traces, dict) else list(traces)
    n = int(traces[0]["config"]["num-clients"])
    costs: dict[str, list[float | None]] = {name: [None] * n for name in ("compute_s", "comm_s", "compute_j", "comm_j")}
    for c in client_summary(traces):
        p = c["partition"]
        costs["compute_s"][p] = c["compute_s_per_iteration"]
        costs["comm_s"][p] = c["comm_s"]
        costs["compute_j"][p] = c["compute_j_per_iteration"]
    return costs


def as_trace(flower: dict) -> Trace:
    """A deployment's trace as the simulator's, for the estimator: each round's measured wall time, and
    its metered energy where every answering client metered its computation (NaN otherwise)."""
    config = flower["config"]
    trace = Trace(int(config["clients-per-round"]), int(config["local-iterations"]), float(config["target-loss"]),
                  float(flower["initial_loss"]))  # fmt: skip
    for r in flower["rounds"]:
        joules = [c.get("compute_j") for c in r["clients"]]
        energy = float(sum(joules)) if joules and None not in joules else math.nan
        trace.rounds.append(Round(int(r["number"]), tuple(int(c["partition"]) for c in r["clients"]), float(r["loss"]),
                                  float(r["wall_s"]), energy))  # fmt: skip
    return trace
