"""The Runs page shows the probe's snapshot-integrity flags (`dynamics.find.integrity`) of each store, one warning each."""

from __future__ import annotations

import shutil
from pathlib import Path

from dynamics.find import integrity
from dynamics.results import store as dstore
from tests.app.helpers import assert_clean, texts


def test_runs_page_warns_once_per_flag(make_app, synthetic_root: Path, tmp_path: Path) -> None:
    root = shutil.copytree(synthetic_root, tmp_path / "root")
    flags = integrity.check_series([integrity.SnapshotRecord("mlm-syn", 2, 200, "w", 2),
                                    integrity.SnapshotRecord("mlm-syn", 8, 100, "w", 8)])
    assert [f.kind for f in flags] == ["duplicate_weights", "tokens_not_increasing"]
    with dstore.open(root / "dynamics") as s:
        s.replace_notes(run="mlm-syn", family=integrity.FAMILY, probe_hash=integrity.PROBE_HASH,
                        notes=integrity.note_rows(flags))
    at = make_app(root)
    assert_clean(at)
    warnings = [w.value for w in at.warning if "Snapshot integrity" in w.value]
    assert len(warnings) == 2
    assert all("**mlm-syn**" in w for w in warnings)
    assert flags[0].message in warnings[0] and flags[1].message in warnings[1]


def test_no_integrity_warning_without_flags(make_app, synthetic_root: Path) -> None:
    at = make_app(synthetic_root)
    assert_clean(at)
    assert "Snapshot integrity" not in texts(at)
