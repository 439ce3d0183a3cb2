"""The probe's float32 path (`Rows(x, torch.float32)`) against the float64 definitions, and the numerical helpers
behind it: certified top eigenvalues, sampled dot products, exact nearest neighbours, the refined spectrum of a
matrix with a null direction, block Gram matrices, and CKA from shared float32 cross products."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dynamics.metrics import context as X
from dynamics.metrics import geometry as G
from dynamics.metrics.anchors import cosine_rows
from dynamics.metrics.blas import eigvalsh
from dynamics.metrics.cka import cka_matrices, cka_matrix
from dynamics.metrics.grids import shifted_pair_sums
from dynamics.metrics.rows import Rows, Workspace, row_dots


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _layer_like(n_seq=60, length=40, dim=48, seed=0):
    """LayerNorm-like rows (zero mean over features, norm √dim: an exact null direction) with a shared offset
    direction, sequence structure, and word types of very different sizes (incl. one with more rows than dims)."""
    g = _gen(seed)
    seq_ids = torch.arange(n_seq).repeat_interleave(length)
    positions = torch.arange(length).repeat(n_seq)
    shared = torch.randn(1, dim, generator=g) * 2
    per_seq = torch.randn(n_seq, dim, generator=g)
    n = n_seq * length
    types = torch.randint(0, 40, (n,), generator=g)
    types[torch.rand(n, generator=g) < 0.4] = -1
    types[:300] = 40  # a type with more occurrences than dimensions
    word = torch.randn(41, dim, generator=g) * 1.5
    x = shared + per_seq[seq_ids] + word[types.clamp_min(0)] + torch.randn(n, dim, generator=g)
    x = x - x.mean(1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(dim)
    return x.float(), seq_ids, positions, types


@pytest.fixture(scope="module")
def layer():
    return _layer_like()


def test_float32_rows_agree_with_the_float64_definitions(layer):
    x, s, p, t = layer
    x64 = x.double()

    def fast():
        return Rows(x, torch.float32, workspace=Workspace())

    pairs = [
        (G.anisotropy(x64), G.anisotropy(fast())),
        (G.self_similarity(x64, t), G.self_similarity(fast(), t)),
        (G.intra_similarity(x64, s), G.intra_similarity(fast(), s)),
        (G.mev(x64, t), G.mev(fast(), t)),
        (G.alignment(x64, s, p), G.alignment(fast(), s, p)),
        (G.uniformity_loss(x64, max_samples=None), G.uniformity_loss(fast(), max_samples=None)),
        (G.mean_norm(x64), G.mean_norm(fast())),
        (X.same_vs_other_cosine(x64, s)["gap"], X.same_vs_other_cosine(fast(), s)["gap"]),
        (X.window_cosine(x64, s, p, 5), X.window_cosine(fast(), s, p, 5)),
        (X.seq_id_accuracy(x64, s), X.seq_id_accuracy(fast(), s)),
    ]
    ctx64, ctx32 = X.context_alignment(x64, s, p, 5, 8), X.context_alignment(fast(), s, p, 5, 8)
    pairs += [(ctx64[name], ctx32[name]) for name in ctx64]  # each a float, or the curve's {variant: float}
    spec64, spec32 = G.spectra(x64), G.spectra(fast())
    for key in ("singular_values", "singular_values_centred"):
        pairs.append((G.effective_rank(x64, singular_values=spec64[key]),
                      G.effective_rank(x64, singular_values=spec32[key])))
    pairs.append((G.isoscore(x64, spec64["covariance_eigenvalues"]), G.isoscore(x64, spec32["covariance_eigenvalues"])))
    pairs.append((G.explained_variance_pc1(x64, spec64["singular_values"]),
                  G.explained_variance_pc1(x64, spec32["singular_values"])))
    for slow, quick in pairs:
        assert quick == pytest.approx(slow, rel=2e-6, abs=2e-7)
    torch.testing.assert_close(cosine_rows(fast(), Rows(x.roll(1, 0), torch.float32)), cosine_rows(x64, x64.roll(1, 0)),
                               rtol=0, atol=1e-6)
    # TwoNN: the same neighbours, distances exact in float64
    sub = Rows(x[:800], torch.float32)
    sub.gram()
    assert G.twonn_dimension(sub, max_samples=None) == pytest.approx(G.twonn_dimension(x64[:800], max_samples=None),
                                                                      rel=1e-9)


def test_spectrum_of_rows_with_a_null_direction_is_refined(layer):
    # Rows ⟂ 1 have an exact zero singular value (up to the data's own float32 rounding); float32 rounding of the
    # Gram matrix would turn it into √(1e-8 · λ_max), which RankMe (σ, not σ²) would see at the 1e-5 level.
    x = layer[0]
    spec64, spec32 = G.spectra(x.double()), G.spectra(Rows(x, torch.float32))
    assert float(spec32["singular_values"][-1]) < 1e-3 * float(spec64["singular_values"][0]) * 1e-3
    for key in ("singular_values", "singular_values_centred"):
        assert G.effective_rank(x, singular_values=spec32[key]) == pytest.approx(
            G.effective_rank(x, singular_values=spec64[key]), rel=1e-7)
    # … and the values match an SVD of the float64 data
    s = torch.linalg.svdvals(x.double())
    torch.testing.assert_close(spec32["singular_values"], s, rtol=1e-6, atol=1e-6 * float(s[0]))


def test_top_eigenvalues_are_certified_or_fall_back_to_eigvalsh():
    g = _gen(3)
    mats = []
    for m in (1, 2, 5, 16):
        a = torch.randn(m, 7, generator=g, dtype=torch.float64) + 1.0  # a dominant direction: fast and certified
        mats.append(torch.nn.functional.pad(a @ a.T, (0, 16 - m, 0, 16 - m)))  # zero-padded as in MEV's buckets
    q = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0]
    mats.append(q @ torch.diag(torch.linspace(1, 1.0001, 16, dtype=torch.float64)) @ q.T)  # tiny gap: fallback
    mats.append(q @ torch.diag(torch.tensor([3.0] * 2 + [1.0] * 14, dtype=torch.float64)) @ q.T)  # degenerate top
    mats.append(torch.zeros(16, 16, dtype=torch.float64))
    a = torch.stack(mats)
    got = G.top_eigenvalues(a)
    want = torch.linalg.eigvalsh(a)[:, -1].clamp_min(0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_nearest_two_matches_brute_force():
    g = _gen(5)
    x = torch.randn(500, 12, generator=g) * torch.linspace(0.1, 3, 12) + 5.0  # a large offset: Gram-form cancellation
    d = torch.cdist(x.double(), x.double())
    d.fill_diagonal_(math.inf)
    want = torch.topk(d, 2, dim=1, largest=False).values.numpy()
    for cached in (False, True):
        r = Rows(x, torch.float32)
        if cached:
            r.gram()
        r1, r2 = G.nearest_two(r, torch.arange(500))
        np.testing.assert_allclose(r1, want[:, 0], rtol=1e-12)
        np.testing.assert_allclose(r2, want[:, 1], rtol=1e-12)


def test_block_gram_matrices_equal_direct_products(layer):
    x = layer[0] + 3.0  # a shared offset: the centring about the rounded mean must stay exact
    r = Rows(x, torch.float32)
    blocks = [torch.arange(0, 300), torch.arange(1000, 1010)]
    grams = G.block_grams(r, blocks)
    x64 = x.double()
    for b, gram in zip(blocks, grams, strict=True):
        want = x64[b].T @ x64[b]
        torch.testing.assert_close(gram, want, rtol=0, atol=1e-6 * float(want.abs().max()))


def test_cka_from_float32_cross_products_and_both_forms_at_once(layer):
    x = layer[0]
    xs = [x[:500], x[500:1000], x[:500] * 2 + 1, torch.randn(500, 20, generator=_gen(6))]
    both = cka_matrices(xs)
    for form in ("debiased", "biased"):
        np.testing.assert_allclose(both[form], cka_matrix(xs, debiased=form == "debiased"), atol=1e-14)
        np.testing.assert_allclose(cka_matrices(xs, dtype=torch.float32)[form], both[form], atol=1e-6)
    assert cka_matrices(xs, forms=("biased",)).keys() == {"biased"}


def test_row_helpers_and_workspace():
    g = _gen(7)
    a, b = torch.randn(5000, 300, generator=g), torch.randn(5000, 300, generator=g)
    torch.testing.assert_close(row_dots(a, b), (a.double() * b.double()).sum(1), rtol=0, atol=1e-4)
    ws = Workspace()
    first = ws.get("unit", (10, 300), torch.float32, torch.device("cpu"))
    again = ws.get("unit", (8, 300), torch.float32, torch.device("cpu"))
    assert again.data_ptr() == first.data_ptr()
    r = Rows(a[:10], torch.float32, workspace=ws)
    assert r.unit.data_ptr() == first.data_ptr()
    torch.testing.assert_close(r.unit, F.normalize(a[:10], dim=1))
    owned = a[:10].clone()
    r = Rows(owned, torch.float32, overwrite=True)
    norms = torch.linalg.vector_norm(a[:10], dim=1)
    assert r.unit.data_ptr() == owned.data_ptr()
    torch.testing.assert_close(r.norms, norms)


def test_grid_and_lookup_paths_agree_for_float32_and_dense_layouts(layer):
    x, s, p, _ = layer
    u = F.normalize(x, dim=1)
    sums, counts = shifted_pair_sums(u, s, p, 6)  # dense: the grid is a view of the rows
    shuffled = torch.randperm(len(s), generator=_gen(8))
    sums2, counts2 = shifted_pair_sums(u[shuffled], s[shuffled], p[shuffled], 6)  # scattered onto a grid
    sparse = p + 10_000 * s  # too sparse for a grid: (sequence, position) lookups
    sums3, counts3 = shifted_pair_sums(u.double(), s, sparse, 6)
    np.testing.assert_array_equal(counts, counts3)
    np.testing.assert_array_equal(counts2, counts3)
    np.testing.assert_allclose(sums, sums3, rtol=1e-6)
    np.testing.assert_allclose(sums2, sums3, rtol=1e-6)
    assert eigvalsh(torch.eye(3, dtype=torch.float64)).tolist() == [1.0, 1.0, 1.0]
