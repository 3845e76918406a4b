"""What the ServerApp and the ClientApp agree on: run-config keys, message keys, and the model's arrays.

Both sides rebuild the same federation from (dataset, clients, data seed), so no data travels: each
SuperNode trains on the partition its ``partition-id`` names, as a device would on its own data.
"""

from __future__ import annotations

import numpy as np
import torch

from mlgauge.data.federated import ClientData, load_federation
from mlgauge.federated.models import build_model

# [tool.flwr.app.config] of the app and their defaults; `flwr run --run-config` overrides them.
RUN_CONFIG = {
    "dataset": "digits",
    "model": "logistic",
    "num-clients": 3,
    "data-seed": 0,
    "clients-per-round": 2,
    "local-iterations": 5,
    "lr": 0.5,
    "lr-decay": 0.0,  # τ in local steps: step size lr·τ/(τ + t); 0 keeps it constant
    "batch": 16,
    "weight-decay": 1e-3,
    "target-loss": 0.0,  # stop once the global loss is <= this (0: run every round)
    "max-rounds": 10,
    "round-timeout": 60.0,  # seconds to wait for a round's replies; who has not answered by then dropped out
    "seed": 0,
    "output": "",  # where the ServerApp writes the run's trace (JSON)
}

# Keys inside the messages.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
NUM_EXAMPLES = "num-examples"  # FedAvg weights each reply by it


def federation(config) -> ClientData:
    return load_federation(str(config["dataset"]), int(config["num-clients"]), seed=int(config["data-seed"]))


def model_for(config, data: ClientData) -> torch.nn.Module:
    return build_model(str(config["model"]), data.features.shape[1], data.classes, data.image_shape,
                       int(config["seed"]))  # fmt: skip


def to_arrays(model: torch.nn.Module) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


def load_arrays(model: torch.nn.Module, arrays: list[np.ndarray]) -> None:
    params = list(model.parameters())
    if len(arrays) != len(params) or any(a.shape != tuple(p.shape) for a, p in zip(arrays, params, strict=True)):
        raise ValueError(f"received {len(arrays)} arrays that do not fit the model's {len(params)} parameters")
    with torch.no_grad():
        for p, a in zip(params, arrays, strict=True):
            p.copy_(torch.from_numpy(np.asarray(a)))
