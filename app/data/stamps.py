"""Modification stamps of the files the loaders read: the second key of every `st.cache_data` loader, so that a
file that changed (the probe or the trainer wrote to it) is read again on the next rerun."""

from __future__ import annotations

import os
from pathlib import Path

from common.run_dir import RunDir

Stamp = tuple[int, ...]


def stamp(path: str | Path) -> Stamp:
    """Modification time and size of a store's database and its `-wal` file (zeros where absent)."""
    out: list[int] = []
    for p in (str(path), f"{path}-wal"):
        try:
            st_ = os.stat(p)
            out += [st_.st_mtime_ns, st_.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)


def run_stamp(run_dir: str | Path) -> Stamp:
    """Modification times (and the log's size) of a run directory's run.json, log.jsonl and snapshots/."""
    run = RunDir(run_dir)
    out: list[int] = []
    for p in (run.run_json, run.log_path, run.snapshots_dir):
        try:
            st_ = os.stat(p)
            out += [st_.st_mtime_ns, st_.st_size if p == run.log_path else 0]
        except OSError:
            out += [0, 0]
    return tuple(out)
