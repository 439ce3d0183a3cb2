"""`dynamics.results.heads.forming_heads`: which heads the report names as forming, in what order, with what onset."""

from __future__ import annotations

import numpy as np

from dynamics.results.heads import MIN_RISE, HeadSeries, forming_heads

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 100, 200])


def series(curves: dict[tuple[int, int], list[float]], layers: int = 2, heads: int = 3) -> HeadSeries:
    values = np.full((len(STEPS), layers, heads), 0.02)
    for (layer, head), curve in curves.items():
        values[:, layer, head] = curve
    return HeadSeries("induction", STEPS, values)


def test_a_rising_head_is_named_with_the_step_it_covers_half_its_rise() -> None:
    sharp = [0.02] * 6 + [0.05, 0.30, 0.40, 0.42]  # half of the rise (0.21) first covered at step 64
    slow = [0.02, 0.02, 0.03, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16]
    heads = forming_heads(series({(1, 2): sharp, (0, 1): slow}))
    assert [(h.layer, h.head) for h in heads] == [(2, 2), (1, 1)]  # largest rise first, layers numbered from 1
    assert heads[0].onset == 64 and heads[1].onset == 32
    assert heads[0].first == 0.02 and heads[0].last == 0.42


def test_noise_around_chance_and_falling_heads_are_not_named() -> None:
    noise = list(0.021 + 0.001 * np.sin(np.arange(len(STEPS))))
    small = [0.02] * 9 + [0.02 + MIN_RISE * 0.9]  # more than doubles, but rises by less than MIN_RISE
    high = [0.30] * 9 + [0.36]  # rises by more than MIN_RISE from a high start, but does not double
    falling = list(np.linspace(0.4, 0.05, len(STEPS)))
    assert forming_heads(series({(0, 0): noise, (0, 1): small, (0, 2): high, (1, 0): falling})) == []


def test_top_and_single_snapshot() -> None:
    rising = {(0, h): list(np.linspace(0.02, 0.1 + 0.1 * h, len(STEPS))) for h in range(3)}
    assert [h.head for h in forming_heads(series(rising), top=2)] == [2, 1]
    one = HeadSeries("induction", STEPS[:1], np.full((1, 2, 3), 0.5))
    assert forming_heads(one) == []
