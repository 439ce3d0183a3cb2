"""benchmarks/mutations.py stays runnable: each mutation still names exactly one line of the current code.

A refactor that moves or rewrites a mutated line turns that mutation stale (the script then reports it, and the
check counts it as not caught); this test says so at once, naming the mutation to update."""

import importlib.util
from pathlib import Path

from dynamics.metrics import registry

REPO = Path(__file__).resolve().parents[2]


def _mutations() -> list[tuple[str, str, str]]:
    spec = importlib.util.spec_from_file_location("mutations", REPO / "benchmarks" / "mutations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUTATIONS


def test_every_mutation_matches_one_line_of_the_code():
    stale = []
    for k, (file, old, new) in enumerate(_mutations(), start=1):
        count = (REPO / file).read_text().count(old)
        if count != 1:
            stale.append(f"{k} {file}: {old.strip()!r} occurs {count} times")
        elif old == new:
            stale.append(f"{k} {file}: {old.strip()!r} is replaced by itself")
    assert not stale, "update benchmarks/mutations.py: " + "; ".join(stale)


def test_mutations_cover_every_module_that_defines_a_registered_metric():
    files = {file for file, _, _ in _mutations()}
    modules = {m.module.replace(".", "/") + ".py" for m in registry.metrics()}
    assert all((REPO / m).is_file() for m in modules)
    assert modules <= files, f"no mutation in {sorted(modules - files)}"
