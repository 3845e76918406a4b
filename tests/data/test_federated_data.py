"""Client partitions: every digit used once, exactly two labels per client; Synthetic(α, β) shaped and seeded."""

from __future__ import annotations

import numpy as np
import pytest

from mlgauge.data.federated import digits_clients, synthetic_clients
from mlgauge.errors import UsageError


@pytest.mark.parametrize("n", [5, 20, 37])
def test_digits_give_each_client_exactly_two_labels_and_use_every_image_once(n):
    data = digits_clients(n, seed=1)
    assert data.clients == n and data.features.shape == (1797, 64) and data.image_shape == (1, 8, 8)
    assert data.features.min() >= 0.0 and data.features.max() <= 1.0
    assert data.starts[0] == 0 and data.starts[-1] == 1797  # from 5 clients on, every digit is someone's
    pairs = set()
    for k in range(n):
        _, labels = data.client(k)
        assert len(set(labels.tolist())) == 2
        pairs.add(tuple(sorted(set(labels.tolist()))))
    assert len(pairs) == min(n, 25)
    rows = {tuple(r) for r in data.features.round(4).tolist()}
    assert len(rows) > 1700  # the images themselves, not repeats (a few digits are pixel-identical)
    assert set(digits_clients(2).labels.tolist()) == {0, 1, 2, 3}


def test_digits_are_reproducible_by_seed():
    a, b, c = digits_clients(10, seed=0), digits_clients(10, seed=0), digits_clients(10, seed=1)
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)


def test_synthetic_clients_have_their_own_models_and_power_law_sizes():
    data = synthetic_clients(30, alpha=1.0, beta=1.0, seed=2)
    assert data.features.shape[1] == 60 and data.classes == 10 and data.image_shape is None
    sizes = data.sizes()
    assert sizes.min() >= 50 and sizes.max() > 4 * np.median(sizes)  # a heavy tail
    assert data.labels.min() >= 0 and data.labels.max() <= 9
    np.testing.assert_array_equal(data.labels, synthetic_clients(30, seed=2).labels)
    # α = β = 0: clients share one input distribution's centre; large β spreads the clients' means apart
    spread = lambda d: np.std([d.client(k)[0].mean() for k in range(d.clients)])  # noqa: E731
    assert spread(synthetic_clients(30, alpha=0, beta=0, seed=2)) < spread(synthetic_clients(30, alpha=0, beta=4, seed=2))
    assert data.name == "synthetic(1,1)"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: digits_clients(0), "0 clients for the digits"),
        (lambda: digits_clients(5000), "supports 1 to 898"),
        (lambda: synthetic_clients(5, alpha=-1), "α=-1"),
    ],
)
def test_bad_partitions_are_usage_errors(make, message):
    with pytest.raises(UsageError, match=message):
        make()
