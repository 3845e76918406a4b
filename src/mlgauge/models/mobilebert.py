"""MobileBERT for extractive question answering (MLPerf Mobile's language task), and a narrow stand-in size.

MobileBERT (Sun et al., 2020) is BERT-large's depth at a fraction of its cost: each
of its 24 layers keeps a 512-wide "inter-block" stream but works inside a 128-wide
bottleneck, and balances the thin attention with a stack of four small
feed-forward networks. Per layer:

* two bottleneck projections of the 512-wide input to 128: one is the layer's
  residual stream, the other (shared) feeds attention's query and key; the
  value comes from the 512-wide input itself;
* 4-head self-attention in 128 dimensions, output projection + residual + norm;
* three stacked FFNs (128 -> 512 -> 128, ReLU, residual + norm each), then the
  layer's own FFN, then the output bottleneck back to 512 with a residual to the
  layer input;
* "NoNorm" (an element-wise scale and shift, no statistics) in place of
  LayerNorm, and ReLU in place of GELU: both cheap on phones.

Embeddings are 128-wide; each token's embedding is concatenated with its
neighbours' (the "trigram" input, 384 values) and projected to 512 before the
position and token-type embeddings are added.

Parameter names and the computation follow Hugging Face's ``MobileBertForQuestionAnswering``
(``mobilebert.embeddings.embedding_transformation``,
``mobilebert.encoder.layer.N.bottleneck.input.dense``, ``...ffn.K.output.LayerNorm``,
``qa_outputs`` ...), as written from its ``modeling_mobilebert.py``; loading a real
checkpoint has not been tried here (``transformers`` is not installed). MLPerf's
own model runs from its ``.tflite`` file (or an ONNX/ExecuTorch export).

Inference only: no dropout, so train/eval modes compute the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlgauge.models.bert import masked_attention

# As in models.bert: exp(-10000) is 0 in float32, so padding gets no attention.
MASKED_SCORE = -10000.0

IGNORABLE_KEYS = (
    "mobilebert.pooler.dense.weight",  # only with add_pooling_layer; the span head does not use it
    "mobilebert.pooler.dense.bias",
    "mobilebert.embeddings.position_ids",  # a buffer older transformers versions saved
    "mobilebert.embeddings.token_type_ids",
)


@dataclass(frozen=True)
class MobileBertConfig:
    vocab_size: int = 30522
    hidden_size: int = 512  # the inter-block width
    intra_bottleneck_size: int = 128  # the width attention and the FFNs work in
    embedding_size: int = 128
    num_layers: int = 24
    num_heads: int = 4
    intermediate_size: int = 512
    num_feedforward_networks: int = 4  # per layer, counting the layer's own
    max_position: int = 512
    type_vocab_size: int = 2
    normalization: str = "no_norm"  # or "layer_norm"
    trigram_input: bool = True
    layer_norm_eps: float = 1e-12


MOBILEBERT = MobileBertConfig()


def small_config(vocab_size: int, max_position: int = 128) -> MobileBertConfig:
    """The stand-in's size: the same block at a toy scale (64 wide, 32-wide bottleneck, two layers)."""
    return MobileBertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intra_bottleneck_size=32,
        embedding_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        num_feedforward_networks=2,
        max_position=max_position,
    )


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: ``x * weight + bias``, element-wise."""

    def __init__(self, size: int, eps: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def _norm(cfg: MobileBertConfig, size: int) -> nn.Module:
    if cfg.normalization == "no_norm":
        return NoNorm(size)
    if cfg.normalization == "layer_norm":
        return nn.LayerNorm(size, eps=cfg.layer_norm_eps)
    raise ValueError(f"unknown normalization {cfg.normalization!r}; use 'no_norm' or 'layer_norm'")


class DenseNorm(nn.Module):
    """``norm(dense(x) [+ residual])``: the projection every MobileBERT sub-block ends in."""

    def __init__(self, cfg: MobileBertConfig, size_in: int, size_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(size_in, size_out)
        self.LayerNorm = _norm(cfg, size_out)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = self.dense(x)
        return self.LayerNorm(y if residual is None else y + residual)


class MobileBertEmbeddings(nn.Module):
    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.trigram_input = cfg.trigram_input
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.embedding_size)
        self.position_embeddings = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        width = cfg.embedding_size * (3 if cfg.trigram_input else 1)
        self.embedding_transformation = nn.Linear(width, cfg.hidden_size)
        self.LayerNorm = _norm(cfg, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids)  # (B, S, E)
        if self.trigram_input:
            # [next token, this token, previous token], zero past either end (Hugging Face's order).
            x = torch.cat([F.pad(x[:, 1:], (0, 0, 0, 1)), x, F.pad(x[:, :-1], (0, 0, 1, 0))], dim=2)
        x = self.embedding_transformation(x)
        # Slicing the table (not an arange lookup) keeps the exported graph free of a position input.
        x = x + self.position_embeddings.weight[: input_ids.shape[1]].unsqueeze(0)
        return self.LayerNorm(x + self.token_type_embeddings(token_type_ids))


class MobileBertSelfAttention(nn.Module):
    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        width = cfg.intra_bottleneck_size
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(
            cfg.hidden_size, width
        )  # from the full-width input (use_bottleneck_attention=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, S, W) -> (B, heads, S, W/heads)

    def forward(self, query_key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._split(self.query(query_key)),
            self._split(self.key(query_key)),
            self._split(self.value(value)),
        )
        return masked_attention(q, k, v, bias).transpose(1, 2).flatten(2)


class MobileBertAttention(nn.Module):
    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.self = MobileBertSelfAttention(cfg)
        width = cfg.intra_bottleneck_size
        self.output = DenseNorm(cfg, width, width)

    def forward(
        self, query_key: torch.Tensor, value: torch.Tensor, residual: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        return self.output(self.self(query_key, value, bias), residual)


class MobileBertIntermediate(nn.Module):
    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intra_bottleneck_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.dense(x))


class FFNLayer(nn.Module):
    """One of the stacked feed-forward networks: ``norm(W2 relu(W1 x) + x)`` in the bottleneck width."""

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.intermediate = MobileBertIntermediate(cfg)
        self.output = DenseNorm(cfg, cfg.intermediate_size, cfg.intra_bottleneck_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(x), x)


class Bottleneck(nn.Module):
    """The two projections of the input to the bottleneck: the residual stream and the query/key input."""

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.input = DenseNorm(cfg, cfg.hidden_size, cfg.intra_bottleneck_size)
        self.attention = DenseNorm(cfg, cfg.hidden_size, cfg.intra_bottleneck_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input(x), self.attention(x)


class MobileBertOutput(nn.Module):
    """The layer's own FFN output (in the bottleneck), then the projection back to the full width."""

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.intra_bottleneck_size)
        self.LayerNorm = _norm(cfg, cfg.intra_bottleneck_size)
        self.bottleneck = DenseNorm(cfg, cfg.intra_bottleneck_size, cfg.hidden_size)

    def forward(
        self, intermediate: torch.Tensor, residual: torch.Tensor, layer_input: torch.Tensor
    ) -> torch.Tensor:
        return self.bottleneck(self.LayerNorm(self.dense(intermediate) + residual), layer_input)


class MobileBertLayer(nn.Module):
    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.bottleneck = Bottleneck(cfg)
        self.attention = MobileBertAttention(cfg)
        self.ffn = nn.ModuleList(FFNLayer(cfg) for _ in range(cfg.num_feedforward_networks - 1))
        self.intermediate = MobileBertIntermediate(cfg)
        self.output = MobileBertOutput(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        stream, query_key = self.bottleneck(x)
        h = self.attention(query_key, x, stream, bias)
        for ffn in self.ffn:
            h = ffn(h)
        return self.output(self.intermediate(h), h, x)


class MobileBertEncoder(nn.Module):
    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(MobileBertLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias)
        return x


class MobileBertModel(nn.Module):
    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.embeddings = MobileBertEmbeddings(cfg)
        self.encoder = MobileBertEncoder(cfg)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, hidden)
        keep = attention_mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, S): broadcast over heads and queries
        return self.encoder(x, (1.0 - keep) * MASKED_SCORE)


class MobileBertForQuestionAnswering(nn.Module):
    """``(input_ids, attention_mask, token_type_ids)``, each ``(B, S)`` int32 or int64 ->
    ``(start_logits, end_logits)``, each ``(B, S)`` float32 (MLPerf Mobile feeds int32)."""

    def __init__(self, cfg: MobileBertConfig = MOBILEBERT) -> None:
        super().__init__()
        self.config = cfg
        self.mobilebert = MobileBertModel(cfg)
        self.qa_outputs = nn.Linear(cfg.hidden_size, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.qa_outputs(
            self.mobilebert(input_ids, attention_mask, token_type_ids)
        ).float()  # (B, S, 2)
        return logits[..., 0], logits[..., 1]


def strip_ignorable(state: dict) -> dict:
    """``state`` without the keys in ``IGNORABLE_KEYS`` (see there)."""
    return {k: v for k, v in state.items() if k not in IGNORABLE_KEYS}


def config_from_state(state: dict) -> MobileBertConfig:
    """The architecture a Hugging Face-named MobileBERT QA state dict describes.

    Not in the weights: the head count (MobileBERT's 4 is assumed) and the kind of
    norm (NoNorm and LayerNorm hold the same two tensors; MobileBERT's NoNorm is
    assumed). ``trigram_input`` is read from the embedding projection's width.
    """
    try:
        vocab, embed = state["mobilebert.embeddings.word_embeddings.weight"].shape
        max_position, hidden = state["mobilebert.embeddings.position_embeddings.weight"].shape
        type_vocab = state["mobilebert.embeddings.token_type_embeddings.weight"].shape[0]
        projection_in = state["mobilebert.embeddings.embedding_transformation.weight"].shape[1]
        intra = state["mobilebert.encoder.layer.0.bottleneck.input.dense.weight"].shape[0]
        intermediate = state["mobilebert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as exc:
        raise KeyError(f"not a MobileBertForQuestionAnswering state dict: no {exc}") from None
    layers = 1 + max(
        (int(k.split(".")[3]) for k in state if k.startswith("mobilebert.encoder.layer.")), default=-1
    )
    ffns = 1 + sum(
        1
        for k in state
        if k.startswith("mobilebert.encoder.layer.0.ffn.") and k.endswith(".intermediate.dense.weight")
    )
    return MobileBertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        intra_bottleneck_size=int(intra),
        embedding_size=int(embed),
        num_layers=layers,
        num_heads=4 if int(intra) % 4 == 0 else 1,
        intermediate_size=int(intermediate),
        num_feedforward_networks=ffns,
        max_position=int(max_position),
        type_vocab_size=int(type_vocab),
        trigram_input=int(projection_in) == 3 * int(embed),
    )
