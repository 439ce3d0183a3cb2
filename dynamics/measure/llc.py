"""The opt-in `llc` family (`--metrics …,llc`): the local learning coefficient of each snapshot
(`dynamics.metrics.llc`) on the probe set's own loss.

The loss is the one the probe's masked variant reads: an encoder's MLM cross-entropy at the probe set's masked
positions (replaced by the mask token), or a causal LM's next-token cross-entropy at the same positions as targets
(those at a block's first position dropped). Its n samples are those positions; SGLD minibatches are probe blocks
(`--llc-batch-size` of them), so a minibatch holds every masked position of its blocks. The model is loaded afresh
(the extraction's copy runs under inference mode and is freed), in eval mode (no dropout), all its parameters
sampled. The estimate's settings are the family's params (`completed.params`), so changing a `--llc-*` flag
measures again.

Cost: chains × (burn-in + draws) forward and backward passes of `--llc-batch-size` blocks, plus one forward pass
over the probe set; docs/findings.md states the seconds per `mini` snapshot at the defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dynamics.config import ProbeConfig
from dynamics.measure import engine
from dynamics.measure import extract as ex
from dynamics.measure.probe_set import ProbeSet
from dynamics.metrics.llc import LLCProblem, SGLDSettings
from dynamics.results.store import FamilyResult

FAMILY = "llc"


def settings(cfg: ProbeConfig) -> SGLDSettings:
    """The estimator's settings from the `--llc-*` flags."""
    return SGLDSettings(step_size=cfg.llc_step_size, gamma=cfg.llc_gamma, nbeta=cfg.llc_nbeta, chains=cfg.llc_chains,
                        draws=cfg.llc_draws, burn_in=cfg.llc_burn_in, batch_size=cfg.llc_batch_size, seed=cfg.llc_seed)


def params(cfg: ProbeConfig) -> str:
    """The family's `completed.params`: every estimator setting."""
    return engine.family_params(FAMILY, loss="probe_head", **settings(cfg).params())


def problem(model: torch.nn.Module, probe: ProbeSet) -> tuple[LLCProblem | None, str | None]:
    """The LLC problem of `model` on the probe set's loss (module docstring), or (None, why) when the model has no
    recognised head or the probe set no position to predict."""
    encoder = ex._encoder(model)
    kind = ex.architecture_kind(encoder.config)
    head = ex.mlm_head(model) if kind == "encoder" else None
    next_head = ex.causal_head(model) if kind == "causal" else None
    if head is None and next_head is None:
        return None, "llc not measured: the model has no recognised MLM or next-token head"
    if kind == "encoder" and probe.mask_id is None:
        return None, "llc not measured: the tokenizer has no mask token for the MLM loss"
    targets = probe.masked if kind == "encoder" else ex.next_token_targets(probe.masked)
    n = int(targets.sum())
    if n < 2:
        return None, "llc not measured: fewer than two masked positions in the probe set"
    ordinal = np.full(targets.shape, -1, dtype=np.int64)
    ordinal[targets] = np.arange(n)
    ids_all = torch.from_numpy(probe.ids.astype(np.int64))
    targets_all = torch.from_numpy(targets)
    extra = {"use_cache": False} if kind == "causal" else {}
    dev = next(model.parameters()).device

    def loss(units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = units.sort().values  # the same blocks in the same order, whichever order they were drawn in
        index = torch.from_numpy(ordinal[idx.numpy()][targets[idx.numpy()]])
        ids, where = ids_all[idx].to(dev), targets_all[idx].to(dev)
        if kind == "encoder":
            inputs = ids.masked_fill(where, probe.mask_id)
            h = encoder(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state[where]
            transform, decoder = head
            logits = decoder(transform(h))
        else:
            h = encoder(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).last_hidden_state
            bi, ti = torch.nonzero(where, as_tuple=True)
            logits = next_head(h[bi, ti - 1])
        return F.cross_entropy(logits.float(), ids[where], reduction="none"), index

    parameters = [p for p in model.parameters()]
    for p in parameters:
        p.requires_grad_(True)
    return LLCProblem(parameters, loss, n, probe.ids.shape[0], full_batch=16), None


def measure(path: Path, probe: ProbeSet, cfg: ProbeConfig, device: str) -> FamilyResult:
    """The `llc` family of the snapshot at `path`: its registered metric at layer 0, and a note saying what loss and
    how many samples it used (or why it was not measured)."""
    out = engine.Collector()
    model, _has_head, _notes = ex.load_model(path, device)
    try:
        llc_problem, why = problem(model, probe)
        if why is not None:
            out.note(why)
        else:
            sgld = settings(cfg)
            out.measure(FAMILY, "snapshot", 0, 0, {"llc_problem": llc_problem, "llc_settings": sgld})
            nbeta = sgld.nbeta if sgld.nbeta is not None else llc_problem.n / np.log(llc_problem.n)
            out.note(f"llc on the probe set's head loss over n = {llc_problem.n} positions, nβ = {nbeta:.1f}, "
                     f"ε = {sgld.step_size:g}, γ = {sgld.gamma:g}, {sgld.chains} chains × {sgld.draws} draws after "
                     f"{sgld.burn_in} burn-in steps, {sgld.batch_size} blocks a minibatch, seed {sgld.seed}")
    finally:
        del model
        ex.release_memory(device)
    return out.result()
