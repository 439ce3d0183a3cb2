"""Which colour each run is drawn in: one categorical palette for the app's charts and the probe's figures.

Objectives are told apart by hue family, runs of one objective by shade: MLM runs are blues and teals (hues
180-235°), TACO runs oranges and reds (0-45°), any other or unknown objective greens (70-150°). Within a family
runs take the shades in the order of their names, so the colour of a run depends only on the set of runs it is
assigned over — give `run_colours` every run known (a store's runs, all runs the app found), never the runs a
page happens to show, and a run keeps its colour on every page and in every figure.

Pure functions of names and hex strings ("#rrggbb"); no plotting library is imported here.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping, Sequence

MLM, TACO, OTHER = "mlm", "taco", "other"
# Six hand-picked shades per family, alternating lightness so that neighbours in the order differ most.
SHADES: dict[str, tuple[str, ...]] = {
    MLM: ("#1f77b4", "#6baed6", "#08519c", "#17a2b8", "#3f51b5", "#006d77"),
    TACO: ("#ff7f0e", "#c0392b", "#fdae6b", "#8c2d04", "#f4645a", "#d9a21b"),
    OTHER: ("#2ca02c", "#74c476", "#1b5e20", "#7f9c1f", "#a6d96a", "#5b7f5b"),
}
# Hue band of each family in degrees (start, end); TACO's wraps through 0° (reds).
HUES: dict[str, tuple[float, float]] = {MLM: (175.0, 240.0), TACO: (-10.0, 50.0), OTHER: (65.0, 160.0)}
FAMILY_ORDER = (MLM, TACO, OTHER)


def family(objective: object) -> str:
    """The hue family of an objective: "mlm", "taco" (also e.g. "TACO", "taco-w9"), else "other" (None too)."""
    name = objective.strip().lower() if isinstance(objective, str) else ""
    if name.startswith(TACO):
        return TACO
    if name.startswith(MLM):
        return MLM
    return OTHER


def shade(fam: str, k: int) -> str:
    """The `k`-th colour (k ≥ 0) of family `fam` ("mlm", "taco" or "other"). The first six are `SHADES[fam]`;
    after them each round shifts those six in hue (staying inside the family's band) and lightness, so the
    colours stay distinct (tested to 36 per family)."""
    base = SHADES[fam]
    if k < len(base):
        return base[k]
    ring, i = divmod(k, len(base))
    h, light, s = colorsys.rgb_to_hls(*_rgb(base[i]))
    lo, hi = HUES[fam]
    step = 7.0 * ((ring + 1) // 2) * (1 if ring % 2 else -1)  # ±7°, ±14°, …
    deg = (h * 360 + 180 - lo) % 360 - 180 + lo  # the hue expressed inside (lo - 180, lo + 180]
    deg = min(hi - 2, max(lo + 2, deg + step))
    light = min(0.72, max(0.22, light + (0.08 if light < 0.47 else -0.08) * (1 + (ring - 1) // 2)))
    return _hex(colorsys.hls_to_rgb((deg % 360) / 360, light, s))


def run_colours(runs: Iterable[tuple[str, object]]) -> dict[str, str]:
    """One colour per run name from (name, objective) pairs: the objective's family (`family`), shades in name
    order within it (`shade`). A name listed twice takes the family of its first known objective. Deterministic:
    the same set of pairs gives the same mapping, whatever their order."""
    objectives: dict[str, list[str]] = {}
    for name, objective in runs:
        objectives.setdefault(str(name), []).append(family(objective))
    by_family: dict[str, list[str]] = {f: [] for f in FAMILY_ORDER}
    for name, fams in objectives.items():
        known = sorted({f for f in fams if f != OTHER}, key=FAMILY_ORDER.index)
        by_family[known[0] if known else OTHER].append(name)
    return {name: shade(fam, k) for fam in FAMILY_ORDER for k, name in enumerate(sorted(by_family[fam]))}


def colours_for(names: Sequence[str], known: Mapping[str, str]) -> list[str]:
    """The colours of `names`, in order: `known[name]` where it has one, else (by name order) "other" shades
    that no name here is drawn in yet — for labels outside the run set, such as "run (path)"."""
    used = {known[n] for n in names if n in known}
    extra: dict[str, str] = {}
    k = 0
    for name in sorted({n for n in names if n not in known}):
        while shade(OTHER, k) in used:
            k += 1
        extra[name] = shade(OTHER, k)
        used.add(extra[name])
    return [known.get(n) or extra[n] for n in names]


def ramp(colour: str, n: int, lightest: float = 0.6) -> list[str]:
    """`n` shades of one colour from a tint (mixed `lightest` of the way to white) to the colour itself, e.g. for
    the layers of one run (layer 0 lightest)."""
    rgb = _rgb(colour)
    if n <= 1:
        return [_hex(rgb)]
    return [_hex(tuple(c + (1 - c) * lightest * (1 - i / (n - 1)) for c in rgb)) for i in range(n)]


def hue(colour: str) -> float:
    """The hue of a "#rrggbb" colour in degrees [0, 360)."""
    return colorsys.rgb_to_hls(*_rgb(colour))[0] * 360


def _rgb(colour: str) -> tuple[float, float, float]:
    text = colour.lstrip("#")
    return (int(text[0:2], 16) / 255, int(text[2:4], 16) / 255, int(text[4:6], 16) / 255)


def _hex(rgb: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(min(1.0, max(0.0, c)) * 255):02x}" for c in rgb)
