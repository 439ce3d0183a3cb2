"""Check what `make demo` left in its results store: every snapshot of every run measured by the following probe
(each of the probe's per-snapshot families, anchor drift included), the run-level report written, and a downstream
score for every snapshot. CI runs it after the small demo (`.ci/run`); a person can run it after `make demo`.

Usage: python .ci/check_demo.py STORE_DIR RUN_DIR [RUN_DIR ...]
Exit 0 and one summary line when everything is there; exit 1 and one line per missing thing otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.run_dir import RunDir
from dynamics.results import store as st

# Families the demo's probe measures at every snapshot (its defaults), and the downstream rows' family.
FAMILIES = ("anchors", "context", "geometry", "drift")
DOWNSTREAM = "downstream"


def problems(store_dir: Path, runs: list[Path]) -> tuple[list[str], int]:
    """(what is missing, how many (run, step) snapshots were checked)."""
    missing: list[str] = []
    if not (store_dir / st.DB_NAME).is_file():
        return [f"{store_dir}: no {st.DB_NAME}: the following probe stored nothing"], 0
    with st.open(store_dir / st.DB_NAME, readonly=True) as s:
        done = {(r, int(k), f) for r, k, f in s.completed()[["run", "step", "family"]].itertuples(index=False)}
        scores = s.metrics(family=DOWNSTREAM, probe_hash=DOWNSTREAM)
    scored = {(r, int(k)) for r, k in scores[["run", "step"]].itertuples(index=False)}
    checked = 0
    for run in runs:
        steps = [snap.step for snap in RunDir(run).snapshots()]
        if not steps:
            missing.append(f"{run}: no snapshots written")
        for step in steps:
            checked += 1
            lacking = [f for f in FAMILIES if (run.name, step, f) not in done]
            if lacking:
                missing.append(f"{run.name} step {step}: {', '.join(lacking)} not measured")
            if (run.name, step) not in scored:
                missing.append(f"{run.name} step {step}: no downstream score")
    if not (store_dir / "report.md").is_file():
        missing.append(f"{store_dir}: no report.md (the probe's final pass did not run)")
    return missing, checked


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[3], file=sys.stderr)
        return 2
    store_dir, runs = Path(argv[0]), [Path(a) for a in argv[1:]]
    missing, checked = problems(store_dir, runs)
    for line in missing:
        print(f"check_demo: {line}", file=sys.stderr)
    if missing:
        return 1
    print(f"check_demo: {checked} snapshots of {len(runs)} runs measured ({', '.join(FAMILIES)}) and scored "
          f"downstream; report written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
