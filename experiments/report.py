"""Reports of experiments: `experiments/results/NAME/` with report.md, figures/*.png, curves.csv, summary.json.

`write_report(exp, out_dir)` gathers, for every run of the experiment, the validation losses of `log.jsonl`, the
probe's metrics at the last layer and the downstream scores from `RUN/dynamics/results.sqlite`, writes them as
one tidy table (`curves.csv`: run, step, tokens_seen, source, metric, variant, layer, value) and builds the
report the experiment file names (`REPORTS`). When no run directory is there (a fresh clone), the committed
`curves.csv` is read instead, so a report can be rebuilt from what is committed.

A hand-written reading of the results, if any, lives in `reading.md` beside the report and is included in it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.files import replacing, write_json, write_text
from common.run_dir import RunDir, RunDirError
from dynamics.results.groups import t_interval
from experiments.errors import EvalError
from experiments.paper import PAPER_AVERAGE, PAPER_SPEEDUP, PAPER_STEPS, PAPER_TACO_CURVE, PAPER_TASKS
from experiments.spec import Experiment

PROBE_METRICS = {  # metric → variant read at the last layer
    "ctx_gap_window": "all", "ctx_gap_all": "all", "seq_id_accuracy": "all", "tc_loss": "all",
    "anchor_sim_word": "all", "anchor_sim_emb": "all", "masked_accuracy": "all", "anisotropy": "all",
    "rankme": "all", "isoscore": "all",
}
COLUMNS = ["run", "step", "tokens_seen", "source", "metric", "variant", "layer", "value"]
TASK_LABELS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "wnli": "WNLI",
               "rotten_tomatoes": "RT", "glue": "GLUE avg"}
LABELS = {"ctx_gap_window": "context gap (window)", "anchor_sim_word": "anchor similarity (word emb.)",
          "tc_loss": "TC loss on the probe set", "seq_id_accuracy": "sequence-id accuracy",
          "val_mlm_loss": "validation MLM loss", "glue/average": "GLUE average (linear probe)"}


@dataclass
class Results:
    """What a report is built from: the tidy curves and, per run, its settings and stage timings."""

    curves: pd.DataFrame
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def series(self, run: str, source: str, metric: str, variant: str | None = None,
               layer: int | None = None) -> pd.Series:
        """step → value for one curve (sorted; empty when absent)."""
        c = self.curves
        mask = (c.run == run) & (c.source == source) & (c.metric == metric)
        if variant is not None:
            mask &= c.variant == variant
        if layer is not None:
            mask &= c.layer == layer
        part = c[mask].dropna(subset=["value"])
        return part.groupby("step")["value"].mean().sort_index()

    def last_layer(self, run: str, mode: str = "linear") -> int:
        c = self.curves
        rows = c[(c.run == run) & (c.source == "downstream") & c.variant.str.startswith(f"{mode}/")]
        return int(rows.layer.max()) if len(rows) else -1

    def downstream(self, run: str, metric: str, mode: str = "linear", suffix: str = "mean") -> pd.Series:
        layer = self.last_layer(run, mode) if mode == "linear" else -1
        return self.series(run, "downstream", metric, f"{mode}/{suffix}", layer)

    def final(self, run: str, source: str, metric: str, variant: str | None = None) -> float:
        return _last(self.series(run, source, metric, variant))

    def final_downstream(self, run: str, metric: str, mode: str = "linear") -> float:
        """The last snapshot's downstream score (NaN when none is stored)."""
        return _last(self.downstream(run, metric, mode))


def _last(s: pd.Series) -> float:
    return float(s.iloc[-1]) if len(s) else math.nan


# ------------------------------------------------------------------------------------------------ gathering

def gather_run(run_dir: Path, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tidy rows and the settings of one run directory (nothing when it has not been trained)."""
    import dynamics.results.store as dstore
    from experiments.results import FAMILY, PROBE_HASH

    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    run = RunDir(run_dir)
    if not run.is_run():
        return rows, info
    try:
        meta = run.config
    except RunDirError as exc:
        raise EvalError(str(exc)) from None
    info["config"] = meta.get("config", {})
    info["layers"] = int(meta.get("model_config", {}).get("num_hidden_layers", 0))
    info["global_batch_tokens"] = meta.get("global_batch_tokens")
    exp_json = run_dir / "experiment.json"
    if exp_json.is_file():
        info["stages"] = json.loads(exp_json.read_text()).get("stages", {})
    for r in run.log().rows:  # lines cut by a kill or unreadable are left out; non-finite values read as None
        if r.get("split") == "validation":
            for key in ("mlm_loss", "tc_loss", "mlm_accuracy"):
                if r.get(key) is not None:
                    rows.append({"run": name, "step": r["step"], "tokens_seen": r.get("tokens_seen"), "source": "train",
                                 "metric": f"val_{key}", "variant": "all", "layer": -1, "value": r[key]})
    store_dir = run_dir / "dynamics"
    if (store_dir / "results.sqlite").is_file():
        with dstore.open(store_dir, readonly=True) as store:
            probe = store.metrics(list(PROBE_METRICS), run=name, layer=info["layers"])
            for r in probe.itertuples(index=False):
                if r.variant == PROBE_METRICS[r.metric]:
                    rows.append({"run": name, "step": r.step, "tokens_seen": r.tokens_seen, "source": "probe",
                                 "metric": r.metric, "variant": r.variant, "layer": r.layer, "value": r.value})
            down = store.metrics(run=name, family=FAMILY, probe_hash=PROBE_HASH)
            for r in down.itertuples(index=False):
                rows.append({"run": name, "step": r.step, "tokens_seen": r.tokens_seen, "source": "downstream",
                             "metric": r.metric, "variant": r.variant, "layer": r.layer, "value": r.value})
    return rows, info


def gather(exp: Experiment, out_dir: Path) -> Results:
    """Every run's curves; the committed `curves.csv`/`summary.json` in `out_dir` when no run is on disk."""
    rows: list[dict[str, Any]] = []
    runs: dict[str, dict[str, Any]] = {}
    for name in exp.names():
        run_rows, info = gather_run(exp.run_dir(name), name)
        rows += run_rows
        if info:
            runs[name] = info
    if rows:
        return Results(pd.DataFrame(rows, columns=COLUMNS), runs)
    csv_path, summary = out_dir / "curves.csv", out_dir / "summary.json"
    if csv_path.is_file() and summary.is_file():
        curves = pd.read_csv(csv_path)
        return Results(curves, json.loads(summary.read_text()).get("runs", {}))
    raise EvalError(f"experiment {exp.name}: no trained runs under {exp.runs_dir} and no {csv_path}; run "
                    f"`python -m experiments.run {exp.source or 'CONFIG'}` first")


# ------------------------------------------------------------------------------------------------ analysis

def steps_to_reach(steps: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """The first step at which the curve reaches `target`, linearly interpolated between snapshots.

    Returns `steps[0]` when the first point already reaches it and None when the curve never does."""
    pts = [(float(s), float(v)) for s, v in zip(steps, values, strict=True) if not math.isnan(v)]
    for i, (s, v) in enumerate(pts):
        if v >= target:
            if i == 0:
                return s
            s0, v0 = pts[i - 1]
            return s0 + (target - v0) / (v - v0) * (s - s0)
    return None


@dataclass
class Speedup:
    """TACO seed k against MLM seed k: the steps TACO needs to reach MLM's final score."""

    pair: str
    target: float
    mlm_steps: int
    taco_steps: float | None
    untrained: float

    @property
    def ratio(self) -> float | None:
        if self.taco_steps is None or self.taco_steps <= 0 or self.target <= self.untrained:
            return None
        return self.mlm_steps / self.taco_steps

    def describe(self) -> str:
        if self.target <= self.untrained:
            return "undefined: MLM's final score is not above the untrained model's"
        if self.taco_steps is None:
            return "not reached within the budget"
        return f"{self.ratio:.2f}×"


def paired_runs(exp: Experiment, results: Results) -> list[tuple[str, str]]:
    """(mlm run, taco run) pairs with the same seed, from the runs' own settings."""
    by_seed: dict[Any, dict[str, str]] = {}
    for name, info in results.runs.items():
        cfg = info.get("config", {})
        seen = by_seed.setdefault(cfg.get("seed"), {})
        if cfg.get("objective") in seen:
            raise EvalError(f"experiment {exp.name}: runs {seen[cfg.get('objective')]} and {name} share seed "
                            f"{cfg.get('seed')} and objective {cfg.get('objective')}; the mlm_vs_taco report pairs "
                            "one MLM and one TACO run per seed — give them different seeds or another report")
        seen[cfg.get("objective")] = name
    return [(d["mlm"], d["taco"]) for _, d in sorted(by_seed.items(), key=lambda kv: str(kv[0]))
            if "mlm" in d and "taco" in d]


def speedups(results: Results, pairs: list[tuple[str, str]], metric: str, mode: str) -> list[Speedup]:
    out = []
    for mlm, taco in pairs:
        m, t = results.downstream(mlm, metric, mode), results.downstream(taco, metric, mode)
        if not len(m) or not len(t):
            continue
        out.append(Speedup(f"{mlm} / {taco}", float(m.iloc[-1]), int(m.index[-1]),
                           steps_to_reach(list(t.index), list(t.values), float(m.iloc[-1])), float(t.iloc[0])))
    return out


def pooled_speedup(results: Results, mlm_runs: Sequence[str], taco_runs: Sequence[str], metric: str,
                   mode: str) -> Speedup | None:
    """The speed-up read off the seed-mean curves (snapshots common to all runs of each objective)."""
    def mean_curve(runs: Sequence[str]) -> pd.Series:
        curves = [results.downstream(r, metric, mode) for r in runs]
        curves = [c for c in curves if len(c)]
        return pd.concat(curves, axis=1).dropna().mean(axis=1) if curves else pd.Series(dtype=float)

    m, t = mean_curve(mlm_runs), mean_curve(taco_runs)
    if not len(m) or not len(t):
        return None
    return Speedup("seed-mean curves", float(m.iloc[-1]), int(m.index[-1]),
                   steps_to_reach(list(t.index), list(t.values), float(m.iloc[-1])), float(t.iloc[0]))


def paired_difference(results: Results, pairs: list[tuple[str, str]], metric: str, mode: str) -> dict[str, Any] | None:
    """TACO − MLM final score per seed pair, its mean and 95% Student-t interval (`dynamics.results.groups.t_interval`, the
    app's interval too; None with fewer than 2 pairs)."""
    diffs = []
    for mlm, taco in pairs:
        m, t = results.downstream(mlm, metric, mode), results.downstream(taco, metric, mode)
        if len(m) and len(t):
            diffs.append(float(t.iloc[-1] - m.iloc[-1]))
    if len(diffs) < 2:
        return None
    iv = t_interval(diffs)
    return {"mean": iv.mean, "std": iv.std, "ci_low": iv.low, "ci_high": iv.high, "n": iv.n, "per_seed": diffs}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan


def fmt(mean: float, std: float = math.nan, digits: int = 1) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def group_final(results: Results, runs: Sequence[str], getter: Callable[[str], float]) -> tuple[float, float]:
    return _mean_std([getter(r) for r in runs])


# ------------------------------------------------------------------------------------------------ figures

def _band_plot(ax: Any, results: Results, groups: dict[str, list[str]], get: Callable[[str], pd.Series],
               title: str, log_x: bool = False) -> None:
    colours = {"mlm": "#4C72B0", "taco": "#DD8452"}
    for i, (label, runs) in enumerate(groups.items()):
        curves = [get(r) for r in runs]
        curves = [c for c in curves if len(c)]
        if not curves:
            continue
        frame = pd.concat(curves, axis=1).sort_index()
        x = frame.index.to_numpy(dtype=float)
        colour = colours.get(label.split("-")[0].lower(), f"C{i}")
        mean = frame.mean(axis=1).to_numpy()
        ax.plot(x, mean, label=f"{label} (n={len(curves)})", color=colour, marker="o", ms=2.5, lw=1.4)
        if len(curves) > 1:
            ax.fill_between(x, frame.min(axis=1).to_numpy(), frame.max(axis=1).to_numpy(), color=colour, alpha=0.18,
                            lw=0)
    if log_x:
        ax.set_xscale("symlog", linthresh=10)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _save(fig: Any, path: Path) -> str:
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"figures/{path.name}"


def _figure(n: int, width: float = 3.6) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, 3.0), squeeze=False)
    return fig, axes[0]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _setup_section(exp: Experiment, results: Results) -> str:
    first = next(iter(results.runs.values()), {})
    cfg = first.get("config", {})
    devices = sorted({s.get("device", "?") for info in results.runs.values() for s in info.get("stages", {}).values()})
    lines = [exp.description, "",
             f"Runs: {', '.join(results.runs)}. Preset `{cfg.get('preset')}`, {cfg.get('max_steps')} steps of "
             f"{first.get('global_batch_tokens')} tokens, block {cfg.get('block_size')}, lr {cfg.get('lr')}, "
             f"corpus `{cfg.get('corpus')}`. Probe: `dynamics.probe` defaults on the runs' shared validation "
             f"probe set, read at the last layer. Downstream: `experiments.evaluate`."]
    if devices:
        lines.append(f"Ran on: {', '.join(devices)}.")
    stage_rows = []
    for name, info in results.runs.items():
        st = info.get("stages", {})
        stage_rows.append([name] + [f"{st[s]['seconds']:.0f}" if s in st else "–"
                                    for s in ("train", "probe", "linear", "finetune")])
    if stage_rows:
        lines += ["", "Wall time per stage (s; runs shared the device side by side, so these are not solo timings):",
                  "", _table(["run", "train", "probe", "linear", "finetune"], stage_rows)]
    return "\n".join(lines)


def _reading(out_dir: Path) -> str:
    path = out_dir / "reading.md"
    return path.read_text().strip() if path.is_file() else "_No reading written yet (add `reading.md` here)._"


def _objective_groups(results: Results) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, info in results.runs.items():
        groups.setdefault(str(info.get("config", {}).get("objective", "?")).upper(), []).append(name)
    return groups


# ------------------------------------------------------------------------------------------------ reports

def report_mlm_vs_taco(exp: Experiment, results: Results, out_dir: Path) -> tuple[str, dict[str, Any]]:
    metric = exp.options.get("score", "glue/average")
    mode = exp.options.get("mode", "linear")
    groups = _objective_groups(results)
    mlm_runs, taco_runs = groups.get("MLM", []), groups.get("TACO", [])
    pairs = paired_runs(exp, results)
    summary: dict[str, Any] = {"score": metric, "mode": mode}

    # speed-up
    sp = speedups(results, pairs, metric, mode)
    ratios = [s.ratio for s in sp if s.ratio is not None]
    summary["speedup"] = [{"pair": s.pair, "target": s.target, "mlm_steps": s.mlm_steps, "taco_steps": s.taco_steps,
                           "untrained": s.untrained, "ratio": s.ratio} for s in sp]
    sp_rows = [[s.pair, f"{s.target:.1f}", f"{s.untrained:.1f}", s.mlm_steps,
                "–" if s.taco_steps is None else f"{s.taco_steps:.0f}", s.describe()] for s in sp]
    mean_ratio, std_ratio = _mean_std(ratios)
    pooled = pooled_speedup(results, mlm_runs, taco_runs, metric, mode)
    if pooled is not None:
        summary["speedup_seed_mean_curves"] = pooled.ratio
        sp_rows.append(["seed-mean curves", f"{pooled.target:.1f}", f"{pooled.untrained:.1f}", pooled.mlm_steps,
                        "–" if pooled.taco_steps is None else f"{pooled.taco_steps:.0f}", pooled.describe()])
    diff = paired_difference(results, pairs, metric, mode)
    summary["final_difference"] = diff

    # final scores per task
    tasks = [t for t in ("cola", "sst2", "mrpc", "stsb", "rte", "rotten_tomatoes")
             if any(len(results.downstream(r, f"{t}/score", "linear")) for r in results.runs)]
    final_rows = []
    for label, runs in (("MLM", mlm_runs), ("TACO", taco_runs)):
        for m in ("linear", "finetune"):
            cells = []
            for t in [*tasks, "glue"]:
                name = "glue/average" if t == "glue" else f"{t}/score"
                cells.append(fmt(*group_final(results, runs,
                                             lambda r, n=name, m=m: results.final_downstream(r, n, m))))
            if any(c != "–" for c in cells):
                final_rows.append([f"{label} {m}"] + cells)
        paper = PAPER_TASKS[label.lower()]
        final_rows.append([f"{label} paper ({PAPER_STEPS // 1000}k steps, fine-tuned)"]
                          + [f"{paper[t]:.1f}" if t in paper else "–" for t in tasks]
                          + [f"{PAPER_AVERAGE[label.lower()]:.1f}"])
    summary["final"] = {r[0]: r[1:] for r in final_rows}

    # curve of the score
    curve_steps = sorted({int(s) for r in results.runs for s in results.downstream(r, metric, mode).index})
    curve_rows = []
    for label, runs in (("MLM", mlm_runs), ("TACO", taco_runs)):
        cells = []
        for step in curve_steps:
            vals = [results.downstream(r, metric, mode).get(step, math.nan) for r in runs]
            cells.append(fmt(*_mean_std(vals)))
        curve_rows.append([label] + cells)

    # dynamics at a few steps
    dyn_metrics = ["val_mlm_loss", "ctx_gap_window", "anchor_sim_word", "tc_loss", "seq_id_accuracy"]
    all_steps = sorted({int(s) for r in results.runs for s in results.series(r, "probe", "ctx_gap_window").index})
    picks = [s for s in (0, 16, 128, 500, 1000) if s in all_steps] + all_steps[-1:]
    picks = sorted(set(picks))
    dyn_rows = []
    for m in dyn_metrics:
        source = "train" if m.startswith("val_") else "probe"
        for label, runs in (("MLM", mlm_runs), ("TACO", taco_runs)):
            cells = [fmt(*_mean_std([results.series(r, source, m).get(s, math.nan) for r in runs]), digits=3)
                     for s in picks]
            dyn_rows.append([LABELS.get(m, m), label] + cells)
    summary["dynamics"] = {f"{r[0]} {r[1]}": dict(zip(map(str, picks), r[2:], strict=True)) for r in dyn_rows}

    # figures
    fig, axes = _figure(2, 4.4)
    _band_plot(axes[0], results, {"MLM": mlm_runs, "TACO": taco_runs},
               lambda r: results.downstream(r, metric, mode), f"{metric} ({mode}), mean and seed range")
    targets = [s.target for s in sp]
    if targets:
        axes[0].axhline(float(np.mean(targets)), color="#4C72B0", ls="--", lw=0.8, label="MLM final (mean)")
    axes[0].legend(fontsize=7)
    paper_x = sorted(PAPER_TACO_CURVE)
    axes[1].plot(paper_x, [PAPER_TACO_CURVE[s] for s in paper_x], color="#DD8452", marker="o", label="TACO (paper)")
    axes[1].axhline(PAPER_AVERAGE["mlm"], color="#4C72B0", ls="--", lw=0.8, label="MLM 250k (paper)")
    axes[1].set_title("paper, Figure 5: GLUE dev average (fine-tuned)", fontsize=9)
    axes[1].set_xlabel("step", fontsize=8)
    axes[1].tick_params(labelsize=7)
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig_scores = _save(fig, out_dir / "figures" / "scores.png")

    fig, axes = _figure(4)
    for ax, m in zip(axes, ["val_mlm_loss", "ctx_gap_window", "anchor_sim_word", "tc_loss"], strict=True):
        source = "train" if m.startswith("val_") else "probe"
        _band_plot(ax, results, {"MLM": mlm_runs, "TACO": taco_runs},
                   lambda r, m=m, source=source: results.series(r, source, m), LABELS[m], log_x=True)
    axes[0].legend(fontsize=7)
    fig_dyn = _save(fig, out_dir / "figures" / "dynamics.png")

    diff_line = ("" if diff is None else
                 f"Final {metric} ({mode}), TACO − MLM paired by seed: {diff['mean']:+.2f} points "
                 f"(95% CI {diff['ci_low']:+.2f} to {diff['ci_high']:+.2f}, n = {diff['n']}; per seed "
                 f"{', '.join(f'{d:+.1f}' for d in diff['per_seed'])}).")
    speed_line = (f"Speed-up (MLM's final steps / the steps TACO needs to reach MLM's final {metric}, per seed "
                  f"pair): {fmt(mean_ratio, std_ratio, 2)}× over {len(ratios)} of {len(sp)} pairs where it is "
                  f"defined; the paper reports {PAPER_SPEEDUP:.0f}× (TACO-50k 74.9 vs MLM-250k 75.0).")
    summary["speedup_mean"], summary["speedup_std"], summary["speedup_defined"] = mean_ratio, std_ratio, len(ratios)
    text = "\n".join([
        f"# {exp.name}: MLM vs TACO", "",
        "## Setup", "", _setup_section(exp, results), "",
        "## Speed-up", "", speed_line, "", diff_line, "",
        _table(["pair", "MLM final", "untrained", "MLM steps", "TACO steps to reach", "speed-up"], sp_rows), "",
        f"## Final scores (step {max(curve_steps) if curve_steps else '?'}; mean ± std over seeds; "
        "the paper's BERT-small at 250k steps for comparison)", "",
        _table(["", *[TASK_LABELS[t] for t in tasks], "GLUE avg (5)"], final_rows), "",
        "GLUE avg (5) averages CoLA, SST-2, MRPC, STS-B and RTE as the paper does; RT (Rotten Tomatoes) is reported "
        "beside it. Linear = logistic/ridge regression on frozen mean-pooled last-layer features; finetune = the "
        "paper's recipe on capped training sets (see the experiment file).", "",
        f"## {metric} ({mode}) against steps", "",
        _table(["", *map(str, curve_steps)], curve_rows), "",
        f"![scores]({fig_scores})", "",
        "## Representation dynamics (last layer, probe set; mean ± std over seeds)", "",
        _table(["metric", "", *map(str, picks)], dyn_rows), "",
        f"![dynamics]({fig_dyn})", "",
        "## Reading", "", _reading(out_dir), ""])
    return text, summary


def _run_table(results: Results, runs: Sequence[str], settings: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["run", *settings, "val MLM loss", "TC loss (probe)", "context gap", "seq-id acc", "anchor sim",
              "GLUE avg (linear)", "RT (linear)"]
    rows = []
    for r in runs:
        cfg = results.runs.get(r, {}).get("config", {})
        rows.append([r, *[str(cfg.get(k, "")) for k in settings],
                     fmt(results.final(r, "train", "val_mlm_loss"), digits=3),
                     fmt(results.final(r, "probe", "tc_loss"), digits=3),
                     fmt(results.final(r, "probe", "ctx_gap_window"), digits=3),
                     fmt(results.final(r, "probe", "seq_id_accuracy"), digits=3),
                     fmt(results.final(r, "probe", "anchor_sim_word"), digits=3),
                     fmt(results.final_downstream(r, "glue/average")),
                     fmt(results.final_downstream(r, "rotten_tomatoes/score"))])
    return header, rows


def _lines_plot(results: Results, runs: Sequence[str], metrics: Sequence[str], path: Path) -> str:
    fig, axes = _figure(len(metrics))
    for ax, m in zip(axes, metrics, strict=True):
        if m == "glue/average":
            _band_plot(ax, results, {r: [r] for r in runs}, lambda r, m=m: results.downstream(r, m, "linear"),
                       LABELS[m])
        else:
            source = "train" if m.startswith("val_") else "probe"
            _band_plot(ax, results, {r: [r] for r in runs}, lambda r, m=m, source=source: results.series(r, source, m),
                       LABELS[m], log_x=True)
    axes[0].legend(fontsize=6)
    return _save(fig, path)


def _final_snapshot_report(exp: Experiment, results: Results, out_dir: Path, title: str, header: list[str],
                           rows: list[list[str]], note: str, figure: str) -> tuple[str, dict[str, Any]]:
    """A report whose core is one table of the runs' final snapshots, a note and one figure."""
    summary = {"final": {r[0]: dict(zip(header[1:], r[1:], strict=True)) for r in rows}}
    text = "\n".join([
        f"# {exp.name}: {title}", "", "## Setup", "", _setup_section(exp, results), "",
        "## Final snapshot", "", _table(header, rows), "", note, "",
        f"![{Path(figure).stem}]({figure})", "", "## Reading", "", _reading(out_dir), ""])
    return text, summary


def report_embedding_sensitivity(exp: Experiment, results: Results, out_dir: Path) -> tuple[str, dict[str, Any]]:
    runs = list(results.runs)
    header, rows = _run_table(results, runs, ["objective", "freeze_embeddings", "init_embeddings"])
    for row in rows:  # the init path is long; its run name says enough
        row[3] = Path(row[3]).name if row[3] else ""
    figure = _lines_plot(results, runs, ["val_mlm_loss", "ctx_gap_window", "anchor_sim_word", "glue/average"],
                         out_dir / "figures" / "curves.png")
    return _final_snapshot_report(
        exp, results, out_dir, "sensitivity to the word embeddings", header, rows,
        "TC loss, context gap and sequence-id accuracy are the probe's (window 5, 50 negatives, τ 0.07, last layer) "
        "for every run, MLM included; anchor sim is cos(h_L, E[x]) with the run's own embedding matrix.", figure)


def report_tc_ablation(exp: Experiment, results: Results, out_dir: Path) -> tuple[str, dict[str, Any]]:
    runs = list(results.runs)
    header, rows = _run_table(results, runs, ["objective", "tc_window", "tc_negatives", "tc_temperature",
                                              "tc_anchors"])
    for row in rows:  # MLM has no TC settings
        if row[1] == "mlm":
            row[2:6] = ["–"] * 4
    fig, axes = _figure(3, 3.8)
    for ax, (m, source, title) in zip(axes, [("ctx_gap_window", "probe", "context gap (window), final"),
                                             ("tc_loss", "probe", "TC loss on the probe set, final"),
                                             ("glue/average", "downstream", "GLUE average (linear), final")],
                                      strict=True):
        vals = [results.final_downstream(r, m) if source == "downstream" else results.final(r, source, m)
                for r in runs]
        ax.barh(runs, vals, color=["#4C72B0" if results.runs[r].get("config", {}).get("objective") == "mlm"
                                   else "#DD8452" for r in runs])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="x")
        if m == "glue/average":
            finite = [v for v in vals if not math.isnan(v)]
            if finite:
                ax.set_xlim(min(finite) - 2, max(finite) + 1)
    figure = _save(fig, out_dir / "figures" / "ablation.png")
    return _final_snapshot_report(
        exp, results, out_dir, "the TC loss's settings", header, rows,
        "The probe measures every run with the same TC settings (window 5, 50 negatives, τ 0.07, all anchors), so "
        "its TC loss and gap compare the runs on one scale, not each run's own training loss.", figure)


REPORTS: dict[str, Callable[[Experiment, Results, Path], tuple[str, dict[str, Any]]]] = {
    "mlm_vs_taco": report_mlm_vs_taco,
    "embedding_sensitivity": report_embedding_sensitivity,
    "tc_ablation": report_tc_ablation,
}


def write_report(exp: Experiment, out_dir: str | Path) -> Path:
    """Gather the experiment's results and write `out_dir`/report.md, figures/, curves.csv and summary.json."""
    if exp.report not in REPORTS:
        raise EvalError(f"{exp.source}: report {exp.report!r} is unknown; choose one of {', '.join(REPORTS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = gather(exp, out)
    text, summary = REPORTS[exp.report](exp, results, out)
    curves = results.curves.sort_values(["run", "source", "metric", "variant", "layer", "step"])
    for path, payload in ((out / "curves.csv", None), (out / "summary.json", {"runs": results.runs, **summary}),
                          (out / "report.md", text)):
        if payload is None:
            with replacing(path) as tmp:
                curves.to_csv(tmp, index=False, float_format="%.6g")
        elif isinstance(payload, str):
            write_text(path, payload)
        else:
            write_json(path, payload, indent=1, default=_json_default, end="\n")
    return out / "report.md"


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


