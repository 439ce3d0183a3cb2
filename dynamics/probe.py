"""`python -m dynamics.probe DIR [DIR …]`: measure how representations change across a series of snapshots.

For every selected snapshot of every run: load it (one model at a time), run the frozen probe set through it,
compute the requested metric families per layer, and store tidy rows and arrays in the results store (one
transaction per snapshot × family, so a kill loses at most the snapshot in progress and a rerun resumes).
Afterwards: step × step CKA per run, figures/*.png and report.md. Before measuring, each series' snapshots are
checked for integrity (`dynamics.integrity`: identical weights at two steps, a folder recording another step,
tokens seen that do not increase); the flags are stored, reported and printed as `warning:` lines at the end
(warnings, not errors: the exit status is unchanged).

Several directories are measured on one probe set — built from the first run — and must share its tokenizer
vocabulary. Results go to `DIR/dynamics/` for one directory and to `./dynamics-results/` for several or for a
Hugging Face model id read from the Hub cache (the cache is huggingface_hub's and is never written), unless `--out`
says otherwise. Bad input stops the program before anything is written: a one-line message naming the
path and the fix, exit status 2.

Several devices: `torchrun --nproc_per_node N -m dynamics.probe DIR …` deals the snapshots still to measure out to
N processes, each on its own device, all writing one store; rank 0 checks the input first and does the run-level
work last (`run_config`, `dynamics.shards`). `--follow` runs in one process.

Python API: `dynamics.probe.run(dirs, out=None, steps=None, every=None, metrics=(...), device="cpu", ...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from common.cli import Parser
from common.errors import UsageError
from dynamics import extract as ex
from dynamics import families as fam
from dynamics import integrity, shards, word_curves
from dynamics import probe_set as ps
from dynamics import store as st
from dynamics.config import FAMILIES, ProbeConfig, resolved_device
from dynamics.errors import ProbeError
from dynamics.onsets import series_onsets
from dynamics.series import Series, Snapshot, discover_all, missing_step_error, select, validate
from dynamics.tokens import TokenizerView, load_tokenizer

MULTI_RUN_OUT = "dynamics-results"
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "longformer", "mpnet")

SnapshotHook = Callable[[Snapshot, list[str]], None]


@dataclass
class ProbeSummary:
    """What a probe run did: where results are, the probe hash, and the (run, step, family) units computed
    now versus found already stored."""

    out: Path
    store_path: Path
    probe_hash: str
    computed: list[tuple[str, int, str]] = field(default_factory=list)
    reused: list[tuple[str, int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[integrity.Flag] = field(default_factory=list)  # snapshot-integrity problems of the runs
    figures: list[Path] = field(default_factory=list)
    report: Path | None = None


def run(
    dirs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    steps: Sequence[int] | None = None,
    every: int | None = None,
    metrics: Sequence[str] = FAMILIES,
    device: str = "cpu",
    batch_size: int = 16,
    max_tokens: int | None = None,
    probe_text: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    on_snapshot: SnapshotHook | None = None,
    **settings: Any,
) -> ProbeSummary:
    """Measure the snapshot series in `dirs` (see the module docstring); other `ProbeConfig` fields (e.g.
    `probe_blocks`, `seed`, `figures`, `window`) go in `settings`. `on_snapshot(snapshot, families)` is
    called after each snapshot's results are committed. Raises `ProbeError` on bad input."""
    names = {f.name for f in dataclasses.fields(ProbeConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise TypeError(f"run() got unknown settings: {', '.join(unknown)}")
    cfg = ProbeConfig(out=None if out is None else str(out), steps=None if steps is None else list(steps),
                      every=every, metrics=list(metrics), device=device, batch_size=batch_size,
                      max_tokens=max_tokens, probe_text=None if probe_text is None else str(probe_text),
                      force=force, progress=progress, **settings)
    paths = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    if cfg.follow:
        from dynamics.follow import follow

        return follow(paths, cfg.validate(), on_snapshot=on_snapshot)
    return run_config(paths, cfg.validate(), on_snapshot=on_snapshot)


# ------------------------------------------------------------------------------------------------ preparation

def _selection(series_list: list[Series], cfg: ProbeConfig) -> dict[str, list[Snapshot]]:
    selected = {s.name: select(s, cfg.steps, cfg.every) for s in series_list}
    if cfg.steps is not None:
        found = {snap.step for snaps in selected.values() for snap in snaps}
        missing = sorted(set(cfg.steps) - found)
        if missing:  # names a folder that records another step rather than calling the step absent
            raise missing_step_error(series_list, missing[0])
    return selected


def _max_positions(snapshot: Snapshot) -> int | None:
    """How many positions the model accepts, from its config.json (RoBERTa-likes reserve padding_idx + 1; GPT-2
    names it `n_positions`)."""
    config = json.loads((snapshot.path / "config.json").read_text())
    n = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(n, int):
        return None
    if config.get("model_type") in ROBERTA_LIKE:
        n -= int(config.get("pad_token_id", 1) or 0) + 1
    return n


def _architecture_kind(snapshot: Snapshot) -> str | None:
    """`dynamics.extract.architecture_kind` ("encoder" | "causal") of the snapshot's model type, read off its
    config.json without loading the model (the same answer extraction gives); None without a model type."""
    config = snapshot.path / "config.json"
    model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    return ex.architecture_kind(SimpleNamespace(model_type=model_type)) if isinstance(model_type, str) else None


def _block_size(first: Series, cfg: ProbeConfig) -> int:
    if cfg.block_size is not None:
        return cfg.block_size
    meta = first.meta.get("block_size")
    if isinstance(meta, int) and meta >= 3:
        return meta
    limit = _max_positions(first.snapshots[0])
    return min(128, limit) if limit else 128


def build_probe(first: Series, tok: TokenizerView, cfg: ProbeConfig) -> ps.ProbeSet:
    """The probe set for a run: from `--probe-text` if given, else the run's validation blocks."""
    counts = ps.load_counts(first.data_path("token_counts_path"), len(tok))
    common = dict(probe_blocks=cfg.probe_blocks, max_tokens=cfg.max_tokens, seed=cfg.seed, train_counts=counts,
                  cka_tokens=cfg.cka_tokens, projection_tokens=cfg.projection_tokens)
    if cfg.probe_text:
        return ps.build(tok, text_path=Path(cfg.probe_text), block_size=_block_size(first, cfg), **common)
    blocks_path = first.data_path("validation_blocks_path")
    if blocks_path is None:
        raise ProbeError(f"{first.run_dir}: no validation blocks (run.json names none); pass --probe-text FILE")
    return ps.build(tok, blocks=ps.load_blocks(blocks_path), source=f"validation:{first.name}", **common)


def _check_positions(selected: dict[str, list[Snapshot]], block: int) -> None:
    for snaps in selected.values():
        if snaps:
            limit = _max_positions(snaps[0])
            if limit is not None and block > limit:
                raise ProbeError(f"{snaps[0].path}: the model accepts {limit} positions but probe blocks have {block}; "
                                 f"use --probe-text FILE --block-size {limit}")


def output_dir(cfg: ProbeConfig, series_list: list[Series]) -> Path:
    """`--out`, else `DIR/dynamics` for one run, else `./dynamics-results` (also for a Hub model: its cache
    folder is huggingface_hub's, not ours to write in)."""
    if cfg.out:
        return Path(cfg.out).expanduser()
    if len(series_list) == 1 and series_list[0].kind != "hub":
        return series_list[0].run_dir / "dynamics"
    return Path.cwd() / MULTI_RUN_OUT


def _wanted(metrics: Sequence[str]) -> list[str]:
    order = {"anchors": ["anchors", "drift"], "context": ["context"], "geometry": ["geometry"]}
    return [f for m in FAMILIES if m in metrics for f in order[m]]


# ---------------------------------------------------------------------------------------------------- running

FOLLOW_SHARDED = "--follow measures in one process: start it without torchrun (several processes share a series only)"


def run_config(dirs: Sequence[str | Path], cfg: ProbeConfig, on_snapshot: SnapshotHook | None = None, *,
               defer_drift: bool = False, print_flags: bool = True) -> ProbeSummary:
    """Check all input, then measure (see `run`). `defer_drift`: leave anchor drift (measured against the final
    snapshot) for a later call, as `--follow` does until a run's final snapshot exists; `print_flags`: print the
    snapshot-integrity flags to stderr.

    Under `torchrun --nproc_per_node N` (`dynamics.shards`): rank 0 checks all input while the other processes wait
    for its verdict (bad input stops every process before anything is written), then creates or opens the store
    and records the probe set, runs and snapshots; the others then open the same store, every process measures
    its share of the snapshots still to do on its own device, and once all shares are stored rank 0 alone does the
    run-level work (`_finish`) and prints. Rank 0 returns the whole run's summary, the others their share's."""
    shard = shards.current()
    if shard.distributed and cfg.follow:
        raise ProbeError(FOLLOW_SHARDED)

    def step(work: Callable[[], Any]) -> Any:  # every process does its part; when one fails, all stop here
        return shards.together(shard, work)

    with shards.group(shard), contextlib.ExitStack() as stores:
        device = step(lambda: shards.device(shard, resolved_device(cfg)))
        checked = step(lambda: _check(dirs, cfg) if shard.main else None)
        # ---- nothing above writes; from here on the store is opened and results are added
        run = step(lambda: _open(checked, cfg, device, defer_drift, stores) if shard.main else None)
        plan: Checked = shards.from_main(shard, dataclasses.replace(checked, tok=None, done=run.done)
                                         if shard.main else None)
        # The others open the store only now, while rank 0 waits: opening reads the database file directly
        # (`store.check_ours`), which must not be written meanwhile.
        run = step(lambda: run if shard.main else _join(plan, cfg, device, defer_drift, stores))
        step(lambda: _measure_all(run, plan.series_list, plan.selected, on_snapshot, shard))
        parts = shards.gather(shard, (run.summary.computed, device))
        if shard.main and shard.distributed:
            run.summary.computed = [unit for computed, _ in parts for unit in computed]
            run.summary.notes.append(_shares_note(parts))
        summary = step(lambda: _finish(run, plan.series_list) if shard.main else run.summary)
    if print_flags and shard.main:
        for flag in summary.flags:
            print(flag.line, file=sys.stderr)
    return summary


@dataclass
class Checked:
    """What the input checks found, before anything is written; with `done` (what the store holds, less what is
    stale) it is rank 0's plan for the other processes of a torchrun group (`tok` stays on rank 0)."""

    series_list: list[Series]
    selected: dict[str, list[Snapshot]]
    no_drift: dict[str, str]  # run → why its anchor drift cannot be measured
    out: Path
    probe: ps.ProbeSet
    id_to_token: list[str]
    tok: TokenizerView | None = None
    done: dict[tuple[str, int, str], str] = field(default_factory=dict)


def _check(dirs: Sequence[str | Path], cfg: ProbeConfig) -> Checked:
    """Every check of the input, and the probe set; writes nothing (`ProbeError` on bad input)."""
    series_list = discover_all(dirs, revisions=cfg.revisions)
    selected = _selection(series_list, cfg)
    validate(series_list, selected)
    # The final snapshot is read for anchor drift even when not selected: when it is unreadable and left out with
    # --steps, the other families are still measured and drift is skipped with a note.
    no_drift: dict[str, str] = {}
    for s in series_list:
        if s.final not in selected[s.name]:
            try:
                validate([s], {s.name: [s.final]})
            except ProbeError as exc:
                no_drift[s.name] = f"anchor drift not measured for {s.name}: its final snapshot is unreadable ({exc})"
    out = output_dir(cfg, series_list)
    st.check_ours(st.resolve(out))  # a file in the way, or a database that is not ours: refuse before any work
    first = series_list[0]
    tok = load_tokenizer(first.tokenizer_path)
    probe = build_probe(first, tok, cfg)
    _check_positions(selected, probe.block_size)
    if cfg.probe_text is None and first.data_path("validation_blocks_path") is not None:
        _check_positions({first.name: first.snapshots[:1]}, probe.block_size)
    return Checked(series_list, selected, no_drift, out, probe, tok.id_to_token(), tok)


def _open(checked: Checked, cfg: ProbeConfig, device: str, defer_drift: bool, stores: contextlib.ExitStack
          ) -> ProbeRun:
    """Create or open the store (closed with `stores`), record the snapshots, probe set and runs, and forget what
    is stale: the probe run of rank 0 (of the only process)."""
    store = st.open(checked.out)
    stores.callback(store.close)
    series_list = checked.series_list
    flags, changed, unverified = _record_snapshots(store, series_list, checked.selected)
    assert checked.tok is not None
    run = _start(store, series_list, checked.tok, checked.probe, cfg, device)
    _forget_stale(run, series_list, changed)
    run.no_drift = checked.no_drift
    run.defer_drift = defer_drift
    run.summary.notes += list(checked.no_drift.values())
    run.summary.flags = flags
    run.summary.notes += unverified
    return run


def _join(plan: Checked, cfg: ProbeConfig, device: str, defer_drift: bool, stores: contextlib.ExitStack
          ) -> ProbeRun:
    """The probe run of a process other than rank 0: the store rank 0 opened, rank 0's view of what it holds, and
    the probe set's tensors on this process's device."""
    store = st.open(plan.out)
    stores.callback(store.close)
    prep, _ = _prepare(plan.probe, cfg, device, plan.id_to_token)  # its notes are rank 0's to report
    summary = ProbeSummary(store.root, store.path, plan.probe.hash)
    return ProbeRun(store, plan.probe, prep, cfg, device, summary, dict(plan.done), no_drift=dict(plan.no_drift),
                    defer_drift=defer_drift)


def _shares_note(parts: list[tuple[list[tuple[str, int, str]], str]]) -> str:
    """Which process measured how many snapshots, where (`parts`: each rank's computed units and device)."""
    each = [f"rank {rank} {len({(r, s) for r, s, _ in computed})} on {device}"
            for rank, (computed, device) in enumerate(parts)]
    return f"snapshots measured by {len(parts)} processes: {', '.join(each)}"

@dataclass
class ProbeRun:
    """The state of one probe run: where it writes, on what it measures, with which settings."""

    store: st.Store
    probe: ps.ProbeSet
    prep: fam.Prepared
    cfg: ProbeConfig
    device: str
    summary: ProbeSummary
    done: dict[tuple[str, int, str], str]  # (run, step, family) → params of what the store already holds
    no_drift: dict[str, str] = field(default_factory=dict)  # run → why its anchor drift cannot be measured
    defer_drift: bool = False  # leave drift for a later run (`--follow` before the final snapshot)


@dataclass
class SeriesState:
    """What one series' snapshots share: the families' params, the final snapshot's embedding matrix (for drift,
    loaded once) and the last activations, whose arrays the next extraction overwrites."""

    series: Series
    params: dict[str, str]
    final_matrix: np.ndarray | None = None
    spare: ex.Activations | None = None


def _record_snapshots(store: st.Store, series_list: list[Series], selected: dict[str, list[Snapshot]]
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


def _forget_stale(run: ProbeRun, series_list: list[Series], changed: dict[str, set[int]]) -> None:
    """Drop what the store holds for snapshots whose weights changed (their families are measured again), and
    with them the run-level step × step CKA; a changed final snapshot makes every snapshot's drift stale."""
    for s in series_list:
        steps = changed.get(s.name, set())
        if not steps:
            continue
        run.summary.notes.append(f"{s.name}: the weights at step(s) {', '.join(map(str, sorted(steps)))} changed "
                                 "since they were measured (trained again?); measured again")
        final_changed = s.final.step in steps
        for key in list(run.done):
            name, step, family = key
            if name == s.name and (step in steps or step == -1 or (final_changed and family == "drift")):
                del run.done[key]


def _start(store: st.Store, series_list: list[Series], tok: TokenizerView, probe: ps.ProbeSet, cfg: ProbeConfig,
           device: str) -> ProbeRun:
    """Record the probe set and runs in the store (`_record_snapshots` records the snapshots) and prepare the
    probe set's tensors."""
    st.remove_stale_tmp(store.root)
    probe_file = f"arrays/probe-{probe.hash[:16]}.npz"
    if not (store.root / probe_file).is_file():
        probe.save(store.root / probe_file, tok.id_to_token())
    store.add_probe_set(hash=probe.hash, source=probe.source, n_blocks=probe.n_blocks, block_size=probe.block_size,
                        n_tokens=probe.n_tokens, n_masked=int(probe.masked.sum()), n_word_types=len(probe.word_types),
                        freq_source=probe.freq_source, tokenizer_hash=probe.tokenizer_hash, file=probe_file,
                        notes=probe.notes)
    for s in series_list:
        meta = {**s.meta, "probe_device": device, "architecture_kind": _architecture_kind(s.final)}
        store.upsert_run(s.name, s.run_dir, s.kind, s.meta.get("objective"), meta)
    summary = ProbeSummary(store.root, store.path, probe.hash, notes=list(probe.notes))
    prep, prep_notes = _prepare(probe, cfg, device, tok.id_to_token())
    summary.notes += prep_notes
    return ProbeRun(store, probe, prep, cfg, device, summary, store.completed_params(probe.hash))


def _prepare(probe: ps.ProbeSet, cfg: ProbeConfig, device: str, id_to_token: list[str]
             ) -> tuple[fam.Prepared, list[str]]:
    """The probe set's tensors and fixed draws on `device` (one call for every process, so that all measure on
    the same draws)."""
    return fam.prepare(probe, device, window=cfg.window, tc_negatives=cfg.tc_negatives,
                       tc_temperature=cfg.tc_temperature, max_distance=cfg.max_distance,
                       neighbour_tokens=cfg.neighbour_tokens, seed=cfg.seed, id_to_token=id_to_token)


def _family_params(series: Series, cfg: ProbeConfig) -> dict[str, str]:
    """Each family's settings string: a stored family whose string differs is measured again."""
    return {
        "anchors": fam.family_params("anchors", surprisal="nats"),
        "drift": fam.family_params("drift", final=series.final.step),
        "context": fam.family_params("context", window=cfg.window, negatives=cfg.tc_negatives,
                                     temperature=cfg.tc_temperature, max_distance=cfg.max_distance, seed=cfg.seed),
        "geometry": fam.family_params("geometry", neighbours=cfg.neighbour_tokens, seed=cfg.seed, ln_outliers="3std"),
    }


def _measure_all(run: ProbeRun, series_list: list[Series], selected: dict[str, list[Snapshot]],
                 on_snapshot: SnapshotHook | None, shard: shards.Shard) -> None:
    """This process's snapshots: of the selected snapshots with a family still to do (not stored with the same
    params, or `--force`), all of them — or under torchrun its `shards.share`, the same split on every process —
    each extracted once → registered metrics → store. The run-level work (step × step CKA) is `_finish`'s, once
    every share is stored."""
    from tqdm.auto import tqdm

    wanted = _wanted(run.cfg.metrics)
    params = {series.name: _family_params(series, run.cfg) for series in series_list}
    todo: list[tuple[Series, Snapshot, list[str]]] = []
    for series in series_list:
        families = [f for f in wanted if not (f == "drift" and (series.name in run.no_drift or run.defer_drift))]
        for snap in selected[series.name]:
            needed = [f for f in families
                      if run.cfg.force or run.done.get((series.name, snap.step, f)) != params[series.name][f]]
            run.summary.reused += [(series.name, snap.step, f) for f in families if f not in needed]
            if needed:
                todo.append((series, snap, needed))
    mine = shards.share(todo, shard)
    stored = sum(len(v) for v in selected.values()) - len(todo)
    bar = tqdm(total=stored + len(mine), initial=stored, disable=not run.cfg.progress or not shard.main,
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
                state = SeriesState(series, params[series.name])
            bar.set_description(f"{series.name} step {snap.step}" + (f" (rank 0 of {shard.world})"
                                                                     if shard.distributed else ""))
            _measure_snapshot(run, state, snap, needed)
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


def _finish(run: ProbeRun, series_list: list[Series]) -> ProbeSummary:
    """Run-level analyses (step × step CKA, LayerNorm outlier persistence, word acquisition, onsets), notes,
    figures and report.md."""
    summary, store = run.summary, run.store
    for series in series_list:  # over every stored snapshot result, whichever process measured it
        if "geometry" in run.cfg.metrics:
            _cka_steps(run, series)
            _ln_outliers(run, series)
        if "anchors" in run.cfg.metrics:
            _word_acquisition(run, series)
    notes = store.notes(run.probe.hash)
    names = [s.name for s in series_list]
    summary.notes += sorted({n for r, n in zip(notes["run"], notes["note"], strict=True) if r in names})
    for name in names:
        _store_onsets(store, run.probe.hash, name)
    if run.cfg.figures:
        from dynamics import figures

        summary.figures = figures.write_all(store, names, run.probe.hash, store.root / "figures")
    from dynamics import report

    summary.report = report.write(store, series_list, run.probe, summary, store.root / "report.md")
    return summary


def _pending(run: ProbeRun, series: Series, kind: str, family: str) -> tuple[list[str], list[int], str] | None:
    """The files and steps of the run's stored per-snapshot `kind` arrays (step order) and the params of the
    run-level `family` made from them; None when there are none, or when the stored `family` already covers exactly
    those steps (then recorded as reused)."""
    rows = run.store.arrays(kind, run=series.name, probe_hash=run.probe.hash)
    rows = rows[rows["step"] >= 0].sort_values("step")
    if rows.empty:
        return None
    steps = [int(x) for x in rows["step"]]
    params = fam.family_params(family, steps=",".join(map(str, steps)))
    if not run.cfg.force and run.done.get((series.name, -1, family)) == params:
        run.summary.reused.append((series.name, -1, family))
        return None
    return list(rows["file"]), steps, params


def _ln_outliers(run: ProbeRun, series: Series) -> None:
    """Persistence of the LayerNorm outlier dimensions over every snapshot whose LayerNorm scales are stored."""
    store, probe_hash = run.store, run.probe.hash
    pending = _pending(run, series, "ln_weights", "ln_outliers")
    if pending is None:
        return
    files, steps, params = pending
    parts = [store.load_array(f) for f in files]
    if len({p["outlier"].shape for p in parts}) != 1:
        return  # the architecture changed within the series; nothing to compare
    per_step = fam.ln_outliers([p["outlier"] for p in parts], parts[-1]["has_norm"])
    tokens = store.tokens_seen(series.name, steps)
    store.write_run_family(run=series.name, family="ln_outliers", probe_hash=probe_hash, params=params,
                           step_rows={s: (t, per_step[k]) for k, (s, t) in enumerate(zip(steps, tokens, strict=True))},
                           arrays={"ln_outliers": {"steps": np.asarray(steps, dtype=np.int64),
                                                   "outlier": np.stack([p["outlier"] for p in parts]),
                                                   "weight": np.stack([p["weight"] for p in parts])}})
    run.summary.computed.append((series.name, -1, "ln_outliers"))


def _word_acquisition(run: ProbeRun, series: Series) -> None:
    """Fit the run's word-acquisition curves from its stored per-snapshot surprisal (`dynamics.word_curves`)."""
    probe = run.probe
    vocab = int(probe.ids.max()) + 1
    words = word_curves.probe_word_strings(run.store.root, run.store.probe_sets().set_index("hash").loc[probe.hash, "file"])
    computed = word_curves.measure_run(
        run.store, series.name, probe.hash, word_types=probe.word_types, words=words,
        train_counts=ps.load_counts(series.data_path("token_counts_path"), vocab),
        probe_counts=np.bincount(probe.tokens, minlength=vocab), seed=run.cfg.seed,
        done=run.done.get((series.name, -1, word_curves.FAMILY)), force=run.cfg.force)
    (run.summary.computed if computed else run.summary.reused).append((series.name, -1, word_curves.FAMILY))


def _store_onsets(store: st.Store, probe_hash: str, name: str) -> None:
    """Rewrite the run's onsets (`dynamics.onsets`) from all of its metric rows under the probe set."""
    df = store.metrics(run=name, probe_hash=probe_hash)
    rows = zip(df["run"], df["step"], df["tokens_seen"], df["layer"], df["metric"], df["variant"], df["value"],
               strict=True)
    store.write_onsets(probe_hash, name, series_onsets(list(rows)))


def _measure_snapshot(run: ProbeRun, state: SeriesState, snap: Snapshot, needed: list[str]) -> None:
    """Extract one snapshot once and store each needed family in its own transaction."""
    series, probe = state.series, run.probe
    is_final = snap.path == series.final.path
    if "drift" in needed and state.final_matrix is None and not is_final:
        state.final_matrix = ex.embedding_matrix(series.final.path)
    t0 = time.perf_counter()
    acts = None
    if set(needed) - {"drift"}:
        acts = ex.extract_snapshot(snap.path, probe, masked_pass="anchors" in needed,
                                   batch_size=run.cfg.batch_size, device=run.device, reuse=state.spare)
        emb, notes = acts.emb_matrix, acts.notes
    else:
        emb, notes = ex.embedding_matrix(snap.path), []
    extraction = time.perf_counter() - t0
    per_layer = fam.measure(acts, run.prep, needed) if acts is not None else {}
    for k, family in enumerate(needed):
        t1 = time.perf_counter()
        if family == "drift":
            result = fam.drift(emb, emb if is_final else state.final_matrix, probe, probe.special_ids)
        else:
            result = per_layer[family]
        if k == 0:  # extraction notes (e.g. no MLM head) go with the first family stored
            result.notes = list(notes) + result.notes
        seconds = time.perf_counter() - t1 if result.seconds is None else result.seconds
        run.store.write_family(run=series.name, step=snap.step, tokens_seen=snap.tokens_seen, family=family,
                               probe_hash=probe.hash, params=state.params[family], result=result,
                               seconds=seconds + (extraction if k == 0 else 0.0))
        run.summary.computed.append((series.name, snap.step, family))
    if acts is not None:
        acts.masked = None
        state.spare = acts


def _cka_steps(run: ProbeRun, series: Series) -> None:
    """Step × step CKA per layer over every snapshot of the run whose CKA sample is stored."""
    store, probe_hash = run.store, run.probe.hash
    pending = _pending(run, series, "cka_sample", "cka_steps")
    if pending is None:
        return
    files, steps, params = pending
    with np.load(store.root / files[0], allow_pickle=False) as first:
        n_layers = sum(1 for k in first.files if k.startswith("h") and k[1:].isdigit())

    def loader(file: str) -> Callable[[int], np.ndarray]:
        def load(layer: int) -> np.ndarray:
            with np.load(store.root / file, allow_pickle=False) as data:
                return data[f"h{layer}"]
        return load

    tokens_seen = store.tokens_seen(series.name, steps)
    per_step, arrays = fam.cka_steps([loader(f) for f in files], steps, tokens_seen, n_layers, run.device)
    store.write_run_family(run=series.name, family="cka_steps", probe_hash=probe_hash, params=params,
                           step_rows={s: (t, per_step[s]) for s, t in zip(steps, tokens_seen, strict=True)},
                           arrays={"cka_steps": arrays})
    run.summary.computed.append((series.name, -1, "cka_steps"))


# -------------------------------------------------------------------------------------------------------- CLI

def build_parser() -> Parser:
    parser = Parser(
        ProbeConfig, prog="python -m dynamics.probe",
        description="Measure anchor similarity, context alignment and geometry across the snapshots of one or "
                    "more runs (our runs/NAME, Hugging Face checkpoint-N folders, or single model folders) on one "
                    "frozen probe set, and store the results for the app.",
        epilog="Output: with one DIR, results go to DIR/dynamics/; with several or a Hub model id, to "
               f"./{MULTI_RUN_OUT}/ "
               "(all runs on the first run's probe set; they must share its tokenizer). --out overrides both. "
               "Reruns compute only what is missing for the same probe set; --force recomputes. "
               "Several devices: torchrun --nproc_per_node N -m dynamics.probe DIR … shares the snapshots out "
               "to N processes writing one store (--device cuda: one GPU each, cuda:LOCAL_RANK; cpu: cores / N "
               "threads each); --follow runs in one process. "
               "Bad input exits with status 2 and leaves stored results untouched.")
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="run directory, Trainer output dir, folder of NAME-step_N model folders, model dir, or "
                             "a Hugging Face model id ORG/NAME read from the local Hub cache (see --revisions)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[list[str], ProbeConfig]:
    """The directories and the validated config (exits 2 with one line on a usage error)."""
    cfg, extra = build_parser().parse(argv)
    return extra.dirs, cfg.validate()


def main(argv: Sequence[str] | None = None) -> int:
    shard = shards.current()
    try:
        # Under torchrun every process parses the same arguments: rank 0 alone prints a usage error or --help.
        with contextlib.ExitStack() as quiet:
            if not shard.main:
                quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
                quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
            dirs, cfg = parse_args(argv)
            if shard.distributed and cfg.follow:
                raise ProbeError(FOLLOW_SHARDED)
    except UsageError as exc:
        if shard.main:
            print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    try:
        if cfg.follow:
            from dynamics.follow import follow

            summary = follow(dirs, cfg)
        else:
            summary = run_config(dirs, cfg)
    except shards.PeerFailed as exc:  # another process of the group failed and said why
        return exc.exit_code
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        if shard.main:
            print("interrupted: finished snapshots are stored; run the same command again to resume",
                  file=sys.stderr)
        return 130
    if not shard.main:  # rank 0 prints the summary of the whole run
        return 0
    n_new = len(summary.computed)
    print(f"probe {summary.probe_hash[:12]}: {n_new} result(s) computed, {len(summary.reused)} already stored; "
          f"report: {summary.report}", file=sys.stderr)
    if hasattr(summary, "lag_line"):  # --follow
        print(f"followed: {summary.lag_line()}", file=sys.stderr)
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
