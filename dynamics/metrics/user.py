"""Your own metrics, without forking: `dynamics.probe --metrics-module FILE.py` (or `package.module`) imports a
module that registers metrics with the same decorator the built-ins use (`dynamics.metrics.register`), and the
probe measures, stores, reports and draws them like a built-in metric.

    from dynamics.metrics import register
    from dynamics.metrics.registry import ALL_LAYERS

    @register("mean_token_norm", family="geometry", page="geometry", layers=ALL_LAYERS, label="Mean token norm",
              unit="L2 norm", definition="Mean L2 norm of the layer's content-token hidden states.")
    def mean_token_norm(h): ...

A user metric joins one of the per-layer families (`USER_FAMILIES`), is computed with that family's inputs
(`FAMILY_INPUTS`, bound by parameter name as for every registered function) at the layers it names, and is shown on
the app page it names. What is checked before anything is written (each failure one `MetricsModuleError` line):
the module imports (else its name and the exception's first line), no name it registers is a built-in's or another
module's, and each function's parameters are inputs of its family (else the allowed ones are named).

The registrations last for one probe run (`registered`, a context manager the pipeline enters in the main thread
before any worker thread starts): afterwards they are removed again, so a later run in the same process measures
only what it is asked to. Each module's name and the sha256 of its source are recorded in the store
(`metric_modules`) and go into the settings string of the families they join, so a changed module re-measures.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from dynamics.errors import ProbeError
from dynamics.metrics import registry

# The per-layer families a user metric may join, and the inputs each builds (`dynamics.measure.families`: the
# common inputs of every layer plus the family's own); `masked` is the anchors family's, at the last layer only.
_COMMON = ("layer", "seq_ids", "positions", "word_type", "freq_bin", "bin_names", "layout", "seed", "window",
           "max_distance", "tc_draws", "tc_temperature")
FAMILY_INPUTS: dict[str, tuple[str, ...]] = {
    "anchors": (*_COMMON, "h", "e", "word_emb", "masked"),
    "context": (*_COMMON, "g"),
    "geometry": (*_COMMON, "h", "e", "g", "neighbours", "norm_weight"),
}
USER_FAMILIES = tuple(FAMILY_INPUTS)  # each is also the `--metrics` family that measures it


class MetricsModuleError(ProbeError):
    """A `--metrics-module` that cannot be used (one line naming the module and the fix)."""


@dataclass(frozen=True)
class UserModule:
    """One imported metrics module: the name it was given by, the file it came from, the sha256 of that file's
    bytes and its text, the metric names it registered (in registry order) and the families they join."""

    name: str
    source: str
    sha256: str
    text: str  # the source itself, as hashed (undecodable bytes replaced)
    metrics: tuple[str, ...]
    families: tuple[str, ...]


_LOADED: list[UserModule] = []


def loaded() -> list[UserModule]:
    """The user modules registered for the probe run in progress (empty outside `registered`)."""
    return list(_LOADED)


def params(family: str) -> str | None:
    """The part of `family`'s settings string that names the user modules measured with it (`name:sha256[:16]`,
    comma-separated); None when none joins it (built-in settings strings are unchanged)."""
    mods = [f"{m.name}:{m.sha256[:16]}" for m in _LOADED if family in m.families]
    return ",".join(mods) if mods else None


@contextlib.contextmanager
def registered(specs: Sequence[str] | None) -> Iterator[list[UserModule]]:
    """Import the metrics modules `specs` (file paths ending in `.py`, or dotted module names), check their
    registrations, and keep them registered for the block; removed again when it ends (also on error).
    `MetricsModuleError` for a module that does not import or registers something the probe cannot measure."""
    if not specs:
        yield []
        return
    if _LOADED:
        raise RuntimeError("metrics modules are already registered for a probe run in progress")
    added: list[str] = []
    imported: dict[str, ModuleType | None] = {}  # name → the module it replaced in `sys.modules`, if any
    try:
        for spec in specs:
            module = _import(spec, added, imported)
            _LOADED.append(module)
        registry.load()  # the registry's order, set here in the main thread before any worker thread reads it
        yield list(_LOADED)
    finally:
        registry.unregister(added)
        registry.load()
        for name, previous in imported.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        _LOADED.clear()


def _import(spec: str, added: list[str], imported: dict[str, ModuleType | None]) -> UserModule:
    """Import one module, recording in `added` the names it registered and in `imported` its `sys.modules` entry
    (both are undone by `registered`), and check what it registered."""
    path = Path(spec).expanduser()
    is_file = spec.endswith(".py") or path.is_file()
    if is_file:
        if not path.is_file():
            raise MetricsModuleError(f"--metrics-module {spec}: no such file; pass a .py file or a module name "
                                     "(package.module) on the Python path")
        name = path.stem
        if not name.isidentifier():
            raise MetricsModuleError(f"--metrics-module {spec}: {name!r} is not a Python module name; rename the file")
        if name in sys.modules:
            raise MetricsModuleError(f"--metrics-module {spec}: a module named {name!r} is already imported; rename "
                                     "the file")
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise MetricsModuleError(f"--metrics-module {spec}: cannot be loaded as a Python module")
        source = path.resolve()
    else:
        name = spec
        try:
            loader_spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as exc:
            raise MetricsModuleError(f"--metrics-module {spec}: no such module on the Python path "
                                     f"({_first_line(exc)}); pass a .py file or a module name (package.module)") from None
        if loader_spec is None or loader_spec.origin is None or not Path(loader_spec.origin).is_file():
            raise MetricsModuleError(f"--metrics-module {spec}: no such module on the Python path; pass a .py file "
                                     "or a module name (package.module)")
        source = Path(loader_spec.origin).resolve()
    before = set(registry.REGISTRY)
    # Imported afresh for this run (a module imported before would not register again): under its name in
    # `sys.modules` while the run lasts, as dataclasses and pickling expect.
    imported.setdefault(name, sys.modules.pop(name, None))
    try:
        if is_file:
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    except registry.RegistrationError as exc:
        added += [n for n in registry.REGISTRY if n not in before]
        raise MetricsModuleError(f"--metrics-module {spec}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's code is their module's, named as such
        added += [n for n in registry.REGISTRY if n not in before]
        raise MetricsModuleError(f"--metrics-module {spec}: importing it failed: {type(exc).__name__}: "
                                 f"{_first_line(exc)}") from None
    new = [n for n in registry.REGISTRY if n not in before]
    added += new
    if not new:
        raise MetricsModuleError(f"--metrics-module {spec}: registers no metric; decorate its functions with "
                                 "dynamics.metrics.register")
    families = []
    for metric in (registry.REGISTRY[n] for n in new):
        _check(spec, metric)
        families.append(metric.family)
    data = source.read_bytes()
    return UserModule(name, str(source), hashlib.sha256(data).hexdigest(), data.decode("utf-8", "replace"),
                      tuple(new), tuple(dict.fromkeys(families)))


def _check(spec: str, metric: registry.Metric) -> None:
    """A user registration the probe can measure: a per-layer family's, with that family's inputs."""
    if metric.family not in USER_FAMILIES or metric.scope != "layer":
        raise MetricsModuleError(f"--metrics-module {spec}: {metric.name} is registered in family {metric.family!r}, "
                                 f"scope {metric.scope!r}; a user metric joins a per-layer family ("
                                 f"{', '.join(USER_FAMILIES)}) with scope 'layer'")
    allowed = FAMILY_INPUTS[metric.family]
    wrong = [p for p in metric.parameters if p not in allowed]
    if wrong:
        raise MetricsModuleError(f"--metrics-module {spec}: {metric.name} takes {', '.join(wrong)}, which the "
                                 f"{metric.family} family does not provide; its inputs are {', '.join(allowed)}")


def check_measured(chosen: Sequence[str]) -> None:
    """`MetricsModuleError` when a loaded user metric's family is not among the `--metrics` families `chosen`
    (it would silently not be measured)."""
    for module in _LOADED:
        for name in module.metrics:
            family = registry.REGISTRY[name].family
            if family not in chosen:
                raise MetricsModuleError(f"--metrics-module {module.name}: {name} joins the {family} family, which "
                                         f"--metrics {','.join(chosen)} leaves out; add {family} to --metrics")


def report_lines(rows: Any) -> list[str]:
    """report.md's section on the loaded user metrics: each module (name, sha256) and each of its metrics' label,
    definition, unit and first → last stored value at its last layer (variant "all"), from `rows` (the report's
    metric rows)."""
    lines: list[str] = []
    for module in _LOADED:
        lines.append(f"- `{module.name}` (`{module.source}`, sha256 `{module.sha256[:12]}`):")
        for name in module.metrics:
            m = registry.REGISTRY[name]
            r = rows[(rows["metric"] == name) & (rows["variant"] == "all")] if len(rows) else rows
            values = ""
            if len(r):
                r = r[r["layer"] == r["layer"].max()].sort_values(["run", "step"])
                values = "; ".join(f"{run}: {g['value'].iloc[0]:.4g} → {g['value'].iloc[-1]:.4g}"
                                   for run, g in r.groupby("run", sort=True))
                values = f" Layer {int(r['layer'].max())}, first → last measured step: {values}."
            lines.append(f"  - {m.label} (`{name}`, {m.family}, page {m.page}): {m.definition} Unit: {m.unit}."
                         f"{values} `{m.pointer}`")
    return lines


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
