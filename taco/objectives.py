"""Pre-training objectives: MLM on masked positions only, and TACO's token-alignment contrastive (TC) loss.

TC loss (Fu et al. 2022, as DESIGN.md fixes it). With e the embedding-layer output and h the last layer,
the context vector of position i is g_i = h_i − e_i. For an anchor i of sequence s:

    L_i = −log  exp(cos(g_i, g_p)/τ) / [exp(cos(g_i, g_p)/τ) + Σ_k exp(cos(g_i, g_{n_k})/τ)]

where the positive p is the position at offset d, 1 ≤ |d| ≤ (W−1)/2, in the same sequence (a uniformly
random other position of s when i+d is not a content position), and the K negatives n_k are drawn with
replacement from content positions of *other* sequences. g_p and g_{n_k} are detached, so the gradient
reaches the model through the anchor only. L_TC is the mean over anchors; L = L_MLM + λ·L_TC.

Special tokens and padding are never anchors, positives or negatives. The (anchors, K, H) tensor of
negative vectors is never kept. The K cosines per anchor come from one of these kernels (`method=`), all the
same numbers on the same draws (tested): "sparse", a CSR sampled dense-dense product (backward a CSR × dense
product); "sparse_bag", the same forward on row-sorted columns (cuSPARSE's CSR convention) with the backward
as one weighted row-sum kernel (`embedding_bag`); "gather", rows gathered chunk by chunk; "batched", one
(B, L, H) × (B, H, K) product, for negatives shared by the anchors of a sequence (below). "auto" picks per
device from `AUTO_METHOD`. The cosines are computed in float32 with autocast off, so every kernel gives the
same values under bf16 training.

Shared negatives (`negative_sharing="sequence"`, off by default). The released code draws K negatives per
anchor. With sharing, all anchors of a sequence use the same K draws (with replacement, uniform over the
content positions of the other sequences), so each anchor's negatives keep exactly the released marginal
distribution and the expected loss and gradient are unchanged; only their correlation across anchors of a
sequence changes, and the cosines become one batched product. The price is variance over draws, measured by
`benchmarks/tc_variance.py` (CPU, 1,000 draws per sampler, K = 50, W = 5, τ = 0.07; variance shared /
per-anchor, of the batch loss and of its gradient with respect to parameters shared by all positions):

    batch (sequences x tokens)                       loss      gradient
    clustered synthetic g, 16 x 64 (loss ≈ 0.52)     4.1x      4.0x
    random-init mini BERT, 16 x 64 (loss ≈ 5.19)     0.94x     1.6x
    clustered synthetic g, 8 x 256 (loss ≈ 0.50)     24x       14x   (gradient variance 5 % of |mean|²)

It grows with the anchors per sequence that share a draw (paper blocks: 254). Per-anchor draws stay the default.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TCConfig:
    window: int = 5
    negatives: int = 50
    temperature: float = 0.07
    weight: float = 1.0
    anchors: str = "all"  # all | masked | unmasked
    global_negatives: bool = True
    negative_sharing: str = "anchor"  # anchor (released: K draws per anchor) | sequence (K draws per sequence)
    method: str = "auto"  # kernel for the negatives' cosines: auto | sparse | sparse_bag | gather | batched


@dataclass
class TCIndex:
    """Sampled indices into the compact list of candidate positions (row-major over (batch, seq))."""

    flat: Tensor  # (N,) index into batch*seq of each candidate position
    anchors: Tensor  # (A,) compact indices of anchors
    positives: Tensor  # (A,) compact index of each anchor's positive (local pool)
    negatives: Tensor  # (A, K) indices into the negative pool (local, or all ranks' when gathered)
    shared_negatives: Tensor | None = None  # (B, K) per-sequence draws when negatives are shared, else None


NEGATIVE_SHARING = ("anchor", "sequence")
METHODS = ("auto", "sparse", "sparse_bag", "gather", "batched")
# What method="auto" runs, by device type, for per-anchor draws (shared draws always run "batched"). The CPU
# entry is measured (CSR kernels about 30x faster than row gathers there). The CUDA entry is the switch that the
# H200 run of `bash benchmarks/gpu_all.sh` decides: it stays "gather" (today's GPU path) until that run shows
# "sparse" or "sparse_bag" faster. Device types not listed run "gather".
AUTO_METHOD: dict[str, str] = {"cpu": "sparse", "cuda": "gather"}


def _compact(valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Compact indexing of the True entries of `valid` (B, L): flat index, sequence id, count and start per sequence."""
    b, seq_len = valid.shape
    flat = valid.reshape(-1).nonzero().squeeze(1)
    seq = torch.div(flat, seq_len, rounding_mode="floor")
    counts = valid.sum(1)
    starts = torch.cumsum(counts, 0) - counts
    return flat, seq, counts, starts


def sample_tc_indices(
    valid: Tensor,
    anchor_mask: Tensor,
    window: int,
    negatives: int,
    generator: torch.Generator | None = None,
    pool_counts: Tensor | None = None,
    pool_offset: int = 0,
    *,
    negative_sharing: str = "anchor",
) -> TCIndex:
    """Sample one positive and K negatives for every anchor.

    Args:
        valid: (B, L) bool, positions that may be sampled (content tokens under the attention mask).
        anchor_mask: (B, L) bool, positions that are anchors (a subset of `valid`).
        window: odd W >= 3; positives lie at offsets 1 <= |d| <= (W-1)/2.
        negatives: K >= 1, drawn with replacement from other sequences' candidate positions.
        pool_counts: candidate positions per sequence of the negative pool, in pool order. Default: the local
            batch (`valid.sum(1)`). Under multi-process training, all ranks' counts concatenated.
        pool_offset: index of this batch's first sequence within the pool's sequences.
        negative_sharing: "anchor" (the released algorithm: K draws per anchor) or "sequence" (K draws per
            sequence, shared by its anchors; `shared_negatives` holds them and `negatives` their per-anchor
            expansion). Positives and the generator's draws for them are the same either way.
    Every sequence needs >= 2 candidate positions and the pool >= 1 position outside each sequence.
    """
    if negative_sharing not in NEGATIVE_SHARING:
        raise ValueError(f"negative_sharing must be one of {', '.join(NEGATIVE_SHARING)}, got {negative_sharing!r}")
    device = valid.device
    b, seq_len = valid.shape
    flat, seq, counts, starts = _compact(valid)
    n = flat.numel()
    compact_of = torch.full((b * seq_len,), -1, dtype=torch.long, device=device)
    compact_of[flat] = torch.arange(n, device=device)
    anchors = anchor_mask.reshape(-1)[flat].nonzero().squeeze(1)
    a_seq = seq[anchors]
    a_pos = flat[anchors] % seq_len

    # Positive: a random offset in the window; fall back to another random position of the same sequence.
    half = window // 2
    d = torch.randint(1, half + 1, (anchors.numel(),), generator=generator, device="cpu").to(device)
    sign = torch.randint(0, 2, (anchors.numel(),), generator=generator, device="cpu").to(device) * 2 - 1
    target = a_pos + d * sign
    inside = (target >= 0) & (target < seq_len)
    cand = compact_of[(a_seq * seq_len + target.clamp(0, seq_len - 1))]
    ok = inside & (cand >= 0)
    n_s = counts[a_seq]
    r = (torch.rand(anchors.numel(), generator=generator, device="cpu").to(device) * (n_s - 1)).long()
    r = torch.minimum(r, n_s - 2)
    self_rank = anchors - starts[a_seq]
    fallback = starts[a_seq] + r + (r >= self_rank).long()
    positives = torch.where(ok, cand, fallback)

    # Negatives: uniform over pool positions outside the drawing row's sequence (the anchor's, or with sharing
    # each sequence's), by skipping that sequence's contiguous range.
    if pool_counts is None:
        pool_counts = counts
    pool_starts = torch.cumsum(pool_counts, 0) - pool_counts
    total = int(pool_counts.sum())
    if negative_sharing == "sequence":
        shared = _outside_draws(torch.arange(b, device=device) + pool_offset, pool_starts, pool_counts, total,
                                negatives, generator)
        return TCIndex(flat=flat, anchors=anchors, positives=positives, negatives=shared[a_seq],
                       shared_negatives=shared)
    neg = _outside_draws(a_seq + pool_offset, pool_starts, pool_counts, total, negatives, generator)
    return TCIndex(flat=flat, anchors=anchors, positives=positives, negatives=neg)


def _outside_draws(rows: Tensor, pool_starts: Tensor, pool_counts: Tensor, total: int, k: int,
                   generator: torch.Generator | None) -> Tensor:
    """(R, K) pool indices, uniform with replacement over the pool outside sequence `rows[r]` of the pool."""
    own_start = pool_starts[rows]
    own_count = pool_counts[rows]
    span = (total - own_count).unsqueeze(1)
    u = torch.rand((rows.numel(), k), generator=generator, device="cpu").to(rows.device)
    rn = torch.minimum((u * span).long(), span - 1)
    return rn + (rn >= own_start.unsqueeze(1)).long() * own_count.unsqueeze(1)


class NegativeCosine(torch.autograd.Function):
    """s[a, k] = <u[a], pool[idx[a, k]]> for unit vectors, without storing the (A, K, H) gather.

    The pool is treated as a constant (TACO detaches negatives). `mode`:
    - "sparse": the (A, M) matrix with K entries per row is a CSR pattern; forward is a sampled dense-dense
      product, backward a sparse × dense product (on the CPU about 30× faster than gathering rows).
    - "sparse_bag": the same forward with each row's columns sorted (cuSPARSE assumes sorted CSR rows; values
      are put back in draw order), backward `embedding_bag`: grad[a] = Σ_k grad_out[a, k] · pool[idx[a, k]] in
      one kernel that allows repeated columns.
    - "gather": rows gathered chunk by chunk in forward and backward, so at most `chunk` anchors' negatives
      exist at once.
    Each mode runs on any device. (A `bool` mode means "sparse" / "gather", as before.)
    """

    @staticmethod
    def forward(ctx, anchors: Tensor, pool: Tensor, idx: Tensor, chunk: int, mode: str | bool) -> Tensor:  # noqa: ANN001
        if isinstance(mode, bool):
            mode = "sparse" if mode else "gather"
        ctx.chunk, ctx.mode = chunk, mode
        if mode == "sparse":
            ctx.save_for_backward(pool, idx)
            pattern = _csr(idx, anchors.new_zeros(idx.numel()), pool.shape[0])
            return torch.sparse.sampled_addmm(pattern, anchors, pool.T, beta=0.0).values().reshape(idx.shape)
        if mode == "sparse_bag":
            ctx.save_for_backward(pool, idx)
            cols, order = idx.sort(dim=1)
            pattern = _csr(cols, anchors.new_zeros(idx.numel()), pool.shape[0])
            values = torch.sparse.sampled_addmm(pattern, anchors, pool.T, beta=0.0).values().reshape(idx.shape)
            return torch.empty_like(values).scatter_(1, order, values)
        if mode != "gather":
            raise ValueError(f"NegativeCosine mode must be sparse, sparse_bag or gather, got {mode!r}")
        ctx.save_for_backward(pool, idx)
        out = anchors.new_empty(idx.shape)
        for start in range(0, idx.shape[0], chunk):
            sl = slice(start, start + chunk)
            out[sl] = torch.bmm(pool[idx[sl]], anchors[sl].unsqueeze(2)).squeeze(2)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        pool, idx = ctx.saved_tensors
        if ctx.mode == "sparse":
            grad = torch.sparse.mm(_csr(idx, grad_out.reshape(-1), pool.shape[0]), pool)
            return grad, None, None, None, None
        if ctx.mode == "sparse_bag":
            grad = F.embedding_bag(idx, pool, mode="sum", per_sample_weights=grad_out.to(pool.dtype).contiguous())
            return grad, None, None, None, None
        grad = grad_out.new_empty((idx.shape[0], pool.shape[1]))
        for start in range(0, idx.shape[0], ctx.chunk):
            sl = slice(start, start + ctx.chunk)
            grad[sl] = torch.bmm(grad_out[sl].unsqueeze(1), pool[idx[sl]]).squeeze(1)
        return grad, None, None, None, None


def _csr(idx: Tensor, values: Tensor, n_cols: int) -> Tensor:
    """(A, n_cols) CSR matrix with K entries per row at columns idx[a] (repeats allowed, they add up)."""
    a, k = idx.shape
    crow = torch.arange(0, a * k + 1, k, device=idx.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, idx.reshape(-1), values.contiguous(), size=(a, n_cols))


def resolve_method(method: str, device: torch.device, shared: bool = False) -> str:
    """The kernel that `method` runs on `device`: "auto" becomes "batched" for shared draws, else
    `AUTO_METHOD[device.type]` ("gather" for device types it does not list)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        return "batched" if shared else AUTO_METHOD.get(device.type, "gather")
    if method == "batched" and not shared:
        raise ValueError('method "batched" needs negatives shared per sequence '
                         '(sample_tc_indices(..., negative_sharing="sequence"))')
    return method


def negative_cosine(
    anchors: Tensor, pool: Tensor, idx: Tensor, max_elements: int = 1 << 23, method: str = "auto"
) -> Tensor:
    """(A, H) unit anchors × (M, H) unit pool × (A, K) indices → (A, K) cosines, gradient to anchors only.

    method: "sparse", "sparse_bag", "gather" (see `NegativeCosine`), or "auto" (`AUTO_METHOD` by device).
    """
    k, h = idx.shape[1], pool.shape[1]
    mode = resolve_method(method, anchors.device)
    if mode == "batched":
        raise ValueError('negative_cosine takes per-anchor indices; "batched" runs in tc_loss on shared draws')
    # The CSR kernels reject rows with more entries than columns (K > M, only in toy batches).
    if mode in ("sparse", "sparse_bag") and k > pool.shape[0]:
        mode = "gather"
    chunk = max(1, max_elements // max(1, k * h))
    return NegativeCosine.apply(anchors.contiguous(), pool.detach().contiguous(), idx, chunk, mode)


def info_nce(anchor_unit: Tensor, positive_unit: Tensor, negative_cos: Tensor, temperature: float) -> Tensor:
    """Mean InfoNCE with the positive at index 0: logits = [cos(a, p), cos(a, n_1..K)] / τ."""
    return info_nce_of_cosines((anchor_unit * positive_unit.detach()).sum(-1), negative_cos, temperature)


def info_nce_of_cosines(positive_cos: Tensor, negative_cos: Tensor, temperature: float) -> Tensor:
    """`info_nce` from the cosines: (A,) with the positive, (A, K) with the negatives (the probe forms the
    positives' cosines itself, in float64 without an (A, H) float64 copy)."""
    logits = torch.cat([positive_cos[:, None], negative_cos], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    # at least float32 (bf16/fp16 training); float64 stays float64 (the probe's evaluation)
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), target)


def tc_loss(
    h: Tensor,
    e: Tensor,
    index: TCIndex,
    temperature: float,
    pool_unit: Tensor | None = None,
    *,
    method: str = "auto",
) -> Tensor:
    """TC loss from last-layer states h and embedding outputs e, both (B, L, H), and sampled indices.

    `pool_unit` (M, H): detached unit context vectors that `index.negatives` points into; default the local
    candidates. `method`: the kernel for the negatives' cosines (module docstring); "batched" (the default for
    shared draws) needs `index.shared_negatives`. Returns a scalar (mean over anchors).
    """
    mode = resolve_method(method, h.device, shared=index.shared_negatives is not None)
    with torch.autocast(h.device.type, enabled=False):
        if mode == "batched":
            return _tc_loss_batched(h, e, index, temperature, pool_unit)
        hidden = h.shape[-1]
        g = (h - e).reshape(-1, hidden)[index.flat]
        u = F.normalize(g.float(), dim=-1)
        if pool_unit is None:
            pool_unit = u.detach()
        anchor_u = u[index.anchors]
        if anchor_u.shape[0] == 0:  # e.g. masked anchors in a batch without masks: contributes nothing
            return g.sum() * 0.0
        neg = negative_cosine(anchor_u, pool_unit.float(), index.negatives, method=mode)
        return info_nce(anchor_u, u.detach()[index.positives], neg, temperature)


def _tc_loss_batched(h: Tensor, e: Tensor, index: TCIndex, temperature: float, pool_unit: Tensor | None) -> Tensor:
    """Shared draws: cosines of every position with its sequence's K negatives as one (B, L, H) × (B, H, K)
    product, then the anchors' rows. Positions that are not anchors get no gradient (their rows are unused)."""
    b, seq_len, hidden = h.shape
    k = index.shared_negatives.shape[1]
    u_all = F.normalize((h - e).float(), dim=-1)  # (B, L, H)
    u = u_all.reshape(-1, hidden)[index.flat]
    if pool_unit is None:
        pool_unit = u.detach()
    anchor_flat = index.flat[index.anchors]
    if anchor_flat.numel() == 0:
        return u.sum() * 0.0
    negs = pool_unit.detach().float()[index.shared_negatives]  # (B, K, H): K·H per sequence, not per anchor
    cos = torch.bmm(u_all, negs.transpose(1, 2)).reshape(b * seq_len, k)
    return info_nce(u[index.anchors], u.detach()[index.positives], cos[anchor_flat], temperature)


def mlm_loss(model: nn.Module, hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """MLM cross-entropy and accuracy, projecting to the vocabulary only at masked positions.

    `model` is a `BertForMaskedLM` (its `cls` head); hidden (B, L, H); labels (B, L) with -100 elsewhere.
    """
    where = labels != IGNORE_INDEX
    logits = model.cls(hidden[where])
    target = labels[where]
    loss = F.cross_entropy(logits.float(), target)
    accuracy = (logits.argmax(-1) == target).float().mean().detach()
    return loss, accuracy


def gather_pool(unit: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, int]:
    """All ranks' detached unit context vectors and per-sequence counts; returns (pool, pool_counts, offset)."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=unit.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([unit.shape[0]], device=unit.device))
    max_n = int(max(s.item() for s in sizes))
    padded = unit.new_zeros((max_n, unit.shape[1]))
    padded[: unit.shape[0]] = unit
    bufs = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded.contiguous())
    cbufs = [torch.empty_like(counts) for _ in range(world)]
    dist.all_gather(cbufs, counts.contiguous())
    pool = torch.cat([b[: int(s.item())] for b, s in zip(bufs, sizes, strict=True)])
    return pool, torch.cat(cbufs), rank * counts.shape[0]


class PretrainingModel(nn.Module):
    """Wraps `BertForMaskedLM` so one forward computes L_MLM (+ λ·L_TC); DDP wraps this module."""

    def __init__(self, mlm_model: nn.Module, objective: str = "mlm", tc: TCConfig | None = None) -> None:
        super().__init__()
        self.mlm_model = mlm_model
        self.objective = objective
        self.tc = tc or TCConfig()

    def forward(
        self, input_ids: Tensor, labels: Tensor, valid: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        use_tc = self.objective == "taco"
        out = self.mlm_model.bert(input_ids=input_ids, output_hidden_states=use_tc, return_dict=True)
        h = out.last_hidden_state
        loss_mlm, acc = mlm_loss(self.mlm_model, h, labels)
        result = {"mlm_loss": loss_mlm.detach(), "mlm_accuracy": acc}
        if not use_tc:
            result["loss"] = loss_mlm
            return result
        e = out.hidden_states[0]
        masked = labels != IGNORE_INDEX
        anchor_mask = {"all": valid, "masked": valid & masked, "unmasked": valid & ~masked}[self.tc.anchors]
        pool_unit, pool_counts, offset = None, None, 0
        import torch.distributed as dist

        if self.tc.global_negatives and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flat = valid.reshape(-1).nonzero().squeeze(1)
            local = F.normalize((h - e).reshape(-1, h.shape[-1])[flat].float().detach(), dim=-1)
            pool_unit, pool_counts, offset = gather_pool(local, valid.sum(1))
        index = sample_tc_indices(valid, anchor_mask, self.tc.window, self.tc.negatives, generator,
                                  pool_counts=pool_counts, pool_offset=offset,
                                  negative_sharing=self.tc.negative_sharing)
        loss_tc = tc_loss(h, e, index, self.tc.temperature, pool_unit, method=self.tc.method)
        result["tc_loss"] = loss_tc.detach()
        result["loss"] = loss_mlm + self.tc.weight * loss_tc
        return result
