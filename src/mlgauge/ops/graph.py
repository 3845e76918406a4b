"""Whether PyTorch is recording a graph (tracing, exporting, compiling) rather than computing data.

Layers with a faster eager kernel keep a plainer form for recorded graphs: the exporters turn some
ops (``embedding_bag``, custom kernels) into loops or refuse them, and a recorded graph holds no
concrete ids to validate.
"""

from __future__ import annotations

import torch


def recording_graph() -> bool:
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting())  # fmt: skip
