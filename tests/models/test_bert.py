"""BERT for question answering: Hugging Face's names and sizes, and BERT's arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from mlgauge.models.bert import (
    BERT_LARGE,
    BertConfig,
    BertForQuestionAnswering,
    config_from_state,
    small_config,
    strip_ignorable,
)
from mlgauge.tasks.weights import load_into, load_state_dict

TINY = BertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_position=24)
LAYER_KEYS = (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm",
)


def _hf_keys(layers: int) -> list[str]:
    """transformers.BertForQuestionAnswering(config).state_dict() keys, written out from its layout."""
    keys = [f"bert.embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    keys += ["bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"]
    for i in range(layers):
        keys += [f"bert.encoder.layer.{i}.{m}.{p}" for m in LAYER_KEYS for p in ("weight", "bias")]
    return [*keys, "qa_outputs.weight", "qa_outputs.bias"]


@pytest.fixture(scope="module")
def large() -> BertForQuestionAnswering:
    with torch.device("meta"):  # shapes only: no 1.3 GB of weights
        return BertForQuestionAnswering(BERT_LARGE)


def test_bert_large_parameter_count(large):
    v, h, i, p, t, n = 30522, 1024, 4096, 512, 2, 24
    embeddings = (v + p + t) * h + 2 * h
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * (2 * h)
    by_formula = embeddings + n * layer + (2 * h + 2)
    assert by_formula == 334_094_338
    # Hugging Face's QA model has no pooler; BertModel-large with one is the well-known 335,141,888.
    assert by_formula + (h * h + h) - (2 * h + 2) == 335_141_888
    assert sum(q.numel() for q in large.parameters()) == 334_094_338


def test_bert_large_keys_and_shapes_are_hugging_faces(large):
    state = large.state_dict()
    assert list(state) == _hf_keys(24)
    assert len(state) == 391
    assert state["bert.embeddings.word_embeddings.weight"].shape == (30522, 1024)
    assert state["bert.embeddings.position_embeddings.weight"].shape == (512, 1024)
    assert state["bert.embeddings.token_type_embeddings.weight"].shape == (2, 1024)
    assert state["bert.encoder.layer.23.attention.self.query.weight"].shape == (1024, 1024)
    assert state["bert.encoder.layer.0.intermediate.dense.weight"].shape == (4096, 1024)
    assert state["bert.encoder.layer.11.output.dense.weight"].shape == (1024, 4096)
    assert state["qa_outputs.weight"].shape == (2, 1024)
    assert config_from_state(state) == BERT_LARGE


def test_config_from_state_reads_the_architecture():
    state = BertForQuestionAnswering(TINY).state_dict()
    # Heads are not in the weights; 64-wide heads are assumed, so a 16-wide model reads as one head.
    assert config_from_state(state) == BertConfig(
        vocab_size=50, hidden_size=16, num_layers=2, num_heads=1, intermediate_size=32, max_position=24
    )
    with pytest.raises(KeyError, match="word_embeddings"):
        config_from_state({"qa_outputs.weight": torch.zeros(2, 16)})


def test_small_config_is_the_standin_size():
    cfg = small_config(vocab_size=300)
    model = BertForQuestionAnswering(cfg)
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.max_position) == (64, 2, 2, 128)
    assert sum(q.numel() for q in model.parameters()) == (300 + 128 + 2) * 64 + 128 + 2 * (
        4 * (64 * 64 + 64) + 64 * 256 + 256 + 256 * 64 + 64 + 256
    ) + 130


def _inputs(batch: int, seq: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[0, seq - 5 :] = 0
    types = torch.zeros(batch, seq, dtype=torch.int64)
    types[:, seq // 2 :] = 1
    return ids, mask, types


def test_hugging_face_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    source = BertForQuestionAnswering(TINY).eval()
    # A transformers-saved file can carry the unused pooler and the old position-id buffer.
    state = dict(source.state_dict())
    state["bert.pooler.dense.weight"] = torch.zeros(16, 16)
    state["bert.pooler.dense.bias"] = torch.zeros(16)
    state["bert.embeddings.position_ids"] = torch.arange(24)[None]
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)

    loaded = load_state_dict(path)
    assert sorted(strip_ignorable(loaded)) == sorted(_hf_keys(2))
    model = load_into(BertForQuestionAnswering(TINY), strip_ignorable(loaded), path)
    args = _inputs(3, 24, 50)
    with torch.no_grad():
        for got, want in zip(model(*args), source(*args), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def _reference_forward(state: dict, cfg: BertConfig, ids, mask, types):
    """BERT written out from the paper/Google's modeling.py, straight from the state dict."""
    def lin(x, name):
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def norm(x, name):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + cfg.layer_norm_eps) * state[f"{name}.weight"] + state[f"{name}.bias"]

    e = "bert.embeddings"
    x = state[f"{e}.word_embeddings.weight"][ids] + state[f"{e}.position_embeddings.weight"][: ids.shape[1]]
    x = norm(x + state[f"{e}.token_type_embeddings.weight"][types], f"{e}.LayerNorm")
    d = cfg.hidden_size // cfg.num_heads
    for i in range(cfg.num_layers):
        p = f"bert.encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
        b, s, _ = x.shape
        q, k, v = (t.view(b, s, cfg.num_heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + (1.0 - mask[:, None, None, :].float()) * -10000.0
        ctx = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(b, s, -1)
        x = norm(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        h = lin(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
        x = norm(lin(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    logits = lin(x, "qa_outputs")
    return logits[..., 0], logits[..., 1]


def test_forward_matches_berts_arithmetic():
    torch.manual_seed(3)
    model = BertForQuestionAnswering(TINY).eval()
    for param in model.parameters():  # away from the init's zero biases and unit norms
        param.data.add_(torch.randn_like(param) * 0.1)
    args = _inputs(2, 20, 50, seed=4)
    with torch.no_grad():
        start, end = model(*args)
        ref_start, ref_end = _reference_forward(model.state_dict(), TINY, *args)
    assert start.shape == end.shape == (2, 20)
    assert start.dtype == end.dtype == torch.float32
    torch.testing.assert_close(start, ref_start, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(end, ref_end, rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_the_real_tokens_logits():
    torch.manual_seed(5)
    model = BertForQuestionAnswering(TINY).eval()
    ids, mask, types = _inputs(1, 20, 50, seed=6)
    mask[0, 12:] = 0
    other = ids.clone()
    other[0, 12:] = (ids[0, 12:] + 7) % 50
    with torch.no_grad():
        a, b = model(ids, mask, types), model(other, mask, types)
        c = model(ids, torch.ones_like(mask), types)
    torch.testing.assert_close(a[0][0, :12], b[0][0, :12])
    torch.testing.assert_close(a[1][0, :12], b[1][0, :12])
    assert not torch.allclose(a[0][0, :12], c[0][0, :12])  # the mask is what made them equal
