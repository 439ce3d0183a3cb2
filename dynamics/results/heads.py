"""Per-head attention and copying values over a run's snapshots, and the heads that form.

The attention and copying families store, per snapshot, one array of per-head values per quantity (`attention_heads`:
attn_entropy, attn_sink_share, attn_prev_token, attn_next_token (bidirectional models), attn_distance;
`copying_heads`: dup_token, induction), each (layers × heads), layer l at row l − 1 (`dynamics.metrics.attention`,
`dynamics.metrics.copying`). `head_series` stacks them over a run's measured steps; `forming_heads` names the heads
whose score rises the most from the first to the last measured snapshot and, by the onset rule of
`dynamics.results.onsets`, the step at which each has covered half of that rise. A head counts as forming only
when its score at least doubles and rises by at least `MIN_RISE` (the scores are attention probabilities; chance
on the copy blocks is about 1 / the keys a query sees, 0.01–0.05), so that a flat curve's noise is not named.
Read by the report and the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dynamics.results import markdown
from dynamics.results.onsets import onset_step

KINDS = {"attention_heads": ("attn_entropy", "attn_sink_share", "attn_prev_token", "attn_next_token", "attn_distance"),
         "copying_heads": ("dup_token", "induction")}
LABELS = {"attn_entropy": "attention entropy (nats)", "attn_sink_share": "attention to sink tokens",
          "attn_prev_token": "previous-token score", "attn_next_token": "next-token score",
          "attn_distance": "mean attention distance (positions)", "dup_token": "duplicate-token score",
          "induction": "induction score"}
KIND_OF = {key: kind for kind, keys in KINDS.items() for key in keys}
MIN_RISE = 0.05  # a forming head's least rise of its score (module docstring)


@dataclass
class HeadSeries:
    """One quantity's per-head values over a run's measured snapshots: `values` (S, L, H) float64, layer l at
    index l − 1, NaN where a snapshot lacks it; `steps` (S,) ascending."""

    quantity: str
    steps: np.ndarray
    values: np.ndarray


def head_series(store: Any, run: str, quantity: str, probe_hash: str | None = None) -> HeadSeries | None:
    """The per-head values of `quantity` (a key of `LABELS`) over `run`'s snapshots; None when none is stored."""
    kind = KIND_OF[quantity]
    df = store.arrays(kind, run=run, probe_hash=probe_hash)
    df = df[(df["kind"] == kind) & (df["run"] == run)].sort_values("step")
    steps, arrays = [], []
    for step, file in zip(df["step"], df["file"], strict=True):
        arr = store.load_array(str(file))
        if quantity in arr:
            steps.append(int(step))
            arrays.append(np.asarray(arr[quantity], dtype=np.float64))
    if not arrays or len({a.shape for a in arrays}) != 1:
        return None
    return HeadSeries(quantity, np.array(steps, dtype=np.int64), np.stack(arrays))


@dataclass(frozen=True)
class FormingHead:
    """A head whose score rose: its layer (1…L) and head index, first and last measured value, and onset step
    (None for a flat curve)."""

    layer: int
    head: int
    first: float
    last: float
    onset: int | None

    @property
    def rise(self) -> float:
        return self.last - self.first


def forming_heads(series: HeadSeries, top: int = 3) -> list[FormingHead]:
    """The `top` heads whose value rises the most from the first to the last measured snapshot, among those that
    form (last ≥ 2 · first and last − first ≥ `MIN_RISE`), largest first (ties: lower layer, then lower head), each
    with its onset step."""
    if series.values.shape[0] < 2:
        return []
    first, last = series.values[0], series.values[-1]
    rise = np.nan_to_num(last - first, nan=-np.inf)
    rise[~((last >= 2 * first) & (rise >= MIN_RISE))] = -np.inf
    order = sorted(np.ndindex(rise.shape), key=lambda lh: (-rise[lh], lh))
    out = []
    for layer, head in order[:top]:
        if not rise[layer, head] > 0:
            break
        curve = [float(v) for v in series.values[:, layer, head]]
        out.append(FormingHead(layer + 1, head, float(first[layer, head]), float(last[layer, head]),
                               onset_step(series.steps.tolist(), curve)))
    return out


def report_lines(store: Any, runs: list[str], probe_hash: str) -> list[str]:
    """The report's section: per run, the heads whose induction or duplicate-token score rises the most, with the
    step at which each crosses half of its rise (empty when no run has the copying family)."""
    rows = []
    for run in runs:
        for quantity in ("induction", "dup_token"):
            series = head_series(store, run, quantity, probe_hash)
            if series is None:
                continue
            heads = forming_heads(series)
            cells = [f"L{h.layer}H{h.head}: {h.first:.3f} → {h.last:.3f}, onset "
                     f"{'–' if h.onset is None else h.onset}" for h in heads]
            rows.append([run, LABELS[quantity], "; ".join(cells) if cells else
                         f"none (no head's score doubles and rises by {MIN_RISE:g})"])
    if not rows:
        return []
    lines = ["Heads (layer L1…, head H0…) whose score on the copy blocks (repeated random sequences r r) rises the "
             "most from the first to the last measured snapshot, with the onset: the first measured step at which "
             "the head has covered half of that rise. Induction score: attention from a second-copy token to the "
             "token after its first occurrence (Olsson et al. 2022); duplicate-token score: to the first occurrence "
             "itself. Chance is about 1 / (the number of keys a query sees); a head is named only when its score at "
             f"least doubles and rises by {MIN_RISE:g} or more.", ""]
    lines += markdown.table(["run", "score", "heads that form (first → last, onset step)"], rows)
    return lines
