"""Snapshots of a training run: when they are taken (`snapshot_steps`, from `common.snapshot_writer`, the schedule
every loop shares), the validation losses measured at each (`evaluate`) and what is written for one
(`record_snapshot`: a validation row of log.jsonl and the `snapshots/step-NNNNNNN/` folder, through
`common.snapshot_writer.SnapshotWriter`, the one writer of the format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.run_dir import snapshot_record, validation_row
from common.snapshot_writer import SnapshotWriter, snapshot_steps
from taco.config import TrainConfig
from taco.objectives import PretrainingModel, TCConfig

__all__ = ["evaluate", "record_snapshot", "snapshot_steps"]  # snapshot_steps: the shared schedule, re-exported


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


def record_snapshot(writer: SnapshotWriter, step: int, model: torch.nn.Module, val: dict[str, float], *,
                    tokens_seen: int, train_loss: float | None, elapsed: float, objective: str,
                    tc_weight: float) -> Path | None:
    """The snapshot of `step`: its validation row in log.jsonl (the loss the objective optimises: MLM, plus
    `tc_weight` x TC for TACO), then the model folder with its snapshot.json. Returns the folder (None on a process
    that does not write)."""
    loss = val["mlm_loss"] + (tc_weight * val["tc_loss"] if objective == "taco" else 0.0)
    writer.log(step, tokens_seen, validation_row(step=step, tokens_seen=tokens_seen, loss=loss,
                                                 mlm_loss=val["mlm_loss"], tc_loss=val["tc_loss"],
                                                 mlm_accuracy=val["mlm_accuracy"], elapsed_s=elapsed))
    return writer.snapshot(model, step, tokens_seen, snapshot_record(
        tokens_seen=tokens_seen, train_loss=train_loss, val_mlm_loss=val["mlm_loss"], val_tc_loss=val["tc_loss"],
        val_mlm_accuracy=val["mlm_accuracy"], wall_time=elapsed, objective=objective))
