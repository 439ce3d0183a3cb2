"""TACO's TC loss and sampler, and MLM on masked positions, against independent formulations."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from taco.objectives import (
    PretrainingModel,
    TCConfig,
    info_nce,
    mlm_loss,
    negative_cosine,
    sample_tc_indices,
    tc_loss,
)


def _valid(b=4, seq_len=16, pad_last=0):
    valid = torch.ones(b, seq_len, dtype=torch.bool)
    valid[:, 0] = False  # [CLS]
    valid[:, -1] = False  # [SEP]
    if pad_last:
        valid[-1, -1 - pad_last :] = False  # padding at the end of the last sequence
    return valid


def naive_tc_loss(h, e, index, temperature):
    """One anchor at a time, straight from the InfoNCE definition."""
    g = (h - e).reshape(-1, h.shape[-1])[index.flat]
    pool = g.detach()
    losses = []
    for a_row, a in enumerate(index.anchors.tolist()):
        anchor = g[a]
        pos = pool[index.positives[a_row]]
        sims = [F.cosine_similarity(anchor, pos, dim=0)]
        sims += [F.cosine_similarity(anchor, pool[j], dim=0) for j in index.negatives[a_row].tolist()]
        logits = torch.stack(sims) / temperature
        losses.append(-torch.log_softmax(logits, 0)[0])
    return torch.stack(losses).mean()


def test_tc_loss_matches_naive_loop():
    torch.manual_seed(0)
    h, e = torch.randn(3, 10, 8, requires_grad=True), torch.randn(3, 10, 8)
    valid = _valid(3, 10, pad_last=2)
    index = sample_tc_indices(valid, valid, window=5, negatives=7, generator=torch.Generator().manual_seed(1))
    fast = tc_loss(h, e, index, 0.07)
    slow = naive_tc_loss(h, e, index, 0.07)
    assert torch.allclose(fast, slow, atol=1e-5)
    g_fast = torch.autograd.grad(fast, h)[0]
    g_slow = torch.autograd.grad(naive_tc_loss(h, e, index, 0.07), h)[0]
    assert torch.allclose(g_fast, g_slow, atol=1e-5)


@pytest.mark.parametrize("method", ["sparse", "sparse_bag", "gather"])
def test_negative_cosine_gradient_matches_materialised_gather(method):
    torch.manual_seed(0)
    anchors = F.normalize(torch.randn(20, 6, dtype=torch.float64), dim=-1).requires_grad_()
    pool = F.normalize(torch.randn(30, 6, dtype=torch.float64), dim=-1)
    idx = torch.randint(0, 30, (20, 5))
    idx[0] = 7  # repeated negatives in one row (sampling is with replacement)
    ours = negative_cosine(anchors, pool, idx, max_elements=13, method=method)  # gather: several chunks
    ref = (anchors.unsqueeze(1) * pool[idx]).sum(-1)
    assert torch.allclose(ours, ref)
    w = torch.randn_like(ref)
    (ga,) = torch.autograd.grad((ours * w).sum(), anchors)
    (gr,) = torch.autograd.grad((ref * w).sum(), anchors)
    assert torch.allclose(ga, gr)


@pytest.mark.parametrize("window", [3, 5, 9])
def test_sampler_properties_over_many_draws(window):
    b, seq_len = 5, 12
    valid = _valid(b, seq_len, pad_last=3)
    gen = torch.Generator().manual_seed(0)
    half = window // 2
    in_window = fallback = 0
    for _ in range(200):
        idx = sample_tc_indices(valid, valid, window, negatives=11, generator=gen)
        seq = idx.flat // seq_len
        pos = idx.flat % seq_len
        a_seq, a_pos = seq[idx.anchors], pos[idx.anchors]
        p_seq, p_pos = seq[idx.positives], pos[idx.positives]
        assert torch.equal(a_seq, p_seq), "positive from another sequence"
        assert (idx.positives != idx.anchors).all(), "positive is the anchor itself"
        dist = (p_pos - a_pos).abs()
        # An anchor whose whole window is content must get its positive inside the window.
        interior = torch.ones_like(a_pos, dtype=torch.bool)
        for d in range(-half, half + 1):
            t = a_pos + d
            inside = (t >= 0) & (t < seq_len)
            interior &= inside & valid[a_seq, t.clamp(0, seq_len - 1)]
        assert (dist[interior] <= half).all()
        in_window += int((dist <= half).sum())
        fallback += int((dist > half).sum())
        n_seq = seq[idx.negatives]
        assert (n_seq != a_seq.unsqueeze(1)).all(), "negative from the anchor's own sequence"
        assert valid.reshape(-1)[idx.flat[idx.negatives]].all(), "negative at padding or a special token"
        assert valid.reshape(-1)[idx.flat[idx.positives]].all()
    assert in_window > fallback > 0  # edges fall back to a random same-sequence position


def test_sampler_negatives_cover_all_other_positions_uniformly():
    valid = _valid(3, 6)  # 4 content positions per sequence
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(12)
    for _ in range(300):
        idx = sample_tc_indices(valid, valid, 3, negatives=20, generator=gen)
        mine = idx.negatives[idx.flat[idx.anchors] // 6 == 0]  # anchors of sequence 0
        counts += torch.bincount(mine.reshape(-1), minlength=12)
    assert counts[:4].sum() == 0
    share = counts[4:] / counts[4:].sum()
    assert torch.allclose(share, torch.full((8,), 1 / 8), atol=0.01)


def test_gradient_reaches_anchors_only():
    torch.manual_seed(0)
    h = torch.randn(2, 8, 4, requires_grad=True)
    e = torch.randn(2, 8, 4, requires_grad=True)
    valid = _valid(2, 8)
    anchor_mask = torch.zeros_like(valid)
    anchor_mask[0, 3] = anchor_mask[1, 5] = True
    idx = sample_tc_indices(valid, anchor_mask, 5, 6, torch.Generator().manual_seed(0))
    tc_loss(h, e, idx, 0.1).backward()
    touched = h.grad.abs().sum(-1) > 0
    assert torch.equal(touched, anchor_mask)
    assert torch.equal(e.grad.abs().sum(-1) > 0, anchor_mask)


def test_perfectly_aligned_context_gives_low_loss():
    """g identical within a sequence and orthogonal across sequences → loss ≈ log(1 + K e^{-1/τ})."""
    b, seq_len, k, tau = 4, 10, 5, 0.1
    e = torch.zeros(b, seq_len, 8)
    h = torch.zeros(b, seq_len, 8)
    for s in range(b):
        h[s, :, s] = 1.0
    valid = _valid(b, seq_len)
    idx = sample_tc_indices(valid, valid, 5, k, torch.Generator().manual_seed(0))
    loss = tc_loss(h, e, idx, tau)
    assert math.isclose(float(loss), math.log(1 + k * math.exp(-1 / tau)), abs_tol=2e-6)


def test_info_nce_uniform_logits_is_log_k_plus_one():
    a = F.normalize(torch.randn(7, 3), dim=-1)
    loss = info_nce(a, torch.zeros(7, 3), torch.zeros(7, 9), temperature=0.5)
    assert math.isclose(float(loss), math.log(10), rel_tol=1e-6)


def _tiny_mlm():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    return BertForMaskedLM(cfg).eval()


def test_masked_only_mlm_loss_equals_full_head_loss():
    model = _tiny_mlm()
    ids = torch.randint(5, 50, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    labels[1, 7] = ids[1, 7]
    with torch.no_grad():
        ref = model(input_ids=ids, labels=labels).loss
        hidden = model.bert(input_ids=ids).last_hidden_state
        ours, acc = mlm_loss(model, hidden, labels)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert 0.0 <= float(acc) <= 1.0


def test_pretraining_model_taco_adds_weighted_tc():
    model = _tiny_mlm()
    ids = torch.randint(5, 50, (4, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 4] = ids[:, 4]
    valid = _valid(4, 12)
    mlm = PretrainingModel(model, "mlm")
    taco = PretrainingModel(model, "taco", TCConfig(weight=0.5))
    with torch.no_grad():
        a = mlm(ids, labels, valid)
        b = taco(ids, labels, valid, torch.Generator().manual_seed(0))
    assert "tc_loss" not in a
    assert torch.allclose(b["loss"], a["loss"] + 0.5 * b["tc_loss"], atol=1e-6)
    assert float(b["tc_loss"]) > 0
