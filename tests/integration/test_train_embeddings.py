"""`taco.train --freeze-embeddings` and `--init-embeddings` on a tiny model (2 layers, hidden 64, 4 steps of
8 × 32 tokens of real English text): a frozen matrix stays bit-identical while the rest trains; an initialised
one starts as the donor's; a donor that cannot work exits 2 with one line and leaves the output dir alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from taco.embeddings import WORD_EMBEDDINGS
from taco.train import main
from tests.integration.conftest import one_torch_thread
from tests.integration.test_experiment_run import _tree_digest, train_cache

TINY = ["--preset", "tiny", "--model-overrides", '{"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}',
        "--vocab-size", "2000", "--block-size", "32", "--batch-size", "8", "--eval-blocks", "16", "--no-progress",
        "--device", "cpu", "--snapshot-every", "2", "--log-every", "2"]
QUERY = "bert.encoder.layer.0.attention.self.query.weight"


@pytest.fixture(autouse=True)
def _single_thread() -> object:
    with one_torch_thread():  # shared 2-core machines
        yield


@pytest.fixture(scope="module")
def train(small_english_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """`train(out, *flags)`: taco.train's exit status for a tiny run on the small corpus."""
    cache = train_cache(tmp_path_factory)

    def run(out: Path, *extra: str) -> int:
        return main([*TINY, "--corpus", str(small_english_corpus), "--data-cache", str(cache),
                     "--output-dir", str(out), *extra])

    return run


@pytest.fixture(scope="module")
def donor(train, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain MLM run (seed 1, snapshots at 0, 1, 2, 4) whose embeddings others start from. Read-only."""
    out = tmp_path_factory.mktemp("donor") / "mlm"
    assert train(out, "--max-steps", "4", "--seed", "1") == 0
    return out


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "snapshots" / f"step-{step:07d}" / "model.safetensors"))


def _steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "snapshots").glob("step-*"))


def test_frozen_embeddings_stay_identical_while_the_rest_trains(train, donor: Path, tmp_path: Path) -> None:
    out = tmp_path / "frozen"
    assert train(out, "--max-steps", "4", "--seed", "2", "--freeze-embeddings") == 0
    assert json.loads((out / "run.json").read_text())["config"]["freeze_embeddings"] is True
    assert _steps(out) == [0, 1, 2, 4]
    first = _weights(out, 0)
    for step in (1, 2, 4):
        w = _weights(out, step)
        assert torch.equal(w[WORD_EMBEDDINGS], first[WORD_EMBEDDINGS]), step
        assert not torch.equal(w[QUERY], first[QUERY]), step
        assert not torch.equal(w["cls.predictions.bias"], first["cls.predictions.bias"])  # the tied head's bias trains
    # the same settings without the flag do move the matrix
    assert not torch.equal(_weights(donor, 4)[WORD_EMBEDDINGS], _weights(donor, 0)[WORD_EMBEDDINGS])


def test_init_embeddings_start_from_the_donors_final_matrix(train, donor: Path, tmp_path: Path) -> None:
    out = tmp_path / "init"
    assert train(out, "--max-steps", "2", "--seed", "2", "--init-embeddings", str(donor)) == 0
    assert json.loads((out / "run.json").read_text())["config"]["init_embeddings"] == str(donor)
    start, donor_final = _weights(out, 0), _weights(donor, 4)
    assert torch.equal(start[WORD_EMBEDDINGS], donor_final[WORD_EMBEDDINGS])
    assert not torch.equal(start[WORD_EMBEDDINGS], _weights(donor, 0)[WORD_EMBEDDINGS])
    assert not torch.equal(start[QUERY], donor_final[QUERY])  # only the word embeddings are copied
    assert not torch.equal(_weights(out, 2)[WORD_EMBEDDINGS], start[WORD_EMBEDDINGS])  # and they train on

    # a snapshot folder names that snapshot's matrix; with --freeze-embeddings it stays so
    snap = donor / "snapshots" / "step-0000002"
    out = tmp_path / "init-frozen"
    assert train(out, "--max-steps", "1", "--seed", "2", "--init-embeddings", str(snap), "--freeze-embeddings") == 0
    for step in (0, 1):
        assert torch.equal(_weights(out, step)[WORD_EMBEDDINGS], _weights(donor, 2)[WORD_EMBEDDINGS])


@pytest.fixture(scope="module")
def other_tokenizer_run(small_english_corpus: Path, train, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step run on the same text with another (tiny) tokenizer."""
    from taco.tokenizer import train_wordpiece

    root = tmp_path_factory.mktemp("other-tok")
    train_wordpiece(["a completely different tiny corpus of words"] * 20, 60).save_pretrained(str(root / "tok"))
    assert train(root / "run", "--max-steps", "1", "--tokenizer", str(root / "tok")) == 0
    return root / "run"


@pytest.mark.parametrize("case", ["other-tokenizer", "no-snapshots", "corrupt-weights"])
def test_unusable_donor_exits_2_and_leaves_the_output_alone(case: str, train, donor: Path, tmp_path: Path,
                                                             request: pytest.FixtureRequest,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    if case == "other-tokenizer":
        source = request.getfixturevalue("other_tokenizer_run")
        expected = (f"--init-embeddings {source / 'snapshots' / 'step-0000001'}: that run used a different tokenizer;"
                    f" pass --tokenizer {source / 'tokenizer'}")
    elif case == "no-snapshots":
        source = tmp_path / "empty-run"
        (source / "snapshots").mkdir(parents=True)
        expected = f"--init-embeddings {source}: no model.safetensors there nor under snapshots/step-*"
    else:
        source = tmp_path / "corrupt"
        shutil.copytree(donor, source)
        weights = source / "snapshots" / "step-0000004" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short, as by a full disk
        expected = f"--init-embeddings {weights} is unreadable ("

    existing = tmp_path / "existing"
    shutil.copytree(donor, existing)
    before = _tree_digest(existing)
    fresh = tmp_path / "fresh"
    for argv in ([fresh], [existing, "--overwrite"]):
        assert train(argv[0], *argv[1:], "--max-steps", "2", "--init-embeddings", str(source)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not fresh.exists()
    assert _tree_digest(existing) == before
