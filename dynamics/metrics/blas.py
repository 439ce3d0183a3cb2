"""Which BLAS runs a product, and on how many threads: `numpy_blas` (metric worker threads use numpy's single-
threaded BLAS for their products), `single_thread`, and the float64 small decompositions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

_NUMPY_BLAS = 0  # > 0 inside `numpy_blas()`


@contextlib.contextmanager
def numpy_blas() -> Iterator[None]:
    """Within: numpy's BLAS runs on one thread, and `matmul` / `gram_matrix` use it for float32/64 CPU tensors.

    For callers that run their own threads with one torch thread each (`dynamics.measure.families.measure`). numpy's
    BLAS (OpenBLAS in the pinned environment) has a symmetric rank-k product (syrk: half the multiplications
    of a general product, ≈ 1.7× faster for a Gram matrix) and AVX-512 float32 kernels (≈ 1.3× torch's MKL on
    the AMD CPUs measured). Outside such a block torch's own threaded products are used: numpy's BLAS threads
    and torch's OpenMP threads spin against each other. Without threadpoolctl (a dependency of
    scikit-learn) nothing changes.
    """
    global _NUMPY_BLAS
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        _NUMPY_BLAS += 1
        try:
            yield
        finally:
            _NUMPY_BLAS -= 1


def _numpy_ok(*ts: Tensor) -> bool:
    return bool(_NUMPY_BLAS) and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
                                     and t.dim() == 2 and not t.requires_grad for t in ts) \
        and len({t.dtype for t in ts}) == 1


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b for 2-D tensors (see `numpy_blas`)."""
    if _numpy_ok(a, b):
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return a @ b


def gram_matrix(x: Tensor, rows: bool = False) -> Tensor:
    """xᵀx ((dim, dim)), or x xᵀ ((n, n)) with `rows`, in x's dtype (symmetric product under `numpy_blas`)."""
    if _numpy_ok(x):
        a = x.contiguous().numpy()
        return torch.from_numpy(a @ a.T if rows else a.T @ a)
    return x @ x.T if rows else x.T @ x


def add_gram(acc: Tensor, x: Tensor) -> None:
    """acc += xᵀx in place, acc (dim, dim) in x's dtype: numpy's symmetric product under `numpy_blas`, else
    torch's addmm_ (no temporary)."""
    if _numpy_ok(x, acc) and acc.is_contiguous():
        a = x.contiguous().numpy()
        view = acc.numpy()
        view += a.T @ a
    else:
        acc.addmm_(x.T, x)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Within: torch on `n` intra-op threads (this thread's setting; the previous count is restored)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_thread() -> contextlib.AbstractContextManager[None]:
    """Run small dense decompositions on one thread: LAPACK's threaded eigen-solvers gain nothing on
    (≤ a few hundred)² matrices and, on a busy machine, can spin for seconds per call."""
    return torch_threads(1)


def eigvalsh(a: Tensor) -> Tensor:
    """torch.linalg.eigvalsh (ascending, batched) on one thread."""
    with single_thread():
        return torch.linalg.eigvalsh(a)
