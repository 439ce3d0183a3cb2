"""Cost of `python -m dynamics.probe` relative to the forward passes it needs, its memory over a long series,
and its time per snapshot. Prints one line per comparison; not part of the test suite.

    python benchmarks/bench_probe.py [--quick] [--device cpu|cuda] [--threads N] [--repeat N] [--only PART]
                                     [--against REV]

Models are random-initialised BERTs saved with `save_pretrained` (each snapshot a different seed), the probe set
is Zipf-distributed token ids over a synthetic WordPiece vocabulary, packed in blocks of 128.

* overhead (`mini`: 4 layers, hidden 256, 4 heads, intermediate 1024, vocab 8192; 32k probe tokens; 10
  snapshots; all metric families): wall time of `dynamics.probe.run` divided by the wall time of loading the
  same snapshots and running the same forward passes (the unmasked pass with all hidden states and the masked
  pass through the MLM head at the masked positions) with nothing else. Also printed: the ratio to the
  forward passes as the probe runs them (its masked pass computes the last layer at the masked positions only),
  i.e. the cost of extraction and metrics alone. Figures and the report are timed separately. Measured
  --repeat times (default 3), forward passes and probe alternating; the median ratio is the figure.
  Target ≤ 1.3×. With `--against REV` (a git revision, e.g. the commit before a change), each repeat also times
  the probe of this tree and of REV (checked out in a temporary worktree) on the same run, each in a fresh
  process, alternating; their median ratio is the before/after figure, which the machine's load affects far
  less than either time alone. Each repeat also prints the CPU time the hypervisor gave to other guests (steal)
  meanwhile: on a shared virtual machine a repeat with seconds of steal is slowed by other tenants, not the code.
* memory (`mini`, 30 snapshots, 8k probe tokens to keep it short, run in a fresh process): peak RSS after the
  last snapshot / after the first. Target ≤ 1.1.
* time per snapshot (`small`: 4 layers, hidden 512, 8 heads, intermediate 2048, vocab 8192; 32k tokens;
  2 snapshots).
* attention (`--only attention`; `mini`, 32k tokens, 10 snapshots): probe time with the opt-in attention and
  copying families added to the default ones, over the default families alone (fresh stores, alternating,
  --repeat times; the median ratio is the figure). Target <= 1.15.
* stages (`--only stages`; two `mini` runs of one seed group, 32k tokens, 10 snapshots each): probe time with the
  seed agreement (`--agreement-positions 256`, the default: output samples stored per snapshot, then the group's
  seed_jsd and seed_cka) over the same probe with `--agreement-positions 0` (fresh stores, alternating, --repeat
  times; median ratio), and the time of the phases (`dynamics.results.phases.series_phases`) over all stored curves
  of one run, as a share of that run's probe time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRESETS = {
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
}
VOCAB, BLOCK = 8192, 128
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_run(root: Path, preset: str, n_snapshots: int, n_tokens: int, seed: int = 0, name: str | None = None,
             data_seed: int | None = None) -> Path:
    """A run directory in taco.train's format with random-init snapshots (weights from `seed`) and Zipf validation
    blocks (from `data_seed`, default `seed`); `name` also records a config {preset, seed}, so that runs named
    alike with other seeds form a seed group."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    run = root / (name or f"{preset}-{n_snapshots}")
    words = SPECIAL + [f"w{i}" for i in range(VOCAB - len(SPECIAL))]
    tok = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(str(run / "tokenizer"))
    rng = np.random.default_rng(seed if data_seed is None else data_seed)
    n_blocks = max(1, n_tokens // BLOCK)
    ranks = rng.zipf(1.2, size=(n_blocks * 2, BLOCK - 2)) % (VOCAB - len(SPECIAL))
    blocks = np.concatenate([np.full((n_blocks * 2, 1), 2), ranks + len(SPECIAL), np.full((n_blocks * 2, 1), 3)], axis=1)
    (run / "data").mkdir(parents=True)
    np.save(run / "data" / "validation.npy", blocks.astype(np.int32))
    counts = np.bincount((rng.zipf(1.2, size=2_000_000) % (VOCAB - len(SPECIAL))) + len(SPECIAL), minlength=VOCAB)
    np.save(run / "data" / "counts.npy", counts.astype(np.int64))
    (run / "run.json").write_text(json.dumps({"objective": "mlm", "preset": preset, "block_size": BLOCK,
                                              "validation_blocks_path": "data/validation.npy",
                                              "token_counts_path": "data/counts.npy",
                                              **({"config": {"preset": preset, "seed": seed}, "seed": seed}
                                                 if name else {})}))
    config = BertConfig(vocab_size=VOCAB, max_position_embeddings=BLOCK, **PRESETS[preset])
    for k in range(n_snapshots):
        torch.manual_seed(seed + k)
        step = 0 if k == 0 else 2 ** k
        folder = run / "snapshots" / f"step-{step:07d}"
        BertForMaskedLM(config).save_pretrained(str(folder))
        (folder / "snapshot.json").write_text(json.dumps({"step": step, "tokens_seen": step * 4096}))
    return run


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests so far, all CPUs (the `steal` column of /proc/stat; 0 where
    there is none). Printed beside each timing: a repeat with seconds of steal was slowed by other tenants."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def forward_only(run: Path, n_blocks: int, batch_size: int, device: str, masked: bool = True,
                 limit: int | None = None, trimmed: bool = False) -> float:
    """Seconds to load every snapshot and run the forward passes on the same blocks, nothing else: the plain
    passes, or (`trimmed`) with the masked pass's last layer at the masked positions only, as the probe runs it."""
    import torch
    from transformers import AutoModelForMaskedLM

    from dynamics.config import ProbeConfig
    from dynamics.find.inputs import build_probe
    from dynamics.find.series import discover
    from dynamics.find.tokens import load_tokenizer
    from dynamics.measure import extract as ex

    series = discover(run)
    ps = build_probe(series, load_tokenizer(series.tokenizer_path), ProbeConfig(probe_blocks=n_blocks))
    ids_all = torch.from_numpy(ps.ids.astype(np.int64))
    where_all = torch.from_numpy(ps.masked)
    t0 = time.perf_counter()
    for snap in series.snapshots[:limit]:
        model = AutoModelForMaskedLM.from_pretrained(str(snap.path), dtype=torch.float32).eval().to(device)
        with torch.inference_mode():
            for start in range(0, len(ids_all), batch_size):
                ids = ids_all[start : start + batch_size].to(device)
                out = model.bert(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
                del out
                if masked:
                    where = where_all[start : start + batch_size].to(device)
                    inp = torch.where(where, torch.full_like(ids, ps.mask_id), ids)
                    if trimmed:
                        h = ex.last_hidden_at(model.bert, inp, where)
                    else:
                        h = model.bert(input_ids=inp, attention_mask=torch.ones_like(inp)).last_hidden_state[where]
                    model.cls(h)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        del model
    return time.perf_counter() - t0


def probe_cost(run: Path, out: Path, n_blocks: int, batch_size: int, device: str,
               metrics: tuple[str, ...] | None = None) -> tuple[float, float]:
    """(seconds for measuring every snapshot and storing, seconds for figures + report); `metrics`: the families
    (None: the default ones)."""
    from dynamics import probe as P
    from dynamics.config import DEFAULT_FAMILIES

    t0 = time.perf_counter()
    P.run(run, out=out, probe_blocks=n_blocks, batch_size=batch_size, device=device, progress=False, figures=False,
          metrics=metrics or DEFAULT_FAMILIES)
    measure = time.perf_counter() - t0
    t1 = time.perf_counter()
    P.run(run, out=out, probe_blocks=n_blocks, batch_size=batch_size, device=device, progress=False, figures=True)
    return measure, time.perf_counter() - t1


MEMORY_TOKENS = 8192


def memory_child(run: str, out: str, n_blocks: int, batch_size: int, device: str) -> None:
    """In a fresh process: peak RSS (MiB) after each snapshot, printed as JSON."""
    from dynamics import probe as P

    peaks: list[float] = []

    def hook(snapshot, families) -> None:
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    P.run(run, out=out, probe_blocks=n_blocks, batch_size=batch_size, device=device, progress=False, figures=False,
          on_snapshot=hook)
    print(json.dumps(peaks))


def probe_child(root: str, run: str, out: str, n_blocks: int, batch_size: int, device: str) -> None:
    """In a fresh process: seconds of `dynamics.probe.run` imported from the source tree `root`, printed."""
    sys.path.insert(0, root)
    from dynamics import probe as P

    assert Path(P.__file__).resolve().is_relative_to(Path(root).resolve()), P.__file__
    t0 = time.perf_counter()
    P.run(run, out=out, probe_blocks=n_blocks, batch_size=batch_size, device=device, progress=False, figures=False)
    print(time.perf_counter() - t0)


def timed_child(root: Path, run: Path, out: Path, n_blocks: int, batch_size: int, device: str) -> float:
    cmd = [sys.executable, __file__, "--probe-child", str(root), str(run), str(out), "--device", device,
           "--batch-size", str(batch_size)]
    res = subprocess.run(cmd + ["--blocks", str(n_blocks)], capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    return float(res.stdout.strip().splitlines()[-1])


def against(rev: str, run: Path, root: Path, n_blocks: int, batch_size: int, device: str, repeat: int) -> None:
    """Probe time of this tree / of `rev`, alternating in fresh processes; the median ratio is printed."""
    tree = root / "against"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
    try:
        ratios = []
        for r in range(repeat):
            old = timed_child(tree, run, root / "out-old", n_blocks, batch_size, device)
            new = timed_child(ROOT, run, root / "out-new", n_blocks, batch_size, device)
            ratios.append(new / old)
            print(f"against {rev} [{r + 1}/{repeat}]: probe {new:.1f}s here / {old:.1f}s at {rev} = {new / old:.2f}x",
                  flush=True)
        print(f"against {rev}: median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})",
              flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8k tokens, 4 snapshots (overhead), 10 (memory), 2 (small)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--batch-size", type=int, default=16, help="probe blocks per forward pass")
    ap.add_argument("--only", choices=["overhead", "memory", "small", "attention", "stages"], action="append",
                    help="run only this part (repeatable; default: overhead, memory, small)")
    ap.add_argument("--repeat", type=int, default=0,
                    help="overhead measurements, forward and probe alternating (default 3; 1 with --quick)")
    ap.add_argument("--against", metavar="REV", help="also time the probe of git revision REV against this tree "
                    "(overhead part; fresh processes, alternating)")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--probe-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--blocks", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tokens = 8192 if args.quick else 32768
    repeat = args.repeat or (1 if args.quick else 3)
    n_blocks = tokens // BLOCK
    if args.probe_child:
        probe_child(*args.probe_child, args.blocks, args.batch_size, args.device)
        return
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], MEMORY_TOKENS // BLOCK, args.batch_size, args.device)
        return
    only = set(args.only or ["overhead", "memory", "small"])
    dev = args.device
    print(f"# device {dev}, torch threads {torch.get_num_threads()}, {n_blocks} blocks × {BLOCK} = {n_blocks * BLOCK} "
          f"probe tokens, batch {args.batch_size} blocks", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "overhead" in only:
            n = 4 if args.quick else 10
            run = make_run(root, "mini", n, tokens)
            forward_only(run, n_blocks, args.batch_size, dev, limit=1)  # warm-up: imports, allocator, caches
            # Forward passes and probe alternate, so load that comes and goes hits both; the median ratio is quoted.
            ratios: list[float] = []
            own_ratios: list[float] = []
            for r in range(repeat):
                s0 = steal_seconds()
                both = forward_only(run, n_blocks, args.batch_size, dev)
                s1 = steal_seconds()
                own = forward_only(run, n_blocks, args.batch_size, dev, trimmed=True)
                single = forward_only(run, n_blocks, args.batch_size, dev, masked=False)
                s2 = steal_seconds()
                measure, extras = probe_cost(run, root / f"out-mini-{r}", n_blocks, args.batch_size, dev)
                s3 = steal_seconds()
                ratios.append(measure / both)
                own_ratios.append(measure / own)
                print(f"overhead mini ({n} snapshots, all metrics) [{r + 1}/{repeat}]: probe {measure:.1f}s / forward "
                      f"passes {both:.1f}s = {measure / both:.2f}x; vs the probe's own forward passes (last layer "
                      f"at masked positions) {own:.1f}s = {measure / own:.2f}x; vs the unmasked pass alone "
                      f"{single:.1f}s = {measure / single:.2f}x; figures+report {extras:.1f}s; CPU time stolen by other "
                      f"guests: {s1 - s0:.1f}s during the forward passes, {s3 - s2:.1f}s during the probe", flush=True)
            print(f"overhead mini: median {statistics.median(ratios):.2f}x over {repeat} run(s) "
                  f"(range {min(ratios):.2f}-{max(ratios):.2f}; target <= 1.3); vs the probe's own forward passes "
                  f"{statistics.median(own_ratios):.2f}x", flush=True)
            if args.against:
                against(args.against, run, root, n_blocks, args.batch_size, dev, repeat)
        if "memory" in only:
            n = 10 if args.quick else 30
            run = make_run(root, "mini", n, MEMORY_TOKENS)
            cmd = ([sys.executable, __file__, "--memory-child", str(run), str(root / "out-mem"), "--device", dev,
                    "--batch-size", str(args.batch_size)] + (["--threads", str(args.threads)] if args.threads else []))
            # As bench_train: large blocks through mmap, so that the high-water mark tracks live memory rather than
            # glibc's cached heap; the default allocator is measured too (its heap settles after a few snapshots).
            fixed = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
            for label, env in (("mmap threshold 64 KiB", fixed), ("default malloc", dict(os.environ))):
                res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                peaks = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"memory mini ({n} snapshots, {MEMORY_TOKENS} tokens, {label}): peak RSS after last / after "
                      f"first snapshot = {peaks[-1]:.0f} / {peaks[0]:.0f} MiB = {peaks[-1] / peaks[0]:.3f} "
                      f"(target <= 1.1)", flush=True)
                shutil.rmtree(root / "out-mem", ignore_errors=True)
        if "attention" in only:
            attention_overhead(root, tokens, n_blocks, args.batch_size, dev, repeat, 4 if args.quick else 10)
        if "stages" in only:
            stages_overhead(root, tokens, n_blocks, args.batch_size, dev, repeat, 4 if args.quick else 10)
        if "small" in only:
            n = 2
            run = make_run(root, "small", n, tokens)
            forward_only(run, n_blocks, args.batch_size, dev, limit=1)
            both = forward_only(run, n_blocks, args.batch_size, dev)
            measure, _ = probe_cost(run, root / "out-small", n_blocks, args.batch_size, dev)
            print(f"time per snapshot small: {measure / n:.1f}s (forward passes alone {both / n:.1f}s, "
                  f"{measure / both:.2f}x)", flush=True)


def attention_overhead(root: Path, tokens: int, n_blocks: int, batch_size: int, dev: str, repeat: int,
                       n: int) -> None:
    """Probe time with the attention and copying families added over the default families alone (module docstring)."""
    from dynamics.config import DEFAULT_FAMILIES

    run = make_run(root, "mini", n, tokens, seed=1)
    forward_only(run, n_blocks, batch_size, dev, limit=1)  # warm-up
    with_them = (*DEFAULT_FAMILIES, "attention", "copying")
    ratios = []
    for r in range(repeat):
        base, _ = probe_cost(run, root / f"out-base-{r}", n_blocks, batch_size, dev)
        both, _ = probe_cost(run, root / f"out-attn-{r}", n_blocks, batch_size, dev, metrics=with_them)
        ratios.append(both / base)
        print(f"attention mini ({n} snapshots) [{r + 1}/{repeat}]: probe with attention+copying {both:.1f}s / "
              f"default families {base:.1f}s = {both / base:.3f}x", flush=True)
    print(f"attention mini: median {statistics.median(ratios):.3f}x over {repeat} run(s) (range {min(ratios):.3f}-"
          f"{max(ratios):.3f}; target <= 1.15)", flush=True)



def stages_overhead(root: Path, tokens: int, n_blocks: int, batch_size: int, dev: str, repeat: int, n: int) -> None:
    """Seed agreement's and the phases' cost on a seed group of two runs (module docstring)."""
    from dynamics import probe as P
    from dynamics.results import phases
    from dynamics.results import store as st
    from dynamics.results.onsets import curve_rows

    runs = [make_run(root, "mini", n, tokens, seed=s, name=f"seedgroup-s{s}", data_seed=0) for s in (1, 2)]
    forward_only(runs[0], n_blocks, batch_size, dev, limit=1)  # warm-up
    ratios, shares = [], []
    for r in range(repeat):
        times = {}
        for label, positions in (("without", 0), ("with", 256)):
            t0 = time.perf_counter()
            P.run(runs, out=root / f"out-stages-{label}-{r}", probe_blocks=n_blocks, batch_size=batch_size, device=dev,
                  progress=False, figures=False, agreement_positions=positions)
            times[label] = time.perf_counter() - t0
        with st.open(root / f"out-stages-with-{r}", readonly=True) as s:
            df = s.metrics(run=runs[0].name)
            agreed = len(s.group_metrics())
        rows = curve_rows(df)
        t0 = time.perf_counter()
        curves = phases.series_phases(rows)
        phase_s = time.perf_counter() - t0
        ratios.append(times["with"] / times["without"])
        shares.append(phase_s / (times["with"] / 2))
        print(f"stages mini (2 seeds x {n} snapshots) [{r + 1}/{repeat}]: probe with agreement {times['with']:.1f}s "
              f"({agreed} group rows) / without {times['without']:.1f}s = {ratios[-1]:.3f}x; phases of one run "
              f"({len(curves)} curves) {phase_s:.2f}s = {100 * shares[-1]:.1f}% of its probe time", flush=True)
    print(f"stages mini: seed agreement median {statistics.median(ratios):.3f}x (range {min(ratios):.3f}-"
          f"{max(ratios):.3f}); phases median {100 * statistics.median(shares):.1f}% of a run's probe time",
          flush=True)


if __name__ == "__main__":
    main()
