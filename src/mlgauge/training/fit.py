"""A plain supervised training loop, used to prepare the synthetic stand-ins' weights.

Deterministic for a given seed and thread count; reports progress through a
callback so the caller decides how (or whether) to show it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


@contextmanager
def single_threaded() -> Iterator[None]:
    """Train the stand-ins on one intra-op thread, restoring the caller's count after.

    Two reasons: the order of float sums depends on the thread count, so one
    thread gives the same weights on any machine; and these models are too small
    to gain from more, while two threads on a busy 2-core machine ran up to 10x
    slower (measured: RetinaNet stand-in 760 s with 2 threads, 50-90 s with 1).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_classifier(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.05,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
) -> nn.Module:
    """SGD with momentum and a one-cycle schedule; returns the model in eval mode."""
    torch.manual_seed(seed)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    steps_per_epoch = (len(labels) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for start in range(0, len(labels), batch_size):
            batch = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_all[batch]), y_all[batch])
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step / total)
    return model.eval()


@torch.no_grad()
def top1(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(torch.from_numpy(images[start : start + batch_size]))
        correct += int((logits.argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return 100.0 * correct / max(len(labels), 1)
