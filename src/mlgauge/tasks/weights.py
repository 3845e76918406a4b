"""Reading user-given and prepared weights safely, for every task.

Nothing here executes code from a file: state dicts load with
``torch.load(weights_only=True)`` and must hold tensors only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlgauge.errors import ModelError


def file_digest(path: Path) -> str:
    """A short content hash, for caches keyed by weights."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def existing_weights(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist", hint="Check the --weights path")
    return path


def load_state_dict(path: Path) -> dict:
    """Read a PyTorch state dict without executing code from the file."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"weights file {path} does not exist", hint="Check the --weights path") from None
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise ModelError(
            f"weights file {path} is not a readable PyTorch state dict ({type(exc).__name__})",
            hint="Give a state dict saved with torch.save(model.state_dict(), ...) or an .onnx file",
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def load_into(module, state: dict, path: Path):
    """Load ``state`` strictly into ``module``; a mismatch names the first offending tensor."""
    missing, unexpected = [], []
    try:
        result = module.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as exc:  # shape mismatch
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelError(f"weights file {path} does not fit the model: {first}") from None
    if missing or unexpected:
        raise ModelError(
            f"weights file {path} does not fit the model: {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors (e.g. {(missing or unexpected)[0]})",
            hint="Use weights for this task's architecture",
        )
    return module.eval()
