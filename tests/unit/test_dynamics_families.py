"""Families on synthetic activations: the per-layer work gives the same rows and arrays whether it runs on worker
threads or one layer at a time, the family functions equal `measure`, and every documented metric is stored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.measure import families as fam
from dynamics.measure.extract import Activations, MaskedOutputs
from dynamics.measure.probe_set import ProbeSet

V, BLOCK, N_BLOCKS, H, LAYERS = 60, 34, 24, 16, 3


@pytest.fixture(scope="module")
def snapshot() -> tuple[ProbeSet, Activations]:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, V, size=(N_BLOCKS, BLOCK)).astype(np.int32)
    ids[:, 0], ids[:, -1], ids[3, 7] = 2, 3, 3  # [CLS] … [SEP], and one [SEP] inside a block (a gap)
    content = ~np.isin(ids, [0, 1, 2, 3, 4])
    masked = content & (rng.random(ids.shape) < 0.15)
    n = int(content.sum())
    tokens = ids[content]
    word_type = np.where(tokens < 20, tokens - 5, -1).astype(np.int32)
    probe = ProbeSet(ids, content, masked, rng.integers(0, 3, n).astype(np.int8), word_type, np.arange(5, 20),
                     np.sort(rng.choice(n, 100, replace=False)), np.sort(rng.choice(n, 60, replace=False)),
                     ("frequent", "medium", "rare"), "h", 4, "toy", "probe set")
    emb = rng.normal(size=(V, H)).astype(np.float32)
    hidden = np.empty((LAYERS + 1, n, H), np.float32)
    hidden[0] = emb[tokens] + 0.1 * rng.normal(size=(n, H))
    for layer in range(1, LAYERS + 1):
        hidden[layer] = hidden[layer - 1] + 0.5 * rng.normal(size=(n, H)) + rng.normal(size=(N_BLOCKS, H))[
            probe.seq_ids]
    where = np.flatnonzero(probe.is_masked)
    m = MaskedOutputs(rng.normal(size=(where.size, H)).astype(np.float32),
                      rng.normal(size=(where.size, H)).astype(np.float32),
                      rng.integers(1, V, where.size).astype(np.int64), where.astype(np.int64),
                      rng.uniform(0.0, np.log(V), where.size))
    return probe, Activations(hidden, emb[tokens], emb, m, True, "toy")


def _prepare(probe: ProbeSet) -> fam.Prepared:
    prep, notes = fam.prepare(probe, "cpu", window=5, tc_negatives=7, tc_temperature=0.07, max_distance=4,
                              neighbour_tokens=200, seed=0, id_to_token=[f"t{i}" for i in range(V)])
    assert notes == []
    return prep


def _same(a: fam.FamilyResult, b: fam.FamilyResult, exact: bool) -> None:
    assert [r[:3] for r in a.rows] == [r[:3] for r in b.rows] and a.notes == b.notes
    va = np.array([np.nan if r[3] is None else r[3] for r in a.rows])
    vb = np.array([np.nan if r[3] is None else r[3] for r in b.rows])
    # threaded products round differently in float32: the paths agree to float32 precision, not bit for bit
    np.testing.assert_allclose(va, vb, rtol=0 if exact else 1e-6, atol=0 if exact else 1e-8)
    assert a.arrays.keys() == b.arrays.keys()
    for kind in a.arrays:
        for key, arr in a.arrays[kind].items():
            if arr.dtype.kind == "f":
                np.testing.assert_allclose(arr, b.arrays[kind][key], rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)
            else:
                np.testing.assert_array_equal(arr, b.arrays[kind][key])


def test_parallel_and_sequential_measurements_agree(snapshot) -> None:
    probe, acts = snapshot
    prep = _prepare(probe)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        parallel = fam.measure(acts, prep, fam.PER_LAYER)
        again = fam.measure(acts, prep, list(reversed(fam.PER_LAYER)))
        prep.parallel = False
        sequential = fam.measure(acts, prep, fam.PER_LAYER)
        assert torch.get_num_threads() == 2  # restored after the workers
    finally:
        torch.set_num_threads(before)
    for family in fam.PER_LAYER:
        _same(parallel[family], again[family], exact=True)  # the schedule does not change a bit
        _same(parallel[family], sequential[family], exact=False)
        _same(parallel[family], fam.measure(acts, prep, [family])[family], exact=False)
        assert parallel[family].seconds > 0


def test_every_metric_is_stored_per_layer(snapshot) -> None:
    probe, acts = snapshot
    out = fam.measure(acts, _prepare(probe), fam.PER_LAYER)
    metrics = {f: {(r[0], r[1]) for r in out[f].rows} for f in out}
    for layer in range(LAYERS + 1):
        assert {(layer, "anchor_sim_word"), (layer, "anchor_sim_emb")} <= metrics["anchors"]
        geometry = {"anisotropy", "self_similarity", "intra_similarity", "mev", "mev_adj_pc1", "rankme",
                    "rankme_centred", "isoscore", "twonn", "uniformity", "alignment", "norm_h"}
        assert {(layer, m) for m in geometry} <= metrics["geometry"]
        if layer:
            assert (layer, "norm_g") in metrics["geometry"] and (layer, "cka_prev_layer") in metrics["geometry"]
            assert (layer, "seq_id_accuracy") in metrics["context"]
    assert (LAYERS, "tc_loss") in metrics["context"] and (LAYERS, "masked_mrr") in metrics["anchors"]
    assert not any(r[0] == 0 for r in out["context"].rows)
    arrays = out["geometry"].arrays
    assert arrays["cka_layers"]["debiased"].shape == (LAYERS + 1, LAYERS + 1)
    assert arrays["projection"]["xy"].shape == (LAYERS + 1, 60, 2)
    assert arrays["projection"]["xy_g"].shape == (LAYERS, 60, 2)
    assert (arrays["projection"]["xy_e"] == arrays["projection"]["xy"][0]).all()
    assert sorted(arrays["cka_sample"]) == ["h0", "h1", "h2", "h3", "index"]
