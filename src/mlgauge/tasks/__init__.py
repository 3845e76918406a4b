"""The task catalogue. A task module is imported only when its task is used.

One class can serve several catalogue entries (BERT's 99% and 99.9% targets
share the model and data); the entry's keyword arguments say which benchmark
of the rule data it answers to.
"""

from __future__ import annotations

import importlib

from mlgauge.errors import UsageError, choice_error
from mlgauge.tasks.base import Task

# name -> ("module:Class", constructor keyword arguments)
_TASKS: dict[str, tuple[str, dict]] = {
    "resnet50": ("mlgauge.tasks.image_classification:ResNet50Task", {}),
    "dlrm-v2-99": ("mlgauge.tasks.recommendation:DlrmTask", {"benchmark": "dlrm-v2-99"}),
    "dlrm-v2-99.9": ("mlgauge.tasks.recommendation:DlrmTask", {"benchmark": "dlrm-v2-99.9"}),
    "edsr": ("mlgauge.tasks.super_resolution:EdsrTask", {}),
    "retinanet": ("mlgauge.tasks.object_detection:RetinaNetTask", {}),
    "bert-99": ("mlgauge.tasks.question_answering:BertTask", {"benchmark": "bert-99"}),
    "bert-99.9": ("mlgauge.tasks.question_answering:BertTask", {"benchmark": "bert-99.9"}),
    "mobilenet-v4": ("mlgauge.tasks.mobile_classification:MobileNetTask", {}),
    "mosaic": ("mlgauge.tasks.segmentation:MosaicTask", {}),
    "mobiledet": ("mlgauge.tasks.mobile_detection:MobileDetTask", {}),
    "mobilebert": ("mlgauge.tasks.mobile_question_answering:MobileBertTask", {}),
}
DEFAULT_TASK = "resnet50"


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, model_options: dict | None = None) -> Task:
    """The task; ``model_options`` change its model (DLRM's ``embedding``, ``robe_size``, ``compression``)
    and are refused by a task whose class does not list them in ``MODEL_OPTIONS``."""
    if name not in _TASKS:
        raise choice_error("task", name, task_names())
    target, kwargs = _TASKS[name]
    module, cls = target.split(":")
    task_class = getattr(importlib.import_module(module), cls)
    given = {k: v for k, v in (model_options or {}).items() if v is not None}
    for option in given:
        if option not in getattr(task_class, "MODEL_OPTIONS", ()):
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag} does not apply to {name}", hint=f"Leave {flag} out for {name}")
    return task_class(**kwargs, **({"model_options": given} if given else {}))
