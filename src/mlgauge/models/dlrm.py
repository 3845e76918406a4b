"""DLRM-v2: MLPerf's recommendation model, DLRM with a low-rank DCNv2 cross interaction.

The layout follows TorchRec's ``DLRM_DCN``, the model MLPerf's DLRM-v2 reference trains and serves:

* dense features ``(B, 13)`` -> bottom MLP, ReLU after every layer; its last width is the embedding dim D;
* sparse features ``(B, W)`` -> one table per categorical feature, sum-pooled over that feature's
  multi-hot slots (``nn.EmbeddingBag(mode="sum")`` semantics) -> ``(B, F, D)``;
* ``[bottom_out, e_1 .. e_F]`` flattened to ``(B, (F+1)·D)`` -> ``L`` low-rank DCNv2 cross layers
  ``x_{l+1} = x_0 ⊙ (W_l (V_l x_l) + b_l) + x_l`` (``V_l``: rank × N, ``W_l``: N × rank);
* top MLP, ReLU between layers and none after the last (width 1) -> sigmoid: a click probability.

The sparse input is one int64 matrix with a fixed slot range per feature (feature 0's ``k_0`` ids
first, then feature 1's, ...), because every Criteo multi-hot feature of MLPerf's data has a fixed
width. Pooling is ``embedding(ids).sum(1)`` per slot range: it exports to ONNX with a dynamic batch
(an ``EmbeddingBag`` with offsets does not) and holds the same ``weight`` tensors, so EmbeddingBag
weights load unchanged.

The embedding layer is its own module, handed to ``DLRMv2`` (default: ``MultiHotEmbeddings``), so a
compressed embedding (hashing trick, QR, ROBE) can replace it without touching the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mlgauge.errors import ModelError
from mlgauge.ops.graph import recording_graph

NUM_DENSE_FEATURES = 13
NUM_SPARSE_FEATURES = 26
# MLPerf's row cap: Criteo 1TB's five largest vocabularies are hashed (mod) into 40M rows.
MAX_IND_RANGE = 40_000_000
# Rows per table of MLPerf DLRM-v2 (torchrec_dlrm README, --num_embeddings_per_feature): the Criteo
# 1TB vocabulary sizes, capped at MAX_IND_RANGE. 204,184,588 rows in all.
REFERENCE_NUM_EMBEDDINGS: tuple[int, ...] = (
    40_000_000, 39_060, 17_295, 7_424, 20_265, 3, 7_122, 1_543, 63, 40_000_000, 3_067_956, 405_282, 10,
    2_209, 11_938, 155, 4, 976, 14, 40_000_000, 40_000_000, 40_000_000, 590_152, 12_973, 108, 36,
)  # fmt: skip
# Ids per sample and feature in MLPerf's synthetic multi-hot Criteo (--multi_hot_sizes); 214 in all.
REFERENCE_MULTI_HOT_SIZES: tuple[int, ...] = (
    3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1,
)  # fmt: skip


@dataclass(frozen=True)
class DlrmConfig:
    """Sizes of a DLRM-v2. The defaults other than the tables are MLPerf's reference."""

    num_embeddings: tuple[int, ...]  # rows per table, one table per sparse feature
    multi_hot_sizes: tuple[int, ...]  # ids per sample for each sparse feature (its slot width)
    embedding_dim: int = 128
    num_dense: int = NUM_DENSE_FEATURES
    bottom_mlp: tuple[int, ...] = (512, 256, 128)
    top_mlp: tuple[int, ...] = (1024, 1024, 512, 256, 1)
    dcn_layers: int = 3
    dcn_rank: int = 512

    def __post_init__(self) -> None:
        for name in ("num_embeddings", "multi_hot_sizes", "bottom_mlp", "top_mlp"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        problems = []
        if not self.num_embeddings or len(self.num_embeddings) != len(self.multi_hot_sizes):
            problems.append(
                f"{len(self.num_embeddings)} tables but {len(self.multi_hot_sizes)} multi-hot sizes"
            )
        if any(v < 1 for v in (*self.num_embeddings, *self.multi_hot_sizes, *self.bottom_mlp, *self.top_mlp)):
            problems.append("every size must be >= 1")
        if not self.bottom_mlp or self.bottom_mlp[-1] != self.embedding_dim:
            problems.append(f"the bottom MLP must end at the embedding dim {self.embedding_dim}: {self.bottom_mlp}")
        if len(self.top_mlp) < 1 or self.top_mlp[-1] != 1:
            problems.append(f"the top MLP must end in one unit (the click logit): {self.top_mlp}")
        if self.dcn_layers < 0 or self.dcn_rank < 1 or self.num_dense < 1 or self.embedding_dim < 1:
            problems.append("dcn_layers >= 0 and dcn_rank, num_dense, embedding_dim >= 1")
        if problems:
            raise ValueError("invalid DLRM-v2 config: " + "; ".join(problems))

    @classmethod
    def reference(cls) -> DlrmConfig:
        """MLPerf's DLRM-v2: ~26.2 billion parameters (~97 GiB fp32). Build it on ``device="meta"``."""
        return cls(REFERENCE_NUM_EMBEDDINGS, REFERENCE_MULTI_HOT_SIZES)

    @property
    def num_sparse(self) -> int:
        return len(self.num_embeddings)

    @property
    def sparse_width(self) -> int:
        """Columns of the sparse input: all features' multi-hot slots side by side."""
        return sum(self.multi_hot_sizes)

    @property
    def interaction_dim(self) -> int:
        """Width N of the cross network: the bottom MLP output plus one pooled embedding per feature."""
        return (self.num_sparse + 1) * self.embedding_dim

    def embedding_parameter_count(self) -> int:
        return sum(self.num_embeddings) * self.embedding_dim

    def parameter_count(self) -> int:
        """Parameters of the model this config builds, from the sizes alone (no allocation)."""

        def mlp(fan_in: int, widths: Sequence[int]) -> int:
            ins = (fan_in, *widths[:-1])
            return sum((i + 1) * o for i, o in zip(ins, widths, strict=True))  # weights + biases

        n = self.interaction_dim
        cross = self.dcn_layers * (2 * n * self.dcn_rank + n)  # V (r×N), W (N×r), b (N) per layer
        return (
            self.embedding_parameter_count()
            + mlp(self.num_dense, self.bottom_mlp)
            + cross
            + mlp(n, self.top_mlp)
        )

    def to_dict(self) -> dict:
        """JSON-ready (lists, not tuples), so a dict read back from JSON compares equal."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> DlrmConfig:
        return cls(**data)


class MultiHotEmbeddings(nn.Module):
    """One table per sparse feature, sum-pooled over that feature's fixed slot range.

    ``forward(sparse (B, W) int64) -> (B, F, D)``. Any replacement embedding must keep this contract
    and expose ``num_features``, ``embedding_dim`` and ``multi_hot_sizes``.
    """

    def __init__(
        self,
        num_embeddings: Sequence[int],
        multi_hot_sizes: Sequence[int],
        embedding_dim: int,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if len(num_embeddings) != len(multi_hot_sizes):
            raise ValueError(f"{len(num_embeddings)} tables but {len(multi_hot_sizes)} multi-hot sizes")
        self.num_features = len(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.multi_hot_sizes = tuple(int(k) for k in multi_hot_sizes)
        self.tables = nn.ModuleList(nn.Embedding(int(n), self.embedding_dim, device=device) for n in num_embeddings)
        # Python ints, not a buffer: the slot ranges become constant slices in an exported graph.
        starts = [0]
        for k in self.multi_hot_sizes:
            starts.append(starts[-1] + k)
        self.slots = tuple(zip(starts[:-1], starts[1:], strict=True))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # TorchRec's default table init (what DLRM-v2 trains from): U(-sqrt(1/n), sqrt(1/n)).
        for table in self.tables:
            if table.weight.device.type != "meta":
                bound = math.sqrt(1.0 / table.num_embeddings)
                nn.init.uniform_(table.weight, -bound, bound)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        pairs = zip(self.tables, self.slots, strict=True)
        if recording_graph():
            # embedding_bag exports to an ONNX Loop that runs several times slower than Gather + ReduceSum
            pooled = [table(sparse[:, a:b]).sum(dim=1) for table, (a, b) in pairs]
        else:
            # pooled as it is gathered: materializing (B, k, D) first costs up to 5x on multi-hot bags
            pooled = [nn.functional.embedding_bag(sparse[:, a:b], table.weight, mode="sum") for table, (a, b) in pairs]
        return torch.stack(pooled, dim=1)


class MLP(nn.Module):
    """Linear layers with ReLU between them, and after the last one when ``final_relu``."""

    def __init__(self, fan_in: int, widths: Sequence[int], *, final_relu: bool, device=None) -> None:
        super().__init__()
        ins = (fan_in, *widths[:-1])
        self.layers = nn.ModuleList(nn.Linear(i, o, device=device) for i, o in zip(ins, widths, strict=True))
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.final_relu:
                x = torch.relu(x)
        return x


class LowRankCrossNet(nn.Module):
    """DCNv2 cross layers with low-rank weights: ``x_{l+1} = x_0 ⊙ (W_l (V_l x_l) + b_l) + x_l``.

    Parameter names and shapes match TorchRec's ``LowRankCrossNet`` (``W_kernels`` N×r,
    ``V_kernels`` r×N, ``bias`` N); the same init (Xavier normal, zero bias).
    """

    def __init__(self, in_features: int, num_layers: int, rank: int, device=None) -> None:
        super().__init__()
        self.W_kernels = nn.ParameterList(
            nn.Parameter(torch.empty(in_features, rank, device=device)) for _ in range(num_layers)
        )
        self.V_kernels = nn.ParameterList(
            nn.Parameter(torch.empty(rank, in_features, device=device)) for _ in range(num_layers)
        )
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(in_features, device=device)) for _ in range(num_layers))
        for w, v in zip(self.W_kernels, self.V_kernels, strict=True):
            if w.device.type != "meta":
                nn.init.xavier_normal_(w)
                nn.init.xavier_normal_(v)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, v, b in zip(self.W_kernels, self.V_kernels, self.bias, strict=True):
            x = x0 * (nn.functional.linear(nn.functional.linear(x, v), w) + b) + x
        return x


class DLRMv2(nn.Module):
    """``forward(dense (B, 13) float32, sparse (B, W) int64) -> (B, 1)`` click probability."""

    def __init__(
        self,
        config: DlrmConfig,
        embeddings: nn.Module | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        if embeddings is None:
            embeddings = MultiHotEmbeddings(config.num_embeddings, config.multi_hot_sizes, config.embedding_dim, device)
        if embeddings.embedding_dim != config.embedding_dim or embeddings.num_features != config.num_sparse:
            raise ValueError(
                f"the embedding layer gives {embeddings.num_features} features of dim {embeddings.embedding_dim}; "
                f"the config wants {config.num_sparse} of dim {config.embedding_dim}"
            )
        self.bottom_mlp = MLP(config.num_dense, config.bottom_mlp, final_relu=True, device=device)
        self.embeddings = embeddings
        self.interaction = LowRankCrossNet(config.interaction_dim, config.dcn_layers, config.dcn_rank, device=device)
        self.top_mlp = MLP(config.interaction_dim, config.top_mlp, final_relu=False, device=device)

    def logits(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom_mlp(dense)  # (B, D)
        pooled = self.embeddings(sparse)  # (B, F, D)
        features = torch.cat([bottom.unsqueeze(1), pooled], dim=1).flatten(1)  # (B, (F+1)·D)
        return self.top_mlp(self.interaction(features))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(dense, sparse))


# -- TorchRec checkpoints -------------------------------------------------------------------------

# TorchRec's DLRM_DCN parameter names (MLPerf's reference), optionally under DLRMTrain's "model.".
_TORCHREC_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"sparse_arch\.embedding_bag_collection\.embedding_bags\.t_cat_(\d+)\.weight"), "embeddings.tables.{0}.weight"),
    (re.compile(r"dense_arch\.model\._mlp\.(\d+)\._linear\.(weight|bias)"), "bottom_mlp.layers.{0}.{1}"),
    (re.compile(r"inter_arch\.crossnet\.(W_kernels|V_kernels|bias)\.(\d+)"), "interaction.{0}.{1}"),
    (re.compile(r"over_arch\.model\.0\._mlp\.(\d+)\._linear\.(weight|bias)"), "top_mlp.layers.{0}.{1}"),
)  # fmt: skip
_TORCHREC_LAST = re.compile(r"over_arch\.model\.1\.(weight|bias)")


def is_torchrec_state_dict(state: dict) -> bool:
    return any(k.removeprefix("model.").startswith(("dense_arch.", "over_arch.", "sparse_arch.")) for k in state)


def from_torchrec_state_dict(state: dict) -> dict:
    """Rename a TorchRec ``DLRM_DCN`` state dict (as MLPerf's reference trains it) to this module's names.

    Unknown keys are kept as they are, so a strict load reports them.
    """
    plain = {k.removeprefix("model."): v for k, v in state.items()}
    hidden = [int(m.group(1)) for k in plain if (m := _TORCHREC_RULES[3][0].fullmatch(k))]
    last_index = max(hidden, default=-1) + 1  # the final Linear follows the hidden layers
    out = {}
    for key, value in plain.items():
        new = key
        for pattern, template in _TORCHREC_RULES:
            if m := pattern.fullmatch(key):
                new = template.format(*m.groups())
                break
        else:
            if m := _TORCHREC_LAST.fullmatch(key):
                new = f"top_mlp.layers.{last_index}.{m.group(1)}"
        out[new] = value
    return out


def _indexed_shapes(state: dict, pattern: str) -> list[tuple[int, ...]]:
    found = {}
    regex = re.compile(pattern)
    for key, value in state.items():
        if m := regex.fullmatch(key):
            found[int(m.group(1))] = tuple(value.shape)
    if sorted(found) != list(range(len(found))):
        raise KeyError(f"{pattern} has gaps: {sorted(found)}")
    return [found[i] for i in range(len(found))]


def config_from_state_dict(state: dict, multi_hot_sizes: Sequence[int], source: object = "state dict") -> DlrmConfig:
    """The sizes a (this module's layout) state dict was trained with; multi-hot widths come from the data."""
    try:
        tables = _indexed_shapes(state, r"embeddings\.tables\.(\d+)\.weight")
        bottom = _indexed_shapes(state, r"bottom_mlp\.layers\.(\d+)\.weight")
        top = _indexed_shapes(state, r"top_mlp\.layers\.(\d+)\.weight")
        v_kernels = _indexed_shapes(state, r"interaction\.V_kernels\.(\d+)")
        if not (tables and bottom and top):
            raise KeyError("embedding tables, bottom MLP and top MLP weights are all required")
        return DlrmConfig(
            num_embeddings=tuple(shape[0] for shape in tables),
            multi_hot_sizes=tuple(multi_hot_sizes),
            embedding_dim=tables[0][1],
            num_dense=bottom[0][1],
            bottom_mlp=tuple(shape[0] for shape in bottom),
            top_mlp=tuple(shape[0] for shape in top),
            dcn_layers=len(v_kernels),
            dcn_rank=v_kernels[0][0] if v_kernels else 1,
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise ModelError(
            f"{source} is not a DLRM-v2 state dict this model can read: {exc}",
            hint="Give a state dict of mlgauge's DLRMv2 or of TorchRec's DLRM_DCN (MLPerf's reference), or an .onnx file",
        ) from None


def build_from_state_dict(state: dict, multi_hot_sizes: Sequence[int], source: object = "state dict") -> DLRMv2:
    """A DLRMv2 holding ``state``'s tensors without a second copy (built on ``meta``, then assigned)."""
    if is_torchrec_state_dict(state):
        state = from_torchrec_state_dict(state)
    config = config_from_state_dict(state, multi_hot_sizes, source)
    # assign=True keeps the given tensors, so they must already be fp32 (a no-op for fp32 files).
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model = DLRMv2(config, device="meta")
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # a shape that disagrees with the sizes read from the other tensors
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelError(f"{source} does not fit the model: {first}") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise ModelError(
            f"{source} does not fit the model: {len(missing)} missing and {len(unexpected)} unexpected tensors "
            f"(e.g. {(missing or unexpected)[0]})",
            hint="Use weights of a DLRM-v2 (DCNv2 interaction) model",
        )
    return model.eval()

