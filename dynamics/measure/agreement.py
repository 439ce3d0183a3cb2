"""Seed agreement (group scope): after every run is measured, the registered `agreement` metrics of each seed group
(`dynamics.results.groups`: runs whose configs differ only in seed) at each step its runs share, from arrays the
per-snapshot families already stored — no extra forward pass:

* `output_sample` (stored by the anchors family when `--agreement-positions` > 0): the head's log-probabilities at
  a fixed, seeded subsample of the probe set's masked positions (a causal LM's next-token targets), → `seed_jsd`;
* `cka_sample` (stored by geometry): each layer's hidden states on the probe set's fixed CKA tokens, → `seed_cka`.

Both arrays hold the same tokens for every run measured on one probe set, so the seeds' rows correspond.
Rows go to the store's `group_metrics` table (one transaction per group, `Store.write_group_family`), with the
number of runs behind them and, in `group_members`, which runs.

Storage. The subsample keeps k = `--agreement-positions` (default 256) positions in float16: 256 × V values, 4 MiB
per snapshot at V = 8k (a `mini` run's ~13 snapshots: ~50 MiB). float16's relative spacing is 2⁻¹¹, so a stored
log-probability ≥ −16 is off by ≤ 0.008 nats: p by ≤ 0.8 %, and only where p < e⁻⁸ does the absolute error exceed
4·10⁻⁶ — a change in the JSD far below its seed-to-seed differences (the metric renormalises each row in float64).
Top-k probabilities would not do: the JSD needs the whole distribution. 256 positions give the mean JSD a
standard error of roughly sd/16 over positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dynamics.measure import engine
from dynamics.measure.extract import MaskedOutputs
from dynamics.measure.probe_set import ProbeSet
from dynamics.results import store as st
from dynamics.results.groups import Group, seed_groups, stored_configs

FAMILY = "agreement"
OUTPUT_SAMPLE = "output_sample"  # the array kind the anchors family stores
CKA_SAMPLE = "cka_sample"


def sample_positions(probe: ProbeSet, k: int, seed: int) -> np.ndarray | None:
    """Sorted content-token indices of the fixed subsample: ≤ k of the probe set's masked positions that are not a
    block's first position (those have no next-token prediction in a causal LM), drawn with `seed`; None for k = 0."""
    if k <= 0:
        return None
    eligible = probe.masked.copy()
    eligible[:, 0] = False
    content_index = np.full(probe.ids.shape, -1, dtype=np.int64)
    content_index[probe.content] = np.arange(probe.n_tokens)
    pool = np.sort(content_index[eligible & probe.content])
    if len(pool) <= k:
        return pool
    return np.sort(np.random.default_rng([seed, 11]).choice(pool, size=k, replace=False))


def output_sample(masked: MaskedOutputs) -> dict[str, np.ndarray] | None:
    """The `output_sample` array of one snapshot: float16 log-probabilities (k, V) and their content indices."""
    if masked.log_probs is None or masked.log_prob_index is None:
        return None
    return {"log_probs": masked.log_probs.astype(np.float16), "index": masked.log_prob_index.astype(np.int64)}


def store_groups(store: st.Store, runs: Sequence[str] | None = None) -> list[Group]:
    """The store's seed groups of at least two runs (from the configs each run's row keeps), those with a member
    among `runs` when given."""
    table = store.runs()
    groups = seed_groups(stored_configs(table["name"], table["meta"]))
    keep = None if runs is None else set(runs)
    return [g for g in groups if g.size >= 2 and (keep is None or keep & set(g.runs))]


def measure_groups(store: st.Store, probe_hash: str, runs: Sequence[str] | None = None) -> list[str]:
    """Measure and store the agreement family of every seed group with a member in `runs` (all groups: None); the
    notes (which groups, how many seeds, steps left out)."""
    notes = []
    for group in store_groups(store, runs):
        notes += measure_group(store, probe_hash, group)
    return notes


def _files(store: st.Store, kind: str, runs: Sequence[str], probe_hash: str) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for run in runs:
        rows = store.arrays(kind, run=run, probe_hash=probe_hash)
        out[run] = {int(s): f for s, f in zip(rows["step"], rows["file"], strict=True) if int(s) >= 0}
    return out


def measure_group(store: st.Store, probe_hash: str, group: Group) -> list[str]:
    """The agreement rows of one group at each step its measured runs share (runs without any stored array of a
    kind are left out of that kind's metric); nothing is written when fewer than two runs have arrays."""
    runs = list(group.runs)
    outputs = _files(store, OUTPUT_SAMPLE, runs, probe_hash)
    samples = _files(store, CKA_SAMPLE, runs, probe_hash)
    with_out = [r for r in runs if outputs[r]]
    with_cka = [r for r in runs if samples[r]]
    members = [r for r in runs if r in with_out or r in with_cka]
    if len(with_out) < 2 and len(with_cka) < 2:
        return [f"seed agreement of {group.label}: fewer than two of its {group.size} runs are measured here"]
    out_steps = set.intersection(*(set(outputs[r]) for r in with_out)) if len(with_out) >= 2 else set()
    cka_steps = set.intersection(*(set(samples[r]) for r in with_cka)) if len(with_cka) >= 2 else set()
    collector = engine.Collector()
    step_rows: dict[int, tuple[int | None, list[st.MetricRow]]] = {}
    for step in sorted(out_steps | cka_steps):
        collector.rows = []
        last = None
        layers: dict[int, dict[str, object]] = {}
        if step in cka_steps:
            loaded = [store.load_array(samples[r][step]) for r in with_cka]
            n_layers = min(sum(1 for k in a if k.startswith("h") and k[1:].isdigit()) for a in loaded)
            last = n_layers - 1
            for layer in range(n_layers):
                layers[layer] = {"seed_samples": [a[f"h{layer}"] for a in loaded], "seed_log_probs": None}
        if step in out_steps:
            loaded_out = [store.load_array(outputs[r][step]) for r in with_out]
            if any(not np.array_equal(a["index"], loaded_out[0]["index"]) for a in loaded_out):
                collector.note(f"seed_jsd undefined at step {step}: the runs' output samples hold different positions "
                               "(measured with different --agreement-positions or --seed)", "seed_jsd")
            else:
                last = last if last is not None else 0
                layers.setdefault(last, {"seed_samples": None})["seed_log_probs"] = [a["log_probs"] for a in loaded_out]
        for layer, inputs in layers.items():
            inputs.setdefault("seed_log_probs", None)
            collector.measure(FAMILY, "group", layer, last if last is not None else 0, inputs)
        tokens = [t for r in members for t in store.tokens_seen(r, [step]) if t is not None]
        step_rows[step] = (int(np.mean(tokens)) if tokens else None, list(collector.rows))
    seeds = dict(zip(group.runs, group.seeds, strict=True))
    store.write_group_family(group=group.label, family=FAMILY, probe_hash=probe_hash,
                             members=[(r, seeds[r]) for r in members], step_rows=step_rows)
    left = sorted(set().union(*(set(outputs[r]) | set(samples[r]) for r in members)) - (out_steps | cka_steps))
    return [f"seed agreement of {group.label}: JSD over {len(with_out)} seeds at {len(out_steps)} steps, CKA over "
            f"{len(with_cka)} seeds at {len(cka_steps)} steps" + (f"; steps not measured in every run left out: "
                                                               f"{', '.join(map(str, left))}" if left else "")
            ] + collector.notes
