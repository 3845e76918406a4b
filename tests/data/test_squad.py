"""SQuAD v1.1: the reader, WordPiece features and doc spans, best-span decoding, and the official metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlgauge.data.squad import (
    EMPTY_ANSWER,
    MLPERF_FEATURES,
    FeatureConfig,
    SquadExample,
    SquadSamples,
    answer_targets,
    answer_token_span,
    best_span_of_token,
    create_features,
    decode_answers,
    doc_spans,
    evaluate,
    exact_match_score,
    f1_score,
    load_tokenizer,
    normalize_answer,
    read_squad,
)
from mlgauge.errors import DataError

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "(", ")",
    "the", "cat", "sat", "on", "mat", "who", "what", "where", "play", "##ing",
    "dog", "ran", "in", "park", "cafe", "1895", "was", "born", "a", "##s",
]
ID = {t: i for i, t in enumerate(VOCAB)}
CONTEXT = "The cat sat on the mat."
LONG_CONTEXT = " ".join(["The dog ran in the park."] * 80)  # 560 tokens: more than one 384-token feature


def _squad_doc() -> dict:
    return {
        "version": "1.1",
        "data": [
            {"title": "a", "paragraphs": [{"context": CONTEXT, "qas": [
                {"id": "q1", "question": "Who sat?", "answers": [{"text": "The cat", "answer_start": 0},
                                                                  {"text": "cat", "answer_start": 4}]},
                {"id": "q2", "question": "Where?", "answers": [{"text": "on the mat", "answer_start": 12}]},
            ]}]},
            {"title": "b", "paragraphs": [{"context": LONG_CONTEXT, "qas": [
                {"id": "q3", "question": "Who ran in the park?", "answers": [{"text": "dog", "answer_start": 4}]},
            ]}]},
        ],
    }


@pytest.fixture
def squad_dir(tmp_path) -> Path:
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(_squad_doc()), encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return tmp_path


@pytest.fixture
def tokenizer(squad_dir):
    return load_tokenizer(squad_dir / "vocab.txt")


# -- reading ------------------------------------------------------------------------------


def test_read_squad_gives_every_question_in_order(squad_dir):
    examples = read_squad(squad_dir / "dev-v1.1.json")
    assert [e.qid for e in examples] == ["q1", "q2", "q3"]
    q1 = examples[0]
    assert q1 == SquadExample("q1", "Who sat?", CONTEXT, ("The cat", "cat"), (0, 4))
    assert examples[1].context == CONTEXT
    assert examples[2].answers == ("dog",) and examples[2].context == LONG_CONTEXT


def _broken(doc: dict, edit) -> dict:
    edit(doc)
    return doc


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("data"), "top level: no 'data'"),
        (lambda d: d["data"][1].pop("paragraphs"), "data[1]: no 'paragraphs'"),
        (lambda d: d["data"][0]["paragraphs"][0].pop("context"), "data[0].paragraphs[0]: no 'context'"),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][1].pop("answers"), "data[0].paragraphs[0].qas[1]: no 'answers'"),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].pop("id"), "data[0].paragraphs[0].qas[0]: no 'id'"),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][1].update(answer_start="4"),
            "data[0].paragraphs[0].qas[0].answers[1].answer_start should be int, got str",
        ),
        (
            lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(question=None),
            "data[1].paragraphs[0].qas[0].question should be str, got NoneType",
        ),
        (lambda d: d["data"][1]["paragraphs"].append("text"), "data[1].paragraphs[1]: expected an object, got str"),
    ],
    ids=["no-data", "no-paragraphs", "no-context", "no-answers", "no-id", "str-start", "null-question", "not-object"],
)
def test_malformed_fields_name_the_file_and_the_field(tmp_path, edit, message):
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(_broken(_squad_doc(), edit)), encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_squad(path)
    assert str(info.value).startswith(f"{path}: {message}")
    assert info.value.hint and "dev-v1.1.json" in info.value.hint


def test_squad_v2_style_empty_answers_are_rejected(tmp_path):
    doc = _squad_doc()
    doc["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataError, match=r"qas\[1\]: 'answers' is empty") as info:
        read_squad(path)
    assert "v2.0" in info.value.hint


def test_truncated_json_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(_squad_doc(), indent=1)[:300], encoding="utf-8")
    with pytest.raises(DataError, match="is not valid JSON") as info:
        read_squad(path)
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_missing_squad_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_squad(tmp_path / "dev-v1.1.json")


# -- tokenizer ---------------------------------------------------------------------------


def test_tokenizer_is_lowercasing_wordpiece(tokenizer):
    enc = tokenizer.encode("The Café, playing (1895) zebra", add_special_tokens=False)
    assert enc.tokens == ["the", "cafe", ",", "play", "##ing", "(", "1895", ")", "[UNK]"]
    # Offsets point into the original text, accents and case included.
    assert [("The Café, playing (1895) zebra")[a:b] for a, b in enc.offsets] == [
        "The", "Café", ",", "play", "ing", "(", "1895", ")", "zebra"
    ]


def test_vocab_problems_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "vocab.txt")
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\nthe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lacks \[CLS\], \[SEP\]") as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)


# -- doc spans and features -------------------------------------------------------------------


def _google_is_max_context(spans, span_index, position) -> bool:
    """run_squad.py's _check_is_max_context, line by line."""
    best_score, best_index = None, None
    for index, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, index
    return span_index == best_index


def test_doc_spans_slide_like_run_squad():
    assert doc_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert doc_spans(7, 5, 2) == [(0, 5), (2, 5)]
    assert doc_spans(5, 10, 3) == [(0, 5)]
    assert doc_spans(0, 10, 3) == []
    # MLPerf: 560 context tokens, a 6-token query -> 375 per span, stride 128.
    assert doc_spans(560, 384 - 6 - 3, 128) == [(0, 375), (128, 375), (256, 304)]


def test_best_span_of_token_matches_run_squad():
    spans = [(0, 4), (3, 4), (6, 4)]
    assert best_span_of_token(spans, 10).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, size, stride = int(rng.integers(1, 60)), int(rng.integers(1, 20)), int(rng.integers(1, 20))
        spans = doc_spans(n, size, stride)
        best = best_span_of_token(spans, n)
        for pos in range(n):
            assert [_google_is_max_context(spans, i, pos) for i in range(len(spans))].index(True) == best[pos]


def test_features_layout_by_hand(squad_dir, tokenizer):
    examples = read_squad(squad_dir / "dev-v1.1.json")[:1]  # "Who sat?" on "The cat sat on the mat."
    feats = create_features(examples, tokenizer, FeatureConfig(max_seq_length=10, doc_stride=2, max_query_length=2))
    # The query is cut to 2 tokens; 10 - 2 - 3 = 5 context tokens per span; 7 tokens -> spans (0, 5), (2, 5).
    assert len(feats) == 2
    ids = [[VOCAB[i] for i in row] for row in feats.input_ids]
    assert ids[0] == ["[CLS]", "who", "sat", "[SEP]", "the", "cat", "sat", "on", "the", "[SEP]"]
    assert ids[1] == ["[CLS]", "who", "sat", "[SEP]", "sat", "on", "the", "mat", ".", "[SEP]"]
    assert feats.token_type_ids.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]] * 2
    assert feats.attention_mask.tolist() == [[1] * 10] * 2
    assert feats.example_index.tolist() == [0, 0]
    assert feats.token_offsets[0, :4].tolist() == [[-1, -1]] * 4 and feats.token_offsets[0, 9].tolist() == [-1, -1]
    assert feats.token_offsets[1, 4:9].tolist() == [[8, 11], [12, 14], [15, 18], [19, 22], [22, 23]]
    # Context token 3 ("on") ties between the spans (1 left/right each): the first span wins.
    assert feats.max_context.astype(int).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1, 1, 0]]
    for dtype in (feats.input_ids.dtype, feats.attention_mask.dtype, feats.token_type_ids.dtype):
        assert dtype == np.int64


def test_padding_and_query_truncation(squad_dir, tokenizer):
    examples = read_squad(squad_dir / "dev-v1.1.json")[1:2]  # "Where?"
    feats = create_features(examples, tokenizer, FeatureConfig(max_seq_length=16, doc_stride=4, max_query_length=8))
    assert len(feats) == 1
    assert feats.input_ids[0].tolist() == [
        ID["[CLS]"], ID["where"], ID["?"], ID["[SEP]"],
        ID["the"], ID["cat"], ID["sat"], ID["on"], ID["the"], ID["mat"], ID["."], ID["[SEP]"], 0, 0, 0, 0,
    ]
    assert feats.attention_mask[0].tolist() == [1] * 12 + [0] * 4
    assert feats.token_type_ids[0].tolist() == [0] * 4 + [1] * 8 + [0] * 4
    assert feats.max_context[0].sum() == 7


def test_a_long_context_needs_several_mlperf_features(squad_dir, tokenizer):
    examples = read_squad(squad_dir / "dev-v1.1.json")
    feats = create_features(examples, tokenizer)
    assert feats.input_ids.shape == (1 + 1 + 3, 384)
    assert feats.example_index.tolist() == [0, 1, 2, 2, 2]
    # q3: "who ran in the park ?" is 6 tokens -> 375 context tokens per span over 560 tokens.
    long_rows = [2, 3, 4]
    doc_at = 1 + 6 + 1
    context_ids = np.array(tokenizer.encode(LONG_CONTEXT, add_special_tokens=False).ids)
    assert len(context_ids) == 560
    for row, (start, length) in zip(long_rows, [(0, 375), (128, 375), (256, 304)], strict=True):
        assert feats.attention_mask[row].sum() == doc_at + length + 1
        np.testing.assert_array_equal(feats.input_ids[row, doc_at : doc_at + length], context_ids[start : start + length])
        assert feats.input_ids[row, doc_at + length] == ID["[SEP]"]
    # Every context token is "max context" in exactly one feature.
    counts = np.zeros(560, int)
    for row, start in zip(long_rows, (0, 128, 256), strict=True):
        mask = feats.max_context[row, doc_at:]
        counts[start + np.flatnonzero(mask)] += 1
    assert (counts == 1).all()
    # The first span keeps tokens up to the middle of its overlap with the second.
    assert feats.max_context[2, doc_at : doc_at + 375].sum() == 128 + (375 - 128) // 2 + 1

    limited = create_features(examples, tokenizer, limit=3)
    assert len(limited) == 3
    np.testing.assert_array_equal(limited.input_ids, feats.input_ids[:3])


def test_answer_token_span(squad_dir, tokenizer):
    examples = read_squad(squad_dir / "dev-v1.1.json")[:1]
    feats = create_features(examples, tokenizer, FeatureConfig(max_seq_length=10, doc_stride=2, max_query_length=2))
    assert answer_token_span(feats, 0, 4, 7) == (5, 5)  # "cat"
    assert answer_token_span(feats, 0, 0, 7) == (4, 5)  # "The cat"
    assert answer_token_span(feats, 1, 19, 22) == (7, 7)  # "mat" lies in the second span only
    assert answer_token_span(feats, 0, 19, 22) is None
    assert answer_token_span(feats, 1, 4, 14) is None  # "cat sat on": cut by the span's start
    # Training targets: q1's first answer "The cat" (0..7) lies in F0 only.
    starts, ends = answer_targets(examples, feats)
    assert starts.tolist() == [4, -1] and ends.tolist() == [5, -1]


def test_samples_source_loads_named_inputs(squad_dir, tokenizer):
    examples = read_squad(squad_dir / "dev-v1.1.json")
    feats = create_features(examples, tokenizer)
    source = SquadSamples(examples, feats, performance_count=10833, label="squad-v1.1")
    assert source.total_count == 5 and source.performance_count == 5
    batch = source.load([4, 0])
    assert list(batch) == ["input_ids", "attention_mask", "token_type_ids"]
    np.testing.assert_array_equal(batch["input_ids"], feats.input_ids[[4, 0]])
    renamed = SquadSamples(examples, feats, 2, "x", ("input_ids", "input_mask", "segment_ids")).load([1])
    np.testing.assert_array_equal(renamed["segment_ids"], feats.token_type_ids[[1]])
    assert source.ground_truth()[2].qid == "q3"


# -- decoding -----------------------------------------------------------------------------------


@pytest.fixture
def two_spans(squad_dir, tokenizer):
    """q1 in two features of 10 tokens: F0 = [CLS] who sat [SEP] the cat sat on the [SEP],
    F1 = [CLS] who sat [SEP] sat on the mat . [SEP]."""
    examples = read_squad(squad_dir / "dev-v1.1.json")[:1]
    feats = create_features(examples, tokenizer, FeatureConfig(max_seq_length=10, doc_stride=2, max_query_length=2))
    return examples, feats


def _logits(start: dict[int, float], end: dict[int, float], seq: int = 10) -> np.ndarray:
    out = np.zeros((seq, 2), np.float32)
    for pos, v in start.items():
        out[pos, 0] = v
    for pos, v in end.items():
        out[pos, 1] = v
    return out


def test_decoding_skips_the_question_and_reads_the_text_back(two_spans):
    examples, feats = two_spans
    # The best start is in the question (pos 2): ignored. Next: "cat" (5) .. "sat" (6).
    logits = {0: _logits({2: 9, 5: 5, 4: 1}, {6: 4, 2: 9})}
    assert decode_answers(examples, feats, logits) == {"q1": "cat sat"}


def test_decoding_takes_the_best_span_over_all_features(two_spans):
    examples, feats = two_spans
    logits = {0: _logits({5: 5}, {6: 4}), 1: _logits({7: 6}, {8: 4})}  # "mat." scores 10 > 9
    assert decode_answers(examples, feats, logits) == {"q1": "mat."}
    logits[1] = _logits({7: 4}, {8: 4})  # now 8 < 9
    assert decode_answers(examples, feats, logits) == {"q1": "cat sat"}


def test_decoding_needs_the_start_in_its_max_context_span(two_spans):
    examples, feats = two_spans
    # F0 position 8 ("the", context token 4) is best centred in F1, so F0 may not start there
    # (8..8 would score 28); the best allowed span is 4..5 (10).
    logits = {0: _logits({8: 20, 4: 1}, {5: 9, 8: 8})}
    assert decode_answers(examples, feats, logits) == {"q1": "The cat"}
    # The end may lie outside the max context: start "on" (7), end "the" (8).
    logits = {0: _logits({7: 9}, {8: 9})}
    assert decode_answers(examples, feats, logits) == {"q1": "on the"}


def test_decoding_rejects_backwards_and_overlong_spans(two_spans):
    examples, feats = two_spans
    logits = {0: _logits({6: 9}, {5: 9, 7: 1})}  # end 5 < start 6 (18) is out; 6..7 scores 10
    assert decode_answers(examples, feats, logits) == {"q1": "sat on"}
    logits = {0: _logits({4: 9, 6: 1}, {7: 9, 6: 2})}  # 4..7 (18) is 4 tokens; the best 2-token span is 6..7 (10)
    assert decode_answers(examples, feats, logits, max_answer_length=2) == {"q1": "sat on"}
    assert decode_answers(examples, feats, logits, max_answer_length=4) == {"q1": "The cat sat on"}


def test_decoding_uses_only_the_n_best_indexes(two_spans):
    examples, feats = two_spans
    # With n_best=1 only the question token (pos 1) is considered: no valid span, the reference's "empty".
    logits = {0: _logits({1: 9, 5: 5}, {1: 9, 5: 5})}
    assert decode_answers(examples, feats, logits, n_best=1) == {"q1": EMPTY_ANSWER}
    assert decode_answers(examples, feats, logits, n_best=2) == {"q1": "cat"}


def test_decoding_all_zero_logits_does_not_fail(two_spans):
    examples, feats = two_spans
    zeros = {0: np.zeros((10, 2), np.float32), 1: np.zeros((10, 2), np.float32)}
    # Ties go to the lowest index, as the reference's stable sort: first context token of F0.
    assert decode_answers(examples, feats, zeros) == {"q1": "The"}
    assert decode_answers(examples, feats, {}) == {}


# -- the official metric ------------------------------------------------------------------------


def test_normalize_answer_by_hand():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Banana anthem theory") == "banana anthem theory"  # articles only as words
    assert normalize_answer("U.S. (1895)") == "us 1895"
    assert normalize_answer("the") == ""
    assert normalize_answer("Café\tNoir\n") == "café noir"  # only ASCII punctuation is removed


def test_exact_match_and_f1_by_hand():
    assert exact_match_score("The Cat.", "cat") == 1.0
    assert exact_match_score("cat sat", "cat") == 0.0
    # pred {cat, sat}, gold {cat, sat, down}: precision 1, recall 2/3 -> F1 0.8
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # Counts are clipped: pred "cat cat" vs gold "cat": 1 common; P 1/2, R 1 -> 2/3
    assert f1_score("cat cat", "cat") == pytest.approx(2 / 3)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("the", "cat") == 0.0  # empty after normalisation


def test_evaluate_averages_the_best_ground_truth_over_all_questions():
    examples = [
        SquadExample("a", "?", "", ("The cat", "a black cat"), (0, 0)),
        SquadExample("b", "?", "", ("in 1895",), (0,)),
        SquadExample("c", "?", "", ("Paris",), (0,)),
        SquadExample("d", "?", "", ("x",), (0,)),  # unanswered: scores 0
    ]
    predictions = {"a": "black cat", "b": "1895 in Paris", "c": "Paris!"}
    result = evaluate(examples, predictions)
    # a: "black cat" equals the second answer once normalised: EM 1, F1 1 (the first gives F1 2/3).
    # b: EM 0; tokens {1895, in, paris} vs {in, 1895}: P 2/3, R 1 -> F1 0.8.   c: EM 1, F1 1.   d: 0.
    assert result["exact_match"] == pytest.approx(100 * 2 / 4)
    assert result["f1"] == pytest.approx(100 * (1 + 0.8 + 1 + 0) / 4)
    assert result["questions"] == 4 and result["answered"] == 3
    assert evaluate([], {}) == {"exact_match": 0.0, "f1": 0.0, "questions": 0, "answered": 0}


def test_mlperf_feature_constants():
    assert (MLPERF_FEATURES.max_seq_length, MLPERF_FEATURES.doc_stride, MLPERF_FEATURES.max_query_length) == (
        384, 128, 64
    )
