"""The snapshot schedule and the atomic writer of `snapshots/step-NNNNNNN/` directories."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn


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


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory `tmp` to `target`, replacing an older copy without a window where neither exists whole."""
    if target.exists():
        trash = target.with_name(f".{target.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(target, trash)
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


def write_snapshot(run_dir: str | Path, step: int, model: nn.Module, info: dict[str, Any]) -> Path:
    """`save_pretrained` (safetensors + config.json) plus `snapshot.json`, written to a temporary name and renamed."""
    target = snapshot_dir(run_dir, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "snapshot.json").write_text(json.dumps({"step": step, **info}, indent=2))
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
