"""Agreement between seeds (group scope): how alike the runs of one seed group are at the same training step.

* `seed_jsd`: the Jensen–Shannon divergence between two seeds' output distributions — the MLM head's softmax at the
  probe set's masked positions (a causal LM's next-token head at its targets) — on a fixed, seeded subsample of
  those positions, averaged over positions and then over unordered pairs of seeds. In nats, in [0, ln 2].
* `seed_cka`: debiased linear CKA (`dynamics.metrics.cka`) between two seeds' representations of the same probe
  tokens at one layer (each snapshot's stored `cka_sample`), averaged over unordered pairs of seeds.

Inputs are the stored per-snapshot arrays of the group's runs at one shared step (`dynamics.measure.agreement`).
The log-probabilities are stored in float16 (`dynamics.measure.agreement`, "Storage"); each row is renormalised
here in float64 before the divergence, so the rounding of the stored values cannot push the divergence below 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch

from .cka import cka_matrix
from .registry import ALL_LAYERS, LAST_LAYER, register


def _probabilities(log_probs: np.ndarray) -> np.ndarray:
    """Rows of exp(log p), renormalised to sum to 1 (float64)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def jsd_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row JSD(P, Q) = ½ KL(P ‖ M) + ½ KL(Q ‖ M), M = (P + Q)/2, in nats (0 · log 0 = 0), for probability rows."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=1)
        kq = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=1)
    return np.clip(0.5 * (kp + kq), 0.0, np.log(2.0))


@register("seed_jsd", family="agreement", scope="group", page="seeds", layers=LAST_LAYER, label="JSD between seeds",
          unit="nats in [0, ln 2]",
          definition="Jensen–Shannon divergence between two seeds' output distributions at the probe set's subsampled "
                     "masked (next-token: target) positions, mean over positions and seed pairs.")
def seed_jsd(seed_log_probs: Sequence[np.ndarray]) -> float:
    """(1 / #pairs) Σ_{a<b} (1/k) Σ_i JSD(P_a(·|i), P_b(·|i)) over the k subsampled positions i, with
    JSD(P, Q) = ½ KL(P ‖ (P+Q)/2) + ½ KL(Q ‖ (P+Q)/2) in nats; `seed_log_probs`: one (k, V) array of log-probabilities
    per seed, rows the same positions. ValueError with fewer than two seeds or differing shapes."""
    if len(seed_log_probs) < 2:
        raise ValueError(f"agreement needs at least two seeds, got {len(seed_log_probs)}")
    shapes = {np.shape(x) for x in seed_log_probs}
    if len(shapes) != 1:
        raise ValueError(f"the seeds' output samples differ in shape: {sorted(shapes)}")
    probs = [_probabilities(x) for x in seed_log_probs]
    return float(np.mean([jsd_rows(probs[a], probs[b]).mean() for a, b in combinations(range(len(probs)), 2)]))


@register("seed_cka", family="agreement", scope="group", page="seeds", layers=ALL_LAYERS, label="CKA between seeds",
          unit="CKA in [0, 1]",
          definition="Debiased linear CKA between two seeds' representations of the same probe tokens at a layer, mean "
                     "over seed pairs.")
def seed_cka(seed_samples: Sequence[np.ndarray]) -> float:
    """(1 / #pairs) Σ_{a<b} CKA_debiased(X_a, X_b), X_s the (n, H) hidden states of seed s at one layer on the same n
    probe tokens (`dynamics.metrics.cka.cka_matrix`). ValueError with fewer than two seeds."""
    if len(seed_samples) < 2:
        raise ValueError(f"agreement needs at least two seeds, got {len(seed_samples)}")
    mat = cka_matrix([torch.as_tensor(np.asarray(x)) for x in seed_samples], debiased=True)
    pairs = [mat[a, b] for a, b in combinations(range(len(seed_samples)), 2)]
    if not np.all(np.isfinite(pairs)):
        raise ValueError("a seed's representation is constant at this layer")
    return float(np.mean(pairs))
