"""Fine-tuning a snapshot on one task: a fresh head on `AutoModelForSequenceClassification`, a plain loop.

Recipe (the paper's defaults, all configurable): AdamW (β = 0.9, 0.999, ε = 1e-8, no weight decay as in
Hugging Face's `run_glue`), peak learning rate 5e-5, linear warm-up over the first 100 steps then linear decay
to 0 at the last step, 4 epochs, batch 32, sequences truncated to 128 tokens, gradient clipping at norm 1.0.
Batches are grouped by length (`epoch_batches`; off with `group_by_length=False`) and padded to their longest
member: on a CPU that is 1.5–3× less compute than padding random batches, with the same examples per epoch.
STS-B is regression (`num_labels=1`, `problem_type="regression"`, mean squared error); the others use
cross-entropy. The head (and the pooler, which our MLM snapshots lack) is initialised from `seed`, which also
fixes the data order and dropout, so one seed on one device gives the same numbers every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.encoding import Encoded, length_sorted_batches, quiet_transformers
from experiments.tasks import TaskSpec


@dataclass(frozen=True)
class FinetuneSettings:
    """Optimisation settings of one fine-tuning run (see the module docstring for the defaults' origin)."""

    lr: float = 5e-5
    epochs: int = 4
    batch_size: int = 32
    warmup_steps: int = 100
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    eval_batch_size: int = 128
    group_by_length: bool = True


def epoch_batches(lengths: np.ndarray, batch_size: int, generator: Any, group_by_length: bool,
                  megabatch: int = 50) -> list[np.ndarray]:
    """One epoch's batches of example indices, drawn from `generator` (a seeded `torch.Generator`).

    Plain: a random permutation cut into batches. Grouped by length (as Hugging Face's `group_by_length`): the
    permutation is cut into chunks of `megabatch` batches, each chunk sorted by length (longest first) and cut
    into batches, and the batch order shuffled — batches hold examples of similar length, so padding to the
    longest member wastes little compute, while which examples meet in a batch stays random.
    """
    import torch

    order = torch.randperm(len(lengths), generator=generator).numpy()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    step = batch_size * megabatch
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).numpy()
    return [batches[i] for i in shuffle]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based): linear warm-up over `warmup`
    steps, then linear decay reaching 0 after `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def load_classifier(model_dir: str | Path, spec: TaskSpec, seed: int, device: str):  # noqa: ANN201 - torch model
    """The snapshot with a fresh task head, its new weights drawn from `seed`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    extra = {"problem_type": "regression"} if spec.kind == "regression" else {}
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=spec.num_labels, local_files_only=True, **extra)
    return model.to(device)


def predict(model, enc: Encoded, spec: TaskSpec, batch_size: int, device: str) -> np.ndarray:  # noqa: ANN001
    """Dev predictions in example order: class indices, or scores for regression."""
    import torch

    model.eval()
    out = np.zeros(len(enc), dtype=np.float32 if spec.kind == "regression" else np.int64)
    with torch.inference_mode():
        for idx in length_sorted_batches(enc, batch_size):
            b = enc.batch(idx)
            logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                           token_type_ids=b["token_type_ids"].to(device)).logits.float().cpu()
            out[idx] = logits[:, 0].numpy() if spec.kind == "regression" else logits.argmax(-1).numpy()
    return out


def finetune(model_dir: str | Path, spec: TaskSpec, train: Encoded, dev: Encoded, *, seed: int,
             settings: FinetuneSettings, device: str = "cpu", progress: bool = True,
             desc: str = "") -> tuple[np.ndarray, list[float]]:
    """Fine-tune the snapshot at `model_dir` on `train`; return dev predictions and the mean training loss of
    each epoch."""
    import torch
    from tqdm.auto import tqdm

    model = load_classifier(model_dir, spec, seed, device)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=settings.lr, betas=(0.9, 0.999), eps=settings.adam_eps)
    per_epoch = math.ceil(len(train) / settings.batch_size)
    total = per_epoch * settings.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.warmup_steps, total))
    gen = torch.Generator().manual_seed(seed)
    epoch_losses: list[float] = []
    lengths = train.lengths()
    for epoch in range(settings.epochs):
        model.train()
        batches = epoch_batches(lengths, settings.batch_size, gen, settings.group_by_length)
        losses = []
        bar = tqdm(batches, desc=f"{desc} epoch {epoch + 1}/{settings.epochs}".strip(), unit="batch",
                   disable=not progress, leave=False)
        for i, idx in enumerate(bar):
            b = train.batch(idx)
            out = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                        token_type_ids=b["token_type_ids"].to(device), labels=b["labels"].to(device))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(float(out.loss.detach()))
            if i % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        bar.close()
        epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
    preds = predict(model, dev, spec, settings.eval_batch_size, device)
    del model, optimizer
    return preds, epoch_losses
