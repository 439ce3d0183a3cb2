"""`experiments.causal_lm --repeat-share`: which training blocks repeat, and how a repeated block looks."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.causal_lm import Blocks, CausalLMConfig, CausalLMError, main, repeated_blocks

CLS, SEP = 2, 3


def _blocks(n: int, length: int) -> np.ndarray:
    """`[CLS] c_1 … c_{length-2} [SEP]` rows with distinct content ids (>= 10) in every position."""
    content = 10 + np.arange(n * (length - 2), dtype=np.int32).reshape(n, length - 2)
    return np.concatenate([np.full((n, 1), CLS, np.int32), content, np.full((n, 1), SEP, np.int32)], axis=1)


@pytest.mark.parametrize("length", [12, 13])
def test_share_one_repeats_the_first_half_of_every_block_inside_its_framing(length: int) -> None:
    blocks = _blocks(5, length)
    data = Blocks(blocks, repeat_share=1.0, seed=0)
    k = (length - 2) // 2
    for i in range(len(blocks)):
        row = data[i]["input_ids"].numpy()
        assert row.shape == (length,)
        assert row[0] == CLS and row[-1] == SEP
        np.testing.assert_array_equal(row[1:1 + k], blocks[i, 1:1 + k])  # the first half as it was
        np.testing.assert_array_equal(row[1 + k:1 + 2 * k], blocks[i, 1:1 + k])  # the second half its copy
        if (length - 2) % 2:  # an odd content length keeps its last content token
            assert row[-2] == blocks[i, -2]
    np.testing.assert_array_equal(blocks, _blocks(5, length))  # the stored rows are not modified


def test_share_zero_gives_the_original_rows() -> None:
    blocks = _blocks(7, 10)
    data = Blocks(blocks, repeat_share=0.0, seed=3)
    assert len(data) == 7
    for i in range(7):
        np.testing.assert_array_equal(data[i]["input_ids"].numpy(), blocks[i])
    assert repeated_blocks(7, 0.0, 3).size == 0


def test_half_share_is_exact_and_seeded() -> None:
    chosen = repeated_blocks(200, 0.5, seed=1)
    assert len(chosen) == 100 and len(set(chosen.tolist())) == 100
    assert chosen.min() >= 0 and chosen.max() < 200
    np.testing.assert_array_equal(chosen, repeated_blocks(200, 0.5, seed=1))
    assert not np.array_equal(chosen, repeated_blocks(200, 0.5, seed=2))
    blocks = _blocks(200, 8)
    data = Blocks(blocks, repeat_share=0.5, seed=1)
    changed = [i for i in range(200) if not np.array_equal(data[i]["input_ids"].numpy(), blocks[i])]
    assert changed == sorted(chosen.tolist())
    # the same blocks on every read (every epoch)
    assert [i for i in range(200) if not np.array_equal(data[i]["input_ids"].numpy(), blocks[i])] == changed


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_share_outside_zero_one_is_a_usage_error(share: float, tmp_path, capsys) -> None:
    with pytest.raises(CausalLMError, match="--repeat-share"):
        CausalLMConfig(repeat_share=share).validate()
    out = tmp_path / "run"
    assert main(["--repeat-share", str(share), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --repeat-share") and "\n" not in err
    assert not out.exists()
