"""Semantic segmentation: MOSAIC on ADE20K (MLPerf Mobile), or its synthetic stand-in.

Real: ADE20K validation images and annotations (see ``data.ade20k``) scored on
ADE20K's top-31 classes, as MLPerf Mobile's app does, with the user's model
file: the official ``mobile_segmenter_r4_quant_argmax_uint8.tflite`` (NHWC input)
or an ONNX model (NCHW or NHWC, read from the file).
Out of the box: a small MobileNet-style segmenter on deterministic synthetic
scenes (``data.synthetic_segmentation``), its data generated and weights trained
once by ``prepare``.

Each response is the predicted class id of every pixel, H*W uint8 values in row
order. Accuracy is the mean intersection-over-union over the scored classes, in
percent, from one confusion matrix accumulated over all samples: pixels whose
ground truth is the ignore label are left out, and a prediction of the ignore
class (or of any id outside the scored range) on a labelled pixel counts as a
miss for the true class, as in the app's ``flutter/cpp/datasets/ade20k.cc``.
A class that appears neither in the ground truth nor in the predictions has no
IoU and is left out of the mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mlgauge.errors import ModelError
from mlgauge.rules import QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import AccuracyResult, ModelSource, Workload
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

MOBILE_ROUND = "mobile-v6.0"
# Bump when the generator or the training recipe changes, so stale caches are rebuilt.
STANDIN_VERSION = "v1"
STANDIN_SPLITS = {"train": 1_500, "val": 512}
STANDIN_EPOCHS = 4
STANDIN_BATCH = 16  # small batches: more SGD steps from few scenes, each with 4096 labelled pixels
STANDIN_LR = 0.1
CALIBRATION_SAMPLES = 128


# -- the metric ----------------------------------------------------------------------


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """``(num_classes, num_classes + 1)`` int64 counts: row = true class, column = predicted class.

    Pixels whose truth is ``ignore_label`` (or outside ``0..num_classes-1``) are dropped;
    predictions outside ``0..num_classes-1`` land in the last column, a miss for the true class.
    """
    truth = np.asarray(truth).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"{pred.size} predicted pixels for {truth.size} labelled ones")
    keep = (truth != ignore_label) & (truth >= 0) & (truth < num_classes)
    truth, pred = truth[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(truth * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


def class_iou(confusion: np.ndarray, ignore_label: int) -> np.ndarray:
    """IoU per class (NaN where a class has no pixels in truth or prediction, and for the ignore class)."""
    n = confusion.shape[0]
    tp = np.diag(confusion[:, :n]).astype(np.float64)
    union = confusion.sum(axis=1) + confusion[:, :n].sum(axis=0) - tp  # truth + predicted - both
    iou = np.full(n, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    if 0 <= ignore_label < n:
        iou[ignore_label] = np.nan
    return iou


def mean_iou(confusion: np.ndarray, ignore_label: int) -> float:
    """Mean IoU in percent over the classes that have one; 0 when none does."""
    iou = class_iou(confusion, ignore_label)
    return 100.0 * float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0


def make_miou_score(
    masks: Sequence[np.ndarray] | np.ndarray, num_classes: int, ignore_label: int, target: QualityTarget
) -> Callable[[dict[int, np.ndarray]], AccuracyResult]:
    """Score decoded responses (qsl index -> flat uint8 class ids) against ``masks[index]``."""

    def score(predictions: dict[int, np.ndarray]) -> AccuracyResult:
        confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
        for index, response in predictions.items():
            truth = np.asarray(masks[index])
            if response.size != truth.size:
                raise ModelError(
                    f"the response for sample {index} has {response.size} class ids, "
                    f"but its mask has {truth.size} pixels ({truth.shape[0]}x{truth.shape[1]})",
                    hint="The model must output one class id (or one score vector) per input pixel",
                )
            confusion += confusion_matrix(response, truth, num_classes, ignore_label)
        iou = class_iou(confusion, ignore_label)
        value = mean_iou(confusion, ignore_label)
        details = {
            "classes_scored": int(np.isfinite(iou).sum()),
            "class_iou": {str(c): round(100.0 * float(v), 4) for c, v in enumerate(iou) if np.isfinite(v)},
        }
        return AccuracyResult("mIoU", value, "%", len(predictions), target, details)

    return score


# -- responses -------------------------------------------------------------------------


def class_ids_postprocess(height: int, width: int) -> Callable[[object], np.ndarray]:
    """Model outputs -> ``(B, height*width)`` uint8 class ids.

    Accepts logits ``(B, C, H, W)`` (PyTorch/ONNX) or ``(B, H, W, C)`` (TFLite), and
    models that already take the argmax (``(B, H, W)``, ``(B, H, W, 1)``, ``(B, 1, H, W)``),
    such as MLPerf Mobile's ``..._argmax_uint8.tflite``.
    """

    def postprocess(outputs: object, indices=None) -> np.ndarray:
        out = np.asarray(outputs[0] if isinstance(outputs, tuple) else outputs)
        hw = (height, width)
        if out.ndim == 3 and out.shape[1:] == hw:
            ids = out
        elif out.ndim == 4 and out.shape[2:] == hw:
            ids = out[:, 0] if out.shape[1] == 1 else out.argmax(axis=1)
        elif out.ndim == 4 and out.shape[1:3] == hw:
            ids = out[..., 0] if out.shape[3] == 1 else out.argmax(axis=3)
        else:
            raise ModelError(
                f"segmentation output of shape {list(out.shape)} does not fit {height}x{width} inputs",
                hint="Expected logits (B, classes, H, W) or (B, H, W, classes), or class ids (B, H, W)",
            )
        return np.ascontiguousarray(ids.reshape(len(out), height * width).astype(np.uint8, copy=False))

    return postprocess


# -- the task ----------------------------------------------------------------------------


class MosaicTask(StandinTask):
    name = "mosaic"
    title = "Image segmentation (MOSAIC on ADE20K, MLPerf Mobile; synthetic stand-in by default)"
    rules_round = MOBILE_ROUND

    cache = StandinCache("mosaic", STANDIN_VERSION)

    def __init__(self, benchmark: str = "mosaic") -> None:
        self.benchmark = benchmark

    # -- the synthetic stand-in -------------------------------------------------

    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic scenes and train the small segmenter; cached, so only the first call works."""
        if self.is_prepared():
            return self.cache.meta()
        import torch

        from mlgauge.data import synthetic_segmentation as scenes
        from mlgauge.models.segmentation import MobileSegmenter
        from mlgauge.training.fit import fit_classifier, single_threaded

        report = progress or (lambda stage, fraction: None)
        start = time.perf_counter()
        report("generating synthetic scenes", 0.0)
        train_x, train_y = scenes.generate(range(STANDIN_SPLITS["train"]), "train")
        report("generating synthetic scenes", 0.08)
        val_x, val_y = scenes.generate(range(STANDIN_SPLITS["val"]), "val")
        report("generating synthetic scenes", 0.1)

        with single_threaded():
            torch.manual_seed(0)
            model = MobileSegmenter(num_classes=scenes.NUM_CLASSES)
            untrained = _model_miou(model, val_x, val_y)
            # CrossEntropyLoss takes (B, C, H, W) logits with (B, H, W) targets: the classifier loop fits as is.
            fit_classifier(
                model,
                train_x,
                train_y.astype(np.int64),
                epochs=STANDIN_EPOCHS,
                batch_size=STANDIN_BATCH,
                lr=STANDIN_LR,
                progress=lambda f: report("training the small segmenter", 0.1 + 0.9 * f),
            )
            trained = _model_miou(model, val_x, val_y)

        meta = {
            "task": self.name,
            "version": STANDIN_VERSION,
            "train_samples": STANDIN_SPLITS["train"],
            "val_samples": STANDIN_SPLITS["val"],
            "epochs": STANDIN_EPOCHS,
            "threads": 1,
            "val_miou_trained": trained,
            "val_miou_untrained": untrained,
            "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__,
        }

        def fill(folder: Path) -> None:
            np.save(folder / "val_images.npy", val_x)
            np.save(folder / "val_masks.npy", val_y)
            torch.save(model.state_dict(), folder / "weights.pt")

        return self.cache.write(fill, meta)

    def _standin_workload(self, weights_path: Path | None, count: int | None) -> Workload:
        from mlgauge.data import synthetic_segmentation as scenes

        d = self.cache.require(self.name)
        rule = standin_rules()[self.benchmark]
        images = np.load(d / "val_images.npy", allow_pickle=False)
        masks = np.load(d / "val_masks.npy", allow_pickle=False)
        if count is not None:
            images, masks = images[:count], masks[:count]
        dataset = scenes.SyntheticScenes(images, masks, rule.performance_sample_count)
        weights = existing_weights(weights_path or d / "weights.pt")

        def build():
            from mlgauge.models.segmentation import MobileSegmenter

            return load_into(MobileSegmenter(num_classes=scenes.NUM_CLASSES), load_state_dict(weights), weights)

        def calibration() -> np.ndarray:
            # From the training split, never the scored one (MLPerf's rule for PTQ calibration).
            return scenes.generate(range(CALIBRATION_SAMPLES), "train")[0]

        size = scenes.IMAGE_SIZE
        model = ModelSource(
            name="mobile-segmenter",
            inputs=(TensorSpec("input", dataset.sample_shape),),
            outputs=(TensorSpec("logits", (scenes.NUM_CLASSES, size, size)),),
            cache_key=f"{self.name}-synthetic-{STANDIN_VERSION}-{file_digest(weights)}",
            build=build,
            weights_path=weights,
            calibration=calibration,
        )
        # No ignore pixels in the synthetic masks: every class 0..4, background included, is scored.
        score = make_miou_score(masks, scenes.NUM_CLASSES, scenes.IGNORE_LABEL, rule.quality)
        return self._workload(dataset, model, rule.quality, size, size, score)

    # -- the real benchmark -----------------------------------------------------
    def _real_workload(self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str) -> Workload:
        from mlgauge.backends.model_files import model_file_layout
        from mlgauge.data.ade20k import ADE20K_TOP31, IGNORE_LABEL, ADE20KValidation

        rule = inference_rules(round).benchmark(self.benchmark)
        if weights_path is None:
            raise ModelError(
                "MOSAIC on ADE20K needs a model file",
                hint="Pass --weights with MLPerf Mobile's mobile_segmenter_r4_quant_argmax_uint8.tflite "
                "or an ONNX segmentation model taking 512x512 images",
            )
        weights_path = existing_weights(weights_path)
        layout = model_file_layout(weights_path, "MOSAIC")
        dataset = ADE20KValidation(
            Path(dataset_path),
            class_map=ADE20K_TOP31,
            layout=layout,
            count=count,
            performance_count=rule.performance_sample_count,
        )
        size = dataset.size
        calibration_rows = np.linspace(0, dataset.total_count - 1, min(CALIBRATION_SAMPLES, dataset.total_count))
        suffix = weights_path.suffix.lower()
        model = ModelSource(
            name="mosaic",
            inputs=(TensorSpec("input", dataset.sample_shape),),
            # Per-pixel class ids, as the official argmax model returns; logits are accepted too.
            outputs=(TensorSpec("class_ids", (size, size), "uint8"),),
            cache_key=f"{self.benchmark}-{suffix.lstrip('.')}-{file_digest(weights_path)}",
            onnx_path=weights_path if suffix == ".onnx" else None,
            tflite_path=weights_path if suffix == ".tflite" else None,
            weights_path=weights_path,
            # MLPerf calibrates on its own list of ADE20K *training* images; without them an evenly
            # spread subset of the scored images stands in, so INT8 results are not submission-grade.
            calibration=lambda: dataset.load(calibration_rows.astype(np.int64).tolist()),
        )
        score = make_miou_score(dataset.ground_truth(), dataset.num_classes, IGNORE_LABEL, rule.quality)
        return self._workload(dataset, model, rule.quality, size, size, score)

    def _workload(self, dataset, model: ModelSource, quality: QualityTarget, height: int, width: int, score) -> Workload:
        return Workload(
            task=self.name,
            benchmark=self.benchmark,
            dataset=dataset,
            model=model,
            quality=quality,
            response_dtype=np.dtype(np.uint8),
            postprocess=class_ids_postprocess(height, width),
            score=score,
        )



def _model_miou(model, images: np.ndarray, masks: np.ndarray, batch_size: int = 64) -> float:
    """mIoU (%) of a PyTorch segmenter on arrays, every class scored (the synthetic data has no ignore label)."""
    import torch

    from mlgauge.data.synthetic_segmentation import IGNORE_LABEL, NUM_CLASSES

    model.eval()
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(masks), batch_size):
            pred = model(torch.from_numpy(images[start : start + batch_size])).argmax(1).numpy()
            confusion += confusion_matrix(pred, masks[start : start + batch_size], NUM_CLASSES, IGNORE_LABEL)
    return mean_iou(confusion, IGNORE_LABEL)
