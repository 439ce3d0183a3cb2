"""The reference test of `my_metric.py`: copy it beside your metric and run `python -m pytest test_my_metric.py`.

It checks the function the probe calls on cases whose answer is known analytically, and against an independent
float64 formula written another way (here row by row in plain Python) on random data, handed over as the probe
hands layers over (a float32 `Rows`). tests/unit/test_user_metrics.py runs these tests and the probe with
`--metrics-module docs/examples/my_metric.py`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from my_metric import peak_coordinate_share

from dynamics.metrics import Rows


def reference(h: np.ndarray) -> float:
    """The same quantity by an independent route: each row in float64, max |h_ik| over sqrt(Σ_k h_ik²)."""
    shares = []
    for row in np.asarray(h, dtype=np.float64):
        length = math.sqrt(sum(float(v) * float(v) for v in row))
        if length > 0:
            shares.append(max(abs(float(v)) for v in row) / length)
    return sum(shares) / len(shares)


def test_analytic_cases() -> None:
    width = 16
    assert peak_coordinate_share(torch.eye(width)) == pytest.approx(1.0)  # each token on one axis
    assert peak_coordinate_share(torch.ones(5, width)) == pytest.approx(1 / math.sqrt(width))  # all equal
    mixed = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]])  # 4/5 and 1
    assert peak_coordinate_share(mixed) == pytest.approx((0.8 + 1.0) / 2)


def test_zero_rows_are_left_out_and_all_zero_is_undefined() -> None:
    assert peak_coordinate_share(torch.tensor([[0.0, 0.0], [1.0, 1.0]])) == pytest.approx(1 / math.sqrt(2))
    with pytest.raises(ValueError):
        peak_coordinate_share(torch.zeros(3, 4))


def test_against_reference_as_the_probe_calls_it() -> None:
    rng = np.random.default_rng(0)
    h = rng.standard_normal((200, 32)).astype(np.float32)
    h[:, 3] *= 8.0  # an outlier dimension, as trained models grow
    value = peak_coordinate_share(Rows(torch.from_numpy(h), torch.float32))
    assert value == pytest.approx(reference(h), rel=1e-12)
