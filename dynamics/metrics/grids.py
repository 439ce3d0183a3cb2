"""Tokens on their (sequence, position) grid: pairs at a given offset within a block (`PositionIndex`,
`BlockLayout`) and the per-distance sums of dot products behind the context-by-distance and alignment metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .rows import chunk_rows, dense_groups, row_dots


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


@dataclass
class BlockLayout:
    """Tokens on their (sequence, position) grid, for sums over pairs at a fixed distance within a sequence.

    `flat`: (n,) cell of each token (sequence-major); `n_groups` × `width` cells; `dense`: the tokens fill the
    grid in cell order (token i in cell i — the probe's blocks without special tokens inside), so the grid is
    a view of the rows and nothing is copied. `mask`: (n_groups, width) float64, 1 where a token sits.
    """

    flat: Tensor
    n_groups: int
    width: int
    dense: bool
    mask: Tensor

    @staticmethod
    def build(seq_ids: Tensor, positions: Tensor) -> BlockLayout | None:
        """The layout, or None when positions are too sparse for a grid (see `block_grid`)."""
        grid = block_grid(seq_ids, positions)
        if grid is None:
            return None
        flat, n_groups, width = grid
        n = flat.numel()
        dense = n == n_groups * width and bool((flat == torch.arange(n, device=flat.device)).all())
        mask = torch.zeros(n_groups * width, dtype=torch.float64, device=flat.device)
        mask[flat] = 1
        return BlockLayout(flat, n_groups, width, dense, mask.view(n_groups, width))

    def pair_counts(self, max_distance: int) -> np.ndarray:
        """(max_distance,) number of pairs at each distance d = 1..max_distance."""
        m = self.mask
        return np.array([float((m[:, :-d] * m[:, d:]).sum()) if d < self.width else 0.0
                         for d in range(1, max_distance + 1)])

    def grid(self, u: Tensor) -> Tensor:
        """(n_groups, width, dim) rows of `u` on the grid, empty cells zero (a view when `dense`)."""
        if self.dense:
            return u.view(self.n_groups, self.width, u.shape[1])
        grid = u.new_zeros(self.n_groups * self.width, u.shape[1])
        grid[self.flat] = u
        return grid.view(self.n_groups, self.width, u.shape[1])

    def shifted_dots(self, u: Tensor, max_distance: int) -> np.ndarray:
        """(max_distance,) Σ u_i·u_j over pairs of one sequence with positions[j] = positions[i] + d.

        Empty cells are zero rows, so each d is a dot product of the grid with itself shifted by d along the
        positions; sequences are processed a few at a time so that the products stay in cache, each chunk's
        sum (pairwise, in u's dtype) added in float64.
        """
        grid = self.grid(u)
        sums = np.zeros(max_distance)
        step = max(1, chunk_rows(self.width * u.shape[1]))
        for start in range(0, self.n_groups, step):
            block = grid[start : start + step]
            for d in range(1, min(max_distance, self.width - 1) + 1):
                sums[d - 1] += float((block[:, :-d] * block[:, d:]).sum())
        return sums

    def shifted_norms(self, sq: Tensor, max_distance: int) -> np.ndarray:
        """(max_distance,) Σ (‖u_i‖² + ‖u_j‖²) over the same pairs as `shifted_dots`, from the (n,) ‖u_i‖²."""
        cells = torch.zeros(self.n_groups * self.width, dtype=torch.float64, device=sq.device)
        cells[self.flat] = sq.to(torch.float64)
        cells = cells.view(self.n_groups, self.width)
        m = self.mask
        return np.array([float((cells[:, :-d] * m[:, d:]).sum() + (cells[:, d:] * m[:, :-d]).sum())
                         if d < self.width else 0.0 for d in range(1, max_distance + 1)])


def shifted_pair_sums(
    u: Tensor, seq_ids: Tensor, positions: Tensor, max_distance: int, squared_difference: bool = False,
    layout: BlockLayout | None = None, sq: Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per distance d = 1..max_distance, over pairs (i, j) of one sequence with positions[j] = positions[i] + d
    (each unordered pair once): Σ u_i·u_j — or Σ ‖u_i − u_j‖² with `squared_difference` — and the pair count.

    Tokens are laid out on the (sequence, position) grid (`BlockLayout`; pass `layout` to reuse one), empty
    cells zero, and the grid is multiplied with itself shifted by d: O(d_max·n·H) in dense products instead of
    gathered index pairs. Falls back to (sequence, position) lookups when positions are too sparse for a grid.
    `sq`: (n,) ‖u_i‖² if known. Sums are accumulated in float64.
    """
    if layout is None:
        layout = BlockLayout.build(seq_ids, positions)
    if layout is None:
        sums = np.zeros(max_distance)
        counts = np.zeros(max_distance)
        index = PositionIndex(seq_ids, positions, max_distance)
        for d in range(1, max_distance + 1):
            i, j = index.pairs(d)
            prod = ((u[i] - u[j]) ** 2) if squared_difference else (u[i] * u[j])
            sums[d - 1] = float(prod.sum(dtype=torch.float64))
            counts[d - 1] = i.numel()
        return sums, counts
    counts = layout.pair_counts(max_distance)
    dots = layout.shifted_dots(u, max_distance)
    if not squared_difference:
        return dots, counts
    # Σ‖u_i − u_j‖² = Σ‖u_i‖² + Σ‖u_j‖² − 2 Σ u_i·u_j over the pairs
    norms = layout.shifted_norms(row_dots(u, u) if sq is None else sq, max_distance)
    return norms - 2 * dots, counts


def offset_pairs(seq_ids: Tensor, positions: Tensor, offset: int) -> tuple[Tensor, Tensor]:
    """Index pairs (i, j) with seq_ids[j] == seq_ids[i] and positions[j] == positions[i] + offset."""
    return PositionIndex(seq_ids, positions, abs(offset)).pairs(offset)
