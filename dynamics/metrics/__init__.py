"""Pure metric functions on (n_samples, dim) representations; see DESIGN.md "Measurements".

One module per question: `anchors` (anchor-embedding similarity, masked prediction, frequency bins,
drift), `context` (context-vector alignment and the TC loss on probe data), `geometry` (anisotropy,
Ethayarajh's contextuality measures, rank, isotropy, intrinsic dimension, alignment/uniformity, norms) and
`cka` (linear CKA). Inputs are torch tensors (numpy arrays are accepted); arithmetic is float64, or that of
a `Rows` passed instead of a matrix (the probe's float32 path; see `dynamics.metrics._common`).
"""

from ._common import Rows
from .anchors import (
    anchor_drift,
    anchor_similarity,
    assign_frequency_bins,
    cosine_rows,
    frequency_bin_names,
    frequency_bins,
    mean_by_bin,
    token_accuracy,
    token_rank,
)
from .cka import cka_matrices, cka_matrix, hsic_unbiased, linear_cka
from .context import (
    cosine_by_distance,
    info_nce_from_indices,
    same_vs_other_cosine,
    sample_tc_indices,
    sequence_identification_accuracy,
    tc_loss,
    window_cosine,
)
from .geometry import (
    alignment,
    anisotropy,
    effective_rank,
    explained_variance_pc1,
    intra_sentence_similarity,
    isoscore,
    max_explainable_variance,
    mean_norm,
    self_similarity,
    twonn_dimension,
    uniformity,
)

__all__ = [
    "alignment",
    "anchor_drift",
    "anchor_similarity",
    "anisotropy",
    "assign_frequency_bins",
    "cka_matrices",
    "cka_matrix",
    "cosine_by_distance",
    "cosine_rows",
    "effective_rank",
    "explained_variance_pc1",
    "frequency_bin_names",
    "frequency_bins",
    "hsic_unbiased",
    "info_nce_from_indices",
    "intra_sentence_similarity",
    "isoscore",
    "linear_cka",
    "max_explainable_variance",
    "mean_by_bin",
    "mean_norm",
    "Rows",
    "same_vs_other_cosine",
    "sample_tc_indices",
    "self_similarity",
    "sequence_identification_accuracy",
    "tc_loss",
    "token_accuracy",
    "token_rank",
    "twonn_dimension",
    "uniformity",
    "window_cosine",
]
