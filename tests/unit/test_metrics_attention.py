"""The attention and copying families on analytic cases, the copy blocks' construction, and the probe's reading of
attention probabilities from transformers' sdpa path (against the models' own eager probabilities, hidden states
unchanged) for BERT, GPT-2, GPT-NeoX and Llama-style models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamics.measure import attention as att
from dynamics.measure import probe_set as ps
from dynamics.metrics import registry
from dynamics.metrics.attention import attention_stats, attention_sums, attn_next_token_max, sink_positions
from dynamics.metrics.copying import CopyPredictions, copy_scores, copy_sums, repeat_copy_accuracy


def _all(b: int, t: int) -> torch.Tensor:
    return torch.ones(b, t, dtype=torch.bool)


def test_uniform_attention_has_entropy_ln_n_and_mean_distance() -> None:
    b, h, t = 2, 3, 7
    probs = torch.full((b, h, t, t), 1.0 / t, dtype=torch.float64)
    sums = attention_sums(probs, _all(b, t), sink_positions(torch.zeros(b, t, dtype=torch.bool)), causal=False)
    stats = attention_stats(sums)
    assert stats["attn_entropy"] == pytest.approx(math.log(t), abs=1e-12)
    distance = np.mean([np.mean([abs(i - j) for j in range(t)]) for i in range(t)])
    assert stats["attn_distance"] == pytest.approx(distance, abs=1e-12)
    assert stats["attn_sink_share"] == pytest.approx(1.0 / t, abs=1e-12)  # S = {0}: no special tokens
    assert stats["attn_prev_token_max"] == pytest.approx(1.0 / t, abs=1e-12)


def test_attention_all_on_position_0_is_a_sink_share_of_1() -> None:
    b, h, t = 2, 2, 5
    probs = torch.zeros(b, h, t, t)
    probs[..., 0] = 1.0
    special = torch.zeros(b, t, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] … [SEP]
    queries = ~special
    stats = attention_stats(attention_sums(probs, queries, sink_positions(special), causal=False))
    assert stats["attn_sink_share"] == pytest.approx(1.0)
    assert stats["attn_entropy"] == pytest.approx(0.0)
    assert stats["attn_distance"] == pytest.approx(np.mean([1, 2, 3]))  # queries 1, 2, 3 attend to 0
    # sinks are the special positions: all on the [SEP] instead is a sink share of 1 too, on a content token 0
    moved = torch.zeros(b, h, t, t)
    moved[..., 2] = 1.0
    assert attention_stats(attention_sums(moved, queries, sink_positions(special), causal=False))[
        "attn_sink_share"] == pytest.approx(0.0)


def test_a_hand_set_previous_token_head_scores_1_and_the_best_head_is_taken() -> None:
    b, h, t = 3, 2, 6
    probs = torch.full((b, h, t, t), 1.0 / t)
    probs[:, 1] = 0.0
    probs[:, 1, 0, 0] = 1.0  # query 0 has no previous key: it does not count
    for i in range(1, t):
        probs[:, 1, i, i - 1] = 1.0
    sums = attention_sums(probs, _all(b, t), sink_positions(torch.zeros(b, t, dtype=torch.bool)), causal=False)
    assert attention_stats(sums)["attn_prev_token_max"] == pytest.approx(1.0)
    assert sums.n_prev == b * (t - 1)
    assert attn_next_token_max(sums) == pytest.approx(1.0 / t)  # head 0, uniform
    heads = sums.means()
    assert heads["attn_prev_token"] == pytest.approx([1.0 / t, 1.0])


def test_next_token_score_is_not_stored_for_causal_models() -> None:
    comp = next(c for c in registry.computations("attention") if "attn_next_token_max" in c.names)
    assert not comp.applicable({"bidirectional_attention": None})
    b, t = 1, 4
    causal = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]
    sums = attention_sums(causal.expand(b, 1, t, t), _all(b, t), sink_positions(_all(b, t) & False), causal=True)
    assert "attn_next_token" not in sums.means()
    # entropy of query i uniform over i + 1 keys is ln(i + 1)
    assert attention_stats(sums)["attn_entropy"] == pytest.approx(np.mean([math.log(i + 1) for i in range(t)]))


def test_induction_and_duplicate_heads_on_a_repeated_block() -> None:
    n_copy, start = 5, 1
    width = start + 2 * n_copy + 1
    probs = torch.zeros(2, 3, width, width)
    probs[..., 0] = 1.0
    second = torch.zeros(2, width, dtype=torch.bool)
    second[:, start + n_copy : start + 2 * n_copy] = True
    for t in range(n_copy):
        q = start + n_copy + t
        probs[:, 0, q] = 0.0
        probs[:, 0, q, start + t] = 1.0  # head 0: duplicate-token head
        probs[:, 1, q] = 0.0
        probs[:, 1, q, start + t + 1] = 1.0  # head 1: induction head
    scores = copy_scores(copy_sums(probs, second, n_copy))
    assert scores == {"dup_token_max": pytest.approx(1.0), "induction_max": pytest.approx(1.0)}
    means = copy_sums(probs, second, n_copy).means()
    assert means["dup_token"] == pytest.approx([1.0, 0.0, 0.0])
    assert means["induction"] == pytest.approx([0.0, 1.0, 0.0])


def test_repeat_copy_accuracy_is_the_share_right_per_copy() -> None:
    out = repeat_copy_accuracy(CopyPredictions(np.array([True, False, False, False]), np.array([True, True, False])))
    assert out == {"first": pytest.approx(0.25), "second": pytest.approx(2 / 3)}
    assert repeat_copy_accuracy(CopyPredictions(np.zeros(0, bool), np.array([True])))["first"] is None


# ------------------------------------------------------------------------------------------------ copy blocks

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]


@pytest.fixture()
def tok(tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from dynamics.find.tokens import load_tokenizer

    t = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]"}))
    return load_tokenizer(tmp_path)


def test_copy_blocks_repeat_random_content_tokens_deterministically(tok) -> None:
    a = ps.copy_blocks(tok, seed=3, n_blocks=6, length=32, block_size=40, vocab_size=len(VOCAB))
    b = ps.copy_blocks(tok, seed=3, n_blocks=6, length=32, block_size=40, vocab_size=len(VOCAB))
    c = ps.copy_blocks(tok, seed=4, n_blocks=6, length=32, block_size=40, vocab_size=len(VOCAB))
    assert a is not None and b is not None and c is not None
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.masked, b.masked)
    assert not np.array_equal(a.ids, c.ids)
    t = a.length
    assert t == (40 - 2) // 2  # capped to fit a probe block with [CLS] and [SEP]
    assert a.ids.shape == (6, 2 + 2 * t) and (a.ids[:, 0] == 2).all() and (a.ids[:, -1] == 3).all()
    r = a.ids[:, 1 : 1 + t]
    assert np.array_equal(r, a.ids[:, 1 + t : 1 + 2 * t]) and (r >= 5).all()
    assert np.array_equal(a.second[0], np.r_[np.zeros(1 + t), np.ones(t), np.zeros(1)].astype(bool))
    k = round(0.15 * t)
    for row in range(6):  # second_scored: masked in the second copy only; first_scored: masked in both copies
        s = np.flatnonzero(a.second_scored[row]) - 1 - t
        f = np.flatnonzero(a.first_scored[row]) - 1
        assert len(s) == len(f) == k and not set(s) & set(f)
        assert a.masked[row, 1 + t + s].all() and not a.masked[row, 1 + s].any()
        assert a.masked[row, 1 + f].all() and a.masked[row, 1 + t + f].all()
        assert a.masked[row].sum() == 3 * k


# ---------------------------------------------------------------------------------- reading the probabilities

def _models():
    import transformers as tf

    torch.manual_seed(0)
    return {
        "bert": tf.BertModel(tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64, max_position_embeddings=32)),
        "gpt2": tf.GPT2Model(tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=32)),
        "neox": tf.GPTNeoXModel(tf.GPTNeoXConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64,
                                                 max_position_embeddings=32)),
        "llama": tf.LlamaModel(tf.LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                              max_position_embeddings=32)),
    }


@pytest.mark.parametrize("arch", ["bert", "gpt2", "neox", "llama"])
def test_recorded_probabilities_are_the_models_own_and_leave_hidden_states_alone(arch: str) -> None:
    model = _models()[arch].eval()
    ids = torch.randint(5, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    kw = {"use_cache": False} if arch != "bert" else {}
    assert model.config._attn_implementation == "sdpa"
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, **kw)
        sink = att.LayerSums(lambda p: p.clone())
        recorded = att.forward(model, ids, sink, output_hidden_states=True, **kw)
        model.set_attn_implementation("eager")
        eager = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True, **kw)
    for a, b in zip(plain.hidden_states, recorded.hidden_states, strict=True):
        assert torch.equal(a, b), "recording changed the hidden states"
    assert len(sink.layers) == len(eager.attentions) == 2
    for mine, theirs in zip(sink.layers, eager.attentions, strict=True):
        assert mine.shape == theirs.shape
        assert torch.allclose(mine, theirs.float(), atol=1e-6)
    if arch != "bert":  # causal: nothing above the diagonal
        assert float(torch.triu(sink.layers[0], diagonal=1).abs().max()) == 0.0


def test_causal_copy_accuracy_scores_exactly_the_copies_next_tokens(tok) -> None:
    """A hand-set next-token head that predicts every next token of the second copy (and nothing of the first):
    the causal copy accuracy is 1 on the second copy and 0 on the first, so each copy's slice is the T − 1
    positions predicted from inside it."""
    copy = ps.copy_blocks(tok, seed=5, n_blocks=3, length=8, block_size=32, vocab_size=len(VOCAB))
    assert copy is not None
    ids = torch.from_numpy(copy.ids.astype(np.int64))
    t0, t = copy.start, copy.length
    target = torch.zeros_like(ids)  # position j predicts token 0 ([PAD]: never in a block) …
    target[:, t0 + t : t0 + 2 * t - 1] = ids[:, t0 + t + 1 : t0 + 2 * t]  # … except inside the second copy

    def oracle(hidden: torch.Tensor) -> torch.Tensor:
        assert hidden.shape[:2] == ids.shape  # one batch holds every block
        return torch.nn.functional.one_hot(target, len(VOCAB)).float()

    out = att.copy_outputs(_models()["gpt2"].eval(), copy, causal=True, head=None, next_head=oracle, mask_id=None,
                           batch_size=8, device="cpu")
    assert out is not None and out.predictions is not None
    assert len(out.predictions.first) == len(out.predictions.second) == 3 * (t - 1)
    assert out.predictions.second.all() and not out.predictions.first.any()


def test_mlm_copy_accuracy_scores_the_masked_positions_of_each_copy(tok) -> None:
    """A hand-set MLM head that predicts the token at the second copy's scored positions only: accuracy 1 on the
    second copy and 0 on the first (scored at the first-copy positions masked in both copies)."""
    copy = ps.copy_blocks(tok, seed=5, n_blocks=3, length=12, block_size=32, vocab_size=len(VOCAB))
    assert copy is not None
    ids = torch.from_numpy(copy.ids.astype(np.int64))
    target = torch.where(torch.from_numpy(copy.second_scored), ids, torch.zeros_like(ids))

    def decoder(hidden: torch.Tensor) -> torch.Tensor:
        assert hidden.shape[:2] == ids.shape
        return torch.nn.functional.one_hot(target, len(VOCAB)).float()

    out = att.copy_outputs(_models()["bert"].eval(), copy, causal=False, head=(torch.nn.Identity(), decoder),
                           next_head=None, mask_id=4, batch_size=8, device="cpu")
    assert out is not None and out.predictions is not None
    assert len(out.predictions.second) == copy.second_scored.sum() and out.predictions.second.all()
    assert len(out.predictions.first) == copy.first_scored.sum() and not out.predictions.first.any()
