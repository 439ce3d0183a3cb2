"""`python -m experiments.run` end to end on a tiny experiment (2-layer hidden-64 BERTs, 12 steps of 8 × 32 tokens
on real English text; SST-2 and STS-B in GLUE's layout, written by `tests/glue_fixture.py`, capped at 100 training
examples): two runs side by side in child processes and a third that starts from the first one's embeddings, then
probe, linear probe, fine-tuning and the report. Running it again computes nothing; a run interrupted between
snapshots resumes onto the uninterrupted trajectory; the quick check (`--max-steps`) cuts linear probes and
fine-tuning to a smoke size and leaves GLUE tasks out without a GLUE folder; bad input exits 2 with one line."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import dynamics.results.store as dstore
from common.run_dir import RunWriter
from experiments.results import FAMILY, PROBE_HASH, completed_units
from experiments.run import SMOKE_EVAL_BLOCKS, SMOKE_EXAMPLES, SMOKE_PROBE_BLOCKS, _train_config, main
from experiments.spec import load
from taco.embeddings import WORD_EMBEDDINGS
from tests.integration.conftest import one_torch_thread
from tests.integration.test_train_cli import _tree_digest

REPO = Path(__file__).resolve().parents[2]
RUNS = ("mlm-s1", "taco-s1", "taco-init")
STEPS = [0, 6, 12]


@pytest.fixture(scope="module", autouse=True)
def _no_glue_dir_from_the_environment() -> Iterator[None]:
    """`experiments.run` and its child processes default `--glue-dir` to `$GLUE_DIR` (which CI sets to the real
    GLUE files): unset it here, so the only GLUE data they can reach is the fixture passed with `--glue-dir`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GLUE_DIR", raising=False)
        yield


def experiment_file(path: Path, corpus: Path, cache: Path) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: tiny
        report: embedding_sensitivity
        description: Two tiny runs and one that starts from the MLM run's word embeddings.
        train:
          preset: tiny
          model_overrides: {{hidden_size: 64, num_attention_heads: 2, intermediate_size: 128}}
          corpus: {corpus}
          data_cache: {cache}
          vocab_size: 2000
          block_size: 32
          batch_size: 8
          eval_blocks: 16
          tc_negatives: 10
          max_steps: 12
          snapshot_every: 6
          snapshot_log_spaced: false
          log_every: 1
          seed: 1
        grid: {{objective: [mlm, taco]}}
        name_format: "{{objective}}-s1"
        runs:
          - {{name: taco-init, objective: taco, init_embeddings: "{{run:mlm-s1}}"}}
        probe: {{probe_blocks: 8, figures: false, cka_tokens: 128, projection_tokens: 128, neighbour_tokens: 128,
                tc_negatives: 10}}
        linear: {{tasks: [sst2, stsb], every: 6, max_train_examples: 100, max_eval_examples: 50, max_length: 32}}
        finetune: {{tasks: [sst2], steps: [6, final], seeds: [1], epochs: 1, batch_size: 8, warmup_steps: 2,
                   lr: 0.001, max_train_examples: 100, max_eval_examples: 50, max_length: 32}}
        """))
    return path


def train_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokenizer and packed-block cache shared by this session's training tests (same corpus, same settings)."""
    path = tmp_path_factory.getbasetemp() / "taco-train-cache"
    path.mkdir(exist_ok=True)
    return path


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _stored(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(probe rows, downstream rows) of a run's store."""
    with dstore.open(run / "dynamics", readonly=True) as s:
        return s.metrics(run=run.name), s.metrics(run=run.name, family=FAMILY, probe_hash=PROBE_HASH)


def _embeddings(run: Path, step: int) -> torch.Tensor:
    return load_file(str(run / "snapshots" / f"step-{step:07d}" / "model.safetensors"))[WORD_EMBEDDINGS]


@pytest.fixture(scope="module")
def experiment(small_english_corpus: Path, tmp_path_factory: pytest.TempPathFactory,
               glue_fixture_dir: Path) -> dict[str, Path]:
    """The tiny experiment trained, probed, evaluated (`--jobs 2`) and reported. Read-only."""
    root = tmp_path_factory.mktemp("experiment")
    config = experiment_file(root / "tiny.yaml", small_english_corpus, train_cache(tmp_path_factory))
    runs, results = root / "runs", root / "results"
    common = [str(config), "--runs-dir", str(runs), "--device", "cpu", "--threads", "1", "--no-progress"]
    with one_torch_thread():
        assert main([*common, "--stages", "train,probe,linear,finetune", "--jobs", "2", "--glue-dir",
                     str(glue_fixture_dir)]) == 0
        assert main([*common, "--stages", "report", "--results-dir", str(results)]) == 0
    return {"config": config, "runs": runs, "results": results / "tiny"}


def test_every_run_is_trained_probed_and_scored(experiment: dict[str, Path]) -> None:
    runs = experiment["runs"]
    for name in RUNS:
        run = runs / name
        assert sorted(int(p.name.split("-")[1]) for p in (run / "snapshots").glob("step-*")) == STEPS
        assert all((run / "snapshots" / f"step-{s:07d}" / "model.safetensors").is_file() for s in STEPS)
        config = json.loads((run / "run.json").read_text())["config"]
        assert config["objective"] == name.split("-")[0] and config["output_dir"] == str(run)
        assert json.loads(config["model_overrides"])["hidden_size"] == 64

        probe, down = _stored(run)
        gap = probe[(probe.metric == "ctx_gap_window") & (probe.layer == 2)]
        assert sorted(gap.step.unique()) == STEPS and gap.value.notna().all()
        linear = down[down.variant == "linear/mean"]
        for metric in ("sst2/score", "stsb/score", "glue/average"):
            assert sorted(linear[linear.metric == metric].step.unique()) == STEPS, (name, metric)
        finetune = down[(down.variant == "finetune/mean") & (down.metric == "sst2/score")]
        assert sorted(finetune.step) == [6, 12] and finetune.value.between(0, 100).all()

        stages = json.loads((run / "experiment.json").read_text())["stages"]
        assert set(stages) == {"train", "probe", "linear", "finetune"}
        assert all(s["seconds"] >= 0 and s["device"].startswith("cpu") for s in stages.values())
        log = (runs / "logs" / f"{name}.log").read_text()
        assert all(f"[tiny/{name}] {stage}" in log for stage in stages)

    init = json.loads((runs / "taco-init" / "run.json").read_text())["config"]
    assert init["init_embeddings"] == str(runs / "mlm-s1")
    assert torch.equal(_embeddings(runs / "taco-init", 0), _embeddings(runs / "mlm-s1", 12))
    assert not torch.equal(_embeddings(runs / "taco-s1", 0), _embeddings(runs / "mlm-s1", 12))


def test_report_covers_every_run(experiment: dict[str, Path]) -> None:
    out = experiment["results"]
    text = (out / "report.md").read_text()
    assert text.startswith("# tiny: sensitivity to the word embeddings")
    assert "Two tiny runs and one that starts from the MLM run's word embeddings." in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert set(RUNS) <= set(rows)
    assert "| mlm-s1 |" in rows["taco-init"]  # the init column names the donor run
    assert (out / "figures" / "curves.png").stat().st_size > 1000
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves.run) == set(RUNS) and set(curves.source) == {"train", "probe", "downstream"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["final"]) == set(RUNS) and set(summary["runs"]) == set(RUNS)
    assert summary["runs"]["mlm-s1"]["stages"]["train"]["seconds"] >= 0


def test_running_again_computes_nothing(experiment: dict[str, Path], glue_fixture_dir: Path) -> None:
    runs = experiment["runs"]

    def state() -> dict[str, tuple]:
        out = {}
        for name in RUNS:
            probe, down = _stored(runs / name)
            out[name] = ((runs / name / "log.jsonl").read_bytes(), _tree_digest(runs / name / "snapshots"),
                         (runs / name / "experiment.json").read_bytes(), len(probe), down.to_json())
        return out

    before = state()
    with one_torch_thread():
        assert main([str(experiment["config"]), "--runs-dir", str(runs), "--device", "cpu", "--threads", "1",
                     "--stages", "train,probe,linear,finetune", "--glue-dir", str(glue_fixture_dir),
                     "--no-progress"]) == 0
    assert state() == before  # no step trained, no unit recomputed, no stage timing replaced


def test_an_interrupted_run_resumes_onto_the_same_trajectory(experiment: dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    argv = [str(experiment["config"]), "--runs-dir", str(runs), "--runs", "mlm-s1", "--stages", "train",
            "--device", "cpu", "--threads", "1", "--no-progress"]
    append = RunWriter.append_log

    def interrupted_at_step_9(writer: RunWriter, row: dict) -> None:
        if row["step"] == 9 and "split" not in row:
            raise KeyboardInterrupt  # Ctrl-C between the step-6 and step-12 snapshots
        append(writer, row)

    monkeypatch.setattr(RunWriter, "append_log", interrupted_at_step_9)
    with one_torch_thread():
        assert main(argv) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    run = runs / "mlm-s1"
    assert json.loads((run / "state" / "state.json").read_text())["step"] == 6
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step-0000000", "step-0000006"]
    assert [r["step"] for r in _log(run) if "split" not in r] == list(range(1, 9))  # rows past the state
    assert not (run / "experiment.json").exists()  # an unfinished stage records no time
    with (run / "log.jsonl").open("a") as f:
        f.write('{"step": 9, "tokens_seen": 23')  # and a row cut by a hard kill

    monkeypatch.undo()
    with one_torch_thread():
        assert main(argv) == 0
    reference = experiment["runs"] / "mlm-s1"  # the same options, trained without interruption
    resumed, uninterrupted = _log(run), _log(reference)
    assert [r["step"] for r in resumed if "split" not in r] == list(range(1, 13))
    assert [r["step"] for r in resumed if r.get("split") == "validation"] == STEPS
    for a, b in zip(resumed, uninterrupted, strict=True):
        assert a["step"] == b["step"]
        for key in ("loss", "mlm_loss", "lr"):
            if key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    final, ref = (load_file(str(r / "snapshots" / "step-0000012" / "model.safetensors")) for r in (run, reference))
    assert all(torch.allclose(final[k], ref[k], atol=1e-5) for k in ref)
    assert set(json.loads((run / "experiment.json").read_text())["stages"]) == {"train"}


def smoke_experiment_file(path: Path, tiny: Path) -> Path:
    """The tiny experiment with probe, linear and fine-tuning blocks larger than the quick check's: 24 probe
    blocks, no example caps (the fixture's SST-2 and STS-B have 324 and 220 training rows), 2 epochs, 2 seeds."""
    text = tiny.read_text()
    assert "probe: {probe_blocks: 8," in text
    head = text[:text.index("linear:")].replace("probe: {probe_blocks: 8,", "probe: {probe_blocks: 24,")
    path.write_text(head + textwrap.dedent("""\
        linear: {tasks: [sst2, stsb], every: 6, max_length: 32}
        finetune: {tasks: [sst2], steps: [6, final], seeds: [1, 2], epochs: 2, batch_size: 8, warmup_steps: 2,
                   lr: 0.001, max_length: 32}
        """))
    return path


def test_quick_check_cuts_linear_probes_and_fine_tuning(experiment: dict[str, Path], glue_fixture_dir: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--max-steps` reaches the probe and the downstream stages: SMOKE_PROBE_BLOCKS probe blocks, at most
    SMOKE_EXAMPLES training and dev examples per task, one fine-tuning epoch with the first seed; the report goes
    under the runs folder. Training caps its validation blocks."""
    config = smoke_experiment_file(tmp_path / "smoke.yaml", experiment["config"])
    runs = tmp_path / "runs"
    # trained for 12 steps; measured and scored afresh here
    shutil.copytree(experiment["runs"] / "mlm-s1", runs / "mlm-s1", ignore=shutil.ignore_patterns("dynamics"))
    with one_torch_thread():
        assert main([str(config), "--runs-dir", str(runs), "--runs", "mlm-s1", "--max-steps", "12",
                     "--stages", "probe,linear,finetune,report", "--glue-dir", str(glue_fixture_dir),
                     "--device", "cpu", "--threads", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"linear: quick check, sst2,stsb on at most {SMOKE_EXAMPLES} training and dev examples" in out
    assert "finetune: quick check, sst2 on at most" in out and "1 epoch, seed 1" in out
    with dstore.open(runs / "mlm-s1" / "dynamics", readonly=True) as store:
        assert store.probe_sets().n_blocks.tolist() == [SMOKE_PROBE_BLOCKS]
        for step in STEPS:
            units = completed_units(store, "mlm-s1", step)
            for task, n_train, n_dev in (("sst2", 324, 120), ("stsb", 220, 110)):
                unit = units[f"linear/L2/{task}"]
                expected = min(n_train, SMOKE_EXAMPLES), min(n_dev, SMOKE_EXAMPLES)
                assert (unit["n_train"], unit["n_dev"]) == expected, (step, task)
            finetune = units.get("finetune/L-1/sst2")
            if step == 0:  # not a fine-tuning step
                assert finetune is None
                continue
            assert (finetune["n_train"], finetune["n_dev"]) == (min(324, SMOKE_EXAMPLES), min(120, SMOKE_EXAMPLES))
            assert SMOKE_EXAMPLES < 120  # so that both caps are seen
            assert finetune["train_loss"].keys() == {"1"} and len(finetune["train_loss"]["1"]) == 1  # 1 epoch
        down = store.metrics(run="mlm-s1", family=FAMILY, probe_hash=PROBE_HASH)
    assert set(down[down.metric == "sst2/score"].variant) == {"linear/mean", "finetune/seed1", "finetune/mean"}
    assert (runs / "results" / "tiny" / "report.md").is_file()
    exp = load(config, runs)
    assert _train_config(exp, "mlm-s1", "cpu", False, None).eval_blocks == 16  # the file's
    full = _train_config(exp, "mlm-s1", "cpu", False, 12)
    assert (full.eval_blocks, full.max_steps) == (min(16, SMOKE_EVAL_BLOCKS), 12)
    cpu_scale = load(REPO / "experiments" / "configs" / "mlm_vs_taco.yaml", tmp_path / "paper-runs")
    assert _train_config(cpu_scale, "mlm-s1", "cpu", False, 20).eval_blocks == SMOKE_EVAL_BLOCKS < 64


def test_quick_check_without_glue_leaves_glue_tasks_out(experiment: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(experiment["runs"] / "mlm-s1", runs / "mlm-s1")
    before = _stored(runs / "mlm-s1")[1].to_json()
    assert main([str(experiment["config"]), "--runs-dir", str(runs), "--runs", "mlm-s1", "--max-steps", "12",
                 "--stages", "linear,finetune,report", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for stage in ("linear", "finetune"):  # the tiny experiment scores GLUE tasks only
        assert f"[tiny/mlm-s1] {stage}: skipped by the quick check (every task needs GLUE files" in out
    assert _stored(runs / "mlm-s1")[1].to_json() == before
    assert (runs / "results" / "tiny" / "report.md").is_file()


def test_bad_input_exits_2_with_one_line(experiment: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    config, runs = str(experiment["config"]), tmp_path / "runs"
    cases = [
        ([config, "--stages", "train,bake"], "--stages train,bake: choose from train,probe,linear,finetune,report"),
        ([config, "--stages", ","], "--stages (none): choose from"),
        ([config, "--runs", "mlm-s1,mlm-s9"], "experiment tiny has no run 'mlm-s9'; its runs: mlm-s1, taco-s1"),
        ([config, "--jobs", "0"], "--jobs 0: must be at least 1"),
        ([config, "--max-steps", "0"], "--max-steps 0: must be at least 1"),
        ([str(tmp_path / "missing.yaml")], f"experiment file {tmp_path / 'missing.yaml'} does not exist"),
        ([config], f"--glue-dir is required for sst2,stsb (the linear stage of {config})"),  # before any training
        ([config, "--stages", "finetune"], f"--glue-dir is required for sst2 (the finetune stage of {config})"),
    ]
    for argv, expected in cases:
        assert main([*argv, "--runs-dir", str(runs), "--device", "cpu", "--no-progress"]) == 2, expected
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not runs.exists()
