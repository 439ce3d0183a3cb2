"""Runs as seed groups, and the one interval used for differences between groups (app and experiment reports).

* A **seed group** is the set of runs whose `run.json` configs are equal once the settings that do not change
  what is trained are left out: the seed itself, where the run is written, how it is resumed or displayed, the
  device, the cache folder and the TC kernel (`NOT_THE_RECIPE`).
* The interval of a mean over seeds — of one group, or of the per-seed differences of two groups paired by seed —
  is Student's t: mean ± t_{(1+level)/2, n−1} · s / √n, s the sample standard deviation (ddof = 1). It is
  honest at the n = 3 seeds a study here has (a percentile bootstrap over 3 values covers far less than its nominal
  level; `tests/unit/test_groups.py` measures both), and wide there, which the app says.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
NOT_THE_RECIPE = frozenset({"seed", "output_dir", "resume", "overwrite", "dry_run", "progress", "device",
                            "data_cache", "tc_kernel"})


@dataclass(frozen=True)
class Group:
    """Runs that differ only by seed: `runs` sorted by seed (then name), `seeds` alike (None where unknown)."""

    label: str
    key: str  # hash of the shared recipe
    runs: tuple[str, ...]
    seeds: tuple[int | None, ...]
    objective: str | None

    @property
    def size(self) -> int:
        return len(self.runs)


def stored_configs(names: Iterable[Any], metas: Iterable[Any]) -> dict[str, dict[str, Any] | None]:
    """name → training config of each run row of a results store (`Store.runs()`: `name`, `meta`), read from the
    `run.json` the row's `meta` JSON keeps (its "config"); None where the row has none or it cannot be read."""
    out: dict[str, dict[str, Any] | None] = {}
    for name, meta in zip(names, metas, strict=True):
        try:
            data = json.loads(meta) if isinstance(meta, str) else {}
        except json.JSONDecodeError:
            data = {}
        config = data.get("config") if isinstance(data, dict) else None
        out[str(name)] = config if isinstance(config, dict) else None
    return out


def recipe(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a run's config that define what is trained (`NOT_THE_RECIPE` left out)."""
    return {k: v for k, v in sorted(config.items()) if k not in NOT_THE_RECIPE}


def seed_groups(configs: Mapping[str, Mapping[str, Any] | None]) -> list[Group]:
    """Group runs (name → `run.json`'s `config`, None or {} when unknown) by recipe. A run without a config is a
    group of its own. Groups are sorted by label; labels are the runs' common name stem (trailing seed markers
    such as `-s1`/`_seed2` dropped), else objective-preset, made unique."""
    by_key: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for name, cfg in configs.items():
        cfg = dict(cfg or {})
        key = _key(recipe(cfg)) if cfg else "run:" + name
        by_key.setdefault(key, []).append((name, cfg))
    groups = []
    for key, members in by_key.items():
        members.sort(key=lambda m: (_seed(m[1]) is None, _seed(m[1]) or 0, m[0]))
        names = tuple(m[0] for m in members)
        cfg = members[0][1]
        groups.append(Group(_stem(names, cfg), key, names, tuple(_seed(m[1]) for m in members), cfg.get("objective")))
    groups.sort(key=lambda g: (g.label, g.key))
    seen: dict[str, int] = {}
    out = []
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
        out.append(g if seen[g.label] == 1 else Group(f"{g.label} #{seen[g.label]}", g.key, g.runs, g.seeds,
                                                       g.objective))
    return out


def _key(rec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _seed(cfg: Mapping[str, Any]) -> int | None:
    s = cfg.get("seed")
    return int(s) if isinstance(s, int | float) and not isinstance(s, bool) else None


_SEED_SUFFIX = re.compile(r"(?:[-_.](?:s|seed)?\d*|\d+)$", re.IGNORECASE)


def _stem(names: Sequence[str], cfg: Mapping[str, Any]) -> str:
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(list(names))
    prefix = _SEED_SUFFIX.sub("", prefix).rstrip("-_. ")
    if prefix:
        return prefix
    parts = [str(cfg[k]) for k in ("objective", "preset") if cfg.get(k)]
    return "-".join(parts) or names[0]


# --------------------------------------------------------------------------------------------- intervals

@dataclass(frozen=True)
class Interval:
    """A mean over n seeds with its Student-t interval at `level` (low/high NaN with n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = LEVEL

    def describe(self, digits: int = 2) -> str:
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (n = {self.n}: no interval)"
        return (f"{self.mean:+.{digits}f} ({self.level:.0%} CI {self.low:+.{digits}f} to {self.high:+.{digits}f}, "
                f"n = {self.n})")


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of the finite `values` and its two-sided Student-t interval at `level`."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    mean, low, high, std = t_intervals(x[:, None], level)
    return Interval(float(mean[0]), float(low[0]), float(high[0]), int(x.size), float(std[0]), level)


def t_intervals(x: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise over (n_seeds, m) values, NaN entries ignored: (mean, low, high, std), each (m,). Columns with
    fewer than two values have NaN bounds (and std); with none, NaN mean."""
    from scipy import stats  # here: its import costs ~0.3 s, and only seed-group intervals need it

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected (n_seeds, m) values; got shape {x.shape}")
    ok = np.isfinite(x)
    n = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, x, 0).sum(0) / n
        dev = np.where(ok, x - mean, 0)
        std = np.sqrt((dev * dev).sum(0) / (n - 1))
        std = np.where(n >= 2, std, np.nan)
        t = np.where(n >= 2, stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1)), np.nan)
        half = t * std / np.sqrt(n)
    mean = np.where(n > 0, mean, np.nan)
    return mean, mean - half, mean + half, std


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Interval:
    """b − a over the seeds both have (seed → value), with its t interval (`t_interval` of the differences)."""
    seeds = sorted(set(a) & set(b))
    return t_interval([b[s] - a[s] for s in seeds], level)


def run_groups(runs_table: Any, runs: Sequence[str]) -> list[Group]:
    """The seed groups (`seed_groups`) of `runs`, from the `run.json` each run's row in the store's `runs` table keeps
    (`stored_configs`)."""
    stored = stored_configs(runs_table["name"], runs_table["meta"])
    return seed_groups({name: stored.get(name) for name in runs})
