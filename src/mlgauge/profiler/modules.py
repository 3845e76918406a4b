"""Name every nn.Module call in the trace, so time can be told by module and layer.

Global forward hooks open a ``record_function`` span ``nn.Module: <path>`` around each module's
forward, where the path is the outermost module's class then the attribute path as ``named_modules``
names it (``RetinaNet.backbone.layer1.0.conv1``); a module called outside its parent (a root, or
one shared between models) is named by its class. Backward work is tied to the module later, through the autograd sequence
number its forward op recorded. A few microseconds per module call: full captures only.
"""

from __future__ import annotations

import weakref

import torch
from torch.autograd.profiler import record_function
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

PREFIX = "nn.Module: "


class ModuleSpans:
    def __init__(self) -> None:
        self._open: list[tuple[torch.nn.Module, str, record_function]] = []
        self._children: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {id(descendant): path}
        self._handles = []

    def install(self) -> ModuleSpans:
        self._handles = [register_module_forward_pre_hook(self._enter), register_module_forward_hook(self._exit)]
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _path(self, module: torch.nn.Module) -> str:
        # the innermost open module that owns it: a model may call a grandchild directly
        for parent, parent_path, _ in reversed(self._open):
            names = self._children.get(parent)
            if names is None:
                names = self._children[parent] = {id(m): n for n, m in parent.named_modules() if n}
            if id(module) in names:
                return f"{parent_path}.{names[id(module)]}"
        return type(module).__name__

    def _enter(self, module: torch.nn.Module, _inputs: object) -> None:
        path = self._path(module)
        span = record_function(PREFIX + path)
        span.__enter__()
        self._open.append((module, path, span))

    def _exit(self, module: torch.nn.Module, _inputs: object, _output: object) -> None:
        if not any(opened is module for opened, _, _ in self._open):
            return  # opened before the hooks were installed
        # a forward that raised never reached its exit: close what it left open above this module
        while self._open:
            opened, _, span = self._open.pop()
            span.__exit__(None, None, None)
            if opened is module:
                break
