"""Attention probabilities for the attention and copying families, without changing any other stored value.

transformers 5.x models attend through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`, by default "sdpa",
which returns no probabilities. `install()` puts a pass-through wrapper in front of the "sdpa" entry once per
process: it calls the original function with the same arguments (so every hidden state is the same bits as
without it) and, only on a thread inside `recording(sink)`, also computes that layer's probabilities from the
query and key the model handed to it (after its rotary embedding, grouped-query keys repeated as sdpa repeats
them) — softmax(q kᵀ · scaling + mask), the mask as sdpa applies it (the model's mask, else causal where sdpa would
be causal) — in float32, and passes them to `sink(layer_index, probs)` (layer_index 0 = block 0, i.e. the
family's layer 1). Models loaded with `attn_implementation="eager"` return their probabilities themselves
(`output_attentions=True`); other implementations (flash, flex) are not read (a note says so). The sink reduces
each batch's probabilities at once (`dynamics.metrics.attention.attention_sums`, `copying.copy_sums`), so no
(B, H, T, T) tensor outlives its layer. Cost: one extra q kᵀ, softmax and a few reductions per layer.

The copy blocks (`probe_set.CopyBlocks`) get their own forward passes (`copy_outputs`): one recording pass, plus for
an MLM one masked pass through the head; a causal LM's next-token head is read off the recording pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from dynamics.measure.probe_set import CopyBlocks
from dynamics.metrics.attention import HeadSums, attention_sums, sink_positions
from dynamics.metrics.copying import CopyPredictions, CopySums, copy_sums

Sink = Callable[[int, torch.Tensor], None]
_LOCAL = threading.local()
_INSTALL = threading.Lock()
_ORIGINAL: dict[str, Callable[..., Any]] = {}


def install() -> None:
    """Put the recording wrapper in front of transformers' "sdpa" attention (once per process; module docstring)."""
    with _INSTALL:
        if "sdpa" in _ORIGINAL:
            return
        original = ALL_ATTENTION_FUNCTIONS["sdpa"]
        _ORIGINAL["sdpa"] = original

        def sdpa_recording(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> Any:
            out = original(module, query, key, value, attention_mask, *args, **kwargs)
            sink = getattr(_LOCAL, "sink", None)
            if sink is not None:
                scaling = kwargs.get("scaling", args[1] if len(args) > 1 else None)
                is_causal = kwargs.get("is_causal", args[2] if len(args) > 2 else None)
                sink(_LOCAL.layer, probabilities(module, query, key, attention_mask, scaling, is_causal))
                _LOCAL.layer += 1
            return out

        ALL_ATTENTION_FUNCTIONS["sdpa"] = sdpa_recording


def probabilities(module: Any, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                  scaling: float | None, is_causal: bool | None) -> torch.Tensor:
    """(B, H, Tq, Tk) float32 softmax(q kᵀ · scaling + mask), with sdpa's rules for grouped-query keys, the default
    scaling 1/√d and causality (causal only where no mask is given, Tq > 1 and the module is causal)."""
    if key.shape[1] != query.shape[1]:
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
    if mask is not None:
        mask = mask[..., : key.shape[-2]]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    else:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and query.shape[2] > 1:
            tq, tk = query.shape[2], key.shape[2]
            above = torch.ones(tq, tk, dtype=torch.bool, device=scores.device).triu(tk - tq + 1)
            scores = scores.masked_fill(above, float("-inf"))
    return torch.softmax(scores, dim=-1)


def readable(config: Any) -> str | None:
    """None when the attention probabilities of a model with this config can be read, else why not."""
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl in ("sdpa", "eager"):
        return None
    return f"attention implementation {impl!r} does not give its probabilities: load the model with sdpa or eager"


@contextlib.contextmanager
def recording(sink: Sink) -> Iterator[None]:
    """Within (on this thread only), every sdpa attention call also hands its probabilities to `sink`."""
    install()
    _LOCAL.sink, _LOCAL.layer = sink, 0
    try:
        yield
    finally:
        _LOCAL.sink = None


def forward(encoder: Any, ids: torch.Tensor, sink: Sink, **kwargs: Any) -> Any:
    """`encoder(input_ids=ids, …)` with every layer's attention probabilities handed to `sink` (sdpa: recorded;
    eager: `output_attentions`)."""
    if (getattr(encoder.config, "_attn_implementation", None) or "eager") == "eager":
        out = encoder(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True, **kwargs)
        for layer, probs in enumerate(out.attentions):
            sink(layer, probs.float())
        return out
    with recording(sink):
        return encoder(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)


class LayerSums:
    """Per-layer sums of one batch, filled by a sink (a list indexed by layer, in call order)."""

    def __init__(self, reduce: Callable[[torch.Tensor], Any]) -> None:
        self.reduce = reduce
        self.layers: list[Any] = []

    def __call__(self, layer: int, probs: torch.Tensor) -> None:
        assert layer == len(self.layers), "attention layers recorded out of order"
        self.layers.append(self.reduce(probs))


def probe_sink(content: torch.Tensor, special: torch.Tensor, causal: bool) -> LayerSums:
    """A sink reducing one batch of probe blocks (`content`, `special`: (B, T) bool) to per-layer `HeadSums`."""
    sinks = sink_positions(special)
    return LayerSums(lambda probs: attention_sums(probs, content, sinks, causal=causal))


def merge(batches: list[list[Any]]) -> list[Any] | None:
    """Per-layer sums over all batches, merged in batch order (float64, so the result does not depend on which
    thread ran which batch); None when nothing was recorded."""
    batches = [b for b in batches if b]
    if not batches:
        return None
    out = list(batches[0])
    for b in batches[1:]:
        out = [a.merge(c) for a, c in zip(out, b, strict=True)]
    return out


@dataclass
class CopyOutputs:
    """The copy blocks' per-layer sums (index l − 1 for layer l) and, where the model has a head, its predictions."""

    sums: list[CopySums]
    predictions: CopyPredictions | None


def copy_outputs(encoder: Any, copy: CopyBlocks, *, causal: bool, head: tuple[Any, Any] | None,
                 next_head: Any, mask_id: int | None, batch_size: int, device: str) -> CopyOutputs | None:
    """The copying family's passes over `copy` (module docstring). `head`: an MLM's (transform, decoder);
    `next_head`: a causal LM's output embedding; `mask_id`: the tokenizer's mask token."""
    ids_all = torch.from_numpy(copy.ids.astype(np.int64))
    second_all = torch.from_numpy(copy.second)
    parts: list[list[CopySums]] = []
    right: dict[str, list[np.ndarray]] = {"first": [], "second": []}
    extra = {"use_cache": False} if causal else {}
    t0 = copy.start
    with torch.inference_mode():
        for s in range(0, ids_all.shape[0], batch_size):
            ids = ids_all[s : s + batch_size].to(device)
            sink = LayerSums(lambda probs, q=second_all[s : s + batch_size]: copy_sums(probs, q, copy.length))
            out = forward(encoder, ids, sink, **extra)
            parts.append(sink.layers)
            if causal and next_head is not None:  # positions t = 1…T−1 of each copy, predicted from t − 1
                pred = next_head(out.last_hidden_state).argmax(-1)  # (B, n): the prediction of the next token
                hit = (pred[:, :-1] == ids[:, 1:]).cpu().numpy()  # hit[:, j]: position j + 1 predicted right
                right["first"].append(hit[:, t0 : t0 + copy.length - 1].ravel())
                right["second"].append(hit[:, t0 + copy.length : t0 + 2 * copy.length - 1].ravel())
            elif head is not None and mask_id is not None:
                where = torch.from_numpy(copy.masked[s : s + batch_size])
                inputs = ids.clone()
                inputs[where.to(device)] = mask_id
                h = encoder(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
                pred = head[1](head[0](h)).argmax(-1).cpu()
                ok = (pred == ids.cpu()).numpy()
                right["first"].append(ok[copy.first_scored[s : s + batch_size]])
                right["second"].append(ok[copy.second_scored[s : s + batch_size]])
    sums = merge(parts)
    if sums is None:
        return None
    predictions = CopyPredictions(np.concatenate(right["first"]), np.concatenate(right["second"])) \
        if right["first"] else None
    return CopyOutputs(sums, predictions)


__all__ = ["CopyOutputs", "HeadSums", "copy_outputs", "forward", "install", "merge", "probabilities", "probe_sink",
           "readable", "recording"]
