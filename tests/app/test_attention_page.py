"""The Attention page draws the families' per-layer curves and a head × step heatmap from the per-head arrays, and
the Runs page says which families each run has."""

from __future__ import annotations

from pathlib import Path

from tests.app.helpers import assert_clean, charts, texts


def test_attention_page_draws_a_head_by_step_heatmap(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="attention")
    assert_clean(at)
    drawn = {title: df for title, df, _ in charts(at)}
    heat = [t for t in drawn if t.startswith("attention entropy (nats), layer 2, ")]
    assert heat, sorted(drawn)
    df = drawn[heat[0]]
    assert set(df["head"]) == {0, 1} and sorted(set(df["step"])) == [0, 1, 2, 4]
    assert ((df["value"] > 0) & (df["value"] <= 4.0)).all()  # entropy over ≤ 32 keys: at most ln 32 ≈ 3.47
    at.selectbox(key="attention:heads-quantity").select("induction").run()
    assert_clean(at)
    titles = [t for t, _, _ in charts(at)]
    assert any(t.startswith("induction score, layer 2, ") for t in titles), titles


def test_runs_page_lists_each_runs_families(make_app, probed_root: Path) -> None:
    at = make_app(probed_root)
    assert_clean(at)
    text = texts(at)
    assert "Families measured" in text
    assert "**mlm-tiny**: acquisition, anchors, attention, cka_steps, context, copying, drift, geometry" in text
