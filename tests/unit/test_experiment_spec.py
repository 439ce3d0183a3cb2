"""Experiment files (`experiments.spec`): grid × runs expansion, `{run:NAME}` references and their waves, and
the one-line `EvalError`s for files that cannot work. Every shipped `experiments/configs/*.yaml` must load."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from experiments.errors import EvalError
from experiments.run import _eval_config, main
from experiments.spec import load
from taco.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "experiments" / "configs").glob("*.yaml"))


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_expands_in_order_with_name_format_and_shared_train(tmp_path: Path) -> None:
    exp = load(_write(tmp_path, """
        name: grid
        train: {preset: tiny, max_steps: 10, seed: 9}
        grid:
          objective: [mlm, taco]
          seed: [1, 2]
          tc_window: 5          # a scalar is a one-value axis
        name_format: "{objective}-s{seed}"
        """))
    assert exp.names() == ["mlm-s1", "mlm-s2", "taco-s1", "taco-s2"]
    assert exp.run("taco-s2").options == {"preset": "tiny", "max_steps": 10, "seed": 2, "objective": "taco",
                                          "tc_window": 5}  # the grid's value wins over the shared one
    assert exp.runs_dir == Path("runs/experiments/grid") and exp.report == "grid"
    assert exp.linear is None and exp.finetune is None and exp.probe == {}


def test_default_name_format_joins_the_grid_values(tmp_path: Path) -> None:
    exp = load(_write(tmp_path, "grid: {objective: [mlm, taco], seed: [3]}\n", "joined.yaml"))
    assert exp.name == "joined"  # the file's stem when no name is given
    assert exp.names() == ["mlm-3", "taco-3"]


def test_explicit_runs_merge_with_shared_train_and_follow_the_grid(tmp_path: Path) -> None:
    exp = load(_write(tmp_path, """
        name: mixed
        train: {preset: tiny, objective: taco, tc-window: 5}    # dashes are accepted like the CLI's flags
        grid: {seed: [1]}
        name_format: "taco-s{seed}"
        runs:
          - {name: w3, tc_window: 3}
          - {name: mlm, objective: mlm, seed: 4}
        """))
    assert exp.names() == ["taco-s1", "w3", "mlm"]
    assert exp.run("w3").options == {"preset": "tiny", "objective": "taco", "tc_window": 3}
    assert exp.run("mlm").options == {"preset": "tiny", "objective": "mlm", "tc_window": 5, "seed": 4}
    with pytest.raises(EvalError, match="has no run 'w5'; its runs: taco-s1, w3, mlm"):
        exp.run("w5")


def test_run_references_resolve_to_run_dirs_and_order_the_waves(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    exp = load(_write(tmp_path, """
        train: {preset: tiny, max_steps: 4}
        runs:
          - {name: c, init_embeddings: "{run:b}", freeze_embeddings: true}
          - {name: b, init_embeddings: "{run:a}"}
          - {name: a}
          - {name: d}
        """), runs_dir=runs_dir)
    assert exp.runs_dir == runs_dir
    assert exp.run("c").depends_on() == {"b"} and exp.run("a").depends_on() == set()
    assert [[r.name for r in wave] for wave in exp.waves()] == [["a", "d"], ["b"], ["c"]]
    opts = exp.train_options("c")
    assert opts == {"preset": "tiny", "max_steps": 4, "init_embeddings": str(runs_dir / "b"),
                    "freeze_embeddings": True, "output_dir": str(runs_dir / "c")}
    assert exp.run("c").options["init_embeddings"] == "{run:b}"  # resolving does not change the spec
    TrainConfig(**opts).resolved().validate()  # what experiments.run hands to taco.train


def test_runs_dir_comes_from_the_file_unless_overridden(tmp_path: Path) -> None:
    path = _write(tmp_path, "runs_dir: elsewhere/x\nruns: [{name: a}]\n")
    assert load(path).runs_dir == Path("elsewhere/x")
    assert load(path, runs_dir=tmp_path / "y").run_dir("a") == tmp_path / "y" / "a"


def test_model_overrides_may_be_a_mapping(tmp_path: Path) -> None:
    exp = load(_write(tmp_path, """
        train: {preset: tiny, model_overrides: {hidden_size: 64, num_attention_heads: 2}}
        runs: [{name: a}]
        """))
    cfg = TrainConfig(**exp.train_options("a")).resolved()
    cfg.validate()
    assert cfg.model_overrides_dict() == {"hidden_size": 64, "num_attention_heads": 2}


def test_json_files_load_too(tmp_path: Path) -> None:
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"name": "j", "runs": [{"name": "a", "objective": "taco"}]}))
    assert load(path).run("a").options == {"objective": "taco"}


@pytest.mark.parametrize("text, fragment", [
    ("runs: [{name: a}]\nepochs: 3\n", "unknown key(s) epochs; allowed: "),
    ("train: {max_step: 10}\nruns: [{name: a}]\n", "unknown train (run a) option(s) max_step"),
    ("runs: [{name: a, learning_rate: 0.1}]\n", "unknown train (run a) option(s) learning_rate"),
    ("grid: {objective: [mlm], colour: [red]}\n", "unknown train (run mlm-red) option(s) colour"),
    ("runs: [{name: a}]\nprobe: {probe_block: 8}\n", "unknown probe option(s) probe_block"),
    ("runs: [{name: a}]\nlinear: {tasks: [sst2], max_train: 10}\n", "unknown linear option(s) max_train"),
    ("runs: [{name: a}]\nfinetune: {epoch: 1}\n", "unknown finetune option(s) epoch"),
    ("grid: {seed: [1, 2]}\nname_format: run\n", "run name 'run' appears twice"),
    ("grid: {seed: [1]}\nname_format: s{seed}\nruns: [{name: s1}]\n", "run name 's1' appears twice"),
    ("grid: {seed: [1]}\nname_format: '{objective}-{seed}'\n", "name_format names 'objective' which is not a grid key"),
    ("runs: [{name: a, init_embeddings: '{run:b}'}]\n", "run a refers to unknown run(s) b"),
    ("runs: [{name: a, init_embeddings: '{run:b}'}, {name: b, init_embeddings: '{run:a}'}]\n",
     "runs a, b refer to each other in a cycle"),
    ("runs: [{name: a, init_embeddings: '{run:a}'}]\n", "runs a refer to each other in a cycle"),
    ("runs: [{objective: mlm}]\n", "every entry of runs needs a name"),
    ("runs: [{name: a/b}]\n", "run name 'a/b' may hold only"),
    ("name: 'my exp'\nruns: [{name: a}]\n", "name 'my exp' may hold only"),
    ("train: {preset: tiny}\n", "no runs; give a grid or a runs list"),
    ("train: [preset, tiny]\nruns: [{name: a}]\n", "train must be a mapping"),
    ("- just\n- a list\n", "expected a mapping"),
    ("runs: [{name: a}\n", "not valid YAML (ParserError); fix its syntax"),
    ("runs:\n  - {name: a}\n\tprobe: {}\n", "not valid YAML (ScannerError)"),
    # every option typed as its program's flag types it, before anything runs
    ("train: {max_steps: lots}\nruns: [{name: a}]\n",
     "train (run a): bad value 'lots' for 'max_steps'; expected a whole number"),
    ("runs: [{name: a, freeze_embeddings: maybe}]\n", "bad value 'maybe' for 'freeze_embeddings'; expected true or"),
    ("runs: [{name: a, lr: [0.1]}]\n", "bad value [0.1] for 'lr'; expected a finite number"),
    ("runs: [{name: a, lr: .nan}]\n", "bad value nan for 'lr'"),
    ("runs: [{name: a, objective: gpt}]\n", "bad value 'gpt' for 'objective'; expected one of mlm, taco"),
    ("runs: [{name: a, seed: null}]\n", "bad value null for 'seed'"),
    ("grid: {seed: [1, two]}\nname_format: s{seed}\n", "train (run stwo): bad value 'two' for 'seed'"),
    ("runs: [{name: a}]\nprobe: {probe_blocks: many}\n", "probe: bad value 'many' for 'probe_blocks'"),
    ("runs: [{name: a}]\nprobe: {metrics: {anchors: 1}}\n", "probe: bad value {'anchors': 1} for 'metrics'"),
    ("runs: [{name: a}]\nlinear: {every: soon}\n", "linear: bad value 'soon' for 'every'"),
    ("runs: [{name: a}]\nfinetune: {seeds: [1, x]}\n", "finetune: bad value [1, 'x'] for 'seeds'"),
    ("runs: [{name: a}]\nfinetune: {steps: [500, last]}\n", "finetune option steps [500, 'last']: expected"),
    ("runs: [{name: a}]\nlinear: {steps: [-1]}\n", "linear option steps [-1]: expected"),
    # the file's own keys typed too
    ("runs: 5\n", "runs must be a list of mappings"),
    ("grid: {seed: [1]}\nname_format: '{seed'\n", "name_format '{seed' is not a valid format"),
    ("grid: {seed: [1]}\nname_format: '{}'\n", "name_format '{}' is not a valid format"),
    ("runs: [{name: a}]\nruns_dir: [1]\n", "runs_dir must be text, not [1]"),
    ("runs: [{name: a}]\ndescription: {a: 1}\n", "description must be text"),
    ("runs: [{name: a}]\nreport: [x]\n", "report must be text"),
    ("name: [x]\nruns: [{name: a}]\n", "name must be text"),
    ("runs: [{name: true}]\n", "each runs entry's name must be text, not True"),
    ("runs: [{name: [a]}]\n", "each runs entry's name must be text"),
    # values each program's own checks refuse, before anything runs
    ("runs: [{name: a, max_steps: 0}]\n", "train (run a): --max-steps must be >= 1 (got 0)"),
    ("runs: [{name: a, tc_window: 4}]\n", "train (run a): --tc-window must be odd"),
    ("runs: [{name: a}]\nprobe: {window: 4}\n", "probe: --window 4: must be an odd number"),
    ("runs: [{name: a}]\nlinear: {tasks: [squad]}\n", "linear: --tasks squad: unknown task"),
    ("runs: [{name: a}]\nfinetune: {epochs: 0}\n", "finetune: --epochs 0: must be at least 1"),
    # options experiments.run sets itself (a second value would be a TypeError there, or silently replaced)
    ("runs: [{name: a, device: cpu}]\n", "train (run a) option device is set by experiments.run (from its --device)"),
    ("train: {output_dir: x}\nruns: [{name: a}]\n", "train (run a) option output_dir is set by experiments.run"),
    ("runs: [{name: a, resume: true}]\n", "option resume is set by experiments.run"),
    ("runs: [{name: a}]\nprobe: {out: x}\n", "probe option out is set by experiments.run"),
    ("runs: [{name: a}]\nprobe: {progress: false}\n", "probe option progress is set by experiments.run"),
    ("runs: [{name: a}]\nlinear: {mode: finetune}\n", "linear option mode is set by experiments.run"),
    ("runs: [{name: a}]\nfinetune: {device: cpu}\n", "finetune option device is set by experiments.run"),
])
def test_bad_files_raise_one_line_eval_errors(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(EvalError) as info:
        load(path)
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_options_are_typed_once_for_every_program(tmp_path: Path) -> None:
    exp = load(_write(tmp_path, """
        train: {max_steps: '12', lr: '1e-3', freeze_embeddings: 'yes', model_overrides: {num_hidden_layers: 2}}
        runs: [{name: a}]
        probe: {metrics: 'anchors,context', every: 2}
        linear: {tasks: sst2, steps: [4, final]}
        """))
    assert exp.run("a").options == {"max_steps": 12, "lr": 1e-3, "freeze_embeddings": True,
                                     "model_overrides": '{"num_hidden_layers": 2}'}
    assert exp.probe == {"metrics": ["anchors", "context"], "every": 2}
    assert exp.linear == {"tasks": ["sst2"], "steps": [4, "final"]}


@pytest.mark.parametrize("stages, has, fragment", [
    (["linear"], "finetune: {epochs: 1}\n", "has no linear: section, so the linear stage has nothing to do"),
    (["train", "finetune", "report"], "linear: {every: 2}\n", "has no finetune: section"),
    (["probe", "linear", "finetune"], "linear: {every: 2}\n", "has no finetune: section"),
])
def test_a_stage_asked_for_without_its_section_is_refused(tmp_path: Path, stages: list[str], has: str,
                                                          fragment: str) -> None:
    exp = load(_write(tmp_path, "runs: [{name: a}]\n" + has))
    with pytest.raises(EvalError) as info:
        exp.check_stages(stages)
    assert fragment in str(info.value) and str(exp.source) in str(info.value)


def test_stages_with_their_sections_or_every_stage_pass(tmp_path: Path) -> None:
    exp = load(_write(tmp_path, "runs: [{name: a}]\nlinear: {every: 2}\n"))
    for stages in (["linear"], ["train", "probe", "report"], ["train", "probe", "linear", "finetune", "report"],
                   ["train", "probe", "linear", "finetune"]):  # everything = whatever the file has (as --jobs asks)
        exp.check_stages(stages)


def test_the_runner_refuses_a_stage_without_its_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "runs: [{name: a, preset: tiny}]\n")
    assert main([str(path), "--runs-dir", str(tmp_path / "runs"), "--stages", "linear"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --stages linear: {path} has no linear: section") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"nothing\.yaml does not exist; pass one of experiments/configs"):
        load(tmp_path / "nothing.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(EvalError, match=r"folder\.yaml is a folder, not a file"):
        load(tmp_path / "folder.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_and_their_options_are_valid(path: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    exp = load(path, runs_dir=tmp_path)
    assert exp.name == path.stem and exp.description and exp.runs
    from experiments.report import REPORTS

    assert exp.report in REPORTS
    ordered = [r.name for wave in exp.waves() for r in wave]
    assert sorted(ordered) == sorted(exp.names())
    for name in exp.names():
        opts = exp.train_options(name)
        cfg = TrainConfig(**opts).resolved()
        cfg.validate()
        assert cfg.output_dir == str(tmp_path / name)
        for ref in exp.run(name).depends_on():  # references point at runs trained in an earlier wave
            assert ordered.index(ref) < ordered.index(name)
        for mode, block in (("linear", exp.linear), ("finetune", exp.finetune)):
            if block is not None:
                _eval_config(exp, mode, "cpu", False, None, None, name)
    assert main([str(path), "--runs-dir", str(tmp_path), "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(" ")[0] for line in listed] == ordered


def test_embedding_sensitivity_inits_from_the_trained_mlm_run(tmp_path: Path) -> None:
    exp = load(REPO / "experiments" / "configs" / "embedding_sensitivity.yaml", runs_dir=tmp_path)
    assert exp.train_options("taco-init")["init_embeddings"] == str(tmp_path / "mlm-trained")
    assert [r.name for r in exp.waves()[0]] == ["mlm-trained", "taco-trained", "mlm-frozen", "taco-frozen"]


def test_paper_config_follows_the_released_scripts_and_the_eighth_keeps_one_eighth(tmp_path: Path) -> None:
    """train_small.sh / finetune_small.sh of github.com/FUZHIYI/TACO: 256 blocks per GPU x 2 GPUs x 4
    accumulation steps of 256 tokens, lr 1e-4, 2,500 warm-up steps, weight decay 0.01, mixed precision,
    250k steps, saves every 2,500; fine-tuning lr 5e-5, 4 epochs, batch 32, 128 tokens, 100 warm-up steps."""
    paper = load(REPO / "experiments" / "configs" / "mlm_vs_taco_paper.yaml", runs_dir=tmp_path)
    eighth = load(REPO / "experiments" / "configs" / "mlm_vs_taco_paper_eighth.yaml", runs_dir=tmp_path)
    assert paper.names() == eighth.names() == ["mlm-s1", "taco-s1"]
    for name in paper.names():
        cfg = TrainConfig(**paper.train_options(name)).resolved()
        cfg.validate()
        assert cfg.batch_size * cfg.grad_accum == 2048 and cfg.batch_size == 256 and cfg.block_size == 256
        assert (cfg.preset, cfg.max_steps, cfg.lr, cfg.warmup(), cfg.weight_decay) == ("small", 250000, 1e-4,
                                                                                         2500, 0.01)
        assert (cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps, cfg.max_grad_norm) == (0.9, 0.999, 1e-8, 1.0)
        assert (cfg.precision, cfg.snapshot_every, cfg.tc_negatives, cfg.tc_window) == ("bf16", 2500, 50, 5)
        assert cfg.tc_negative_sharing == "anchor"  # the released per-anchor draws
        small = TrainConfig(**eighth.train_options(name)).resolved()
        small.validate()
        assert 8 * small.batch_size * small.grad_accum * small.block_size == (
            cfg.batch_size * cfg.grad_accum * cfg.block_size)
        assert (small.max_steps, small.lr, small.precision) == (250000, 5e-4, "bf16")
        for exp in (paper, eighth):
            ft = _eval_config(exp, "finetune", "cpu", False, None, None, name)
            settings = ft.finetune_settings()
            assert (settings.lr, settings.epochs, settings.batch_size, settings.warmup_steps) == (5e-5, 4, 32, 100)
            assert ft.max_length == 128 and ft.steps == [10000, 20000, 50000, 100000, 250000]
