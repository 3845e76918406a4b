"""The models FedAvg trains here: multinomial logistic regression (convex) and a small CNN."""

from __future__ import annotations

import torch
from torch import nn

from mlgauge.errors import UsageError, choice_error

MODELS = ("logistic", "cnn")


class LogisticRegression(nn.Module):
    """Softmax regression: ``(B, d) -> (B, classes)`` logits. With an L2 term the loss is strongly convex."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)
        nn.init.zeros_(self.linear.weight)  # the convex problem has one optimum; start every run at the same point
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class SmallCNN(nn.Module):
    """Two 3x3 conv + pool stages and a linear head for small single-channel images (8x8 digits: 4.3K weights)."""

    def __init__(self, image_shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 8, H/2, W/2)
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, H/4, W/4)
        )  # fmt: skip
        self.head = nn.Linear(16 * (height // 4) * (width // 4), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.features(x).flatten(1))


def build_model(name: str, features: int, classes: int, image_shape: tuple[int, ...] | None = None,
                seed: int = 0) -> nn.Module:  # fmt: skip
    if name not in MODELS:
        raise choice_error("federated model", name, MODELS)
    torch.manual_seed(seed)
    if name == "logistic":
        return LogisticRegression(features, classes)
    if image_shape is None or len(image_shape) != 3:
        raise UsageError("the cnn model needs images, and these features are flat vectors",
                         hint="Use the logistic model on this data, or the digits for the cnn")  # fmt: skip
    return SmallCNN(tuple(image_shape), classes)
