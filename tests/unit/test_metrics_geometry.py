"""Geometry metrics on analytic point clouds and against explicit (pairwise / SVD) formulations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dynamics.metrics.geometry import (
    alignment,
    anisotropy,
    effective_rank,
    explained_variance_pc1,
    intra_similarity,
    isoscore,
    mean_norm,
    mev,
    rankme,
    self_similarity,
    spectra,
    twonn_dimension,
    uniformity_loss,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _explicit_pair_mean(x):
    u = F.normalize(x.double(), dim=1)
    c = u @ u.T
    n = x.shape[0]
    return c[~torch.eye(n, dtype=torch.bool)].mean().item()


@pytest.fixture(scope="module")
def gaussian():
    return torch.randn(4000, 32, generator=_gen())


@pytest.fixture(scope="module")
def common_direction():
    g = _gen(1)
    return 5 * torch.randn(1, 32, generator=g) + 0.1 * torch.randn(4000, 32, generator=g)


def test_anisotropy_matches_explicit_pairs():
    x = torch.randn(60, 7, generator=_gen()) + 0.3
    x[5] = 0  # a zero vector: cosine 0 with everything, still counted in the pairs
    assert anisotropy(x) == pytest.approx(_explicit_pair_mean(x), abs=1e-12)


def test_anisotropy_and_isoscore_of_isotropic_gaussian(gaussian):
    assert abs(anisotropy(gaussian)) < 0.01
    assert isoscore(gaussian) > 0.97


def test_common_direction_is_anisotropic_but_isoscore_ignores_the_shared_offset(common_direction):
    # Anisotropy sees the shared offset; IsoScore works on the centred covariance, which is isotropic noise.
    assert anisotropy(common_direction) > 0.99
    assert isoscore(common_direction) > 0.97


def test_isoscore_of_variance_along_one_direction_is_zero():
    g = _gen(2)
    line = torch.randn(4000, 1, generator=g) * torch.randn(1, 32, generator=g) + 1e-3 * torch.randn(
        4000, 32, generator=g
    )
    assert isoscore(line) < 0.01


@pytest.mark.parametrize("k", [1, 2, 5, 16])
def test_isoscore_of_equal_variance_in_k_of_n_dims_is_k_minus_one_over_n_minus_one(k):
    # ±e_1 … ±e_k: zero mean, covariance exactly ∝ diag(1_k, 0); the paper's steps give (k − 1)/(n − 1).
    n = 16
    eye = torch.eye(n)[:k]
    x = torch.cat([eye, -eye])
    assert isoscore(x) == pytest.approx((k - 1) / (n - 1), abs=1e-12)
    assert isoscore(x @ torch.linalg.qr(torch.randn(n, n, generator=_gen(k)))[0]) == pytest.approx(
        (k - 1) / (n - 1), abs=1e-9
    )  # rotation invariant: the PCA step reorients first


def _typed_data(seed=0):
    g = _gen(seed)
    x = torch.randn(40, 6, generator=g) + 0.5
    type_ids = torch.randint(-1, 5, (40,), generator=g)
    type_ids[0], type_ids[1] = 9, -1  # type 9 occurs once: skipped
    return x, type_ids


def test_self_similarity_matches_explicit_per_type_pairs():
    x, type_ids = _typed_data()
    per_type = []
    for t in range(5):
        rows = x[type_ids == t]
        if len(rows) >= 2:
            per_type.append(_explicit_pair_mean(rows))
    expected = float(np.mean(per_type))
    assert self_similarity(x, type_ids) == pytest.approx(
        {"self_similarity": expected, "self_similarity_adj": expected - anisotropy(x)}, abs=1e-12)


def test_self_similarity_is_one_for_static_vectors_and_nan_without_repeats():
    base = torch.randn(3, 8, generator=_gen())
    type_ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, -1])
    x = base[type_ids.clamp(min=0)] * torch.arange(1, 9)[:, None]  # same direction per type, any scale
    assert self_similarity(x, type_ids)["self_similarity"] == pytest.approx(1.0)
    assert mev(x, type_ids)["mev"] == pytest.approx(1.0)
    without = self_similarity(x, torch.tensor([0, 1, 2, 3, 4, 5, 6, -1]))
    assert list(without) == ["self_similarity", "self_similarity_adj"] and all(map(math.isnan, without.values()))
    assert all(map(math.isnan, mev(x, torch.tensor([0, 1, 2, 3, 4, 5, 6, -1])).values()))


def test_intra_similarity_matches_explicit_loop():
    x, _ = _typed_data(3)
    seq_ids = torch.tensor([4] * 10 + [8] * 15 + [1] * 14 + [2])  # the one-token sentence is skipped
    per_seq = []
    for s in (4, 8, 1):
        rows = x[seq_ids == s].double()
        per_seq.append(F.cosine_similarity(rows, rows.mean(0, keepdim=True), dim=1).mean().item())
    expected = float(np.mean(per_seq))
    assert intra_similarity(x, seq_ids) == pytest.approx(
        {"intra_similarity": expected, "intra_similarity_adj": expected - anisotropy(x)}, abs=1e-12)


def test_mev_matches_svd_and_orthogonal_case():
    x, type_ids = _typed_data(5)
    per_type = []
    for t in range(5):
        rows = x[type_ids == t].double()
        if len(rows) >= 2:
            s = torch.linalg.svdvals(rows)
            per_type.append((s[0] ** 2 / (s**2).sum()).item())
    expected = float(np.mean(per_type))
    s_all = torch.linalg.svdvals(x.double())
    pc1 = (s_all[0] ** 2 / (s_all**2).sum()).item()
    assert explained_variance_pc1(x) == pytest.approx(pc1, abs=1e-12)
    assert mev(x, type_ids) == pytest.approx(
        {"mev": expected, "mev_adj": expected - anisotropy(x), "mev_adj_pc1": expected - pc1}, abs=1e-12)
    # Four orthogonal occurrences of equal norm: no direction explains more than a quarter.
    orth = torch.eye(8)[:4] * 3
    assert mev(orth, torch.zeros(4, dtype=torch.long))["mev"] == pytest.approx(0.25)
    # More occurrences than dimensions takes the other Gram path.
    many = torch.randn(12, 3, generator=_gen(6))
    s = torch.linalg.svdvals(many.double())
    assert mev(many, torch.zeros(12, dtype=torch.long))["mev"] == pytest.approx(
        (s[0] ** 2 / (s**2).sum()).item(), abs=1e-12
    )


def test_mev_batches_types_of_every_size():
    # Types with 2…300 occurrences (several padding buckets and the H × H path) against a per-type SVD.
    g = _gen(21)
    counts = [2, 3, 5, 8, 9, 17, 40, 70, 130, 300]
    type_ids = torch.cat([torch.full((c,), t) for t, c in enumerate(counts)] + [torch.full((7,), -1)])
    type_ids = type_ids[torch.randperm(type_ids.numel(), generator=g)]
    x = torch.randn(type_ids.numel(), 64, generator=g, dtype=torch.float64) + 0.5
    per_type = []
    for t in range(len(counts)):
        s = torch.linalg.svdvals(x[type_ids == t])
        per_type.append((s[0] ** 2 / (s**2).sum()).item())
    assert mev(x, type_ids)["mev"] == pytest.approx(float(np.mean(per_type)), abs=1e-12)


def test_spectra_feed_the_same_values_as_standalone_calls():
    for shape in ((300, 24), (10, 24)):  # n ≥ H (one Gram matrix) and n < H
        x = torch.randn(*shape, generator=_gen(22), dtype=torch.float64) * torch.linspace(0.2, 2, 24) + 1.5
        spec = spectra(x)
        assert effective_rank(x, singular_values=spec["singular_values"]) == pytest.approx(effective_rank(x), rel=1e-9)
        assert effective_rank(x, center=True, singular_values=spec["singular_values_centred"]) == pytest.approx(
            effective_rank(x, center=True), rel=1e-6)
        assert explained_variance_pc1(x, spec["singular_values"]) == pytest.approx(explained_variance_pc1(x), rel=1e-9)
        assert isoscore(x, covariance_eigenvalues=spec["covariance_eigenvalues"]) == pytest.approx(isoscore(x), abs=1e-9)


def test_effective_rank_of_equal_singular_values_is_k():
    g = _gen(7)
    for k in (1, 3, 7):
        u, _ = torch.linalg.qr(torch.randn(500, k, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(40, k, generator=g, dtype=torch.float64))
        assert effective_rank(5.0 * u @ v.T) == pytest.approx(k, rel=1e-4)
        assert effective_rank((5.0 * u @ v.T).T) == pytest.approx(k, rel=1e-4)  # n < H path


def test_rankme_is_the_effective_rank_of_the_matrix_and_of_its_centred_form():
    x = torch.randn(30, 6, generator=_gen(8), dtype=torch.float64) + 2.0
    assert rankme(x) == {"rankme": effective_rank(x), "rankme_centred": effective_rank(x, center=True)}


def test_effective_rank_matches_svd_definition_and_center_variant():
    x = torch.randn(90, 20, generator=_gen(8)) * torch.linspace(0.1, 3, 20)
    s = torch.linalg.svdvals(x.double())
    p = s / s.sum() + 1e-7
    assert effective_rank(x) == pytest.approx(torch.exp(-(p * p.log()).sum()).item(), rel=1e-10)
    # An offset plus zero-mean rank-3 data: centring removes the offset direction.
    basis, _ = torch.linalg.qr(
        torch.cat([torch.ones(200, 1), torch.randn(200, 3, generator=_gen(9))], 1).double()
    )
    data = basis[:, 1:] @ torch.linalg.qr(torch.randn(16, 3, generator=_gen(10)).double())[0].T
    shifted = data + 4.0 * torch.randn(1, 16, generator=_gen(11)).double()
    assert effective_rank(shifted, center=True) == pytest.approx(3.0, rel=1e-4)
    assert effective_rank(shifted) < 3.5  # uncentred: dominated by the offset direction
    assert math.isnan(effective_rank(torch.zeros(5, 3)))


def _subspace(n, k, dim, seed):
    g = _gen(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, k, generator=g, dtype=torch.float64))
    return torch.randn(n, k, generator=g, dtype=torch.float64) @ basis.T


def test_twonn_recovers_linear_subspace_dimension():
    x = _subspace(2000, 5, 64, 12)
    assert twonn_dimension(x) == pytest.approx(5.0, rel=0.15)
    assert twonn_dimension(_subspace(2000, 2, 64, 13)) == pytest.approx(2.0, rel=0.15)
    assert twonn_dimension(x, max_samples=1000, seed=3) == pytest.approx(5.0, rel=0.15)


def test_twonn_collapses_duplicates():
    x = _subspace(1500, 5, 64, 14)
    with_dups = torch.cat([x, x[:700], x[:100]])[torch.randperm(2300, generator=_gen())]
    assert twonn_dimension(with_dups, max_samples=None) == pytest.approx(twonn_dimension(x, max_samples=None))
    assert math.isnan(twonn_dimension(torch.ones(10, 4)))


def test_alignment_matches_explicit_adjacent_pairs_with_gaps():
    x = torch.randn(12, 5, generator=_gen(15))
    seq_ids = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    positions = torch.tensor([1, 2, 3, 5, 6, 1, 2, 3, 4, 3, 2, 1])  # 3→5 is a gap; rows out of order in seq 2
    u = F.normalize(x.double(), dim=1)
    pairs = [(0, 1), (1, 2), (3, 4), (5, 6), (6, 7), (11, 10), (10, 9), (9, 8)]
    expected = np.mean([((u[i] - u[j]) ** 2).sum().item() for i, j in pairs])
    assert alignment(x, seq_ids, positions) == pytest.approx(expected, abs=1e-12)
    constant_blocks = torch.randn(3, 5, generator=_gen(16))[seq_ids] * torch.arange(1, 13)[:, None]
    assert alignment(constant_blocks, seq_ids, positions) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_matches_pdist():
    x = torch.randn(300, 10, generator=_gen(17)) + 0.2
    u = F.normalize(x.double(), dim=1)
    expected = torch.pdist(u).pow(2).mul(-2).exp().mean().log().item()
    assert uniformity_loss(x, max_samples=None, chunk_rows=64) == pytest.approx(expected, abs=1e-12)
    expected_t1 = torch.pdist(u).pow(2).mul(-1).exp().mean().log().item()
    assert uniformity_loss(x, t=1.0, max_samples=None) == pytest.approx(expected_t1, abs=1e-12)


def test_uniformity_extremes_and_seeded_subsample(gaussian):
    assert uniformity_loss(torch.ones(50, 4) * 3) == pytest.approx(0.0, abs=1e-12)
    value = uniformity_loss(gaussian, max_samples=1000, seed=1)
    assert value == uniformity_loss(gaussian, max_samples=1000, seed=1)
    assert -4.1 < value < -3.5  # near the −t·2 = −4 floor for spread-out unit vectors


def test_mean_norm():
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert mean_norm(x) == pytest.approx(3.0)


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="h must be 2-D"):
        anisotropy(torch.zeros(5))
    with pytest.raises(ValueError, match="at least 2 row"):
        anisotropy(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="word_type must have shape"):
        self_similarity(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="dim >= 2"):
        isoscore(torch.zeros(5, 1))
    with pytest.raises(ValueError, match="discard_fraction"):
        twonn_dimension(torch.zeros(5, 3), discard_fraction=1.0)
    with pytest.raises(ValueError, match="positions must have shape"):
        alignment(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="t must be"):
        uniformity_loss(torch.randn(5, 3), t=0)
