"""ROBE-Z embedding bags: many embedding tables stored in one small learned array.

ROBE (Random Offset Block Embedding; Desai, Chou and Shrivastava, MLSys 2022, arXiv 2108.02191)
replaces every table of a recommendation model by lookups into one shared array M of m floats.
The map, exactly as the authors' code computes it (``hashed_embedding_bag_kernel.cu`` in
github.com/apd10/universal_memory_allocation)::

    x        = row + offset_t                    # offset_t: rows of the tables before table t
    h(x, c)  = (a·x + b·c + r) mod P,  P = 2038074743 (prime)
    E[t, row][j] = M[ h(x, j // Z) mod (m − Z + 1) + j mod Z ]      for 0 <= j < dim

Each run of Z coordinates (a block) is one contiguous slice of M starting at a hashed offset, so
a row costs ceil(dim / Z) random reads. A block never wraps past the end of M (its start is drawn
from 0..m − Z). The table enters the hash only through offset_t. There is no sign hash. (a, b, r)
come from ``numpy.random.RandomState(seed).randint(0, P, 50)`` as (draw 2, draw 1, draw 0), the
authors' ``random_numbers[3], [2], [1]``; their default seed is 1024, for which
(a, b, r) = (871205356, 1825252241, 634329019). Z = 1 hashes every coordinate on its own
(HashedNet-like); Z = dim reads each row as one slice. Rows of different tables that hash to the
same floats share them, and their gradients add.

``RobeEmbeddingBag`` takes ``nn.EmbeddingBag``'s calling convention; ``RobeEmbeddingBag.shared``
builds the tables of a model on one array, as a ``RobeTables`` list that can also pool every table
in one call. On CPU (float32/float64) a C++ kernel (``robe.cpp``) hashes, gathers and pools each
bag in one pass and writes the dense gradient of M without atomics, bitwise the same on any number
of threads. Each call's backward costs O(m) besides its lookups (a dense m-float gradient, which
autograd then adds to the others), so a training step over many tables with a large M is cheaper
through the one call. On other devices, without a compiler, and in exported graphs, the same map
runs as PyTorch ops: ``robe_locations``, a gather, then a sum over fixed-width bags (or
``embedding_bag`` over the gathered rows for bags given by offsets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlgauge.errors import DataError, UsageError, choice_error
from mlgauge.ops.build import fused_kernel
from mlgauge.ops.graph import recording_graph

PRIME = 2038074743
DEFAULT_SEED = 1024  # the authors' HashedEmbeddingBag default
MODES = ("sum", "mean")
BACKENDS = ("auto", "kernel", "torch")


class RobeHash(NamedTuple):
    """The coefficients of h(x, c) = (a·x + b·c + r) mod PRIME."""

    a: int
    b: int
    r: int

    @classmethod
    def from_seed(cls, seed: int = DEFAULT_SEED) -> RobeHash:
        # The authors draw 50 numbers and use [P, d0, d1, d2, ...][3], [2], [1] as a, b, r.
        draws = np.random.RandomState(seed).randint(0, PRIME, (50,), dtype=np.int64)
        return cls(a=int(draws[2]), b=int(draws[1]), r=int(draws[0]))


def robe_locations(
    ids: torch.Tensor, dim: int, block: int, size: int, hash: RobeHash, table_offset: int = 0
) -> torch.Tensor:
    """Where each coordinate of each row lives in M: int64 of shape (*ids.shape, dim).

    ``ids`` are rows of one table; ``table_offset`` (the rows of the tables before it) makes them
    global. The reference the kernel is tested against; vectorized, no loop over rows.
    """
    _check_shape(dim, block, size)
    x = (ids.to(torch.int64) + table_offset) % PRIME  # reduced first, so a·x < 2^62 never overflows
    c = torch.arange(-(-dim // block), device=ids.device)
    base = (hash.a * x + hash.r) % PRIME
    start = ((base.unsqueeze(-1) + hash.b * c) % PRIME) % (size - block + 1)  # (..., blocks)
    # hashed once per block, not per coordinate: in an exported graph the modulos are most of the work
    within = torch.arange(min(block, dim), device=ids.device)
    return (start.unsqueeze(-1) + within).flatten(-2)[..., :dim]


def _check_shape(dim: int, block: int, size: int) -> None:
    if dim < 1:
        raise UsageError(f"embedding_dim {dim} is not positive", hint="Give embedding_dim >= 1")
    if block < 1:
        raise UsageError(f"ROBE block size {block} is below 1", hint="Give block_size >= 1 (authors: 32)")
    if size < block:
        raise UsageError(
            f"ROBE array of {size} floats is smaller than one block of {block}",
            hint=f"Give size >= block_size ({block}); a useful size is far larger, e.g. rows x dim / 1000",
        )
    if size - block + 1 > PRIME:
        raise UsageError(
            f"ROBE array of {size} floats is larger than the hash can address ({PRIME + block - 1})",
            hint=f"Give size <= {PRIME + block - 1}",
        )


def _use_kernel(weight: torch.Tensor, backend: str):
    if backend not in BACKENDS:
        raise choice_error("ROBE backend", backend, BACKENDS)
    runs_here = weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.float64)
    # an exported or traced graph (ONNX, torch.export, TorchScript) cannot hold the C++ op: it gets the
    # PyTorch ops, which every runtime has
    if backend == "torch" or not runs_here or (recording_graph() and backend == "auto"):
        if backend == "kernel":
            raise UsageError("the ROBE kernel runs float32/float64 on CPU", hint="Use backend 'auto'")
        return None
    kernel = fused_kernel("robe")
    if kernel is None and backend == "kernel":
        raise UsageError("the ROBE kernel could not be built here", hint="Install g++ and ninja")
    return kernel


def robe_embedding_bag(
    weight: torch.Tensor,
    ids: torch.Tensor,
    offsets: torch.Tensor | None = None,
    per_sample_weights: torch.Tensor | None = None,
    *,
    rows: int,
    dim: int,
    block: int,
    hash: RobeHash,
    table_offset: int = 0,
    mode: str = "sum",
    table: int | str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Pooled ROBE rows of one table of ``rows`` rows, (bags, dim), on input in one of two forms.

    2-D ``ids`` (bags, bag size) without offsets, or 1-D ``ids`` with ``offsets`` (int64, starting
    at 0, never decreasing, include_last_offset False); per_sample_weights 1-D, one per id.
    ``backend``: "kernel" (C++, CPU), "torch" (PyTorch ops) or "auto" (the kernel where it runs).
    An id outside 0..rows-1 raises DataError naming ``table``. ``RobeEmbeddingBag`` checks the rest.
    """
    kernel = _use_kernel(weight, backend)
    if kernel is None:
        psw = per_sample_weights
        return _torch_bag(weight, ids, offsets, psw, rows, dim, block, hash, table_offset, mode, table)
    width, bags = (ids.shape[1], ids.shape[0]) if offsets is None else (0, offsets.numel())
    try:
        tables = [bags, table_offset, rows]
        flat = ids.reshape(-1).contiguous()
        psw, mean = per_sample_weights, mode == "mean"
        return kernel.bag(weight, flat, offsets, width, psw, tables, dim, block, *hash, mean)[0]
    except IndexError:  # the kernel checks ids as it reads them; name the first bad one
        _check_ids(ids, rows, table)
        raise


def _torch_bag(weight, ids, offsets, psw, rows, dim, block, hash, table_offset, mode, table) -> torch.Tensor:
    _check_ids(ids, rows, table)
    locations = robe_locations(ids, dim, block, weight.numel(), hash, table_offset)  # (*ids.shape, dim)
    # index_select exports as ONNX Gather, which runs faster than the GatherND of weight[locations]
    gathered = weight.index_select(0, locations.reshape(-1)).reshape(locations.shape)
    if offsets is None:
        # Fixed-width bags are a sum: exporters keep it as it is, where they turn embedding_bag into a
        # loop over bags (the DLRM stand-in ran 20x slower in ONNX Runtime that way).
        if psw is not None:
            gathered = gathered * psw.reshape(ids.shape).unsqueeze(-1)
        pooled = gathered.sum(dim=1)
        return pooled / max(1, ids.shape[1]) if mode == "mean" else pooled
    positions = torch.arange(ids.numel(), device=ids.device)
    return F.embedding_bag(positions, gathered, offsets, mode=mode, per_sample_weights=psw)


def _check_ids(ids: torch.Tensor, rows: int, table: int | str | None) -> None:
    if ids.numel() == 0 or recording_graph():  # a recorded graph holds no ids to check
        return
    low, high = torch.aminmax(ids)
    if int(low) >= 0 and int(high) < rows:
        return
    bad = int(ids[(ids < 0) | (ids >= rows)][0])
    name = f"table {table}" if table is not None else "the table"
    raise DataError(
        f"id {bad} is out of range for {name}, which has {rows} rows",
        hint=f"Ids must lie in 0..{rows - 1}; hash or cap larger ids first (max_ind_range)",
    )


def _as_bags(
    input: torch.Tensor,
    offsets: torch.Tensor | None,
    per_sample_weights: torch.Tensor | None,
    mode: str,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """nn.EmbeddingBag's two input forms, checked: (ids as given, int64 offsets or None, 1-D weights)."""
    if input.dtype not in (torch.int32, torch.int64):
        raise UsageError(f"ROBE ids of dtype {input.dtype}", hint="Give int64 (or int32) ids")
    if input.dim() == 2:
        if offsets is not None:
            raise UsageError(
                "offsets given with 2-D input", hint="2-D input is (bags, bag size): drop offsets"
            )
        if input.shape[1] == 0:  # empty bags: the offsets form handles them
            offsets = torch.zeros(input.shape[0], dtype=torch.int64, device=input.device)
    elif input.dim() == 1:
        if offsets is None:
            hint = "Give offsets (where each bag starts), as nn.EmbeddingBag, or 2-D input (bags, bag size)"
            raise UsageError("1-D input without offsets", hint=hint)
        _check_offsets(offsets, input.numel())
    else:
        raise UsageError(
            f"ROBE input of {input.dim()} dimensions", hint="Give 1-D ids with offsets or 2-D bags"
        )
    if per_sample_weights is not None:
        if mode != "sum":
            raise UsageError(
                f"per_sample_weights with mode '{mode}'", hint="Weights work with mode='sum' only"
            )
        if per_sample_weights.shape != input.shape:
            raise UsageError(
                f"per_sample_weights of shape {tuple(per_sample_weights.shape)} "
                f"for input {tuple(input.shape)}",
                hint="Give one weight per id, in the input's shape",
            )
        per_sample_weights = per_sample_weights.reshape(-1).to(dtype)
    if offsets is not None:
        input, offsets = input.reshape(-1), offsets.long()
    return input.long(), offsets, per_sample_weights


def _check_offsets(offsets: torch.Tensor, n_ids: int) -> None:
    if offsets.dim() != 1 or offsets.dtype not in (torch.int32, torch.int64):
        raise UsageError(
            "offsets must be a 1-D integer tensor", hint="Give where each bag starts in the input"
        )
    if offsets.numel() == 0:
        return
    first, last = int(offsets[0]), int(offsets[-1])
    if first != 0:
        raise UsageError(f"offsets start at {first}, not 0", hint="The first bag starts at position 0")
    if last > n_ids:
        raise UsageError(
            f"offsets run to {last}, past the input's {n_ids} ids", hint="Keep every offset <= len(input)"
        )
    steps = offsets.diff()
    if steps.numel() and int(steps.min()) < 0:
        at = int(torch.nonzero(steps < 0)[0]) + 1
        raise UsageError(f"offsets decrease at position {at}", hint="Offsets must never decrease")


class RobeEmbeddingBag(nn.Module):
    """One table of ROBE-Z embeddings, called like ``nn.EmbeddingBag``.

    Give ``size`` (floats in a new array M) or ``weight`` (a 1-D Parameter shared with other
    tables; ``table_offset`` = the rows of the tables before this one). ``block_size`` is Z.
    ``forward(input, offsets=None, per_sample_weights=None)`` -> (bags, embedding_dim).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        size: int | None = None,
        weight: nn.Parameter | None = None,
        block_size: int = 32,
        table_offset: int = 0,
        mode: str = "sum",
        seed: int = DEFAULT_SEED,
        table: int | str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if (size is None) == (weight is None):
            raise UsageError(
                "give exactly one of size and weight", hint="size makes a new array; weight shares one"
            )
        if mode not in MODES:
            raise choice_error("ROBE pooling mode", mode, MODES)
        if num_embeddings < 1:
            raise UsageError(f"num_embeddings {num_embeddings} is below 1", hint="A table needs >= 1 row")
        if weight is not None and weight.dim() != 1:
            raise UsageError(f"ROBE weight of shape {tuple(weight.shape)}", hint="The shared array is 1-D")
        _check_shape(embedding_dim, block_size, weight.numel() if weight is not None else int(size))
        if weight is None:
            bound = math.sqrt(1 / num_embeddings)  # the authors' U(±sqrt(1/rows)), as DLRM's per-table init
            weight = nn.Parameter(torch.empty(int(size), dtype=dtype, device=device).uniform_(-bound, bound))
        self.weight = weight
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.block_size, self.table_offset, self.mode, self.seed = block_size, table_offset, mode, seed
        self.table = table
        self.hash = RobeHash.from_seed(seed)
        self.backend = "auto"  # "torch" forces the PyTorch path (tests, comparisons)

    @property
    def size(self) -> int:
        return self.weight.numel()

    @classmethod
    def shared(
        cls,
        num_embeddings: Sequence[int],
        embedding_dim: int,
        size: int,
        block_size: int = 32,
        mode: str = "sum",
        seed: int = DEFAULT_SEED,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> RobeTables:
        """One module per table, all reading one array of ``size`` floats; table t's rows follow
        those of tables 0..t-1. Init U(±sqrt(1 / largest table)), as the authors' DLRM. The
        result is an nn.ModuleList that can also look up every table in one call."""
        if not num_embeddings or min(num_embeddings) < 1:
            raise UsageError(
                f"table sizes {list(num_embeddings)}", hint="Give >= 1 table, each with >= 1 row"
            )
        _check_shape(embedding_dim, block_size, size)
        bound = math.sqrt(1 / max(num_embeddings))
        weight = nn.Parameter(torch.empty(size, dtype=dtype, device=device).uniform_(-bound, bound))
        offsets = np.cumsum([0, *num_embeddings[:-1]]).tolist()
        return RobeTables(
            cls(n, embedding_dim, weight=weight, block_size=block_size, table_offset=int(off), mode=mode,
                seed=seed, table=t)
            for t, (n, off) in enumerate(zip(num_embeddings, offsets, strict=True))
        )

    def forward(
        self,
        input: torch.Tensor,
        offsets: torch.Tensor | None = None,
        per_sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ids, offsets, psw = _as_bags(input, offsets, per_sample_weights, self.mode, self.weight.dtype)
        return robe_embedding_bag(
            self.weight, ids, offsets, psw, rows=self.num_embeddings, dim=self.embedding_dim,
            block=self.block_size, hash=self.hash, table_offset=self.table_offset, mode=self.mode,
            table=self.table, backend=self.backend,
        )

    def memory_bytes(self) -> int:
        """Bytes of the array M; tables sharing it all report the same array."""
        return self.weight.numel() * self.weight.element_size()

    def extra_repr(self) -> str:
        table = f", table={self.table}" if self.table is not None else ""
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, size={self.size}, block_size={self.block_size}, "
            f"table_offset={self.table_offset}, mode={self.mode!r}, seed={self.seed}{table}"
        )


class RobeTables(nn.ModuleList):
    """The tables of ``RobeEmbeddingBag.shared``: index it for one table, or call it with one input
    per table to pool them all in one kernel call. On CPU that call computes one m-float gradient
    per step instead of one per table, which is what keeps the backward pass cheap when m is large.
    """

    def forward(
        self, inputs: Sequence[torch.Tensor], offsets: Sequence[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """[(bags_t, dim)]: table t pools ``inputs[t]`` (2-D, or 1-D with ``offsets[t]``), as
        calling ``self[t](inputs[t], offsets[t])`` for every t would."""
        if len(inputs) != len(self) or (offsets is not None and len(offsets) != len(self)):
            raise UsageError(
                f"{len(inputs)} inputs for {len(self)} tables", hint="Give one input (and offsets) per table"
            )
        first = self[0]
        same = (id(first.weight), first.embedding_dim, first.block_size, first.seed, first.mode)
        if any((id(t.weight), t.embedding_dim, t.block_size, t.seed, t.mode) != same for t in self):
            raise UsageError("these tables do not share one array", hint="Build them with RobeEmbeddingBag.shared")
        kernel = _use_kernel(first.weight, first.backend)
        if kernel is None:
            return [
                t(x, None if offsets is None else offsets[i])
                for i, (t, x) in enumerate(zip(self, inputs, strict=True))
            ]
        bags = [
            _as_bags(x, None if offsets is None else offsets[i], None, first.mode, first.weight.dtype)
            for i, x in enumerate(inputs)
        ]
        widths = {ids.shape[1] if o is None else -1 for ids, o, _ in bags}
        if len(widths) == 1 and -1 not in widths:  # every table gives bags of one width: no offsets needed
            ids, joined, width = torch.cat([ids.reshape(-1) for ids, _, _ in bags]), None, widths.pop()
            counts = [ids_t.shape[0] for ids_t, _, _ in bags]
        else:
            ids, joined, counts = _joined_offsets([(i, o) for i, o, _ in bags])
            width = 0
        tables = [*counts, *(t.table_offset for t in self), *(t.num_embeddings for t in self)]
        try:
            out = kernel.bag(first.weight, ids, joined, width, None, tables, first.embedding_dim,
                             first.block_size, *first.hash, first.mode == "mean")
        except IndexError:
            for t, (ids_t, _, _) in zip(self, bags, strict=True):
                _check_ids(ids_t, t.num_embeddings, t.table)
            raise
        return out


def _joined_offsets(bags: list[tuple[torch.Tensor, torch.Tensor | None]]):
    """Every table's bags in the offsets form, end to end: (ids, offsets, bags per table)."""
    ids, offsets, counts, start = [], [], [], 0
    for ids_t, offsets_t in bags:
        if offsets_t is None:
            offsets_t = torch.arange(0, ids_t.numel(), max(1, ids_t.shape[1]))[: ids_t.shape[0]]
        ids.append(ids_t.reshape(-1))
        offsets.append(offsets_t + start)
        counts.append(offsets_t.numel())
        start += ids_t.numel()
    return torch.cat(ids), torch.cat(offsets), counts
