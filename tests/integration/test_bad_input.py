"""Bad input, tried as a hostile new user would: every case ends in exit status 2, one `error:` line and no
traceback, and leaves every file that existed before byte-identical (sha256 of the whole working folder).

Each case runs a program's `main()` in-process on a folder that holds a real tiny run (trained by the fixture),
a real results store, config and experiment files and the other props the cases name; `{run}`, `{store}`, … in
the argv (and in the environment a case sets) are filled in per case. A case may set environment variables (None
unsets one). Folders that cannot be written are under /proc, where no folder can be made: a permission bit would
not stop root, who runs the tests in CI.
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

UNWRITABLE = "/proc/taco-dynamics-bad-input"  # no folder can be made under /proc, not even by root
CONFIG = "{c_%s}"
# (id, program, argv, a fragment of the one error line, environment): the third pass
CASES += [
    # every --config value typed as its flag types it, in every program that reads --config
    ("train-config-bool", "train", ["--config", CONFIG % "bool"], "bad value 'maybe' for 'resume'; expected true or false"),
    ("train-config-null", "train", ["--config", CONFIG % "null"], "bad value null for 'lr'; expected a finite number"),
    ("train-config-nan", "train", ["--config", CONFIG % "nan"], "bad value nan for 'lr'; expected a finite number"),
    ("train-config-list-for-text", "train", ["--config", CONFIG % "list"], "bad value ['a.txt', 'b.txt'] for 'corpus'"),
    ("train-config-map-for-int", "train", ["--config", CONFIG % "map"], "bad value {'a': 1} for 'max_steps'"),
    ("train-config-yes-for-int", "train", ["--config", CONFIG % "yes"], "bad value true for 'batch_size'"),
    ("train-config-fraction", "train", ["--config", CONFIG % "fraction"], "for 'max_steps'; expected a whole number"),
    ("train-config-choice", "train", ["--config", CONFIG % "choice"], "for 'objective'; expected one of mlm, taco"),
    ("train-config-negated", "train", ["--config", CONFIG % "negated"], "for 'no-progress'; expected true or false"),
    ("train-config-binary", "train", ["--config", CONFIG % "binary"], "cannot read it"),
    ("train-config-folder", "train", ["--config", "{empty}"], "cannot read it"),
    ("probe-config-bool", "probe", ["{run}", "--config", CONFIG % "probe_bool"], "bad value 'maybe' for 'force'"),
    ("probe-config-steps", "probe", ["{run}", "--config", CONFIG % "probe_steps"],
     "for 'steps'; expected a list of whole numbers"),
    ("probe-config-metrics-map", "probe", ["{run}", "--config", CONFIG % "probe_metrics"], "for 'metrics'"),
    ("probe-config-empty-list", "probe", ["{run}", "--config", CONFIG % "probe_empty"], "bad value [] for 'steps'"),
    ("evaluate-config-bool", "evaluate", ["{run}", "--config", CONFIG % "eval_bool"],
     "bad value 'maybe' for 'group_by_length'"),
    ("evaluate-config-seeds", "evaluate", ["{run}", "--config", CONFIG % "eval_seeds"], "bad value 'one' for 'seeds'"),
    ("run-config-bool", "run", ["{experiment}", "--config", CONFIG % "run_bool"], "bad value 'maybe' for 'progress'"),
    ("prepare-config-bool", "prepare", ["--config", CONFIG % "prepare_bool"], "bad value 'maybe' for 'force'"),
    # non-finite numbers and empty lists, as flags
    ("train-lr-nan", "train", [*TRAIN, "--lr", "nan"], "--lr"),
    ("train-temperature-inf", "train", [*TRAIN, "--tc-temperature", "inf"], "--tc-temperature"),
    ("probe-temperature-nan", "probe", ["{run}", "--tc-temperature", "nan"], "--tc-temperature"),
    ("probe-follow-timeout-inf", "probe", ["{run}", "--follow", "--follow-timeout", "inf"], "--follow-timeout"),
    ("evaluate-lr-nan", "evaluate", ["{run}", "--lr", "nan"], "--lr"),
    ("probe-steps-empty", "probe", ["{run}", "--steps", ","], "--steps"),
    ("probe-metrics-empty", "probe", ["{run}", "--metrics", ""], "--metrics"),
    ("evaluate-tasks-empty", "evaluate", ["{run}", "--tasks", ","], "--tasks"),
    ("evaluate-steps-empty", "evaluate", ["{run}", "--steps", ""], "--steps"),
    ("evaluate-steps-one-missing", "evaluate", ["{run}", "--steps", "0,99", "--tasks", "rotten_tomatoes",
                                                "--max-length", "64"], "no snapshot at step 99"),
    ("run-runs-empty", "run", ["{experiment}", "--runs", ""], "--runs"),
    # experiment files: every option typed and checked before anything runs
    ("run-spec-type", "run", ["{e_type}"], "train (run a): bad value 'lots' for 'max_steps'; expected a whole number"),
    ("run-spec-bool", "run", ["{e_bool}"], "bad value 'maybe' for 'freeze_embeddings'"),
    ("run-spec-grid-type", "run", ["{e_grid}"], "train (run s-two): bad value 'two' for 'seed'"),
    ("run-spec-probe-type", "run", ["{e_probe_type}"], "probe: bad value 'many' for 'probe_blocks'"),
    ("run-spec-linear-type", "run", ["{e_linear_type}"], "linear: bad value 'soon' for 'every'"),
    ("run-spec-finetune-steps", "run", ["{e_steps}"], "finetune option steps [500, 'last']: expected"),
    ("run-spec-null", "run", ["{e_null}"], "bad value null for 'seed'"),
    ("run-spec-range", "run", ["{e_range}"], "train (run a): --max-steps must be >= 1 (got 0)"),
    ("run-spec-probe-range", "run", ["{e_probe_range}"], "probe: --window 4: must be an odd number"),
    ("run-spec-task", "run", ["{e_task}"], "linear: --tasks squad: unknown task"),
    ("run-spec-overrides", "run", ["{e_overrides}"], "not a BertConfig field"),
    ("run-spec-train-device", "run", ["{e_device}"], "train (run a) option device is set by experiments.run"),
    ("run-spec-probe-out", "run", ["{e_probe_out}"], "probe option out is set by experiments.run"),
    ("run-spec-linear-mode", "run", ["{e_mode}"], "linear option mode is set by experiments.run"),
    ("run-spec-runs-not-a-list", "run", ["{e_runs}"], "runs must be a list of mappings"),
    ("run-spec-name-format", "run", ["{e_format}"], "name_format '{seed' is not a valid format"),
    ("run-spec-runs-dir-list", "run", ["{e_runs_dir}"], "runs_dir must be text"),
    ("run-spec-run-name-bool", "run", ["{e_name}"], "each runs entry's name must be text"),
    ("run-stages-linear-no-section", "run", ["{experiment}", "--stages", "linear"], "has no linear: section"),
    ("run-stages-finetune-no-section", "run", ["{experiment}", "--stages", "train,finetune"],
     "has no finetune: section"),
    ("run-file-is-a-folder", "run", ["{empty}"], "is a folder, not a file"),
    # the cache root: one check, naming the setting that chose it
    ("train-cache-env-file", "train", TRAIN, "the cache root", {"TACO_DYNAMICS_CACHE": "{file}"}),
    ("train-cache-env-under-file", "train", TRAIN, "($TACO_DYNAMICS_CACHE) is not a directory (",
     {"TACO_DYNAMICS_CACHE": "{file}/cache"}),
    ("train-cache-env-unwritable", "train", TRAIN, "($TACO_DYNAMICS_CACHE): cannot write there",
     {"TACO_DYNAMICS_CACHE": UNWRITABLE}),
    ("train-cache-xdg-unwritable", "train", TRAIN, f"($XDG_CACHE_HOME={UNWRITABLE}): cannot write there",
     {"TACO_DYNAMICS_CACHE": None, "XDG_CACHE_HOME": UNWRITABLE}),
    ("train-data-cache-unwritable", "train", [*TRAIN, "--data-cache", UNWRITABLE],
     f"--data-cache {UNWRITABLE}: cannot write there"),
    ("prepare-cache-env-file", "prepare", ["--quiet"], "($TACO_DYNAMICS_CACHE) is not a directory",
     {"TACO_DYNAMICS_CACHE": "{file}"}),
    ("prepare-cache-env-unwritable", "prepare", ["--quiet"], "($TACO_DYNAMICS_CACHE): cannot write there",
     {"TACO_DYNAMICS_CACHE": UNWRITABLE}),
    ("prepare-cache-xdg-unwritable", "prepare", ["--quiet"], f"($XDG_CACHE_HOME={UNWRITABLE})",
     {"TACO_DYNAMICS_CACHE": None, "XDG_CACHE_HOME": UNWRITABLE}),
    ("prepare-cache-home-unwritable", "prepare", ["--quiet"], "(the default): cannot write there",
     {"TACO_DYNAMICS_CACHE": None, "XDG_CACHE_HOME": None, "HOME": UNWRITABLE}),
    ("prepare-cache-dir-unwritable", "prepare", ["--quiet", "--cache-dir", UNWRITABLE],
     f"--cache-dir {UNWRITABLE}: cannot write there"),
    # output folders that cannot be written: one line before any data preparation
    ("train-output-unwritable", "train", [*TRAIN, "--output-dir", f"{UNWRITABLE}/run"], "cannot write there"),
    ("train-output-under-file", "train", [*TRAIN, "--output-dir", "{file}/run"], "file.txt is a file"),
    ("run-runs-dir-unwritable", "run", ["{experiment}", "--stages", "train", "--runs-dir", UNWRITABLE,
                                        "--no-progress"], "cannot write there"),
    ("run-runs-dir-unwritable-jobs", "run", ["{experiment}", "--stages", "train", "--runs-dir", UNWRITABLE,
                                             "--no-progress", "--jobs", "2"], f"--runs-dir {UNWRITABLE}: cannot write"),
    ("probe-out-unwritable", "probe", ["{run}", "--out", f"{UNWRITABLE}/out"], "pass another --out"),
    ("evaluate-out-unwritable", "evaluate", ["{run}", "--tasks", "rotten_tomatoes", "--max-length", "64", "--out",
                                             f"{UNWRITABLE}/out"], "pass another --out"),
    # a folder that records another step is named as such
    ("probe-steps-misnamed", "probe", ["{misnamed}", "--steps", "2"],
     "named for step 2 but its snapshot.json records step 5"),
    ("probe-steps-misnamed-among-others", "probe", ["{misnamed}", "--steps", "0,1,2"], "pass --steps 5"),
]

CONFIG_FILES = {  # c_NAME.yaml: a --config file with one bad value
    "bool": "resume: maybe\n", "null": "lr: null\n", "nan": "lr: .nan\n", "list": "corpus: [a.txt, b.txt]\n",
    "map": "max_steps: {a: 1}\n", "yes": "batch_size: yes\n", "fraction": "max_steps: 2.5\n",
    "choice": "objective: gpt\n", "negated": "no-progress: perhaps\n", "probe_bool": "force: maybe\n",
    "probe_steps": "steps: [0, x]\n", "probe_metrics": "metrics: {anchors: 1}\n", "probe_empty": "steps: []\n",
    "eval_bool": "group_by_length: maybe\n", "eval_seeds": "seeds: one\n", "run_bool": "progress: maybe\n",
    "prepare_bool": "force: maybe\n",
}
EXPERIMENTS = {  # e_NAME.yaml: an experiment file with one bad piece (otherwise a one-run tiny experiment)
    "type": "runs: [{name: a}]\ntrain: {preset: tiny, max_steps: lots}\n",
    "bool": "runs: [{name: a, freeze_embeddings: maybe}]\n",
    "grid": "grid: {seed: [1, two]}\nname_format: s-{seed}\n",
    "probe_type": "runs: [{name: a}]\nprobe: {probe_blocks: many}\n",
    "linear_type": "runs: [{name: a}]\nlinear: {every: soon}\n",
    "steps": "runs: [{name: a}]\nfinetune: {steps: [500, last]}\n",
    "null": "runs: [{name: a, seed: null}]\n",
    "range": "runs: [{name: a, max_steps: 0}]\n",
    "probe_range": "runs: [{name: a}]\nprobe: {window: 4}\n",
    "task": "runs: [{name: a}]\nlinear: {tasks: [squad]}\n",
    "overrides": "runs: [{name: a, model_overrides: {wings: 2}}]\n",
    "device": "runs: [{name: a, device: cpu}]\n",
    "probe_out": "runs: [{name: a}]\nprobe: {out: elsewhere}\n",
    "mode": "runs: [{name: a}]\nlinear: {mode: finetune}\n",
    "runs": "runs: 5\n",
    "format": "grid: {seed: [1]}\nname_format: '{seed'\n",
    "runs_dir": "runs: [{name: a}]\nruns_dir: [x]\n",
    "name": "runs: [{name: true}]\n",
}


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
    for name, text in CONFIG_FILES.items():
        (root / f"c_{name}.yaml").write_text(text)
    (root / "c_binary.yaml").write_bytes(bytes(range(128, 256)))
    for name, text in EXPERIMENTS.items():
        (root / f"e_{name}.yaml").write_text(f"name: {name}\n{text}")
    misnamed = shutil.copytree(run, root / "misnamed", ignore=shutil.ignore_patterns("dynamics"))
    info = misnamed / "snapshots" / "step-0000002" / "snapshot.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "step": 5}))
    return root


def test_the_table_has_unique_ids() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: tuple, props: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, program, argv, fragment, *rest = case
    env: dict[str, str | None] = rest[0] if rest else {}
    names = {"run": "run", "file": "file.txt", "empty": "empty", "foreign": "foreign", "badjson": "badjson",
             "notdb": "notdb", "otherdb": "otherdb", "truncated": "truncated", "missing": "no-such-thing",
             "config_unknown": "config_unknown.yaml", "config_bad_value": "config_bad_value.yaml",
             "config_broken": "config_broken.yaml", "config_list": "config_list.yaml",
             "experiment": "experiment.yaml", "store": "run/dynamics", "misnamed": "misnamed",
             **{f"c_{n}": f"c_{n}.yaml" for n in [*CONFIG_FILES, "binary"]},
             **{f"e_{n}": f"e_{n}.yaml" for n in EXPERIMENTS}}

    def fill(a: str) -> str:
        for key, name in names.items():
            a = a.replace("{" + key + "}", str(props / name))
        return a

    args = [fill(a) for a in argv]
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(props / "hub"))
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, fill(value))
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
