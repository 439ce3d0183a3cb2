"""Snapshot series from the local Hugging Face Hub cache (`dynamics.find.hub`): a real cache layout written by the
test (`tests/hub_fixture.py`: blobs, symlinked snapshots, refs), read offline; nothing is downloaded or mocked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dynamics.config import ProbeConfig
from dynamics.errors import ProbeError
from dynamics.find import hub
from dynamics.find.inputs import discover_all
from tests.hub_fixture import add_revision, repo_folder

PYTHIA = "EleutherAI/pythia-tiny"
OTHER = "tiny-org/tiny-bert"


def _model(path: Path, marker: int, tokenizer: bool = True, **config: object) -> Path:
    """A model folder (no weights: discovery reads none) whose config differs by `marker`, so that every
    revision built from it has its own commit."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10, "marker": marker,
                                                  **config}))
    if tokenizer:
        (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache that `HF_HUB_CACHE` points at (and no other cache variable)."""
    root = tmp_path / "hf-cache"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return root


def _series_cache(cache: Path, tmp_path: Path, repo_id: str = PYTHIA, steps: tuple[int, ...] = (0, 1000, 2000),
                  tokenizer: bool = True, extra_refs: tuple[str, ...] = ("main",)) -> dict[str, Path]:
    """revision → snapshot folder: `stepN` for each step (tokenizer files only when `tokenizer`), and each of
    `extra_refs` as the final step's files with a tokenizer (as Pythia's `main`)."""
    out = {}
    for step in steps:
        out[f"step{step}"] = add_revision(cache, repo_id, f"step{step}",
                                          _model(tmp_path / "src" / repo_id / str(step), step, tokenizer))
    for ref in extra_refs:
        out[ref] = add_revision(cache, repo_id, ref, _model(tmp_path / "src" / repo_id / ref, steps[-1]))
    return out


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("arg, expected", [("EleutherAI/pythia-70m", True), ("google/multiberts-seed_0", True),
                                           ("bert-base-uncased", False), ("a/b/c", False), ("/abs/name", False),
                                           ("./org/name", False), ("org/", False)])
def test_hub_id_spelling(arg: str, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id(arg) is expected


def test_an_existing_directory_keeps_its_meaning(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`org/name` that exists on disk is that folder, even when the cache holds a model of that id."""
    _series_cache(cache, tmp_path, repo_id="org/name")
    work = tmp_path / "work"
    _model(work / "org" / "name", 7, step=7)
    monkeypatch.chdir(work)
    assert not hub.is_hub_id("org/name")
    (s,) = discover_all(["org/name"])
    assert s.kind == "model" and s.steps == [7] and s.run_dir == (work / "org" / "name").resolve()


@pytest.mark.parametrize("revision, step", [("step1000", 1000), ("step0", 0), ("143000", 143000), ("main", None),
                                            ("v1.0", None), ("step", None), ("1a2b3c", None)])
def test_step_from_revision(revision: str, step: int | None) -> None:
    assert hub.step_from_revision(revision) == step


def test_revisions_become_one_series_sorted_by_step(cache: Path, tmp_path: Path) -> None:
    folders = _series_cache(cache, tmp_path)
    (s,) = discover_all([PYTHIA], revisions=["step2000", "step0", "step1000"])
    assert s.name == PYTHIA and s.kind == "hub"
    assert s.steps == [0, 1000, 2000]
    assert [x.path for x in s.snapshots] == [folders["step0"], folders["step1000"], folders["step2000"]]
    assert all(x.path.parent == repo_folder(cache, PYTHIA) / "snapshots" for x in s.snapshots)
    assert [x.tokens_seen for x in s.snapshots] == [0, 1000 * 2_097_152, 2000 * 2_097_152]  # Pythia's 2 M per step
    assert [x.info["hub"]["revision"] for x in s.snapshots] == ["step0", "step1000", "step2000"]
    assert s.snapshots[1].info["hub"]["commit"] == folders["step1000"].name
    assert s.run_dir == repo_folder(cache, PYTHIA)
    assert s.tokenizer_path == folders["step2000"]  # the latest snapshot's own tokenizer


def test_other_series_leave_tokens_unknown_and_take_plain_numbers(cache: Path, tmp_path: Path) -> None:
    for step in (500, 1500):
        add_revision(cache, OTHER, str(step), _model(tmp_path / "src" / str(step), step))
    (s,) = discover_all([OTHER], revisions=["1500", "500"])
    assert s.steps == [500, 1500] and [x.tokens_seen for x in s.snapshots] == [None, None]
    assert hub.tokens_per_step(OTHER) is None and hub.tokens_per_step("EleutherAI/pythia-70m-deduped") == 2_097_152


def test_without_revisions_the_cached_main_is_one_model(cache: Path, tmp_path: Path) -> None:
    folders = _series_cache(cache, tmp_path, repo_id=OTHER, steps=(3,))
    (s,) = discover_all([OTHER])
    assert s.steps == [0] and s.snapshots[0].path == folders["main"]  # no step in the name or config: 0
    add_revision(cache, OTHER, "main", _model(tmp_path / "m", 1, step=250))
    assert discover_all([OTHER])[0].steps == [250]  # a lone revision takes the step its config.json records


def test_revisions_all_reads_every_step_ref(cache: Path, tmp_path: Path) -> None:
    _series_cache(cache, tmp_path, steps=(2000, 0, 1000), extra_refs=("main", "v1"))
    (s,) = discover_all([PYTHIA], revisions=["all"])
    assert s.steps == [0, 1000, 2000]
    assert [x.info["hub"]["revision"] for x in s.snapshots] == ["step0", "step1000", "step2000"]
    _series_cache(cache, tmp_path, repo_id=OTHER, steps=(5,), extra_refs=())
    refs = repo_folder(cache, OTHER) / "refs"
    (refs / "step5").rename(refs / "v2")
    with pytest.raises(ProbeError, match=r"found no cached revision named like a step.*cached: v2"):
        discover_all([OTHER], revisions=["all"])


def test_tokenizer_from_main_or_another_revision(cache: Path, tmp_path: Path) -> None:
    folders = _series_cache(cache, tmp_path, tokenizer=False)
    add_revision(cache, PYTHIA, "legacy", _model(tmp_path / "legacy", 99))  # another ref with a tokenizer
    (s,) = discover_all([PYTHIA], revisions=["step0", "step1000"])
    assert s.tokenizer_path == folders["main"]  # main before the others
    folders = _series_cache(cache, tmp_path, repo_id=OTHER, steps=(1, 2), tokenizer=False, extra_refs=())
    step9 = add_revision(cache, OTHER, "step9", _model(tmp_path / "with-tok", 9))  # no main: any revision's
    (s,) = discover_all([OTHER], revisions=["step1", "step2"])
    assert s.tokenizer_path == step9


def test_no_tokenizer_in_any_revision(cache: Path, tmp_path: Path) -> None:
    _series_cache(cache, tmp_path, repo_id=OTHER, steps=(1, 2), tokenizer=False, extra_refs=())
    with pytest.raises(ProbeError) as err:
        discover_all([OTHER], revisions=["step1", "step2"])
    msg = str(err.value)
    assert msg.startswith(f"{OTHER}: no tokenizer") and "hf download tiny-org/tiny-bert" in msg and "\n" not in msg


def test_missing_revision_names_it_and_the_download(cache: Path, tmp_path: Path) -> None:
    _series_cache(cache, tmp_path)
    before = _digest(cache)
    with pytest.raises(ProbeError) as err:
        discover_all([PYTHIA], revisions=["step0", "step3000"])
    msg = str(err.value)
    assert "no revision step3000" in msg and "cached: step0, step1000, step2000, main" in msg
    assert msg.endswith(f"download it first with hf download {PYTHIA} --revision step3000") and "\n" not in msg
    assert _digest(cache) == before  # a failed look-up writes nothing into the cache


@pytest.mark.parametrize("cached", [True, False])
def test_missing_repository_names_it_and_the_download(cached: bool, cache: Path, tmp_path: Path) -> None:
    if cached:
        _series_cache(cache, tmp_path, repo_id=OTHER)  # another model is cached; the cache folder exists
    with pytest.raises(ProbeError) as err:
        discover_all(["EleutherAI/pythia-70m"], revisions=["step1000"])
    msg = str(err.value)
    assert msg.startswith("EleutherAI/pythia-70m: no such directory, and no model EleutherAI/pythia-70m")
    assert str(cache) in msg and msg.endswith("hf download EleutherAI/pythia-70m --revision step1000")
    assert cache.exists() is cached  # nothing is created


def test_cache_location_follows_the_environment_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hub.cache_dir() == tmp_path / "hf-home" / "hub"
    folder = add_revision(tmp_path / "hf-home" / "hub", OTHER, "main", _model(tmp_path / "m", 1))
    assert discover_all([OTHER])[0].snapshots[0].path == folder  # read from HF_HOME/hub
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(ProbeError, match="elsewhere"):
        discover_all([OTHER])


def test_revisions_without_a_hub_id_is_an_error(cache: Path, tmp_path: Path) -> None:
    folder = _model(tmp_path / "plain-model", 0)
    with pytest.raises(ProbeError, match=r"^--revisions step1,step2: applies to a Hugging Face model id"):
        discover_all([folder], revisions=["step1", "step2"])
    assert discover_all([folder])[0].kind == "model"


def test_revisions_that_do_not_give_distinct_steps(cache: Path, tmp_path: Path) -> None:
    _series_cache(cache, tmp_path, steps=(0, 1000), extra_refs=("main", "1000"))
    with pytest.raises(ProbeError, match="cannot tell its training step"):
        discover_all([PYTHIA], revisions=["step0", "main"])
    with pytest.raises(ProbeError, match="revisions step1000 and 1000 both give step 1000"):
        discover_all([PYTHIA], revisions=["step1000", "1000"])
    assert discover_all([PYTHIA], revisions=["step0", "step0"])[0].steps == [0]  # named twice, read once


@pytest.mark.parametrize("revisions, follow, needle", [
    ([], False, "name at least one revision"),
    (["all", "step1"], False, "pass all alone"),
    (["step1"], True, "drop --revisions"),
])
def test_config_validation(revisions: list[str], follow: bool, needle: str) -> None:
    with pytest.raises(ProbeError, match=needle):
        ProbeConfig(revisions=revisions, follow=follow).validate()
    assert ProbeConfig(revisions=["all"]).validate().revisions == ["all"]


def test_revisions_flag_is_a_comma_list() -> None:
    from dynamics.probe import parse_args

    dirs, cfg = parse_args([PYTHIA, "--revisions", "step1000,step2000"])
    assert dirs == [PYTHIA] and cfg.revisions == ["step1000", "step2000"]
    assert parse_args([PYTHIA])[1].revisions is None
