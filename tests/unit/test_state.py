"""The resumable state survives a kill at any moment of its own save: `state/` always holds a whole state, the
previous one or the new one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common import files
from taco.state import load_state, save_state


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no `except Exception` in the writer catches it."""


def _save(run: Path, step: int) -> None:
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    save_state(run, step, model, optimizer, scheduler, digest="d")


def _renames_in_one_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    run = tmp_path / "count"
    _save(run, 1)
    calls = [0]
    real = files.os.replace

    def counting(src, dst):  # noqa: ANN001, ANN202 - os.replace's own signature
        calls[0] += 1
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", counting)
    _save(run, 2)
    monkeypatch.setattr(files.os, "replace", real)
    return calls[0]


def test_a_kill_at_any_rename_of_a_save_leaves_a_whole_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renames = _renames_in_one_save(tmp_path, monkeypatch)
    assert renames >= 1
    real = files.os.replace
    for kill_at in range(renames + 1):  # before the first rename, between any two, and after the last
        run = tmp_path / f"killed-{kill_at}"
        _save(run, 1)
        calls = [0]

        def dying(src, dst, kill_at=kill_at, calls=calls):  # noqa: ANN001, ANN202
            if calls[0] == kill_at:
                raise Killed
            calls[0] += 1
            return real(src, dst)

        monkeypatch.setattr(files.os, "replace", dying)
        with pytest.raises(Killed):
            _save(run, 2)
            raise Killed  # kill_at == renames: the save finished, the kill comes just after
        monkeypatch.setattr(files.os, "replace", real)
        state = load_state(run)
        assert state is not None, f"state/ missing after a kill at rename {kill_at}"
        assert state["step"] in (1, 2)
        torch.manual_seed(state["step"])
        assert torch.equal(state["model"]["weight"], torch.nn.Linear(4, 3).weight.detach())
    assert load_state(tmp_path / f"killed-{renames}")["step"] == 2
