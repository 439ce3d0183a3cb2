"""Extraction: MLM head adapters for BERT/RoBERTa/ELECTRA/DistilBERT, hidden-state collection, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dynamics.errors import ProbeError
from dynamics.measure import extract as ex
from dynamics.measure.probe_set import ProbeSet
from tests.integration.conftest import tiny_mlm

V, BLOCK, N_BLOCKS = 50, 12, 5


def toy_probe(seed: int = 0) -> ProbeSet:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, V, size=(N_BLOCKS, BLOCK)).astype(np.int32)
    ids[:, 0], ids[:, -1], ids[1, 5] = 2, 3, 3
    content = ~np.isin(ids, [0, 1, 2, 3, 4])
    masked = content & (rng.random(ids.shape) < 0.2)
    n = int(content.sum())
    return ProbeSet(ids, content, masked, np.zeros(n, np.int8), np.full(n, -1, np.int32), np.zeros(0, np.int32),
                    np.arange(min(n, 16)), np.arange(min(n, 8)), ("frequent", "medium", "rare"), "h", 4, "toy",
                    "probe set")


@pytest.mark.parametrize("arch", ["bert", "roberta", "electra", "distilbert"])
def test_head_adapter_reproduces_the_models_logits(arch: str) -> None:
    torch.manual_seed(0)
    model = tiny_mlm(arch).eval()
    ids = torch.randint(5, V, (2, 7))
    with torch.inference_mode():
        out = model(input_ids=ids, output_hidden_states=True)
        transform, decoder = ex.mlm_head(model)
        logits = decoder(transform(out.hidden_states[-1]))
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "roberta", "electra", "distilbert"])
def test_extract_shapes_and_masked_pass(arch: str) -> None:
    torch.manual_seed(0)
    model = tiny_mlm(arch).eval()
    probe = toy_probe()
    acts = ex.extract(model, probe, has_head=True, batch_size=2)
    n = probe.n_tokens
    assert acts.hidden.shape == (3, n, 32) and acts.hidden.dtype == np.float32
    emb = model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_allclose(acts.emb_rows, emb[probe.tokens])
    # layer 2 of block 0 equals a direct forward of that block at its content positions
    with torch.inference_mode():
        direct = model.base_model(input_ids=torch.from_numpy(probe.ids[:1]).long(), output_hidden_states=True)
    first = probe.content[0]
    np.testing.assert_allclose(acts.hidden[2, : first.sum()], direct.hidden_states[2][0][torch.from_numpy(first)].numpy(),
                               rtol=1e-4, atol=1e-5)
    m = acts.masked
    assert m is not None and len(m.rank) == probe.masked.sum() == len(m.index)
    assert (m.rank >= 1).all() and (m.rank <= V).all()
    assert (probe.tokens[m.index] == probe.ids[probe.masked]).all()


@pytest.mark.parametrize("arch", ["bert", "roberta", "electra", "electra-factorised", "distilbert"])
def test_last_layer_at_masked_positions_equals_the_full_pass(arch: str) -> None:
    torch.manual_seed(0)
    model = tiny_mlm(arch.split("-")[0], embedding_size=16 if arch.endswith("factorised") else None).eval()
    encoder = model.base_model
    ids = torch.randint(5, V, (4, 11))
    where = torch.rand(ids.shape) < 0.2
    where[1] = False  # a sequence without masked positions
    where[2] = True  # one masked everywhere
    where[0, 3] = True
    with torch.inference_mode():
        full = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[where]
        part = ex.last_hidden_at(encoder, ids, where)
    # the trimmed last layer is used where the layout is BERT's
    assert (ex._trimmable_last_layer(encoder) is not None) == (arch != "distilbert")
    assert part.shape == full.shape == (int(where.sum()), 32)
    torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # the model has all its layers again afterwards
        again = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[where]
    torch.testing.assert_close(again, full, rtol=0, atol=0)


def test_factorised_embeddings_keep_the_transform_in_embedding_space() -> None:
    model = tiny_mlm("electra", embedding_size=16).eval()
    acts = ex.extract(model, toy_probe(), has_head=True)
    assert acts.emb_rows.shape[1] == 16 and acts.hidden.shape[2] == 32
    assert acts.masked is not None and acts.masked.transform.shape[1] == 16


def test_headless_checkpoint_and_bad_files(tmp_path: Path) -> None:
    import transformers as tf

    bert = tiny_mlm("bert")
    encoder_only = tf.BertModel(bert.config)
    encoder_only.save_pretrained(str(tmp_path / "enc"))
    model, has_head, notes = ex.load_model(tmp_path / "enc")
    assert not has_head and any("no MLM head" in n for n in notes)
    acts = ex.extract(model, toy_probe(), has_head=has_head)
    assert acts.masked is None and acts.hidden.shape[0] == 3

    bert.save_pretrained(str(tmp_path / "full"))
    _, has_head, notes = ex.load_model(tmp_path / "full")
    assert has_head and not notes

    (tmp_path / "full" / "config.json").write_text("{broken")
    with pytest.raises(ProbeError, match=str(tmp_path / "full")):
        ex.load_model(tmp_path / "full")


