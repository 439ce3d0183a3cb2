"""One command-line and configuration layer for every program, and one device rule.

Every program (`taco.train`, `taco.prepare`, `dynamics.probe`, `experiments.evaluate`, `experiments.run`) declares
its settings as dataclasses and parses them with `Parser`, a `transformers.HfArgumentParser` — the layer Hugging
Face users know from `run_mlm.py`: one flag per field with its help and default, `--output-dir` and `--output_dir`
both accepted, booleans as `--flag` / `--no-flag`. On top of it:
- lists are comma-separated (`--steps 0,100,1000`), as the README's commands write them;
- `--config FILE.yaml|json` supplies defaults (keys spelled like fields or flags); flags given override it;
- a usage error is one line, `error: …; see PROG --help`, with exit status 2 (argparse prints a usage block).

`resolve_device` is the device rule of every program: cpu, cuda, cuda:N, mps or auto; an unknown or unavailable
device is a `UsageError`. (`dynamics` may import this module, as it imports `taco.objectives`: it holds no
training code.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from common.errors import UsageError

DEVICES = "cpu, cuda, cuda:N, mps or auto"


def option(default: Any, help: str, **extra: Any) -> Any:  # noqa: A002 - argparse's name
    """A dataclass field with its `--help` text (and e.g. `choices`); list and dict defaults are copied per
    instance."""
    if isinstance(default, (list, tuple, dict)):
        value = default

        return dataclasses.field(default_factory=lambda: type(value)(value) if isinstance(value, dict)
                                 else list(value), metadata={"help": help, **extra})
    return dataclasses.field(default=default, metadata={"help": help, **extra})


def comma_list(inner: Callable[[str], Any], empty: bool = True) -> Callable[[Any], list[Any]]:
    """A converter of "a,b,c" (or an already split list, as YAML gives it) to a list of `inner` values; `empty`:
    whether an empty list is a value (ValueError if not)."""

    def parse(value: Any) -> list[Any]:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        if any(isinstance(x, (list, tuple, dict)) for x in items):
            raise ValueError(value)  # a nested list or mapping is no list of values
        out = [inner(str(x).strip()) for x in items if str(x).strip()]
        if not out and not empty:
            raise ValueError(value)
        return out

    parse.__name__ = "comma-separated list"
    parse.item = inner  # type: ignore[attr-defined]  # what `_expected` names
    return parse


def number(text: str) -> float:
    """A finite float: "nan" and "inf" parse as floats but no setting of these programs can use them (a NaN
    temperature passes every `<= 0` check and poisons the run instead)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _comma_help(text: str) -> str:
    return text if "comma" in text else f"{text} (comma-separated)"


def _list_item_type(tp: Any) -> Any | None:
    """The item type of `list[X]` or `list[X] | None`, else None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is not list and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0]
    return None


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown as they are typed: lists comma-separated."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action.default, (list, tuple)) and "%(default)" not in text:
            return f"{text} (default: {','.join(map(str, action.default))})"
        if action.default is None or action.default == "":  # "not set": the help says what happens then
            return text
        return super()._get_help_string(action) or ""


class Parser(HfArgumentParser):
    """`HfArgumentParser` with comma-separated lists, `--config FILE`, correct help for `--no-*` flags and
    one-line usage errors (see the module docstring)."""

    def __init__(self, dataclass_types: Any, *, prog: str, description: str, epilog: str | None = None,
                 config_file: bool = True) -> None:
        super().__init__(dataclass_types, prog=prog, description=description, epilog=epilog, allow_abbrev=False,
                         formatter_class=_Formatter)
        self.config_file = config_file
        if config_file:
            self.add_argument("--config", metavar="FILE", default=None,
                              help="JSON or YAML file of defaults (keys spelled like the fields or the flags); "
                                   "flags given on the command line override it")

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
        nullable = type(None) in typing.get_args(field.type)  # before HF narrows `X | None` to X in place
        item = _list_item_type(field.type)
        if item is not None:
            # the dashed spelling first, as for every other flag: it is the one usage lines and help show
            names = [f"--{field.name.replace('_', '-')}"] + ([f"--{field.name}"] if "_" in field.name else [])
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            # A list that may be None (`--steps`, `--runs`: None selects all) must not be empty: `--steps ,` would
            # select nothing, silently. Programs check their other lists (`--stages`, `--tasks`) themselves.
            convert = comma_list(number if item is float else item, empty=not nullable)
            action = parser.add_argument(*names, dest=field.name, type=convert, default=default,
                                         metavar=field.name.upper().rsplit("_", 1)[-1],
                                         help=_comma_help(field.metadata.get("help", "")))
            action.nullable = nullable  # type: ignore[attr-defined]
            return
        before = len(parser._actions)
        HfArgumentParser._parse_dataclass_field(parser, field)
        for action in parser._actions[before:]:  # the dashed spelling first: it is the one usage lines show
            action.option_strings.sort(key=lambda o: "_" in o)
            action.nullable = nullable  # type: ignore[attr-defined]  # whether a config file may say null
            if action.type is float:
                action.type = number
        if field.default is True and field.type is bool:  # HF copies the positive help onto the negative flag
            negative = parser._actions[-1]
            negative.help, negative.default = f"turn off --{field.name.replace('_', '-')}", argparse.SUPPRESS

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")

    def parse(self, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
        """The dataclass instances (and, when the parser has other arguments such as positionals, their
        namespace) from defaults < `--config FILE` < flags. Exits 2 with one line on a usage error."""
        argv = list(sys.argv[1:] if argv is None else argv)
        if self.config_file:
            pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
            pre.add_argument("--config", default=None)
            known, _ = pre.parse_known_args(argv)
            if known.config:
                try:
                    self.set_defaults(**self.file_defaults(known.config))
                except UsageError as exc:
                    self.error(str(exc))
        *outputs, remaining = self.parse_args_into_dataclasses(args=argv, return_remaining_strings=True,
                                                                look_for_args_file=False)
        if remaining:
            self.error(f"unrecognized arguments: {' '.join(remaining)}")
        if outputs and isinstance(outputs[-1], argparse.Namespace):
            extra = outputs.pop()
            vars(extra).pop("config", None)
            if vars(extra):
                outputs.append(extra)
        return tuple(outputs)

    def file_defaults(self, path: str | Path) -> dict[str, Any]:
        """Settings from a JSON or YAML file as parser defaults (`typed`). `UsageError` for an unreadable file,
        an unknown key or a bad value."""
        return self.typed(read_mapping(path, "--config"), str(path))

    def typed(self, data: Mapping[Any, Any], where: str) -> dict[str, Any]:
        """Settings given as a mapping (a `--config` file, a section of an experiment file) as parser defaults:
        keys normalised to field names (`no-x: true` is `x: false`), each value converted and checked by its
        flag's own converter and choices, so that every program reads every source of settings with the flags'
        types. `UsageError` naming `where`, the key and the type expected for an unknown key or a bad value."""
        actions: dict[str, argparse.Action] = {}
        for a in self._actions:  # the first action of a dest is the positive flag (`--no-x` comes after `--x`)
            if a.dest not in ("help", "config"):
                actions.setdefault(a.dest, a)
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = str(key).lstrip("-").replace("-", "_")
            negated = name.startswith("no_") and name[3:] in actions and actions[name[3:]].nargs == "?"
            if negated:
                name = name[3:]
            if name not in actions:
                raise UsageError(f"{where}: unknown setting {key!r}; the settings are the flags of --help")
            try:
                out[name] = _coerce(actions[name], value)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                shown = json.dumps(value) if value is None or isinstance(value, bool) else repr(value)
                raise UsageError(f"{where}: bad value {shown} for {key!r}; expected {_expected(actions[name])}"
                                 ) from None
            if negated:
                out[name] = not out[name]
        return out


def _coerce(action: argparse.Action, value: Any) -> Any:
    """A setting's value as the flag would parse it (argparse only converts string defaults itself): a YAML or
    JSON scalar of the right kind, or text the flag's converter accepts. ValueError (or the converter's own
    error) for anything else, e.g. a list where one value belongs or `true` for a number."""
    convert = action.type
    if value is None:
        if getattr(action, "nullable", False):
            return None
        raise ValueError(value)
    if convert is string_to_bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (list, tuple, dict, float)):
            raise ValueError(value)
        return string_to_bool(str(value))
    if isinstance(value, bool):  # YAML reads yes/no/on/off as booleans: never a number, a list or a name
        raise ValueError(value)
    if isinstance(value, dict) and convert is str:
        return json.dumps(value)  # e.g. a JSON-object flag written as a YAML mapping
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and not hasattr(convert, "item")):
        raise ValueError(value)
    if convert is None:
        return value
    if isinstance(value, float) and convert is int:
        if not value.is_integer():
            raise ValueError(value)
        value = int(value)
    out = convert(value if isinstance(value, (list, tuple)) else str(value))
    if action.choices is not None and out not in action.choices:
        raise ValueError(value)
    return out


def _expected(action: argparse.Action) -> str:
    """What a setting's value must be, in words, for the message about a bad one."""
    kinds = {int: "a whole number", float: "a number", number: "a finite number", str: "text",
             string_to_bool: "true or false"}
    if action.choices is not None:
        what = "one of " + ", ".join(map(str, action.choices))
    elif hasattr(action.type, "item"):
        item = kinds.get(action.type.item, "value")  # type: ignore[union-attr]
        what = f"a list of {item.removeprefix('a ').removeprefix('an ')}s (or one comma-separated string)"
        what = what.replace("texts", "names")
    else:
        what = kinds.get(action.type, "a value")  # type: ignore[arg-type]
    return what + (" (or null)" if getattr(action, "nullable", False) else "")


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON or YAML file holding a mapping (the one reader of every program's config and experiment files).

    `what` names the flag or argument that gave the path, for the error. `UsageError` for a missing or
    unreadable file, bad syntax or a top level that is not a mapping."""
    p = Path(path)
    yaml_file = p.suffix.lower() in (".yaml", ".yml")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise UsageError(f"{what} {p}: cannot read it; pass an existing JSON or YAML file") from None
    try:
        if yaml_file:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
        raise UsageError(f"{what} {p}: not valid {'YAML' if yaml_file else 'JSON'} ({type(exc).__name__}); "
                         "fix its syntax") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UsageError(f"{what} {p}: expected a mapping of settings at the top level")
    return data


def resolve_device(name: str, flag: str = "--device") -> str:
    """The device rule of every program: "cpu"; "cuda" or "cuda:N" (N below the number of visible devices);
    "mps"; "auto" → "cuda" when a CUDA device is visible, else "mps" when available, else "cpu".

    Returns the device string to use and to record (run.json, the results store). `UsageError` naming `flag`
    for an unknown spelling (e.g. "gpu") or a device this machine does not have."""
    import torch

    value = str(name).strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if value == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", value)
    if match:
        if not torch.cuda.is_available():
            raise UsageError(f"{flag} {name}: no CUDA device is visible on this machine; use {flag} cpu or auto")
        if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
            raise UsageError(f"{flag} {name}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1}); pick one of them")
        return value
    if value == "mps":
        if not _mps_available():
            raise UsageError(f"{flag} mps: Apple's MPS backend is not available here; use {flag} cpu or auto")
        return "mps"
    raise UsageError(f"{flag} {name}: unknown device; use {DEVICES}")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
