"""The records of one probe run: what it measures with (`Setup`, fixed for the run) and what it did
(`ProbeSummary`, accumulated as it goes and returned)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dynamics import families as fam
from dynamics import integrity
from dynamics import probe_set as ps
from dynamics import store as st
from dynamics.config import ProbeConfig
from dynamics.series import Snapshot

SnapshotHook = Callable[[Snapshot, list[str]], None]  # (snapshot, families) after its results are committed
Unit = tuple[str, int, str]  # (run, step, family); step −1 for a run-level family


@dataclass
class ProbeSummary:
    """What a probe run did: where results are, the probe hash, and the (run, step, family) units computed
    now versus found already stored."""

    out: Path
    store_path: Path
    probe_hash: str
    computed: list[Unit] = field(default_factory=list)
    reused: list[Unit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[integrity.Flag] = field(default_factory=list)  # snapshot-integrity problems of the runs
    figures: list[Path] = field(default_factory=list)
    report: Path | None = None


@dataclass(frozen=True)
class Setup:
    """What one process of a probe run measures with, fixed for the run: the store it writes, the probe set and
    its tensors on the metric device, the settings, and which runs' anchor drift is left out."""

    store: st.Store
    probe: ps.ProbeSet
    prep: fam.Prepared
    cfg: ProbeConfig
    device: str
    no_drift: Mapping[str, str] = field(default_factory=dict)  # run → why its anchor drift cannot be measured
    defer_drift: bool = False  # leave drift for a later run (`--follow` before the final snapshot)
