"""Image classification: ResNet-50 v1.5 on ImageNet, or its synthetic stand-in.

Real: the ILSVRC2012 validation folder + ``val_map.txt`` with MLPerf's
preprocessing, and user-given weights (an ONNX file such as MLPerf's
``resnet50_v1.onnx``, or a torchvision-layout PyTorch state dict).
Out of the box: a small residual CNN on deterministic synthetic images, its
data generated and weights trained once by ``prepare``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlgauge import paths
from mlgauge.errors import ModelError
from mlgauge.rules import DEFAULT_ROUND, QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import AccuracyResult, ModelSource, Workload
from mlgauge.tasks.standin import StandinCache, StandinTask
from mlgauge.tasks.weights import existing_weights, file_digest, load_into, load_state_dict
from mlgauge.tensors import TensorSpec

# Bump when the generator or the training recipe changes, so stale caches are rebuilt.
STANDIN_VERSION = "v2"  # v2: trained on one thread
STANDIN_SPLITS = {"train": 10_000, "val": 2_048}
STANDIN_EPOCHS = 6
# torchvision-trained weights expect (x/255 - mean) / std; MLPerf's input is x - mean
# in 0..255 units, so dividing by 255 * std gives the same normalisation.
TORCHVISION_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def top1_postprocess(logits: np.ndarray, indices=None) -> np.ndarray:
    """Class index per sample. 1001-way models (MLPerf's TF-derived ONNX) reserve 0 for background."""
    logits = np.asarray(logits)
    pred = logits.argmax(axis=-1).astype(np.int32)
    return pred - 1 if logits.shape[-1] == 1001 else pred


def make_top1_score(labels: np.ndarray, target: QualityTarget) -> Callable[[dict[int, np.ndarray]], AccuracyResult]:
    def score(predictions: dict[int, np.ndarray]) -> AccuracyResult:
        if not predictions:
            return AccuracyResult("top1", 0.0, "%", 0, target)
        idx = np.fromiter(predictions.keys(), dtype=np.int64, count=len(predictions))
        pred = np.array([int(v[0]) for v in predictions.values()], dtype=np.int64)
        good = int((pred == labels[idx]).sum())
        value = 100.0 * good / len(idx)
        return AccuracyResult("top1", value, "%", len(idx), target, {"good": good, "total": len(idx)})

    return score


class ResNet50Task(StandinTask):
    name = "resnet50"
    title = "Image classification (ResNet-50 v1.5 on ImageNet; synthetic stand-in by default)"
    rules_round = DEFAULT_ROUND

    cache = StandinCache("resnet50", STANDIN_VERSION)

    # -- the synthetic stand-in -------------------------------------------------


    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic splits and train the small CNN; cached, so only the first call works."""
        if self.is_prepared():
            return self.cache.meta()
        import torch

        from mlgauge.data import synthetic_images
        from mlgauge.models.resnet import SmallResNet
        from mlgauge.training.fit import fit_classifier, single_threaded, top1

        # ``progress`` gets the overall fraction done: generation is the first tenth, training the rest.
        report = progress or (lambda stage, fraction: None)
        start = time.perf_counter()
        report("generating synthetic images", 0.0)
        train_x, train_y = synthetic_images.generate(range(STANDIN_SPLITS["train"]), "train")
        report("generating synthetic images", 0.08)
        val_x, val_y = synthetic_images.generate(range(STANDIN_SPLITS["val"]), "val")
        report("generating synthetic images", 0.1)

        with single_threaded():
            torch.manual_seed(0)
            model = SmallResNet()
            untrained = top1(model, val_x, val_y)
            fit_classifier(
                model, train_x, train_y, epochs=STANDIN_EPOCHS, progress=lambda f: report("training the small CNN", 0.1 + 0.9 * f)
            )
            trained = top1(model, val_x, val_y)

        meta = {
            "task": self.name,
            "version": STANDIN_VERSION,
            "train_samples": STANDIN_SPLITS["train"],
            "val_samples": STANDIN_SPLITS["val"],
            "epochs": STANDIN_EPOCHS,
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
        from mlgauge.data.synthetic_images import SyntheticImages

        d = self.cache.require(self.name)
        rule = standin_rules()[self.name]
        images = np.load(d / "val_images.npy", allow_pickle=False)
        labels = np.load(d / "val_labels.npy", allow_pickle=False)
        if count is not None:
            images, labels = images[:count], labels[:count]
        dataset = SyntheticImages(images, labels, rule.performance_sample_count)
        weights = existing_weights(weights_path or d / "weights.pt")

        def build():
            from mlgauge.models.resnet import SmallResNet

            return load_into(SmallResNet(), load_state_dict(weights), weights)

        model = ModelSource(
            name="small-resnet",
            inputs=(TensorSpec("input", dataset.sample_shape),),
            cache_key=f"{self.name}-synthetic-{STANDIN_VERSION}-{file_digest(weights)}",
            build=build,
            weights_path=weights,
        )
        return self._workload(dataset, model, rule.quality)

    # -- the real benchmark -----------------------------------------------------
    def _real_workload(self, dataset_path: Path, weights_path: Path | None, count: int | None, round: str) -> Workload:
        from mlgauge.data.imagenet import ImageNetValidation

        rule = inference_rules(round).benchmark(self.name)
        if weights_path is None:
            raise ModelError(
                "ResNet-50 on ImageNet needs weights",
                hint="Pass --weights with MLPerf's resnet50_v1.onnx or a torchvision-layout state dict (.pt/.pth)",
            )
        weights_path = existing_weights(weights_path)
        dataset = ImageNetValidation(
            Path(dataset_path),
            count=count,
            performance_count=rule.performance_sample_count,
            cache_dir=paths.cache_dir() / "preprocessed",
        )
        digest = file_digest(weights_path)
        if weights_path.suffix.lower() == ".onnx":
            model = ModelSource(
                name="resnet50-v1.5",
                inputs=(TensorSpec("input", dataset.sample_shape),),
                cache_key=f"{self.name}-onnx-{digest}",
                onnx_path=weights_path,
                weights_path=weights_path,
            )
        else:

            def build():
                import torch

                from mlgauge.models.resnet import InputScale, ResNet50

                state = load_state_dict(weights_path)
                fc = state.get("fc.weight")
                classes = int(fc.shape[0]) if fc is not None else 1000
                net = load_into(ResNet50(num_classes=classes), state, weights_path)
                return torch.nn.Sequential(InputScale(TORCHVISION_STD_255), net).eval()

            model = ModelSource(
                name="resnet50-v1.5",
                inputs=(TensorSpec("input", dataset.sample_shape),),
                cache_key=f"{self.name}-torch-{digest}",
                build=build,
                weights_path=weights_path,
            )
        return self._workload(dataset, model, rule.quality)

    def _workload(self, dataset, model: ModelSource, quality: QualityTarget) -> Workload:
        return Workload(
            task=self.name,
            benchmark=self.name,
            dataset=dataset,
            model=model,
            quality=quality,
            response_dtype=np.dtype(np.int32),
            postprocess=top1_postprocess,
            score=make_top1_score(dataset.ground_truth(), quality),
        )

