"""End-to-end behaviour of `dynamics.probe.run` on tiny snapshot series: what is stored, incremental reruns,
resumption after a kill, --force, comparing runs, bounded memory, the default output folder, Trainer layouts."""

from __future__ import annotations

import gc
import json
import shutil
import tracemalloc
import warnings
from pathlib import Path

import pytest

from dynamics import probe
from dynamics.errors import ProbeError
from dynamics.results import store
from tests.integration.conftest import one_torch_thread

FAST = dict(probe_blocks=16, progress=False, figures=False)
STEPS = [0, 1, 2, 4]


@pytest.fixture(scope="module")
def probed(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> probe.ProbeSummary:
    """The tiny MLM run measured once, all families, with figures and report."""
    out = tmp_path_factory.mktemp("probed") / "dyn"
    with one_torch_thread():
        return probe.run(tiny_run, out=out, probe_blocks=16, progress=False, figures=True)


def _finished(s: store.Store) -> dict[tuple[str, int, str], float]:
    df = s.completed()
    return {(r, int(st), f): t for r, st, f, t in zip(df["run"], df["step"], df["family"], df["finished"], strict=True)}


def test_store_has_every_snapshot_layer_and_family(probed: probe.ProbeSummary) -> None:
    with store.open(probed.out, readonly=True) as s:
        df = s.metrics()
        assert s.latest_probe_hash() == probed.probe_hash
        assert all(json.loads(m)["probe_device"] == "cpu" for m in s.runs()["meta"])  # the resolved device
        assert all(json.loads(m)["architecture_kind"] == "encoder" for m in s.runs()["meta"])
        for family, layers in (("anchors", {0, 1, 2}), ("geometry", {0, 1, 2}), ("context", {1, 2}), ("drift", {0}),
                               ("cka_steps", {0, 1, 2})):
            rows = df[df["family"] == family]
            for step in STEPS:
                assert set(rows[rows["step"] == step]["layer"]) == layers, (family, step)
        masked = df[df["metric"] == "masked_accuracy"]
        assert set(masked["layer"]) == {2} and set(masked["step"]) == set(STEPS)
        assert set(df[df["metric"] == "anchor_sim_word"]["variant"]) == {"all", "frequent", "medium", "rare"}
        assert (df[df["metric"] == "tc_loss"]["value"] > 0).all()
        drift = df[(df["metric"] == "anchor_drift") & (df["step"] == 4)]
        assert drift["value"].iloc[0] == pytest.approx(1.0)  # the final snapshot against itself
        tokens = df[(df["metric"] == "anisotropy") & (df["layer"] == 0)].sort_values("step")["tokens_seen"]
        assert list(tokens) == [0, 256, 512, 1024]
        cka = s.cka_steps("mlm")
        assert cka is not None and cka["debiased"].shape == (3, 4, 4) and list(cka["steps"]) == STEPS
        layers = s.cka_layers("mlm", 4)
        assert layers is not None and layers["debiased"].shape == (3, 3)
        proj = s.projection("mlm", 0)
        assert proj is not None and proj["xy"].shape[0] == 3 and proj["xy"].shape[2] == 2
        assert len(proj["tokens"]) == proj["xy"].shape[1] == len(proj["seq_ids"]) == len(proj["freq_bin"])
        assert proj["xy_g"].shape == (2, proj["xy"].shape[1], 2) and proj["explained_g"].shape == (2, 2)
        assert (proj["xy_e"] == proj["xy"][0]).all()
        ps = s.probe_sets()
        assert 400 < ps["n_tokens"].iloc[0] <= 16 * 30 and ps["freq_source"].iloc[0] == "training counts"
        assert (s.root / ps["file"].iloc[0]).is_file()
    names = {p.name for p in probed.figures}
    assert {"anchors.png", "context.png", "geometry.png", "cka.png", "geometry-tokens.png"} <= names
    assert all(p.stat().st_size > 1000 for p in probed.figures)
    report = probed.report.read_text()
    assert probed.probe_hash[:12] in report and "| mlm |" in report


def test_rerun_computes_nothing(probed: probe.ProbeSummary, tiny_run: Path) -> None:
    with store.open(probed.out) as s:
        before, n_rows = _finished(s), len(s.metrics())
    again = probe.run(tiny_run, out=probed.out, **FAST)
    assert again.computed == [] and again.probe_hash == probed.probe_hash
    assert len(again.reused) == len(before)
    with store.open(probed.out) as s:
        assert _finished(s) == before and len(s.metrics()) == n_rows


def test_force_recomputes(tiny_run: Path, tmp_path: Path) -> None:
    first = probe.run(tiny_run, out=tmp_path, steps=[0, 4], metrics=["geometry"], **FAST)
    assert sorted(first.computed) == [("mlm", -1, "cka_steps"), ("mlm", -1, "ln_outliers"), ("mlm", 0, "geometry"),
                                      ("mlm", 4, "geometry")]
    with store.open(tmp_path) as s:
        before = _finished(s)
    again = probe.run(tiny_run, out=tmp_path, steps=[0, 4], metrics=["geometry"], force=True, **FAST)
    assert sorted(again.computed) == sorted(first.computed)
    with store.open(tmp_path) as s:
        after = _finished(s)
        assert after.keys() == before.keys() and all(after[k] > before[k] for k in before)
        assert len(s.arrays("projection")) == 2  # replaced, not duplicated
    assert len(list((tmp_path / "arrays").rglob("projection-*.npz"))) == 2


def test_kill_midway_then_resume(tiny_run: Path, tmp_path: Path) -> None:
    seen: list[int] = []

    def killer(snapshot, families) -> None:
        seen.append(snapshot.step)
        if len(seen) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does between snapshots

    with pytest.raises(KeyboardInterrupt):
        probe.run(tiny_run, out=tmp_path, metrics=["anchors", "context"], on_snapshot=killer, **FAST)
    with store.open(tmp_path) as s:
        done = _finished(s)
    assert {k[1] for k in done} == {0, 1}
    resumed = probe.run(tiny_run, out=tmp_path, metrics=["anchors", "context"], **FAST)
    assert {step for _, step, _ in resumed.computed if step >= 0} == {2, 4}
    with store.open(tmp_path) as s:
        after = _finished(s)
        assert all(after[k] == done[k] for k in done)
        assert set(s.metrics("tc_loss")["step"]) == set(STEPS)


def test_steps_subset_then_the_rest(tiny_run: Path, tmp_path: Path) -> None:
    first = probe.run(tiny_run, out=tmp_path, steps=[0, 2], metrics=["context"], **FAST)
    assert {step for _, step, _ in first.computed if step >= 0} == {0, 2}
    rest = probe.run(tiny_run, out=tmp_path, metrics=["context"], **FAST)
    assert {step for _, step, _ in rest.computed if step >= 0} == {1, 4}
    with pytest.raises(ProbeError, match="no snapshot at step 3"):
        probe.run(tiny_run, out=tmp_path, steps=[3], **FAST)


def test_two_runs_on_one_probe_set(tiny_runs: dict[str, Path], probed: probe.ProbeSummary, tmp_path: Path) -> None:
    both = probe.run([tiny_runs["mlm"], tiny_runs["taco"]], out=tmp_path, metrics=["anchors", "geometry"], **FAST)
    assert both.probe_hash == probed.probe_hash  # the probe set comes from the first run
    with store.open(tmp_path, readonly=True) as s:
        df = s.metrics("anisotropy", layer=0)
        assert set(df[df["run"] == "taco"]["step"]) == {0, 2, 3}
        assert set(df[df["run"] == "mlm"]["step"]) == set(STEPS)
        assert set(s.runs()["objective"]) == {"mlm", "taco"}
        assert s.cka_steps("taco")["debiased"].shape == (3, 3, 3)
    # step 0 of both runs was initialised with different seeds, so their numbers differ on identical tokens
    assert df[(df["run"] == "taco") & (df["step"] == 0)]["value"].iloc[0] != \
        df[(df["run"] == "mlm") & (df["step"] == 0)]["value"].iloc[0]
    assert "taco" in both.report.read_text()


def test_memory_does_not_grow_across_the_series(tiny_run: Path, tmp_path: Path) -> None:
    from transformers import PreTrainedModel

    traced: list[int] = []
    modules: list[int] = []

    def measure(snapshot, families) -> None:
        gc.collect()
        traced.append(tracemalloc.get_traced_memory()[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance() on some torch module proxies warns
            modules.append(sum(isinstance(o, PreTrainedModel) for o in gc.get_objects()))

    tracemalloc.start()
    try:
        probe.run(tiny_run, out=tmp_path, on_snapshot=measure, **FAST)
    finally:
        tracemalloc.stop()
    assert len(traced) == 4
    assert modules == [0, 0, 0, 0], "a model outlived its snapshot"
    # Python/numpy memory held after snapshot k (activations, rows, arrays) does not accumulate.
    print("traced after each snapshot:", traced)
    assert max(traced[1:]) <= traced[0] * 1.1 + 2**20, traced


def test_default_output_folder_and_trainer_layout(tiny_run: Path, tmp_path: Path, probe_text_file: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "mlm")
    probe.run(run, steps=[0], metrics=["geometry"], **FAST)
    assert (run / "dynamics" / "results.sqlite").is_file()

    trainer = tmp_path / "trainer-out"
    for i, step in enumerate(STEPS[1:]):
        ckpt = shutil.copytree(tiny_run / "snapshots" / f"step-{step:07d}", trainer / f"checkpoint-{step * 10}")
        (ckpt / "snapshot.json").unlink()
        if i:
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step * 10}))
    for f in (tiny_run / "tokenizer").iterdir():
        shutil.copy(f, trainer / f.name)
    summary = probe.run(trainer, out=tmp_path / "t", probe_text=probe_text_file, metrics=["anchors"], **FAST)
    with store.open(summary.out, readonly=True) as s:
        assert set(s.metrics("anchor_sim_word")["step"]) == {10, 20, 40}
        assert s.runs()["kind"].iloc[0] == "trainer"
        assert s.probe_sets()["source"].iloc[0].startswith("text:")
