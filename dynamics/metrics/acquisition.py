"""Word acquisition (Chang & Bergen, TACL 2022, "Word acquisition in neural language models"): when, in training,
each word type of the probe set is learned.

* Per snapshot: the surprisal −ln p(x_i) of the true token under the model's head at the probe set's masked
  positions (MLM heads; the next-token positions for causal heads), `masked_surprisal`; its mean per word type
  is the snapshot's point of that type's learning curve (`word_surprisal`).
* Per word type, over the series: a four-parameter sigmoid fitted by least squares to its mean surprisal against
  x = log10(step) (snapshots with step ≥ 1),

      f(x) = lo + (hi − lo) / (1 + exp(k (x − x0))),   k ≥ 0 (surprisal falls as training goes on);

  its age of acquisition (AoA) is the x at which f reaches the midpoint m = (ln V + f(x_last)) / 2 between chance
  surprisal (ln V, the uniform distribution over the head's V outputs) and the fitted curve's minimum over the
  measured range (f is non-increasing, so that minimum is f at the last step):
  AoA = x0 + ln((hi − lo) / (m − lo) − 1) / k. A type gets no AoA, with its reason (`STATUS`), when it has
  fewer than `MIN_POINTS` points, the fit fails, the fitted curve never lies above the midpoint, or the midpoint
  falls outside the measured range of x (no extrapolation).
* Per run: the Spearman correlation of AoA with log10 training frequency over the types with an AoA, and its
  percentile bootstrap interval over types (`BOOTSTRAP` resamples drawn with `numpy.random.default_rng(seed)
  .integers(0, n, (BOOTSTRAP, n))`). Chang & Bergen's headline: frequency dominates (words seen more often are
  learned earlier, a negative correlation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .anchors import Binned, MaskedPass, by_bin
from .registry import LAST_LAYER, register

MIN_POINTS = 5  # four parameters and at least one degree of freedom
BOOTSTRAP = 1000
STATUS = ("fitted", "too few points", "no fit", "starts below the midpoint", "midpoint outside the measured steps")


def token_surprisal(logits: Tensor, targets: Tensor) -> Tensor:
    """(n,) float64 surprisal of the true token in nats: −ln softmax(logits)[target] = logsumexp(z) − z_target.

    Args: logits (n, V) scores of the head (any float dtype; reduced in float64); targets (n,) ids in [0, V)."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (n, V) and targets (n,); got {tuple(logits.shape)}, {tuple(targets.shape)}")
    z = logits.to(torch.float64)
    return torch.logsumexp(z, dim=1) - z.gather(1, targets.long()[:, None]).squeeze(1)


@register("masked_surprisal", family="anchors", page="anchors", layers=LAST_LAYER, variants=("all", "frequent", "medium", "rare"),
          unit="nats ≥ 0", label="Masked-token surprisal",
          definition="Mean −ln p(x_i) of the true token under the head at masked positions (the next-token "
                     "prediction for causal heads); chance is ln V.")
def masked_surprisal(masked: MaskedPass, bin_names: Sequence[str]) -> Binned:
    """Mean over masked positions of the true token's surprisal (`token_surprisal`), overall and per bin."""
    return by_bin(masked.surprisal, masked.bins, bin_names)


def word_surprisal(surprisal: Tensor | np.ndarray, word_type: np.ndarray, n_types: int) -> tuple[np.ndarray, np.ndarray]:
    """Per word type t: (mean surprisal over its masked occurrences (NaN when it has none), their count).

    Args: surprisal (M,) per masked position; word_type (M,) type index in [0, n_types) or −1 (not a word type).
    Returns float64 (n_types,) means and int64 (n_types,) counts."""
    s = np.asarray(torch.as_tensor(surprisal).cpu().numpy(), dtype=np.float64)
    t = np.asarray(word_type, dtype=np.int64)
    if s.shape != t.shape:
        raise ValueError(f"surprisal {s.shape} and word_type {t.shape} must have one entry per masked position")
    keep = t >= 0
    counts = np.bincount(t[keep], minlength=n_types).astype(np.int64)
    sums = np.bincount(t[keep], weights=s[keep], minlength=n_types)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts


# ------------------------------------------------------------------------------------------ learning curves

@dataclass(frozen=True)
class SigmoidFit:
    """One word type's fitted curve f(x) = lo + (hi − lo) / (1 + exp(k (x − x0))), x = log10 step, and its AoA
    (log10 step; NaN unless `status` is 0, "fitted"). Parameters are NaN when there was no fit."""

    hi: float
    lo: float
    k: float
    x0: float
    aoa: float
    status: int

    @property
    def reason(self) -> str:
        return STATUS[self.status]


def sigmoid(x: np.ndarray, hi: float, lo: float, k: float, x0: float) -> np.ndarray:
    """f(x) = lo + (hi − lo) / (1 + exp(k (x − x0))), computed without overflow."""
    z = np.clip(k * (np.asarray(x, dtype=np.float64) - x0), -700.0, 700.0)
    return lo + (hi - lo) / (1.0 + np.exp(z))


def _sigmoid_jacobian(x: np.ndarray, hi: np.ndarray, lo: np.ndarray, k: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """(..., 4) ∂f/∂(hi, lo, k, x0) of `sigmoid` (broadcasting): with s = 1/(1 + exp(k(x − x0))), ∂s/∂z = −s(1 − s)."""
    s = 1.0 / (1.0 + np.exp(np.clip(k * (x - x0), -700.0, 700.0)))
    ds = -(hi - lo) * s * (1.0 - s)
    return np.stack([s, 1.0 - s, ds * (x - x0), -ds * k], axis=-1)


_NO_FIT = (np.nan, np.nan, np.nan, np.nan)


def fit_curve(x: np.ndarray, y: np.ndarray, chance: float) -> SigmoidFit:
    """Least-squares sigmoid of one type's surprisal `y` against `x` = log10 step, and its AoA (module docstring);
    `fit_curves` of one curve."""
    return fit_curves(x, np.asarray(y, dtype=np.float64)[None, :], chance)[0]


def fit_curves(x: np.ndarray, y: np.ndarray, chance: float) -> list[SigmoidFit]:
    """`fit_curve` of every row of y (T, S) against the shared x (S,), all rows at once.

    Per row, points with a non-finite x or y are left out. Bounds: 0 ≤ hi, lo ≤ 2·max(y, ln V) + 1, k ∈ [0, 100],
    x0 within two decades of the measured range. The sum of squares has several local minima on short noisy
    curves, so the starts come from a grid over (k, x0) — for fixed (k, x0) f is linear in (lo, hi), solved exactly
    within their bounds — one start per band of k (`_K_BANDS`: the best grid point of each), each refined by
    Levenberg–Marquardt within the bounds (`_refine`); the refined start with the smallest sum of squares is the
    fit."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.isfinite(y) & np.isfinite(x)[None, :]
    xs = np.where(np.isfinite(x), x, 0.0)
    ys = np.where(w, y, 0.0)
    n = w.sum(1)
    with np.errstate(invalid="ignore"):
        x_min = np.where(w, xs, np.inf).min(1)
        x_max = np.where(w, xs, -np.inf).max(1)
    fits = [SigmoidFit(*_NO_FIT, np.nan, 1)] * y.shape[0]
    rows = np.nonzero((n >= MIN_POINTS) & (x_max > x_min))[0]
    if rows.size == 0:
        return fits
    wf = w[rows].astype(np.float64)
    top = 2.0 * np.maximum(np.where(w[rows], ys[rows], -np.inf).max(1), chance) + 1.0
    zero = np.zeros(rows.size)
    lower = np.stack([zero, zero, zero, x_min[rows] - 2.0], axis=1)
    upper = np.stack([top, top, zero + 100.0, x_max[rows] + 2.0], axis=1)
    starts = _grid_start(xs, ys[rows], wf, x_min[rows], x_max[rows], top)  # (t, bands, 4)
    b = starts.shape[1]
    yb, wb, lb, ub = (np.repeat(a, b, axis=0) for a in (ys[rows], wf, lower, upper))
    refined = _refine(xs, yb, wb, np.clip(starts.reshape(-1, 4), lb, ub), lb, ub)
    best = _sum_of_squares(xs, yb, wb, refined).reshape(-1, b).argmin(1)
    params = refined.reshape(-1, b, 4)[np.arange(rows.size), best]
    for i, (hi, lo, k, x0) in zip(rows, params.tolist(), strict=True):
        if not all(np.isfinite((hi, lo, k, x0))):
            fits[i] = SigmoidFit(*_NO_FIT, np.nan, 2)
        else:
            fits[i] = SigmoidFit(hi, lo, k, x0, *_age(hi, lo, k, x0, chance, float(x_min[i]), float(x_max[i])))
    return fits


_GRID_K = np.geomspace(0.1, 100.0, 40)  # _GRID_K[13] = 1, [26] = 10, [39] = 100 (k's upper bound)
# One start per band of the grid's k: gentle (k < 1, nearly straight over the measured decades), moderate, sharp, and
# k at its upper bound (a step between two measured points; the x0 grid is too coarse for so sharp a sigmoid, so
# its basin, though lower, can lose the grid to a smoother one). A local optimum of one band is no trap for another.
_K_BANDS = (slice(0, 13), slice(13, 26), slice(26, 39), slice(39, 40))
_GRID_ROWS = 32  # curves per block of the grid search: a (32, 40, 61, S) temporary


def _grid_start(x: np.ndarray, y: np.ndarray, w: np.ndarray, x_min: np.ndarray, x_max: np.ndarray,
                top: np.ndarray) -> np.ndarray:
    """(T, len(_K_BANDS), 4) per row and band of k (`_K_BANDS`) the (hi, lo, k, x0) minimising the row's weighted
    sum of squares over the band's points of a (k, x0) grid (x0 from x_min − 1 to x_max + 1), (lo, hi) at each
    point by least squares within [0, top] (`_bounded_lo_hi`; `top` (T,) the rows' upper bound of both); a point
    where (lo, hi) are not determined (the sigmoid is flat over the row's points) is no start, and a band without
    one starts flat at the row's mean."""
    out = np.empty((y.shape[0], len(_K_BANDS), 4))
    for b in range(0, y.shape[0], _GRID_ROWS):
        sl = slice(b, b + _GRID_ROWS)
        x0s = np.linspace(x_min[sl] - 1.0, x_max[sl] + 1.0, 61, axis=1)  # (t, 61)
        z = _GRID_K[None, :, None, None] * (x[None, None, None, :] - x0s[:, None, :, None])
        s = 1.0 / (1.0 + np.exp(np.clip(z, -700.0, 700.0)))  # (t, K, 61, S)
        ww, yy = w[sl][:, None, None, :], y[sl][:, None, None, :]
        # f = lo·(1 − s) + hi·s: the normal equations of (lo, hi) per grid point, solved in closed form
        a = 1.0 - s
        aa, ab, bb = (ww * a * a).sum(-1), (ww * a * s).sum(-1), (ww * s * s).sum(-1)
        ay, by = (ww * a * yy).sum(-1), (ww * s * yy).sum(-1)
        lo, hi, ok = _bounded_lo_hi(aa, ab, bb, ay, by, top[sl][:, None, None])
        sse = np.where(ok, (ww * (lo[..., None] * a + hi[..., None] * s - yy) ** 2).sum(-1), np.inf)
        t = np.arange(sse.shape[0])
        mean = (w[sl] * y[sl]).sum(1) / w[sl].sum(1)
        for band, ks in enumerate(_K_BANDS):
            flat = sse[:, ks].reshape(sse.shape[0], -1).argmin(1)
            i, j = np.unravel_index(flat, sse[:, ks].shape[1:])
            i = i + ks.start
            none = ~np.isfinite(sse[t, i, j])  # no grid point of the band determines (lo, hi): start flat at the mean
            out[sl, band] = np.stack([np.where(none, mean, hi[t, i, j]), np.where(none, mean, lo[t, i, j]),
                                      _GRID_K[i], x0s[t, j]], axis=1)
    return out


def _bounded_lo_hi(aa: np.ndarray, ab: np.ndarray, bb: np.ndarray, ay: np.ndarray, by: np.ndarray,
                   top: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, determined) minimising Σ w (lo·a + hi·s − y)² = lo²·aa + 2·lo·hi·ab + hi²·bb − 2(lo·ay + hi·by) + const
    over lo, hi ∈ [0, top] (`top` broadcasts against the sums), from the sums aa = Σ w a², ab = Σ w a s,
    bb = Σ w s², ay = Σ w a y, by = Σ w s y; determined where aa·bb − ab² > 1e-12 (elsewhere the values are
    meaningless). The quadratic is then strictly convex: its minimum over the box is the unconstrained one when that
    lies inside, else on an edge, where one of the two is at a bound and the other the clipped minimiser given it."""
    det = aa * bb - ab * ab
    ok = det > 1e-12
    safe = np.where(ok, det, 1.0)
    lo, hi = (bb * ay - ab * by) / safe, (aa * by - ab * ay) / safe
    top = np.broadcast_to(top, lo.shape)
    out = ok & ((lo < 0) | (lo > top) | (hi < 0) | (hi > top))
    if out.any():  # the box's edges, for the points whose unconstrained minimum lies outside
        a2, ab_, b2, ay_, by_, t = aa[out], ab[out], bb[out], ay[out], by[out], top[out]
        edges_lo, edges_hi = [], []
        for bound in (np.zeros_like(t), t):
            edges_lo += [bound, np.clip((ay_ - bound * ab_) / a2, 0.0, t)]
            edges_hi += [np.clip((by_ - bound * ab_) / b2, 0.0, t), bound]
        el, eh = np.stack(edges_lo), np.stack(edges_hi)
        pick = (el * (el * a2 + 2.0 * eh * ab_ - 2.0 * ay_) + eh * (eh * b2 - 2.0 * by_)).argmin(0)
        cols = np.arange(pick.size)
        lo[out], hi[out] = el[pick, cols], eh[pick, cols]
    return lo, hi, ok


def _sum_of_squares(x: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(T,) Σ_s w (f(x_s) − y_s)² of each row's sigmoid `theta` (T, 4) (hi, lo, k, x0)."""
    r = w * (sigmoid(x[None, :], theta[:, 0:1], theta[:, 1:2], theta[:, 2:3], theta[:, 3:4]) - y)
    return (r * r).sum(1)


def _refine(x: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray, lower: np.ndarray, upper: np.ndarray,
            max_iter: int = 500) -> np.ndarray:
    """Levenberg–Marquardt on every row's Σ_s w (f(x_s) − y_s)² at once, within the bounds: a parameter at a
    bound that its gradient pushes against is held there for the step, the step is clipped to the bounds and kept
    only when it lowers the sum (else the damping grows). A row stops when a kept step lowers the sum by less than
    1e-15 of it, the step is below 1e-12 (relative), or the damping exceeds 1e12."""
    theta = theta.copy()
    damping = np.full(theta.shape[0], 1e-3)

    def residuals(t: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return w[rows] * (sigmoid(x[None, :], t[:, 0:1], t[:, 1:2], t[:, 2:3], t[:, 3:4]) - y[rows])

    every = np.arange(theta.shape[0])
    r = residuals(theta, every)
    sse = (r * r).sum(1)
    live = every
    eye = np.eye(4)[None]
    for _ in range(max_iter):
        if live.size == 0:
            break
        t = theta[live]
        jac = _sigmoid_jacobian(x[None, :], t[:, 0:1], t[:, 1:2], t[:, 2:3], t[:, 3:4]) * w[live][..., None]
        grad = np.einsum("tsp,ts->tp", jac, r[live])
        normal = np.einsum("tsp,tsq->tpq", jac, jac)
        held = ((t <= lower[live]) & (grad > 0)) | ((t >= upper[live]) & (grad < 0))
        scale = np.clip(np.diagonal(normal, axis1=1, axis2=2), 1e-12, None)
        m = normal + damping[live, None, None] * eye * scale[:, None, :]
        free = ~held
        m = np.where(free[:, :, None] & free[:, None, :], m, 0.0) + eye * held[:, None, :]
        step = -np.linalg.solve(m, np.where(free, grad, 0.0)[..., None])[..., 0]
        trial = np.clip(t + step, lower[live], upper[live])
        r_trial = residuals(trial, live)
        sse_trial = (r_trial * r_trial).sum(1)
        better = sse_trial < sse[live]
        gain = sse[live] - sse_trial
        kept = live[better]
        tiny = (better & (gain <= 1e-15 * sse[live])) | (np.abs(trial - t).max(1) <= 1e-12 * (1 + np.abs(t).max(1)))
        theta[kept], r[kept], sse[kept] = trial[better], r_trial[better], sse_trial[better]
        damping[live] = np.where(better, damping[live] / 3.0, damping[live] * 4.0)
        live = live[~(tiny | (~better & (damping[live] > 1e12)))]
    return theta


def _age(hi: float, lo: float, k: float, x0: float, chance: float, x_min: float, x_max: float) -> tuple[float, int]:
    """(AoA, status) of a fitted curve: where f crosses the midpoint between chance and f(x_max)."""
    floor = float(sigmoid(np.array([x_max]), hi, lo, k, x0)[0])
    mid = 0.5 * (chance + floor)
    if k <= 0 or hi <= mid or mid <= lo:  # the curve never lies above (or never reaches) the midpoint
        return np.nan, 3
    aoa = x0 + float(np.log((hi - lo) / (mid - lo) - 1.0)) / k
    if not np.isfinite(aoa) or aoa < x_min or aoa > x_max:
        return np.nan, 4
    return aoa, 0


@dataclass
class WordCurves:
    """One run's learning curves: per word type (T) its mean surprisal at each measured snapshot (S), the number of
    its masked occurrences, its training frequency, and the head's output size V (chance surprisal ln V).

    `steps` (S,), `surprisal` (T, S) NaN where a type has no occurrence, `counts` (T,), `frequency` (T,) training
    counts (0 = unknown), `vocab` V, `seed` for the bootstrap. `fits()` fits every type once."""

    steps: np.ndarray
    surprisal: np.ndarray
    counts: np.ndarray
    frequency: np.ndarray
    vocab: int
    seed: int = 0
    _fits: list[SigmoidFit] | None = field(default=None, repr=False)

    @property
    def x(self) -> np.ndarray:
        """log10 step per snapshot; NaN for step 0 (not on a log scale)."""
        steps = np.asarray(self.steps, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.where(steps >= 1, np.log10(np.maximum(steps, 1)), np.nan)

    @property
    def chance(self) -> float:
        return float(np.log(self.vocab))

    def fits(self) -> list[SigmoidFit]:
        if self._fits is None:
            x = self.x
            seen = np.asarray(self.counts) > 0
            fitted = iter(fit_curves(x, np.asarray(self.surprisal)[seen], self.chance))
            self._fits = [next(fitted) if c else SigmoidFit(*_NO_FIT, np.nan, 1) for c in seen]
        return self._fits

    @property
    def aoa(self) -> np.ndarray:
        return np.array([f.aoa for f in self.fits()], dtype=np.float64)

    @property
    def status(self) -> np.ndarray:
        return np.array([f.status for f in self.fits()], dtype=np.int64)

    def correlated(self) -> tuple[np.ndarray, np.ndarray]:
        """(AoA, log10 training frequency) of the types that have both."""
        aoa = self.aoa
        ok = np.isfinite(aoa) & (self.frequency > 0)
        return aoa[ok], np.log10(self.frequency[ok].astype(np.float64))


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ (Pearson correlation of average ranks) along the last axis, so that one call ranks every
    bootstrap resample: a, b (..., n) → (...) float64; NaN where either side is constant or n < 3."""
    from scipy.stats import rankdata

    if a.shape[-1] < 3:
        return np.full(a.shape[:-1], np.nan)
    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra, rb = ra - ra.mean(-1, keepdims=True), rb - rb.mean(-1, keepdims=True)
    den = np.sqrt((ra * ra).sum(-1) * (rb * rb).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


@register("aoa_freq_spearman", family="acquisition", page="acquisition", layers=LAST_LAYER, variants=("all", "ci_low", "ci_high"),
          scope="series", unit="correlation in [−1, 1]", label="AoA vs frequency (Spearman)",
          definition="Spearman correlation of each word type's age of acquisition with its log training frequency, "
                     "with a 95% bootstrap interval over types (Chang & Bergen 2022).")
def aoa_freq_spearman(word_curves: WordCurves) -> dict[str, float | None]:
    """ρ(AoA, log10 frequency) over the types with an AoA and a known frequency; ci_low/ci_high are the 2.5th and
    97.5th percentiles of ρ over `BOOTSTRAP` resamples of those types (module docstring). Undefined (ValueError)
    with fewer than 3 such types."""
    aoa, logf = word_curves.correlated()
    if aoa.size < 3:
        raise ValueError(f"{aoa.size} word types have an age of acquisition and a training frequency; need 3")
    rho = float(spearman(aoa, logf))
    draws = np.random.default_rng(word_curves.seed).integers(0, aoa.size, (BOOTSTRAP, aoa.size))
    boot = spearman(aoa[draws], logf[draws])
    boot = boot[np.isfinite(boot)]
    lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5])) if boot.size else (None, None)
    return {"all": None if not np.isfinite(rho) else rho, "ci_low": lo, "ci_high": hi}


@register("aoa_fitted_share", family="acquisition", page="acquisition", layers=LAST_LAYER, scope="series", unit="fraction in [0, 1]",
          label="Word types with an AoA",
          definition="Fraction of the word types with masked occurrences whose learning curve gives an age of "
                     "acquisition.")
def aoa_fitted_share(word_curves: WordCurves) -> float:
    """#types with status "fitted" / #types with at least one masked occurrence."""
    seen = word_curves.counts > 0
    if not seen.any():
        raise ValueError("no word type has a masked occurrence")
    return float((word_curves.status[seen] == 0).mean())


@register("aoa_median", family="acquisition", page="acquisition", layers=LAST_LAYER, scope="series", unit="log10 step",
          label="Median age of acquisition",
          definition="Median age of acquisition over the word types that have one, as log10 of the training step.")
def aoa_median(word_curves: WordCurves) -> float:
    """Median of the defined AoA values (log10 step)."""
    aoa = word_curves.aoa
    aoa = aoa[np.isfinite(aoa)]
    if aoa.size == 0:
        raise ValueError("no word type has an age of acquisition")
    return float(np.median(aoa))
