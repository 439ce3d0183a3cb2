"""`dynamics.results.palette`: one colour per run, objectives told apart by hue family, the same colour whatever the
selection or the order of the runs."""

from __future__ import annotations

import colorsys
import itertools
import random
import re

import pytest

from dynamics.results import palette

HEX = re.compile(r"#[0-9a-f]{6}")


def _hls(colour: str) -> tuple[float, float, float]:
    return colorsys.rgb_to_hls(*(int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)))


def _hue_deg(colour: str) -> float:
    return _hls(colour)[0] * 360


def _in_band(degrees: float, band: tuple[float, float]) -> bool:
    lo, hi = band
    return lo <= (degrees - lo) % 360 + lo <= hi


def _gap(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def _runs(n_mlm: int, n_taco: int, n_other: int = 0) -> list[tuple[str, str | None]]:
    return ([(f"mlm-s{i}", "mlm") for i in range(n_mlm)] + [(f"taco-s{i}", "taco") for i in range(n_taco)]
            + [(f"hf-{i}", None) for i in range(n_other)])


@pytest.mark.parametrize("counts", [(1, 1, 0), (6, 6, 0), (12, 0, 0), (0, 12, 0), (0, 0, 12), (4, 4, 4), (5, 4, 3)])
def test_up_to_twelve_runs_get_distinct_colours(counts: tuple[int, int, int]) -> None:
    colours = palette.run_colours(_runs(*counts))
    assert len(colours) == sum(counts)
    assert all(HEX.fullmatch(c) for c in colours.values())
    assert len(set(colours.values())) == len(colours)


def test_mlm_and_taco_are_different_hue_families() -> None:
    colours = palette.run_colours(_runs(12, 12, 12))
    mlm = [_hue_deg(c) for n, c in colours.items() if n.startswith("mlm")]
    taco = [_hue_deg(c) for n, c in colours.items() if n.startswith("taco")]
    other = [_hue_deg(c) for n, c in colours.items() if n.startswith("hf")]
    assert all(_in_band(h, (175, 240)) for h in mlm), mlm  # blues and teals
    assert all(_in_band(h, (-10, 50)) for h in taco), taco  # reds and oranges
    assert all(_in_band(h, (65, 160)) for h in other), other  # greens
    # Every MLM colour is far in hue from every TACO colour, and both from the third family.
    assert min(_gap(a, b) for a, b in itertools.product(mlm, taco)) > 120
    assert min(_gap(a, b) for a, b in itertools.product(mlm + taco, other)) > 14
    assert all(_hls(c)[2] > 0.15 for c in colours.values())  # chromatic: a hue to read, not a grey


def _lab(colour: str) -> tuple[float, float, float]:
    """CIE L*a*b* (D65) of an sRGB colour."""
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
    xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, \
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    fx, fy, fz = (t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def _delta_e(a: str, b: str) -> float:
    return sum((x - y) ** 2 for x, y in zip(_lab(a), _lab(b), strict=True)) ** 0.5


def test_shades_of_a_family_are_told_apart() -> None:
    """Runs of one objective (seeds, the usual case) differ visibly: CIE76 ΔE of at least 15 between any two of
    a family's first six shades (about 2.3 is a just-noticeable difference), 20 between the first two."""
    for fam in palette.FAMILY_ORDER:
        shades = [palette.shade(fam, k) for k in range(6)]
        assert _delta_e(shades[0], shades[1]) > 20, fam
        assert min(_delta_e(a, b) for a, b in itertools.combinations(shades, 2)) > 15, fam


@pytest.mark.parametrize("fam", palette.FAMILY_ORDER)
def test_shades_stay_distinct_and_in_their_band(fam: str) -> None:
    shades = [palette.shade(fam, k) for k in range(36)]
    assert len(set(shades)) == 36
    assert all(_in_band(_hue_deg(c), palette.HUES[fam]) for c in shades)
    assert shades[:6] == list(palette.SHADES[fam])


def test_same_run_same_colour_whatever_the_order_or_other_families() -> None:
    runs = _runs(3, 3, 2)
    reference = palette.run_colours(runs)
    rng = random.Random(0)
    for _ in range(5):
        shuffled = runs[:]
        rng.shuffle(shuffled)
        assert palette.run_colours(shuffled) == reference
    # New runs that sort last in their family, or runs of another family, move no colour.
    more = palette.run_colours(runs + [("taco-zz", "taco"), ("other-x", "electra")])
    assert {n: more[n] for n, _ in runs} == reference


def test_selection_takes_colours_from_the_whole_set() -> None:
    known = palette.run_colours(_runs(3, 2))
    picked = ["mlm-s2", "taco-s1"]  # a page showing two runs of five
    assert palette.colours_for(picked, known) == [known["mlm-s2"], known["taco-s1"]]
    assert known["mlm-s2"] != palette.run_colours([("mlm-s2", "mlm")])["mlm-s2"]  # a selection-based one differs


def test_labels_outside_the_set_get_unused_other_shades() -> None:
    known = palette.run_colours([("a", "mlm"), ("b", None)])  # "b" takes the first green
    names = ["a", "b", "a (runs/x)", "c"]
    colours = palette.colours_for(names, known)
    assert colours[:2] == [known["a"], known["b"]]
    assert len(set(colours)) == 4 and colours[2:] == [palette.shade("other", 1), palette.shade("other", 2)]


def test_objective_spellings_and_duplicates() -> None:
    assert palette.family("mlm") == palette.family(" MLM ") == "mlm"
    assert palette.family("taco") == palette.family("TACO") == "taco"
    assert palette.family(None) == palette.family(5) == palette.family("") == palette.family("electra") == "other"
    # A name listed by two sources, one without an objective, keeps its known objective's family.
    colours = palette.run_colours([("mlm-a", None), ("mlm-a", "mlm"), ("taco-a", "taco")])
    assert colours == {"mlm-a": palette.shade("mlm", 0), "taco-a": palette.shade("taco", 0)}


def test_ramp_goes_from_a_tint_to_the_colour() -> None:
    shades = palette.ramp("#1f77b4", 5)
    assert shades[-1] == "#1f77b4" and len(set(shades)) == 5
    lightness = [_hls(c)[1] for c in shades]
    assert lightness == sorted(lightness, reverse=True)
    assert all(abs(_hue_deg(c) - _hue_deg("#1f77b4")) < 3 for c in shades)  # one hue, lighter
    assert palette.ramp("#ff7f0e", 1) == ["#ff7f0e"]
