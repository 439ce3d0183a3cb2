"""The report's "Word acquisition" section and `aoa_frequency.png` (#12) on a store the real probe wrote
(`tests.acquisition_fixture`: MLM and TACO tiny runs with log-spaced snapshots, and a run without an MLM head):
each cell is checked against the stored metric rows and `word_acquisition` arrays, read here from the store; the
figure's points, colours and legend against the same; and a probe without the anchors family (so without word
acquisition) writes neither the section nor the figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dynamics import probe
from dynamics.metrics import registry
from dynamics.metrics.acquisition import STATUS
from dynamics.results import figures, palette, report, store, word_curves
from tests.acquisition_fixture import HEADLESS, RUNS, build
from tests.integration.conftest import one_torch_thread

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER = ["run", "Spearman ρ (AoA, log10 frequency)", "95% interval", "share of types fitted", "median AoA (step)",
          "word types by fit status"]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/dynamics of `tests.acquisition_fixture.build`, figures included."""
    return build(tmp_path_factory.mktemp("report-acquisition"), figures=True)


@pytest.fixture(scope="module")
def stored(out: Path) -> dict[str, Any]:
    """Per run of the fixture its stored `word_acquisition` array (None for the headless run)."""
    with store.open(out / "results.sqlite", readonly=True) as s:
        return {run: word_curves.stored(s, run) for run in (*RUNS, HEADLESS)}


@pytest.fixture(scope="module")
def rows(out: Path) -> pd.DataFrame:
    with store.open(out / "results.sqlite", readonly=True) as s:
        return s.metrics(family="acquisition")


def _value(rows: pd.DataFrame, run: str, metric: str, variant: str = "all") -> float:
    r = rows[(rows["run"] == run) & (rows["metric"] == metric) & (rows["variant"] == variant)]
    assert len(r) == 1, (run, metric, variant)
    return float(r["value"].iloc[0])


def _section(text: str) -> str:
    assert text.count("## Word acquisition\n") == 1
    return text.split("## Word acquisition\n", 1)[1].split("\n## ", 1)[0]


def _table(section: str) -> dict[str, dict[str, str]]:
    """The section's table: run → {column header → cell}."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == HEADER
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {c[0]: dict(zip(header, c, strict=True)) for c in cells}


def _fit_status(arr: dict[str, np.ndarray]) -> str:
    """The stored types by fit status, in `STATUS` order with never-masked types last, zero counts left out."""
    seen = arr["counts"] > 0
    counts = [(int((arr["status"][seen] == k).sum()), name) for k, name in enumerate(STATUS)]
    counts.append((int((~seen).sum()), "no masked occurrence"))
    return ", ".join(f"{n} {name}" for n, name in counts if n)


def test_section_shows_each_runs_stored_values(out: Path, stored, rows) -> None:
    section = _section((out / "report.md").read_text())
    table = _table(section)
    assert list(table) == list(RUNS)  # the run without a head has no row
    for run in RUNS:
        rho, lo, hi = (_value(rows, run, "aoa_freq_spearman", v) for v in ("all", "ci_low", "ci_high"))
        share, median = _value(rows, run, "aoa_fitted_share"), _value(rows, run, "aoa_median")
        assert all(math.isfinite(v) for v in (rho, lo, hi, share, median)), run  # the fixture's curves do fit
        assert lo <= rho <= hi
        cells = table[run]
        assert cells["Spearman ρ (AoA, log10 frequency)"] == f"{rho:.4g}"
        assert cells["95% interval"] == f"{lo:.4g} to {hi:.4g}"
        assert cells["share of types fitted"] == f"{share:.4g}"
        assert cells["median AoA (step)"] == f"{10 ** median:.4g}"  # the step, not its log10
        assert cells["word types by fit status"] == _fit_status(stored[run])
    assert table[RUNS[0]] != table[RUNS[1]]  # two runs, two sets of numbers: not one run's values shown twice
    assert f"- **{HEADLESS}**: no word acquisition: the probe found no MLM or next-token head" in section
    for metric in ("aoa_freq_spearman", "aoa_fitted_share", "aoa_median"):  # each defined, with its function
        assert f"- `{metric}`: {registry.get(metric).definition}" in section
        assert f"`{registry.get(metric).pointer}`" in section


def test_section_lists_the_earliest_and_latest_learned_words(out: Path, stored) -> None:
    section = _section((out / "report.md").read_text())
    for run in RUNS:
        arr = stored[run]
        fitted = np.isfinite(arr["aoa"])
        order = sorted(zip(arr["aoa"][fitted], arr["words"][fitted], strict=True), key=lambda r: (r[0], r[1]))
        assert len(order) >= 2 * 5, "too few fitted types to tell the earliest from the latest"
        words = lambda part: ", ".join(f"{_span(w)} ({10 ** a:.4g})" for a, w in part)  # noqa: E731
        line = next(t for t in section.splitlines() if t.startswith(f"- **{run}**: earliest"))
        assert line == f"- **{run}**: earliest {words(order[:5])}; latest {words(order[-5:])}"


def _span(word: str) -> str:
    """A word as an inline code span; the probe set's word types include a lone backtick."""
    return f"`` {word} ``" if "`" in word else f"`{word}`"


def test_notes_give_each_runs_tally_under_its_name(out: Path, stored) -> None:
    """One word-acquisition note per run with the family, naming the run, with that run's own count of types."""
    text = (out / "report.md").read_text()
    notes = [line for line in text.split("## Notes\n", 1)[1].splitlines() if "word acquisition of" in line]
    for run in RUNS:
        mine = [n for n in notes if f"word acquisition of {run} over" in n]
        assert len(mine) == 1, (run, notes)
        assert f"{int((stored[run]['counts'] > 0).sum())} word types with masked occurrences" in mine[0]
    assert len(notes) == len(RUNS)


def test_code_spans_hold_any_backticks() -> None:
    assert report._code("and") == "`and`"
    assert report._code("`") == "`` ` ``"
    assert report._code("a``b") == "```a``b```"
    assert report._code("`x") == "`` `x ``"


def test_figure_is_written_linked_and_a_png(out: Path) -> None:
    path = out / "figures" / figures.AOA_FIGURE
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    from matplotlib.image import imread

    image = imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    text = (out / "report.md").read_text()
    assert f"[AoA against log10 training frequency](figures/{figures.AOA_FIGURE})" in _section(text)
    assert f"![aoa_frequency](figures/{figures.AOA_FIGURE})" in text.split("## Figures\n", 1)[1]


def test_figure_draws_the_stored_ages_frequencies_and_rho(out: Path, stored, rows, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.colors import to_rgb

    drawn: list[Any] = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or save(fig, path))
    runs = [*RUNS, HEADLESS]
    with store.open(out / "results.sqlite", readonly=True) as s:
        h = s.latest_probe_hash()
        known = s.runs()
        every = palette.run_colours(zip(known["name"], known["objective"], strict=True))  # the store's palette
        path = figures.acquisition_figure(s, s.metrics(run=runs, probe_hash=h), runs, h,
                                          tmp_path / figures.AOA_FIGURE, every)
    assert path is not None and path.read_bytes().startswith(PNG_SIGNATURE)
    (ax,) = drawn[0].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(ax.collections) == len(RUNS) == len(labels)  # the headless run draws nothing
    for run, points, label in zip(RUNS, ax.collections, labels, strict=True):
        arr = stored[run]
        keep = np.isfinite(arr["aoa"]) & (arr["frequency"] > 0)  # fitted types with a known frequency
        want = np.column_stack([np.log10(arr["frequency"][keep]), arr["aoa"][keep]])
        got = np.asarray(points.get_offsets())
        assert got.shape == want.shape and want.shape[0] > 0
        np.testing.assert_allclose(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])])
        assert label == f"{run} (ρ = {_value(rows, run, 'aoa_freq_spearman'):+.2f}, n = {int(keep.sum())})"
        assert tuple(points.get_facecolor()[0][:3]) == pytest.approx(to_rgb(every[run]))
    assert to_rgb(every[RUNS[0]]) != to_rgb(every[RUNS[1]])


def test_no_section_or_figure_without_the_family(out: Path, tmp_path: Path) -> None:
    """The MLM run, whose curves fit when the anchors family is measured, probed with the context family only."""
    with one_torch_thread():
        summary = probe.run([out.parent / RUNS[0]], out=tmp_path / "dyn", metrics=["context"], probe_blocks=8,
                            steps=[0, 64], progress=False, figures=True)
    assert summary.figures, "no figures at all: the absence below would say nothing"
    assert not (tmp_path / "dyn" / "figures" / figures.AOA_FIGURE).exists()
    assert figures.AOA_FIGURE not in {p.name for p in summary.figures}
    text = summary.report.read_text()
    assert "## Word acquisition" not in text and "aoa_frequency" not in text and "Spearman ρ" not in text
