"""The TC loss's kernels and the shared-negatives option against independent formulations.

* Every kernel ("sparse", "sparse_bag", "gather", and "batched" for shared draws) gives the loss and the anchor
  gradient of a per-anchor float64 loop on the same draws.
* Shared negatives (one set of K draws per sequence) keep the released algorithm's expected loss: the mean
  over many draws matches an independent per-anchor implementation of the released sampler (a z-test), and the
  same test rejects a sampler with a deliberate bug.
* Gradients reach the anchors only: positives and negatives are detached on every kernel.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taco.objectives import AUTO_METHOD, METHODS, resolve_method, sample_tc_indices, tc_loss

KERNELS = ["sparse", "sparse_bag", "gather"]


def _valid(b, seq_len, pad_last=0):
    valid = torch.ones(b, seq_len, dtype=torch.bool)
    valid[:, 0] = valid[:, -1] = False  # [CLS], [SEP]
    if pad_last:
        valid[-1, -1 - pad_last:] = False
    return valid


def _clustered(b, seq_len, hidden, seed=0, spread=0.7):
    """Context vectors with real-ish structure: a direction per sequence plus a slow drift along it and noise,
    so window positives are closer than other positions and other sequences are far. Returns (h, e)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(b, 1, hidden, generator=gen)
    drift = torch.cumsum(torch.randn(b, seq_len, hidden, generator=gen) * 0.3, dim=1)
    h = centre + spread * drift + 0.3 * torch.randn(b, seq_len, hidden, generator=gen)
    e = 0.5 * torch.randn(b, seq_len, hidden, generator=gen)
    return h.double(), e.double()


def loop_loss(h, e, index, temperature, pool=None):
    """One anchor at a time in float64, straight from the InfoNCE definition (pool: detached unit vectors)."""
    g = (h - e).reshape(-1, h.shape[-1])[index.flat].double()
    unit = g / g.norm(dim=-1, keepdim=True)
    pool = unit.detach() if pool is None else pool.double()
    losses = []
    for row, a in enumerate(index.anchors.tolist()):
        sims = [unit[a] @ unit.detach()[index.positives[row]]]
        sims += [unit[a] @ pool[j] for j in index.negatives[row].tolist()]
        losses.append(-torch.log_softmax(torch.stack(sims) / temperature, 0)[0])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("sharing", ["anchor", "sequence"])
def test_every_kernel_gives_the_loop_loss_and_anchor_gradient_on_the_same_draws(sharing):
    h, e = _clustered(4, 14, 16)
    valid = _valid(4, 14, pad_last=3)
    anchor_mask = valid.clone()
    anchor_mask[1, 2:6] = False  # some content positions are not anchors
    index = sample_tc_indices(valid, anchor_mask, 5, 9, torch.Generator().manual_seed(2), negative_sharing=sharing)
    assert (index.shared_negatives is not None) == (sharing == "sequence")
    hf = h.float().requires_grad_()
    ref_h = h.clone().requires_grad_()
    ref = loop_loss(ref_h, e, index, 0.07)
    (ref_grad,) = torch.autograd.grad(ref, ref_h)
    kernels = KERNELS + (["batched", "auto"] if sharing == "sequence" else ["auto"])
    for kernel in kernels:
        loss = tc_loss(hf, e.float(), index, 0.07, method=kernel)
        (grad,) = torch.autograd.grad(loss, hf)
        # float32 kernels: about 1e-7 of the logits, which is more than 1e-5 of a loss near 0
        assert math.isclose(float(loss.detach()), float(ref.detach()), rel_tol=1e-5, abs_tol=1e-6), kernel
        assert torch.allclose(grad.double(), ref_grad, atol=1e-5, rtol=1e-4), kernel


def test_batched_kernel_reads_an_explicit_pool_like_the_others():
    """Under DDP the pool holds all ranks' vectors and the batch is a slice of it (pool_offset)."""
    h, e = _clustered(3, 10, 8, seed=1)
    other_h, other_e = _clustered(2, 10, 8, seed=5)
    valid = _valid(3, 10)
    other_valid = _valid(2, 10, pad_last=2)
    local = F.normalize((h - e).reshape(-1, 8)[valid.reshape(-1)].float(), dim=-1)
    remote = F.normalize((other_h - other_e).reshape(-1, 8)[other_valid.reshape(-1)].float(), dim=-1)
    pool = torch.cat([remote, local])  # this batch is rank 1: its sequences come after rank 0's two
    counts = torch.cat([other_valid.sum(1), valid.sum(1)])
    index = sample_tc_indices(valid, valid, 5, 12, torch.Generator().manual_seed(0), pool_counts=counts,
                              pool_offset=2, negative_sharing="sequence")
    assert (index.shared_negatives < remote.shape[0]).any()  # draws reach the other rank's part
    ref = loop_loss(h, e, index, 0.1, pool=pool)
    for kernel in KERNELS + ["batched"]:
        assert math.isclose(float(tc_loss(h.float(), e.float(), index, 0.1, pool, method=kernel)), float(ref),
                            rel_tol=1e-5), kernel


def test_shared_draws_share_within_a_sequence_and_avoid_it():
    b, seq_len = 5, 12
    valid = _valid(b, seq_len, pad_last=4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = sample_tc_indices(valid, valid, 5, 11, gen, negative_sharing="sequence")
        a_seq = idx.flat[idx.anchors] // seq_len
        assert idx.shared_negatives.shape == (b, 11)
        assert torch.equal(idx.negatives, idx.shared_negatives[a_seq])
        n_seq = idx.flat[idx.shared_negatives] // seq_len
        assert (n_seq != torch.arange(b).unsqueeze(1)).all(), "negative from the sequence's own positions"
        assert valid.reshape(-1)[idx.flat[idx.shared_negatives]].all(), "negative at padding or a special token"
    # The positives are drawn first, with the same generator calls, whichever sharing is chosen.
    a = sample_tc_indices(valid, valid, 5, 11, torch.Generator().manual_seed(3))
    s = sample_tc_indices(valid, valid, 5, 11, torch.Generator().manual_seed(3), negative_sharing="sequence")
    assert torch.equal(a.positives, s.positives) and torch.equal(a.anchors, s.anchors)


def released_loss(unit, valid, window, k, temperature, rng, own_sequence_bug=False):
    """The released algorithm, independently: per anchor one positive at a random offset 1 <= |d| <= (W-1)/2
    (a uniformly random other content position of the sequence when that offset is not one) and K negatives
    drawn with replacement from the content positions of the other sequences. unit: (B, L, H) numpy."""
    b, seq_len = valid.shape
    content = [np.flatnonzero(valid[s]) for s in range(b)]
    half = window // 2
    losses = []
    for s in range(b):
        others = np.concatenate([[(t, p) for p in content[t]] for t in range(b) if t != s or own_sequence_bug])
        for p in content[s]:
            target = p + rng.integers(1, half + 1) * rng.choice([-1, 1])
            if not (0 <= target < seq_len and valid[s, target]):
                target = rng.choice(content[s][content[s] != p])
            negs = others[rng.integers(0, len(others), size=k)]
            sims = np.concatenate([[unit[s, p] @ unit[s, target]], unit[negs[:, 0], negs[:, 1]] @ unit[s, p]])
            logits = sims / temperature
            losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[0])
    return float(np.mean(losses))


def _z(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.mean() - b.mean()) / math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


def test_shared_negatives_keep_the_released_expected_loss():
    b, seq_len, hidden, k, window, tau, draws = 5, 12, 16, 6, 5, 0.2, 400
    h, e = _clustered(b, seq_len, hidden, seed=3)
    valid = _valid(b, seq_len, pad_last=3)
    gen = torch.Generator().manual_seed(0)
    shared = [float(tc_loss(h.float(), e.float(), sample_tc_indices(valid, valid, window, k, gen,
                                                                    negative_sharing="sequence"), tau))
              for _ in range(draws)]
    unit = F.normalize(h - e, dim=-1).numpy()
    rng = np.random.default_rng(0)
    released = [released_loss(unit, valid.numpy(), window, k, tau, rng) for _ in range(draws)]
    assert abs(_z(shared, released)) < 3
    # The same comparison has the power to see a sampler whose negatives may come from the anchor's own sequence.
    buggy = [released_loss(unit, valid.numpy(), window, k, tau, rng, own_sequence_bug=True) for _ in range(draws)]
    assert abs(_z(shared, buggy)) > 3


@pytest.mark.parametrize("sharing, kernel", [("anchor", k) for k in KERNELS] + [("sequence", "batched")])
def test_gradient_reaches_anchors_only(sharing, kernel):
    torch.manual_seed(0)
    h = torch.randn(3, 9, 6, requires_grad=True)
    e = torch.randn(3, 9, 6, requires_grad=True)
    valid = _valid(3, 9)
    anchor_mask = torch.zeros_like(valid)
    anchor_mask[0, 3] = anchor_mask[1, 5] = anchor_mask[2, 1] = True
    idx = sample_tc_indices(valid, anchor_mask, 5, 8, torch.Generator().manual_seed(0), negative_sharing=sharing)
    used = torch.zeros(3 * 9, dtype=torch.bool)
    used[idx.flat[idx.positives]] = used[idx.flat[idx.negatives.reshape(-1)]] = True
    used &= ~anchor_mask.reshape(-1)
    assert used.sum() >= 5  # vectors used only as positives or negatives exist
    pool = F.normalize((h - e).reshape(-1, 6)[idx.flat].detach(), dim=-1).requires_grad_()  # a leaf: DDP's pool
    tc_loss(h, e, idx, 0.1, method=kernel).backward()
    touched = h.grad.abs().sum(-1) > 0
    assert torch.equal(touched, anchor_mask)
    assert torch.equal(e.grad.abs().sum(-1) > 0, anchor_mask)
    assert (h.grad.reshape(-1, 6)[used] == 0).all()
    tc_loss(h, e, idx, 0.1, pool, method=kernel).backward()
    assert pool.grad is None  # an explicit pool is detached too


def test_method_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert set(AUTO_METHOD.values()) <= set(METHODS)
    assert resolve_method("auto", cpu) == AUTO_METHOD["cpu"] == "sparse"
    assert resolve_method("auto", cuda) == AUTO_METHOD["cuda"]
    assert resolve_method("auto", cpu, shared=True) == "batched"
    assert resolve_method("gather", cpu, shared=True) == "gather"
    with pytest.raises(ValueError, match="shared per sequence"):
        resolve_method("batched", cpu)
    with pytest.raises(ValueError, match="method must be one of"):
        resolve_method("dense", cpu)
    with pytest.raises(ValueError, match="negative_sharing"):
        sample_tc_indices(_valid(2, 6), _valid(2, 6), 3, 2, negative_sharing="batch")


def test_cosines_ignore_autocast():
    """Under bf16 autocast every kernel still computes the cosines in float32 (so they agree on GPUs)."""
    h, e = _clustered(3, 10, 16, seed=2)
    valid = _valid(3, 10)
    index = sample_tc_indices(valid, valid, 5, 7, torch.Generator().manual_seed(1), negative_sharing="sequence")
    plain = float(tc_loss(h.float(), e.float(), index, 0.07, method="gather"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for kernel in KERNELS + ["batched"]:
            assert math.isclose(float(tc_loss(h.float(), e.float(), index, 0.07, method=kernel)), plain,
                                rel_tol=1e-5), kernel


def test_default_draws_and_loss_are_those_of_the_code_before_the_new_options():
    """Pinned from commit 47338a8 (before sharing and kernels were added): same generator, same draws, same loss."""
    valid = _valid(3, 10, pad_last=2)
    h = torch.randn(3, 10, 8, generator=torch.Generator().manual_seed(1))
    e = torch.randn(3, 10, 8, generator=torch.Generator().manual_seed(2))
    idx = sample_tc_indices(valid, valid, 5, 4, torch.Generator().manual_seed(7))
    assert idx.positives.tolist() == [2, 2, 0, 2, 6, 7, 4, 5, 9, 12, 9, 13, 13, 11, 13, 13, 17, 16, 20, 20, 19, 20]
    assert idx.negatives[:3].tolist() == [[11, 11, 17, 19], [15, 12, 18, 11], [13, 21, 16, 15]]
    assert int(idx.negatives.sum()) == 913 and idx.shared_negatives is None
    assert math.isclose(float(tc_loss(h, e, idx, 0.07)), 6.061633586883545, rel_tol=1e-6)


def test_pretraining_model_passes_sharing_and_kernel_through():
    from transformers import BertConfig, BertForMaskedLM

    from taco.objectives import PretrainingModel, TCConfig

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=32)).eval()
    ids = torch.randint(5, 50, (4, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    valid = _valid(4, 12)

    def tc(**options):
        with torch.no_grad():
            out = PretrainingModel(model, "taco", TCConfig(**options))(ids, labels, valid, torch.Generator().manual_seed(0))
        return float(out["tc_loss"])

    shared = tc(negative_sharing="sequence")  # auto: the batched kernel
    assert math.isclose(shared, tc(negative_sharing="sequence", method="gather"), rel_tol=1e-6)
    assert math.isclose(tc(), tc(method="sparse_bag"), rel_tol=1e-6)
    assert not math.isclose(shared, tc(), rel_tol=1e-4)  # other draws
