"""Image classification for MLPerf Mobile: MobileNetV4-Conv-Large on ImageNet, or its synthetic stand-in.

Real: the ILSVRC2012 validation folder + ``val_map.txt`` (read by ``data.imagenet``)
with MLPerf Mobile's preprocessing for the 384x384 model, and the user's model
file: the official ``MobileNetV4-Conv-Large-{fp32,int8-ptq}.tflite`` (input NHWC
``(384, 384, 3)``) or an ONNX model (NCHW or NHWC, read from the file). There is
no PyTorch MobileNetV4 in mlgauge, so PyTorch weights are not accepted here.
Out of the box: a small MobileNet on the deterministic synthetic images shared
with the ResNet-50 stand-in, trained once by ``prepare``.

Preprocessing follows the app (``mobile_app_open`` ``flutter/cpp/datasets/imagenet.cc``
with TFLite's ``image_preprocessing_stage.cc``): decode to RGB, resize keeping the
aspect ratio so the shorter side is ``int(384 / 0.875) = 438`` (bilinear, TF1
corner convention), crop the central 384x384, then ``(x - 127.5) / 127.5``. Models
whose input is quantized (uint8/int8) get these float values; the backend
quantizes them with the input tensor's own scale and zero point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mlgauge.backends.model_files import model_file_layout
from mlgauge.data.imagenet import ImageNetValidation
from mlgauge.data.tf_resize import tf_resize_bilinear
from mlgauge.errors import ModelError
from mlgauge.rules import QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import ModelSource, Workload
from mlgauge.tasks.image_classification import make_top1_score, top1_postprocess
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

MOBILE_ROUND = "mobile-v6.0"
# Bump when the generator or the training recipe changes, so stale caches are rebuilt.
STANDIN_VERSION = "v1"
STANDIN_SPLITS = {"train": 8_000, "val": 2_048}
STANDIN_EPOCHS = 5
STANDIN_LR = 0.1  # measured: 92.7% top-1 after 5 epochs; fit_classifier's default 0.05 gave 78.6% after 4
CALIBRATION_SAMPLES = 128
INPUT_SIZE = 384
CROP_FRACTION = 0.875
NUM_CLASSES = 1000  # the official model has no background class (task offset 0)


# -- MLPerf Mobile's ImageNet preprocessing ------------------------------------------------


def _round_half_away(x: float) -> int:
    """C's ``round``, which the TFLite preprocessing uses (Python's ``round`` is banker's rounding)."""
    return int(np.floor(abs(x) + 0.5) * np.sign(x))


def preprocess_mobilenet_v4(pixels: np.ndarray, size: int = INPUT_SIZE, crop_fraction: float = CROP_FRACTION) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> ``(size, size, 3)`` float32 in [-1, 1] (HWC, as the app feeds TFLite)."""
    height, width = pixels.shape[:2]
    # AddResizingStep(int width, int height, ...) receives 384 / 0.875 = 438.86 and truncates it.
    target = int(size / crop_fraction)
    ratio_w, ratio_h = np.float32(target) / np.float32(width), np.float32(target) / np.float32(height)
    if ratio_w >= ratio_h:
        new_w, new_h = target, _round_half_away(float(np.float32(height) * ratio_w))
    else:
        new_w, new_h = _round_half_away(float(np.float32(width) * ratio_h)), target
    resized = tf_resize_bilinear(pixels, new_h, new_w, align_corners=False)
    top, left = _round_half_away((new_h - size) / 2.0), _round_half_away((new_w - size) / 2.0)
    crop = resized[top : top + size, left : left + size]
    return (crop - np.float32(127.5)) * np.float32(1.0 / 127.5)


class MobileImageNet(ImageNetValidation):
    """ImageNet validation preprocessed for MobileNetV4 (384x384, [-1, 1]) in the model file's layout.

    Map parsing, file checks and parallel loading are ``ImageNetValidation``'s; only the
    per-image preprocessing differs. There is no on-disk cache: at 1.7 MB per float32
    sample the full validation set would take 88 GB.
    """

    def __init__(self, root: Path, *, layout: str, count: int | None = None, performance_count: int = 1024) -> None:
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
        super().__init__(root, count=count, performance_count=performance_count, cache_dir=None)
        self.layout = layout
        self.sample_shape = (3, INPUT_SIZE, INPUT_SIZE) if layout == "NCHW" else (INPUT_SIZE, INPUT_SIZE, 3)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        sample = preprocess_mobilenet_v4(np.asarray(image))
        return np.ascontiguousarray(sample.transpose(2, 0, 1)) if self.layout == "NCHW" else sample


# -- the task ----------------------------------------------------------------------------


class MobileNetTask(StandinTask):
    name = "mobilenet-v4"
    title = "Image classification (MobileNetV4-Conv-Large on ImageNet, MLPerf Mobile; synthetic stand-in by default)"
    rules_round = MOBILE_ROUND

    cache = StandinCache("mobilenet-v4", STANDIN_VERSION)

    def __init__(self, benchmark: str = "mobilenet-v4") -> None:
        self.benchmark = benchmark

    # -- the synthetic stand-in -------------------------------------------------

    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic splits and train the small MobileNet; cached, so only the first call works."""
        if self.is_prepared():
            return self.cache.meta()
        import torch

        from mlgauge.data import synthetic_images
        from mlgauge.models.mobilenet import SmallMobileNet
        from mlgauge.training.fit import fit_classifier, single_threaded, top1

        report = progress or (lambda stage, fraction: None)
        start = time.perf_counter()
        report("generating synthetic images", 0.0)
        train_x, train_y = synthetic_images.generate(range(STANDIN_SPLITS["train"]), "train")
        report("generating synthetic images", 0.08)
        val_x, val_y = synthetic_images.generate(range(STANDIN_SPLITS["val"]), "val")
        report("generating synthetic images", 0.1)

        with single_threaded():
            torch.manual_seed(0)
            model = SmallMobileNet(num_classes=synthetic_images.NUM_CLASSES)
            untrained = top1(model, val_x, val_y)
            fit_classifier(
                model,
                train_x,
                train_y,
                epochs=STANDIN_EPOCHS,
                lr=STANDIN_LR,
                progress=lambda f: report("training the small MobileNet", 0.1 + 0.9 * f),
            )
            trained = top1(model, val_x, val_y)

        meta = {
            "task": self.name,
            "version": STANDIN_VERSION,
            "train_samples": STANDIN_SPLITS["train"],
            "val_samples": STANDIN_SPLITS["val"],
            "epochs": STANDIN_EPOCHS,
            "threads": 1,
            "val_top1_trained": trained,
            "val_top1_untrained": untrained,
            "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__,
        }

        def fill(folder: Path) -> None:
            np.save(folder / "val_images.npy", val_x)
            np.save(folder / "val_labels.npy", val_y)
            torch.save(model.state_dict(), folder / "weights.pt")

        return self.cache.write(fill, meta)

    def _standin_workload(self, weights_path: Path | None, count: int | None) -> Workload:
        from mlgauge.data import synthetic_images

        d = self.cache.require(self.name)
        rule = standin_rules()[self.benchmark]
        images = np.load(d / "val_images.npy", allow_pickle=False)
        labels = np.load(d / "val_labels.npy", allow_pickle=False)
        if count is not None:
            images, labels = images[:count], labels[:count]
        dataset = synthetic_images.SyntheticImages(images, labels, rule.performance_sample_count)
        weights = existing_weights(weights_path or d / "weights.pt")

        def build():
            from mlgauge.models.mobilenet import SmallMobileNet

            net = SmallMobileNet(num_classes=synthetic_images.NUM_CLASSES)
            return load_into(net, load_state_dict(weights), weights)

        def calibration() -> np.ndarray:
            # From the training split, never the scored one (MLPerf's rule for PTQ calibration).
            return synthetic_images.generate(range(CALIBRATION_SAMPLES), "train")[0]

        model = ModelSource(
            name="small-mobilenet",
            inputs=(TensorSpec("input", dataset.sample_shape),),
            outputs=(TensorSpec("logits", (synthetic_images.NUM_CLASSES,)),),
            cache_key=f"{self.name}-synthetic-{STANDIN_VERSION}-{file_digest(weights)}",
            build=build,
            weights_path=weights,
            calibration=calibration,
        )
        return self._workload(dataset, model, rule.quality)

    # -- the real benchmark -----------------------------------------------------
    def _real_workload(self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str) -> Workload:
        rule = inference_rules(round).benchmark(self.benchmark)
        if weights_path is None:
            raise ModelError(
                "MobileNetV4 on ImageNet needs a model file",
                hint="Pass --weights with MLPerf Mobile's MobileNetV4-Conv-Large-fp32.tflite "
                "(or -int8-ptq.tflite), or an ONNX export of it",
            )
        weights_path = existing_weights(weights_path)
        layout = model_file_layout(weights_path, "MobileNetV4")
        dataset = MobileImageNet(
            Path(dataset_path), layout=layout, count=count, performance_count=rule.performance_sample_count
        )
        rows = np.linspace(0, dataset.total_count - 1, min(CALIBRATION_SAMPLES, dataset.total_count)).astype(np.int64)
        suffix = weights_path.suffix.lower()
        model = ModelSource(
            name="mobilenet-v4-conv-large",
            inputs=(TensorSpec("input", dataset.sample_shape),),
            outputs=(TensorSpec("logits", (NUM_CLASSES,)),),
            cache_key=f"{self.benchmark}-{suffix.lstrip('.')}-{file_digest(weights_path)}",
            onnx_path=weights_path if suffix == ".onnx" else None,
            tflite_path=weights_path if suffix == ".tflite" else None,
            weights_path=weights_path,
            # MLPerf Mobile calibrates on its own list of ImageNet *training* images; without them an
            # evenly spread subset of the scored images stands in, so INT8 results are not submission-grade.
            calibration=lambda: dataset.load(rows.tolist()),
        )
        return self._workload(dataset, model, rule.quality)

    def _workload(self, dataset, model: ModelSource, quality: QualityTarget) -> Workload:
        return Workload(
            task=self.name,
            benchmark=self.benchmark,
            dataset=dataset,
            model=model,
            quality=quality,
            response_dtype=np.dtype(np.int32),
            postprocess=top1_postprocess,
            score=make_top1_score(dataset.ground_truth(), quality),
        )

