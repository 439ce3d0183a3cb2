"""`python -m taco.train`: pre-train a BERT encoder with MLM or TACO and write a snapshot series.

Run directory (DESIGN.md): run.json, tokenizer/, log.jsonl, snapshots/step-NNNNNNN/, state/, data/.
Multi-process: `torchrun --nproc_per_node N -m taco.train ...` (DistributedDataParallel; rank 0 writes).
"""

from __future__ import annotations

import dataclasses
import json
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
from common.files import write_json, write_text
from taco.cache import check_directory
from taco.config import TrainConfig, parse_args
from taco.errors import TacoError
from taco.objectives import PretrainingModel, TCConfig
from taco.snapshots import snapshot_steps, write_snapshot
from taco.state import config_digest, load_state, save_state

SEED_STRIDE = 1_000_003


def check_output_dir(out: Path, cfg: TrainConfig) -> str:
    """Decide what to do with `out`: 'fresh', 'resume' or 'overwrite'. Raises before anything is touched."""
    has_run = (out / "run.json").is_file()
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


def read_run_json(out: Path) -> dict:
    """`out/run.json` as a mapping; `TacoError` when it is not valid JSON (truncated, edited, not ours)."""
    try:
        run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise TacoError(f"{out}/run.json is not valid JSON; the run cannot be resumed or replaced safely: "
                        "restore it, or use another --output-dir") from None
    if not isinstance(run, dict):
        raise TacoError(f"{out}/run.json is not a taco run (not a JSON object); use another --output-dir")
    return run


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "tokenizers", "datasets", "numpy", "taco-dynamics"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * SEED_STRIDE + step * 7919 + micro * 104729 + rank * 15485863) % (2**63 - 1)


@torch.no_grad()
def evaluate(mlm_model: torch.nn.Module, blocks: np.ndarray, cfg: TrainConfig, collator: Any,
             special_ids: torch.Tensor, device: torch.device) -> dict[str, float]:
    """MLM and TC loss on fixed validation blocks with fixed masks (TC loss is reported for MLM runs too)."""
    was_training = mlm_model.training
    mlm_model.eval()
    # The released per-anchor draws whatever the run trains with, so validation TC losses compare across runs.
    probe = PretrainingModel(mlm_model, "taco", TCConfig(cfg.tc_window, cfg.tc_negatives, cfg.tc_temperature,
                                                         cfg.tc_weight, cfg.tc_anchors, global_negatives=False,
                                                         method="auto" if cfg.tc_kernel == "batched" else cfg.tc_kernel))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    collator.generator.manual_seed(cfg.seed + 2)
    totals = {"mlm_loss": 0.0, "tc_loss": 0.0, "mlm_accuracy": 0.0}
    n = min(cfg.eval_blocks, len(blocks))
    batches = 0
    for start in range(0, n, cfg.batch_size):
        ids = torch.tensor(np.asarray(blocks[start : min(n, start + cfg.batch_size)]), dtype=torch.long)
        if ids.shape[0] < 2:
            break
        special = torch.isin(ids, special_ids)
        inputs, labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
        out = probe(inputs.to(device), labels.to(device), (~special).to(device), gen)
        for k in totals:
            totals[k] += float(out[k])
        batches += 1
    mlm_model.train(was_training)
    return {k: v / max(batches, 1) for k, v in totals.items()}


def train(cfg: TrainConfig) -> Path:
    """Train according to `cfg` and return the run directory. Raises `TacoError`/`CorpusError` on bad input."""
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    from taco.cache import data_cache_dir
    from taco.corpus import builtin_cache_dir, load_corpus
    from taco.data import BlockSampler, packed_data
    from taco.embeddings import set_up_embeddings
    from taco.presets import build_config
    from taco.tokenizer import cached_tokenizer, load_tokenizer, tokenizer_hash

    hf_logging.disable_progress_bar()  # save_pretrained's per-shard bar would interleave with ours
    cfg = cfg.resolved()
    cfg.validate()
    cache = data_cache_dir(cfg.data_cache)  # "" means the cache root (taco.cache); a file is a TacoError
    info, device = init_distributed(cfg.resolved_device())
    out = Path(cfg.output_dir)
    mode = check_output_dir(out, cfg)

    # Data preparation happens once, on rank 0; the other ranks then read the caches.
    corpus = tokenizer = data = None
    for turn in (0, 1):
        if (turn == 0) == info.main:
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
                               progress=cfg.progress and info.main)
        barrier(info)
    assert corpus is not None and tokenizer is not None and data is not None
    check_blocks(data, cfg, info.world)

    model_config = build_config(cfg.preset, len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                overrides=cfg.model_overrides_dict())
    if cfg.block_size > model_config.max_position_embeddings:
        raise TacoError(f"--block-size {cfg.block_size} exceeds max_position_embeddings "
                        f"{model_config.max_position_embeddings}; lower --block-size")
    if mode == "resume":
        saved = read_run_json(out)
        # the corpus is checked by what it holds, as its path may be spelled differently now (`identity_of`)
        if _recorded(saved, "corpus", "fingerprint") not in (None, corpus.fingerprint):
            raise TacoError(f"--resume: --corpus {cfg.corpus} holds other text than the corpus {out} was trained on "
                            "(its fingerprint differs); pass that corpus, or start a new run in another --output-dir")
        if _recorded(saved, "tokenizer", "hash") != tok_hash:
            raise TacoError(f"--resume: the tokenizer differs from the one {out} was trained with; "
                            f"pass --tokenizer {out / 'tokenizer'}")

    torch.manual_seed(cfg.seed)
    mlm_model = BertForMaskedLM(model_config)
    set_up_embeddings(mlm_model, init_from=cfg.init_embeddings, freeze=cfg.freeze_embeddings, tok_hash=tok_hash)
    mlm_model.to(device)
    digest = config_digest(cfg.identity(), ())
    wrapper = PretrainingModel(mlm_model, cfg.objective, TCConfig(cfg.tc_window, cfg.tc_negatives,
                               cfg.tc_temperature, cfg.tc_weight, cfg.tc_anchors, cfg.tc_global_negatives,
                               negative_sharing=cfg.tc_negative_sharing, method=cfg.tc_kernel))
    optimizer = build_optimizer(mlm_model, cfg)
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.warmup(), cfg.max_steps)

    start_step = 0
    if mode == "resume":
        state = load_state(out)
        if state is None:
            raise TacoError(f"--resume: {out}/state is missing (killed before its first save); "
                            "start again with --overwrite")
        legacy = config_digest(cfg.legacy_digest_fields(saved.get("config") or {}), ())  # states saved before
        if state.get("config_digest") not in (digest, legacy):
            raise TacoError(f"--resume: {out}/state was written under a different configuration; use --overwrite")
        mlm_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
        if info.main:
            _truncate_log(out / "log.jsonl", start_step)
    elif info.main:
        if mode == "overwrite":
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(out / "tokenizer"))
        (out / "data").mkdir(exist_ok=True)
        np.save(out / "data" / "validation_blocks.npy", np.asarray(data.validation[: max(cfg.eval_blocks, 256)]))
        np.save(out / "data" / "token_counts.npy", data.token_counts)
        run = {
            "config": dataclasses.asdict(cfg), "objective": cfg.objective, "preset": cfg.preset, "seed": cfg.seed,
            "block_size": cfg.block_size, "model_config": model_config.to_dict(),
            "corpus": {"source": corpus.source, "fingerprint": corpus.fingerprint, "description": corpus.description,
                       "train_blocks": int(len(data.train)), "validation_blocks": int(len(data.validation))},
            "tokenizer": {"path": "tokenizer", "hash": tok_hash, "vocab_size": len(tokenizer)},
            "validation_blocks_path": "data/validation_blocks.npy", "token_counts_path": "data/token_counts.npy",
            "world_size": info.world, "global_batch_tokens": cfg.batch_size * cfg.grad_accum * info.world * cfg.block_size,
            "versions": package_versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "device": str(device),
        }
        write_json(out / "run.json", run, default=str)
        (out / "log.jsonl").touch()
    barrier(info)

    ddp_model: torch.nn.Module = wrapper
    if info.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            wrapper, device_ids=[device.index] if device.type == "cuda" else None)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability, seed=cfg.seed)
    collator.create_rng("pt")  # the collator's own generator, reseeded per step below
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    sampler = BlockSampler(len(data.train), cfg.batch_size, cfg.seed, info.rank, info.world)
    schedule = set(snapshot_steps(cfg.max_steps, cfg.snapshot_every, cfg.snapshot_log_spaced))
    tokens_per_step = cfg.batch_size * cfg.grad_accum * info.world * cfg.block_size
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16" else nullcontext())
    gen = torch.Generator()

    def snapshot(step: int, train_loss: float | None, elapsed: float) -> None:
        if info.main:
            val = evaluate(mlm_model, data.validation, cfg, collator, special_ids, device)
            row = {"step": step, "tokens_seen": step * tokens_per_step, "split": "validation",
                   "loss": val["mlm_loss"] + (cfg.tc_weight * val["tc_loss"] if cfg.objective == "taco" else 0.0),
                   **val, "elapsed_s": round(elapsed, 3)}
            _append_log(out / "log.jsonl", row)
            write_snapshot(out, step, mlm_model, {
                "tokens_seen": step * tokens_per_step, "train_loss": train_loss, "val_loss": val["mlm_loss"],
                "val_mlm_loss": val["mlm_loss"], "val_tc_loss": val["tc_loss"], "val_mlm_accuracy": val["mlm_accuracy"],
                "wall_time": round(elapsed, 3), "objective": cfg.objective})
            save_state(out, step, mlm_model, optimizer, scheduler, digest)
        barrier(info)

    t0 = time.perf_counter()
    elapsed_before = _elapsed_at(out / "log.jsonl", start_step) if mode == "resume" else 0.0
    if start_step == 0:
        snapshot(0, None, 0.0)
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (cfg.progress and info.main),
               desc=f"{cfg.objective}-{cfg.preset}", unit="step", dynamic_ncols=True)
    mlm_model.train()
    last_tick, loss_value = time.perf_counter(), None
    for step in range(start_step + 1, cfg.max_steps + 1):
        sums = {"loss": 0.0, "mlm_loss": 0.0, "tc_loss": 0.0, "mlm_accuracy": 0.0}
        for micro in range(cfg.grad_accum):
            s = step_seed(cfg.seed, step, micro, info.rank)
            torch.manual_seed(s)  # dropout
            gen.manual_seed(s + 1)  # TC sampling
            collator.generator.manual_seed(s + 2)  # masking
            ids = torch.tensor(data.train[sampler.indices((step - 1) * cfg.grad_accum + micro)], dtype=torch.long)
            special = torch.isin(ids, special_ids)
            inputs, labels = collator.torch_mask_tokens(ids, special_tokens_mask=special)
            sync = nullcontext() if (info.world == 1 or micro == cfg.grad_accum - 1) else ddp_model.no_sync()
            with sync:
                with autocast:
                    result = ddp_model(inputs.to(device), labels.to(device), (~special).to(device), gen)
                (result["loss"] / cfg.grad_accum).backward()
            for k in sums:
                if k in result:
                    sums[k] += float(result[k].detach()) / cfg.grad_accum
        if not math.isfinite(sums["loss"]):
            raise TacoError(f"loss became {sums['loss']} at step {step}; lower --lr or raise --warmup-fraction")
        grad_norm = torch.nn.utils.clip_grad_norm_(mlm_model.parameters(),
                                                   cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = sums["loss"]
        now = time.perf_counter()
        tok_s = tokens_per_step / max(now - last_tick, 1e-9)
        last_tick = now
        bar.update(1)
        if step % cfg.log_every == 0 or step in schedule:
            stats = _mean_over_ranks(sums, info, device)
            row = {"step": step, "tokens_seen": step * tokens_per_step, "lr": lr, **stats,
                   "grad_norm": float(grad_norm), "tokens_per_s": round(tok_s, 1),
                   "elapsed_s": round(elapsed_before + now - t0, 3)}
            if cfg.objective == "mlm":
                row.pop("tc_loss")
            if info.main:
                _append_log(out / "log.jsonl", row)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", tok_s=f"{tok_s:,.0f}")
        if step in schedule:
            snapshot(step, loss_value, elapsed_before + time.perf_counter() - t0)
    bar.close()
    if info.world > 1:
        shutdown_distributed()
    return out


def _recorded(run: dict[str, Any], section: str, key: str) -> Any:
    """`run[section][key]` of a run.json, None where it is absent or not a mapping."""
    part = run.get(section)
    return part.get(key) if isinstance(part, dict) else None


def _mean_over_ranks(values: dict[str, float], info: Place, device: torch.device) -> dict[str, float]:
    if info.world == 1:
        return dict(values)
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world for k, v in zip(values, t.tolist(), strict=True)}


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after the resumed step (the killed run's tail), rewriting the file atomically."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    write_text(path, "".join(k + "\n" for k in keep))


def _elapsed_at(path: Path, step: int) -> float:
    elapsed = 0.0
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("step", 0) <= step:
                elapsed = max(elapsed, float(row.get("elapsed_s", 0.0)))
    return elapsed


def main(argv: list[str] | None = None) -> int:
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
