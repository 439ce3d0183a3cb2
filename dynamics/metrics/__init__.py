"""Pure metric functions on (n_samples, dim) representations; see DESIGN.md "Measurements".

One module per question: `anchors` (anchor-embedding similarity, masked prediction, frequency bins,
drift), `context` (context-vector alignment and the TC loss on probe data), `geometry` (anisotropy,
Ethayarajh's contextuality measures, rank, isotropy, intrinsic dimension, alignment/uniformity, norms) and
`cka` (linear CKA). Every stored metric name is registered once, on the function that computes it
(`registry`: `registry.load()` lists them). Inputs are torch tensors (numpy arrays are accepted); arithmetic is
float64, or that of a `Rows` passed instead of a matrix (the probe's float32 path; see `dynamics.metrics.rows`).
"""

# Importing the package imports every module that registers metrics, so the registry is complete whichever
# module a caller imports first, and puts it in its order once, here under the import lock: afterwards
# `registry.load` only reads it, also from the probe's worker threads.
from . import acquisition, agreement, attention, cka, context, copying, geometry, llc, registry, rogue  # noqa: F401
from .anchors import (
    assign_frequency_bins,
    cosine_rows,
    drift_cosines,
    frequency_bins,
    mean_by_bin,
    token_rank,
)
from .cka import cka_matrices, cka_matrix, linear_cka
from .registry import REGISTRY, Metric, register
from .rows import Rows

registry.load()  # its order, set once at import (see above)

__all__ = [
    "REGISTRY",
    "Metric",
    "Rows",
    "assign_frequency_bins",
    "cka_matrices",
    "cka_matrix",
    "cosine_rows",
    "drift_cosines",
    "frequency_bins",
    "linear_cka",
    "mean_by_bin",
    "register",
    "registry",
    "token_rank",
]
