"""Training a Tiny model, its cache, and the user's own weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlgauge.errors import ModelError
from mlgauge.models.tiny import build_tiny_model
from mlgauge.tiny.data import load_tiny_data
from mlgauge.tiny.recipes import recipe_for
from mlgauge.tiny.train import cached_model_path, load_weights, train_or_load


@pytest.fixture(scope="module")
def data():
    return load_tiny_data("ad01", None, train_samples=6, test_samples=4, calibration_samples=20)


def _scores(trained, data) -> np.ndarray:
    with torch.no_grad():
        return trained.served(torch.from_numpy(data.test.samples)).numpy()


def test_training_lowers_the_loss_and_a_second_call_loads_the_same_model(data):
    recipe = recipe_for("ad01", synthetic=True).with_overrides(epochs=4, train_samples=6)
    losses = []
    trained = train_or_load(data, recipe, seed=3, retrain=True, on_epoch=lambda e, of, loss: losses.append(loss))
    assert len(losses) == 4 and losses[-1] < losses[0] and not trained.info["cached"]
    again = train_or_load(data, recipe, seed=3)
    assert again.info["cached"] and again.info["final_loss"] == trained.info["final_loss"]
    np.testing.assert_array_equal(_scores(again, data), _scores(trained, data))
    other = train_or_load(data, recipe.with_overrides(epochs=1), seed=3)
    assert not other.info["cached"]  # another recipe is another model


def test_a_damaged_cache_file_says_how_to_recover(data):
    recipe = recipe_for("ad01", synthetic=True).with_overrides(epochs=1, train_samples=6)
    path = cached_model_path(data, recipe, 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="--retrain"):
        train_or_load(data, recipe, seed=5)


def test_user_weights_of_the_bare_reference_model_are_served(tmp_path, data):
    model = build_tiny_model("ad01")
    torch.save(model.state_dict(), tmp_path / "ae.pt")
    loaded = load_weights(tmp_path / "ae.pt", data)
    assert loaded.info["source"] == "weights"
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.served.model.state_dict()[name], tensor)
    torch.save(build_tiny_model("ic01").state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(ModelError, match="does not hold ad01 reference-model weights"):
        load_weights(tmp_path / "resnet.pt", data)
