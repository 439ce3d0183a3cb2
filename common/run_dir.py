"""The run directory, the format `taco.train` writes (docs/design.md, "File formats"): its one reader (`RunDir`) and
its one writer (`RunWriter` and the record builders), so that every file and field name is spelled in this module.

    RUN/run.json                 the resolved config (`run_record`)                               `RunDir.config`
    RUN/log.jsonl                one JSON object per logged step (`train_row`, `validation_row`)  `RunDir.log()`
    RUN/snapshots/step-NNNNNNN/  save_pretrained output + snapshot.json (`snapshot_record`)       `RunDir.snapshots()`
    RUN/tokenizer/               the saved fast tokenizer                                         `RunDir.tokenizer_dir`
    RUN/data/                    the validation blocks and training token counts                  named in run.json
    RUN/state/                   the rolling resumable state (written by `taco.state`)            `RunDir.state_dir`

`RunWriter` (a `RunDir`) writes all but state/, one method per file.

Reading. A run is being written while it is read (the trainer appends to `log.jsonl` and renames finished
snapshots into place), so the log reader never raises on a line: a truncated last line, a line that is not UTF-8
text or not JSON, and non-finite numbers (`NaN`, `Infinity`, `1e999`) are skipped or read as None, and each kind of
problem becomes one note in `Log.notes`. A `run.json` or `snapshot.json` that exists but cannot be read raises
`RunDirError` (the caller decides whether that is fatal).

Writing. Whole files (run.json, a snapshot folder, a truncated log) appear under their names only when complete
(`common.files`); log.jsonl grows by whole lines, each flushed as it is written, which is what the reader's
"being written" rule expects of the last line.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.files import building_dir, replace_dir, write_json, write_text

RUN_JSON = "run.json"
LOG_JSONL = "log.jsonl"
SNAPSHOTS = "snapshots"
SNAPSHOT_JSON = "snapshot.json"
TOKENIZER = "tokenizer"
STATE = "state"
DATA = "data"
VALIDATION_BLOCKS = f"{DATA}/validation_blocks.npy"  # relative to the run, as run.json records it
TOKEN_COUNTS = f"{DATA}/token_counts.npy"
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


def recorded(run: dict[str, Any], section: str, key: str) -> Any:
    """`run[section][key]` of a run.json mapping, None where it is absent or not a mapping."""
    part = run.get(section)
    return part.get(key) if isinstance(part, dict) else None


# ------------------------------------------------------------------------------------------------------ writing

def run_record(*, config: dict[str, Any], objective: str, preset: str, seed: int, block_size: int,
               model_config: dict[str, Any], corpus_source: str, corpus_fingerprint: str, corpus_description: str,
               train_blocks: int, validation_blocks: int, tokenizer_hash: str, vocab_size: int, world_size: int,
               global_batch_tokens: int, versions: dict[str, str], started: str, device: str) -> dict[str, Any]:
    """The contents of run.json, in the order the file lists them (the tokenizer and data paths are this module's
    constants)."""
    return {
        "config": config, "objective": objective, "preset": preset, "seed": seed, "block_size": block_size,
        "model_config": model_config,
        "corpus": {"source": corpus_source, "fingerprint": corpus_fingerprint, "description": corpus_description,
                   "train_blocks": int(train_blocks), "validation_blocks": int(validation_blocks)},
        "tokenizer": {"path": TOKENIZER, "hash": tokenizer_hash, "vocab_size": vocab_size},
        "validation_blocks_path": VALIDATION_BLOCKS, "token_counts_path": TOKEN_COUNTS,
        "world_size": world_size, "global_batch_tokens": global_batch_tokens,
        "versions": versions, "started": started, "device": device,
    }


def train_row(*, step: int, tokens_seen: int, lr: float, loss: float, mlm_loss: float, tc_loss: float | None,
              mlm_accuracy: float, grad_norm: float, tokens_per_s: float, elapsed_s: float) -> dict[str, Any]:
    """A training row of log.jsonl (`tc_loss` None: an MLM run, whose rows have no tc_loss)."""
    row = {"step": step, "tokens_seen": tokens_seen, "lr": lr, "loss": loss, "mlm_loss": mlm_loss, "tc_loss": tc_loss,
           "mlm_accuracy": mlm_accuracy, "grad_norm": grad_norm, "tokens_per_s": round(tokens_per_s, 1),
           "elapsed_s": round(elapsed_s, 3)}
    if tc_loss is None:
        del row["tc_loss"]
    return row


def validation_row(*, step: int, tokens_seen: int, loss: float, mlm_loss: float, tc_loss: float,
                   mlm_accuracy: float, elapsed_s: float) -> dict[str, Any]:
    """The row of log.jsonl for the validation losses measured at a snapshot (`"split": "validation"`)."""
    return {"step": step, "tokens_seen": tokens_seen, "split": "validation", "loss": loss, "mlm_loss": mlm_loss,
            "tc_loss": tc_loss, "mlm_accuracy": mlm_accuracy, "elapsed_s": round(elapsed_s, 3)}


def snapshot_record(*, tokens_seen: int, train_loss: float | None, val_mlm_loss: float, val_tc_loss: float,
                    val_mlm_accuracy: float, wall_time: float, objective: str) -> dict[str, Any]:
    """A snapshot.json without its step (`RunWriter.write_snapshot` puts the step first); `val_loss` is the MLM
    validation loss, which every objective has."""
    return {"tokens_seen": tokens_seen, "train_loss": train_loss, "val_loss": val_mlm_loss,
            "val_mlm_loss": val_mlm_loss, "val_tc_loss": val_tc_loss, "val_mlm_accuracy": val_mlm_accuracy,
            "wall_time": round(wall_time, 3), "objective": objective}


class Pretrained(Protocol):
    """A model or tokenizer that saves itself into a folder (Hugging Face's `save_pretrained`)."""

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> Any: ...


class RunWriter(RunDir):
    """Writes a run directory (the trainer's rank 0 does); reads it back like any `RunDir`."""

    def write_inputs(self, tokenizer: Pretrained | None, validation_blocks: np.ndarray | None,
                     token_counts: np.ndarray | None) -> None:
        """The tokenizer (`tokenizer/`) and the data the probe uses (`data/`), each that is given. Written before
        run.json, whose presence is what makes the folder a run."""
        self.path.mkdir(parents=True, exist_ok=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(self.path / TOKENIZER))
        for rel, array in ((VALIDATION_BLOCKS, validation_blocks), (TOKEN_COUNTS, token_counts)):
            if array is not None:
                (self.path / DATA).mkdir(exist_ok=True)
                np.save(self.path / rel, array)

    def write_run_json(self, record: dict[str, Any]) -> None:
        """run.json (a `run_record`), atomically; values JSON cannot hold are written as their `str`."""
        write_json(self.run_json, record, default=str)

    def start_log(self) -> None:
        """An empty log.jsonl (left as it is when it exists)."""
        self.log_path.touch()

    def append_log(self, row: dict[str, Any]) -> None:
        """One row (a `train_row` or `validation_row`) as one line of log.jsonl, flushed at once so that a reader
        sees whole lines."""
        with self.log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def truncate_log(self, step: int) -> None:
        """Drop the rows after `step` (a killed run's tail, before resuming from its state at `step`) and any line
        the kill cut, rewriting log.jsonl atomically. Nothing when there is no log."""
        if not self.log_path.exists():
            return
        keep = []
        for line in self.log_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
            if row.get("step", 0) <= step:
                keep.append(line)
        write_text(self.log_path, "".join(k + "\n" for k in keep))

    def elapsed_at(self, step: int) -> float:
        """The largest `elapsed_s` logged at or before `step` (0.0 without a log): a resumed run's clock goes on
        from there."""
        elapsed = 0.0
        for row in self.log().rows:
            value = row.get("elapsed_s")
            if row["step"] <= step and isinstance(value, (int, float)) and not isinstance(value, bool):
                elapsed = max(elapsed, float(value))
        return elapsed

    def write_snapshot(self, step: int, model: Pretrained, record: dict[str, Any]) -> Path:
        """snapshots/step-NNNNNNN/: the model's `save_pretrained` output (safetensors + config.json) and
        snapshot.json (`{"step": step, **record}`, `record` a `snapshot_record`), built under a temporary name and
        renamed, so that a listed snapshot is complete."""
        target = self.snapshot_path(step)
        with building_dir(target) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            (tmp / SNAPSHOT_JSON).write_text(json.dumps({"step": step, **record}, indent=2))
            replace_dir(tmp, target)
        return target

