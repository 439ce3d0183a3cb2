"""`python -m dynamics.probe DIR [DIR …]`: measure how representations change across a series of snapshots.

For every selected snapshot of every run: load it (one model at a time), run the frozen probe set through it,
compute the requested metric families per layer, and store tidy rows and arrays in the results store (one
transaction per snapshot × family, so a kill loses at most the snapshot in progress and a rerun resumes).
Afterwards: step × step CKA per run, figures/*.png and report.md. Before measuring, each series' snapshots are
checked for integrity (`dynamics.find.integrity`: identical weights at two steps, a folder recording another step,
tokens seen that do not increase); the flags are stored, reported and printed as `warning:` lines at the end
(warnings, not errors: the exit status is unchanged).

Several directories are measured on one probe set — built from the first run — and must share its tokenizer
vocabulary. Results go to `DIR/dynamics/` for one directory and to `./dynamics-results/` for several or for a
Hugging Face model id read from the Hub cache (the cache is huggingface_hub's and is never written), unless `--out`
says otherwise. Bad input stops the program before anything is written: a one-line message naming the
path and the fix, exit status 2.

Several devices: `torchrun --nproc_per_node N -m dynamics.probe DIR …` deals the snapshots still to measure out to
N processes, each on its own device, all writing one store; rank 0 checks the input first and does the run-level
work last (`run_config`, `dynamics.shards`). `--follow` runs in one process.

Python API: `dynamics.probe.run(dirs, out=None, steps=None, every=None, metrics=(...), device="cpu", ...)`. This
module is the command line and that function; the work is `dynamics.pipeline`'s (and `dynamics.follow`'s).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.cli import Parser
from common.errors import UsageError
from dynamics import shards
from dynamics.config import DEFAULT_FAMILIES, ProbeConfig
from dynamics.errors import ProbeError
from dynamics.find.inputs import MULTI_RUN_OUT
from dynamics.follow import follow
from dynamics.pipeline import FOLLOW_SHARDED, run_config
from dynamics.setup import ProbeSummary, SnapshotHook

__all__ = ["ProbeSummary", "build_parser", "main", "parse_args", "run"]


def run(
    dirs: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    steps: Sequence[int] | None = None,
    every: int | None = None,
    metrics: Sequence[str] = DEFAULT_FAMILIES,
    device: str = "cpu",
    batch_size: int = 16,
    max_tokens: int | None = None,
    probe_text: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    on_snapshot: SnapshotHook | None = None,
    **settings: Any,
) -> ProbeSummary:
    """Measure the snapshot series in `dirs` (see the module docstring); other `ProbeConfig` fields (e.g.
    `probe_blocks`, `seed`, `figures`, `window`) go in `settings`. `on_snapshot(snapshot, families)` is
    called after each snapshot's results are committed. Raises `ProbeError` on bad input."""
    names = {f.name for f in dataclasses.fields(ProbeConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise TypeError(f"run() got unknown settings: {', '.join(unknown)}")
    cfg = ProbeConfig(out=None if out is None else str(out), steps=None if steps is None else list(steps),
                      every=every, metrics=list(metrics), device=device, batch_size=batch_size,
                      max_tokens=max_tokens, probe_text=None if probe_text is None else str(probe_text),
                      force=force, progress=progress, **settings)
    paths = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    if cfg.follow:
        return follow(paths, cfg.validate(), on_snapshot=on_snapshot)
    return run_config(paths, cfg.validate(), on_snapshot=on_snapshot)


# -------------------------------------------------------------------------------------------------------- CLI

def build_parser() -> Parser:
    parser = Parser(
        ProbeConfig, prog="python -m dynamics.probe",
        description="Measure anchor similarity, context alignment and geometry across the snapshots of one or "
                    "more runs (our runs/NAME, Hugging Face checkpoint-N folders, or single model folders) on one "
                    "frozen probe set, and store the results for the app.",
        epilog="Output: with one DIR, results go to DIR/dynamics/; with several or a Hub model id, to "
               f"./{MULTI_RUN_OUT}/ "
               "(all runs on the first run's probe set; they must share its tokenizer). --out overrides both. "
               "Reruns compute only what is missing for the same probe set; --force recomputes. "
               "Several devices: torchrun --nproc_per_node N -m dynamics.probe DIR … shares the snapshots out "
               "to N processes writing one store (--device cuda: one GPU each, cuda:LOCAL_RANK; cpu: cores / N "
               "threads each); --follow runs in one process. "
               "Bad input exits with status 2 and leaves stored results untouched.")
    repeatable(parser, "metrics_module")
    parser.add_argument("dirs", nargs="+", metavar="DIR",
                        help="run directory, Trainer output dir, folder of NAME-step_N model folders, model dir, or "
                             "a Hugging Face model id ORG/NAME read from the local Hub cache (see --revisions)")
    return parser


def repeatable(parser: Parser, dest: str) -> None:
    """Let the list flag `dest` be given several times (`--metrics-module a.py --metrics-module b.py`): the first
    occurrence replaces the default (or the config file's value), later ones add to it."""
    action = next(a for a in parser._actions if a.dest == dest)
    action.__class__ = _Extend


class _Extend(argparse._StoreAction):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest, None)
        fresh = current is None or current is self.default  # argparse starts the namespace at the default object
        setattr(namespace, self.dest, list(values) if fresh else [*current, *values])


def parse_args(argv: Sequence[str] | None = None) -> tuple[list[str], ProbeConfig]:
    """The directories and the validated config (exits 2 with one line on a usage error)."""
    cfg, extra = build_parser().parse(argv)
    return extra.dirs, cfg.validate()


def main(argv: Sequence[str] | None = None) -> int:
    place = shards.current()
    try:
        # Under torchrun every process parses the same arguments: rank 0 alone prints a usage error or --help.
        with contextlib.ExitStack() as quiet:
            if not place.main:
                quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
                quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
            dirs, cfg = parse_args(argv)
            if place.distributed and cfg.follow:
                raise ProbeError(FOLLOW_SHARDED)
    except UsageError as exc:
        if place.main:
            print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    try:
        summary = follow(dirs, cfg) if cfg.follow else run_config(dirs, cfg)
    except shards.PeerFailed as exc:  # another process of the group failed and said why
        return exc.exit_code
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        if place.main:
            print("interrupted: finished snapshots are stored; run the same command again to resume",
                  file=sys.stderr)
        return 130
    if not place.main:  # rank 0 prints the summary of the whole run
        return 0
    n_new = len(summary.computed)
    print(f"probe {summary.probe_hash[:12]}: {n_new} result(s) computed, {len(summary.reused)} already stored; "
          f"report: {summary.report}", file=sys.stderr)
    if hasattr(summary, "lag_line"):  # --follow
        print(f"followed: {summary.lag_line()}", file=sys.stderr)
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
