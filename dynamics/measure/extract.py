"""Loading one snapshot and running the probe set through it: per-layer hidden states of the content tokens,
the input word-embedding rows, and (masked variant) the head's input and the true token's rank and surprisal.

Architectures: anything `AutoModelForMaskedLM`, `AutoModelForCausalLM` or `AutoModel` loads (tried in that order)
whose forward takes `output_hidden_states` and that has `get_input_embeddings()`.

* Encoders (`architecture_kind` "encoder"). The MLM head transform `T` is known for BERT
  (`cls.predictions.transform`), RoBERTa-like (`lm_head.dense` → gelu → `lm_head.layer_norm`), ELECTRA generators
  (`generator_predictions`), DistilBERT (`vocab_transform` → activation → `vocab_layer_norm`) and ALBERT
  (`predictions.dense` → activation → `predictions.LayerNorm`). The masked variant is a second pass with the
  probe set's masked positions replaced by the mask token.
* Causal LMs ("causal": GPT-2, GPT-NeoX/Pythia, Llama-style — any model type with a causal-LM class and no
  masked-LM class). There is no MLM head, so the masked variant is the next-token head, computed from pass 1
  (no second pass): for each of the probe set's masked positions i (the targets), the head input is the last
  hidden state at i − 1 and the output embedding (`lm_head`/`embed_out`) gives the logits for x_i. The head input
  is the base model's `last_hidden_state`, which for all three families already has the final norm applied
  (GPT-2 `ln_f`, NeoX `final_layer_norm`, Llama `norm` RMSNorm) — it is what the model's own `lm_head` reads, so
  the logits equal `model(input_ids).logits` — and so is layer L of `hidden_states` (layers 1 … L − 1 are the
  un-normalised residual stream). A target at a block's first position has no context and is dropped (with a
  note); where the tokenizer opens blocks with a BOS (`<s>`), position 0 is that special token and never a
  target. Models whose logits are rescaled or soft-capped after the output embedding are not recognised.

A checkpoint without head weights (an encoder saved as `BertModel`, e.g. a sentence-embedding model, or a decoder
saved as `GPTNeoXModel`) is read through its base model alone; the head metrics are then skipped with a note.

Threads: on the CPU both passes run their batches on worker threads with one torch thread each
(`dynamics.measure.threads`), each batch's rows written straight to their place in the arrays. On 2 cores a `mini`
snapshot's extraction then takes 0.95× the time it takes on torch's intra-op threads (median of 20 paired
snapshots). Every batch is computed on one thread, so the activations are the same bits whichever worker runs
it and however many there are (tested).

Memory: one model at a time; the caller drops the returned `Activations` before the next snapshot.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)
from transformers.utils import logging as hf_logging

from dynamics.errors import ProbeError
from dynamics.measure import attention as att
from dynamics.measure.probe_set import ProbeSet
from dynamics.measure.threads import cpu_workers, map_on_threads
from dynamics.metrics.acquisition import token_surprisal
from dynamics.metrics.anchors import token_rank
from dynamics.metrics.attention import HeadSums


@dataclass
class MaskedOutputs:
    """The masked pass at the probe set's masked positions (M of them), in content-token order.

    `transform`: (M, E) T(h_L) — the MLM head transform of the last layer, in word-embedding space;
    `hidden`: (M, H) h_L of the masked pass; `rank`: (M,) int64 rank of the true token among the head's logits
    (1 = top-1, `dynamics.metrics.anchors.token_rank`); `index`: (M,) int64 indices into the probe set's
    content tokens; `surprisal`: (M,) float64 −ln p(true token) under the head's softmax (nats; `token_surprisal`).
    `head`: "mlm", or "next_token" for a causal LM, where the row of target i holds the head input at i − 1
    (`transform`: the final-normed last hidden state, which the output embedding maps to logits; `hidden`: layer
    L of pass 1 there) and `index`/`rank`/`surprisal` are those of x_i; targets at a block's first position are
    dropped, so M may be smaller than the probe set's masked count.
    `log_probs`: (k, V) float32 log-softmax of the head's logits at the k kept rows (`extract`'s `keep_log_probs`,
    for seed agreement), `log_prob_index` (k,) their content-token indices, sorted; None when none were asked for.
    """

    transform: np.ndarray
    hidden: np.ndarray
    rank: np.ndarray
    index: np.ndarray
    surprisal: np.ndarray
    head: str = "mlm"
    log_probs: np.ndarray | None = None
    log_prob_index: np.ndarray | None = None


@dataclass
class Activations:
    """One snapshot's activations on the probe set's N content tokens (special tokens excluded).

    `hidden`: (L+1, N, H) float32, `hidden[0]` = the embedding-layer output e, `hidden[l]` = layer l's output;
    `emb_rows`: (N, E) float32 rows E[x_i] of the input word-embedding matrix (E = embedding size, which is H
    except for ELECTRA-style factorised embeddings); `emb_matrix`: (V, E) float32 the whole matrix (for drift);
    `masked`: the masked pass (for a causal LM the next-token head), or None when not run or there is no head;
    `kind`: `architecture_kind` of the model, "encoder" or "causal".
    """

    hidden: np.ndarray
    emb_rows: np.ndarray
    emb_matrix: np.ndarray
    masked: MaskedOutputs | None
    has_head: bool
    architecture: str
    notes: list[str] = field(default_factory=list)
    kind: str = "encoder"
    norm_weights: np.ndarray | None = None  # (L+1, H) γ of each layer's norm (`layer_norm_weights`), NaN: none
    attention: list[HeadSums] | None = None  # per layer 1…L (index l − 1): attention sums over the content queries
    copying: att.CopyOutputs | None = None  # the copy blocks' attention sums and head predictions

    @property
    def n_layers(self) -> int:
        """L, the number of transformer layers (hidden holds L+1 entries)."""
        return self.hidden.shape[0] - 1


# ---------------------------------------------------------------------------------------------------------- heads

Head = tuple[Callable[[Any], Any], Callable[[Any], Any]]  # (T: h → transformed, decoder: transformed → logits)


def mlm_head(model: Any) -> Head | None:
    """The (transform, decoder) pair of a known MLM head, or None for an unknown or absent head."""
    cls = getattr(model, "cls", None)
    if cls is not None and hasattr(getattr(cls, "predictions", None), "transform"):  # BERT
        p = cls.predictions
        return p.transform, p.decoder
    lm = getattr(model, "lm_head", None)
    if lm is not None and all(hasattr(lm, a) for a in ("dense", "layer_norm", "decoder")):  # RoBERTa, XLM-R, …
        return (lambda h: lm.layer_norm(F.gelu(lm.dense(h)))), lm.decoder
    if hasattr(model, "generator_predictions") and hasattr(model, "generator_lm_head"):  # ELECTRA generator
        return model.generator_predictions, model.generator_lm_head
    if all(hasattr(model, a) for a in ("vocab_transform", "vocab_layer_norm", "vocab_projector")):  # DistilBERT
        return (lambda h: model.vocab_layer_norm(model.activation(model.vocab_transform(h)))), model.vocab_projector
    pred = getattr(model, "predictions", None)
    if pred is not None and all(hasattr(pred, a) for a in ("dense", "activation", "LayerNorm", "decoder")):  # ALBERT
        return (lambda h: pred.LayerNorm(pred.activation(pred.dense(h)))), pred.decoder
    return None


def architecture_kind(config: Any) -> str:
    """"causal" for a model type that has a causal-LM class and no masked-LM class in transformers (GPT-2, GPT-NeoX,
    Llama, …), else "encoder" (BERT, RoBERTa, ELECTRA, DistilBERT, … — BERT-likes have both classes and are
    read as the encoders they are pretrained as)."""
    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal"
    return "encoder"


# Config attributes of causal LMs whose logits are rescaled or soft-capped after the output embedding (Gemma 2,
# Cohere, Granite): there `output embedding(last_hidden_state)` is not the model's logits.
_LOGIT_RESCALING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def causal_head(model: Any) -> Callable[[Any], Any] | None:
    """The next-token head of a causal LM — its output embedding (`lm_head`, NeoX `embed_out`), mapping the final-
    normed last hidden state (m, H) to logits (m, V) — or None when it has none or rescales its logits."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    if not isinstance(head, torch.nn.Linear):
        return None
    if any(getattr(config, a, None) not in (None, 1, 1.0) for a in _LOGIT_RESCALING):
        return None
    return head


# -------------------------------------------------------------------------------------------------------- loading

@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration, restoring them afterwards."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_model(path: Path, device: str = "cpu") -> tuple[Any, bool, list[str]]:
    """Load the snapshot at `path` in eval mode and float32 → (model, has_head, notes).

    `AutoModelForMaskedLM` first, then (for architectures without a masked-LM class) `AutoModelForCausalLM`, then
    `AutoModel`. The head counts as present only if its weights were in the checkpoint (missing keys outside the
    base model mean a headless checkpoint) and it is recognised (`mlm_head`, `causal_head`). Any load failure
    becomes a `ProbeError` naming the folder.
    """
    notes: list[str] = []
    fix = "re-save the snapshot with save_pretrained() or leave it out with --steps"

    def load(auto: Any) -> tuple[Any, list[str], list[str]]:
        model, info = auto.from_pretrained(str(path), output_loading_info=True, dtype=torch.float32)
        keys = list(info.get("missing_keys", ()))
        if auto is AutoModel:
            return model, [], sorted(keys)
        prefix = getattr(model, "base_model_prefix", "") + "."
        return (model, sorted(k for k in keys if not k.startswith(prefix)),
                sorted(k for k in keys if k.startswith(prefix)))

    with quiet_transformers():
        model, kind = None, None
        for auto, label in ((AutoModelForMaskedLM, "MLM"), (AutoModelForCausalLM, "causal-LM"), (AutoModel, None)):
            try:
                model, missing, base_missing = load(auto)
            except ValueError as exc:
                if auto is not AutoModel and _unsupported(exc):
                    continue  # no class of this kind for the architecture: try the next
                raise ProbeError(f"{path}: the model could not be loaded ({_short(exc)}); {fix}") from None
            except Exception as exc:  # noqa: BLE001 - corrupt weights, bad config, … are all the same user error
                raise ProbeError(f"{path}: the model could not be loaded ({_short(exc)}); {fix}") from None
            kind = label
            break
        assert model is not None
        head = None if kind is None else mlm_head(model) if kind == "MLM" else causal_head(model)
        has_head = kind is not None and not missing and head is not None
        what = "masked-variant" if kind == "MLM" else "next-token (masked-variant)"
        if kind is None:
            notes.append(f"{type(model).__name__} has no masked-LM or causal-LM class: masked-variant and head "
                         "metrics skipped")
        elif missing:
            notes.append(f"no {kind} head weights in the checkpoint: {what} and head metrics skipped")
        elif head is None:
            notes.append(f"{kind} head of {type(model).__name__} not recognised: head metrics skipped")
    if base_missing:
        raise ProbeError(f"{path}: the checkpoint lacks encoder weights ({base_missing[0]}, …); {fix}")
    model.eval()
    return model.to(device), has_head, notes


def _unsupported(exc: ValueError) -> bool:
    """The error of an Auto class that has no class for the checkpoint's architecture."""
    return "Unrecognized configuration class" in str(exc) or "does not support" in str(exc)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__


def _encoder(model: Any) -> Any:
    base = getattr(model, "base_model", None)
    return base if base is not None else model


# ------------------------------------------------------------------------------------------------------ extraction

def extract(
    model: Any,
    probe: ProbeSet,
    *,
    has_head: bool,
    masked_pass: bool = True,
    batch_size: int = 16,
    device: str = "cpu",
    reuse: Activations | None = None,
    attention: bool = False,
    copying: bool = False,
    keep_log_probs: np.ndarray | None = None,
) -> Activations:
    """Run the probe set through `model` (already on `device`, eval mode) in batches of `batch_size` blocks.

    Pass 1 (always): hidden states of every layer at the content positions, plus E[x_i]. For a causal LM with a
    recognised head and `masked_pass`, the next-token head is read off this pass too (module docstring).
    Pass 2 (an encoder, when `masked_pass` and the model has a recognised head): the masked positions replaced by
    the mask token; at those positions T(h_L), h_L and the rank of the true token under the head's logits. Logits
    are only computed at masked (target) positions, never over the whole batch, and so is the last layer where
    the architecture allows (`last_hidden_at`).
    `reuse`: activations no longer needed (the previous snapshot's): their `hidden` and `emb_rows` arrays are
    overwritten where the shapes match, instead of allocating new ones (fresh pages are slow to fault in).
    `keep_log_probs`: sorted content-token indices (a subset of the masked / target positions) whose head
    log-softmax rows are kept (`MaskedOutputs.log_probs`, for seed agreement); None keeps none.
    `attention`: pass 1 also reduces every layer's attention probabilities to per-head sums
    (`dynamics.measure.attention`; the hidden states are the same bits either way). `copying`: the probe set's
    copy blocks run through the model too (`attention.copy_outputs`).

    One function of ≈ 90 lines on purpose: its per-batch closure (`unmasked`, run on worker threads in any order)
    writes each batch's rows straight into the one (L+1, N, H) array the first finished batch allocates, under a
    lock; as separate functions that shared state would travel through every call.
    """
    ids_all = torch.from_numpy(probe.ids.astype(np.int64))
    content_all = torch.from_numpy(probe.content)
    n_blocks = probe.ids.shape[0]
    encoder = _encoder(model)
    emb = model.get_input_embeddings().weight.detach()
    emb_matrix = emb.float().cpu().numpy().copy()
    n_layers = int(getattr(encoder.config, "num_hidden_layers", 0) or getattr(encoder.config, "n_layers", 0))
    kind = architecture_kind(encoder.config)
    head = mlm_head(model) if has_head and kind == "encoder" else None
    next_head = causal_head(model) if has_head and kind == "causal" else None
    run_masked = masked_pass and head is not None and probe.mask_id is not None
    targets_all = next_token_targets(probe.masked) if masked_pass and next_head is not None else None
    content_index = _content_index(probe)
    # A decoder's forward would otherwise build and return a key/value cache nobody reads.
    extra = {"use_cache": False} if kind == "causal" else {}
    unreadable = att.readable(encoder.config) if attention or copying else None
    record = attention and unreadable is None

    n_tok = probe.n_tokens
    notes: list[str] = []
    starts = range(0, n_blocks, batch_size)
    # Where each batch's content rows go: batches run on worker threads (`dynamics.measure.threads`), in any order.
    offsets = np.concatenate([[0], np.cumsum([int(probe.content[s : s + batch_size].sum()) for s in starts])])
    workers = cpu_workers(device)
    hidden: list[np.ndarray] = []  # the (L+1, N, H) array, made by the first batch to finish its pass
    made = threading.Lock()

    def unmasked(k: int) -> tuple[np.ndarray, ...] | None:
        start = starts[k]
        ids = ids_all[start : start + batch_size].to(device)
        content = content_all[start : start + batch_size]
        where = torch.nonzero(content.reshape(-1)).squeeze(1).to(device)  # content cells of the batch
        sink = att.probe_sink(content, ~content, kind == "causal") if record else None
        if sink is None:
            out = encoder(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, **extra)
        else:
            out = att.forward(encoder, ids, sink, output_hidden_states=True, **extra)
        states = out.hidden_states
        part = None
        if targets_all is not None:
            chosen = targets_all[start : start + batch_size]
            if chosen.any():
                part = _next_token_rows(out.last_hidden_state, states[-1], next_head, ids, chosen,
                                        content_index[start : start + batch_size][chosen], keep_log_probs)
        with made:
            if not hidden:
                shape = (len(states), n_tok, states[0].shape[-1])
                hidden.append(_reusable(None if reuse is None else reuse.hidden, shape))
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        for layer, h in enumerate(states):
            rows = h.reshape(-1, h.shape[-1])
            dest = torch.from_numpy(hidden[0][layer, lo:hi])
            if rows.device.type == "cpu" and rows.dtype == torch.float32:
                torch.index_select(rows, 0, where, out=dest)  # straight into the array, no temporary
            else:
                dest.copy_(rows.index_select(0, where).float().cpu())
        return part, (sink.layers if sink is not None else [])

    with torch.inference_mode():
        done = map_on_threads(_inference(unmasked), range(len(starts)), workers, name="forward")
        next_parts = [p for p, _ in done if p is not None]
        attention_sums = att.merge([a for _, a in done]) if record else None
        assert hidden and int(offsets[-1]) == n_tok
        n_states = hidden[0].shape[0]
        if n_layers and n_states != n_layers + 1:
            notes.append(f"model returned {n_states} hidden states for {n_layers} layers")
        masked = _masked_pass(encoder, head, probe, ids_all, batch_size, device, keep_log_probs) if run_masked else None
        if targets_all is not None:
            masked = _next_token_outputs(next_parts, probe, notes, keep_log_probs is not None)
        copy_out = None
        if copying and unreadable is None and probe.copy is not None:
            copy_out = att.copy_outputs(encoder, probe.copy, causal=kind == "causal",
                                        head=head,
                                        next_head=next_head, mask_id=probe.mask_id, batch_size=batch_size,
                                        device=device)
    if unreadable is not None:
        notes.append(f"attention and copying families not measured: {unreadable}")
    elif copying and probe.copy is None:
        notes.append("copying family not measured: the probe blocks are too short for two copies of 2 tokens")
    hidden = hidden[0]
    emb_rows = np.take(emb_matrix, probe.tokens, axis=0,
                       out=_reusable(None if reuse is None else reuse.emb_rows, (n_tok, emb_matrix.shape[1])))
    return Activations(hidden, emb_rows, emb_matrix, masked, head is not None or next_head is not None,
                       type(model).__name__, notes, kind, layer_norm_weights(encoder, hidden.shape[0] - 1,
                                                                             hidden.shape[2]),
                       attention=attention_sums, copying=copy_out)


def _is_norm(module: Any, width: int) -> bool:
    """A LayerNorm/RMSNorm-like module with a (width,) scale vector γ."""
    name = type(module).__name__
    weight = getattr(module, "weight", None)
    return ((isinstance(module, torch.nn.LayerNorm) or name.endswith("Norm"))
            and isinstance(weight, torch.Tensor) and weight.dim() == 1 and weight.shape[0] == width)


def layer_norm_weights(base: Any, n_layers: int, width: int) -> np.ndarray | None:
    """(L+1, H) float32 γ of the normalisation that belongs to each layer, NaN where it has none; None when the
    model's blocks cannot be found.

    Layer 0: the embedding block's norm (BERT's `embeddings.LayerNorm`; decoders have none). Layer l ≥ 1: the last
    norm, in module order, inside transformer block l − 1 — the output LayerNorm of a post-LN encoder (BERT's
    `output.LayerNorm`, which produces h_l), the pre-MLP norm of a pre-LN decoder (GPT-2 `ln_2`, NeoX/Llama
    `post_attention_layernorm`). Blocks: the first `ModuleList` of L modules under the base model."""
    blocks = next((m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers), None)
    if blocks is None or n_layers == 0:
        return None
    out = np.full((n_layers + 1, width), np.nan, dtype=np.float32)
    embeddings = getattr(base, "embeddings", None)
    if embeddings is not None:
        norms = [m for m in embeddings.modules() if _is_norm(m, width)]
        if norms:
            out[0] = norms[-1].weight.detach().float().cpu().numpy()
    for layer, block in enumerate(blocks, start=1):
        norms = [m for m in block.modules() if _is_norm(m, width)]
        if norms:
            out[layer] = norms[-1].weight.detach().float().cpu().numpy()
    return out


def _reusable(array: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`array` if it is a writeable C-contiguous float32 array of `shape`, else a new one."""
    if array is not None and array.shape == shape and array.dtype == np.float32 and array.flags.c_contiguous \
            and array.flags.writeable:
        return array
    return np.empty(shape, dtype=np.float32)


def _content_index(probe: ProbeSet) -> np.ndarray:
    """(n_blocks, block) int64: each content cell's index into the content tokens, −1 elsewhere."""
    content_index = np.full(probe.ids.shape, -1, dtype=np.int64)
    content_index[probe.content] = np.arange(probe.n_tokens)
    return content_index


def next_token_targets(masked: np.ndarray) -> np.ndarray:
    """(n_blocks, block) bool: the probe set's masked positions that a causal LM's next-token head can predict —
    all but those at a block's first position, which have no context."""
    targets = masked.copy()
    targets[:, 0] = False
    return targets


def _next_token_rows(last: Any, layer_l: Any, decoder: Any, ids: Any, chosen: np.ndarray,
                     index: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """One batch's next-token head at the targets `chosen` (bool (B, T), never at column 0): from the final-normed
    last hidden state `last` (B, T, H) and layer L `layer_l` (B, T, H) at i − 1, the logits of x_i → (transform,
    hidden, rank, index, surprisal, kept log-probabilities, their index) rows (`_kept_log_probs`)."""
    bi, ti = (torch.from_numpy(a).to(ids.device) for a in np.nonzero(chosen))
    x = last[bi, ti - 1]  # (m, H) the head's input: what predicts position i
    logits = decoder(x)  # (m, V)
    true = ids[bi, ti]
    return (x.float().cpu().numpy(), layer_l[bi, ti - 1].float().cpu().numpy(),
            token_rank(logits, true).cpu().numpy().astype(np.int64), index,
            token_surprisal(logits, true).cpu().numpy(), *_kept_log_probs(logits, index, keep))


def _kept_log_probs(logits: Any, index: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(log-softmax rows (k, V) float32, their content-token indices (k,)) of the rows of `logits` whose content
    index is in `keep` (sorted indices; None: none kept)."""
    rows = np.flatnonzero(np.isin(index, keep)) if keep is not None else np.zeros(0, dtype=np.int64)
    picked = logits[torch.from_numpy(rows).to(logits.device)].float()
    return torch.log_softmax(picked, dim=-1).cpu().numpy(), index[rows]


def _next_token_outputs(parts: list[tuple[np.ndarray, ...]], probe: ProbeSet, notes: list[str],
                        kept: bool = False) -> MaskedOutputs | None:
    """The batches' next-token rows as one `MaskedOutputs` (None without any target), noting dropped targets."""
    dropped = int(probe.masked[:, 0].sum())
    if dropped:
        notes.append(f"next-token head: {dropped} of {int(probe.masked.sum())} target positions are a block's first "
                     "token, with no context to predict it from: dropped")
    if not parts:
        notes.append("next-token head: no target position with context: masked variant not measured")
        return None
    t, h, r, i, sp, lp, li = (np.concatenate(cols) for cols in zip(*parts, strict=True))
    return _with_log_probs(MaskedOutputs(t, h, r, i, sp, head="next_token"), lp, li, kept)


def _with_log_probs(out: MaskedOutputs, log_probs: np.ndarray, index: np.ndarray, kept: bool) -> MaskedOutputs:
    """`out` with the kept log-probabilities in content-token order (when any were asked for)."""
    if kept:
        order = np.argsort(index, kind="stable")
        out.log_probs, out.log_prob_index = log_probs[order], index[order]
    return out


def head_note(acts: Activations) -> str | None:
    """The anchors family's note saying what its masked variant is, when it is not an MLM's: the architecture kind
    and the next-token head (None for encoders)."""
    if acts.masked is None or acts.masked.head != "next_token":
        return None
    return (f"architecture: causal ({acts.architecture}); masked_* metrics are its next-token head: at each of the "
            "probe set's masked positions i, the output embedding applied to the final-normed h_L(i−1) predicts x_i "
            "(no [MASK] input; the head transform T is the identity)")


def _masked_pass(encoder: Any, head: Head, probe: ProbeSet, ids_all: Any, batch_size: int, device: str,
                 keep: np.ndarray | None = None) -> MaskedOutputs:


    transform, decoder = head
    masked_all = torch.from_numpy(probe.masked)
    content_index = _content_index(probe)

    def batch(start: int, last: Any) -> tuple[np.ndarray, ...] | None:  # last: what _last_layer_apart yields
        ids = ids_all[start : start + batch_size]
        where = masked_all[start : start + batch_size]
        if not bool(where.any()):
            return None
        inputs = ids.clone()
        inputs[where] = probe.mask_id
        inputs = inputs.to(device)
        h_last = _hidden_at(encoder, last, inputs, where.to(device))  # (m, H)
        t = transform(h_last)  # (m, E)
        logits = decoder(t)  # (m, V)
        true = ids[where].to(device)
        index = content_index[start : start + batch_size][where.numpy()]
        return (t.float().cpu().numpy(), h_last.float().cpu().numpy(),
                token_rank(logits, true).cpu().numpy().astype(np.int64),
                index, token_surprisal(logits, true).cpu().numpy(), *_kept_log_probs(logits, index, keep))

    with _last_layer_apart(encoder) as last:
        done = map_on_threads(_inference(lambda start: batch(start, last)), range(0, ids_all.shape[0], batch_size),
                              cpu_workers(device), name="forward")
    parts = [p for p in done if p is not None]
    t, h, r, i, sp, lp, li = (np.concatenate(cols) for cols in zip(*parts, strict=True))
    return _with_log_probs(MaskedOutputs(t, h, r, i, sp), lp, li, keep is not None)


def _inference(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`fn` under `torch.inference_mode` in whichever thread runs it (the mode is per thread)."""
    def run(item: Any) -> Any:
        with torch.inference_mode():
            return fn(item)
    return run


def last_hidden_at(encoder: Any, ids: Any, where: Any) -> Any:
    """The last layer's hidden states at the positions `where` (bool, like `ids`) → (m, H), for encoder input `ids`.

    Only those rows are ever read, so for BERT-style layers (BERT, RoBERTa, ELECTRA: `encoder.encoder.layer`,
    self-attention with query/key/value, absolute positions) the last layer runs its queries, attention output and
    feed-forward block at those positions only; keys and values still come from every position, so the result is
    the full pass's, to rounding. That is most of the last layer's work when 15 % of the tokens are masked
    (about 8 % of a 4-layer masked pass). Other layouts run the whole encoder.
    """
    with _last_layer_apart(encoder) as last:
        return _hidden_at(encoder, last, ids, where)


@contextlib.contextmanager
def _last_layer_apart(encoder: Any) -> Iterator[Any]:
    """Within: the encoder without its last layer, which is yielded — when `_trimmable_last_layer` finds one; else
    None, the encoder whole. Set up once around all the batches: the encoder is changed in place, which threads
    running batches at the same time must all see."""
    last = _trimmable_last_layer(encoder)
    if last is None:
        yield None
        return
    layers = encoder.encoder.layer
    encoder.encoder.layer = torch.nn.ModuleList(list(layers)[:-1])
    try:
        yield last
    finally:
        encoder.encoder.layer = layers


def _hidden_at(encoder: Any, last: Any, ids: Any, where: Any) -> Any:
    """`last_hidden_at` inside `_last_layer_apart` (`last`: what it yielded)."""
    x = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    return x[where] if last is None else _layer_at(last, x, where)  # x: the last layer's input, (B, T, H)


def _trimmable_last_layer(encoder: Any) -> Any:
    """The last encoder layer if it has the BERT layout `_layer_at` reproduces, else None."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) < 1:
        return None
    last = layers[-1]
    attn = getattr(getattr(last, "attention", None), "self", None)
    config = getattr(encoder, "config", None)
    if (attn is None or not all(hasattr(attn, a) for a in ("query", "key", "value", "num_attention_heads",
                                                            "attention_head_size"))
            or not hasattr(last.attention, "output") or not hasattr(last, "feed_forward_chunk")
            or getattr(last, "is_decoder", False) or getattr(config, "is_decoder", False)
            or getattr(config, "position_embedding_type", "absolute") != "absolute"
            or getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa")):
        return None
    return last


def _layer_at(layer: Any, x: Any, where: Any) -> Any:
    """One BERT layer (eval mode, no attention mask) evaluated at the query positions `where` of x (B, T, H)."""
    attn = layer.attention.self
    b, t, _ = x.shape
    heads, d = attn.num_attention_heads, attn.attention_head_size
    bi, ti = torch.nonzero(where, as_tuple=True)
    counts = where.sum(1)
    slot = torch.arange(bi.numel(), device=x.device) - (torch.cumsum(counts, 0) - counts)[bi]
    rows = x[bi, ti]  # (m, H)
    # Each sequence's queries padded to the longest list; padded slots are computed and dropped.
    q = x.new_zeros(b, int(counts.max()), heads * d)
    q[bi, slot] = attn.query(rows)
    q = q.view(b, -1, heads, d).transpose(1, 2)
    k = attn.key(x).view(b, t, heads, d).transpose(1, 2)
    v = attn.value(x).view(b, t, heads, d).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, v, scale=d**-0.5).transpose(1, 2).reshape(b, -1, heads * d)
    return layer.feed_forward_chunk(layer.attention.output(a[bi, slot], rows))


def extract_snapshot(
    path: Path, probe: ProbeSet, *, masked_pass: bool = True, batch_size: int = 16, device: str = "cpu",
    reuse: Activations | None = None, attention: bool = False, copying: bool = False,
    keep_log_probs: np.ndarray | None = None,
) -> Activations:
    """Load the snapshot at `path`, extract, and free the model before returning (`reuse`, `keep_log_probs`: see
    `extract`)."""
    model, has_head, notes = load_model(path, device)
    try:
        acts = extract(model, probe, has_head=has_head, masked_pass=masked_pass, batch_size=batch_size, device=device,
                       reuse=reuse, attention=attention, copying=copying, keep_log_probs=keep_log_probs)
    except RuntimeError as exc:
        raise ProbeError(f"{path}: the forward pass failed ({_short(exc)}); check that the model matches the "
                         "tokenizer and block size, or lower --batch-size") from None
    finally:
        del model
        release_memory(device)
    acts.notes = notes + acts.notes
    return acts


def release_memory(device: str = "cpu") -> None:
    """Collect freed models (they hold reference cycles) and hand cached memory back: the CUDA cache, and on
    glibc the heap's free tail (`malloc_trim`), so the resident size does not ratchet up across snapshots."""
    gc.collect()
    if device.startswith("cuda"):

        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


def embedding_matrix(path: Path) -> np.ndarray:
    """(V, E) float32 input word-embedding matrix of the snapshot at `path` (loads and frees the model)."""
    model, _, _ = load_model(path, "cpu")
    try:
        return model.get_input_embeddings().weight.detach().float().numpy().copy()
    finally:
        del model
        release_memory("cpu")
