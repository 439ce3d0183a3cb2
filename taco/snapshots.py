"""The snapshot schedule and the atomic writer of `snapshots/step-NNNNNNN/` directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from common.files import building_dir, replace_dir


def snapshot_steps(max_steps: int, every: int, log_spaced: bool = True) -> list[int]:
    """Step 0, the powers of two below `every` (Pythia's convention), every `every` steps, and the final step."""
    steps = {0, max_steps}
    if log_spaced:
        k = 1
        while k < min(every, max_steps):
            steps.add(k)
            k *= 2
    steps.update(range(every, max_steps + 1, every))
    return sorted(s for s in steps if 0 <= s <= max_steps)


def snapshot_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "snapshots" / f"step-{step:07d}"


def write_snapshot(run_dir: str | Path, step: int, model: nn.Module, info: dict[str, Any]) -> Path:
    """`save_pretrained` (safetensors + config.json) plus `snapshot.json`, written to a temporary name and renamed."""
    target = snapshot_dir(run_dir, step)
    with building_dir(target) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "snapshot.json").write_text(json.dumps({"step": step, **info}, indent=2))
        replace_dir(tmp, target)
    return target
