"""What each stored metric means: label, one-line definition, unit, the function that computed it, and its page.

Probe metrics are described by the store they come from: the probe writes its registry's definitions into the
store (`dynamics.results.store.Store.write_definitions`; read by `app.data.store_tables.definitions`), so the app labels
curves without importing the metric modules, and the "defined in" pointer names the function that computed the
stored value. A metric without a stored definition (a store written before definitions were stored) still
appears, on its family's page, with its name as the label and the family's module as the pointer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricDef:
    """A metric as the pages present it."""

    name: str
    label: str
    definition: str
    pointer: str  # dotted path of the function that computed it (its docstring states it exactly)
    unit: str = ""
    family: str | None = None
    scope: str | None = None
    page: str | None = None  # the key of the page that shows it (`PAGES`, "cka", "acquisition")
    position: int | None = None  # its place in the probe's registry


@dataclass(frozen=True)
class PageDef:
    """A metric page: the families whose metrics it shows when the store has no definition saying where they go
    (and whose notes it lists), and a one-line introduction."""

    key: str
    title: str
    families: tuple[str, ...]
    intro: str


PAGES: dict[str, PageDef] = {
    "anchors": PageDef("anchors", "Anchors", ("anchors", "drift"),
                       "How far contextual vectors move away from their token's own (anchor) embedding."),
    "context": PageDef("context", "Context alignment", ("context",),
                       "Whether the context vectors g = h − e of one sequence align (TACO's target), per layer."),
    "geometry": PageDef("geometry", "Geometry", ("geometry", "ln_outliers"),
                        "Shape of the representation space: anisotropy, Ethayarajh's measures, rank, dimension, norms."),
    "attention": PageDef("attention", "Attention", ("attention", "copying"),
                         "How heads spread their attention (entropy, sinks, previous/next-token heads, distance), and "
                         "duplicate-token and induction heads with in-context copying on repeated random sequences."),
}
# The page of a metric without a stored definition, by its family (the CKA and word-acquisition pages have views
# of their own).
FAMILY_PAGES: dict[str, str] = {**{f: p.key for p in PAGES.values() for f in p.families}, "cka_steps": "cka",
                                "acquisition": "acquisition"}

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
FAMILY_POINTERS = {"anchors": "dynamics.metrics.anchors", "drift": "dynamics.metrics.anchors",
                   "context": "dynamics.metrics.context", "geometry": "dynamics.metrics.geometry",
                   "cka_steps": "dynamics.metrics.cka", "acquisition": "dynamics.metrics.acquisition",
                   "ln_outliers": "dynamics.metrics.rogue", "attention": "dynamics.metrics.attention",
                   "copying": "dynamics.metrics.copying"}
BIN_ORDER = ("frequent", "medium", "rare")
_DISTANCE = re.compile(r"^d(\d+)$")
Definitions = Mapping[str, MetricDef]  # metric name → its stored definition (`store_tables.definitions`)


def describe(metric: str, family: str | None = None, defs: Definitions | None = None) -> MetricDef:
    """The definition of `metric` stored in `defs`; without one, its own name as the label and its family's module
    as the pointer."""
    known = (defs or {}).get(metric)
    if known is not None:
        return known
    pointer = FAMILY_POINTERS.get(family or "", "dynamics.metrics")
    return MetricDef(metric, metric.replace("_", " "), "No definition of it is stored in this results store (written "
                     "before definitions were stored, or by another version of the probe); see its family's module.",
                     pointer, family=family, page=FAMILY_PAGES.get(family or ""))


def page_of(metric: str, family: str | None, defs: Definitions | None = None) -> str | None:
    """The key of the page that shows `metric`: its stored definition's page, else its family's (`FAMILY_PAGES`)."""
    known = (defs or {}).get(metric)
    if known is not None and known.page:
        return known.page
    return FAMILY_PAGES.get(family or (known.family if known else None) or "")


def distance(variant: str) -> int | None:
    """The distance of a `ctx_cos_by_distance` variant ("d003" → 3), None for other variants."""
    m = _DISTANCE.match(variant)
    return int(m.group(1)) if m else None


def is_bin(variant: str) -> bool:
    """Whether `variant` is a token-frequency bin (frequent/medium/rare, or bin0, bin1, … for other bin counts)."""
    return variant in BIN_ORDER or bool(re.match(r"^bin\d+$", variant))


def order_key(metric: str, defs: Definitions | None = None) -> tuple[int, str]:
    """Sort key: metrics with a stored definition in registry order, the others after them by name."""
    known = (defs or {}).get(metric)
    if known is not None and known.position is not None:
        return (known.position, metric)
    return (1 << 30, metric)


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
