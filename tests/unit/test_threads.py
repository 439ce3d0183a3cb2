"""Work on worker threads with one torch thread each (`dynamics.measure.threads`), and extraction through it: the same
bits on 2 workers as on one thread, whichever worker runs which batch."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from dynamics.measure import extract as ex
from dynamics.measure.threads import cpu_workers, map_on_threads
from dynamics.metrics.blas import torch_threads
from tests.causal_fixture import tiny_causal
from tests.integration.conftest import tiny_mlm
from tests.unit.test_dynamics_extract import toy_probe
from tests.unit.test_dynamics_extract_causal import toy_decoder_probe


@pytest.fixture
def two_threads() -> Iterator[None]:
    with torch_threads(2):
        yield


def test_results_in_order_on_workers_with_one_torch_thread_each(two_threads) -> None:
    seen: list[tuple[str, int]] = []

    def fn(k: int) -> int:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return k * k

    assert map_on_threads(fn, range(20), 2, name="w") == [k * k for k in range(20)]
    assert {n for _, n in seen} == {1} and all(name.startswith("w") for name, _ in seen)
    assert torch.get_num_threads() == 2  # the caller's count is restored
    seen.clear()
    assert map_on_threads(fn, [3], 1) == [9] and seen == [(threading.current_thread().name, 2)]
    assert cpu_workers("cpu") == 2 and cpu_workers("meta") == 1


def test_a_failing_piece_raises_in_the_caller(two_threads) -> None:
    def fn(k: int) -> int:
        if k == 3:
            raise RuntimeError("bad batch")
        return k

    with pytest.raises(RuntimeError, match="bad batch"):
        map_on_threads(fn, range(6), 2)
    assert torch.get_num_threads() == 2


def _same(a: ex.Activations, b: ex.Activations) -> None:
    np.testing.assert_array_equal(a.hidden, b.hidden)
    assert (a.masked is None) == (b.masked is None)
    if a.masked is not None:
        for name in ("transform", "hidden", "rank", "index", "surprisal"):
            np.testing.assert_array_equal(getattr(a.masked, name), getattr(b.masked, name))


@pytest.mark.parametrize("arch", ["bert", "distilbert", "gpt2"])
def test_extraction_on_two_workers_equals_one_thread_bit_for_bit(arch: str, two_threads) -> None:
    """Batches of one block on 2 workers (the BERT masked pass with its last layer at the masked positions only,
    which changes the encoder for all workers at once; DistilBERT's whole; GPT-2's next-token head from pass 1)."""
    torch.manual_seed(0)
    model = (tiny_causal(arch, 50) if arch == "gpt2" else tiny_mlm(arch)).eval()
    probe = toy_decoder_probe() if arch == "gpt2" else toy_probe()
    parallel = ex.extract(model, probe, has_head=True, batch_size=1)
    torch.set_num_threads(1)
    sequential = ex.extract(model, probe, has_head=True, batch_size=1)
    _same(parallel, sequential)
    assert parallel.masked is not None and len(parallel.masked.rank) > 0
