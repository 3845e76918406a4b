"""Question answering for MLPerf Mobile: MobileBERT on SQuAD v1.1, or its synthetic stand-in.

Real: a folder holding SQuAD's ``dev-v1.1.json`` and the model's WordPiece
``vocab.txt`` (or the JSON file with ``vocab.txt`` beside it), turned into
features by ``data.squad`` exactly as for BERT (384 tokens, doc stride 128, query
<= 64 tokens; MLPerf Mobile's tfrecords were made by the same ``run_squad.py``
recipe). The user's model file:

* ``.tflite`` (the official ``mobilebert_int8_384_nnapi.tflite`` /
  ``mobilebert_float_384_gpu.tflite``) or ``.onnx``: three inputs, token ids,
  input mask and segment ids, int32 (the official files), int64 or float32
  (the app's GPU model), read from the file; and two outputs, the start and end
  logits. Inputs and outputs are told apart by name ("mask", "segment"/"type",
  "start", "end"); a file whose names say nothing is taken in the app's order
  (``flutter/cpp/datasets/squad.cc``): inputs ids, mask, segments; outputs of a
  ``.tflite`` end then start, of an ``.onnx`` start then end (a PyTorch export's order);
* ``.pte``: an ExecuTorch export taking int64 ids, mask and segments in that
  order and returning start, end;
* a PyTorch state dict of ``models.mobilebert.MobileBertForQuestionAnswering``
  (Hugging Face's ``MobileBertForQuestionAnswering`` names).

Out of the box: a two-layer MobileBERT-style model (bottlenecks, stacked FFNs,
NoNorm, trigram embeddings; ``models.mobilebert.small_config``) trained by
``prepare`` on the synthetic span task the BERT stand-in uses, fed int32 inputs
under MLPerf Mobile's names as the official model is.

Responses, span decoding and scoring are the BERT task's (``tasks.question_answering``
and ``data.squad``): ``(S, 2)`` float32 start/end logits per sample, the official
SQuAD v1.1 F1 (primary) and exact match. The app computes its F1 from the
tfrecord's tokens with ``get_final_text``; the text here comes from token
offsets, as for BERT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mlgauge.backends.model_files import onnx_io, tflite_io
from mlgauge.data.squad import (
    MLPERF_FEATURES,
    VOCAB_FILE,
    SquadExample,
    SquadFeatures,
    SquadSamples,
    create_features,
    load_tokenizer,
    read_squad,
    squad_dataset_files,
)
from mlgauge.errors import DataError, ModelError
from mlgauge.rules import QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import ModelSource, Workload
from mlgauge.tasks.mobile_classification import MOBILE_ROUND
from mlgauge.tasks.question_answering import (
    BERT_GRAPH_REVISION,
    MLPERF_ONNX_INPUT_NAMES,
    OUTPUT_NAMES,
    STANDIN_FEATURES,
    make_squad_score,
    qa_postprocess,
    standin_calibration,
    train_span_standin,
)
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

# MLPerf Mobile's tfrecords (squad_utils/types.h) and the official models name the inputs the TensorFlow way.
MOBILE_INPUT_NAMES = MLPERF_ONNX_INPUT_NAMES  # ("input_ids", "input_mask", "segment_ids")
MOBILE_INPUT_DTYPE = "int32"

# Bump when the generator or the training recipe changes, so stale caches are rebuilt.
STANDIN_VERSION = "v1"
STANDIN_LR = 3e-3  # measured: F1 99.6% after 700 steps; BERT's 2e-3 gave 97.7%

_TFLITE_TYPES = {0: "float32", 2: "int32", 4: "int64"}  # schema TensorType codes the app's inputs can have
_ONNX_TYPES = {1: "float32", 6: "int32", 7: "int64"}  # TensorProto.DataType codes


class MobileSquadSamples(SquadSamples):
    """SQuAD features as samples in the model's own input dtypes (int32 for MLPerf Mobile's models)."""

    def __init__(
        self,
        examples: Sequence[SquadExample],
        features: SquadFeatures,
        performance_count: int,
        label: str,
        inputs: Sequence[TensorSpec],
    ) -> None:
        # ``inputs`` are in role order: token ids, mask, segments (SquadFeatures.inputs' order).
        super().__init__(examples, features, performance_count, label, [spec.name for spec in inputs])
        self._dtypes = {spec.name: np.dtype(spec.dtype) for spec in inputs}

    def load(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        return {name: a.astype(self._dtypes[name], copy=False) for name, a in super().load(indices).items()}


# -- model files --------------------------------------------------------------------------


def input_roles(names: Sequence[str], path: Path) -> tuple[str, str, str]:
    """The model's input names in role order: token ids, input mask, segment ids.

    By name where the names say it ("mask"; "segment" or "type"; the other is the
    ids), else in the file's order, which is the app's: it feeds inputs by position.
    """
    if len(names) != 3:
        raise ModelError(
            f"{path} has {len(names)} inputs {list(names)}; "
            "MobileBERT takes 3: token ids, input mask, segment ids",
            hint="Give a question-answering model with MLPerf Mobile's three inputs",
        )
    lower = [n.lower() for n in names]
    mask = [n for n, low in zip(names, lower, strict=True) if "mask" in low]
    segment = [
        n
        for n, low in zip(names, lower, strict=True)
        if ("segment" in low or "type" in low) and "mask" not in low
    ]
    ids = [n for n in names if n not in mask and n not in segment]
    if len(mask) == len(segment) == len(ids) == 1:
        return ids[0], mask[0], segment[0]
    return names[0], names[1], names[2]


def start_first(names: Sequence[str], default: bool, path: Path) -> bool:
    """Whether the model returns the start logits before the end logits (by name, else ``default``)."""
    if len(names) != 2:
        raise ModelError(
            f"{path} has {len(names)} outputs {list(names)}; MobileBERT returns 2: start and end logits",
            hint="Give a question-answering model with two outputs (start_logits, end_logits)",
        )
    lower = [n.lower() for n in names]
    if "start" in lower[0] and "end" in lower[1] and "start" not in lower[1]:
        return True
    if "end" in lower[0] and "start" in lower[1] and "start" not in lower[0]:
        return False
    return default


def logits_postprocess(start_is_first: bool) -> Callable[[object, Sequence[int] | None], np.ndarray]:
    """qa_postprocess for a model whose two outputs may come end first (MLPerf Mobile's .tflite)."""

    def postprocess(outputs: object, indices: Sequence[int] | None = None) -> np.ndarray:
        if not start_is_first and isinstance(outputs, tuple | list) and len(outputs) == 2:
            outputs = (outputs[1], outputs[0])
        return qa_postprocess(outputs)

    return postprocess


def _file_model(path: Path, seq: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], bool]:
    """(input specs in role order, output specs in the file's order, start first?) of a .tflite/.onnx file."""
    suffix = path.suffix.lower()
    inputs, outputs = tflite_io(path) if suffix == ".tflite" else onnx_io(path)
    types = _TFLITE_TYPES if suffix == ".tflite" else _ONNX_TYPES
    dtype_of = dict(inputs)
    specs = []
    for name in input_roles([name for name, _ in inputs], path):
        if dtype_of[name] not in types:
            raise ModelError(
                f"{path} takes input '{name}' as type code {dtype_of[name]}; "
                "MLPerf Mobile feeds int32, int64 or float32",
                hint="Use a MobileBERT model whose inputs are int32 (the official files), int64 or float32",
            )
        specs.append(TensorSpec(name, (seq,), types[dtype_of[name]]))
    first = start_first(outputs, default=suffix != ".tflite", path=path)
    return tuple(specs), tuple(TensorSpec(name, (seq,)) for name in outputs), first


# -- the task -------------------------------------------------------------------------------


class MobileBertTask(StandinTask):
    name = "mobilebert"
    title = "Question answering (MobileBERT on SQuAD v1.1, MLPerf Mobile; synthetic stand-in by default)"
    rules_round = MOBILE_ROUND

    cache = StandinCache("mobilebert", STANDIN_VERSION)

    def __init__(self, benchmark: str = "mobilebert") -> None:
        self.benchmark = benchmark

    # -- the synthetic stand-in -------------------------------------------------


    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic questions and train the small MobileBERT, once (cached)."""
        if self.is_prepared():
            return self.cache.meta()
        from mlgauge.training.fit import single_threaded

        with single_threaded():
            return self._prepare(progress)

    def _prepare(self, progress: Callable[[str, float], None] | None) -> dict:
        def make_model(vocab_size: int, seq: int):
            from mlgauge.models.mobilebert import MobileBertForQuestionAnswering, small_config

            return MobileBertForQuestionAnswering(small_config(vocab_size, seq))

        return train_span_standin(self.cache, self.name, "the small MobileBERT", make_model, STANDIN_LR, progress)

    def _standin_workload(self, weights_path: Path | None, count: int | None) -> Workload:
        d = self.cache.require(self.benchmark)
        rule = standin_rules()[self.benchmark]
        tokenizer = load_tokenizer(d / VOCAB_FILE)
        examples = read_squad(d / "val.json")
        features = create_features(examples, tokenizer, STANDIN_FEATURES, limit=count)
        weights = existing_weights(weights_path or d / "weights.pt")
        vocab_size, seq = tokenizer.get_vocab_size(), STANDIN_FEATURES.max_seq_length

        def build():
            from mlgauge.models.mobilebert import MobileBertForQuestionAnswering, small_config

            return load_into(
                MobileBertForQuestionAnswering(small_config(vocab_size, seq)),
                load_state_dict(weights),
                weights,
            )

        model = ModelSource(
            name="small-mobilebert",
            inputs=tuple(TensorSpec(name, (seq,), MOBILE_INPUT_DTYPE) for name in MOBILE_INPUT_NAMES),
            outputs=tuple(TensorSpec(name, (seq,)) for name in OUTPUT_NAMES),
            cache_key=f"{self.benchmark}-synthetic-{STANDIN_VERSION}-g{BERT_GRAPH_REVISION}-{file_digest(weights)}",
            build=build,
            weights_path=weights,
            calibration=lambda: {
                name: array.astype(MOBILE_INPUT_DTYPE)
                for name, array in standin_calibration(tokenizer, MOBILE_INPUT_NAMES).items()
            },
        )
        return self._workload(
            examples, features, "synthetic", model, rule.quality, rule.performance_sample_count, True
        )

    # -- the real benchmark -----------------------------------------------------
    def _real_workload(
        self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str
    ) -> Workload:
        rule = inference_rules(round).benchmark(self.benchmark)
        if weights_path is None:
            raise ModelError(
                "MobileBERT on SQuAD needs a model file",
                hint="Pass --weights with MLPerf Mobile's mobilebert .tflite, an ONNX or ExecuTorch export, "
                "or a MobileBertForQuestionAnswering state dict (Hugging Face names)",
            )
        weights_path = existing_weights(weights_path)
        seq = MLPERF_FEATURES.max_seq_length
        suffix = weights_path.suffix.lower()
        build = None
        if suffix in (".tflite", ".onnx"):
            inputs, outputs, first = _file_model(weights_path, seq)
        elif suffix == ".pte":
            inputs = tuple(TensorSpec(name, (seq,), "int64") for name in MOBILE_INPUT_NAMES)
            outputs, first = tuple(TensorSpec(name, (seq,)) for name in OUTPUT_NAMES), True
        else:
            inputs = tuple(TensorSpec(name, (seq,), MOBILE_INPUT_DTYPE) for name in MOBILE_INPUT_NAMES)
            outputs, first = tuple(TensorSpec(name, (seq,)) for name in OUTPUT_NAMES), True

            def build():
                from mlgauge.models.mobilebert import (
                    MobileBertForQuestionAnswering,
                    config_from_state,
                    strip_ignorable,
                )

                state = strip_ignorable(load_state_dict(weights_path))
                try:
                    config = config_from_state(state)
                except KeyError as exc:
                    raise ModelError(
                        f"weights file {weights_path} is {exc.args[0]}",
                        hint="Give a Hugging Face MobileBertForQuestionAnswering state dict, "
                        "or a .tflite/.onnx/.pte file",
                    ) from None
                return load_into(MobileBertForQuestionAnswering(config), state, weights_path)

        squad_file, vocab_file = squad_dataset_files(dataset_path)
        examples = read_squad(squad_file)
        features = create_features(examples, load_tokenizer(vocab_file), MLPERF_FEATURES, limit=count)
        model = ModelSource(
            name="mobilebert",
            inputs=inputs,
            outputs=outputs,
            cache_key=f"{self.benchmark}-{suffix.lstrip('.')}-g{BERT_GRAPH_REVISION}-{file_digest(weights_path)}",
            build=build,
            onnx_path=weights_path if suffix == ".onnx" else None,
            tflite_path=weights_path if suffix == ".tflite" else None,
            pte_path=weights_path if suffix == ".pte" else None,
            weights_path=weights_path,
        )
        return self._workload(
            examples, features, "squad-v1.1", model, rule.quality, rule.performance_sample_count, first
        )

    def _workload(
        self,
        examples: list[SquadExample],
        features: SquadFeatures,
        label: str,
        model: ModelSource,
        quality: QualityTarget,
        performance_count: int,
        start_is_first: bool,
    ) -> Workload:
        if len(features) == 0:
            raise DataError(f"the {label} questions give no samples", hint="Check the dataset and --count")
        # With --count, score only the questions whose doc spans were kept.
        examples = examples[: int(features.example_index[-1]) + 1]
        return Workload(
            task=self.name,
            benchmark=self.benchmark,
            dataset=MobileSquadSamples(examples, features, performance_count, label, model.inputs),
            model=model,
            quality=quality,
            response_dtype=np.dtype(np.float32),
            postprocess=logits_postprocess(start_is_first),
            score=make_squad_score(examples, features, quality),
        )

