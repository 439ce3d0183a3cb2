"""Independent float64 references for every metric the probe stores, written from the definitions alone.

Each function here recomputes one stored metric name from a snapshot's activations the slow, obvious way:
full (N, N) cosine and distance matrices, explicit pair masks, `numpy.linalg.svd`, a distance row per point
for neighbours, the n × n form of the debiased HSIC. Nothing here imports the production metric code; the
definitions come from DESIGN.md ("Measurements") and the docstrings of `dynamics.metrics.*`, and where those
leave a choice the paper decides (Ethayarajh 2019, Rudman et al. 2022, Facco et al. 2017, Wang & Isola 2020,
Song et al. 2012 / Nguyen et al. 2021, Garrido et al. 2023).

`REFERENCES` maps a stored metric name to its function. A per-snapshot function takes a `SnapshotInputs` and
returns {(layer, variant): value}; the two step × step CKA metrics (`SERIES_METRICS`) take the whole measured
series and the index of one snapshot in it. `None` means "undefined" (the store holds NULL there).

Conventions shared by all of them (DESIGN.md):
* tokens are the content tokens (no special token), in row-major (block, position) order; a "sequence" is a
  probe block and a token's position is its column in the block (removed special tokens leave gaps);
* "mean cosine over pairs" is over unordered pairs of distinct tokens; a zero vector has cosine 0;
* layer 0 is the embedding-layer output e; g_l = h_l − e is only used for layers ≥ 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.reference import attention_formulas

Values = dict[tuple[int, str], float | None]

WORD_MIN_COUNT = 5  # DESIGN.md: word types occur at least 5 times in the probe set
TWONN_DISCARD_PERCENT = 10  # Facco et al. 2017: the largest 10% of the ratios are dropped
UNIFORMITY_T = 2.0  # DESIGN.md: t = 2
RANKME_EPS = 1e-7  # DESIGN.md: p_k = σ_k / Σσ + 1e-7


# ------------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class ProbeInputs:
    """What the references need from the probe set, per content token (N of them) unless noted.

    `word_type`: the token id for an eligible whole-word occurrence, −1 otherwise (`word_types`).
    `freq_bin`: 0 = most frequent … len(bin_names) − 1 (`frequency_bins`). `cka_index`: the CKA token sample;
    `neighbour_index`: the subsample for TwoNN and uniformity; `masked_index`: the content tokens replaced
    by [MASK] in the masked pass, ascending. `special_ids`: the tokenizer's special token ids.
    """

    seq_ids: np.ndarray
    positions: np.ndarray
    tokens: np.ndarray
    word_type: np.ndarray
    freq_bin: np.ndarray
    bin_names: tuple[str, ...]
    cka_index: np.ndarray
    neighbour_index: np.ndarray
    masked_index: np.ndarray
    special_ids: np.ndarray
    window: int
    max_distance: int
    tc_negatives: int = 50
    tc_temperature: float = 0.07
    seed: int = 0
    train_counts: np.ndarray | None = None  # (V,) the run's training token counts, None when it has none


@dataclass(frozen=True)
class MaskedInputs:
    """The masked pass at `ProbeInputs.masked_index`: T(h_L) (M, E), h_L (M, H), and the head's decoder
    (logits = T(h_L) · Wᵀ + b): `decoder_weight` (V, E), `decoder_bias` (V,)."""

    transform: np.ndarray
    hidden: np.ndarray
    decoder_weight: np.ndarray
    decoder_bias: np.ndarray


@dataclass(frozen=True)
class SnapshotInputs:
    """One snapshot: hidden states (L+1, N, H) float64 (index 0 = e), the input word-embedding matrix (V, E)
    of this snapshot and of the series' final snapshot, and the masked pass (None without an MLM head)."""

    step: int
    hidden: np.ndarray
    emb_matrix: np.ndarray
    final_emb_matrix: np.ndarray
    masked: MaskedInputs | None
    probe: ProbeInputs
    norm_weights: dict[int, np.ndarray] | None = None  # layer → its LayerNorm scale γ, read from the checkpoint
    attention: Any = None  # attention_formulas.AttentionInputs, where the case measures the attention families

    @property
    def last(self) -> int:
        return self.hidden.shape[0] - 1

    @property
    def emb_rows(self) -> np.ndarray:
        """(N, E) E[x_i], the anchor of every content token."""
        return self.emb_matrix[self.probe.tokens]


# ------------------------------------------------------------------------------ probe-set conventions

def content_layout(ids: np.ndarray, special_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Content mask (B, T) and, per content token in row-major order, its block, position and token id."""
    content = ~np.isin(ids, special_ids)
    blocks, cols = np.nonzero(content)  # row-major
    return content, blocks.astype(np.int64), cols.astype(np.int64), ids[blocks, cols].astype(np.int64)


def word_types(ids: np.ndarray, content: np.ndarray, vocab: Sequence[str], min_count: int = WORD_MIN_COUNT) -> np.ndarray:
    """Per content token: its token id if it is an eligible word occurrence, else −1 (WordPiece tokenizers).

    A whole single-wordpiece word at (b, i): a content token that does not start with "##" and whose next
    token in the block (if any) does not start with "##" either. Eligible types: token ids with at least
    `min_count` such whole-word occurrences in the probe set.
    """
    out = []
    whole_count: dict[int, int] = {}
    whole_at: list[tuple[int, int]] = []
    for b in range(ids.shape[0]):
        for i in range(ids.shape[1]):
            if not content[b, i]:
                continue
            t = int(ids[b, i])
            nxt = vocab[int(ids[b, i + 1])] if i + 1 < ids.shape[1] else ""
            whole = not vocab[t].startswith("##") and not nxt.startswith("##")
            whole_at.append((t, whole))
            if whole:
                whole_count[t] = whole_count.get(t, 0) + 1
    for t, whole in whole_at:
        out.append(t if whole and whole_count[t] >= min_count else -1)
    return np.asarray(out, dtype=np.int64)


def frequency_bins(counts: np.ndarray, n_bins: int = 3) -> np.ndarray:
    """Bin of every token id (V,) by occurrence mass, 0 = most frequent (`dynamics.metrics.anchors` docstring).

    Types with a positive count, sorted by count descending, each cover an interval of the cumulative share of
    occurrences; a type goes to the bin holding its interval's midpoint, ⌊n_bins · midpoint⌋, except that all
    types with one count share the bin of the first of them. A count of 0 (never seen) is the rarest bin.
    """
    counts = np.asarray(counts, dtype=np.float64)
    order = sorted((i for i in range(counts.size) if counts[i] > 0), key=lambda i: -counts[i])
    total = sum(counts[i] for i in order)
    bin_of_count: dict[float, int] = {}
    cum = 0.0
    for i in order:
        mid = (cum + counts[i] / 2) / total
        cum += counts[i]
        bin_of_count.setdefault(counts[i], min(int(math.floor(n_bins * mid)), n_bins - 1))
    return np.array([bin_of_count.get(c, n_bins - 1) if c > 0 else n_bins - 1 for c in counts], dtype=np.int64)


def neighbour_subsample(n: int, size: int, seed: int) -> np.ndarray:
    """The fixed subsample for the neighbour- and pair-based estimators (TwoNN, uniformity): all N tokens when
    N ≤ `size`, else `size` of them drawn without replacement, sorted. The random stream is the one
    `dynamics.measure.families.prepare` uses (`numpy.random.default_rng([seed, 3])`; it is stated only in that code,
    not in a docstring)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 3]).choice(n, size=size, replace=False))


# ------------------------------------------------------------------------------------------------ helpers

def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; an all-zero row stays zero (so its cosine with anything is 0)."""
    x = _f64(x)
    n = np.sqrt((x * x).sum(1))
    return x / np.where(n > 0, n, 1.0)[:, None]


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_i) for every row i (0 where either row is zero)."""
    return (_unit(a) * _unit(b)).sum(1)


def _cos_matrix(x: np.ndarray) -> np.ndarray:
    """(N, N) cosines of all pairs of rows."""
    u = _unit(x)
    return u @ u.T


def _pair_mean(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of the (N, N) `values` over the unordered pairs i < j where `mask` holds (None without pairs)."""
    upper = np.triu(mask, k=1)
    return float(values[upper].mean()) if upper.any() else None


def _sq_distances(x: np.ndarray) -> np.ndarray:
    """(N, N) squared Euclidean distances, one explicit row of differences at a time."""
    x = _f64(x)
    return np.stack([((x - x[i]) ** 2).sum(1) for i in range(x.shape[0])])


def _binned(layer: int, values: np.ndarray, bins: np.ndarray, names: Sequence[str]) -> Values:
    """{(layer, "all"): mean, (layer, bin name): mean within the bin}; None for an empty selection."""
    out: Values = {(layer, "all"): float(values.mean()) if values.size else None}
    for b, name in enumerate(names):
        sel = values[bins == b]
        out[(layer, name)] = float(sel.mean()) if sel.size else None
    return out


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _layers(s: SnapshotInputs, start: int = 0) -> range:
    return range(start, s.last + 1)


def _g(s: SnapshotInputs, layer: int) -> np.ndarray:
    return s.hidden[layer] - s.hidden[0]


def _same_seq(p: ProbeInputs) -> np.ndarray:
    return p.seq_ids[:, None] == p.seq_ids[None, :]


def _distance(p: ProbeInputs) -> np.ndarray:
    return np.abs(p.positions[:, None] - p.positions[None, :])


# -------------------------------------------------------------------------------------------- anchors

def anchor_sim_word(s: SnapshotInputs) -> Values:
    """cos(h_l(i), E[x_i]) per layer, overall and per frequency bin (only when E's width is H)."""
    if s.emb_matrix.shape[1] != s.hidden.shape[2]:
        return {}
    out: Values = {}
    for layer in _layers(s):
        out |= _binned(layer, _cos_rows(s.hidden[layer], s.emb_rows), s.probe.freq_bin, s.probe.bin_names)
    return out


def anchor_sim_emb(s: SnapshotInputs) -> Values:
    """cos(h_l(i), e(i)) per layer, overall and per frequency bin."""
    out: Values = {}
    for layer in _layers(s):
        out |= _binned(layer, _cos_rows(s.hidden[layer], s.hidden[0]), s.probe.freq_bin, s.probe.bin_names)
    return out


def _masked_bins(s: SnapshotInputs) -> np.ndarray:
    return s.probe.freq_bin[s.probe.masked_index]


def masked_anchor_sim(s: SnapshotInputs) -> Values:
    """cos(T(h_L(i)), E[x_i]) at the masked positions (layer L), overall and per bin."""
    if s.masked is None:
        return {}
    target = s.emb_rows[s.probe.masked_index]
    return _binned(s.last, _cos_rows(s.masked.transform, target), _masked_bins(s), s.probe.bin_names)


def masked_hidden_anchor_sim(s: SnapshotInputs) -> Values:
    """cos(h_L(i), E[x_i]) of the masked pass at the masked positions, overall and per bin."""
    if s.masked is None or s.emb_matrix.shape[1] != s.hidden.shape[2]:
        return {}
    target = s.emb_rows[s.probe.masked_index]
    return _binned(s.last, _cos_rows(s.masked.hidden, target), _masked_bins(s), s.probe.bin_names)


def _masked_logits(s: SnapshotInputs) -> tuple[np.ndarray, np.ndarray]:
    """(M, V) float64 logits T(h_L) · Wᵀ + b of the head at the masked positions, and (M,) the true token's."""
    assert s.masked is not None
    logits = _f64(s.masked.transform) @ _f64(s.masked.decoder_weight).T + _f64(s.masked.decoder_bias)
    true = s.probe.tokens[s.probe.masked_index]
    return logits, logits[np.arange(true.size), true]


def masked_ranks(s: SnapshotInputs) -> np.ndarray:
    """(M,) rank of the true token among the whole vocabulary under the head's float64 logits:
    1 + the number of tokens scoring strictly higher."""
    logits, own = _masked_logits(s)
    return 1 + (logits > own[:, None]).sum(1)


def masked_surprisals(s: SnapshotInputs) -> np.ndarray:
    """(M,) −ln p(true token) under the softmax of the float64 logits: ln Σ_v exp(z_v − z_max) + z_max − z_true."""
    logits, own = _masked_logits(s)
    top = logits.max(1)
    return np.log(np.exp(logits - top[:, None]).sum(1)) + top - own


def masked_surprisal(s: SnapshotInputs) -> Values:
    """Mean surprisal of the true token at the masked positions, overall and per bin."""
    if s.masked is None:
        return {}
    return _binned(s.last, masked_surprisals(s), _masked_bins(s), s.probe.bin_names)


def masked_accuracy(s: SnapshotInputs) -> Values:
    """Fraction of masked positions whose true token is ranked first, overall and per bin."""
    if s.masked is None:
        return {}
    return _binned(s.last, (masked_ranks(s) == 1).astype(np.float64), _masked_bins(s), s.probe.bin_names)


def masked_mrr(s: SnapshotInputs) -> Values:
    """Mean reciprocal rank of the true token at the masked positions, overall and per bin."""
    if s.masked is None:
        return {}
    return _binned(s.last, 1.0 / masked_ranks(s), _masked_bins(s), s.probe.bin_names)


def masked_median_rank(s: SnapshotInputs) -> Values:
    """Median rank of the true token at the masked positions."""
    if s.masked is None:
        return {}
    return {(s.last, "all"): float(np.median(masked_ranks(s)))}


# ---------------------------------------------------------------------------------------------- drift

def _drift_cosines(s: SnapshotInputs) -> np.ndarray:
    return _cos_rows(s.emb_matrix, s.final_emb_matrix)


def anchor_drift(s: SnapshotInputs) -> Values:
    """cos(E_step[v], E_final[v]) averaged over every vocabulary id that is not a special token (layer 0)."""
    if s.emb_matrix.shape != s.final_emb_matrix.shape:
        return {}
    keep = np.ones(s.emb_matrix.shape[0], dtype=bool)
    keep[s.probe.special_ids[s.probe.special_ids < keep.size]] = False
    return {(0, "all"): float(_drift_cosines(s)[keep].mean())}


def anchor_drift_probe(s: SnapshotInputs) -> Values:
    """cos(E_step[v], E_final[v]) averaged over the distinct token ids of the probe set, overall and by the bin
    of each id (layer 0)."""
    if s.emb_matrix.shape != s.final_emb_matrix.shape:
        return {}
    types = np.unique(s.probe.tokens)
    bins = np.array([s.probe.freq_bin[s.probe.tokens == t][0] for t in types])
    return _binned(0, _drift_cosines(s)[types], bins, s.probe.bin_names)


# -------------------------------------------------------------------------------------------- context

def _same_other(s: SnapshotInputs, layer: int) -> tuple[float | None, float | None]:
    cos = _cos_matrix(_g(s, layer))
    same = _same_seq(s.probe)
    return _pair_mean(cos, same), _pair_mean(cos, ~same)


def ctx_same_all(s: SnapshotInputs) -> Values:
    """Mean cos(g_i, g_j) over unordered pairs of distinct tokens of one block (layers ≥ 1)."""
    return {(layer, "all"): _same_other(s, layer)[0] for layer in _layers(s, 1)}


def ctx_other(s: SnapshotInputs) -> Values:
    """Mean cos(g_i, g_j) over pairs of tokens from two different blocks (layers ≥ 1)."""
    return {(layer, "all"): _same_other(s, layer)[1] for layer in _layers(s, 1)}


def ctx_gap_all(s: SnapshotInputs) -> Values:
    """ctx_same_all − ctx_other."""
    return {(layer, "all"): _minus(*_same_other(s, layer)) for layer in _layers(s, 1)}


def _window(s: SnapshotInputs, layer: int) -> float | None:
    half = (s.probe.window - 1) // 2
    d = _distance(s.probe)
    return _pair_mean(_cos_matrix(_g(s, layer)), _same_seq(s.probe) & (d >= 1) & (d <= half))


def ctx_same_window(s: SnapshotInputs) -> Values:
    """Mean cos(g_i, g_j) over same-block pairs with 1 ≤ |p_i − p_j| ≤ (W − 1)/2, pooled over the pairs."""
    return {(layer, "all"): _window(s, layer) for layer in _layers(s, 1)}


def ctx_gap_window(s: SnapshotInputs) -> Values:
    """ctx_same_window − ctx_other."""
    return {(layer, "all"): _minus(_window(s, layer), _same_other(s, layer)[1]) for layer in _layers(s, 1)}


def ctx_cos_by_distance(s: SnapshotInputs) -> Values:
    """Mean cos(g_i, g_j) over same-block pairs at distance |p_i − p_j| = d, variants d001 … d{max_distance}."""
    out: Values = {}
    same, d = _same_seq(s.probe), _distance(s.probe)
    for layer in _layers(s, 1):
        cos = _cos_matrix(_g(s, layer))
        for dist in range(1, s.probe.max_distance + 1):
            out[(layer, f"d{dist:03d}")] = _pair_mean(cos, same & (d == dist))
    return out


def seq_id_accuracy(s: SnapshotInputs) -> Values:
    """Fraction of tokens (of blocks with ≥ 2 tokens) whose g is strictly closer, by cosine, to its own block's
    centroid without itself (Σ_{j∈s, j≠i} u_j) than to every other block's full centroid (Σ_{j∈t} u_j)."""
    out: Values = {}
    seq = s.probe.seq_ids
    blocks = np.unique(seq)
    member = seq[:, None] == blocks[None, :]  # (N, B): token i belongs to block b
    own_block = np.argmax(member, 1)
    eligible = member.sum(0)[own_block] >= 2  # a one-token block has no leave-one-out centroid
    for layer in _layers(s, 1):
        u = _unit(_g(s, layer))
        centroids = member.T.astype(np.float64) @ u  # (B, H) sums of unit vectors
        others = u @ _unit(centroids).T  # (N, B) cosine with every full centroid
        others[member] = -np.inf  # the own block is scored without the token instead
        own = _cos_rows(u, centroids[own_block] - u)
        correct = (own > others.max(1)) & eligible
        out[(layer, "all")] = float(correct.sum() / eligible.sum()) if eligible.any() else None
    return out


# Leave tc_loss to the lead engineer (`AWAITING_DRAWS` in test_reference.py): the probe's fixed positive and
# negative draws are wired to this loop there.
def info_nce_loop(g: np.ndarray, pos_idx: np.ndarray, neg_idx: np.ndarray, temperature: float) -> float:
    """TACO's InfoNCE on cosine similarity, one anchor at a time in float64, positive at index 0:
    L_i = −log(exp(c_i⁺/τ) / (exp(c_i⁺/τ) + Σ_k exp(c_ik⁻/τ))), c = cos(g_i, ·); returns mean_i L_i.

    g (n, H); pos_idx (n,); neg_idx (n, K) indices into the rows of g."""
    g = _f64(g)
    total = 0.0
    for i in range(g.shape[0]):
        cands = [int(pos_idx[i])] + [int(k) for k in neg_idx[i]]
        logits = np.array([_cos_rows(g[i : i + 1], g[j : j + 1])[0] / temperature for j in cands])
        top = logits.max()
        total += -(logits[0] - top - math.log(np.exp(logits - top).sum()))
    return total / g.shape[0]


def tc_loss(s: SnapshotInputs) -> Values:
    """TACO's InfoNCE on g = h_L − e over every probe token as an anchor, by `info_nce_loop`, on the probe's own
    draws: the positives and negatives come from the probe's seeded sampler (`dynamics.metrics.context.draw_tc`,
    training's `taco.objectives.sample_tc_indices`, whose distribution is tested on its own), so the loss formula
    is what this pins."""
    import torch

    from dynamics.metrics.context import draw_tc

    p = s.probe
    d = draw_tc(p.seq_ids, p.positions, p.window, p.tc_negatives, torch.Generator().manual_seed(p.seed))
    n = p.seq_ids.size
    pos_idx, neg_idx = np.empty(n, dtype=np.int64), np.empty((n, p.tc_negatives), dtype=np.int64)
    pos_idx[d.anchors.numpy()], neg_idx[d.anchors.numpy()] = d.positives.numpy(), d.negatives.numpy()
    last = s.hidden.shape[0] - 1
    return {(last, "all"): info_nce_loop(_g(s, last), pos_idx, neg_idx, p.tc_temperature)}


# ------------------------------------------------------------------------------------------- geometry

def _anisotropy(x: np.ndarray) -> float:
    return _pair_mean(_cos_matrix(x), np.ones((x.shape[0], x.shape[0]), dtype=bool))  # type: ignore[return-value]


def anisotropy(s: SnapshotInputs) -> Values:
    """Mean cosine over all unordered pairs of distinct content tokens, per layer."""
    return {(layer, "all"): _anisotropy(s.hidden[layer]) for layer in _layers(s)}


def _self_similarity(x: np.ndarray, types: np.ndarray) -> float | None:
    per_type = []
    for t in np.unique(types[types >= 0]):
        occ = x[types == t]
        if occ.shape[0] >= 2:
            cos = _cos_matrix(occ)
            per_type.append(cos[~np.eye(occ.shape[0], dtype=bool)].mean())
    return float(np.mean(per_type)) if per_type else None


def self_similarity(s: SnapshotInputs) -> Values:
    """Ethayarajh: per eligible word type, the mean cosine over pairs of its occurrences; unweighted mean."""
    return {(layer, "all"): _self_similarity(s.hidden[layer], s.probe.word_type) for layer in _layers(s)}


def self_similarity_adj(s: SnapshotInputs) -> Values:
    """self_similarity − anisotropy of the layer."""
    return {(layer, "all"): _minus(_self_similarity(s.hidden[layer], s.probe.word_type), _anisotropy(s.hidden[layer]))
            for layer in _layers(s)}


def _intra_similarity(x: np.ndarray, seq: np.ndarray) -> float | None:
    per_seq = []
    for b in np.unique(seq):
        rows = _f64(x[seq == b])
        if rows.shape[0] >= 2:
            mean = rows.mean(0, keepdims=True)
            per_seq.append(_cos_rows(rows, np.repeat(mean, rows.shape[0], 0)).mean())
    return float(np.mean(per_seq)) if per_seq else None


def intra_similarity(s: SnapshotInputs) -> Values:
    """Ethayarajh: per block with ≥ 2 tokens, the mean cosine of each token with the block's mean vector;
    unweighted mean over blocks."""
    return {(layer, "all"): _intra_similarity(s.hidden[layer], s.probe.seq_ids) for layer in _layers(s)}


def intra_similarity_adj(s: SnapshotInputs) -> Values:
    """intra_similarity − anisotropy of the layer."""
    return {(layer, "all"): _minus(_intra_similarity(s.hidden[layer], s.probe.seq_ids), _anisotropy(s.hidden[layer]))
            for layer in _layers(s)}


def _top_share(x: np.ndarray) -> float | None:
    """σ₁² / Σσ² of the uncentred matrix x (None for an all-zero matrix)."""
    sv = np.linalg.svd(_f64(x), compute_uv=False)
    total = float((sv**2).sum())
    return float(sv[0] ** 2) / total if total > 0 else None


def _mev(x: np.ndarray, types: np.ndarray) -> float | None:
    per_type = []
    for t in np.unique(types[types >= 0]):
        occ = x[types == t]
        share = _top_share(occ) if occ.shape[0] >= 2 else None
        if share is not None:
            per_type.append(share)
    return float(np.mean(per_type)) if per_type else None


def mev(s: SnapshotInputs) -> Values:
    """Ethayarajh's maximum explainable variance: σ₁²/Σσ² of each eligible type's uncentred occurrence
    matrix; unweighted mean over types."""
    return {(layer, "all"): _mev(s.hidden[layer], s.probe.word_type) for layer in _layers(s)}


def mev_adj(s: SnapshotInputs) -> Values:
    """mev − anisotropy of the layer."""
    return {(layer, "all"): _minus(_mev(s.hidden[layer], s.probe.word_type), _anisotropy(s.hidden[layer]))
            for layer in _layers(s)}


def mev_adj_pc1(s: SnapshotInputs) -> Values:
    """mev − σ₁²/Σσ² of the layer's whole uncentred (N, H) token matrix (Ethayarajh's MEV baseline)."""
    return {(layer, "all"): _minus(_mev(s.hidden[layer], s.probe.word_type), _top_share(s.hidden[layer]))
            for layer in _layers(s)}


def _rankme(x: np.ndarray) -> float | None:
    sv = np.linalg.svd(_f64(x), compute_uv=False)
    if sv.sum() == 0:
        return None
    p = sv / sv.sum() + RANKME_EPS
    return float(np.exp(-(p * np.log(p)).sum()))


def rankme(s: SnapshotInputs) -> Values:
    """RankMe exp(−Σ p_k log p_k), p_k = σ_k/Σσ + 1e-7, of the uncentred (N, H) matrix."""
    return {(layer, "all"): _rankme(s.hidden[layer]) for layer in _layers(s)}


def rankme_centred(s: SnapshotInputs) -> Values:
    """RankMe of the column-centred (N, H) matrix."""
    return {(layer, "all"): _rankme(s.hidden[layer] - s.hidden[layer].mean(0)) for layer in _layers(s)}


def _isoscore(x: np.ndarray) -> float | None:
    """Rudman et al. 2022, steps 1-6, with n the ambient dimension."""
    x = _f64(x)
    n_samples, n = x.shape
    centred = x - x.mean(0)
    # 1-2: in the PCA basis the covariance is diagonal, its diagonal the principal variances σ_k² / (N − 1);
    # the directions without variance (beyond the rank) contribute zeros.
    sv = np.linalg.svd(centred, compute_uv=False)
    diag = np.zeros(n)
    diag[: sv.size] = sv**2 / (n_samples - 1)
    norm = np.linalg.norm(diag)
    if norm == 0:
        return None
    normalised = math.sqrt(n) * diag / norm  # 3
    defect = np.linalg.norm(normalised - np.ones(n)) / math.sqrt(2 * (n - math.sqrt(n)))  # 4
    phi = (n - defect**2 * (n - math.sqrt(n))) ** 2 / n**2  # 5
    return float((n * phi - 1) / (n - 1))  # 6


def isoscore(s: SnapshotInputs) -> Values:
    """IsoScore (Rudman et al. 2022) of the layer's token matrix."""
    return {(layer, "all"): _isoscore(s.hidden[layer]) for layer in _layers(s)}


def _twonn(x: np.ndarray) -> float | None:
    """Facco et al. 2017 on the distinct rows of x: μ = r₂/r₁ per point, μ sorted ascending with the empirical
    F(μ_(i)) = i/N, the largest 10% dropped, d = slope of −log(1 − F) against log μ through the origin."""
    rows = np.unique(np.asarray(x), axis=0)  # identical vectors collapsed (exact equality, as extracted)
    n = rows.shape[0]
    if n < 3:
        return None
    dist = np.sqrt(_sq_distances(rows))
    np.fill_diagonal(dist, np.inf)  # a point is not its own neighbour
    nearest = np.sort(dist, axis=1)
    mu = np.sort(nearest[:, 1] / nearest[:, 0])
    keep = n * (100 - TWONN_DISCARD_PERCENT) // 100
    if keep < 1:
        return None
    xs = np.log(mu[:keep])
    ys = -np.log(1 - np.arange(1, keep + 1) / n)
    return float((xs * ys).sum() / (xs * xs).sum()) if (xs * xs).sum() > 0 else None


def twonn(s: SnapshotInputs) -> Values:
    """TwoNN intrinsic dimension of the neighbour subsample of the layer (duplicates collapsed)."""
    return {(layer, "all"): _twonn(s.hidden[layer][s.probe.neighbour_index]) for layer in _layers(s)}


def uniformity(s: SnapshotInputs) -> Values:
    """Wang–Isola uniformity log mean exp(−t‖u_i − u_j‖²), t = 2, over distinct pairs of the neighbour
    subsample's unit vectors."""
    out: Values = {}
    for layer in _layers(s):
        u = _unit(s.hidden[layer][s.probe.neighbour_index])
        d2 = _sq_distances(u)
        off = ~np.eye(u.shape[0], dtype=bool)
        out[(layer, "all")] = float(np.log(np.exp(-UNIFORMITY_T * d2[off]).mean())) if off.any() else None
    return out


def alignment(s: SnapshotInputs) -> Values:
    """Wang–Isola alignment with positives by proximity: mean ‖u_i − u_j‖² over the pairs of content tokens of
    one block at positions p and p + 1."""
    p = s.probe
    where = {(int(b), int(q)): i for i, (b, q) in enumerate(zip(p.seq_ids, p.positions, strict=True))}
    pairs = [(i, where[(b, q + 1)]) for (b, q), i in where.items() if (b, q + 1) in where]
    out: Values = {}
    for layer in _layers(s):
        u = _unit(s.hidden[layer])
        out[(layer, "all")] = float(np.mean([((u[i] - u[j]) ** 2).sum() for i, j in pairs])) if pairs else None
    return out


def _mean_norm(x: np.ndarray) -> float:
    return float(np.linalg.norm(_f64(x), axis=1).mean())


def norm_h(s: SnapshotInputs) -> Values:
    """Mean ‖h_l(i)‖ per layer."""
    return {(layer, "all"): _mean_norm(s.hidden[layer]) for layer in _layers(s)}


def norm_e(s: SnapshotInputs) -> Values:
    """Mean ‖e(i)‖ (layer 0)."""
    return {(0, "all"): _mean_norm(s.hidden[0])}


def norm_g(s: SnapshotInputs) -> Values:
    """Mean ‖h_l(i) − e(i)‖ (layers ≥ 1)."""
    return {(layer, "all"): _mean_norm(_g(s, layer)) for layer in _layers(s, 1)}


# ------------------------------------------------------------------------------------------------ CKA

def hsic_debiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741 - L is the paper's name
    """Song et al. 2012's unbiased HSIC from two (n, n) kernels, n ≥ 4, with K̃, L̃ their zero-diagonal forms:
    [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))."""
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return float((np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3)))


def linear_cka_debiased(x: np.ndarray, y: np.ndarray) -> float | None:
    """HSIC₁(K, L) / √(HSIC₁(K, K) HSIC₁(L, L)) with the linear kernels K = XXᵀ, L = YYᵀ of the raw rows
    (None when a self term is not positive)."""
    x, y = _f64(x), _f64(y)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    denom = hsic_debiased(k, k) * hsic_debiased(l, l)
    return hsic_debiased(k, l) / math.sqrt(denom) if denom > 0 else None


def _cka_sample(s: SnapshotInputs, layer: int) -> np.ndarray:
    return s.hidden[layer][s.probe.cka_index]


def cka_prev_layer(s: SnapshotInputs) -> Values:
    """Debiased linear CKA between layer l and layer l − 1 on the CKA token sample (layers ≥ 1)."""
    return {(layer, "all"): linear_cka_debiased(_cka_sample(s, layer), _cka_sample(s, layer - 1))
            for layer in _layers(s, 1)}


def cka_prev_snapshot(series: Sequence[SnapshotInputs], k: int) -> Values:
    """Debiased linear CKA of each layer between measured snapshot k and snapshot k − 1 (none for the first),
    on the CKA token sample."""
    if k == 0:
        return {}
    a, b = series[k], series[k - 1]
    return {(layer, "all"): linear_cka_debiased(_cka_sample(a, layer), _cka_sample(b, layer)) for layer in _layers(a)}


def cka_final(series: Sequence[SnapshotInputs], k: int) -> Values:
    """Debiased linear CKA of each layer between measured snapshot k and the last measured snapshot."""
    a, b = series[k], series[-1]
    return {(layer, "all"): linear_cka_debiased(_cka_sample(a, layer), _cka_sample(b, layer)) for layer in _layers(a)}


# ------------------------------------------------------------------------------------- rogue dimensions

def _contributions(x: np.ndarray) -> np.ndarray:
    """Per dimension d, the mean over unordered pairs i < j of u_id·u_jd (unit rows), by an explicit pair loop."""
    u = _unit(x)
    n = u.shape[0]
    total = np.zeros(u.shape[1])
    for i in range(n - 1):
        total += (u[i] * u[i + 1:]).sum(0)
    return total / (n * (n - 1) / 2)


def _rogue_share(x: np.ndarray, k: int) -> float | None:
    c = _contributions(x)
    return float(np.sort(c)[::-1][:k].sum() / c.sum()) if c.sum() > 0 else None


def rogue_top1_share(s: SnapshotInputs) -> Values:
    """Timkey & van Schijndel: the largest dimension's share of the mean pairwise cosine."""
    return {(layer, "all"): _rogue_share(s.hidden[layer], 1) for layer in _layers(s)}


def rogue_top3_share(s: SnapshotInputs) -> Values:
    """The 3 largest dimensions' share of the mean pairwise cosine."""
    return {(layer, "all"): _rogue_share(s.hidden[layer], 3) for layer in _layers(s)}


def anisotropy_standardised(s: SnapshotInputs) -> Values:
    """Mean pairwise cosine after z-scoring each dimension over the tokens (population std; σ = 0 → 0)."""
    out: Values = {}
    for layer in _layers(s):
        x = _f64(s.hidden[layer])
        std = x.std(0)
        z = np.where(std > 0, (x - x.mean(0)) / np.where(std > 0, std, 1.0), 0.0)
        out[(layer, "all")] = _anisotropy(z)
    return out


# --------------------------------------------------------------------------------------- word acquisition
# Chang & Bergen (2022), as DESIGN.md and `dynamics.metrics.acquisition` define it: per word type, its mean surprisal
# at the masked positions of each snapshot; a least-squares fit of f(x) = lo + (hi − lo)/(1 + exp(k(x − x0))) to
# it against x = log10 step (steps ≥ 1; bounds 0 ≤ hi, lo ≤ 2·max(y, ln V) + 1, 0 ≤ k ≤ 100, x0 within two decades of
# the measured x); AoA where f crosses the midpoint between ln V and f(x_last), inside the measured range.

ACQUISITION_MIN_POINTS = 5
BOOTSTRAP = 1000


def word_curves(series: Sequence[SnapshotInputs]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(types (T,) token ids with a masked eligible occurrence, ascending; x (S,) log10 step, NaN for step 0;
    curves (T, S) mean surprisal of each type's masked occurrences at each snapshot)."""
    p = series[0].probe
    typed = p.word_type[p.masked_index]
    types = np.unique(typed[typed >= 0])
    curves = np.empty((types.size, len(series)))
    for k, snap in enumerate(series):
        surprisal = masked_surprisals(snap)
        for t, word in enumerate(types):
            curves[t, k] = surprisal[typed == word].mean()
    x = np.array([math.log10(s.step) if s.step >= 1 else np.nan for s in series])
    return types, x, curves


def _curve(x: np.ndarray, hi: float, lo: float, k: float, x0: float) -> np.ndarray:
    return lo + (hi - lo) / (1.0 + np.exp(np.clip(k * (x - x0), -700, 700)))


def sigmoid_sse(x: np.ndarray, y: np.ndarray, theta: Sequence[float]) -> float:
    """Σ (f(x_i) − y_i)² of the sigmoid theta = (hi, lo, k, x0) over the points where x and y are finite, summed
    one point at a time."""
    return float(sum((_curve(np.array([xi]), *theta)[0] - yi) ** 2
                     for xi, yi in zip(x, y, strict=True) if math.isfinite(xi) and math.isfinite(yi)))


def fit_sigmoid(x: np.ndarray, y: np.ndarray, chance: float) -> tuple[np.ndarray, float] | None:
    """The bounded least-squares sigmoid (hi, lo, k, x0) of one curve and its sum of squares (None with fewer than
    `ACQUISITION_MIN_POINTS` finite points): the lowest optimum L-BFGS-B reaches on the explicit sum of squares from
    a grid of starts — x0 over the measured range, k from gentle to its upper bound (where a step between two
    measured points has its optimum: started lower, the search stalls on the way along that flat valley)."""
    from scipy.optimize import minimize

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < ACQUISITION_MIN_POINTS:
        return None
    top = 2.0 * max(float(y.max()), chance) + 1.0
    bounds = [(0.0, top), (0.0, top), (0.0, 100.0), (x.min() - 2.0, x.max() + 2.0)]
    best = None
    for x0 in np.linspace(x.min(), x.max(), 5):
        for k in (1.0, 5.0, 20.0, 100.0):
            res = minimize(lambda theta: sigmoid_sse(x, y, theta), np.array([y.max(), y.min(), k, x0]),
                           method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})
            if best is None or res.fun < best.fun:
                best = res
    return best.x, float(best.fun)


def age_of_acquisition(x: np.ndarray, y: np.ndarray, chance: float) -> float | None:
    """The AoA of one curve (None when undefined): the bounded least-squares optimum (`fit_sigmoid`), then the
    midpoint crossing solved by bisection on f."""
    fit = fit_sigmoid(x, y, chance)
    if fit is None:
        return None
    ok = np.isfinite(x) & np.isfinite(y)
    x = x[ok]
    hi, lo, k, x0 = fit[0]
    floor = float(_curve(np.array([x.max()]), hi, lo, k, x0)[0])
    mid = 0.5 * (chance + floor)

    def f(v: float) -> float:
        return float(_curve(np.array([v]), hi, lo, k, x0)[0]) - mid

    a, b = float(x.min()), float(x.max())
    if not f(a) > 0 >= f(b):  # f is non-increasing: a crossing inside the range needs f(x_first) above the midpoint
        return None
    for _ in range(200):
        m = 0.5 * (a + b)
        a, b = (m, b) if f(m) > 0 else (a, m)
    return 0.5 * (a + b)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions, one value at a time."""
    order = sorted(range(v.size), key=lambda i: v[i])
    ranks = np.empty(v.size)
    i = 0
    while i < v.size:
        j = i
        while j + 1 < v.size and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / den) if den > 0 and a.size >= 3 else None


# The three run-level metrics share one series' fits: (series, result) by id(series), the series kept alive with it.
_ACQUISITION: dict[int, tuple[Sequence[SnapshotInputs], tuple[np.ndarray, list[float | None], np.ndarray]]] = {}


def _acquisition(series: Sequence[SnapshotInputs]) -> tuple[np.ndarray, list[float | None], np.ndarray]:
    """(types, AoA per type (None when undefined), x) of a series, computed once per series object."""
    kept = _ACQUISITION.get(id(series))
    if kept is None or kept[0] is not series:
        types, x, curves = word_curves(series)
        chance = math.log(series[-1].emb_matrix.shape[0])
        kept = _ACQUISITION[id(series)] = (series, (types, [age_of_acquisition(x, c, chance) for c in curves], x))
    return kept[1]


def _at_last(series: Sequence[SnapshotInputs], values: dict[str, float | None]) -> dict[tuple[int, int, str], float | None]:
    return {(series[-1].last, variant): v for variant, v in values.items()}


def aoa_freq_spearman(series: Sequence[SnapshotInputs]) -> Values:
    """ρ of AoA with log10 training frequency over the types with both, and the 2.5/97.5 percentiles of ρ over the
    documented bootstrap draws (`numpy.random.default_rng(seed).integers(0, n, (1000, n))`)."""
    p = series[0].probe
    if series[0].masked is None:
        return {}
    # the run's training counts; without them the probe set's own (the probe's documented fallback)
    counts = p.train_counts if p.train_counts is not None else np.bincount(p.tokens)
    types, aoa, _ = _acquisition(series)
    keep = [i for i, a in enumerate(aoa) if a is not None and types[i] < counts.size and counts[types[i]] > 0]
    if len(keep) < 3:  # undefined: one NULL row in variant "all", as for every undefined metric
        return _at_last(series, {"all": None})
    a = np.array([aoa[i] for i in keep])
    f = np.log10(counts[types[keep]].astype(np.float64))
    draws = np.random.default_rng(p.seed).integers(0, a.size, (BOOTSTRAP, a.size))
    boot = [r for r in (_spearman(a[d], f[d]) for d in draws) if r is not None]
    lo, hi = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if boot else (None, None)
    return _at_last(series, {"all": _spearman(a, f), "ci_low": lo, "ci_high": hi})


def aoa_fitted_share(series: Sequence[SnapshotInputs]) -> Values:
    """Share of the types with a masked occurrence whose curve gives an AoA."""
    if series[0].masked is None:
        return {}
    _, aoa, _ = _acquisition(series)
    return _at_last(series, {"all": sum(a is not None for a in aoa) / len(aoa) if aoa else None})


def aoa_median(series: Sequence[SnapshotInputs]) -> Values:
    """Median of the defined AoA values."""
    if series[0].masked is None:
        return {}
    _, aoa, _ = _acquisition(series)
    defined = [a for a in aoa if a is not None]
    return _at_last(series, {"all": float(np.median(defined)) if defined else None})


# ------------------------------------------------------------------------------ LayerNorm outlier dimensions
# Kovaleva et al. (2021): a dimension d of a layer's LayerNorm scale γ is an outlier when |γ_d − mean γ| > 3·std γ
# (population std). Layer l's γ is named per architecture in `conftest.checkpoint_norm_weights`.

def _outlier_dims(w: np.ndarray) -> set[int]:
    w = _f64(w)
    mean = sum(w) / w.size
    std = math.sqrt(sum((v - mean) ** 2 for v in w) / w.size)
    return {d for d, v in enumerate(w) if abs(v - mean) > 3 * std} if std > 0 else set()


def ln_outlier_dims(s: SnapshotInputs) -> Values:
    """Number of outlier dimensions of each layer's LayerNorm scale."""
    if s.norm_weights is None:
        return {}
    return {(layer, "all"): float(len(_outlier_dims(w))) for layer, w in s.norm_weights.items()}


def ln_outlier_persistence(series: Sequence[SnapshotInputs], k: int) -> Values:
    """|O_k ∩ O_last| / |O_last| per layer with a norm; None when the last snapshot's layer has no outlier."""
    a, b = series[k], series[-1]
    if a.norm_weights is None or b.norm_weights is None:
        return {}
    out: Values = {}
    for layer, w in a.norm_weights.items():
        last = _outlier_dims(b.norm_weights[layer])
        out[(layer, "all")] = len(_outlier_dims(w) & last) / len(last) if last else None
    return out


# ------------------------------------------------------------------------------------------- registry

REFERENCES: dict[str, Callable[..., Values]] = {
    f.__name__: f
    for f in (
        anchor_sim_word, anchor_sim_emb, masked_anchor_sim, masked_hidden_anchor_sim, masked_accuracy, masked_mrr,
        masked_median_rank, masked_surprisal, anchor_drift, anchor_drift_probe,
        ctx_same_all, ctx_other, ctx_gap_all, ctx_same_window, ctx_gap_window, ctx_cos_by_distance, seq_id_accuracy,
        tc_loss,
        anisotropy, self_similarity, self_similarity_adj, intra_similarity, intra_similarity_adj, mev, mev_adj,
        mev_adj_pc1, rankme, rankme_centred, isoscore, twonn, uniformity, alignment, norm_h, norm_e, norm_g,
        cka_prev_layer, cka_prev_snapshot, cka_final, rogue_top1_share, rogue_top3_share, anisotropy_standardised,
        ln_outlier_dims, ln_outlier_persistence, aoa_freq_spearman, aoa_fitted_share, aoa_median,
    )
}
SERIES_METRICS = frozenset({"cka_prev_snapshot", "cka_final", "ln_outlier_persistence"})  # these take (series, index)
RUN_METRICS = frozenset({"aoa_freq_spearman", "aoa_fitted_share", "aoa_median"})  # (series) → at the last step


REFERENCES.update(attention_formulas.REFERENCES)  # the attention and copying families


def reference_rows(metric: str, series: Sequence[SnapshotInputs]) -> dict[tuple[int, int, str], float | None]:
    """{(step, layer, variant): value} of `metric` over a measured series (snapshots in step order)."""
    fn = REFERENCES[metric]
    if metric in RUN_METRICS:
        return {(series[-1].step, layer, variant): v for (layer, variant), v in fn(series).items()}
    out: dict[tuple[int, int, str], float | None] = {}
    for k, snap in enumerate(series):
        values = fn(series, k) if metric in SERIES_METRICS else fn(snap)
        out |= {(snap.step, layer, variant): v for (layer, variant), v in values.items()}
    return out
