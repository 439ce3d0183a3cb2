"""Seed agreement's metric functions (`dynamics.metrics.agreement`) on analytic cases, and the fixed subsample of
positions (`dynamics.measure.agreement.sample_positions`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynamics.measure.agreement import sample_positions
from dynamics.measure.probe_set import ProbeSet
from dynamics.metrics import agreement as A


def _log(p: object) -> np.ndarray:
    with np.errstate(divide="ignore"):  # log 0 = −inf: a token the head gives no mass
        return np.log(np.asarray(p, dtype=np.float64))


def test_jsd_of_disjoint_identical_and_mixed_distributions() -> None:
    a = _log([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    b = _log([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    # row 1: disjoint point masses, ln 2; row 2: equal, 0 → mean ln 2 / 2
    assert A.seed_jsd([a, b]) == pytest.approx(math.log(2) / 2, abs=1e-15)
    assert A.seed_jsd([a, a]) == 0.0
    # P = (1, 0), Q = (½, ½): M = (¾, ¼); JSD = ½ ln(4/3) + ½ (½ ln(2/3) + ½ ln 2)
    p, q = _log([[1.0, 0.0]]), _log([[0.5, 0.5]])
    want = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert A.seed_jsd([p, q]) == pytest.approx(want, abs=1e-15)


def test_jsd_averages_over_seed_pairs_and_renormalises_rows() -> None:
    p, q, r = _log([[1.0, 0.0]]), _log([[0.5, 0.5]]), _log([[0.0, 1.0]])
    pairs = [A.seed_jsd([p, q]), A.seed_jsd([p, r]), A.seed_jsd([q, r])]
    assert A.seed_jsd([p, q, r]) == pytest.approx(np.mean(pairs), abs=1e-15)
    assert A.seed_jsd([q + 0.01, q]) == pytest.approx(0.0, abs=1e-15)  # a row off by a constant is the same row
    with pytest.raises(ValueError, match="two seeds"):
        A.seed_jsd([p])
    with pytest.raises(ValueError, match="shape"):
        A.seed_jsd([p, _log([[0.5, 0.25, 0.25]])])


def test_cka_between_seeds_is_one_for_a_rotation_and_averages_pairs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert A.seed_cka([x, 2.0 * x @ q + 1.0]) == pytest.approx(1.0, abs=1e-12)
    y = rng.normal(size=(50, 6))
    three = A.seed_cka([x, x @ q, y])
    assert three == pytest.approx((1.0 + 2 * A.seed_cka([x, y])) / 3, abs=1e-12)
    with pytest.raises(ValueError, match="constant"):
        A.seed_cka([x, np.ones((50, 6))])


def _probe(masked: np.ndarray) -> ProbeSet:
    content = np.ones(masked.shape, dtype=bool)
    n = int(content.sum())
    return ProbeSet(ids=np.ones(masked.shape, np.int32), content=content, masked=masked,
                    freq_bin=np.zeros(n, np.int8), word_type=np.full(n, -1, np.int32),
                    word_types=np.zeros(0, np.int64), cka_index=np.arange(4), projection_index=np.arange(4),
                    bin_names=("frequent", "medium", "rare"), tokenizer_hash="x", mask_id=4,
                    source="test", freq_source="probe_set")


def test_sample_positions_are_seeded_masked_and_never_a_block_start() -> None:
    masked = np.random.default_rng(0).random((6, 20)) < 0.3
    masked[:, 0] = True
    probe = _probe(masked)
    got = sample_positions(probe, 10, seed=1)
    assert got is not None and len(got) == 10 and np.all(np.diff(got) > 0)
    flat = masked.ravel()
    assert flat[got].all() and not np.any(got % 20 == 0)
    assert np.array_equal(got, sample_positions(probe, 10, seed=1))
    assert not np.array_equal(got, sample_positions(probe, 10, seed=2))
    assert sample_positions(probe, 0, seed=1) is None
    everything = sample_positions(probe, 10_000, seed=1)
    assert everything is not None and len(everything) == int(masked[:, 1:].sum())
