"""Bad input, tried as a hostile new user would: every case ends in exit status 2, one `error:` line and no
traceback, and leaves every file that existed before byte-identical (sha256 of the whole working folder).

Each case runs a program's `main()` in-process on a folder that holds a real tiny run (trained by the fixture),
a real results store, a config file and the other props the cases name; `{run}`, `{store}`, … in the argv are
filled in per case.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hub_fixture import add_revision
from tests.integration.conftest import build_tiny_run


def _programs() -> dict[str, Callable[[list[str]], int]]:
    from dynamics.probe import main as probe
    from experiments.evaluate import main as evaluate
    from experiments.run import main as run
    from taco.prepare import main as prepare
    from taco.train import main as train

    return {"train": train, "probe": probe, "evaluate": evaluate, "run": run, "prepare": prepare}


TRAIN = ["--preset", "tiny", "--no-progress"]
CASES: list[tuple[str, str, list[str], str]] = [  # (id, program, argv, a fragment of the one error line)
    # taco.train: values
    ("train-lr-negative", "train", [*TRAIN, "--lr", "-1"], "--lr must be > 0"),
    ("train-lr-text", "train", [*TRAIN, "--lr", "fast"], "--lr"),
    ("train-beta1", "train", [*TRAIN, "--adam-beta1", "1.5"], "--adam-beta1"),
    ("train-beta2", "train", [*TRAIN, "--adam-beta2", "-0.1"], "--adam-beta2"),
    ("train-eps", "train", [*TRAIN, "--adam-eps", "0"], "--adam-eps"),
    ("train-decay", "train", [*TRAIN, "--weight-decay", "-1"], "--weight-decay"),
    ("train-heads-zero", "train", [*TRAIN, "--model-overrides", '{"num_attention_heads": 0}'], "num_attention_heads"),
    ("train-layers-fraction", "train", [*TRAIN, "--model-overrides", '{"num_hidden_layers": 2.5}'], "num_hidden_layers"),
    ("train-layers-word", "train", [*TRAIN, "--model-overrides", '{"num_hidden_layers": "two"}'], "num_hidden_layers"),
    ("train-override-unknown", "train", [*TRAIN, "--model-overrides", '{"wings": 2}'], "not a BertConfig field"),
    ("train-override-json", "train", [*TRAIN, "--model-overrides", "{oops"], "not valid JSON"),
    ("train-override-list", "train", [*TRAIN, "--model-overrides", "[1]"], "JSON object"),
    ("train-heads-divide", "train", [*TRAIN, "--model-overrides", '{"hidden_size": 30, "num_attention_heads": 4}'],
     "divisible"),
    ("train-dropout", "train", [*TRAIN, "--model-overrides", '{"hidden_dropout_prob": 2}'], "hidden_dropout_prob"),
    ("train-window-even", "train", [*TRAIN, "--tc-window", "4"], "--tc-window"),
    ("train-negatives-zero", "train", [*TRAIN, "--tc-negatives", "0"], "--tc-negatives"),
    ("train-temperature", "train", [*TRAIN, "--tc-temperature", "0"], "--tc-temperature"),
    ("train-block-large", "train", [*TRAIN, "--block-size", "4096"], "--block-size"),
    ("train-block-small", "train", [*TRAIN, "--block-size", "2"], "--block-size"),
    ("train-batch-zero", "train", [*TRAIN, "--batch-size", "0"], "--batch-size"),
    ("train-steps-zero", "train", [*TRAIN, "--max-steps", "0"], "--max-steps"),
    ("train-mlm-prob", "train", [*TRAIN, "--mlm-probability", "1.5"], "--mlm-probability"),
    ("train-warmup", "train", [*TRAIN, "--warmup-fraction", "2"], "--warmup"),
    ("train-objective", "train", [*TRAIN, "--objective", "gpt"], "invalid choice"),
    ("train-preset", "train", ["--preset", "huge"], "invalid choice"),
    ("train-device-gpu", "train", [*TRAIN, "--device", "gpu"], "unknown device"),
    ("train-device-cuda1", "train", [*TRAIN, "--device", "cuda:1"], "--device cuda:1"),
    ("train-unknown-flag", "train", [*TRAIN, "--learning-rate", "1"], "unrecognized arguments"),
    ("train-resume-overwrite", "train", [*TRAIN, "--resume", "--overwrite"], "contradict"),
    # taco.train: the file system
    ("train-output-file", "train", [*TRAIN, "--output-dir", "{file}"], "is a file"),
    ("train-output-foreign", "train", [*TRAIN, "--output-dir", "{foreign}"], "not empty"),
    ("train-overwrite-foreign", "train", [*TRAIN, "--output-dir", "{foreign}", "--overwrite"], "not a taco run"),
    ("train-existing-run", "train", [*TRAIN, "--output-dir", "{run}"], "already holds a run"),
    ("train-resume-nothing", "train", [*TRAIN, "--output-dir", "{empty}", "--resume"], "holds no run"),
    ("train-resume-bad-json", "train", [*TRAIN, "--output-dir", "{badjson}", "--resume"], "not valid JSON"),
    ("train-corpus-missing", "train", [*TRAIN, "--corpus", "{missing}"], ""),
    ("train-data-cache-file", "train", [*TRAIN, "--data-cache", "{file}"], "--data-cache"),
    ("train-config-missing", "train", ["--config", "{missing}"], "cannot read"),
    ("train-config-unknown", "train", ["--config", "{config_unknown}"], "unknown setting"),
    ("train-config-bad-value", "train", ["--config", "{config_bad_value}"], "bad value"),
    ("train-config-yaml", "train", ["--config", "{config_broken}"], "not valid YAML"),
    ("train-config-list", "train", ["--config", "{config_list}"], "expected a mapping"),
    # dynamics.probe
    ("probe-missing-dir", "probe", ["{missing}"], ""),
    ("probe-not-a-run", "probe", ["{empty}"], ""),
    ("probe-file-as-dir", "probe", ["{file}"], ""),
    ("probe-steps-absent", "probe", ["{run}", "--steps", "3"], "no snapshot at step 3"),
    ("probe-steps-negative", "probe", ["{run}", "--steps", "-1"], "--steps"),
    ("probe-steps-text", "probe", ["{run}", "--steps", "0,x"], "--steps"),
    ("probe-metrics", "probe", ["{run}", "--metrics", "vibes"], "--metrics"),
    ("probe-window", "probe", ["{run}", "--window", "4"], "--window"),
    ("probe-batch", "probe", ["{run}", "--batch-size", "0"], "--batch-size"),
    ("probe-temperature", "probe", ["{run}", "--tc-temperature", "-1"], "--tc-temperature"),
    ("probe-device", "probe", ["{run}", "--device", "tpu"], "unknown device"),
    ("probe-out-file", "probe", ["{run}", "--out", "{file}"], "is a file"),
    ("probe-out-not-sqlite", "probe", ["{run}", "--out", "{notdb}"], "not an SQLite database"),
    ("probe-out-other-sqlite", "probe", ["{run}", "--out", "{otherdb}"], "not a taco-dynamics results store"),
    ("probe-text-missing", "probe", ["{run}", "--probe-text", "{missing}"], ""),
    ("probe-config-unknown", "probe", ["{run}", "--config", "{config_unknown}"], "unknown setting"),
    ("probe-truncated", "probe", ["{truncated}"], "truncated"),
    ("probe-unknown-flag", "probe", ["{run}", "--fast"], "unrecognized arguments"),
    # dynamics.probe on the Hub cache (HF_HUB_CACHE is props/hub: tiny-org/tiny-bert at step1 and main)
    ("probe-hub-revision-missing", "probe", ["tiny-org/tiny-bert", "--revisions", "step1,step9"],
     "no revision step9 in the Hugging Face cache"),
    ("probe-hub-repo-missing", "probe", ["tiny-org/absent", "--revisions", "step1"],
     "download it first with hf download tiny-org/absent --revision step1"),
    ("probe-hub-main-missing", "probe", ["tiny-org/absent"], "hf download tiny-org/absent"),
    ("probe-revisions-with-path", "probe", ["{run}", "--revisions", "step1"], "--revisions step1: applies to"),
    ("probe-revisions-all-and-more", "probe", ["tiny-org/tiny-bert", "--revisions", "all,step1"], "all alone"),
    ("probe-revisions-follow", "probe", ["tiny-org/tiny-bert", "--revisions", "step1", "--follow"],
     "drop --revisions"),
    ("probe-hub-follow", "probe", ["tiny-org/tiny-bert", "--follow"], "is a model in the Hugging Face cache"),
    # experiments.evaluate
    ("evaluate-task", "evaluate", ["{run}", "--tasks", "squad"], "squad"),
    ("evaluate-no-glue-dir", "evaluate", ["{run}", "--tasks", "cola", "--max-length", "64"], "glue-dir"),
    ("evaluate-glue-dir-missing", "evaluate", ["{run}", "--tasks", "cola", "--glue-dir", "{missing}"], ""),
    ("evaluate-seeds-repeated", "evaluate", ["{run}", "--seeds", "1,1"], "repeated seed"),
    ("evaluate-mode", "evaluate", ["{run}", "--mode", "zero-shot"], "invalid choice"),
    ("evaluate-epochs", "evaluate", ["{run}", "--epochs", "0"], "--epochs"),
    ("evaluate-device", "evaluate", ["{run}", "--device", "gpu"], "unknown device"),
    ("evaluate-out-other-sqlite", "evaluate", ["{run}", "--tasks", "rotten_tomatoes", "--mode", "linear",
                                               "--out", "{otherdb}"], ""),
    ("evaluate-missing-dir", "evaluate", ["{missing}"], ""),
    # experiments.run
    ("run-missing-file", "run", ["{missing}"], "does not exist"),
    ("run-not-yaml", "run", ["{config_broken}"], "not valid YAML"),
    ("run-list-file", "run", ["{config_list}"], "expected a mapping"),
    ("run-stages", "run", ["{experiment}", "--stages", "bake"], "--stages"),
    ("run-jobs", "run", ["{experiment}", "--jobs", "0"], "--jobs"),
    ("run-device", "run", ["{experiment}", "--device", "gpu"], "unknown device"),
    ("run-unknown-run", "run", ["{experiment}", "--runs", "nobody"], "nobody"),
    # taco.prepare
    ("prepare-cache-file", "prepare", ["--cache-dir", "{file}"], ""),
    ("prepare-unknown-flag", "prepare", ["--online"], "unrecognized arguments"),
]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def props(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with a tiny probed run and every prop the cases name (read-only to the cases)."""
    from dynamics.probe import run as probe

    root = tmp_path_factory.mktemp("bad-input")
    run = build_tiny_run(root / "run", steps=(0, 1, 2))
    probe(run, out=run / "dynamics", progress=False, figures=False)
    (root / "file.txt").write_text("not a folder\n")
    (root / "empty").mkdir()
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("somebody's notes\n")
    (root / "badjson").mkdir()
    (root / "badjson" / "run.json").write_text('{"config": {"objective": "mlm"')
    (root / "notdb").mkdir()
    (root / "notdb" / "results.sqlite").write_text("just text\n")
    (root / "otherdb").mkdir()
    conn = sqlite3.connect(root / "otherdb" / "results.sqlite")
    conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    conn.commit()
    conn.close()
    trunc = root / "truncated"
    shutil.copytree(run, trunc, ignore=shutil.ignore_patterns("dynamics"))
    weights = trunc / "snapshots" / "step-0000001" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    staged = tmp_path_factory.mktemp("hub-staging")
    shutil.copytree(run / "snapshots" / "step-0000001", staged / "step1")
    shutil.copytree(run / "tokenizer", staged / "step1", dirs_exist_ok=True)
    for revision in ("step1", "main"):
        add_revision(root / "hub", "tiny-org/tiny-bert", revision, staged / "step1")
    (root / "config_unknown.yaml").write_text("wings: 2\n")
    (root / "config_bad_value.yaml").write_text("batch_size: many\n")
    (root / "config_broken.yaml").write_text("a: [1, 2\n")
    (root / "config_list.yaml").write_text("- 1\n- 2\n")
    (root / "experiment.yaml").write_text(json.dumps({
        "name": "tiny", "train": {"preset": "tiny", "max_steps": 2}, "grid": {"objective": ["mlm"], "seed": [1]},
        "name_format": "{objective}-s{seed}"}))
    return root


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: tuple[str, str, list[str], str], props: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, program, argv, fragment = case
    names = {"run": "run", "file": "file.txt", "empty": "empty", "foreign": "foreign", "badjson": "badjson",
             "notdb": "notdb", "otherdb": "otherdb", "truncated": "truncated", "missing": "no-such-thing",
             "config_unknown": "config_unknown.yaml", "config_bad_value": "config_bad_value.yaml",
             "config_broken": "config_broken.yaml", "config_list": "config_list.yaml",
             "experiment": "experiment.yaml", "store": "run/dynamics"}
    args = []
    for a in argv:
        for key, name in names.items():
            a = a.replace("{" + key + "}", str(props / name))
        args.append(a)
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(props / "hub"))
    if program == "train" and "--output-dir" not in args:
        args += ["--output-dir", str(props / "new-run")]
    monkeypatch.chdir(props)
    before = _digest(props)
    try:
        code = _programs()[program](args)
    except SystemExit as exc:  # argparse-level usage errors exit from inside the parser
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    assert fragment in lines[-1], lines[-1]
    assert _digest(props) == before, "files changed"
    assert not (props / "new-run").exists(), "a failing run left a run directory behind"
