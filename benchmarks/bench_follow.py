"""How far behind training a following probe stays: `taco.train` (mini by default) and `dynamics.probe --follow`
started side by side, as `make demo` runs them; prints the probe's lag from each snapshot's rename to its stored
results (median and max, as the probe reports them), the training time with the probe beside it, and how
long the probe ran on after training ended. Not part of the test suite.

    python benchmarks/bench_follow.py [--preset mini] [--max-steps 300] [--objective mlm]

The built-in corpus must be prepared (`python -m taco.prepare`, or `make corpus`). Both processes share the
machine's cores, so the lag includes the probe waiting for CPU time that training holds.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--objective", default="mlm")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train = [sys.executable, "-m", "taco.train", "--objective", args.objective, "--preset", args.preset,
                 "--max-steps", str(args.max_steps), "--output-dir", str(run), "--no-progress"]
        follow = [sys.executable, "-m", "dynamics.probe", str(run), "--out", str(Path(tmp) / "out"), "--follow",
                  "--no-progress", "--no-figures"]
        t0 = time.perf_counter()
        probe = subprocess.Popen(follow, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        subprocess.run(train, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        trained = time.perf_counter() - t0
        _, err = probe.communicate()
        done = time.perf_counter() - t0
        m = re.search(r"followed: (.*)", err)
        print(f"follow {args.preset} {args.objective} {args.max_steps} steps: training {trained:.0f} s with the probe "
              f"beside it, probe done {done - trained:.0f} s after training ended; "
              f"{m.group(1) if m else 'no lag line: ' + err[-500:]}", flush=True)


if __name__ == "__main__":
    main()
