"""The synthetic span task: deterministic, SQuAD-shaped, and tokenized by its own vocab without [UNK]."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlgauge.data import synthetic_spans as ss
from mlgauge.data.squad import FeatureConfig, answer_token_span, create_features, load_tokenizer, read_squad

SEQ = FeatureConfig(max_seq_length=128, doc_stride=64, max_query_length=16)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spans")
    tokenizer = load_tokenizer(ss.write_vocab(folder / "vocab.txt"))
    examples = read_squad(ss.write_split(folder / "val.json", 300, "val"))
    return tokenizer, examples


def test_generation_is_deterministic_and_split_dependent():
    assert ss.generate(20, "val") == ss.generate(20, "val")
    assert ss.generate(5, "val")["data"][0]["paragraphs"] == ss.generate(20, "val")["data"][0]["paragraphs"][:5]
    assert ss.generate(5, "train") != ss.generate(5, "val")
    with pytest.raises(ValueError, match="unknown split"):
        ss.generate(1, "test")


def test_vocab_layout():
    vocab = ss.vocab_tokens()
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == len(set(vocab)) == 5 + 2 + 3 + 64 + 70 + 70
    assert len(ss.key_words()) == 64 and all(re.fullmatch(r"[hjwy][aeiou][bdfgklmnprstvz][aeiou][kz]", k) for k in ss.key_words())


def test_questions_name_a_key_that_brackets_the_answer(written):
    _, examples = written
    keys = set(ss.key_words())
    for ex in examples:
        key = re.fullmatch(r"What does (\w+) enclose\?", ex.question).group(1)
        assert key in keys
        (text,), (start,) = ex.answers, ex.answer_starts
        assert ex.context[start : start + len(text)] == text
        words = text.lower().split()
        assert words[0] == words[-1] == key and 3 <= len(words) <= 5
        # The key occurs twice in the whole context: as the fact's opening and closing word.
        assert re.findall(rf"\b{key}\b", ex.context.lower()) == [key, key]
        assert ex.context[start + len(text)] == "."
    # Questions pick different facts: the answer is not always the first sentence.
    assert len({ex.answer_starts[0] == 0 for ex in examples}) == 2


def test_tokenizes_without_unknowns_into_one_feature_each(written):
    tokenizer, examples = written
    feats = create_features(examples, tokenizer, SEQ)
    assert len(feats) == len(examples)  # one doc span per question
    assert not (feats.input_ids == tokenizer.token_to_id("[UNK]")).any()
    assert feats.attention_mask.sum(1).max() <= 128
    # Words split into WordPieces, so the answer text comes back through offsets.
    pieces = [tokenizer.id_to_token(int(i)) for i in np.unique(feats.input_ids)]
    assert any(p.startswith("##") for p in pieces)
    for row in range(len(feats)):
        ex = examples[int(feats.example_index[row])]
        span = answer_token_span(feats, row, ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0]))
        assert span is not None
        start, end = span
        # The span opens and closes on the key token.
        assert feats.input_ids[row, start] == feats.input_ids[row, end] == feats.input_ids[row, 3]
