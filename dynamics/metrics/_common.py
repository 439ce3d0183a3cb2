"""Input checks and small numeric helpers shared by the metric modules (not part of the public API).

Every metric converts its inputs with `as_matrix` / `as_labels`, so a wrong shape fails early with a
ValueError that names the argument, and all arithmetic runs in float64 on the input's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def as_matrix(x: ArrayLike, name: str = "x", min_rows: int = 1) -> Tensor:
    """`x` as a float64 tensor of shape (n_samples, dim); ValueError for any other shape."""
    t = torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, dim); got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows or t.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} row(s) and 1 column; got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued; got dtype {t.dtype}")
    return t.to(torch.float64)


def as_labels(v: ArrayLike, n: int, name: str, device: torch.device | None = None) -> Tensor:
    """`v` as an int64 tensor of shape (n,); ValueError for a wrong shape or a non-integer dtype."""
    t = torch.as_tensor(v, device=device)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the rows of the data; got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers; got dtype {t.dtype}")
    return t.to(torch.int64)


def same_rows(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def unit_rows(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm; an all-zero row stays zero (its cosine with anything is taken as 0)."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run small dense decompositions on one thread: LAPACK's threaded eigen-solvers gain nothing on
    (≤ a few hundred)² matrices and, on a busy machine, can spin for seconds per call."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def eigvalsh(a: Tensor) -> Tensor:
    """torch.linalg.eigvalsh (ascending, batched) on one thread."""
    with single_thread():
        return torch.linalg.eigvalsh(a)


def dense_groups(labels: Tensor) -> tuple[Tensor, int]:
    """Relabel arbitrary integer group ids as 0..G-1: returns (dense ids (n,), G)."""
    uniq, inverse = torch.unique(labels, return_inverse=True)
    return inverse, int(uniq.numel())


def pair_sums(u: Tensor) -> tuple[float, float]:
    """Sum of u_i·u_j over unordered pairs i < j, and the number of such pairs, in O(n·dim).

    Σ_{i<j} u_i·u_j = (‖Σ_i u_i‖² − Σ_i ‖u_i‖²) / 2, exact for any vectors (for unit rows the subtracted
    term is n, the identity quoted in DESIGN.md; zero rows contribute 0 to the sum but still count as pairs).
    """
    n = u.shape[0]
    total = u.sum(0)
    s = (total @ total - (u * u).sum()) / 2
    return float(s), n * (n - 1) / 2


def group_pair_sums(u: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Per group g: Σ_{i<j in g} u_i·u_j and the pair count n_g(n_g−1)/2, each (n_groups,) float64."""
    sums = torch.zeros(n_groups, u.shape[1], dtype=u.dtype, device=u.device).index_add_(0, groups, u)
    sq = torch.zeros(n_groups, dtype=u.dtype, device=u.device).index_add_(0, groups, (u * u).sum(1))
    counts = torch.bincount(groups, minlength=n_groups).to(u.dtype)
    return ((sums * sums).sum(1) - sq) / 2, counts * (counts - 1) / 2


class PositionIndex:
    """Lookup of tokens by (sequence, position), built once and queried for many offsets.

    Positions are the tokens' positions in their block, so a gap left by an excluded special token is a
    real gap (|Δposition| counts it). ValueError if a (sequence, position) pair occurs twice.
    """

    def __init__(self, seq_ids: Tensor, positions: Tensor, max_offset: int) -> None:
        seq, _ = dense_groups(seq_ids)
        self.pos = positions - positions.min()
        # Keys of one sequence ± max_offset never reach another sequence's keys.
        self.stride = int(self.pos.max()) + max_offset + 1
        self.max_offset = max_offset
        self.key = seq * self.stride + self.pos
        self.order = torch.argsort(self.key)
        self.sorted_key = self.key[self.order]
        if self.sorted_key.numel() > 1 and bool((self.sorted_key[1:] == self.sorted_key[:-1]).any()):
            raise ValueError("each (seq_id, position) pair must occur at most once")

    def lookup(self, offset: int | Tensor) -> tuple[Tensor, Tensor]:
        """For every token i: whether its sequence has a token at positions[i] + offset (offset an int or
        (n,) ints, |offset| ≤ max_offset), and that token's index (meaningless where not found)."""
        if int(torch.as_tensor(offset).abs().max()) > self.max_offset:
            raise ValueError(f"offsets must not exceed max_offset {self.max_offset}")
        target = self.key + offset
        hit = torch.searchsorted(self.sorted_key, target).clamp(max=self.sorted_key.numel() - 1)
        found = (self.sorted_key[hit] == target) & (self.pos + offset >= 0)
        return found, self.order[hit]

    def pairs(self, offset: int) -> tuple[Tensor, Tensor]:
        """Index pairs (i, j): same sequence and positions[j] == positions[i] + offset."""
        found, j = self.lookup(offset)
        i = torch.nonzero(found).squeeze(1)
        return i, j[i]


def block_grid(seq_ids: Tensor, positions: Tensor, max_fill: float = 4.0) -> tuple[Tensor, int, int] | None:
    """Layout of tokens on a (sequence, position) grid: (flat cell index (n,), n_sequences G, width P).

    Cell of token i: dense_seq[i] * P + (positions[i] − min position). Returns None when the grid would have
    more than `max_fill` × n cells (sparse positions: use `PositionIndex`). ValueError if a (sequence,
    position) pair occurs twice.
    """
    groups, n_groups = dense_groups(seq_ids)
    n = positions.numel()
    if n == 0:
        return None
    pos = positions - positions.min()
    width = int(pos.max()) + 1
    if n_groups * width > max(max_fill * n, 1024):
        return None
    flat = groups * width + pos
    if bool((torch.bincount(flat, minlength=n_groups * width) > 1).any()):
        raise ValueError("each (seq_id, position) pair must occur at most once")
    return flat, n_groups, width


def shifted_pair_sums(
    u: Tensor, seq_ids: Tensor, positions: Tensor, max_distance: int, squared_difference: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per distance d = 1..max_distance, over pairs (i, j) of one sequence with positions[j] = positions[i] + d
    (each unordered pair once): Σ u_i·u_j — or Σ ‖u_i − u_j‖² with `squared_difference` — and the pair count.

    Tokens are laid out on the (sequence, position) grid, empty cells zero, and the grid is multiplied with
    itself shifted by d: O(d_max·G·P·H) in dense dot products instead of gathered index pairs. Falls back to
    (sequence, position) lookups when positions are too sparse for a grid.
    """
    sums = np.zeros(max_distance)
    counts = np.zeros(max_distance)
    layout = block_grid(seq_ids, positions)
    if layout is None:
        index = PositionIndex(seq_ids, positions, max_distance)
        for d in range(1, max_distance + 1):
            i, j = index.pairs(d)
            prod = ((u[i] - u[j]) ** 2) if squared_difference else (u[i] * u[j])
            sums[d - 1] = float(prod.sum())
            counts[d - 1] = i.numel()
        return sums, counts
    flat, n_groups, width = layout
    # Each sequence's row of the grid is followed by max_distance empty cells, so a shift by d ≤ max_distance
    # of the flattened grid never pairs two sequences' tokens: every product is one contiguous dot product.
    stride = width + max_distance
    cell = (flat // width) * stride + flat % width
    grid = u.new_zeros(n_groups * stride, u.shape[1])
    grid[cell] = u
    mask = torch.zeros(n_groups * stride, dtype=u.dtype, device=u.device)
    mask[cell] = 1
    sq = (u * u).sum(1)
    norms = torch.zeros(n_groups * stride, dtype=u.dtype, device=u.device)
    norms[cell] = sq
    for d in range(1, max_distance + 1):
        pair = mask[:-d] * mask[d:]
        counts[d - 1] = float(pair.sum())
        dot = float(torch.dot(grid[:-d].reshape(-1), grid[d:].reshape(-1)))  # empty cells are zero rows
        if squared_difference:  # Σ‖u_i − u_j‖² = Σ‖u_i‖² + Σ‖u_j‖² − 2 Σ u_i·u_j over the pairs
            sums[d - 1] = float(torch.dot(norms[:-d], pair) + torch.dot(norms[d:], pair)) - 2 * dot
        else:
            sums[d - 1] = dot
    return sums, counts


def offset_pairs(seq_ids: Tensor, positions: Tensor, offset: int) -> tuple[Tensor, Tensor]:
    """Index pairs (i, j) with seq_ids[j] == seq_ids[i] and positions[j] == positions[i] + offset."""
    return PositionIndex(seq_ids, positions, abs(offset)).pairs(offset)
