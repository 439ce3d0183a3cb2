"""Extraction from causal LMs (GPT-2, GPT-NeoX, Llama): loading, the next-token head read off pass 1, and its
ranks and surprisals against a brute-force float64 computation from the model's own logits."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamics.measure import extract as ex
from dynamics.measure.probe_set import ProbeSet
from tests.causal_fixture import ARCHS, tiny_causal
from tests.integration.conftest import tiny_mlm

V, BLOCK, N_BLOCKS = 50, 12, 5
EOS = 0


def toy_decoder_probe(seed: int = 0) -> ProbeSet:
    """Blocks of a decoder tokenizer (no CLS/SEP): content from position 0, an EOS (id 0) inside two blocks, and
    masked positions that include a block's first token and the token after an EOS."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, size=(N_BLOCKS, BLOCK)).astype(np.int32)
    ids[1, 5], ids[3, 0] = EOS, EOS
    content = ids != EOS
    masked = content & (rng.random(ids.shape) < 0.3)
    masked[0, 0] = masked[2, 0] = masked[1, 6] = True  # two first positions (no context), one after an EOS
    n = int(content.sum())
    return ProbeSet(ids, content, masked, np.zeros(n, np.int8), np.full(n, -1, np.int32), np.zeros(0, np.int32),
                    np.arange(min(n, 16)), np.arange(min(n, 8)), ("frequent", "medium", "rare"), "h", None, "toy",
                    "probe set", special_ids=np.array([EOS]))


@pytest.mark.parametrize("arch", ARCHS)
def test_next_token_head_reproduces_the_models_logits(arch: str) -> None:
    """The head (output embedding) applied to the base model's last hidden state — and to layer L of
    `hidden_states`, which HF already takes after the final LayerNorm/RMSNorm — gives `model(input_ids).logits`."""
    torch.manual_seed(0)
    model = tiny_causal(arch, V).eval()
    ids = torch.randint(1, V, (2, 9))
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
        out = model.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)
        head = ex.causal_head(model)
        assert head is not None
        torch.testing.assert_close(head(out.last_hidden_state), logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(head(out.hidden_states[-1]), logits, rtol=1e-5, atol=1e-5)
    assert len(out.hidden_states) == 3


def brute_force(model: torch.nn.Module, probe: ProbeSet) -> dict[str, np.ndarray]:
    """Per target (masked, not at column 0, row-major): the float64 model's own logits at i − 1 → rank (1 + the
    number of tokens scoring strictly higher), surprisal (logsumexp − z_true), the head input and layer L there."""
    m64 = copy.deepcopy(model).double().eval()
    ranks, surprisals, inputs, layer_l, index = [], [], [], [], []
    content_index = np.cumsum(probe.content.ravel()).reshape(probe.content.shape) - 1
    with torch.inference_mode():
        for b in range(probe.n_blocks):
            ids = torch.from_numpy(probe.ids[b : b + 1].astype(np.int64))
            logits = m64(input_ids=ids).logits[0]
            base = m64.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)
            for i in np.flatnonzero(probe.masked[b]):
                if i == 0:
                    continue
                z, true = logits[i - 1], int(probe.ids[b, i])
                ranks.append(1 + int((z > z[true]).sum()))
                surprisals.append(float(torch.logsumexp(z, 0) - z[true]))
                inputs.append(base.last_hidden_state[0, i - 1].numpy())
                layer_l.append(base.hidden_states[-1][0, i - 1].numpy())
                index.append(content_index[b, i])
    return {"rank": np.array(ranks), "surprisal": np.array(surprisals), "transform": np.array(inputs),
            "hidden": np.array(layer_l), "index": np.array(index)}


@pytest.mark.parametrize("arch", ARCHS)
def test_next_token_outputs_equal_a_brute_force_computation(arch: str) -> None:
    torch.manual_seed(1)
    model = tiny_causal(arch, V).eval()
    probe = toy_decoder_probe()
    acts = ex.extract(model, probe, has_head=True, batch_size=2)
    ref = brute_force(model, probe)
    m = acts.masked
    assert acts.kind == "causal" and acts.has_head and m is not None and m.head == "next_token"
    assert len(m.rank) == int(probe.masked.sum()) - 2  # the two targets at a block's first position are dropped
    assert any("2 of" in n and "first token" in n for n in acts.notes)
    np.testing.assert_array_equal(m.index, ref["index"])
    np.testing.assert_array_equal(m.rank, ref["rank"])
    np.testing.assert_allclose(m.surprisal, ref["surprisal"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(m.transform, ref["transform"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(m.hidden, ref["hidden"], rtol=0, atol=1e-5)
    # pass 1's hidden states are the full forward's at the content positions (the EOS cells left out)
    with torch.inference_mode():
        direct = model.base_model(input_ids=torch.from_numpy(probe.ids[1:2]).long(), output_hidden_states=True)
    row = torch.from_numpy(probe.content[1])
    start = int(probe.content[0].sum())
    np.testing.assert_allclose(acts.hidden[2, start : start + int(row.sum())], direct.hidden_states[2][0][row].numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acts.emb_rows, model.get_input_embeddings().weight.detach().numpy()[probe.tokens])
    note = ex.head_note(acts)
    assert note is not None and "next-token head" in note and type(model).__name__ in note


def test_no_masked_pass_means_no_head_outputs() -> None:
    torch.manual_seed(0)
    acts = ex.extract(tiny_causal("gpt2", V).eval(), toy_decoder_probe(), has_head=True, masked_pass=False)
    assert acts.masked is None and ex.head_note(acts) is None


def test_architecture_kind() -> None:
    for arch in ("bert", "roberta", "electra", "distilbert"):
        assert ex.architecture_kind(tiny_mlm(arch).config) == "encoder"
    for arch in ARCHS:
        assert ex.architecture_kind(tiny_causal(arch, V).config) == "causal"


def test_rescaled_logits_are_not_recognised() -> None:
    model = tiny_causal("llama", V)
    assert ex.causal_head(model) is model.lm_head
    model.config.logit_scale = 0.5  # as Cohere's configs have: logits = lm_head(h) · scale
    assert ex.causal_head(model) is None


def test_loading_causal_checkpoints_with_and_without_a_head(tmp_path: Path) -> None:
    import transformers as tf

    torch.manual_seed(0)
    for arch in ARCHS:
        tiny_causal(arch, V).save_pretrained(str(tmp_path / arch))
        model, has_head, notes = ex.load_model(tmp_path / arch)
        assert has_head and not notes and ex.architecture_kind(model.config) == "causal"
        assert type(model).__name__ == {"gpt2": "GPT2LMHeadModel", "neox": "GPTNeoXForCausalLM",
                                        "llama": "LlamaForCausalLM"}[arch]
    # a decoder saved without its (untied) head: read through the base model, head metrics skipped with a note
    base = tf.GPTNeoXModel(tiny_causal("neox", V).config)
    base.save_pretrained(str(tmp_path / "headless"))
    model, has_head, notes = ex.load_model(tmp_path / "headless")
    assert not has_head and any("no causal-LM head weights" in n for n in notes)
    acts = ex.extract(model, toy_decoder_probe(), has_head=has_head)
    assert acts.masked is None and acts.kind == "causal" and acts.hidden.shape[0] == 3
