"""When Chromium is missing: `tests/app/install_chromium.sh` (the first line of `make test`) and the browser tests'
`chromium_or_skip` let a developer without root run the suite (a one-line note, the browser tests skipped with the
install command as their reason) and never let CI or root pass without the browser tests.

The script is run from a copy whose Chromium path points into the test's folder (so the branches for a missing
browser run whether or not this machine has one), with `id` and `apt-get` stand-ins first on PATH."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.app import browser

SCRIPT = Path(__file__).with_name("install_chromium.sh")


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_script(tmp_path: Path, uid: int, ci: str | None) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The script, with Chromium expected at TMP/chromium (missing), run as if by user `uid`."""
    chromium = tmp_path / "chromium"
    script = tmp_path / "install_chromium.sh"
    text = SCRIPT.read_text()
    assert text.count("/usr/bin/chromium") >= 2  # the check and the final --version
    script.write_text(text.replace("/usr/bin/chromium", str(chromium)))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    _stub(stubs, "id", f'[ "$1" = "-u" ] && echo {uid} || echo "uid={uid}"')
    # apt-get: record the call; `install` puts a Chromium in place, as the real one does
    _stub(stubs, "apt-get", f'echo "$@" >> {tmp_path / "apt.log"}\n'
                            f'case "$*" in *install*chromium*) printf "#!/bin/sh\\necho Chromium 1.0\\n" > {chromium}; '
                            f'chmod +x {chromium};; esac')
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = f"{stubs}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    if ci is not None:
        env["CI"] = ci
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    return out, tmp_path / "apt.log"


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_not_root_without_chromium_is_a_note_and_exit_0(tmp_path: Path, ci: str | None) -> None:
    out, apt = _run_script(tmp_path, uid=1000, ci=ci)
    assert out.returncode == 0, out.stderr
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1 and "browser tests will be skipped" in lines[0], lines
    assert "sudo apt-get install -y chromium" in lines[0]
    assert not apt.exists()


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_not_root_without_chromium_on_ci_fails(tmp_path: Path, ci: str) -> None:
    out, apt = _run_script(tmp_path, uid=1000, ci=ci)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"CI={ci}" in lines[0], out.stderr
    assert not apt.exists()


def test_root_installs_chromium(tmp_path: Path) -> None:
    out, apt = _run_script(tmp_path, uid=0, ci="true")
    assert out.returncode == 0, out.stderr
    assert "install -y -qq --no-install-recommends chromium" in apt.read_text()
    assert out.stdout.strip() == "Chromium 1.0"  # it checks the installed browser runs


@pytest.fixture
def no_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Chromium missing and nothing installable (the installer is never run from this test)."""
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    return monkeypatch


def _outcome() -> BaseException:
    """What `chromium_or_skip` raises (a skip or a failure), caught so that a skip cannot skip this test."""
    try:
        browser.chromium_or_skip()
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        return exc
    raise AssertionError("chromium_or_skip returned a path with no Chromium")


def test_browser_tests_skip_with_the_install_command_off_ci(no_chromium: pytest.MonkeyPatch) -> None:
    no_chromium.setattr(browser, "_is_root", lambda: False)
    no_chromium.setenv("CI", "false")
    outcome = _outcome()
    assert isinstance(outcome, pytest.skip.Exception), outcome
    reason = str(outcome)
    assert "\n" not in reason and reason.endswith("to run the browser tests: sudo apt-get install -y chromium")


@pytest.mark.parametrize(("root", "ci", "who"), [(False, "true", "CI is set"), (True, None, "this is root"),
                                                 (True, "true", "CI is set")])
def test_browser_tests_fail_on_ci_or_as_root(no_chromium: pytest.MonkeyPatch, root: bool, ci: str | None,
                                             who: str) -> None:
    no_chromium.setattr(browser, "_is_root", lambda: root)
    if ci is not None:
        no_chromium.setenv("CI", ci)
    outcome = _outcome()  # a skip here would let CI pass without its browser tests
    assert isinstance(outcome, pytest.fail.Exception), f"{type(outcome).__name__}: {outcome}"
    assert who in str(outcome) and "sudo apt-get install -y chromium" in str(outcome)


def test_an_installed_chromium_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "chromium"
    binary.write_text("")
    monkeypatch.setattr(browser, "CHROMIUM", str(binary))
    monkeypatch.setenv("CI", "true")
    assert browser.chromium_or_skip() == str(binary)
