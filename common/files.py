"""Writing files and folders so that a reader never sees half of one: everything is written under a temporary name in
the target's own folder (so the final rename stays on one file system) and then renamed into place with
`os.replace`, which is atomic. A write that fails midway leaves the previous file as it was and no temporary file.

Every program writes this way (run directories, caches, stores, reports), because every one of them is read while
it is written: the probe follows a training run, the app reads a store the probe is filling.

Temporary names start with a dot and end in `.tmp` plus the target's suffix (`savefig` and `to_csv` pick their
format from it); they carry the process id and a random part, so two processes writing one file do not share one.
Files are created with the ordinary mode (umask), not the private mode of `tempfile.mkstemp`. Nothing is fsynced:
the guarantee is against readers and crashes of the writer, not against a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from common.errors import UsageError


def temporary_name(path: str | Path) -> Path:
    """A fresh name beside `path` for writing it: `.NAME.PID.RANDOM.tmpSUFFIX`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (`fig.savefig(tmp)`,
    `frame.to_csv(tmp)`); renamed onto `path` when the block ends normally, deleted when it raises. The folder is
    created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def writing(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """An open file (`mode` "w" or "wb"; `open_args` as for `open`, text defaults to UTF-8) whose contents replace
    `path` when the block ends normally; when it raises, `path` is untouched and the temporary file is gone."""
    if mode not in ("w", "wb"):
        raise ValueError(f"writing() opens files for writing only ('w' or 'wb'), not {mode!r}")
    if mode == "w":
        open_args.setdefault("encoding", "utf-8")
    with replacing(path) as tmp, open(tmp, "xb" if mode == "wb" else "x", **open_args) as handle:
        yield handle


def write_bytes(path: str | Path, data: bytes) -> None:
    """`data` as the whole of `path`, atomically."""
    with writing(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """`text` as the whole of `path` (no newline added), atomically."""
    with writing(path, "w", encoding=encoding) as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any, *, indent: int | None = 2, default: Callable[[Any], Any] | None = None,
               end: str = "") -> None:
    """`json.dumps(data, indent=indent, default=default) + end` as the whole of `path`, atomically."""
    write_text(path, json.dumps(data, indent=indent, default=default) + end)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """`np.savez` of `arrays` as the whole of `path`, atomically (the file is whole or absent)."""
    with writing(path, "wb") as handle:
        np.savez(handle, **arrays)


@contextmanager
def building_dir(target: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside `target` (`.tmp-NAME-…`, private mode) to fill; deleted when the block
    raises, left for the caller to move into place (`replace_dir`, `install_dir`) otherwise. The parent folder is
    created if missing."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp: str | Path, target: str | Path, keep_theirs: Callable[[Path], bool] | None = None) -> bool:
    """Move the finished folder `tmp` to `target`, replacing an older copy (renamed aside first, deleted after), so
    that `target` is always either the old folder whole or the new one whole. True when `tmp` was installed.

    Between the two renames `target` is absent (a folder cannot be renamed onto a full one): a reader may find
    nothing there for that moment, and a process killed in it leaves the old copy only under `.NAME.old-PID`.
    Where a name must never be missing (the resumable state), replace the files inside it instead (`writing`).

    When the final rename fails because another process put a folder at `target` meanwhile, and
    `keep_theirs(target)` says that folder is good, theirs stays, `tmp` is deleted and the answer is False;
    otherwise the error propagates and the older copy is left aside (`.NAME.old-PID`), not deleted."""
    tmp, target = Path(tmp), Path(target)
    trash = None
    if target.exists():
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(target, trash)
    try:
        os.replace(tmp, target)
        installed = True
    except OSError:
        if keep_theirs is None or not keep_theirs(target):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        installed = False
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return installed


def install_dir(tmp: str | Path, target: str | Path) -> bool:
    """Move the finished folder `tmp` to `target` unless another process installed one there first (a cache entry
    built twice at once): then theirs is kept and `tmp` deleted. True when `tmp` was installed. Never replaces a
    folder that is there, so a process reading it is not disturbed."""
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def check_directory(path: Path, what: str, fix: str, *, create: bool = True,
                    error: type[Exception] = UsageError) -> Path:
    """`path` if it is a directory where files can be written, created (with its parents) when missing: the one
    check of every folder a program writes (the cache root, a run's output folder, a results store's folder)
    before anything is built in it. Raises `error` (each program passes its own `UsageError`), one line naming
    `what` (the setting that chose the path), the reason and `fix`, when it or a parent is a file, or it cannot be
    created or written (no permission, a read-only or virtual file system such as /proc). On failure nothing is
    left behind: folders it created are removed again. `create=False` leaves a missing `path` missing and tests
    the nearest folder that exists, where it would be created."""
    existing = path
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                kind = "a broken link" if not part.exists() else "a file"
                where = f" (it is {kind})" if part == path else f" ({part} is {kind})"
                raise error(f"{what} is not a directory{where}; {fix}")
            existing = part
            break
    target = path if create else existing
    created = [p for p in (target, *target.parents) if not p.exists()]
    try:
        target.mkdir(parents=True, exist_ok=True)
        # A file made and removed again: mkdir alone does not prove that files can be written there.
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        for p in created:  # deepest first: only the folders this check made, and only while empty
            with contextlib.suppress(OSError):
                p.rmdir()
        reason = exc.strerror or type(exc).__name__
        raise error(f"{what}: cannot write there ({reason}); {fix}") from None
    return path
