"""`python -m taco.train`: pre-train a BERT encoder with MLM or TACO and write a snapshot series.

Run directory (docs/design.md; its format is `common.run_dir`'s): run.json, tokenizer/, log.jsonl,
snapshots/step-NNNNNNN/, state/, data/. Multi-process: `torchrun --nproc_per_node N -m taco.train ...`
(DistributedDataParallel; rank 0 writes).

`train` reads as setup (`check_output_dir`, `prepare_inputs`, `model_config_for`, `Training.__init__`), start
(`Training.resume` or `Training.write_new_run`, then `Training.start_loop`), loop (`Training.run`, one
`Training.step` per optimizer step) and snapshot (`Training.snapshot`, written by `taco.snapshots`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from common.distributed import Place, barrier, init_distributed, shutdown_distributed
from common.errors import UsageError
from common.run_dir import RUN_JSON, RunDirError, read_json_object, recorded, run_record, train_row
from common.snapshot_writer import SnapshotWriter
from taco.cache import check_directory
from taco.config import TrainConfig, parse_args
from taco.errors import TacoError
from taco.objectives import PretrainingModel, TCConfig
from taco.snapshots import evaluate, record_snapshot
from taco.state import config_digest, load_state, save_state

SEED_STRIDE = 1_000_003


def check_output_dir(out: Path, cfg: TrainConfig) -> str:
    """Decide what to do with `out`: 'fresh', 'resume' or 'overwrite'. Raises before anything is touched."""
    has_run = (out / RUN_JSON).is_file()
    if out.exists() and not out.is_dir():
        raise TacoError(f"--output-dir {out} is a file; choose a directory")
    # a folder under a file, or where nothing can be written (e.g. /proc), fails now, not after data preparation
    check_directory(out, f"--output-dir {out}", "choose a writable directory", create=False)
    non_empty = out.is_dir() and any(out.iterdir())
    if cfg.overwrite:
        if non_empty and not has_run:
            raise TacoError(f"--output-dir {out} holds files that are not a taco run; refusing to delete them "
                            "with --overwrite; choose another --output-dir")
        return "overwrite" if non_empty else "fresh"
    if cfg.resume:
        if not has_run:
            raise TacoError(f"--resume: {out} holds no run (no run.json); drop --resume to start one")
        saved = read_run_json(out).get("config")
        if not isinstance(saved, dict):
            raise TacoError(f"--resume: {out}/run.json holds no config; it is not a taco run, use another "
                            "--output-dir")
        # a run's identity leaves out where it and its inputs live (a run moved, or resumed from another folder)
        before, now = TrainConfig.identity_of(saved), cfg.identity()
        diff = [k for k in dict.fromkeys([*now, *before]) if before.get(k) != now.get(k)]
        if diff:
            raise TacoError(f"--resume: {out} was trained with different {', '.join(diff)}; "
                            "pass the same options or use another --output-dir")
        return "resume"
    if has_run:
        run = read_run_json(out)
        raise TacoError(f"--output-dir {out} already holds a run ({run.get('objective')}, {run.get('preset')}); "
                        "pass --resume to continue it, --overwrite to replace it, or another --output-dir")
    if non_empty:
        raise TacoError(f"--output-dir {out} is not empty; choose an empty or new directory")
    return "fresh"


def check_corpus(corpus: Any, cfg: TrainConfig) -> None:
    """Both splits hold text (a corpus of a few words, or one whose split leaves a side empty, fails here with
    the fix instead of deep inside tokenisation). Nothing has been written yet."""
    for split in ("train", "validation"):
        docs = getattr(corpus, split)
        if not any(d.strip() for d in docs):
            raise TacoError(f"--corpus {cfg.corpus}: the {split} split has no text ({len(corpus.train)} train and "
                            f"{len(corpus.validation)} validation documents); give more documents (the "
                            "validation split is drawn from them by document), or a directory with train.jsonl "
                            "and validation.jsonl")


def check_blocks(data: Any, cfg: TrainConfig, world: int) -> None:
    """Enough packed blocks for one batch on every process and one validation block, before a run directory
    exists (so a corpus that is too small leaves no half-made run behind)."""
    need = cfg.batch_size * world
    if len(data.train) < need:
        raise TacoError(f"--corpus {cfg.corpus}: {len(data.train)} training block(s) of {cfg.block_size} tokens, "
                        f"but one batch needs {need}; use a larger corpus, or lower --batch-size or --block-size")
    if len(data.validation) < 1:
        raise TacoError(f"--corpus {cfg.corpus}: the validation split gives no block of {cfg.block_size} tokens; "
                        "use a larger corpus or a lower --block-size")


def read_run_json(out: Path) -> dict[str, Any]:
    """`out/run.json` as a mapping (through `common.run_dir`); `TacoError` when it is not a valid JSON object
    (truncated, edited, not ours)."""
    try:
        return read_json_object(out / RUN_JSON)
    except RunDirError:
        raise TacoError(f"{out}/run.json is not valid JSON (or not a JSON object); the run cannot be resumed or "
                        "replaced safely: restore it, or use another --output-dir") from None


def package_versions() -> dict[str, str]:
    """The versions of Python and of the packages that shape a run's numbers, for run.json."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "tokenizers", "datasets", "numpy", "taco-dynamics"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on the weight matrices only (not on biases, LayerNorm or other 1-D parameters), as
    BERT is trained; frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of one micro-batch: a function of (seed, step, micro-batch, rank) only, so that a resumed run draws
    what the uninterrupted one would have."""
    return (seed * SEED_STRIDE + step * 7919 + micro * 104729 + rank * 15485863) % (2**63 - 1)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What a run trains on: the corpus, the tokenizer (and its hash) and the packed blocks (`taco.data.PackedData`)."""

    corpus: Any
    tokenizer: Any
    tok_hash: str
    data: Any


def prepare_inputs(cfg: TrainConfig, cache: Path, place: Place) -> Inputs:
    """The corpus, tokenizer and packed blocks, checked before anything is written. Rank 0 builds them (filling the
    caches) while the others wait; then the others read them from the caches."""
    from taco.corpus import builtin_cache_dir, load_corpus
    from taco.data import packed_data
    from taco.tokenizer import cached_tokenizer, load_tokenizer, tokenizer_hash

    inputs = None
    for turn in (0, 1):
        if (turn == 0) == place.main:
            corpus = load_corpus(cfg.corpus, cache_dir=builtin_cache_dir(cache))
            check_corpus(corpus, cfg)
            if cfg.tokenizer:
                tok_dir = Path(cfg.tokenizer)
            else:
                tok_dir = cached_tokenizer(corpus.train, corpus.fingerprint, cfg.vocab_size, cache)
            tokenizer = load_tokenizer(tok_dir)
            tok_hash = tokenizer_hash(tokenizer)
            data = packed_data(corpus.train, corpus.validation, tokenizer, corpus_fingerprint=corpus.fingerprint,
                               tok_hash=tok_hash, block_size=cfg.block_size, cache_dir=cache,
                               progress=cfg.progress and place.main)
            inputs = Inputs(corpus, tokenizer, tok_hash, data)
        barrier(place)
    assert inputs is not None
    check_blocks(inputs.data, cfg, place.world)
    return inputs


def model_config_for(cfg: TrainConfig, tokenizer: Any) -> Any:
    """The BERT config of the preset (with `--model-overrides`) for this tokenizer; `TacoError` when a block does
    not fit its position embeddings."""
    from taco.presets import build_config

    model_config = build_config(cfg.preset, len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                overrides=cfg.model_overrides_dict())
    if cfg.block_size > model_config.max_position_embeddings:
        raise TacoError(f"--block-size {cfg.block_size} exceeds max_position_embeddings "
                        f"{model_config.max_position_embeddings}; lower --block-size")
    return model_config


def check_resumed_inputs(out: Path, cfg: TrainConfig, inputs: Inputs) -> dict[str, Any]:
    """The run.json of the run to resume, after checking that it was trained on this corpus and tokenizer."""
    saved = read_run_json(out)
    # the corpus is checked by what it holds, as its path may be spelled differently now (`identity_of`)
    if recorded(saved, "corpus", "fingerprint") not in (None, inputs.corpus.fingerprint):
        raise TacoError(f"--resume: --corpus {cfg.corpus} holds other text than the corpus {out} was trained on "
                        "(its fingerprint differs); pass that corpus, or start a new run in another --output-dir")
    if recorded(saved, "tokenizer", "hash") != inputs.tok_hash:
        raise TacoError(f"--resume: the tokenizer differs from the one {out} was trained with; "
                        f"pass --tokenizer {out / 'tokenizer'}")
    return saved


class Training:
    """One run's model, optimizer and schedule (built in `__init__`, in the order that fixes the initial weights),
    its start (`resume` or `write_new_run`, then `start_loop`), the loop (`run`, one `step` per optimizer step) and
    its snapshots (`snapshot`)."""

    def __init__(self, cfg: TrainConfig, place: Place, device: torch.device, out: Path, inputs: Inputs,
                 model_config: Any) -> None:
        from transformers import BertForMaskedLM, get_linear_schedule_with_warmup

        from taco.embeddings import set_up_embeddings

        self.cfg, self.place, self.device, self.inputs, self.model_config = cfg, place, device, inputs, model_config
        # the one writer of the format and its schedule (rank 0 writes; on the others it does nothing)
        self.writer = SnapshotWriter(out, max_steps=cfg.max_steps, every=cfg.snapshot_every,
                                     log_spaced=cfg.snapshot_log_spaced, main=place.main)
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * place.world * cfg.block_size
        torch.manual_seed(cfg.seed)
        self.model = BertForMaskedLM(model_config)
        set_up_embeddings(self.model, init_from=cfg.init_embeddings, freeze=cfg.freeze_embeddings,
                          tok_hash=inputs.tok_hash)
        self.model.to(device)
        self.digest = config_digest(cfg.identity(), ())
        self.wrapper = PretrainingModel(self.model, cfg.objective, TCConfig(
            cfg.tc_window, cfg.tc_negatives, cfg.tc_temperature, cfg.tc_weight, cfg.tc_anchors,
            cfg.tc_global_negatives, negative_sharing=cfg.tc_negative_sharing, method=cfg.tc_kernel))
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, cfg.warmup(), cfg.max_steps)

    def resume(self, saved: dict[str, Any]) -> int:
        """Load state/ (written under this configuration, or under the digest of the code before: `saved` is the
        run.json) and return its step; rank 0 drops the log rows after it."""
        out = self.writer.path
        state = load_state(out)
        if state is None:
            raise TacoError(f"--resume: {out}/state is missing (killed before its first save); "
                            "start again with --overwrite")
        legacy = config_digest(self.cfg.legacy_digest_fields(saved.get("config") or {}), ())  # states saved before
        if state.get("config_digest") not in (self.digest, legacy):
            raise TacoError(f"--resume: {out}/state was written under a different configuration; use --overwrite")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
        self.writer.resume(start_step)
        return start_step

    def write_new_run(self, overwrite: bool) -> None:
        """Rank 0: empty the folder (`overwrite`: `check_output_dir` found a run there), then write the tokenizer,
        the probe's data, run.json (last but for the empty log: its presence makes the folder a run)."""
        cfg, inputs, out = self.cfg, self.inputs, self.writer.path
        if overwrite:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.writer.begin(tokenizer=inputs.tokenizer, run_info=run_record(
            config=dataclasses.asdict(cfg), objective=cfg.objective, preset=cfg.preset, seed=cfg.seed,
            block_size=cfg.block_size, model_config=self.model_config.to_dict(),
            corpus_source=inputs.corpus.source, corpus_fingerprint=inputs.corpus.fingerprint,
            corpus_description=inputs.corpus.description, train_blocks=len(inputs.data.train),
            validation_blocks=len(inputs.data.validation), tokenizer_hash=inputs.tok_hash,
            vocab_size=len(inputs.tokenizer), world_size=self.place.world, global_batch_tokens=self.tokens_per_step,
            versions=package_versions(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), device=str(self.device)),
            validation_blocks=np.asarray(inputs.data.validation[: max(cfg.eval_blocks, 256)]),
            token_counts=inputs.data.token_counts)

    def start_loop(self) -> None:
        """What the loop needs besides the model: DDP (several processes), the masking collator, the block sampler,
        the snapshot schedule, autocast and the TC sampling generator."""
        from transformers import DataCollatorForLanguageModeling

        from taco.data import BlockSampler

        cfg, place, tokenizer = self.cfg, self.place, self.inputs.tokenizer
        self.ddp_model: torch.nn.Module = self.wrapper
        if place.distributed:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.wrapper, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability, seed=cfg.seed)
        self.collator.create_rng("pt")  # the collator's own generator, reseeded per step
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.sampler = BlockSampler(len(self.inputs.data.train), cfg.batch_size, cfg.seed, place.rank, place.world)
        self.schedule = self.writer.steps
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                         else nullcontext())
        self.gen = torch.Generator()

    def run(self, start_step: int, elapsed_before: float) -> None:
        """Steps `start_step + 1` … `max_steps`, logging every `log_every` steps and at snapshots (a fresh run first
        takes the step-0 snapshot). `elapsed_before`: the wall time the run had logged before a resume."""
        cfg, place = self.cfg, self.place
        t0 = time.perf_counter()
        if start_step == 0:
            self.snapshot(0, None, 0.0)
        bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (cfg.progress and place.main),
                   desc=f"{cfg.objective}-{cfg.preset}", unit="step", dynamic_ncols=True)
        self.model.train()
        last_tick = time.perf_counter()
        for step in range(start_step + 1, cfg.max_steps + 1):
            sums, grad_norm, lr = self.step(step)
            now = time.perf_counter()
            tok_s = self.tokens_per_step / max(now - last_tick, 1e-9)
            last_tick = now
            bar.update(1)
            if step % cfg.log_every == 0 or step in self.schedule:
                stats = _mean_over_ranks(sums, place, self.device)
                if place.main:
                    self.writer.log(step, step * self.tokens_per_step, train_row(
                        step=step, tokens_seen=step * self.tokens_per_step, lr=lr, loss=stats["loss"],
                        mlm_loss=stats["mlm_loss"], tc_loss=None if cfg.objective == "mlm" else stats["tc_loss"],
                        mlm_accuracy=stats["mlm_accuracy"], grad_norm=float(grad_norm), tokens_per_s=tok_s,
                        elapsed_s=elapsed_before + now - t0))
                bar.set_postfix(loss=f"{stats['loss']:.3f}", tok_s=f"{tok_s:,.0f}")
            if step in self.schedule:
                self.snapshot(step, sums["loss"], elapsed_before + time.perf_counter() - t0)
        bar.close()

    def step(self, step: int) -> tuple[dict[str, float], torch.Tensor, float]:
        """One optimizer step over `grad_accum` micro-batches, each seeded from (seed, step, micro, rank) so that a
        resumed run repeats the uninterrupted one: this process's mean losses, the gradient norm before clipping and
        the learning rate the step used."""
        cfg, data, device = self.cfg, self.inputs.data, self.device
        sums = {"loss": 0.0, "mlm_loss": 0.0, "tc_loss": 0.0, "mlm_accuracy": 0.0}
        for micro in range(cfg.grad_accum):
            s = step_seed(cfg.seed, step, micro, self.place.rank)
            torch.manual_seed(s)  # dropout
            self.gen.manual_seed(s + 1)  # TC sampling
            self.collator.generator.manual_seed(s + 2)  # masking
            ids = torch.tensor(data.train[self.sampler.indices((step - 1) * cfg.grad_accum + micro)], dtype=torch.long)
            special = torch.isin(ids, self.special_ids)
            inputs, labels = self.collator.torch_mask_tokens(ids, special_tokens_mask=special)
            last = micro == cfg.grad_accum - 1
            sync = nullcontext() if (not self.place.distributed or last) else self.ddp_model.no_sync()
            with sync:
                with self.autocast:
                    result = self.ddp_model(inputs.to(device), labels.to(device), (~special).to(device), self.gen)
                (result["loss"] / cfg.grad_accum).backward()
            for k in sums:
                if k in result:
                    sums[k] += float(result[k].detach()) / cfg.grad_accum
        if not math.isfinite(sums["loss"]):
            raise TacoError(f"loss became {sums['loss']} at step {step}; lower --lr or raise --warmup-fraction")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums, grad_norm, lr

    def snapshot(self, step: int, train_loss: float | None, elapsed: float) -> None:
        """Rank 0 measures the validation losses and writes the snapshot and the resumable state; every process
        waits for it."""
        if self.place.main:
            cfg = self.cfg
            val = evaluate(self.model, self.inputs.data.validation, cfg, self.collator, self.special_ids, self.device)
            record_snapshot(self.writer, step, self.model, val, tokens_seen=step * self.tokens_per_step,
                            train_loss=train_loss, elapsed=elapsed, objective=cfg.objective, tc_weight=cfg.tc_weight)
            save_state(self.writer.path, step, self.model, self.optimizer, self.scheduler, self.digest)
        barrier(self.place)


def train(cfg: TrainConfig) -> Path:
    """Train according to `cfg` and return the run directory. Raises `TacoError`/`CorpusError` on bad input.

    Setup (the output folder's mode, the inputs, the model), start (resume or a new run directory), loop."""
    from transformers.utils import logging as hf_logging

    from taco.cache import data_cache_dir

    hf_logging.disable_progress_bar()  # save_pretrained's per-shard bar would interleave with ours
    cfg = cfg.resolved()
    cfg.validate()
    cache = data_cache_dir(cfg.data_cache)  # "" means the cache root (taco.cache); a file is a TacoError
    place, device = init_distributed(cfg.resolved_device())
    out = Path(cfg.output_dir)
    mode = check_output_dir(out, cfg)
    inputs = prepare_inputs(cfg, cache, place)
    model_config = model_config_for(cfg, inputs.tokenizer)
    saved = check_resumed_inputs(out, cfg, inputs) if mode == "resume" else {}
    training = Training(cfg, place, device, out, inputs, model_config)
    start_step = 0
    if mode == "resume":
        start_step = training.resume(saved)
    elif place.main:
        training.write_new_run(overwrite=mode == "overwrite")
    barrier(place)
    training.start_loop()
    training.run(start_step, training.writer.run.elapsed_at(start_step) if mode == "resume" else 0.0)
    if place.distributed:
        shutdown_distributed()
    return out


def _mean_over_ranks(values: dict[str, float], place: Place, device: torch.device) -> dict[str, float]:
    """The mean of each value over the processes (all-reduced; the values themselves for one process)."""
    if not place.distributed:
        return dict(values)
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / place.world for k, v in zip(values, t.tolist(), strict=True)}


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 when the run is written, 2 on bad input (one `error:` line), 130 on Ctrl-C."""
    from taco.corpus import CorpusError

    try:
        cfg = parse_args(argv)
        out = train(cfg)
    except (UsageError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
