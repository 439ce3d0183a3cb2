"""The one rolling resumable training state (`state/`): weights, optimizer, scheduler, step, RNG.

Data order, masking and TC sampling are functions of (seed, step), so the step is the whole data position.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from common.files import write_json, writing
from taco.errors import TacoError

STATE_FILE = "training_state.pt"


def config_digest(config: dict[str, Any], runtime_only: tuple[str, ...]) -> str:
    """Hash of the config fields that determine the trajectory (runtime switches excluded)."""
    kept = {k: v for k, v in sorted(config.items()) if k not in runtime_only}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def save_state(run_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any, digest: str) -> None:
    """Replace the files of `state/` with this step's, each written under a temporary name and renamed.

    Files, not the folder, are swapped: a folder cannot be renamed onto a full one, so swapping it leaves a moment
    without `state/`, and a run killed in that moment could not be resumed. The `.pt` file is the state; state.json
    (written after it) is its step and digest for people and scripts."""
    target = Path(run_dir) / "state"
    target.mkdir(parents=True, exist_ok=True)
    with writing(target / STATE_FILE, "wb") as handle:
        torch.save(
            {"step": step, "config_digest": digest, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state()},
            handle,
        )
    write_json(target / "state.json", {"step": step, "config_digest": digest}, indent=None)


def load_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved state of `run_dir` (None when there is none yet); `TacoError` when the file is not a taco state."""
    path = Path(run_dir) / "state" / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways inside torch.load
        raise TacoError(f"--resume: {path} cannot be read ({type(exc).__name__}: it is truncated or not a taco "
                        "state); start again with --overwrite, or restore the file") from None
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "scheduler"} <= set(state):
        raise TacoError(f"--resume: {path} is not a taco training state; start again with --overwrite")
    return state
