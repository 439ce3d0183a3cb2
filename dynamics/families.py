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

Every metric function is called with the layer wrapped once as a `Rows` (float32, as extracted, on the metric
device), so that row norms, unit rows, groupings and the neighbour subsample's Gram matrix are computed once
per layer and shared; sums behind every mean are float64, small decompositions float64, and near-ties are
re-checked in float64 (see `dynamics.metrics._common`, "Precision"): stored values agree with a float64
computation to ~1e-7 relative (RankMe, whose near-zero singular values are at the data's own float32 noise,
to ~3e-8). A metric that is undefined for the input (e.g. no word type occurs twice) is stored as NULL with a
note.

Threads: on the CPU, measure() runs the per-layer work of all requested families on as many worker threads
as torch has intra-op threads, each with one torch thread and numpy's BLAS on one thread (`metrics._common
.numpy_blas`), largest tasks first. Measured on 2 cores this is 15–20% faster than running each operation on
both threads one layer at a time, and it cannot spin-wait against a busy machine's other work the way
OpenMP worker threads do; results are assembled in layer order and do not depend on the schedule.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dynamics.extract import Activations
from dynamics.metrics import anchors as A
from dynamics.metrics import cka as C
from dynamics.metrics import context as X
from dynamics.metrics import geometry as G
from dynamics.metrics._common import (
    BlockLayout,
    Rows,
    Workspace,
    chunk_rows,
    gram_matrix,
    numpy_blas,
    single_thread,
    sum_rows,
)
from dynamics.probe_set import ProbeSet
from dynamics.store import FamilyResult, MetricRow

PARAMS_VERSION = "v1"
METRIC_DTYPE = torch.float32  # arithmetic of the O(N·H) passes; see dynamics.metrics._common "Precision"


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
    layout: BlockLayout | None  # the tokens on their (sequence, position) grid, None if too sparse for one
    tc_pos: torch.Tensor | None  # (N,) TC-loss positives, fixed for all snapshots
    tc_neg: torch.Tensor | None  # (N, K) TC-loss negatives
    window: int
    max_distance: int
    tc_temperature: float
    seed: int
    projection_tokens: np.ndarray  # (n_proj,) str, the token strings of the projection sample
    parallel: bool = True  # spread the per-layer work over worker threads on the CPU (see `measure`)
    # (N, H) scratch memory kept across layers and snapshots, one workspace per concurrent task
    workspaces: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)

    def __post_init__(self) -> None:
        for _ in range(max(1, torch.get_num_threads())):
            self.workspaces.put(Workspace())


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
    seq_dev, pos_dev = seq_ids.to(dev), positions.to(dev)
    try:
        layout = BlockLayout.build(seq_dev, pos_dev)
    except ValueError:  # a repeated (sequence, position): the metrics report it themselves
        layout = None
    prep = Prepared(probe, dev, seq_dev, pos_dev, torch.from_numpy(probe.word_type.astype(np.int64)).to(dev),
                    probe.freq_bin.astype(np.int64), torch.from_numpy(nb).to(dev), layout,
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
        self._log: list[tuple[str | None, str]] = []  # (metric or None, note), for `merge`
        self._noted: set[str] = set()

    def add(self, layer: int, metric: str, value: float | None, variant: str = "all") -> None:
        self.rows.append((layer, metric, variant, None if value is None else float(value)))

    def note(self, text: str, metric: str | None = None) -> None:
        """Add a note; with `metric`, only the first note about that metric is kept."""
        if metric is not None:
            if metric in self._noted:
                return
            self._noted.add(metric)
        self._log.append((metric, text))
        if text not in self.notes:
            self.notes.append(text)

    def call(self, metric: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ValueError as exc:
            self.note(f"{metric} undefined: {exc}", metric)
            return None

    def merge(self, other: _Rows) -> None:
        """Append another collector's rows and notes (a metric noted by both keeps the first note)."""
        self.rows += other.rows
        for metric, text in other._log:
            self.note(text, metric)

    def binned(self, layer: int, metric: str, values: torch.Tensor, bins: np.ndarray, names: Sequence[str]) -> None:
        """Overall mean of per-token `values` plus the mean per frequency bin (NaN → NULL for empty bins)."""
        v = values.double().cpu()
        self.add(layer, metric, float(v.mean()) if v.numel() else None)
        for name, m in zip(names, A.mean_by_bin(v, bins, len(names)), strict=True):
            self.add(layer, metric, None if math.isnan(m) else float(m), name)

    def result(self, arrays: dict[str, dict[str, np.ndarray]] | None = None) -> FamilyResult:
        return FamilyResult(self.rows, arrays or {}, self.notes)


def _layer(acts: Activations, layer: int, dev: torch.device) -> torch.Tensor:
    """Layer `layer`'s (N, H) hidden states as a float32 tensor on `dev` (a view of the array on the CPU)."""
    return torch.from_numpy(acts.hidden[layer]).to(dev, METRIC_DTYPE)


def _rows(x: np.ndarray | torch.Tensor, dev: torch.device, workspace: Workspace | None = None,
          overwrite: bool = False) -> Rows:
    return Rows(torch.as_tensor(x).to(dev, METRIC_DTYPE), METRIC_DTYPE, workspace=workspace, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------- families

PER_LAYER = ("anchors", "context", "geometry")


def anchors(acts: Activations, prep: Prepared) -> FamilyResult:
    """Anchor-embedding similarity per layer and the masked variant at the last layer."""
    return measure(acts, prep, ["anchors"])["anchors"]


def context(acts: Activations, prep: Prepared) -> FamilyResult:
    """Context-vector alignment of g_l = h_l − e for layers 1…L."""
    return measure(acts, prep, ["context"])["context"]


def geometry(acts: Activations, prep: Prepared) -> FamilyResult:
    """Geometry per layer, layer × layer CKA, the CKA token sample and the 2-D projections."""
    return measure(acts, prep, ["geometry"])["geometry"]


def measure(acts: Activations, prep: Prepared, families: Sequence[str]) -> dict[str, FamilyResult]:
    """The per-layer families among `families` (anchors, context, geometry) of one snapshot.

    Geometry and context are one task per layer (layers are independent given the activations), anchors one
    task (its layers share E[x_i] and e; the masked variant included). On the CPU, when torch has T ≥ 2
    intra-op threads, the tasks of all requested families run on T worker threads with one torch thread each
    (and numpy's BLAS, `numpy_blas`), largest first: small and memory-bound operations then overlap instead of
    each being split T ways (measured on 2 cores: 15–20% faster than T-threaded operations one layer at a
    time, and no OpenMP spin-waiting on a busy machine). Results are assembled in layer order, so they do not
    depend on the schedule. `FamilyResult.seconds` holds each family's summed task time.
    """
    families = [f for f in PER_LAYER if f in families]
    last = acts.hidden.shape[0] - 1
    tasks: list[tuple[str, int]] = []
    if "geometry" in families:
        tasks += [("geometry", layer) for layer in range(last + 1)]
    if "context" in families:
        tasks += [("context", last)]  # the last layer adds the TC loss
    if "anchors" in families:
        tasks += [("anchors", last)]  # all layers in one task: they share E[x_i] and e
    if "context" in families:
        tasks += [("context", layer) for layer in range(last - 1, 0, -1)]
    work = {"geometry": _geometry_layer, "context": _context_layer, "anchors": _anchors_all}
    workers = _workers(prep)

    def run(task: tuple[str, int]) -> tuple[_Rows, Any, float]:
        kind, layer = task
        if workers > 1:
            torch.set_num_threads(1)  # this thread's OpenMP and MKL settings (MKL's are per thread)
        workspace = prep.workspaces.get()
        try:
            t0 = time.perf_counter()
            out, extra = work[kind](acts, prep, layer, workspace)
            return out, extra, time.perf_counter() - t0
        finally:
            prep.workspaces.put(workspace)

    if workers <= 1:
        done = [run(t) for t in tasks]
    else:
        with single_thread(), numpy_blas(), ThreadPoolExecutor(workers, thread_name_prefix="metrics") as pool:
            done = list(pool.map(run, tasks))
    parts: dict[str, list[tuple[int, _Rows, Any, float]]] = {f: [] for f in families}
    for (kind, layer), (out, extra, seconds) in zip(tasks, done, strict=True):
        parts[kind].append((layer, out, extra, seconds))
    results: dict[str, FamilyResult] = {}
    for family in families:
        merged = _Rows()
        extras = {}
        for layer, out, extra, _ in sorted(parts[family], key=lambda item: item[0]):
            merged.merge(out)
            extras[layer] = extra
        result = merged.result(_geometry_arrays(prep, extras) if family == "geometry" and extras else None)
        if family == "geometry":
            deb = result.arrays["cka_layers"]["debiased"]
            for layer in range(1, deb.shape[0]):
                result.rows.append((layer, "cka_prev_layer", "all", _nan_none(deb[layer, layer - 1])))
        if family == "anchors" and acts.emb_rows.shape[1] != acts.hidden.shape[2]:
            result.notes.insert(0, f"word embeddings ({acts.emb_rows.shape[1]}-d) and hidden states "
                                   f"({acts.hidden.shape[2]}-d) differ in size: anchor_sim_word skipped (the masked "
                                   "variant, through the head, is kept)")
        result.seconds = sum(item[3] for item in parts[family])
        results[family] = result
    return results


def _workers(prep: Prepared) -> int:
    """How many metric worker threads: torch's intra-op thread count on the CPU, else 1."""
    if prep.device.type != "cpu" or not prep.parallel:
        return 1
    return max(1, torch.get_num_threads())


def _anchors_all(acts: Activations, prep: Prepared, last: int, workspace: Workspace) -> tuple[_Rows, None]:
    """Anchor-embedding similarity of every layer, then the masked variant at the last layer."""
    out = _Rows()
    dev = prep.device
    names = prep.probe.bin_names
    emb_rows = _rows(acts.emb_rows, dev)
    e = _rows(_layer(acts, 0, dev), dev)
    for layer in range(last + 1):
        h = e if layer == 0 else _rows(_layer(acts, layer, dev), dev)
        if emb_rows.dim == h.dim:
            out.binned(layer, "anchor_sim_word", A.cosine_rows(h, emb_rows), prep.freq_bin, names)
        out.binned(layer, "anchor_sim_emb", A.cosine_rows(h, e), prep.freq_bin, names)
    out.merge(_anchors_masked(acts, prep, last, emb_rows))
    return out, None


def _anchors_masked(acts: Activations, prep: Prepared, last: int, emb_rows: Rows) -> _Rows:
    """The masked variant at the last layer: cos(T(h_L), E[x_i]), cos(h_L, E[x_i]), rank, accuracy, MRR."""
    out = _Rows()
    m = acts.masked
    if m is None:
        if acts.has_head:  # a missing head is noted once by the extraction
            out.note("masked variant not measured: the tokenizer has no mask token")
        return out
    dev = prep.device
    names = prep.probe.bin_names
    bins = prep.freq_bin[m.index]
    targets = emb_rows.subset(torch.from_numpy(m.index).to(dev))
    out.binned(last, "masked_anchor_sim", A.cosine_rows(_rows(m.transform, dev), targets), bins, names)
    if emb_rows.dim == acts.hidden.shape[2]:
        out.binned(last, "masked_hidden_anchor_sim", A.cosine_rows(_rows(m.hidden, dev), targets), bins, names)
    rank = torch.from_numpy(m.rank)
    out.binned(last, "masked_accuracy", (rank == 1).double(), bins, names)
    out.binned(last, "masked_mrr", 1.0 / rank.double(), bins, names)
    out.add(last, "masked_median_rank", float(np.median(m.rank)))
    return out


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


def _context_layer(acts: Activations, prep: Prepared, layer: int, workspace: Workspace) -> tuple[_Rows, None]:
    """Context-vector alignment of g = h_layer − e (layer ≥ 1); the TC loss at the last layer."""
    out = _Rows()
    dev = prep.device
    s, p = prep.seq_ids, prep.positions
    e, h = _layer(acts, 0, dev), _layer(acts, layer, dev)
    g = _rows(torch.sub(h, e, out=workspace.get("g", tuple(h.shape), h.dtype, h.device)), dev,
              overwrite=True)  # g is only needed as unit rows (and its norms)
    sv = out.call("ctx_same_all", lambda: X.same_vs_other_cosine(g, s)) or {}
    out.add(layer, "ctx_same_all", sv.get("same"))
    out.add(layer, "ctx_other", sv.get("other"))
    out.add(layer, "ctx_gap_all", sv.get("gap"))
    # One pass over distances 1…max(max_distance, (W − 1)/2) serves the window mean and the curve.
    half = (prep.window - 1) // 2
    reach = max(prep.max_distance, half)
    dist = out.call("ctx_same_window", lambda: X.distance_sums(g, s, p, reach, layout=prep.layout))
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
    if layer == acts.hidden.shape[0] - 1 and prep.tc_pos is not None and prep.tc_neg is not None:
        out.add(layer, "tc_loss", out.call("tc_loss", lambda: X.info_nce_from_indices(
            g, prep.tc_pos, prep.tc_neg, prep.tc_temperature)))
    out.add(layer, "seq_id_accuracy", out.call("seq_id_accuracy", lambda: X.sequence_identification_accuracy(g, s)))
    return out, None


def _geometry_layer(acts: Activations, prep: Prepared, layer: int, workspace: Workspace) -> tuple[_Rows, dict[str, Any]]:
    """Geometry of one layer's h, plus its CKA sample and 2-D projections (of h, and of g = h − e)."""
    out = _Rows()
    dev = prep.device
    probe = prep.probe
    s, p, wt = prep.seq_ids, prep.positions, prep.word_type
    h = _rows(_layer(acts, layer, dev), dev, workspace)
    aniso = out.call("anisotropy", lambda: G.anisotropy(h))
    out.add(layer, "anisotropy", aniso)
    for name, fn in (
        ("self_similarity", lambda: G.self_similarity(h, wt)),
        ("intra_similarity", lambda: G.intra_sentence_similarity(h, s)),
        ("mev", lambda: G.max_explainable_variance(h, wt)),
    ):
        value = out.call(name, fn)
        out.add(layer, name, value)
    out.add(layer, "self_similarity_adj", _minus(out.rows, layer, "self_similarity", aniso))
    out.add(layer, "intra_similarity_adj", _minus(out.rows, layer, "intra_similarity", aniso))
    out.add(layer, "mev_adj", _minus(out.rows, layer, "mev", aniso))
    # One decomposition of the layer serves pc1, both RankMe forms and IsoScore.
    spec = out.call("rankme", lambda: G.spectra(h)) or {}
    sv, svc, cov = spec.get("singular_values"), spec.get("singular_values_centred"), spec.get("covariance_eigenvalues")
    pc1 = out.call("mev", lambda: G.explained_variance_pc1(h, sv))
    out.add(layer, "mev_adj_pc1", _minus(out.rows, layer, "mev", pc1))
    out.add(layer, "rankme", out.call("rankme", lambda: G.effective_rank(h, singular_values=sv)))
    out.add(layer, "rankme_centred", out.call("rankme", lambda: G.effective_rank(h, center=True, singular_values=svc)))
    out.add(layer, "isoscore", out.call("isoscore", lambda: G.isoscore(h, covariance_eigenvalues=cov)))
    # TwoNN (after collapsing duplicate rows) and uniformity share the subsample's Gram matrix.
    sub = h.subset(prep.neighbour_index)
    sub.gram()
    out.add(layer, "twonn", out.call("twonn", lambda: G.twonn_dimension(sub, seed=prep.seed, max_samples=None)))
    out.add(layer, "uniformity", out.call("uniformity", lambda: G.uniformity(sub, max_samples=None)))
    out.add(layer, "alignment", out.call("alignment", lambda: G.alignment(h, s, p, layout=prep.layout)))
    out.add(layer, "norm_h", G.mean_norm(h))
    e_raw = _layer(acts, 0, dev)
    if layer == 0:
        out.add(layer, "norm_e", G.mean_norm(h))  # h is e at layer 0
    else:
        out.add(layer, "norm_g", _mean_distance(h.x, e_raw))
    extra: dict[str, Any] = {"sample": h.x[torch.from_numpy(probe.cka_index).to(dev)].float()}
    proj_idx = torch.from_numpy(probe.projection_index).to(dev)
    hp = h.x[proj_idx]
    extra["xy"], extra["explained"] = _pca2(hp)
    if layer > 0:  # the projection of g = h − e (e is layer 0's h)
        extra["xy_g"], extra["explained_g"] = _pca2(hp - e_raw[proj_idx])
    return out, extra


def _geometry_arrays(prep: Prepared, extras: dict[int, dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Layer × layer CKA from the per-layer samples, the samples themselves and the projections."""
    probe = prep.probe
    layers = sorted(extras)
    samples = [extras[layer]["sample"] for layer in layers]
    layers_deb = C.cka_matrix(samples, debiased=True, dtype=METRIC_DTYPE)
    sample_arrays = {f"h{layer}": extras[layer]["sample"].cpu().numpy() for layer in layers}
    sample_arrays["index"] = probe.cka_index
    ti = probe.tokens[probe.projection_index]
    projection = {"xy": np.stack([extras[layer]["xy"] for layer in layers]).astype(np.float32),
                  "explained": np.stack([extras[layer]["explained"] for layer in layers]),
                  "token_ids": ti, "tokens": prep.projection_tokens, "seq_ids": probe.seq_ids[probe.projection_index],
                  "freq_bin": probe.freq_bin[probe.projection_index], "bin_names": np.array(probe.bin_names),
                  "index": probe.projection_index, "xy_e": extras[0]["xy"].astype(np.float32),
                  "explained_e": extras[0]["explained"]}
    g_layers = [layer for layer in layers if "xy_g" in extras[layer]]
    if g_layers:
        projection["xy_g"] = np.stack([extras[layer]["xy_g"] for layer in g_layers]).astype(np.float32)
        projection["explained_g"] = np.stack([extras[layer]["explained_g"] for layer in g_layers])
    return {"cka_layers": {"debiased": layers_deb}, "cka_sample": sample_arrays, "projection": projection}


def cka_steps(samples: Sequence[Callable[[int], np.ndarray]], steps: Sequence[int],
              tokens_seen: Sequence[int | None], n_layers: int, device: str = "cpu") -> tuple[dict[int, list[MetricRow]], dict[str, np.ndarray]]:
    """Step × step CKA per layer from each snapshot's stored sample (`samples[k](layer)` → (n, H)).

    Returns rows per step (`cka_prev_snapshot`: CKA with the previous measured snapshot; `cka_final`: with the
    last one) and the arrays {"steps", "tokens_seen", "debiased" (L+1, S, S), "biased" (L+1, S, S)}.
    """
    s = len(steps)
    deb = np.full((n_layers, s, s), np.nan)
    bias = np.full((n_layers, s, s), np.nan)
    rows: dict[int, list[MetricRow]] = {st: [] for st in steps}
    for layer in range(n_layers):
        xs = [torch.from_numpy(load(layer)).to(device) for load in samples]
        both = C.cka_matrices(xs, dtype=METRIC_DTYPE)
        deb[layer], bias[layer] = both["debiased"], both["biased"]
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


def _mean_distance(h: torch.Tensor, e: torch.Tensor) -> float:
    """Mean ‖h_i − e_i‖ over the rows, by chunks (no (N, H) temporary)."""
    total = 0.0
    step = chunk_rows(h.shape[1])
    for start in range(0, h.shape[0], step):
        total += float(torch.linalg.vector_norm(h[start : start + step] - e[start : start + step], dim=1)
                       .sum(dtype=torch.float64))
    return total / max(1, h.shape[0])


def _pca2(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Project (n, H) onto its first two principal axes → ((n, 2) float32, (2,) explained-variance ratios).

    The covariance is formed in x's dtype around the float64 mean and decomposed in float64; the ratios divide
    the top two eigenvalues by the sum of all of them. Signs are fixed so that each axis's projections have
    positive skew (a deterministic convention)."""
    c = x - (sum_rows(x) / max(1, x.shape[0])).to(x.dtype)
    cov = gram_matrix(c).to(torch.float64)
    vals, top = _top_eigenvectors(cov, 2)
    top = top.to(x.dtype)
    xy = c @ top
    sign = torch.sign((xy.double() ** 3).sum(0))
    sign[sign == 0] = 1
    xy = xy * sign.to(xy.dtype)
    total = float(vals.clamp_min(0).sum())
    ratio = (vals[-2:].flip(0).clamp_min(0) / total).cpu().numpy() if total > 0 else np.zeros(2)
    if ratio.size < 2:
        ratio = np.pad(ratio, (0, 2 - ratio.size))
    if xy.shape[1] < 2:
        xy = torch.nn.functional.pad(xy, (0, 2 - xy.shape[1]))
    return xy.float().cpu().numpy(), np.asarray(ratio, dtype=np.float64)


def _top_eigenvectors(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenvalues (ascending) of the symmetric float64 matrix `a` and the eigenvectors of its k largest
    (columns, largest first): eigenvalues by LAPACK, the vectors by two steps of inverse iteration shifted just
    past each eigenvalue and a Rayleigh–Ritz step on their span (which also sorts out a degenerate pair); the
    full decomposition where a shifted factorisation fails. About twice as fast as `eigh` for k ≪ H."""
    with single_thread():  # a small (H × H) problem: threads only add overhead
        vals = torch.linalg.eigvalsh(a)
        n = a.shape[0]
        k = min(k, n)
        scale = float(vals.abs().max()) if n else 0.0
        eye = torch.eye(n, dtype=a.dtype, device=a.device)
        start = torch.ones(n, 1, dtype=a.dtype, device=a.device) / math.sqrt(max(n, 1))
        vecs = []
        for j in range(1, k + 1):
            lu, piv, info = torch.linalg.lu_factor_ex(a - (vals[-j] + 1e-10 * scale) * eye)
            if int(info) != 0:
                break
            v = start + 1e-3 * torch.arange(n, dtype=a.dtype, device=a.device)[:, None] / max(n, 1)
            for _ in range(2):
                v = torch.linalg.lu_solve(lu, piv, v)
                v = v / torch.linalg.vector_norm(v).clamp_min(1e-300)
            vecs.append(v)
        if len(vecs) < k or not all(bool(torch.isfinite(v).all()) for v in vecs):
            return vals, torch.linalg.eigh(a)[1][:, -k:].flip(1)
        q = torch.linalg.qr(torch.cat(vecs, 1))[0]
        w, rot = torch.linalg.eigh(q.T @ a @ q)
        return vals, (q @ rot).flip(1)
