"""User metrics modules (`dynamics.metrics.user`): the worked example's reference tests, registering for one run
only, and every refusal (a built-in's name, parameters that are not the family's inputs, a module that does not
import) leaving the registry and `sys.modules` as they were."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dynamics import probe
from dynamics.metrics import registry, user

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "my_metric.py"
EXAMPLE_TEST = REPO / "docs" / "examples" / "test_my_metric.py"

HEADER = "from dynamics.metrics import register\nfrom dynamics.metrics.registry import ALL_LAYERS\n\n"


def module_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + body)
    return path


def registration(name: str, params: str, family: str = "geometry") -> str:
    return (f"@register({name!r}, family={family!r}, page='geometry', layers=ALL_LAYERS, label='x', unit='u',\n"
            f"          definition='A test metric.')\ndef f({params}):\n    return 1.0\n")


def test_the_examples_reference_tests_pass_with_the_module_registered() -> None:
    before = list(registry.load())
    with user.registered([str(EXAMPLE)]) as mods:
        assert [m.metrics for m in mods] == [("peak_coordinate_share",)]
        spec = importlib.util.spec_from_file_location("test_my_metric", EXAMPLE_TEST)
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)  # its `import my_metric` finds the module the probe would use
        names = [n for n in dir(tests) if n.startswith("test_")]
        assert len(names) == 3
        for name in names:
            getattr(tests, name)()
    assert list(registry.load()) == before and "my_metric" not in sys.modules


def test_registered_for_the_block_only_and_recorded(tmp_path: Path) -> None:
    path = module_file(tmp_path, "mine", registration("mine_metric", "h"))
    before = list(registry.load())
    with user.registered([str(path)]) as mods:
        assert list(registry.load())[-1] != "mine_metric" or registry.get("mine_metric").family == "geometry"
        # after the built-ins of its family, before the later families' metrics
        order = list(registry.load())
        assert order.index("mine_metric") > max(i for i, n in enumerate(order) if registry.get(n).family == "geometry"
                                                and n != "mine_metric" and registry.get(n).scope == "layer")
        assert mods[0].name == "mine" and mods[0].text == path.read_text()
        assert user.params("geometry") == f"mine:{mods[0].sha256[:16]}" and user.params("context") is None
        with pytest.raises(user.MetricsModuleError, match="leaves out"):
            user.check_measured(["anchors", "context"])
        user.check_measured(["geometry"])
    assert list(registry.load()) == before and user.loaded() == [] and "mine" not in sys.modules


@pytest.mark.parametrize(("body", "says"), [
    (registration("anisotropy", "h"), "'anisotropy' is already registered by dynamics.metrics.geometry"),
    (registration("mine_metric", "h, hidden"), "['hidden'] of f are not probe inputs (the inputs: layer, h,"),
    (registration("mine_metric", "h, masked"), "takes masked, which the geometry family does not provide; its "
                                               "inputs are layer,"),
    (registration("mine_metric", "h", family="drift"), "a user metric joins a per-layer family"),
    ("import numpy\nraise RuntimeError('boom\\nsecond line')\n", "importing it failed: RuntimeError: boom"),
])
def test_refusals_name_the_module_and_leave_the_registry_as_it_was(tmp_path: Path, body: str, says: str) -> None:
    good = module_file(tmp_path, "fine", registration("fine_metric", "h"))
    bad = module_file(tmp_path, "broken", registration("broken_first", "h") + body)
    before = list(registry.load())
    with pytest.raises(user.MetricsModuleError) as caught:
        with user.registered([str(good), str(bad)]):
            pass
    message = str(caught.value)
    assert message.startswith(f"--metrics-module {bad}: ") and says in message and "\n" not in message
    assert list(registry.load()) == before and user.loaded() == []
    assert "fine" not in sys.modules and "broken" not in sys.modules


def test_missing_file_and_module_and_no_registration(tmp_path: Path) -> None:
    with pytest.raises(user.MetricsModuleError, match="registers no metric; decorate"):
        with user.registered([str(module_file(tmp_path, "empty_mod", "x = 1\n"))]):
            pass
    with pytest.raises(user.MetricsModuleError, match="no such file"):
        with user.registered(["nowhere/mine.py"]):
            pass
    with pytest.raises(user.MetricsModuleError, match="no such module"):
        with user.registered(["no_such_package_xyz.metrics"]):
            pass


def test_dotted_module_name_is_imported_afresh_and_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    module_file(pkg, "extra", registration("dotted_metric", "h"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import mypkg.extra as first  # imported before: the probe must still see its registrations

    registry.unregister(["dotted_metric"])
    with user.registered(["mypkg.extra"]) as mods:
        assert mods[0].metrics == ("dotted_metric",) and sys.modules["mypkg.extra"] is not first
    assert sys.modules["mypkg.extra"] is first and "dotted_metric" not in registry.REGISTRY


def test_flag_is_repeatable_and_comma_separated(tmp_path: Path) -> None:
    _, cfg = probe.parse_args(["run", "--metrics-module", "a.py", "--metrics-module", "b.py,pkg.c"])
    assert cfg.metrics_module == ["a.py", "b.py", "pkg.c"]
    config = tmp_path / "probe.json"
    config.write_text(json.dumps({"metrics_module": ["from_config.py"]}))
    assert probe.parse_args(["run", "--config", str(config)])[1].metrics_module == ["from_config.py"]
    assert probe.parse_args(["run", "--config", str(config), "--metrics-module", "x.py"])[1].metrics_module == ["x.py"]
    assert probe.parse_args(["run"])[1].metrics_module is None
