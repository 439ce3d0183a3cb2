"""A Hugging Face `TrainerCallback` that writes a snapshot series `dynamics.probe` reads, from any `Trainer` run
(`AutoModelForMaskedLM`, `AutoModelForCausalLM`, …). Three lines in a training script:

    from dynamics.callback import SnapshotCallback
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                      callbacks=[SnapshotCallback()])              # snapshots in args.output_dir (beside checkpoint-N/)
    trainer.train()                                                 # then: python -m dynamics.probe OUTPUT_DIR

It is `common.snapshot_writer.SnapshotWriter` driven by the Trainer's events, so the folder is the format
`taco.train` writes (run.json, tokenizer/, data/, log.jsonl, `snapshots/step-NNNNNNN/`), on the same default schedule
(step 0, powers of two below `every`, every `every` steps, the final step) or the `steps` given:

* train begin: run.json (the Trainer's settings, `config.max_steps`, how tokens seen are counted), the tokenizer
  (`processing_class`), validation blocks for the probe (`validation_blocks` when given, else up to `probe_blocks`
  equal-length `input_ids` rows of the eval dataset, else of the training dataset; run.json names which) and the
  step-0 snapshot. A Trainer resumed from
  `checkpoint-N` continues the series instead: log.jsonl rows after N are dropped and nothing is rewritten.
* step end: the snapshot when the step is due. Tokens seen: the Trainer's own count (`state.num_input_tokens_seen`,
  when `include_num_input_tokens_seen` is on), else steps × global batch × sequence length; run.json's
  `tokens_seen.source` says which.
* log: the Trainer's logged values as one log.jsonl row (`learning_rate` as `lr`; `eval_*` values as a
  `"split": "validation"` row without the prefix).
* train end: the final step's snapshot if it was not due (training stopped early, or by epochs), with run.json's
  `config.max_steps` set to that step so a following probe knows the series ended.

Only the world's process zero writes (torchrun, accelerate). `follow=True` starts `python -m dynamics.probe RUN
--follow` as a separate process once the step-0 snapshot exists (its own device and thread count; output in
`OUT/follow.log`): it measures snapshots as they appear, so no training step waits for it. At train end the
callback waits for it to measure the final snapshot and exit (`follow_wait=False`: leave it running; it ends by
itself after the final snapshot).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from common.run_dir import RunDir, read_json_object
from common.snapshot_writer import DEFAULT_EVERY, SnapshotWriter

TRAINER_TOKENS = "trainer"  # run.json `tokens_seen.source`: the Trainer's num_input_tokens_seen
COUNTED_TOKENS = "steps x batch x length"  # global_step × global batch × sequence length
ARGS_RECORDED = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay",
                 "warmup_steps", "lr_scheduler_type", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon",
                 "num_train_epochs", "seed", "bf16", "fp16")


def _rows(dataset: Any, limit: int) -> np.ndarray | None:
    """Up to `limit` `input_ids` rows of `dataset` that have the first row's length, as int32 `(n, length)`; None
    when the dataset has no indexable `input_ids` of length >= 3."""
    if dataset is None:
        return None
    try:
        n = min(len(dataset), limit)
        rows = [list(np.asarray(dataset[i]["input_ids"]).reshape(-1)) for i in range(n)]
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    if not rows or len(rows[0]) < 3:
        return None
    rows = [r for r in rows if len(r) == len(rows[0])]
    return np.asarray(rows, dtype=np.int32)


def _objective(model: Any) -> str:
    """"causal_lm" for a decoder (a `…ForCausalLM`/`…LMHeadModel`), else "mlm"."""
    name = type(model).__name__
    return "causal_lm" if name.endswith(("ForCausalLM", "LMHeadModel")) else "mlm"


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "taco-dynamics"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


class SnapshotCallback(TrainerCallback):
    """Writes a snapshot series of the Trainer's model (module docstring).

    output_dir: the run folder (default: the Trainer's `output_dir`). every, log_spaced, steps: the schedule
    (`common.snapshot_writer.schedule`). seq_len: tokens per sequence for the tokens-seen count when the Trainer
    keeps none (default: the length of the first training example). validation_blocks: the probe's blocks
    `(n, length)` (default: up to `probe_blocks` rows of the eval, else the training dataset); token_counts: training
    token counts `(vocab,)` for the probe's frequency bins (optional). config: settings of the recipe the Trainer's
    arguments do not show (e.g. the data: `{"repeat_share": 0.5}`), added to run.json's config, which is what seed
    groups compare (a key the Trainer's arguments already record is refused). follow: start `dynamics.probe
    --follow` on the run; follow_out (default RUN/dynamics), follow_device, follow_threads, follow_args (more probe
    flags, e.g. ["--probe-blocks", "16"]) and follow_wait configure it."""

    def __init__(self, output_dir: str | Path | None = None, *, every: int = DEFAULT_EVERY, log_spaced: bool = True,
                 steps: Iterable[int] | None = None, seq_len: int | None = None, probe_blocks: int = 256,
                 validation_blocks: np.ndarray | None = None, token_counts: np.ndarray | None = None,
                 follow: bool = False, follow_out: str | Path | None = None, follow_device: str = "cpu",
                 follow_threads: int = 1, follow_args: Sequence[str] = (), follow_wait: bool = True,
                 config: Mapping[str, Any] | None = None) -> None:
        if every < 1 or probe_blocks < 1 or follow_threads < 1:
            raise ValueError("SnapshotCallback: every, probe_blocks and follow_threads must be >= 1")
        clash = sorted(set(config or {}) & set(ARGS_RECORDED))
        if clash:
            raise ValueError(f"SnapshotCallback: config keys {clash} are the Trainer's own arguments; rename them")
        self.config = dict(config or {})
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.every, self.log_spaced = every, log_spaced
        self.steps = None if steps is None else sorted(set(int(s) for s in steps))
        self.seq_len, self.probe_blocks = seq_len, probe_blocks
        self.validation_blocks = None if validation_blocks is None else np.asarray(validation_blocks, dtype=np.int32)
        self.token_counts = None if token_counts is None else np.asarray(token_counts, dtype=np.int64)
        self.follow, self.follow_device, self.follow_threads = follow, follow_device, follow_threads
        self.follow_out = None if follow_out is None else Path(follow_out)
        self.follow_args, self.follow_wait = list(follow_args), follow_wait
        self.writer: SnapshotWriter | None = None
        self.follower: subprocess.Popen | None = None
        self._tokens_per_step: int | None = None
        self._written: set[int] = set()
        self._last_loss: float | None = None

    # ------------------------------------------------------------------------------------------- tokens seen
    def tokens_seen(self, args: TrainingArguments, state: TrainerState) -> int:
        """The Trainer's count when it keeps one, else global_step × global batch × sequence length."""
        if self._tokens_per_step is None:
            return int(state.num_input_tokens_seen)
        return int(state.global_step) * self._tokens_per_step

    def _count_tokens(self, args: TrainingArguments, train_dataloader: Any) -> dict[str, Any]:
        if str(args.include_num_input_tokens_seen) != "no":
            self._tokens_per_step = None
            return {"source": TRAINER_TOKENS, "mode": str(args.include_num_input_tokens_seen)}
        length = self.seq_len
        if length is None:
            first = _rows(getattr(train_dataloader, "dataset", None), 1)
            if first is None:
                raise ValueError("SnapshotCallback: cannot tell the sequence length from the training dataset "
                                 "(no input_ids); pass seq_len=… or TrainingArguments(include_num_input_tokens_seen"
                                 "=True)")
            length = first.shape[1]
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self._tokens_per_step = batch * int(length)
        return {"source": COUNTED_TOKENS, "tokens_per_step": self._tokens_per_step, "seq_len": int(length),
                "global_batch": batch}

    # ---------------------------------------------------------------------------------------------- events
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: Any = None, processing_class: Any = None, train_dataloader: Any = None,
                       eval_dataloader: Any = None, **kwargs: Any) -> None:
        run_dir = self.output_dir or Path(args.output_dir)
        self.writer = SnapshotWriter(run_dir, max_steps=state.max_steps, every=self.every, log_spaced=self.log_spaced,
                                     steps=self.steps, main=state.is_world_process_zero)
        self._written = {s.step for s in RunDir(run_dir).snapshots() if s.step <= state.global_step}
        tokens = self._count_tokens(args, train_dataloader)
        if not state.is_world_process_zero:
            return
        step = int(state.global_step)
        if step > 0 and RunDir(run_dir).is_run():  # resumed from checkpoint-N: continue the series
            self.writer.resume(step)
        else:
            self._begin(args, state, model, processing_class, train_dataloader, eval_dataloader, tokens)
            self._snapshot(model, args, state)
        if self.follow and self.follower is None:
            self.follower = self._start_follower(run_dir)

    def _begin(self, args: TrainingArguments, state: TrainerState, model: Any, tokenizer: Any,
               train_dataloader: Any, eval_dataloader: Any, tokens: dict[str, Any]) -> None:
        assert self.writer is not None
        blocks, source = self.validation_blocks, "given"
        if blocks is None:
            blocks, source = _rows(getattr(eval_dataloader, "dataset", None), self.probe_blocks), "eval_dataset"
        if blocks is None:
            blocks, source = _rows(getattr(train_dataloader, "dataset", None), self.probe_blocks), "train_dataset"
        if tokenizer is None:
            raise ValueError("SnapshotCallback: the Trainer has no tokenizer; pass processing_class=tokenizer to "
                             "Trainer (the probe reads the run's tokenizer/)")
        config = {k: getattr(getattr(args, k), "value", getattr(args, k)) for k in ARGS_RECORDED if hasattr(args, k)}
        config.update(self.config)
        record = {
            "config": config,  # the Trainer's names: `lr` and `warmup_fraction` would claim taco.train's schedule
            "objective": _objective(model), "preset": "trainer", "seed": args.seed,
            "model_config": model.config.to_dict() if hasattr(model, "config") else {},
            "source": "transformers.Trainer", "tokens_seen": tokens,
            "validation_blocks_source": source if blocks is not None else None,
            "world_size": args.world_size, "global_batch_tokens": tokens.get("tokens_per_step"),
            "versions": _versions(), "device": str(args.device),
        }
        self.writer.begin(tokenizer=tokenizer, run_info=record, validation_blocks=blocks, token_counts=self.token_counts,
                          block_size=None if blocks is None else blocks.shape[1],
                          replace=RunDir(self.writer.path).is_run())
        self._written = set()

    def _snapshot(self, model: Any, args: TrainingArguments, state: TrainerState) -> None:
        assert self.writer is not None
        step = int(state.global_step)
        tokens = self.tokens_seen(args, state)
        self.writer.snapshot(model, step, tokens, {"tokens_seen": tokens, "train_loss": self._last_loss,
                                                   "wall_time": round(self.writer.elapsed(), 3)})
        self._written.add(step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, **kwargs: Any) -> None:
        if self.writer is not None and self.writer.due(state.global_step) and state.global_step not in self._written:
            self._snapshot(model, args, state)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.writer is None or not logs:
            return
        evaluation = {k[len("eval_"):]: v for k, v in logs.items() if k.startswith("eval_")}
        if evaluation:
            row = {"split": "validation", **evaluation}
        else:
            row = {("lr" if k == "learning_rate" else k): v for k, v in logs.items()}
            if isinstance(row.get("loss"), (int, float)):
                self._last_loss = float(row["loss"])
        self.writer.log(state.global_step, self.tokens_seen(args, state),
                        {**row, "elapsed_s": round(self.writer.elapsed(), 3)})

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: Any = None, **kwargs: Any) -> None:
        writer = self.writer
        if writer is None:
            return
        step = int(state.global_step)
        if state.is_world_process_zero:
            if step != writer.max_steps:  # stopped early: the series ends here, and run.json says so
                run = read_json_object(writer.run.run_json)
                run["config"] = {**run.get("config", {}), "max_steps": step}
                writer.run.write_run_json(run)
            if step not in self._written:
                self._snapshot(model, args, state)
        if self.follower is not None and self.follow_wait:
            self.follower.wait()

    # ----------------------------------------------------------------------------------------------- follow
    def follow_command(self, run_dir: Path) -> list[str]:
        """The follower's command line: `python -m dynamics.probe RUN --follow --out OUT --device D …`."""
        out = self.follow_out or run_dir / "dynamics"
        return [sys.executable, "-m", "dynamics.probe", str(run_dir), "--follow", "--out", str(out),
                "--device", self.follow_device, "--no-progress", *self.follow_args]

    def _start_follower(self, run_dir: Path) -> subprocess.Popen:
        out = self.follow_out or run_dir / "dynamics"
        out.mkdir(parents=True, exist_ok=True)
        threads = str(self.follow_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        log = open(out / "follow.log", "ab")  # noqa: SIM115 (the child holds it; closed when this process ends)
        return subprocess.Popen(self.follow_command(run_dir), env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
