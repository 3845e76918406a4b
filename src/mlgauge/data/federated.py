"""Client datasets for federated learning: non-IID partitions the FL literature measures on.

- ``digits_clients``: scikit-learn's bundled handwritten digits (1,797 8x8 images, real data that
  ships with the library), each client holding exactly two labels, the pathological non-IID split
  of McMahan et al. (2017) used by Luo et al. for MNIST.
- ``synthetic_clients``: Synthetic(α, β) of Li et al. (FedProx, MLSys 2020): client k has its own
  softmax model W_k ~ N(u_k, 1), b_k ~ N(u_k, 1), u_k ~ N(0, α), and its own inputs
  x ~ N(v_k, Σ), v_k ~ N(B_k, 1), B_k ~ N(0, β), Σ = diag(j^-1.2); labels y = argmax(W_k x + b_k);
  60 features, 10 classes; client sizes follow a power law (lognormal, as in their generator).
  α sets how much the clients' models differ, β how much their inputs do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgauge.errors import UsageError, choice_error


@dataclass(frozen=True)
class ClientData:
    """Every client's examples laid end to end: client k owns rows starts[k] .. starts[k + 1] - 1."""

    features: np.ndarray  # (n, d) float32
    labels: np.ndarray  # (n,) int64
    starts: np.ndarray  # (N + 1,) int64
    classes: int
    name: str  # "digits" or "synthetic(α,β)"
    image_shape: tuple[int, ...] | None = None  # (1, 8, 8) when the features are images

    @property
    def clients(self) -> int:
        return int(self.starts.shape[0] - 1)

    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def client(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.starts[k]), int(self.starts[k + 1])
        return self.features[a:b], self.labels[a:b]


def _check_clients(clients: int, most: int, what: str) -> None:
    if not 1 <= clients <= most:
        raise UsageError(f"{clients} clients for {what}: it supports 1 to {most}", hint=f"Choose N between 1 and {most}")


def digits_clients(clients: int, *, seed: int = 0) -> ClientData:
    """The digits split over ``clients`` clients with two distinct labels each (non-IID).

    Client k holds the even digit 2k mod 10 and the odd digit (2k + 1 + 2·(⌊k / 5⌋ mod 5)) mod 10: every
    digit is held from N = 5 on, each by about N / 5 clients, in 25 different pairs. Each digit's images
    are shuffled and dealt evenly among the clients that hold it.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    labels = digits.target.astype(np.int64)
    _check_clients(clients, len(labels) // 2, "the digits")
    pairs = [((2 * k) % 10, (2 * k + 1 + 2 * ((k // 5) % 5)) % 10) for k in range(clients)]
    holders: dict[int, list[int]] = {}
    for k, pair in enumerate(pairs):
        for label in pair:
            holders.setdefault(label, []).append(k)
    rng = np.random.default_rng(seed)
    owned: list[list[int]] = [[] for _ in range(clients)]
    for label, ks in holders.items():
        rows = rng.permutation(np.flatnonzero(labels == label))
        for k, part in zip(ks, np.array_split(rows, len(ks)), strict=True):
            owned[k].extend(part.tolist())
    if any(len(rows) < 2 for rows in owned):
        raise UsageError(f"{clients} clients leave some with fewer than 2 digits", hint="Choose fewer clients")
    order = np.concatenate([np.asarray(rows, dtype=np.int64) for rows in owned])
    starts = np.concatenate([[0], np.cumsum([len(rows) for rows in owned])]).astype(np.int64)
    return ClientData(features[order], labels[order], starts, 10, "digits", (1, 8, 8))


def synthetic_clients(clients: int, *, alpha: float = 1.0, beta: float = 1.0, seed: int = 0,
                      features: int = 60, classes: int = 10) -> ClientData:  # fmt: skip
    """Synthetic(α, β) over ``clients`` clients."""
    _check_clients(clients, 100_000, "Synthetic(α, β)")
    if alpha < 0 or beta < 0:
        raise UsageError(f"Synthetic(α={alpha}, β={beta}): both must be >= 0", hint="α and β are variances, >= 0")
    rng = np.random.default_rng(seed)
    sizes = (rng.lognormal(4, 2, clients).astype(np.int64) + 50).clip(max=5_000)  # FedProx's power law, capped
    cov = np.arange(1, features + 1, dtype=np.float64) ** -1.2  # Σ_jj
    xs, ys = [], []
    for k in range(clients):
        u, b_mean = rng.normal(0, np.sqrt(alpha)), rng.normal(0, np.sqrt(beta))
        w = rng.normal(u, 1.0, (features, classes))
        b = rng.normal(u, 1.0, classes)
        v = rng.normal(b_mean, 1.0, features)
        x = rng.normal(v, np.sqrt(cov), (int(sizes[k]), features))
        xs.append(x.astype(np.float32))
        ys.append(np.argmax(x @ w + b, axis=1).astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return ClientData(np.concatenate(xs), np.concatenate(ys), starts, classes, f"synthetic({alpha:g},{beta:g})")


FEDERATIONS = ("digits", "synthetic")


def load_federation(name: str, clients: int, *, seed: int = 0, alpha: float = 1.0, beta: float = 1.0) -> ClientData:
    """A federation by name: ``digits`` or ``synthetic`` (Synthetic(``alpha``, ``beta``))."""
    if name == "digits":
        return digits_clients(clients, seed=seed)
    if name == "synthetic":
        return synthetic_clients(clients, alpha=alpha, beta=beta, seed=seed)
    raise choice_error("federated dataset", name, FEDERATIONS)
