"""The one way registered metrics become stored rows, for every scope (per layer, per snapshot, per layer pair,
per run).

A scope's code builds the *inputs* the registered functions ask for (`registry.INPUTS`), then hands them here
with the layer they describe; this module calls each registered function of the family and scope whose layers
include that layer (`registry.computations`), once, and turns what it returns into rows `(layer, metric,
variant, value)`. Two rules hold for every scope:

- **Not applicable**: an input the function needs is None for this model or layer (no MLM head, `g` at layer 0,
  no LayerNorm at a layer) → no row.
- **Undefined here**: the function raises `ValueError` → a NULL row (variant "all") for every name it computes,
  and one note per name, "NAME undefined: why".

A value is a float, None (NULL), or a mapping variant → value; for a per-step run-level metric (`per_step`), a
mapping snapshot index → value, stored at each measured step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dynamics.metrics import registry
from dynamics.results.store import FamilyResult, MetricRow

PARAMS_VERSION = "v1"
METRIC_DTYPE = torch.float32  # arithmetic of the O(N·H) passes; see dynamics.metrics.rows "Precision"


def family_params(family: str, **values: Any) -> str:
    """The `completed.params` string of a family: the settings that change its values (a stored family whose
    string differs is measured again)."""
    return ";".join([PARAMS_VERSION] + [f"{k}={v}" for k, v in sorted(values.items())])


class Collector:
    """Rows and notes of one family; a metric's first note is the one kept."""

    def __init__(self) -> None:
        self.rows: list[MetricRow] = []
        self.notes: list[str] = []
        self._log: list[tuple[str | None, str]] = []  # (metric or None, note), for `merge`
        self._noted: set[str] = set()

    def note(self, text: str, metric: str | None = None) -> None:
        """Add a note; with `metric`, only the first note about that metric is kept."""
        if metric is not None:
            if metric in self._noted:
                return
            self._noted.add(metric)
        self._log.append((metric, text))
        if text not in self.notes:
            self.notes.append(text)

    def merge(self, other: Collector) -> None:
        """Append another collector's rows and notes (a metric noted by both keeps the first note)."""
        self.rows += other.rows
        for metric, text in other._log:
            self.note(text, metric)

    def put(self, layer: int, metric: str, value: Any) -> None:
        """Rows of one stored name's value: a float or None (variant "all"), or variant → value."""
        items = value.items() if isinstance(value, Mapping) else [("all", value)]
        self.rows += [(layer, metric, variant, None if v is None else float(v)) for variant, v in items]

    def evaluate(self, computation: registry.Computation, inputs: Mapping[str, Any] | Any) -> dict[str, Any] | None:
        """{name: value} of one registered function on `inputs`, by the two rules of the module docstring (None:
        not applicable)."""
        if not computation.applicable(inputs):
            return None
        try:
            return computation(inputs)
        except ValueError as exc:
            for name in computation.names:
                self.note(f"{name} undefined: {exc}", name)
            return dict.fromkeys(computation.names)

    def measure(self, family: str, scope: str, layer: int, last: int, inputs: Mapping[str, Any] | Any) -> None:
        """Rows at `layer` of every registered function of `family` and `scope` stored at that layer (for a model
        whose last layer is `last`)."""
        for computation in registered(family, scope, layer, last):
            values = self.evaluate(computation, inputs)
            for name, value in (values or {}).items():
                self.put(layer, name, value)

    def result(self, arrays: dict[str, dict[str, np.ndarray]] | None = None) -> FamilyResult:
        return FamilyResult(self.rows, arrays or {}, self.notes)


def registered(family: str, scope: str, layer: int, last: int) -> list[registry.Computation]:
    """The registered functions of `family` and `scope` stored at `layer`, for a model whose last layer is `last`."""
    return [c for c in registry.computations(family, scope) if layer in registry.layer_range(c.layers, last)]


def per_step_rows(family: str, layers: Mapping[int, Mapping[str, Any]], last: int, n_steps: int,
                  notes: Collector) -> dict[int, list[MetricRow]]:
    """Rows per snapshot index of a run-level family whose registered metrics give a value per measured snapshot
    (`{k: value}`), from each layer's inputs; undefined (ValueError) → NULL at every snapshot."""
    rows: dict[int, list[MetricRow]] = {k: [] for k in range(n_steps)}
    for layer, inputs in layers.items():
        for computation in registered(family, "series", layer, last):
            values = notes.evaluate(computation, inputs)
            for name, value in (values or {}).items():
                per_step = value if value is not None else dict.fromkeys(range(n_steps))
                for k, v in per_step.items():
                    rows[k].append((layer, name, "all", None if v is None else float(v)))
    return rows


def steps_param(steps: Sequence[int]) -> str:
    return ",".join(map(str, steps))
