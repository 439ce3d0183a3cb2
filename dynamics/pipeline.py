"""The probe's pipeline, in the order it runs:

    check (find the series, select and check the snapshots, build the probe set; nothing written)
    → open the store (record runs, snapshots and their integrity flags, the probe set; forget what is stale)
    → measure each snapshot (`dynamics.measure`)
    → run-level families (`dynamics.run_families`) and onsets
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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dynamics import families as fam
from dynamics import figures as figs
from dynamics import integrity, report, shards
from dynamics import probe_set as ps
from dynamics import run_families as rf
from dynamics import store as st
from dynamics.config import ProbeConfig, resolved_device
from dynamics.errors import ProbeError
from dynamics.inputs import Checked, architecture_kind, check
from dynamics.measure import Done, measure_snapshots, to_do
from dynamics.metrics import registry
from dynamics.probe_run import ProbeSummary, Setup, SnapshotHook
from dynamics.series import Series, Snapshot
from dynamics.tokens import TokenizerView

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
            summary.notes.append(_shares_note(parts))
        step(lambda: finish(setup, summary, done, plan.series_list) if place.main else None)
    if print_flags and place.main:
        for flag in summary.flags:
            print(flag.line, file=sys.stderr)
    return summary


# ------------------------------------------------------------------------------------------------ the store

def open_store(checked: Checked, cfg: ProbeConfig, device: str, defer_drift: bool, stores: contextlib.ExitStack
               ) -> tuple[Setup, ProbeSummary, Done]:
    """Create or open the store (closed with `stores`), record the runs, snapshots and probe set, and forget what
    is stale: rank 0's (the only process's) setup, summary so far, and what the store holds."""
    store = st.open(checked.out)
    stores.callback(store.close)
    st.remove_stale_tmp(store.root)
    flags, changed, unverified = record_snapshots(store, checked.series_list, checked.selected)
    assert checked.tok is not None
    _record_probe_set(store, checked.probe, checked.tok)
    store.write_definitions(registry.load().values())  # so that readers label curves from the store alone
    for s in checked.series_list:
        meta = {**s.meta, "probe_device": device, "architecture_kind": architecture_kind(s.final)}
        store.upsert_run(s.name, s.run_dir, s.kind, s.meta.get("objective"), meta)
    prep, prep_notes = _prepare(checked.probe, cfg, device, checked.tok.id_to_token())
    summary = ProbeSummary(store.root, store.path, checked.probe.hash, notes=list(checked.probe.notes) + prep_notes,
                           flags=flags)
    done = store.completed_params(checked.probe.hash)
    summary.notes += forget_stale(done, checked.series_list, changed)
    summary.notes += list(checked.no_drift.values()) + unverified
    setup = Setup(store, checked.probe, prep, cfg, device, dict(checked.no_drift), defer_drift)
    return setup, summary, done


def join(plan: Checked, cfg: ProbeConfig, device: str, defer_drift: bool, stores: contextlib.ExitStack
         ) -> tuple[Setup, ProbeSummary, Done]:
    """The setup of a process other than rank 0: the store rank 0 opened, rank 0's view of what it holds, and the
    probe set's tensors on this process's device."""
    store = st.open(plan.out)
    stores.callback(store.close)
    prep, _ = _prepare(plan.probe, cfg, device, plan.id_to_token)  # its notes are rank 0's to report
    setup = Setup(store, plan.probe, prep, cfg, device, dict(plan.no_drift), defer_drift)
    return setup, ProbeSummary(store.root, store.path, plan.probe.hash), dict(plan.done)


def _record_probe_set(store: st.Store, probe: ps.ProbeSet, tok: TokenizerView) -> None:
    probe_file = f"arrays/probe-{probe.hash[:16]}.npz"
    if not (store.root / probe_file).is_file():
        probe.save(store.root / probe_file, tok.id_to_token())
    store.add_probe_set(hash=probe.hash, source=probe.source, n_blocks=probe.n_blocks, block_size=probe.block_size,
                        n_tokens=probe.n_tokens, n_masked=int(probe.masked.sum()), n_word_types=len(probe.word_types),
                        freq_source=probe.freq_source, tokenizer_hash=probe.tokenizer_hash, file=probe_file,
                        notes=probe.notes)


def _prepare(probe: ps.ProbeSet, cfg: ProbeConfig, device: str, id_to_token: list[str]
             ) -> tuple[fam.Prepared, list[str]]:
    """The probe set's tensors and fixed draws on `device` (one call for every process, so that all measure on
    the same draws)."""
    return fam.prepare(probe, device, window=cfg.window, tc_negatives=cfg.tc_negatives,
                       tc_temperature=cfg.tc_temperature, max_distance=cfg.max_distance,
                       neighbour_tokens=cfg.neighbour_tokens, seed=cfg.seed, id_to_token=id_to_token)


def record_snapshots(store: st.Store, series_list: list[Series], selected: dict[str, list[Snapshot]]
                     ) -> tuple[list[integrity.Flag], dict[str, set[int]], list[str]]:
    """Record each series' snapshots in the store with the hash of their weights (the snapshots to be measured are
    hashed unless the store holds a hash of their unchanged files), and store and return its integrity flags, with
    the steps of each run whose weights differ from the hash recorded when they were last seen (a run trained
    again under the same name: its stored results are stale) and notes on what could not be checked (a damaged
    training log, named)."""
    flags, changed, unverified = [], {}, []
    for s in series_list:
        known = store.snapshots(s.name)
        cached = integrity.cached_entries(zip(known["step"], known["info"], strict=True))
        entries = integrity.hash_snapshots(s.snapshots, {x.path for x in selected[s.name]}, cached)
        changed[s.name] = {step for step, e in entries.items()
                           if step in cached and cached[step].get("sha256") not in (None, e.get("sha256"))}
        store.upsert_snapshots((s.name, x.step, x.tokens_seen, str(x.path),
                                {**x.info, **({integrity.HASH_KEY: entries[x.step]} if x.step in entries else {})})
                               for x in s.snapshots)
        records, rates = integrity.records(s, entries), integrity.learning_rates(s)
        found = integrity.check_series(records, rates=rates)  # flags only on evidence read (a damaged log: a note)
        store.replace_notes(run=s.name, family=integrity.FAMILY, probe_hash=integrity.PROBE_HASH,
                            notes=integrity.note_rows(found))
        flags += found
        unverified += integrity.evidence_notes(records, rates)
    return flags, changed, unverified


def forget_stale(done: Done, series_list: list[Series], changed: dict[str, set[int]]) -> list[str]:
    """Drop from `done` what the store holds for snapshots whose weights changed (their families are measured
    again), and with them the run-level families; a changed final snapshot makes every snapshot's drift stale.
    Returns a note per run concerned."""
    notes = []
    for s in series_list:
        steps = changed.get(s.name, set())
        if not steps:
            continue
        notes.append(f"{s.name}: the weights at step(s) {', '.join(map(str, sorted(steps)))} changed since they were "
                     "measured (trained again?); measured again")
        final_changed = s.final.step in steps
        for key in list(done):
            name, step, family = key
            if name == s.name and (step in steps or step == -1 or (final_changed and family == "drift")):
                del done[key]
    return notes


def _shares_note(parts: list[tuple[list[tuple[str, int, str]], str]]) -> str:
    """Which process measured how many snapshots, where (`parts`: each rank's computed units and device)."""
    each = [f"rank {rank} {len({(r, s) for r, s, _ in computed})} on {device}"
            for rank, (computed, device) in enumerate(parts)]
    return f"snapshots measured by {len(parts)} processes: {', '.join(each)}"


# ---------------------------------------------------------------------------------------------- the run level

def finish(setup: Setup, summary: ProbeSummary, done: Done, series_list: list[Series]) -> None:
    """Run-level families over every stored snapshot result (whichever process measured it), onsets, the store's
    notes on these runs, figures and report.md."""
    store, probe = setup.store, setup.probe
    for series in series_list:
        measure_run_families(setup, summary, done, series)
    names = [s.name for s in series_list]
    for name in names:
        rf.write_onsets(store, probe.hash, name)
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
