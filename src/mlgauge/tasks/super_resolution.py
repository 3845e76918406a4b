"""Super-resolution (MLPerf Mobile): EDSR F32B5, 2x, on SNUSR, or its synthetic stand-in.

Real: an SR folder in SNUSR's LR/HR layout (see ``mlgauge.data.sr_pairs``) and
user weights: an EDSR state dict (any size; the size is read from the keys), an
``.onnx`` file, or a ``.tflite`` file such as MLPerf Mobile's
``edsr_f32b5_fp32.tflite``. The quality target is the round's rule entry.
Out of the box: a small EDSR (16 features, 2 blocks) on deterministic synthetic
64x64 images, trained once by ``prepare``.

Model I/O. Inputs are the LR image as RGB float32 in 0..255 (MLPerf Mobile feeds
float models 0..255, ``flutter/cpp/datasets/snu_sr.cc``); outputs are the SR image
in the same units. PyTorch and ONNX models take and give NCHW. A ``.tflite`` file
takes and gives NHWC (TFLite's layout; the MLPerf file is ``[1, 540, 960, 3]`` ->
``[1, 1080, 1920, 3]``), so with one the samples are loaded NHWC and the declared
input/output specs are NHWC; the LiteRT backend only feeds them through. A
TFLite file with integer inputs (``edsr_f32b5_full_qint8.tflite``) needs a backend
that quantizes the float input with the tensor's own scale and zero point.

Response: the SR image as uint8 HWC (``H*W*3`` values per sample), rounded and
clipped as writing a PNG does. (The MLPerf app truncates float outputs toward zero
and wraps them modulo 256; on a model whose output stays in 0..255 the two differ
by less than one grey level.)

Metric: PSNR in dB per image, MSE over every pixel and channel of the uint8 SR and
HR images with a peak of 255, then the mean over images; no border is cropped,
as in the MLPerf app (SR papers often crop ``scale`` pixels; ``psnr`` can).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mlgauge.errors import ModelError, UsageError
from mlgauge.rules import QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import AccuracyResult, ModelSource, Workload
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

ROUND = "mobile-v6.0"
SCALE = 2
# An exact reconstruction has MSE 0 and infinite PSNR; it counts as this many dB
# so a mean over images stays finite and a result stays JSON-serialisable.
PSNR_CAP_DB = 100.0
CROP_BORDER = 0  # the MLPerf app scores every pixel

# Bump when the generator or the training recipe changes, so stale caches are rebuilt.
STANDIN_VERSION = "v1"
STANDIN_SPLITS = {"train": 2_000, "val": 128}
STANDIN_MODEL = {"features": 16, "blocks": 2, "scale": SCALE}
CALIBRATION_SAMPLES = 64
# Training recipe, measured to fit the prepare budget: see ``fit_sr``.
TRAIN_STEPS = 2_000
TRAIN_BATCH = 16
TRAIN_CROP = 16  # LR pixels; the HR crop is 32
TRAIN_MAX_LR = 6e-3


# -- metric -----------------------------------------------------------------------


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int = CROP_BORDER) -> float:
    """PSNR in dB of two same-shape uint8 ``(H, W, 3)`` images, peak 255, capped at ``PSNR_CAP_DB``.

    ``crop_border`` drops that many pixels at each image edge before comparing.
    """
    if sr.shape != hr.shape:
        raise ValueError(f"PSNR needs equal shapes, got {sr.shape} and {hr.shape}")
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    diff = sr.astype(np.float64) - hr.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(10.0 * math.log10(255.0 * 255.0 / mse), PSNR_CAP_DB)


def make_psnr_score(
    ground_truth: Sequence[np.ndarray] | np.ndarray,
    hr_shape: tuple[int, int, int],
    target: QualityTarget,
    crop_border: int = CROP_BORDER,
) -> Callable[[dict[int, np.ndarray]], AccuracyResult]:
    """Mean PSNR over the answered samples; responses arrive flattened and are reshaped to ``hr_shape``."""
    size = int(np.prod(hr_shape))

    def score(responses: dict[int, np.ndarray]) -> AccuracyResult:
        if not responses:
            return AccuracyResult("PSNR", 0.0, "dB", 0, target)
        values = []
        for idx in sorted(responses):
            flat = np.asarray(responses[idx]).reshape(-1)
            if flat.size != size:
                raise ModelError(
                    f"the response for sample {idx} has {flat.size} values, not {size} (an image of {hr_shape})",
                    hint=f"The model must upscale {SCALE}x: its output size must be {SCALE}x the LR input's",
                )
            values.append(psnr(flat.reshape(hr_shape), np.asarray(ground_truth[idx]), crop_border))
        details = {
            "min_db": min(values),
            "max_db": max(values),
            "crop_border": crop_border,
            "capped": sum(v >= PSNR_CAP_DB for v in values),
        }
        return AccuracyResult("PSNR", float(np.mean(values)), "dB", len(values), target, details)

    return score


def make_sr_postprocess(layout: str) -> Callable[[object], np.ndarray]:
    """Model output -> ``(B, H, W, 3)`` uint8 (rounded, clipped to 0..255)."""

    def postprocess(outputs: object, indices=None) -> np.ndarray:
        out = np.asarray(outputs[0] if isinstance(outputs, tuple) else outputs)
        channel_axis = 1 if layout == "NCHW" else 3
        if out.ndim != 4 or out.shape[channel_axis] != 3:
            raise ModelError(
                f"the SR model returned shape {out.shape}, not a batch of RGB images in {layout}",
                hint=f"Give an EDSR-like model whose output is {layout} with 3 channels",
            )
        if layout == "NCHW":
            out = out.transpose(0, 2, 3, 1)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    return postprocess


# -- the synthetic stand-in: training and evaluation ----------------------------------


def fit_sr(
    model,
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    steps: int = TRAIN_STEPS,
    batch_size: int = TRAIN_BATCH,
    crop: int = TRAIN_CROP,
    max_lr: float = TRAIN_MAX_LR,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
):
    """Adam with a one-cycle schedule on random aligned LR/HR crops; returns the model in eval mode.

    MSE loss rather than EDSR's L1: PSNR is a function of MSE, and with a budget
    of seconds the MSE-trained model scores higher (measured: +0.1-0.2 dB).
    Small crops buy more steps per second; the model is fully convolutional.
    """
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(lr)  # (N, 3, h, w) float32 0..255
    y_all = torch.from_numpy(np.ascontiguousarray(hr.transpose(0, 3, 1, 2)))  # (N, 3, H, W) uint8
    opt = torch.optim.Adam(model.parameters(), lr=max_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps, pct_start=0.1)
    span = x_all.shape[-1] - crop + 1
    model.train()
    for step in range(steps):
        rows = torch.randint(0, len(x_all), (batch_size,), generator=gen)
        top, left = torch.randint(0, span, (2,), generator=gen).tolist()
        x = x_all[rows, :, top : top + crop, left : left + crop]
        y = y_all[rows, :, SCALE * top : SCALE * (top + crop), SCALE * left : SCALE * (left + crop)].float()
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress((step + 1) / steps)
    return model.eval()


def model_psnr(model, lr: np.ndarray, hr: np.ndarray, batch_size: int = 64) -> float:
    """Mean PSNR of a PyTorch SR model on NCHW LR inputs against uint8 HWC HR images."""
    import torch

    post = make_sr_postprocess("NCHW")
    values = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(lr), batch_size):
            sr = post(model(torch.from_numpy(lr[start : start + batch_size])).numpy())
            values += [psnr(s, h) for s, h in zip(sr, hr[start : start + batch_size], strict=True)]
    return float(np.mean(values))


def bicubic_psnr(lr: np.ndarray, hr: np.ndarray) -> float:
    """Mean PSNR of plain bicubic upscaling: what SR without a model scores."""
    from mlgauge.data.sr_pairs import upscale_bicubic

    lr_images = np.clip(np.rint(lr), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return float(np.mean([psnr(upscale_bicubic(x, SCALE), y) for x, y in zip(lr_images, hr, strict=True)]))


# -- models --------------------------------------------------------------------------


def _edsr_from_state_dict(weights: Path):
    from mlgauge.models.edsr import EDSR, config_from_state_dict

    state = load_state_dict(weights)
    try:
        config = config_from_state_dict(state)
    except KeyError:
        raise ModelError(
            f"weights file {weights} is not an EDSR state dict (it has no 'head.0.weight' convolution)",
            hint="Give a state dict saved from mlgauge.models.edsr.EDSR, or an .onnx/.tflite file",
        ) from None
    if config["scale"] != SCALE:
        raise ModelError(
            f"weights file {weights} is a {config['scale']}x EDSR; this benchmark upscales {SCALE}x",
            hint=f"Give weights of a {SCALE}x model",
        )
    return load_into(EDSR(**config), state, weights)


def layout_for(weights: Path | None) -> str:
    """TFLite files take NHWC; everything else here is NCHW."""
    return "NHWC" if weights is not None and Path(weights).suffix.lower() == ".tflite" else "NCHW"


def sr_model_source(
    weights: Path,
    lr_hw: tuple[int, int],
    name: str,
    cache_prefix: str,
    calibration: Callable[[], np.ndarray] | None = None,
) -> ModelSource:
    """ModelSource for weights given as a state dict, ``.onnx`` or ``.tflite`` (see ``layout_for``)."""
    h, w = lr_hw
    digest = file_digest(weights)
    suffix = weights.suffix.lower()
    if suffix == ".tflite":
        return ModelSource(
            name=name,
            inputs=(TensorSpec("input", (h, w, 3)),),
            outputs=(TensorSpec("output", (SCALE * h, SCALE * w, 3)),),
            cache_key=f"{cache_prefix}-tflite-{digest}",
            tflite_path=weights,
            weights_path=weights,
        )
    common = {
        "name": name,
        "inputs": (TensorSpec("input", (3, h, w)),),
        "outputs": (TensorSpec("output", (3, SCALE * h, SCALE * w)),),
        "weights_path": weights,
        "calibration": calibration,
    }
    if suffix == ".onnx":
        return ModelSource(cache_key=f"{cache_prefix}-onnx-{digest}", onnx_path=weights, **common)
    return ModelSource(
        cache_key=f"{cache_prefix}-torch-{digest}", build=lambda: _edsr_from_state_dict(weights), **common
    )


# -- the task ------------------------------------------------------------------------


class EdsrTask(StandinTask):
    name = "edsr"
    title = "Super-resolution (EDSR F32B5 2x on SNUSR; synthetic stand-in by default)"
    rules_round = ROUND

    cache = StandinCache("edsr", STANDIN_VERSION)


    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic pairs and train the small EDSR; cached, so only the first call works."""
        if self.is_prepared():
            return self.cache.meta()
        import torch

        from mlgauge.data import synthetic_sr
        from mlgauge.models.edsr import EDSR
        from mlgauge.training.fit import single_threaded

        report = progress or (lambda stage, fraction: None)
        start = time.perf_counter()
        report("generating synthetic images", 0.0)
        train_lr, train_hr = synthetic_sr.generate(range(STANDIN_SPLITS["train"]), "train")
        val_lr, val_hr = synthetic_sr.generate(range(STANDIN_SPLITS["val"]), "val")
        report("generating synthetic images", 0.15)

        torch.manual_seed(0)
        model = EDSR(**STANDIN_MODEL)
        with single_threaded():
            untrained = model_psnr(model, val_lr, val_hr)
            fit_sr(model, train_lr, train_hr, progress=lambda f: report("training the small EDSR", 0.15 + 0.83 * f))
            trained = model_psnr(model, val_lr, val_hr)
        meta = {
            "task": self.name,
            "version": STANDIN_VERSION,
            "model": STANDIN_MODEL,
            "train_samples": STANDIN_SPLITS["train"],
            "val_samples": STANDIN_SPLITS["val"],
            "steps": TRAIN_STEPS,
            "val_psnr_trained_db": round(trained, 4),
            "val_psnr_untrained_db": round(untrained, 4),
            "val_psnr_bicubic_db": round(bicubic_psnr(val_lr, val_hr), 4),
            "seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__,
        }
        report("done", 1.0)

        def fill(folder: Path) -> None:
            np.save(folder / "val_lr.npy", val_lr)
            np.save(folder / "val_hr.npy", val_hr)
            np.save(folder / "calibration_lr.npy", train_lr[:CALIBRATION_SAMPLES])
            torch.save(model.state_dict(), folder / "weights.pt")

        return self.cache.write(fill, meta)

    def _standin_workload(self, weights_path: Path | None, count: int | None) -> Workload:
        from mlgauge.data.synthetic_sr import SyntheticSR

        d = self.cache.require(self.name)
        rule = standin_rules()[self.name]
        lr = np.load(d / "val_lr.npy", allow_pickle=False)
        hr = np.load(d / "val_hr.npy", allow_pickle=False)
        if count is not None:
            lr, hr = lr[:count], hr[:count]
        weights = existing_weights(weights_path or d / "weights.pt")
        layout = layout_for(weights)
        dataset = SyntheticSR(lr, hr, rule.performance_sample_count, layout=layout)

        def calibration() -> np.ndarray:
            # Train-split inputs, never the scored val split; NCHW like the model's input.
            return np.load(d / "calibration_lr.npy", allow_pickle=False)

        model = sr_model_source(
            weights,
            (lr.shape[2], lr.shape[3]),
            name="edsr-f{features}b{blocks}".format(**STANDIN_MODEL),
            cache_prefix=f"{self.name}-synthetic-{STANDIN_VERSION}",
            calibration=calibration,
        )
        return self._workload(dataset, model, rule.quality, layout)

    def _real_workload(self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str) -> Workload:
        from mlgauge.data.sr_pairs import SrPairs

        rules = inference_rules(round)
        if self.name not in rules.benchmarks:
            raise UsageError(
                f"rules round '{round}' has no {self.name} benchmark",
                hint=f"EDSR super-resolution is an MLPerf Mobile benchmark: use the rules round '{ROUND}'",
            )
        rule = rules.benchmark(self.name)
        if weights_path is None:
            raise ModelError(
                "EDSR on an SR dataset needs weights",
                hint="Pass --weights with MLPerf Mobile's edsr_f32b5_fp32.tflite, an .onnx export, "
                "or an EDSR state dict (.pt)",
            )
        weights = existing_weights(weights_path)
        layout = layout_for(weights)
        dataset = SrPairs(
            Path(dataset_path), scale=SCALE, count=count, performance_count=rule.performance_sample_count, layout=layout
        )
        width, height = dataset.lr_size
        # MLPerf publishes no calibration set for EDSR, and the scored images must not be used for it.
        model = sr_model_source(weights, (height, width), name="edsr-f32b5", cache_prefix=self.name)
        return self._workload(dataset, model, rule.quality, layout)

    def _workload(self, dataset, model: ModelSource, quality: QualityTarget, layout: str) -> Workload:
        return Workload(
            task=self.name,
            benchmark=self.name,
            dataset=dataset,
            model=model,
            quality=quality,
            response_dtype=np.dtype(np.uint8),
            postprocess=make_sr_postprocess(layout),
            score=make_psnr_score(dataset.ground_truth(), dataset.hr_shape, quality),
        )

