"""Opening a results store for reading, with every SQLite failure turned into a `DataError` naming the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.data.errors import DataError
from dynamics.errors import StoreError
from dynamics.results import store as dstore


@contextmanager
def open_store(db: str | Path) -> Iterator[dstore.Store]:
    """The store `db` opened read-only (`dynamics.results.store.open(db, readonly=True)`: an older store is read through
    its compatibility view); a missing file, a database that is not a results store (empty, someone else's), a
    store of a newer schema, and any SQLite failure while opening it or inside the block raise `DataError`."""
    try:
        s = dstore.open(db, readonly=True)
    except FileNotFoundError as exc:
        raise DataError(f"{db}: no results store here (moved or deleted?)") from exc
    except StoreError as exc:
        raise DataError(str(exc)) from exc
    except sqlite3.Error as exc:
        raise DataError(f"{db}: cannot open the results store ({exc})") from exc
    try:
        yield s
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{db}: cannot read the results store ({exc})") from exc
    finally:
        s.close()
