"""The probe's configuration: flags from the dataclass (common.cli.Parser), config files, precedence, validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dynamics import config as cfgmod
from dynamics.errors import ProbeError
from dynamics.probe import build_parser, parse_args


def _cfg(argv: list[str]) -> cfgmod.ProbeConfig:
    dirs, cfg = parse_args(["run", *argv])
    assert dirs == ["run"]
    return cfg


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        parse_args(["run", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_every_field_has_a_flag_with_help_and_both_spellings() -> None:
    help_text = build_parser().format_help()
    for f in dataclasses.fields(cfgmod.ProbeConfig):
        assert cfgmod.flag(f.name) in help_text and f.metadata["help"]
    assert "dynamics-results" in help_text
    assert "--no-figures" in help_text and "turn off --figures" in help_text
    body = help_text.split("options:")[1]
    assert body.index("write figures/*.png") < body.index("turn off --figures")  # each flag its own help
    assert _cfg(["--max_tokens", "64"]).max_tokens == _cfg(["--max-tokens", "64"]).max_tokens == 64


def test_defaults_and_flags() -> None:
    cfg = _cfg([])
    assert cfg == cfgmod.ProbeConfig()
    cfg = _cfg(["--steps", "0,100,1000", "--metrics", "anchors,geometry", "--no-figures", "--force",
                "--max-tokens", "4096", "--device", "auto"])
    assert cfg.steps == [0, 100, 1000] and cfg.metrics == ["anchors", "geometry"]
    assert cfg.figures is False and cfg.force is True and cfg.max_tokens == 4096 and cfg.device == "auto"


def test_config_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("batch-size: 4\nsteps: [0, 2]\nno-figures: true\nseed: 3\n")
    cfg = _cfg(["--config", str(f), "--seed", "5"])
    assert cfg.batch_size == 4 and cfg.steps == [0, 2] and cfg.figures is False and cfg.seed == 5
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"metrics": "context", "window": 7}))
    assert _cfg(["--config", str(j)]).metrics == ["context"]
    assert _cfg(["--config", str(j), "--metrics", "geometry"]).metrics == ["geometry"]


@pytest.mark.parametrize("argv, needle", [
    (["--metrics", "anchors,nope"], "--metrics"),
    (["--window", "4"], "--window"),
    (["--batch-size", "0"], "--batch-size"),
    (["--every", "0"], "--every"),
    (["--device", "gpu"], "--device gpu: unknown device"),
])
def test_bad_values(argv: list[str], needle: str) -> None:
    with pytest.raises(ProbeError, match=needle):
        _cfg(argv)


def test_an_unavailable_device_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ProbeError, match="no CUDA device"):
            _cfg(["--device", device])


def test_bad_config_files_and_flags_are_one_line_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"bogus": 1}))
    assert "unknown setting 'bogus'" in _usage_error(["--config", str(f)], capsys)
    f.write_text(json.dumps({"batch_size": "many"}))
    assert "bad value 'many'" in _usage_error(["--config", str(f)], capsys)
    f.write_text("{not json")
    assert "not valid JSON" in _usage_error(["--config", str(f)], capsys)
    assert "cannot read" in _usage_error(["--config", str(tmp_path / "missing.json")], capsys)
    assert "--batch-size" in _usage_error(["--batch-size", "x"], capsys)
    assert "unrecognized arguments: --bogus" in _usage_error(["--bogus"], capsys)
