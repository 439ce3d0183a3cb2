"""Seed agreement (group scope) against an independent float64 computation: the stored `seed_jsd` and `seed_cka`
rows of two tiny seeds (`seed_pair`) equal a plain loop over seed pairs and positions — JSD from its definition,
½ KL(P ‖ M) + ½ KL(Q ‖ M) term by term, and debiased CKA from the n × n Gram form of the unbiased HSIC (Song et al.
2012), not the feature-space form the probe uses — on the arrays the store holds."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from dynamics.results import store

ABSOLUTE = 1e-9


def jsd_loop(log_probs: list[np.ndarray]) -> float:
    """Mean over seed pairs of the mean over positions of JSD in nats, each row renormalised in float64."""
    pairs = []
    for a, b in combinations(range(len(log_probs)), 2):
        total = 0.0
        k = log_probs[a].shape[0]
        for i in range(k):
            p = np.exp(log_probs[a][i].astype(np.float64))
            q = np.exp(log_probs[b][i].astype(np.float64))
            p, q = p / p.sum(), q / q.sum()
            js = 0.0
            for pv, qv in zip(p.tolist(), q.tolist(), strict=True):
                m = 0.5 * (pv + qv)
                if pv > 0:
                    js += 0.5 * pv * math.log(pv / m)
                if qv > 0:
                    js += 0.5 * qv * math.log(qv / m)
            total += js
        pairs.append(total / k)
    return sum(pairs) / len(pairs)


def hsic1(kx: np.ndarray, ky: np.ndarray) -> float:
    """The unbiased HSIC estimator from n × n kernels."""
    n = kx.shape[0]
    kx, ky = kx.copy(), ky.copy()
    np.fill_diagonal(kx, 0.0)
    np.fill_diagonal(ky, 0.0)
    one = np.ones(n)
    return float((np.trace(kx @ ky) + (one @ kx @ one) * (one @ ky @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ kx @ ky @ one)) / (n * (n - 3)))


def cka_loop(samples: list[np.ndarray]) -> float:
    pairs = []
    for a, b in combinations(range(len(samples)), 2):
        x, y = samples[a].astype(np.float64), samples[b].astype(np.float64)
        kx, ky = x @ x.T, y @ y.T
        pairs.append(hsic1(kx, ky) / math.sqrt(hsic1(kx, kx) * hsic1(ky, ky)))
    return sum(pairs) / len(pairs)


def test_stored_agreement_equals_the_float64_loop(seed_pair: tuple[dict[str, Path], Path]) -> None:
    runs, out = seed_pair
    names = sorted(runs)
    with store.open(out, readonly=True) as s:
        rows = s.group_metrics()
        assert not rows.empty and set(rows["n_runs"]) == {len(names)}
        checked = 0
        for step in sorted(set(rows["step"])):
            outs = [s.load_array(s.arrays("output_sample", run=r, step=step)["file"].iloc[0]) for r in names]
            stored = rows[(rows["metric"] == "seed_jsd") & (rows["step"] == step)]["value"]
            assert len(stored) == 1
            assert abs(stored.iloc[0] - jsd_loop([o["log_probs"] for o in outs])) <= ABSOLUTE
            samples = [s.load_array(s.arrays("cka_sample", run=r, step=step)["file"].iloc[0]) for r in names]
            for layer, value in zip(*[rows[(rows["metric"] == "seed_cka") & (rows["step"] == step)][c]
                                      for c in ("layer", "value")], strict=True):
                assert abs(value - cka_loop([x[f"h{layer}"] for x in samples])) <= 1e-6, (step, layer)
                checked += 1
        assert checked >= 6


def test_the_loop_on_an_analytic_case() -> None:
    """Two point masses on different tokens: JSD = ln 2; identical rows: 0; a representation and its rotation: CKA 1."""
    lp = np.log(np.array([[1.0, 1e-300], [0.5, 0.5]]))
    other = np.log(np.array([[1e-300, 1.0], [0.5, 0.5]]))
    assert jsd_loop([lp, other]) == pytest.approx(math.log(2) / 2, abs=1e-12)
    x = np.random.default_rng(0).normal(size=(30, 5))
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))
    assert cka_loop([x, x @ q * 3.0]) == pytest.approx(1.0, abs=1e-12)
