"""`common.files`: a file written through it is the old one or the whole new one, never a part, and a failed write
leaves no temporary file behind; folders are swapped or installed whole."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from common import files


class Boom(Exception):
    pass


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_each_writer_writes_the_whole_file(tmp_path: Path) -> None:
    files.write_bytes(tmp_path / "a.bin", b"\x00\xffdata")
    files.write_text(tmp_path / "b.txt", "é\nline")
    files.write_json(tmp_path / "c.json", {"b": 1, "a": [1.5, None]}, end="\n")
    files.write_json(tmp_path / "d.json", {"when": Path("x")}, indent=None, default=str)
    files.save_npz(tmp_path / "sub" / "e.npz", ids=np.arange(5, dtype=np.int32), name=np.array(["x", "yy"]))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xffdata"
    assert (tmp_path / "b.txt").read_bytes() == "é\nline".encode()
    assert (tmp_path / "c.json").read_text() == json.dumps({"b": 1, "a": [1.5, None]}, indent=2) + "\n"
    assert (tmp_path / "d.json").read_text() == '{"when": "x"}'
    with np.load(tmp_path / "sub" / "e.npz") as z:
        assert z["ids"].tolist() == [0, 1, 2, 3, 4] and z["ids"].dtype == np.int32
        assert z["name"].tolist() == ["x", "yy"]
    assert _listing(tmp_path) == ["a.bin", "b.txt", "c.json", "d.json", "sub"]
    assert _listing(tmp_path / "sub") == ["e.npz"]


def test_a_new_file_has_the_ordinary_mode_not_a_private_one(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    files.write_text(tmp_path / "atomic", "x")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


@pytest.mark.parametrize("how", ["text", "bytes", "path", "npz"])
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path: Path, how: str) -> None:
    target = tmp_path / "out.dat"
    target.write_bytes(b"old contents")
    with pytest.raises(Boom):
        if how == "text":
            with files.writing(target) as handle:
                handle.write("half of the new ")
                handle.flush()
                raise Boom
        elif how == "bytes":
            with files.writing(target, "wb") as handle:
                handle.write(b"half")
                handle.flush()
                raise Boom
        elif how == "path":
            with files.replacing(target) as tmp:
                tmp.write_text("half")
                raise Boom
        else:
            class Unpicklable:
                def __reduce__(self) -> None:  # np.savez pickles object arrays: this fails after `good` is written
                    raise Boom

            files.save_npz(target, good=np.arange(1000), bad=np.array([Unpicklable()], dtype=object))
    assert target.read_bytes() == b"old contents"
    assert _listing(tmp_path) == ["out.dat"]


def test_a_failed_serialisation_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("{}")
    with pytest.raises(TypeError):
        files.write_json(target, {"fine": 1, "not json": object()})
    assert target.read_text() == "{}" and _listing(tmp_path) == ["run.json"]


def test_the_temporary_name_keeps_the_suffix_and_is_hidden(tmp_path: Path) -> None:
    with files.replacing(tmp_path / "figure.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".figure.png.") and tmp.suffix == ".png"
        assert not tmp.exists()
        tmp.write_bytes(b"png")
    assert _listing(tmp_path) == ["figure.png"]
    assert files.temporary_name(tmp_path / "a") != files.temporary_name(tmp_path / "a")


def test_writing_refuses_a_mode_that_does_not_write_the_whole_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'a'"):
        with files.writing(tmp_path / "log", "a"):
            pass
    assert _listing(tmp_path) == []


def test_a_folder_replaces_the_old_one_whole(tmp_path: Path) -> None:
    target = tmp_path / "step-1"
    target.mkdir()
    (target / "old").write_text("old")
    with files.building_dir(target) as tmp:
        (tmp / "new").write_text("new")
    assert files.replace_dir(tmp, target) is True
    assert _listing(target) == ["new"] and _listing(tmp_path) == ["step-1"]


def test_a_folder_that_fails_while_being_built_is_removed(tmp_path: Path) -> None:
    target = tmp_path / "step-1"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(Boom):
        with files.building_dir(target) as tmp:
            (tmp / "half").write_text("half")
            raise Boom
    assert _listing(tmp_path) == ["step-1"] and _listing(target) == ["old"]


def test_replace_keeps_theirs_only_when_told_theirs_is_good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process installs its copy between our moving the old one aside and our rename."""
    target = tmp_path / "cache"
    real_replace = files.os.replace

    def racing_replace(src: Path, dst: Path) -> None:
        if Path(dst) == target and not target.exists():
            target.mkdir()
            (target / "theirs").write_text("theirs")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", racing_replace)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "mine").write_text("mine")
    assert files.replace_dir(ours, target, keep_theirs=lambda p: (p / "theirs").is_file()) is False
    assert _listing(target) == ["theirs"] and _listing(tmp_path) == ["cache"]

    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "mine").write_text("mine")
    with pytest.raises(OSError):  # theirs is not good: the failure is reported, the older copy kept aside
        files.replace_dir(tmp_path / "again", target, keep_theirs=lambda p: False)
    assert [n for n in _listing(tmp_path) if n.startswith(".cache.old-")]


def test_install_keeps_the_first_copy(tmp_path: Path) -> None:
    target = tmp_path / "tokenizers" / "key"
    with files.building_dir(target) as first:
        (first / "tokenizer.json").write_text("first")
    with files.building_dir(target) as second:
        (second / "tokenizer.json").write_text("second")
    assert files.install_dir(first, target) is True
    assert files.install_dir(second, target) is False
    assert (target / "tokenizer.json").read_text() == "first"
    assert _listing(target.parent) == ["key"]
