"""Reading a run directory, the format `taco.train` writes (docs/design.md, "File formats"), in one place.

    RUN/run.json                     the resolved config                        `RunDir.config`
    RUN/log.jsonl                    one JSON object per logged step            `RunDir.log()`
    RUN/snapshots/step-NNNNNNN/      save_pretrained output + snapshot.json     `RunDir.snapshots()`
    RUN/tokenizer/                   the saved fast tokenizer                   `RunDir.tokenizer_dir`
    RUN/state/                       the rolling resumable state                `RunDir.state_dir`

Everything here only reads. A run is being written while it is read (the trainer appends to `log.jsonl` and
renames finished snapshots into place), so the log reader never raises on a line: a truncated last line, a line
that is not UTF-8 text or not JSON, and non-finite numbers (`NaN`, `Infinity`, `1e999`) are skipped or read as
None, and each kind of problem becomes one note in `Log.notes`. A `run.json` or `snapshot.json` that exists but
cannot be read raises `RunDirError` (the caller decides whether that is fatal).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
LOG_JSONL = "log.jsonl"
SNAPSHOTS = "snapshots"
SNAPSHOT_JSON = "snapshot.json"
TOKENIZER = "tokenizer"
STATE = "state"
_SNAPSHOT_NAME = re.compile(r"step-(\d+)")
_SHOWN_LINES = 5  # line numbers listed per note
_BEING_WRITTEN = "incomplete (being written?), skipped"  # the last line, while the trainer appends it


class RunDirError(ValueError):
    """A run-directory file that exists but cannot be read (unreadable, not JSON, not a JSON object)."""


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; `RunDirError` (naming the file) when it is unreadable, invalid or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise RunDirError(f"{path}: unreadable or invalid JSON; restore or re-save it") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object; restore or re-save it")
    return data


def snapshot_info(snapshot: Path) -> dict[str, Any]:
    """A saved model folder's `snapshot.json` (step, tokens_seen, losses, wall time; {} when it has none), with
    non-finite numbers read as None."""
    path = Path(snapshot) / SNAPSHOT_JSON
    return _finite(read_json_object(path)) if path.is_file() else {}


@dataclass(frozen=True)
class SnapshotDir:
    """One complete snapshot folder `snapshots/step-NNNNNNN/`: its path and the step its name gives."""

    path: Path
    step: int  # from the folder name; `info()["step"]` is what the trainer recorded

    def info(self) -> dict[str, Any]:
        """The folder's `snapshot.json` ({} when absent; `RunDirError` when unreadable)."""
        return snapshot_info(self.path)


@dataclass(frozen=True)
class Log:
    """The rows of `log.jsonl` in file order (dicts with a finite numeric `step`; other non-finite numbers read
    as None) and one note per kind of line that was skipped or changed, naming the line numbers. `complete`: every
    line was read as written — False when the file is unreadable or a line other than the one being written was
    skipped or changed (what the log would say there is unknown, so nothing may be concluded from its absence)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    complete: bool = True


class RunDir:
    """A run directory (`RunDir(path)`); nothing is read until asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def log_path(self) -> Path:
        return self.path / LOG_JSONL

    @property
    def snapshots_dir(self) -> Path:
        return self.path / SNAPSHOTS

    @property
    def state_dir(self) -> Path:
        return self.path / STATE

    def is_run(self) -> bool:
        """Whether this is a run directory: it holds `run.json`."""
        return self.run_json.is_file()

    def has_snapshots_dir(self) -> bool:
        """Whether it has a `snapshots/` folder (a run whose `run.json` was lost still has its snapshots)."""
        return self.snapshots_dir.is_dir()

    @cached_property
    def config(self) -> dict[str, Any]:
        """`run.json` ({} when absent; `RunDirError` when it exists but cannot be read)."""
        return read_json_object(self.run_json) if self.run_json.is_file() else {}

    @property
    def tokenizer_dir(self) -> Path:
        """Where run.json says the tokenizer is (`tokenizer.path`, relative to the run), else `tokenizer/`."""
        tok = self.config.get("tokenizer")
        rel = tok.get("path") if isinstance(tok, dict) else None
        return self.path / (rel if isinstance(rel, str) and rel else TOKENIZER)

    def snapshot_path(self, step: int) -> Path:
        """Where the snapshot of `step` is (or would be): `snapshots/step-NNNNNNN/`."""
        return self.snapshots_dir / f"step-{step:07d}"

    def snapshots(self) -> list[SnapshotDir]:
        """The complete snapshots, ascending by the step in their folder names ([] when there is no snapshots/
        folder). Folders being written have temporary names (`.tmp-step-…`) and are not listed."""
        try:
            entries = list(os.scandir(self.snapshots_dir))
        except OSError:
            return []
        out = []
        for entry in entries:
            m = _SNAPSHOT_NAME.fullmatch(entry.name)
            if m and entry.is_dir():
                out.append(SnapshotDir(Path(entry.path), int(m.group(1))))
        return sorted(out, key=lambda s: s.step)

    def log(self) -> Log:
        """`log.jsonl` (see `Log`; empty when the file is absent or unreadable, with a note when unreadable)."""
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            return Log()
        except OSError as exc:
            return Log([], [f"{self.log_path}: unreadable ({exc.strerror or exc}); no log rows"], complete=False)
        return parse_log(raw, str(self.log_path))


def parse_log(raw: bytes, where: str = LOG_JSONL) -> Log:
    """The `Log` of the bytes of a `log.jsonl` file; `where` names it in the notes."""
    lines = raw.split(b"\n")
    cut = bool(lines) and lines[-1].strip() != b""  # no newline after the last line: the trainer is writing it
    problems: dict[str, list[int]] = {}
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            problems.setdefault("not UTF-8 text, skipped", []).append(number)
            continue
        try:
            row = json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError; an integer too long to convert
            kind = _BEING_WRITTEN if cut and number == len(lines) else "not valid JSON, skipped"
            problems.setdefault(kind, []).append(number)
            continue
        if not isinstance(row, dict):
            problems.setdefault("not a JSON object, skipped", []).append(number)
            continue
        if _has_non_finite(row):
            row = _finite(row)
            problems.setdefault("non-finite numbers read as missing", []).append(number)
        step = row.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            problems.setdefault("no numeric step, skipped", []).append(number)
            continue
        rows.append(row)
    return Log(rows, [_note(where, kind, numbers) for kind, numbers in problems.items()],
               complete=set(problems) <= {_BEING_WRITTEN})


def _note(where: str, kind: str, numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:_SHOWN_LINES])) + (", …" if len(numbers) > _SHOWN_LINES else "")
    what = f"line {shown}" if len(numbers) == 1 else f"{len(numbers)} lines ({shown})"
    return f"{where}: {what} {kind}"


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
