"""Downstream scores in the results store (`dynamics.results.store`), next to the probe's metrics, plus summary files.

Rows (table `metrics`, family `"downstream"`, probe_hash `"downstream"` — downstream scores do not depend on a
probe set, so they live under this fixed key and never shadow the probe's latest probe set):

* `metric` = `"{task}/{name}"` with name one of the task's GLUE metrics (`accuracy`, `f1`, `mcc`, `pearson`,
  `spearman`) or `score` (the task's headline number); `"glue/average"`: the mean of the `score`s of the GLUE
  tasks stored for the snapshot (the paper's 5-task average once CoLA, SST-2, MRPC, STS-B and RTE are all in;
  a note says which tasks it covers otherwise);
* `variant` = `"finetune/seed{S}"` per seed, `"finetune/mean"`, `"finetune/std"` (sample std, ≥ 2 seeds);
  `"linear/mean"` for the (deterministic, seed-free) linear probe;
* `layer` = −1 for fine-tuning, the probed hidden_states index (0 … L) for the linear probe.

Several invocations add up: evaluating other tasks or modes of the same snapshot keeps what is stored (rows of a
(task, mode, layer) are replaced only when that unit is recomputed). The `completed` row of (run, step,
"downstream") holds JSON `{"{mode}/L{layer}/{task}": {"params": hash, "seconds": s}}`, which makes re-runs skip
finished units. One writer per store at a time.

`downstream.csv` (tidy rows) and `downstream.json` (per run, step, mode, layer and task: metric → mean, std and
per-seed values) are rewritten beside `results.sqlite` after every evaluation.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.files import write_json, writing
from dynamics.results.store import FamilyResult, MetricRow, Store
from experiments.tasks import GLUE_AVERAGE_TASKS

FAMILY = "downstream"
PROBE_HASH = "downstream"


@dataclass
class TaskResult:
    """One (snapshot, task, mode, layer) unit: metrics per run (`"seed1"`, … or `"mean"` for the linear probe)."""

    run: str
    step: int
    tokens_seen: int | None
    task: str
    mode: str
    layer: int
    per_run: dict[str, dict[str, float]]
    params: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return unit_key(self.mode, self.layer, self.task)

    def aggregate(self) -> dict[str, dict[str, float]]:
        """variant suffix → metric → value: the per-seed values plus `mean` and (≥ 2 seeds) `std`."""
        out = dict(self.per_run)
        seeds = [k for k in self.per_run if k.startswith("seed")]
        if seeds:
            names = list(self.per_run[seeds[0]])
            out["mean"] = {n: float(np.mean([self.per_run[s][n] for s in seeds])) for n in names}
            if len(seeds) >= 2:
                out["std"] = {n: float(np.std([self.per_run[s][n] for s in seeds], ddof=1)) for n in names}
        return out

    def rows(self) -> list[MetricRow]:
        return [(self.layer, f"{self.task}/{name}", f"{self.mode}/{suffix}", value)
                for suffix, metrics in self.aggregate().items() for name, value in metrics.items()]


def unit_key(mode: str, layer: int, task: str) -> str:
    return f"{mode}/L{layer}/{task}"


def completed_units(store: Store, run: str, step: int) -> dict[str, dict[str, Any]]:
    """The finished units of a snapshot: key → {"params": hash, "seconds": s}."""
    raw = store.completed_params(PROBE_HASH).get((run, step, FAMILY))
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _glue_rows(rows: Mapping[tuple[int, str, str], float | None], mode: str, layer: int) -> tuple[list[MetricRow], str | None]:
    """`glue/average` rows for (mode, layer) from the tasks' `score` rows, and a note when tasks are missing."""
    scores: dict[str, dict[str, float | None]] = defaultdict(dict)  # variant → task → score
    for (lay, metric, variant), value in rows.items():
        task, _, name = metric.partition("/")
        if lay == layer and name == "score" and task in GLUE_AVERAGE_TASKS and variant.startswith(f"{mode}/"):
            scores[variant][task] = value
    tasks = sorted(scores.get(f"{mode}/mean", {}), key=GLUE_AVERAGE_TASKS.index)
    if not tasks:
        return [], None
    out: list[MetricRow] = []
    per_seed: list[float] = []
    for variant, by_task in scores.items():
        if variant.endswith("/std") or set(by_task) != set(tasks):
            continue
        values = [by_task[t] for t in tasks]
        avg = None if any(v is None for v in values) else float(np.mean(values))
        out.append((layer, "glue/average", variant, avg))
        if variant.split("/", 1)[1].startswith("seed") and avg is not None:
            per_seed.append(avg)
    if len(per_seed) >= 2:
        out.append((layer, "glue/average", f"{mode}/std", float(np.std(per_seed, ddof=1))))
    note = None
    if len(tasks) < len(GLUE_AVERAGE_TASKS):
        note = (f"glue/average ({mode}, layer {layer}) covers {','.join(tasks)} only "
                f"({len(tasks)} of the {len(GLUE_AVERAGE_TASKS)} tasks of the paper's average)")
    return out, note


def store_result(store: Store, result: TaskResult) -> None:
    """Merge one unit into the snapshot's downstream rows (replacing that unit's old rows) in one transaction."""
    old = store.metrics(run=result.run, family=FAMILY, probe_hash=PROBE_HASH)
    old = old[old["step"] == result.step]
    rows: dict[tuple[int, str, str], float | None] = {}
    for r in old.itertuples(index=False):
        same_unit = (int(r.layer) == result.layer and r.variant.startswith(f"{result.mode}/")
                     and (r.metric.startswith(f"{result.task}/") or r.metric.startswith("glue/")))
        if not same_unit:
            rows[(int(r.layer), r.metric, r.variant)] = None if r.value is None or np.isnan(r.value) else float(r.value)
    for layer, metric, variant, value in result.rows():
        rows[(layer, metric, variant)] = value
    glue, _ = _glue_rows(rows, result.mode, result.layer)
    rows.update({(lay, m, v): val for lay, m, v, val in glue})
    notes = []
    for mode, layer in sorted({(v.split("/", 1)[0], lay) for lay, _, v in rows}):
        _, note = _glue_rows(rows, mode, layer)
        if note:
            notes.append(note)
    units = completed_units(store, result.run, result.step)
    units[result.key] = {"params": result.params, "seconds": round(result.seconds, 2), **result.extra}
    store.write_family(run=result.run, step=result.step, tokens_seen=result.tokens_seen, family=FAMILY,
                       probe_hash=PROBE_HASH, params=json.dumps(units, sort_keys=True),
                       result=FamilyResult([(lay, m, v, val) for (lay, m, v), val in sorted(rows.items())], {}, notes),
                       seconds=float(sum(u.get("seconds", 0.0) for u in units.values())))


def write_summaries(store: Store) -> tuple[Path, Path]:
    """Rewrite `downstream.csv` and `downstream.json` beside the database from every stored downstream row."""
    df = store.metrics(family=FAMILY, probe_hash=PROBE_HASH)
    csv_path, json_path = store.root / "downstream.csv", store.root / "downstream.json"
    cols = ["run", "step", "tokens_seen", "layer", "metric", "variant", "value"]
    with writing(csv_path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(cols)
        for r in df[cols].itertuples(index=False):
            writer.writerow([r.run, r.step, "" if r.tokens_seen is None or r.tokens_seen != r.tokens_seen
                             else int(r.tokens_seen), r.layer, r.metric, r.variant,
                             "" if r.value is None or r.value != r.value else f"{r.value:.6g}"])
    units: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in df.itertuples(index=False):
        mode, suffix = r.variant.split("/", 1)
        task, name = r.metric.split("/", 1)
        tokens = None if r.tokens_seen is None or r.tokens_seen != r.tokens_seen else int(r.tokens_seen)
        unit = units.setdefault((r.run, int(r.step), mode, int(r.layer), task), {
            "run": r.run, "step": int(r.step), "tokens_seen": tokens, "mode": mode, "layer": int(r.layer),
            "task": task, "metrics": {}})
        value = None if r.value is None or r.value != r.value else float(r.value)
        entry = unit["metrics"].setdefault(name, {"mean": None, "std": None, "seeds": {}})
        if suffix in ("mean", "std"):
            entry[suffix] = value
        else:
            entry["seeds"][suffix.removeprefix("seed")] = value
    write_json(json_path, [units[k] for k in sorted(units)], indent=1, end="\n")
    return csv_path, json_path
