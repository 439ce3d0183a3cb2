"""Finding snapshot series: our runs, Hugging Face Trainer outputs, step-named model folders, single model
folders on disk, and revisions in the local Hugging Face Hub cache (`dynamics.find.hub`).

Four layouts on disk are recognised (checked in this order):

* our run — `DIR/snapshots/step-NNNNNNN/` (+ `DIR/run.json`, `DIR/tokenizer/`); step and tokens seen come from
  each snapshot's `snapshot.json`, falling back to the folder name;
* a Trainer output — `DIR/checkpoint-N/`; step from `trainer_state.json` (`global_step`) or the name, tokens
  seen from `num_input_tokens_seen` when the Trainer counted them;
* step-named model folders (MultiBERTs' release) — `DIR/NAME-step_20k/`, `DIR/NAME-step_2000/`, … each with a
  `config.json`, all sharing one `NAME`; step from the name (`k` = thousand, `m` = million), tokens seen unknown;
* a single model folder — `DIR/config.json` + weights; step from `snapshot.json`, `trainer_state.json` or
  `config.json` (`step`/`global_step`), else 0. A `step-*` folder of our run is read with its run's tokenizer.

An argument spelled `ORG/NAME` that is not an existing path is a Hub model id (`discover_all`, `dynamics.find.hub`).

Nothing here loads a model: `validate` checks the files (safetensors headers against file sizes, configs,
tokenizers) so that bad input fails before any result is written.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.run_dir import SNAPSHOT_JSON, RunDir, RunDirError, read_json_object, snapshot_info
from dynamics.errors import ProbeError
from dynamics.find.tokens import has_tokenizer, load_tokenizer

_STEP_RE = re.compile(r"(?:step|checkpoint)-(\d+)$")
# MultiBERTs-style names: `multiberts-seed_0-step_20k`, `bert-step-2000`, `x_step_1m` (NAME, number, k/m).
_NAMED_STEP_RE = re.compile(r"(.+?)[-_]step[-_](\d+)([km]?)", re.IGNORECASE)
_STEP_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class Snapshot:
    """One saved model: its folder, training step, tokens seen (None when unknown) and the run it belongs to."""

    path: Path
    step: int
    tokens_seen: int | None
    run_name: str
    info: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Series:
    """The snapshots of one run, sorted by step, with the tokenizer they share and the run's metadata."""

    run_dir: Path
    name: str
    snapshots: list[Snapshot]
    tokenizer_path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "run"  # "run" | "trainer" | "steps" | "model" | "hub"

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.snapshots]

    @property
    def final(self) -> Snapshot:
        return self.snapshots[-1]

    def data_path(self, key: str) -> Path | None:
        """Absolute path of a `run.json` file entry such as `validation_blocks_path` (relative to the run dir)."""
        value = self.meta.get(key)
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else self.run_dir / p


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except RunDirError as exc:
        raise ProbeError(str(exc)) from None


def step_from_name(path: Path) -> int | None:
    """The step in a folder name `step-N` or `checkpoint-N` (None for other names)."""
    m = _STEP_RE.search(path.name)
    return int(m.group(1)) if m else None


def named_step(path: Path) -> tuple[str, int] | None:
    """(series name, step) of a MultiBERTs-style folder name: `multiberts-seed_0-step_20k` → ("multiberts-seed_0",
    20000); `k` is a thousand steps and `m` a million, a plain number is the step (None for other names)."""
    m = _NAMED_STEP_RE.fullmatch(path.name)
    return (m.group(1), int(m.group(2)) * _STEP_UNITS[m.group(3).lower()]) if m else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _run_config(run: RunDir) -> dict[str, Any]:
    try:
        return run.config
    except RunDirError as exc:
        raise ProbeError(str(exc)) from None


def _our_snapshot(path: Path, run_name: str) -> Snapshot:
    try:
        info = snapshot_info(path)
    except RunDirError as exc:
        raise ProbeError(str(exc)) from None
    step = _int_or_none(info.get("step"))
    if step is None:
        step = step_from_name(path)
    if step is None:
        raise ProbeError(f"{path}: cannot tell the training step (no snapshot.json, no step-N name); rename it step-N")
    return Snapshot(path, step, _int_or_none(info.get("tokens_seen")), run_name, info)


def _trainer_snapshot(path: Path, run_name: str) -> Snapshot:
    state = _read_json(path / "trainer_state.json") if (path / "trainer_state.json").is_file() else {}
    step = _int_or_none(state.get("global_step"))
    if step is None:
        step = step_from_name(path)
    if step is None:
        raise ProbeError(f"{path}: cannot tell the training step; rename it checkpoint-N")
    tokens = _int_or_none(state.get("num_input_tokens_seen")) or None
    return Snapshot(path, step, tokens, run_name, {"trainer_state": {k: state.get(k) for k in ("epoch", "global_step")}})


def _model_snapshot(path: Path, run_name: str) -> Snapshot:
    if (path / SNAPSHOT_JSON).is_file():
        return _our_snapshot(path, run_name)
    if (path / "trainer_state.json").is_file():
        return _trainer_snapshot(path, run_name)
    return Snapshot(path, config_step(path), None, run_name, {})


def config_step(path: Path) -> int:
    """The step a model folder's `config.json` records (`step`, else `global_step`), 0 when it records none."""
    config = _read_json(path / "config.json")
    return _int_or_none(config.get("step", config.get("global_step"))) or 0


def _named_children(directory: Path) -> list[tuple[Path, str, int]]:
    """(folder, series name, step) of the step-named model folders in `directory` (`named_step`, with a
    config.json)."""
    out = []
    for p in sorted(directory.iterdir()):
        parsed = named_step(p) if p.is_dir() and (p / "config.json").is_file() else None
        if parsed is not None:
            out.append((p, *parsed))
    return out


def _named_snapshots(directory: Path, children: list[tuple[Path, str, int]], run_name: str) -> list[Snapshot]:
    """The snapshots of a folder of step-named model folders; `ProbeError` when they belong to several series."""
    stems = sorted({stem for _, stem, _ in children})
    if len(stems) > 1:
        raise ProbeError(f"{directory}: holds the step folders of several series ({', '.join(stems[:4])}); "
                         "move each series into a folder of its own and pass those")
    return [Snapshot(path, step, None, run_name, {}) for path, _, step in children]


def _children(directory: Path, prefix: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(prefix) and step_from_name(p) is not None]


def _first_tokenizer(candidates: Iterable[Path]) -> Path | None:
    return next((c for c in candidates if has_tokenizer(c)), None)


def discover(path: str | Path, name: str | None = None) -> Series:
    """The snapshot series in `path` (see the module docstring for the layouts), sorted by step.

    Raises `ProbeError` when `path` is missing, holds no snapshots, or no tokenizer can be found for them.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ProbeError(f"{p}: no such directory; pass a run directory, a Trainer output dir or a model dir")
    if not p.is_dir():
        raise ProbeError(f"{p}: not a directory; pass a run directory, a Trainer output dir or a model dir")
    p = p.resolve()
    run_name = name or p.name
    meta: dict[str, Any] = {}
    parent_run: Path | None = None
    run = RunDir(p)
    if run.is_run() or run.has_snapshots_dir():
        kind = "run"
        meta = _run_config(run)
        snaps = [_our_snapshot(s.path, run_name) for s in run.snapshots()]
        where = f"{run.snapshots_dir} (expected step-N/ folders written by taco.train)"
        tok_candidates = [run.tokenizer_dir, p / "tokenizer", p] + [s.path for s in snaps]
    elif _children(p, "checkpoint-"):
        kind = "trainer"
        snaps = [_trainer_snapshot(s, run_name) for s in _children(p, "checkpoint-")]
        where = str(p)
        tok_candidates = [p] + [s.path for s in sorted(snaps, key=lambda s: -s.step)]
    elif named := _named_children(p):
        kind = "steps"
        snaps = _named_snapshots(p, named, run_name)
        where = str(p)
        tok_candidates = [p] + [s.path for s in sorted(snaps, key=lambda s: -s.step)]
    elif (p / "config.json").is_file():
        kind = "model"
        parent_run = p.parent.parent if p.parent.name == "snapshots" else None
        if parent_run is not None:
            run_name = name or parent_run.name
            meta = _run_config(RunDir(parent_run))
        snaps = [_model_snapshot(p, run_name)]
        where = str(p)
        tok_candidates = [p] + ([parent_run / "tokenizer", parent_run] if parent_run is not None else [])
    else:
        raise ProbeError(f"{p}: no snapshots found (expected snapshots/step-N/, checkpoint-N/, NAME-step_N/ "
                         "or a config.json); "
                         "pass a run directory, a Trainer output dir or a model dir")
    if not snaps:
        raise ProbeError(f"{where}: no snapshots found; train first or pass a folder that holds them")
    snaps.sort(key=lambda s: s.step)
    dup = [a.step for a, b in zip(snaps, snaps[1:], strict=False) if a.step == b.step]
    if dup:
        raise ProbeError(f"{p}: two snapshots claim step {dup[0]}; remove one of them")
    tok = _first_tokenizer(tok_candidates)
    if tok is None:
        raise ProbeError(f"{p}: no tokenizer found (looked for tokenizer.json/vocab.txt in the run, its tokenizer/ "
                         "folder and the snapshots); save the tokenizer next to the model with save_pretrained()")
    run_dir = parent_run if kind == "model" and parent_run is not None else p
    return Series(run_dir, run_name, snaps, tok, meta, kind)


def select(series: Series, steps: Sequence[int] | None = None, every: int | None = None) -> list[Snapshot]:
    """The snapshots to measure: all, those at `steps`, or those whose step is a multiple of `every` plus the
    final snapshot (anchor drift is measured against it)."""
    snaps = series.snapshots
    if steps is not None:
        wanted = set(steps)
        snaps = [s for s in snaps if s.step in wanted]
    if every is not None:
        if every <= 0:
            raise ProbeError(f"--every {every}: must be a positive number of steps")
        snaps = [s for s in snaps if s.step % every == 0 or s is series.final]
    return snaps


def selection(series_list: Sequence[Series], steps: Sequence[int] | None = None, every: int | None = None
              ) -> dict[str, list[Snapshot]]:
    """`select` for each series, by name; a step of `steps` that no series has is a `ProbeError` (naming the folder
    that records another step, when there is one), never silently left out."""
    selected = {s.name: select(s, steps, every) for s in series_list}
    if steps is not None:
        found = {snap.step for snaps in selected.values() for snap in snaps}
        missing = sorted(set(steps) - found)
        if missing:
            raise missing_step_error(series_list, missing[0])
    return selected


def misnamed(series_list: Sequence[Series], step: int) -> Snapshot | None:
    """A snapshot whose folder is named for `step` (`step-N`, `checkpoint-N`) while its own files record another
    step (None when there is none): why `--steps N` finds no snapshot at N although step-N/ exists."""
    for series in series_list:
        for snap in series.snapshots:
            if snap.step != step and step_from_name(snap.path) == step:
                return snap
    return None


def missing_step_error(series_list: Sequence[Series], step: int, flag: str = "--steps") -> ProbeError:
    """The error for a requested step no snapshot has: the folder named for it that records another step, when
    there is one (a renamed folder, or another step's files), else the steps there are."""
    snap = misnamed(series_list, step)
    if snap is not None:
        record = "trainer_state.json" if "trainer_state" in snap.info else SNAPSHOT_JSON
        return ProbeError(f"{snap.path}: named for step {step} but its {record} records step {snap.step} (renamed, or "
                          f"another step's files); pass {flag} {snap.step}, or restore the folder")
    avail = sorted({s for series in series_list for s in series.steps})
    shown = ",".join(map(str, avail[:20])) + (",…" if len(avail) > 20 else "")
    return ProbeError(f"{series_list[0].run_dir}: no snapshot at step {step} (available: {shown}); fix {flag}")


def weight_files(snapshot_dir: Path) -> list[Path]:
    """The weight files of a saved model (safetensors shards listed in the index, or the single file)."""
    single = snapshot_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = snapshot_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        return [snapshot_dir / s for s in shards]
    legacy = snapshot_dir / "pytorch_model.bin"
    if legacy.is_file():
        return [legacy]
    raise ProbeError(f"{snapshot_dir}: no model weights (model.safetensors or pytorch_model.bin); "
                     "re-save the snapshot or leave it out with --steps")


def check_safetensors(path: Path) -> None:
    """Raise `ProbeError` unless `path` is a complete safetensors file: the header parses and the tensors'
    byte ranges end exactly at the end of the file (this catches truncated copies without loading them)."""
    fix = "re-save or re-copy the snapshot, or leave it out with --steps"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ProbeError(f"{path}: truncated safetensors file ({size} bytes); {fix}")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise ProbeError(f"{path}: truncated or corrupt safetensors header; {fix}")
            header = json.loads(f.read(n))
    except OSError as exc:
        raise ProbeError(f"{path}: unreadable ({exc.strerror}); {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProbeError(f"{path}: corrupt safetensors header; {fix}") from None
    if not isinstance(header, dict):
        raise ProbeError(f"{path}: corrupt safetensors header; {fix}")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            raise ProbeError(f"{path}: corrupt safetensors header (tensor {key}); {fix}") from None
    if 8 + n + end != size:
        raise ProbeError(f"{path}: truncated or corrupt safetensors file ({size} bytes, header says {8 + n + end}); {fix}")


def validate(series_list: Sequence[Series], selected: dict[str, list[Snapshot]]) -> str:
    """Check everything that can be checked without loading a model; return the shared tokenizer vocab hash.

    * every selected snapshot has a readable `config.json` and complete weight files;
    * every series' snapshots agree on `vocab_size`, and snapshots that carry their own tokenizer agree with
      the series' tokenizer;
    * all series share one tokenizer vocabulary (so they can be measured on the same probe set).
    """
    shared: tuple[str, Path] | None = None
    for series in series_list:
        tok = load_tokenizer(series.tokenizer_path)
        h = tok.hash
        vocab_sizes: dict[int, Path] = {}
        for snap in selected.get(series.name, []):
            config = _read_json(snap.path / "config.json") if (snap.path / "config.json").is_file() else None
            if config is None:
                raise ProbeError(f"{snap.path}: no config.json; re-save the snapshot with save_pretrained()")
            for f in weight_files(snap.path):
                if f.suffix == ".safetensors":
                    check_safetensors(f)
                elif not f.is_file() or f.stat().st_size == 0:
                    raise ProbeError(f"{f}: missing or empty weight file; re-save the snapshot")
            vs = config.get("vocab_size")
            if isinstance(vs, int):
                vocab_sizes.setdefault(vs, snap.path)
                if vs < len(tok):
                    raise ProbeError(f"{snap.path}: vocab_size {vs} is smaller than the tokenizer's {len(tok)} tokens "
                                     f"({series.tokenizer_path}); the snapshot was trained with another tokenizer")
            if snap.path != series.tokenizer_path and has_tokenizer(snap.path):
                other = load_tokenizer(snap.path)
                if other.hash != h:
                    raise ProbeError(f"{snap.path}: its tokenizer differs from {series.tokenizer_path}; "
                                     "a series must share one tokenizer — probe the snapshots separately")
        if len(vocab_sizes) > 1:
            paths = sorted(vocab_sizes.values())
            raise ProbeError(f"{paths[-1]}: vocab_size differs from {paths[0]} within one series; "
                             "the snapshots use different tokenizers — probe them separately")
        if shared is None:
            shared = (h, series.tokenizer_path)
        elif shared[0] != h:
            raise ProbeError(f"{series.tokenizer_path}: a different tokenizer vocabulary from {shared[1]}; "
                             "runs compared on one probe set must share the tokenizer — probe them separately")
    assert shared is not None
    return shared[0]
