"""`common.distributed.Place`: one record of a process's place under torchrun, read from the variables torchrun sets,
used by the trainer and the probe alike."""

from __future__ import annotations

import pytest
import torch

from common.distributed import Place, barrier, current, init_distributed
from dynamics import shards

TORCHRUN = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)


def test_one_process_outside_torchrun(outside_torchrun: None) -> None:
    place = current()
    assert place == Place(rank=0, world=1, local_rank=0, local_world=1)
    assert place.main and not place.distributed


def test_a_world_of_one_is_one_process_whatever_the_rank_says(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WORLD_SIZE": "1", "RANK": "3", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    assert current() == Place()


def test_torchrun_variables_give_the_place(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    place = current()
    assert place == Place(rank=5, world=8, local_rank=1, local_world=4)
    assert place.distributed and not place.main


def test_the_local_world_defaults_to_the_world(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    place = current()
    assert (place.world, place.local_world) == (3, 3) and place.main and place.distributed


def test_the_probe_and_the_trainer_share_the_record(outside_torchrun: None) -> None:
    assert shards.current is current and shards.Place is Place
    place, device = init_distributed("cpu")
    assert place == current() and device == torch.device("cpu")
    barrier(place)  # one process: returns at once, no process group needed
    assert not torch.distributed.is_initialized()
