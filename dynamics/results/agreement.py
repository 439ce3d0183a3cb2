"""The report's "Agreement between seeds" section, from the group-scope rows `dynamics.measure.agreement` stores:
per seed group, how many seeds stand behind the rows, the output JSD between seeds at the first, peak and last
shared step, and the CKA between seeds at the first and last layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynamics.results import markdown


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def report_lines(group_rows: Any, figure: Path | None = None) -> list[str]:
    """Markdown lines (empty when no group row is stored); `group_rows`: `Store.group_metrics` of one probe set."""
    d = group_rows[group_rows["variant"] == "all"] if len(group_rows) else group_rows
    if d.empty:
        return []
    rows = []
    for group, g in d.groupby("grp", sort=True):
        jsd = g[g["metric"] == "seed_jsd"].sort_values("step")
        cka = g[g["metric"] == "seed_cka"]
        cells = [str(group), str(int(g["n_runs"].max())), str(g["step"].nunique())]
        if jsd.empty:
            cells += ["–"] * 3
        else:
            peak = jsd.loc[jsd["value"].idxmax()]
            cells += [_fmt(jsd["value"].iloc[0]) + f" (step {int(jsd['step'].iloc[0])})",
                      _fmt(peak["value"]) + f" (step {int(peak['step'])})",
                      _fmt(jsd["value"].iloc[-1]) + f" (step {int(jsd['step'].iloc[-1])})"]
        for layer in (sorted({int(cka["layer"].min()), int(cka["layer"].max())}) if not cka.empty else []):
            c = cka[cka["layer"] == layer].sort_values("step")
            cells.append(f"L{layer}: {_fmt(c['value'].iloc[0])} → {_fmt(c['value'].iloc[-1])}")
        rows.append(cells)
    width = max(len(r) for r in rows)
    header = ["group", "seeds", "steps", "JSD first", "JSD peak", "JSD last"] + ["CKA first → last"] * (width - 6)
    lines = ["Runs whose configs differ only by seed, compared at every step they share (mean over seed pairs): the "
             "Jensen–Shannon divergence between the seeds' output distributions at a fixed, seeded subsample of "
             "masked (causal: target) positions, in nats (`seed_jsd`), and the debiased linear CKA between the "
             "seeds' representations of the same probe tokens (`seed_cka`).", ""]
    if figure is not None:
        lines += [f"![agreement between seeds](figures/{figure.name})", ""]
    return lines + markdown.table(header, [r + ["–"] * (width - len(r)) for r in rows])
