"""An experiment's configuration file: the runs it trains and how each is probed, evaluated and reported.

A YAML (or JSON) mapping::

    name: mlm_vs_taco                 # results go to experiments/results/<name>/
    description: one paragraph for the report
    report: mlm_vs_taco               # which report to write (experiments.report.REPORTS)
    runs_dir: runs/experiments/mlm_vs_taco   # default runs/experiments/<name>
    train: {preset: mini, max_steps: 2000}   # taco.train options shared by every run
    grid:                             # runs = the product of these values ...
      objective: [mlm, taco]
      seed: [1, 2, 3]
    name_format: "{objective}-s{seed}"
    runs:                             # ... and/or named runs with their own options
      - {name: taco-w3, tc_window: 3}
    probe: {max_tokens: 16384}        # dynamics.probe options (ProbeConfig fields)
    linear: {tasks: [...], max_train_examples: 2000}   # experiments.evaluate --mode linear at every snapshot
    finetune: {steps: [500, final], seeds: [1]}        # --mode finetune at these snapshots ("final" = last)
    options: {...}                    # free-form settings read by the report

Option values may name another run's directory as `{run:NAME}` (e.g. `init_embeddings: "{run:mlm}"`); such a
run is trained after the run it names. Every option is read as its program's flag reads it (`common.cli.Parser.typed`:
`max_steps: lots` or `resume: maybe` is refused, not passed on) and each section's values are checked by its
program's own `validate`, all before anything runs; options `experiments.run` sets itself (the device, the output
folders) are refused. Unknown keys and options, wrong types and values out of range fail with an `EvalError` naming
the file, the section and the option.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.errors import EvalError

KEYS = {"name", "description", "report", "runs_dir", "train", "grid", "name_format", "runs", "probe", "linear",
        "finetune", "options"}
# Options of each section that `experiments.run` passes itself (a second value would be a TypeError there, or be
# silently replaced): option → where it comes from instead.
RUNNER_SET = {
    "train": {"output_dir": "from runs_dir and the run's name", "device": "from its --device",
              "progress": "from its --no-progress", "resume": "a run cut off resumes by itself",
              "overwrite": "a run killed before its first save starts again by itself"},
    "probe": {"out": "each run's RUN/dynamics", "device": "from its --device", "progress": "from its --no-progress"},
    "eval": {"mode": "the section's name, linear or finetune", "out": "each run's RUN/dynamics",
             "device": "from its --device", "progress": "from its --no-progress"},
}
SECTION_STAGES = ("linear", "finetune")  # stages that run only when the file has their section
RUN_REF = re.compile(r"\{run:([A-Za-z0-9_.-]+)\}")
NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class RunSpec:
    """One training run of an experiment: its name and its full taco.train options (shared ones merged in)."""

    name: str
    options: dict[str, Any]

    def depends_on(self) -> set[str]:
        return {m for v in self.options.values() if isinstance(v, str) for m in RUN_REF.findall(v)}


@dataclass
class Experiment:
    name: str
    description: str
    report: str
    runs_dir: Path
    runs: list[RunSpec]
    probe: dict[str, Any] = field(default_factory=dict)
    linear: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def run(self, name: str) -> RunSpec:
        for spec in self.runs:
            if spec.name == name:
                return spec
        raise EvalError(f"experiment {self.name} has no run {name!r}; its runs: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def run_dir(self, name: str) -> Path:
        return self.runs_dir / name

    def waves(self) -> list[list[RunSpec]]:
        """Runs grouped so that every run comes after the runs it refers to (`{run:NAME}`)."""
        done: set[str] = set()
        left = list(self.runs)
        waves = []
        while left:
            ready = [r for r in left if r.depends_on() <= done]
            if not ready:
                raise EvalError(f"experiment {self.name}: runs {', '.join(r.name for r in left)} refer to each "
                                "other in a cycle; fix their {run:NAME} references")
            waves.append(ready)
            done |= {r.name for r in ready}
            left = [r for r in left if r.name not in done]
        return waves

    def check_stages(self, stages: Sequence[str]) -> None:
        """`EvalError` when `stages` names linear or finetune and the file has no such section (it would be skipped,
        silently). Asking for every per-run stage (the default, and what `--jobs` hands its child processes) means
        "whatever this experiment has", so sections may be missing then."""
        if {"train", "probe", *SECTION_STAGES} <= set(stages):
            return
        for stage in SECTION_STAGES:
            if stage in stages and getattr(self, stage) is None:
                where = self.source or self.name
                raise EvalError(f"--stages {','.join(stages)}: {where} has no {stage}: section, so the {stage} stage "
                                f"has nothing to do; add one (e.g. {stage}: {{tasks: [rotten_tomatoes]}}) or leave "
                                f"{stage} out of --stages")

    def train_options(self, name: str) -> dict[str, Any]:
        """The run's taco.train options with `{run:NAME}` resolved and its output_dir set."""
        out = {}
        for key, value in self.run(name).options.items():
            if isinstance(value, str):
                value = RUN_REF.sub(lambda m: str(self.run_dir(m.group(1))), value)
            out[key] = value
        out["output_dir"] = str(self.run_dir(name))
        return out


def _mapping(value: Any, what: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EvalError(f"{path}: {what} must be a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _text(data: dict[str, Any], key: str, path: Path, what: str | None = None) -> str | None:
    """`data[key]` as text (None when absent or null): a name, a path or a description is written as text (a
    number reads as its digits), never as a list, a mapping or true/false."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise EvalError(f"{path}: {what or key} must be text, not {value!r}")
    return str(value)


def _check_fields(options: dict[str, Any], cls: type, what: str, path: Path, extra: tuple[str, ...] = ()) -> None:
    names = {f.name for f in dataclasses.fields(cls)} | set(extra)
    unknown = sorted(set(options) - names)
    if unknown:
        raise EvalError(f"{path}: unknown {what} option(s) {', '.join(unknown)}; see its --help")


def _typed(options: dict[str, Any], parser: Any, what: str, path: Path, runner_set: dict[str, str]
           ) -> dict[str, Any]:
    """The section's options read as its program's flags read them (`common.cli.Parser.typed`); `EvalError` for an
    option the runner sets itself, a wrongly typed value or one its flag refuses."""
    from common.errors import UsageError

    for key in options:
        if key in runner_set:
            raise EvalError(f"{path}: {what} option {key} is set by experiments.run ({runner_set[key]}); "
                            "remove it from the file")
    try:
        return parser.typed(options, f"{path}: {what}")
    except UsageError as exc:
        raise EvalError(str(exc).replace("; the settings are the flags of --help", "; see its --help")) from None


def _checked(make: Callable[[], Any], what: str, path: Path) -> None:
    """Run a section's own `validate` (ranges, choices, task names) now, before anything is trained."""
    from common.errors import UsageError

    try:
        make()
    except UsageError as exc:
        raise EvalError(f"{path}: {what}: {exc}") from None


def _eval_steps(options: dict[str, Any], what: str, path: Path) -> None:
    """`steps` of a linear/finetune section: snapshot steps (whole numbers ≥ 0) or "final" (the last one)."""
    steps = options.get("steps")
    if steps is None:
        return
    items = steps if isinstance(steps, list) else [steps]
    ok = all(s == "final" or (isinstance(s, int) and not isinstance(s, bool) and s >= 0) for s in items)
    if not ok or not items:
        raise EvalError(f"{path}: {what} option steps {steps!r}: expected a list of snapshot steps (whole numbers "
                        "≥ 0) or final, e.g. [500, final]")
    options["steps"] = list(items)


def _parsers() -> dict[str, Any]:
    """One `common.cli.Parser` per program whose options an experiment file holds (train, probe, evaluate)."""
    from common.cli import Parser
    from dynamics.config import ProbeConfig
    from experiments.evaluate import EvalConfig
    from taco.config import TrainConfig

    return {"train": Parser(TrainConfig, prog="python -m taco.train", description="", config_file=False),
            "probe": Parser(ProbeConfig, prog="python -m dynamics.probe", description="", config_file=False),
            "eval": Parser(EvalConfig, prog="python -m experiments.evaluate", description="", config_file=False)}


def load(path: str | Path, runs_dir: str | Path | None = None) -> Experiment:
    """Read and check an experiment file (see the module docstring)."""
    from common.cli import read_mapping
    from common.errors import UsageError
    from dynamics.config import ProbeConfig
    from experiments.evaluate import EvalConfig
    from taco.config import TrainConfig

    p = Path(path)
    if p.exists() and not p.is_file():  # a folder exists: saying it does not would send the user looking
        raise EvalError(f"experiment file {p} is a folder, not a file; pass one of experiments/configs/*.yaml")
    if not p.is_file():
        raise EvalError(f"experiment file {p} does not exist; pass one of experiments/configs/*.yaml")
    try:
        data = read_mapping(p, "experiment file")
    except UsageError as exc:
        raise EvalError(str(exc)) from None
    parsers = _parsers()
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise EvalError(f"{p}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(KEYS))}")
    name = _text(data, "name", p) or p.stem
    if not NAME_OK.match(name):
        raise EvalError(f"{p}: name {name!r} may hold only letters, digits, '.', '_' and '-'")

    shared = _mapping(data.get("train"), "train", p)
    runs: list[RunSpec] = []
    grid = _mapping(data.get("grid"), "grid", p)
    if grid:
        fmt = _text(data, "name_format", p) or "-".join(f"{{{k}}}" for k in grid)
        values = [v if isinstance(v, list) else [v] for v in grid.values()]
        for combo in itertools.product(*values):
            opts = dict(zip(grid, combo, strict=True))
            try:
                run_name = fmt.format(**opts)
            except KeyError as exc:
                raise EvalError(f"{p}: name_format names {exc} which is not a grid key") from None
            except (ValueError, IndexError) as exc:  # an unbalanced brace, a positional {}
                raise EvalError(f"{p}: name_format {fmt!r} is not a valid format ({exc}); write e.g. "
                                "'{objective}-s{seed}'") from None
            runs.append(RunSpec(run_name, {**shared, **opts}))
    entries = data.get("runs") or []
    if not isinstance(entries, list):
        raise EvalError(f"{p}: runs must be a list of mappings, e.g. runs: [{{name: a, objective: taco}}]")
    for entry in entries:
        entry = _mapping(entry, "each runs entry", p)
        run_name = _text(entry, "name", p, "each runs entry's name")
        entry.pop("name", None)
        if not run_name:
            raise EvalError(f"{p}: every entry of runs needs a name")
        runs.append(RunSpec(str(run_name), {**shared, **entry}))
    if not runs:
        raise EvalError(f"{p}: no runs; give a grid or a runs list")
    seen: set[str] = set()
    for r in runs:
        if not NAME_OK.match(r.name):
            raise EvalError(f"{p}: run name {r.name!r} may hold only letters, digits, '.', '_' and '-'")
        if r.name in seen:
            raise EvalError(f"{p}: run name {r.name!r} appears twice")
        seen.add(r.name)
        what = f"train (run {r.name})"
        _check_fields(r.options, TrainConfig, what, p)
        r.options = _typed(r.options, parsers["train"], what, p, RUNNER_SET["train"])  # a mapping → JSON, too
        missing = r.depends_on() - {x.name for x in runs}
        if missing:
            raise EvalError(f"{p}: run {r.name} refers to unknown run(s) {', '.join(sorted(missing))}")
        _checked(lambda o=r.options: TrainConfig(**o).resolved().validate(), what, p)

    probe = _mapping(data.get("probe"), "probe", p)
    _check_fields(probe, ProbeConfig, "probe", p)
    probe = _typed(probe, parsers["probe"], "probe", p, RUNNER_SET["probe"])
    _checked(lambda: ProbeConfig(**probe).validate(), "probe", p)
    linear = None if data.get("linear") is None else _mapping(data["linear"], "linear", p)
    finetune = None if data.get("finetune") is None else _mapping(data["finetune"], "finetune", p)
    sections = {"linear": linear, "finetune": finetune}
    for what, opts in sections.items():
        if opts is not None:
            _check_fields(opts, EvalConfig, what, p)
            _eval_steps(opts, what, p)
            steps = opts.pop("steps", None)  # "final" is the runner's word; the rest are EvalConfig's flags
            opts = _typed(opts, parsers["eval"], what, p, RUNNER_SET["eval"])
            _checked(lambda o=opts, m=what: EvalConfig(**o, mode=m).validate(), what, p)
            sections[what] = opts if steps is None else {**opts, "steps": steps}
    linear, finetune = sections["linear"], sections["finetune"]
    exp = Experiment(name=name, description=(_text(data, "description", p) or "").strip(),
                     report=_text(data, "report", p) or name,
                     runs_dir=Path(runs_dir or _text(data, "runs_dir", p) or f"runs/experiments/{name}"),
                     runs=runs, probe=probe, linear=linear, finetune=finetune,
                     options=_mapping(data.get("options"), "options", p), source=p)
    exp.waves()  # fails early on cycles
    return exp
