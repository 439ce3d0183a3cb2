"""Rows of a matrix and what several metrics share about them: norms, unit rows, groupings, a small Gram
matrix, scratch memory (`Rows`, `Workspace`, `Grouping`), and the row-chunked sums behind every mean.

Precision. A plain array or tensor is computed on in float64, whatever its dtype. A `Rows` carries its own
arithmetic dtype: the probe wraps each layer's float32 hidden states as `Rows(h, torch.float32)`, so that the
O(n·dim) passes and the matrix products run in float32 (the data's own precision; a float64 copy of a
32k × 768 layer would double the memory traffic and add nothing the data holds), while every sum behind a
reported mean is accumulated in float64 (`sum_rows`, `group_sums`), small decompositions run in float64, and
decisions that hinge on a near-tie (nearest centroid, nearest neighbours) are re-checked in float64. Values
then agree with the float64 path to ~1e-6 (tests/unit/test_metrics_*.py check this on realistic data).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .blas import gram_matrix
from .checks import ArrayLike, _checked

CHUNK_ELEMENTS = 1 << 20  # ≈ 4 MiB of float32 per temporary in the row-chunked loops: stays in cache
GROUP_CHUNK_ROWS = 4096  # rows added in float32 before a float64 total takes over (`group_sums`)


def unit_rows(x: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm; an all-zero row stays zero (its cosine with anything is taken as 0)."""
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def chunk_rows(n_cols: int) -> int:
    """Rows per chunk so that one (rows, n_cols) temporary stays about `CHUNK_ELEMENTS` elements."""
    return max(1, CHUNK_ELEMENTS // max(1, n_cols))


def sum_rows(x: Tensor) -> Tensor:
    """Σ_i x_i, (dim,) float64: float32 is summed in chunks, the chunk sums in float64."""
    if x.dtype == torch.float64:
        return x.sum(0)
    step = chunk_rows(x.shape[1])
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], step):
        total += x[start : start + step].sum(0).double()
    return total


def row_dots(a: Tensor, b: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """(a_i · b_i) for every row, (n,) float64; products and the per-row sums in the inputs' dtype (or `dtype`,
    each chunk converted), by chunks so that no (n, dim) temporary is made."""
    if dtype is None and a.dtype == torch.float64 and b.dtype == torch.float64 \
            and a.shape[0] * a.shape[1] <= CHUNK_ELEMENTS:
        return (a * b).sum(1)
    out = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
    step = chunk_rows(a.shape[1])
    for start in range(0, a.shape[0], step):
        ca, cb = a[start : start + step], b[start : start + step]
        if dtype is not None:
            ca, cb = ca.to(dtype), cb.to(dtype)
        out[start : start + step] = (ca * cb).sum(1)
    return out


class Workspace:
    """Named scratch tensors that keep their memory from one use to the next.

    Large temporaries (an (n, dim) matrix of unit rows, of centred rows, …) taken from a workspace are written
    into the same memory for every layer and snapshot instead of fresh allocations: first touches of fresh pages
    cost about as much as the arithmetic on them (≈ 10 ms per 32 MiB on the probe's machines).
    """

    def __init__(self) -> None:
        self._held: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialised tensor of `shape`; the same memory as the last `get` of `name` when it fits."""
        numel = int(np.prod(shape))
        held = self._held.get(name)
        if held is None or held.numel() < numel or held.dtype != dtype or held.device != device:
            held = torch.empty(numel, dtype=dtype, device=device)
            self._held[name] = held
        return held[:numel].view(shape)


class Rows:
    """A validated (n, dim) matrix plus the row-wise quantities several metrics share, each computed once.

    Every metric that takes a matrix `x` also takes a `Rows` of it: the probe wraps a layer once, so that its row
    norms, unit rows, groupings and (for a small subsample) Gram matrix are not recomputed per metric. `dtype`
    is the arithmetic of the O(n·dim) work and of matrix products (see "Precision" in the module docstring);
    plain arrays passed to a metric become `Rows(x)` in float64. `workspace`: where the (n, dim) temporaries
    go (unit rows in slot "unit", centred rows in "centred"; a later `Rows` on the same workspace overwrites
    them, so only one `Rows` per workspace may be in use at a time). `overwrite`: x itself may be replaced by
    its unit rows (when the caller owns x and needs only its norms afterwards).
    """

    def __init__(self, x: ArrayLike, dtype: torch.dtype = torch.float64, name: str = "x", min_rows: int = 1,
                 workspace: Workspace | None = None, overwrite: bool = False) -> None:
        t = _checked(torch.as_tensor(x), name, min_rows)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Rows dtype must be float32 or float64; got {dtype}")
        self.x = t.to(dtype)
        self.name = name
        self.workspace = workspace
        self.overwrite = overwrite
        self._norms: Tensor | None = None
        self._unit: Tensor | None = None
        self._gram: Tensor | None = None
        self._sums: Tensor | None = None
        self._unit_sums: Tensor | None = None
        self._groups: dict[int, tuple[Tensor, Grouping]] = {}
        self.cache: dict[str, Any] = {}  # intermediates several metrics decompose (spectra, centred Gram matrix)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    def check(self, min_rows: int) -> Rows:
        if self.n < min_rows:
            raise ValueError(f"{self.name} needs at least {min_rows} row(s) and 1 column; got shape "
                             f"{tuple(self.x.shape)}")
        return self

    @property
    def norms(self) -> Tensor:
        """(n,) row L2 norms, in the Rows' dtype."""
        if self._norms is None:
            self._norms = torch.linalg.vector_norm(self.x, dim=1)
        return self._norms

    @property
    def column_sums(self) -> Tensor:
        """(dim,) float64 Σ_i x_i (`sum_rows`)."""
        if self._sums is None:
            self._sums = sum_rows(self.x)
        return self._sums

    @property
    def unit_column_sums(self) -> Tensor:
        """(dim,) float64 Σ_i u_i of the unit rows (`sum_rows`): the pair sums of every mean pairwise cosine and
        the per-dimension contributions to it (`rogue`) start from it."""
        if self._unit_sums is None:
            self._unit_sums = sum_rows(self.unit)
        return self._unit_sums

    def unit_pair_sums(self) -> tuple[float, float]:
        """`pair_sums` of the unit rows: Σ_{i<j} u_i·u_j and the number of pairs n(n − 1)/2."""
        return pair_sums(self.unit, self.unit_sq, self.unit_column_sums)

    @property
    def safe_norms(self) -> Tensor:
        """`norms` with zeros replaced by ones (for dividing: a zero row stays zero)."""
        nr = self.norms
        return torch.where(nr > 0, nr, torch.ones_like(nr))

    @property
    def unit(self) -> Tensor:
        """(n, dim) rows scaled to unit norm; an all-zero row stays zero."""
        if self._unit is None:
            scale = self.safe_norms[:, None]  # the norms are computed (and kept) before x may become u
            if self.overwrite:
                self._unit = self.x.div_(scale)
            elif self.workspace is not None:
                self._unit = torch.div(self.x, scale, out=self.scratch("unit"))
            else:
                self._unit = self.x / scale
        return self._unit

    def scratch(self, name: str) -> Tensor:
        """An (n, dim) temporary in the Rows' dtype: from the workspace when there is one, else fresh."""
        if self.workspace is None:
            return torch.empty_like(self.x)
        return self.workspace.get(name, tuple(self.x.shape), self.x.dtype, self.x.device)

    @property
    def unit_sq(self) -> Tensor:
        """(n,) float64 ‖u_i‖²: 1 for a non-zero row, 0 for a zero row."""
        return (self.norms > 0).to(torch.float64)

    def gram(self) -> Tensor:
        """(n, n) x xᵀ in the Rows' dtype, kept for reuse (meant for subsamples of a few thousand rows)."""
        if self._gram is None:
            self._gram = gram_matrix(self.x, rows=True)
        return self._gram

    def cached_gram(self) -> Tensor | None:
        """The Gram matrix if `gram()` has computed it, else None."""
        return self._gram

    def grouped(self, labels: Tensor) -> Grouping:
        """The grouping of the rows by `labels` (an (n,) int64 tensor), cached per labels tensor."""
        hit = self._groups.get(id(labels))
        if hit is not None and hit[0] is labels:
            return hit[1]
        grouping = Grouping(self, labels)
        self._groups[id(labels)] = (labels, grouping)
        return grouping

    def subset(self, index: Tensor) -> Rows:
        """The rows at `index` as a new `Rows` (same dtype), reusing norms and unit rows already computed."""
        sub = Rows.__new__(Rows)
        sub.x, sub.name, sub.workspace, sub.overwrite = self.x[index], self.name, None, False
        sub._norms = None if self._norms is None else self._norms[index]
        sub._unit = None if self._unit is None else self._unit[index]
        sub._gram, sub._sums, sub._unit_sums, sub._groups, sub.cache = None, None, None, {}, {}
        return sub


def as_rows(x: ArrayLike | Rows, name: str = "x", min_rows: int = 1) -> Rows:
    """`x` itself if it is a `Rows` (after checking its size), else `Rows(x)` in float64."""
    if isinstance(x, Rows):
        return x.check(min_rows)
    return Rows(x, torch.float64, name, min_rows)


_STRUCTURES: list[tuple[Tensor, int, str, Any]] = []
_STRUCTURES_LOCK = threading.Lock()


def structural(labels: Tensor, kind: str, build: Callable[[], Any]) -> Any:
    """`build()`, a value that depends on `labels` alone (a grouping, a bucket layout), kept for the next call with
    the same, unmodified labels tensor: the probe passes the same label tensors for every layer and snapshot.
    The last few are held (with their tensors; an in-place change of a tensor invalidates its entries)."""
    version = labels._version
    with _STRUCTURES_LOCK:
        for held, held_version, held_kind, value in _STRUCTURES:
            if held is labels and held_version == version and held_kind == kind:
                return value
    value = build()
    with _STRUCTURES_LOCK:
        _STRUCTURES.insert(0, (labels, version, kind, value))
        del _STRUCTURES[16:]
    return value


def _grouping_structure(labels: Tensor) -> tuple[Tensor, Tensor, int, Tensor]:
    uniq, ids = torch.unique(labels, return_inverse=True)
    return uniq, ids, int(uniq.numel()), torch.bincount(ids, minlength=int(uniq.numel()))


class Grouping:
    """Rows grouped by integer labels: dense ids 0..G−1, counts, and (lazily) per-group sums in float64."""

    def __init__(self, rows: Rows, labels: Tensor) -> None:
        self.rows = rows
        # labels: the sorted distinct ids; ids: each row's dense group id
        self.labels, self.ids, self.n_groups, self.counts = structural(
            labels, "grouping", lambda: _grouping_structure(labels))
        self._unit_sums: Tensor | None = None
        self._sums: Tensor | None = None

    @property
    def unit_sums(self) -> Tensor:
        """(G, dim) float64 Σ u_i per group (unit rows)."""
        if self._unit_sums is None:
            self._unit_sums = group_sums(self.rows.unit, self.ids, self.n_groups)
        return self._unit_sums

    @property
    def sums(self) -> Tensor:
        """(G, dim) float64 Σ x_i per group (raw rows)."""
        if self._sums is None:
            self._sums = group_sums(self.rows.x, self.ids, self.n_groups)
        return self._sums

    def unit_pair_sums(self) -> tuple[Tensor, Tensor]:
        """Per group: Σ_{i<j} u_i·u_j = (‖Σ u_i‖² − Σ ‖u_i‖²) / 2 (as `pair_sums`) and the pair count
        n_g(n_g − 1)/2, each (G,) float64."""
        s = self.unit_sums
        sq = torch.zeros(self.n_groups, dtype=torch.float64, device=s.device).index_add_(0, self.ids,
                                                                                          self.rows.unit_sq)
        counts = self.counts.to(torch.float64)
        return ((s * s).sum(1) - sq) / 2, counts * (counts - 1) / 2


def group_sums(x: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """(n_groups, dim) float64 Σ x_i per group; float32 rows are added in float32 chunk by chunk and the
    chunk totals in float64, which keeps the error of large groups at float32's per-chunk level."""
    out = torch.zeros(n_groups, x.shape[1], dtype=torch.float64, device=x.device)
    if x.dtype == torch.float64:
        return out.index_add_(0, groups, x)
    step = GROUP_CHUNK_ROWS
    part = torch.zeros(n_groups, x.shape[1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], step):
        part.zero_().index_add_(0, groups[start : start + step], x[start : start + step])
        out += part
    return out


def dense_groups(labels: Tensor) -> tuple[Tensor, int]:
    """Relabel arbitrary integer group ids as 0..G-1: returns (dense ids (n,), G)."""
    uniq, inverse = torch.unique(labels, return_inverse=True)
    return inverse, int(uniq.numel())


def pair_sums(u: Tensor, sq: Tensor | None = None, total: Tensor | None = None) -> tuple[float, float]:
    """Sum of u_i·u_j over unordered pairs i < j, and the number of such pairs, in O(n·dim).

    Σ_{i<j} u_i·u_j = (‖Σ_i u_i‖² − Σ_i ‖u_i‖²) / 2, exact for any vectors (for unit rows the subtracted
    term is n, the identity quoted in DESIGN.md; zero rows contribute 0 to the sum but still count as pairs).
    `sq`: the (n,) ‖u_i‖² if known (e.g. `Rows.unit_sq`); `total`: Σ_i u_i if known (`Rows.unit_column_sums`).
    Accumulated in float64.
    """
    n = u.shape[0]
    total = sum_rows(u) if total is None else total
    sq_sum = float((row_dots(u, u) if sq is None else sq).sum())
    s = (float(total @ total) - sq_sum) / 2
    return s, n * (n - 1) / 2
