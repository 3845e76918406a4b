"""The Flower app's pieces without Flower's processes: a ClientApp's local training is the
simulator's client update, the arrays round-trip, and the app project and run config are valid."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from mlgauge.errors import UsageError  # noqa: E402
from mlgauge.federated.flower.client_app import local_sgd  # noqa: E402
from mlgauge.federated.flower.deploy import run_config_text, write_app  # noqa: E402
from mlgauge.federated.flower.protocol import RUN_CONFIG, federation, load_arrays, model_for, to_arrays  # noqa: E402


@pytest.mark.parametrize(("model", "lr_decay"), [("logistic", 0.0), ("cnn", 0.0), ("logistic", 3.0)])
def test_a_client_update_is_the_simulators_with_that_client_alone(model, lr_decay):
    from mlgauge.federated.costs import draw_client_costs
    from mlgauge.federated.fedavg import FedAvgSimulator

    config = {**RUN_CONFIG, "num-clients": 5, "model": model}
    data = federation(config)
    sim = FedAvgSimulator(data, model, draw_client_costs(5), lr=0.3, batch=8, weight_decay=1e-2, lr_decay=lr_decay)
    start = sim.initial_params()
    # Round 3 of E = 4: the decayed steps continue from global step 8 on both sides.
    expected = sim.fedavg_round(start, np.array([3]), 4, np.random.default_rng(11), first_step=8)

    net = model_for(config, data)
    net.load_state_dict(start)
    x, y = data.client(3)
    local_sgd(net, torch.from_numpy(x), torch.from_numpy(y), iterations=4, lr=0.3, batch=8, weight_decay=1e-2,
              rng=np.random.default_rng(11), lr_decay=lr_decay, first_step=8)  # fmt: skip
    for name, value in net.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected["linear.weight" if model == "logistic" else "head.weight"],
                           start["linear.weight" if model == "logistic" else "head.weight"])  # fmt: skip


def test_arrays_round_trip_and_a_wrong_shape_is_refused():
    config = {**RUN_CONFIG, "num-clients": 3}
    data = federation(config)
    a, b = model_for(config, data), model_for(config, data)
    with torch.no_grad():
        a.linear.weight.normal_()
    load_arrays(b, to_arrays(a))
    torch.testing.assert_close(b.linear.weight, a.linear.weight)
    with pytest.raises(ValueError, match="do not fit"):
        load_arrays(b, to_arrays(a)[:1])


def test_the_app_project_names_mlgauges_components_and_every_config_key(tmp_path):
    project = tomllib.loads((write_app(tmp_path) / "pyproject.toml").read_text())
    flwr = project["tool"]["flwr"]["app"]
    assert flwr["components"] == {"serverapp": "mlgauge.federated.flower.server_app:app",
                                  "clientapp": "mlgauge.federated.flower.client_app:app"}  # fmt: skip
    assert flwr["config"] == RUN_CONFIG


def test_run_config_keeps_floats_floats_and_refuses_unknown_keys():
    assert run_config_text({"round-timeout": 20, "max-rounds": 3, "output": 'a "b"'}) == \
        'round-timeout=20.0 max-rounds=3 output="a \\"b\\""'  # fmt: skip
    with pytest.raises(UsageError, match="unknown run-config keys clients"):
        run_config_text({"clients": 3})
