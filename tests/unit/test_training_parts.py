"""Packing, data order, snapshot schedule, presets and configuration parsing."""

import json

import numpy as np
import pytest

from taco.config import TrainConfig, parse_args
from taco.data import BlockSampler, pack_blocks
from taco.errors import TacoError
from taco.presets import PRESETS, build_config, count_parameters
from taco.snapshots import snapshot_steps


def test_pack_blocks_wraps_content_and_separates_documents():
    blocks = pack_blocks([[10, 11, 12], [20, 21], [], [30, 31, 32, 33]], block_size=5, cls_id=2, sep_id=3)
    # stream: 10 11 12 [SEP] 20 21 [SEP] 30 31 32 33 → 3 content tokens per block, the tail dropped
    assert blocks.tolist() == [[2, 10, 11, 12, 3], [2, 3, 20, 21, 3], [2, 3, 30, 31, 3]]
    assert blocks.dtype == np.int32


def test_block_sampler_is_a_function_of_the_batch_index_and_partitions_ranks():
    a = BlockSampler(100, 4, seed=1)
    b = BlockSampler(100, 4, seed=1)
    assert [a.indices(i).tolist() for i in (0, 30, 3)] == [b.indices(i).tolist() for i in (0, 30, 3)]
    ranks = [BlockSampler(100, 4, seed=1, rank=r, world=2).indices(5) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    epoch = np.concatenate([a.indices(i) for i in range(a.per_epoch)])
    assert len(set(epoch.tolist())) == len(epoch) == 100  # every block once per epoch
    assert not np.array_equal(a.indices(0), a.indices(a.per_epoch))  # a new order each epoch


def test_snapshot_schedule_is_log_spaced_then_regular_with_final():
    assert snapshot_steps(1000, 100) == [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600, 700, 800,
                                         900, 1000]
    assert snapshot_steps(250, 100, log_spaced=False) == [0, 100, 200, 250]
    assert snapshot_steps(1, 100) == [0, 1]


def test_presets_match_their_names():
    small = build_config("small", vocab_size=8192)
    assert (small.num_hidden_layers, small.hidden_size, small.num_attention_heads) == (4, 512, 8)
    assert set(PRESETS) == {"tiny", "mini", "small", "base"}
    cfg = build_config("tiny", 100, overrides={"num_hidden_layers": 3})
    assert cfg.num_hidden_layers == 3
    import torch
    from transformers import BertForMaskedLM

    model = BertForMaskedLM(build_config("tiny", 300))
    counts = count_parameters(model.config)
    body = sum(p.numel() for n, p in model.bert.named_parameters() if "embeddings" not in n)
    assert counts["non_embedding"] == body
    del torch


@pytest.mark.parametrize("overrides", [{"not_a_field": 1}, {"hidden_size": 100, "num_attention_heads": 3}])
def test_bad_overrides_raise(overrides):
    with pytest.raises(TacoError):
        build_config("tiny", 100, overrides=overrides)


def test_unknown_preset_names_the_choices():
    with pytest.raises(TacoError, match="tiny"):
        build_config("huge", 100)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--tc-window", "4"], "odd"),
        (["--tc-window", "1"], "odd"),
        (["--tc-negatives", "0"], "negatives"),
        (["--block-size", "1024"], "position limit"),
        (["--resume", "--overwrite"], "contradict"),
        (["--model-overrides", "{oops"], "JSON"),
        (["--tc-kernel", "batched"], "tc-negative-sharing sequence"),
        (["--warmup-steps", "-1"], "warmup-steps"),
    ],
)
def test_invalid_values_are_reported(flags, fragment):
    cfg = parse_args(flags)
    with pytest.raises(TacoError, match=fragment):
        cfg.resolved().validate()


def test_config_file_supplies_defaults_that_flags_override(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("objective: taco\ntc-window: 7\nbatch_size: 8\n")
    cfg = parse_args(["--config", str(path), "--batch-size", "4"])
    assert (cfg.objective, cfg.tc_window, cfg.batch_size) == ("taco", 7, 4)
    jpath = tmp_path / "c.json"
    jpath.write_text(json.dumps({"preset": "tiny", "model_overrides": {"num_hidden_layers": 1}}))
    cfg = parse_args(["--config", str(jpath)])
    assert cfg.preset == "tiny" and cfg.model_overrides_dict() == {"num_hidden_layers": 1}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"no_such_option": 1}))
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--config", str(bad)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "no_such_option" in err


def test_defaults_resolve_output_dir():
    cfg = TrainConfig(objective="taco", preset="tiny").resolved()
    assert cfg.output_dir == "runs/taco-tiny"


def test_tokenising_ignores_a_saved_tokenizers_padding_and_truncation(tmp_path):
    from taco.data import tokenize_documents
    from taco.tokenizer import load_tokenizer, train_wordpiece

    tok = train_wordpiece(["the people of the united states and their government"] * 30, 80)
    tok.backend_tokenizer.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    tok.backend_tokenizer.enable_truncation(max_length=4)
    tok.save_pretrained(str(tmp_path))
    loaded = load_tokenizer(tmp_path)
    ids = tokenize_documents(["the people", "the people of the united states and their government"], loaded,
                             progress=False)
    assert [len(x) for x in ids] == [2, 9]
    assert loaded.pad_token_id not in ids[0]


def test_warmup_steps_override_the_fraction():
    assert TrainConfig(max_steps=1000, warmup_fraction=0.06).warmup() == 60
    assert TrainConfig(max_steps=250000, warmup_fraction=0.06, warmup_steps=2500).warmup() == 2500
    cfg = parse_args(["--warmup-steps", "2500", "--tc-negative-sharing", "sequence", "--tc-kernel", "batched"])
    cfg.validate()
    assert (cfg.warmup_steps, cfg.tc_negative_sharing, cfg.tc_kernel) == (2500, "sequence", "batched")


def test_runs_written_before_the_later_fields_still_resume(tmp_path):
    """A run.json without the later-added fields reads as their defaults, and the state digest leaves them out
    at their defaults, so a run started before they existed resumes; a changed value is still refused."""
    import dataclasses

    from taco.state import config_digest
    from taco.train import check_output_dir

    cfg = TrainConfig(output_dir=str(tmp_path), objective="taco")
    old = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in TrainConfig.ADDED_LATER}
    assert config_digest(cfg.digest_fields(), ()) == config_digest(old, ())
    changed = dataclasses.replace(cfg, tc_negative_sharing="sequence")
    assert config_digest(changed.digest_fields(), ()) != config_digest(old, ())
    (tmp_path / "run.json").write_text(json.dumps({"config": old}))
    assert check_output_dir(tmp_path, dataclasses.replace(cfg, resume=True)) == "resume"
    with pytest.raises(TacoError, match="tc_negative_sharing"):
        check_output_dir(tmp_path, dataclasses.replace(changed, resume=True))


def test_identity_leaves_out_where_a_run_and_its_inputs_live():
    a = TrainConfig(output_dir="out/run", corpus="corpus.txt", tokenizer="", init_embeddings="")
    moved = TrainConfig(output_dir="/elsewhere/run", corpus="../corpus.txt", tokenizer="out/run/tokenizer",
                        init_embeddings="", device="cpu", max_steps=900)
    assert a.identity() == moved.identity()
    assert "output_dir" not in a.identity() and "corpus" not in a.identity()
    assert TrainConfig(init_embeddings="runs/mlm").identity() != a.identity()  # given or not still counts
    assert TrainConfig(init_embeddings="runs/mlm").identity() == TrainConfig(init_embeddings="../mlm").identity()
    assert TrainConfig(seed=7).identity() != a.identity()


def test_a_run_resumes_wherever_it_lives(tmp_path, monkeypatch, capsys):
    """Trained as out/run from one folder, resumed as ../a/out/run from another and after a move, from a corpus
    spelled differently each time; a state saved before the identity left paths out still resumes; another
    corpus under the same name is refused."""
    import dataclasses
    import shutil

    import torch

    from taco.state import STATE_FILE, config_digest
    from taco.train import main
    from tests.integration.conftest import english_docs

    (tmp_path / "corpus.txt").write_text("\n\n".join(english_docs(120_000)))
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    common = ["--preset", "tiny", "--vocab-size", "600", "--block-size", "32", "--batch-size", "8",
              "--eval-blocks", "8", "--snapshot-every", "1", "--no-snapshot-log-spaced", "--no-progress",
              "--device", "cpu", "--data-cache", str(tmp_path / "cache")]
    monkeypatch.chdir(tmp_path / "a")
    assert main([*common, "--output-dir", "out/run", "--corpus", "../corpus.txt", "--max-steps", "1"]) == 0
    monkeypatch.chdir(tmp_path / "b")
    assert main([*common, "--output-dir", "../a/out/run", "--corpus", str(tmp_path / "corpus.txt"),
                 "--max-steps", "2", "--resume"]) == 0, capsys.readouterr().err
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "a" / "out" / "run", moved)
    assert main([*common, "--output-dir", str(moved), "--corpus", "../corpus.txt", "--max-steps", "3",
                 "--resume"]) == 0, capsys.readouterr().err
    assert (moved / "snapshots" / "step-0000003" / "model.safetensors").is_file()

    # a state saved by the code before: its digest hashed the paths as run.json records them
    saved = json.loads((moved / "run.json").read_text())["config"]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    old = {k: v for k, v in saved.items() if not (k in TrainConfig.ADDED_LATER and v == defaults[k])}
    path = moved / "state" / STATE_FILE
    state = torch.load(path, weights_only=False)
    for digest, resumes in ((config_digest(old, TrainConfig.RUNTIME_ONLY + ("max_steps",)), True),
                            ("0" * 64, False)):
        torch.save({**state, "config_digest": digest}, path)
        code = main([*common, "--output-dir", str(moved), "--corpus", "../corpus.txt", "--max-steps", "3",
                     "--resume"])
        err = capsys.readouterr().err
        assert code == (0 if resumes else 2), err
        assert resumes or "state was written under a different configuration" in err

    (tmp_path / "other.txt").write_text("\n\n".join(english_docs(120_000)[::-1]))
    code = main([*common, "--output-dir", str(moved), "--corpus", "../other.txt", "--max-steps", "4", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "holds other text than the corpus" in err and err.count("\n") == 1, err
    assert not (moved / "snapshots" / "step-0000004").exists()
