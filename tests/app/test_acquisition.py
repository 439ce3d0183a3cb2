"""The Word acquisition page on a store the real probe wrote (`acquisition_root`: MLM and TACO tiny runs with
log-spaced snapshots, and a run without an MLM head): what it draws is checked against the stored
`word_acquisition` arrays and metric rows, read here through `dynamics` directly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynamics.metrics.acquisition import STATUS, sigmoid
from dynamics.results import palette, store, word_curves
from tests.app.helpers import assert_clean, charts, texts

RUNS = ("mlm-acq", "taco-acq")


@pytest.fixture(scope="module")
def stored(acquisition_root: Path) -> dict[str, dict[str, np.ndarray]]:
    with store.open(acquisition_root / "dynamics" / "results.sqlite", readonly=True) as s:
        return {run: word_curves.stored(s, run) for run in RUNS}


@pytest.fixture(scope="module")
def rows(acquisition_root: Path) -> pd.DataFrame:
    with store.open(acquisition_root / "dynamics" / "results.sqlite", readonly=True) as s:
        return s.metrics(family="acquisition")


@pytest.fixture
def page(make_app, acquisition_root: Path):
    at = make_app(acquisition_root, page="acquisition")
    assert_clean(at)
    return at


def _chart(at: object, title: str) -> tuple[pd.DataFrame, dict]:
    found = [(df, spec) for t, df, spec in charts(at) if t == title]
    assert found, [t for t, _, _ in charts(at)]
    return found[0]


def _value(rows: pd.DataFrame, run: str, metric: str, variant: str = "all") -> float:
    r = rows[(rows["run"] == run) & (rows["metric"] == metric) & (rows["variant"] == variant)]
    return float(r["value"].iloc[0])


def test_scatter_is_the_stored_ages_against_log_frequency(page, stored) -> None:
    df, spec = _chart(page, "Age of acquisition against log10 training frequency")
    assert set(df["run"]) == set(RUNS)
    for run, arr in stored.items():
        keep = np.isfinite(arr["aoa"]) & (arr["frequency"] > 0)
        mine = df[df["run"] == run].set_index("word")
        assert sorted(mine.index) == sorted(arr["words"][keep].tolist())
        want = dict(zip(arr["words"][keep], arr["aoa"][keep], strict=True))
        freq = dict(zip(arr["words"][keep], arr["frequency"][keep], strict=True))
        for word, r in mine.iterrows():
            assert r["aoa_step"] == pytest.approx(10 ** want[word])  # the step, not its log
            assert r["log10_frequency"] == pytest.approx(np.log10(freq[word]))
    assert spec["encoding"]["y"]["field"] == "aoa_step" and spec["encoding"]["y"]["scale"]["type"] == "log"
    assert spec["encoding"]["x"]["field"] == "log10_frequency"


def test_scatter_colours_are_the_runs_palette_colours(page, acquisition_root: Path) -> None:
    with store.open(acquisition_root / "dynamics" / "results.sqlite", readonly=True) as s:
        known = s.runs()
    want = palette.run_colours(zip(known["name"], known["objective"], strict=True))  # every run of the store
    _, spec = _chart(page, "Age of acquisition against log10 training frequency")
    scale = spec["encoding"]["color"]["scale"]
    assert dict(zip(scale["domain"], scale["range"], strict=True)) == {run: want[run] for run in RUNS}


def test_correlation_interval_and_status_counts(page, stored, rows) -> None:
    text = texts(page)
    table = page.dataframe[0].value.set_index("run")
    for run, arr in stored.items():
        rho, lo, hi = (_value(rows, run, "aoa_freq_spearman", v) for v in ("all", "ci_low", "ci_high"))
        assert f"**{run}**: ρ = {rho:+.2f} (95% interval {lo:+.2f} to {hi:+.2f})" in text
        assert table.loc[run, "Spearman ρ"] == pytest.approx(rho)
        assert (table.loc[run, "95% low"], table.loc[run, "95% high"]) == pytest.approx((lo, hi))
        assert table.loc[run, "median AoA (step)"] == pytest.approx(10 ** _value(rows, run, "aoa_median"))
        seen = arr["counts"] > 0
        for k, name in enumerate(STATUS):
            n = int((arr["status"][seen] == k).sum())
            assert int(table.loc[run, name]) == n if name in table.columns else n == 0, (run, name)
        assert int(table.loc[run, "no masked occurrence"]) == int((~seen).sum())
        fitted = int((arr["status"] == 0).sum())
        assert f"{fitted} of {len(arr['words'])} word types have an AoA" in text
        # every reason a type of this run has no AoA for is named with its count
        reasons = {name: int((arr["status"][seen] == k).sum()) for k, name in enumerate(STATUS) if k}
        reasons["no masked occurrence"] = int((~seen).sum())
        line = next(t for t in text.splitlines() if t.startswith(f"- **{run}**: ρ"))
        named = dict((m[1], int(m[0])) for m in re.findall(r"(\d+) ([a-z ]+?)(?:,|\.$)", line.split("without one: ")[1]))
        assert named == {k: v for k, v in reasons.items() if v}, line
    assert "no masked occurrence" in text


def test_word_search_draws_the_stored_curve_fit_and_aoa(page, stored) -> None:
    both = set(stored["mlm-acq"]["words"][np.isfinite(stored["mlm-acq"]["aoa"])]) & set(
        stored["taco-acq"]["words"][np.isfinite(stored["taco-acq"]["aoa"])])
    word = sorted(both)[-1]
    page.multiselect(key="acquisition:words").set_value([word]).run()
    assert_clean(page)
    df, spec = _chart(page, f"“{word}”: surprisal over training")
    assert set(df["run"]) == set(RUNS)  # the same word in the MLM and the TACO run
    for run, arr in stored.items():
        t = list(arr["words"]).index(word)
        mine = df[df["run"] == run]
        measured = mine[mine["part"] == "measured"].sort_values("step")
        ok = np.isfinite(arr["surprisal"][t])
        assert measured["step"].tolist() == arr["steps"][ok].tolist()
        assert measured["surprisal"].to_numpy() == pytest.approx(arr["surprisal"][t][ok])
        fit = mine[mine["part"] == "fitted"]
        assert fit["step"].min() == pytest.approx(1) and fit["step"].max() == pytest.approx(arr["steps"].max())
        params = (arr["hi"][t], arr["lo"][t], arr["k"][t], arr["x0"][t])
        assert fit["surprisal"].to_numpy() == pytest.approx(sigmoid(np.log10(fit["step"].to_numpy()), *params))
        aoa = mine[mine["part"] == "aoa"]
        assert aoa["step"].tolist() == pytest.approx([10 ** arr["aoa"][t]])
        chance = mine[mine["part"] == "chance"]["surprisal"]
        assert chance.tolist() == pytest.approx([np.log(int(arr["vocab"]))])
    layers = spec["layer"]
    assert layers[2]["encoding"]["x"]["scale"]["type"] == "symlog"  # step on a log axis


def test_search_several_words(page, stored) -> None:
    words = [w for w, a in zip(stored["taco-acq"]["words"], stored["taco-acq"]["aoa"], strict=True) if np.isfinite(a)]
    page.multiselect(key="acquisition:words").set_value(words[:3]).run()
    assert_clean(page)
    titles = [t for t, _, _ in charts(page)]
    assert [t for t in titles if t.endswith("surprisal over training")] == [f"“{w}”: surprisal over training"
                                                                             for w in words[:3]]


def test_earliest_and_latest_words_table(page, stored) -> None:
    def check(n: int) -> None:
        tables = {re.sub(r"\*", "", m.value): d.value for m, d in zip(
            [m for m in page.markdown if m.value in (f"**{r}**" for r in RUNS)], page.dataframe[1:], strict=True)}
        for run, arr in stored.items():
            table = tables[run]
            fitted = np.isfinite(arr["aoa"])
            order = sorted(zip(arr["aoa"][fitted], arr["words"][fitted], arr["frequency"][fitted],
                               arr["counts"][fitted], strict=True), key=lambda r: (r[0], r[1]))
            want = order[:n] + order[max(n, len(order) - n):]
            assert table["word"].tolist() == [w for _, w, _, _ in want]
            assert table["AoA (step)"].to_numpy() == pytest.approx([10 ** a for a, _, _, _ in want])
            assert table["training frequency"].tolist() == [int(f) for _, _, f, _ in want]
            assert table["masked occurrences"].tolist() == [int(c) for _, _, _, c in want]
            assert table["learned"].tolist() == ["earliest"] * min(n, len(order)) + ["latest"] * (len(want) - min(
                n, len(order)))

    check(5)
    page.slider(key="acquisition:n").set_value(2).run()
    assert_clean(page)
    check(2)


def test_runs_selector_and_a_run_without_a_head(page) -> None:
    text = texts(page)
    assert "No word acquisition for **headless-acq**: the probe found no MLM or next-token head" in text
    page.multiselect(key="acquisition:runs").set_value(["taco-acq"]).run()
    assert_clean(page)
    df, _ = _chart(page, "Age of acquisition against log10 training frequency")
    assert set(df["run"]) == {"taco-acq"} and "headless-acq" not in texts(page)
    assert page.dataframe[0].value["run"].tolist() == ["taco-acq"]


def test_store_without_the_family(make_app, synthetic_root: Path) -> None:
    at = make_app(synthetic_root, page="acquisition")
    assert_clean(at)
    text = texts(at)
    for run in ("mlm-syn", "taco-syn"):
        assert f"No word acquisition for **{run}**: its masked-token surprisal is stored but not per word type" in text
    assert not charts(at) and "Defined in `dynamics.metrics.acquisition.fit_curve`" in text


def test_probed_store_with_too_few_snapshots_to_fit(make_app, probed_root: Path) -> None:
    """The app fixture's runs have 3 and 2 snapshots past step 0: curves but no AoA (fewer than 5 points)."""
    at = make_app(probed_root, page="acquisition")
    assert_clean(at)
    text = texts(at)
    assert "No word type has an age of acquisition" in text and "ρ undefined" in text
    assert "too few points" in at.dataframe[0].value.columns
    (title, df, _), = charts(at)  # no scatter: only the default word's learning curve
    assert title.endswith(": surprisal over training")
    assert set(df["part"]) == {"measured", "chance"}  # points, and neither a fitted curve nor an AoA to mark


def test_the_page_evaluates_the_probes_sigmoid() -> None:
    """The app draws the stored fit with its own copy of the formula (it imports no metric module): the probe's
    function, value for value, overflow included."""
    from app.data import word_acquisition as wa

    x = np.linspace(-3.0, 9.0, 241)
    for hi, lo, k, x0 in ((9.1, 2.3, 1.7, 2.5), (5.0, 5.0, 0.0, 1.0), (8.0, 1.0, 400.0, 3.0), (3.0, 7.0, -250.0, 0.5)):
        assert np.array_equal(wa.sigmoid(x, hi, lo, k, x0), sigmoid(x, hi, lo, k, x0))
