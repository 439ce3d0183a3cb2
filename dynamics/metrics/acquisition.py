"""Word acquisition (Chang & Bergen, TACL 2022, "Word acquisition in neural language models"): when, in training,
each word type of the probe set is learned.

Per snapshot, the surprisal of the true token under the model's head at the probe set's masked positions (MLM
heads; next-token positions for causal heads); per word type, a sigmoid fitted to its mean surprisal against
log10(step); its age of acquisition (AoA) is the log10 step at which the fitted curve is halfway between chance
(ln V) and its minimum; per run, the Spearman correlation of AoA with log training frequency.
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_surprisal(logits: Tensor, targets: Tensor) -> Tensor:
    """(n,) float64 surprisal of the true token in nats: −ln softmax(logits)[target] = logsumexp(z) − z_target.

    Args: logits (n, V) scores of the head (any float dtype; reduced in float64); targets (n,) ids in [0, V)."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (n, V) and targets (n,); got {tuple(logits.shape)}, {tuple(targets.shape)}")
    z = logits.to(torch.float64)
    return torch.logsumexp(z, dim=1) - z.gather(1, targets.long()[:, None]).squeeze(1)
