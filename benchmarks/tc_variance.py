"""Variance over draws of the TC loss and its gradient: negatives drawn per anchor (the released algorithm) vs
shared by the anchors of a sequence (`--tc-negative-sharing sequence`). CPU only; not part of the test suite.

    python benchmarks/tc_variance.py [--draws 1000] [--quick]

Both samplers give each anchor's negatives the same distribution, so the expected loss and gradient are equal
(tested in tests/unit/test_tc_paths.py); what sharing changes is how much one draw scatters around them. For a
fixed batch of context vectors g = h − e, over `--draws` draws of the sampler, it prints
* the standard deviation of the batch TC loss (mean over anchors), and
* the total variance (trace of the covariance over draws) of the loss's gradient with respect to parameters
  shared by all positions, beside the squared norm of the mean gradient for scale. (The gradient with
  respect to h itself would not show a difference: with positives and negatives detached, ∂L/∂h_i depends on
  anchor i's draws alone, whose distribution sharing keeps; only sums over anchors, as in every weight's
  gradient, see the correlation.)
per-anchor and shared, and the ratio shared / per-anchor. Batches:
* `clustered`: synthetic g with a direction common to all sequences, one per sequence, a drift along the
  sequence and noise (window positives closer than other positions, other sequences farther, anisotropic
  like trained encoders; loss about 0.5), h = h0 · W with the gradient taken with respect to W (= I);
* `bert-mini`: a random-initialised `mini` BERT (4 layers, hidden 256) on Zipf-distributed token ids, the
  gradient with respect to its last encoder layer's parameters.
K = 50, W = 5, τ = 0.07 as in the paper; positives are drawn the same way in both.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taco.objectives import sample_tc_indices, tc_loss  # noqa: E402


def clustered(b: int, seq_len: int, hidden: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """g = a direction shared by all sequences (anisotropy) + one per sequence + a drift along the sequence
    + noise: adjacent cosine about 0.87, other-sequence cosine about 0.58, TC loss about 0.5 at 16 x 64."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(1, 1, hidden, generator=gen)
    centre = torch.randn(b, 1, hidden, generator=gen)
    drift = torch.cumsum(torch.randn(b, seq_len, hidden, generator=gen), dim=1) / math.sqrt(seq_len)
    g = common + 0.5 * centre + drift + 0.5 * torch.randn(b, seq_len, hidden, generator=gen)
    e = 0.5 * torch.randn(b, seq_len, hidden, generator=gen)
    return g + e, e


def bert_mini(b: int, seq_len: int, seed: int = 0):  # noqa: ANN201 - returns a closure
    """A random-initialised `mini` BERT on Zipf-like token ids; the TC loss's gradient is taken with respect to
    the parameters of its last encoder layer (recomputed per draw from the fixed layer-3 states)."""
    from transformers import BertForMaskedLM

    from taco.presets import build_config

    torch.manual_seed(seed)
    model = BertForMaskedLM(build_config("mini", 8192)).eval()
    ranks = torch.distributions.Pareto(torch.tensor(1.0), torch.tensor(1.2)).sample((b, seq_len))  # Zipf-like
    ids = 5 + (ranks.long() % 8187)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS], [SEP]
    with torch.no_grad():
        out = model.bert(input_ids=ids, output_hidden_states=True)
    last = model.bert.encoder.layer[-1]
    below, e = out.hidden_states[-2], out.hidden_states[0]
    params = list(last.parameters())

    def make() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        h = last(below)
        return (h[0] if isinstance(h, tuple) else h), e, params

    return make


def linear_on(h0: torch.Tensor, e: torch.Tensor):  # noqa: ANN201 - returns a closure
    """h = h0 · W with W = I: the gradient with respect to W is Σ_i h0_i ∂L/∂h_i, a parameter shared by all
    positions (as every weight of an encoder is), so correlations between anchors count."""
    w = torch.eye(h0.shape[-1], requires_grad=True)

    def make() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        return h0 @ w, e, [w]

    return make


def moments(make, valid: torch.Tensor, sharing: str, draws: int, seed: int) -> dict[str, float]:  # noqa: ANN001
    """Mean and std of the loss; total variance (trace of the covariance) of the parameter gradient over draws
    and the squared norm of its mean."""
    gen = torch.Generator().manual_seed(seed)
    losses = []
    g_sum = g_sq = None
    for _ in range(draws):
        h, e, params = make()
        index = sample_tc_indices(valid, valid, 5, 50, gen, negative_sharing=sharing)
        loss = tc_loss(h, e, index, 0.07)
        grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()
        losses.append(float(loss.detach()))
        g_sum = grad if g_sum is None else g_sum + grad
        g_sq = grad**2 if g_sq is None else g_sq + grad**2
    mean_loss = sum(losses) / draws
    var_loss = sum((x - mean_loss) ** 2 for x in losses) / (draws - 1)
    mean_grad = g_sum / draws
    grad_var = float(((g_sq / draws - mean_grad**2) * draws / (draws - 1)).sum())
    return {"mean": mean_loss, "std": math.sqrt(var_loss), "se": math.sqrt(var_loss / draws), "grad_var": grad_var,
            "grad_signal": float((mean_grad**2).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=1000, help="sampler draws per setting")
    ap.add_argument("--quick", action="store_true", help="200 draws, the small batches only")
    args = ap.parse_args()
    draws = 200 if args.quick else args.draws
    settings = [("clustered", 16, 64), ("bert-mini", 16, 64)] + ([] if args.quick else [("clustered", 8, 256)])
    print(f"# {draws} draws per setting, K=50, W=5, tau=0.07; std of the batch TC loss, total variance of its "
          "gradient w.r.t. parameters shared by all positions; ratio = shared / per-anchor")
    for kind, b, seq_len in settings:
        make = linear_on(*clustered(b, seq_len, 64)) if kind == "clustered" else bert_mini(b, seq_len)
        valid = torch.ones(b, seq_len, dtype=torch.bool)
        valid[:, 0] = valid[:, -1] = False
        per = moments(make, valid, "anchor", draws, seed=1)
        shared = moments(make, valid, "sequence", draws, seed=2)
        what = f"[{kind} {b}x{seq_len}]"
        z = (shared["mean"] - per["mean"]) / math.hypot(shared["se"], per["se"])
        print(f"{what:<22} loss std   shared {shared['std']:.5f} | per-anchor {per['std']:.5f} | ratio of "
              f"variances {(shared['std'] / per['std']) ** 2:6.2f} (means {shared['mean']:.4f} vs {per['mean']:.4f}, "
              f"z {z:+.2f})", flush=True)
        print(f"{what:<22} grad var   shared {shared['grad_var']:.3e} | per-anchor {per['grad_var']:.3e} | ratio "
              f"{shared['grad_var'] / per['grad_var']:6.2f} (|mean grad|^2 {per['grad_signal']:.3e})", flush=True)


if __name__ == "__main__":
    main()
