"""The per-snapshot families: one snapshot's activations → the inputs of the registered functions, per layer.

Families: `anchors` (layers 0…L, the masked variant at L; plus the `word_surprisal` array), `drift` (once per
snapshot), `context` (layers 1…L), `geometry` (layers 0…L, the layer-pair metrics from the layer × layer CKA, and
the arrays `cka_layers`, `cka_sample`, `projection`, `ln_weights`), and the opt-in `attention` and `copying`
(layers 1…L, from the per-head attention sums the extraction reduced; plus their per-head arrays
`attention_heads` and `copying_heads`, layers × heads per quantity). Which metric names each stores, at which
layers, and the function that computes each is the metric registry (`dynamics.metrics.registry`); this module
only builds the inputs the registered functions ask for, and `dynamics.measure.engine` turns them into rows (as it does
for the run-level families of `dynamics.measure.run_families`).

Every registered function is called with the layer wrapped once as a `Rows` (float32, as extracted, on the metric
device), so that row norms, unit rows, groupings and the neighbour subsample's Gram matrix are computed once
per layer and shared; sums behind every mean are float64, small decompositions float64, and near-ties are
re-checked in float64 (see `dynamics.metrics.rows`, "Precision"): stored values agree with a float64
computation to ~1e-7 relative (RankMe, whose near-zero singular values are at the data's own float32 noise,
to ~3e-8). A metric that is undefined for the input (e.g. no word type occurs twice) is stored as NULL with a
note.

Threads: on the CPU, measure() runs the per-layer work of all requested families on as many worker threads
as torch has intra-op threads (`dynamics.measure.threads`, as extraction runs its forward batches), each with one torch
thread and numpy's BLAS on one thread (`metrics.blas.numpy_blas`), largest tasks first. Measured on 2 cores
this is 15–20% faster than running each operation on both threads one layer at a time; results are assembled
in layer order and do not depend on the schedule.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dynamics.measure.agreement import OUTPUT_SAMPLE, output_sample
from dynamics.measure.engine import METRIC_DTYPE, Collector
from dynamics.measure.extract import Activations, head_note
from dynamics.measure.probe_set import ProbeSet
from dynamics.measure.threads import cpu_workers, map_on_threads
from dynamics.metrics import cka as C
from dynamics.metrics.acquisition import word_surprisal
from dynamics.metrics.anchors import MaskedPass
from dynamics.metrics.context import TCDraws, draw_tc
from dynamics.metrics.grids import BlockLayout
from dynamics.metrics.projection import pca2
from dynamics.metrics.rogue import outlier_dimensions
from dynamics.metrics.rows import Rows, Workspace
from dynamics.results.store import FamilyResult


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
    tc_draws: TCDraws | None  # the TC loss's anchors, positives and negatives, fixed for all snapshots
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
    tc_draws = None
    try:
        tc_draws = draw_tc(seq_ids, positions, window, tc_negatives, torch.Generator().manual_seed(seed))
    except ValueError as exc:
        notes.append(f"tc_loss not computed: {exc}")
    seq_dev, pos_dev = seq_ids.to(dev), positions.to(dev)
    try:
        layout = BlockLayout.build(seq_dev, pos_dev)
    except ValueError:  # a repeated (sequence, position): the metrics report it themselves
        layout = None
    prep = Prepared(probe, dev, seq_dev, pos_dev, torch.from_numpy(probe.word_type.astype(np.int64)).to(dev),
                    probe.freq_bin.astype(np.int64), torch.from_numpy(nb).to(dev), layout,
                    None if tc_draws is None else tc_draws.to(dev),
                    window, max_distance, tc_temperature, seed,
                    np.array([id_to_token[t] for t in probe.tokens[probe.projection_index]]))
    return prep, notes


def _layer(acts: Activations, layer: int, dev: torch.device) -> torch.Tensor:
    """Layer `layer`'s (N, H) hidden states as a float32 tensor on `dev` (a view of the array on the CPU)."""
    return torch.from_numpy(acts.hidden[layer]).to(dev, METRIC_DTYPE)


def _rows(x: np.ndarray | torch.Tensor, dev: torch.device, workspace: Workspace | None = None,
          overwrite: bool = False) -> Rows:
    return Rows(torch.as_tensor(x).to(dev, METRIC_DTYPE), METRIC_DTYPE, workspace=workspace, overwrite=overwrite)


class _Inputs(dict):
    """The inputs of one layer's registered functions (`registry.INPUTS`), some built only when first asked for."""

    def __init__(self, values: dict[str, Any], lazy: dict[str, Callable[[], Any]] | None = None) -> None:
        super().__init__(values)
        self._lazy = lazy or {}

    def __missing__(self, name: str) -> Any:
        if name not in self._lazy:
            raise KeyError(name)
        value = self[name] = self._lazy[name]()
        return value


def _common_inputs(prep: Prepared, layer: int) -> dict[str, Any]:
    return {"layer": layer, "seq_ids": prep.seq_ids, "positions": prep.positions, "word_type": prep.word_type,
            "freq_bin": prep.freq_bin, "bin_names": tuple(prep.probe.bin_names), "layout": prep.layout,
            "seed": prep.seed, "window": prep.window, "max_distance": prep.max_distance, "tc_draws": prep.tc_draws,
            "tc_temperature": prep.tc_temperature, "masked": None}


# ------------------------------------------------------------------------------------------------- families

PER_LAYER = ("anchors", "context", "geometry")


def measure(acts: Activations, prep: Prepared, families: Sequence[str]) -> dict[str, FamilyResult]:
    """The registered metrics of the per-layer families among `families` (anchors, context, geometry) of one
    snapshot.

    Geometry and context are one task per layer (layers are independent given the activations), anchors one
    task (its layers share E[x_i] and e; the masked variant included). On the CPU, when torch has T ≥ 2
    intra-op threads, the tasks of all requested families run on T worker threads with one torch thread each
    (and numpy's BLAS, `numpy_blas`), largest first: small and memory-bound operations then overlap instead of
    each being split T ways (measured on 2 cores: 15–20% faster than T-threaded operations one layer at a
    time, and no OpenMP spin-waiting on a busy machine). Results are assembled in layer order, so they do not
    depend on the schedule. `FamilyResult.seconds` holds each family's summed task time.
    """
    requested = list(families)
    families = [f for f in PER_LAYER if f in families]
    last = acts.hidden.shape[0] - 1
    tasks: list[tuple[str, int]] = []
    if "context" in families:
        tasks += [("context", last)]  # the longest task: the last layer adds the TC loss
    if "geometry" in families:
        tasks += [("geometry", layer) for layer in range(last + 1)]
    if "anchors" in families:
        tasks += [("anchors", last)]  # all layers in one task: they share E[x_i] and e
    if "context" in families:
        tasks += [("context", layer) for layer in range(last - 1, 0, -1)]
    work = {"geometry": _geometry_layer, "context": _context_layer, "anchors": _anchors_all}

    def run(task: tuple[str, int]) -> tuple[Collector, Any, float]:
        kind, layer = task
        workspace = prep.workspaces.get()
        try:
            t0 = time.perf_counter()
            out, extra = work[kind](acts, prep, layer, workspace)
            return out, extra, time.perf_counter() - t0
        finally:
            prep.workspaces.put(workspace)

    done = map_on_threads(run, tasks, _workers(prep), numpy=True, name="metrics")
    parts: dict[str, list[tuple[int, Collector, Any, float]]] = {f: [] for f in families}
    for (kind, layer), (out, extra, seconds) in zip(tasks, done, strict=True):
        parts[kind].append((layer, out, extra, seconds))
    results: dict[str, FamilyResult] = {}
    for family in families:
        merged = Collector()
        extras = {}
        for layer, out, extra, _ in sorted(parts[family], key=lambda item: item[0]):
            merged.merge(out)
            extras[layer] = extra
        arrays = _geometry_arrays(prep, extras) if family == "geometry" and extras else None
        if family == "anchors" and extras.get(last):
            arrays = extras[last]
        if family == "geometry" and arrays is not None and acts.norm_weights is not None:
            arrays["ln_weights"] = _ln_weights(acts.norm_weights)
        if family == "geometry" and arrays is not None:  # metrics of two layers, from the layer × layer CKA
            deb = arrays["cka_layers"]["debiased"]
            for layer in range(1, deb.shape[0]):
                merged.measure(family, "layer_pair", layer, last, {"cka_layers": deb, "layer": layer})
        result = merged.result(arrays)
        if family == "anchors" and acts.emb_rows.shape[1] != acts.hidden.shape[2]:
            result.notes.insert(0, f"word embeddings ({acts.emb_rows.shape[1]}-d) and hidden states "
                                   f"({acts.hidden.shape[2]}-d) differ in size: anchor_sim_word skipped (the masked "
                                   "variant, through the head, is kept)")
        result.seconds = sum(item[3] for item in parts[family])
        results[family] = result
    for family, build in (("attention", attention_family), ("copying", copying_family)):
        if family in requested:
            t0 = time.perf_counter()
            results[family] = build(acts)
            results[family].seconds = time.perf_counter() - t0
    return results


def attention_family(acts: Activations) -> FamilyResult:
    """The registered attention metrics of layers 1…L from the extraction's per-head sums, and their per-head
    values as the array `attention_heads` ({quantity: (L, heads)}). No rows (a note) when they were not read."""
    out = Collector()
    if acts.attention is None:
        out.note("attention not measured: the model's attention probabilities could not be read")
        return out.result()
    last = acts.hidden.shape[0] - 1
    for layer, sums in enumerate(acts.attention, start=1):
        out.measure("attention", "layer", layer, last, {"attention": sums,
                                                        "bidirectional_attention": None if sums.causal else sums})
    return out.result({"attention_heads": _stack([s.means() for s in acts.attention])})


def copying_family(acts: Activations) -> FamilyResult:
    """The registered copying metrics (dup_token_max, induction_max at layers 1…L, repeat_copy_accuracy at L) and
    the per-head array `copying_heads` ({quantity: (L, heads)})."""
    out = Collector()
    copy = acts.copying
    if copy is None:
        out.note("copying not measured: no copy blocks, or the attention probabilities could not be read")
        return out.result()
    last = acts.hidden.shape[0] - 1
    for layer, sums in enumerate(copy.sums, start=1):
        out.measure("copying", "layer", layer, last, {"copy_attention": sums,
                                                      "copy_predictions": copy.predictions if layer == last else None})
    if copy.predictions is None:
        out.note("repeat_copy_accuracy not measured: the model has no recognised head (or an MLM without a mask token)")
    return out.result({"copying_heads": _stack([s.means() for s in copy.sums])})


def _stack(per_layer: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{quantity: (L, heads) float64} from each layer's per-head means."""
    return {k: np.stack([m[k] for m in per_layer]) for k in per_layer[0]}


def _workers(prep: Prepared) -> int:
    """How many metric worker threads (`dynamics.measure.threads.cpu_workers`; 1 unless `prep.parallel`)."""
    return cpu_workers(prep.device) if prep.parallel else 1


def _anchors_all(acts: Activations, prep: Prepared, last: int, workspace: Workspace) -> tuple[Collector, dict | None]:
    """The registered anchors metrics of every layer (the masked variant at the last layer), plus the array of
    per-word-type surprisal the word-acquisition curves are made of (`word_surprisal`; None without a head)."""
    out = Collector()
    dev = prep.device
    word_emb = _rows(acts.emb_rows, dev)
    e = _rows(_layer(acts, 0, dev), dev)
    masked = _masked_pass(acts, prep, word_emb)
    if masked is None and acts.masked is None and acts.has_head:  # a missing head is noted by the extraction
        out.note("masked variant not measured: the tokenizer has no mask token")
    if (head := head_note(acts)) is not None:  # a causal LM: the masked variant is its next-token head
        out.note(head)
    for layer in range(last + 1):
        inputs = _common_inputs(prep, layer)
        inputs.update(h=e if layer == 0 else _rows(_layer(acts, layer, dev), dev), e=e, word_emb=word_emb,
                      masked=masked if layer == last else None)
        out.measure("anchors", "layer", layer, last, inputs)
    if masked is None:
        return out, None
    means, counts = word_surprisal(masked.surprisal, masked.word_type, len(prep.probe.word_types))
    arrays = {"word_surprisal": {"mean": means, "count": counts, "word_types": prep.probe.word_types,
                                 "vocab": np.array(acts.emb_matrix.shape[0], dtype=np.int64)}}
    if acts.masked is not None and (outputs := output_sample(acts.masked)) is not None:  # for seed agreement
        arrays[OUTPUT_SAMPLE] = outputs
    return out, arrays


def _masked_pass(acts: Activations, prep: Prepared, word_emb: Rows) -> MaskedPass | None:
    """The masked pass's outputs as metric inputs: T(h_L), h_L, the true tokens' E[x_i], ranks and bins."""
    m = acts.masked
    if m is None:
        return None
    dev = prep.device
    return MaskedPass(transform=_rows(m.transform, dev), hidden=_rows(m.hidden, dev),
                      targets=word_emb.subset(torch.from_numpy(m.index).to(dev)), rank=torch.from_numpy(m.rank),
                      bins=prep.freq_bin[m.index], surprisal=torch.from_numpy(m.surprisal),
                      word_type=prep.probe.word_type[m.index].astype(np.int64))


def drift(emb_matrix: np.ndarray, final_matrix: np.ndarray | None, probe: ProbeSet, special_ids: np.ndarray) -> FamilyResult:
    """The registered drift metrics (layer 0): the snapshot's embedding matrix against the final snapshot's."""
    out = Collector()
    assert final_matrix is not None
    inputs = {"emb_matrix": emb_matrix, "final_matrix": final_matrix, "special_ids": special_ids,
              "probe_tokens": probe.tokens, "freq_bin": probe.freq_bin.astype(np.int64),
              "bin_names": tuple(probe.bin_names)}
    out.measure("drift", "snapshot", 0, 0, inputs)
    return out.result()


def _context_layer(acts: Activations, prep: Prepared, layer: int, workspace: Workspace) -> tuple[Collector, None]:
    """The registered context metrics of g = h_layer − e (layer ≥ 1; the TC loss at the last layer)."""
    out = Collector()
    dev = prep.device
    e, h = _layer(acts, 0, dev), _layer(acts, layer, dev)
    g = _rows(torch.sub(h, e, out=workspace.get("g", tuple(h.shape), h.dtype, h.device)), dev,
              overwrite=True)  # g is only needed as unit rows (and its norms)
    inputs = _common_inputs(prep, layer)
    inputs["g"] = g
    out.measure("context", "layer", layer, acts.hidden.shape[0] - 1, inputs)
    return out, None


def _geometry_layer(acts: Activations, prep: Prepared, layer: int, workspace: Workspace) -> tuple[Collector, dict[str, Any]]:
    """The registered geometry metrics of one layer, plus its CKA sample and 2-D projections (of h, of g)."""
    out = Collector()
    dev = prep.device
    probe = prep.probe
    h = _rows(_layer(acts, layer, dev), dev, workspace)
    e_raw = _layer(acts, 0, dev)

    def neighbours() -> Rows:  # TwoNN (after collapsing duplicate rows) and uniformity share its Gram matrix
        sub = h.subset(prep.neighbour_index)
        sub.gram()
        return sub

    norm = None if acts.norm_weights is None or np.isnan(acts.norm_weights[layer]).any() else \
        torch.from_numpy(acts.norm_weights[layer])
    inputs = _Inputs(_common_inputs(prep, layer) | {"h": h, "norm_weight": norm},
                     {"neighbours": neighbours, "e": lambda: h if layer == 0 else _rows(e_raw, dev),
                      "g": lambda: None if layer == 0 else _rows(
                          torch.sub(h.x, e_raw, out=workspace.get("g", tuple(h.x.shape), h.x.dtype, h.x.device)),
                          dev, overwrite=True)})  # g: for its norms only
    out.measure("geometry", "layer", layer, acts.hidden.shape[0] - 1, inputs)
    extra: dict[str, Any] = {"sample": h.x[torch.from_numpy(probe.cka_index).to(dev)].float()}
    proj_idx = torch.from_numpy(probe.projection_index).to(dev)
    hp = h.x[proj_idx]
    extra["xy"], extra["explained"] = pca2(hp)
    if layer > 0:  # the projection of g = h − e (e is layer 0's h)
        extra["xy_g"], extra["explained_g"] = pca2(hp - e_raw[proj_idx])
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


def _ln_weights(weights: np.ndarray) -> dict[str, np.ndarray]:
    """The snapshot's LayerNorm scales (L+1, H) and their outlier dimensions (`rogue.outlier_dimensions`; all False
    for a layer without a norm), for the run-level persistence of the outliers."""
    outlier = np.zeros(weights.shape, dtype=bool)
    for layer, w in enumerate(weights):
        if np.isfinite(w).all():
            outlier[layer] = outlier_dimensions(w)
    return {"weight": weights.astype(np.float32), "outlier": outlier,
            "has_norm": np.isfinite(weights).all(axis=1)}


# ---------------------------------------------------------------------------------------------------- helpers
