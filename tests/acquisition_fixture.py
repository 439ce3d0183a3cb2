"""A results store with word acquisition in it, built by the real probe: two tiny runs (MLM and "TACO"-labelled,
`tests.integration.conftest.build_tiny_run`) with log-spaced snapshots up to step 64 — enough points for the
per-word sigmoids to fit — and a third run whose snapshots carry no MLM head (the encoder alone, re-saved as
`BertModel`), which therefore has no masked surprisal and no word acquisition. Anchors family only (the one word
acquisition needs), so the build takes about 40 s on two cores.

Used by the app's page tests (`tests/app/conftest.py`) and the report/figure tests (`tests/integration`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
RUNS = ("mlm-acq", "taco-acq")
HEADLESS = "headless-acq"
HEADLESS_STEPS = (0, 64)


def build(root: Path, *, figures: bool = True) -> Path:
    """Write ROOT/{mlm-acq, taco-acq, headless-acq} and probe them into ROOT/dynamics (report and, with
    `figures`, the figures too); returns ROOT/dynamics."""
    from dynamics import probe
    from tests.integration.conftest import build_tiny_run, one_torch_thread

    with one_torch_thread():
        mlm = build_tiny_run(root / RUNS[0], objective="mlm", steps=STEPS, seed=3)
        taco = build_tiny_run(root / RUNS[1], objective="taco", steps=STEPS, seed=4, tokenizer_dir=mlm / "tokenizer")
        headless = _without_head(mlm, root / HEADLESS)
        probe.run([mlm, taco, headless], out=root / "dynamics", metrics=["anchors"], probe_blocks=24, seed=2,
                  progress=False, figures=figures)
    return root / "dynamics"


def _without_head(run: Path, out: Path) -> Path:
    """A copy of `run` (steps `HEADLESS_STEPS` only) whose snapshots hold the encoder without its MLM head, as a
    run trained with another head, or an encoder published without one, would be."""
    from transformers import BertModel

    shutil.copytree(run, out, ignore=shutil.ignore_patterns("snapshots"))
    meta = json.loads((out / "run.json").read_text())
    meta["name"] = out.name
    (out / "run.json").write_text(json.dumps(meta))
    for step in HEADLESS_STEPS:
        name = f"step-{step:07d}"
        target = out / "snapshots" / name
        BertModel.from_pretrained(str(run / "snapshots" / name), add_pooling_layer=False).save_pretrained(target)
        shutil.copy(run / "snapshots" / name / "snapshot.json", target / "snapshot.json")
    return out
