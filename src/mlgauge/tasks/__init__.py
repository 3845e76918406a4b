"""The task catalogue. A task module is imported only when its task is used."""

from __future__ import annotations

import importlib

from mlgauge.errors import choice_error
from mlgauge.tasks.base import Task

# name -> "module:Class"
_TASKS = {
    "resnet50": "mlgauge.tasks.image_classification:ResNet50Task",
}
DEFAULT_TASK = "resnet50"


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise choice_error("task", name, task_names())
    module, cls = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
