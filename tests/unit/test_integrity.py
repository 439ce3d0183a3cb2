"""Snapshot integrity (`dynamics.find.integrity`): each kind of flag on constructed records, none on a clean series, the
warm-up exemption; the weights hash is a function of the tensors alone, and is cached by file stamp."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from dynamics.find import integrity as ig
from dynamics.find.integrity import SnapshotRecord as R


def _clean(run: str = "r") -> list[R]:
    return [R(run, s, 256 * s, f"h{s}", s, f"step-{s:07d}") for s in (0, 1, 2, 4, 8)]


def test_clean_series_has_no_flags() -> None:
    assert ig.check_series(_clean()) == []
    assert ig.check_series([]) == []
    assert ig.check_series([R("r", 3)]) == []  # nothing known but the step: nothing to flag


def test_identical_weights_at_two_steps() -> None:
    snaps = _clean()
    snaps[4] = R("r", 8, 2048, "h2", 8, "step-0000008")  # step 8 holds step 2's weights
    (flag,) = ig.check_series(snaps)
    assert (flag.run, flag.kind, flag.steps) == ("r", "duplicate_weights", (2, 8))
    assert "steps 2 and 8 hold identical weights" in flag.message and flag.message.count(".") <= 1
    assert flag.line == f"warning: r: {flag.message}"


def test_three_identical_snapshots_are_one_flag() -> None:
    snaps = [R("r", s, 10 * s, "same" if s in (1, 4, 8) else f"h{s}", s) for s in (0, 1, 2, 4, 8)]
    (flag,) = ig.check_series(snaps)
    assert flag.steps == (1, 4, 8) and "steps 1, 4 and 8 hold identical weights" in flag.message


def test_unhashed_snapshots_are_not_duplicates() -> None:
    assert ig.check_series([R("r", 0, 0, None, 0), R("r", 1, 5, None, 1)]) == []


def test_zero_learning_rate_explains_identical_weights() -> None:
    """Linear warm-up from 0: the update at step 1 has learning rate 0, so steps 0 and 1 are equal by design."""
    snaps = [R("r", 0, 0, "w0", 0), R("r", 1, 10, "w0", 1), R("r", 2, 20, "w2", 2)]
    assert ig.check_series(snaps, zero_lr_steps={1}) == []
    assert [f.steps for f in ig.check_series(snaps)] == [(0, 1)]  # without the log: flagged
    far = [R("r", 0, 0, "w0", 0), R("r", 4, 40, "w0", 4)]
    assert [f.steps for f in ig.check_series(far, zero_lr_steps={1, 2, 4})] == [(0, 4)]  # step 3 had an update
    assert ig.check_series(far, zero_lr_steps={1, 2, 3, 4}) == []
    chain = [R("r", 0, 0, "w0", 0), R("r", 1, 10, "w0", 1), R("r", 8, 80, "w0", 8)]
    assert [f.steps for f in ig.check_series(chain, zero_lr_steps={1})] == [(0, 1, 8)]  # 1 → 8 is not explained


def test_a_damaged_log_raises_no_flag_without_evidence() -> None:
    """Identical weights at 0 and 1 are expected under warm-up; when the log that would show it cannot be read,
    the check holds back (a note names the log) unless a readable record shows an update with rate > 0."""
    snaps = [R("r", 0, 0, "w0", 0), R("r", 1, 10, "w0", 1), R("r", 2, 20, "w2", 2)]
    damaged = ig.LearningRates(unreadable="runs/r/log.jsonl: 3 lines (1, 2, 3) not UTF-8 text, skipped")
    assert ig.check_series(snaps, rates=damaged) == []
    (note,) = ig.evidence_notes(snaps, damaged)
    assert "steps 0 and 1 hold identical weights" in note and "runs/r/log.jsonl: 3 lines" in note
    assert "not checked" in note
    logged = ig.LearningRates(positive=frozenset({1}), unreadable=damaged.unreadable)  # a row that was read
    assert [f.steps for f in ig.check_series(snaps, rates=logged)] == [(0, 1)]
    scheduled = ig.LearningRates(positive_from=1, unreadable=damaged.unreadable)  # run.json: no warm-up
    assert [f.steps for f in ig.check_series(snaps, rates=scheduled)] == [(0, 1)]
    assert [f.steps for f in ig.check_series(snaps, rates=ig.LearningRates())] == [(0, 1)]  # an intact record
    warm = ig.LearningRates(zero=frozenset({1}), positive_from=2, unreadable=damaged.unreadable)
    assert ig.check_series(snaps, rates=warm) == []
    (note,) = ig.evidence_notes(snaps, warm)  # nothing held back: the note names the damaged log all the same
    assert "runs/r/log.jsonl" in note and "hold identical" not in note
    copied = [*snaps, R("r", 7, 70, "w2", 7)]  # step 7 copied from step 2: the schedule shows updates between
    assert [f.steps for f in ig.check_series(copied, rates=warm)] == [(2, 7)]
    assert ig.evidence_notes(copied, ig.LearningRates()) == []


def _series(tmp_path: Path, config: dict | None, log: bytes) -> object:
    from dynamics.find.series import Series

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "log.jsonl").write_bytes(log)
    return Series(run, "run", [], run, {"config": config} if config is not None else {})


@pytest.mark.parametrize("config, first, zero", [
    ({"lr": 5e-4, "max_steps": 300, "warmup_fraction": 0.06}, 2, {1}),  # round(18) warm-up steps
    ({"lr": 5e-4, "max_steps": 300, "warmup_fraction": 0.0, "warmup_steps": 0}, 1, set()),
    ({"lr": 5e-4, "max_steps": 4, "warmup_fraction": 0.06}, 1, set()),  # round(0.24) = 0: no warm-up
    ({"lr": 5e-4, "max_steps": 4, "warmup_fraction": 0.0, "warmup_steps": 2}, 2, {1}),
    ({"objective": "mlm"}, None, set()),  # no schedule recorded
    ({"lr": "fast", "max_steps": 4, "warmup_fraction": 0.1}, None, set()),
    (None, None, set()),
    # a Trainer's arguments, as dynamics.callback records them
    ({"learning_rate": 1e-3, "warmup_steps": 100, "lr_scheduler_type": "linear"}, 2, {1}),
    ({"learning_rate": 1e-3, "warmup_steps": 0, "lr_scheduler_type": "linear"}, 1, set()),
    ({"learning_rate": 1e-3, "warmup_steps": 10, "lr_scheduler_type": "constant_with_warmup"}, 2, {1}),
    ({"learning_rate": 1e-3, "warmup_steps": 10, "lr_scheduler_type": "inverse_sqrt"}, None, set()),  # not known
])
def test_learning_rates_from_the_recorded_schedule(tmp_path: Path, config: dict | None, first: int | None,
                                                   zero: set[int]) -> None:
    rates = ig.learning_rates(_series(tmp_path, config, b""))
    assert (rates.positive_from, set(rates.zero), rates.unreadable) == (first, zero, None)


def test_learning_rates_from_the_log_and_what_of_it_was_lost(tmp_path: Path) -> None:
    rows = [{"step": 1, "lr": 0.0}, {"step": 2, "lr": 1e-4}, {"step": 2, "split": "validation", "lr": 0.0}]
    rates = ig.learning_rates(_series(tmp_path, {}, "".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert (set(rates.zero), set(rates.positive), rates.unreadable) == ({1}, {2}, None)
    rates = ig.learning_rates(_series(tmp_path, {}, bytes(range(128, 256)) + b"\n" + b'{"step": 3}\n'))
    assert rates.unreadable is not None and str(tmp_path / "run" / "log.jsonl") in rates.unreadable


def test_folder_named_for_another_step() -> None:
    snaps = _clean()
    snaps[3] = R("r", 4, 1024, "h4", 5, "step-0000005")  # step-0000005/ records step 4
    (flag,) = ig.check_series(snaps)
    assert (flag.kind, flag.steps) == ("step_order", (4, 5))
    assert "step-0000005 is named for step 5 but records step 4" in flag.message


def test_tokens_seen_that_fall_or_stay() -> None:
    snaps = _clean()
    snaps[3] = R("r", 4, 100, "h4", 4)  # fewer tokens at step 4 than at step 2 (512)
    flags = ig.check_series(snaps)
    assert [(f.kind, f.steps) for f in flags] == [("tokens_not_increasing", (2, 4))]
    assert "fall from 512 to 100 from step 2 to step 4" in flags[0].message
    same = [R("r", 0, 0), R("r", 1, 256), R("r", 2, 256)]
    (flag,) = ig.check_series(same)
    assert flag.steps == (1, 2) and "stay at 256 from step 1 to step 2" in flag.message
    unknown = [R("r", 0, 0), R("r", 1, None), R("r", 2, 512)]
    assert ig.check_series(unknown) == []


def test_records_in_any_order_are_checked_in_step_order() -> None:
    snaps = list(reversed(_clean()))
    assert ig.check_series(snaps) == []
    with pytest.raises(ValueError, match="one run at a time"):
        ig.check_series([R("a", 0), R("b", 1)])


def test_every_kind_in_one_series() -> None:
    snaps = [R("r", 0, 0, "w", 0), R("r", 2, 0, "w", 3)]
    assert [f.kind for f in ig.check_series(snaps)] == list(ig.KINDS)
    assert ig.note_rows(ig.check_series(snaps))[0] == (2, ig.check_series(snaps)[0].message)


# --------------------------------------------------------------------------------------------------- hashing

def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"embeddings.weight": rng.standard_normal((50, 8)).astype(np.float32),
            "layer.0.bias": rng.standard_normal(8).astype(np.float32),
            "layer.0.weight": rng.standard_normal((8, 8)).astype(np.float32),
            "position_ids": np.arange(16, dtype=np.int64)[None]}


def _save(folder: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata=metadata)
    return folder


def test_hash_is_stable_and_sees_one_element(tmp_path: Path) -> None:
    t = _tensors()
    a = _save(tmp_path / "a", t)
    h, method = ig.weights_hash(a)
    assert method == ig.TENSORS_METHOD and len(h) == 64 and ig.weights_hash(a) == (h, method)
    changed = {k: v.copy() for k, v in t.items()}
    changed["layer.0.weight"][3, 5] = np.nextafter(changed["layer.0.weight"][3, 5], np.float32(np.inf))
    assert ig.weights_hash(_save(tmp_path / "b", changed))[0] != h
    cast = {**t, "layer.0.bias": t["layer.0.bias"].astype(np.float16)}
    assert ig.weights_hash(_save(tmp_path / "c", cast))[0] != h  # same values, another dtype
    reshaped = {**t, "layer.0.weight": t["layer.0.weight"].reshape(4, 16)}
    assert ig.weights_hash(_save(tmp_path / "d", reshaped))[0] != h  # same bytes, another shape
    renamed = {("layer.0.weights" if k == "layer.0.weight" else k): v for k, v in t.items()}
    assert ig.weights_hash(_save(tmp_path / "e", renamed))[0] != h


def test_hash_ignores_file_layout(tmp_path: Path) -> None:
    """Tensor order in the file, metadata and sharding do not change the weights, so not the hash."""
    t = _tensors()
    h = ig.weights_hash(_save(tmp_path / "a", t))[0]
    backwards = dict(reversed(list(t.items())))
    assert ig.weights_hash(_save(tmp_path / "b", backwards, {"format": "pt", "note": "other"}))[0] == h
    shards = tmp_path / "sharded"
    shards.mkdir()
    names = sorted(t)
    save_file({k: t[k] for k in names[:2]}, str(shards / "model-00001-of-00002.safetensors"))
    save_file({k: t[k] for k in names[2:]}, str(shards / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {k: f"model-0000{1 if i < 2 else 2}-of-00002.safetensors" for i, k in enumerate(names)}}
    (shards / "model.safetensors.index.json").write_text(json.dumps(index))
    assert ig.weights_hash(shards) == (h, ig.TENSORS_METHOD)


def test_pytorch_bin_is_hashed_as_file_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"x" * 3_000_000)
    h, method = ig.weights_hash(folder)
    assert method == ig.FILE_METHOD
    (folder / "pytorch_model.bin").write_bytes(b"x" * 2_999_999 + b"y")
    assert ig.weights_hash(folder)[0] != h


def test_truncated_weights_have_no_hash(tmp_path: Path) -> None:
    folder = _save(tmp_path / "a", _tensors())
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="outside the file"):
        ig.weights_hash(folder)
    assert ig.hash_entry(folder) is None
    assert ig.hash_entry(tmp_path / "no-such-folder") is None


def test_hash_entry_is_reused_while_the_files_are_unchanged(tmp_path: Path) -> None:
    folder = _save(tmp_path / "a", _tensors())
    entry = ig.hash_entry(folder)
    assert entry is not None and entry["sha256"] == ig.weights_hash(folder)[0] and entry["seconds"] >= 0
    planted = {**entry, "sha256": "0" * 64}  # a cached entry with the same stamp is trusted, not recomputed
    assert ig.hash_entry(folder, planted)["sha256"] == "0" * 64
    _save(folder, _tensors(seed=1))  # rewritten: size equal, modification time not
    os.utime(folder / "model.safetensors", ns=(entry["files"][0][2] + 10**9,) * 2)
    fresh = ig.hash_entry(folder, planted)
    assert fresh["sha256"] not in ("0" * 64, entry["sha256"])


def test_cached_entries_read_the_store_info() -> None:
    good = {"sha256": "ab", "method": ig.TENSORS_METHOD, "files": []}
    infos = [(0, json.dumps({"step": 0, ig.HASH_KEY: good})), (1, json.dumps({"step": 1})), (2, None), (3, "{oops"),
             (4, {ig.HASH_KEY: good})]
    assert ig.cached_entries(infos) == {0: good, 4: good}


# ------------------------------------------------------------------------------------------ partial duplicates

def _parts(run: str, step: int, **digests: str) -> R:
    whole = "".join(f"{k}{v}" for k, v in sorted(digests.items()))
    return R(run, step, 10 * step, whole, step, None, digests)


def test_tensors_that_return_to_an_earlier_value_are_flagged() -> None:
    """Part of step 8 is step 1's (a shard published under the wrong step): identical there, different between."""
    snaps = [_parts("r", 0, emb="e0", w="w0"), _parts("r", 1, emb="e1", w="w1"), _parts("r", 4, emb="e4", w="w4"),
             _parts("r", 8, emb="e1", w="w8")]
    (flag,) = ig.check_series(snaps)
    assert (flag.kind, flag.steps) == ("duplicate_weights", (1, 8))
    assert "steps 1 and 8 share 1 of 2 tensors (emb)" in flag.message


def test_tensors_that_never_change_are_not_flagged() -> None:
    frozen = [_parts("r", s, emb="frozen", w=f"w{s}") for s in (0, 1, 2, 4)]
    assert ig.check_series(frozen) == []
    unhashed_between = [_parts("r", 0, emb="e0", w="w0"), R("r", 1, 10), _parts("r", 2, emb="e0", w="w2")]
    assert ig.check_series(unhashed_between) == []  # no hashed step between to show the tensor changed


def test_partial_copy_found_in_real_files(tmp_path: Path) -> None:
    steps = {s: _tensors(seed=s) for s in (0, 1, 2)}
    steps[2]["embeddings.weight"] = steps[0]["embeddings.weight"]
    entries = {s: ig.hash_entry(_save(tmp_path / f"step-{s:07d}", t)) for s, t in steps.items()}
    assert all(e is not None and len(e["tensors"]) == 4 for e in entries.values())
    records = [R("r", s, 10 * s, e["sha256"], s, None, e["tensors"]) for s, e in entries.items()]
    flags = ig.check_series(records)
    assert [(f.steps, "share 1 of 4 tensors (embeddings.weight)" in f.message) for f in flags] == \
        [((0, 2), True)]


def test_a_whole_copy_is_one_flag_not_one_per_tensor() -> None:
    snaps = [_parts("r", 0, emb="e0", w="w0"), _parts("r", 2, emb="e2", w="w2"), _parts("r", 4, emb="e0", w="w0")]
    (flag,) = ig.check_series(snaps)
    assert flag.steps == (0, 4) and "hold identical weights" in flag.message
