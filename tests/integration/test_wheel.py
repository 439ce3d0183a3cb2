"""The installable package: the wheel built from this repository holds the five packages and the files they
read at run time (app/.streamlit/config.toml, experiments/configs/*.yaml), no tests, benchmarks or docs, and
one console script per program named in pyproject.toml. Installed without the repository into a fresh virtual
environment (the dependencies, torch and the rest, made visible from this project's environment by a .pth
line, so nothing is downloaded), it imports from its own site-packages, not from the repository, and its
console scripts run from another folder.

The wheel is built from a copy of the working tree, so an old `build/` folder of the repository cannot leak
files into it and the build writes nothing into the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as pip vendors it
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "taco", "dynamics", "app", "experiments")
NOT_PACKAGED = ("tests", "benchmarks", "docs")
EXCLUDED = "experiments/results/"  # the experiments' outputs (pyproject's packages.find exclude)
# What the copy leaves out (.gitignore's): anywhere, caches and build metadata; at the root only, version
# control, environments, build outputs and run outputs (app/data/ is a package).
IGNORED = ("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".ruff_cache")
IGNORED_AT_ROOT = {".git", ".venv", "build", "dist", "runs", "data", ".cache", ".whl", ".gl",
                   "dynamics-results", "gpu-results"}


@dataclass(frozen=True)
class Installed:
    wheel: Path
    names: list[str]  # the wheel's members
    venv: Path
    site: Path  # the new environment's site-packages
    cwd: Path  # a folder outside the repository


def _clean_env() -> dict[str, str]:
    """The environment for the new interpreter: offline, and no PYTHONPATH (the repository must not be
    importable)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", TOKENIZERS_PARALLELISM="false")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _build_wheel(src: Path, out: Path, cwd: Path) -> Path:
    """`pip wheel --no-deps` of `src`: without build isolation when this environment has the build
    requirements (no index needed), else isolated (pip's configured index)."""
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(out),
            str(src)]
    try:
        import setuptools  # noqa: F401
        import wheel  # noqa: F401
        cmd = base[:4] + ["--no-build-isolation"] + base[4:]
    except ImportError:
        cmd = base
    env = {k: v for k, v in _clean_env().items() if k != "PIP_NO_INDEX"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"building the wheel failed\n{proc.stdout}\n{proc.stderr}"
    wheels = list(out.glob("taco_dynamics-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel once, install it (no dependencies) into a fresh venv whose site-packages sees this
    environment's packages through a .pth line, and give a folder outside the repository to run from."""
    root = tmp_path_factory.mktemp("wheel")
    src, dist, venv, cwd = root / "src", root / "dist", root / "venv", root / "elsewhere"
    anywhere = shutil.ignore_patterns(*IGNORED)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = set(anywhere(folder, names))
        return skip | (IGNORED_AT_ROOT & set(names)) if Path(folder) == REPO else skip

    shutil.copytree(REPO, src, ignore=ignore, symlinks=True)
    cwd.mkdir()
    wheel = _build_wheel(src, dist, cwd)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()

    _run([sys.executable, "-m", "venv", str(venv)], cwd)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd).stdout.strip())
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd)
    # The dependencies (torch, transformers, …) from this environment: a .pth line appends its site-packages
    # to sys.path after the new one's, and .pth files there (the repository's editable-install hook) are not
    # run.
    (site / "taco_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Installed(wheel, names, venv, site, cwd)


def _scripts() -> dict[str, str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def test_wheel_holds_the_packages_and_their_data_and_nothing_else(installed: Installed) -> None:
    names = installed.names
    tops = {n.split("/", 1)[0] for n in names}
    dist_info = [t for t in tops if t.endswith(".dist-info")]
    assert len(dist_info) == 1 and dist_info[0].startswith("taco_dynamics-")
    assert tops - set(dist_info) == set(PACKAGES), f"top-level entries: {sorted(tops)}"
    for package in PACKAGES:  # each package with its __init__ and every module the repository has
        assert f"{package}/__init__.py" in names
        modules = {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")
                   if "__pycache__" not in p.parts}
        modules = {m for m in modules if not m.startswith(EXCLUDED)}
        assert modules <= set(names), f"modules missing from the wheel: {sorted(modules - set(names))}"
    assert "app/.streamlit/config.toml" in names
    configs = sorted(p.name for p in (REPO / "experiments" / "configs").glob("*.yaml"))
    assert configs and {f"experiments/configs/{c}" for c in configs} <= set(names)
    leaked = [n for n in names if any(part in NOT_PACKAGED for part in n.split("/")[:-1])
              or n.startswith(EXCLUDED)]
    assert not leaked, f"not for the wheel: {leaked[:10]}"

    ep = ConfigParser()
    ep.optionxform = str  # keep the scripts' names as written
    with zipfile.ZipFile(installed.wheel) as zf:
        ep.read_string(zf.read(f"{dist_info[0]}/entry_points.txt").decode())
    assert dict(ep["console_scripts"]) == _scripts()


def test_installed_wheel_imports_from_its_own_environment(installed: Installed) -> None:
    code = ("import importlib.resources as r, dynamics, taco, app, common, experiments\n"
            "from dynamics.callback import SnapshotCallback\n"
            "from common.snapshot_writer import SnapshotWriter\n"
            "print(dynamics.__file__); print(taco.__file__); print(app.__file__)\n"
            "print(r.files('app').joinpath('.streamlit/config.toml').is_file())\n"
            "print(sorted(p.name for p in r.files('experiments').joinpath('configs').iterdir()))\n")
    out = _run([str(installed.venv / "bin" / "python"), "-c", code], installed.cwd).stdout.splitlines()
    # The wheel's copies, not the repository's (which this environment's editable install points to).
    for path in out[:3]:
        assert Path(path).resolve().is_relative_to(installed.site.resolve()), path
        assert not Path(path).resolve().is_relative_to(REPO), path
    assert out[3] == "True"
    assert out[4] == repr(sorted(p.name for p in (REPO / "experiments" / "configs").glob("*.yaml")))


def test_console_scripts_run_from_another_folder(installed: Installed) -> None:
    bin_dir = installed.venv / "bin"
    for name in _scripts():
        assert os.access(bin_dir / name, os.X_OK), f"console script {name} not installed"
    probe = _run([str(bin_dir / "dynamics-probe"), "--help"], installed.cwd).stdout
    assert probe.startswith("usage:") and "--follow" in probe and "--metrics-module" in probe
    export = _run([str(bin_dir / "dynamics-export"), "--help"], installed.cwd).stdout
    assert export.startswith("usage:") and "--merge" in export and "--format" in export
