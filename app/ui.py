"""Streamlit pieces every page shares: where results are, the sidebar context, charts with their downloads, the
empty state, and turning data problems into messages."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from app.data import errors, run_files, seed_groups, stamps, store_tables
from app.data.sources import DEFAULT_DIRS, Sources, discover
from app.definitions import MetricDef
from dynamics.results import palette

LOG = logging.getLogger("app")
LIVE_SECONDS = 5
X_AXES = {"step": "Step", "tokens_seen": "Tokens seen"}
EMPTY_HELP = """\
Train two runs and measure them, then reload this page:

```bash
python -m taco.train --objective mlm && python -m taco.train --objective taco
python -m dynamics.probe runs/mlm-mini runs/taco-mini --out runs/dynamics
```

or do all of it in one command: `make demo`. To look elsewhere: `python -m app --runs DIR [DIR …]`.
"""


@dataclass(frozen=True)
class Context:
    """What the sidebar selected: the results found, the store and probe set shown, and the x axis."""

    sources: Sources
    db: str | None
    stamp: stamps.Stamp
    probe_hash: str | None
    x: str
    log_x: bool
    groups: bool = False  # draw seed groups (mean and band) instead of single runs
    band: str = "minmax"  # the groups' band: a key of `seed_groups.BANDS`


def parse_args(argv: Sequence[str] | None = None) -> list[str]:
    """The directories given after `--` (`streamlit run app/main.py -- --runs DIR …`), else the defaults."""
    parser = argparse.ArgumentParser(prog="streamlit run app/main.py --", add_help=False)
    parser.add_argument("--runs", nargs="+", metavar="DIR", default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return list(args.runs) if args.runs else list(DEFAULT_DIRS)


@st.cache_data(ttl=LIVE_SECONDS, show_spinner=False)
def _discover(dirs: tuple[str, ...], cwd: str) -> Sources:
    return discover([str(Path(cwd) / d) if not Path(d).is_absolute() else d for d in dirs])


def sources() -> Sources:
    """Runs and stores under the directories given on the command line (re-searched every few seconds)."""
    return _discover(tuple(parse_args()), str(Path.cwd()))


def run_colours(src: Sources) -> dict[str, str]:
    """One colour per run the app found — every store's runs and every run directory (`dynamics.results.palette`) — so a
    run is drawn in the same colour on every page, whichever runs a page selects."""
    pairs: list[tuple[str, object]] = []
    for db in src.stores:
        try:
            runs = store_tables.store_runs(db, stamps.stamp(db))
        except errors.DataError:
            continue
        pairs += zip(runs["run"].astype(str), runs["objective"], strict=True)
    for path in src.runs:
        pairs.append((Path(path).name, run_files.run_json(path, stamps.run_stamp(path)).get("objective")))
    return palette.run_colours(pairs)


def short(path: str | None) -> str:
    """`path` relative to the working directory when it lies below it."""
    if not path:
        return "—"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


# ---------------------------------------------------------------------------------------------------- sidebar

def sidebar() -> Context:
    """Render the shared sidebar (store, probe set, x axis, refresh) and remember the choice for the pages."""
    src = sources()
    db = probe_hash = None
    stamp: stamps.Stamp = ()
    with st.sidebar:
        if src.stores:
            counts = {d: _run_count(d) for d in src.stores}
            options = sorted(src.stores, key=lambda d: -counts[d])
            db = st.selectbox("Results store", options, key="ctx:store",
                              format_func=lambda d: f"{short(str(Path(d).parent))} ({counts[d]} runs)")
            stamp = stamps.stamp(db)
            probe_hash = _probe_choice(db, stamp)
        x = st.radio("x axis", list(X_AXES), format_func=X_AXES.get, horizontal=True, key="ctx:x")
        log_x = st.toggle("Log-scale x axis", value=True, key="ctx:log_x")
        by_group, band = False, "minmax"
        if db and _has_seed_groups(db, stamp):
            by_group = st.toggle("Seed groups", value=False, key="ctx:groups",
                                 help="Draw runs that differ only by seed as one group (mean line and band); the "
                                      "Difference tab then compares two groups paired by seed, with a Student-t "
                                      "95% interval.")
            if by_group:
                band = st.radio("Band", list(seed_groups.BANDS), format_func=seed_groups.BANDS.get, key="ctx:band")
        if db:
            _status(db, stamp, probe_hash)
            live = st.toggle("Live updates", value=True, key="ctx:live",
                             help=f"Check the store every {LIVE_SECONDS} s and reload when the probe wrote to it.")
            if live:
                _watch(db, stamp)
        if st.button("Refresh", key="ctx:refresh", icon=":material/refresh:"):
            st.cache_data.clear()
    ctx = Context(src, db, stamp, probe_hash, x, log_x, by_group, band)
    st.session_state["ctx"] = ctx
    return ctx


def context() -> Context:
    """The sidebar's context of this run (rendering the sidebar when a page runs on its own)."""
    ctx = st.session_state.get("ctx")
    return ctx if isinstance(ctx, Context) else sidebar()


def _has_seed_groups(db: str, stamp: stamps.Stamp) -> bool:
    try:
        return any(g.size > 1 for g in seed_groups.store_groups(db, stamp))
    except errors.DataError:
        return False


def group_colours(groups: Sequence[seed_groups.Group]) -> dict[str, str]:
    """One palette colour per seed group (by its objective), as `run_colours` gives runs."""
    return palette.run_colours((g.label, g.objective) for g in groups)


def _run_count(db: str) -> int:
    try:
        return len(store_tables.store_runs(db, stamps.stamp(db)))
    except errors.DataError:
        return 0


def _probe_choice(db: str, stamp: stamps.Stamp) -> str | None:
    try:
        sets = store_tables.probe_sets(db, stamp)
    except errors.DataError:
        return None
    if len(sets) <= 1:
        return None if sets.empty else str(sets["hash"].iloc[0])
    labels = {h: f"{str(h)[:12]} · {src} · {n} tokens"  # str(): a damaged row's hash may be no text
              for h, src, n in zip(sets["hash"], sets["source"], sets["n_tokens"], strict=True)}
    return st.selectbox("Probe set", list(labels), format_func=labels.get, key="ctx:probe",
                        help="Runs are comparable only on one probe set; the most recently used comes first.")


def _status(db: str, stamp: stamps.Stamp, probe_hash: str | None) -> None:
    """When the store was last written and how many of its snapshots have results (a probe may be running)."""
    age = time.time() - max(stamp[0], stamp[2]) / 1e9
    when = f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.0f} h"
    try:
        runs = store_tables.store_runs(db, stamp, probe_hash)
        progress = f" {int(runs['measured'].sum())} of {int(runs['snapshots'].sum())} snapshots measured."
    except errors.DataError:
        progress = ""
    st.caption(f"Store last written {when} ago.{progress}")


@st.fragment(run_every=LIVE_SECONDS)
def _watch(db: str, seen: stamps.Stamp) -> None:
    """Rerun the whole app when the store changed since this page was drawn (the probe wrote new results)."""
    if stamps.stamp(db) != seen:
        st.rerun(scope="app")


# --------------------------------------------------------------------------------------------- page helpers

def empty_state(ctx: Context, what: str = "runs") -> None:
    """Tell the user that nothing was found and which commands produce something to look at."""
    where = ", ".join(f"`{d}`" for d in ctx.sources.searched) or "`runs`"
    st.info(f"No {what} found under {where}.", icon=":material/search_off:")
    st.markdown(EMPTY_HELP)
    if ctx.sources.missing:
        st.caption("Not found: " + ", ".join(f"`{d}`" for d in ctx.sources.missing))


def need_store(ctx: Context) -> bool:
    """Whether a results store is selected; if not, show the empty state (and say so)."""
    if ctx.db:
        return True
    empty_state(ctx, "results stores" if ctx.sources.runs else "runs or results")
    if ctx.sources.runs:
        st.caption("Runs without results: " + ", ".join(f"`{short(r)}`" for r in ctx.sources.runs))
    return False


@contextmanager
def guard(what: str = "this page") -> Iterator[None]:
    """Show a data problem (or any unexpected failure) as a message instead of a traceback."""
    try:
        yield
    except errors.DataError as exc:
        st.warning(str(exc), icon=":material/warning:")
    except Exception as exc:  # noqa: BLE001 - a page must never show a traceback
        LOG.exception("while drawing %s", what)
        st.error(f"Could not draw {what}: {type(exc).__name__}: {exc}", icon=":material/error:")


@contextmanager
def part(ctx: Context, what: str) -> Iterator[None]:
    """A secondary element of a page (onsets on a chart, notes, seed groups, one of several heatmaps, a table
    beside the curves): when the data it reads is damaged it is left out with one warning — what was left out, and
    the store and file the `DataError` names — and the rest of the page is drawn. The page's main element stays
    under `guard`."""
    try:
        yield
    except errors.DataError as exc:
        st.warning(f"{what[:1].upper()}{what[1:]} left out: {exc}", icon=":material/warning:")
    except Exception as exc:  # noqa: BLE001 - a secondary element must never take the page down
        LOG.exception("while drawing %s", what)
        where = short(ctx.db) if ctx.db else "the runs found"
        st.warning(f"{what[:1].upper()}{what[1:]} left out: {where}: {type(exc).__name__}: {exc}",
                   icon=":material/warning:")


def store_page(title: str, caption: str, what: str, body: Callable[[Context], None]) -> None:
    """The frame of a page that reads the selected results store: title, caption, the empty state when no
    store is selected, and `body(ctx)` drawn under `guard(what)` after the older-store notice."""
    ctx = context()
    st.title(title)
    st.caption(caption)
    if not need_store(ctx):
        return
    with guard(what):
        show_problems(ctx)
        body(ctx)


def store_run_names(ctx: Context) -> list[str]:
    """The runs of the selected store and probe set; says so on the page when there are none."""
    assert ctx.db is not None
    runs = list(store_tables.store_runs(ctx.db, ctx.stamp, ctx.probe_hash)["run"])
    if not runs:
        st.info("This store has no runs yet.")
    return runs


def definition(m: MetricDef) -> None:
    """The metric's one-line definition and the docstring that states it exactly."""
    unit = f" Unit: {m.unit}." if m.unit else ""
    st.markdown(f"**{m.label}** — {m.definition}{unit} Defined in `{m.pointer}`, the function that computed it.")


def show_problems(ctx: Context) -> None:
    """One line when the store lacks tables, columns or metric definitions (an older probe wrote it), and one when
    it holds what this app leaves out (values that are not finite numbers, text where numbers belong)."""
    if not ctx.db:
        return
    problems = store_tables.store_problems(ctx.db, ctx.stamp)
    if problems:
        st.info("This results store comes from an older probe: " + "; ".join(problems)
                + ". Re-run `python -m dynamics.probe` on its runs with `--out` at its folder: that upgrades the store "
                "in place, stores the metric definitions and measures what is missing.", icon=":material/history:")
    warnings = store_tables.store_warnings(ctx.db, ctx.stamp)
    if warnings:
        st.warning(f"{short(ctx.db)}: " + "; ".join(warnings) + ".", icon=":material/warning:")


def show_notes(ctx: Context, families: Sequence[str], runs: Sequence[str], source: str = "the probe") -> None:
    """The notes stored under the context's probe hash for these families and runs (written by `source`), in an
    expander."""
    df = store_tables.notes(ctx.db, ctx.stamp, ctx.probe_hash)
    df = df[df["family"].isin(families) & df["run"].isin(runs)]
    if df.empty:
        return
    grouped = df.groupby(["run", "note"], sort=True)["step"].agg(list).reset_index()
    with st.expander(f"Notes from {source} ({len(grouped)})"):
        for r in grouped.itertuples(index=False):
            steps = sorted(int(s) for s in r.step)
            where = "the run" if steps == [-1] else f"step{'s' if len(steps) > 1 else ''} " + ", ".join(
                map(str, steps[:6])) + (", …" if len(steps) > 6 else "")
            st.markdown(f"- **{r.run}** ({where}): {r.note}")


# ---------------------------------------------------------------------------------------------------- charts

def chart(figure: alt.TopLevelMixin, frame: pd.DataFrame, name: str, *, key: str, stretch: bool = True) -> None:
    """Draw an Altair chart (its toolbar offers PNG) with CSV, SVG and PNG downloads under it."""
    st.altair_chart(figure, width="stretch" if stretch else "content")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-") or "chart"
    cols = st.columns([1, 1, 1, 7], gap="small")
    with cols[0]:
        csv_button(frame, safe, key=key)
    if can_export():
        cols[1].download_button("SVG", data=export(figure, "svg"), file_name=f"{safe}.svg", mime="image/svg+xml",
                                key=f"{key}:svg", on_click="ignore", icon=":material/image:")
        cols[2].download_button("PNG", data=export(figure, "png"), file_name=f"{safe}.png", mime="image/png",
                                key=f"{key}:png", on_click="ignore", icon=":material/image:")
    else:
        cols[1].download_button("Vega-Lite", data=lambda: figure.to_json(), file_name=f"{safe}.vl.json",
                                mime="application/json", key=f"{key}:vl", on_click="ignore",
                                help="The chart's spec (install vl-convert-python for SVG/PNG files here; PNG is "
                                     "also in the chart's menu)")


def csv_button(frame: pd.DataFrame, name: str, *, key: str) -> None:
    """A CSV download of `frame` (written only when clicked)."""
    st.download_button("CSV", data=lambda: frame.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                       key=f"{key}:csv", on_click="ignore", icon=":material/download:", help="The data as CSV")


def export(figure: alt.TopLevelMixin, fmt: str) -> Callable[[], bytes | str]:
    """A callable rendering `figure` to `fmt` ("svg" or "png", through vl-convert) when the button is clicked."""

    def render() -> bytes | str:
        buf: io.StringIO | io.BytesIO = io.StringIO() if fmt == "svg" else io.BytesIO()
        figure.save(buf, format=fmt)
        return buf.getvalue()

    return render


@functools.cache
def can_export() -> bool:
    """Whether SVG/PNG files can be rendered here (the `vl-convert-python` package is installed)."""
    return importlib.util.find_spec("vl_convert") is not None


def layer_picker(layers: Sequence[int], key: str, label: str = "Layer") -> int:
    """A slider over the available layers (the last one by default); a caption when there is only one."""
    layers = sorted(int(x) for x in layers)
    if len(layers) == 1:
        st.caption(f"Stored at layer {layers[0]} only.")
        return layers[0]
    return int(st.select_slider(label, options=layers, value=layers[-1], key=key,
                                help="0 = embedding-layer output e; L = last encoder layer"))


def x_field(ctx: Context, frame: pd.DataFrame) -> str:
    """The sidebar's x axis, or `step` (with a caption) when tokens seen are unknown for these rows."""
    if ctx.x == "tokens_seen" and ("tokens_seen" not in frame or frame["tokens_seen"].isna().all()):
        st.caption("Tokens seen are unknown for these snapshots; showing steps.")
        return "step"
    return ctx.x
