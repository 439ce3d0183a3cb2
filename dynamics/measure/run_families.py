"""Run-level families: analyses of a whole series, made after its snapshots are measured, from what the
per-snapshot families stored.

Each is one declaration (`RunFamily`): the stored family name, the per-snapshot family it follows (`--metrics`),
the array kind it reads from every measured snapshot, whether its registered metrics give a value per measured
snapshot or one per run, the settings that change its values, and `build`, which turns the stored arrays into
the registered functions' inputs per layer plus the arrays to keep. `measure` is the one path from there to
stored rows (`dynamics.measure.engine`: "not applicable" → no row, ValueError → NULL with a note) and one transaction
(`Store.write_run_family`). A new run-level analysis is a build function, a declaration in `RUN_FAMILIES`, its
registered metrics (scope "series") and a reference test.

- `cka_steps` (after geometry, reads `cka_sample`): step × step debiased linear CKA per layer.
- `ln_outliers` (after geometry, reads `ln_weights`): persistence of the LayerNorm outlier dimensions.
- `acquisition` (after anchors, reads `word_surprisal`): word learning curves (`dynamics.results.word_curves`).

Onsets and phases (`write_onsets_and_phases`) are derived from all of a run's metric rows afterwards, into
their own tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from dynamics.find.series import Series
from dynamics.measure import engine
from dynamics.measure import probe_set as ps
from dynamics.metrics import cka as C
from dynamics.metrics.acquisition import STATUS, WordCurves
from dynamics.results import store as st
from dynamics.results.onsets import curve_rows, series_onsets
from dynamics.results.phases import series_phases


@dataclass
class SeriesInputs:
    """What a run-level family reads: the run's stored per-snapshot arrays of its kind, in step order."""

    store: st.Store
    series: Series
    probe: ps.ProbeSet
    steps: list[int]
    files: list[str]  # the arrays' files, relative to the store, one per step
    tokens_seen: list[int | None]
    seed: int
    device: str

    def load(self, k: int) -> dict[str, np.ndarray]:
        return self.store.load_array(self.files[k])

    @cached_property
    def train_counts(self) -> np.ndarray | None:
        """The run's training token counts (None without usable ones), read once for its settings and its build."""
        return ps.load_counts(self.series.data_path("token_counts_path"), int(self.probe.ids.max()) + 1)


@dataclass
class Built:
    """A run-level family's registered inputs per layer (`layers`, last layer `last`), arrays to store at step −1,
    and notes."""

    layers: dict[int, dict[str, Any]]
    last: int
    arrays: dict[str, dict[str, np.ndarray]]
    notes: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)  # notes that follow the metrics' own


@dataclass(frozen=True)
class RunFamily:
    name: str  # the stored family
    after: str  # the per-snapshot family (`--metrics`) whose arrays it reads
    reads: str  # the array kind stored per snapshot
    per_step: bool  # its metrics give a value per measured snapshot; else one per run, at the last measured step
    build: Callable[[SeriesInputs], Built | None]  # None: nothing to measure (e.g. the architecture changed)
    settings: Callable[[SeriesInputs], dict[str, Any]] = lambda inputs: {}  # besides the steps


# --------------------------------------------------------------------------------------------- the families

def build_cka_steps(inputs: SeriesInputs) -> Built:
    """Step × step debiased and biased linear CKA per layer from each snapshot's stored CKA sample (one layer of
    every snapshot in memory at a time)."""
    root = inputs.store.root
    with np.load(root / inputs.files[0], allow_pickle=False) as first:
        n_layers = sum(1 for k in first.files if k.startswith("h") and k[1:].isdigit())
    s = len(inputs.steps)
    deb, bias = np.full((n_layers, s, s), np.nan), np.full((n_layers, s, s), np.nan)
    for layer in range(n_layers):
        xs = []
        for file in inputs.files:
            with np.load(root / file, allow_pickle=False) as data:
                xs.append(torch.from_numpy(data[f"h{layer}"]).to(inputs.device))
        both = C.cka_matrices(xs, dtype=engine.METRIC_DTYPE)
        deb[layer], bias[layer] = both["debiased"], both["biased"]
        del xs
    arrays = {"steps": np.asarray(inputs.steps, dtype=np.int64),
              "tokens_seen": np.asarray([-1 if t is None else t for t in inputs.tokens_seen], dtype=np.int64),
              "debiased": deb, "biased": bias}
    return Built({layer: {"cka_steps": deb[layer]} for layer in range(n_layers)}, n_layers - 1,
                 {"cka_steps": arrays})


def build_ln_outliers(inputs: SeriesInputs) -> Built | None:
    """Each layer's LayerNorm outlier dimensions at every snapshot ((S, H) masks; None for a layer without a norm,
    so its metrics are not applicable); None when the architecture changed within the series."""
    parts = [inputs.load(k) for k in range(len(inputs.files))]
    if len({p["outlier"].shape for p in parts}) != 1:
        return None  # nothing to compare
    stacked = np.stack([p["outlier"] for p in parts])  # (S, L+1, H)
    has_norm = parts[-1]["has_norm"]
    layers = {layer: {"outlier_masks": stacked[:, layer] if has_norm[layer] else None}
              for layer in range(stacked.shape[1])}
    arrays = {"steps": np.asarray(inputs.steps, dtype=np.int64), "outlier": stacked,
              "weight": np.stack([p["weight"] for p in parts])}
    return Built(layers, stacked.shape[1] - 1, {"ln_outliers": arrays})


def acquisition_settings(inputs: SeriesInputs) -> dict[str, Any]:
    source = "training_counts" if inputs.train_counts is not None else "probe_set"
    return {"frequency": source, "seed": inputs.seed}


def build_acquisition(inputs: SeriesInputs) -> Built:
    """The run's word learning curves (`WordCurves`, fitted once) from each snapshot's per-word-type surprisal,
    stored at the last layer (where the head's metrics are), and the `word_acquisition` array
    (`dynamics.results.word_curves`' module docstring lists its fields)."""
    probe, store = inputs.probe, inputs.store
    vocab = int(probe.ids.max()) + 1
    train = inputs.train_counts
    counts = train if train is not None else np.bincount(probe.tokens, minlength=vocab)
    frequency = counts[probe.word_types].astype(np.int64) if counts.size else np.zeros(len(probe.word_types), np.int64)
    parts = [inputs.load(k) for k in range(len(inputs.files))]
    wc = WordCurves(np.asarray(inputs.steps, dtype=np.int64), np.stack([p["mean"] for p in parts], axis=1),
                    parts[-1]["count"], frequency, int(parts[-1]["vocab"]), inputs.seed)
    run = inputs.series.name  # named in the notes: a report over several runs lists each run's
    notes = [] if train is not None else [f"word acquisition of {run}: no training token counts, so frequencies are "
                                          "the probe set's own counts"]
    seen = wc.counts > 0
    tally = ", ".join(f"{int((wc.status[seen] == k).sum())} {name}" for k, name in enumerate(STATUS)
                      if (wc.status[seen] == k).any())
    after = [f"word acquisition of {run} over {len(inputs.steps)} snapshots, {int(seen.sum())} word types with masked "
             f"occurrences: {tally}"]
    fits = wc.fits()
    probe_file = store.probe_sets().set_index("hash").loc[probe.hash, "file"]
    with np.load(store.root / probe_file, allow_pickle=False) as data:
        words = [str(w) for w in data["word_type_strings"]]
    array = {"word_types": np.asarray(probe.word_types, dtype=np.int64), "words": np.asarray(words),
             "counts": wc.counts, "frequency": wc.frequency, "surprisal": wc.surprisal,
             **{p: np.array([getattr(f, p) for f in fits]) for p in ("hi", "lo", "k", "x0")},
             "aoa": wc.aoa, "status": wc.status, "status_names": np.asarray(STATUS), "steps": wc.steps,
             "tokens_seen": np.asarray([-1 if t is None else t for t in inputs.tokens_seen], np.int64),
             "vocab": np.array(wc.vocab, dtype=np.int64)}
    masked = store.metrics("masked_surprisal", run=inputs.series.name, probe_hash=probe.hash)
    layer = int(masked["layer"].max()) if not masked.empty else 0  # the head's layer
    return Built({layer: {"word_curves": wc}}, layer, {"word_acquisition": array}, notes, after)


RUN_FAMILIES: tuple[RunFamily, ...] = (
    RunFamily("cka_steps", after="geometry", reads="cka_sample", per_step=True, build=build_cka_steps),
    RunFamily("ln_outliers", after="geometry", reads="ln_weights", per_step=True, build=build_ln_outliers),
    RunFamily("acquisition", after="anchors", reads="word_surprisal", per_step=False, build=build_acquisition,
              settings=acquisition_settings),
)


# ------------------------------------------------------------------------------------------------ the engine

def pending(store: st.Store, family: RunFamily, series: Series, probe: ps.ProbeSet, seed: int, device: str
            ) -> SeriesInputs | None:
    """The run's stored arrays of the family's kind (None when there are none)."""
    rows = store.arrays(family.reads, run=series.name, probe_hash=probe.hash)
    rows = rows[rows["step"] >= 0].sort_values("step")
    if rows.empty:
        return None
    steps = [int(x) for x in rows["step"]]
    return SeriesInputs(store, series, probe, steps, list(rows["file"]), store.tokens_seen(series.name, steps),
                        seed, device)


def params(family: RunFamily, inputs: SeriesInputs) -> str:
    return engine.family_params(family.name, steps=engine.steps_param(inputs.steps), **family.settings(inputs))


def measure(family: RunFamily, inputs: SeriesInputs, params: str) -> bool:
    """Build the family's inputs, compute its registered metrics and store everything in one transaction;
    False when `build` found nothing to measure."""
    built = family.build(inputs)
    if built is None:
        return False
    out = engine.Collector()
    for text in built.notes:
        out.note(text)
    steps, tokens = inputs.steps, inputs.tokens_seen
    if family.per_step:
        per_step = engine.per_step_rows(family.name, built.layers, built.last, len(steps), out)
        step_rows = {steps[k]: (tokens[k], rows) for k, rows in per_step.items()}
    else:
        for layer, layer_inputs in built.layers.items():
            out.measure(family.name, "series", layer, built.last, layer_inputs)
        step_rows = {steps[-1]: (tokens[-1], out.rows)}  # an analysis of the whole series up to its last step
    for text in built.after:
        out.note(text)
    inputs.store.write_run_family(run=inputs.series.name, family=family.name, probe_hash=inputs.probe.hash,
                                  params=params, step_rows=step_rows, arrays=built.arrays, notes=out.notes)
    return True


def write_onsets_and_phases(store: st.Store, probe_hash: str, run: str) -> None:
    """Rewrite the run's onsets (`dynamics.results.onsets`) and phases (`dynamics.results.phases`), each in one
    transaction, from all of its metric rows under the probe set (read once for both)."""
    rows = curve_rows(store.metrics(run=run, probe_hash=probe_hash))
    store.write_onsets(probe_hash, run, series_onsets(rows))
    store.write_phases(probe_hash, run, series_phases(rows))
