"""The ServerApp: FedAvg rounds with K sampled nodes and E local iterations, timed per client.

Each round samples K of the connected nodes uniformly without replacement (seeded, so a run can be
repeated), sends them the global model and E, and waits up to ``round-timeout`` for their replies.
A node that has not answered by then, or answers with an error, has dropped out: the round is
averaged over the clients that answered, and the trace names who dropped. Arrival times are polled
every 50 ms (Flower's own ``send_and_receive`` polls every 3 s), so a client's communication time,
its round trip minus the computation it reports, is resolved to about that.

The global loss is measured here, on every client's examples: the federation is a benchmark's, built
from (dataset, clients, data seed) on both sides, not private data. The trace is rewritten after
every round, so a run cut short still leaves the rounds it finished.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from mlgauge.federated.fedavg import objective
from mlgauge.federated.flower.protocol import (
    METRICS,
    NUM_EXAMPLES,
    RUN_CONFIG,
    federation,
    load_arrays,
    model_for,
    to_arrays,
)
from mlgauge.paths import write_text_atomic

app = ServerApp()
_POLL_S = 0.05


class PlannedFedAvg(FedAvg):
    """FedAvg with K clients a round (not a fraction), sampled by a seeded generator, and E in the config."""

    def __init__(self, clients_per_round: int, clients: int, seed: int) -> None:
        super().__init__(fraction_evaluate=0.0, min_available_nodes=clients)
        self.clients_per_round, self.clients = clients_per_round, clients
        self._random = random.Random(seed)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> list[Message]:
        nodes = wait_for_nodes(grid, self.clients)
        sampled = self._random.sample(nodes, self.clients_per_round)
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=node) for node in sampled]


def wait_for_nodes(grid: Grid, clients: int, timeout_s: float = 600.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while len(nodes := sorted(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(nodes)} of {clients} SuperNodes connected within {timeout_s:.0f} s")
        time.sleep(0.2)
    return nodes


def exchange(grid: Grid, messages: list[Message], timeout_s: float) -> list[tuple[Message, float]]:
    """Send ``messages``; each reply that comes back within ``timeout_s``, with its round trip in seconds."""
    sent = time.monotonic()
    pending = set(grid.push_messages(messages))
    replies = []
    while pending and time.monotonic() - sent < timeout_s:
        for reply in grid.pull_messages(pending):
            pending.discard(reply.metadata.reply_to_message_id)
            replies.append((reply, time.monotonic() - sent))
        if pending:
            time.sleep(_POLL_S)
    return replies


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = {**RUN_CONFIG, **context.run_config}
    n, k = int(config["num-clients"]), int(config["clients-per-round"])
    data = federation(config)
    model = model_for(config, data)
    x, y = torch.from_numpy(data.features), torch.from_numpy(data.labels)
    weight_decay = float(config["weight-decay"])

    def global_loss() -> float:
        with torch.no_grad():
            return float(objective(model, dict(model.named_parameters()), x, y, weight_decay))

    strategy = PlannedFedAvg(k, n, int(config["seed"]))
    round_config = {key: config[key] for key in ("local-iterations", "lr", "lr-decay", "batch", "weight-decay")}
    trace = {"config": config, "initial_loss": global_loss(), "rounds": []}
    output = Path(str(config["output"])) if config["output"] else None
    arrays = ArrayRecord(to_arrays(model))
    for number in range(1, int(config["max-rounds"]) + 1):
        started = time.monotonic()
        messages = list(strategy.configure_train(number, arrays, ConfigRecord(dict(round_config)), grid))
        replies = exchange(grid, messages, float(config["round-timeout"]))
        answered = [(m, rtt) for m, rtt in replies if not m.has_error()]
        if answered:
            aggregated, _ = strategy.aggregate_train(number, [m for m, _ in answered])
            arrays = aggregated if aggregated is not None else arrays
            load_arrays(model, arrays.to_numpy_ndarrays())
        clients = []
        for reply, round_trip in answered:
            metrics = reply.content[METRICS]
            compute_s = float(metrics["compute-s"])
            clients.append({"partition": int(metrics["partition-id"]), "node": reply.metadata.src_node_id,
                            "examples": int(metrics[NUM_EXAMPLES]), "compute_s": compute_s,
                            "comm_s": max(0.0, round_trip - compute_s),
                            "compute_j": float(metrics["compute-j"]) if "compute-j" in metrics else None})  # fmt: skip
        replied = {reply.metadata.src_node_id for reply, _ in answered}
        trace["rounds"].append({
            "number": number, "loss": global_loss(), "wall_s": time.monotonic() - started,
            "sampled": [m.metadata.dst_node_id for m in messages],
            "dropped": [m.metadata.dst_node_id for m in messages if m.metadata.dst_node_id not in replied],
            "errors": [m.error.reason for m, _ in replies if m.has_error()],
            "clients": sorted(clients, key=lambda c: c["partition"])})  # fmt: skip
        if output is not None:
            write_text_atomic(output, json.dumps(trace, indent=1))
        if trace["rounds"][-1]["loss"] <= float(config["target-loss"]):
            break

