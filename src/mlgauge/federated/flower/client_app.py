"""The ClientApp: E local SGD steps from the global model on this node's partition, and what they cost.

Each reply carries the model, the example count FedAvg weighs it by, and the client's own
measurements: seconds of computation and, where an energy meter reads (RAPL, NVML), joules. The
ServerApp adds the communication time it sees (round trip minus computation), so a deployment yields
the per-client t_p, t_m, e_p the planner needs.

``drop-in-round`` in a node's config makes its ClientApp exit without replying in that round: a
device that goes away mid-round, for testing how rounds complete without it.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from mlgauge.energy.choose import choose_meter
from mlgauge.federated.fedavg import objective, step_size
from mlgauge.federated.flower.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    RUN_CONFIG,
    federation,
    load_arrays,
    model_for,
    to_arrays,
)

app = ClientApp()


def local_sgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, iterations: int, lr: float, batch: int,
              weight_decay: float, rng: np.random.Generator, lr_decay: float = 0.0, first_step: int = 0) -> float:  # fmt: skip
    """``iterations`` SGD steps on minibatches drawn uniformly from (x, y), as the simulator draws them
    and with its step sizes; returns the last minibatch's loss."""
    params = dict(model.named_parameters())
    loss = torch.tensor(float("nan"))
    for i in range(iterations):
        step = step_size(lr, lr_decay, first_step + i)
        rows = torch.from_numpy((rng.random(batch) * len(y)).astype(np.int64))
        loss = objective(model, params, x[rows], y[rows], weight_decay)
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads, strict=True):
                p -= step * g
    return float(loss.detach())


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = {**RUN_CONFIG, **context.run_config}
    partition = int(context.node_config["partition-id"])
    server_round = int(msg.content[CONFIG]["server-round"])
    if int(context.node_config.get("drop-in-round", -1)) == server_round:
        os._exit(1)
    data = federation(config)
    features, labels = data.client(partition)
    model = model_for(config, data)
    load_arrays(model, msg.content[ARRAYS].to_numpy_ndarrays())
    round_config = msg.content[CONFIG]
    rng = np.random.default_rng((int(config["seed"]), server_round, partition))
    meter, _ = choose_meter("auto")  # started already when it can read
    started = time.perf_counter()
    iterations = int(round_config["local-iterations"])
    loss = local_sgd(model, torch.from_numpy(features), torch.from_numpy(labels), iterations=iterations,
                     lr=float(round_config["lr"]), batch=int(round_config["batch"]),
                     weight_decay=float(round_config["weight-decay"]), rng=rng,
                     lr_decay=float(round_config["lr-decay"]), first_step=(server_round - 1) * iterations)  # fmt: skip
    compute_s = time.perf_counter() - started
    metrics = {NUM_EXAMPLES: len(labels), "partition-id": partition, "compute-s": compute_s, "train-loss": loss}
    if meter is not None:
        metrics["compute-j"] = meter.stop().joules
    content = RecordDict({ARRAYS: ArrayRecord(to_arrays(model)), METRICS: MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
