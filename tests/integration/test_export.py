"""`python -m dynamics.export`: every format read back (pyarrow, the csv module, TensorBoard's own event reader)
and compared with the store value by value; the same store gives the same bytes; a bad --out or --format is one
error line with nothing written."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dynamics import export, probe
from dynamics.results import store as st

KEY = ("run", "step", "tokens_seen", "layer", "metric", "variant")


@pytest.fixture(scope="module")
def probed(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of two runs (anchors and geometry: NULL rows included where a metric is undefined)."""
    out = tmp_path_factory.mktemp("export") / "store"
    runs = list(tiny_runs.values())[:2]
    probe.run(runs, out=out, probe_blocks=8, metrics=["anchors", "geometry"], progress=False, figures=False)
    return out


def stored(store_dir: Path) -> dict[tuple, float | None]:
    with st.open(store_dir, readonly=True) as store:
        df = store.metrics()
    return {(r.run, int(r.step), None if r.tokens_seen is None or r.tokens_seen != r.tokens_seen else
             int(r.tokens_seen), int(r.layer), r.metric, r.variant): (None if r.value != r.value else float(r.value))
            for r in df.itertuples()}


def same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a == b)


def test_every_format_reads_back_value_by_value(probed: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    assert export.main([str(probed), "--format", "parquet,csv,tensorboard", "--out", str(out)]) == 0
    expected = stored(probed)
    assert len(expected) > 100 and any(v is None for v in expected.values())
    runs = {k[0] for k in expected}
    assert len(runs) == 2

    table = pq.read_table(out / "metrics.parquet")
    assert table.column_names == [*KEY, "value"]
    got = {tuple(r[c] for c in KEY): r["value"] for r in table.to_pylist()}
    assert got.keys() == expected.keys() and all(same(got[k], expected[k]) for k in expected)
    defs = json.loads(table.schema.metadata[b"taco_dynamics.definitions"])
    with st.open(probed, readonly=True) as store:
        stored_defs = store.definitions().set_index("name")
    assert set(defs) == {k[4] for k in expected}
    for name, d in defs.items():
        assert (d["label"], d["unit"], d["definition"]) == tuple(stored_defs.loc[name, ["label", "unit", "definition"]])

    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    got = {(r["run"], int(r["step"]), int(r["tokens_seen"]) if r["tokens_seen"] else None, int(r["layer"]),
            r["metric"], r["variant"]): float(r["value"]) if r["value"] else None for r in rows}
    assert got.keys() == expected.keys() and all(same(got[k], expected[k]) for k in expected)
    with (out / "definitions.csv").open() as f:
        labels = {r["metric"]: r["label"] for r in csv.DictReader(f)}
    assert labels == {n: d["label"] for n, d in defs.items()}
    assert json.loads((out / "definitions.json").read_text())["definitions"] == defs

    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == sorted(runs)
    for run in runs:
        acc = EventAccumulator(str(out / "tensorboard" / run), size_guidance={"scalars": 0})
        acc.Reload()
        want = {(f"{k[4]}/layer{k[3]}/{k[5]}", k[1]): v for k, v in expected.items() if k[0] == run and v is not None}
        got_tb = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
        assert got_tb.keys() == want.keys()
        assert all(got_tb[k] == float(np.float32(v)) or (math.isnan(v) and math.isnan(got_tb[k]))
                   for k, v in want.items())


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_store_same_bytes_and_store_untouched(probed: Path, tmp_path: Path) -> None:
    before = digest(probed)
    for name in ("one", "two"):
        assert export.main([str(probed), "--format", "parquet,csv,tensorboard", "--out", str(tmp_path / name)]) == 0
    assert digest(tmp_path / "one") == digest(tmp_path / "two") and digest(probed) == before
    # an earlier export's folder is written over
    assert export.main([str(probed), "--format", "csv", "--out", str(tmp_path / "one")]) == 0


def test_bad_out_and_format_are_one_line_and_nothing_written(probed: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    def rejected(code: int, name: object) -> None:
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(name) in err[0], err

    a_file = tmp_path / "file"
    a_file.write_text("x")
    rejected(export.main([str(probed), "--out", str(a_file)]), a_file)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep")
    rejected(export.main([str(probed), "--format", "csv", "--out", str(theirs)]), "notes.txt")
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    rejected(export.main([str(probed), "--format", "xlsx", "--out", str(tmp_path / "new")]), "--format xlsx")
    rejected(export.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "new")]), tmp_path / "nowhere")
    assert not (tmp_path / "new").exists() and a_file.read_text() == "x"
