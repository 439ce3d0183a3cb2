"""Under two gloo processes, TACO's negative pool spans both ranks and never the anchor's own block."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from common.distributed import shutdown_distributed
from taco.objectives import gather_pool, sample_tc_indices


def _worker(rank: int, world: int, init_file: str, results) -> None:  # noqa: ANN001
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        b, seq_len, hidden = 3, 8, 4
        valid = torch.ones(b, seq_len, dtype=torch.bool)
        valid[:, 0] = valid[:, -1] = False
        # Each rank's vectors carry its rank so the pool's origin can be checked.
        unit = F.normalize(torch.full((int(valid.sum()), hidden), float(rank + 1)), dim=-1)
        unit[:, 0] = rank
        pool, counts, offset = gather_pool(unit, valid.sum(1))
        idx = sample_tc_indices(valid, valid, 5, 64, torch.Generator().manual_seed(rank), pool_counts=counts,
                                pool_offset=offset)
        starts = torch.cumsum(counts, 0) - counts
        neg_seq = torch.searchsorted(starts, idx.negatives, right=True) - 1
        own = (idx.flat[idx.anchors] // seq_len) + offset
        results.put({
            "rank": rank, "pool_size": pool.shape[0], "offset": offset,
            "own_seq_hit": bool((neg_seq == own.unsqueeze(1)).any()),
            "ranks_seen": sorted({int(r) for r in pool[idx.negatives.reshape(-1), 0].round().tolist()}),
        })
    finally:
        shutdown_distributed()


def test_global_negative_pool_spans_ranks(tmp_path):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, start_method="spawn")
    out = sorted((results.get(timeout=60) for _ in range(2)), key=lambda r: r["rank"])
    assert [r["offset"] for r in out] == [0, 3]
    for r in out:
        assert r["pool_size"] == 2 * 3 * 6
        assert not r["own_seq_hit"]
        assert r["ranks_seen"] == [0, 1]
