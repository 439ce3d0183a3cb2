"""A local Hugging Face Hub cache written by the tests themselves (nothing is downloaded).

`add_revision(cache, "org/name", "step1000", folder)` stores the files of `folder` the way `hf download` does:
`models--org--name/blobs/<sha256>` (one per distinct content), `snapshots/<commit>/<file>` as a relative symlink
to its blob, and `refs/step1000` holding the commit hash (40 hex digits, derived from the files, so identical
folders share a commit, as on the Hub).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def repo_folder(cache: Path, repo_id: str) -> Path:
    """`models--org--name` under `cache` (huggingface_hub's naming of a model repository's folder)."""
    return cache / ("models--" + repo_id.replace("/", "--"))


def add_revision(cache: Path, repo_id: str, revision: str, folder: Path) -> Path:
    """Store the files of `folder` as `revision` of `repo_id` in the cache; return the snapshot folder."""
    repo = repo_folder(cache, repo_id)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    commit = hashlib.sha1("".join(f"{p.relative_to(folder)}:{d}\n" for p, d in digests.items()).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for p, digest in digests.items():
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(p, blob)
        target = snapshot / p.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(os.path.relpath(blob, target.parent))
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot
