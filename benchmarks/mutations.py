"""Mutation check of the metric code: does a deliberate one-line formula change make a test fail?

Each mutation replaces one line of metric code (exactly one occurrence of `old`, else the mutation is reported as
stale), runs the metric tests — the independent float64 references (`tests/reference/`) and the unit tests of the
metric functions — and restores the file, whatever happens. A mutation is *caught* when at least one test fails.
Not part of the test suite (it runs the suite once per mutation: about a minute each on 2 cores).

Usage: python benchmarks/mutations.py [--only N,M] [--list]
Prints one line per mutation (file, change, caught or NOT CAUGHT, the first failing test) and a summary; exits 1
if a mutation is not caught.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The unit tests first: a mutation they catch stops the run (-x) before the reference fixtures are built (a minute).
TESTS = ["tests/unit/test_metrics_anchors.py", "tests/unit/test_metrics_context.py",
         "tests/unit/test_metrics_geometry.py", "tests/unit/test_metrics_cka.py", "tests/unit/test_metrics_projection.py",
         "tests/unit/test_metrics_precision.py", "tests/unit/test_dynamics_families.py",
         "tests/unit/test_metrics_rogue.py", "tests/unit/test_acquisition.py", "tests/unit/test_metrics_attention.py",
         "tests/unit/test_agreement.py", "tests/unit/test_llc.py", "tests/reference"]

M = "dynamics/metrics/"
MUTATIONS: list[tuple[str, str, str]] = [  # (file, old line fragment, new)
    # anchors / drift
    (M + "anchors.py", 'out: Binned = {"all": float(v.mean()) if v.numel() else None}',
     'out: Binned = {"all": float(v.median()) if v.numel() else None}'),
    (M + "anchors.py", "return by_bin(1.0 / masked.rank.double(), masked.bins, bin_names)",
     "return by_bin(1.0 / (masked.rank.double() + 1), masked.bins, bin_names)"),
    (M + "anchors.py", "return by_bin((masked.rank == 1).double(), masked.bins, bin_names)",
     "return by_bin((masked.rank <= 2).double(), masked.bins, bin_names)"),
    (M + "anchors.py", "keep[torch.from_numpy(special_ids[special_ids < cos.shape[0]])] = False",
     "keep[torch.from_numpy(special_ids[special_ids < cos.shape[0]])] = True"),
    (M + "anchors.py", "return by_bin(cosine_rows(h, e), freq_bin, bin_names)",
     "return by_bin(cosine_rows(h, e).abs(), freq_bin, bin_names)"),
    (M + "anchors.py", '"anchor_drift_probe": by_bin(cos[torch.from_numpy(types)]',
     '"anchor_drift_probe": by_bin(cos[torch.from_numpy(types) - 1]'),
    # context
    (M + "context.py", "return float(sums.sum() / counts.sum()) if counts.sum() > 0 else math.nan",
     "return float(np.mean(sums / np.maximum(counts, 1))) if counts.sum() > 0 else math.nan"),
    (M + "context.py", "other = other_sum / other_pairs if other_pairs > 0 else math.nan",
     "other = other_sum / (other_pairs + 1) if other_pairs > 0 else math.nan"),
    (M + "context.py", '"ctx_same_window": in_window, "ctx_gap_window": in_window - pairs["other"]}',
     '"ctx_same_window": in_window, "ctx_gap_window": in_window + pairs["other"]}'),
    (M + "context.py", "return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)",
     "return np.where(counts > 0, sums / (counts + 1), np.nan)"),
    (M + "context.py", "return float(info_nce_of_cosines(pos, neg, tc_temperature))",
     "return float(info_nce_of_cosines(pos, neg, 2 * tc_temperature))"),
    (M + "context.py", "ok = (own > best_other) & eligible[start : start + chunk]",
     "ok = (own >= best_other - 0.05) & eligible[start : start + chunk]"),
    # geometry
    (M + "geometry.py", "    return total / pairs\n", "    return total / (pairs + 1)\n"),
    (M + "geometry.py", '"self_similarity_adj": value - anisotropy(r)}', '"self_similarity_adj": value + anisotropy(r)}'),
    (M + "geometry.py", "    ok = counts >= 2\n", "    ok = counts >= 1\n"),
    (M + "geometry.py", '"mev_adj": value - anisotropy(r),', '"mev_adj": value - explained_variance_pc1(r),'),
    (M + "geometry.py", '"mev_adj_pc1": value - explained_variance_pc1(r)}', '"mev_adj_pc1": value + explained_variance_pc1(r)}'),
    (M + "geometry.py", '"intra_similarity_adj": value - anisotropy(r)}', '"intra_similarity_adj": value + anisotropy(r)}'),
    (M + "geometry.py", '"rankme_centred": effective_rank(h, center=True)}', '"rankme_centred": effective_rank(h)}'),
    (M + "geometry.py", "p = s / s.sum() + 1e-7", "p = s / s.sum() + 1e-4"),
    (M + "rogue.py", "(sums * sums - squares) / (r.n * (r.n - 1))", "(sums * sums + squares) / (r.n * (r.n - 1))"),
    (M + "rogue.py", "torch.topk(c, min(k, c.numel()))", "torch.topk(c, min(k + 1, c.numel()))"),
    (M + "rogue.py", "scale = torch.where(std > 0, 1 / std, torch.zeros_like(std))",
     "scale = torch.where(std > 0, 1 / std.sqrt(), torch.zeros_like(std))"),
    (M + "geometry.py", "ev = eigvalsh(centred + n * torch.outer(mean, mean))",
     "ev = eigvalsh(centred + (n - 1) * torch.outer(mean, mean))"),
    (M + "geometry.py", "phi = (n - defect**2 * (n - math.sqrt(n))) ** 2 / n**2",
     "phi = (n - defect**2 * (n - math.sqrt(n))) / n"),
    (M + "geometry.py", "keep = int(math.floor(n * (1 - discard_fraction)))",
     "keep = int(math.floor(n * (1 - 2 * discard_fraction)))"),
    (M + "geometry.py", "return math.log(total / (n * (n - 1)))", "return math.log(total / (n * n))"),
    (M + "geometry.py", "    return float(sums[0] / counts[0])\n", "    return float(sums[0] / (counts[0] + 1))\n"),
    (M + "geometry.py", "return float(r.norms.to(torch.float64).mean())",
     "return float(r.norms.to(torch.float64).median())"),
    ("dynamics/measure/families.py", "torch.sub(h.x, e_raw, out=", "torch.add(h.x, e_raw, out="),
    # LayerNorm outliers
    (M + "rogue.py", "return np.abs(w - w.mean()) > OUTLIER_STD * std if std > 0",
     "return np.abs(w - w.mean()) > (OUTLIER_STD - 1) * std if std > 0"),
    (M + "rogue.py", "std = w.std()\n", "std = w.std(ddof=1)\n"),
    (M + "rogue.py", "return {k: float((m & final).sum() / final.sum()) for k, m in enumerate(masks)}",
     "return {k: float((m & final).sum() / m.sum().clip(1)) for k, m in enumerate(masks)}"),
    (M + "rogue.py", "std = (torch.diagonal(centred_gram(r)) / r.n).sqrt()",
     "std = torch.diagonal(centred_gram(r)) / r.n"),
    # word acquisition
    (M + "acquisition.py", "return torch.logsumexp(z, dim=1) - z.gather(1, targets.long()[:, None]).squeeze(1)",
     "return torch.logsumexp(z, dim=1) - z.amax(1)"),
    (M + "acquisition.py", "means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)",
     "means = np.where(counts > 0, sums / np.maximum(counts + 1, 1), np.nan)"),
    (M + "acquisition.py", "mid = 0.5 * (chance + floor)", "mid = 0.5 * (chance + lo)"),
    (M + "acquisition.py", "aoa = x0 + float(np.log((hi - lo) / (mid - lo) - 1.0)) / k",
     "aoa = x0 - float(np.log((hi - lo) / (mid - lo) - 1.0)) / k"),
    (M + "acquisition.py", "if not np.isfinite(aoa) or aoa < x_min or aoa > x_max:",
     "if not np.isfinite(aoa) or aoa > x_max:"),
    (M + "acquisition.py", "return np.stack([s, 1.0 - s, ds * (x - x0), -ds * k], axis=-1)",
     "return np.stack([s, 1.0 - s, ds * (x - x0), ds * k], axis=-1)"),
    (M + "acquisition.py", "held = ((t <= lower[live]) & (grad > 0)) | ((t >= upper[live]) & (grad < 0))",
     "held = ((t <= lower[live]) & (grad < 0)) | ((t >= upper[live]) & (grad > 0))"),
    (M + "acquisition.py", "x0s = np.linspace(x_min[sl] - 1.0, x_max[sl] + 1.0, 61, axis=1)",
     "x0s = np.linspace(x_min[sl], x_max[sl], 61, axis=1)"),
    (M + "acquisition.py", "_K_BANDS = (slice(0, 13), slice(13, 26), slice(26, 39), slice(39, 40))",
     "_K_BANDS = (slice(0, 40),)"),
    (M + "acquisition.py", "out = ok & ((lo < 0) | (lo > top) | (hi < 0) | (hi > top))",
     "out = ok & ((lo < 0) | (hi < 0))"),
    (M + "acquisition.py", "best = _sum_of_squares(xs, yb, wb, refined).reshape(-1, b).argmin(1)",
     "best = _sum_of_squares(xs, yb, wb, refined).reshape(-1, b).argmax(1)"),
    (M + "acquisition.py", "lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))",
     "lo, hi = (float(v) for v in np.percentile(boot, [5, 95]))"),
    (M + "acquisition.py", "return aoa[ok], np.log10(self.frequency[ok].astype(np.float64))",
     "return aoa[ok], np.log10(self.counts[ok].astype(np.float64))"),
    (M + "acquisition.py", "return float((word_curves.status[seen] == 0).mean())",
     "return float((word_curves.status == 0).mean())"),
    (M + "acquisition.py", "return float(np.median(aoa))", "return float(np.mean(aoa))"),
    # cka
    (M + "cka.py", "return _finite(cka_layers[layer, layer - 1])", "return _finite(cka_layers[layer, 0])"),
    (M + "cka.py", "last = cka_steps.shape[0] - 1", "last = max(0, cka_steps.shape[0] - 2)"),
    (M + "cka.py", "return {k: _finite(cka_steps[k, k - 1]) for k in range(1, cka_steps.shape[0])}",
     "return {k: _finite(cka_steps[k, 0]) for k in range(1, cka_steps.shape[0])}"),
    # attention and copying
    (M + "attention.py", "entropy = -torch.special.xlogy(probs, probs).sum(dim=-1)",
     "entropy = -torch.special.xlogy(probs, probs + 1e-3).sum(dim=-1)"),
    (M + "attention.py", "    sinks[none, 0] = True\n", "    sinks[none, -1] = True\n"),
    (M + "attention.py", "valid = queries[:, -offset:] & keys[:, : t + offset]",
     "valid = queries[:, : t + offset] & keys[:, -offset:]"),
    (M + "attention.py", 'distance = torch.einsum("bhqk,qk->bhq", probs, (pos[:, None] - pos[None, :]).abs())',
     'distance = torch.einsum("bhqk,qk->bhq", probs, (pos[:, None] - pos[None, :]).clamp(min=0))'),
    (M + "attention.py", "return float(np.max(sums / count))", "return float(np.mean(sums / count))"),
    (M + "copying.py", "ind, n_ind = offset_sums(probs, second, keys, -length + 1)",
     "ind, n_ind = offset_sums(probs, second, keys, -length - 1)"),
    ("dynamics/measure/attention.py", ".triu(tk - tq + 1)", ".triu(tk - tq + 2)"),
    ("dynamics/measure/attention.py", "right[\"second\"].append(hit[:, t0 + copy.length : t0 + 2 * copy.length - 1].ravel())",
     "right[\"second\"].append(hit[:, t0 + copy.length - 1 : t0 + 2 * copy.length - 2].ravel())"),
    ("dynamics/measure/attention.py", "right[\"second\"].append(ok[copy.second_scored[s : s + batch_size]])",
     "right[\"second\"].append(ok[copy.first_scored[s : s + batch_size]])"),
    ("dynamics/measure/probe_set.py", "masked[:, t:] |= first[:, :-t]", "masked[:, t + 1 :] |= first[:, : -t - 1]"),
    # seed agreement and the local learning coefficient
    (M + "agreement.py", "kq = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=1)",
     "kq = np.where(q > 0, q * np.log(q / p), 0.0).sum(axis=1)"),
    (M + "agreement.py", "for a, b in combinations(range(len(probs)), 2)]))", "for a, b in [(0, 1)]]))"),
    (M + "agreement.py", "mat = cka_matrix([torch.as_tensor(np.asarray(x)) for x in seed_samples], debiased=True)",
     "mat = cka_matrix([torch.as_tensor(np.asarray(x)) for x in seed_samples], debiased=False)"),
    (M + "llc.py", "traces[c, t - settings.burn_in] = float(loss.detach().double()) - float(at_star[index.cpu()].mean())",
     "traces[c, t - settings.burn_in] = float(loss.detach().double()) - float(at_star.mean())"),
    (M + "llc.py", "p.add_(-0.5 * eps * (nbeta * g + settings.gamma * (p - p0)) + math.sqrt(eps) * noise)",
     "p.add_(-0.5 * eps * (nbeta * g + settings.gamma * (p - p0)) + eps * noise)"),
]


def run_tests() -> tuple[bool, str]:
    """(some test failed, the first failing test's id)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                          cwd=REPO, env=env, capture_output=True, text=True)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
    return proc.returncode != 0, failed[0] if failed else ("" if proc.returncode == 0 else proc.stdout[-300:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated mutation numbers (1-based) to run")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = ap.parse_args()
    chosen = range(1, len(MUTATIONS) + 1) if not args.only else [int(x) for x in args.only.split(",")]
    if args.list:
        for k in chosen:
            f, old, new = MUTATIONS[k - 1]
            print(f"{k:2d} {f}: {old.strip()!r} -> {new.strip()!r}")
        return 0
    caught = 0
    for k in chosen:
        file, old, new = MUTATIONS[k - 1]
        path = REPO / file
        original = path.read_text()
        if original.count(old) != 1:
            print(f"{k:2d} {file}: STALE (the line occurs {original.count(old)} times): {old.strip()!r}")
            continue
        t0 = time.perf_counter()
        try:
            path.write_text(original.replace(old, new))
            failed, test = run_tests()
        finally:
            path.write_text(original)
        caught += failed
        verdict = f"caught by {test}" if failed else "NOT CAUGHT"
        print(f"{k:2d} {file}: {old.strip()[:70]!r} -> {new.strip()[:70]!r}: {verdict} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    print(f"{caught} of {len(chosen)} mutations caught")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
