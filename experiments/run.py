"""Run an experiment end to end: `python -m experiments.run experiments/configs/NAME.yaml`.

Stages, in order, each resumable (re-running the command continues where it stopped):

* `train`    — `taco.train` for every run of the experiment (`--resume` from `state/` when a run was cut off;
  a finished run is skipped; runs that start from another run's embeddings wait for that run);
* `probe`    — `dynamics.probe` on each run's snapshot series into `RUN/dynamics/` (incremental);
* `linear`   — `experiments.evaluate --mode linear` at every snapshot (the `linear:` block of the file);
* `finetune` — `experiments.evaluate --mode finetune` at the snapshots of `finetune: steps` ("final" = last);
* `report`   — `experiments/results/NAME/`: report.md, figures and the numbers behind them (`experiments.report`).

`--jobs N` runs N runs side by side in child processes (useful on a GPU, where one small model leaves the card
mostly idle); each child writes its log to `RUNS_DIR/logs/RUN.log`. Stage timings and the device go to
`RUNS_DIR/RUN/experiment.json`. Bad input gives a one-line `error:` and exit status 2; a GLUE task without a GLUE
folder is reported before anything is trained.

`--max-steps N` is the quick check of a configuration (minutes on a 2-core CPU): every run trains N steps scoring
at most `SMOKE_EVAL_BLOCKS` validation blocks per snapshot, the probe draws at most `SMOKE_PROBE_BLOCKS` blocks,
and the linear probes and fine-tuning are cut to a smoke size (`smoke_options`: at most `SMOKE_EXAMPLES` training
and dev examples per task, one fine-tuning epoch with the first seed; without a GLUE folder the GLUE tasks are
left out, rotten_tomatoes stays); the report goes under RUNS_DIR (`RUNS_DIR/results/NAME/`) unless
`--results-dir` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.cli import DEVICES, Parser, resolve_device
from common.errors import UsageError
from common.files import check_directory, write_json
from experiments.errors import EvalError
from experiments.spec import Experiment, load

STAGES = ("train", "probe", "linear", "finetune", "report")
RUN_STAGES = STAGES[:-1]
DEFAULT_RESULTS = "experiments/results"
# The quick check's (--max-steps) sizes: training and dev examples per task for linear probes and fine-tuning,
# blocks of the probe set (dynamics.probe), validation blocks scored at each snapshot while training.
SMOKE_EXAMPLES = 32
SMOKE_PROBE_BLOCKS = 16
SMOKE_EVAL_BLOCKS = 16


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _record(run_dir: Path, stage: str, seconds: float, device: str) -> None:
    """Add a stage's wall time to RUN/experiment.json (atomically)."""
    path = run_dir / "experiment.json"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.setdefault("stages", {})[stage] = {"seconds": round(seconds, 1), "device": _device_name(device),
                                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(path, data, indent=1, end="\n")


def _train_config(exp: Experiment, name: str, device: str, progress: bool, max_steps: int | None) -> Any:
    from taco.config import TrainConfig

    opts = exp.train_options(name)
    if max_steps is not None:
        opts["max_steps"] = max_steps
        opts["eval_blocks"] = min(opts.get("eval_blocks") or SMOKE_EVAL_BLOCKS, SMOKE_EVAL_BLOCKS)
    return TrainConfig(**opts, device=device, progress=progress).resolved()


def final_step(exp: Experiment, name: str, max_steps: int | None = None) -> int:
    return int(_train_config(exp, name, "cpu", False, max_steps).max_steps)


def train_run(exp: Experiment, name: str, device: str, progress: bool, max_steps: int | None = None) -> bool:
    """Train (or resume, or skip when finished) one run; True when anything was trained."""
    from common.run_dir import RunDir
    from taco.train import train

    cfg = _train_config(exp, name, device, progress, max_steps)
    run = RunDir(cfg.output_dir)
    if run.is_run() and (run.snapshot_path(cfg.max_steps) / "model.safetensors").is_file():
        return False
    if run.state_dir.is_dir():
        cfg.resume = True
    elif run.is_run():
        cfg.overwrite = True  # started but killed before its first state save: nothing to keep
    train(cfg)
    return True


def probe_run(exp: Experiment, name: str, device: str, progress: bool, max_steps: int | None = None) -> bool:
    """Probe one run's snapshots (incremental); True when anything was computed. The quick check (`max_steps`)
    draws at most SMOKE_PROBE_BLOCKS probe blocks."""
    from dynamics.probe import run as probe

    run_dir = exp.run_dir(name)
    opts = dict(exp.probe)
    if max_steps is not None:
        opts["probe_blocks"] = min(opts.get("probe_blocks") or SMOKE_PROBE_BLOCKS, SMOKE_PROBE_BLOCKS)
    return bool(probe(run_dir, out=run_dir / "dynamics", device=device, progress=progress, **opts).computed)


def _tasks(opts: dict[str, Any]) -> list[str]:
    """The tasks of a `linear:`/`finetune:` block, resolved (`experiments.tasks.resolve_tasks`)."""
    from experiments.tasks import DEFAULT_TASKS, resolve_tasks

    tasks = opts.get("tasks", DEFAULT_TASKS)
    return resolve_tasks(tasks.split(",") if isinstance(tasks, str) else tasks)


def smoke_options(mode: str, opts: dict[str, Any], glue_dir: str | None) -> dict[str, Any]:
    """The quick check's (`--max-steps`) settings for a `linear:`/`finetune:` block: at most `SMOKE_EXAMPLES`
    training and dev examples per task; fine-tuning for one epoch with the first seed; without a GLUE folder
    (`glue_dir` or the block's own), only the tasks that need none."""
    from experiments.evaluate import EvalConfig
    from experiments.tasks import GLUE_TASKS

    out = dict(opts)
    for key in ("max_train_examples", "max_eval_examples"):
        out[key] = min(out.get(key) or SMOKE_EXAMPLES, SMOKE_EXAMPLES)
    if mode == "finetune":
        out["epochs"] = 1
        out["seeds"] = list(out.get("seeds") or EvalConfig().seeds)[:1]
    if not (glue_dir or out.get("glue_dir")):
        out["tasks"] = [t for t in _tasks(out) if t not in GLUE_TASKS]
    return out


def _stage_options(exp: Experiment, mode: str, glue_dir: str | None, max_steps: int | None) -> dict[str, Any]:
    """The experiment's `linear:`/`finetune:` block, as the quick check cuts it when `max_steps` is given."""
    opts = dict(exp.linear if mode == "linear" else exp.finetune or {})
    return opts if max_steps is None else smoke_options(mode, opts, glue_dir)


def check_glue(exp: Experiment, stages: Sequence[str], glue_dir: str | None) -> None:
    """`EvalError` when a downstream stage that will run needs GLUE files and no GLUE folder is given (checked
    before anything is trained: the stage itself would stop only after the training and the probe)."""
    from experiments.tasks import GLUE_TASKS

    for mode, opts in (("linear", exp.linear), ("finetune", exp.finetune)):
        if opts is None or mode not in stages or glue_dir or opts.get("glue_dir"):
            continue
        glue = [t for t in _tasks(opts) if t in GLUE_TASKS]
        if glue:
            raise EvalError(f"--glue-dir is required for {','.join(glue)} (the {mode} stage of {exp.source}); pass "
                            "the folder holding GLUE's task folders (CoLA/, SST-2/, …) or set GLUE_DIR, or run "
                            "the quick check (--max-steps N), which leaves the GLUE tasks out without one")


def _eval_config(exp: Experiment, mode: str, device: str, progress: bool, glue_dir: str | None,
                 max_steps: int | None, name: str) -> Any:
    from experiments.evaluate import EvalConfig

    opts = _stage_options(exp, mode, glue_dir, max_steps)
    if "steps" in opts and opts["steps"] is not None:
        last = final_step(exp, name, max_steps)
        steps = [last if str(s) == "final" else int(s) for s in opts["steps"]]
        opts["steps"] = sorted({s for s in steps if s <= last})
    if glue_dir is not None:
        opts["glue_dir"] = glue_dir
    return EvalConfig(**opts, mode=mode, device=device, progress=progress).validate()


def evaluate_run(exp: Experiment, name: str, mode: str, device: str, progress: bool, glue_dir: str | None,
                 max_steps: int | None = None) -> bool:
    """Score one run's snapshots downstream (units already stored are skipped); True when anything was computed."""
    from experiments.evaluate import evaluate

    run_dir = exp.run_dir(name)
    cfg = _eval_config(exp, mode, device, progress, glue_dir, max_steps, name)
    cfg.out = str(run_dir / "dynamics")
    return bool(evaluate([run_dir], cfg).computed)


def run_stages(exp: Experiment, name: str, stages: Sequence[str], device: str, progress: bool,
               glue_dir: str | None, max_steps: int | None = None) -> None:
    """Every per-run stage of `stages` for one run, in order, recording the times of those that did work."""
    run_dir = exp.run_dir(name)
    for stage in RUN_STAGES:
        if stage not in stages:
            continue
        if stage in ("linear", "finetune"):
            if (exp.linear if stage == "linear" else exp.finetune) is None:
                continue
            if max_steps is not None:
                opts = _stage_options(exp, stage, glue_dir, max_steps)
                if not opts["tasks"]:
                    print(f"[{exp.name}/{name}] {stage}: skipped by the quick check (every task needs GLUE files; "
                          "pass --glue-dir or set GLUE_DIR)", flush=True)
                    continue
                print(f"[{exp.name}/{name}] {stage}: quick check, {','.join(opts['tasks'])} on at most "
                      f"{SMOKE_EXAMPLES} training and dev examples"
                      + (", 1 epoch, seed " + str(opts["seeds"][0]) if stage == "finetune" else ""), flush=True)
        started = time.perf_counter()
        print(f"[{exp.name}/{name}] {stage}", flush=True)
        if stage == "train":
            did_work = train_run(exp, name, device, progress, max_steps)
        elif stage == "probe":
            did_work = probe_run(exp, name, device, progress, max_steps)
        else:
            did_work = evaluate_run(exp, name, stage, device, progress, glue_dir, max_steps)
        if not did_work:  # all stored already: keep the time of the run that did the work
            continue
        _record(run_dir, stage, time.perf_counter() - started, device)


def _child_command(args: argparse.Namespace, name: str, stages: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "experiments.run", str(args.config), "--runs", name,
           "--stages", ",".join(stages), "--device", args.device, "--runs-dir", str(args.runs_dir_resolved),
           "--no-progress", "--jobs", "1"]
    if args.glue_dir:
        cmd += ["--glue-dir", args.glue_dir]
    if args.max_steps is not None:
        cmd += ["--max-steps", str(args.max_steps)]
    # children share the CPU cores unless told otherwise
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    return cmd + ["--threads", str(threads)]


def run_parallel(exp: Experiment, names: list[str], args: argparse.Namespace, stages: Sequence[str]) -> None:
    """Run each name's stages in a child process, `args.jobs` at a time, wave by wave (dependencies first)."""
    failed: list[str] = []
    for wave in exp.waves():
        queue = [r.name for r in wave if r.name in names]
        running: dict[str, tuple[subprocess.Popen[bytes], Any]] = {}
        while queue or running:
            while queue and len(running) < args.jobs:
                name = queue.pop(0)
                log_path = exp.runs_dir / "logs" / f"{name}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = log_path.open("ab")
                running[name] = (subprocess.Popen(_child_command(args, name, stages), stdout=log,
                                                  stderr=subprocess.STDOUT), log)
                print(f"[{exp.name}] started {name} (log: {log_path})", flush=True)
            time.sleep(1.0)
            for name, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[name]
                    status = "finished" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                    print(f"[{exp.name}] {name} {status}", flush=True)
                    if proc.returncode:
                        failed.append(name)
    if failed:
        raise EvalError(f"run(s) {', '.join(failed)} failed; see their logs in {exp.runs_dir / 'logs'} and "
                        "run the same command again to resume")


@dataclass
class RunnerArgs:
    """The runner's settings (the experiment file itself is the positional argument)."""

    stages: list[str] = field(default_factory=lambda: list(STAGES), metadata={
        "help": f"stages to run, in this order: {','.join(STAGES)}"})
    runs: list[str] | None = field(default=None, metadata={"help": "only these runs of the experiment (default all)"})
    jobs: int = field(default=1, metadata={"help": "runs processed side by side in child processes"})
    device: str = field(default="auto", metadata={"help": f"where every stage runs: {DEVICES}"})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads per process (default: torch's; with --jobs N, cores / N per child)"})
    glue_dir: str | None = field(default_factory=lambda: os.environ.get("GLUE_DIR"), metadata={
        "help": "GLUE folder (CoLA/, SST-2/, ...) for the downstream stages; default $GLUE_DIR"})
    runs_dir: str | None = field(default=None, metadata={"help": "where the runs go (default: the file's runs_dir)"})
    results_dir: str | None = field(default=None, metadata={
        "help": f"the report goes to RESULTS_DIR/NAME/ (report.md, figures/, data); default {DEFAULT_RESULTS}, "
                "or RUNS_DIR/results with --max-steps"})
    max_steps: int | None = field(default=None, metadata={
        "help": "the quick check of a configuration (minutes on a CPU, e.g. --max-steps 20 --runs-dir "
                "/tmp/check): every run trains MAX_STEPS steps, the probe and the validation use at most "
                f"{SMOKE_PROBE_BLOCKS} blocks, linear probes and fine-tuning at most {SMOKE_EXAMPLES} training and "
                "dev examples per task, fine-tuning 1 epoch with the first seed, GLUE tasks only with a GLUE "
                "folder, and the report goes under RUNS_DIR. For a real study at a smaller budget, set max_steps "
                "in the experiment file instead"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    list_runs: bool = field(default=False, metadata={"help": "print the runs and their options, then stop",
                                                     "aliases": ["--list"]})


def build_parser() -> Parser:
    parser = Parser(RunnerArgs, prog="python -m experiments.run",
                    description="Train, probe, evaluate and report one experiment from its configuration file "
                                "(experiments/configs/*.yaml). Every stage resumes where it stopped when run "
                                "again.")
    parser.add_argument("experiment", type=Path, metavar="EXPERIMENT_FILE",
                        help="experiment file, e.g. experiments/configs/mlm_vs_taco.yaml")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The runner's settings and the experiment file as one namespace (exits 2 with one line on a usage error)."""
    args, extra = build_parser().parse(argv)
    return argparse.Namespace(**vars(args), config=extra.experiment)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        exp = load(args.config, args.runs_dir)
        args.runs_dir_resolved = exp.runs_dir
        stages = list(args.stages)
        bad = sorted(set(stages) - set(STAGES))
        if bad or not stages:
            raise EvalError(f"--stages {','.join(stages) or '(none)'}: choose from {','.join(STAGES)}")
        exp.check_stages(stages)
        try:
            args.device = resolve_device(args.device)
        except UsageError as exc:
            raise EvalError(str(exc)) from None
        names = exp.names() if args.runs is None else list(args.runs)
        for n in names:
            exp.run(n)
        if args.jobs < 1:
            raise EvalError(f"--jobs {args.jobs}: must be at least 1")
        if args.max_steps is not None and args.max_steps < 1:
            raise EvalError(f"--max-steps {args.max_steps}: must be at least 1")
        if args.list_runs:
            for wave_no, wave in enumerate(exp.waves()):
                for r in wave:
                    if r.name in names:
                        print(f"{r.name} (wave {wave_no}): {json.dumps(exp.train_options(r.name), sort_keys=True)}")
            return 0
        if args.max_steps is None:
            check_glue(exp, stages, args.glue_dir)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        per_run = [s for s in stages if s in RUN_STAGES]
        if per_run:  # before any child starts: the runs folder holds every run and the children's logs
            check_directory(exp.runs_dir, f"--runs-dir {exp.runs_dir}", "pass a folder you can write to",
                            create=False, error=EvalError)
            if args.jobs > 1:
                run_parallel(exp, names, args, per_run)
            else:
                for wave in exp.waves():
                    for r in wave:
                        if r.name in names:
                            run_stages(exp, r.name, per_run, args.device, args.progress, args.glue_dir,
                                       args.max_steps)
        if "report" in stages:
            from experiments.report import write_report

            results_dir = args.results_dir or (exp.runs_dir / "results" if args.max_steps is not None
                                               else DEFAULT_RESULTS)
            out = write_report(exp, Path(results_dir) / exp.name)
            print(f"report written to {out}")
    except UsageError as exc:  # the runner's and the stages' own bad-input errors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a corpus error (CorpusError) is bad input too
        if type(exc).__name__ == "CorpusError":
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
