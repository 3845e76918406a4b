"""The data of one Tiny benchmark, in the device's format: training set, accuracy set, calibration set.

Either the real dataset (``root``: Speech Commands v2, the VWW person/non-person folders, CIFAR-10
binary, DCASE2020 ToyCar) or the synthetic stand-in, generated deterministically. The accuracy set
holds the rule's sample count (1000 / 1000 / 200 / 248 clips); for real data it is a fixed, seeded
selection of the test split (the rules' own file lists are not redistributable here). ad01 keeps a
clip's windows together: its accuracy is one score per clip, the mean over that clip's windows
(runner script.py), and performance sends a clip's first window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlgauge.errors import DataError, UsageError
from mlgauge.tiny.inputs import INT8_MAX, INT8_MIN, LOG_MEL_WINDOW, RGB_32, RGB_96, InputCodec, int8_codec_for

SELECTION_SEED = 0  # which real test files make up the accuracy set
CALIBRATION_SAMPLES = 100  # representative samples for the int8 input range and post-training quantization
AD_CALIBRATION_CLIPS = 10
IC_STANDIN_SCALE = 24.0  # synthetic_images' float pixels -> uint8 around 128: keeps 2.2 noise sigmas unclipped


@dataclass
class TinySplit:
    samples: np.ndarray  # (n, *codec.sample_shape) in the device's dtype
    labels: np.ndarray  # one per sample; for ad01 one per clip (1 = anomalous)
    groups: np.ndarray | None = None  # ad01: the clip index of every window

    @property
    def count(self) -> int:
        """Samples, or clips for ad01: what the rule's accuracy count counts."""
        return len(self.labels)

    def first_of_each(self, limit: int) -> list[bytes]:
        """Up to ``limit`` device inputs for the performance windows: the first window of each clip."""
        if self.groups is None:
            return [s.tobytes() for s in self.samples[:limit]]
        firsts = np.unique(self.groups, return_index=True)[1]
        return [self.samples[i].tobytes() for i in firsts[:limit]]


@dataclass
class TinyData:
    benchmark: str
    dataset: str  # "synthetic" or the real dataset's name
    codec: InputCodec
    train: TinySplit
    test: TinySplit
    calibration: np.ndarray  # device samples


def load_tiny_data(
    benchmark: str,
    root: Path | None,
    *,
    train_samples: int,
    test_samples: int,
    calibration_samples: int,
    input_quantization: tuple[float, int] | None = None,
) -> TinyData:
    """``train_samples`` caps the training set (clips for ad01; all of a real split when 0).

    ``input_quantization`` (kws01 only) is the (scale, zero point) of a model's int8 input, e.g. a
    board's firmware model; without it the range of the calibration features sets them."""
    loader = _LOADERS[benchmark]
    sizes = (max(0, train_samples), max(1, test_samples), max(1, calibration_samples))
    if benchmark == "kws01":
        return _kws(root, *sizes, input_quantization)
    if input_quantization is not None:
        raise UsageError(
            f"{benchmark} takes its input as {'uint8 pixels' if benchmark != 'ad01' else 'float32'}, not int8",
            hint="Give an input quantization for kws01 only",
        )
    return loader(root, *sizes)


def _pick(count: int, wanted: int) -> np.ndarray:
    """A fixed, seeded choice of ``wanted`` of ``count`` indices, in file order."""
    if wanted >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(SELECTION_SEED).choice(count, wanted, replace=False))


def _first(count: int, wanted: int) -> np.ndarray:
    return np.arange(count if wanted <= 0 else min(count, wanted))


# -- kws01 ---------------------------------------------------------------------------------------


def _kws(
    root: Path | None, n_train: int, n_test: int, n_cal: int, quantization: tuple[float, int] | None = None
) -> TinyData:
    from mlgauge.data.tiny_audio import kws_mfcc

    if root is None:
        from mlgauge.data import synthetic_speech as speech

        def split(name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
            clips, labels = speech.generate(range(count), name)
            return np.stack([kws_mfcc(c) for c in clips]) if len(clips) else np.zeros((0, 49, 10)), labels

        dataset = f"synthetic ({speech.backend()})"
        train, test, cal = split("train", n_train or 6000), split("val", n_test), split("calibration", n_cal)
    else:
        from mlgauge.data.speech_commands import DATASET, SpeechCommands

        def split(name: str, chosen: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            ds = SpeechCommands(root, name, features="mfcc")
            idx = chosen(len(ds))
            return np.stack([ds[int(i)][0] for i in idx]), ds.labels[idx]

        dataset = DATASET
        train = split("train", lambda c: _first(c, n_train))
        test = split("test", lambda c: _pick(c, n_test))
        cal = split("validation", lambda c: _pick(c, n_cal))
    if quantization is None:
        codec = int8_codec_for(cal[0], (49, 10), (1, 49, 10))
    else:
        scale, zero_point = quantization
        if not (scale > 0 and INT8_MIN <= zero_point <= INT8_MAX):
            raise UsageError(
                f"int8 input quantization scale {scale}, zero point {zero_point}",
                hint="The scale must be positive and the zero point within -128..127",
            )
        codec = InputCodec("int8", (49, 10), (1, 49, 10), float(scale), int(zero_point))
    return TinyData(
        "kws01",
        dataset,
        codec,
        TinySplit(codec.quantize(train[0]), train[1]),
        TinySplit(codec.quantize(test[0]), test[1]),
        codec.quantize(cal[0]),
    )


# -- vww01 / ic01 ---------------------------------------------------------------------------------


def _hwc(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(np.asarray(images, dtype=np.uint8), 1, -1))


def _vww(root: Path | None, n_train: int, n_test: int, n_cal: int) -> TinyData:
    if root is None:
        from mlgauge.data import synthetic_vww as scenes

        def split(name: str, count: int) -> TinySplit:
            images, labels = scenes.generate(range(count), name)
            return TinySplit(_hwc(images), labels)

        train, test, cal = split("train", n_train or 8000), split("val", n_test), split("calibration", n_cal)
        return TinyData("vww01", "synthetic", RGB_96, train, test, cal.samples)
    from mlgauge.data.vww import VisualWakeWords

    def real(subset: str, chosen: Callable[[int], np.ndarray]) -> TinySplit:
        ds = VisualWakeWords(root, subset)
        idx = chosen(len(ds))
        return TinySplit(_hwc(ds.load(idx.tolist())), ds.ground_truth()[idx])

    train = real("training", lambda c: _pick(c, n_train) if n_train else np.arange(c))
    test = real("validation", lambda c: _pick(c, n_test))
    cal = real("training", lambda c: _pick(c, n_cal))
    return TinyData("vww01", "Visual Wake Words", RGB_96, train, test, cal.samples)


def _standin_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(128.0 + IC_STANDIN_SCALE * images), 0, 255).astype(np.uint8)


def _ic(root: Path | None, n_train: int, n_test: int, n_cal: int) -> TinyData:
    if root is None:
        from mlgauge.data import synthetic_images as images

        def split(name: str, count: int) -> TinySplit:
            x, y = images.generate(range(count), name)
            return TinySplit(_hwc(_standin_uint8(x)), y)

        train, test, cal = split("train", n_train or 10000), split("val", n_test), split("calibration", n_cal)
        return TinyData("ic01", "synthetic", RGB_32, train, test, cal.samples)
    from mlgauge.data.cifar10 import load_cifar10

    x_train, y_train = load_cifar10(root, "train")
    x_test, y_test = load_cifar10(root, "test")
    train_idx = _first(len(y_train), n_train)
    test_idx = _per_class(y_test, n_test)
    cal_idx = _pick(len(y_train), n_cal)
    return TinyData(
        "ic01",
        "CIFAR-10",
        RGB_32,
        TinySplit(_hwc(x_train[train_idx]), y_train[train_idx]),
        TinySplit(_hwc(x_test[test_idx]), y_test[test_idx]),
        _hwc(x_train[cal_idx]),
    )


def _per_class(labels: np.ndarray, wanted: int) -> np.ndarray:
    """The first ``wanted / classes`` of each class (the Tiny ic01 set is 20 per class)."""
    classes = np.unique(labels)
    each = max(1, wanted // len(classes))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:each] for c in classes]))


# -- ad01 -----------------------------------------------------------------------------------------


def _windows(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not clips:
        return np.zeros((0, 640), np.float32), np.zeros(0, np.int64)
    groups = np.concatenate([np.full(len(w), i) for i, w in enumerate(clips)])
    return np.concatenate(clips).astype("<f4"), groups


def _ad(root: Path | None, n_train: int, n_test: int, n_cal: int) -> TinyData:
    from mlgauge.data.tiny_audio import ad_log_mel

    n_cal_clips = max(1, min(AD_CALIBRATION_CLIPS, n_cal))
    if root is None:
        from mlgauge.data import synthetic_machine as machine

        def split(name: str, count: int) -> tuple[list[np.ndarray], np.ndarray]:
            waves, labels = machine.generate(range(count), name)
            return [ad_log_mel(w, machine.SAMPLE_RATE, crop=None) for w in waves], labels

        dataset = "synthetic"
        train, test, cal = split("train", n_train or 300), split("test", n_test), split("calibration", n_cal_clips)
    else:
        from mlgauge.data.toyadmos import DATASET, ToyCar

        def split(name: str, chosen: Callable[[int], np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
            ds = ToyCar(root, name)
            idx = chosen(len(ds))
            return [ds.features(int(i)) for i in idx], ds.labels[idx]

        dataset = DATASET
        train = split("train", lambda c: _first(c, n_train))
        test = split("test", lambda c: _pick(c, n_test))
        cal = split("train", lambda c: _pick(c, n_cal_clips))
    train_x, _ = _windows(train[0])
    test_x, groups = _windows(test[0])
    cal_x, _ = _windows(cal[0])
    cal_x = cal_x[np.linspace(0, len(cal_x) - 1, min(n_cal, len(cal_x))).astype(int)]
    return TinyData(
        "ad01",
        dataset,
        LOG_MEL_WINDOW,
        TinySplit(train_x, np.zeros(len(train_x), np.int64)),  # all normal; a label per window
        TinySplit(test_x, np.asarray(test[1], np.int64), groups),
        cal_x,
    )


_LOADERS: dict[str, Callable[[Path | None, int, int, int], TinyData]] = {
    "kws01": _kws,
    "vww01": _vww,
    "ic01": _ic,
    "ad01": _ad,
}


def check_split(data: TinyData) -> None:
    """Refuse data a run cannot be judged on: no training samples, or an accuracy set of one class."""
    if len(data.train.samples) == 0:
        raise DataError(f"{data.benchmark}: the training set is empty", hint="Check the dataset folder")
    if len(np.unique(data.test.labels)) < 2:
        raise DataError(
            f"{data.benchmark}: the accuracy set holds one class only",
            hint="Use a test split with both normal and anomalous clips" if data.benchmark == "ad01"
            else "Use more accuracy samples",
        )
