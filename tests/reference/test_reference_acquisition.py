"""Word acquisition's curve fits against the reference optimiser, curve by curve (the "acquisition" case).

The stored run-level metrics (`aoa_median`, `aoa_freq_spearman`, `aoa_fitted_share`) are compared with their
references in `test_reference.py`; an age of acquisition is only as good as the least-squares fit under it, so
here every curve the probe fitted is checked on its own: the stored sigmoid's sum of squares on the stored curve is
no larger than the one the reference optimiser (`formulas.fit_sigmoid`: L-BFGS-B from a grid of starts) reaches
on the same curve. A higher one is a local optimum the production fitter stopped in, however well the run-level
values happen to agree.
"""

from __future__ import annotations

import math

import numpy as np

from tests.reference import formulas as F
from tests.reference.conftest import Case

SSE_SLACK = 1e-9  # sums of squares of curves of 7 points of ≈ 0.01–1 nats²


def _stored_fits(case: Case) -> dict[str, np.ndarray]:
    from dynamics.results import store, word_curves

    with store.open(case.store_path, readonly=True) as s:
        arr = word_curves.stored(s, case.run, case.probe_hash)
    assert arr is not None, f"{case.name}: no word_acquisition array stored"
    return arr


def test_stored_curves_are_the_reference_curves(acquisition_case: Case) -> None:
    """The curves the fits below are checked on are the reference's own: per word type with a masked occurrence,
    its mean surprisal at each snapshot (`formulas.word_curves`), the same types in the same order."""
    arr = _stored_fits(acquisition_case)
    types, x, curves = F.word_curves(acquisition_case.series)
    seen = arr["counts"] > 0
    assert np.array_equal(arr["word_types"][seen], types)
    assert np.array_equal(arr["steps"], [s.step for s in acquisition_case.series])
    np.testing.assert_allclose(arr["surprisal"][seen], curves, rtol=0, atol=1e-5)


def test_every_fit_reaches_the_reference_optimum(acquisition_case: Case) -> None:
    """For every curve the probe fitted (all but "too few points"), the stored (hi, lo, k, x0)'s sum of squares on
    the stored curve is at most the reference optimiser's on it + `SSE_SLACK`."""
    from dynamics.metrics.acquisition import STATUS

    arr = _stored_fits(acquisition_case)
    steps = arr["steps"].astype(np.float64)
    x = np.array([math.log10(s) if s >= 1 else math.nan for s in steps])
    chance = math.log(int(arr["vocab"]))
    fitted = np.flatnonzero((arr["counts"] > 0) & (arr["status"] != STATUS.index("too few points")))
    assert fitted.size >= 5, f"only {fitted.size} fitted curves: the check would say little"
    worse = []
    for i in fitted:
        y = arr["surprisal"][i]
        ref = F.fit_sigmoid(x, y, chance)
        assert ref is not None, f"word type {str(arr['words'][i])!r}: the reference has too few points"
        ours = F.sigmoid_sse(x, y, [float(arr[p][i]) for p in ("hi", "lo", "k", "x0")])
        if not ours <= ref[1] + SSE_SLACK:  # NaN parameters ("no fit") fail too
            worse.append(f"{str(arr['words'][i])!r}: stored fit {ours!r} (k {arr['k'][i]:.4g}, x0 {arr['x0'][i]:.4g}), "
                         f"reference {ref[1]!r} (k {ref[0][2]:.4g}, x0 {ref[0][3]:.4g})")
    assert not worse, f"{len(worse)} of {fitted.size} curves fitted worse than the reference:\n" + "\n".join(worse)
