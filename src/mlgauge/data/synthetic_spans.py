"""A deterministic synthetic span-extraction task in SQuAD v1.1's layout, for BERT's stand-in.

A context is a few "facts" and filler sentences in made-up words, e.g.
``"Jaruz gukeba sula jaruz. Pasezi fiziti. Jazek fazugo ti jazek."``: a fact opens
and closes with the same key word (one vocabulary token) around 1-3 other words.
The question names a key (``"What does jazek enclose?"``) and the answer is that
fact without its full stop (``"Jazek fazugo ti jazek"``). Other words are built
from syllables, so they split into several WordPieces (``fa ##zu ##go``) and the
answer's text comes back through token offsets, as with real SQuAD.

Why this shape: each answer boundary is recognisable from the token itself (it
matches the question's key) plus its neighbour (a full stop after the end, none
before the start), which a two-layer model learns in a few hundred steps. The
"answer follows the key" variant needs the match and the shift composed across
layers: it was still on its loss plateau (F1 ~20%) after 1,500 steps (measured).
Only a model that reads the question scores high: one that ignores it picks one
fact of 3-5.

The data are SQuAD JSON plus a ``vocab.txt``, so the stand-in runs the very pipeline
the real benchmark uses: reader, WordPiece, doc spans, decoding and the official
metric. The same (split, index) always gives the same question, on any machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
QUESTION_WORDS = ("what", "does", "enclose")
PUNCTUATION = (".", "?")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
# Keys start with letters syllable words never start with, so WordPiece's longest-match
# never takes a key as the prefix of an answer or filler word.
_KEY_INITIALS = "hjwy"
NUM_KEYS = 64
FACTS_PER_CONTEXT = (3, 5)  # inclusive ranges
FILLERS_PER_CONTEXT = (0, 2)
_SPLIT_SEEDS = {"train": 4_112, "val": 90_731, "calibration": 27_183}


def syllables() -> list[str]:
    return [c + v for c in _CONSONANTS for v in _VOWELS]


def key_words() -> list[str]:
    """The key words: CVCVC strings, fixed by a seed."""
    rng = np.random.default_rng(5_501)
    pool = [h + v1 + c + v2 + e for h in _KEY_INITIALS for v1 in _VOWELS for c in _CONSONANTS for v2 in _VOWELS for e in "kz"]
    return sorted(rng.choice(pool, size=NUM_KEYS, replace=False).tolist())


def vocab_tokens() -> list[str]:
    """The WordPiece vocabulary, one token per id; [PAD] is id 0 as in BERT's vocab."""
    syl = syllables()
    return [*SPECIAL_TOKENS, *PUNCTUATION, *QUESTION_WORDS, *key_words(), *syl, *("##" + s for s in syl)]


def write_vocab(path: Path) -> Path:
    path = Path(path)
    path.write_text("\n".join(vocab_tokens()) + "\n", encoding="utf-8")
    return path


def _word(rng: np.random.Generator, syl: list[str]) -> str:
    return "".join(rng.choice(syl, size=int(rng.integers(1, 4))))


def _sentence(words: list[str]) -> str:
    return " ".join([words[0].capitalize(), *words[1:]]) + "."


def _paragraph(rng: np.random.Generator, keys: list[str], syl: list[str], qid: str) -> dict:
    n_facts = int(rng.integers(FACTS_PER_CONTEXT[0], FACTS_PER_CONTEXT[1] + 1))
    n_fill = int(rng.integers(FILLERS_PER_CONTEXT[0], FILLERS_PER_CONTEXT[1] + 1))
    chosen = rng.choice(keys, size=n_facts, replace=False).tolist()
    facts = [(k, [_word(rng, syl) for _ in range(int(rng.integers(1, 4)))]) for k in chosen]
    fillers = [[_word(rng, syl) for _ in range(int(rng.integers(2, 5)))] for _ in range(n_fill)]
    sentences = [[k, *answer, k] for k, answer in facts] + fillers
    order = rng.permutation(len(sentences))
    asked = int(rng.integers(n_facts))  # index into facts
    context, answer_start = "", -1
    for s in order:
        if context:
            context += " "
        if s == asked:
            answer_start = len(context)  # the sentence, capitalised and without its full stop
        context += _sentence(sentences[s])
    key, answer = facts[asked]
    text = _sentence([key, *answer, key])[:-1]
    assert context[answer_start : answer_start + len(text)] == text
    return {
        "context": context,
        "qas": [{"id": qid, "question": f"What does {key} enclose?", "answers": [{"text": text, "answer_start": answer_start}]}],
    }


def generate(count: int, split: str) -> dict:
    """``count`` questions (one per paragraph) as a SQuAD v1.1 document."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}")
    keys, syl = key_words(), syllables()
    paragraphs = [
        _paragraph(np.random.default_rng((_SPLIT_SEEDS[split], i)), keys, syl, f"{split}-{i:06d}")
        for i in range(count)
    ]
    return {"version": "1.1", "data": [{"title": f"synthetic-{split}", "paragraphs": paragraphs}]}


def write_split(path: Path, count: int, split: str) -> Path:
    path = Path(path)
    path.write_text(json.dumps(generate(count, split)), encoding="utf-8")
    return path
