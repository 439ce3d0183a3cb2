"""Context-vector alignment and the probe-set TC loss, against explicit pairwise formulations."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dynamics.metrics.context import (
    context_alignment,
    cosine_by_distance,
    distance_sums,
    draw_tc,
    same_vs_other_cosine,
    seq_id_accuracy,
    tc_loss,
    window_cosine,
)
from dynamics.metrics.rows import Rows


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _blocks(n_seq=20, length=30, dim=32, signal=1.0, noise=1.0, seed=0):
    """Each sequence: one shared random vector plus independent noise per token."""
    g = _gen(seed)
    shared = torch.randn(n_seq, dim, generator=g) * signal
    seq_ids = torch.arange(n_seq).repeat_interleave(length)
    positions = torch.arange(length).repeat(n_seq)
    x = shared[seq_ids] + noise * torch.randn(n_seq * length, dim, generator=g)
    return x, seq_ids, positions


def _ragged(seed=0, dim=8):
    """Unequal sequence lengths, non-contiguous sequence ids, gaps in positions, shuffled row order."""
    g = _gen(seed)
    seq, pos = [], []
    for sid, length in zip((7, 3, 42, 11, 5), (9, 4, 13, 2, 7), strict=True):
        kept = [p for p in range(length + 3) if torch.rand(1, generator=g).item() > 0.2][:length]
        seq += [sid] * len(kept)
        pos += kept
    perm = torch.randperm(len(seq), generator=g)
    seq_ids, positions = torch.tensor(seq)[perm], torch.tensor(pos)[perm]
    x = torch.randn(len(seq), dim, generator=g) + 0.5  # an offset makes the means non-trivial
    return x, seq_ids, positions


def _explicit_cosines(x):
    u = F.normalize(x.double(), dim=1)
    return u @ u.T


def test_same_vs_other_matches_explicit_pair_means():
    x, seq_ids, _ = _ragged()
    c = _explicit_cosines(x)
    n = len(seq_ids)
    same_mask = (seq_ids[:, None] == seq_ids[None, :]) & ~torch.eye(n, dtype=torch.bool)
    other_mask = seq_ids[:, None] != seq_ids[None, :]
    out = same_vs_other_cosine(x, seq_ids)
    assert out["same"] == pytest.approx(c[same_mask].mean().item(), abs=1e-12)
    assert out["other"] == pytest.approx(c[other_mask].mean().item(), abs=1e-12)
    assert out["gap"] == pytest.approx(out["same"] - out["other"], abs=1e-15)


def test_shared_sequence_vector_gives_a_clear_gap_that_shuffling_removes():
    x, seq_ids, _ = _blocks()
    out = same_vs_other_cosine(x, seq_ids)
    assert out["gap"] > 0.4 and abs(out["other"]) < 0.05
    shuffled = seq_ids[torch.randperm(len(seq_ids), generator=_gen(3))]
    assert abs(same_vs_other_cosine(x, shuffled)["gap"]) < 0.03


def test_same_vs_other_without_pairs_of_a_kind_is_nan():
    x = torch.randn(3, 4, generator=_gen())
    assert math.isnan(same_vs_other_cosine(x, torch.tensor([0, 1, 2]))["same"])
    assert math.isnan(same_vs_other_cosine(x, torch.tensor([5, 5, 5]))["other"])


def _explicit_by_distance(x, seq_ids, positions, max_distance):
    c = _explicit_cosines(x)
    sums, counts = np.zeros(max_distance), np.zeros(max_distance)
    for i, j in itertools.combinations(range(len(seq_ids)), 2):
        d = abs(int(positions[i]) - int(positions[j]))
        if seq_ids[i] == seq_ids[j] and 1 <= d <= max_distance:
            sums[d - 1] += c[i, j].item()
            counts[d - 1] += 1
    return sums, counts


def test_window_and_distance_cosines_match_explicit_loop_with_gaps_and_shuffled_rows():
    x, seq_ids, positions = _ragged()
    sums, counts = _explicit_by_distance(x, seq_ids, positions, 4)
    np.testing.assert_allclose(cosine_by_distance(x, seq_ids, positions, 4), sums / counts, atol=1e-12)
    assert window_cosine(x, seq_ids, positions, 5) == pytest.approx(
        sums[:2].sum() / counts[:2].sum(), abs=1e-12
    )
    assert window_cosine(x, seq_ids, positions, 9) == pytest.approx(sums.sum() / counts.sum(), abs=1e-12)


def test_sparse_positions_take_the_lookup_path_with_the_same_result():
    # Positions far apart make the (sequence, position) grid too sparse: the lookup fallback must agree.
    x, seq_ids, positions = _ragged()
    sums, counts = _explicit_by_distance(x, seq_ids, positions, 4)
    sparse = torch.as_tensor(positions) + 10_000 * torch.as_tensor(seq_ids)
    np.testing.assert_allclose(cosine_by_distance(x, seq_ids, sparse, 4), sums / counts, atol=1e-12)
    got_sums, got_counts = distance_sums(x, seq_ids, positions, 4)
    np.testing.assert_allclose(got_sums, sums, atol=1e-12)
    np.testing.assert_array_equal(got_counts, counts)


@pytest.mark.parametrize("window", [5, 11])  # the window within the curve's distances, and beyond them
def test_context_alignment_computes_its_six_names_from_the_explicit_pair_means(window):
    x, seq_ids, positions = _ragged()
    c = _explicit_cosines(x)
    n = len(seq_ids)
    same = c[(seq_ids[:, None] == seq_ids[None, :]) & ~torch.eye(n, dtype=torch.bool)].mean().item()
    other = c[seq_ids[:, None] != seq_ids[None, :]].mean().item()
    half = (window - 1) // 2
    sums, counts = _explicit_by_distance(x, seq_ids, positions, max(4, half))
    in_window = sums[:half].sum() / counts[:half].sum()
    out = context_alignment(Rows(x), seq_ids, positions, window=window, max_distance=4)
    assert list(out) == ["ctx_same_all", "ctx_other", "ctx_gap_all", "ctx_cos_by_distance", "ctx_same_window",
                         "ctx_gap_window"]
    assert out["ctx_same_all"] == pytest.approx(same, abs=1e-12)
    assert out["ctx_other"] == pytest.approx(other, abs=1e-12)
    assert out["ctx_gap_all"] == pytest.approx(same - other, abs=1e-12)
    assert out["ctx_cos_by_distance"] == pytest.approx({f"d{d:03d}": sums[d - 1] / counts[d - 1] for d in range(1, 5)},
                                                       abs=1e-12)
    assert out["ctx_same_window"] == pytest.approx(in_window, abs=1e-12)
    assert out["ctx_gap_window"] == pytest.approx(in_window - other, abs=1e-12)


def test_cosine_by_distance_recovers_an_analytic_profile():
    # g at position p is the unit vector at angle θp, so cos at distance d is exactly cos(θd).
    theta, length = 0.3, 12
    p = torch.arange(length).repeat(3)
    angle = theta * p.double()
    x = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * (1 + torch.arange(36)[:, None])
    seq_ids = torch.arange(3).repeat_interleave(length)
    out = cosine_by_distance(x, seq_ids, p, 13)
    np.testing.assert_allclose(out[:11], np.cos(theta * np.arange(1, 12)), atol=1e-12)
    assert np.isnan(out[11:]).all()  # no pair that far apart


def test_duplicate_positions_and_bad_window_raise():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at most once"):
        window_cosine(x, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="odd integer"):
        window_cosine(x, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), window=4)
    with pytest.raises(ValueError, match="max_distance"):
        cosine_by_distance(x, torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), 0)


def _explicit_identification(x, seq_ids):
    u = F.normalize(x.double(), dim=1)
    labels = sorted(set(seq_ids.tolist()))
    correct = total = 0
    for i in range(len(seq_ids)):
        own = int(seq_ids[i])
        if (seq_ids == own).sum() < 2:
            continue
        total += 1
        scores = {}
        for t in labels:
            members = (seq_ids == t) & (torch.arange(len(seq_ids)) != i)
            scores[t] = F.cosine_similarity(u[i], u[members].sum(0), dim=0).item()
        best_other = max(v for t, v in scores.items() if t != own)
        correct += scores[own] > best_other
    return correct / total


def test_sequence_identification_matches_explicit_leave_one_out():
    x, seq_ids, _ = _ragged(seed=4)
    seq_ids = seq_ids.clone()
    seq_ids[0] = 99  # a one-token sequence: skipped as a query, kept as a candidate
    acc = seq_id_accuracy(x, seq_ids, max_elements=7)
    assert acc == pytest.approx(_explicit_identification(x, seq_ids))


def test_sequence_identification_high_for_shared_vectors_and_near_chance_without():
    x, seq_ids, _ = _blocks()
    assert seq_id_accuracy(x, seq_ids) > 0.95
    shuffled = seq_ids[torch.randperm(len(seq_ids), generator=_gen(5))]
    assert seq_id_accuracy(x, shuffled) < 0.2  # chance is 1/20


def test_sequence_identification_leave_one_out_removes_self_match():
    # Pure noise in two-token sequences: with the token inside its own centroid it would match itself.
    x = torch.randn(200, 64, generator=_gen(6))
    seq_ids = torch.arange(100).repeat_interleave(2)
    assert seq_id_accuracy(x, seq_ids) < 0.1
    assert seq_id_accuracy(torch.zeros(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])) == 0.0


def _sampler_data():
    # Sequences of different lengths with a gap (a removed [SEP]) in one of them.
    seq, pos = [], []
    for sid, positions in (
        (10, range(1, 9)),
        (20, [1, 2, 3, 5, 6, 7]),
        (30, range(1, 3)),
        (40, range(1, 15)),
    ):
        seq += [sid] * len(positions)
        pos += list(positions)
    perm = torch.randperm(len(seq), generator=_gen(2))
    return torch.tensor(seq)[perm], torch.tensor(pos)[perm]


def sample_tc_indices(seq_ids, positions, window=5, negatives=50, generator=None):
    """The probe's draws (`draw_tc`, every token an anchor) as (pos_idx (n,), neg_idx (n, K)) by anchor."""
    d = draw_tc(seq_ids, positions, window, negatives, generator)
    n = len(seq_ids)
    assert torch.equal(torch.sort(d.anchors).values, torch.arange(n))  # every token is an anchor once
    pos_idx = torch.empty(n, dtype=torch.long)
    neg_idx = torch.empty(n, negatives, dtype=torch.long)
    pos_idx[d.anchors], neg_idx[d.anchors] = d.positives, d.negatives
    return pos_idx, neg_idx


def test_sampler_positives_and_negatives_obey_the_definition_over_many_draws():
    seq_ids, positions = _sampler_data()
    n, gen = len(seq_ids), _gen(7)
    half = 2
    key = {(int(s), int(p)) for s, p in zip(seq_ids, positions, strict=True)}
    offset_counts = torch.zeros(n, 2 * half + 1)
    neg_hits = torch.zeros(n, n)
    draws = 300
    for _ in range(draws):
        pos_idx, neg_idx = sample_tc_indices(seq_ids, positions, window=5, negatives=7, generator=gen)
        assert pos_idx.shape == (n,) and neg_idx.shape == (n, 7)
        assert torch.all(seq_ids[pos_idx] == seq_ids) and torch.all(pos_idx != torch.arange(n))
        assert torch.all(seq_ids[neg_idx] != seq_ids[:, None])
        d = positions[pos_idx] - positions
        for i in range(n):
            if abs(int(d[i])) <= half:
                offset_counts[i, int(d[i]) + half] += 1
        neg_hits += torch.zeros(n, n).scatter_add_(1, neg_idx, torch.ones_like(neg_idx, dtype=torch.float))
    for i in range(n):
        s, p = int(seq_ids[i]), int(positions[i])
        window_ok = [(s, p + o) in key for o in (-2, -1, 1, 2)]
        if all(window_ok):  # interior anchor: always in the window, each offset about 1/4 of the time
            frac = offset_counts[i, [0, 1, 3, 4]] / draws
            assert offset_counts[i].sum() == draws and torch.all((frac > 0.15) & (frac < 0.35)), frac
    # Negatives: uniform over the other sequences' tokens (expected 7·300/(n − n_s) hits each).
    for i in range(n):
        others = seq_ids != seq_ids[i]
        expected = 7 * draws / int(others.sum())
        hits = neg_hits[i, others]
        assert torch.all((hits > 0.5 * expected) & (hits < 1.6 * expected))
        assert neg_hits[i, ~others].sum() == 0


def test_sampler_fallback_is_uniform_over_the_rest_of_the_sequence():
    # A two-token sequence far apart: the window never hits, so the positive is always the other token.
    seq_ids, positions = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 10, 0, 1, 2])
    pos_idx, _ = sample_tc_indices(seq_ids, positions, window=3, negatives=2, generator=_gen())
    assert pos_idx[:2].tolist() == [1, 0]
    # Anchor at position 0 of a 3-token sequence with window 5: offsets −2, −1 fall outside and fall back.
    seq_ids, positions = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 1])
    gen, hits = _gen(1), torch.zeros(5)
    for _ in range(2000):
        pos_idx, _ = sample_tc_indices(seq_ids, positions, window=5, negatives=1, generator=gen)
        hits[pos_idx[0]] += 1
    # P(token 1) = 1/4 (offset +1) + 1/2·1/2 (fallback) = 1/2, same for token 2.
    assert abs(hits[1].item() / 2000 - 0.5) < 0.05 and abs(hits[2].item() / 2000 - 0.5) < 0.05


def test_sampler_is_reproducible_and_validates_inputs():
    seq_ids, positions = _sampler_data()
    a = sample_tc_indices(seq_ids, positions, generator=_gen(3))
    b = sample_tc_indices(seq_ids, positions, generator=_gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].shape[1] == 50
    with pytest.raises(ValueError, match="at least 2 sequences"):
        draw_tc(torch.zeros(4, dtype=torch.long), torch.arange(4), 5, 5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        draw_tc(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), 5, 5)
    with pytest.raises(ValueError, match="same length"):
        draw_tc(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0]), 5, 5)
    with pytest.raises(ValueError, match="unique"):
        draw_tc(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]), 5, 5)
    with pytest.raises(ValueError, match="negatives"):
        draw_tc(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), 5, 0)


def _naive_info_nce(g, pos_idx, neg_idx, temperature):
    losses = []
    for i in range(g.shape[0]):
        sims = [F.cosine_similarity(g[i], g[pos_idx[i]], dim=0)]
        sims += [F.cosine_similarity(g[i], g[j], dim=0) for j in neg_idx[i].tolist()]
        losses.append(-torch.log_softmax(torch.stack(sims) / temperature, dim=0)[0])
    return torch.stack(losses).mean().item()


def _probe_loss(g, seq_ids, positions, window=5, negatives=50, temperature=0.07, seed=0):
    return tc_loss(Rows(g), draw_tc(seq_ids, positions, window, negatives, _gen(seed)), temperature)


def test_tc_loss_matches_a_naive_loop_on_its_draws():
    x, seq_ids, positions = _blocks(n_seq=4, length=10, dim=6, signal=0.7)
    pos_idx, neg_idx = sample_tc_indices(seq_ids, positions, window=5, negatives=9, generator=_gen(1))
    ref = _naive_info_nce(x.double(), pos_idx, neg_idx, 0.07)
    assert _probe_loss(x, seq_ids, positions, 5, 9, 0.07, seed=1) == pytest.approx(ref, rel=1e-10)


def test_tc_loss_equals_the_training_loss_on_identical_draws():
    """One implementation: the probe-set TC loss is `taco.objectives`' sampler and InfoNCE on the probe's tokens."""
    from taco.objectives import sample_tc_indices as train_sampler
    from taco.objectives import tc_loss as train_tc_loss

    b, length, hidden = 6, 12, 8
    h, e = torch.randn(b, length, hidden, generator=_gen(5)), torch.randn(b, length, hidden, generator=_gen(6))
    valid = torch.ones(b, length, dtype=torch.bool)
    valid[:, 0] = valid[:, -1] = False  # [CLS] and [SEP]
    valid[2, 8:] = False  # padding
    index = train_sampler(valid, valid, 5, 20, _gen(4))
    train = float(train_tc_loss(h, e, index, 0.1))
    seq_ids, positions = valid.nonzero().T
    probe = _probe_loss((h - e)[valid], seq_ids, positions, 5, 20, 0.1, seed=4)
    assert probe == pytest.approx(train, rel=1e-6)
    assert _probe_loss((h - e)[valid], seq_ids, positions, 5, 20, 0.1, seed=5) != pytest.approx(train, rel=1e-6)


def test_tc_loss_is_log_k_plus_one_for_equal_cosines():
    _, seq_ids, positions = _blocks(n_seq=6, length=12, dim=8)
    same_direction = torch.ones(72, 8) * torch.arange(1, 73)[:, None]
    assert _probe_loss(same_direction, seq_ids, positions, negatives=20) == pytest.approx(math.log(21))


def test_tc_loss_is_low_for_sequence_structure_and_high_when_shuffled():
    x, seq_ids, positions = _blocks(n_seq=10, length=20, dim=32, signal=2.0)
    structured = _probe_loss(x, seq_ids, positions)
    perm = torch.randperm(len(seq_ids), generator=_gen(1))
    shuffled = _probe_loss(x[perm], seq_ids, positions)
    assert structured < 0.5 < math.log(51) - 0.5 < shuffled


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="g must be 2-D"):
        same_vs_other_cosine(torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="seq_ids must have shape"):
        same_vs_other_cosine(torch.zeros(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        seq_id_accuracy(torch.zeros(5, 2), torch.zeros(5))
    with pytest.raises(ValueError, match="temperature"):
        _probe_loss(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]), 3, 1, temperature=0)
