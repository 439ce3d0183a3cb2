"""Turning one snapshot's activations into tidy metric rows and arrays, one metric family at a time.

Families and what they store (metric names as in the `metrics` table; `variant` is "all" unless noted):

* `anchors` (layers 0…L): `anchor_sim_word` cos(h_l(i), E[x_i]) and `anchor_sim_emb` cos(h_l(i), e(i)), each
  overall and per frequency bin (variants all/frequent/medium/rare). At layer L, from the masked pass:
  `masked_anchor_sim` cos(T(h_L(i)), E[x_i]) with T the MLM head transform, `masked_hidden_anchor_sim`
  cos(h_L(i), E[x_i]) of the masked pass, `masked_accuracy` (true token ranked first), `masked_mrr` (mean
  reciprocal rank) per bin, and `masked_median_rank`.
* `drift` (layer 0): `anchor_drift` cos(E_step[v], E_final[v]) averaged over the non-special vocabulary
  (variant all), over the token types of the probe set (variant probe) and per frequency bin of those types.
* `context` (layers 1…L; undefined at layer 0 where g ≡ 0), g_l = h_l − e: `ctx_same_all`, `ctx_other`,
  `ctx_gap_all` (same − other), `ctx_same_window` and `ctx_gap_window` (pairs within the window W),
  `ctx_cos_by_distance` (variant d001…), `seq_id_accuracy`, and at layer L only `tc_loss` (TACO's InfoNCE
  on g = h_L − e over the probe set, the same draws for every snapshot).
* `geometry` (layers 0…L): `anisotropy`, `self_similarity`, `intra_similarity`, `mev` (each with an `_adj`
  form that subtracts the layer's anisotropy, as DESIGN.md states; `mev_adj_pc1` subtracts instead the
  variance share of the layer's first principal component, Ethayarajh's own MEV baseline), `rankme`, `rankme_centred`,
  `isoscore`, `twonn`, `alignment`, `uniformity`, `norm_h`, `norm_e` (layer 0), `norm_g` (layers ≥ 1), and
  `cka_prev_layer` (debiased CKA with layer l−1). Arrays: `cka_layers` (layer × layer debiased CKA),
  `cka_sample` (the fixed CKA token sample per layer, used for step × step CKA) and `projection` (2-D PCA
  of the fixed projection sample: `xy` (L+1, n, 2) and `explained` of h per layer; `xy_g` (L, n, 2) and
  `explained_g` of g = h − e for layers 1…L; `xy_e`/`explained_e` of e, the same as layer 0 of `xy`).
* `cka_steps` (per run, after all snapshots): step × step debiased/biased CKA per layer from the stored
  samples, plus rows `cka_prev_snapshot` and `cka_final` per snapshot and layer.

Every metric function is called with float64 tensors already on the metric device; a metric that is
undefined for the input (e.g. no word type occurs twice) is stored as NULL with a note.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dynamics.extract import Activations
from dynamics.metrics import anchors as A
from dynamics.metrics import cka as C
from dynamics.metrics import context as X
from dynamics.metrics import geometry as G
from dynamics.metrics._common import single_thread
from dynamics.probe_set import ProbeSet
from dynamics.store import FamilyResult, MetricRow

PARAMS_VERSION = "v1"


@dataclass
class Prepared:
    """Per-probe-set tensors shared by every snapshot (on the metric device)."""

    probe: ProbeSet
    device: torch.device
    seq_ids: torch.Tensor  # (N,) int64
    positions: torch.Tensor  # (N,) int64
    word_type: torch.Tensor  # (N,) int64, −1 = not an eligible word
    freq_bin: np.ndarray  # (N,) int64
    neighbour_index: torch.Tensor  # (≤ neighbour_tokens,) sorted int64 subsample for pair/neighbour estimators
    tc_pos: torch.Tensor | None  # (N,) TC-loss positives, fixed for all snapshots
    tc_neg: torch.Tensor | None  # (N, K) TC-loss negatives
    window: int
    max_distance: int
    tc_temperature: float
    seed: int
    projection_tokens: np.ndarray  # (n_proj,) str, the token strings of the projection sample


def prepare(probe: ProbeSet, device: str, *, window: int, tc_negatives: int, tc_temperature: float,
            max_distance: int, neighbour_tokens: int, seed: int, id_to_token: Sequence[str]) -> tuple[Prepared, list[str]]:
    """Tensors and fixed random draws (TC-loss indices, neighbour subsample) for `probe`; plus notes.

    `id_to_token`: token string of every id (for the projection sample's labels)."""
    dev = torch.device(device)
    notes: list[str] = []
    seq_ids = torch.from_numpy(probe.seq_ids)
    positions = torch.from_numpy(probe.positions)
    n = probe.n_tokens
    rng = np.random.default_rng([seed, 3])
    nb = np.arange(n) if n <= neighbour_tokens else np.sort(rng.choice(n, size=neighbour_tokens, replace=False))
    tc_pos = tc_neg = None
    try:
        gen = torch.Generator().manual_seed(seed)
        tc_pos, tc_neg = X.sample_tc_indices(seq_ids, positions, window, tc_negatives, gen)
    except ValueError as exc:
        notes.append(f"tc_loss not computed: {exc}")
    prep = Prepared(probe, dev, seq_ids.to(dev), positions.to(dev), torch.from_numpy(probe.word_type.astype(np.int64)).to(dev),
                    probe.freq_bin.astype(np.int64), torch.from_numpy(nb).to(dev),
                    None if tc_pos is None else tc_pos.to(dev), None if tc_neg is None else tc_neg.to(dev),
                    window, max_distance, tc_temperature, seed,
                    np.array([id_to_token[t] for t in probe.tokens[probe.projection_index]]))
    return prep, notes


def family_params(family: str, **values: Any) -> str:
    """The `completed.params` string of a family: settings that change its values."""
    return ";".join([PARAMS_VERSION] + [f"{k}={v}" for k, v in sorted(values.items())])


class _Rows:
    """Collects rows; `call` turns a ValueError from a metric into a NULL value plus one note per metric."""

    def __init__(self) -> None:
        self.rows: list[MetricRow] = []
        self.notes: list[str] = []
        self._noted: set[str] = set()

    def add(self, layer: int, metric: str, value: float | None, variant: str = "all") -> None:
        self.rows.append((layer, metric, variant, None if value is None else float(value)))

    def call(self, metric: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ValueError as exc:
            if metric not in self._noted:
                self._noted.add(metric)
                self.notes.append(f"{metric} undefined: {exc}")
            return None

    def binned(self, layer: int, metric: str, values: torch.Tensor, bins: np.ndarray, names: Sequence[str]) -> None:
        """Overall mean of per-token `values` plus the mean per frequency bin (NaN → NULL for empty bins)."""
        v = values.double().cpu()
        self.add(layer, metric, float(v.mean()) if v.numel() else None)
        for name, m in zip(names, A.mean_by_bin(v, bins, len(names)), strict=True):
            self.add(layer, metric, None if math.isnan(m) else float(m), name)

    def result(self, arrays: dict[str, dict[str, np.ndarray]] | None = None) -> FamilyResult:
        return FamilyResult(self.rows, arrays or {}, self.notes)


def _layer(acts: Activations, layer: int, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(acts.hidden[layer]).to(dev, torch.float64)


def _metric_threads(family: Callable[[Activations, Prepared], FamilyResult]) -> Callable[[Activations, Prepared], FamilyResult]:
    """Run a family's metrics on one CPU thread when they run on the CPU.

    They are small or memory-bound tensor operations, which multi-threading barely speeds up; and on a
    machine whose cores are busy (e.g. shared), OpenMP worker threads spin-wait, so that threaded eigen-
    solvers, batched matmuls and sklearn's neighbour search were measured 10–20× *slower* than on one thread.
    """
    @functools.wraps(family)
    def wrapped(acts: Activations, prep: Prepared) -> FamilyResult:
        if prep.device.type != "cpu":
            return family(acts, prep)
        with single_thread():
            return family(acts, prep)
    return wrapped


# ------------------------------------------------------------------------------------------------- families

@_metric_threads
def anchors(acts: Activations, prep: Prepared) -> FamilyResult:
    """Anchor-embedding similarity per layer and the masked variant at the last layer."""
    out = _Rows()
    names = prep.probe.bin_names
    dev = prep.device
    emb_rows = torch.from_numpy(acts.emb_rows).to(dev, torch.float64)
    e = _layer(acts, 0, dev)
    same_dim = emb_rows.shape[1] == e.shape[1]
    if not same_dim:
        out.notes.append(f"word embeddings ({emb_rows.shape[1]}-d) and hidden states ({e.shape[1]}-d) differ in "
                         "size: anchor_sim_word skipped (the masked variant, through the head, is kept)")
    for layer in range(acts.hidden.shape[0]):
        h = e if layer == 0 else _layer(acts, layer, dev)
        if same_dim:
            out.binned(layer, "anchor_sim_word", A.cosine_rows(h, emb_rows), prep.freq_bin, names)
        out.binned(layer, "anchor_sim_emb", A.cosine_rows(h, e), prep.freq_bin, names)
        del h
    last = acts.hidden.shape[0] - 1
    m = acts.masked
    if m is None:
        if acts.has_head:  # a missing head is noted once by the extraction
            out.notes.append("masked variant not measured: the tokenizer has no mask token")
        return out.result()
    bins = prep.freq_bin[m.index]
    targets = emb_rows[torch.from_numpy(m.index).to(dev)]
    out.binned(last, "masked_anchor_sim", A.cosine_rows(torch.from_numpy(m.transform).to(dev), targets), bins, names)
    if same_dim:
        out.binned(last, "masked_hidden_anchor_sim", A.cosine_rows(torch.from_numpy(m.hidden).to(dev), targets),
                   bins, names)
    rank = torch.from_numpy(m.rank)
    out.binned(last, "masked_accuracy", (rank == 1).double(), bins, names)
    out.binned(last, "masked_mrr", 1.0 / rank.double(), bins, names)
    out.add(last, "masked_median_rank", float(np.median(m.rank)))
    return out.result()


def drift(emb_matrix: np.ndarray, final_matrix: np.ndarray | None, probe: ProbeSet, special_ids: np.ndarray) -> FamilyResult:
    """Anchor drift cos(E_step[v], E_final[v]) (layer 0): vocabulary-wide, over probe types, per bin."""
    out = _Rows()
    assert final_matrix is not None
    if emb_matrix.shape != final_matrix.shape:
        out.notes.append(f"anchor_drift skipped: embedding matrix {emb_matrix.shape} differs from the final "
                         f"snapshot's {final_matrix.shape}")
        return out.result()
    cos = A.anchor_drift(emb_matrix, final_matrix).cpu()
    keep = torch.ones(cos.shape[0], dtype=torch.bool)
    keep[torch.from_numpy(special_ids[special_ids < cos.shape[0]])] = False
    out.add(0, "anchor_drift", float(cos[keep].mean()))
    tokens = probe.tokens
    types, first = np.unique(tokens, return_index=True)
    out.binned(0, "anchor_drift_probe", cos[torch.from_numpy(types)], probe.freq_bin[first].astype(np.int64),
               probe.bin_names)
    return out.result()


@_metric_threads
def context(acts: Activations, prep: Prepared) -> FamilyResult:
    """Context-vector alignment of g_l = h_l − e for layers 1…L."""
    out = _Rows()
    dev = prep.device
    e = _layer(acts, 0, dev)
    s, p = prep.seq_ids, prep.positions
    last = acts.hidden.shape[0] - 1
    for layer in range(1, last + 1):
        g = _layer(acts, layer, dev) - e
        sv = out.call("ctx_same_all", lambda g=g: X.same_vs_other_cosine(g, s)) or {}
        out.add(layer, "ctx_same_all", sv.get("same"))
        out.add(layer, "ctx_other", sv.get("other"))
        out.add(layer, "ctx_gap_all", sv.get("gap"))
        # One pass over distances 1…max(max_distance, (W − 1)/2) serves the window mean and the curve.
        half = (prep.window - 1) // 2
        reach = max(prep.max_distance, half)
        dist = out.call("ctx_same_window", lambda g=g, d=reach: X.distance_sums(g, s, p, d))
        win = curve = None
        if dist is not None:
            sums, counts = dist
            win = float(sums[:half].sum() / counts[:half].sum()) if counts[:half].sum() > 0 else math.nan
            with np.errstate(invalid="ignore", divide="ignore"):
                curve = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)[: prep.max_distance]
        out.add(layer, "ctx_same_window", None if win is None or math.isnan(win) else win)
        other = sv.get("other")
        out.add(layer, "ctx_gap_window", None if win is None or other is None else win - other)
        if curve is not None:
            for d, v in enumerate(curve, start=1):
                out.add(layer, "ctx_cos_by_distance", None if math.isnan(v) else float(v), f"d{d:03d}")
        if layer == last and prep.tc_pos is not None and prep.tc_neg is not None:
            out.add(layer, "tc_loss", out.call("tc_loss", lambda g=g: X.info_nce_from_indices(
                g, prep.tc_pos, prep.tc_neg, prep.tc_temperature)))
        out.add(layer, "seq_id_accuracy", out.call("seq_id_accuracy", lambda g=g: X.sequence_identification_accuracy(g, s)))
        del g
    return out.result()


@_metric_threads
def geometry(acts: Activations, prep: Prepared) -> FamilyResult:
    """Geometry per layer, layer × layer CKA, the CKA token sample and the 2-D projections."""
    out = _Rows()
    dev = prep.device
    probe = prep.probe
    s, p, wt = prep.seq_ids, prep.positions, prep.word_type
    nb = prep.neighbour_index
    e = _layer(acts, 0, dev)
    cka_idx = torch.from_numpy(probe.cka_index).to(dev)
    proj_idx = torch.from_numpy(probe.projection_index).to(dev)
    samples: list[torch.Tensor] = []
    xy, explained = [], []
    xy_g: list[np.ndarray] = []
    explained_g: list[np.ndarray] = []
    for layer in range(acts.hidden.shape[0]):
        h = e if layer == 0 else _layer(acts, layer, dev)
        aniso = out.call("anisotropy", lambda h=h: G.anisotropy(h))
        out.add(layer, "anisotropy", aniso)
        for name, fn in (
            ("self_similarity", lambda h=h: G.self_similarity(h, wt)),
            ("intra_similarity", lambda h=h: G.intra_sentence_similarity(h, s)),
            ("mev", lambda h=h: G.max_explainable_variance(h, wt)),
        ):
            value = out.call(name, fn)
            out.add(layer, name, value)
        out.add(layer, "self_similarity_adj", _minus(out.rows, layer, "self_similarity", aniso))
        out.add(layer, "intra_similarity_adj", _minus(out.rows, layer, "intra_similarity", aniso))
        out.add(layer, "mev_adj", _minus(out.rows, layer, "mev", aniso))
        # One decomposition of the layer serves pc1, both RankMe forms and IsoScore.
        spec = out.call("rankme", lambda h=h: G.spectra(h)) or {}
        sv, svc, cov = spec.get("singular_values"), spec.get("singular_values_centred"), spec.get("covariance_eigenvalues")
        pc1 = out.call("mev", lambda h=h, sv=sv: G.explained_variance_pc1(h, sv))
        out.add(layer, "mev_adj_pc1", _minus(out.rows, layer, "mev", pc1))
        out.add(layer, "rankme", out.call("rankme", lambda h=h, sv=sv: G.effective_rank(
            h, singular_values=sv)))
        out.add(layer, "rankme_centred", out.call("rankme", lambda h=h, sv=svc:
            G.effective_rank(h, center=True, singular_values=sv)))
        sub = h[nb]  # TwoNN then collapses duplicate rows within this subsample
        out.add(layer, "isoscore", out.call("isoscore", lambda h=h, ev=cov:
            G.isoscore(h, covariance_eigenvalues=ev)))
        out.add(layer, "twonn", out.call("twonn", lambda sub=sub: G.twonn_dimension(sub, seed=prep.seed, max_samples=None)))
        out.add(layer, "uniformity", out.call("uniformity", lambda sub=sub: G.uniformity(sub, max_samples=None)))
        out.add(layer, "alignment", out.call("alignment", lambda h=h: G.alignment(h, s, p)))
        out.add(layer, "norm_h", G.mean_norm(h))
        if layer == 0:
            out.add(layer, "norm_e", G.mean_norm(e))
        else:
            out.add(layer, "norm_g", G.mean_norm(h - e))
        samples.append(h[cka_idx].float())
        hp = h[proj_idx]
        pxy, ratio = _pca2(hp)
        xy.append(pxy)
        explained.append(ratio)
        if layer == 0:
            e_proj = hp
            xy_e, explained_e = pxy, ratio  # the embedding-layer output e is layer 0's h
        else:
            gxy, gratio = _pca2(hp - e_proj)
            xy_g.append(gxy)
            explained_g.append(gratio)
        del h, sub
    layers_deb = C.cka_matrix(samples, debiased=True)
    for layer in range(1, len(samples)):
        out.add(layer, "cka_prev_layer", _nan_none(layers_deb[layer, layer - 1]))
    sample_arrays = {f"h{layer}": x.cpu().numpy() for layer, x in enumerate(samples)}
    sample_arrays["index"] = probe.cka_index
    ti = probe.tokens[probe.projection_index]
    projection = {"xy": np.stack(xy).astype(np.float32), "explained": np.stack(explained),
                  "token_ids": ti, "tokens": prep.projection_tokens, "seq_ids": probe.seq_ids[probe.projection_index],
                  "freq_bin": probe.freq_bin[probe.projection_index], "bin_names": np.array(probe.bin_names),
                  "index": probe.projection_index, "xy_e": xy_e.astype(np.float32), "explained_e": explained_e}
    if xy_g:
        projection["xy_g"] = np.stack(xy_g).astype(np.float32)
        projection["explained_g"] = np.stack(explained_g)
    arrays = {"cka_layers": {"debiased": layers_deb},
              "cka_sample": sample_arrays, "projection": projection}
    return out.result(arrays)


def cka_steps(samples: Sequence[Callable[[int], np.ndarray]], steps: Sequence[int],
              tokens_seen: Sequence[int | None], n_layers: int, device: str = "cpu") -> tuple[dict[int, list[MetricRow]], dict[str, np.ndarray]]:
    """Step × step CKA per layer from each snapshot's stored sample (`samples[k](layer)` → (n, H)).

    Returns rows per step (`cka_prev_snapshot`: CKA with the previous measured snapshot; `cka_final`: with the
    last one) and the arrays {"steps", "tokens_seen", "debiased" (L+1, S, S), "biased" (L+1, S, S)}.
    """
    with contextlib.nullcontext() if torch.device(device).type != "cpu" else single_thread():  # see _metric_threads
        return _cka_steps(samples, steps, tokens_seen, n_layers, device)


def _cka_steps(samples: Sequence[Callable[[int], np.ndarray]], steps: Sequence[int],
               tokens_seen: Sequence[int | None], n_layers: int, device: str) -> tuple[dict[int, list[MetricRow]], dict[str, np.ndarray]]:
    s = len(steps)
    deb = np.full((n_layers, s, s), np.nan)
    bias = np.full((n_layers, s, s), np.nan)
    rows: dict[int, list[MetricRow]] = {st: [] for st in steps}
    for layer in range(n_layers):
        xs = [torch.from_numpy(load(layer)).to(device) for load in samples]
        deb[layer] = C.cka_matrix(xs, debiased=True)
        bias[layer] = C.cka_matrix(xs, debiased=False)
        for k, st in enumerate(steps):
            if k > 0:
                rows[st].append((layer, "cka_prev_snapshot", "all", _nan_none(deb[layer, k, k - 1])))
            rows[st].append((layer, "cka_final", "all", _nan_none(deb[layer, k, s - 1])))
        del xs
    arrays = {"steps": np.asarray(steps, dtype=np.int64),
              "tokens_seen": np.asarray([-1 if t is None else t for t in tokens_seen], dtype=np.int64),
              "debiased": deb, "biased": bias}
    return rows, arrays


# ---------------------------------------------------------------------------------------------------- helpers

def _minus(rows: list[MetricRow], layer: int, metric: str, baseline: float | None) -> float | None:
    value = next((r[3] for r in reversed(rows) if r[0] == layer and r[1] == metric), None)
    return None if value is None or baseline is None else value - baseline


def _nan_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _pca2(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Project (n, H) onto its first two principal axes → ((n, 2) float32, (2,) explained-variance ratios).

    Signs are fixed so that each axis's projections have positive skew (a deterministic convention)."""
    c = x - x.mean(0, keepdim=True)
    cov = c.T @ c
    with single_thread():  # a small (H × H) problem: threads only add overhead
        vals, vecs = torch.linalg.eigh(cov)
    top = vecs[:, -2:].flip(1)
    xy = c @ top
    sign = torch.sign((xy**3).sum(0))
    sign[sign == 0] = 1
    xy = xy * sign
    total = float(vals.clamp_min(0).sum())
    ratio = (vals[-2:].flip(0).clamp_min(0) / total).cpu().numpy() if total > 0 else np.zeros(2)
    if xy.shape[1] < 2:
        xy = torch.nn.functional.pad(xy, (0, 2 - xy.shape[1]))
    return xy.float().cpu().numpy(), np.asarray(ratio, dtype=np.float64)
