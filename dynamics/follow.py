"""`python -m dynamics.probe RUN … --follow`: measure a run's snapshots while `taco.train` writes them.

`taco.train` writes each snapshot under a temporary name and renames it into `snapshots/step-NNNNNNN/`, so a
listed snapshot is always complete. Following is a loop of ordinary probe passes (`run_config`): each pass
measures the complete snapshots not yet stored (everything stored is reused), then the loop sleeps until a new
snapshot appears. Anchor drift compares a snapshot with the run's *final* one, so it is deferred until every
followed run has written the snapshot at its final step (`run.json`'s `config.max_steps`); that last pass also
measures drift, step × step CKA, onsets, figures and the report, and the loop ends.

A run that has not started yet (no `run.json` or no snapshot) is waited for, and several runs may start one after
the other (each joins when it has a first snapshot; the first run given must be there first: the probe set is built
from it); training that is killed and resumed meanwhile only pauses the stream of snapshots. After `follow_timeout` seconds without a new snapshot the loop
stops with a note (run the same command again to continue); 0 waits for ever.

Every argument that is not a model in the local Hub cache is a run directory to wait for, whether its parent
folders exist yet or not (`runs/NAME` on a fresh clone, `/abs/new/dir/NAME`). A cached Hub model (`ORG/NAME` with no
such path, as `dynamics.find.inputs.discover_all` reads it) is refused up front: a published series does not grow, and
waiting for it would only end at the timeout.

The lag of each snapshot — seconds from the rename that completed it (its `snapshot.json`'s modification time,
written just before) to the commit of its results — is recorded in `FollowSummary.lags`.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.run_dir import SNAPSHOT_JSON, RunDir, RunDirError
from dynamics.config import ProbeConfig
from dynamics.errors import ProbeError
from dynamics.find import hub
from dynamics.find.series import Snapshot
from dynamics.pipeline import run_config
from dynamics.setup import ProbeSummary, SnapshotHook

POLL_S = 1.0


@dataclass
class FollowSummary(ProbeSummary):
    """A probe summary plus what following saw: the lag of each snapshot measured as it arrived, the passes made,
    and why the loop ended ("final" or "timeout")."""

    lags: list[float] = field(default_factory=list)
    passes: int = 0
    stopped: str = "final"

    def lag_line(self) -> str:
        if not self.lags:
            return "no snapshot was measured as it arrived"
        return (f"{len(self.lags)} snapshot(s) measured as they arrived: lag from rename to stored results median "
                f"{statistics.median(self.lags):.1f} s, max {max(self.lags):.1f} s")


def final_step(run_dir: str | Path) -> int | None:
    """The step of the run's final snapshot: `run.json`'s `config.max_steps` (None when it does not say)."""
    try:
        config = RunDir(run_dir).config.get("config")
    except RunDirError:
        return None
    steps = config.get("max_steps") if isinstance(config, dict) else None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0 else None


def _state(dirs: Sequence[str | Path]) -> tuple[list[str | Path], set[tuple[str, int]], bool]:
    """(the runs to measure now, the complete snapshots seen, every run has its final snapshot). Runs join as they
    write a first snapshot, but none is measured before the first run has one: the probe set is built from it."""
    active, seen, finished = [], set(), True
    for d in dirs:
        rd = RunDir(d)
        snaps = rd.snapshots()
        if not rd.is_run() or not snaps:
            finished = False
            continue
        last = final_step(d)
        if last is None:
            raise ProbeError(f"{d}: --follow needs a taco.train run whose run.json gives config.max_steps "
                             "(to know when it ends); probe it without --follow")
        active.append(d)
        seen |= {(str(Path(d).resolve()), s.step) for s in snaps}
        finished = finished and any(s.step == last for s in snaps)
    if not active or active[0] != dirs[0]:
        return [], set(), False
    return active, seen, finished


def refuse_hub_ids(dirs: Sequence[str | Path]) -> None:
    """`ProbeError` for the first of `dirs` that is a model in the local Hugging Face cache (spelled `ORG/NAME`, no
    such path). Anything else is a run that may not have started yet, and is waited for (module docstring)."""
    for d in dirs:
        if hub.is_hub_id(d) and hub.cached_refs(str(d)) is not None:
            raise ProbeError(f"{d}: --follow watches run directories as taco.train writes them, and {d} is a model "
                             "in the Hugging Face cache; probe it without --follow (--revisions picks its revisions)")


def follow(dirs: Sequence[str | Path], cfg: ProbeConfig, on_snapshot: SnapshotHook | None = None, *,
           poll: float = POLL_S, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> FollowSummary:
    """Measure `dirs`' snapshots as they are written until every run's final snapshot is measured (see the module
    docstring); `cfg` as for `run_config` (its figures are drawn once, at the end). `ProbeError` at once for a
    Hugging Face model id (`refuse_hub_ids`)."""
    refuse_hub_ids(dirs)
    lags: list[float] = []
    timed: set[tuple[str, int]] = set()  # (run folder, step) with a recorded lag, or there before following began

    def hook(snap: Snapshot, families: list[str]) -> None:
        written = snap.path / SNAPSHOT_JSON
        key = (str(Path(snap.path).resolve().parent.parent), snap.step)
        if key not in timed and written.is_file():  # the first time only (drift comes again at the end)
            lags.append(max(0.0, time.time() - written.stat().st_mtime))
        timed.add(key)
        if on_snapshot is not None:
            on_snapshot(snap, families)

    quiet = dataclasses.replace(cfg, figures=False)
    measured: set[tuple[str, int]] = set()
    passes, last_new, said_waiting, first = 0, clock(), False, True
    computed: list[tuple[str, int, str]] = []
    while True:
        active, seen, finished = _state(dirs)
        if first:  # already there when following began: no lag to speak of
            timed |= seen
            first = False
        if active and (seen - measured or finished):
            last_new = clock()
            summary = run_config(active, cfg if finished else quiet, hook, defer_drift=not finished,
                                 print_flags=finished)
            passes += 1
            computed += summary.computed
            measured |= seen
            if finished:
                return _summary(summary, computed, lags, passes, "final")
        elif not said_waiting and len(active) < len(dirs):
            waiting = [str(d) for d in dirs if not RunDir(d).is_run() or not RunDir(d).snapshots()]
            print(f"waiting for {', '.join(waiting)} to write a first snapshot (Ctrl-C to stop)", file=sys.stderr)
            said_waiting = True
        if cfg.follow_timeout and clock() - last_new > cfg.follow_timeout:
            if not passes:
                raise ProbeError(f"--follow: no snapshot appeared in {', '.join(map(str, dirs))} within "
                                 f"{cfg.follow_timeout:g} s; check the path, or raise --follow-timeout")
            summary = run_config(active or dirs, cfg, hook, defer_drift=True)
            out = _summary(summary, computed + summary.computed, lags, passes + 1, "timeout")
            out.notes.append(f"--follow stopped: no new snapshot for {cfg.follow_timeout:g} s before the final step "
                             "(training stopped?); anchor drift waits for the final snapshot; run the same command "
                             "again to continue")
            return out
        sleep(poll)


def _summary(last: ProbeSummary, computed: list[tuple[str, int, str]], lags: list[float], passes: int,
             stopped: str) -> FollowSummary:
    fields = {f.name: getattr(last, f.name) for f in dataclasses.fields(ProbeSummary)}
    fields["computed"] = computed
    return FollowSummary(**fields, lags=lags, passes=passes, stopped=stopped)
