"""The embedding layer of DLRM, by choice: full tables, ROBE, the hashing trick, or quotient-remainder.

Every choice keeps the contract of :class:`~mlgauge.models.dlrm.MultiHotEmbeddings`:
``forward(sparse (B, W) int64) -> (B, F, D)``, sum-pooled over each feature's fixed slot range, with
``num_features``, ``embedding_dim`` and ``multi_hot_sizes``; so the model, the training loop and the
data are the same whatever the choice.

- ``full``: one table per feature (what MLPerf's DLRM-v2 trains).
- ``robe``: every feature reads one shared learned array of ``size`` floats through ROBE-Z's hash
  (Desai et al., MLSys 2022; :mod:`mlgauge.ops.robe`); memory is the array, whatever the vocabulary.
- ``hashing``: the hashing trick, each table cut to ``ceil(rows / compression)`` rows and ids taken
  modulo that (Weinberger et al. 2009); colliding ids share a row.
- ``qr``: the quotient-remainder trick (Shi et al., KDD 2020): two tables per feature, the quotient
  ``id // k`` (``ceil(rows / k)`` rows) and the remainder ``id % k`` (``k`` rows), multiplied
  element-wise, so no two ids share both rows; ``k = ceil(compression)`` gives about ``compression``
  times fewer rows on large tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mlgauge.errors import UsageError, choice_error

KINDS = ("full", "robe", "hashing", "qr")
FLOAT_BYTES = 4
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """``"100MB"`` (decimal units, as the ROBE paper counts), ``"64MiB"``, ``"4096"`` -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(f"cannot read the size '{text}'", hint="Write it like 100MB, 64MiB or 4096 (bytes)")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class EmbeddingChoice:
    kind: str = "full"
    robe_bytes: int | None = None  # robe: the shared array's size in bytes
    compression: float | None = None  # hashing, qr: how many times fewer rows than the full tables
    block_size: int = 32  # robe: Z, floats read contiguously per hash
    seed: int = 1024  # robe: the hash's draw (the authors' default)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise choice_error("embedding", self.kind, KINDS)
        if self.kind == "robe" and (self.robe_bytes is None or self.robe_bytes < FLOAT_BYTES):
            raise UsageError("ROBE needs the size of its shared array", hint="For example --robe-size 100MB")
        if self.kind in ("hashing", "qr") and (self.compression is None or self.compression < 1):
            raise UsageError(f"--embedding {self.kind} needs a compression >= 1",
                             hint="For example --compression 1000")  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> EmbeddingChoice:
        return cls(**(data or {}))

    def describe(self) -> str:
        if self.kind == "robe":
            return f"robe {self.robe_bytes / 1e6:g} MB (Z={self.block_size})"
        if self.kind in ("hashing", "qr"):
            return f"{self.kind} {self.compression:g}x"
        return "full"


def _slots(multi_hot_sizes: Sequence[int]) -> tuple[tuple[int, int], ...]:
    starts = [0]
    for k in multi_hot_sizes:
        starts.append(starts[-1] + int(k))
    return tuple(zip(starts[:-1], starts[1:], strict=True))


class _PooledFeatures(nn.Module):
    """Shared bookkeeping: the features' slot ranges and the contract's attributes."""

    def __init__(self, multi_hot_sizes: Sequence[int], embedding_dim: int) -> None:
        super().__init__()
        self.multi_hot_sizes = tuple(int(k) for k in multi_hot_sizes)
        self.num_features = len(self.multi_hot_sizes)
        self.embedding_dim = int(embedding_dim)
        self.slots = _slots(self.multi_hot_sizes)  # Python ints: constant slices in an exported graph

    def parameter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())


class HashedEmbeddings(_PooledFeatures):
    """The hashing trick: feature f's ids are taken modulo its shrunken table's rows."""

    def __init__(self, num_embeddings: Sequence[int], multi_hot_sizes: Sequence[int], embedding_dim: int,
                 compression: float) -> None:  # fmt: skip
        super().__init__(multi_hot_sizes, embedding_dim)
        self.rows = tuple(max(1, math.ceil(int(n) / compression)) for n in num_embeddings)
        self.tables = nn.ModuleList(nn.Embedding(n, self.embedding_dim) for n in self.rows)
        for table in self.tables:
            bound = math.sqrt(1.0 / table.num_embeddings)
            nn.init.uniform_(table.weight, -bound, bound)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        pooled = [table(torch.remainder(sparse[:, a:b], rows)).sum(dim=1)
                  for table, rows, (a, b) in zip(self.tables, self.rows, self.slots, strict=True)]  # fmt: skip
        return torch.stack(pooled, dim=1)


class QuotientRemainderEmbeddings(_PooledFeatures):
    """Quotient and remainder tables per feature, combined by element-wise product (Shi et al.'s best)."""

    def __init__(self, num_embeddings: Sequence[int], multi_hot_sizes: Sequence[int], embedding_dim: int,
                 compression: float) -> None:  # fmt: skip
        super().__init__(multi_hot_sizes, embedding_dim)
        self.divisor = max(1, math.ceil(compression))
        self.quotients = nn.ModuleList(
            nn.Embedding(max(1, math.ceil(int(n) / self.divisor)), self.embedding_dim) for n in num_embeddings
        )
        self.remainders = nn.ModuleList(
            nn.Embedding(min(self.divisor, int(n)), self.embedding_dim) for n in num_embeddings
        )
        for table in (*self.quotients, *self.remainders):
            # the product of two U(±b) factors: b = (1/n)^(1/4) keeps it on the full table's scale
            bound = (1.0 / table.num_embeddings) ** 0.25
            nn.init.uniform_(table.weight, -bound, bound)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        pooled = []
        for q, r, (a, b) in zip(self.quotients, self.remainders, self.slots, strict=True):
            ids = sparse[:, a:b]
            pooled.append((q(torch.div(ids, self.divisor, rounding_mode="floor"))
                           * r(torch.remainder(ids, r.num_embeddings))).sum(dim=1))  # fmt: skip
        return torch.stack(pooled, dim=1)


class RobeEmbeddings(_PooledFeatures):
    """Every feature's table reads the one shared ROBE array (table offsets = rows of the tables before)."""

    def __init__(self, num_embeddings: Sequence[int], multi_hot_sizes: Sequence[int], embedding_dim: int,
                 choice: EmbeddingChoice) -> None:  # fmt: skip
        from mlgauge.ops.robe import RobeEmbeddingBag

        super().__init__(multi_hot_sizes, embedding_dim)
        size = choice.robe_bytes // FLOAT_BYTES
        self.tables = RobeEmbeddingBag.shared(
            [int(n) for n in num_embeddings], self.embedding_dim, size, block_size=choice.block_size,
            mode="sum", seed=choice.seed,
        )  # fmt: skip

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        # one call for every table: one gradient of the shared array per step, not one per table
        return torch.stack(self.tables([sparse[:, a:b] for a, b in self.slots]), dim=1)


def build_embeddings(choice: EmbeddingChoice, num_embeddings: Sequence[int], multi_hot_sizes: Sequence[int],
                     embedding_dim: int) -> nn.Module | None:  # fmt: skip
    """The embedding layer for ``choice``; None for ``full`` (DLRMv2 builds its own tables)."""
    if choice.kind == "robe":
        return RobeEmbeddings(num_embeddings, multi_hot_sizes, embedding_dim, choice)
    if choice.kind == "hashing":
        return HashedEmbeddings(num_embeddings, multi_hot_sizes, embedding_dim, choice.compression)
    if choice.kind == "qr":
        return QuotientRemainderEmbeddings(num_embeddings, multi_hot_sizes, embedding_dim, choice.compression)
    return None


def embedding_bytes(model: nn.Module) -> int:
    """Bytes of a DLRM's embedding parameters, whatever the choice."""
    return sum(p.numel() * p.element_size() for p in model.embeddings.parameters())
