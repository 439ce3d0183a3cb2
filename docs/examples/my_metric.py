"""A worked example of your own metric, measured by the probe without forking it:

    python -m dynamics.probe runs/NAME --metrics-module docs/examples/my_metric.py

The function is registered with the decorator every built-in metric uses (`dynamics.metrics.register`): the
stored name, the family whose inputs it is computed with (anchors, context or geometry: a per-layer family), the
app page that draws it, the layers, a label, a unit and a one-sentence definition. Its parameters are named after
the probe's inputs (`dynamics.metrics.registry.INPUTS`; `dynamics.metrics.user.FAMILY_INPUTS` lists what each
family provides) and are bound by name: `h` is the layer's hidden states of the probe set's content tokens, (N, H),
handed over as a `dynamics.metrics.Rows` (its tensor is `.x`, float32 as extracted) — a plain tensor or array is
accepted too, which is how the reference test calls it. Return a float (or None, or {variant: value}); raise
ValueError where the value is undefined (the probe stores NULL and a note).

The probe stores the rows like a built-in metric's, records this file's name and sha256 in the store
(`metric_modules`), measures again when the file changes, labels the curve in report.md and the app from the
definition below, and draws it on the page named. `test_my_metric.py` beside this file is the reference test to
copy: analytic cases and an independent float64 formula.
"""

from __future__ import annotations

import torch

from dynamics.metrics import Rows, register
from dynamics.metrics.registry import ALL_LAYERS


@register("peak_coordinate_share", family="geometry", page="geometry", layers=ALL_LAYERS,
          label="Peak coordinate share", unit="ratio in (0, 1]",
          definition="Mean over content tokens of the largest absolute coordinate of h divided by the norm of h.")
def peak_coordinate_share(h: Rows | torch.Tensor) -> float:
    """mean_i max_k |h_ik| / ‖h_i‖ over the content tokens i with ‖h_i‖ > 0 (in float64).

    1/√H when every coordinate of every token is equally large, 1 when each token lies on one axis: how much of a
    token's length one (outlier) dimension carries."""
    x = (h.x if isinstance(h, Rows) else torch.as_tensor(h)).to(torch.float64)
    norms = torch.linalg.vector_norm(x, dim=1)
    keep = norms > 0
    if not bool(keep.any()):
        raise ValueError("every hidden state is zero")
    return float((x[keep].abs().amax(dim=1) / norms[keep]).mean())
