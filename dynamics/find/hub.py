"""Snapshot series from the local Hugging Face Hub cache: `EleutherAI/pythia-70m --revisions step1000,step2000`.

Published checkpoint series (Pythia, and others that follow its convention) are one Hub repository with a
branch per step. `hf download ORG/NAME --revision step1000` puts each in the cache (`models--ORG--NAME/refs/
step1000` holds a commit hash, `snapshots/<commit>/` the files); this module turns cached revisions back into a
`Series` without ever touching the network: folders are resolved by `huggingface_hub.snapshot_download(...,
local_files_only=True)` and listed by `huggingface_hub.scan_cache_dir`, so the cache layout stays theirs.

* Which argument is a Hub id: one spelled `ORG/NAME` that is not an existing path (a directory keeps its meaning).
* Revisions: `--revisions` names them (`all`: every cached ref named like a step); without it, the cached `main`.
* Step: from the revision name (`step1000` → 1000, or a plain integer); a lone revision named otherwise (`main`)
  is a single model (step from its `config.json`, else 0, as for a model folder).
* Tokens seen: step × tokens per step where the series is known to say how (`TOKENS_PER_STEP`), else None.
* Tokenizer: the series' snapshot folders first (latest step first), then the cached `main`, then any other cached
  revision of the repository; `dynamics.find.series.validate` then checks that every snapshot agrees with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import scan_cache_dir, snapshot_download
from huggingface_hub.errors import (
    CacheNotFound,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
)

from dynamics.errors import ProbeError
from dynamics.find.series import Series, Snapshot, config_step
from dynamics.find.tokens import has_tokenizer

ALL = "all"
MAIN = "main"
KIND = "hub"
# Tokens per optimiser step of published series whose model card states it (repo-id prefix → tokens). Pythia:
# 1024 sequences of 2048 tokens per step (Biderman et al. 2023), the same for every size and the deduped runs.
TOKENS_PER_STEP: dict[str, int] = {"EleutherAI/pythia-": 2_097_152}

_HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_REVISION_STEP_RE = re.compile(r"(?:step)?(\d+)")


def is_hub_id(arg: str | Path) -> bool:
    """Whether a command-line argument names a Hub model (`ORG/NAME`) rather than a folder: it has that form and
    no such path exists (so `runs/mlm` stays a directory whenever it is one)."""
    text = str(arg)
    return bool(_HUB_ID_RE.fullmatch(text)) and not Path(text).expanduser().exists()


def cache_dir() -> Path:
    """The Hub cache folder as huggingface_hub defines it (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
    `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`), read from the environment now:
    `huggingface_hub.constants` freezes it at import, and `dynamics.probe.run` may be called after it changed."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def step_from_revision(revision: str) -> int | None:
    """The step a revision's name gives (`step1000` → 1000, `1000` → 1000; None for `main`, tags, hashes)."""
    m = _REVISION_STEP_RE.fullmatch(revision)
    return int(m.group(1)) if m else None


def tokens_per_step(repo_id: str) -> int | None:
    """Tokens seen per step of a known series (`TOKENS_PER_STEP`), None where the series does not say."""
    return next((n for prefix, n in TOKENS_PER_STEP.items() if repo_id.startswith(prefix)), None)


def _download_hint(repo_id: str, revision: str | None = None) -> str:
    rev = f" --revision {revision}" if revision and revision != MAIN else ""
    return f"download it first with hf download {repo_id}{rev}"


def cached_refs(repo_id: str) -> dict[str, Path] | None:
    """ref name → snapshot folder of every revision of model `repo_id` in the cache (None when the repository is
    not cached at all). Reads only the cache (`huggingface_hub.scan_cache_dir`)."""
    try:
        info = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return None
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
    if repo is None:
        return None
    return {ref: rev.snapshot_path for ref, rev in repo.refs.items()}


def _refs_shown(refs: dict[str, Path]) -> str:
    names = sorted(refs, key=lambda r: (step_from_revision(r) is None, step_from_revision(r) or 0, r))
    return ", ".join(names[:12]) + (", …" if len(names) > 12 else "") if names else "none"


def snapshot_folder(repo_id: str, revision: str) -> Path:
    """The cached folder of `repo_id` at `revision` (a branch, tag or commit), offline; `ProbeError` naming the
    repository or revision and the `hf download` command when it is not in the cache."""
    where = f"the Hugging Face cache ({cache_dir()})"
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir()), local_files_only=True))
    except HFValidationError as exc:
        raise ProbeError(f"{repo_id}: not a Hugging Face model id ({str(exc).splitlines()[0]}); "
                         "pass ORG/NAME or a directory") from None
    except IncompleteSnapshotError:
        raise ProbeError(f"{repo_id} at revision {revision}: its cached snapshot is incomplete; "
                         f"{_download_hint(repo_id, revision)} (again)") from None
    except LocalEntryNotFoundError:
        pass
    refs = cached_refs(repo_id)
    if refs is None:
        raise ProbeError(f"{repo_id}: no such directory, and no model {repo_id} in {where}; pass a run directory, "
                         f"or {_download_hint(repo_id, revision)}")
    raise ProbeError(f"{repo_id}: no revision {revision} in {where} (cached: {_refs_shown(refs)}); "
                     f"{_download_hint(repo_id, revision)}")


def _revisions(repo_id: str, revisions: Sequence[str] | None) -> list[str]:
    """The revisions to read: those named, every cached step-named ref for `all`, or `main`."""
    if not revisions:
        return [MAIN]
    if list(revisions) != [ALL]:
        return list(revisions)
    refs = cached_refs(repo_id)
    if refs is None:
        raise ProbeError(f"{repo_id}: no model {repo_id} in the Hugging Face cache ({cache_dir()}); "
                         f"{_download_hint(repo_id)} --revision step1000 (one per step)")
    steps = [r for r in refs if step_from_revision(r) is not None]  # `discover_hub` sorts them by step
    if not steps:
        raise ProbeError(f"{repo_id}: --revisions all found no cached revision named like a step (stepN) "
                         f"(cached: {_refs_shown(refs)}); name the revisions with --revisions")
    return steps


def _tokenizer(repo_id: str, snaps: list[Snapshot]) -> Path:
    """The series' tokenizer folder: a snapshot's (latest first), else the cached `main`'s, else any cached
    revision's (their vocabularies are checked against every snapshot later, by `series.validate`)."""
    for s in sorted(snaps, key=lambda s: -s.step):
        if has_tokenizer(s.path):
            return s.path
    refs = cached_refs(repo_id) or {}
    others = [refs[MAIN]] if MAIN in refs else []
    others += [refs[r] for r in sorted(refs) if r != MAIN]
    found = next((p for p in others if has_tokenizer(p)), None)
    if found is None:
        raise ProbeError(f"{repo_id}: no tokenizer (tokenizer.json, vocab.txt or vocab.json) in any cached revision; "
                         f"{_download_hint(repo_id)} (its main revision holds the tokenizer)")
    return found


def discover_hub(repo_id: str, revisions: Sequence[str] | None = None) -> Series:
    """The series of `repo_id`'s cached `revisions` (see the module docstring), sorted by step, named `repo_id`.

    Raises `ProbeError` for a repository or revision that is not cached, a revision whose step cannot be told
    (when several are read), two revisions at one step, or no tokenizer."""
    names = _revisions(repo_id, revisions)
    per_step = tokens_per_step(repo_id)
    snaps: list[Snapshot] = []
    for rev in dict.fromkeys(names):  # a revision named twice is read once
        folder = snapshot_folder(repo_id, rev)
        step = step_from_revision(rev)
        if step is None:
            if len(names) > 1:
                raise ProbeError(f"{repo_id} at revision {rev}: cannot tell its training step (revisions of a series "
                                 "are named stepN or N); leave it out of --revisions or probe it on its own")
            step = config_step(folder)
        info: dict[str, Any] = {"hub": {"repo_id": repo_id, "revision": rev, "commit": folder.name}}
        snaps.append(Snapshot(folder, step, None if per_step is None else step * per_step, repo_id, info))
    snaps.sort(key=lambda s: s.step)
    for a, b in zip(snaps, snaps[1:], strict=False):
        if a.step == b.step:
            raise ProbeError(f"{repo_id}: revisions {a.info['hub']['revision']} and {b.info['hub']['revision']} "
                             f"both give step {a.step}; pass one of them")
    tok = _tokenizer(repo_id, snaps)
    meta = {"hub": {"repo_id": repo_id, "revisions": [s.info["hub"]["revision"] for s in snaps],
                    "tokens_per_step": per_step}}
    return Series(snaps[0].path.parent.parent, repo_id, snaps, tok, meta, KIND)
