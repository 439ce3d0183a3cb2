"""Where `taco.prepare` and `taco.train` keep what they build once and reuse: one cache root per user.

Below the root, each kind of artefact keeps the layout and keys it always had:

    corpus/builtin/        the built-in corpus (train.jsonl, validation.jsonl, manifest.json)
    corpus/_downloads/     the npm and Debian packages it is built from
    tokenizers/KEY/        trained WordPiece tokenizers, KEY from (corpus fingerprint, vocabulary size)
    blocks/KEY/            packed token blocks, KEY from (corpus fingerprint, tokenizer hash, block length)

The root does not depend on the current directory, so runs started anywhere share it (as Hugging Face's
caches under `~/.cache/huggingface` are shared).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from taco.errors import TacoError

ENV_VAR = "TACO_DYNAMICS_CACHE"
APP_NAME = "taco-dynamics"


def cache_root() -> Path:
    """The cache root, read from the environment on every call.

    Precedence: `$TACO_DYNAMICS_CACHE` when set and non-empty; else `$XDG_CACHE_HOME/taco-dynamics` when
    `XDG_CACHE_HOME` is set to an absolute path (the XDG Base Directory spec ignores empty and relative
    values); else `~/.cache/taco-dynamics`. `~` is expanded; a relative `$TACO_DYNAMICS_CACHE` is taken
    relative to the current directory and returned absolute.
    """
    return _chosen_root()[0]


def _chosen_root() -> tuple[Path, str]:
    """(`cache_root()`, the setting that chose it, in words)."""
    explicit = os.environ.get(ENV_VAR, "")
    if explicit:
        root = Path(explicit).expanduser().absolute()
        return root, f"${ENV_VAR}" + ("" if explicit == str(root) else f"={explicit}")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / APP_NAME, f"$XDG_CACHE_HOME={xdg}"
    return Path.home() / ".cache" / APP_NAME, "the default"


def cache_setting(value: str | Path | None = None, flag: str = "--data-cache") -> tuple[Path, str, str]:
    """(the cache root a program uses, the setting that chose it as the message names it, the fix): `value` (the
    program's `flag`) when given, else `cache_root()`'s choice — `$TACO_DYNAMICS_CACHE`, `$XDG_CACHE_HOME` or the
    default under `~/.cache` — named by the variable that chose it, so an error never blames a flag not given."""
    if value is not None and str(value):
        path = Path(value).expanduser()
        return path, f"{flag} {value}", f"pass a writable directory (created if missing), or omit {flag}"
    root, source = _chosen_root()
    return root, f"the cache root {root} ({source})", f"set {ENV_VAR} to a writable directory, or pass {flag} DIR"


def check_directory(path: Path, what: str, fix: str, *, create: bool = True) -> Path:
    """`path` if it is a directory where files can be written, created (with its parents) when missing: the one
    check of every folder a program writes (the cache root, a run's output folder) before anything is built in
    it. `TacoError` — one line naming `what` (the setting that chose the path), the reason and `fix` — when it
    or a parent is a file, or it cannot be created or written (no permission, a read-only or virtual file system
    such as /proc). On failure nothing is left behind: folders it created are removed again. `create=False`
    leaves a missing `path` missing and tests the nearest folder that exists, where it would be created."""
    existing = path
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            if not part.is_dir():
                kind = "a broken link" if not part.exists() else "a file"
                where = f" (it is {kind})" if part == path else f" ({part} is {kind})"
                raise TacoError(f"{what} is not a directory{where}; {fix}")
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
        raise TacoError(f"{what}: cannot write there ({reason}); {fix}") from None
    return path


def data_cache_dir(value: str | Path | None = None, flag: str = "--data-cache") -> Path:
    """The cache root a run uses (`cache_setting`), checked by `check_directory`."""
    return check_directory(*cache_setting(value, flag))
