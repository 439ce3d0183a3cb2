"""A probe run's records and how they are made: `Setup` (what one process measures with, fixed for the run),
`ProbeSummary` (what the run did, accumulated as it goes and returned), and opening the store for the run
(`open_store` on rank 0 or the only process, which records the runs, their snapshots and integrity flags, the probe
set and the metric definitions, and forgets what is stale; `join` on the other processes of a torchrun group)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynamics.config import ProbeConfig
from dynamics.find import integrity
from dynamics.find.inputs import Checked, architecture_kind
from dynamics.find.series import Series, Snapshot
from dynamics.find.tokens import TokenizerView
from dynamics.measure import families as fam
from dynamics.measure import probe_set as ps
from dynamics.metrics import registry, user
from dynamics.results import store as st

SnapshotHook = Callable[[Snapshot, list[str]], None]  # (snapshot, families) after its results are committed
Unit = tuple[str, int, str]  # (run, step, family); step −1 for a run-level family
Done = dict[Unit, str]  # unit → params of what the store holds


@dataclass
class ProbeSummary:
    """What a probe run did: where results are, the probe hash, and the (run, step, family) units computed
    now versus found already stored."""

    out: Path
    store_path: Path
    probe_hash: str
    computed: list[Unit] = field(default_factory=list)
    reused: list[Unit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[integrity.Flag] = field(default_factory=list)  # snapshot-integrity problems of the runs
    figures: list[Path] = field(default_factory=list)
    report: Path | None = None


@dataclass(frozen=True)
class Setup:
    """What one process of a probe run measures with, fixed for the run: the store it writes, the probe set and
    its tensors on the metric device, the settings, and which runs' anchor drift is left out."""

    store: st.Store
    probe: ps.ProbeSet
    prep: fam.Prepared
    cfg: ProbeConfig
    device: str
    no_drift: Mapping[str, str] = field(default_factory=dict)  # run → why its anchor drift cannot be measured
    defer_drift: bool = False  # leave drift for a later run (`--follow` before the final snapshot)


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
    store.write_metric_modules(user.loaded())  # the --metrics-module files behind the user metrics' rows
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


def shares_note(parts: list[tuple[list[tuple[str, int, str]], str]]) -> str:
    """Which process measured how many snapshots, where (`parts`: each rank's computed units and device)."""
    each = [f"rank {rank} {len({(r, s) for r, s, _ in computed})} on {device}"
            for rank, (computed, device) in enumerate(parts)]
    return f"snapshots measured by {len(parts)} processes: {', '.join(each)}"
