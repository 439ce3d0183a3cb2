"""Synthetic run directories and a results store of any size, written through `dynamics.results.store`'s write API (the
same calls `dynamics.probe` makes), with known values and no model: for the app's unit tests and for
`benchmarks/bench_app.py`.

Values are smooth functions of (run, step, layer, metric) — `value_of` — so tests can predict what a page shows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynamics.metrics import registry
from dynamics.results import store as dstore

PROBE_HASH = "5e" * 32
BINS = ("frequent", "medium", "rare")
TOKENS_PER_STEP = 4096


@dataclass(frozen=True)
class Spec:
    """One synthetic metric: its family, the layers it is stored at and its variants."""

    metric: str
    family: str
    layers: tuple[int, ...]
    variants: tuple[str, ...]


def specs(n_metrics: int, n_layers: int) -> list[Spec]:
    """`n_metrics` metrics: the app's known ones in order, then `extra_k` geometry metrics; layers and variants as
    the probe stores them (masked metrics at the last layer, drift at layer 0, context from layer 1, bins where
    the probe has them, 16 distances for `ctx_cos_by_distance`)."""
    known = registry.load()
    names = list(known)[:n_metrics] + [f"extra_{k}" for k in range(max(0, n_metrics - len(known)))]
    last = n_layers - 1
    out = []
    for m in names:
        fam = known[m].family if m in known else "geometry"
        if m.startswith("masked_"):
            layers: tuple[int, ...] = (last,)
        elif fam == "drift":
            layers = (0,)
        elif fam == "context" or m in ("norm_g", "cka_prev_layer"):
            layers = tuple(range(1, n_layers))
        elif m == "norm_e":
            layers = (0,)
        else:
            layers = tuple(range(n_layers))
        if m == "ctx_cos_by_distance":
            variants: tuple[str, ...] = tuple(f"d{d:03d}" for d in range(1, 17))
        elif m in ("anchor_sim_word", "anchor_sim_emb", "masked_anchor_sim", "masked_hidden_anchor_sim",
                   "masked_accuracy", "masked_mrr", "anchor_drift_probe"):
            variants = ("all", *BINS)
        else:
            variants = ("all",)
        out.append(Spec(m, fam, layers, variants))
    return out


def value_of(run_index: int, step: int, layer: int, metric_index: int, variant_index: int = 0) -> float:
    """The stored value: rises smoothly with log(step), differs by run, layer, metric and variant."""
    return round(0.2 + 0.05 * metric_index % 0.5 + 0.3 * math.tanh(math.log1p(step) / 5) * (1 + 0.2 * run_index)
                 + 0.02 * layer + 0.01 * variant_index, 10)


def write_run_dir(path: Path, objective: str, steps: Sequence[int], log_every: int = 10) -> Path:
    """A run directory in `taco.train`'s format without weights: run.json, log.jsonl (train rows every
    `log_every` steps, validation rows at the snapshot steps) and empty `snapshots/step-NNNNNNN/` folders."""
    path.mkdir(parents=True, exist_ok=True)
    last = max(steps)
    (path / "run.json").write_text(json.dumps({
        "config": {"objective": objective, "preset": "mini", "seed": 0}, "objective": objective, "preset": "mini",
        "seed": 0, "block_size": 128, "corpus": {"source": "synthetic", "fingerprint": "0" * 64},
        "tokenizer": {"hash": "1" * 64, "vocab_size": 8192}, "world_size": 1, "started": "2026-01-01T00:00:00+0000"}))
    rows = []
    taco = objective == "taco"
    for step in sorted(set(range(log_every, last + 1, log_every)) | set(steps)):
        t = math.log1p(step)
        row = {"step": step, "tokens_seen": step * TOKENS_PER_STEP, "lr": 5e-4 * min(1.0, step / (0.06 * last + 1))
               * (1 - step / (last + 1)), "mlm_loss": 9.0 / (1 + 0.3 * t), "mlm_accuracy": 0.5 * math.tanh(t / 6),
               "grad_norm": 1.0 + 1 / (1 + t), "tokens_per_s": 30000.0, "elapsed_s": step * 0.1}
        if taco:
            row["tc_loss"] = 4.0 / (1 + 0.2 * t)
        row["loss"] = row["mlm_loss"] + row.get("tc_loss", 0.0)
        if step > 0:
            rows.append(row)
        if step in steps:
            val = {k: row[k] for k in ("step", "tokens_seen", "mlm_loss", "mlm_accuracy")}
            val.update({"split": "validation", "tc_loss": 4.2 / (1 + 0.2 * t), "elapsed_s": row["elapsed_s"]})
            val["loss"] = val["mlm_loss"] + (val["tc_loss"] if taco else 0.0)
            rows.append(val)
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for step in steps:
        (path / "snapshots" / f"step-{step:07d}").mkdir(parents=True, exist_ok=True)
    return path


def write_store(
    root: Path,
    runs: Mapping[str, str] | Sequence[tuple[str, str]] = (("mlm-syn", "mlm"), ("taco-syn", "taco")),
    steps: Sequence[int] = (0, 1, 2, 4, 8, 16),
    n_layers: int = 3,
    n_metrics: int = 40,
    projection_tokens: int = 60,
    projection_every: int = 1,
    skip: Callable[[str, int, str], bool] | None = None,
    run_dirs: bool = True,
    seeds: Mapping[str, int] | None = None,
) -> Path:
    """Write run directories `root/NAME/` and their store `root/dynamics/results.sqlite`; return the database.

    `runs`: name → objective (a mapping or pairs). `skip(run, step, metric)` leaves a metric out at a snapshot.
    `seeds`: name → seed, to record each run's config (equal but for the seed within an objective: seed groups).
    Arrays: layer × layer CKA at every snapshot, projections (h, and g as `xy_g`) every `projection_every`-th
    snapshot, step × step CKA per run.
    """
    pairs = list(runs.items()) if isinstance(runs, Mapping) else list(runs)
    steps = sorted(steps)
    table = specs(n_metrics, n_layers)
    index = {s.metric: k for k, s in enumerate(table)}
    rng = np.random.default_rng(0)
    with dstore.open(root / "dynamics") as s:
        s.write_definitions(registry.load().values())  # as the probe does: the app labels curves from these
        s.add_probe_set(hash=PROBE_HASH, source="synthetic", n_blocks=64, block_size=128, n_tokens=8000,
                        n_masked=1200, n_word_types=40, freq_source="training counts", tokenizer_hash="1" * 64,
                        file="arrays/probe.npz", notes=[])
        for r_index, (name, objective) in enumerate(pairs):
            run_dir = write_run_dir(root / name, objective, steps) if run_dirs else root / name
            meta: dict = {"objective": objective, "preset": "mini"}
            if seeds is not None:  # run.json's config, as taco.train writes it: runs differ by seed only
                meta["config"] = {"objective": objective, "preset": "mini", "lr": 5e-4, "seed": seeds[name],
                                  "output_dir": str(run_dir)}
            s.upsert_run(name, run_dir, "run", objective, meta)
            s.upsert_snapshots((name, st, st * TOKENS_PER_STEP, str(run_dir / "snapshots" / f"step-{st:07d}"),
                                {"step": st}) for st in steps)
            for k, step in enumerate(steps):
                for family in ("anchors", "drift", "context", "geometry"):
                    rows = [(layer, sp.metric, v, value_of(r_index, step, layer, index[sp.metric], vi))
                            for sp in table if sp.family == family and not (skip and skip(name, step, sp.metric))
                            for layer in sp.layers for vi, v in enumerate(sp.variants)]
                    arrays = {}
                    if family == "geometry":
                        arrays["cka_layers"] = {"debiased": _cka(n_layers, step)}
                        if projection_tokens and k % projection_every == 0:
                            arrays["projection"] = _projection(rng, n_layers, projection_tokens, step)
                    s.write_family(run=name, step=step, tokens_seen=step * TOKENS_PER_STEP, family=family,
                                   probe_hash=PROBE_HASH, params="synthetic", result=dstore.FamilyResult(rows, arrays, []))
            cka_rows = {st: (st * TOKENS_PER_STEP, [(layer, sp.metric, "all", value_of(r_index, st, layer, index[sp.metric]))
                                                    for sp in table if sp.family == "cka_steps" for layer in sp.layers])
                        for st in steps}
            n = len(steps)
            mat = np.array([[[1 - 0.01 * abs(i - j) * (1 + layer) for j in range(n)] for i in range(n)]
                            for layer in range(n_layers)])
            s.write_run_family(run=name, family="cka_steps", probe_hash=PROBE_HASH, params="synthetic",
                               step_rows=cka_rows, arrays={"cka_steps": {
                                   "steps": np.asarray(steps, dtype=np.int64),
                                   "tokens_seen": np.asarray(steps, dtype=np.int64) * TOKENS_PER_STEP,
                                   "debiased": mat, "biased": mat}},
                               notes=["synthetic: step × step CKA from a formula"])
    return root / "dynamics" / dstore.DB_NAME


# Downstream tasks written by `write_downstream`: task → its GLUE metrics (the score is their mean, as
# `experiments.scoring.score` forms it).
DOWNSTREAM_TASKS: dict[str, tuple[str, ...]] = {"sst2": ("accuracy",), "mrpc": ("accuracy", "f1"),
                                                "rotten_tomatoes": ("accuracy",)}
SEEDS = (1, 2, 3)


def downstream_value(run_index: int, step: int, task: str, name: str, seed: int | None = None,
                     layer: int | None = None) -> float:
    """A downstream metric in percent: rises with log(step), differs by run, task and metric; a seed adds
    (seed − 2) · 0.5 (so seeds 1, 2, 3 have mean offset 0 and sample std 0.5); the linear probe (`layer`) scores
    5 − layer points below fine-tuning."""
    names = ("accuracy", "f1")
    base = (50 + 10 * math.tanh(math.log1p(step) / 3) * (1 + 0.2 * run_index) + 3 * list(DOWNSTREAM_TASKS).index(task)
            + names.index(name))
    if seed is not None:
        base += (seed - 2) * 0.5
    if layer is not None:
        base -= 5 - layer
    return round(base, 6)


def _with_score(metrics: dict[str, float]) -> dict[str, float]:
    return {**metrics, "score": float(np.mean(list(metrics.values())))}


def write_downstream(db: Path, runs: Sequence[str] | None = None, *, linear_layers: Sequence[int] = (2,),
                     finetune_steps: Callable[[str, list[int]], Sequence[int]] = lambda run, steps: steps[-2:],
                     tasks: Sequence[str] = tuple(DOWNSTREAM_TASKS)) -> None:
    """Downstream rows for the store's runs (all, or `runs`) at their known snapshots, through
    `experiments.results.store_result` (what `experiments.evaluate` calls): the linear probe at every snapshot
    and each of `linear_layers`, fine-tuning with seeds 1–3 at `finetune_steps(run, steps)`; values from
    `downstream_value`. The GLUE average then covers SST-2 and MRPC (with a note saying so)."""
    from experiments.results import TaskResult, store_result

    with dstore.open(db) as s:
        snaps = s.snapshots()
        names = list(dict.fromkeys(s.runs()["name"])) if runs is None else list(runs)
        for r_index, run in enumerate(names):
            rows = snaps[snaps["run"] == run].sort_values("step")
            tokens = {int(st): None if tok is None or tok != tok else int(tok)
                      for st, tok in zip(rows["step"], rows["tokens_seen"], strict=True)}
            steps = sorted(tokens)
            for step in steps:
                for task in tasks:
                    for layer in linear_layers:
                        per_run = {"mean": _with_score({n: downstream_value(r_index, step, task, n, layer=layer)
                                                        for n in DOWNSTREAM_TASKS[task]})}
                        store_result(s, TaskResult(run, step, tokens[step], task, "linear", layer, per_run,
                                                   "synthetic", 0.1))
                    if step in finetune_steps(run, steps):
                        per_run = {f"seed{k}": _with_score({n: downstream_value(r_index, step, task, n, seed=k)
                                                            for n in DOWNSTREAM_TASKS[task]}) for k in SEEDS}
                        store_result(s, TaskResult(run, step, tokens[step], task, "finetune", -1, per_run,
                                                   "synthetic", 1.0))


def _cka(n_layers: int, step: int) -> np.ndarray:
    a = np.arange(n_layers)
    return 1 - 0.05 * np.abs(a[:, None] - a[None, :]) * (1 + 1 / (1 + step))


def _projection(rng: np.random.Generator, n_layers: int, n: int, step: int) -> dict[str, np.ndarray]:
    spread = 1 + math.log1p(step)
    xy = rng.normal(size=(n_layers, n, 2)).astype(np.float32) * spread
    return {"xy": xy, "explained": np.tile([0.3, 0.1], (n_layers, 1)), "xy_g": xy[1:] * 0.5,
            "explained_g": np.tile([0.4, 0.2], (n_layers - 1, 1)),
            # as the probe writes them: e's projection is layer 0's, its explained ratios a single (2,) pair
            "xy_e": xy[0], "explained_e": np.array([0.3, 0.1]), "tokens": np.array([f"tok{i}" for i in range(n)]),
            "token_ids": np.arange(n), "seq_ids": np.arange(n) // 10, "freq_bin": (np.arange(n) % 3).astype(np.int8),
            "bin_names": np.array(BINS), "index": np.arange(n)}
