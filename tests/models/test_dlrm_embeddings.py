"""DLRM's embedding choices keep one contract (B, W) ids -> (B, F, D) and do what their papers define."""

from __future__ import annotations

import math

import pytest
import torch

from mlgauge.errors import UsageError
from mlgauge.models.dlrm import DlrmConfig, DLRMv2
from mlgauge.models.dlrm_embeddings import (
    EmbeddingChoice,
    HashedEmbeddings,
    QuotientRemainderEmbeddings,
    build_embeddings,
    embedding_bytes,
    parse_size,
)

ROWS, HOTS, DIM = (1000, 30, 7), (2, 1, 3), 4


def _ids(batch: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randint(0, n, (batch, k), generator=g) for n, k in zip(ROWS, HOTS, strict=True)], dim=1)


def test_sizes_read_decimal_and_binary_units():
    assert parse_size("100MB") == 100_000_000 and parse_size("64MiB") == 64 * 2**20
    assert parse_size("4096") == 4096 and parse_size(" 1.5 kb ") == 1500
    with pytest.raises(UsageError, match="cannot read the size '100 parsecs'"):
        parse_size("100 parsecs")


def test_the_hashing_trick_shares_rows_modulo_the_shrunken_table():
    emb = HashedEmbeddings(ROWS, HOTS, DIM, compression=10)
    assert emb.rows == (100, 3, 1)
    sparse = _ids()
    out = emb(sparse)
    assert out.shape == (5, 3, DIM)
    # feature 0, sample 0: its two ids' rows modulo 100, summed
    a, b = sparse[0, 0].item(), sparse[0, 1].item()
    expected = emb.tables[0].weight[a % 100] + emb.tables[0].weight[b % 100]
    torch.testing.assert_close(out[0, 0], expected)
    assert torch.equal(out[:, 2], emb.tables[2].weight[0].expand(5, DIM) * 3)  # one row left: every id on it


def test_quotient_remainder_multiplies_two_rows_that_no_other_id_shares():
    emb = QuotientRemainderEmbeddings(ROWS, HOTS, DIM, compression=8)
    assert emb.divisor == 8
    assert [t.num_embeddings for t in emb.quotients] == [125, 4, 1] and [t.num_embeddings for t in emb.remainders] == [8, 8, 7]
    sparse = _ids()
    out = emb(sparse)
    x = sparse[1, 2].item()  # feature 1's only id
    torch.testing.assert_close(out[1, 1], emb.quotients[1].weight[x // 8] * emb.remainders[1].weight[x % 8])
    pairs = {(x // 8, x % 8) for x in range(ROWS[0])}
    assert len(pairs) == ROWS[0]  # unique per id, unlike the hashing trick
    rows = sum(t.num_embeddings for t in (*emb.quotients, *emb.remainders))
    assert rows < sum(ROWS) / 4


@pytest.mark.parametrize(("choice", "message"), [
    (dict(kind="tt"), "unknown embedding 'tt'"),
    (dict(kind="robe"), "ROBE needs the size of its shared array"),
    (dict(kind="qr", compression=0.5), "needs a compression >= 1"),
])  # fmt: skip
def test_bad_choices_are_one_clear_error(choice, message):
    with pytest.raises(UsageError, match=message):
        EmbeddingChoice(**choice)


@pytest.mark.parametrize("kind", ["hashing", "qr"])
def test_a_dlrm_trains_with_any_choice_and_its_embedding_memory_shrinks(kind):
    config = DlrmConfig(num_embeddings=ROWS, multi_hot_sizes=HOTS, embedding_dim=DIM, bottom_mlp=(8, DIM),
                        top_mlp=(8, 1), dcn_layers=1, dcn_rank=2)  # fmt: skip
    choice = EmbeddingChoice(kind=kind, compression=10)
    torch.manual_seed(0)
    model = DLRMv2(config, build_embeddings(choice, ROWS, HOTS, DIM))
    full = DLRMv2(config)
    assert embedding_bytes(model) < embedding_bytes(full) / 3 == sum(ROWS) * DIM * 4 / 3
    dense, sparse = torch.randn(5, 13), _ids()
    loss = model(dense, sparse).sum()
    loss.backward()
    assert all(p.grad is not None and math.isfinite(p.grad.sum().item()) for p in model.embeddings.parameters())


def test_robe_reads_every_feature_from_one_shared_array_in_one_call():
    choice = EmbeddingChoice(kind="robe", robe_bytes=4 * 512, block_size=4)
    emb = build_embeddings(choice, ROWS, HOTS, DIM)
    assert len({id(t.weight) for t in emb.tables}) == 1 and emb.parameter_bytes() == 4 * 512
    sparse = _ids()
    out = emb(sparse)
    per_table = torch.stack([t(sparse[:, a:b]) for t, (a, b) in zip(emb.tables, emb.slots, strict=True)], dim=1)
    torch.testing.assert_close(out, per_table)
    out.sum().backward()
    assert emb.tables[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["robe", "hashing", "qr"])
def test_every_choice_exports_to_onnx_as_gathers_and_sums_not_loops(kind, tmp_path):
    # embedding_bag exports as a loop over bags: the DLRM stand-in ran 20x slower in ONNX Runtime
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    choice = EmbeddingChoice(kind=kind, robe_bytes=4 * 512, block_size=3, compression=10)
    torch.manual_seed(0)
    emb = build_embeddings(choice, ROWS, HOTS, DIM).eval()
    program = torch.onnx.export(emb, (_ids(2),), input_names=["sparse"], dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                                dynamo=True, verbose=False)  # fmt: skip
    path = tmp_path / "embeddings.onnx"
    program.save(str(path))
    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node} | {n.op_type for f in graph.functions for n in f.node}
    assert "Loop" not in ops and ops & {"Gather", "GatherND"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sparse = _ids(9)
    (got,) = session.run(None, {"sparse": sparse.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), emb(sparse), rtol=1e-5, atol=1e-6)
