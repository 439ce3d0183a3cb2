"""Anchor-embedding similarity, masked-prediction rank/accuracy, frequency bins and anchor drift."""

import math

import numpy as np
import pytest
import torch

from dynamics.metrics.anchors import (
    anchor_drift,
    anchor_sim_word,
    assign_frequency_bins,
    by_bin,
    cosine_rows,
    drift_cosines,
    frequency_bin_names,
    frequency_bins,
    mean_by_bin,
    token_rank,
)
from dynamics.metrics.rows import Rows


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_cosine_rows_known_values_and_zero_rows():
    a = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [-3.0, 0.0], [5.0, 5.0], [1.0, 2.0]])
    out = cosine_rows(a, b)
    assert out.dtype == torch.float64 and out.shape == (4,)
    torch.testing.assert_close(out, torch.tensor([1 / math.sqrt(2), -1.0, 1.0, 0.0], dtype=torch.float64))


def test_cosine_rows_matches_torch_and_is_scale_invariant():
    a, b = torch.randn(50, 16, generator=_gen()), torch.randn(50, 16, generator=_gen(1))
    ref = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)
    torch.testing.assert_close(cosine_rows(a, b), ref)
    torch.testing.assert_close(cosine_rows(3 * a, 0.5 * b), ref)


def _anchor(h: torch.Tensor, emb: torch.Tensor, bins: np.ndarray | None = None) -> dict:
    bins = np.zeros(h.shape[0], dtype=np.int64) if bins is None else bins
    return anchor_sim_word(Rows(h), Rows(emb), bins, ("frequent", "medium", "rare"))


def test_anchor_sim_word_of_embedding_rows_is_one_and_of_negated_is_minus_one():
    emb = torch.randn(100, 32, generator=_gen())
    ids = torch.randint(0, 100, (400,), generator=_gen(1))
    assert _anchor(emb[ids], emb[ids])["all"] == pytest.approx(1.0)
    assert _anchor(-2.0 * emb[ids], emb[ids])["all"] == pytest.approx(-1.0)


def test_anchor_sim_word_of_orthogonal_rows_is_zero_and_bins_split_the_mean():
    h = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    e = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    out = _anchor(h, e, np.array([0, 0, 2]))
    assert out["all"] == pytest.approx(1 / 3) and out["frequent"] == pytest.approx(0.0)
    assert out["rare"] == pytest.approx(1.0) and out["medium"] is None


def test_by_bin_means_overall_and_per_bin_with_empty_bins_as_none():
    out = by_bin(torch.tensor([1.0, 3.0, 5.0, 7.0]), np.array([0, 0, 1, 1]), ("a", "b", "c"))
    assert out == {"all": 4.0, "a": 2.0, "b": 6.0, "c": None}
    assert by_bin(torch.zeros(0), np.zeros(0, dtype=np.int64), ("a",)) == {"all": None, "a": None}


def test_anchor_sim_word_is_not_stored_when_widths_differ():
    assert _anchor(torch.ones(3, 4), torch.ones(3, 5)) == {}


def test_token_rank_on_constructed_scores():
    scores = torch.tensor([[0.1, 0.5, 0.3], [0.1, 0.5, 0.3], [0.1, 0.5, 0.3], [1.0, 1.0, 0.0]])
    targets = torch.tensor([1, 2, 0, 1])
    # Ties count in the true token's favour: [1, 1, 0] with target 1 has rank 1.
    assert token_rank(scores, targets).tolist() == [1, 2, 3, 1]


def test_token_rank_matches_sorting_with_small_chunks():
    scores = torch.randn(37, 200, generator=_gen())
    targets = torch.randint(0, 200, (37,), generator=_gen(1))
    order = torch.argsort(scores, dim=1, descending=True)
    ref = (order == targets[:, None]).nonzero()[:, 1] + 1  # distinct floats: no ties
    assert torch.equal(token_rank(scores, targets, chunk_rows=5), ref)


def test_token_rank_rejects_bad_inputs():
    with pytest.raises(ValueError, match="2-D"):
        token_rank(torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have shape"):
        token_rank(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        token_rank(torch.zeros(2, 3), torch.tensor([0, 3]))


def _shares(counts, bins, n_bins):
    return np.array([counts[bins == b].sum() for b in range(n_bins)]) / counts.sum()


def test_frequency_bins_by_mass_split_zipf_occurrences_in_thirds():
    counts = np.round(1e6 / np.arange(1, 5001)).astype(np.int64)  # Zipf's law
    edges = frequency_bins(counts, 3, by="mass")
    bins = assign_frequency_bins(counts, edges)
    shares = _shares(counts, bins, 3)
    assert np.all(np.abs(shares - 1 / 3) < 0.08), shares
    # Frequent types are few; rare ones are the long tail.
    assert (bins == 0).sum() < (bins == 1).sum() < (bins == 2).sum()


def test_frequency_bins_by_types_split_types_in_thirds():
    counts = torch.arange(1, 301)  # distinct counts: exact terciles
    edges = frequency_bins(counts, 3, by="types")
    bins = assign_frequency_bins(counts, edges)
    assert [(bins == b).sum() for b in range(3)] == [100, 100, 100]
    assert bins[-1] == 0 and bins[0] == 2  # the largest count is "frequent"


def test_frequency_bins_keep_ties_together_and_are_monotone():
    counts = np.array([50, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1, 1, 0, 0])
    for by in ("mass", "types"):
        edges = frequency_bins(counts, 3, by=by)
        bins = assign_frequency_bins(counts, edges)
        assert len(set(bins[counts == 9])) == 1 and len(set(bins[counts == 1])) == 1
        order = np.argsort(-counts, kind="stable")
        assert np.all(np.diff(bins[order]) >= 0)  # rarer never lands in a more frequent bin
        assert bins[counts == 0].tolist() == [2, 2]  # unseen tokens are rare


def test_frequency_bins_rejects_bad_inputs():
    with pytest.raises(ValueError, match="1-D"):
        frequency_bins(np.ones((2, 2)))
    with pytest.raises(ValueError, match="by must be"):
        frequency_bins(np.ones(5), by="rank")
    with pytest.raises(ValueError, match="positive count"):
        frequency_bins(np.zeros(5))


def test_mean_by_bin_per_occurrence_and_empty_bin():
    values = torch.tensor([1.0, 3.0, 10.0, 5.0])
    bins = np.array([0, 0, 2, 2])
    out = mean_by_bin(values, bins, 3)
    assert out[0] == pytest.approx(2.0) and math.isnan(out[1]) and out[2] == pytest.approx(7.5)
    with pytest.raises(ValueError, match="bins must lie"):
        mean_by_bin(values, np.array([0, 0, 3, 0]), 3)
    assert list(frequency_bin_names(3)) == ["frequent", "medium", "rare"]


def test_drift_cosines_are_one_at_the_end_and_zero_for_orthogonal_rows():
    e_final = torch.randn(20, 8, generator=_gen())
    torch.testing.assert_close(drift_cosines(e_final * 2, e_final), torch.ones(20, dtype=torch.float64))
    e_step = e_final.clone()
    e_step[3] = torch.zeros(8)
    e_step[3, 0], e_step[3, 1] = -e_final[3, 1], e_final[3, 0]  # a vector orthogonal to e_final[3]
    e_final[3, 2:] = 0
    drift = drift_cosines(e_step, e_final)
    assert drift.shape == (20,) and drift[3].item() == pytest.approx(0.0, abs=1e-12)


def test_anchor_drift_averages_the_row_cosines_over_the_vocabulary_and_the_probe_types():
    # rows 0-5 end where they are (cos 1) except row 4, turned by 90° (cos 0), and row 5, reversed (cos −1)
    e_final = np.eye(6, 4, dtype=np.float32) + np.eye(6, 4, k=-2, dtype=np.float32)
    e_step = e_final.copy()
    e_step[4] = [0, 0, 0, 1]  # e_final[4] = [0, 0, 1, 0]
    e_step[5] = -e_final[5]
    out = anchor_drift(e_step, e_final, special_ids=np.array([0, 5, 99]), probe_tokens=np.array([4, 1, 4, 5, 1]),
                       freq_bin=np.array([2, 0, 2, 1, 0]), bin_names=("frequent", "medium", "rare"))
    assert set(out) == {"anchor_drift", "anchor_drift_probe"}
    assert out["anchor_drift"] == pytest.approx(3 / 4)  # rows 1-4 (0 and 5 special): 1, 1, 1, 0
    # probe types 1, 4, 5 once each (cos 1, 0, −1), in the bins of their first occurrence
    assert out["anchor_drift_probe"] == pytest.approx({"all": 0.0, "frequent": 1.0, "medium": -1.0, "rare": 0.0})


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="a must be 2-D"):
        cosine_rows(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        cosine_rows(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="differs from the final snapshot"):
        drift_cosines(torch.zeros(3, 4), torch.zeros(2, 4))
