"""Linear probe: frozen snapshot features → scikit-learn logistic regression (classes) or ridge (STS-B).

Features: one vector per example, the mean of a layer's hidden states over the example's *content* tokens —
every non-padding position except the `[CLS]`/`[SEP]` the tokenizer added (for a pair, the tokens of both
sentences, encoded together). Mean pooling rather than `[CLS]`, because our snapshots are trained without a
sentence-level objective, so `[CLS]` carries no trained summary (`pooling="cls"` is available). `layer`
indexes `hidden_states`: 0 is the embedding-layer output, L the last layer, −1 the last.

Classifier: features standardised with the training split's mean and standard deviation, then
`LogisticRegression(C=1.0, lbfgs)` or `Ridge(alpha=1.0)` with fixed regularisation (no search), so one
snapshot's probe is deterministic and cheap; it is meant to be run on every snapshot of a series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.encoding import Encoded, length_sorted_batches, quiet_transformers
from experiments.tasks import TaskSpec


def load_encoder(model_dir: str | Path, device: str) -> Any:
    """The snapshot's encoder (`AutoModel`, no heads) in eval mode."""
    from transformers import AutoModel

    with quiet_transformers():
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    return model.to(device).eval()


def num_layers(model: Any) -> int:
    """L, the number of encoder layers (hidden_states has L + 1 entries)."""
    return int(model.config.num_hidden_layers)


def resolve_layer(layer: int, n_layers: int) -> int:
    """`layer` as an index 0…L into hidden_states (negative counts from the end); ValueError if out of range."""
    idx = layer + n_layers + 1 if layer < 0 else layer
    if not 0 <= idx <= n_layers:
        raise ValueError(f"layer {layer} is outside 0…{n_layers} (or −{n_layers + 1}…−1)")
    return idx


def extract_features(model: Any, enc: Encoded, *, layer: int, pooling: str = "mean", batch_size: int = 128,
                     device: str = "cpu", progress: bool = True, desc: str = "features") -> np.ndarray:
    """(n, hidden) float32 pooled features of layer `layer` (an index into hidden_states) for every example."""
    import torch
    from tqdm.auto import tqdm

    out: np.ndarray | None = None
    batches = length_sorted_batches(enc, batch_size)
    with torch.inference_mode():
        for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            b = enc.batch(idx)
            res = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                        token_type_ids=b["token_type_ids"].to(device), output_hidden_states=True)
            h = res.hidden_states[layer].float()
            if pooling == "cls":
                pooled = h[:, 0]
            else:
                mask = b["content_mask"].to(device)
                # an example with no content token (empty text) falls back to all attended positions
                empty = ~mask.any(dim=1, keepdim=True)
                mask = torch.where(empty, b["attention_mask"].to(device).bool(), mask).unsqueeze(-1).float()
                pooled = (h * mask).sum(1) / mask.sum(1)
            if out is None:
                out = np.zeros((len(enc), pooled.shape[-1]), dtype=np.float32)
            out[idx] = pooled.cpu().numpy()
    assert out is not None
    return out


def fit_predict(spec: TaskSpec, x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray, *, C: float = 1.0,  # noqa: N803
                alpha: float = 1.0, max_iter: int = 2000) -> np.ndarray:
    """Standardise, fit logistic regression (classification) or ridge (regression) on train, predict dev."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train.astype(np.float64))
    xt, xd = scaler.transform(x_train.astype(np.float64)), scaler.transform(x_dev.astype(np.float64))
    if spec.kind == "regression":
        return Ridge(alpha=alpha).fit(xt, y_train).predict(xd).astype(np.float32)
    if len(np.unique(y_train)) < 2:  # one class in a tiny training subsample: predict it
        return np.full(len(xd), int(y_train[0]), dtype=np.int64)
    clf = LogisticRegression(C=C, max_iter=max_iter)
    return clf.fit(xt, y_train).predict(xd).astype(np.int64)
