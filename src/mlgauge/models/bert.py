"""BERT for extractive question answering (MLPerf's BERT-large on SQuAD v1.1).

Pure PyTorch with Hugging Face's parameter names (``bert.embeddings.word_embeddings``,
``bert.encoder.layer.N.attention.self.query``, ``qa_outputs`` ...), so a state dict
saved from ``transformers.BertForQuestionAnswering`` (e.g. the fine-tuned
``bert-large-uncased-whole-word-masking-finetuned-squad``, or MLPerf's converted
``model.pytorch``) loads with strict key checking. Like Hugging Face's QA head
there is no pooler: the answer span comes from per-token logits.

Inference only: no dropout, so train/eval modes compute the same function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Google's BERT (which MLPerf's checkpoint was trained with) adds -10000 to masked
# attention scores; exp(-10000) is 0 in float32, so padding gets no attention.
MASKED_SCORE = -10000.0

# Keys that some state dicts carry but hold nothing learned for QA: the pooler
# (unused by the span head; MLPerf's reference loads with strict=False because of
# it) and the position-id buffer older transformers versions saved.
IGNORABLE_KEYS = (
    "bert.pooler.dense.weight",
    "bert.pooler.dense.bias",
    "bert.embeddings.position_ids",
    "bert.embeddings.token_type_ids",
)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


BERT_LARGE = BertConfig()


def small_config(vocab_size: int, max_position: int = 128) -> BertConfig:
    """The stand-in's size: two narrow layers, enough for the synthetic span task."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=256,
        max_position=max_position,
    )


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        # Slicing the table (not an arange lookup) keeps the exported graph free of a position input.
        positions = self.position_embeddings.weight[:seq].unsqueeze(0)  # (1, S, H)
        x = self.word_embeddings(input_ids) + positions + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d) + bias) v over ``(B, heads, S, d)``.

    Written out rather than ``F.scaled_dot_product_attention``: exporting that one adds
    guards over the ``(B, heads, S, S)`` mask (any / where / logical_not) which XNNPACK
    does not take, so an ExecuTorch program fell apart into five delegates with slow
    portable kernels between them.
    """
    batch, heads, seq, width = q.shape
    # 3-d bmm: a 4-d matmul exports as expand + bmm, and XNNPACK takes no expand either.
    q3, k3, v3 = (t.reshape(-1, seq, t.shape[-1]) for t in (q, k, v))
    scores = torch.bmm(q3, k3.transpose(1, 2)) * (1.0 / math.sqrt(width))
    probs = (scores.reshape(batch, heads, seq, seq) + bias).softmax(dim=-1)
    return torch.bmm(probs.reshape(-1, seq, seq), v3).reshape(batch, heads, seq, v.shape[-1])


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, S, H) -> (B, heads, S, H/heads)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        return masked_attention(q, k, v, bias).transpose(1, 2).flatten(2)


class BertSelfOutput(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT was trained


class BertOutput(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias)
        return x


class BertModel(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, H)
        keep = attention_mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, S): broadcast over heads and queries
        return self.encoder(x, (1.0 - keep) * MASKED_SCORE)


class BertForQuestionAnswering(nn.Module):
    """``(input_ids, attention_mask, token_type_ids)``, each ``(B, S)`` int64 -> ``(start_logits, end_logits)``,
    each ``(B, S)`` float32."""

    def __init__(self, cfg: BertConfig = BERT_LARGE) -> None:
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)
        self.qa_outputs = nn.Linear(cfg.hidden_size, 2)
        self.apply(_init_weights)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.qa_outputs(hidden).float()  # (B, S, 2)
        return logits[..., 0], logits[..., 1]


def _init_weights(module: nn.Module) -> None:
    # BERT's initialisation (truncated-normal std 0.02 in Google's code; normal in Hugging Face's).
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def strip_ignorable(state: dict) -> dict:
    """``state`` without the keys in ``IGNORABLE_KEYS`` (see there)."""
    return {k: v for k, v in state.items() if k not in IGNORABLE_KEYS}


def config_from_state(state: dict) -> BertConfig:
    """The architecture a Hugging Face-named state dict describes (vocab, width, depth, positions).

    The head count is not stored in the weights: 64-wide heads, as every BERT release uses.
    """
    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        max_position = state["bert.embeddings.position_embeddings.weight"].shape[0]
        type_vocab = state["bert.embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as exc:
        raise KeyError(f"not a BertForQuestionAnswering state dict: no {exc}") from None
    layers = 1 + max(
        (int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer.")), default=-1
    )
    return BertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_layers=layers,
        num_heads=max(1, int(hidden) // 64),
        intermediate_size=int(intermediate),
        max_position=int(max_position),
        type_vocab_size=int(type_vocab),
    )
