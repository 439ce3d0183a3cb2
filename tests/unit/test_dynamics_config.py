"""The probe's configuration: flags generated from the dataclass, config files, precedence, validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dynamics import config as cfgmod
from dynamics.errors import ProbeError
from dynamics.probe import build_parser


def _cfg(argv: list[str]) -> cfgmod.ProbeConfig:
    return cfgmod.from_args(build_parser().parse_args(["run", *argv]))


def test_every_field_has_a_flag_with_help() -> None:
    help_text = build_parser().format_help()
    for f in dataclasses.fields(cfgmod.ProbeConfig):
        flag = f.metadata.get("flag", cfgmod.flag(f.name))
        assert flag in help_text and f.metadata["help"]
    assert "dynamics-results" in help_text


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


@pytest.mark.parametrize("argv, needle", [
    (["--metrics", "anchors,nope"], "--metrics"),
    (["--window", "4"], "--window"),
    (["--batch-size", "0"], "--batch-size"),
    (["--every", "0"], "--every"),
])
def test_bad_values(argv: list[str], needle: str) -> None:
    with pytest.raises(ProbeError, match=needle):
        _cfg(argv)


def test_bad_config_files(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"bogus": 1}))
    with pytest.raises(ProbeError, match="unknown setting"):
        _cfg(["--config", str(f)])
    f.write_text("{not json")
    with pytest.raises(ProbeError, match="not valid JSON"):
        _cfg(["--config", str(f)])
    with pytest.raises(ProbeError, match="cannot read"):
        _cfg(["--config", str(tmp_path / "missing.json")])
