"""The probe's pipeline, in the order it runs:

    check (find the series, select and check the snapshots, build the probe set; nothing written)
    → open the store (`dynamics.setup`: record runs, snapshots and their integrity flags, the probe set; forget
      what is stale)
    → measure each snapshot
    → run-level families (`dynamics.measure.run_families`), seed agreement per seed group
      (`dynamics.measure.agreement`, group scope), onsets and phases (`dynamics.results.phases`)
    → figures and report.md

`run_config` is the whole of it; `dynamics.probe` (the command line and `run()`) and `dynamics.follow` (measuring
snapshots as they are written) both call it. Under `torchrun --nproc_per_node N` (`dynamics.shards`) every stage is
a collective step: rank 0 checks all input while the others wait for its verdict (bad input stops every process
before anything is written), then opens the store; the others open it after, every process measures its share of
the snapshots still to do on its own device, and once all shares are stored rank 0 alone does the run-level work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dynamics import shards
from dynamics.config import FAMILIES, ProbeConfig, resolved_device
from dynamics.errors import ProbeError
from dynamics.find.inputs import Checked, check
from dynamics.find.series import Series, Snapshot
from dynamics.measure import agreement, engine
from dynamics.measure import extract as ex
from dynamics.measure import families as fam
from dynamics.measure import llc as llc_family
from dynamics.measure import run_families as rf
from dynamics.metrics import user
from dynamics.results import figures as figs
from dynamics.results import report
from dynamics.setup import Done, ProbeSummary, Setup, SnapshotHook, join, open_store, shares_note

FOLLOW_SHARDED = "--follow measures in one process: start it without torchrun (several processes share a series only)"


def run_config(dirs: Sequence[str | Path], cfg: ProbeConfig, on_snapshot: SnapshotHook | None = None, *,
               defer_drift: bool = False, print_flags: bool = True) -> ProbeSummary:
    """Check all input, then measure (module docstring). `defer_drift`: leave anchor drift (measured against the
    final snapshot) for a later call, as `--follow` does until a run's final snapshot exists; `print_flags`: print
    the snapshot-integrity flags to stderr. Rank 0 returns the whole run's summary, the others their share's."""
    place = shards.current()
    if place.distributed and cfg.follow:
        raise ProbeError(FOLLOW_SHARDED)

    def step(work: Callable[[], Any]) -> Any:  # every process does its part; when one fails, all stop here
        return shards.together(place, work)

    with shards.group(place), contextlib.ExitStack() as stores:
        device = step(lambda: shards.device(place, resolved_device(cfg)))
        # User metrics modules: imported and checked in the main thread of every process, before any input check
        # writes or any worker thread reads the registry; unregistered when the run ends.
        step(lambda: register_user_metrics(cfg, stores))
        checked = step(lambda: check(dirs, cfg) if place.main else None)
        # ---- nothing above writes; from here on the store is opened and results are added
        opened = step(lambda: open_store(checked, cfg, device, defer_drift, stores) if place.main else None)
        plan: Checked = shards.from_main(place, dataclasses.replace(checked, tok=None, done=opened[2])
                                         if place.main else None)
        # The others open the store only now, while rank 0 waits: opening reads the database file directly
        # (`store.check_ours`), which must not be written meanwhile.
        setup, summary, done = step(lambda: opened if place.main else join(plan, cfg, device, defer_drift, stores))
        n_selected = sum(len(v) for v in plan.selected.values())
        step(lambda: measure_snapshots(setup, summary, to_do(setup, summary, done, plan.selected, plan.series_list),
                                       n_selected, on_snapshot, place))
        parts = shards.gather(place, (summary.computed, device))
        if place.main and place.distributed:
            summary.computed = [unit for computed, _ in parts for unit in computed]
            summary.notes.append(shares_note(parts))
        step(lambda: finish(setup, summary, done, plan.series_list) if place.main else None)
    if print_flags and place.main:
        for flag in summary.flags:
            print(flag.line, file=sys.stderr)
    return summary


def register_user_metrics(cfg: ProbeConfig, stores: contextlib.ExitStack) -> None:
    """Import `--metrics-module`s for the run (unregistered when `stores` closes) and check that `--metrics`
    measures the families they join (`MetricsModuleError` otherwise)."""
    stores.enter_context(user.registered(cfg.metrics_module))
    user.check_measured(cfg.metrics)


# ------------------------------------------------------------------------------------------- each snapshot

def wanted(metrics: Sequence[str]) -> list[str]:
    order = {"anchors": ["anchors", "drift"], "context": ["context"], "geometry": ["geometry"],
             "attention": ["attention"], "copying": ["copying"], "llc": ["llc"]}
    return [f for m in FAMILIES if m in metrics for f in order[m]]


def family_params(series: Series, cfg: ProbeConfig) -> dict[str, str]:
    """Each family's settings string: a stored family whose string differs is measured again (the user metrics
    modules that join a family, by name and source hash, are among its settings)."""
    return {
        "anchors": engine.family_params("anchors", surprisal="nats", **_user("anchors"),
                                        **({"outputs": cfg.agreement_positions} if cfg.agreement_positions else {})),
        "drift": engine.family_params("drift", final=series.final.step),
        "context": engine.family_params("context", window=cfg.window, negatives=cfg.tc_negatives,
                                     temperature=cfg.tc_temperature, max_distance=cfg.max_distance, seed=cfg.seed,
                                     **_user("context")),
        "geometry": engine.family_params("geometry", neighbours=cfg.neighbour_tokens, seed=cfg.seed, ln_outliers="3std",
                                        **_user("geometry")),
        "attention": engine.family_params("attention", queries="content", sinks="special|0"),
        "copying": engine.family_params("copying", blocks=cfg.copy_blocks, length=cfg.copy_length, seed=cfg.seed,
                                        mask=0.15),
        "llc": llc_family.params(cfg),
    }


def _user(family: str) -> dict[str, str]:
    """`user=NAME:HASH,…` for a family that user metrics modules join; nothing otherwise."""
    mods = user.params(family)
    return {} if mods is None else {"user": mods}


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
    if set(needed) - {"drift", "llc"}:
        keep = agreement.sample_positions(probe, setup.cfg.agreement_positions, setup.cfg.seed) \
            if "anchors" in needed else None
        acts = ex.extract_snapshot(snap.path, probe, masked_pass="anchors" in needed, keep_log_probs=keep,
                                   batch_size=setup.cfg.batch_size, device=setup.device, reuse=state.spare,
                                   attention="attention" in needed, copying="copying" in needed)
        emb, notes = acts.emb_matrix, acts.notes
    else:
        emb, notes = ex.embedding_matrix(snap.path), []
    extraction = time.perf_counter() - t0
    per_layer = fam.measure(acts, setup.prep, needed) if acts is not None else {}
    for k, family in enumerate(needed):
        t1 = time.perf_counter()
        if family == "drift":
            result = fam.drift(emb, emb if is_final else state.final_matrix, probe, probe.special_ids)
        elif family == "llc":
            result = llc_family.measure(snap.path, probe, setup.cfg, setup.device)
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


# ---------------------------------------------------------------------------------------------- the run level

def finish(setup: Setup, summary: ProbeSummary, done: Done, series_list: list[Series]) -> None:
    """Run-level families over every stored snapshot result (whichever process measured it), onsets and phases, the
    store's notes on these runs, figures and report.md."""
    store, probe = setup.store, setup.probe
    for series in series_list:
        measure_run_families(setup, summary, done, series)
    names = [s.name for s in series_list]
    if {"anchors", "geometry"} & set(setup.cfg.metrics):  # seed agreement, from their stored arrays
        summary.notes += agreement.measure_groups(store, probe.hash, names)
    for name in names:
        rf.write_onsets_and_phases(store, probe.hash, name)
    notes = store.notes(probe.hash)
    summary.notes += sorted({n for r, n in zip(notes["run"], notes["note"], strict=True) if r in names})
    if setup.cfg.figures:
        summary.figures = figs.write_all(store, names, probe.hash, store.root / "figures")
    summary.report = report.write(store, series_list, probe, summary, store.root / "report.md")


def measure_run_families(setup: Setup, summary: ProbeSummary, done: Done, series: Series) -> None:
    """Each run-level family whose per-snapshot family was asked for, unless the store holds it for exactly the
    stored snapshots (and the same settings)."""
    for family in rf.RUN_FAMILIES:
        if family.after not in setup.cfg.metrics:
            continue
        inputs = rf.pending(setup.store, family, series, setup.probe, setup.cfg.seed, setup.device)
        if inputs is None:
            continue
        unit = (series.name, -1, family.name)
        params = rf.params(family, inputs)
        if not setup.cfg.force and done.get(unit) == params:
            summary.reused.append(unit)
        elif rf.measure(family, inputs, params):
            summary.computed.append(unit)
