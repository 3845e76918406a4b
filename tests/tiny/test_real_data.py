"""The suite's data on the real formats: small files written here in each dataset's layout, read
into the device's format with the rule's selections; and one run of 'mlgauge tiny' on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mlgauge.cli import main
from mlgauge.tiny.data import load_tiny_data

SR = 16000


def _wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(samples, dtype=np.int16), SR, subtype="PCM_16")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(labels: list[int]) -> bytes:
        return b"".join(bytes([y]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes() for y in labels)

    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(batch(list(range(10)) * 2))
    (folder / "test_batch.bin").write_bytes(batch(list(range(10)) * 3))
    return folder


def test_cifar10_gives_interleaved_bytes_and_the_per_class_selection(cifar):
    data = load_tiny_data("ic01", cifar, train_samples=0, test_samples=20, calibration_samples=7)
    assert data.dataset == "CIFAR-10" and data.codec.sample_shape == (32, 32, 3)
    assert data.train.samples.shape == (100, 32, 32, 3) and data.calibration.shape == (7, 32, 32, 3)
    assert np.bincount(data.test.labels).tolist() == [2] * 10  # ic01's set: the same count per class
    raw = (cifar / "test_batch.bin").read_bytes()
    planar = np.frombuffer(raw[1:3073], np.uint8).reshape(3, 32, 32)  # the first test image
    assert data.test.samples[0].tobytes() == np.moveaxis(planar, 0, -1).tobytes()


def test_vww_folders_give_person_labels_and_the_validation_tenth(tmp_path):
    root = tmp_path / "vw_coco2014_96"
    for name, value in (("person", 200), ("non_person", 10)):
        (root / name).mkdir(parents=True)
        for k in range(10):
            Image.new("RGB", (120, 100), (value, k, 0)).save(root / name / f"{k}.png")
    data = load_tiny_data("vww01", tmp_path, train_samples=0, test_samples=1000, calibration_samples=4)
    assert data.dataset == "Visual Wake Words" and data.train.samples.shape == (18, 96, 96, 3)
    assert sorted(data.test.labels.tolist()) == [0, 1]  # the first tenth of each class
    reds = data.test.samples[:, 0, 0, 0].tolist()
    assert sorted(zip(data.test.labels.tolist(), reds, strict=True)) == [(0, 10), (1, 200)]  # person = 1


def test_speech_commands_give_int8_mfccs_of_the_test_list(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    rng = np.random.default_rng(1)
    t = np.arange(SR) / SR
    for i, rel in enumerate(["yes/a_nohash_0.wav", "yes/b_nohash_0.wav", "no/c_nohash_0.wav",
                             "left/d_nohash_0.wav", "bed/e_nohash_0.wav"]):  # fmt: skip
        _wav(root / rel, 8000 * np.sin(2 * np.pi * (300 + 150 * i) * t))
    _wav(root / "_background_noise_" / "white_noise.wav", rng.integers(-3000, 3000, 3 * SR))
    _wav(root / "_background_noise_" / "running_tap.wav", rng.integers(-3000, 3000, 2 * SR))
    (root / "validation_list.txt").write_text("no/c_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/b_nohash_0.wav\nleft/d_nohash_0.wav\n")
    data = load_tiny_data("kws01", root, train_samples=0, test_samples=1000, calibration_samples=100)
    assert data.dataset == "Speech Commands" and data.test.samples.dtype == np.int8
    assert data.test.samples.shape == (2, 49, 10) and data.test.labels.tolist() == [2, 9]  # left, yes
    fixed = load_tiny_data("kws01", root, train_samples=1, test_samples=2, calibration_samples=1,
                           input_quantization=(0.5, 83))  # fmt: skip
    assert (fixed.codec.scale, fixed.codec.zero_point) == (0.5, 83)


def test_toycar_keeps_each_clip_s_windows_together(tmp_path):
    machine = tmp_path / "dev_data" / "ToyCar"
    rng = np.random.default_rng(2)
    for split, names in {"train": ["normal_id_01_00000000.wav"],
                         "test": ["normal_id_01_00000000.wav", "anomaly_id_01_00000000.wav"]}.items():  # fmt: skip
        for name in names:
            _wav(machine / split / name, rng.integers(-2000, 2000, 10 * SR))  # 10 s, as DCASE's clips
    data = load_tiny_data("ad01", tmp_path / "dev_data", train_samples=0, test_samples=248, calibration_samples=50)
    assert data.dataset == "ToyCar" and data.test.labels.tolist() == [0, 1]  # grouped as the reference: normal first
    assert np.bincount(data.test.groups).tolist() == [196, 196]  # frames 50..249: 196 windows per clip
    assert data.train.samples.shape == (196, 640) and data.calibration.shape == (50, 640)
    assert len(data.test.first_of_each(5)) == 2 and len(data.test.first_of_each(5)[0]) == 2560


def test_tiny_on_real_cifar10_files(capsys, tmp_path, cifar):
    argv = ["tiny", "ic01", "--dataset", str(cifar), "--quick", "--meter", "none", "--epochs", "1",
            "--accuracy-samples", "20", "--backend", "torch", "--precision", "fp32", "--json",
            "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 1  # random pixels: far below 85% top-1, and said so
    record = json.loads(capsys.readouterr().out)["records"][0]
    assert record["dataset"] == "CIFAR-10" and record["model"]["recipe"] == "ic01.reference"
    assert record["model"]["train_samples"] == 100 and record["accuracy"]["samples"] == 20
    assert any("below the target 0.85" in reason for reason in record["invalid_reasons"])
