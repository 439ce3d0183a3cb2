"""What each stored metric means: a label, a one-line definition and the docstring that states it exactly.

The pages group metrics by the probe's families (`dynamics.families`); a metric the app does not know (written by a
newer probe) still appears on its family's page, with its name as the label and the family as the pointer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricDef:
    """A metric as the pages present it."""

    name: str
    label: str
    definition: str
    pointer: str  # dotted path of the function whose docstring defines it


@dataclass(frozen=True)
class PageDef:
    """A metric page: the families it shows and a one-line introduction."""

    key: str
    title: str
    families: tuple[str, ...]
    intro: str


_A = "dynamics.metrics.anchors"
_X = "dynamics.metrics.context"
_G = "dynamics.metrics.geometry"
_C = "dynamics.metrics.cka"

_TABLE: tuple[tuple[str, str, str, str, str], ...] = (  # name, family, label, definition, pointer
    # anchors / drift
    ("anchor_sim_word", "anchors", "Anchor similarity (word embedding)",
     "cos(h_l(i), E[x_i]): how close each token's hidden state stays to its own input word embedding, the anchor.",
     f"{_A}.anchor_similarity"),
    ("anchor_sim_emb", "anchors", "Anchor similarity (embedding output)",
     "cos(h_l(i), e(i)): hidden state against the embedding-layer output (word + position + type, LayerNorm).",
     f"{_A}.cosine_rows"),
    ("masked_anchor_sim", "anchors", "Masked anchor similarity (head)",
     "cos(T(h_L(i)), E[x_i]) with x_i replaced by [MASK] and T the MLM head transform.",
     "dynamics.families.anchors"),
    ("masked_hidden_anchor_sim", "anchors", "Masked anchor similarity (hidden)",
     "cos(h_L(i), E[x_i]) at masked positions, without the head transform.", "dynamics.families.anchors"),
    ("masked_accuracy", "anchors", "Masked-token accuracy",
     "Fraction of masked positions whose true token is ranked first by the MLM head.", f"{_A}.token_accuracy"),
    ("masked_mrr", "anchors", "Masked-token MRR", "Mean reciprocal rank of the true token at masked positions.",
     f"{_A}.token_rank"),
    ("masked_median_rank", "anchors", "Masked-token median rank",
     "Median rank of the true token among the whole vocabulary at masked positions (1 = best).", f"{_A}.token_rank"),
    ("anchor_drift", "drift", "Anchor drift (vocabulary)",
     "cos(E_step[v], E_final[v]) averaged over the non-special vocabulary: how far word embeddings still have to move.",
     f"{_A}.anchor_drift"),
    ("anchor_drift_probe", "drift", "Anchor drift (probe tokens)",
     "cos(E_step[v], E_final[v]) averaged over the token types of the probe set.", f"{_A}.anchor_drift"),
    # context
    ("ctx_same_all", "context", "Context alignment, same sequence",
     "Mean cosine of g = h − e over pairs of distinct tokens of the same sequence.", f"{_X}.same_vs_other_cosine"),
    ("ctx_other", "context", "Context alignment, other sequences",
     "Mean cosine of g = h − e over pairs of tokens from different sequences.", f"{_X}.same_vs_other_cosine"),
    ("ctx_gap_all", "context", "Context alignment gap",
     "Same-sequence minus other-sequence mean cosine of g = h − e.", f"{_X}.same_vs_other_cosine"),
    ("ctx_same_window", "context", "Context alignment, within the window",
     "Mean cosine of g = h − e over same-sequence pairs within TACO's window W.", f"{_X}.window_cosine"),
    ("ctx_gap_window", "context", "Context alignment gap, within the window",
     "Within-window minus other-sequence mean cosine of g = h − e.", f"{_X}.window_cosine"),
    ("ctx_cos_by_distance", "context", "Context cosine by distance",
     "Mean cosine of g = h − e between tokens of one sequence as a function of their distance d.",
     f"{_X}.cosine_by_distance"),
    ("tc_loss", "context", "TC loss on the probe set",
     "TACO's InfoNCE over g = h − e with fixed positives and negatives (meaningful for MLM runs too).",
     f"{_X}.info_nce_from_indices"),
    ("seq_id_accuracy", "context", "Sequence identification accuracy",
     "Fraction of tokens whose g = h − e is closest (cosine) to its own sequence's centroid.",
     f"{_X}.sequence_identification_accuracy"),
    # geometry
    ("anisotropy", "geometry", "Anisotropy", "Mean cosine similarity over all unordered pairs of distinct tokens.",
     f"{_G}.anisotropy"),
    ("self_similarity", "geometry", "Self-similarity",
     "Mean pairwise cosine of the occurrences of one word type, averaged over types (Ethayarajh 2019).",
     f"{_G}.self_similarity"),
    ("self_similarity_adj", "geometry", "Self-similarity (anisotropy-adjusted)", "Self-similarity minus the layer's anisotropy.",
     f"{_G}.self_similarity"),
    ("intra_similarity", "geometry", "Intra-sentence similarity",
     "Mean cosine between each token and its sequence's mean vector (Ethayarajh 2019).",
     f"{_G}.intra_sentence_similarity"),
    ("intra_similarity_adj", "geometry", "Intra-sentence similarity (anisotropy-adjusted)",
     "Intra-sentence similarity minus the layer's anisotropy.", f"{_G}.intra_sentence_similarity"),
    ("mev", "geometry", "Maximum explainable variance",
     "σ₁²/Σσ² of a word type's uncentred occurrence matrix, averaged over types (Ethayarajh 2019).",
     f"{_G}.max_explainable_variance"),
    ("mev_adj", "geometry", "MEV (anisotropy-adjusted)", "Maximum explainable variance minus the layer's anisotropy.",
     f"{_G}.max_explainable_variance"),
    ("mev_adj_pc1", "geometry", "MEV (first-PC-adjusted)",
     "Maximum explainable variance minus the variance share of the layer's first principal component.",
     f"{_G}.explained_variance_pc1"),
    ("rankme", "geometry", "Effective rank (RankMe)", "exp(−Σ p_k log p_k), p_k = σ_k/Σσ + 1e-7, of the uncentred token matrix.",
     f"{_G}.effective_rank"),
    ("rankme_centred", "geometry", "Effective rank (centred)", "RankMe of the mean-centred token matrix.", f"{_G}.effective_rank"),
    ("isoscore", "geometry", "IsoScore", "How uniformly variance spreads over all dimensions (Rudman et al. 2022); 1 = isotropic.",
     f"{_G}.isoscore"),
    ("twonn", "geometry", "Intrinsic dimension (TwoNN)",
     "Facco et al. 2017: from the ratio of second to first neighbour distances (duplicates collapsed).",
     f"{_G}.twonn_dimension"),
    ("alignment", "geometry", "Alignment (Wang–Isola)", "Mean ‖u_i − u_{i+1}‖² over adjacent tokens of a block, unit vectors.",
     f"{_G}.alignment"),
    ("uniformity", "geometry", "Uniformity (Wang–Isola)", "log mean exp(−2‖u_i − u_j‖²) over distinct pairs of unit vectors.",
     f"{_G}.uniformity"),
    ("norm_h", "geometry", "Norm of h", "Mean L2 norm of the hidden states h_l.", f"{_G}.mean_norm"),
    ("norm_e", "geometry", "Norm of e", "Mean L2 norm of the embedding-layer output e (layer 0).", f"{_G}.mean_norm"),
    ("norm_g", "geometry", "Norm of g", "Mean L2 norm of the context vectors g_l = h_l − e.", f"{_G}.mean_norm"),
    ("cka_prev_layer", "geometry", "CKA with the previous layer", "Debiased linear CKA between layer l and layer l − 1.",
     f"{_C}.linear_cka"),
    # cka_steps
    ("cka_prev_snapshot", "cka_steps", "CKA with the previous snapshot",
     "Debiased linear CKA of a layer between this snapshot and the previous measured one.", f"{_C}.cka_matrix"),
    ("cka_final", "cka_steps", "CKA with the final snapshot", "Debiased linear CKA of a layer between this snapshot and the last one.",
     f"{_C}.cka_matrix"),
)

METRICS: dict[str, MetricDef] = {name: MetricDef(name, label, text, ptr) for name, _, label, text, ptr in _TABLE}
FAMILIES: dict[str, str] = {name: family for name, family, *_ in _TABLE}

PAGES: dict[str, PageDef] = {
    "anchors": PageDef("anchors", "Anchors", ("anchors", "drift"),
                       "How far contextual vectors move away from their token's own (anchor) embedding."),
    "context": PageDef("context", "Context alignment", ("context",),
                       "Whether the context vectors g = h − e of one sequence align (TACO's target), per layer."),
    "geometry": PageDef("geometry", "Geometry", ("geometry",),
                        "Shape of the representation space: anisotropy, Ethayarajh's measures, rank, dimension, norms."),
}

CKA_METRICS = ("cka_prev_snapshot", "cka_final", "cka_prev_layer")

# Downstream scores (`experiments.evaluate`, rows described in `experiments.results`): metric "{task}/{name}".
_S = "experiments.scoring"
DOWNSTREAM_METRICS: dict[str, MetricDef] = {m.name: m for m in (
    MetricDef("score", "Score", "The task's headline number in percent: its single GLUE metric, or the mean of the two "
              "for MRPC (accuracy, F1) and STS-B (Pearson, Spearman).", f"{_S}.score"),
    MetricDef("accuracy", "Accuracy", "Percentage of dev examples whose predicted class equals the label.",
              f"{_S}.accuracy"),
    MetricDef("f1", "F1", "F1 of the positive class in percent, 2·TP / (2·TP + FP + FN).", f"{_S}.f1_positive"),
    MetricDef("mcc", "Matthews correlation", "Matthews correlation coefficient of the binary predictions, "
              "in [−100, 100].", f"{_S}.matthews"),
    MetricDef("pearson", "Pearson correlation", "Pearson correlation of predicted and gold similarity, "
              "in [−100, 100].", f"{_S}.pearson"),
    MetricDef("spearman", "Spearman correlation", "Spearman rank correlation of predicted and gold similarity, "
              "in [−100, 100].", f"{_S}.spearman"),
    MetricDef("average", "GLUE average", "Mean of the GLUE tasks' scores stored for the snapshot (CoLA, SST-2, MRPC, "
              "STS-B and RTE once all five are in).", "experiments.results"),
)}
DOWNSTREAM_TASKS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "wnli": "WNLI",
                    "rotten_tomatoes": "Rotten Tomatoes", "glue": "GLUE average"}
DOWNSTREAM_MODES = {"linear": "Linear probe", "finetune": "Fine-tuning"}
FAMILY_POINTERS = {"anchors": "dynamics.families.anchors", "drift": "dynamics.families.drift",
                   "context": "dynamics.families.context", "geometry": "dynamics.families.geometry",
                   "cka_steps": "dynamics.families.cka_steps"}
BIN_ORDER = ("frequent", "medium", "rare")
_DISTANCE = re.compile(r"^d(\d+)$")


def describe(metric: str, family: str | None = None) -> MetricDef:
    """The definition of `metric`; an unknown one gets its own name and its family's docstring as pointer."""
    known = METRICS.get(metric)
    if known is not None:
        return known
    pointer = FAMILY_POINTERS.get(family or "", "dynamics.families")
    return MetricDef(metric, metric.replace("_", " "), "Stored by a newer probe; see the docstring.", pointer)


def family_of(metric: str) -> str | None:
    """The probe family that stores `metric` (for stores whose rows lack the family); None when unknown."""
    return FAMILIES.get(metric)


def distance(variant: str) -> int | None:
    """The distance of a `ctx_cos_by_distance` variant ("d003" → 3), None for other variants."""
    m = _DISTANCE.match(variant)
    return int(m.group(1)) if m else None


def is_bin(variant: str) -> bool:
    """Whether `variant` is a token-frequency bin (frequent/medium/rare, or bin0, bin1, … for other bin counts)."""
    return variant in BIN_ORDER or bool(re.match(r"^bin\d+$", variant))


def order_key(metric: str) -> tuple[int, str]:
    """Sort key: known metrics in the order above, unknown ones after them by name."""
    names = list(METRICS)
    return (names.index(metric), metric) if metric in METRICS else (len(names), metric)


def describe_downstream(name: str) -> MetricDef:
    """The definition of a downstream metric name (the part after "task/"); an unknown one gets its own name."""
    known = DOWNSTREAM_METRICS.get(name)
    if known is not None:
        return known
    return MetricDef(name, name.replace("_", " "), "Written by a newer evaluation; see the docstring.",
                     "experiments.scoring.score")


def task_label(task: str) -> str:
    """How a downstream task is named on the page ("sst2" → "SST-2"; unknown tasks keep their name)."""
    return DOWNSTREAM_TASKS.get(task, task)


def task_order(task: str) -> tuple[int, str]:
    """Sort key: the known tasks in GLUE's order and Rotten Tomatoes, unknown ones by name, the GLUE average last."""
    names = [t for t in DOWNSTREAM_TASKS if t != "glue"]
    if task == "glue":
        return (len(names) + 1, task)
    return (names.index(task), task) if task in names else (len(names), task)
