"""A seed group's onset (`dynamics.results.onsets.group_onsets`): the mean of log10(onset step) over the seeds with
an onset and its Student-t interval, against values computed here from the t table; runs without an onset counted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dynamics.results.groups import Group
from dynamics.results.onsets import group_onsets, order_of_learning

T_975_DF2 = 4.3026527  # Student's t quantile 0.975, 2 degrees of freedom (tables)
MLM = Group("mlm", "k1", ("mlm-s1", "mlm-s2", "mlm-s3"), (1, 2, 3), "mlm")
TACO = Group("taco", "k2", ("taco-s1", "taco-s2", "taco-s3"), (1, 2, 3), "taco")


def rows(table: dict[tuple[str, str, int], float | None]) -> pd.DataFrame:
    return pd.DataFrame([{"run": run, "metric": m, "layer": layer, "variant": "all", "step": step,
                          "tokens_seen": None, "change": 1.0} for (run, m, layer), step in table.items()])


def test_mean_log_step_and_t_interval() -> None:
    onsets = rows({("mlm-s1", "a", 2): 10, ("mlm-s2", "a", 2): 100, ("mlm-s3", "a", 2): 1000,
                   ("taco-s1", "a", 2): 50, ("taco-s2", "a", 2): 50, ("taco-s3", "a", 2): 200,
                   ("other", "a", 2): 1})  # a run of neither group is left out
    df = group_onsets(onsets, [MLM, TACO]).set_index("group")
    mlm = df.loc["mlm"]
    assert mlm["mean"] == pytest.approx(2.0) and mlm["step"] == pytest.approx(100.0)
    half = T_975_DF2 * 1.0 / math.sqrt(3)  # log10 steps 1, 2, 3: sample std 1
    assert (mlm["low"], mlm["high"]) == pytest.approx((2 - half, 2 + half), rel=1e-6)
    assert mlm["step_low"] == pytest.approx(10 ** (2 - half), rel=1e-6)
    logs = np.log10([50, 50, 200])
    taco = df.loc["taco"]
    assert taco["mean"] == pytest.approx(logs.mean())
    assert taco["high"] - taco["mean"] == pytest.approx(T_975_DF2 * logs.std(ddof=1) / math.sqrt(3), rel=1e-6)
    assert (taco["n"], taco["runs"], taco["objective"]) == (3, 3, "taco")


def test_runs_without_an_onset_are_counted_not_averaged() -> None:
    onsets = rows({("mlm-s1", "a", 1): 8, ("mlm-s2", "a", 1): None, ("mlm-s3", "a", 1): 32,
                   ("taco-s1", "a", 1): 4, ("taco-s2", "a", 1): None, ("taco-s3", "a", 1): None,
                   ("mlm-s1", "b", 1): 16})  # curve b: one run has a row
    df = group_onsets(onsets, [MLM, TACO]).set_index(["group", "metric"])
    a = df.loc[("mlm", "a")]
    assert (a["n"], a["runs"]) == (2, 3) and a["mean"] == pytest.approx(np.log10([8, 32]).mean())
    assert np.isfinite(a["low"]) and a["low"] < a["mean"] < a["high"]
    one = df.loc[("taco", "a")]  # one onset: its step, no interval
    assert (one["n"], one["runs"]) == (1, 3) and one["step"] == pytest.approx(4.0) and math.isnan(one["low"])
    b = df.loc[("mlm", "b")]
    assert (b["n"], b["runs"]) == (1, 1)
    assert ("taco", "b") not in df.index


def test_no_rows() -> None:
    assert group_onsets(rows({}).reindex(columns=["run", "metric", "layer", "variant", "step"]), [MLM]).empty


def test_order_of_learning_sorts_by_earliest_group_at_the_last_layer() -> None:
    onsets = rows({("mlm-s1", "late", 2): 1000, ("taco-s1", "late", 2): 300, ("mlm-s1", "late", 1): 2,
                   ("mlm-s1", "early", 2): 20, ("taco-s1", "early", 2): 90,
                   ("mlm-s1", "never", 2): None, ("taco-s1", "never", 2): None})
    solo = [Group("mlm", "k1", ("mlm-s1",), (1,), "mlm"), Group("taco", "k2", ("taco-s1",), (1,), "taco")]
    order = order_of_learning(group_onsets(onsets, solo))
    assert list(order["metric"]) == ["early", "early", "late", "late"]  # layer 1's step 2 is not the last layer
    assert list(order["rank"]) == [0, 0, 1, 1] and set(order["layer"]) == {2}
