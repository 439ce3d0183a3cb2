"""The probe's settings: one dataclass whose fields generate the CLI flags (help text from field metadata).

Precedence: dataclass defaults < `--config FILE` (JSON or YAML, keys spelled like the fields or the flags) <
flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamics.errors import ProbeError

FAMILIES = ("anchors", "context", "geometry")


def _opt(default: Any, help: str, **extra: Any) -> Any:  # noqa: A002
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ProbeConfig:
    """Everything `dynamics.probe.run` needs besides the directories."""

    out: str | None = _opt(None, "output folder for results.sqlite, arrays/, figures/ and report.md "
                                 "(default: DIR/dynamics for one directory; ./dynamics-results for several)")
    steps: list[int] | None = _opt(None, "measure only these steps, comma-separated, e.g. 0,100,1000")
    every: int | None = _opt(None, "measure only steps that are multiples of K (the final snapshot is always kept)")
    metrics: list[str] = _opt(list(FAMILIES), "metric families, comma-separated: anchors,context,geometry")
    device: str = _opt("cpu", "cpu, cuda, cuda:N or auto (cuda when available)")
    batch_size: int = _opt(16, "probe blocks per forward pass")
    max_tokens: int | None = _opt(None, "cap on the probe set's size in tokens (whole blocks are kept)")
    probe_text: str | None = _opt(None, "measure on this UTF-8 text file (documents split at blank lines) instead "
                                        "of the run's validation blocks; required when run.json names none")
    probe_blocks: int = _opt(64, "number of probe blocks drawn (seeded) from the validation split or the text")
    block_size: int | None = _opt(None, "block length for --probe-text (default: the run's block_size, else 128)")
    seed: int = _opt(0, "seed for the probe set (blocks, masked positions, token samples) and TC-loss draws")
    force: bool = _opt(False, "recompute results that are already stored")
    figures: bool = _opt(True, "write figures/*.png", flag="--no-figures")
    progress: bool = _opt(True, "show a progress bar", flag="--no-progress")
    window: int = _opt(5, "odd window W for within-window context alignment and the TC loss")
    tc_negatives: int = _opt(50, "negatives per anchor for the probe-set TC loss")
    tc_temperature: float = _opt(0.07, "temperature for the probe-set TC loss")
    max_distance: int = _opt(8, "largest distance for the context cosine-by-distance curve")
    cka_tokens: int = _opt(1024, "tokens kept per layer and snapshot for CKA across layers and snapshots")
    projection_tokens: int = _opt(2000, "tokens in the fixed sample projected to 2-D for the app")
    neighbour_tokens: int = _opt(2048, "seeded subsample for the neighbour- and pair-based estimators (TwoNN, "
                                       "uniformity)")

    def validate(self) -> ProbeConfig:
        """Raise `ProbeError` naming the flag for any value out of range; return self."""
        bad = [m for m in self.metrics if m not in FAMILIES]
        if bad or not self.metrics:
            raise ProbeError(f"--metrics {','.join(self.metrics)}: choose from {','.join(FAMILIES)}")
        positive = {"batch_size": self.batch_size, "probe_blocks": self.probe_blocks, "cka_tokens": self.cka_tokens,
                    "projection_tokens": self.projection_tokens, "tc_negatives": self.tc_negatives,
                    "max_distance": self.max_distance, "neighbour_tokens": self.neighbour_tokens}
        for name, value in positive.items():
            if value < 1:
                raise ProbeError(f"{flag(name)} {value}: must be at least 1")
        for name in ("every", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ProbeError(f"{flag(name)} {value}: must be at least 1")
        if self.block_size is not None and self.block_size < 3:
            raise ProbeError(f"--block-size {self.block_size}: must be at least 3 ([CLS] + text + [SEP])")
        if self.window < 3 or self.window % 2 == 0:
            raise ProbeError(f"--window {self.window}: must be an odd number ≥ 3")
        if self.tc_temperature <= 0:
            raise ProbeError(f"--tc-temperature {self.tc_temperature}: must be positive")
        if self.steps is not None and any(s < 0 for s in self.steps):
            raise ProbeError(f"--steps {','.join(map(str, self.steps))}: steps are non-negative")
        return self


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(ProbeConfig)


def field_parser(tp: Any) -> Any:
    """A str → value converter for a dataclass field type (Optional unwrapped; lists comma-separated or already
    lists, as a YAML config gives them; bools from yes/no words). Shared with `experiments.evaluate`."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        tp = args[0]
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)

        def parse_list(value: Any) -> list[Any]:
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return [inner(str(x).strip()) for x in items if str(x).strip()]

        return parse_list
    if tp is bool:
        return _parse_bool
    return tp


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `ProbeConfig` field; defaults are suppressed so only given flags appear in the namespace."""
    hints = _hints()
    for f in dataclasses.fields(ProbeConfig):
        help_text = f.metadata.get("help", "")
        tp = hints[f.name]
        if tp is bool:
            name = f.metadata.get("flag", flag(f.name))
            action = "store_false" if f.default is True else "store_true"
            parser.add_argument(name, dest=f.name, action=action, default=argparse.SUPPRESS, help=help_text)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        meta = f.name.upper().rsplit("_", 1)[-1] if f.name != "probe_text" else "FILE"
        parser.add_argument(flag(f.name), dest=f.name, type=field_parser(tp), default=argparse.SUPPRESS,
                            metavar=meta, help=f"{help_text} (default: {shown})")


def load_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file, keys normalised to field names; `ProbeError` for unknown keys."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError:
        raise ProbeError(f"{p}: cannot read the config file; pass an existing JSON or YAML file to --config") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the same user error
        raise ProbeError(f"{p}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                         f"({type(exc).__name__}); fix the file") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ProbeError(f"{p}: expected a mapping of settings at the top level")
    hints = _hints()
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        if name == "no_figures":
            name, value = "figures", not _parse_bool(value)
        if name not in hints:
            raise ProbeError(f"{p}: unknown setting {key!r}; known: {', '.join(sorted(hints))}")
        try:
            if value is not None:
                conv = field_parser(hints[name])
                value = conv(",".join(map(str, value))) if isinstance(value, list) else conv(value)
        except (TypeError, ValueError):
            raise ProbeError(f"{p}: bad value {value!r} for {key!r}") from None
        out[name] = value
    return out


def from_args(namespace: argparse.Namespace) -> ProbeConfig:
    """Merge defaults, `--config FILE` and the given flags into a validated `ProbeConfig`."""
    values: dict[str, Any] = {}
    config_file = getattr(namespace, "config", None)
    if config_file:
        values.update(load_file(config_file))
    names = {f.name for f in dataclasses.fields(ProbeConfig)}
    values.update({k: v for k, v in vars(namespace).items() if k in names})
    return ProbeConfig(**values).validate()
