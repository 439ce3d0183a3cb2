"""Snapshot integrity: do a series' snapshots hold what they claim? (DESIGN.md, "Runs as groups, and time as data")

Published checkpoint series have silently held the wrong weights (Pythia's checkpoint branches did). The probe
hashes the weights of every snapshot it measures and flags, per series:

* `duplicate_weights` — two or more steps hold identical weights (a copied folder, a snapshot saved from the
  wrong model), or part of them: tensors identical at two steps but different at a hashed step between them
  (a weight shard of one step published under another; tensors that never change, e.g. frozen embeddings, are
  not flagged). Whole duplicates are not flagged where the run's records show learning rate 0 for every update
  between them: linear warm-up from 0 (taco.train's default) makes the update at step 1 a no-op, so steps 0 and
  1 are equal by design. The records are the training log's `lr` and the schedule run.json's config describes
  (`LearningRates`). A flag is raised only on evidence: where the log is damaged (`run_dir.Log.complete` is
  False) and no readable record shows an update with learning rate > 0 between two equal snapshots, they are not
  flagged; a note names the log and says the check could not be made (`evidence_notes`);
* `step_order` — a folder named for one step (`step-N`, `checkpoint-N`) records another in its `snapshot.json`
  or `trainer_state.json` (a renamed folder, or another step's files);
* `tokens_not_increasing` — tokens seen do not increase from one snapshot to the next in step order.

The hash (`weights_digests`) is a sha256 over the tensors — names sorted, then each tensor's name, dtype, shape
and the sha256 of its raw bytes, read from memory-mapped safetensors files (no copies) — so it does not depend on
the order of tensors in the file, its metadata, or how the weights are sharded; the per-tensor digests are kept
(64 bits each) for the partial check. A `pytorch_model.bin` is hashed as file bytes (no per-tensor digests).
`hash_snapshots` reuses a hash recorded in the store while the weight files' names, sizes and modification times
are unchanged, so each snapshot is hashed once. `check_series` is a pure function of `SnapshotRecord`s.

Flags are stored as notes of family "integrity" under probe hash "integrity" (`FAMILY`, `PROBE_HASH`): they are a
property of the snapshots, not of a probe set, and are replaced for a run each time the probe checks it.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import struct
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.run_dir import RunDir
from dynamics.errors import ProbeError
from dynamics.find.series import Series, Snapshot, step_from_name, weight_files

FAMILY = "integrity"
PROBE_HASH = "integrity"  # notes of this family live under this fixed key, independent of the probe set
HASH_KEY = "weights_hash"  # the key of a snapshot's hash entry in the store's `snapshots.info` JSON
KINDS = ("duplicate_weights", "step_order", "tokens_not_increasing")
TENSORS_METHOD = "sha256/safetensors-tensors/v1"
FILE_METHOD = "sha256/file-bytes/v1"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SnapshotRecord:
    """What the checks read of one snapshot: its run, recorded step, tokens seen (None when unknown), weights hash
    (None when not hashed), the step its folder name gives (None when the name has none), the folder's name and the
    per-tensor digests (tensor name → digest; None when unknown)."""

    run: str
    step: int
    tokens_seen: int | None = None
    weights_hash: str | None = None
    name_step: int | None = None
    folder: str | None = None
    tensor_hashes: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Flag:
    """One integrity problem of a run: its kind (one of `KINDS`), the steps involved (ascending) and one sentence."""

    run: str
    kind: str
    steps: tuple[int, ...]
    message: str

    @property
    def line(self) -> str:
        """The flag as the probe prints it: `warning: RUN: message`."""
        return f"warning: {self.run}: {self.message}"


# ------------------------------------------------------------------------------------------------------ checks

def _and(steps: Sequence[int]) -> str:
    words = [str(s) for s in steps]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _no_update(a: int, b: int, zero_lr: Collection[int]) -> bool:
    """Whether every update from step a to step b (steps a+1 … b) was made with learning rate 0."""
    return b - a <= len(zero_lr) and all(s in zero_lr for s in range(a + 1, b + 1))


def _recurring_tensors(snaps: Sequence[SnapshotRecord]) -> list[Flag]:
    """Flags for pairs of steps a < b whose weights differ but where some tensors are identical at a and b and
    different at a step between them (weights do not return exactly to an earlier value: part of a snapshot was
    taken from another step). Only snapshots with per-tensor digests take part."""
    hashed = [r for r in snaps if r.tensor_hashes]
    pairs: dict[tuple[int, int], list[str]] = {}
    for name in sorted({n for r in hashed for n in r.tensor_hashes}):  # type: ignore[union-attr]
        last: dict[str, int] = {}  # digest → index of its latest occurrence
        for k, r in enumerate(hashed):
            digest = r.tensor_hashes.get(name)  # type: ignore[union-attr]
            if digest is None:
                continue
            i = last.get(digest)
            if i is not None and i < k - 1 and hashed[i].weights_hash != r.weights_hash \
                    and any((hashed[j].tensor_hashes or {}).get(name) not in (None, digest) for j in range(i + 1, k)):
                pairs.setdefault((hashed[i].step, r.step), []).append(name)
            last[digest] = k
    flags = []
    for (a, b), names in sorted(pairs.items()):
        total = len(set(_tensor_names(hashed, a)) | set(_tensor_names(hashed, b)))
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        flags.append(Flag(hashed[0].run, "duplicate_weights", (a, b),
                          f"steps {a} and {b} share {len(names)} of {total} tensors ({shown}) that differ at a step "
                          "between them: part of one snapshot was copied from the other"))
    return flags


def _tensor_names(records: Sequence[SnapshotRecord], step: int) -> list[str]:
    return [n for r in records if r.step == step for n in (r.tensor_hashes or {})]


@dataclass(frozen=True)
class LearningRates:
    """What a run's own records say about the learning rate of its optimizer updates (update s takes the weights
    of step s−1 to step s): updates known to have used rate 0 (`zero`) or a rate > 0 (`positive`, and every
    update from `positive_from` on where a recorded schedule says so), and what of the records could not be read
    (`unreadable`, naming the file; None when nothing was lost)."""

    zero: frozenset[int] = frozenset()
    positive: frozenset[int] = frozenset()
    positive_from: int | None = None
    unreadable: str | None = None

    def updated(self, a: int, b: int) -> bool:
        """Whether a record shows an update with learning rate > 0 among updates a+1 … b."""
        if self.positive_from is not None and b >= max(a + 1, self.positive_from):
            return True
        return any(a < s <= b for s in self.positive)


def _duplicates(snaps: Sequence[SnapshotRecord], zero: frozenset[int], rates: LearningRates | None
                ) -> tuple[list[Flag], list[str]]:
    """(flags, notes) for groups of steps with identical weights: flagged when an update between them is not
    explained by learning rate 0, unless the records that could explain it are damaged and none shows an update
    with rate > 0 between them — then a note says the group could not be checked."""
    flags: list[Flag] = []
    notes: list[str] = []
    groups: dict[str, list[int]] = {}
    for r in snaps:
        if r.weights_hash is not None:
            groups.setdefault(r.weights_hash, []).append(r.step)
    for digest, steps in groups.items():
        unexplained = [(a, b) for a, b in zip(steps, steps[1:], strict=False) if not _no_update(a, b, zero)]
        if len(steps) < 2 or not unexplained:
            continue
        if rates is not None and rates.unreadable and not any(rates.updated(a, b) for a, b in unexplained):
            notes.append(f"{snaps[0].run}: steps {_and(steps)} hold identical weights, which is expected only where "
                         f"the learning rate was 0 between them, but {rates.unreadable}; they were not checked for "
                         "duplicate weights")
            continue
        flags.append(Flag(snaps[0].run, "duplicate_weights", tuple(steps),
                          f"steps {_and(steps)} hold identical weights (sha256 {digest[:12]}): a snapshot was "
                          "copied or saved from the wrong step"))
    return flags, notes


def evidence_notes(snapshots: Sequence[SnapshotRecord], rates: LearningRates | None = None,
                   zero_lr_steps: Collection[int] = ()) -> list[str]:
    """What the check could not read, for the probe's notes: one note per identical-weight group `check_series`
    leaves unflagged for want of readable records, else one naming the damaged log ([] when nothing was lost)."""
    if rates is None or not rates.unreadable or not snapshots:
        return []
    snaps = sorted(snapshots, key=lambda r: r.step)
    notes = _duplicates(snaps, frozenset(zero_lr_steps) | rates.zero, rates)[1]
    return notes or [f"{snaps[0].run}: the integrity check read the learning rates without the damaged part of its "
                     f"training log ({rates.unreadable})"]


def check_series(snapshots: Sequence[SnapshotRecord], zero_lr_steps: Collection[int] = (),
                 rates: LearningRates | None = None) -> list[Flag]:
    """The integrity flags of one run's snapshots (any order; they are checked in step order).

    `zero_lr_steps` (and `rates.zero`): steps whose optimizer update used learning rate 0; identical weights at
    steps a < b are expected, and not flagged, when every step a+1 … b is among them. `rates`: the run's records
    (`learning_rates`); where they are damaged, identical weights are flagged only when a readable record shows an
    update with rate > 0 between them (`evidence_notes` notes the others). Flags come whole duplicates first, then
    partial ones, step/name disagreements and tokens, each in step order."""
    snaps = sorted(snapshots, key=lambda r: r.step)
    if len({r.run for r in snaps}) > 1:
        raise ValueError(f"check_series checks one run at a time (got {sorted({r.run for r in snaps})})")
    zero = frozenset(zero_lr_steps) | (rates.zero if rates is not None else frozenset())
    flags, _ = _duplicates(snaps, zero, rates)
    flags += _recurring_tensors(snaps)
    for r in snaps:
        if r.name_step is not None and r.name_step != r.step:
            folder = r.folder or f"the folder of step {r.name_step}"
            flags.append(Flag(r.run, "step_order", tuple(sorted({r.step, r.name_step})),
                              f"{folder} is named for step {r.name_step} but records step {r.step}: the folder "
                              "was renamed or holds another step's files"))
    known = [r for r in snaps if r.tokens_seen is not None]
    for a, b in zip(known, known[1:], strict=False):
        if b.tokens_seen <= a.tokens_seen:  # type: ignore[operator]
            how = "stay at" if b.tokens_seen == a.tokens_seen else "fall from"
            what = f"{a.tokens_seen}" if b.tokens_seen == a.tokens_seen else f"{a.tokens_seen} to {b.tokens_seen}"
            flags.append(Flag(a.run, "tokens_not_increasing", (a.step, b.step),
                              f"tokens seen {how} {what} from step {a.step} to step {b.step}: the snapshots are out "
                              "of order or their counts are wrong"))
    return flags


# ------------------------------------------------------------------------------------------------------ hashing

def _safetensors_layout(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data section, header without `__metadata__`) of a safetensors file; ValueError if corrupt."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{path}: corrupt safetensors header")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header")
    header.pop("__metadata__", None)
    return 8 + n, header


def _hash_safetensors(files: Sequence[Path]) -> tuple[str, dict[str, str]]:
    """(sha256 over every tensor's name, dtype, shape and bytes digest, names sorted; name → 64-bit digest of its
    bytes) of the tensors of `files` (see the module docstring)."""
    tensors: dict[str, tuple[int, str, list[int], int, int]] = {}
    for k, path in enumerate(files):
        start, header = _safetensors_layout(path)
        size = path.stat().st_size
        for name, entry in header.items():
            if name in tensors:
                raise ValueError(f"{path}: tensor {name} appears in two shards")
            a, b = (start + int(x) for x in entry["data_offsets"])
            if not start <= a <= b <= size:
                raise ValueError(f"{path}: tensor {name} lies outside the file (truncated?)")
            tensors[name] = (k, str(entry["dtype"]), [int(x) for x in entry["shape"]], a, b)
    whole = hashlib.sha256()
    parts = {}
    with ExitStack() as stack:
        maps = []
        for path in files:
            f = stack.enter_context(path.open("rb"))
            empty = path.stat().st_size == 0
            maps.append(None if empty else stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)))
        for name in sorted(tensors):
            k, dtype, shape, a, b = tensors[name]
            digest = hashlib.sha256()
            mm = maps[k]
            if b > a and mm is not None:
                with memoryview(mm) as view:  # the mapped bytes themselves: no copy
                    digest.update(view[a:b])
            whole.update(json.dumps([name, dtype, shape, b - a]).encode() + b"\0" + digest.digest())
            parts[name] = digest.hexdigest()[:16]
    return whole.hexdigest(), parts


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digests(snapshot_dir: str | Path) -> tuple[str, str, dict[str, str] | None]:
    """(sha256 hex digest, method, tensor name → 64-bit hex digest) of a saved model's weights: over its
    safetensors tensors (`TENSORS_METHOD`), else over the bytes of `pytorch_model.bin` (`FILE_METHOD`, no
    per-tensor digests). Raises `ProbeError` when the folder has no weights and ValueError/OSError when a weight
    file is corrupt or unreadable."""
    files = weight_files(Path(snapshot_dir))
    if all(f.suffix == ".safetensors" for f in files):
        whole, parts = _hash_safetensors(files)
        return whole, TENSORS_METHOD, parts
    return _hash_file(files[0]), FILE_METHOD, None


def weights_hash(snapshot_dir: str | Path) -> tuple[str, str]:
    """(sha256 hex digest, method) of a saved model's weights (`weights_digests` without the per-tensor part)."""
    whole, method, _ = weights_digests(snapshot_dir)
    return whole, method


def _stamp(snapshot_dir: Path) -> list[list[Any]]:
    """[name, size in bytes, modification time in ns] of each weight file: a cached hash is valid while equal."""
    out = []
    for f in weight_files(snapshot_dir):
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


def hash_entry(snapshot_dir: str | Path, cached: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The store's hash entry of a snapshot — {"sha256", "method", "tensors" (name → digest, or None), "files"
    (its `_stamp`), "seconds"} — reusing `cached` while its files' stamp is unchanged; None when the weights cannot
    be read (the probe's own checks report unreadable snapshots it measures)."""
    path = Path(snapshot_dir)
    try:
        stamp = _stamp(path)
        if _valid(cached, stamp):
            return dict(cached)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        digest, method, parts = weights_digests(path)
        seconds = time.perf_counter() - t0
        if _stamp(path) != stamp:  # rewritten while being read
            return None
    except (OSError, ValueError, KeyError, TypeError, ProbeError):
        return None
    return {"sha256": digest, "method": method, "tensors": parts, "files": stamp, "seconds": round(seconds, 4)}


def _valid(cached: Mapping[str, Any] | None, stamp: list[list[Any]]) -> bool:
    return (isinstance(cached, Mapping) and cached.get("files") == stamp and isinstance(cached.get("sha256"), str)
            and cached.get("method") in (TENSORS_METHOD, FILE_METHOD))


def cached_entries(infos: Iterable[tuple[int, Any]]) -> dict[int, dict[str, Any]]:
    """step → hash entry from the store's (step, info JSON) pairs of one run (`Store.snapshots`), where present."""
    out = {}
    for step, info in infos:
        try:
            value = json.loads(info) if isinstance(info, str) else info
        except ValueError:
            continue
        entry = value.get(HASH_KEY) if isinstance(value, dict) else None
        if isinstance(entry, dict):
            out[int(step)] = entry
    return out


def hash_snapshots(snapshots: Sequence[Snapshot], measured: Collection[Path],
                   cached: Mapping[int, Mapping[str, Any]]) -> dict[int, dict[str, Any]]:
    """step → hash entry of each snapshot that has one: the snapshots in `measured` (paths) are hashed unless
    `cached` holds a valid entry; the others keep a valid cached entry and are not read."""
    out = {}
    for snap in snapshots:
        old = cached.get(snap.step)
        if snap.path in measured:
            entry = hash_entry(snap.path, old)
        else:
            try:
                entry = dict(old) if _valid(old, _stamp(snap.path)) else None  # type: ignore[arg-type]
            except (OSError, ValueError, ProbeError):
                entry = None
        if entry is not None:
            out[snap.step] = entry
    return out


# ------------------------------------------------------------------------------------------------- one series

def zero_lr_steps(series: Series) -> set[int]:
    """Steps whose logged learning rate (`log.jsonl`'s `lr`, the rate the update at that step used) is 0."""
    return set(learning_rates(series).zero)


def learning_rates(series: Series) -> LearningRates:
    """What the run's records say about its learning rates: the training log's `lr` of each training row, and
    the schedule of `taco.train` that run.json's config describes (linear warm-up from 0 over `warmup_steps`, else
    `warmup_fraction` × `max_steps`, then linear decay: the update at step 1 has rate 0 exactly when there is a
    warm-up, every later one a rate > 0). `unreadable` names the log when part of it could not be read."""
    log = RunDir(series.run_dir).log()
    zero: set[int] = set()
    positive: set[int] = set()
    for r in log.rows:
        lr = r.get("lr")
        if r.get("split", "train") != "train" or not _number(lr) or not math.isfinite(r["step"]):
            continue
        (zero if lr == 0 else positive).add(int(r["step"]))
    first = _schedule_start(series.meta.get("config") if isinstance(series.meta, dict) else None)
    if first is not None:
        zero |= set(range(1, first))
    unreadable = None if log.complete else "; ".join(log.notes)
    return LearningRates(frozenset(zero), frozenset(positive), first, unreadable)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Hugging Face schedulers whose warm-up starts at learning rate 0 (`transformers.optimization`: the factor at the
# first update is 0 / warmup_steps), as `dynamics.callback` records a Trainer's arguments in run.json.
TRAINER_WARMUP_FROM_ZERO = frozenset({"linear", "cosine", "cosine_with_restarts", "polynomial", "constant_with_warmup",
                                      "cosine_with_min_lr", "warmup_stable_decay"})


def _schedule_start(config: Any) -> int | None:
    """The first update with a learning rate > 0 under `taco.train`'s schedule (1 without warm-up, else 2), when
    `config` (run.json's) records the schedule — a rate > 0, max_steps and the warm-up — else None. A Trainer's
    recorded arguments (`learning_rate`, `lr_scheduler_type`, `warmup_steps`) count the same way for the schedulers
    in `TRAINER_WARMUP_FROM_ZERO`."""
    if not isinstance(config, dict):
        return None
    if "learning_rate" in config and "lr" not in config:
        lr, warmup, kind = config.get("learning_rate"), config.get("warmup_steps"), config.get("lr_scheduler_type")
        if not (_number(lr) and lr > 0 and _number(warmup) and math.isfinite(warmup) and warmup >= 0):
            return None
        if warmup == 0:
            return 1
        return 2 if kind in TRAINER_WARMUP_FROM_ZERO else None
    lr, steps = config.get("lr"), config.get("max_steps")
    warmup_steps, fraction = config.get("warmup_steps", 0), config.get("warmup_fraction")
    if not all(_number(v) and math.isfinite(v) for v in (lr, steps, warmup_steps, fraction)) or lr <= 0:
        return None
    warmup = warmup_steps if warmup_steps > 0 else int(round(fraction * steps))
    return 2 if warmup > 0 else 1


def _records_step(snapshot: Snapshot) -> bool:
    """Whether the snapshot's own files record its step (`snapshot.json`'s step, `trainer_state.json`'s
    global_step); where they do not, discovery took the step from the folder name or a default."""
    info = snapshot.info
    trainer = info.get("trainer_state")
    return info.get("step") is not None or (isinstance(trainer, dict) and trainer.get("global_step") is not None)


def records(series: Series, entries: Mapping[int, Mapping[str, Any]]) -> list[SnapshotRecord]:
    """The `SnapshotRecord`s of a series, with the hashes of `entries` (step → hash entry)."""
    out = []
    for s in series.snapshots:
        entry = entries.get(s.step) or {}
        parts = entry.get("tensors")
        out.append(SnapshotRecord(series.name, s.step, s.tokens_seen, entry.get("sha256"),
                                  step_from_name(s.path) if _records_step(s) else None, s.path.name,
                                  parts if isinstance(parts, dict) else None))
    return out


def note_rows(flags: Iterable[Flag]) -> list[tuple[int, str]]:
    """(step, note) rows of the store's notes for `flags`: at the last step each flag involves."""
    return [(f.steps[-1], f.message) for f in flags]
