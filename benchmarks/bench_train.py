"""Training benchmarks (issues 2 and 14). Prints one line per comparison: measured, baseline, ratio.

On the CPU (`--device cpu`, the default):
1. MLM tokens/s of `taco.train` against Hugging Face `BertForMaskedLM` + `DataCollatorForLanguageModeling`
   + `Trainer` on the same model config, data and batch (median step time after warm-up).
2. TACO step time / MLM step time (both through `taco.train`), for each TC path of `--tc-methods`.
3. Peak memory: TACO / MLM, and TACO / the released code's approach (materialising the (A, K, H) negatives).
   CPU: peak RSS growth of a fresh worker process during training steps, above the RSS after model, optimizer
   state and one warm-up step (VmHWM reset through /proc/self/clear_refs; glibc told to return freed
   blocks at once).
4. Model FLOP utilisation: training FLOPs/s over a measured dense fp32 matmul rate on the same machine.
   FLOPs per token = 6·N_body + 12·L·H·T (attention scores and values, forward + backward)
                     + 6·p·(H² + H·V) (MLM head, at the fraction p of masked positions only)
                     [+ 4·K·H for TACO: the K negative cosines of every anchor, forward and anchor gradient],
   N_body = non-embedding parameters, L layers, H hidden, T block length, V vocabulary.

On a GPU (`--device cuda`; bf16 autocast unless `--precision fp32`), all through `taco.train`:
1. MLM tokens/s, and per TC path TACO tokens/s and TACO step time / MLM step time.
2. Peak memory of the whole run (torch.cuda.max_memory_allocated): TACO / MLM per path.
3. MFU as above, against a dense matmul rate in the training precision measured on the same GPU in the same
   invocation, for MLM and every TACO path.
`--batch-search 2048,1024,512,256` takes as micro-batch the largest of these sizes at which one training step
of MLM and of every requested TC path fits in GPU memory (out-of-memory errors caught), e.g. paper scale:
`--presets small --block 256 --batch-search 2048,1024,512,256`.

TC paths (`--tc-methods`, comma-separated): auto (what `taco.objectives.AUTO_METHOD` picks on the device),
gather, sparse, sparse_bag (per-anchor draws, kernel forced), shared (negatives shared by the anchors of a
sequence, one batched product). Default: auto on the CPU, gather,sparse,sparse_bag,shared on a GPU.
`--corpus synthetic` trains on Zipf-distributed words over a fixed vocabulary with a tokenizer that maps each
word to one token, built in a temporary folder: no downloads (GPU machines here have no network); step times do
not depend on the text.

Usage: python benchmarks/bench_train.py [--presets mini,small] [--steps 8] [--quick] [--device cpu|cuda]
       [--tc-methods auto,shared] [--corpus builtin|synthetic] [--batch-search 2048,1024,512,256]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# TrainConfig options of each TC path.
TC_PATHS: dict[str, dict[str, str]] = {
    "auto": {},
    "gather": {"tc_kernel": "gather"},
    "sparse": {"tc_kernel": "sparse"},
    "sparse_bag": {"tc_kernel": "sparse_bag"},
    "shared": {"tc_negative_sharing": "sequence"},
}
SYNTHETIC_VOCAB = 8192
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class Setup:
    """Where and on what one comparison trains: model preset, micro-batch, data and device."""

    preset: str
    batch: int
    block: int
    cache: str
    device: str = "cpu"
    precision: str = "fp32"
    corpus: str = "builtin"
    tokenizer: str = ""


def synthetic_corpus(root: Path, words: int = 1_500_000, seed: int = 0) -> tuple[str, str]:
    """(corpus folder, tokenizer folder): documents of 200 Zipf-distributed words over a fixed vocabulary
    ("w0" ... ), train.jsonl and validation.jsonl, and a WordPiece tokenizer mapping each word to one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    names = [f"w{i}" for i in range(SYNTHETIC_VOCAB - len(SPECIAL))]
    vocab = {w: i for i, w in enumerate(SPECIAL + names)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    tok_dir = root / "tokenizer"
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(str(tok_dir))
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.2, size=words) % len(names)
    docs = [" ".join(names[i] for i in ids[k:k + 200]) for k in range(0, words, 200)]
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    n_val = max(1, len(docs) // 50)
    for name, part in (("train", docs[n_val:]), ("validation", docs[:n_val])):
        (corpus / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
    return str(corpus), str(tok_dir)


def synthetic_ids(docs: list[str], tokenizer, progress: bool = True) -> list[list[int]]:  # noqa: ANN001, ARG001
    """What `taco.data.tokenize_documents` returns for the synthetic corpus (one token per word, every word in the
    vocabulary), without the `datasets` pass: the bench puts it in that function's place, so GPU machines without
    `datasets` pack it too (equality with the real tokenisation checked on the CPU with --check-synthetic)."""
    vocab = tokenizer.get_vocab()
    return [[vocab[w] for w in d.split()] for d in docs]


def prepared(cache: str, block: int, corpus: str = "builtin", tokenizer: str = ""):
    """Corpus, tokenizer and packed blocks exactly as `taco.train` builds them."""
    from taco.corpus import builtin_cache_dir, load_corpus
    from taco.data import packed_data
    from taco.tokenizer import cached_tokenizer, load_tokenizer, tokenizer_hash

    docs = load_corpus(corpus, cache_dir=builtin_cache_dir(cache))
    tok = load_tokenizer(tokenizer or cached_tokenizer(docs.train, docs.fingerprint, 8192, cache))
    data = packed_data(docs.train, docs.validation, tok, corpus_fingerprint=docs.fingerprint,
                       tok_hash=tokenizer_hash(tok), block_size=block, cache_dir=cache, progress=False)
    return tok, data


def ours_step_times(setup: Setup, objective: str, steps: int, tc: dict | None = None) -> tuple[list[float], int]:
    """Seconds per step of the real `taco.train` loop, read back from its log (tokens_per_s per step), and the
    peak GPU memory of the run in bytes (0 on the CPU)."""
    from taco.config import TrainConfig
    from taco.train import train

    cuda = setup.device.startswith("cuda")
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(output_dir=f"{tmp}/run", objective=objective, preset=setup.preset, max_steps=steps,
                          batch_size=setup.batch, block_size=setup.block, snapshot_every=10**9,
                          snapshot_log_spaced=False, log_every=1, eval_blocks=2 * setup.batch,
                          data_cache=setup.cache, progress=False, device="cuda" if cuda else "cpu",
                          precision=setup.precision,
                          corpus=setup.corpus, tokenizer=setup.tokenizer, **(tc or {}))
        train(cfg)
        rows = [json.loads(x) for x in Path(f"{tmp}/run/log.jsonl").read_text().splitlines()]
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    tokens = setup.batch * setup.block
    return [tokens / r["tokens_per_s"] for r in rows if "split" not in r][2:], peak


def fits(setup: Setup, vocab: int, paths: list[str]) -> bool:
    """Whether one training step of MLM and of TACO on every path fits in GPU memory at `setup.batch`."""
    from transformers import BertForMaskedLM

    from taco.objectives import PretrainingModel, TCConfig
    from taco.presets import build_config
    from taco.train import build_optimizer

    gc.collect()
    torch.cuda.empty_cache()
    device = torch.device(setup.device)
    ok = True
    try:
        torch.manual_seed(0)
        model = BertForMaskedLM(build_config(setup.preset, vocab)).to(device)
        opt = build_optimizer(model, argparse.Namespace(weight_decay=0.01, lr=1e-4, adam_beta1=0.9,
                                                        adam_beta2=0.98, adam_eps=1e-6))
        ids = torch.randint(len(SPECIAL), vocab, (setup.batch, setup.block), device=device)
        ids[:, 0], ids[:, -1] = 2, 3
        valid = torch.ones_like(ids, dtype=torch.bool)
        valid[:, 0] = valid[:, -1] = False
        labels = torch.where(valid & (torch.rand(ids.shape, device=device) < 0.15), ids, -100)
        dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
        for objective, tc in [("mlm", {})] + [("taco", TC_PATHS[p]) for p in paths]:
            wrapper = PretrainingModel(model, objective, TCConfig(
                negative_sharing=tc.get("tc_negative_sharing", "anchor"), method=tc.get("tc_kernel", "auto")))
            with torch.autocast(device.type, dtype=dtype, enabled=setup.precision == "bf16"):
                out = wrapper(ids, labels, valid, torch.Generator().manual_seed(0))
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del out
        if device.type == "cuda":
            torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        ok = False
    gc.collect()
    torch.cuda.empty_cache()
    return ok


def hf_trainer_step_times(setup: Setup, steps: int) -> list[float]:
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
    preset, batch = setup.preset, setup.batch
    tok, data = prepared(setup.cache, setup.block, setup.corpus, setup.tokenizer)
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


def memory_worker(objective: str, setup: Setup, gather: bool) -> dict:
    """Runs in a fresh process: peak RSS of CPU training steps above the settled model+optimizer state."""
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

    import taco.objectives as obj
    from taco.objectives import PretrainingModel, TCConfig
    from taco.presets import build_config
    from taco.train import build_optimizer

    if gather:  # the released implementation's approach: index the pool into an (A, K, H) tensor
        def gathered(anchors, pool, idx, max_elements=0, method="auto"):  # noqa: ARG001
            return (anchors.unsqueeze(1) * pool.detach()[idx]).sum(-1)

        obj.negative_cosine = gathered
    batch = setup.batch
    tok, data = prepared(setup.cache, setup.block, setup.corpus, setup.tokenizer)
    torch.manual_seed(0)
    model = BertForMaskedLM(build_config(setup.preset, len(tok), pad_token_id=tok.pad_token_id))
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
        out = wrapper(inputs, labels, ~special, gen)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)
    # Reset the kernel's high-water mark (VmHWM) so that nothing before the measured steps counts.
    Path("/proc/self/clear_refs").write_text("5")
    base = _proc_status_bytes("VmRSS")
    for i in range(1, 4):
        step(i)
    peak = _proc_status_bytes("VmHWM")
    return {"base": base, "peak": peak, "step_peak": peak - base, "device": "cpu"}


def _proc_status_bytes(field: str) -> int:
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(objective: str, setup: Setup, gather: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--memory-worker", objective, "--presets", setup.preset, "--batch",
           str(setup.batch), "--block", str(setup.block), "--cache", setup.cache, "--corpus", setup.corpus,
           "--tokenizer", setup.tokenizer] + (["--gather"] if gather else [])
    # Large blocks through mmap so that freed memory leaves the RSS at once: the high-water mark then tracks
    # live memory instead of glibc's cached heap.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def matmul_flops(device: str = "cpu", precision: str = "fp32", reps: int = 10) -> float:
    """Dense matmul FLOP/s on `device` in the training precision (8192² on a GPU; 2048² fp32 or 512² bf16 on a
    CPU)."""
    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 8192 if cuda else (2048 if dtype == torch.float32 else 512)  # bf16 matmuls are slow on most CPUs
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    reps = 50 if cuda else reps
    for _ in range(3 if cuda else 1):
        torch.mm(a, b)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    if cuda:
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def flops_per_token(preset: str, vocab: int, block: int, mask_p: float = 0.15, tc_negatives: int = 0) -> float:
    from taco.presets import build_config, count_parameters

    c = build_config(preset, vocab)
    n_body = count_parameters(c)["non_embedding"]
    h, layers = c.hidden_size, c.num_hidden_layers
    return 6 * n_body + 12 * layers * h * block + 6 * mask_p * (h * h + h * vocab) + 4 * tc_negatives * h


def line(what: str, value: str, baseline: str, ratio: float, target: str) -> None:
    print(f"{what:<60} {value:>16} | baseline {baseline:>16} | ratio {ratio:5.2f} ({target})", flush=True)


def check_paths(device: str, precision: str, paths: list[str]) -> list[str]:
    """Each TC path's loss and anchor gradient on `device` (under the training autocast) against a float64
    materialised-gather reference on the CPU, on the same draws; prints one line per path and returns the paths
    that ran and agreed (loss to 1e-5 relative, gradient to 1e-5 absolute)."""
    import torch.nn.functional as F

    from taco.objectives import sample_tc_indices, tc_loss

    gen = torch.Generator().manual_seed(0)
    b, seq_len, hidden, k = 6, 32, 32, 50
    h0, e0 = torch.randn(b, seq_len, hidden, generator=gen), torch.randn(b, seq_len, hidden, generator=gen)
    h0 = h0 + torch.randn(b, 1, hidden, generator=gen)  # some structure: sequences share a direction
    valid = torch.ones(b, seq_len, dtype=torch.bool)
    valid[:, 0] = valid[:, -1] = False
    valid[-1, -5:] = False
    good = []
    for path in paths:
        tc = TC_PATHS[path]
        index = sample_tc_indices(valid, valid, 5, k, torch.Generator().manual_seed(1),
                                  negative_sharing=tc.get("tc_negative_sharing", "anchor"))
        ref_h = h0.double().requires_grad_()
        u = F.normalize((ref_h - e0.double()).reshape(-1, hidden)[index.flat], dim=-1)
        pool = u.detach()
        logits = torch.cat([(u[index.anchors] * pool[index.positives]).sum(-1, keepdim=True),
                            (u[index.anchors].unsqueeze(1) * pool[index.negatives]).sum(-1)], 1) / 0.07
        ref = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        (ref_grad,) = torch.autograd.grad(ref, ref_h)
        try:
            dev_index = type(index)(**{f: (None if v is None else v.to(device)) for f, v in vars(index).items()})
            h = h0.to(device).requires_grad_()
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = tc_loss(h, e0.to(device), dev_index, 0.07, method=tc.get("tc_kernel", "auto"))
            (grad,) = torch.autograd.grad(loss, h)
            d_loss = abs(float(loss.detach()) - float(ref.detach())) / float(ref.detach())
            d_grad = float((grad.double().cpu() - ref_grad).abs().max())
            ok = d_loss < 1e-5 and d_grad < 1e-5
            print(f"# TC path {path} on {device} ({precision}): loss rel. diff {d_loss:.1e}, max |grad diff| "
                  f"{d_grad:.1e} vs float64 CPU reference: {'ok' if ok else 'MISMATCH'}", flush=True)
        except Exception as exc:  # noqa: BLE001 - a kernel the device lacks is reported, the others measured
            ok = False
            print(f"# TC path {path} on {device}: FAILED ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                  flush=True)
        if ok:
            good.append(path)
    return good


def search_batch(setup: Setup, vocab: int, candidates: list[int], paths: list[str]) -> int:
    """The largest candidate micro-batch at which one step of MLM and of every TC path fits (GPU only)."""
    for batch in sorted(candidates, reverse=True):
        setup.batch = batch
        if fits(setup, vocab, paths):
            print(f"# [{setup.preset}] micro-batch {batch} x {setup.block} fits (tried {sorted(candidates, reverse=True)})",
                  flush=True)
            return batch
        print(f"# [{setup.preset}] micro-batch {batch} x {setup.block}: out of memory", flush=True)
    raise SystemExit(f"no micro-batch of {candidates} fits; pass smaller --batch-search sizes")


def compare_paths(setup: Setup, steps: int, paths: list[str], parts: set[str], peak_flops: float,
                  vocab: int) -> None:
    """MLM, then TACO on every path: tokens/s, step time ratio, peak GPU memory ratio and MFU lines."""
    tokens = setup.batch * setup.block
    cuda = setup.device.startswith("cuda")
    tag = f"[{setup.preset} {setup.batch}x{setup.block} {setup.precision}]"
    mlm_times, mlm_peak = ours_step_times(setup, "mlm", steps)
    mlm = statistics.median(mlm_times)
    if "speed" in parts and not cuda:
        hf = statistics.median(hf_trainer_step_times(setup, steps))
        line(f"{tag} MLM tokens/s, taco.train vs HF Trainer", f"{tokens / mlm:,.0f} tok/s",
             f"{tokens / hf:,.0f} tok/s", hf / mlm, "target >= 1.5")
    elif "speed" in parts:
        print(f"{tag} MLM tokens/s: {tokens / mlm:,.0f} (median step {mlm * 1e3:.1f} ms)", flush=True)
    rows = [("MLM", mlm, mlm_peak, 0)]
    for path in paths:
        try:
            times, peak = ours_step_times(setup, "taco", steps, TC_PATHS[path])
        except Exception as exc:  # noqa: BLE001 - one path failing (e.g. out of memory) leaves the others measured
            print(f"{tag} TACO ({path}): FAILED ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", flush=True)
            continue
        taco = statistics.median(times)
        rows.append((f"TACO {path}", taco, peak, 50))
        if "speed" in parts:
            line(f"{tag} TACO ({path}) step time / MLM step time", f"{taco:.4f} s", f"{mlm:.4f} s", taco / mlm,
                 "target <= 1.10")
            print(f"{tag} TACO ({path}) tokens/s: {tokens / taco:,.0f}", flush=True)
        if "memory" in parts and cuda:
            mib = 2**20
            line(f"{tag} peak GPU memory TACO ({path}) / MLM", f"{peak / mib:,.0f} MiB", f"{mlm_peak / mib:,.0f} MiB",
                 peak / mlm_peak, "target <= 1.15")
    if "mfu" in parts:
        for name, seconds, _, k in rows:
            achieved = flops_per_token(setup.preset, vocab, setup.block, tc_negatives=k) * tokens / seconds
            unit = 1e12 if cuda else 1e9
            label = "TFLOP/s" if cuda else "GFLOP/s"
            line(f"{tag} MFU {name} (training FLOP/s / matmul FLOP/s)", f"{achieved / unit:.1f} {label}",
                 f"{peak_flops / unit:.1f} {label}", achieved / peak_flops, "informative")


def main() -> None:
    from taco.cache import cache_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="mini,small", help="Comma-separated presets to measure.")
    p.add_argument("--steps", type=int, default=8, help="Training steps per measurement (2 warm-up steps dropped).")
    p.add_argument("--batch", type=int, default=32, help="Blocks per step (micro-batch).")
    p.add_argument("--block", type=int, default=128, help="Tokens per block.")
    p.add_argument("--cache", default=str(cache_root()),
                   help="Cache root shared with taco.train (default: taco.cache.cache_root()).")
    p.add_argument("--quick", action="store_true", help="mini only, 5 steps.")
    p.add_argument("--parts", default="paths,speed,memory,mfu",
                   help="Which comparisons to run: paths (each TC path against a float64 reference on the device; "
                        "those that disagree or fail are left out of the rest), speed, memory, mfu.")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N.")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="Training precision (default: fp32 on the CPU, bf16 on a GPU).")
    p.add_argument("--tc-methods", default=None,
                   help=f"TC paths to compare, comma-separated, of {','.join(TC_PATHS)} (default: auto on the CPU, "
                        "gather,sparse,sparse_bag,shared on a GPU).")
    p.add_argument("--corpus", default="builtin",
                   help="builtin (taco.train's default), synthetic (no downloads), or a corpus path.")
    p.add_argument("--tokenizer", default="", help="Saved tokenizer for a corpus path (default: trained, cached).")
    p.add_argument("--batch-search", default="",
                   help="GPU: comma-separated micro-batch sizes; the largest that fits replaces --batch.")
    p.add_argument("--synthetic-words", type=int, default=1_500_000, help="Words of the synthetic corpus.")
    p.add_argument("--check-synthetic", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--gather", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    cuda = a.device.startswith("cuda")
    precision = a.precision or ("bf16" if cuda else "fp32")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    if a.memory_worker:
        setup = Setup(a.presets, a.batch, a.block, a.cache, corpus=a.corpus, tokenizer=a.tokenizer)
        print(json.dumps(memory_worker(a.memory_worker, setup, a.gather)))
        return
    paths = (a.tc_methods or ("gather,sparse,sparse_bag,shared" if cuda else "auto")).split(",")
    unknown = sorted(set(paths) - set(TC_PATHS))
    if unknown:
        raise SystemExit(f"--tc-methods: unknown path(s) {', '.join(unknown)}; choose from {', '.join(TC_PATHS)}")
    presets = ["mini"] if a.quick else a.presets.split(",")
    steps = 5 if a.quick else a.steps
    with tempfile.TemporaryDirectory() as tmp:
        corpus, tokenizer = a.corpus, a.tokenizer
        if corpus == "synthetic":
            import taco.data

            corpus, tokenizer = synthetic_corpus(Path(tmp), a.synthetic_words)
            if a.check_synthetic:
                from taco.corpus import load_corpus
                from taco.tokenizer import load_tokenizer

                docs, tok = load_corpus(corpus).validation[:20], load_tokenizer(tokenizer)
                same = synthetic_ids(docs, tok) == [list(x) for x in taco.data.tokenize_documents(docs, tok, False)]
                print(f"# synthetic ids equal the tokenizer's: {same}", flush=True)
            taco.data.tokenize_documents = synthetic_ids
        tok, _ = prepared(a.cache, a.block, corpus, tokenizer)
        peak = matmul_flops(a.device, precision)
        where = torch.cuda.get_device_name(a.device) if cuda else f"{torch.get_num_threads()} threads"
        print(f"# torch {torch.__version__}, {where}, batch {a.batch} x {a.block} tokens, {precision}, corpus "
              f"{a.corpus}, dense {precision} matmul {peak / 1e9:,.1f} GFLOP/s, TC paths {','.join(paths)}",
              flush=True)
        parts = set(a.parts.split(","))
        if "paths" in parts:
            paths = check_paths(a.device, precision, paths)
        for preset in presets:
            setup = Setup(preset, a.batch, a.block, a.cache, a.device, precision, corpus, tokenizer)
            if a.batch_search:
                if not cuda:
                    raise SystemExit("--batch-search needs --device cuda (it catches CUDA out-of-memory errors)")
                search_batch(setup, len(tok), [int(x) for x in a.batch_search.split(",")], paths)
            if parts & {"speed", "mfu"} or (cuda and "memory" in parts):
                compare_paths(setup, steps, paths, parts, peak, len(tok))
            if "memory" not in parts or cuda:
                continue
            m_mlm = measure_memory("mlm", setup)
            m_taco = measure_memory("taco", setup)
            m_gather = measure_memory("taco", setup, gather=True)
            mib = 2**20
            line(f"[{preset}] peak memory TACO / MLM ({m_mlm['device']}, process)", f"{m_taco['peak'] / mib:,.0f} MiB",
                 f"{m_mlm['peak'] / mib:,.0f} MiB", m_taco["peak"] / m_mlm["peak"], "target <= 1.15")
            line(f"[{preset}] step memory TACO / MLM (above weights+Adam)", f"{m_taco['step_peak'] / mib:,.0f} MiB",
                 f"{m_mlm['step_peak'] / mib:,.0f} MiB", m_taco["step_peak"] / m_mlm["step_peak"], "informative")
            line(f"[{preset}] step memory TACO / (A,K,H) gather TACO", f"{m_taco['step_peak'] / mib:,.0f} MiB",
                 f"{m_gather['step_peak'] / mib:,.0f} MiB", m_taco["step_peak"] / m_gather["step_peak"],
                 "lower is better")


if __name__ == "__main__":
    main()
