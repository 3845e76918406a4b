"""A Tiny benchmark's input as the device receives it, and as the model sees it.

Samples are kept in the device's own format everywhere (the bytes of the runner's input files,
MLPerf Tiny datasets README): kws01 49x10 int8 MFCCs, vww01 96x96 and ic01 32x32 interleaved
uint8 RGB, ad01 640 little-endian float32 log-mel values. Training, calibration, the accuracy run
and the device all start from these same arrays, so the model is trained on exactly what a device
is later sent, and ``to_model`` is the one place that turns them into the float tensors the
PyTorch models take.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mlgauge.errors import DataError

INT8_MIN, INT8_MAX = -128, 127


@dataclass(frozen=True)
class InputCodec:
    """``kind``: "int8" (affine-quantized features), "rgb" (uint8 HWC, scaled to [0, 1]) or "float32"."""

    kind: str
    sample_shape: tuple[int, ...]  # one sample in the device's layout
    model_shape: tuple[int, ...]  # one sample as the model takes it
    scale: float = 1.0  # int8 only: real = (q - zero_point) * scale
    zero_point: int = 0

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({"int8": np.int8, "rgb": np.uint8, "float32": "<f4"}[self.kind])

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.sample_shape)) * self.dtype.itemsize

    def to_model(self, samples: np.ndarray) -> np.ndarray:
        """``(n, *sample_shape)`` device samples -> ``(n, *model_shape)`` float32 model inputs."""
        x = np.asarray(samples)
        n = x.shape[0]
        if self.kind == "int8":
            out = (x.astype(np.float32) - self.zero_point) * np.float32(self.scale)
        elif self.kind == "rgb":
            out = np.moveaxis(x, -1, 1).astype(np.float32) / np.float32(255.0)  # HWC -> CHW
        else:
            out = x.astype(np.float32)
        return np.ascontiguousarray(out.reshape(n, *self.model_shape))

    def from_bytes(self, data: bytes) -> np.ndarray:
        """One sample as the device got it -> ``(1, *sample_shape)``."""
        if len(data) != self.sample_bytes:
            raise DataError(
                f"an input of {len(data)} bytes, the model takes {self.sample_bytes}",
                hint="Send the benchmark's own input files",
            )
        return np.frombuffer(data, dtype=self.dtype).reshape(1, *self.sample_shape)

    def quantize(self, features: np.ndarray) -> np.ndarray:
        """int8 only: float features -> int8 samples, rounding and saturating as TFLite does."""
        q = np.round(np.asarray(features, dtype=np.float64) / self.scale) + self.zero_point
        return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputCodec:
        return cls(
            str(data["kind"]),
            tuple(int(v) for v in data["sample_shape"]),
            tuple(int(v) for v in data["model_shape"]),
            float(data["scale"]),
            int(data["zero_point"]),
        )


def int8_codec_for(features: np.ndarray, sample_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> InputCodec:
    """Asymmetric int8 over the features' range, as the TFLite converter sets an input's
    quantization from its representative data (the range always holds 0)."""
    low = min(float(np.min(features)), 0.0)
    high = max(float(np.max(features)), 0.0)
    scale = (high - low) / (INT8_MAX - INT8_MIN) or 1.0
    zero_point = int(np.clip(round(INT8_MIN - low / scale), INT8_MIN, INT8_MAX))
    return InputCodec("int8", sample_shape, model_shape, scale, zero_point)


RGB_96 = InputCodec("rgb", (96, 96, 3), (3, 96, 96))
RGB_32 = InputCodec("rgb", (32, 32, 3), (3, 32, 32))
LOG_MEL_WINDOW = InputCodec("float32", (640,), (640,))
