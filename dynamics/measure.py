"""Measuring each snapshot: of the selected snapshots, those with a per-snapshot family still to do (not stored
with the same settings, or `--force`), each loaded and extracted once (`dynamics.extract`), its families measured
(`dynamics.families`, through `dynamics.engine`) and each family stored in its own transaction, so that a kill
loses at most the snapshot in progress and a rerun resumes. Under torchrun each process measures its share
(`dynamics.shards.share`)."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from dynamics import engine, shards
from dynamics import extract as ex
from dynamics import families as fam
from dynamics.config import FAMILIES, ProbeConfig
from dynamics.probe_run import ProbeSummary, Setup, SnapshotHook
from dynamics.series import Series, Snapshot

Done = dict[tuple[str, int, str], str]  # (run, step, family) → params of what the store holds


def wanted(metrics: Sequence[str]) -> list[str]:
    order = {"anchors": ["anchors", "drift"], "context": ["context"], "geometry": ["geometry"]}
    return [f for m in FAMILIES if m in metrics for f in order[m]]


def family_params(series: Series, cfg: ProbeConfig) -> dict[str, str]:
    """Each family's settings string: a stored family whose string differs is measured again."""
    return {
        "anchors": engine.family_params("anchors", surprisal="nats"),
        "drift": engine.family_params("drift", final=series.final.step),
        "context": engine.family_params("context", window=cfg.window, negatives=cfg.tc_negatives,
                                     temperature=cfg.tc_temperature, max_distance=cfg.max_distance, seed=cfg.seed),
        "geometry": engine.family_params("geometry", neighbours=cfg.neighbour_tokens, seed=cfg.seed, ln_outliers="3std"),
    }


@dataclass
class SeriesState:
    """What one series' snapshots share: the families' params, the final snapshot's embedding matrix (for drift,
    loaded once) and the last activations, whose arrays the next extraction overwrites."""

    series: Series
    params: dict[str, str]
    final_matrix: np.ndarray | None = None
    spare: ex.Activations | None = None


Work = list[tuple[Series, Snapshot, list[str]]]  # (series, snapshot, families still to measure there)


def to_do(setup: Setup, summary: ProbeSummary, done: Done, selected: dict[str, list[Snapshot]],
          series_list: Sequence[Series]) -> Work:
    """The selected snapshots with a per-snapshot family still to do (not stored with the same params, or
    `--force`), with those families; the others are recorded as reused."""
    cfg = setup.cfg
    work: Work = []
    for series in series_list:
        params = family_params(series, cfg)
        families = [f for f in wanted(cfg.metrics)
                    if not (f == "drift" and (series.name in setup.no_drift or setup.defer_drift))]
        for snap in selected[series.name]:
            needed = [f for f in families if cfg.force or done.get((series.name, snap.step, f)) != params[f]]
            summary.reused += [(series.name, snap.step, f) for f in families if f not in needed]
            if needed:
                work.append((series, snap, needed))
    return work


def measure_snapshots(setup: Setup, summary: ProbeSummary, work: Work, n_selected: int,
                      on_snapshot: SnapshotHook | None, place: shards.Place) -> None:
    """This process's share of `work` (all of it outside torchrun; `shards.share`, the same split on every process,
    under it): each snapshot extracted once → registered metrics → store, one family per transaction."""
    mine = shards.share(work, place)
    stored = n_selected - len(work)
    bar = tqdm(total=stored + len(mine), initial=stored, disable=not setup.cfg.progress or not place.main,
               unit="snapshot", dynamic_ncols=True, desc="probe")
    # Each snapshot's model is freed with a gc pass (transformers models hold reference cycles). Freezing what
    # exists now (imported modules, the probe set) keeps those passes from rescanning it every time (without a
    # collection first: ≈ 0.2 s, and garbage frozen now is only collected after the run); after each snapshot
    # what the model load imported lazily (≈ 200k objects, 0.1 s per pass) is frozen too.
    gc.freeze()
    try:
        state: SeriesState | None = None
        for series, snap, needed in mine:
            if state is None or state.series is not series:
                state = None  # the last series' activations and final embedding matrix go before the next's come
                gc.collect()
                state = SeriesState(series, family_params(series, setup.cfg))
            bar.set_description(f"{series.name} step {snap.step}" + (f" (rank 0 of {place.world})"
                                                                     if place.distributed else ""))
            measure_snapshot(setup, summary, state, snap, needed)
            bar.update(1)
            if on_snapshot is not None:
                on_snapshot(snap, needed)
            gc.collect()
            gc.freeze()
        del state
        gc.collect()
    finally:
        gc.unfreeze()
        bar.close()


def measure_snapshot(setup: Setup, summary: ProbeSummary, state: SeriesState, snap: Snapshot, needed: list[str]) -> None:
    """Extract one snapshot once and store each needed family in its own transaction."""
    series, probe = state.series, setup.probe
    is_final = snap.path == series.final.path
    if "drift" in needed and state.final_matrix is None and not is_final:
        state.final_matrix = ex.embedding_matrix(series.final.path)
    t0 = time.perf_counter()
    acts = None
    if set(needed) - {"drift"}:
        acts = ex.extract_snapshot(snap.path, probe, masked_pass="anchors" in needed,
                                   batch_size=setup.cfg.batch_size, device=setup.device, reuse=state.spare)
        emb, notes = acts.emb_matrix, acts.notes
    else:
        emb, notes = ex.embedding_matrix(snap.path), []
    extraction = time.perf_counter() - t0
    per_layer = fam.measure(acts, setup.prep, needed) if acts is not None else {}
    for k, family in enumerate(needed):
        t1 = time.perf_counter()
        if family == "drift":
            result = fam.drift(emb, emb if is_final else state.final_matrix, probe, probe.special_ids)
        else:
            result = per_layer[family]
        if k == 0:  # extraction notes (e.g. no MLM head) go with the first family stored
            result.notes = list(notes) + result.notes
        seconds = time.perf_counter() - t1 if result.seconds is None else result.seconds
        setup.store.write_family(run=series.name, step=snap.step, tokens_seen=snap.tokens_seen, family=family,
                                 probe_hash=probe.hash, params=state.params[family], result=result,
                                 seconds=seconds + (extraction if k == 0 else 0.0))
        summary.computed.append((series.name, snap.step, family))
    if acts is not None:
        acts.masked = None
        state.spare = acts
