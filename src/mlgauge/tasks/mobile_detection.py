"""Object detection for MLPerf Mobile: SSD-MobileDet on COCO 2017, or its synthetic stand-in.

Real: COCO 2017 validation in its own layout::

    <dataset_path>/annotations/instances_val2017.json
    <dataset_path>/val2017/<file_name>

read by ``data.coco`` and preprocessed as the app does (``mobile_app_open``
``flutter/cpp/datasets/coco.cc`` with TFLite's ``image_preprocessing_stage.cc``):
RGB, bilinear resize to 320x320 without keeping the aspect ratio (TF1 corner
convention), then ``(x - 127.5) / 127.5``. Quantized (uint8) model inputs get
these float values; the LiteRT backend quantizes them with the input's scale and
zero point. The user's model file:

* the official ``mobiledet_qat.tflite`` (or any ``.tflite``/``.onnx``) whose four
  outputs are ``TFLite_Detection_PostProcess``'s: boxes ``(1, N, 4)`` as
  normalised ymin, xmin, ymax, xmax, classes ``(1, N)``, scores ``(1, N)`` and
  num_detections ``(1,)``, in that order (``coco.cc`` reads them by position);
  a class is the COCO category id minus one (the app's offset 1);
* or the raw head outputs of :func:`mlgauge.models.mobiledet.ssdlite_mobiledet_320`
  (an ``.onnx``/``.pte`` export, or a PyTorch state dict of it), decoded here
  with its anchors by the RetinaNet decoder (sigmoid scores, class-wise NMS).

Images go to a ``.tflite`` as NHWC, to an ``.onnx`` in the layout its input
declares, to a ``.pte`` or PyTorch weights as NCHW. EXIF orientation is ignored,
as the app's TensorFlow decoder does (it matters for the few rotated COCO files).

Out of the box: a small SSD-style mobile detector (``small_mobiledet``: fused and
inverted bottlenecks, SSDLite predictors, RetinaNet's anchors, decoder and focal
loss) trained by ``prepare`` on the synthetic shapes the RetinaNet stand-in uses.

Responses, scoring and training are the RetinaNet task's (``tasks.object_detection``):
per detection ``[image_idx, ymin, xmin, ymax, xmax, score, label]`` float32 with
the label already a COCO category id (the app writes ``class + offset``), scored
with pycocotools' COCO mAP@[.5:.95] in percent. The app itself scores with
TFLite's ``ObjectDetectionAveragePrecisionStage``, whose numbers are close to but
not identical with pycocotools'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from mlgauge.backends.model_files import model_file_layout
from mlgauge.data.tf_resize import tf_resize_bilinear
from mlgauge.errors import ModelError
from mlgauge.rules import QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import ModelSource, Workload
from mlgauge.tasks.mobile_classification import MOBILE_ROUND
from mlgauge.tasks.object_detection import (
    RESPONSE_DTYPE,
    RESPONSE_WIDTH,
    DetectionPostprocess,
    evaluate_model,
    make_map_score,
    train_detector,
)
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

# Bump when the generator or the training recipe changes, so stale caches are rebuilt.
STANDIN_VERSION = "v1"
STANDIN_SPLITS = {"train": 2_000, "val": 512}
STANDIN_EPOCHS = 6
STANDIN_BATCH = 16
STANDIN_LR = 1.2e-2  # measured: 78.3% mAP after 6 epochs; the RetinaNet recipe (8e-3, 4 epochs) gave 68.6%
CALIBRATION_SAMPLES = 64
# TF Object Detection API's SSD exports keep at most 100 detections per image.
MAX_DETECTIONS = 100

COCO_JSON = "annotations/instances_val2017.json"
COCO_IMAGES = "val2017"
INPUT_SIZE = 320
COCO_LABEL_OFFSET = 1  # tasks.pbtxt "offset: 1": class c is COCO category c + 1
# Part of the preprocessed-image cache key: bump when the output pixels would change.
PREPROCESS_VERSION = "mlperf-mobile-mobiledet/320x320/rgb/tf-bilinear/pm1/v1"
SSD_OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


def small_mobiledet():
    from mlgauge.data.synthetic_shapes import IMAGE_SIZE, NUM_CLASSES
    from mlgauge.models.mobiledet import small_mobiledet as build

    return build(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE)


def to_mobile_range(images: np.ndarray) -> np.ndarray:
    """RGB in 0..1 (the synthetic shapes) -> [-1, 1], what MLPerf Mobile feeds its vision models."""
    return (images * np.float32(2.0) - np.float32(1.0)).astype(np.float32)


def preprocess_mobiledet(image: Image.Image, layout: str = "NHWC", size: int = INPUT_SIZE) -> np.ndarray:
    """RGB image -> ``(size, size, 3)`` (or CHW) float32 in [-1, 1], as the app feeds SSD-MobileDet."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    resized = tf_resize_bilinear(pixels, size, size, align_corners=False)
    out = (resized - np.float32(127.5)) * np.float32(1.0 / 127.5)
    return np.ascontiguousarray(out.transpose(2, 0, 1)) if layout == "NCHW" else out


# -- model outputs -> MLPerf responses ------------------------------------------------------


def split_ssd_outputs(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (B, N, 4), classes (B, N), scores (B, N), counts (B,))`` from TFLite's post-processed outputs.

    Boxes are the one 3-d output ending in 4 and the count the one with a value
    per image; classes and scores keep their relative order (TFLite's, and the
    alphabetical one of TF2 exports: classes before scores).
    """
    arrays = [np.asarray(a) for a in arrays]
    shapes = [tuple(a.shape) for a in arrays]
    boxes_at = [i for i, s in enumerate(shapes) if len(s) == 3 and s[-1] == 4]
    if len(boxes_at) != 1:
        raise ModelError(
            f"the detector returned outputs of shapes {shapes}; "
            "none is TFLite_Detection_PostProcess's boxes (B, N, 4)",
            hint="Give a model whose outputs are boxes, classes, scores and num_detections, "
            "or the raw head outputs",
        )
    boxes = arrays[boxes_at[0]]
    batch, n = boxes.shape[:2]
    rest = [i for i in range(len(arrays)) if i != boxes_at[0]]
    count_at = [i for i in rest if shapes[i] == (batch,)]
    if len(count_at) != 1 and rest and arrays[rest[-1]].size == batch:
        count_at = [rest[-1]]  # e.g. (B, 1): TFLite lists num_detections last
    per_box = [i for i in rest if i not in count_at and shapes[i] == (batch, n)]
    if len(arrays) != 4 or len(count_at) != 1 or len(per_box) != 2:
        raise ModelError(
            f"the detector's outputs have shapes {shapes}; "
            f"TFLite_Detection_PostProcess gives boxes ({batch}, {n}, 4), "
            f"classes ({batch}, {n}), scores ({batch}, {n}) and num_detections ({batch},)",
            hint="Use the official mobiledet .tflite, or an export that keeps its post-processing outputs",
        )
    counts = arrays[count_at[0]].reshape(batch).astype(np.float64)
    if not np.isfinite(counts).all() or (counts < 0).any() or (counts > n).any():
        raise ModelError(
            f"the detector's num_detections output holds {counts.tolist()}, not counts between 0 and {n}",
            hint="Check that the model's outputs are in TFLite_Detection_PostProcess's order",
        )
    return boxes, arrays[per_box[0]], arrays[per_box[1]], counts.astype(np.int64)


def ssd_responses(
    outputs: Sequence[np.ndarray], indices: Sequence[int] | None = None, label_offset: int = COCO_LABEL_OFFSET
) -> list[np.ndarray]:
    """TFLite SSD outputs -> one ``(k, 7)`` MLPerf response per image, as ``coco.cc``'s ProcessOutput
    writes it."""
    boxes, classes, scores, counts = split_ssd_outputs(outputs)
    responses = []
    for b, k in enumerate(counts):
        out = np.empty((k, RESPONSE_WIDTH), dtype=RESPONSE_DTYPE)
        out[:, 0] = -1 if indices is None else indices[b]
        out[:, 1:5] = boxes[b, :k]  # already ymin, xmin, ymax, xmax relative to the image
        out[:, 5] = scores[b, :k]
        out[:, 6] = classes[b, :k] + label_offset
        responses.append(out)
    return responses


class MobileDetPostprocess:
    """Backend outputs -> MLPerf detection responses, whichever of the two output layouts the model has.

    Four outputs are TFLite's post-processed detections; two are raw head
    outputs, decoded by ``raw`` (the RetinaNet task's post-processing with this
    architecture's anchors). ``label_offset`` turns a class into a category id.
    """

    def __init__(self, raw: DetectionPostprocess, label_offset: int) -> None:
        self.raw = raw
        self.label_offset = label_offset

    def __call__(self, outputs: object, indices: Sequence[int] | None = None) -> list[np.ndarray]:
        arrays = list(outputs) if isinstance(outputs, tuple | list) else [outputs]
        if len(arrays) == 4:
            return ssd_responses(arrays, indices, self.label_offset)
        responses = self.raw(outputs, indices)
        if self.label_offset:
            for response in responses:
                response[:, 6] += self.label_offset
        return responses


def _ssd_output_specs(max_detections: int = MAX_DETECTIONS) -> tuple[TensorSpec, ...]:
    n = max_detections
    return (
        TensorSpec(SSD_OUTPUT_NAMES[0], (n, 4)),
        TensorSpec(SSD_OUTPUT_NAMES[1], (n,)),
        TensorSpec(SSD_OUTPUT_NAMES[2], (n,)),
        TensorSpec(SSD_OUTPUT_NAMES[3], ()),
    )


def _raw_output_specs(num_anchors: int, num_classes: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec("cls_logits", (num_anchors, num_classes)),
        TensorSpec("bbox_regression", (num_anchors, 4)),
    )


def _onnx_output_shapes(path: Path) -> list[tuple]:
    """Per-output dims of an ONNX file's graph (None where symbolic), read without its external weights."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf and onnx raise several types for a damaged file
        raise ModelError(
            f"{path} is not a readable ONNX model: {type(exc).__name__}",
            hint="Check that the file is a complete .onnx model",
        ) from None
    return [
        tuple(d.dim_value if d.HasField("dim_value") else None for d in out.type.tensor_type.shape.dim)
        for out in graph.output
    ]


def _raw_classes(shapes: list[tuple]) -> int | None:
    """The class count of raw head outputs ``(B, A, C)`` + ``(B, A, 4)`` when the file states it."""
    if len(shapes) != 2 or any(len(s) != 3 for s in shapes):
        return None
    dims = [s[2] for s in shapes]
    if 4 in dims:
        dims.remove(4)
    return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None


def _classes_in(state: dict, path: Path) -> int:
    """The class count of a ``ssdlite_mobiledet_320`` state dict, from its first class predictor."""
    from mlgauge.models.mobiledet import ASPECT_RATIOS

    bias = state.get("cls_heads.0.project.bias")
    per_location = 2 * len(ASPECT_RATIOS)
    if bias is None or bias.ndim != 1 or bias.numel() % per_location:
        raise ModelError(
            f"weights file {path} has no MobileDetector class predictor (cls_heads.0.project.bias)",
            hint="Give a state dict of mlgauge.models.mobiledet.ssdlite_mobiledet_320, "
            "or a .tflite/.onnx/.pte file",
        )
    return bias.numel() // per_location


# -- the task --------------------------------------------------------------------------------


class MobileDetTask(StandinTask):
    name = "mobiledet"
    title = "Object detection (SSD-MobileDet on COCO 2017, MLPerf Mobile; synthetic stand-in by default)"
    rules_round = MOBILE_ROUND

    cache = StandinCache("mobiledet", STANDIN_VERSION)

    def __init__(self, benchmark: str = "mobiledet") -> None:
        self.benchmark = benchmark

    # -- the synthetic stand-in -------------------------------------------------


    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic shapes and train the small mobile detector, once (cached)."""
        if self.is_prepared():
            return self.cache.meta()
        import torch

        from mlgauge.data import synthetic_shapes
        from mlgauge.training.fit import single_threaded

        # ``progress`` gets the overall fraction: generation is the first 8%, evaluation the last 4%.
        report = progress or (lambda stage, fraction: None)
        start = time.perf_counter()
        report("generating synthetic shapes", 0.0)
        train_x, train_b, train_l = synthetic_shapes.generate(range(STANDIN_SPLITS["train"]), "train")
        val_x, val_b, val_l = synthetic_shapes.generate(range(STANDIN_SPLITS["val"]), "val")
        train_x, val_x = to_mobile_range(train_x), to_mobile_range(val_x)
        truth = synthetic_shapes.ground_truth(val_b, val_l)
        report("generating synthetic shapes", 0.08)

        with single_threaded():
            torch.manual_seed(0)
            model = small_mobiledet()
            untrained = evaluate_model(model, val_x, truth)
            train_detector(
                model, train_x, train_b, train_l,
                epochs=STANDIN_EPOCHS, batch_size=STANDIN_BATCH, lr=STANDIN_LR,
                progress=lambda f: report("training the small mobile detector", 0.08 + 0.88 * f),
            )  # fmt: skip
            report("evaluating", 0.96)
            trained = evaluate_model(model, val_x, truth)

        meta = {
            "task": self.name,
            "version": STANDIN_VERSION,
            "train_samples": STANDIN_SPLITS["train"],
            "val_samples": STANDIN_SPLITS["val"],
            "epochs": STANDIN_EPOCHS,
            "threads": 1,
            "val_map_trained": trained,
            "val_map_untrained": untrained,
            "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__,
        }

        def fill(folder: Path) -> None:
            np.save(folder / "val_images.npy", val_x)
            for key, value in synthetic_shapes.pack(val_b, val_l).items():
                np.save(folder / f"val_{key}.npy", value)
            torch.save(model.state_dict(), folder / "weights.pt")

        meta = self.cache.write(fill, meta)
        report("done", 1.0)
        return meta

    def _standin_workload(self, weights_path: Path | None, count: int | None) -> Workload:
        from mlgauge.data import synthetic_shapes

        d = self.cache.require(self.benchmark)
        rule = standin_rules()[self.benchmark]
        images = np.load(d / "val_images.npy", allow_pickle=False)
        boxes, labels = synthetic_shapes.unpack(
            *(np.load(d / f"val_{key}.npy", allow_pickle=False) for key in ("counts", "boxes", "labels"))
        )
        if count is not None:
            images, boxes, labels = images[:count], boxes[:count], labels[:count]
        truth = synthetic_shapes.ground_truth(boxes, labels)
        dataset = synthetic_shapes.SyntheticShapes(images, truth, rule.performance_sample_count)
        weights = existing_weights(weights_path or d / "weights.pt")
        shape_model = small_mobiledet()  # anchors and output shapes only; weights load in build()
        decoder = shape_model.decoder(max_detections=MAX_DETECTIONS)

        def build():
            return load_into(small_mobiledet(), load_state_dict(weights), weights)

        def calibration() -> np.ndarray:
            # From its own split, never the scored one (MLPerf's rule for PTQ calibration).
            return to_mobile_range(synthetic_shapes.generate(range(CALIBRATION_SAMPLES), "calibration")[0])

        model = ModelSource(
            name="small-mobiledet",
            inputs=(TensorSpec("images", dataset.sample_shape),),
            outputs=_raw_output_specs(decoder.num_anchors, shape_model.num_classes),
            cache_key=f"{self.benchmark}-synthetic-{STANDIN_VERSION}-{file_digest(weights)}",
            build=build,
            weights_path=weights,
            calibration=calibration,
        )
        # The synthetic ground truth's category ids are the classes themselves: no offset.
        post = MobileDetPostprocess(DetectionPostprocess(decoder, shape_model.image_size), label_offset=0)
        return self._workload(dataset, model, rule.quality, post)

    # -- the real benchmark -----------------------------------------------------
    def _real_workload(
        self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str
    ) -> Workload:
        from mlgauge.data.coco import CocoDetection, locate_dataset, read_coco_annotations
        from mlgauge.models.mobiledet import COCO_CLASSES, ssdlite_mobiledet_320

        rule = inference_rules(round).benchmark(self.benchmark)
        if weights_path is None:
            raise ModelError(
                "SSD-MobileDet on COCO needs a model file",
                hint="Pass --weights with MLPerf Mobile's mobiledet .tflite, an ONNX or ExecuTorch export, "
                "or a state dict of mlgauge's ssdlite_mobiledet_320",
            )
        weights_path = existing_weights(weights_path)
        suffix = weights_path.suffix.lower()
        classes, raw_outputs = COCO_CLASSES, suffix != ".tflite"
        if suffix in (".tflite", ".onnx"):
            layout = model_file_layout(weights_path, "SSD-MobileDet")
            if suffix == ".onnx":
                shapes = _onnx_output_shapes(weights_path)
                raw_outputs = len(shapes) != 4
                classes = _raw_classes(shapes) or classes
        else:
            layout = "NCHW"  # .pte exports and state dicts of the PyTorch model
            if suffix != ".pte":
                classes = _classes_in(load_state_dict(weights_path), weights_path)

        json_path, images_dir = locate_dataset(Path(dataset_path), COCO_JSON, COCO_IMAGES, "COCO 2017")
        shape = (INPUT_SIZE, INPUT_SIZE, 3) if layout == "NHWC" else (3, INPUT_SIZE, INPUT_SIZE)
        dataset = CocoDetection(
            read_coco_annotations(json_path),
            images_dir,
            label="coco-2017",
            preprocess=partial(preprocess_mobiledet, layout=layout),
            sample_shape=shape,
            preprocess_version=f"{PREPROCESS_VERSION}/{layout}",
            count=count,
            performance_count=rule.performance_sample_count,
            # 1.2 MB per float32 sample, 6 GB for the 5,000 images: decoded on load instead.
            cache_dir=None,
            upright=False,  # the app's TensorFlow decoder ignores EXIF orientation
        )
        shape_model = ssdlite_mobiledet_320(classes)  # anchors only
        decoder = shape_model.decoder(max_detections=MAX_DETECTIONS)
        post = MobileDetPostprocess(DetectionPostprocess(decoder, shape_model.image_size), COCO_LABEL_OFFSET)
        rows = np.linspace(0, dataset.total_count - 1, min(CALIBRATION_SAMPLES, dataset.total_count)).astype(
            np.int64
        )
        build = None
        if suffix not in (".tflite", ".onnx", ".pte"):

            def build():
                return load_into(ssdlite_mobiledet_320(classes), load_state_dict(weights_path), weights_path)

        model = ModelSource(
            name="ssd-mobiledet",
            inputs=(TensorSpec("images", shape),),
            outputs=_raw_output_specs(decoder.num_anchors, classes) if raw_outputs else _ssd_output_specs(),
            cache_key=f"{self.benchmark}-{suffix.lstrip('.')}-{file_digest(weights_path)}",
            build=build,
            onnx_path=weights_path if suffix == ".onnx" else None,
            tflite_path=weights_path if suffix == ".tflite" else None,
            pte_path=weights_path if suffix == ".pte" else None,
            weights_path=weights_path,
            # MLPerf Mobile calibrates on its own list of COCO *training* images; without them an evenly
            # spread subset of the scored images stands in, so INT8 results are not submission-grade.
            calibration=lambda: dataset.load(rows.tolist()),
        )
        return self._workload(dataset, model, rule.quality, post)

    def _workload(
        self, dataset, model: ModelSource, quality: QualityTarget, post: MobileDetPostprocess
    ) -> Workload:
        # Responses carry category ids already (post-processing adds the label offset): no label map.
        return Workload(
            task=self.name,
            benchmark=self.benchmark,
            dataset=dataset,
            model=model,
            quality=quality,
            response_dtype=RESPONSE_DTYPE,
            postprocess=post,
            score=make_map_score(dataset.ground_truth(), quality),
        )

