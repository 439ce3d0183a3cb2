"""The copying family: duplicate-token and induction heads, and in-context copying, on repeated random sequences.

The probe set carries a fixed, seeded set of synthetic blocks (`dynamics.measure.probe_set.CopyBlocks`): each is
the tokenizer's usual framing around r_1…r_T r_1…r_T, r drawn uniformly from the non-special vocabulary. With
positions counted from the first r (the framing's opening tokens shifted away), the second copy's token r_t sits
at T + t (t = 0…T−1) and its first occurrence at t. `a^{l,h}_{ij}` is as in `dynamics.metrics.attention`.

* `dup_token_max` (layers 1…L): max over heads of the mean over second-copy queries of a_{T+t, t}, the attention
  to the same token's first occurrence.
* `induction_max` (layers 1…L): max over heads of the mean over second-copy queries of a_{T+t, t+1}, the
  attention to the token after the first occurrence (Olsson et al. 2022's induction score).
* `repeat_copy_accuracy` (last layer, variants `first`/`second`): the share of tokens the head predicts
  correctly. For a causal LM, next-token accuracy at the positions t = 1…T−1 of each copy (r_{t+1} predicted
  from the prefix up to r_t): in the first copy the sequence is random, so `first` is the chance baseline; in
  the second copy it can be copied. For an MLM, one masked pass (`CopyBlocks.masked`): a seeded 15 % of the
  second-copy positions are masked there only (`second`: the first copy shows the answer), and another,
  disjoint 15 % of the t are masked in both copies (`first`, measured at their first-copy positions: neither
  copy shows the answer, the chance baseline).

The probe reduces each layer's attention to per-head sums over the second-copy queries at once (`CopySums`); the
registered functions take the sums and the head's correctness flags (`CopyPredictions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from .attention import offset_sums
from .registry import CONTEXT_LAYERS, LAST_LAYER, register

HEAD_KEYS = ("dup_token", "induction")


@dataclass
class CopySums:
    """One layer's per-head sums (float64 (H,)) over second-copy queries of the attention to the first occurrence
    (`dup`) and to the token after it (`induction`), and the number of queries each sum is over."""

    dup: np.ndarray
    induction: np.ndarray
    n_dup: int
    n_induction: int

    def merge(self, other: CopySums) -> CopySums:
        return CopySums(self.dup + other.dup, self.induction + other.induction, self.n_dup + other.n_dup,
                        self.n_induction + other.n_induction)

    def means(self) -> dict[str, np.ndarray]:
        """Per-head means (H,) by `HEAD_KEYS`."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"dup_token": self.dup / self.n_dup, "induction": self.induction / self.n_induction}


def copy_sums(probs: Tensor, second: Tensor, length: int, keys: Tensor | None = None) -> CopySums:
    """One batch's per-head sums of a_{i, i−T} and a_{i, i−T+1} over the second-copy queries `second` (B, T) bool.

    `probs`: (B, H, n, n) attention probabilities of the copy blocks; `length`: T, the length of one copy;
    `keys`: (B, n) bool non-padding positions (None: all)."""
    keys = second.new_ones(second.shape) if keys is None else keys
    dup, n_dup = offset_sums(probs, second, keys, -length)
    ind, n_ind = offset_sums(probs, second, keys, -length + 1)
    return CopySums(dup, ind, n_dup, n_ind)


@dataclass
class CopyPredictions:
    """Whether the head predicted each scored token right: `first`, `second` bool arrays (scored positions of the
    first and second copy, the module docstring's rule)."""

    first: np.ndarray
    second: np.ndarray


@register("dup_token_max", family="copying", page="attention", layers=CONTEXT_LAYERS, unit="share in [0, 1]",
          label="Duplicate-token head score (best head)",
          definition="On repeated random sequences r r, the largest over heads of the mean over second-copy queries "
                     "of the attention to the same token's first occurrence.")
@register("induction_max", family="copying", page="attention", layers=CONTEXT_LAYERS, unit="share in [0, 1]",
          label="Induction head score (best head)",
          definition="On repeated random sequences r r, the largest over heads of the mean over second-copy queries "
                     "of the attention to the token after the first occurrence (Olsson et al. 2022).")
def copy_scores(copy_attention: CopySums) -> dict[str, float]:
    """max_h mean_t a^h_{T+t, t} and max_h mean_t a^h_{T+t, t+1} over the second-copy queries."""
    if copy_attention.n_dup == 0 or copy_attention.n_induction == 0:
        raise ValueError("no second-copy query")
    means = copy_attention.means()
    return {"dup_token_max": float(np.max(means["dup_token"])), "induction_max": float(np.max(means["induction"]))}


@register("repeat_copy_accuracy", family="copying", page="attention", layers=LAST_LAYER, variants=("first", "second"),
          unit="share in [0, 1]", label="In-context copying accuracy",
          definition="Share of tokens of repeated random sequences r r the head predicts correctly: in the second "
                     "copy (copyable) and in the first (the chance baseline); masked tokens for an MLM, next "
                     "tokens for a causal LM.")
def repeat_copy_accuracy(copy_predictions: CopyPredictions) -> dict[str, float | None]:
    """Mean of the correctness flags of each copy (None for a copy without a scored token)."""
    return {name: (float(np.mean(flags)) if flags.size else None)
            for name, flags in (("first", copy_predictions.first), ("second", copy_predictions.second))}
