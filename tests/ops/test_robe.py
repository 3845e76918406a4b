"""ROBE-Z embedding bags: the index map against plain-integer arithmetic and the authors' seed draw,
the pooled values against sums written out by hand and against nn.EmbeddingBag over the table the
map implies, gradients (gradcheck in float64, collisions adding up), the C++ kernel against the
PyTorch path, one thread against two, and every bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from mlgauge.errors import DataError, UsageError
from mlgauge.ops import RobeEmbeddingBag, RobeHash, robe_embedding_bag, robe_locations
from mlgauge.ops.build import fused_kernel

P = 2038074743
# (a, b, r) of RandomState(1024), as the authors' kernel reads them
AUTHORS_HASH = (871205356, 1825252241, 634329019)

needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None, reason="no C++ compiler: install g++ to build and test the ROBE kernel"
)
BACKENDS = [pytest.param("kernel", marks=needs_compiler), "torch"]


def location(x: int, j: int, block: int, size: int, hash=AUTHORS_HASH) -> int:
    """The map in plain Python integers, straight from the authors' kernel: no reductions, no tensors."""
    a, b, r = hash
    return (a * x + b * (j // block) + r) % P % (size - block + 1) + j % block


def table(rows: int, dim: int, size: int, block: int, backend: str, **kwargs) -> RobeEmbeddingBag:
    emb = RobeEmbeddingBag(rows, dim, size=size, block_size=block, dtype=torch.float64, **kwargs)
    emb.backend = backend
    return emb


def dense_equivalent(emb: RobeEmbeddingBag) -> torch.Tensor:
    """(rows, dim): the full table the map implies, one row per id."""
    rows = torch.arange(emb.num_embeddings)
    return emb.weight.detach()[
        robe_locations(rows, emb.embedding_dim, emb.block_size, emb.size, emb.hash, emb.table_offset)
    ]


@needs_compiler
def test_the_kernel_is_built_here():
    assert fused_kernel("robe") is not None


def test_the_hash_is_the_authors_draw():
    assert tuple(RobeHash.from_seed(1024)) == AUTHORS_HASH == tuple(RobeHash.from_seed())
    # their random_numbers = [P, *draws]; a, b, r = random_numbers[3], [2], [1]
    draws = np.random.RandomState(7).randint(0, P, 50)
    assert tuple(RobeHash.from_seed(7)) == (draws[2], draws[1], draws[0])


def test_pinned_locations():
    # By hand: (871205356*5 + 634329019) mod P = 914206313; mod (10^6 - 31) = 234647.
    got = robe_locations(torch.tensor([5, 123]), 128, 32, 10**6, RobeHash.from_seed())
    assert got[0, 0] == 234647 and got[0, 33] == 405543 and got[1, 70] == 99170
    assert got[0, 1] == 234648 and got[0, 31] == 234647 + 31  # a block is one contiguous run


@pytest.mark.parametrize(
    ("dim", "block", "size"), [(8, 1, 50), (20, 8, 97), (16, 16, 1000), (13, 5, 5), (7, 3, 40)]
)
def test_the_map_matches_plain_integers(dim, block, size):
    ids = [0, 1, 7, 39, 123_456_789, 2**40 + 3]  # a huge id: a·x must not overflow int64
    for offset, seed in ((0, 1024), (1000, 1024), (17, 5)):
        hash = RobeHash.from_seed(seed)
        got = robe_locations(torch.tensor(ids), dim, block, size, hash, offset)
        assert got.tolist() == [[location(x + offset, j, block, size, hash) for j in range(dim)] for x in ids]


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_is_the_sum_of_the_mapped_floats(backend):
    emb = table(40, 12, 61, 5, backend, table_offset=17)
    ids = [[3, 39, 3], [0, 11, 25]]  # the repeated id counts twice
    weight = emb.weight.detach().tolist()
    expect = [[sum(weight[location(x + 17, j, 5, 61)] for x in bag) for j in range(12)] for bag in ids]
    torch.testing.assert_close(
        emb(torch.tensor(ids)), torch.tensor(expect, dtype=torch.float64), rtol=1e-13, atol=0
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("mode", "weighted"), [("sum", False), ("sum", True), ("mean", False)])
@pytest.mark.parametrize(("dim", "block", "size"), [(10, 4, 83), (44, 44, 301)])  # blocks of several vectors
def test_it_is_nn_embedding_bag_over_the_implied_table(backend, mode, weighted, dim, block, size):
    emb = table(50, dim, size, block, backend, table_offset=9, mode=mode)
    dense = nn.EmbeddingBag.from_pretrained(dense_equivalent(emb), freeze=False, mode=mode)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (11,), generator=g)
    offsets = torch.tensor([0, 3, 3, 7, 10])  # one empty bag, one bag of a single id
    psw = torch.rand(11, generator=g, dtype=torch.float64) if weighted else None
    out = emb(ids, offsets, psw)
    expect = dense(ids, offsets, per_sample_weights=psw)
    torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-14)
    # d/dM = the dense gradient scattered through the map (collisions add)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad_m,) = torch.autograd.grad(out, emb.weight, grad_out)
    (grad_dense,) = torch.autograd.grad(expect, dense.weight, grad_out)
    locations = robe_locations(torch.arange(50), dim, block, size, emb.hash, 9)
    scattered = torch.zeros(size, dtype=torch.float64).index_add_(
        0, locations.reshape(-1), grad_dense.reshape(-1)
    )
    torch.testing.assert_close(grad_m, scattered, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_dimensional_input_is_fixed_size_bags(backend):
    emb = table(30, 9, 50, 4, backend)
    ids = torch.randint(0, 30, (6, 3), generator=torch.Generator().manual_seed(1))
    flat = emb(ids.reshape(-1), torch.arange(0, 18, 3))
    torch.testing.assert_close(emb(ids), flat, rtol=0, atol=0)
    torch.testing.assert_close(emb(ids.int()), flat, rtol=0, atol=0)
    torch.testing.assert_close(
        emb(ids, per_sample_weights=torch.full((6, 3), 2.0, dtype=torch.float64)), 2 * flat
    )
    emb.mode = "mean"
    torch.testing.assert_close(emb(ids), flat / 3, rtol=1e-14, atol=0)
    assert emb(torch.empty(4, 0, dtype=torch.long)).abs().sum() == 0 and emb(ids[:0]).shape == (0, 9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_collisions_add_up(backend):
    # size == block: every block starts at 0, so coordinate j of every row of every table is M[j % 4].
    tables = RobeEmbeddingBag.shared([5, 6], 8, size=4, block_size=4, dtype=torch.float64)
    ids = torch.tensor([[0, 4], [1, 1], [2, 3]])
    outs = []
    for emb in tables:
        emb.backend = backend
        outs.append(emb(ids))
    m = tables[0].weight
    torch.testing.assert_close(outs[0], torch.cat([m, m]).detach().expand(3, 8) * 2)
    (grad,) = torch.autograd.grad(sum(o.sum() for o in outs), m)
    assert grad.tolist() == [24.0] * 4  # 12 lookups x 2 coordinates on each float
    psw = torch.tensor([[0.5, 1.0], [2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    (grad,) = torch.autograd.grad(tables[1](ids, per_sample_weights=psw).sum(), m)
    assert grad.tolist() == [15.0] * 4  # 2 x the sum of the weights


@needs_compiler
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_gradcheck_in_float64(mode):
    weight = torch.randn(23, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([4, 0, 4, 9, 2, 7, 1])
    offsets = torch.tensor([0, 2, 2, 5])
    psw = torch.rand(7, dtype=torch.float64, requires_grad=True) if mode == "sum" else None
    hash = RobeHash.from_seed(3)

    def bag(w, p=None):
        settings = {"rows": 10, "dim": 7, "block": 3, "hash": hash, "table_offset": 5, "mode": mode}
        return robe_embedding_bag(w, ids, offsets, p, **settings, backend="kernel")

    assert torch.autograd.gradcheck(bag, (weight,) if psw is None else (weight, psw))


@needs_compiler
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_kernel_and_pytorch_path_agree_in_float32(mode):
    tables = RobeEmbeddingBag.shared([1000, 300, 7], 64, size=5000, block_size=32, mode=mode)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 7, (257,), generator=g)
    offsets = torch.sort(torch.randint(0, 258, (40,), generator=g)).values
    offsets[0] = 0
    psw = torch.rand(257, generator=g, requires_grad=True) if mode == "sum" else None
    grad_out = torch.randn(40, 64, generator=g)
    results = {}
    for backend in ("kernel", "torch"):
        for emb in tables:
            emb.backend = backend
        out = sum(emb(ids, offsets, psw) for emb in tables)
        inputs = (tables[0].weight,) if psw is None else (tables[0].weight, psw)
        results[backend] = (out, *torch.autograd.grad(out, inputs, grad_out))
    for fast, slow in zip(results["kernel"], results["torch"], strict=True):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


@needs_compiler
def test_one_thread_and_two_give_identical_bits():
    emb = RobeEmbeddingBag(500, 48, size=3001, block_size=16)
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 500, (300, 4), generator=g)
    grad_out = torch.randn(300, 48, generator=g)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = emb(ids)
            runs.append((out, *torch.autograd.grad(out, emb.weight, grad_out)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mixed", [False, True])
def test_one_call_for_all_tables_is_one_call_per_table(backend, mixed):
    tables = RobeEmbeddingBag.shared([40, 7, 300], 24, size=997, block_size=8, dtype=torch.float64)
    for emb in tables:
        emb.backend = backend
    g = torch.Generator().manual_seed(5)
    inputs = [torch.randint(0, n, (9, 2), generator=g) for n in (40, 7, 300)]
    offsets = None
    if mixed:  # 1-D with offsets (an empty bag too), bags of another width, and an empty table
        inputs = [inputs[0].reshape(-1), torch.randint(0, 7, (9, 3), generator=g), inputs[2][:0].reshape(-1)]
        offsets = [torch.tensor([0, 5, 5, 11]), None, torch.zeros(2, dtype=torch.long)]
    grads = [
        torch.randn(len(x) if o is None else len(o), 24, generator=g, dtype=torch.float64)
        for x, o in zip(inputs, offsets or [None] * 3, strict=True)
    ]
    together = tables(inputs, offsets)
    offsets_or_none = offsets or [None] * 3
    apart = [emb(x, o) for emb, x, o in zip(tables, inputs, offsets_or_none, strict=True)]
    for a, b in zip(together, apart, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)
    weight = tables[0].weight
    (grad_together,) = torch.autograd.grad(together, weight, grads, retain_graph=True)
    (grad_apart,) = torch.autograd.grad(apart, weight, grads)
    torch.testing.assert_close(grad_together, grad_apart, rtol=1e-12, atol=1e-14)
    (grad_one,) = torch.autograd.grad(together[0], weight, grads[0])  # the other outputs get no gradient
    torch.testing.assert_close(
        grad_one,
        torch.autograd.grad(tables[0](inputs[0], offsets_or_none[0]), weight, grads[0])[0],
        rtol=1e-12,
        atol=1e-14,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_call_names_the_table_of_a_bad_id(backend):
    tables = RobeEmbeddingBag.shared([10, 20, 5], 8, size=64, block_size=4)
    for emb in tables:
        emb.backend = backend
    inputs = [torch.zeros(3, 1, dtype=torch.long), torch.full((3, 1), 19), torch.tensor([[0], [5], [1]])]
    with pytest.raises(DataError, match="id 5 is out of range for table 2"):
        tables(inputs)
    with pytest.raises(UsageError, match="2 inputs for 3 tables"):
        tables(inputs[:2])
    tables.append(RobeEmbeddingBag(5, 8, size=64, block_size=4))
    with pytest.raises(UsageError, match="these tables do not share one array"):
        tables([*inputs, inputs[2]])


def test_shared_tables_share_one_array():
    tables = RobeEmbeddingBag.shared([100, 400, 30], 16, size=20_000, block_size=8, seed=9)
    assert [t.table_offset for t in tables] == [0, 100, 500]
    assert len(list(tables.parameters())) == 1 and all(t.weight is tables[0].weight for t in tables)
    bound = (1 / 400) ** 0.5  # U(±sqrt(1 / largest table))
    assert 0.99 * bound < tables[0].weight.abs().max() <= bound
    assert tables[1].memory_bytes() == 80_000 and tables[1].hash == RobeHash.from_seed(9)
    assert repr(tables[1]) == (
        "RobeEmbeddingBag(400, 16, size=20000, block_size=8, table_offset=100, mode='sum', seed=9, table=1)"
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_id_out_of_range_names_the_id_and_the_table(backend):
    tables = RobeEmbeddingBag.shared([10, 20, 5], 8, size=64, block_size=4)
    emb = tables[2]
    emb.backend = backend
    for bad in (5, -1):
        ids = torch.tensor([[0, 4]] * 30 + [[bad, 1]] + [[1, 2]] * 10)  # in the second of two threads' halves
        with pytest.raises(DataError, match=rf"id {bad} is out of range for table 2, which has 5 rows"):
            emb(ids)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 31, "block_size": 32}, "ROBE array of 31 floats is smaller than one block of 32"),
        ({"size": 100, "block_size": 0}, "ROBE block size 0 is below 1"),
        ({"size": 100, "mode": "max"}, "unknown ROBE pooling mode 'max'"),
        ({"size": 100, "weight": nn.Parameter(torch.zeros(100))}, "give exactly one of size and weight"),
        ({"weight": nn.Parameter(torch.zeros(10, 10))}, r"ROBE weight of shape \(10, 10\)"),
        ({"size": P + 32}, "larger than the hash can address"),  # checked before anything is allocated
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(UsageError, match=message):
        RobeEmbeddingBag(10, 8, **kwargs)


def test_shared_checks_its_size_too():
    with pytest.raises(UsageError, match="smaller than one block of 32"):
        RobeEmbeddingBag.shared([10, 10], 64, size=8)


@pytest.mark.parametrize(
    ("ids", "offsets", "psw", "mode", "message"),
    [
        ([1, 2, 3], [1, 2], None, "sum", "offsets start at 1, not 0"),
        ([1, 2, 3], [0, 2, 1], None, "sum", "offsets decrease at position 2"),
        ([1, 2, 3], [0, 4], None, "sum", "offsets run to 4, past the input's 3 ids"),
        ([1, 2, 3], [0, 1], [1.0, 1.0, 1.0], "mean", "per_sample_weights with mode 'mean'"),
        ([1, 2, 3], [0, 1], [1.0, 1.0], "sum", r"per_sample_weights of shape \(2,\) for input \(3,\)"),
        ([1, 2, 3], None, None, "sum", "1-D input without offsets"),
        ([[1, 2]], [0], None, "sum", "offsets given with 2-D input"),
        ([1.0, 2.0], [0], None, "sum", "ROBE ids of dtype torch.float32"),
    ],
)
def test_bad_input(ids, offsets, psw, mode, message):
    emb = RobeEmbeddingBag(10, 8, size=64, block_size=4, mode=mode)
    psw = None if psw is None else torch.tensor(psw)
    with pytest.raises(UsageError, match=message):
        emb(torch.tensor(ids), None if offsets is None else torch.tensor(offsets), psw)
