"""DLRM-v2: sizes, the DCNv2 and pooling math by independent routes, ONNX export, checkpoint layouts."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from mlgauge.errors import ModelError
from mlgauge.models.dlrm import (
    REFERENCE_MULTI_HOT_SIZES,
    REFERENCE_NUM_EMBEDDINGS,
    DlrmConfig,
    DLRMv2,
    LowRankCrossNet,
    MultiHotEmbeddings,
    build_from_state_dict,
    config_from_state_dict,
    from_torchrec_state_dict,
)

SMALL = DlrmConfig(
    num_embeddings=(50, 7, 30),
    multi_hot_sizes=(3, 1, 2),
    embedding_dim=8,
    bottom_mlp=(16, 8),
    top_mlp=(16, 4, 1),
    dcn_layers=2,
    dcn_rank=4,
)


def _inputs(config: DlrmConfig, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dense = torch.rand(n, config.num_dense, generator=gen) * 3
    cols = [torch.randint(0, rows, (n, k), generator=gen) for rows, k in zip(config.num_embeddings, config.multi_hot_sizes, strict=True)]
    return dense, torch.cat(cols, dim=1)


def _model(config: DlrmConfig = SMALL, seed: int = 0) -> DLRMv2:
    torch.manual_seed(seed)
    return DLRMv2(config).eval()


# -- sizes -----------------------------------------------------------------------------------------


def test_reference_config_sizes_by_hand():
    config = DlrmConfig.reference()
    assert sum(REFERENCE_NUM_EMBEDDINGS) == 204_184_588
    assert config.sparse_width == 214 == sum(REFERENCE_MULTI_HOT_SIZES)
    assert config.interaction_dim == 27 * 128 == 3456
    assert config.embedding_parameter_count() == 204_184_588 * 128
    bottom = (13 * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128)  # 171,392
    cross = 3 * (3456 * 512 + 512 * 3456 + 3456)  # 10,627,200
    top = (3456 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 256 + 256) + (256 + 1)
    assert (bottom, cross, top) == (171_392, 10_627_200, 5_245_953)
    assert config.parameter_count() == 26_135_627_264 + bottom + cross + top == 26_151_671_809


def test_reference_model_builds_lazily_on_meta_and_matches_the_formula():
    model = DLRMv2(DlrmConfig.reference(), device="meta")  # ~97 GiB if it were real
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 26_151_671_809
    assert model.embeddings.tables[0].weight.shape == (40_000_000, 128)
    assert model.interaction.V_kernels[2].shape == (512, 3456)
    assert model.top_mlp.layers[0].weight.shape == (1024, 3456)


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        DlrmConfig((5,) * 26, (1,) * 26, embedding_dim=4, bottom_mlp=(4,), top_mlp=(1,), dcn_layers=0, dcn_rank=1),
        DlrmConfig((11, 3), (2, 5), embedding_dim=6, num_dense=2, bottom_mlp=(9, 6), top_mlp=(5, 1), dcn_layers=3, dcn_rank=2),
    ],
)
def test_parameter_count_formula_equals_the_built_model(config):
    assert config.parameter_count() == sum(p.numel() for p in DLRMv2(config).parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bottom_mlp": (16, 7)},  # does not end at the embedding dim
        {"top_mlp": (16, 2)},  # not one logit
        {"multi_hot_sizes": (3, 1)},  # one size short
        {"num_embeddings": (50, 0, 30)},
    ],
)
def test_invalid_configs_are_rejected(kwargs):
    base = SMALL.to_dict() | kwargs
    with pytest.raises(ValueError, match="invalid DLRM-v2 config"):
        DlrmConfig(**base)


def test_config_round_trips_through_a_dict():
    assert DlrmConfig.from_dict(SMALL.to_dict()) == SMALL


# -- the math ------------------------------------------------------------------------------------


def test_dcn_layers_against_a_hand_computation():
    net = LowRankCrossNet(in_features=2, num_layers=2, rank=1)
    with torch.no_grad():
        net.V_kernels[0].copy_(torch.tensor([[1.0, 1.0]]))
        net.W_kernels[0].copy_(torch.tensor([[2.0], [-1.0]]))
        net.bias[0].copy_(torch.tensor([0.5, 0.0]))
        net.V_kernels[1].copy_(torch.tensor([[0.0, 1.0]]))
        net.W_kernels[1].copy_(torch.tensor([[1.0], [1.0]]))
        net.bias[1].copy_(torch.tensor([0.0, 1.0]))
        out = net(torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    # Layer 1: V x0 = 3; W·3 + b = (6.5, -3); x0 ⊙ that = (6.5, -6); + x0 = (7.5, -4).
    # Layer 2: V x1 = -4; W·(-4) + b = (-4, -3); x0 ⊙ that = (-4, -6); + x1 = (3.5, -10).
    torch.testing.assert_close(out, torch.tensor([[3.5, -10.0], [0.0, 0.0]]))


def test_multi_hot_pooling_sums_the_gathered_rows():
    emb = MultiHotEmbeddings((50, 7, 30), (3, 1, 2), 8)
    _, sparse = _inputs(SMALL, 5)
    got = emb(sparse)
    assert got.shape == (5, 3, 8)
    start = 0
    for f, k in enumerate((3, 1, 2)):
        ids = sparse[:, start : start + k]
        want = emb.tables[f].weight[ids].sum(dim=1)  # gathered rows summed by hand
        torch.testing.assert_close(got[:, f], want)
        start += k


def test_forward_equals_a_functional_rebuild_from_the_state_dict():
    model = _model()
    s = model.state_dict()
    dense, sparse = _inputs(SMALL, 6)
    f = nn.functional
    x = f.relu(f.linear(dense, s["bottom_mlp.layers.0.weight"], s["bottom_mlp.layers.0.bias"]))
    x = f.relu(f.linear(x, s["bottom_mlp.layers.1.weight"], s["bottom_mlp.layers.1.bias"]))
    pooled, start = [], 0
    for t, k in enumerate(SMALL.multi_hot_sizes):
        ids = sparse[:, start : start + k]
        pooled.append(f.embedding_bag(ids, s[f"embeddings.tables.{t}.weight"], mode="sum"))
        start += k
    x0 = torch.cat([x, *pooled], dim=1)
    xl = x0
    for layer in range(2):
        low = xl @ s[f"interaction.V_kernels.{layer}"].T
        xl = x0 * (low @ s[f"interaction.W_kernels.{layer}"].T + s[f"interaction.bias.{layer}"]) + xl
    h = f.relu(f.linear(xl, s["top_mlp.layers.0.weight"], s["top_mlp.layers.0.bias"]))
    h = f.relu(f.linear(h, s["top_mlp.layers.1.weight"], s["top_mlp.layers.1.bias"]))
    want = torch.sigmoid(f.linear(h, s["top_mlp.layers.2.weight"], s["top_mlp.layers.2.bias"]))
    with torch.no_grad():
        got = model(dense, sparse)
    assert got.shape == (6, 1)
    torch.testing.assert_close(got, want)
    assert ((got > 0) & (got < 1)).all()


def test_default_initialisation_follows_torchrec():
    model = _model()
    bound = (1 / 50) ** 0.5
    top = float(model.embeddings.tables[0].weight.detach().abs().max())
    assert 0.5 * bound < top <= bound
    assert all(float(b.detach().abs().max()) == 0.0 for b in model.interaction.bias)


class HashedEmbeddings(nn.Module):
    """A hashing-trick stand-in: every feature shares one small table, ids mod its size."""

    def __init__(self, rows: int, multi_hot_sizes: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.num_features, self.embedding_dim, self.multi_hot_sizes = len(multi_hot_sizes), dim, multi_hot_sizes
        self.table = nn.Embedding(rows, dim)
        self.rows = rows

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        pooled, start = [], 0
        for k in self.multi_hot_sizes:
            pooled.append(self.table(sparse[:, start : start + k] % self.rows).sum(1))
            start += k
        return torch.stack(pooled, 1)


def test_the_embedding_layer_is_swappable():
    torch.manual_seed(0)
    model = DLRMv2(SMALL, embeddings=HashedEmbeddings(5, SMALL.multi_hot_sizes, 8)).eval()
    assert "embeddings.table.weight" in model.state_dict()
    assert not any(k.startswith("embeddings.tables.") for k in model.state_dict())
    dense, sparse = _inputs(SMALL, 4)
    with torch.no_grad():
        assert model(dense, sparse).shape == (4, 1)
    with pytest.raises(ValueError, match="dim 4"):
        DLRMv2(SMALL, embeddings=HashedEmbeddings(5, SMALL.multi_hot_sizes, 4))


def test_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    model = _model()
    dense, sparse = _inputs(SMALL, 2)
    program = torch.onnx.export(
        model,
        (dense, sparse),
        input_names=["dense", "sparse"],
        output_names=["probability"],
        dynamic_shapes=({0: torch.export.Dim.DYNAMIC}, {0: torch.export.Dim.DYNAMIC}),
        dynamo=True,
        verbose=False,
    )
    path = tmp_path / "dlrm.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["dense", "sparse"]
    for n in (1, 7):
        dense, sparse = _inputs(SMALL, n, seed=n)
        (got,) = session.run(None, {"dense": dense.numpy(), "sparse": sparse.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(dense, sparse).numpy(), rtol=1e-5, atol=1e-6)


# -- checkpoints -----------------------------------------------------------------------------------


def _as_torchrec(state: dict, config: DlrmConfig, prefix: str = "") -> dict:
    """The same tensors under TorchRec DLRM_DCN names, written out by hand."""
    out = {}
    for t in range(config.num_sparse):
        out[f"sparse_arch.embedding_bag_collection.embedding_bags.t_cat_{t}.weight"] = state[f"embeddings.tables.{t}.weight"]
    for i in range(len(config.bottom_mlp)):
        for p in ("weight", "bias"):
            out[f"dense_arch.model._mlp.{i}._linear.{p}"] = state[f"bottom_mlp.layers.{i}.{p}"]
    for layer in range(config.dcn_layers):
        for p in ("W_kernels", "V_kernels", "bias"):
            out[f"inter_arch.crossnet.{p}.{layer}"] = state[f"interaction.{p}.{layer}"]
    last = len(config.top_mlp) - 1
    for i in range(last):
        for p in ("weight", "bias"):
            out[f"over_arch.model.0._mlp.{i}._linear.{p}"] = state[f"top_mlp.layers.{i}.{p}"]
    for p in ("weight", "bias"):
        out[f"over_arch.model.1.{p}"] = state[f"top_mlp.layers.{last}.{p}"]
    return {prefix + k: v for k, v in out.items()}


@pytest.mark.parametrize("prefix", ["", "model."])
def test_torchrec_checkpoints_load(prefix):
    source = _model(seed=3)
    torchrec = _as_torchrec(source.state_dict(), SMALL, prefix)
    assert from_torchrec_state_dict(torchrec).keys() == source.state_dict().keys()
    model = build_from_state_dict(torchrec, SMALL.multi_hot_sizes)
    assert model.config == SMALL
    assert not model.training
    dense, sparse = _inputs(SMALL, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(dense, sparse), source(dense, sparse))


def test_config_is_read_from_a_state_dict():
    assert config_from_state_dict(_model().state_dict(), SMALL.multi_hot_sizes) == SMALL


def test_half_precision_weights_are_widened():
    source = _model(seed=4)
    half = {k: v.half() for k, v in source.state_dict().items()}
    model = build_from_state_dict(half, SMALL.multi_hot_sizes)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_unusable_state_dicts_are_model_errors():
    state = _model().state_dict()
    with pytest.raises(ModelError, match="not a DLRM-v2 state dict"):
        build_from_state_dict({"fc.weight": torch.zeros(2, 2)}, SMALL.multi_hot_sizes, "w.pt")
    gap = {k: v for k, v in state.items() if not k.startswith("embeddings.tables.1.")}
    with pytest.raises(ModelError, match="gaps"):
        build_from_state_dict(gap, SMALL.multi_hot_sizes, "w.pt")
    extra = {**state, "extra.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match="0 missing and 1 unexpected") as info:
        build_from_state_dict(extra, SMALL.multi_hot_sizes, "w.pt")
    assert "w.pt" in str(info.value)
    wrong = {**state, "bottom_mlp.layers.1.bias": torch.zeros(3)}
    with pytest.raises(ModelError, match="does not fit the model"):
        build_from_state_dict(wrong, SMALL.multi_hot_sizes, "w.pt")
    with pytest.raises(ModelError, match="invalid DLRM-v2 config"):
        build_from_state_dict(state, (1, 1), "w.pt")  # two widths for three tables
