"""SQuAD v1.1 as MLPerf reads it for BERT: examples, features, span decoding and the official metric.

- ``read_squad``: the ``dev-v1.1.json`` layout (``data[].paragraphs[].context``,
  ``qas[].id/question/answers[].text/answer_start``), every field checked.
- ``create_features``: Google's ``run_squad.py`` features as MLPerf's
  ``create_squad_data.py`` builds them: ``[CLS] query [SEP] doc-span [SEP]``, the query
  cut to ``max_query_length`` tokens, the context in overlapping spans every
  ``doc_stride`` tokens, zero padding. One feature is one LoadGen sample.
- ``decode_answers``: the reference ``write_predictions`` (n-best start and end
  indexes, spans inside the context, ``end >= start``, at most ``max_answer_length``
  tokens, start in its "max context" span, best total logit over a question's features).
- ``evaluate``: the official ``evaluate-v1.1.py`` (normalised exact match and token F1,
  best over the ground truths, averaged over all questions; unanswered ones score 0).

Tokenization is WordPiece with the user's ``vocab.txt`` through the ``tokenizers``
library. Its character offsets map tokens back into the context, which gives the
answer text directly where the reference re-aligns detokenized text heuristically.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlgauge.errors import DataError

SQUAD_FILE = "dev-v1.1.json"
VOCAB_FILE = "vocab.txt"

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# What the reference answers when no span is valid (write_predictions' "nonce prediction").
EMPTY_ANSWER = "empty"
_REQUIRED_TOKENS = ("[CLS]", "[SEP]", "[UNK]")


@dataclass(frozen=True)
class SquadExample:
    qid: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]  # character offsets into ``context``


@dataclass(frozen=True)
class FeatureConfig:
    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64


MLPERF_FEATURES = FeatureConfig()  # language/bert/accuracy-squad.py


# -- reading ------------------------------------------------------------------------


def _field(obj: object, key: str, kind: type, where: str, path: Path):
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(obj).__name__}", hint=_LAYOUT_HINT)
    if key not in obj:
        raise DataError(f"{path}: {where}: no '{key}'", hint=_LAYOUT_HINT)
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(
            f"{path}: {where}.{key} should be {kind.__name__}, got {type(value).__name__}", hint=_LAYOUT_HINT
        )
    return value


_LAYOUT_HINT = (
    "Use SQuAD v1.1's dev-v1.1.json: {'data': [{'paragraphs': [{'context': str, 'qas': "
    "[{'id': str, 'question': str, 'answers': [{'text': str, 'answer_start': int}]}]}]}]}"
)


def read_squad(path: Path) -> list[SquadExample]:
    """Every question of a SQuAD v1.1 file, in file order."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"SQuAD file {path} does not exist", hint=_LAYOUT_HINT) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"SQuAD file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"SQuAD file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            hint="Download dev-v1.1.json again; the file may be truncated",
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read SQuAD file {path}: {exc.strerror or exc}") from None
    examples: list[SquadExample] = []
    for a, article in enumerate(_field(doc, "data", list, "top level", path)):
        for p, para in enumerate(_field(article, "paragraphs", list, f"data[{a}]", path)):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(para, "context", str, where, path)
            for q, qa in enumerate(_field(para, "qas", list, where, path)):
                examples.append(_read_question(qa, context, f"{where}.qas[{q}]", path))
    return examples


def _read_question(qa: object, context: str, where: str, path: Path) -> SquadExample:
    qid = _field(qa, "id", str, where, path)
    question = _field(qa, "question", str, where, path)
    answers = _field(qa, "answers", list, where, path)
    if not answers:
        raise DataError(
            f"{path}: {where}: 'answers' is empty",
            hint="SQuAD v1.1 questions all have answers; v2.0 files (unanswerable questions) are not supported",
        )
    texts = tuple(_field(ans, "text", str, f"{where}.answers[{i}]", path) for i, ans in enumerate(answers))
    starts = tuple(_field(ans, "answer_start", int, f"{where}.answers[{i}]", path) for i, ans in enumerate(answers))
    return SquadExample(qid, question, context, texts, starts)


def load_tokenizer(vocab_path: Path, lowercase: bool = True):
    """A WordPiece tokenizer over ``vocab_path`` (one token per line, BERT's layout)."""
    from tokenizers import BertWordPieceTokenizer

    vocab_path = Path(vocab_path)
    try:
        lines = vocab_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(
            f"vocabulary {vocab_path} does not exist",
            hint="Give the vocab.txt that belongs to the model (MLPerf: bert_tf_v1_1_large_fp32_384_v2/vocab.txt)",
        ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"cannot read vocabulary {vocab_path}: {exc}") from None
    # Google's load_vocab strips each line; the line number is the token id.
    vocab = {token.strip(): i for i, token in enumerate(lines)}
    missing = [t for t in _REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise DataError(
            f"vocabulary {vocab_path} lacks {', '.join(missing)}",
            hint="Use a BERT WordPiece vocab.txt (one token per line, with [CLS], [SEP] and [UNK])",
        )
    return BertWordPieceTokenizer(vocab, lowercase=lowercase)


# -- features -------------------------------------------------------------------------


@dataclass
class SquadFeatures:
    """Model inputs for every doc span, and how each maps back to its question."""

    input_ids: np.ndarray  # (N, S) int64
    attention_mask: np.ndarray  # (N, S) int64
    token_type_ids: np.ndarray  # (N, S) int64
    example_index: np.ndarray  # (N,) int64: index into the examples list
    token_offsets: np.ndarray  # (N, S, 2) int32: [start, end) characters in the context; -1 off the context
    max_context: np.ndarray  # (N, S) bool: this span is the token's best-centred one

    def __len__(self) -> int:
        return len(self.example_index)

    def inputs(self, rows: np.ndarray | slice, names: Sequence[str] = INPUT_NAMES) -> dict[str, np.ndarray]:
        arrays = (self.input_ids, self.attention_mask, self.token_type_ids)
        return {name: a[rows] for name, a in zip(names, arrays, strict=True)}

    def subset(self, rows: slice) -> SquadFeatures:
        return SquadFeatures(
            self.input_ids[rows], self.attention_mask[rows], self.token_type_ids[rows],
            self.example_index[rows], self.token_offsets[rows], self.max_context[rows],
        )


def doc_spans(n_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
    """``(start, length)`` windows over the context's tokens, as ``run_squad.py`` slides them."""
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n_tokens:
        length = min(n_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, stride)
    return spans


def best_span_of_token(spans: list[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """For each context token, the span where it has the most context on both sides (``_check_is_max_context``).

    Score: min(tokens left, tokens right) + 0.01 * span length; the first span wins ties.
    """
    starts = np.array([s for s, _ in spans], dtype=np.int64)[:, None]
    lengths = np.array([n for _, n in spans], dtype=np.int64)[:, None]
    pos = np.arange(n_tokens)[None, :]
    score = np.minimum(pos - starts, starts + lengths - 1 - pos) + 0.01 * lengths
    score = np.where((pos >= starts) & (pos < starts + lengths), score, -np.inf)
    return score.argmax(axis=0)


def create_features(
    examples: Sequence[SquadExample], tokenizer, config: FeatureConfig = MLPERF_FEATURES, limit: int | None = None
) -> SquadFeatures:
    """Features for ``examples`` in order; with ``limit``, only the first ``limit`` features."""
    seq, cls, sep = config.max_seq_length, tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if config.max_query_length + 3 >= seq:
        raise ValueError(f"max_query_length {config.max_query_length} leaves no room in {seq} tokens")
    # Each distinct context is tokenized once; SQuAD asks several questions per paragraph.
    contexts = list(dict.fromkeys(e.context for e in examples))
    ctx_of = {c: i for i, c in enumerate(contexts)}
    ctx_enc = tokenizer.encode_batch(contexts, add_special_tokens=False)
    ctx_ids = [np.array(e.ids, dtype=np.int64) for e in ctx_enc]
    ctx_off = [np.array(e.offsets, dtype=np.int32).reshape(-1, 2) for e in ctx_enc]
    q_enc = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)

    plan = []  # (example, query ids, context index, spans, best span per token)
    total = 0
    for ex_i, ex in enumerate(examples):
        if limit is not None and total >= limit:
            break
        query = q_enc[ex_i].ids[: config.max_query_length]
        c = ctx_of[ex.context]
        spans = doc_spans(len(ctx_ids[c]), seq - len(query) - 3, config.doc_stride)
        if spans:  # an empty context gives no feature, as in the reference
            plan.append((ex_i, query, c, spans, best_span_of_token(spans, len(ctx_ids[c]))))
            total += len(spans)
    n = total if limit is None else min(total, limit)

    out = SquadFeatures(
        input_ids=np.zeros((n, seq), np.int64),
        attention_mask=np.zeros((n, seq), np.int64),
        token_type_ids=np.zeros((n, seq), np.int64),
        example_index=np.zeros(n, np.int64),
        token_offsets=np.full((n, seq, 2), -1, np.int32),
        max_context=np.zeros((n, seq), bool),
    )
    row = 0
    for ex_i, query, c, spans, best in plan:
        doc_at = len(query) + 2  # after [CLS] query [SEP]
        for span_i, (start, length) in enumerate(spans):
            if row == n:
                return out
            end = doc_at + length
            out.input_ids[row, : end + 1] = [cls, *query, sep, *ctx_ids[c][start : start + length], sep]
            out.attention_mask[row, : end + 1] = 1
            out.token_type_ids[row, doc_at : end + 1] = 1  # the context and its closing [SEP]
            out.example_index[row] = ex_i
            out.token_offsets[row, doc_at:end] = ctx_off[c][start : start + length]
            out.max_context[row, doc_at:end] = best[start : start + length] == span_i
            row += 1
    return out


def answer_token_span(features: SquadFeatures, row: int, char_start: int, char_end: int) -> tuple[int, int] | None:
    """Token positions ``(start, end)`` (inclusive) covering characters ``[char_start, char_end)`` in
    feature ``row``, or None when the answer is not wholly inside that span (for training)."""
    off = features.token_offsets[row]
    ctx = off[:, 0] >= 0
    covers = np.flatnonzero(ctx & (off[:, 1] > char_start) & (off[:, 0] < char_end))
    if covers.size == 0:
        return None
    first, last = int(covers[0]), int(covers[-1])
    if off[first, 0] > char_start or off[last, 1] < char_end:
        return None  # cut by the span's edge
    return first, last


def answer_targets(examples: Sequence[SquadExample], features: SquadFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Token start and end of each feature's first answer, -1 where the span does not hold all of it."""
    starts, ends = np.full(len(features), -1), np.full(len(features), -1)
    for row in range(len(features)):
        ex = examples[int(features.example_index[row])]
        span = answer_token_span(features, row, ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0]))
        if span is not None:
            starts[row], ends[row] = span
    return starts, ends


# -- decoding -----------------------------------------------------------------------


def _top_indexes(logits: np.ndarray, n: int) -> np.ndarray:
    # The reference sorts (index, logit) pairs by logit, descending and stable: lower index first on ties.
    return np.argsort(-logits, kind="stable")[:n]


def decode_answers(
    examples: Sequence[SquadExample],
    features: SquadFeatures,
    logits: Mapping[int, np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """qid -> answer text for every question with at least one answered feature.

    ``logits``: feature row -> ``(S, 2)`` start and end logits (MLPerf's response layout).
    """
    best: dict[int, tuple[float, int, int, int]] = {}  # example -> (score, row, start, end)
    answered: set[int] = set()
    for row in sorted(logits):
        ex_i = int(features.example_index[row])
        answered.add(ex_i)
        start_logits = logits[row][:, 0].astype(np.float64)
        end_logits = logits[row][:, 1].astype(np.float64)
        s_idx, e_idx = _top_indexes(start_logits, n_best), _top_indexes(end_logits, n_best)
        in_ctx = features.token_offsets[row, :, 0] >= 0
        valid = (
            (in_ctx[s_idx] & features.max_context[row, s_idx])[:, None]
            & in_ctx[e_idx][None, :]
            & (e_idx[None, :] >= s_idx[:, None])
            & (e_idx[None, :] - s_idx[:, None] + 1 <= max_answer_length)
        )
        if not valid.any():
            continue
        score = np.where(valid, start_logits[s_idx][:, None] + end_logits[e_idx][None, :], -np.inf)
        flat = int(score.argmax())  # first maximum in (start, end) loop order, like the reference
        i, j = divmod(flat, len(e_idx))
        # Strictly greater: on ties the earlier feature's span wins, as the reference's stable sort keeps it.
        if ex_i not in best or score[i, j] > best[ex_i][0]:
            best[ex_i] = (float(score[i, j]), row, int(s_idx[i]), int(e_idx[j]))
    out = {}
    for ex_i in sorted(answered):
        ex = examples[ex_i]
        if ex_i not in best:
            out[ex.qid] = EMPTY_ANSWER
            continue
        _, row, s, e = best[ex_i]
        text = ex.context[features.token_offsets[row, s, 0] : features.token_offsets[row, e, 1]]
        out[ex.qid] = " ".join(text.split())  # the reference joins whitespace-split words with one space
    return out


# -- the official SQuAD v1.1 metric ---------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def evaluate(examples: Sequence[SquadExample], predictions: Mapping[str, str]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent over all ``examples``; a question without a prediction scores 0."""
    em = f1 = 0.0
    for ex in examples:
        if ex.qid not in predictions:
            continue
        pred = predictions[ex.qid]
        em += max(exact_match_score(pred, t) for t in ex.answers)
        f1 += max(f1_score(pred, t) for t in ex.answers)
    total = len(examples)
    return {
        "exact_match": 100.0 * em / total if total else 0.0,
        "f1": 100.0 * f1 / total if total else 0.0,
        "questions": total,
        "answered": sum(ex.qid in predictions for ex in examples),
    }


# -- the sample source ------------------------------------------------------------------


class SquadSamples:
    """Features as LoadGen samples (see ``tasks.base.SampleSource``); ground truth is the examples."""

    def __init__(
        self,
        examples: Sequence[SquadExample],
        features: SquadFeatures,
        performance_count: int,
        label: str,
        input_names: Sequence[str] = INPUT_NAMES,
    ) -> None:
        self.examples = list(examples)
        self.features = features
        self.label = label
        self.input_names = tuple(input_names)
        self.total_count = len(features)
        self.performance_count = min(performance_count, self.total_count)
        self.sample_shape = features.input_ids.shape[1:]

    def load(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        return self.features.inputs(np.asarray(indices, dtype=np.int64), self.input_names)

    def ground_truth(self) -> list[SquadExample]:
        return self.examples


def squad_dataset_files(dataset_path: Path) -> tuple[Path, Path]:
    """(SQuAD JSON, vocab.txt) from a folder holding both, or from the JSON file with vocab.txt beside it."""
    if dataset_path.is_file():
        squad_file, folder = dataset_path, dataset_path.parent
    elif dataset_path.is_dir():
        squad_file, folder = dataset_path / SQUAD_FILE, dataset_path
    else:
        raise DataError(
            f"SQuAD dataset {dataset_path} does not exist",
            hint=f"Give a folder holding {SQUAD_FILE} and the model's {VOCAB_FILE}",
        )
    vocab_file = folder / VOCAB_FILE
    for path in (squad_file, vocab_file):
        if not path.is_file():
            raise DataError(
                f"{path} does not exist",
                hint=f"The dataset folder must hold {SQUAD_FILE} (SQuAD v1.1 dev set) and the model's {VOCAB_FILE}",
            )
    return squad_file, vocab_file
