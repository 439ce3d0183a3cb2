"""Input checks shared by the metric functions: every metric converts its inputs with `as_matrix` / `as_rows` /
`as_labels`, so a wrong shape fails early with a ValueError that names the argument."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def as_matrix(x: ArrayLike, name: str = "x", min_rows: int = 1) -> Tensor:
    """`x` as a float64 tensor of shape (n_samples, dim); ValueError for any other shape."""
    return _checked(torch.as_tensor(x), name, min_rows).to(torch.float64)


def _checked(t: Tensor, name: str, min_rows: int) -> Tensor:
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, dim); got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows or t.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} row(s) and 1 column; got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued; got dtype {t.dtype}")
    return t


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
