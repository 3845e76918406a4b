"""Question answering: BERT-large on SQuAD v1.1 (MLPerf ``bert-99`` and ``bert-99.9``), or its synthetic stand-in.

Real: ``dataset_path`` is a folder holding SQuAD's ``dev-v1.1.json`` and the
model's WordPiece ``vocab.txt`` (or the JSON file itself, with ``vocab.txt`` next
to it); features are MLPerf's (384 tokens, doc stride 128, query <= 64 tokens).
Weights: a Hugging Face-named ``BertForQuestionAnswering`` state dict
(``.pt``/``.pth``/``.bin``), or an ONNX file with inputs ``input_ids``,
``attention_mask``, ``token_type_ids`` (MLPerf's fp32 ``model.onnx`` names them
``input_ids``, ``input_mask``, ``segment_ids``; both are recognised).
Out of the box: a two-layer BERT trained by ``prepare`` on a synthetic span task
(``data.synthetic_spans``) that goes through the same reader, WordPiece features,
span decoding and official F1.

Both benchmarks share the model, data and stand-in; they differ only in the
quality target. Each sample (one doc span) is answered, as in MLPerf's reference,
with its start and end logits interleaved: ``(S, 2)`` float32.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mlgauge.backends.model_files import onnx_input_names
from mlgauge.data.squad import (
    INPUT_NAMES,
    MLPERF_FEATURES,
    VOCAB_FILE,
    FeatureConfig,
    SquadExample,
    SquadFeatures,
    SquadSamples,
    answer_targets,
    create_features,
    decode_answers,
    evaluate,
    load_tokenizer,
    read_squad,
    squad_dataset_files,
)
from mlgauge.errors import DataError, ModelError, choice_error
from mlgauge.rules import DEFAULT_ROUND, QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import AccuracyResult, ModelSource, Workload
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

BENCHMARKS = ("bert-99", "bert-99.9")
# MLPerf's fp32 model.onnx (zenodo 3733910) names its inputs the TensorFlow way.
MLPERF_ONNX_INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
OUTPUT_NAMES = ("start_logits", "end_logits")

# Bump when the generator or the training recipe changes, so stale caches are rebuilt.
# Part of the export cache keys of models built from models.bert / models.mobilebert: bump it
# when their traced graph changes (not the weights), so cached .onnx/.pte files are rebuilt.
# 2: attention written as bmm (models.bert.masked_attention).
BERT_GRAPH_REVISION = 2
STANDIN_VERSION = "v1"
STANDIN_FEATURES = FeatureConfig(max_seq_length=128, doc_stride=64, max_query_length=16)
CALIBRATION_QUESTIONS = 64  # INT8 calibration set of the stand-ins
STANDIN_SPLITS = {"train": 4_000, "val": 1_024}
STANDIN_STEPS = 700
STANDIN_BATCH = 32
STANDIN_LR = 2e-3


# -- responses and scoring ----------------------------------------------------------


def qa_postprocess(outputs: object, indices=None) -> np.ndarray:
    """Start and end logits -> ``(B, S, 2)`` float32, MLPerf's response layout.

    Takes the two ``(B, S)`` outputs, or one ``(B, S, 2)`` array (models that stack them).
    """
    if isinstance(outputs, tuple | list) and len(outputs) == 2:
        start, end = np.asarray(outputs[0]), np.asarray(outputs[1])
        if start.ndim == 2 and start.shape == end.shape:
            return np.stack([start, end], axis=-1).astype(np.float32, copy=False)
    elif isinstance(outputs, np.ndarray) and outputs.ndim == 3 and outputs.shape[-1] == 2:
        return outputs.astype(np.float32, copy=False)
    shapes = [np.shape(o) for o in outputs] if isinstance(outputs, tuple | list) else np.shape(outputs)
    raise ModelError(
        f"the model returned {shapes}; question answering needs start and end logits, (batch, seq) each",
        hint="Use a BertForQuestionAnswering-style model with two outputs (start_logits, end_logits)",
    )


def make_squad_score(
    examples: Sequence[SquadExample], features: SquadFeatures, target: QualityTarget
) -> Callable[[dict[int, np.ndarray]], AccuracyResult]:
    """qsl_idx -> flat ``2*S`` float32 response, to the official SQuAD v1.1 F1 (primary) and exact match."""
    seq = features.input_ids.shape[1]

    def score(predictions: dict[int, np.ndarray]) -> AccuracyResult:
        logits = {}
        for idx, flat in predictions.items():
            if flat.size != 2 * seq:
                raise ModelError(
                    f"the response for sample {idx} has {flat.size} values; expected {2 * seq} "
                    f"(start and end logits for {seq} tokens)",
                    hint="Use a model for this task's sequence length",
                )
            logits[idx] = flat.reshape(seq, 2)
        metrics = evaluate(examples, decode_answers(examples, features, logits))
        details = {k: metrics[k] for k in ("exact_match", "questions", "answered")}
        return AccuracyResult("F1", metrics["f1"], "%", len(predictions), target, details)

    return score


def evaluate_model(model, examples: Sequence[SquadExample], features: SquadFeatures, batch_size: int = 256) -> dict:
    """The official metrics of a PyTorch QA model over all of ``features`` (for prepare and checks)."""
    import torch

    model.eval()
    logits = {}
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = features.inputs(slice(start, start + batch_size))
            out = qa_postprocess(tuple(o.numpy() for o in model(*(torch.from_numpy(a) for a in batch.values()))))
            logits.update({start + i: out[i] for i in range(len(out))})
    return evaluate(examples, decode_answers(examples, features, logits))


# -- the stand-in's training -----------------------------------------------------------


def standin_init(model) -> None:
    """PyTorch's default Linear init and unit-variance embeddings for the stand-in.

    Measured on the synthetic task: with BERT's std-0.02 init the two-layer model was still
    on its loss plateau after the 700 training steps (F1 34%, the level of ignoring the
    question: attention had not formed); with this init it reaches F1 ~99%.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
        elif isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight, std=1.0)


def fit_span_extractor(
    model,
    features: SquadFeatures,
    starts: np.ndarray,
    ends: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
):
    """AdamW with a one-cycle schedule on the mean of the start and end cross-entropies."""
    import torch
    import torch.nn.functional as F

    keep = np.flatnonzero(starts >= 0)
    data = {k: torch.from_numpy(v[keep]) for k, v in features.inputs(slice(None)).items()}
    y_start, y_end = torch.from_numpy(starts[keep]), torch.from_numpy(ends[keep])
    lengths = data["attention_mask"].sum(1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    while step < steps:
        order = torch.randperm(len(keep), generator=gen)
        for first in range(0, len(order) - batch_size + 1, batch_size):
            rows = order[first : first + batch_size]
            # Padding is masked, so cutting the batch to its longest sample changes nothing but the cost.
            n = int(lengths[rows].max())
            start_logits, end_logits = model(*(v[rows, :n] for v in data.values()))
            loss = (F.cross_entropy(start_logits, y_start[rows]) + F.cross_entropy(end_logits, y_end[rows])) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step / steps)
            if step == steps:
                break
    return model.eval()


# -- the task -------------------------------------------------------------------------


def standin_calibration(tokenizer, input_names: Sequence[str] = INPUT_NAMES) -> dict[str, np.ndarray]:
    """INT8 calibration inputs for a stand-in: questions of a split of their own, never the
    validation questions (MLPerf's calibration lists come from the training set too)."""
    from mlgauge.data import synthetic_spans

    with tempfile.TemporaryDirectory(prefix="mlgauge-calibration-") as work:
        path = synthetic_spans.write_split(Path(work) / "calibration.json", CALIBRATION_QUESTIONS, "calibration")
        examples = read_squad(path)
    features = create_features(examples, tokenizer, STANDIN_FEATURES)
    return features.inputs(np.arange(len(features)), tuple(input_names))


def train_span_standin(
    cache: StandinCache,
    task: str,
    what: str,
    make_model: Callable[[int, int], object],
    lr: float,
    progress: Callable[[str, float], None] | None,
) -> dict:
    """Generate the synthetic questions, train ``make_model(vocab_size, seq)`` on them and
    cache vocab, validation questions and weights: the stand-in of BERT and of MobileBERT."""
    import torch

    from mlgauge.data import synthetic_spans

    # ``progress`` gets the overall fraction done: data is the first tenth, training most of the rest.
    report = progress or (lambda stage, fraction: None)
    start = time.perf_counter()
    report("generating synthetic questions", 0.0)
    with tempfile.TemporaryDirectory(prefix=f"mlgauge-{task}-") as work:
        work = Path(work)
        tokenizer = load_tokenizer(synthetic_spans.write_vocab(work / VOCAB_FILE))
        split = {}
        for name, count in STANDIN_SPLITS.items():
            examples = read_squad(synthetic_spans.write_split(work / f"{name}.json", count, name))
            split[name] = (examples, create_features(examples, tokenizer, STANDIN_FEATURES))
        report("generating synthetic questions", 0.08)

        torch.manual_seed(0)
        model = make_model(tokenizer.get_vocab_size(), STANDIN_FEATURES.max_seq_length)
        standin_init(model)
        untrained = evaluate_model(model, *split["val"])
        starts, ends = answer_targets(*split["train"])
        fit_span_extractor(
            model, split["train"][1], starts, ends,
            steps=STANDIN_STEPS, batch_size=STANDIN_BATCH, lr=lr,
            progress=lambda f: report(f"training {what}", 0.1 + 0.85 * f),
        )  # fmt: skip
        trained = evaluate_model(model, *split["val"])
        report(f"training {what}", 1.0)

        meta = {
            "task": task,
            "version": cache.version,
            "train_questions": STANDIN_SPLITS["train"],
            "val_questions": STANDIN_SPLITS["val"],
            "val_features": len(split["val"][1]),
            "steps": STANDIN_STEPS,
            "threads": 1,
            "val_f1_trained": trained["f1"],
            "val_exact_match_trained": trained["exact_match"],
            "val_f1_untrained": untrained["f1"],
            "val_exact_match_untrained": untrained["exact_match"],
            "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__,
        }

        def fill(folder: Path) -> None:
            (folder / VOCAB_FILE).write_bytes((work / VOCAB_FILE).read_bytes())
            (folder / "val.json").write_bytes((work / "val.json").read_bytes())
            torch.save(model.state_dict(), folder / "weights.pt")

        return cache.write(fill, meta)


class BertTask(StandinTask):
    title = "Question answering (BERT-large on SQuAD v1.1; synthetic stand-in by default)"
    rules_round = DEFAULT_ROUND
    _TARGETS = {"bert-99": "99%", "bert-99.9": "99.9%"}

    # One stand-in for both benchmarks: same model and data, different targets.
    cache = StandinCache("bert", STANDIN_VERSION)

    def __init__(self, benchmark: str = "bert-99") -> None:
        if benchmark not in BENCHMARKS:
            raise choice_error("BERT benchmark", benchmark, BENCHMARKS)
        self.name = benchmark
        self.title = (
            f"Question answering, {self._TARGETS[benchmark]} F1 target "
            "(BERT-large on SQuAD v1.1; synthetic stand-in by default)"
        )

    # -- the synthetic stand-in -------------------------------------------------


    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic questions and train the small BERT; cached, so only the first call works."""
        if self.is_prepared():
            return self.cache.meta()
        from mlgauge.training.fit import single_threaded

        with single_threaded():
            return self._prepare(progress)

    def _prepare(self, progress: Callable[[str, float], None] | None) -> dict:
        def make_model(vocab_size: int, seq: int):
            from mlgauge.models.bert import BertForQuestionAnswering, small_config

            return BertForQuestionAnswering(small_config(vocab_size, seq))

        return train_span_standin(self.cache, "bert", "the small BERT", make_model, STANDIN_LR, progress)

    def _standin_workload(self, weights_path: Path | None, count: int | None) -> Workload:
        d = self.cache.require(self.name)
        rule = standin_rules()[self.name]
        tokenizer = load_tokenizer(d / VOCAB_FILE)
        examples = read_squad(d / "val.json")
        features = create_features(examples, tokenizer, STANDIN_FEATURES, limit=count)
        weights = existing_weights(weights_path or d / "weights.pt")
        vocab_size = tokenizer.get_vocab_size()

        def build():
            from mlgauge.models.bert import BertForQuestionAnswering, small_config

            net = BertForQuestionAnswering(small_config(vocab_size, STANDIN_FEATURES.max_seq_length))
            return load_into(net, load_state_dict(weights), weights)

        model = ModelSource(
            name="small-bert",
            inputs=_input_specs(INPUT_NAMES, STANDIN_FEATURES.max_seq_length),
            outputs=_output_specs(STANDIN_FEATURES.max_seq_length),
            cache_key=f"bert-synthetic-{STANDIN_VERSION}-g{BERT_GRAPH_REVISION}-{file_digest(weights)}",
            build=build,
            weights_path=weights,
            calibration=lambda: standin_calibration(tokenizer),
        )
        return self._workload(examples, features, "synthetic", model, rule.quality, rule.performance_sample_count)

    # -- the real benchmark -----------------------------------------------------
    def _real_workload(self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str) -> Workload:
        rule = inference_rules(round).benchmark(self.name)
        if weights_path is None:
            raise ModelError(
                "BERT on SQuAD needs weights",
                hint="Pass --weights with a BertForQuestionAnswering state dict (.pt/.pth/.bin, Hugging Face "
                "names) or an ONNX file such as MLPerf's model.onnx",
            )
        weights_path = existing_weights(weights_path)
        squad_file, vocab_file = squad_dataset_files(dataset_path)
        examples = read_squad(squad_file)
        features = create_features(examples, load_tokenizer(vocab_file), MLPERF_FEATURES, limit=count)
        seq = MLPERF_FEATURES.max_seq_length
        digest = file_digest(weights_path)
        if weights_path.suffix.lower() == ".onnx":
            names = onnx_input_names(weights_path)
            # Feed MLPerf's own names when the file uses them; otherwise the backend checks ours.
            use = MLPERF_ONNX_INPUT_NAMES if names is not None and set(names) == set(MLPERF_ONNX_INPUT_NAMES) else INPUT_NAMES
            model = ModelSource(
                name="bert-large",
                inputs=_input_specs(use, seq),
                outputs=_output_specs(seq),
                cache_key=f"bert-onnx-{digest}",
                onnx_path=weights_path,
                weights_path=weights_path,
            )
        else:

            def build():
                from mlgauge.models.bert import BertForQuestionAnswering, config_from_state, strip_ignorable

                state = strip_ignorable(load_state_dict(weights_path))
                try:
                    config = config_from_state(state)
                except KeyError as exc:
                    raise ModelError(f"weights file {weights_path} is {exc.args[0]}",
                                     hint="Give a Hugging Face BertForQuestionAnswering state dict") from None
                return load_into(BertForQuestionAnswering(config), state, weights_path)

            model = ModelSource(
                name="bert-large",
                inputs=_input_specs(INPUT_NAMES, seq),
                outputs=_output_specs(seq),
                cache_key=f"bert-torch-g{BERT_GRAPH_REVISION}-{digest}",
                build=build,
                weights_path=weights_path,
            )
        return self._workload(examples, features, "squad-v1.1", model, rule.quality, rule.performance_sample_count)

    def _workload(
        self,
        examples: list[SquadExample],
        features: SquadFeatures,
        label: str,
        model: ModelSource,
        quality: QualityTarget,
        performance_count: int,
    ) -> Workload:
        if len(features) == 0:
            raise DataError(f"the {label} questions give no samples", hint="Check the dataset and --count")
        # With --count, score only the questions whose doc spans were kept.
        examples = examples[: int(features.example_index[-1]) + 1]
        names = tuple(spec.name for spec in model.inputs)
        dataset = SquadSamples(examples, features, performance_count, label, names)
        return Workload(
            task=self.name,
            benchmark=self.name,
            dataset=dataset,
            model=model,
            quality=quality,
            response_dtype=np.dtype(np.float32),
            postprocess=qa_postprocess,
            score=make_squad_score(examples, features, quality),
        )



def _input_specs(names: Sequence[str], seq: int) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, (seq,), "int64") for name in names)


def _output_specs(seq: int) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, (seq,), "float32") for name in OUTPUT_NAMES)
