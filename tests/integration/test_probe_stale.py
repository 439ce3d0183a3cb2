"""A run trained again under the same name: the probe sees that a snapshot's weights changed since it measured
them (the weights hash recorded in the store) and measures it again instead of reusing stale results."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dynamics import probe

SETTINGS = dict(probe_blocks=16, progress=False, figures=False)


def test_changed_weights_are_measured_again(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "out"
    first = probe.run(run, out=out, **SETTINGS)
    assert first.computed
    again = probe.run(run, out=out, **SETTINGS)
    assert not again.computed  # nothing changed: everything reused
    weights = run / "snapshots" / "step-0000002" / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in sorted(tensors) if k.endswith("word_embeddings.weight"))
    tensors[name] = tensors[name] + torch.randn_like(tensors[name]) * 0.1
    save_file(tensors, weights, metadata={"format": "pt"})
    third = probe.run(run, out=out, **SETTINGS)
    redone = {(step, family) for _, step, family in third.computed}
    assert {(2, "anchors"), (2, "context"), (2, "geometry"), (2, "drift")} <= redone
    assert not any(step in (0, 1) and family != "cka_steps" for step, family in redone)
    assert (-1, "cka_steps") in redone  # the step × step CKA holds the changed snapshot
    assert any("changed since they were measured" in n for n in third.notes)
