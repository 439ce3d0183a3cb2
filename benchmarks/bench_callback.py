"""What `dynamics.callback.SnapshotCallback` costs a Hugging Face `Trainer` (issue 25). Not part of the test
suite.

The real `transformers.Trainer` trains a `BertForMaskedLM` of a `taco.presets` size (`mini` by default) with
`DataCollatorForLanguageModeling` on `taco.train`'s packed blocks of the built-in corpus (same cached
tokenizer, same blocks), in three arms per repeat, each from the same initial weights and data order:

* baseline: the Trainer alone;
* callback: the same Trainer with `SnapshotCallback()` writing the snapshot series on the default schedule
  (step 0, powers of two below `--every`, every `--every` steps, the final step), with the probe's validation
  blocks and token counts as `taco.train` writes them;
* follow: the callback with `follow=True`: `dynamics.probe --follow` measures the snapshots in a separate
  process (`--follow-threads` threads) while training goes on.

Training time runs from the Trainer's train-begin event (before the callback writes run.json, the tokenizer
and the step-0 snapshot) to the end of the final step (its snapshot written); tokens/s = steps x batch x block
over it, after an unmeasured warm-up run of 8 steps. Ratios are an arm's tokens/s over the baseline's of the
same repeat; the arms' order alternates between repeats; the time the callback's own events take in the
training process is printed as a share of the training time too (steadier than a ratio on a shared machine).
For the follow arm, the follower's own summary line (`followed: … lag from rename to stored results median X
s, max Y s`, in OUT/follow.log) gives the lag per snapshot, seconds from a snapshot's rename into place to its
stored results; the probe's tail is how long it ran on after the final step. Both processes share the
machine's cores.

    python benchmarks/bench_callback.py            # mini, 300 steps of 16 x 128, 3 repeats
    python benchmarks/bench_callback.py --quick    # 16 steps of 8 x 128, 1 repeat: checks that it runs

The built-in corpus must be prepared (`python -m taco.prepare`, or `make corpus`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import prepared  # noqa: E402 - taco.train's corpus, tokenizer and packed blocks

from dynamics.callback import SnapshotCallback  # noqa: E402
from experiments.causal_lm import Blocks  # noqa: E402 - packed rows as a Trainer dataset

ARMS = ("baseline", "callback", "follow")
LAG = re.compile(r"(\d+) snapshot\(s\) measured as they arrived: lag from rename to stored results median "
                 r"([\d.]+) s, max ([\d.]+) s")


class TimedSnapshotCallback(SnapshotCallback):
    """The callback, adding up the seconds its Trainer events take in the training process (`spent`): its own
    cost, less noisy than the difference of two runs on a shared machine."""

    spent = 0.0

    def _timed(self, event, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            return event(*args, **kwargs)
        finally:
            self.spent += time.perf_counter() - t0

    def on_train_begin(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return self._timed(super().on_train_begin, *args, **kwargs)

    def on_step_end(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return self._timed(super().on_step_end, *args, **kwargs)

    def on_log(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return self._timed(super().on_log, *args, **kwargs)




def train_once(arm: str, tok, data, a: argparse.Namespace, tmp: Path) -> dict:  # noqa: ANN001
    """One Trainer run of `arm`: its training seconds and, for follow, the follower's lag and tail."""
    from transformers import (
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from taco.presets import build_config

    marks: dict[str, float] = {}

    class Start(TrainerCallback):  # first in the list: before the snapshot callback's train-begin work
        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            marks["begin"] = time.perf_counter()

    class End(TrainerCallback):  # last in the list: after the final step's snapshot
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if state.global_step == state.max_steps:
                marks["end"] = time.perf_counter()

    run, out = tmp / f"{arm}-run", tmp / f"{arm}-out"
    snap = None
    if arm != "baseline":
        snap = TimedSnapshotCallback(run, every=a.every, validation_blocks=np.asarray(data.validation[:256]),
                                token_counts=data.token_counts, follow=arm == "follow", follow_out=out,
                                follow_threads=a.follow_threads, follow_args=a.follow_args.split(),
                                follow_wait=False)
    callbacks = [Start()] + ([snap] if snap else []) + [End()]
    torch.manual_seed(0)
    model = BertForMaskedLM(build_config(a.preset, len(tok), pad_token_id=tok.pad_token_id))
    args = TrainingArguments(output_dir=str(tmp / f"{arm}-trainer"), per_device_train_batch_size=a.batch,
                             max_steps=a.max_steps, learning_rate=5e-4,
                             warmup_steps=max(1, a.max_steps // 16),
                             weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6, logging_steps=10,
                             save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=Blocks(data.train),
                      data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15),
                      processing_class=tok, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # prints the logged losses (disable_tqdm's); gone in every arm
    trainer.train()
    result = {"seconds": marks["end"] - marks["begin"]}
    if snap is not None:
        result["snapshots"] = len(snap.writer.steps)
        result["spent"] = snap.spent
    if arm == "follow":
        assert snap is not None and snap.follower is not None
        try:
            code = snap.follower.wait(timeout=a.follow_timeout)
        except Exception:  # noqa: BLE001 - a follower that does not end is reported, then stopped
            snap.follower.kill()
            code = "killed after --follow-timeout"
        result["tail"] = time.perf_counter() - marks["end"]
        log = (out / "follow.log").read_text(errors="replace")
        m = LAG.search(log)
        if m is None or code != 0:
            raise SystemExit(f"error: the follower ended with {code} and no lag line; its log:\n"
                             f"{log[-2000:]}")
        result.update(lag_n=int(m.group(1)), lag_median=float(m.group(2)), lag_max=float(m.group(3)))
    return result


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    """median [min–max]"""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def main() -> None:
    from taco.cache import cache_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", help="Model size (taco.presets), default mini.")
    p.add_argument("--max-steps", type=int, default=300, help="Optimizer steps per run.")
    p.add_argument("--batch", type=int, default=16, help="Blocks per step.")
    p.add_argument("--block", type=int, default=128, help="Tokens per block.")
    p.add_argument("--every", type=int, default=100,
                   help="Snapshot schedule: step 0, powers of two below N, every N steps, the final step "
                        "(the callback's and taco.train's default, 100).")
    p.add_argument("--repeats", type=int, default=3,
                   help="Repeats of the three arms (their order alternates).")
    p.add_argument("--no-follow", action="store_true", help="Leave out the follow=True arm.")
    p.add_argument("--follow-threads", type=int, default=1, help="Threads of the follower process.")
    p.add_argument("--follow-args", default="--no-figures",
                   help="More flags for the follower's dynamics.probe, space-separated; write "
                        "--follow-args='--no-figures --probe-blocks 64' (default: --no-figures).")
    p.add_argument("--follow-timeout", type=float, default=3600,
                   help="Seconds to wait for the follower after training before stopping it.")
    p.add_argument("--cache", default=str(cache_root()),
                   help="Cache root shared with taco.train (default: taco.cache.cache_root()).")
    p.add_argument("--corpus", default="builtin", help="builtin (taco.train's default) or a corpus path.")
    p.add_argument("--quick", action="store_true",
                   help="Check that it runs: 16 steps of 8 blocks, snapshots every 4, 1 repeat, the follower "
                        "on 16 probe blocks and the geometry family only.")
    a = p.parse_args()
    if a.quick:
        a.max_steps, a.batch, a.every, a.repeats = 16, 8, 4, 1
        a.follow_args = "--no-figures --probe-blocks 16 --metrics geometry"
    for name in ("max_steps", "batch", "every", "repeats", "follow_threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar
    tok, data = prepared(a.cache, a.block, a.corpus)
    arms = [x for x in ARMS if not (a.no_follow and x == "follow")]
    tokens = a.max_steps * a.batch * a.block
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"transformers Trainer, BertForMaskedLM {a.preset}, {a.max_steps} steps of {a.batch} x {a.block} "
          f"tokens, snapshots every {a.every} (log-spaced below), follower: {a.follow_threads} thread(s), "
          f"{a.follow_args!r}", flush=True)
    seconds: dict[str, list[float]] = {x: [] for x in arms}
    ratios: dict[str, list[float]] = {x: [] for x in arms if x != "baseline"}
    inside: dict[str, list[float]] = {x: [] for x in ratios}  # the callback's share of the training time
    follows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:  # warm-up, not measured: the first run in a process is slower
        train_once("baseline", tok, data, argparse.Namespace(**{**vars(a), "max_steps": min(8, a.max_steps)}),
                   Path(tmp))
    for r in range(a.repeats):
        order = arms if r % 2 == 0 else arms[::-1]
        got = {}
        with tempfile.TemporaryDirectory() as tmp:
            for arm in order:
                got[arm] = train_once(arm, tok, data, a, Path(tmp))
                seconds[arm].append(got[arm]["seconds"])
        extra = ""
        if "follow" in got:
            f = got["follow"]
            follows.append(f)
            extra = (f"; follow: {f['lag_n']} snapshots, lag median {f['lag_median']:.1f} s, "
                     f"max {f['lag_max']:.1f} s, probe done {f['tail']:.0f} s after the final step")
        for arm in ratios:
            ratios[arm].append(got["baseline"]["seconds"] / got[arm]["seconds"])
            inside[arm].append(got[arm]["spent"] / got[arm]["seconds"])
        print(f"# repeat {r + 1} ({', '.join(order)}): " + ", ".join(
            f"{x} {tokens / got[x]['seconds']:,.0f} tok/s" for x in arms) + extra, flush=True)
    base = [tokens / s for s in seconds["baseline"]]
    n_snap = got.get("callback", got.get("follow", {})).get("snapshots")
    print(f"Trainer tokens/s without the callback: {spread(base, '{:,.0f}')}", flush=True)
    for arm in ratios:
        label = "with the callback" if arm == "callback" else "with the callback, follow=True"
        target = "target >= 0.97" if arm == "callback" else "informative"
        speeds = spread([tokens / s for s in seconds[arm]], "{:,.0f}")
        print(f"Trainer tokens/s {label} ({n_snap} snapshots): {speeds} | ratio to without: "
              f"{spread(ratios[arm])} ({target}) | time inside the callback's events: "
              f"{spread([100 * x for x in inside[arm]], '{:.2f}')} % of training", flush=True)
    if follows:
        lag = statistics.median(f["lag_median"] for f in follows)
        worst = max(f["lag_max"] for f in follows)
        tail = spread([f["tail"] for f in follows], "{:.0f}")
        print(f"follow=True: probe lag per snapshot (rename to stored results), median of the repeats' "
              f"medians "
              f"{lag:.1f} s, max {worst:.1f} s; probe done {tail} s after the final step", flush=True)


if __name__ == "__main__":
    main()
