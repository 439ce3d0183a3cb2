"""The cache root (`taco.cache`): its precedence, that taco.prepare reuses it from any directory, and the
one-line errors for a cache path that is a file. No network: the built-in sources are faked."""

from __future__ import annotations

from pathlib import Path

import pytest

from taco import prepare
from taco.cache import cache_root, data_cache_dir
from taco.corpus import Document, builtin, builtin_cache_dir
from taco.errors import TacoError


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TACO_DYNAMICS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "taco-dynamics"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty: as if unset (XDG Base Directory spec)
    assert cache_root() == tmp_path / "home" / ".cache" / "taco-dynamics"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # relative: invalid, ignored
    assert cache_root() == tmp_path / "home" / ".cache" / "taco-dynamics"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "taco-dynamics"
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", str(tmp_path / "mine"))  # wins over XDG
    assert cache_root() == tmp_path / "mine"
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", "~/warm")
    assert cache_root() == tmp_path / "home" / "warm"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", "rel")
    assert cache_root() == tmp_path / "rel"  # absolute, so a later chdir does not move it
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", "")
    assert cache_root() == tmp_path / "xdg" / "taco-dynamics"


def test_caches_live_below_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", str(tmp_path / "root"))
    assert builtin_cache_dir() == tmp_path / "root" / "corpus" / "builtin"
    assert builtin_cache_dir(tmp_path / "other") == tmp_path / "other" / "corpus" / "builtin"
    assert data_cache_dir("") == data_cache_dir(None) == tmp_path / "root"
    assert data_cache_dir(tmp_path / "x" / "y") == tmp_path / "x" / "y"  # need not exist yet


def test_cache_path_that_is_a_file_is_a_one_line_error(tmp_path, monkeypatch):
    file = tmp_path / "notes.txt"
    file.write_text("not a directory")
    for path in (file, file / "below"):
        with pytest.raises(TacoError) as info:
            data_cache_dir(str(path))
        message = str(info.value)
        assert message.startswith(f"--data-cache {path} is not a directory") and "\n" not in message
        assert "pass a directory" in message
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", str(file))
    with pytest.raises(TacoError, match=r"cache root .*notes\.txt \(\$TACO_DYNAMICS_CACHE\).*set TACO_DYNAMICS_CACHE"):
        data_cache_dir("")


def test_train_with_data_cache_a_file_exits_2(tmp_path, capsys):
    from taco.train import main

    file = tmp_path / "cache.txt"
    file.write_text("")
    code = main(["--preset", "tiny", "--max-steps", "1", "--output-dir", str(tmp_path / "run"),
                 "--data-cache", str(file), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: --data-cache {file} is not a directory") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_prepare_with_cache_dir_a_file_exits_2(tmp_path, capsys):
    file = tmp_path / "corpus.jsonl"
    file.write_text("{}\n")
    assert prepare.main(["--cache-dir", str(file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --cache-dir {file} is not a directory") and err.count("\n") == 1
    assert file.read_text() == "{}\n"  # left alone


def test_prepare_from_two_directories_reuses_the_cache(tmp_path, monkeypatch, capsys):
    calls: list[str] = []

    def source_documents(source: builtin.Source, downloads: Path) -> tuple[list[Document], str]:
        calls.append(source.name)
        return [Document(f"{source.name}/{i}", source.name, f"{source.name} {i}", f"text {i} " * 50)
                for i in range(10)], "1.0"

    monkeypatch.setattr(builtin, "source_documents", source_documents)
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", str(tmp_path / "root"))
    corpus_dir = tmp_path / "root" / "corpus" / "builtin"
    outputs = []
    for cwd in ("first", "second"):
        (tmp_path / cwd).mkdir()
        monkeypatch.chdir(tmp_path / cwd)
        assert prepare.main(["--quiet"]) == 0
        outputs.append(capsys.readouterr().out)
        if cwd == "first":
            mtime = (corpus_dir / "train.jsonl").stat().st_mtime_ns
    assert all(out.startswith(f"built-in corpus in {corpus_dir}\n") for out in outputs)
    assert len(calls) == len(builtin.SOURCES)  # built once, found the second time
    assert (corpus_dir / "train.jsonl").stat().st_mtime_ns == mtime
    assert not [p for cwd in ("first", "second") for p in (tmp_path / cwd).iterdir()]  # no ./data
