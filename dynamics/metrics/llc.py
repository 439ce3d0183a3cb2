"""The local learning coefficient (LLC) of a snapshot, estimated by SGLD (Lau et al., "The Local Learning
Coefficient: A Singularity-Aware Complexity Measure", 2023).

Definition. For the average loss L_n(w) over n samples and a trained point w*,

    λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*)),   β = 1 / log n by default,

the expectation over the localised, tempered posterior p(w) ∝ exp(−nβ L_n(w) − (γ/2)‖w − w*‖²). It is sampled by
stochastic-gradient Langevin dynamics (SGLD) started at w*:

    Δw = (ε/2) · (−nβ ∇L_B(w) − γ (w − w*)) + N(0, ε),

with ∇L_B the gradient of the mean loss of a minibatch B drawn (seeded) from the samples. Each chain runs `burn_in`
steps, then `draws` steps; at each draw (before the step, as the devinterp package does) it records
L_B(w) − L_B(w*), the minibatch's mean loss at w minus the same samples' mean loss at w* (per-sample losses at w*
are computed once). B is drawn independently of w, so the draws average to E_w[L_n(w)] − L_n(w*) without bias,
and subtracting L_B(w*) removes the minibatch's own spread, which nβ would otherwise multiply (at nβ ≈ 260 and
200 samples a batch it is most of the variance). A chain's value is nβ × its mean draw; the estimate is the mean
over chains, stored with their sample standard deviation (`sd`, ddof = 1) and each chain's value.

For a regular model (a unique minimum with a non-singular Hessian) λ = d/2, d the number of parameters; the unit
test checks this on linear regression with Gaussian noise. The usual failure modes are reported from the stored
values (`dynamics.results.llc_checks.diagnose`, for the report and the app): chains that disagree (sd / |mean|
above 0.2), a loss trace that has not settled (the mean draw of a chain's last third differs from its middle third
by more than 3 standard errors, `trace_drift`, each from 5 batch means, which allow for the draws'
autocorrelation), and a negative estimate (the sampler found
lower loss than w*: w* is not a local minimum at this resolution, or ε is too large).

This is a small estimator of our own rather than the devinterp package (which pulls a second torch build); its
settings (`SGLDSettings`) are the probe's `--llc-*` flags, stored with every estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from .registry import EMBEDDING_LAYER, register

_DRIFT_BATCHES = 5  # batch means per third, for the standard errors of `trace_drift`


@dataclass(frozen=True)
class SGLDSettings:
    """The estimator's settings (the probe's `--llc-*` flags): step size ε, localisation γ, nβ (None: n / log n),
    chains, draws and burn-in steps per chain, minibatch size (samples), and the seed of every random draw."""

    step_size: float = 1e-4
    gamma: float = 100.0
    nbeta: float | None = None
    chains: int = 4
    draws: int = 100
    burn_in: int = 50
    batch_size: int = 8
    seed: int = 0

    def params(self) -> dict[str, object]:
        """The settings as stored with the estimate (`completed.params`)."""
        return {f"llc_{f.name}": getattr(self, f.name) for f in fields(self)}


@dataclass
class LLCProblem:
    """What the estimator samples. `parameters` of a model (updated in place during sampling, restored after);
    `loss(units)`: the per-sample losses at the parameters' current values of the minibatch units `units` (a
    LongTensor; a unit is what one draws for a minibatch, e.g. a probe block), returned with those samples' indices
    in 0 … n−1; `n` samples in `units` units (for a plain dataset each sample its own unit). Evaluating `loss` must
    depend on nothing but the parameters and units (no dropout: the model in eval mode)."""

    parameters: Sequence[torch.nn.Parameter]
    loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    n: int
    units: int
    full_batch: int = 64  # units per forward when computing the losses at w*


@dataclass
class LLCEstimate:
    """The estimate: `value` (mean over chains), per-chain values, their sd, nβ used, L_n(w*), each chain's draws
    L_B(w) − L_B(w*) (chains, draws) and the largest `trace_drift` over chains."""

    value: float
    chains: np.ndarray
    sd: float
    nbeta: float
    init_loss: float
    traces: np.ndarray
    drift: float


def default_nbeta(n: int) -> float:
    """nβ with β = 1 / log n (Watanabe's optimal inverse temperature for WBIC, the paper's default)."""
    if n < 2:
        raise ValueError(f"the LLC needs at least 2 samples, got {n}")
    return n / math.log(n)


def sample_losses(problem: LLCProblem) -> np.ndarray:
    """(n,) float64 per-sample losses at the current parameters (all units, `full_batch` at a time)."""
    out = np.full(problem.n, np.nan)
    with torch.no_grad():
        for start in range(0, problem.units, problem.full_batch):
            losses, index = problem.loss(torch.arange(start, min(problem.units, start + problem.full_batch)))
            out[index.numpy()] = losses.double().numpy()
    if np.isnan(out).any():
        raise ValueError("the loss left samples without a value: its indices do not cover 0 … n−1")
    return out


def trace_drift(trace: np.ndarray) -> float:
    """|mean of the last third − mean of the middle third| of one chain's draws (L_B(w) − L_B(w*)), in standard errors of that
    difference (each third's from `_DRIFT_BATCHES` batch means); 0 for a constant trace, inf when the thirds
    differ but have no spread."""
    third = len(trace) // 3
    if third < _DRIFT_BATCHES:
        raise ValueError(f"a trace of {len(trace)} draws is too short to judge (at least {3 * _DRIFT_BATCHES})")
    mid, last = trace[third:2 * third].astype(np.float64), trace[len(trace) - third:].astype(np.float64)

    def se2(x: np.ndarray) -> float:
        means = np.array([b.mean() for b in np.array_split(x, _DRIFT_BATCHES)])
        return float(means.var(ddof=1) / _DRIFT_BATCHES)

    diff = abs(float(last.mean() - mid.mean()))
    se = math.sqrt(se2(mid) + se2(last))
    if se == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / se


def estimate(problem: LLCProblem, settings: SGLDSettings) -> LLCEstimate:
    """λ̂ by SGLD (module docstring). Deterministic given the settings' seed: every minibatch and noise draw comes
    from one generator per chain, seeded by (seed, chain). The parameters are restored to w* afterwards."""
    if problem.n < 1 or problem.units < 1 or settings.chains < 1 or settings.draws < 1 or settings.burn_in < 0:
        raise ValueError("the LLC needs samples, at least one chain and one draw")
    params = list(problem.parameters)
    w_star = [p.detach().clone() for p in params]
    nbeta = settings.nbeta if settings.nbeta is not None else default_nbeta(problem.n)
    eps = settings.step_size
    batch = min(settings.batch_size, problem.units)
    at_star = torch.from_numpy(sample_losses(problem))
    traces = np.zeros((settings.chains, settings.draws), dtype=np.float64)
    try:
        for c in range(settings.chains):
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([settings.seed, c]).generate_state(1)[0]))
            for t in range(settings.burn_in + settings.draws):
                losses, index = problem.loss(torch.randperm(problem.units, generator=gen)[:batch])
                loss = losses.mean()
                grads = torch.autograd.grad(loss, params)
                if t >= settings.burn_in:
                    traces[c, t - settings.burn_in] = float(loss.detach().double()) - float(at_star[index.cpu()].mean())
                with torch.no_grad():
                    for p, g, p0 in zip(params, grads, w_star, strict=True):
                        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
                        p.add_(-0.5 * eps * (nbeta * g + settings.gamma * (p - p0)) + math.sqrt(eps) * noise)
            with torch.no_grad():
                for p, p0 in zip(params, w_star, strict=True):
                    p.copy_(p0)
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, w_star, strict=True):
                p.copy_(p0)
    chains = nbeta * traces.mean(axis=1)
    sd = float(chains.std(ddof=1)) if len(chains) > 1 else 0.0
    drift = max(trace_drift(tr) for tr in traces) if settings.draws >= 3 * _DRIFT_BATCHES else math.nan
    return LLCEstimate(float(chains.mean()), chains, sd, nbeta, float(at_star.mean()), traces, drift)


@register("llc", family="llc", scope="snapshot", page="seeds", layers=EMBEDDING_LAYER, label="Local learning coefficient",
          unit="λ̂ (dimensionless; d/2 for a regular model of d parameters)",
          variants=("all", "sd", "drift", "chain_1", "…"),
          definition="SGLD estimate nβ(E_w[L_n(w)] − L_n(w*)) of the probe loss's local learning coefficient at the "
                     "snapshot (all: mean over chains; sd: their spread; drift: the trace's last-vs-middle-third "
                     "shift in standard errors; chain_k: each chain).")
def llc(llc_problem: LLCProblem, llc_settings: SGLDSettings) -> dict[str, float]:
    """λ̂ = nβ (E_w[L_n(w)] − L_n(w*)) by SGLD (`estimate`, module docstring) on the probe set's own loss: variants
    `all` (mean over chains), `sd` (sample sd over chains), `drift` (largest `trace_drift` over chains) and
    `chain_k` (k = 1 … chains)."""
    est = estimate(llc_problem, llc_settings)
    out = {"all": est.value, "sd": est.sd, "drift": est.drift}
    out.update({f"chain_{k + 1}": float(v) for k, v in enumerate(est.chains)})
    return out
