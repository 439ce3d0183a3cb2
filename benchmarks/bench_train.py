"""Training benchmarks (issue 2). Prints one line per comparison: measured, baseline, ratio.

1. MLM tokens/s of `taco.train` against Hugging Face `BertForMaskedLM` + `DataCollatorForLanguageModeling`
   + `Trainer` on the same model config, data and batch (median step time after warm-up).
2. TACO step time / MLM step time (both through `taco.train`).
3. Peak memory: TACO / MLM, and TACO / the released code's approach (materialising the (A, K, H) negatives).
   CPU: peak RSS growth of a fresh worker process during training steps, above the RSS after model, optimizer
   state and one warm-up step (VmHWM reset through /proc/self/clear_refs; glibc told to return freed
   blocks at once); CUDA: max_memory_allocated.
4. Model FLOP utilisation: training FLOPs/s over a measured dense fp32 matmul rate on the same machine.
   FLOPs per token = 6·N_body + 12·L·H·T (attention scores and values, forward + backward)
                     + 6·p·(H² + H·V) (MLM head, at the fraction p of masked positions only),
   N_body = non-embedding parameters, L layers, H hidden, T block length, V vocabulary.

Usage: python benchmarks/bench_train.py [--presets mini,small] [--steps 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepared(cache: str, block: int):
    """Corpus, tokenizer and packed blocks exactly as `taco.train` builds them."""
    from taco.corpus import load_corpus
    from taco.data import packed_data
    from taco.tokenizer import cached_tokenizer, load_tokenizer, tokenizer_hash

    corpus = load_corpus("builtin")
    tok = load_tokenizer(cached_tokenizer(corpus.train, corpus.fingerprint, 8192, cache))
    data = packed_data(corpus.train, corpus.validation, tok, corpus_fingerprint=corpus.fingerprint,
                       tok_hash=tokenizer_hash(tok), block_size=block, cache_dir=cache, progress=False)
    return tok, data


def ours_step_times(objective: str, preset: str, steps: int, batch: int, block: int, cache: str) -> list[float]:
    """Seconds per step of the real `taco.train` loop, read back from its log (tokens_per_s per step)."""
    from taco.config import TrainConfig
    from taco.train import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(output_dir=f"{tmp}/run", objective=objective, preset=preset, max_steps=steps,
                          batch_size=batch, block_size=block, snapshot_every=10**9, snapshot_log_spaced=False,
                          log_every=1, eval_blocks=2 * batch, data_cache=cache, progress=False, device="cpu")
        train(cfg)
        rows = [json.loads(x) for x in Path(f"{tmp}/run/log.jsonl").read_text().splitlines()]
    tokens = batch * block
    return [tokens / r["tokens_per_s"] for r in rows if "split" not in r][2:]


def hf_trainer_step_times(preset: str, steps: int, batch: int, block: int, cache: str) -> list[float]:
    from transformers import (
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from taco.presets import build_config

    hf_logging.set_verbosity_error()
    tok, data = prepared(cache, block)
    torch.manual_seed(0)
    model = BertForMaskedLM(build_config(preset, len(tok), pad_token_id=tok.pad_token_id))
    rows = [{"input_ids": np.asarray(data.train[i]).tolist()} for i in range(batch * (steps + 1))]
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=5e-4, warmup_steps=1, weight_decay=0.01, adam_beta2=0.98,
                                 adam_epsilon=1e-6, logging_steps=10**9, save_strategy="no", report_to=[],
                                 use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15),
                          callbacks=[Clock()])
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    # on_step_begin fires after the batch is fetched and collated; spread that cost back over the steps.
    extra = max(0.0, wall - sum(times)) / max(1, len(times))
    return [t + extra for t in times][2:]


def memory_worker(objective: str, preset: str, batch: int, block: int, cache: str, gather: bool) -> dict:
    """Runs in a fresh process: peak memory of training steps above the settled model+optimizer state."""
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

    import taco.objectives as obj
    from taco.objectives import PretrainingModel, TCConfig
    from taco.presets import build_config
    from taco.train import build_optimizer

    if gather:  # the released implementation's approach: index the pool into an (A, K, H) tensor
        def gathered(anchors, pool, idx, max_elements=0):  # noqa: ARG001
            return (anchors.unsqueeze(1) * pool.detach()[idx]).sum(-1)

        obj.negative_cosine = gathered
    tok, data = prepared(cache, block)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    model = BertForMaskedLM(build_config(preset, len(tok), pad_token_id=tok.pad_token_id)).to(device)
    wrapper = PretrainingModel(model, objective, TCConfig())
    opt = build_optimizer(model, argparse.Namespace(weight_decay=0.01, lr=1e-4, adam_beta1=0.9, adam_beta2=0.98,
                                                    adam_eps=1e-6))
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=0)
    collator.create_rng("pt")
    special_ids = torch.tensor(sorted(set(tok.all_special_ids)))
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        ids = torch.from_numpy(np.asarray(data.train[i * batch:(i + 1) * batch])).long()
        special = torch.isin(ids, special_ids)
        inputs, labels = collator.torch_mask_tokens(ids, special_tokens_mask=special)
        out = wrapper(inputs.to(device), labels.to(device), (~special).to(device), gen)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        # Reset the kernel's high-water mark (VmHWM) so that nothing before the measured steps counts.
        Path("/proc/self/clear_refs").write_text("5")
        base = _proc_status_bytes("VmRSS")
    for i in range(1, 4):
        step(i)
    peak = torch.cuda.max_memory_allocated() if cuda else _proc_status_bytes("VmHWM")
    return {"base": base, "peak": peak, "step_peak": peak - base, "device": device.type}


def _proc_status_bytes(field: str) -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(objective: str, preset: str, batch: int, block: int, cache: str, gather: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--memory-worker", objective, "--presets", preset, "--batch", str(batch),
           "--block", str(block), "--cache", cache] + (["--gather"] if gather else [])
    # Large blocks through mmap so that freed memory leaves the RSS at once: the high-water mark then tracks
    # live memory instead of glibc's cached heap.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def matmul_flops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def flops_per_token(preset: str, vocab: int, block: int, mask_p: float = 0.15) -> float:
    from taco.presets import build_config, count_parameters

    c = build_config(preset, vocab)
    n_body = count_parameters(c)["non_embedding"]
    h, layers = c.hidden_size, c.num_hidden_layers
    return 6 * n_body + 12 * layers * h * block + 6 * mask_p * (h * h + h * vocab)


def line(what: str, value: str, baseline: str, ratio: float, target: str) -> None:
    print(f"{what:<46} {value:>16} | baseline {baseline:>16} | ratio {ratio:5.2f} ({target})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="mini,small", help="Comma-separated presets to measure.")
    p.add_argument("--steps", type=int, default=8, help="Training steps per measurement (2 warm-up steps dropped).")
    p.add_argument("--batch", type=int, default=32, help="Blocks per step.")
    p.add_argument("--block", type=int, default=128, help="Tokens per block.")
    p.add_argument("--cache", default=str(REPO / "data" / "cache"), help="Data cache shared with taco.train.")
    p.add_argument("--quick", action="store_true", help="mini only, 5 steps.")
    p.add_argument("--parts", default="speed,memory,mfu", help="Which comparisons to run.")
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--gather", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_worker:
        print(json.dumps(memory_worker(a.memory_worker, a.presets, a.batch, a.block, a.cache, a.gather)))
        return
    presets = ["mini"] if a.quick else a.presets.split(",")
    steps = 5 if a.quick else a.steps
    tok, _ = prepared(a.cache, a.block)
    peak = matmul_flops()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch} x {a.block} tokens, "
          f"dense fp32 matmul {peak / 1e9:.1f} GFLOP/s")
    tokens = a.batch * a.block
    parts = set(a.parts.split(","))
    mlm_time: dict[str, float] = {}
    for preset in presets:
        if parts & {"speed", "mfu"}:
            mlm = mlm_time[preset] = statistics.median(ours_step_times("mlm", preset, steps, a.batch, a.block,
                                                                       a.cache))
        if "speed" in parts:
            hf = statistics.median(hf_trainer_step_times(preset, steps, a.batch, a.block, a.cache))
            line(f"[{preset}] MLM tokens/s, taco.train vs HF Trainer", f"{tokens / mlm:,.0f} tok/s",
                 f"{tokens / hf:,.0f} tok/s", hf / mlm, "target >= 1.5")
            taco = statistics.median(ours_step_times("taco", preset, steps, a.batch, a.block, a.cache))
            line(f"[{preset}] TACO step time / MLM step time", f"{taco:.3f} s", f"{mlm:.3f} s", taco / mlm,
                 "target <= 1.10")
        if "memory" not in parts:
            continue
        m_mlm = measure_memory("mlm", preset, a.batch, a.block, a.cache)
        m_taco = measure_memory("taco", preset, a.batch, a.block, a.cache)
        m_gather = measure_memory("taco", preset, a.batch, a.block, a.cache, gather=True)
        mib = 2**20
        line(f"[{preset}] peak memory TACO / MLM ({m_mlm['device']}, process)", f"{m_taco['peak'] / mib:,.0f} MiB",
             f"{m_mlm['peak'] / mib:,.0f} MiB", m_taco["peak"] / m_mlm["peak"], "target <= 1.15")
        line(f"[{preset}] step memory TACO / MLM (above weights+Adam)", f"{m_taco['step_peak'] / mib:,.0f} MiB",
             f"{m_mlm['step_peak'] / mib:,.0f} MiB", m_taco["step_peak"] / m_mlm["step_peak"], "informative")
        line(f"[{preset}] step memory TACO / (A,K,H) gather TACO", f"{m_taco['step_peak'] / mib:,.0f} MiB",
             f"{m_gather['step_peak'] / mib:,.0f} MiB", m_taco["step_peak"] / m_gather["step_peak"], "lower is better")
    for preset in presets if "mfu" in parts else []:
        achieved = flops_per_token(preset, len(tok), a.block) * tokens / mlm_time[preset]
        line(f"[{preset}] MFU (MLM training FLOP/s / matmul FLOP/s)", f"{achieved / 1e9:.1f} GFLOP/s",
             f"{peak / 1e9:.1f} GFLOP/s", achieved / peak, "informative")


if __name__ == "__main__":
    main()
