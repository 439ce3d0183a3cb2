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
    explicit = os.environ.get(ENV_VAR, "")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / APP_NAME
    return Path.home() / ".cache" / APP_NAME


def check_directory(path: Path, what: str, fix: str) -> Path:
    """`path` if it is a directory or can be created as one; `TacoError` when it, or a parent, is a file.

    `what` names the setting in the message (e.g. "--data-cache /x"), `fix` says what to do instead.
    """
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "" if part == path else f" ({part} is a file)"
                raise TacoError(f"{what} is not a directory{where}; {fix}")
            return path
    return path


def data_cache_dir(value: str | Path | None = None, flag: str = "--data-cache") -> Path:
    """The cache root a run uses: `value` (the `--data-cache` setting) when given, else `cache_root()`.

    `TacoError` (one line naming the path and the fix) when that path is an existing file.
    """
    if value is not None and str(value):
        path = Path(value).expanduser()
        fix = f"pass a directory (created if missing), or omit {flag} to use the cache root {cache_root()}"
        return check_directory(path, f"{flag} {path}", fix)
    root = cache_root()
    source = f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "the default"
    return check_directory(root, f"the cache root {root} ({source})",
                           f"set {ENV_VAR} to a directory, or pass {flag} DIR")
