"""A snapshot series from any training loop: `SnapshotWriter` decides when a snapshot is due (`snapshot_steps`, the
schedule `taco.train` uses, or the steps the caller gives) and writes the run-directory format of
`common.run_dir` (run.json, tokenizer/, data/, log.jsonl, `snapshots/step-NNNNNNN/` renamed into place when
complete). `taco.train` and the Hugging Face callback (`dynamics.callback`) write through it, so the format has one
implementation; a hand-written loop calls it once per optimizer step:

    writer = SnapshotWriter("runs/mine", max_steps=1000)                     # step 0, 1, 2, 4, …, 64, every 100, 1000
    writer.begin(tokenizer=tok, validation_blocks=blocks)           # run.json, tokenizer/, data/, empty log
    writer(model, step=0, tokens_seen=0)                             # the step-0 snapshot
    for step in range(1, 1001):
        loss = train_step(...)
        writer(model, step, tokens_seen=step * batch_tokens, logs={"loss": loss})   # a log row; a snapshot when due

`dynamics.probe RUN` (and `--follow`, which stops after run.json's `config.max_steps`) reads what it writes.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.run_dir import TOKEN_COUNTS, TOKENIZER, VALIDATION_BLOCKS, Pretrained, RunWriter

DEFAULT_EVERY = 100  # taco.train's --snapshot-every default


def snapshot_steps(max_steps: int, every: int, log_spaced: bool = True) -> list[int]:
    """Step 0, the powers of two below `every` (Pythia's convention), every `every` steps, and the final step."""
    steps = {0, max_steps}
    if log_spaced:
        k = 1
        while k < min(every, max_steps):
            steps.add(k)
            k *= 2
    steps.update(range(every, max_steps + 1, every))
    return sorted(s for s in steps if 0 <= s <= max_steps)


def schedule(max_steps: int, *, every: int = DEFAULT_EVERY, log_spaced: bool = True,
             steps: Iterable[int] | None = None) -> frozenset[int]:
    """The steps to snapshot: `steps` when given (plus step 0 and the final step, which every series has: the
    probe's anchor drift and `--follow` need the final one), else `snapshot_steps(max_steps, every, log_spaced)`."""
    if max_steps < 0 or every < 1:
        raise ValueError(f"max_steps must be >= 0 and every >= 1 (got {max_steps}, {every})")
    if steps is None:
        return frozenset(snapshot_steps(max_steps, every, log_spaced))
    return frozenset(s for s in {0, max_steps, *(int(s) for s in steps)} if 0 <= s <= max_steps)


def _plain(value: Any) -> Any:
    """A log value as JSON holds it: numbers (tensors and numpy scalars through `.item()`), strings, booleans,
    None; non-finite floats become None (the reader would read them so anyway)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


class SnapshotWriter:
    """Writes one run directory for a training loop (see the module docstring). `main=False` (the other processes
    of a distributed run) makes every method a no-op, so each process may call it alike."""

    def __init__(self, run_dir: str | Path, *, max_steps: int, every: int = DEFAULT_EVERY, log_spaced: bool = True,
                 steps: Iterable[int] | None = None, main: bool = True) -> None:
        self.run = RunWriter(run_dir)
        self.max_steps = int(max_steps)
        self.steps = schedule(self.max_steps, every=every, log_spaced=log_spaced, steps=steps)
        self.main = main
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0

    @property
    def path(self) -> Path:
        return self.run.path

    def due(self, step: int) -> bool:
        """Whether `step` is on the schedule."""
        return step in self.steps

    def elapsed(self) -> float:
        """Seconds of training so far, a resumed run's logged time included."""
        return self._elapsed_before + time.perf_counter() - self._t0

    def begin(self, *, tokenizer: Pretrained | None, run_info: Mapping[str, Any] | None = None,
              validation_blocks: np.ndarray | None = None, token_counts: np.ndarray | None = None,
              block_size: int | None = None, replace: bool = False) -> None:
        """A new run: the tokenizer, the probe's data (validation blocks `(n, block)`, training token counts
        `(vocab,)`; each optional), then run.json — `run_info` with the paths of what was written, `config.max_steps`
        (where `--follow` reads the final step) and the schedule (`snapshot_steps`) — and an empty log.jsonl. `replace`: first remove what an earlier run left here
        (run.json, log.jsonl, tokenizer/, data/, snapshots/; nothing else)."""
        if not self.main:
            return
        run = self.run
        if replace:
            for name in (run.snapshots_dir, run.path / "tokenizer", run.path / "data"):
                shutil.rmtree(name, ignore_errors=True)
            run.log_path.unlink(missing_ok=True)
            run.run_json.unlink(missing_ok=True)
        if tokenizer is not None or validation_blocks is not None or token_counts is not None:
            run.write_inputs(tokenizer, validation_blocks, token_counts)
        record = dict(run_info or {})
        record["config"] = {**(record.get("config") or {}), "max_steps": self.max_steps}
        if block_size is not None:
            record.setdefault("block_size", int(block_size))
        if tokenizer is not None:
            record.setdefault("tokenizer", {"path": TOKENIZER})
        if validation_blocks is not None:
            record.setdefault("validation_blocks_path", VALIDATION_BLOCKS)
        if token_counts is not None:
            record.setdefault("token_counts_path", TOKEN_COUNTS)
        record.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        record["snapshot_steps"] = sorted(self.steps)
        run.write_run_json(record)
        run.start_log()
        self._t0, self._elapsed_before = time.perf_counter(), 0.0

    def resume(self, step: int) -> None:
        """Continue the run from its state at `step`: drop the log rows after it (a killed run's tail) and go on
        with the clock it had logged. Snapshots after `step` are rewritten as the run reaches them again."""
        if not self.main:
            return
        self.run.truncate_log(step)
        self._t0, self._elapsed_before = time.perf_counter(), self.run.elapsed_at(step)

    def log(self, step: int, tokens_seen: int | None, values: Mapping[str, Any]) -> dict[str, Any]:
        """One row of log.jsonl: `{"step", "tokens_seen", **values}` (values made JSON-plain); returns it."""
        row = {"step": int(step), "tokens_seen": None if tokens_seen is None else int(tokens_seen),
               **{str(k): _plain(v) for k, v in values.items()}}
        if self.main:
            self.run.append_log(row)
        return row

    def snapshot(self, model: Pretrained, step: int, tokens_seen: int | None,
                 record: Mapping[str, Any] | None = None) -> Path | None:
        """`snapshots/step-NNNNNNN/` now, whatever the schedule: the model's `save_pretrained` output and
        snapshot.json (`record` when given, else tokens seen and wall time)."""
        if not self.main:
            return None
        if record is None:
            record = {"tokens_seen": tokens_seen, "wall_time": round(self.elapsed(), 3)}
        return self.run.write_snapshot(int(step), model, dict(record))

    def __call__(self, model: Pretrained, step: int, tokens_seen: int | None,
                 logs: Mapping[str, Any] | None = None) -> Path | None:
        """What a loop calls after each optimizer step: a log row when `logs` has values, then the snapshot when
        `step` is due (its folder; None otherwise)."""
        if logs:
            self.log(step, tokens_seen, {**logs, "elapsed_s": logs.get("elapsed_s", round(self.elapsed(), 3))})
        return self.snapshot(model, step, tokens_seen) if self.due(step) else None
