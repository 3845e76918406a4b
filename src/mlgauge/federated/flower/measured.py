"""What a deployment measured, per client, in the planner's terms.

The ServerApp's trace holds, per round and answering client, the computation the client timed
(and metered, where it has a RAPL or NVML counter) and the round trip the server saw. Averaged
over the rounds a client answered, they become the cost model's t_k,p (seconds per local
iteration), t_k,m (seconds of one exchange) and e_k,p (joules per local iteration), written in the
format ``mlgauge fl plan --costs`` reads. A quantity nobody measured stays ``null`` there: the
radio's energy e_k,m has no meter on a host, and a client that was never sampled has no times.
"""

from __future__ import annotations

import numpy as np


def client_summary(trace: dict) -> list[dict]:
    """Per partition that answered at least once: rounds answered and mean measured costs."""
    e = int(trace["config"]["local-iterations"])
    by_partition: dict[int, list[dict]] = {}
    for r in trace["rounds"]:
        for c in r["clients"]:
            by_partition.setdefault(int(c["partition"]), []).append(c)
    summary = []
    for partition, rows in sorted(by_partition.items()):
        joules = [c["compute_j"] for c in rows if c.get("compute_j") is not None]
        summary.append({"partition": partition, "rounds": len(rows),
                        "compute_s_per_iteration": float(np.mean([c["compute_s"] for c in rows])) / e,
                        "comm_s": float(np.mean([c["comm_s"] for c in rows])),
                        "compute_j_per_iteration": float(np.mean(joules)) / e if joules else None})  # fmt: skip
    return summary


def measured_costs(trace: dict) -> dict:
    """{compute_s, comm_s, compute_j, comm_j: one value per partition 0..N-1, None where not measured}."""
    n = int(trace["config"]["num-clients"])
    costs: dict[str, list[float | None]] = {name: [None] * n for name in ("compute_s", "comm_s", "compute_j", "comm_j")}
    for c in client_summary(trace):
        p = c["partition"]
        costs["compute_s"][p] = c["compute_s_per_iteration"]
        costs["comm_s"][p] = c["comm_s"]
        costs["compute_j"][p] = c["compute_j_per_iteration"]
    return costs
