"""Finding what to show: run directories and results stores under the directories the app was given."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.data.errors import DataError
from app.data.store_open import open_store
from common.run_dir import RunDir
from dynamics.results import store as dstore

DEFAULT_DIRS = ("runs", "experiments/results")
DB_NAME = dstore.DB_NAME
MAX_DEPTH = 4
SKIP_DIRS = frozenset({"snapshots", "state", "tokenizer", "data", "arrays", "figures", "__pycache__", "node_modules"})


@dataclass(frozen=True)
class Sources:
    """What was found under the directories the app was given."""

    runs: tuple[str, ...] = ()  # run directories (holding run.json)
    stores: tuple[str, ...] = ()  # results databases
    missing: tuple[str, ...] = ()  # given paths that do not exist
    searched: tuple[str, ...] = ()  # the given paths

    @property
    def empty(self) -> bool:
        return not self.runs and not self.stores


def discover(dirs: Sequence[str | Path]) -> Sources:
    """Run directories and results stores under `dirs` (searched `MAX_DEPTH` folders deep, skipping snapshot,
    state and array folders), plus the run directories that each store names and that exist here."""
    runs: dict[str, None] = {}
    stores: dict[str, None] = {}
    missing = []
    for given in dirs:
        root = Path(given).expanduser()
        if not root.exists():
            missing.append(str(given))
        elif root.is_file():
            if root.suffix in (".sqlite", ".db"):
                stores[str(root.resolve())] = None
        else:
            for folder in _walk(root):
                if RunDir(folder).is_run():
                    runs[str(folder.resolve())] = None
                if (folder / DB_NAME).is_file():
                    stores[str((folder / DB_NAME).resolve())] = None
    for db in list(stores):
        for path in _store_run_paths(db):
            if RunDir(path).is_run():
                runs[str(Path(path).resolve())] = None
    return Sources(tuple(sorted(runs)), tuple(sorted(stores)), tuple(missing), tuple(str(d) for d in dirs))


def _walk(root: Path) -> Iterator[Path]:
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        yield folder
        if depth >= MAX_DEPTH:
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in SKIP_DIRS:
                stack.append((Path(entry.path), depth + 1))


def _store_run_paths(db: str) -> list[str]:
    """The run paths a store names ([] when it cannot be read)."""
    try:
        with open_store(db) as s:
            df = s.runs()
    except DataError:
        return []
    return [p for p in df["path"].dropna().astype(str)]
