"""Time-to-train benchmark ``ssd``: RetinaNet with focal loss, trained to a COCO mAP target.

Real: MLPerf's RetinaNet (ResNeXt50-32x4d + FPN, 264 classes, 800x800) on the OpenImages subset
in the layout the reference's ``get_openimages`` reads::

    <root>/train/labels/openimages-mlperf.json        COCO instances JSON (categories 0..263)
    <root>/train/data/<file_name>                     its images
    <root>/validation/labels/openimages-mlperf.json
    <root>/validation/data/<file_name>

Adam with a linear warm-up from ``warmup_factor`` over the first epoch, then constant, weight
decay 0, frozen batch norm, stem and first stage frozen (trainable_backbone_layers = 3), random
horizontal flip: the reference's ``train.py``. The reference starts the backbone from ImageNet
weights; give them as ``backbone_weights`` (torchvision's ``resnext50_32x4d`` state dict, the file
MLPerf's download script fetches). Nothing is downloaded: without them the backbone starts from
random weights and 34.0% mAP is far away.

Synthetic (default): the small RetinaNet of the inference stand-in on the same deterministic
synthetic shapes, the same recipe, Open division, mlgauge's own target. Anchors are matched to
boxes inside the loss, on the clock, as the reference's loss does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mlgauge.errors import DataError, UsageError
from mlgauge.rules.training import DEFAULT_RULESET, TrainingRule, training_rules
from mlgauge.training.benchmarks.options import check_global_batch_size, check_max_epochs, check_variant
from mlgauge.training.loop import Parallel, Trainable

NAME = "ssd"
ANNOTATIONS = "labels/openimages-mlperf.json"
IMAGES = "data"


@dataclass(frozen=True)
class AdamRecipe:
    """Adam; LR rises linearly from ``warmup_factor * base_lr`` over the warm-up, then stays."""

    global_batch_size: int
    base_lr: float
    epochs: int = 0  # the run's epoch bound; 0: the rule's max_epochs
    warmup_epochs: int = 1
    warmup_factor: float = 1e-3

    def lr_factor(self, train_samples: int) -> Callable[[int], float]:
        """Step -> LR / base_lr (torchvision's ``warmup_lr_scheduler``, which the reference uses)."""
        warmup = self.warmup_epochs * -(-train_samples // self.global_batch_size)

        def factor(step: int) -> float:
            if step >= warmup:
                return 1.0
            alpha = step / warmup
            return self.warmup_factor * (1 - alpha) + alpha

        return factor


@dataclass(frozen=True)
class SyntheticConfig:
    train_samples: int
    eval_samples: int
    channels: int
    widths: tuple[int, int, int, int, int]
    recipe: AdamRecipe


# Variant names match [synthetic.ssd.<variant>] in the training rule file (target, epoch bound).
SYNTHETIC = {
    "default": SyntheticConfig(
        train_samples=2_000, eval_samples=512, channels=48, widths=(16, 32, 48, 64, 96),
        recipe=AdamRecipe(global_batch_size=16, base_lr=4e-3),
    ),
    "tiny": SyntheticConfig(
        train_samples=512, eval_samples=128, channels=32, widths=(8, 16, 24, 32, 48),
        recipe=AdamRecipe(global_batch_size=16, base_lr=4e-3),
    ),
}  # fmt: skip

# config_DGXA100_001x08x032.sh: 8 GPUs x 32 images at --lr 0.0001; train.py: --epochs 26,
# --warmup-epochs 1, --warmup-factor 1e-3, Adam with no weight decay.
OPENIMAGES_RECIPE = AdamRecipe(global_batch_size=256, base_lr=1e-4, epochs=26)


class _Detections(Dataset):
    """Training images with xyxy pixel boxes and labels, flipped left-right half the time.

    The flip is drawn from (seed, epoch, index), so a run is reproducible whatever the number
    of loader workers.
    """

    def __init__(self, count: int, load: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.count, self.load = count, load
        self.seed, self.epoch = 0, 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, boxes, labels = self.load(index)
        if np.random.default_rng((self.seed, self.epoch, index)).random() < 0.5:
            width = image.shape[-1]
            image = image[:, :, ::-1]
            boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
        return np.ascontiguousarray(image), boxes.reshape(-1, 4).astype(np.float32), labels


def _collate(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, list, list]:
    images = torch.from_numpy(np.stack([s[0] for s in samples]))
    return images, [s[1] for s in samples], [s[2] for s in samples]


class _SyntheticSource:
    name = "synthetic"

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        self.train_samples = config.train_samples
        self.eval_samples = config.eval_samples
        self._data: tuple | None = None

    def _arrays(self) -> tuple:
        if self._data is None:  # generated once per benchmark object, reused by every run of a set
            from mlgauge.data import synthetic_shapes

            train = synthetic_shapes.generate(range(self.train_samples), "train")
            val_x, val_b, val_l = synthetic_shapes.generate(range(self.eval_samples), "val")
            self._data = (train, val_x, synthetic_shapes.ground_truth(val_b, val_l))
        return self._data

    def train_dataset(self) -> _Detections:
        images, boxes, labels = self._arrays()[0]
        return _Detections(len(images), lambda i: (images[i], boxes[i], labels[i]))

    def eval_batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        images = self._arrays()[1]
        for start in range(0, len(images), batch_size):
            yield start, images[start : start + batch_size]

    def truth(self):
        return self._arrays()[2]

    def model(self) -> nn.Module:
        from mlgauge.data.synthetic_shapes import IMAGE_SIZE, NUM_CLASSES
        from mlgauge.models.retinanet import SmallRetinaNet

        c = self.config
        return SmallRetinaNet(NUM_CLASSES, IMAGE_SIZE, channels=c.channels, widths=c.widths)


def _annotations(root: Path, split: str):
    from mlgauge.data.coco import locate_dataset, read_coco_annotations

    json_path, images = locate_dataset(root / split, ANNOTATIONS, IMAGES, f"OpenImages {split}")
    return read_coco_annotations(json_path), images


def _limit(truth, count: int | None, what: str):
    if count is not None and count < 1:
        raise UsageError(f"{what} count must be at least 1, got {count}", hint="Leave it unset for every image")
    truth = truth if count is None else truth.head(count)
    if not truth.images:
        raise DataError(f"{truth.source} lists no images", hint="Check the annotation file")
    return truth


class _OpenImagesSource:
    name = "openimages"

    def __init__(
        self, root: Path, *, image_size: int, count: int | None, eval_count: int | None, backbone: Path | None
    ) -> None:
        from functools import partial

        from mlgauge.data.coco import CocoDetection, preprocess_mlperf_retinanet
        from mlgauge.data.image_files import check_files_exist
        from mlgauge.tasks.weights import existing_weights

        self.size = (image_size, image_size)
        self.backbone = existing_weights(backbone) if backbone is not None else None
        train, self.train_dir = _annotations(root, "train")
        self.train_truth = _limit(train, count, "training image")
        names = [im.file_name for im in self.train_truth.images]
        check_files_exist(self.train_dir, names, train.source, what="OpenImages training", hint="Complete the folder")
        val, val_dir = _annotations(root, "validation")
        self.preprocess = partial(preprocess_mlperf_retinanet, size=self.size)
        # No cache of preprocessed images: every run decodes them on the clock alike.
        self.val = CocoDetection(
            _limit(val, eval_count, "validation image"), val_dir, label="OpenImages validation",
            preprocess=self.preprocess, sample_shape=(3, *self.size), preprocess_version="training",
        )  # fmt: skip
        self.classes = _class_count(train, val)
        self.train_samples = len(self.train_truth)
        self.eval_samples = self.val.total_count

    def _train_sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from mlgauge.data.image_files import decode_image

        image = self.train_truth.images[index]
        boxes, labels = self.train_truth.boxes(index)
        scale = np.asarray([self.size[1] / image.width, self.size[0] / image.height] * 2, dtype=np.float32)
        pixels = self.preprocess(decode_image(self.train_dir / image.file_name, what="OpenImages training image"))
        return pixels, boxes * scale, labels

    def train_dataset(self) -> _Detections:
        return _Detections(self.train_samples, self._train_sample)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.eval_samples, batch_size):
            yield start, self.val.load(range(start, min(start + batch_size, self.eval_samples)))

    def truth(self):
        return self.val.ground_truth()

    def model(self) -> nn.Module:
        from mlgauge.models.retinanet import RetinaNet

        model = RetinaNet(num_classes=self.classes, image_size=self.size)
        body = model.backbone.body
        if self.backbone is not None:
            from mlgauge.tasks.weights import load_into, load_state_dict

            state = load_state_dict(self.backbone)
            # An ImageNet classifier's file: the body is all of it but the classification layer.
            load_into(body, {k: v for k, v in state.items() if not k.startswith("fc.")}, self.backbone)
        for frozen in (body.conv1, body.layer1):  # trainable_backbone_layers = 3: layer2..layer4 learn
            frozen.requires_grad_(False)
        return model


def _class_count(*truths) -> int:
    """264 for MLPerf's subset; more if a file uses higher category ids."""
    from mlgauge.models.retinanet import OPENIMAGES_CLASSES

    top = max((max(t.categories, default=-1) for t in truths), default=-1)
    return max(OPENIMAGES_CLASSES, top + 1)


class ObjectDetection:
    """The ``ssd`` training benchmark (see the module docstring)."""

    name = NAME

    def __init__(
        self,
        dataset: Path | None = None,
        *,
        variant: str = "default",
        ruleset: str = DEFAULT_RULESET,
        global_batch_size: int | None = None,
        max_epochs: int | None = None,
        count: int | None = None,
        eval_count: int | None = None,
        image_size: int = 800,
        backbone_weights: Path | None = None,
        workers: int = 0,
        eval_batch_size: int = 64,
        fused_focal_loss: bool = False,
    ) -> None:
        rules = training_rules(ruleset)
        if dataset is None:
            check_variant(NAME, variant, SYNTHETIC)
            if backbone_weights is not None:
                raise UsageError(
                    "backbone weights are for the ResNeXt50 backbone of the OpenImages path",
                    hint="Give --dataset with the OpenImages folder, or leave the weights out",
                )
            self.rule: TrainingRule = rules.synthetic_variant(NAME, variant)
            self.source: Any = _SyntheticSource(SYNTHETIC[variant])
            recipe = replace(SYNTHETIC[variant].recipe, epochs=self.rule.max_epochs)
        else:
            self.rule = rules.benchmark(NAME)
            self.source = _OpenImagesSource(
                Path(dataset), image_size=image_size, count=count, eval_count=eval_count, backbone=backbone_weights
            )
            recipe = OPENIMAGES_RECIPE
        if global_batch_size is not None:
            check_global_batch_size(global_batch_size, example=256)
            # Linear scaling of the reference's 1e-4 per 256 images.
            lr = recipe.base_lr * global_batch_size / recipe.global_batch_size
            recipe = replace(recipe, global_batch_size=global_batch_size, base_lr=lr)
        if max_epochs is not None:
            check_max_epochs(max_epochs)
            recipe = replace(recipe, epochs=max_epochs, warmup_epochs=min(recipe.warmup_epochs, max_epochs))
        self.recipe = recipe
        self.global_batch_size = recipe.global_batch_size
        self.max_epochs = recipe.epochs
        self.dataset_name = self.source.name
        self.train_samples = self.source.train_samples
        self.eval_samples = self.source.eval_samples
        self.workers = workers
        self.eval_batch_size = eval_batch_size
        self.fused_focal_loss = fused_focal_loss
        self._anchors: np.ndarray | None = None

    def build(self, seed: int, parallel: Parallel) -> Trainable:
        torch.manual_seed(seed)
        model = self.source.model().to(parallel.device)
        self._anchors = np.concatenate(model.anchors())
        r = self.recipe
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=r.base_lr, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, r.lr_factor(self.train_samples))
        dataset = self.source.train_dataset()
        sampler = DistributedSampler(
            dataset, num_replicas=parallel.world_size, rank=parallel.rank, shuffle=True, seed=seed
        )
        local_batch = parallel.local_batch_size(self.global_batch_size)

        def batches(epoch: int) -> DataLoader:
            sampler.set_epoch(epoch)
            dataset.seed, dataset.epoch = seed, epoch  # read by workers started after this
            return DataLoader(
                dataset, batch_size=local_batch, sampler=sampler, num_workers=self.workers, collate_fn=_collate
            )

        return Trainable(model=model, optimizer=optimizer, batches=batches, scheduler=scheduler)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        from mlgauge.models.retinanet import retinanet_loss
        from mlgauge.tasks.object_detection import anchor_targets

        images, boxes, labels = batch
        with torch.profiler.record_function("anchor_targets"):  # NumPy work: a profiler sees no ops in it
            cls, deltas = anchor_targets(self._anchors, boxes, labels)
        cls_logits, bbox_regression = model(images)
        targets = (torch.from_numpy(t).to(cls_logits.device) for t in (cls, deltas))
        focal, smooth_l1 = retinanet_loss(cls_logits, bbox_regression, *targets, fused=self.fused_focal_loss)
        return focal + smooth_l1

    def evaluate(self, model: nn.Module) -> float:
        """COCO mAP@[.5:.95] as a fraction (the checker compares eval_accuracy with 0.340)."""
        from mlgauge.tasks.object_detection import detector_map

        detector = getattr(model, "module", model)  # under DistributedDataParallel
        return detector_map(detector, self.source.eval_batches(self.eval_batch_size), self.source.truth())

    def hyperparameters(self, parallel: Parallel) -> dict[str, object]:
        """The optimizer keys closed_ssd.yaml requires."""
        r = self.recipe
        return {
            "opt_name": "adam",
            "opt_base_learning_rate": r.base_lr,
            "opt_weight_decay": 0.0,
            "opt_learning_rate_warmup_epochs": r.warmup_epochs,
            "opt_learning_rate_warmup_factor": r.warmup_factor,
        }

