"""The usual failure modes of the SGLD local-learning-coefficient estimate (`dynamics.metrics.llc`), read from its
stored variants (`all`, `sd`, `drift`), for the report's warnings and the app: chains that disagree, a loss trace
that has not settled, a negative estimate."""

from __future__ import annotations

import math
from typing import Any

from dynamics.results import markdown

SPREAD_LIMIT = 0.2  # chains disagree when sd / |mean| exceeds this
DRIFT_LIMIT = 3.0  # a trace has not settled when its last third's mean is this many standard errors off its middle's


def warnings(rows: dict[str, float | None]) -> list[str]:
    """`diagnose` of one estimate's stored variants (variant → value, NaN or None where not stored)."""
    def get(name: str) -> float | None:
        v = rows.get(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    return diagnose(get("all"), get("sd"), get("drift"))


def diagnose(value: float | None, sd: float | None, drift: float | None) -> list[str]:
    """The usual failure modes of the estimator, in words, from the stored `all`, `sd` and `drift` values."""
    out = []
    if value is None or not math.isfinite(value):
        return out
    if value < 0:
        out.append("negative estimate (the sampler found lower loss than the snapshot: lower --llc-step-size or "
                   "raise --llc-gamma)")
    if sd is not None and math.isfinite(sd) and value != 0 and sd / abs(value) > SPREAD_LIMIT:
        out.append(f"chains disagree (sd/|mean| = {sd / abs(value):.2f} > {SPREAD_LIMIT})")
    if drift is not None and drift > DRIFT_LIMIT:  # NaN (a trace too short to judge) is never above it
        out.append(f"loss trace not settled (last vs middle third: {drift:.1f} standard errors > {DRIFT_LIMIT:g}; "
                   "raise --llc-burn-in or --llc-draws)")
    return out


def report_lines(rows: Any) -> list[str]:
    """The report's "Local learning coefficient" section from the stored `llc` rows (metric rows of one probe set):
    per run and step the estimate with its spread over chains and the warnings of `diagnose`; empty without rows."""
    d = rows[rows["metric"] == "llc"]
    if d.empty:
        return []
    lines = ["The local learning coefficient λ̂ of each measured snapshot, estimated by SGLD on the probe set's own "
             "loss (`dynamics.metrics.llc`; settings in the family's params): mean over chains ± their standard "
             "deviation, and the estimator's usual failure modes.", ""]
    cells = []
    for (run, step), g in d.groupby(["run", "step"], sort=True):
        values = dict(zip(g["variant"], g["value"], strict=True))
        value, sd = values.get("all"), values.get("sd")
        shown = "–" if value is None or value != value else f"{value:.4g}"
        spread = "–" if sd is None or sd != sd else f"{sd:.3g}"
        cells.append([run, int(step), shown, spread, "; ".join(warnings(values)) or "none"])
    return lines + markdown.table(["run", "step", "λ̂", "sd over chains", "warnings"], cells)
