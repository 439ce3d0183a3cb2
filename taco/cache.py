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

import os
from pathlib import Path

from common import files
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
    """`common.files.check_directory` with its failures as `TacoError`s."""
    return files.check_directory(path, what, fix, create=create, error=TacoError)


def data_cache_dir(value: str | Path | None = None, flag: str = "--data-cache") -> Path:
    """The cache root a run uses (`cache_setting`), checked by `check_directory`."""
    return check_directory(*cache_setting(value, flag))
