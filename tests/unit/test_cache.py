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
        assert "pass a writable directory" in message
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", str(file))
    with pytest.raises(TacoError, match=r"cache root .*notes\.txt \(\$TACO_DYNAMICS_CACHE\).*set TACO_DYNAMICS_CACHE"):
        data_cache_dir("")


# Root may write anywhere a permission bit forbids, so these paths are unwritable for every user: /proc is a
# virtual file system where no folder can be made, and a name longer than any file system allows.
UNWRITABLE = ["/proc/taco-dynamics-cache", "/proc/taco-dynamics-cache/below"]


@pytest.mark.parametrize("path", UNWRITABLE)
def test_an_unwritable_cache_root_is_one_line_naming_the_setting(path, monkeypatch):
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", path)
    with pytest.raises(TacoError) as info:
        data_cache_dir("")
    message = str(info.value)
    assert message.startswith(f"the cache root {path} ($TACO_DYNAMICS_CACHE): cannot write there (")
    assert message.endswith("set TACO_DYNAMICS_CACHE to a writable directory, or pass --data-cache DIR")
    with pytest.raises(TacoError, match=f"^--data-cache {path}: cannot write there"):
        data_cache_dir(path)


def test_the_setting_that_chose_the_root_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("TACO_DYNAMICS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/xdg")
    with pytest.raises(TacoError, match=r"^the cache root /proc/xdg/taco-dynamics \(\$XDG_CACHE_HOME=/proc/xdg\)"):
        data_cache_dir(None)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "/proc")
    with pytest.raises(TacoError, match=r"^the cache root /proc/\.cache/taco-dynamics \(the default\)"):
        data_cache_dir(None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", "file/rel")  # a relative spelling is shown as given, too
    with pytest.raises(TacoError, match=r"\(\$TACO_DYNAMICS_CACHE=file/rel\) is not a directory \(.*file is a file\)"):
        data_cache_dir(None)


def test_a_failed_check_leaves_no_folder_behind_and_a_good_one_a_usable_root(tmp_path):
    too_long = tmp_path / "a" / "b" / ("x" * 300)  # a and b can be made, the last name cannot
    with pytest.raises(TacoError, match="cannot write there"):
        data_cache_dir(too_long)
    assert list(tmp_path.iterdir()) == []
    assert data_cache_dir(tmp_path / "c" / "d") == tmp_path / "c" / "d"
    assert (tmp_path / "c" / "d").is_dir() and list((tmp_path / "c" / "d").iterdir()) == []  # the test file went


@pytest.mark.parametrize("path", UNWRITABLE)
def test_prepare_blames_the_variable_not_a_flag_never_given(path, monkeypatch, capsys):
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", path)
    assert prepare.main(["--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the cache root {path} ($TACO_DYNAMICS_CACHE): cannot write there") and \
        err.count("\n") == 1 and "--cache-dir DIR" in err, err
    assert prepare.main(["--quiet", "--cache-dir", path]) == 2
    assert capsys.readouterr().err.startswith(f"error: --cache-dir {path}: cannot write there")


def test_prepare_with_the_root_a_file_names_the_variable(tmp_path, monkeypatch, capsys):
    file = tmp_path / "cache"
    file.write_text("mine\n")
    monkeypatch.setenv("TACO_DYNAMICS_CACHE", str(file))
    assert prepare.main(["--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the cache root {file} ($TACO_DYNAMICS_CACHE) is not a directory") and \
        "--cache-dir " + str(file) not in err, err
    assert file.read_text() == "mine\n"


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


def test_a_folder_to_be_made_later_is_checked_where_it_would_be_made(tmp_path):
    from taco.cache import check_directory

    later = tmp_path / "runs" / "new"
    assert check_directory(later, "--output-dir", "fix", create=False) == later
    assert list(tmp_path.iterdir()) == []  # nothing made: the run makes it once every check has passed
    with pytest.raises(TacoError, match=r"^--output-dir: cannot write there \(.*\); fix$"):
        check_directory(Path(UNWRITABLE[0]) / "run", "--output-dir", "fix", create=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(TacoError, match=r"is not a directory \(.*file is a file\)"):
        check_directory(tmp_path / "file" / "run", "--output-dir", "fix", create=False)
