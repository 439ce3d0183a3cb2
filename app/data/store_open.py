"""Opening a results store for reading, with every SQLite failure turned into a `DataError` naming the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.data.errors import DataError
from dynamics import store as dstore


@contextmanager
def open_store(db: str | Path) -> Iterator[dstore.Store]:
    """The store `db` opened read-only (`dynamics.store.open(db, readonly=True)`); a missing file, and any SQLite
    failure while opening it or inside the block, raise `DataError`."""
    try:
        s = dstore.open(db, readonly=True)
    except FileNotFoundError as exc:
        raise DataError(f"{db}: no results store here (moved or deleted?)") from exc
    except sqlite3.Error as exc:
        raise DataError(f"{db}: cannot open the results store ({exc})") from exc
    try:
        _check_ours(s, db)
        yield s
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{db}: cannot read the results store ({exc})") from exc
    finally:
        s.close()


def _check_ours(s: dstore.Store, db: str | Path) -> None:
    """`DataError` unless `s` is a results store: an empty database, or one without `meta.schema_version`
    (someone else's SQLite file), is named as such instead of being read as an older store with nothing in it."""
    if s.schema_version() is not None:
        return
    tables = s.table_names()
    if not tables:
        raise DataError(f"{db}: an empty database, not a results store (a probe stopped before its first write?); "
                        "run python -m dynamics.probe with --out set to its folder")
    raise DataError(f"{db}: an SQLite database but not a results store (tables: {', '.join(tables[:5])}); the app "
                    "reads stores written by python -m dynamics.probe and experiments.evaluate")
