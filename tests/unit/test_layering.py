"""The import rules of docs/design.md's layout table, read off the source: `common` (the shared bottom layer)
imports none of the project's other packages; `taco` imports neither `dynamics` nor `app`; `dynamics` does not
import `app`, and from `taco` it imports only `taco.objectives` (the probe's TC loss is training's); `app` imports
nothing under `dynamics.metrics` (it labels curves from the store's definitions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DYNAMICS_MAY_IMPORT = {"taco.objectives"}
PACKAGES = ("common", "taco", "dynamics", "app", "experiments")


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every absolute module name imported anywhere (top level or inside a function) by each file of `package`,
    `from a.b import c` counted as `a.b`, `from a import b` as `a.b` too when `a` is a package of this repo."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                if node.module in PACKAGES:
                    names |= {f"{node.module}.{alias.name}" for alias in node.names}
        out[str(path.relative_to(REPO))] = names
    return out


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("common", {"taco", "dynamics", "app", "experiments"}),
    ("taco", {"dynamics", "app", "experiments"}),
    ("dynamics", {"app", "experiments"}),
    ("app", {"experiments"}),
])
def test_packages_do_not_import_those_above_them(package: str, forbidden: set[str]) -> None:
    bad = {f: sorted(n for n in names if _top(n) in forbidden) for f, names in imported_modules(package).items()}
    assert {f: n for f, n in bad.items() if n} == {}


def test_dynamics_imports_only_the_objectives_of_taco() -> None:
    bad = {f: sorted(n for n in names if _top(n) == "taco" and n != "taco" and n not in DYNAMICS_MAY_IMPORT)
           for f, names in imported_modules("dynamics").items()}
    assert {f: n for f, n in bad.items() if n} == {}
    bare = [f for f, names in imported_modules("dynamics").items() if "taco" in names]
    assert bare == [], "import the taco module by name (from taco.x import y), not the package"


def test_the_app_imports_no_metric_module() -> None:
    """The app labels and places curves from the definitions in the store it shows (`Store.write_definitions`),
    never from the metric registry or the metric modules."""
    bad = {f: sorted(n for n in names if n == "dynamics.metrics" or n.startswith("dynamics.metrics."))
           for f, names in imported_modules("app").items()}
    assert {f: n for f, n in bad.items() if n} == {}
