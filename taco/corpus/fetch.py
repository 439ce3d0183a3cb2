"""Fetching the built-in corpus's packages: npm tarballs (`npm pack`) and Debian `.deb`s (`apt-get download`),
once each into a downloads folder, and reading their files in memory. A failed client becomes a one-line
`CorpusError` naming the package and the fix.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import unquote

from taco.corpus.documents import CorpusError

FIX_HINT = "pass your own corpus with --corpus PATH"


def _failure_reason(result: subprocess.CompletedProcess[str]) -> str:
    """The most telling line of a failed client's output (apt's `E:` line, npm's first real error line)."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    errors = [re.sub(r"^(npm ERR!|npm error)\s*", "", line) for line in lines
              if line.startswith(("E:", "npm ERR!", "npm error"))]
    errors = [e for e in errors if e and not re.match(r"(code \w+|\d+|A complete log.*)$", e)]
    return (errors or lines[-1:] or [f"exit status {result.returncode}"])[0][:200]


def _run_fetch(cmd: list[str], cwd: Path, what: str, fix: str) -> None:
    """Run a registry client; any failure becomes a one-line `CorpusError` naming the package and the fix."""
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError:
        raise CorpusError(f"could not fetch {what}: `{cmd[0]}` is not installed; {fix}") from None
    except subprocess.TimeoutExpired:
        raise CorpusError(f"could not fetch {what}: `{' '.join(cmd)}` timed out; {fix}") from None
    if result.returncode != 0:
        raise CorpusError(f"could not fetch {what} with `{' '.join(cmd[:2])}` ({_failure_reason(result)}); {fix}")


def fetch_npm(spec: str, downloads: Path) -> Path:
    """The tarball of npm package `spec` (`name@version`), fetched once with `npm pack` into `downloads`."""
    target = downloads / (spec.lstrip("@").replace("/", "-").replace("@", "-") + ".tgz")
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    what = f"npm package {spec}"
    fix = f"install Node.js/npm and check access to the npm registry, or {FIX_HINT}"
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".npm-") as tmp:
        _run_fetch(["npm", "pack", spec, "--loglevel=error"], Path(tmp), what, fix)
        packed = sorted(Path(tmp).glob("*.tgz"))
        if not packed:
            raise CorpusError(f"could not fetch {what}: `npm pack` wrote no tarball; {fix}")
        os.replace(packed[0], target)
    return target


def fetch_deb(name: str, downloads: Path) -> Path:
    """The `.deb` of Debian package `name`, fetched once with `apt-get download` into `downloads`."""
    cached = sorted(downloads.glob(f"{name}_*.deb"))
    if cached:
        return cached[-1]
    downloads.mkdir(parents=True, exist_ok=True)
    what = f"Debian package {name}"
    fix = f"run `apt-get update` or {FIX_HINT}"
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".apt-") as tmp:
        _run_fetch(["apt-get", "download", name], Path(tmp), what, fix)
        debs = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if not debs:
            raise CorpusError(f"could not fetch {what}: `apt-get download` wrote no .deb; {fix}")
        os.replace(debs[0], downloads / debs[0].name)
        return downloads / debs[0].name


def deb_version(deb: Path) -> str:
    """Version from a `name_version_arch.deb` file name (epochs are %-escaped there)."""
    parts = deb.stem.split("_")
    return unquote(parts[1]) if len(parts) >= 3 else "unknown"


def _tar_files(tar: tarfile.TarFile, prefix: str) -> dict[str, bytes]:
    files = {}
    for member in tar:
        name = member.name.removeprefix("./")
        if member.isfile() and name.startswith(prefix):
            handle = tar.extractfile(member)
            if handle is not None:
                files[name] = handle.read()
    return files


def deb_files(deb: Path, prefix: str) -> dict[str, bytes]:
    """Contents of the files under `prefix` in a `.deb`, read in memory (no extraction, no install)."""
    try:
        result = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=300,
                                check=False)
    except FileNotFoundError:
        raise CorpusError(f"cannot unpack {deb.name}: `dpkg-deb` is not installed; {FIX_HINT}") from None
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise CorpusError(f"cannot unpack {deb} ({reason[0]}); delete it to refetch, or {FIX_HINT}")
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        return _tar_files(tar, prefix)


def npm_files(tgz: Path, prefix: str) -> dict[str, bytes]:
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            return _tar_files(tar, prefix)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorpusError(f"cannot read {tgz} ({exc}); delete it to refetch, or {FIX_HINT}") from None
