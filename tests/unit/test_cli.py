"""The one command-line layer (`common.cli.Parser` on HfArgumentParser) and the one device rule."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from common import cli
from common.errors import UsageError


@dataclass
class Toy:
    output_dir: str = field(default="out", metadata={"help": "where results go"})
    steps: list[int] | None = field(default=None, metadata={"help": "steps to keep"})
    names: list[str] = field(default_factory=lambda: ["a", "b"], metadata={"help": "names"})
    rate: float = field(default=0.5, metadata={"help": "a rate"})
    kind: str = field(default="x", metadata={"help": "a kind", "choices": ["x", "y"]})
    overrides: str = field(default="", metadata={"help": "a JSON object"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    force: bool = field(default=False, metadata={"help": "redo everything"})


def _parser() -> cli.Parser:
    return cli.Parser(Toy, prog="toy", description="A toy program.")


def _parse(argv: list[str]) -> Toy:
    (toy,) = _parser().parse(argv)
    return toy


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        _parse(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "toy --help" in err, err
    return err


def test_flags_in_both_spellings_lists_and_booleans() -> None:
    assert _parse([]) == Toy()
    toy = _parse(["--output_dir", "a", "--steps", "0,10,100", "--names", "c", "--no-progress", "--force"])
    assert (toy.output_dir, toy.steps, toy.names, toy.progress, toy.force) == ("a", [0, 10, 100], ["c"], False, True)
    assert _parse(["--output-dir", "b", "--no_progress"]).output_dir == "b"
    assert _parse(["--force", "false"]).force is False


def test_help_explains_every_flag_and_the_negative_flag_correctly() -> None:
    text = _parser().format_help()
    for needle in ("--output-dir", "where results go", "--steps", "comma-separated", "(default: a,b)",
                   "--no-progress", "turn off --progress", "--config FILE"):
        assert needle in text, needle
    body = text.split("options:")[1]
    assert body.index("show a progress bar") < body.index("turn off --progress")


def test_config_file_gives_defaults_that_flags_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("output-dir: from-file\nsteps: [1, 2]\nrate: 2\nno-progress: true\noverrides: {a: 1}\n")
    toy = _parse(["--config", str(path), "--rate", "0.25"])
    assert (toy.output_dir, toy.steps, toy.rate, toy.progress) == ("from-file", [1, 2], 0.25, False)
    assert json.loads(toy.overrides) == {"a": 1}
    path.write_text(json.dumps({"steps": "3,4", "kind": "y"}))
    assert _parse(["--config", str(path)]).steps == [3, 4] and _parse(["--config", str(path)]).kind == "y"


@pytest.mark.parametrize("argv, needle", [
    (["--rate", "fast"], "--rate"),
    (["--kind", "z"], "invalid choice"),
    (["--steps", "1,x"], "--steps"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_are_one_line_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert needle in _error(argv, capsys)


@pytest.mark.parametrize("text, needle", [
    ("{oops", "not valid JSON"),
    ("[1, 2]", "expected a mapping"),
    ('{"bogus": 1}', "unknown setting 'bogus'"),
    ('{"rate": "fast"}', "bad value 'fast' for 'rate'"),
    ('{"kind": "z"}', "bad value 'z' for 'kind'; expected one of x, y"),
    # every value typed as its flag types it (a converter's own error type included)
    ('{"force": "maybe"}', "bad value 'maybe' for 'force'; expected true or false"),
    ('{"no-progress": "perhaps"}', "bad value 'perhaps' for 'no-progress'; expected true or false"),
    ('{"force": [true]}', "bad value [True] for 'force'; expected true or false"),
    ('{"force": 0.5}', "bad value 0.5 for 'force'"),
    ('{"rate": null}', "bad value null for 'rate'; expected a finite number"),
    ('{"rate": NaN}', "bad value nan for 'rate'; expected a finite number"),
    ('{"rate": Infinity}', "bad value inf for 'rate'"),
    ('{"rate": true}', "bad value true for 'rate'"),
    ('{"output_dir": ["a", "b"]}', "bad value ['a', 'b'] for 'output_dir'; expected text"),
    ('{"output_dir": false}', "bad value false for 'output_dir'"),
    ('{"steps": {"a": 1}}', "bad value {'a': 1} for 'steps'; expected a list of whole numbers"),
    ('{"steps": [[1, 2]]}', "bad value [[1, 2]] for 'steps'"),
    ('{"steps": [1, "x"]}', "bad value [1, 'x'] for 'steps'; expected a list of whole numbers (or "),
    ('{"names": null}', "bad value null for 'names'; expected a list of names"),
    ('{"steps": []}', "bad value [] for 'steps'"),  # an empty list selects nothing: refused, not a silent no-op
])
def test_bad_config_files_are_one_line_errors(text: str, needle: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    assert needle in _error(["--config", str(path)], capsys)


def test_config_values_of_the_right_kind_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rate: '0.75'\nsteps: 5\nforce: 'yes'\nprogress: off\noutput_dir: 12\n")
    toy = _parse(["--config", str(path)])
    assert (toy.rate, toy.steps, toy.force, toy.progress, toy.output_dir) == (0.75, [5], True, False, "12")
    path.write_text("steps: null\nrate: 2.0\n")  # null where the field may be None; a whole float for an int
    assert _parse(["--config", str(path)]).steps is None


@pytest.mark.parametrize("argv", [["--rate", "nan"], ["--rate", "inf"], ["--steps", ","], ["--steps", ""]])
def test_non_finite_numbers_and_empty_lists_are_refused_as_flags_too(argv: list[str],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert argv[0] in _error(argv, capsys)


def test_an_empty_list_is_a_value_only_where_none_cannot_stand_for_all() -> None:
    assert _parse(["--names", ""]).names == []  # the program checks this list itself
    assert _parse([]).steps is None  # None: every step; an empty --steps would silently select none (refused)


def test_a_missing_config_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read it" in _error(["--config", str(tmp_path / "none.yaml")], capsys)


def test_device_rule_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cli, "_mps_available", lambda: False)
    assert cli.resolve_device("cpu") == "cpu" and cli.resolve_device("auto") == "cpu"
    assert cli.resolve_device(" CPU ") == "cpu"
    for name, needle in (("cuda", "no CUDA device"), ("cuda:0", "no CUDA device"), ("gpu", "unknown device"),
                         ("cuda:x", "unknown device"), ("mps", "MPS backend is not available"), ("", "unknown")):
        with pytest.raises(UsageError, match=needle):
            cli.resolve_device(name)


def test_device_rule_with_one_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.resolve_device("auto") == "cuda" and cli.resolve_device("cuda") == "cuda"
    assert cli.resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(UsageError, match=r"only 1 CUDA device"):
        cli.resolve_device("cuda:1")


def test_mps_is_chosen_by_auto_where_there_is_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cli, "_mps_available", lambda: True)
    assert cli.resolve_device("auto") == "mps" and cli.resolve_device("mps") == "mps"


@pytest.mark.parametrize("module", ["taco.train", "dynamics.probe", "experiments.evaluate"])
def test_every_program_refuses_an_unavailable_device(module: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`--device cuda:0` on a machine without CUDA used to train on the CPU silently."""
    import importlib

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main = importlib.import_module(module).main
    argv = ["--device", "cuda:0"] if module == "taco.train" else [str(tmp_path), "--device", "cuda:0"]
    if module == "taco.train":
        argv += ["--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda:0: no CUDA device") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "dynamics").exists()


def _program_parsers() -> dict[str, tuple[cli.Parser, type]]:
    from dynamics.config import ProbeConfig
    from dynamics.probe import build_parser as probe
    from experiments.evaluate import EvalConfig
    from experiments.evaluate import build_parser as evaluate
    from experiments.run import RunnerArgs
    from experiments.run import build_parser as runner
    from taco.config import TrainConfig
    from taco.config import build_parser as train
    from taco.prepare import PrepareArgs
    from taco.prepare import build_parser as prepare

    return {"taco.train": (train(), TrainConfig), "taco.prepare": (prepare(), PrepareArgs),
            "dynamics.probe": (probe(), ProbeConfig), "experiments.evaluate": (evaluate(), EvalConfig),
            "experiments.run": (runner(), RunnerArgs)}


@pytest.mark.parametrize("program", ["taco.train", "taco.prepare", "dynamics.probe", "experiments.evaluate",
                                     "experiments.run"])
def test_every_programs_help_describes_each_flag_by_its_field(program: str) -> None:
    """Parse the --help text: every field's flag is listed with the field's own help (not a copy of another's),
    a `--no-x` flag says it turns x off, and defaults are shown."""
    import dataclasses
    import re

    parser, config = _program_parsers()[program]
    options = parser.format_help().split("\noptions:\n", 1)[1]
    entries = re.split(r"\n(?=  -)", options)  # an entry starts where a line starts with its flag
    by_flag = {e.split()[0].rstrip(","): " ".join(e.split()) for e in entries if e.strip()}
    for f in dataclasses.fields(config):
        flag = "--" + f.name.replace("_", "-")
        assert flag in by_flag, (program, flag)
        words = " ".join(f.metadata["help"].split())
        assert words[:40] in by_flag[flag], (program, flag, by_flag[flag][:200])
        if f.default is True:
            assert f"--no-{f.name.replace('_', '-')}" in by_flag and "turn off" in by_flag[f"--no-{f.name.replace('_', '-')}"]
        if f.default not in (None, "", dataclasses.MISSING) and not isinstance(f.default, bool):
            assert "default: " in by_flag[flag], (program, flag)
