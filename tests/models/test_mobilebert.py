"""MobileBERT: parameter counts, Hugging Face key layout, trigram embeddings, masking, config recovery."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mlgauge.models.mobilebert import (
    MOBILEBERT,
    MobileBertConfig,
    MobileBertForQuestionAnswering,
    NoNorm,
    config_from_state,
    small_config,
    strip_ignorable,
)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_model_parameter_count():
    """24,582,914, from the paper's sizes (hidden 512, bottleneck 128, embedding 128, 24 layers, 4 FFNs):

    * embeddings: words 30,522 x 128 = 3,906,816; positions 512 x 512 = 262,144; token types 2 x 512 = 1,024;
      trigram projection 384 x 512 + 512 = 197,120; NoNorm 1,024: 4,368,128
    * per layer: two input bottlenecks 2 x (512 x 128 + 128 + 256) = 131,840; query and key 2 x 16,512;
      value 512 x 128 + 128 = 65,664; attention output 16,512 + 256 = 16,768; three stacked FFNs
      3 x (66,048 + 65,664 + 256) = 395,904; the layer's FFN 66,048 + 65,920; output bottleneck
      66,048 + 1,024:
      842,240, so 24 layers 20,213,760
    * QA head 512 x 2 + 2 = 1,026
    """
    model = MobileBertForQuestionAnswering()
    assert _params(model.mobilebert.embeddings) == 4_368_128
    assert _params(model.mobilebert.encoder.layer[0]) == 842_240
    assert _params(model) == 24_582_914


def test_small_model_parameter_count():
    """With vocabulary V: embeddings 32V + 64 x 128 + 2 x 64 + (96 x 64 + 64) + 128 = 32V + 14,656; per layer
    2 x 2,144 + 2 x 1,056 + 2,080 + 1,120 + one stacked FFN 8,416 + 4,224 + 4,192 + 2,240 = 28,672;
    head 130."""
    model = MobileBertForQuestionAnswering(small_config(400))
    assert _params(model.mobilebert.encoder.layer[0]) == 28_672
    assert _params(model) == 32 * 400 + 14_656 + 2 * 28_672 + 130 == 84_930


def test_state_dict_uses_hugging_face_names():
    keys = list(MobileBertForQuestionAnswering(small_config(50)).state_dict())
    for key in (
        "mobilebert.embeddings.word_embeddings.weight",
        "mobilebert.embeddings.embedding_transformation.weight",
        "mobilebert.embeddings.LayerNorm.weight",
        "mobilebert.encoder.layer.0.bottleneck.input.dense.weight",
        "mobilebert.encoder.layer.0.bottleneck.attention.LayerNorm.bias",
        "mobilebert.encoder.layer.1.attention.self.value.weight",
        "mobilebert.encoder.layer.1.attention.output.LayerNorm.weight",
        "mobilebert.encoder.layer.0.ffn.0.intermediate.dense.weight",
        "mobilebert.encoder.layer.0.ffn.0.output.LayerNorm.bias",
        "mobilebert.encoder.layer.1.intermediate.dense.bias",
        "mobilebert.encoder.layer.1.output.dense.weight",
        "mobilebert.encoder.layer.1.output.bottleneck.LayerNorm.weight",
        "qa_outputs.weight",
    ):
        assert key in keys
    # Query and key read the 32-wide bottleneck, value the 64-wide layer input.
    state = MobileBertForQuestionAnswering(small_config(50)).state_dict()
    assert state["mobilebert.encoder.layer.0.attention.self.query.weight"].shape == (32, 32)
    assert state["mobilebert.encoder.layer.0.attention.self.value.weight"].shape == (32, 64)
    # Per layer: 2 bottlenecks x 4, q/k/v 6, attention output 4, one stacked FFN 6, intermediate 2, output 8.
    assert len([k for k in keys if k.startswith("mobilebert.encoder.layer.0.")]) == 34
    assert len(keys) == 7 + 2 * 34 + 2  # 7 embedding tensors, the QA head's 2


def test_trigram_embedding_concatenates_next_this_previous():
    cfg = MobileBertConfig(
        vocab_size=10, hidden_size=6, intra_bottleneck_size=2, embedding_size=2, num_layers=0,
        num_heads=1, intermediate_size=4, num_feedforward_networks=1, max_position=8,
    )  # fmt: skip
    emb = MobileBertForQuestionAnswering(cfg).mobilebert.embeddings
    with torch.no_grad():
        emb.word_embeddings.weight.copy_(
            torch.arange(20, dtype=torch.float32).view(10, 2) + 1
        )  # token t -> (2t+1, 2t+2)
        emb.embedding_transformation.weight.copy_(torch.eye(6))
        emb.embedding_transformation.bias.zero_()
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        out = emb(torch.tensor([[3, 5, 7]]), torch.zeros(1, 3, dtype=torch.int64))
    assert isinstance(emb.LayerNorm, NoNorm)
    expected = [[11, 12, 7, 8, 0, 0], [15, 16, 11, 12, 7, 8], [0, 0, 15, 16, 11, 12]]
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float32))


def test_padding_is_masked_and_int32_inputs_work():
    torch.manual_seed(0)
    model = MobileBertForQuestionAnswering(small_config(60, max_position=16)).eval()
    ids = torch.randint(5, 60, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[:, 10:] = 0
    segments = torch.zeros(2, 16, dtype=torch.int64)
    other = ids.clone()
    other[:, 12:] = 1  # padding a trigram window cannot reach from position 9 or earlier
    with torch.no_grad():
        start, end = model(ids, mask, segments)
        start2, end2 = model(other, mask, segments)
        start32, end32 = model(ids.int(), mask.int(), segments.int())
    assert start.shape == end.shape == (2, 16) and start.dtype == torch.float32
    torch.testing.assert_close(start[:, :10], start2[:, :10])
    torch.testing.assert_close(end[:, :10], end2[:, :10])
    torch.testing.assert_close(start32, start)
    torch.testing.assert_close(end32, end)


def test_layer_norm_variant_and_errors():
    cfg = dataclasses.replace(small_config(30), normalization="layer_norm")
    model = MobileBertForQuestionAnswering(cfg)
    assert isinstance(model.mobilebert.embeddings.LayerNorm, torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="unknown normalization 'batch_norm'"):
        MobileBertForQuestionAnswering(dataclasses.replace(cfg, normalization="batch_norm"))


def test_config_from_state_round_trips():
    small = small_config(77, 128)
    # The head count is not in the weights: MobileBERT's 4 is assumed (the stand-in has 2).
    assert config_from_state(MobileBertForQuestionAnswering(small).state_dict()) == dataclasses.replace(
        small, num_heads=4
    )
    # The full model's shapes without allocating it twice: the meta device holds no data.
    with torch.device("meta"):
        state = MobileBertForQuestionAnswering().state_dict()
    assert config_from_state(state) == MOBILEBERT
    state = dict(MobileBertForQuestionAnswering(small_config(20)).state_dict())
    state["mobilebert.pooler.dense.weight"] = torch.zeros(64, 64)
    assert "mobilebert.pooler.dense.weight" not in strip_ignorable(state)
    with pytest.raises(
        KeyError, match="not a MobileBertForQuestionAnswering state dict: no 'mobilebert.embeddings"
    ):
        config_from_state({"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)})
